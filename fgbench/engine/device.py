"""Device, precision and seeding choices for a job (all recorded in the run record)."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EngineOptions:
    """How a job runs (not *what* it trains — that is the protocol).

    ``amp``: ``auto`` (bf16 autocast on CUDA when supported, fp16 with a
    GradScaler otherwise, off on CPU), ``bf16``, ``fp16`` or ``off``.
    ``channels_last``: ``auto`` (on for CUDA), ``on`` or ``off``.
    """

    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    num_workers: int = 0
    log_every: int = 50
    deterministic: bool = False
    progress: bool = True
    checkpoint: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Runtime:
    """The resolved device/precision for one job."""

    device: torch.device
    amp_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool

    def describe(self) -> dict:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "grad_scaler": self.use_scaler,
            "channels_last": self.channels_last,
            "torch_threads": torch.get_num_threads(),
        }


class EngineError(ValueError):
    """Invalid engine option (message names the option)."""


def resolve_runtime(options: EngineOptions) -> Runtime:
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
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, dtype, use_scaler=(dtype == torch.float16 and cuda), channels_last=channels_last)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
