"""The unseen-class (zero-shot) retrieval protocol: train on the seen classes, retrieve among the unseen ones.

What aassxun/DSH_Analysis does (read at its GitHub HEAD; written anew here, nothing copied):

* **Which classes are unseen: the latter ones, the same for every seed.**  ``data/cub_2011_for_zero_shot.py``
  lines 111-130 (``class4train = 200 - zero_shot_classes``; seen: ``target <= class4train``, unseen:
  ``target > class4train`` on the 1-based official class ids); the same rule in ``data/aircraftzs.py`` lines
  98-147, ``data/food101zs.py`` lines 100-151, ``data/stanforddogzs.py`` lines 98-138, ``data/nabirdszs.py``
  lines 124-148 (0-based ``<``/``>=``).  No random draw, no seed.  Its README says the same: "The former
  95%/85%/75% categories as seen classes. The latter 5%/15%/25% categories as unseen classes."
* **How many: the percentage of the class count, rounded down.**  ``set_flag.py`` lines 15-80 give the unseen
  counts per split: CUB 10/30/50 of 200, Aircraft 5/15/25 of 100, Stanford Dogs 6/18/30 of 120, Food101
  5/15/25 of 101, NABirds 27/83/138 of 555 -- each ``floor(C * p / 100)``.  (VegFru is the exception:
  15/45/75 unseen, two thirds of them the last vegetable classes and one third the last fruit classes,
  ``data/vegfruzs.py`` lines 96-168; fgbench applies the common rule to VegFru's 292 labels, so its VegFru
  unseen classes are not DSH_Analysis's.)
* **Where the images come from.**  ``data/cub_2011_for_zero_shot.py`` lines 125-130 and ``data/aircraftzs.py``
  lines 143-147: training = train-split images of the seen classes; the zero-shot query = test-split images of
  the unseen classes; the zero-shot database = train-split images of the unseen classes (its
  ``unseen@unseen`` protocol; the ``unseen@all`` variant, which adds seen images to the database, is not
  implemented here).  Training labels are the seen classes ``0..S-1`` (one-hot over ``class4train``), so a
  classifier head has ``S`` outputs.

fgbench's split names (the protocol field ``split``, option ``--split``):

* ``standard``: today's protocol (train = database = train split, query = test split, every class).
* ``unseen:P`` with ``P`` in 5, 15, 25: DSH_Analysis's split -- the last ``U`` classes in fgbench's label order
  (for the official datasets the order of the official class lists, so the same classes as DSH_Analysis for
  CUB, Aircraft and Food101) are unseen, whatever the seed.
* ``unseen:P:seeded``: the same counts, the ``U`` unseen classes drawn at random from the job's seed and the
  dataset's name (:func:`split_rng`), so that seeds also average over class splits.

``U = floor(C * P / 100)`` clamped to ``[MIN_CLASSES, C - MIN_CLASSES]``: at least two unseen classes (with one,
every unseen database item would be relevant and mAP would be 1 by construction) and at least two seen ones
(a one-class training set teaches nothing).  On the 12-class embedded dataset this gives 2 unseen classes for
``unseen:5`` and ``unseen:15`` (0 and 1 before the clamp) and 3 for ``unseen:25``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from fgbench.data.base import RetrievalDataset, Split, SplitName
from fgbench.errors import DatasetError
from fgbench.protocol import STANDARD_SPLIT, split_parts

#: at least this many seen and this many unseen classes
MIN_CLASSES = 2


@dataclass(frozen=True)
class ClassSplit:
    """The seen and unseen classes of one job (0-based labels of the full dataset, ascending)."""

    name: str
    num_classes: int
    seen: tuple[int, ...]
    unseen: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """What the run record keeps (``RunRecord.class_split``)."""
        return {"name": self.name, "num_classes": self.num_classes, "seen": list(self.seen),
                "unseen": list(self.unseen)}


def unseen_count(num_classes: int, percent: int) -> int:
    """``floor(C * P / 100)`` (DSH_Analysis ``set_flag.py``) clamped to ``[MIN_CLASSES, C - MIN_CLASSES]``."""
    if num_classes < 2 * MIN_CLASSES:
        raise DatasetError(f"--split unseen:{percent}: the dataset has {num_classes} classes; an unseen-class "
                           f"split needs at least {2 * MIN_CLASSES} ({MIN_CLASSES} seen, {MIN_CLASSES} unseen)")
    return min(max(math.floor(num_classes * percent / 100), MIN_CLASSES), num_classes - MIN_CLASSES)


def split_rng(seed: int, dataset: str) -> np.random.Generator:
    """The generator of a ``:seeded`` split: from the seed and the dataset name (CRC-32, stable across runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(dataset.encode("utf-8"))])


def class_split(name: str, num_classes: int, seed: int, dataset: str) -> ClassSplit | None:
    """The class split ``name`` of a dataset of ``num_classes`` classes for ``seed``; None for ``standard``."""
    if name == STANDARD_SPLIT:
        return None
    percent, seeded = split_parts(name)
    count = unseen_count(num_classes, percent)
    if seeded:
        unseen = sorted(int(c) for c in split_rng(seed, dataset).choice(num_classes, size=count, replace=False))
    else:
        unseen = list(range(num_classes - count, num_classes))
    chosen = set(unseen)
    seen = [c for c in range(num_classes) if c not in chosen]
    return ClassSplit(name, num_classes, tuple(seen), tuple(unseen))


class SubsetSplit(Split):
    """The items ``indices`` of ``base``, with ``labels`` (remapped or not) given by the caller."""

    def __init__(self, base: Split, indices: np.ndarray, labels: np.ndarray) -> None:
        self._base = base
        self._indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        images = base.uint8_images
        # an in-memory array is sliced (the embedded dataset); a memory map is left on disk (read per item)
        self.uint8_images = images[self._indices] if isinstance(images, np.ndarray) and not isinstance(
            images, np.memmap) else None

    def load_image(self, index: int) -> Image.Image:
        return self._base.load_image(int(self._indices[index]))

    def load_array(self, index: int) -> np.ndarray:
        return self._base.load_array(int(self._indices[index]))

    def describe(self, index: int) -> str:
        return self._base.describe(int(self._indices[index]))


class UnseenClassDataset(RetrievalDataset):
    """A dataset seen through a :class:`ClassSplit` (DSH_Analysis's unseen@unseen retrieval).

    ``split("train")``: the train-split images of the seen classes, labels remapped to ``0..S-1`` in ascending
    class order (what a method trains on; ``num_classes`` is ``S``).  ``split("test")``: the query, test-split
    images of the unseen classes.  :meth:`database`: train-split images of the unseen classes.  Query and
    database keep the full dataset's labels (relevance is label equality).
    """

    def __init__(self, base: RetrievalDataset, split: ClassSplit) -> None:
        self.base = base
        self.class_split = split
        self.name = base.name
        self.num_classes = len(split.seen)
        names = list(base.class_names)
        self.class_names = [names[c] for c in split.seen] if len(names) == base.num_classes else []
        train, test = base.split("train"), base.split("test")
        seen, unseen = np.asarray(split.seen), np.asarray(split.unseen)
        remap = np.full(base.num_classes, -1, dtype=np.int64)
        remap[seen] = np.arange(len(seen))
        train_labels, test_labels = np.asarray(train.labels), np.asarray(test.labels)
        in_seen = np.flatnonzero(np.isin(train_labels, seen))
        self._train = SubsetSplit(train, in_seen, remap[train_labels[in_seen]])
        query = np.flatnonzero(np.isin(test_labels, unseen))
        self._query = SubsetSplit(test, query, test_labels[query])
        database = np.flatnonzero(np.isin(train_labels, unseen))
        self._database = SubsetSplit(train, database, train_labels[database])
        for what, part in (("training", self._train), ("query", self._query), ("database", self._database)):
            if len(part) == 0:
                raise DatasetError(f"--split {split.name} on dataset {base.name}: the {what} set is empty "
                                   f"(seen classes {list(split.seen)}, unseen {list(split.unseen)})")

    def split(self, which: SplitName) -> Split:
        if which == "train":
            return self._train
        if which == "test":
            return self._query
        raise DatasetError(f"split {which!r}: use train or test")

    def database(self) -> Split:
        """The retrieval database: train-split images of the unseen classes."""
        return self._database

    def evaluation(self) -> "UnseenRetrievalDataset":
        """The retrieval side as a dataset: ``split("test")`` the query, ``split("train")`` the database."""
        return UnseenRetrievalDataset(self)


class UnseenRetrievalDataset(RetrievalDataset):
    """What an unseen-class job is evaluated on, under the names the runner uses for a standard dataset:
    ``split("test")`` = the query, ``split("train")`` = the database (unseen classes, full-dataset labels)."""

    def __init__(self, view: UnseenClassDataset) -> None:
        self.class_split = view.class_split
        self.name = view.name
        self.num_classes = view.base.num_classes  # the labels are the full dataset's
        self.class_names = view.base.class_names
        self._query, self._database = view.split("test"), view.database()

    def split(self, which: SplitName) -> Split:
        if which == "test":
            return self._query
        if which == "train":
            return self._database
        raise DatasetError(f"split {which!r}: use train or test")


def job_dataset(base: RetrievalDataset, split_name: str, seed: int, dataset: str) -> RetrievalDataset:
    """``base`` (registered as ``dataset``) itself for ``standard``, else its :class:`UnseenClassDataset` for
    ``seed``."""
    split = class_split(split_name, base.num_classes, seed, dataset)
    return base if split is None else UnseenClassDataset(base, split)


def evaluation_dataset(dataset: RetrievalDataset) -> RetrievalDataset:
    """What a job's codes are scored on: ``dataset`` itself (test = query, train = database), or for an
    :class:`UnseenClassDataset` its :meth:`~UnseenClassDataset.evaluation` (the unseen classes' query and
    database)."""
    return dataset.evaluation() if isinstance(dataset, UnseenClassDataset) else dataset


def class_split_field(dataset: RetrievalDataset) -> dict[str, Any] | None:
    """``RunRecord.class_split`` for a job's dataset or evaluation dataset: None for a standard one."""
    if isinstance(dataset, (UnseenClassDataset, UnseenRetrievalDataset)):
        return dataset.class_split.to_dict()
    return None


def split_folder(split_name: str) -> str:
    """The results folder above ``<protocol>/`` for a split: ``""`` for standard, ``unseen-25``,
    ``unseen-25-seeded``."""
    return "" if split_name == STANDARD_SPLIT else split_name.replace(":", "-")
