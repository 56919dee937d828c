"""DynOPool as one torch.library custom op (``poolarch::dynopool2d``): torch.compile without graph
breaks, on every path, matching eager in the forward pass and in every gradient."""
from __future__ import annotations

import copy
import importlib

import pytest
import torch

from poolarch.models import create_model

op = importlib.import_module("poolarch.layers._dynopool_op")



@pytest.fixture
def path(dynopool_path: str) -> str:
    return dynopool_path


def _grads(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, {n.replace("_orig_mod.", ""): p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compile_fullgraph_vgg_matches_eager(path):
    """A DynOPool VGG compiles with fullgraph=True (the output sizes are unbacked SymInts read from
    alpha) and equals eager -- also after alpha moves across a rounding boundary, without a retrace."""
    torch.manual_seed(0)
    model = create_model("vgg_small", pool="dynopool", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    eager = copy.deepcopy(model)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        for scale in (None, (0.6, 0.45)):
            if scale is not None:
                for m in (eager, model):
                    m.stages[1][0].set_scale(scale)
                    m.zero_grad()
            y_e, gx_e, gp_e = _grads(eager, x)
            y_c, gx_c, gp_c = _grads(compiled, x)
            torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(gx_c, gx_e, rtol=1e-4, atol=1e-6)
            assert any("alpha" in n for n in gp_e)
            for n in gp_e:
                torch.testing.assert_close(gp_c[n], gp_e[n], rtol=1e-4, atol=1e-6, msg=n)
    assert eager.stages[1][0].last_out_size == (19, 14)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(path, mode, channels_last):
    """torch.library.opcheck: schema, fake tensor, autograd registration and AOT dispatch."""
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    s = torch.tensor([4.0, 6.0], dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(op.dynopool2d_op, (x, s, 4, 6, mode))
    codes = op.dynopool2d_op(x, s, 4, 6, mode)[1]
    assert codes.dtype == (torch.int8 if path == "fused" else torch.int64)
