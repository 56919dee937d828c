"""Resizing layers: learnable (DynOPool, Shape Adaptor, DiffStride) and multi-resolution blocks."""
from .base import LearnableResize, architecture_parameters, learnable_resizers
from .dynopool import (
    DynOPool1d,
    DynOPool2d,
    DynOPool3d,
    StaticResizePool,
    dynopool,
    dynopool1d,
    dynopool2d,
    dynopool3d,
    dynopool_output_size,
)

__all__ = [
    "LearnableResize",
    "architecture_parameters",
    "learnable_resizers",
    "DynOPool1d",
    "DynOPool2d",
    "DynOPool3d",
    "StaticResizePool",
    "dynopool",
    "dynopool1d",
    "dynopool2d",
    "dynopool3d",
    "dynopool_output_size",
]

from .factory import (  # noqa: E402  (after the layers it registers)
    FIXED_POOLS,
    HUMAN,
    STRIDED,
    has_residual_form,
    learnable_pools,
    list_pools,
    make_pool,
    make_residual_pool,
    pool_choices,
    register_pool,
    register_residual_pool,
)

__all__ += ["FIXED_POOLS", "HUMAN", "STRIDED", "has_residual_form", "learnable_pools", "list_pools", "make_pool",
            "make_residual_pool", "pool_choices", "register_pool", "register_residual_pool"]

from .multires import MultiResBlock, multi_resolution  # noqa: E402

__all__ += ["MultiResBlock", "multi_resolution"]

from .diffstride import DiffStride2d, StaticDiffStride2d, diffstride2d  # noqa: E402  (registers "diffstride")
from .shape_adaptor import (  # noqa: E402  (registers "shape_adaptor")
    ResidualShapeAdaptor2d,
    ShapeAdaptor2d,
    StaticResidualShapeAdaptor2d,
    StaticShapeAdaptor2d,
    apply_memory_bound,
    chain_shape_adaptors,
    init_shape_adaptors,
    residual_shape_adaptor2d,
    shape_adaptor2d,
)

__all__ += [
    "DiffStride2d",
    "StaticDiffStride2d",
    "diffstride2d",
    "ShapeAdaptor2d",
    "ResidualShapeAdaptor2d",
    "StaticShapeAdaptor2d",
    "StaticResidualShapeAdaptor2d",
    "apply_memory_bound",
    "chain_shape_adaptors",
    "init_shape_adaptors",
    "residual_shape_adaptor2d",
    "shape_adaptor2d",
]
