"""Training-batch throughput: uint8 images + device augmentation vs the per-image CPU transform (pytest-benchmark).

Images as the decoded cache serves them (uint8, short side 256, long side
256..400, in memory); batches of 64 crops of 224 as the training loop
consumes them (random crop, flip, float32, ImageNet normalisation), on the
device.  Reference: the CPU path (``build_transform``: per image, in the
loader).  Candidate: ``--gpu-augment`` (the loader only batches uint8
images; :class:`fgbench.data.transforms.DeviceAugment` crops, flips and
normalises the whole batch on the device).  Both run in the main process
(``num_workers=0``), so the ratio is the per-image CPU work saved; on CUDA
the uint8 batch also moves a quarter of the bytes.

The CPU run puts the "device" augmentation on the CPU as well (batched
tensor ops instead of per-image transforms); the CUDA run is skipped without
CUDA.

    python -m pytest benchmarks/test_bench_augment.py --benchmark-only -s
"""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from _augment_bench import N, CacheLikeSplit, cpu_path, device_path  # noqa: E402
from fgbench.data.base import Split  # noqa: E402

def _rate(fn, split: Split, device: torch.device, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn(split, device)
        best = min(best, time.perf_counter() - t0)
    return n / best


@pytest.fixture(scope="module")
def split() -> Split:
    return CacheLikeSplit(N)


def _compare(benchmark, split: Split, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    device_path(split, device)  # warm-up
    benchmark.pedantic(device_path, args=(split, device), rounds=3, iterations=1)
    fast = N / benchmark.stats.stats.min
    reference = _rate(cpu_path, split, device)
    ratio = fast / reference
    benchmark.extra_info.update({"gpu_augment_images_per_s": round(fast, 1), "cpu_transform_images_per_s":
                                 round(reference, 1), "ratio": round(ratio, 2)})
    print(f"\n{device.type}: uint8 + device augmentation {fast:,.0f} images/s vs CPU transform {reference:,.0f} "
          f"images/s -> {ratio:.2f}x (one loader process, 224 crops of short-side-256 images)")
    return ratio


def test_uint8_batches_with_augmentation_on_cpu(benchmark, split: Split) -> None:  # type: ignore[no-untyped-def]
    ratio = _compare(benchmark, split, torch.device("cpu"))
    assert ratio > 0.5  # informative on the CPU; the point of the path is the GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uint8_batches_with_augmentation_on_cuda(benchmark, split: Split) -> None:  # type: ignore[no-untyped-def]
    ratio = _compare(benchmark, split, torch.device("cuda"))
    assert ratio > 1.0
