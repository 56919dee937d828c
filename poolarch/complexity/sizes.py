"""Feature-map sizes after every resizing layer, as Jang et al. 2023 Table 1 lists them."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..layers.base import learnable_resizers
from ._trace import ModuleCallTracer, evaluation, unwrap_model
from .macs import make_example_input

__all__ = ["feature_map_sizes", "format_sizes"]


def feature_map_sizes(
    model: nn.Module,
    example_input: Tensor | Sequence[int] | None = None,
    *,
    include_global: bool = False,
) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, spatial output size), ...]`` of the resizing layers of ``model``.

    Without ``example_input``: the learnable resizers with their ``last_out_size`` from the last
    forward pass, in registration order (those not run yet are skipped).

    With ``example_input`` (tensor or size, see :func:`~poolarch.complexity.count_macs`): one
    forward pass (eval mode, no grad) and, in execution order, ``("input", size)`` followed by every
    leaf module or learnable resizer whose output spatial size differs from its input's -- learnable
    resizers, pools, strided convolutions, upsampling modules. Global pooling to size 1 is left out
    unless ``include_global``.
    """
    model = unwrap_model(model)
    if example_input is None:
        return [(name, tuple(m.last_out_size)) for name, m in learnable_resizers(model) if m.last_out_size is not None]
    example = make_example_input(model, example_input)
    resizer_ids = {id(m) for _, m in learnable_resizers(model)}
    tracer = ModuleCallTracer(model)
    with evaluation(model), tracer:
        model(example)
    out: list[tuple[str, tuple[int, ...]]] = [("input", tuple(example.shape[2:]))]
    for record in tracer.records:
        is_resizer = id(record.module) in resizer_ids
        if not is_resizer and next(record.module.children(), None) is not None:
            continue
        if record.in_spatial is None or record.out_spatial is None or record.in_spatial == record.out_spatial:
            continue
        if len(record.in_spatial) != len(record.out_spatial):
            continue
        if not include_global and all(s == 1 for s in record.out_spatial):
            continue
        name = record.name if record.call_index == 0 else f"{record.name}#{record.call_index}"
        out.append((name, tuple(record.out_spatial)))
    return out


def format_sizes(sizes: Sequence[tuple[str, Sequence[int]]]) -> str:
    """Table-1 style ``"[224,224] [112,112] ..."`` of :func:`feature_map_sizes`' output."""
    return " ".join("[" + ",".join(str(int(s)) for s in size) + "]" for _, size in sizes)
