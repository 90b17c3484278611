"""Loader throughput: reading JPEGs vs the decoded cache (pytest-benchmark).

A generated CUB-layout fixture of a few hundred ~300x400 JPEGs; each
benchmark reads every image of the split as the loader does
(``Split.load_array``).  The cache's speed is reported as a ratio against
the JPEG reference measured in the same run.

    python -m pytest benchmarks/test_bench_loader.py -q -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytest_benchmark")

from fgbench.data.base import ExpectedSizes  # noqa: E402
from fgbench.data.official.cache import CachedSplit, build_cache  # noqa: E402
from fgbench.data.official.catalog import CUB  # noqa: E402
from fgbench.data.official.images import FileSplit  # noqa: E402

CLASSES, PER_CLASS = 10, 30  # 300 JPEGs, all in the train split
SIZE = 256
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A CUB_200_2011 layout with 300 noisy ~300x400 JPEGs (and 10 test images)."""
    root = tmp_path_factory.mktemp("bench-data")
    folder = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    images, labels, split = [], [], []
    n = 0
    for c in range(1, CLASSES + 1):
        for i in range(PER_CLASS + 1):
            n += 1
            rel = f"{c:03d}.class_{c}/img_{n:05d}.jpg"
            w, h = (400, 300) if n % 2 else (300, 400)
            base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
            arr = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)).astype(np.int16)
            arr = np.clip(arr + rng.integers(-12, 12, arr.shape), 0, 255).astype(np.uint8)
            (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / "images" / rel, quality=90)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
            split.append(f"{n} {int(i < PER_CLASS)}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (folder / name).write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("".join(f"{c} {c:03d}.class_{c}\n" for c in range(1, CLASSES + 1)))
    return root


@pytest.fixture(scope="module")
def official():
    return CUB.with_expected(ExpectedSizes(CLASSES * PER_CLASS, CLASSES, CLASSES))


def _read_all(split) -> int:
    total = 0
    for i in range(len(split)):
        total += split.load_array(i).shape[0]
    return total


def _rate(benchmark, split) -> float:
    benchmark.pedantic(_read_all, args=(split,), rounds=3, iterations=1, warmup_rounds=1)
    return len(split) / benchmark.stats.stats.min


def test_jpeg_reference(benchmark, root, official):
    split = official(root, use_cache=False).split("train")
    assert isinstance(split, FileSplit) and len(split) == CLASSES * PER_CLASS
    RATES["jpeg"] = rate = _rate(benchmark, split)
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    print(f"\nJPEG decode: {rate:,.0f} images/s ({len(split)} images ~300x400)")


def test_decoded_cache(benchmark, root, official):
    t0 = time.perf_counter()
    build_cache(official(root, use_cache=False), root, SIZE)
    built = time.perf_counter() - t0
    split = official(root, cache_size=SIZE).split("train")
    assert isinstance(split, CachedSplit)
    rate = _rate(benchmark, split)
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    reference = RATES.get("jpeg")
    if reference is None:  # run alone: measure the reference here
        reference = len(split) / min(_timed(_read_all, official(root, use_cache=False).split("train")) for _ in range(3))
    ratio = rate / reference
    benchmark.extra_info["ratio_vs_jpeg"] = round(ratio, 2)
    print(f"\ndecoded cache (short side {SIZE}): {rate:,.0f} images/s, {ratio:.1f}x the JPEG reference "
          f"({reference:,.0f} images/s); cache built in {built:.1f} s")
    assert ratio > 1.5, f"the decoded cache should be clearly faster than JPEG decoding, got {ratio:.2f}x"


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0
