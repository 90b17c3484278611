"""The validation split of ``selection=val``: carved from the training split, the same for every method.

:func:`validation_indices` picks, in every class, ``round(val_fraction * n_c)``
training images (at least one when the class has two or more, never all of
them), from a random stream keyed by the dataset's name and the job's seed
only, so every method of a (dataset, seed) cell sees the same split.
:func:`carve_validation` returns ``(train, val)`` as :class:`SubsetSplit`
views: the validation images are left out of training and of the database
(docs/protocol.md, "Model selection").
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from fgbench.data.base import DatasetError, Split

__all__ = ["SubsetSplit", "carve_validation", "validation_indices"]


class SubsetSplit(Split):
    """The items ``indices`` of ``parent``, in that order (a view: images are read from ``parent``)."""

    def __init__(self, parent: Split, indices: np.ndarray) -> None:
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(parent.labels)[self.indices]

    def load_image(self, index: int) -> Image.Image:
        return self.parent.load_image(int(self.indices[index]))

    def load_array(self, index: int) -> np.ndarray:
        return self.parent.load_array(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.parent.describe(int(self.indices[index]))


def _stream(dataset: str, seed: int) -> np.random.Generator:
    """A random stream that depends on (dataset, seed) only (never on the method or the protocol's other fields)."""
    return np.random.default_rng([int(seed), zlib.crc32(dataset.encode("utf-8")), 0x5A1])


def validation_indices(labels: np.ndarray, fraction: float, dataset: str, seed: int) -> np.ndarray:
    """Sorted indices of the validation items of a training split with ``labels``, stratified by class.

    Raises:
        DatasetError: no class has two images, so nothing can be held out.
    """
    labels = np.asarray(labels)
    rng = _stream(dataset, seed)
    picked: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            continue  # a class with one image stays in training
        take = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        picked.append(rng.permutation(members)[:take])
    if not picked:
        raise DatasetError(f"dataset {dataset}: no class has two training images, so selection=val cannot hold "
                           f"any out; use --set selection=final")
    return np.sort(np.concatenate(picked))


def carve_validation(train: Split, fraction: float, dataset: str, seed: int) -> tuple[SubsetSplit, SubsetSplit]:
    """``(remaining training images, validation images)`` of ``train`` (:func:`validation_indices`)."""
    val = validation_indices(train.labels, fraction, dataset, seed)
    keep = np.setdiff1d(np.arange(len(train)), val, assume_unique=True)
    return SubsetSplit(train, keep), SubsetSplit(train, val)
