"""From a :class:`~fgbench.data.base.Split` to batches: transforms and DataLoaders.

The protocol's augmentation, identical for every method:

* train (``crop-flip``): resize the short side to ``resize_size``, random
  ``input_size`` crop, random horizontal flip, ImageNet normalisation;
* eval: resize the short side to ``resize_size``, centre crop ``input_size``.

Images travel as uint8 ``(H, W, 3)`` arrays (``Split.load_array``) and are
transformed as uint8 tensors with torchvision's v2 transforms, so decoded
arrays (embedded dataset, decoded cache) never pass through PIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fgbench.data.base import DatasetError, Split
from fgbench.protocol import Protocol

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(protocol: Protocol, train: bool) -> v2.Compose:
    """The protocol's train or eval transform on uint8 ``(3, H, W)`` tensors."""
    steps: list[v2.Transform] = [v2.Resize(protocol.resize_size, antialias=True)]
    if train and protocol.augmentation == "crop-flip":
        steps += [v2.RandomCrop(protocol.input_size), v2.RandomHorizontalFlip()]
    else:
        steps += [v2.CenterCrop(protocol.input_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


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


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, options: LoaderOptions, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=options.num_workers,
        pin_memory=options.pin_memory,
        persistent_workers=options.persistent_workers and options.num_workers > 0,
        generator=generator,
    )
