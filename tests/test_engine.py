"""The training engine: schedules, one SGD step against a hand-written step, resume exactness,
the GMACs budget, val_step interleaving, AMP, DDP on two processes, atomic checkpoints, tasks."""
from __future__ import annotations

import copy
import csv
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolarch.train import Method, TrainConfig, Trainer, register_method, run_status, train
from poolarch.checkpoint import atomic_torch_save, load_checkpoint
from poolarch.train.schedule import lr_factor
from poolarch.train.task import SegmentationTask, create_task, mean_iou

torch.set_num_threads(1)

TIMING_COLUMNS = {"train_time_s", "images_per_s"}


def tiny_cfg(tmp_path, name="run", **overrides) -> TrainConfig:
    """vgg_small at width 1/4 on 64 MNIST digits (16x16 after resize): a few ms per step."""
    settings = dict(
        model="vgg_small",
        model_args={"width": 0.25},
        pool="dynopool",
        dataset="mnist5k",
        image_size=16,
        limit=96,
        epochs=3,
        batch_size=16,
        lr=0.05,
        scale_lr=0.05,
        lambda_=0.5,
        max_eval_steps=2,
        out=str(tmp_path / name),
        seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def read_metrics(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


# -- schedules against torch's own schedulers ----------------------------------------------------
def _torch_lrs(make_scheduler, steps: int) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_matches_torch():
    total = 37
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    ours = [lr_factor("cosine", s, total) for s in range(total)]
    assert ours == pytest.approx(ref, abs=1e-12)


def test_poly_schedule_matches_torch():
    total = 25
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=total, power=0.9), total)
    ours = [lr_factor("poly", s, total, power=0.9) for s in range(total)]
    assert ours == pytest.approx(ref, abs=1e-12)


def test_step_schedule_matches_torch():
    total = 30
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[10, 20], gamma=0.1), total)
    ours = [lr_factor("step", s, total, milestones=[10, 20], gamma=0.1) for s in range(total)]
    assert ours == pytest.approx(ref, rel=1e-12)


# -- one optimiser step against a hand-written SGD step -----------------------------------------
def test_one_step_equals_manual_sgd(tmp_path):
    """Weights: lr*(grad + wd*w); alpha: scale_lr*grad (no weight decay); loss = CE + lambda*GMACs."""
    cfg = tiny_cfg(tmp_path, epochs=1, max_steps_per_epoch=1, lambda_=0.3, weight_decay=0.01, schedule="constant")
    trainer = Trainer(cfg)
    reference = copy.deepcopy(trainer.model)
    inputs, targets = next(iter(trainer.data.train))  # the batch the engine will see (epoch 0)

    from poolarch.complexity import ComplexityLoss
    from poolarch.layers.base import architecture_parameters

    ref_cost = ComplexityLoss(reference.eval(), trainer.example)
    reference.train()
    loss = F.cross_entropy(reference(inputs), targets) + 0.3 * ref_cost()
    loss.backward()
    arch_ids = {id(p) for p in architecture_parameters(reference)}
    assert arch_ids, "the tiny model must contain DynOPool alphas"
    expected = {}
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if id(p) in arch_ids:
                expected[name] = p - cfg.scale_lr * p.grad
            else:
                expected[name] = p - cfg.lr * (p.grad + cfg.weight_decay * p)

    trainer.fit()
    got = dict(trainer.model.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(got[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(torch.any(got[n] != p) for n, p in reference.named_parameters() if id(p) in arch_ids)


# -- resume ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [False, True], ids=["lambda", "target_gmacs"])
def test_resume_matches_uninterrupted_run(tmp_path, budget):
    extra = {"target_gmacs": 0.0008, "lambda_": 0.0} if budget else {}
    full = train(tiny_cfg(tmp_path, "full", **extra))
    assert full.finished and run_status(full.run_dir) == "finished"

    cut = tiny_cfg(tmp_path, "cut", **extra)
    partial = train(cut, stop_after_epochs=1)
    assert not partial.finished
    assert run_status(partial.run_dir) == "incomplete"
    assert not (partial.run_dir / "result.yaml").exists()
    partial = train(resume=partial.run_dir, stop_after_epochs=1)  # epoch 2 of 3
    assert run_status(partial.run_dir) == "incomplete"
    resumed = train(resume=partial.run_dir)
    assert resumed.finished and run_status(resumed.run_dir) == "finished"

    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["method"] == b["method"]
    assert read_metrics(full.run_dir) == read_metrics(resumed.run_dir)
    assert len(read_metrics(resumed.run_dir)) == 3


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    a = train(tiny_cfg(tmp_path, "a", epochs=1))
    b = train(tiny_cfg(tmp_path, "b", epochs=1))
    c = train(tiny_cfg(tmp_path, "c", epochs=1, seed=4))
    sa, sb, sc = (load_checkpoint(r.run_dir / "last.pt")["model"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_run_directory_contents(tmp_path):
    result = train(tiny_cfg(tmp_path, epochs=2))
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "architecture.yaml", "last.pt", "best.pt", "result.yaml"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = read_metrics(result.run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert TrainConfig.from_yaml(result.run_dir / "config.yaml").lambda_ == 0.5
    # the GMACs column is the count of an independent MAC counter on the trained model
    from poolarch.complexity import count_macs

    gmacs = count_macs(Trainer(resume=result.run_dir).model.eval(), torch.zeros(1, 1, 16, 16)).total / 1e9
    assert float(rows[-1]["gmacs"]) == pytest.approx(gmacs, rel=1e-9)
    # the first size is the input; the next ones follow from the learned scales
    assert rows[-1]["sizes"].split()[0] == "16x16"


# -- --target-gmacs --------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 1.6])
def test_target_gmacs_lands_within_tolerance(tmp_path, ratio):
    from poolarch.complexity import count_macs
    from poolarch.models import create_model

    initial = count_macs(
        create_model("vgg_small", num_classes=10, pool="dynopool", in_chans=1, width=0.25).eval(),
        torch.zeros(1, 1, 16, 16),
    ).total / 1e9
    target = ratio * initial
    result = train(tiny_cfg(tmp_path, epochs=4, lambda_=0.0, target_gmacs=target))
    final = float(result.final["gmacs"])
    assert abs(final / target - 1) <= 0.05, (final, target, result.final.get("budget_projection"))
    # the final model, measured independently, has those GMACs
    model = Trainer(resume=result.run_dir).model.eval()
    assert count_macs(model, torch.zeros(1, 1, 16, 16)).total / 1e9 == pytest.approx(final, rel=1e-9)


@pytest.mark.parametrize("pool", ["max", "shape_adaptor", "diffstride"])
def test_target_gmacs_needs_dynopool(tmp_path, pool):
    """The budget rescales DynOPool's alpha = 1/r; other resizers are refused before the run starts."""
    with pytest.raises(ValueError, match="target_gmacs adjusts DynOPool scales.*pool 'dynopool'"):
        Trainer(tiny_cfg(tmp_path, pool=pool, target_gmacs=0.001))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pool", ["shape_adaptor", "diffstride"])
def test_scale_clamp_leaves_other_resizers_parameters_alone(tmp_path, pool):
    """``max_scale`` clamps DynOPool's alpha = 1/r only: with a zero scale learning rate the
    architecture parameters of Shape Adaptor (a logit, negative at its initial ratio 0.51) and
    DiffStride end the run exactly where they started."""
    cfg = tiny_cfg(tmp_path, pool=pool, epochs=1, scale_lr=0.0, max_scale=2.0)
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n.endswith(("alpha", "stride_raw"))}
    assert before and (pool != "shape_adaptor" or all((v < 0).all() for v in before.values()))
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    for name, value in before.items():
        assert torch.equal(after[name].detach(), value), name


# -- method hooks ----------------------------------------------------------------------------------
@register_method("_test_recording")
class RecordingMethod(Method):
    """Records val_step batches and adds a known extra loss."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.val_labels: list[torch.Tensor] = []

    def extra_losses(self, model):
        return {"l2": 0.0 * sum(p.sum() for p in model.parameters()) + 1.5}

    def val_step(self, model, inputs, targets, task_loss):
        assert torch.is_grad_enabled()
        self.val_labels.append(targets.clone())


def test_val_step_interleaved_with_validation_batches(tmp_path):
    cfg = tiny_cfg(tmp_path, method="_test_recording", epochs=2, lambda_=0.0, limit=200, batch_size=8,
                   eval_batch_size=128)
    trainer = Trainer(cfg)
    trainer.fit()
    per_epoch = trainer.steps_per_epoch
    assert len(trainer.method.val_labels) == 2 * per_epoch
    for epoch in range(2):
        trainer.data.val.set_epoch(epoch)
        batches = [y for _, y in trainer.data.val]
        assert 1 < len(batches) < per_epoch  # the stream must wrap around within the epoch
        expected = [batches[i % len(batches)] for i in range(per_epoch)]
        got = trainer.method.val_labels[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    # the extra loss is part of the optimised loss: loss = task_loss + 1.5
    row = trainer.history[-1]
    assert row["train_loss"] == pytest.approx(row["train_task_loss"] + 1.5, rel=1e-6)
    assert row["train_loss_l2"] == pytest.approx(1.5)


# -- AMP -------------------------------------------------------------------------------------------
def test_amp_bfloat16_on_cpu(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, amp=True, epochs=1, max_steps_per_epoch=2))
    seen = []
    conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = trainer.fit()
    assert torch.bfloat16 in seen
    assert math.isfinite(result.final["train_loss"])


# -- DDP -------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pathlib import Path

    cfg = tiny_cfg(Path(out_dir), "ddp", epochs=2, max_steps_per_epoch=3)
    trainer = Trainer(cfg)
    trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "test_top1": trainer.history[-1]["test_top1"]},
               Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    assert r0["test_top1"] == r1["test_top1"]  # metrics are reduced over both shards
    init = Trainer(tiny_cfg(tmp_path, "init", epochs=1)).model.state_dict()
    assert any(not torch.equal(init[k], r0["model"][k]) for k in init if init[k].is_floating_point())
    assert run_status(tmp_path / "ddp") == "finished"


# -- checkpoints -----------------------------------------------------------------------------------
def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_torch_save({"bad": lambda: None}, path)  # lambdas cannot be pickled
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


# -- tasks -----------------------------------------------------------------------------------------
def test_classification_top1_and_loss():
    task = create_task("classification")
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2, 2, 1])
    acc = task.accumulator(3)
    acc.update(logits[:2], targets[:2])
    acc.update(logits[2:], targets[2:])
    assert acc.compute() == pytest.approx(50.0)
    manual = -sum(torch.log_softmax(l, 0)[t] for l, t in zip(logits, targets)) / 4
    assert float(task.loss(logits, targets)) == pytest.approx(float(manual), rel=1e-6)


def test_segmentation_miou_from_confusion_matrix():
    task = SegmentationTask()
    # 3 classes; predictions and targets for 8 pixels (one ignored)
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 5
    acc = task.accumulator(3)
    acc.update(logits, target)
    # by hand (ignored pixel dropped): class0 TP1 FP1 FN1 -> 1/3; class1 TP3 FP1 FN0 -> 3/4;
    # class2 TP1 FP0 FN1 -> 1/2
    assert acc.compute() == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)
    valid = target != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert float(task.loss(logits, target)) == pytest.approx(float(manual), rel=1e-6)
    # logits at half resolution are upsampled to the mask
    small = torch.randn(1, 3, 1, 2)
    assert torch.isfinite(task.loss(small, target))
    assert mean_iou(torch.zeros(3, 3)) != mean_iou(torch.zeros(3, 3))  # nan when nothing present


# -- the budget controller in isolation --------------------------------------------------------------
def test_budget_controller_sign_and_projection():
    from poolarch.complexity import count_macs
    from poolarch.models import create_model
    from poolarch.methods.budget import GmacsBudget, distinct_resizers, project_to_budget

    budget = GmacsBudget(target=1.0, total_steps=100)
    assert budget.lambda_ == 0.0  # neutral start without a configured lambda
    for _ in range(5):
        budget.update(2.0)  # too many MACs: penalise them
    assert budget.lambda_ > 0
    for _ in range(60):
        budget.update(0.5)  # too few: the controller ends up rewarding MACs
    assert budget.lambda_ < 0

    model = create_model("vgg_small", num_classes=10, pool="dynopool", in_chans=1, width=0.25).eval()
    example = torch.zeros(1, 1, 28, 28)
    measure = lambda: count_macs(model, example).total / 1e9  # noqa: E731
    before = [m.alpha.detach().clone() for m in distinct_resizers(model)]
    target = 0.4 * measure()
    factor, gmacs = project_to_budget(model, measure, target, tolerance=0.05)
    assert abs(gmacs / target - 1) <= 0.05 and gmacs == pytest.approx(measure())
    for a0, a in zip(before, [m.alpha for m in distinct_resizers(model)]):  # one common factor on every alpha
        torch.testing.assert_close(a.detach(), a0 * factor)


# -- the commit point: a kill between any two writes of an epoch ------------------------------------
class _Killed(Exception):
    """Stands for the process being killed right after a file was written."""


def _count_writes(monkeypatch, kill_after: int | None) -> list[str]:
    """Wrap the run directory's writers (metrics, architecture, checkpoints); raise :class:`_Killed`
    right after write number ``kill_after`` (1-based). Returns the log of writes."""
    import poolarch.train.rundir as rundir

    log: list[str] = []

    def wrap(name, fn, label_of):
        def wrapped(*args, **kwargs):
            fn(*args, **kwargs)
            log.append(label_of(*args))
            if kill_after is not None and len(log) == kill_after:
                raise _Killed(log[-1])
        monkeypatch.setattr(rundir, name, wrapped)

    wrap("atomic_write_csv", rundir.atomic_write_csv, lambda path, rows: os.path.basename(path))
    wrap("save_architecture", rundir.save_architecture, lambda model, path: "architecture.yaml")
    wrap("atomic_torch_save", rundir.atomic_torch_save, lambda state, path: os.path.basename(path))
    return log


def _run_files(run_dir) -> dict:
    last = load_checkpoint(run_dir / "last.pt")
    best = load_checkpoint(run_dir / "best.pt")
    return {"metrics": read_metrics(run_dir), "architecture": (run_dir / "architecture.yaml").read_text(),
            "last": last, "best": best}


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["architecture"] == b["architecture"]
    for which in ("last", "best"):
        sa, sb = a[which], b[which]
        assert sa["epoch"] == sb["epoch"], which
        assert sa["model"].keys() == sb["model"].keys()
        for key in sa["model"]:
            assert torch.equal(sa["model"][key], sb["model"][key]), (which, key)
        assert sa["method"] == sb["method"]
        drop = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]  # noqa: E731
        assert drop([sa["best"]]) == drop([sb["best"]])
        assert drop(sa["history"]) == drop(sb["history"])


def test_kill_between_any_two_writes_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    settings = dict(epochs=3, limit=48, lambda_=0.0, lr=0.2)
    writes = _count_writes(monkeypatch, None)
    full = train(tiny_cfg(tmp_path, "full", **settings))
    monkeypatch.undo()
    reference = _run_files(full.run_dir)
    # the order of one epoch: metrics, architecture, last.pt (the commit), best.pt when improved
    assert writes[:4] == ["metrics.csv", "architecture.yaml", "last.pt", "best.pt"]
    assert writes.count("best.pt") >= 2, writes  # a later epoch improves too: best.pt after a commit is covered

    for k in range(1, len(writes) + 1):
        name = f"kill{k}"
        _count_writes(monkeypatch, k)
        with pytest.raises(_Killed):
            train(tiny_cfg(tmp_path, name, **settings))
        monkeypatch.undo()
        assert run_status(tmp_path / name) == "incomplete"
        resumed = train(resume=tmp_path / name)
        assert resumed.finished, k
        _assert_same_run(reference, _run_files(tmp_path / name))
