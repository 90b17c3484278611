"""A :class:`RetrievalDataset` over image files named by a :class:`Listing`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from fgbench.data.base import RetrievalDataset, Split, SplitName
from fgbench.data.images import open_rgb
from fgbench.data.listing import Listing


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

    ``splits`` may be replaced by cached splits (see :mod:`fgbench.data.cache`)
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

    def split(self, which: SplitName) -> Split:
        return self.splits[which]

    def file_split(self, which: SplitName) -> FileSplit:
        """The split read from image files (even when a cache is attached)."""
        sl = self.listing.splits[which]
        return FileSplit(sl.paths, sl.labels, self.crop_bottom)

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
