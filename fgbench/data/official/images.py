"""Image files: decoding one file to RGB with one-line errors that name it, and the splits and dataset
over the files a :class:`~fgbench.data.official.listing.Listing` names."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping, TypeVar

import numpy as np
from PIL import Image

from fgbench.data.base import DatasetError, RetrievalDataset, Split, SplitName
from fgbench.data.official.listing import Listing
from fgbench.errors import first_line


def _decode(path: Path, draft: bool = False) -> Image.Image:
    try:
        with Image.open(path) as im:
            if draft and im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            return im.copy() if im.mode == "RGB" else im
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, not an image") from None
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({first_line(exc)})") from None


def open_rgb(path: Path, crop_bottom: int = 0) -> Image.Image:
    """Decode ``path`` fully and return it as an RGB image.

    Grayscale, CMYK, palette and alpha images are converted to RGB.
    ``crop_bottom`` removes that many pixel rows at the bottom (the FGVC-Aircraft
    copyright banner).

    Raises:
        DatasetError: missing, truncated or corrupt file, or an image not taller
            than ``crop_bottom``; the message names the file.
    """
    im = _decode(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    if crop_bottom:
        if im.height <= crop_bottom:
            raise DatasetError(f"{path}: image is {im.height} px tall, cannot crop the {crop_bottom}-px banner")
        im = im.crop((0, 0, im.width, im.height - crop_bottom))
    return im


def verify_image(path: Path) -> str:
    """Decode ``path`` (cheaply: JPEGs at 1/8 scale, which still reads every byte) and return its mode.

    Raises:
        DatasetError: missing, truncated or corrupt file.
    """
    return _decode(path, draft=True).mode


def resized_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``short_side`` (aspect kept)."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def load_resized(path: Path, short_side: int, crop_bottom: int = 0) -> np.ndarray:
    """The image as a uint8 ``(H, W, 3)`` array with its shorter side resized to ``short_side``."""
    im = open_rgb(path, crop_bottom)
    size = resized_shape(im.width, im.height, short_side)
    if size != im.size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


class FileSplit(Split):
    """A split read from image files, decoded on every access.

    ``crop_bottom`` pixel rows are removed from the bottom of every image
    (FGVC-Aircraft's copyright banner).  A missing or damaged file raises a
    one-line :class:`~fgbench.data.base.DatasetError` naming it.
    """

    def __init__(self, paths: list[Path], labels: np.ndarray, crop_bottom: int = 0) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.crop_bottom = crop_bottom

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index], self.crop_bottom)

    def load_array(self, index: int) -> np.ndarray:
        """The decoded image as a *writable* uint8 ``(H, W, 3)`` array (torch.from_numpy warns otherwise)."""
        return np.array(self.load_image(index), dtype=np.uint8)

    def describe(self, index: int) -> str:
        return str(self.paths[index])


class ListedDataset(RetrievalDataset):
    """A real dataset: splits from its official list files, images from disk.

    ``splits`` may be replaced by cached splits (see :mod:`fgbench.data.official.cache`)
    with the same labels; :attr:`listing` keeps what the list files say.
    """

    def __init__(self, name: str, listing: Listing, crop_bottom: int = 0) -> None:
        self.name = name
        self.listing = listing
        self.crop_bottom = crop_bottom
        self.num_classes = listing.num_classes
        self.class_names = tuple(listing.class_names)
        self.splits: dict[str, Split] = {
            s: FileSplit(sl.paths, sl.labels, crop_bottom) for s, sl in listing.splits.items()
        }
        #: the data root whose decoded caches may serve this dataset (set when loaded with ``use_cache``)
        self.cache_root: Path | None = None
        #: decoded caches looked up so far: short side -> splits, or None (absent, stale or damaged)
        self.cached_by_size: dict[int, dict[str, Split] | None] = {}

    def split(self, which: SplitName) -> Split:
        return self.splits[which]

    def file_split(self, which: SplitName) -> FileSplit:
        """The split read from image files (even when a cache is attached)."""
        sl = self.listing.splits[which]
        return FileSplit(sl.paths, sl.labels, self.crop_bottom)

    def split_for_decode_size(self, which: SplitName, size: int | None) -> tuple[Split, str]:
        """The split a pipeline that can start from a ``size``-px short-side copy reads, and its source label.

        ``decoded-cache@<size>`` when a valid decoded cache of exactly that size exists below
        :attr:`cache_root`, else ``original files`` (``size`` None: the pipeline needs the image as read).  A cache
        of another size is never used: a smaller one would be upsampled, a larger one resized twice.
        """
        if size is not None and self.cache_root is not None:
            from fgbench.data.official import cache  # lazy: cache imports this module

            splits = cache.cached_splits(self, self.cache_root, size)
            if splits is not None:
                return splits[which], f"decoded-cache@{size}"
        return self.file_split(which), "original files"

    def use_splits(self, splits: Mapping[str, Split]) -> None:
        """Replace the splits (the decoded cache attaches itself this way)."""
        self.splits = dict(splits)

    def source_hash(self, recipe: str = "") -> str:
        """SHA-256 of the list files' contents, the reading recipe and ``recipe``.

        Keys the decoded cache: a changed list file makes the cache stale.
        """
        h = hashlib.sha256()
        h.update(f"{self.name}|crop_bottom={self.crop_bottom}|{recipe}\n".encode())
        for path in sorted(self.listing.list_files, key=lambda p: p.name):
            h.update(path.name.encode() + b"\0")
            h.update(Path(path).read_bytes())
            h.update(b"\0")
        return h.hexdigest()


T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, enabled: bool) -> Iterable[T]:
    """``items`` with a tqdm bar counting images (``fgbench data check`` / ``prepare``) when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img")
