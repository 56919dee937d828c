"""Shared fixtures."""
from __future__ import annotations

import importlib
import os

import pytest

DYNOPOOL_PATHS = ["fused", "torch"]


@pytest.fixture(params=DYNOPOOL_PATHS)
def dynopool_path(request, monkeypatch) -> str:
    """Run the test on each DynOPool path: ``"fused"`` (the C++ CPU kernel; skipped when
    ``POOLARCH_DISABLE_EXT=1`` is set for the whole run) and ``"torch"`` (the pure-PyTorch path every
    other device runs, forced with ``POOLARCH_DISABLE_EXT=1``)."""
    if request.param == "torch":
        monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
    else:
        if os.environ.get("POOLARCH_DISABLE_EXT", "") == "1":
            pytest.skip("POOLARCH_DISABLE_EXT=1 is set for this run")
        monkeypatch.delenv("POOLARCH_DISABLE_EXT", raising=False)
        ext = importlib.import_module("poolarch.layers._dynopool_ext")
        assert ext.extension_available(), "the fused DynOPool kernel failed to build"
    return request.param
