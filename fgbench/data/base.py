"""The dataset interface: :class:`DatasetSpec`, :class:`RetrievalDataset`, :class:`Split`.

Retrieval protocol of the fine-grained hashing papers: the *test* split is the
query set and the *train* split is the database; relevant = same label.
Labels are always 0-based and contiguous (``0..num_classes-1``).
"""

from __future__ import annotations

import abc
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from fgbench._names import NAME_PATTERN, validate_name
from fgbench.errors import DatasetError

SplitName = Literal["train", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "test")
# the name rule of fgbench._names (a dataset name is a folder and file name); \A..\Z: no trailing newline
DATASET_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")


class Split(abc.ABC):
    """One split: a sequence of labelled RGB images.

    Implementations provide ``labels`` (int64 array, 0-based), ``__len__`` and
    ``load_image``.  A split whose images are already decoded to a uint8 array
    of one size (the embedded dataset, the decoded cache) exposes it as
    ``uint8_images`` (N, H, W, 3) so the loader can skip PIL entirely.
    """

    labels: np.ndarray
    uint8_images: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.labels))

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The image at ``index`` as an RGB PIL image."""

    def load_array(self, index: int) -> np.ndarray:
        """The image at ``index`` as a uint8 ``(H, W, 3)`` array (what the loader uses).

        Splits backed by decoded arrays (the embedded dataset, the decoded
        cache) override this to skip JPEG decoding.
        """
        return np.asarray(self.load_image(index).convert("RGB"), dtype=np.uint8)

    def describe(self, index: int) -> str:
        """Where the item comes from (a file path), for error messages."""
        return f"item {index}"


class ArraySplit(Split):
    """A split held as a uint8 array ``(N, H, W, 3)`` plus labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str = "array") -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{name}: expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.uint8_images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self._name = name

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.uint8_images[index])

    def load_array(self, index: int) -> np.ndarray:
        return self.uint8_images[index]

    def describe(self, index: int) -> str:
        return f"{self._name}[{index}]"


class RetrievalDataset(abc.ABC):
    """A fine-grained retrieval dataset: train (= database) and test (= query) splits."""

    name: str
    num_classes: int
    class_names: Sequence[str] = ()

    @abc.abstractmethod
    def split(self, which: SplitName) -> Split:
        """The ``"train"`` (database) or ``"test"`` (query) split."""

    def summary(self) -> dict[str, int]:
        """Counts for listings: train, test, classes."""
        return {"train": len(self.split("train")), "test": len(self.split("test")), "classes": self.num_classes}


@dataclass(frozen=True)
class DatasetStatus:
    """Result of a quick on-disk look: ``state`` is found, missing or damaged."""

    state: Literal["found", "missing", "damaged"]
    message: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        """Whether the dataset can be loaded (``state == "found"``)."""
        return self.state == "found"


@dataclass(frozen=True)
class ExpectedSizes:
    """The split sizes and class count the fine-grained hashing papers use."""

    train: int
    test: int
    classes: int


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as registered by a plugin.

    Attributes:
        name: registry name used on the CLI and as a results folder and
            leaderboard file name (:func:`fgbench._names.validate_name`).
        summary: one line for ``fgbench list`` / ``fgbench data list``.
        load: ``load(root) -> RetrievalDataset``; ``root`` is the data root
            (each real dataset lives in its own folder below it).
        status: ``status(root) -> DatasetStatus``, a cheap presence check.
        kind: ``"synthetic"`` (ships with the code), ``"real"`` (an official
            download layout on disk) or ``"hf"`` (a Hugging Face ``datasets``
            dataset); ``--datasets all`` takes every synthetic one and the real
            ones found on disk.
        expected: split sizes / classes to assert, for real datasets.
        homepage, instructions: where to download and how to unpack.
        fair_overrides: protocol fields the ``fair`` protocol changes for this
            dataset (only for scale: the CPU-sized embedded dataset uses a
            smaller input).  The same overrides apply to every method.
        download: optional ``download(root)`` (needs network).
        weights_providers: initial weights this dataset supplies, by the
            prefix of the protocol's ``weights`` (the embedded dataset:
            ``pretext`` -> its pretext-trained backbone); see
            :data:`fgbench.backbones.WeightsProvider`.
    """

    name: str
    summary: str
    load: Callable[[Path], RetrievalDataset]
    status: Callable[[Path], DatasetStatus]
    kind: Literal["synthetic", "real", "hf"] = "real"
    expected: ExpectedSizes | None = None
    homepage: str = ""
    instructions: str = ""
    fair_overrides: Mapping[str, Any] = field(default_factory=dict)
    download: Callable[[Path], None] | None = None
    source: str = ""
    weights_providers: Mapping[str, Callable[[str, str], tuple[Path, str]]] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable reason when the spec is malformed (the host calls it)."""
        validate_name("dataset", self.name)
        if not callable(self.load) or not callable(self.status):
            raise ValueError(f"dataset {self.name!r}: load and status must be callable")


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/fgbench`` (``~/.cache/fgbench``): where fgbench keeps what it can rebuild."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fgbench"


def default_data_root() -> Path:
    """``$FGBENCH_DATA`` if set, else ``<user cache root>/data`` (``~/.cache/fgbench/data``)."""
    env = os.environ.get("FGBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return user_cache_root() / "data"


def contiguous_labels(raw: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Map arbitrary (sparse) class ids to ``0..C-1`` in sorted id order (stable across runs)."""
    classes = sorted(set(raw))
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[c] for c in raw], dtype=np.int64), classes
