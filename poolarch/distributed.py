"""Data-parallel training through ``torchrun`` (or any launcher setting ``RANK``/``WORLD_SIZE``).

``torchrun --nproc_per_node 2 -m poolarch train ...`` starts two processes; each calls
:func:`init_distributed`, which joins the process group (gloo on CPU, nccl on CUDA). The engine
shards the data with ``load_data(..., rank, world_size)``, wraps the model in
``DistributedDataParallel`` and only the primary rank writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "barrier", "broadcast_object", "broadcast_buffers",
           "average_over_ranks_", "mean_over_ranks", "means_over_ranks", "is_primary_process"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group described by the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a single process when they are absent."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place; returns it). No-op for a single process."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """``obj`` of rank 0 on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank. DDP does this before each
    forward; the engine does it once more after an epoch so that every rank evaluates and saves
    the same model."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def is_primary_process() -> bool:
    """True outside a process group and on its rank 0 (who prints and writes)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# -- for methods: updates that happen outside DDP's backward (architecture steps, bookkeeping) ----
def _process_group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_over_ranks_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace every tensor by its mean over the ranks of the default process group, in place;
    a no-op in a single process. Methods call it on gradients they compute themselves (e.g. a
    mixing-weight step on a validation batch), so every rank takes the same step."""
    world = _process_group_size()
    if world > 1:
        for t in tensors:
            dist.all_reduce(t)
            t.div_(world)


def means_over_ranks(values: Sequence[float]) -> list[float]:
    """Each value averaged over the ranks (e.g. a validation accuracy that drives sampling, which
    must stay identical on every rank, or correct/total counts of a sharded evaluation); the
    values themselves in a single process."""
    if _process_group_size() == 1:
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    average_over_ranks_([t])
    return t.tolist()


def mean_over_ranks(value: float) -> float:
    """One value averaged over the ranks (see :func:`means_over_ranks`)."""
    return means_over_ranks([value])[0]
