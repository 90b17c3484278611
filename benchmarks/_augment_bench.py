"""Shared pieces of the loader benchmarks: cache-like uint8 images, the CPU-transform and device-augment paths.

Used by ``test_bench_augment.py`` (pytest-benchmark).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from fgbench.data.base import Split
from fgbench.data.loader import SplitDataset
from fgbench.data.transforms import build_transform
from fgbench.data.transforms import DeviceAugment, pad_collate, uint8_transform
from fgbench.protocol import Protocol

PROTO = Protocol(input_size=224, resize_size=256, weights="random")
N, BATCH = 384, 64


class CacheLikeSplit(Split):
    """uint8 arrays of varying aspect ratio, short side 256 (what the decoded cache stores), in memory."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = []
        for i in range(n):
            long = int(rng.integers(256, 401))
            shape = (256, long, 3) if i % 2 else (long, 256, 3)
            self.arrays.append(rng.integers(0, 256, shape, dtype=np.uint8))
        self.labels = np.arange(n) % 10

    def load_image(self, index: int):  # type: ignore[no-untyped-def]  # pragma: no cover - not used
        raise NotImplementedError

    def load_array(self, index: int) -> np.ndarray:
        return self.arrays[index]


def cpu_path(split: Split, device: torch.device, workers: int = 0) -> int:
    """Every training batch through the per-image CPU transform, moved to ``device``: images delivered."""
    loader = DataLoader(SplitDataset(split, build_transform(PROTO, train=True)), batch_size=BATCH, shuffle=True,
                        pin_memory=device.type == "cuda", num_workers=workers)
    n = 0
    for images, _labels, _idx in loader:
        x = images.to(device, non_blocking=True)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n


def device_path(split: Split, device: torch.device, workers: int = 0) -> int:
    """Every training batch as uint8, augmented on ``device`` (``--gpu-augment``): images delivered."""
    loader = DataLoader(SplitDataset(split, uint8_transform(PROTO)), batch_size=BATCH, shuffle=True,
                        collate_fn=pad_collate, pin_memory=device.type == "cuda", num_workers=workers)
    augment = DeviceAugment(PROTO, train=True, device=device, seed=0, channels_last=True)
    n = 0
    for raw, sizes, _labels, _idx in loader:
        x = augment(raw.to(device, non_blocking=True), sizes)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n
