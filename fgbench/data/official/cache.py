"""The decoded cache: every image of a real dataset decoded once, short side resized, stored uint8.

``fgbench data prepare NAME [--size 256]`` writes, below the data root::

    <root>/.fgbench-cache/<name>-<size>/
      meta.json                   format, size, source hash, counts (written last)
      train.pixels  test.pixels   flat uint8 buffers (memory-mapped when read)
      train.offsets.npy ...       int64 (N+1,) start of image i in the buffer
      train.shapes.npy  ...       int32 (N, 3) its (H, W, 3)
      train.labels.npy  ...       int64 (N,) its label

Images keep their aspect ratio (the shorter side becomes ``size``), so they
are stored back to back with offsets rather than as one ``(N, H, W, 3)``
array.  Every file is written to a temporary name and renamed into place;
``meta.json`` goes last, so a half-written cache is never taken for a valid one.

``meta.json`` records a SHA-256 of the dataset's list files (and of the
reading recipe: banner crop, size, format).  When loading, a cache whose hash,
counts or labels differ from the current list files is *stale*: it is ignored
with a warning and ``prepare`` rebuilds it.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
from filelock import FileLock
from PIL import Image

from fgbench.atomic import atomic_output, atomic_write_text
from fgbench.data.base import SPLITS, Split
from fgbench.data.official.images import FileSplit, ListedDataset, load_resized

CACHE_DIRNAME = ".fgbench-cache"
DEFAULT_SIZE = 256
FORMAT_VERSION = 1


def cache_dir(root: Path, name: str, size: int = DEFAULT_SIZE) -> Path:
    """``<root>/.fgbench-cache/<name>-<size>``."""
    return Path(root).expanduser() / CACHE_DIRNAME / f"{name}-{size}"


def expected_hash(dataset: ListedDataset, size: int) -> str:
    """The source hash a valid cache of ``dataset`` at ``size`` records."""
    return dataset.source_hash(f"decoded-cache v{FORMAT_VERSION} size={size}")


class CachedSplit(Split):
    """A split served from the decoded cache; ``describe`` still names the source image file."""

    def __init__(self, directory: Path, split: str, source: FileSplit) -> None:
        self.source = source
        self.labels = source.labels
        self.offsets = np.load(directory / f"{split}.offsets.npy")
        self.shapes = np.load(directory / f"{split}.shapes.npy")
        pixels = directory / f"{split}.pixels"
        total = int(self.offsets[-1])
        self.pixels = np.memmap(pixels, dtype=np.uint8, mode="r", shape=(total,)) if total else np.zeros(0, np.uint8)

    def load_array(self, index: int) -> np.ndarray:
        """The cached ``(H, W, 3)`` uint8 image (a writable copy of the memory-mapped slice)."""
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return np.array(self.pixels[start:stop]).reshape(tuple(self.shapes[index]))

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.load_array(index))

    def describe(self, index: int) -> str:
        return self.source.describe(index)


@dataclass(frozen=True)
class CacheState:
    """``state``: absent, stale or valid, with a one-line reason."""

    state: Literal["absent", "stale", "valid"]
    reason: str
    directory: Path


def inspect_cache(dataset: ListedDataset, root: Path, size: int = DEFAULT_SIZE) -> CacheState:
    """Whether the cache of ``dataset`` at ``size`` exists and matches the current list files."""
    directory = cache_dir(root, dataset.name, size)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return CacheState("absent", f"no decoded cache at {directory}", directory)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("size") != size:
            return CacheState("stale", f"{meta_path}: other cache format or size", directory)
        if meta.get("source_hash") != expected_hash(dataset, size):
            return CacheState("stale", f"{meta_path}: list files changed since the cache was written", directory)
        for split in SPLITS:
            labels = np.load(directory / f"{split}.labels.npy")
            offsets = np.load(directory / f"{split}.offsets.npy")
            if not np.array_equal(labels, dataset.listing.splits[split].labels):
                return CacheState("stale", f"{directory / (split + '.labels.npy')}: labels differ from the list files", directory)
            pixels = directory / f"{split}.pixels"
            if len(offsets) != len(labels) + 1 or pixels.stat().st_size != int(offsets[-1]):
                return CacheState("stale", f"{pixels}: size does not match its offsets", directory)
    except (OSError, ValueError) as exc:
        return CacheState("stale", f"{directory}: unreadable cache ({exc})", directory)
    return CacheState("valid", str(directory), directory)


def attach(dataset: ListedDataset, root: Path, size: int = DEFAULT_SIZE) -> bool:
    """Serve ``dataset`` from its cache if valid; warn (once per call) if stale.  Returns whether attached."""
    state = inspect_cache(dataset, root, size)
    if state.state == "stale":
        warnings.warn(
            f"{dataset.name}: ignoring stale decoded cache ({state.reason}); reading JPEGs. "
            f"Rebuild with `fgbench data prepare {dataset.name} --size {size}`",
            stacklevel=3,
        )
    if state.state != "valid":
        return False
    dataset.use_splits({s: CachedSplit(state.directory, s, dataset.file_split(s)) for s in SPLITS})
    return True


def _decode_one(args: tuple[Path, int, int]) -> np.ndarray:
    path, size, crop = args
    return load_resized(path, size, crop)


def _decoded(jobs: list[tuple[Path, int, int]], workers: int) -> Iterator[np.ndarray]:
    if workers <= 1:
        yield from map(_decode_one, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=32)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, "wb") as f:
        np.save(f, array)


def build_cache(
    dataset: ListedDataset,
    root: Path,
    size: int = DEFAULT_SIZE,
    workers: int = 0,
    progress: bool = False,
    force: bool = False,
) -> Path:
    """Decode every image of ``dataset`` into its cache at ``size``; returns the cache folder.

    Up-to-date caches are left alone unless ``force``.  Concurrent builders
    are serialised with a file lock.

    Raises:
        DatasetError: an image cannot be decoded (named); nothing is committed.
    """
    directory = cache_dir(root, dataset.name, size)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not force and inspect_cache(dataset, root, size).state == "valid":
            return directory
        (directory / "meta.json").unlink(missing_ok=True)  # invalidate before touching data files
        counts = {}
        for split in SPLITS:
            source = dataset.file_split(split)
            jobs = [(p, size, dataset.crop_bottom) for p in source.paths]
            counts[split] = len(jobs)
            _write_split(directory, split, source, _progress(_decoded(jobs, workers), len(jobs), f"{dataset.name} {split}", progress))
        meta = {
            "format": FORMAT_VERSION,
            "dataset": dataset.name,
            "size": size,
            "source_hash": expected_hash(dataset, size),
            "counts": counts,
            "list_files": [str(p) for p in dataset.listing.list_files],
        }
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2))
    return directory


def _progress(items: Iterable[np.ndarray], total: int, desc: str, enabled: bool) -> Iterable[np.ndarray]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img")


def _write_split(directory: Path, split: str, source: FileSplit, arrays: Iterable[np.ndarray]) -> None:
    n = len(source)
    offsets = np.zeros(n + 1, dtype=np.int64)
    shapes = np.zeros((n, 3), dtype=np.int32)
    pixels = directory / f"{split}.pixels"
    with atomic_output(pixels, "wb") as f:
        for i, array in enumerate(arrays):
            f.write(np.ascontiguousarray(array).tobytes())
            shapes[i] = array.shape
            offsets[i + 1] = offsets[i] + array.size
    _atomic_save(directory / f"{split}.offsets.npy", offsets)
    _atomic_save(directory / f"{split}.shapes.npy", shapes)
    _atomic_save(directory / f"{split}.labels.npy", source.labels)
