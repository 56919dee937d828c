"""The README's API quick-start runs as written (a stale example is a bug)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_quick_start_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python block"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    import torch

    from poolarch.layers.base import learnable_resizers

    # what the block promises: a DynOPool output of half size, and a frozen copy without resizers
    assert tuple(namespace["y"].shape) == (8, 64, 16, 16)
    assert learnable_resizers(namespace["net"]) and not learnable_resizers(namespace["static"])
    x = torch.randn(1, 3, 224, 224)
    namespace["net"].eval(), namespace["static"].eval()
    with torch.no_grad():
        assert torch.allclose(namespace["net"](x), namespace["static"](x), atol=1e-5)
