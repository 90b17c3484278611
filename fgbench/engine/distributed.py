"""One job on several processes (GPUs): DistributedDataParallel plumbing.

``torchrun --nproc-per-node N -m fgbench run ...`` (or ``fgbench run --nproc N``,
which launches exactly that) runs the same job grid in N processes.  For each
job every rank trains one replica under DDP; rank 0 alone decides whether the
job runs (record present, lock held elsewhere), writes checkpoints and the
run record, and evaluates.

What keeps N processes equivalent to one:

* :class:`GlobalBatchSampler` draws the single-process permutation (same
  generator, same order) and gives rank ``r`` the ``r``-th slice of each
  *global* batch, so the global batch of step ``k`` is the single-process
  batch ``k`` and DDP's gradient average equals the single-process gradient
  of a per-batch mean loss.  The protocol's ``batch_size`` stays the global
  batch; each rank holds ``batch_size / N``.
* :class:`MemorySync` makes every :class:`~fgbench.blocks.memories.CodeMemory` update
  (and every :class:`~fgbench.blocks.memories.ClassMeans` add) collective while
  training: the rows written by each rank are all-gathered and written on
  every rank, at the moment of the update.  A method that
  writes the batch's codes into its memory and then reads the memory in the
  same loss (DPSH, CMBH) therefore sees the whole global batch, as in one
  process.  Methods need no change; the one rule is that every rank calls
  ``update`` the same number of times with the same number of rows, which
  holds for per-batch updates (every rank gets equal local batches).
* BatchNorm running statistics are broadcast from rank 0 (DDP's
  ``broadcast_buffers``, restricted to normalisation layers) and once more
  at each epoch end, before ``on_epoch_end`` hooks encode the training set.
  Batch statistics themselves are per rank (a local batch of
  ``batch_size / N``) unless ``--sync-bn`` (CUDA) is given: that is the one
  systematic difference from a single-process run.
* ``encode_train()`` is sharded: each rank encodes ``1/N`` of the training
  split and the codes are all-gathered.

Backends: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on
the CPU (used by the tests).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from fgbench.blocks.memories import ClassMeans, CodeMemory

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def info() -> DistInfo:
    """The distributed state set by :func:`init` (single process when never initialised)."""
    return _INFO


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or Slurm via ``submit``) with a world size above one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ...).

    NCCL with one GPU per process when CUDA is used, gloo otherwise.
    """
    global _INFO
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and device != "cpu" and not device.startswith("cpu")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=torch.device("cuda", local) if cuda else None)
    _INFO = DistInfo(rank=rank, world_size=world, local_rank=local)
    return _INFO


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still talks)."""
    global _INFO
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _INFO = DistInfo()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info().enabled:
        return [obj]
    out: list[Any] = [None] * info().world_size
    dist.all_gather_object(out, obj)
    return out


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0 (rank order); no host sync."""
    if not info().enabled:
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(info().world_size)]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of ``tensor`` (a new tensor)."""
    if not info().enabled:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out / info().world_size


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous slice ``[start, stop)`` of ``n`` items held by ``rank`` (the first ranks get one more)."""
    per = math.ceil(n / world) if world else n
    start = min(n, rank * per)
    return start, min(n, start + per)


def norm_buffer_names(model: nn.Module) -> set[str]:
    """Fully qualified names of the buffers of normalisation layers (BatchNorm running statistics)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            for name, _buf in module.named_buffers(recurse=False):
                names.add(f"{prefix}.{name}" if prefix else name)
    return names


def broadcast_norm_buffers(model: nn.Module) -> None:
    """Copy rank 0's BatchNorm running statistics to every rank."""
    if not info().enabled:
        return
    keep = norm_buffer_names(model)
    for name, buf in model.named_buffers():
        if name in keep:
            dist.broadcast(buf, src=0)


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` under DistributedDataParallel; only normalisation buffers are broadcast.

    Code memories and other method buffers are left alone: memories are kept
    identical by :class:`MemorySync`, and constant buffers (label arrays,
    proxy codes) are identical by construction.
    """
    from torch.nn.parallel import DistributedDataParallel

    ignore = [name for name, _ in model.named_buffers() if name not in norm_buffer_names(model)]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=True,
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
    )


class MemorySync:
    """Within a ``with`` block, every ``CodeMemory.update`` / ``ClassMeans.add`` of ``model`` is all-gathered.

    The harness's hook for memories (module docstring): the rows
    ``(indices or labels, values)`` given by each rank are concatenated in
    rank order and passed on every rank to the module's own method, so
    memories and class sums stay identical everywhere.  A no-op in a single
    process.
    """

    WRAPPED = ((CodeMemory, "update", "codes"), (ClassMeans, "add", "sums"))

    def __init__(self, model: nn.Module) -> None:
        self.targets = [(m, method, buffer) for m in model.modules() for cls, method, buffer in self.WRAPPED
                        if isinstance(m, cls)] if info().enabled else []

    def __enter__(self) -> "MemorySync":
        for module, method, buffer in self.targets:
            setattr(module, method, self._collective(module, method, buffer))  # instance attribute shadows it
        return self

    def __exit__(self, *exc: object) -> None:
        for module, method, _buffer in self.targets:
            module.__dict__.pop(method, None)

    @staticmethod
    def _collective(module: nn.Module, method: str, buffer: str):  # type: ignore[no-untyped-def]
        local = getattr(type(module), method)

        def collective(keys: torch.Tensor, values: torch.Tensor) -> None:
            store = getattr(module, buffer)
            keys = keys.to(store.device).long().reshape(-1)
            values = values.detach().to(device=store.device, dtype=store.dtype)
            local(module, all_gather_cat(keys), all_gather_cat(values))

        return collective


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of one epoch: one shuffled order for all ranks, each global batch split across ranks.

    Each epoch draws ``torch.randperm(n, generator=generator)`` (the loader's
    generator, seeded identically on every rank, so every rank draws the same
    order), cuts it into global batches of ``batch_size`` (the last one
    dropped when ``drop_last``) and yields the ``rank``-th of ``world`` equal
    slices of each.  A partial last batch of ``m`` items gives ``m // world``
    to every rank (the remainder is skipped, so ranks stay in step).  With one
    process this is an ordinary shuffled batch sampler, so ``N`` processes see
    exactly the global batches of one process.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, drop_last: bool, shuffle: bool = True,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes; "
                             f"use a multiple of {world} (--batch-size) or another --nproc")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.drop_last, self.shuffle, self.rank, self.world = drop_last, shuffle, rank, world

    def __len__(self) -> int:
        full = self.n // self.batch_size
        tail = self.n - full * self.batch_size
        return full + int(not self.drop_last and tail // self.world > 0)

    def __iter__(self) -> Iterator[list[int]]:
        order: Sequence[int] = (torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle
                                else list(range(self.n)))
        for k in range(len(self)):
            start = k * self.batch_size
            m = min(self.batch_size, self.n - start)
            per = m // self.world
            yield list(order[start + self.rank * per : start + (self.rank + 1) * per])
