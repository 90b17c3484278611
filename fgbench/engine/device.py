"""Device, precision and seeding choices for a job (all recorded in the run record).

The defaults take the fast path on CUDA: bf16 autocast (fp16 + GradScaler on
GPUs without bf16), channels-last tensors, cuDNN autotuning, TF32 matmuls and
fused optimizers.  On the CPU everything stays in float32, contiguous.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fgbench.data.loader import LoaderOptions
from fgbench.data.transforms import DeviceAugment
from fgbench.errors import EngineError


@dataclass(frozen=True)
class EngineOptions:
    """How a job runs (not *what* it trains — that is the protocol).

    ``amp``: ``auto`` (bf16 autocast on CUDA when supported, fp16 with a
    GradScaler otherwise, off on CPU), ``bf16``, ``fp16`` or ``off``.
    ``channels_last``: ``auto`` (on for CUDA), ``on`` or ``off``.
    ``compile``: ``torch.compile`` the training forward.
    ``gpu_augment``: the loader ships uint8 images (resized on the CPU) and
    the random crop, flip and normalisation run on the device
    (:mod:`fgbench.data.transforms`; same distribution as the CPU path).
    ``num_workers``: DataLoader worker processes (persistent, pinned memory on
    CUDA); ``-1`` (default) = auto: up to 8 on CUDA (one core left for the
    training process), none on the CPU, where workers would compete with the
    model for the same cores.
    ``log_every``: steps between progress-bar loss updates (the only host syncs
    inside an epoch, and only with ``progress``).
    ``checkpoint_every``: least seconds between resume checkpoints, written at
    the end of an epoch (default 10, so a job of a minute is resumable); the
    wait is also at least nine times the last checkpoint's writing time, so
    checkpoints cost at most about a tenth of the training time (a ResNet-18
    DPSH checkpoint on the embedded dataset is 134 MB and takes 0.4-0.7 s on
    a CPU machine, an epoch about 2 s); 0 = after every epoch, whatever the cost.
    ``nproc``: processes (GPUs) per job under DistributedDataParallel; ``sync_bn``
    converts BatchNorm to SyncBatchNorm (CUDA); ``find_unused_parameters`` is
    passed to DDP for methods whose ``forward`` leaves parameters unused.
    """

    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    gpu_augment: bool = False
    num_workers: int = -1
    log_every: int = 50
    deterministic: bool = False
    progress: bool = True
    checkpoint: bool = True
    checkpoint_every: float = 10.0
    nproc: int = 1
    sync_bn: bool = False
    find_unused_parameters: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Runtime:
    """The resolved device/precision for one job."""

    device: torch.device
    amp_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "grad_scaler": self.use_scaler,
            "channels_last": self.channels_last,
            "torch_threads": torch.get_num_threads(),
            "world_size": self.world_size,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if self.device.type == "cuda" else False,
        }


def auto_workers(device: torch.device, requested: int) -> int:
    """DataLoader workers for ``requested`` (-1 = auto: up to 8 on CUDA, 0 on the CPU)."""
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def resolve_runtime(options: EngineOptions) -> Runtime:
    """The device and precision ``options`` ask for on this machine (and this process's rank)."""
    from fgbench.engine import distributed

    info = distributed.info()
    if options.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(options.device)
        except RuntimeError:
            raise EngineError(f"--device {options.device!r}: use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"--device {options.device}: CUDA is not available on this machine; use --device cpu")
    cuda = device.type == "cuda"
    if cuda and info.enabled and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if options.sync_bn and info.enabled and not cuda:
        raise EngineError("--sync-bn needs CUDA (torch's SyncBatchNorm has no CPU implementation)")
    amp = options.amp
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise EngineError(f"--amp {amp!r}: use auto, bf16, fp16 or off")
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    if options.channels_last not in ("auto", "on", "off"):
        raise EngineError(f"--channels-last {options.channels_last!r}: use auto, on or off")
    channels_last = cuda if options.channels_last == "auto" else options.channels_last == "on"
    if cuda:
        torch.backends.cudnn.benchmark = not options.deterministic
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls left outside autocast
    return Runtime(device, dtype, use_scaler=(dtype == torch.float16 and cuda), channels_last=channels_last,
                   rank=info.rank, world_size=info.world_size)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch; switch deterministic algorithms on or off for this job."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)


def autocast_for(runtime: Runtime) -> contextlib.AbstractContextManager:
    """The mixed-precision context of ``runtime`` (a no-op without AMP)."""
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.amp_dtype)


def _to_device(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    images = images.to(runtime.device, non_blocking=True)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def loader_options_for(runtime: Runtime, options: EngineOptions) -> LoaderOptions:
    """DataLoader settings of a job: the requested workers (persistent; -1 = auto), pinned memory on CUDA."""
    workers = auto_workers(runtime.device, options.num_workers)
    return LoaderOptions(num_workers=workers, pin_memory=runtime.device.type == "cuda", persistent_workers=workers > 0)


def batch_images(data: tuple, runtime: Runtime, augment: DeviceAugment | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """``(images on the device, labels, indices)`` from a loader batch (device augmentation applied)."""
    if augment is None:
        images, labels, idx = data
        return _to_device(images, runtime), labels, idx
    raw, sizes, labels, idx = data
    return augment(raw.to(runtime.device, non_blocking=True), sizes), labels, idx
