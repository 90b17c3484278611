"""The decoded cache: every image of a real dataset decoded once, short side resized, stored uint8.

``fgbench data prepare NAME [--size 256]`` writes, below the data root::

    <root>/.fgbench-cache/<name>-<size>/
      meta.json                   format, size, source hash, counts, checksums (written last)
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

``meta.json`` also records the size and SHA-256 of every data file, verified
each time the cache is opened (the pixel files are hashed once per process:
about 1 s per GB).  A cache with a flipped byte, a truncated or garbled index
file (``*.offsets.npy``, ``*.shapes.npy``, ``*.labels.npy``), or no checksums
(written by an older fgbench) is *damaged*: it is ignored with a one-line
warning naming the file, and ``prepare`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
from filelock import FileLock
from PIL import Image

from fgbench._atomic import atomic_output, atomic_write_bytes, atomic_write_text, file_sha256
from fgbench.data.base import SPLITS, Split
from fgbench.data.official.images import FileSplit, ListedDataset, load_resized
from fgbench.data.official.images import progress as progress_bar
from fgbench.errors import first_line

CACHE_DIRNAME = ".fgbench-cache"
DEFAULT_SIZE = 256
FORMAT_VERSION = 2  # 2: meta.json records every data file's size and SHA-256
INDEX_FILES = ("offsets", "shapes", "labels")  # <split>.<kind>.npy


def dataset_cache_dir(root: Path, name: str, size: int = DEFAULT_SIZE) -> Path:
    """``<root>/.fgbench-cache/<name>-<size>``."""
    return Path(root).expanduser() / CACHE_DIRNAME / f"{name}-{size}"


def expected_hash(dataset: ListedDataset, size: int) -> str:
    """The source hash a valid cache of ``dataset`` at ``size`` records."""
    return dataset.source_hash(f"decoded-cache v{FORMAT_VERSION} size={size}")


class CachedSplit(Split):
    """A split served from the decoded cache; ``describe`` still names the source image file."""

    def __init__(self, directory: Path, split: str, source: FileSplit, offsets: np.ndarray | None = None,
                 shapes: np.ndarray | None = None) -> None:
        self.source = source
        self.labels = source.labels
        self.offsets = np.load(directory / f"{split}.offsets.npy") if offsets is None else offsets
        self.shapes = np.load(directory / f"{split}.shapes.npy") if shapes is None else shapes
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
    """``state``: absent, stale or valid, with a one-line reason.

    ``damaged`` marks a stale cache whose files are corrupt (checksum or index
    file wrong), as opposed to out of date; the reason names the file.
    """

    state: Literal["absent", "stale", "valid"]
    reason: str
    directory: Path
    damaged: bool = False


class _Damaged(Exception):
    """A cache file is corrupt (message: ``<file>: what``)."""


def inspect_cache(dataset: ListedDataset, root: Path, size: int = DEFAULT_SIZE) -> CacheState:
    """Whether the cache of ``dataset`` at ``size`` exists, matches the current list files and is intact."""
    return _inspect(dataset, root, size)[0]


def _inspect(dataset: ListedDataset, root: Path, size: int) -> tuple[CacheState, dict[str, dict[str, np.ndarray]]]:
    """The cache state and, when valid, the verified index arrays of each split."""
    directory = dataset_cache_dir(root, dataset.name, size)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return CacheState("absent", f"no decoded cache at {directory}", directory), {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return CacheState("stale", f"{meta_path}: damaged decoded-cache metadata ({first_line(exc)})", directory,
                          damaged=True), {}
    if not isinstance(meta, dict):
        return CacheState("stale", f"{meta_path}: damaged decoded-cache metadata (not a JSON object)", directory,
                          damaged=True), {}
    if meta.get("format") != FORMAT_VERSION:
        return CacheState("stale", f"{meta_path}: other cache format ({meta.get('format')!r}, this fgbench writes "
                                   f"{FORMAT_VERSION} with checksums)", directory), {}
    if meta.get("size") != size:
        return CacheState("stale", f"{meta_path}: other cache format or size", directory), {}
    if meta.get("source_hash") != expected_hash(dataset, size):
        return CacheState("stale", f"{meta_path}: list files changed since the cache was written", directory), {}
    try:
        arrays = {split: _verified_split(directory, split, meta) for split in SPLITS}
    except _Damaged as exc:
        return CacheState("stale", str(exc), directory, damaged=True), {}
    except OSError as exc:
        return CacheState("stale", f"{directory}: unreadable cache ({first_line(exc)})", directory), {}
    for split in SPLITS:
        if not np.array_equal(arrays[split]["labels"], dataset.listing.splits[split].labels):
            labels = directory / f"{split}.labels.npy"
            return CacheState("stale", f"{labels}: labels differ from the list files", directory), {}
    return CacheState("valid", str(directory), directory), arrays


def _recorded(meta: dict, path: Path) -> tuple[int, str]:
    """Size and SHA-256 that ``meta.json`` records for ``path``."""
    entry = meta.get("files", {}).get(path.name) if isinstance(meta.get("files"), dict) else None
    try:
        return int(entry["bytes"]), str(entry["sha256"])
    except (TypeError, KeyError, ValueError):
        raise _Damaged(f"{path.parent / 'meta.json'}: damaged decoded-cache metadata (no checksum for {path.name})") from None


def _verified_split(directory: Path, split: str, meta: dict) -> dict[str, np.ndarray]:
    """The index arrays of ``split``, each file checked against its recorded size and SHA-256, and the pixels too."""
    arrays = {}
    for kind in INDEX_FILES:
        path = directory / f"{split}.{kind}.npy"
        want_bytes, want_sha = _recorded(meta, path)
        if not path.is_file():
            raise _Damaged(f"{path}: decoded-cache index file is missing")
        data = path.read_bytes()
        if len(data) != want_bytes or hashlib.sha256(data).hexdigest() != want_sha:
            what = "truncated or extended" if len(data) != want_bytes else "damaged (checksum mismatch)"
            raise _Damaged(f"{path}: decoded-cache index file is {what}")
        try:
            arrays[kind] = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _Damaged(f"{path}: decoded-cache index file is unreadable ({first_line(exc)})") from None
    offsets, shapes, labels = arrays["offsets"], arrays["shapes"], arrays["labels"]
    pixels = directory / f"{split}.pixels"
    sizes = np.prod(shapes.astype(np.int64), axis=1) if shapes.ndim == 2 and shapes.shape[1:] == (3,) else None
    if (offsets.ndim != 1 or len(offsets) != len(labels) + 1 or sizes is None or len(sizes) != len(labels)
            or offsets[0] != 0 or not np.array_equal(np.diff(offsets), sizes)):
        raise _Damaged(f"{directory / (split + '.offsets.npy')}: decoded-cache index files disagree with "
                       f"{split}.shapes.npy / {split}.labels.npy")
    want_bytes, want_sha = _recorded(meta, pixels)
    if not pixels.is_file():
        raise _Damaged(f"{pixels}: decoded-cache pixel file is missing")
    actual = pixels.stat().st_size
    if actual != want_bytes or actual != int(offsets[-1]):
        raise _Damaged(f"{pixels}: size does not match its offsets (truncated or extended decoded-cache pixel file)")
    if file_sha256(pixels) != want_sha:
        raise _Damaged(f"{pixels}: decoded-cache pixel file is damaged (checksum mismatch)")
    return arrays


def cached_splits(dataset: ListedDataset, root: Path, size: int = DEFAULT_SIZE) -> dict[str, Split] | None:
    """The splits of ``dataset``'s cache at ``size`` if valid, else None; looked up once per dataset and size.

    A stale or damaged cache is ignored with one warning naming it (the JPEGs are read instead).
    """
    if size in dataset.cached_by_size:
        return dataset.cached_by_size[size]
    state, arrays = _inspect(dataset, root, size)
    if state.state == "stale":
        what = "damaged" if state.damaged else "stale"
        warnings.warn(
            f"{dataset.name}: ignoring {what} decoded cache ({state.reason}); reading JPEGs. "
            f"Rebuild with `fgbench data prepare {dataset.name} --size {size}`"
            + (f" (or delete {state.directory})" if state.damaged else ""),
            stacklevel=4,
        )
    splits: dict[str, Split] | None = None
    if state.state == "valid":
        splits = {s: CachedSplit(state.directory, s, dataset.file_split(s), arrays[s]["offsets"], arrays[s]["shapes"])
                  for s in SPLITS}
    dataset.cached_by_size[size] = splits
    return splits


def attach(dataset: ListedDataset, root: Path, size: int = DEFAULT_SIZE) -> bool:
    """Serve ``dataset`` from its cache if valid; warn (once per call) if stale or damaged.  Returns whether attached.

    Also makes every cache below ``root`` available to :meth:`ListedDataset.split_for_decode_size`, which picks
    the one of the size a protocol's pipeline starts from.
    """
    dataset.cache_root = Path(root)
    dataset.cached_by_size.pop(size, None)  # inspect again (and warn again) on every attach
    splits = cached_splits(dataset, root, size)
    if splits is None:
        return False
    dataset.use_splits(splits)
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


def _atomic_save(path: Path, array: np.ndarray) -> dict[str, int | str]:
    """Write ``array`` as ``.npy`` atomically; its size and SHA-256 for ``meta.json``."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


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
    directory = dataset_cache_dir(root, dataset.name, size)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not force and inspect_cache(dataset, root, size).state == "valid":
            return directory
        (directory / "meta.json").unlink(missing_ok=True)  # invalidate before touching data files
        counts = {}
        files: dict[str, dict[str, int | str]] = {}
        for split in SPLITS:
            source = dataset.file_split(split)
            jobs = [(p, size, dataset.crop_bottom) for p in source.paths]
            counts[split] = len(jobs)
            files.update(_write_split(directory, split, source,
                                      progress_bar(_decoded(jobs, workers), len(jobs), f"{dataset.name} {split}", progress)))
        meta = {
            "format": FORMAT_VERSION,
            "dataset": dataset.name,
            "size": size,
            "source_hash": expected_hash(dataset, size),
            "counts": counts,
            "files": files,
            "list_files": [str(p) for p in dataset.listing.list_files],
        }
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2))
    return directory



def _write_split(directory: Path, split: str, source: FileSplit,
                 arrays: Iterable[np.ndarray]) -> dict[str, dict[str, int | str]]:
    """Write one split's files; their sizes and SHA-256s (hashed while writing), by file name."""
    n = len(source)
    offsets = np.zeros(n + 1, dtype=np.int64)
    shapes = np.zeros((n, 3), dtype=np.int32)
    pixels = directory / f"{split}.pixels"
    digest = hashlib.sha256()
    with atomic_output(pixels, "wb") as f:
        for i, array in enumerate(arrays):
            data = np.ascontiguousarray(array).tobytes()
            f.write(data)
            digest.update(data)
            shapes[i] = array.shape
            offsets[i + 1] = offsets[i] + array.size
    return {
        pixels.name: {"bytes": int(offsets[-1]), "sha256": digest.hexdigest()},
        f"{split}.offsets.npy": _atomic_save(directory / f"{split}.offsets.npy", offsets),
        f"{split}.shapes.npy": _atomic_save(directory / f"{split}.shapes.npy", shapes),
        f"{split}.labels.npy": _atomic_save(directory / f"{split}.labels.npy", source.labels),
    }
