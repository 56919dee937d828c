"""The command line is generated from the option dataclasses: every TrainConfig field (and every
search/sweep option) has a flag with help text and its default; YAML numbers are typed by the
field; values from flags arrive in the config; bad input is one line with exit status 2."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import re
from pathlib import Path

import pytest
import yaml

from poolarch import convert, create_model
from poolarch.cli import build_parser, config_from_args, configure_logging, main
from poolarch.cli.search import SearchOptions, SweepOptions
from poolarch.data import list_datasets, list_variants
from poolarch.layers import learnable_resizers, list_pools
from poolarch.models import list_models
from poolarch.train import TrainConfig, list_methods, list_tasks

ROOT = Path(__file__).resolve().parents[1]
SET_BY_SEARCH = {"model", "pool", "method", "init_scales"}


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def _flag(f: dataclasses.Field) -> str:
    flag = f.metadata.get("flag")
    if isinstance(flag, tuple):
        return flag[-1]
    return flag or "--" + f.name.replace("_", "-")


def _help_text(command: str) -> str:
    text = _subparser(command).format_help()
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("command, cls, prefix, skip", [
    ("train", TrainConfig, "cfg.", set()),
    ("search", TrainConfig, "cfg.", SET_BY_SEARCH),
    ("sweep", TrainConfig, "cfg.", SET_BY_SEARCH | {"name"}),
    ("search", SearchOptions, "opt.", set()),
    ("sweep", SweepOptions, "opt.", set()),
])
def test_every_field_has_a_flag_with_help_and_default(command, cls, prefix, skip):
    actions = _actions(_subparser(command))
    for f in dataclasses.fields(cls):
        if f.name in skip:
            assert prefix + f.name not in actions, f.name
            continue
        action = actions.get(prefix + f.name)
        assert action is not None, f"{command}: no flag for {cls.__name__}.{f.name}"
        assert _flag(f) in action.option_strings
        assert action.help and "(default: " in action.help, (f.name, action.help)
        assert action.default is None  # only what the user typed overrides a YAML file
        for key in f.metadata.get("keys", ()) if command == "train" else ():
            nested = actions[f"{prefix}{f.name}.{key.key}"]
            assert "--" + key.key.replace("_", "-") in nested.option_strings and "(default: " in nested.help


def test_help_shows_defaults_and_registry_names():
    text = _help_text("train")
    assert "--epochs EPOCHS training epochs, >= 1 (default: 250)" in text
    assert "--lambda LAMBDA weight of the GMACs loss, >= 0 (default: 0)" in text
    assert "(default: 0.1)" in text and "(default: vgg16_cifar)" in text
    for names in (list_models(), list_pools(), list_datasets(), list_variants(), list_methods(), list_tasks(),
                  ["cosine", "step", "poly", "constant"]):
        assert ", ".join(names) in text, names
    # the tolerance of --target-gmacs is not hard-coded: it is the field's default
    assert f"(default: {TrainConfig().target_tolerance:g})" in text
    assert "5%" not in text.split("--target-gmacs")[1].split("--target-tolerance")[0]
    search = _help_text("search")
    methods = search.split("--method METHOD")[-1].split("(default: balanced-mixture)")[0]
    assert all(m in methods for m in ("balanced-mixture", "spos", "darts", "mcts-ucb", "bse")), methods
    assert "--epochs EPOCHS epochs per weight set" in search and "(default: 10)" in search
    assert "--dataset DATASET" in search and "(default: cifar10)" in search
    assert "-M M, --num-models M" in search and "(default: 4 for balanced-mixture" in search
    sweep = _help_text("sweep")
    assert "(default: 200)" in sweep and "(default: runs/sweep-<backbone>-<dataset>)" in sweep


def _other_value(f: dataclasses.Field, default):
    """A valid value different from the default, as (flag text, expected config value)."""
    names = {"model": list_models(), "pool": list_pools(), "dataset": list_datasets(), "variant": list_variants(),
             "method": list_methods()}
    if f.name in names or f.metadata.get("choices"):
        value = next(n for n in (names.get(f.name) or f.metadata["choices"]) if n != default)
        return [value], value
    special = {"init_scales": (["0.5,0.7"], [0.5, 0.7]), "image_size": (["24x20"], [24, 20]),
               "milestones": (["3,5"], [3, 5]), "model_args": (["width=0.5"], {"width": 0.5}),
               "method_args": (["beta=0.8"], {"beta": 0.8}), "val_fraction": (["0.25"], 0.25),
               "progress": ([], True), "amp": ([], True)}
    if f.name in special:
        return special[f.name]
    if isinstance(default, bool):
        return [], not default
    if f.metadata.get("gt") is not None or f.metadata.get("ge") is not None or isinstance(default, (int, float)):
        return (["3"], 3) if f.type in ("int", "int | None") else (["0.375"], 0.375)
    return ["text"], "text"


def test_every_flag_reaches_its_config_field():
    cfg_default = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        text, expected = _other_value(f, getattr(cfg_default, f.name))
        flag = _flag(f)
        args = build_parser().parse_args(["train", flag, *text] if text else ["train", flag])
        cfg = config_from_args(args)
        assert getattr(cfg, f.name) == expected, (f.name, getattr(cfg, f.name), expected)
        assert getattr(cfg, f.name) != getattr(cfg_default, f.name), f.name


def test_nested_flags_and_no_flags():
    args = build_parser().parse_args(["train", "--resolutions", "3", "--no-learn-depth", "--config-blocks", "5,3,2",
                                      "--prune-threshold", "1e-3", "--no-one-res", "--no-amp", "--model-arg", "r=2"])
    cfg = config_from_args(args)
    assert cfg.model_args == {"r": 2, "resolutions": 3, "learn_depth": False, "config_blocks": [5, 3, 2]}
    assert cfg.method_args == {"prune_threshold": 1e-3, "one_res": False} and cfg.amp is False


def test_yaml_numbers_are_typed_by_the_field(tmp_path):
    text = "lambda: 1e-4\nlr: 2E-2\ntarget_gmacs: 5e-3\nmethod_args: {prune_threshold: 1e-3}\nepochs: 3\n"
    raw = yaml.safe_load(text)
    assert isinstance(raw["lambda"], str)  # PyYAML (YAML 1.1) reads 1e-4 as a string
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    cfg = TrainConfig.from_yaml(path)
    assert type(cfg.lambda_) is float and cfg.lambda_ == 1e-4
    assert type(cfg.lr) is float and cfg.lr == 0.02 and cfg.target_gmacs == 5e-3
    assert cfg.method_args == {"prune_threshold": 1e-3} and cfg.epochs == 3
    path.write_text("lambda: 1e-4x\n")
    with pytest.raises(ValueError, match="lambda must be a finite number, got '1e-4x'"):
        TrainConfig.from_yaml(path)
    path.write_text("epochs: 1e2\n")  # an integer field does not take a float-looking string
    with pytest.raises(ValueError, match="epochs must be an integer"):
        TrainConfig.from_yaml(path)


def test_unknown_keys_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'lambda_'"):
        TrainConfig.from_dict({"lambda_": 0.1})
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'.*scale_lr"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def _one_line_error(capsys, argv, command="train"):
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"poolarch {command}: error:"), (status, err)
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--target-gmacs", "0"], "target_gmacs must be > 0, got 0"),
    (["--target-gmacs", "-1"], "target_gmacs must be > 0, got -1"),
    (["--lambda", "-1"], "lambda must be >= 0, got -1"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--val-fraction", "1"], "val_fraction must be in [0, 1), got 1"),
    (["--device", "tpu"], "device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
    (["--task", "detection"], "task must be one of ['classification', 'segmentation'], got 'detection'"),
    (["--epochs", "many"], "argument --epochs: expected an integer, got 'many'"),
    (["--image-size", "big"], "argument --image-size: expected comma-separated integers"),
    (["--init-scales", "x"], "argument --init-scales: expected R[,R...], got 'x'"),
    (["--model-arg", "width"], "argument --model-arg: expected KEY=VALUE, got 'width'"),
    (["--prune-epoch", "0"], "method_args.prune_epoch must be >= 1, got 0"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_flags_one_line(tmp_path, capsys, argv, message):
    line = _one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *argv])
    assert message in line, line
    assert not (tmp_path / "run").exists()


def test_bad_search_options_one_line(tmp_path, capsys):
    assert "num_models must be >= 1, got 0" in _one_line_error(capsys, ["search", "-M", "0"], "search")
    assert "top_k must be >= 1" in _one_line_error(capsys, ["search", "--top-k", "0"], "search")
    assert "workers must be >= 1" in _one_line_error(capsys, ["sweep", "--workers", "0"], "sweep")


def test_bad_yaml_file_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: [0.1\nepochs: 2\n")
    line = _one_line_error(capsys, ["train", "--config", str(path)])
    assert "bad.yaml" in line and "not valid YAML" in line
    path.write_text("- 1\n- 2\n")
    assert "must hold a mapping" in _one_line_error(capsys, ["train", "--config", str(path)])


def test_one_init_scale_sets_every_resizer():
    cfg = config_from_args(build_parser().parse_args(["train", "--init-scales", "0.6"]))
    assert cfg.init_scales == 0.6
    for name in ("vgg16_cifar", "resnet20_cifar", "mobilenetv2_cifar", "hrnet_w18_small"):
        resizers = learnable_resizers(create_model(name, pool="dynopool", init_scales=cfg.init_scales))
        assert len(resizers) > 1
        assert all(r.scale.detach().tolist() == pytest.approx([0.6, 0.6]) for _, r in resizers), name
    import torchvision

    _, report = convert(torchvision.models.resnet18(num_classes=3), init_scales=0.6)
    assert len(report.sites) > 1 and all(s.init_scale == (0.6, 0.6) for s in report.sites)


def test_poolarch_logger_prints_bare_lines(capsys):
    logger = configure_logging()
    logger.info("epoch 1 line")
    assert capsys.readouterr().out == "epoch 1 line\n"
    configure_logging(quiet=True)
    logger.info("hidden")
    logger.warning("shown")
    assert capsys.readouterr().out == "shown\n"
    configure_logging()
    assert sum(type(h).__name__ == "_StdoutHandler" for h in logging.getLogger("poolarch").handlers) == 1


def test_readme_commands_use_existing_flags():
    blocks = "\n".join(re.findall(r"^```(?:bash|sh)\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M))
    commands = re.findall(r"^poolarch (\w[\w-]*)((?:.*\\\n)*.*)", blocks, re.M)
    assert commands
    for command, rest in commands:
        options = {s for a in _subparser(command)._actions for s in a.option_strings}
        text = " ".join(line.split("#")[0] for line in rest.splitlines())
        for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text):
            assert flag in options, (command, flag)


def test_nothing_in_poolarch_imports_the_cli():
    for path in (ROOT / "poolarch").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("poolarch/cli/") or rel == "poolarch/__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [a.name for a in node.names]
                assert not (module == "poolarch.cli" or module.startswith("poolarch.cli.") or
                            (node.level and (module == "cli" or module.startswith("cli."))) or
                            (module == "poolarch" and "cli" in names) or (node.level and "cli" in names)), rel
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("poolarch.cli") for a in node.names), rel
