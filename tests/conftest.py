"""Shared fixtures."""
from __future__ import annotations

import importlib
import os

import pytest

DYNOPOOL_PATHS = ["fused", "torch", "torch-nchw"]


@pytest.fixture(params=DYNOPOOL_PATHS)
def dynopool_path(request, monkeypatch) -> str:
    """Run the test on each DynOPool path: ``"fused"`` (the C++ CPU kernel; skipped when
    ``POOLARCH_DISABLE_EXT=1`` is set for the whole run), ``"torch"`` (the pure-PyTorch path every
    other device runs, forced with ``POOLARCH_DISABLE_EXT=1``; it runs the small maps of tests
    channels_last) and ``"torch-nchw"`` (the same path with its matmul formulations: the NCHW layout
    kept for small NCHW maps, and matmuls instead of the bilinear interpolation where both axes
    resample, as on CUDA under deterministic algorithms, so those are tested on small tensors too)."""
    if request.param.startswith("torch"):
        monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
        if request.param == "torch-nchw":
            torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
            monkeypatch.setattr(torch_path, "SMALL_MAP_PIXELS", 0)
            monkeypatch.setattr(torch_path, "interpolates", lambda device: False)
    else:
        if os.environ.get("POOLARCH_DISABLE_EXT", "") == "1":
            pytest.skip("POOLARCH_DISABLE_EXT=1 is set for this run")
        monkeypatch.delenv("POOLARCH_DISABLE_EXT", raising=False)
        ext = importlib.import_module("poolarch.layers._dynopool_ext")
        assert ext.extension_available(), "the fused DynOPool kernel failed to build"
    return request.param
