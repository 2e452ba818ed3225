"""DistributedDataParallel set-up: the same ``train`` call runs in one process or under ``torchrun``.

``torchrun --nproc-per-node N -m napari_pathm3.cli train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
we join the process group (nccl on CUDA, gloo on CPU), shard the training bags with a DistributedSampler,
average gradients with DDP, and let only rank 0 write checkpoints and logs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``world_size`` 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by ``WORLD_SIZE``/``RANK`` (no-op when ``WORLD_SIZE`` is unset or 1,
    or when the caller already initialised one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    log.info("joined %s process group: rank %d of %d", backend, rank, world)
    return DistInfo(rank, world, local, initialized_here=True)


def shutdown(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def all_reduce_mean(value: float, info: DistInfo, device: Any) -> float:
    """Mean of a scalar over all processes."""
    if not info.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def gather_objects(obj: T, info: DistInfo) -> list[T]:
    """Every process's ``obj``, in rank order (a one-element list when not distributed)."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[T] = [obj] * info.world_size  # placeholders: all_gather_object fills every slot
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()
