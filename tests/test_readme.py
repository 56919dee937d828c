"""The README is true: the API quick-start runs as written, the demo block is the output of
scripts/readme_demo.py, and .ci/run installs and tests exactly as the README says."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


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


def _readme_demo():
    spec = importlib.util.spec_from_file_location("readme_demo", ROOT / "scripts" / "readme_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUMMARY = """result of each run: last.pt (epoch 6)
           test top-1 %     GMACs  feature-map sizes (input, then after each resizing)
max-pool          98.40  0.002584  28x28 14x14 7x7 3x3
DynOPool          97.60  0.002672  28x28 10x14 5x7 4x4
learned DynOPool scales (r_h x r_w per layer): 0.341x0.515 0.499x0.490 0.790x0.549
wall time 458.9 s; run directories under runs/demo
next: poolarch report runs/demo/max runs/demo/dynopool --out runs/demo/report"""


def test_readme_demo_block_has_the_structure_the_script_writes():
    """The README's demo block is the script's output for some summary (not hand-edited)."""
    rd = _readme_demo()
    text = README.read_text()
    assert text.count(rd.BEGIN) == 1 and text.count(rd.END) == 1
    block = text[text.index(rd.BEGIN):text.index(rd.END) + len(rd.END)]
    head = re.match(re.escape(rd.BEGIN) + r"\nPrinted by `poolarch train` on (.+), (\d+) cores, torch (\S+), "
                    r"Python (\S+)(, \d+ s end to end[^:]*)?( \([^)]*\))?:\n\n```text\n(.*?)\n```\n", block, re.S)
    assert head, block[:400]
    summary = head.group(7)
    assert rd.summary_of(summary) == summary  # what the demo printed, from its first summary line on
    lines = summary.splitlines()
    assert lines[0].startswith("result of each run: last.pt (epoch ")
    assert re.match(r"max-pool +\d+\.\d\d +0\.\d+ +28x28( \d+x\d+)+$", lines[2])
    assert re.match(r"DynOPool +\d+\.\d\d +0\.\d+ +28x28( \d+x\d+)+$", lines[3])
    assert re.match(r"wall time \d+\.\d s; run directories under runs/demo$", lines[5])
    assert lines[6] == "next: poolarch report runs/demo/max runs/demo/dynopool --out runs/demo/report"
    assert "vary with the CPU" in block and "torch build" in block
    for stale in ("97.30", "9x23 3x11 2x5", "15-20 s"):
        assert stale not in text


def test_readme_demo_rewrite_is_idempotent():
    rd = _readme_demo()
    fixture = f"# title\n\nbefore\n\n{rd.BEGIN}\nold text\n{rd.END}\n\nafter\n"
    block = rd.render_block(SUMMARY, "Test CPU, 2 cores, torch 9.9, Python 3.11.0", 468.0, "a note")
    once = rd.rewrite(fixture, block)
    assert rd.rewrite(once, block) == once
    assert once.startswith("# title\n\nbefore\n\n" + rd.BEGIN) and once.endswith(rd.END + "\n\nafter\n")
    assert "old text" not in once and SUMMARY in once and "468 s end to end" in once and "(a note)" in once
    assert rd.summary_of("== max-pool: training ...\n  epoch 1 | ...\n\n" + SUMMARY + "\n") == SUMMARY
    with pytest.raises(ValueError, match="markers"):
        rd.rewrite("no markers here", block)


def test_demo_summary_is_what_the_script_reads():
    """The demo's own summary lines start where the script cuts (poolarch.cli.train.demo_summary)."""
    from poolarch.cli.train import demo_summary

    row = {"epoch": 6, "test_top1": 98.4, "gmacs": 0.002584, "sizes": "28x28 14x14 7x7 3x3", "scales": ""}
    dyn = {**row, "test_top1": 97.6, "gmacs": 0.002672, "sizes": "28x28 10x14 5x7 4x4",
           "scales": "0.341x0.515 0.499x0.490 0.790x0.549"}
    text = demo_summary({"max-pool": row, "DynOPool": dyn}, "runs/demo", 458.94)
    assert _readme_demo().summary_of(text) == SUMMARY


def _commands(section: str) -> list[str]:
    text = README.read_text()
    part = text[text.index(f"## {section}"):]
    part = part[:part.index("\n## ", 3)]
    return re.findall(r"```bash\n(.*?)\n```", part, re.S)


def test_ci_installs_and_tests_as_the_readme_says():
    """.ci/run installs what "Install and run" installs, then what "Test" installs, and runs
    exactly the README's test command; the demo install is light, the test install complete."""
    (install,), (test,) = _commands("Install and run"), _commands("Test")
    ci = (ROOT / ".ci" / "run").read_text()
    demo_install = install.split("pip install ", 1)[1].split(" && ")[0]
    assert f"pip install -q {demo_install}\n" in ci and "[" not in demo_install  # no extra for the demo
    test_install, test_command = test.split(" && ")
    assert f"pip install -q {test_install.split('pip install ', 1)[1]}\n" in ci
    assert f"\n{test_command}\n" in ci
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert '".[dev]"' in test_install and set(extras) - {"dev"} <= {
        e for e in re.findall(r"\[([a-z,]+)\]", extras["dev"][0])[0].split(",")}
    for name in extras:  # every extra is documented in the README's table
        assert f"| `{name}` |" in README.read_text()
