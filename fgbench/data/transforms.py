"""The protocol's image transforms, on the CPU (loader workers) and on the device (``--gpu-augment``).

The protocol's augmentation, identical for every method:

* train (``crop-flip``): resize the short side to ``resize_size``, random
  ``input_size`` crop, random horizontal flip, ImageNet normalisation;
* eval: resize the short side to ``resize_size``, centre crop ``input_size``.

Images travel as uint8 ``(H, W, 3)`` arrays (``Split.load_array``) and are
transformed as uint8 tensors with torchvision's v2 transforms, so decoded
arrays (embedded dataset, decoded cache) never pass through PIL.

:func:`build_transform` is the CPU path.  With ``--gpu-augment`` the workers
only resize (:func:`uint8_transform`) and ship padded uint8 batches
(:func:`pad_collate`); :class:`DeviceAugment` then crops, flips and
normalises on the device with the same distribution.  In detail, the CPU
path (:func:`build_transform`) is, per image::

    Resize(short side = resize_size) -> RandomCrop(input_size) -> RandomHorizontalFlip(0.5)
    -> ToDtype(float32, scale=True) -> Normalize(ImageNet mean, std)

With ``--gpu-augment`` the loader workers only resize (a no-op for a
decoded cache stored at ``resize_size``) and ship uint8 images, padded to
the largest height/width of the batch together with each image's true size;
:class:`DeviceAugment` then draws, per image, the crop offset uniformly over
every position inside the *true* image (``top`` in ``0..H-input_size``, as
``RandomCrop`` does) and a flip with probability 1/2, gathers the crops with
one indexing operation and converts/normalises them with the same float
operations as torchvision (``x.to(float32).mul_(1/255)``, ``sub_(mean)``,
``div_(std)``), so a crop with the same offset and flip is bit-identical to
the CPU path.  Evaluation (and ``augmentation="none"``) uses the centre crop
with torchvision's rounding.  uint8 moves a quarter of the bytes of float32
across PCIe and no worker spends time on float conversion.

Randomness comes from a device generator seeded from the job seed and the
rank; its state is saved in resume checkpoints.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

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

_RANDOM_BITS = 1 << 62


def uint8_transform(protocol: Protocol) -> v2.Compose:
    """What the loader workers do under ``--gpu-augment``: resize the short side, stay uint8."""
    return v2.Compose([v2.Resize(protocol.resize_size, antialias=True)])


def pad_collate(items: Sequence[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                           torch.Tensor]:
    """``(images uint8 (B, 3, Hmax, Wmax) zero-padded, sizes (B, 2) = true (H, W), labels, indices)``."""
    sizes = torch.tensor([tuple(img.shape[-2:]) for img, _l, _i in items], dtype=torch.int64)
    h, w = (int(v) for v in sizes.max(0).values)
    images = torch.zeros(len(items), 3, h, w, dtype=torch.uint8)
    for k, (img, _l, _i) in enumerate(items):
        images[k, :, : img.shape[-2], : img.shape[-1]] = img
    labels = torch.tensor([int(l) for _img, l, _i in items], dtype=torch.int64)
    indices = torch.tensor([int(i) for _img, _l, i in items], dtype=torch.int64)
    return images, sizes, labels, indices


class DeviceAugment:
    """Random (train) or centre (eval) crop, horizontal flip and normalisation of uint8 batches on ``device``."""

    def __init__(self, protocol: Protocol, train: bool, device: torch.device, seed: int = 0,
                 channels_last: bool = False) -> None:
        self.size = protocol.input_size
        self.random = train and protocol.augmentation == "crop-flip"
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self.std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self._offsets = torch.arange(self.size, device=self.device)

    def sample(self, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image ``(top, left, flip)`` for true sizes ``(B, 2)``: uniform offsets and p=1/2 flips, or centre."""
        sizes = sizes.to(self.device, non_blocking=True)  # pinned by the loader: no host sync
        span = sizes - self.size  # (B, 2) = H - s, W - s
        if not self.random:
            anchor = torch.round(span.double() / 2.0).long()  # round half to even, as torchvision's round()
            return anchor[:, 0], anchor[:, 1], torch.zeros(len(sizes), dtype=torch.bool, device=self.device)
        draws = torch.randint(0, _RANDOM_BITS, (len(sizes), 2), generator=self.generator, device=self.device)
        offsets = draws % (span + 1)  # modulo bias < 2**-40 for any real image size
        flip = torch.rand(len(sizes), generator=self.generator, device=self.device) < 0.5
        return offsets[:, 0], offsets[:, 1], flip

    def apply(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Crop ``(top, left)``, flip where ``flip``, convert and normalise: float32 ``(B, 3, s, s)``."""
        b = torch.arange(len(images), device=images.device)[:, None, None]
        cols = torch.where(flip[:, None], self.size - 1 - self._offsets, self._offsets)
        rows = top[:, None] + self._offsets  # (B, s)
        cols = left[:, None] + cols  # (B, s)
        crops = images[b, :, rows[:, :, None], cols[:, None, :]]  # (B, s, s, 3): channels-last memory
        x = crops.permute(0, 3, 1, 2).to(torch.float32).mul_(1.0 / 255)
        x = x.sub_(self.mean).div_(self.std)
        return x if self.channels_last else x.contiguous()

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"DeviceAugment expects uint8 images, got {images.dtype}")
        return self.apply(images, *self.sample(sizes))

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
