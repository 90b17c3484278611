"""From a :class:`~fgbench.data.base.Split` to batches: the one place a ``DataLoader`` is built.

:func:`input_split` picks the copy of a split a protocol's pipeline reads (a decoded cache only when the
pipeline starts with exactly its resize, else the original files) and says which; :class:`SplitDataset`
yields ``(image tensor, label, index)`` with a transform of :mod:`fgbench.data.transforms`;
:func:`make_loader` builds every loader of the harness (training, encoding, pretext) from
:class:`LoaderOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from fgbench.data.base import DatasetError, RetrievalDataset, Split, SplitName
from fgbench.data.transforms import decode_size
from fgbench.protocol import Protocol

#: what :func:`input_split` records for a dataset that keeps one copy of its images (embedded, Hugging Face)
AS_LOADED = "as loaded by the dataset"


def input_split(dataset: RetrievalDataset, which: SplitName, protocol: Protocol, train: bool) -> tuple[Split, str]:
    """The split ``which`` as ``protocol``'s train (``train``) or eval pipeline reads it, and where its pixels
    come from (the run record's ``input_source``).

    A dataset with decoded caches (the official layouts: ``split_for_decode_size``) serves a cache only when it
    holds exactly what the pipeline's first step makes of each image (:func:`~fgbench.data.transforms.decode_size`:
    the short side at ``resize_size``): ``"decoded-cache@<size>"``; otherwise the image files as read,
    ``"original files"``.  No image is ever upsampled from a smaller cached copy.  Other datasets keep one copy:
    :data:`AS_LOADED`.
    """
    chooser = getattr(dataset, "split_for_decode_size", None)
    if chooser is None:
        return dataset.split(which), AS_LOADED
    return chooser(which, decode_size(protocol, train))


class SplitDataset(Dataset):
    """A split as a torch Dataset of ``(image tensor, label, index)``."""

    def __init__(self, split: Split, transform: v2.Compose, indices: np.ndarray | None = None) -> None:
        self.split = split
        self.transform = transform
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        index = int(self.indices[i])
        try:
            array = self.split.load_array(index)
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises many types
            raise DatasetError(f"{self.split.describe(index)}: cannot read image ({type(exc).__name__}: {exc}); "
                               f"run `fgbench data check` to list every damaged file") from None
        image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return self.transform(image), int(self.split.labels[index]), i


@dataclass(frozen=True)
class LoaderOptions:
    """DataLoader settings (recorded in the run record)."""

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False


def make_loader(dataset: Dataset, options: LoaderOptions, *, batch_size: int | None = None,
                batch_sampler: Sampler | None = None, generator: torch.Generator | None = None,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A loader over ``dataset`` in its order (``batch_size``), or in ``batch_sampler``'s batches (training).

    ``generator`` seeds the workers' base seed (training passes the job's);
    without one a fixed generator is used, never the global torch RNG (a
    ``DataLoader`` without a generator draws its base seed from it, which
    would move the job's random stream each time a split is encoded).
    ``collate_fn`` batches ``--gpu-augment``'s padded uint8 images.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=batch_size if batch_sampler is None else 1,
        batch_sampler=batch_sampler,
        shuffle=False,
        num_workers=options.num_workers,
        pin_memory=options.pin_memory,
        persistent_workers=options.persistent_workers and options.num_workers > 0,
        generator=generator,
        collate_fn=collate_fn,
    )
