"""The protocol's input pipeline, on the CPU (loader workers) and on the device (``--gpu-augment``).

One vocabulary of protocol fields (:class:`~fgbench.protocol.Protocol`, issue 14), built from
``torchvision.transforms.v2``, identical for every method of a protocol:

* **resize** ``resize_size``: the short side (``resize_shape="short-side"``, ``v2.Resize(n)``) or both sides
  (``"square"``, ``v2.Resize((n, n))``);
* **train crop** ``train_crop``: ``"random"`` (resize, then ``v2.RandomCrop(input_size)``), ``"random-resized"``
  (``v2.RandomResizedCrop(input_size, crop_scale, crop_ratio)`` on the image as read, no resize first, as
  torchvision's reference and the authors' code do) or ``"center"`` (resize, then the test crop: no crop
  augmentation);
* **flip** ``v2.RandomHorizontalFlip(flip_p)``; **rotation** ``v2.RandomRotation(rotation)`` (angle uniform in
  ``[-rotation, rotation]``); **colour jitter** ``v2.ColorJitter(*color_jitter)`` (brightness, contrast,
  saturation, hue), each left out when off;
* **test**: resize, then ``v2.CenterCrop(input_size)``;
* then ``ToDtype(float32, scale=True)`` and ImageNet normalisation.

The ``fair`` defaults give today's pipeline unchanged (resize short side 256, random crop 224, flip p=0.5; test
resize 256, centre crop 224): ``Resize -> RandomCrop -> RandomHorizontalFlip(0.5)`` draw the same random numbers
as before, so a seed gives the same tensors.

Images travel as uint8 ``(H, W, 3)`` arrays (``Split.load_array``) and are transformed as uint8 tensors, so
decoded arrays (embedded dataset, decoded cache) never pass through PIL.  :func:`decode_size` says which decoded
copy a pipeline can start from without ever upsampling a smaller copy (:mod:`fgbench.data.loader`).

:func:`build_transform` is the CPU path.  With ``--gpu-augment`` the loader workers only do the deterministic
part (:func:`uint8_transform`: the resize, none before a random-resized crop) and ship uint8 images, padded to
the largest height/width of the batch together with each image's true size (:func:`pad_collate`);
:class:`DeviceAugment` does the random part on the device:

* crop + flip only (the ``fair`` pipeline and any ``train_crop="random"``/``"center"`` without rotation or
  jitter): vectorised.  Per image the crop offset is drawn uniformly over every position inside the *true*
  image (``top`` in ``0..H-input_size``, as ``RandomCrop`` does) and a flip with probability ``flip_p``; the
  crops are gathered with one indexing operation;
* otherwise (random-resized crop, rotation, colour jitter): each image goes through *the same*
  ``torchvision.transforms.v2`` steps the CPU path builds (:func:`random_steps`), on the device, drawing from
  the augmenter's own CPU generator.  Same code, same parameters: the same distribution by construction (and,
  from the same generator state, the same crops, angles and jitter factors as the CPU path).

Both convert and normalise with the same float operations as torchvision (``x.to(float32).mul_(1/255)``,
``sub_(mean)``, ``div_(std)``), so a crop with the same parameters is bit-identical to the CPU path.  Evaluation
uses the centre crop with torchvision's rounding.  uint8 moves a quarter of the bytes of float32 across PCIe and
no worker spends time on float conversion.

Randomness comes from a generator seeded from the job seed and the rank; its state is saved in resume
checkpoints.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

from fgbench.protocol import Protocol

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(protocol: Protocol) -> v2.Resize:
    size = protocol.resize_size
    return v2.Resize((size, size) if protocol.resize_shape == "square" else size, antialias=True)


def random_steps(protocol: Protocol) -> list[v2.Transform]:
    """The random part of the train pipeline, after the resize (none before a random-resized crop).

    The same list serves the CPU path and :class:`DeviceAugment`, so both draw from one distribution.
    """
    steps: list[v2.Transform] = []
    if protocol.train_crop == "random":
        steps.append(v2.RandomCrop(protocol.input_size))
    elif protocol.train_crop == "random-resized":
        steps.append(v2.RandomResizedCrop(protocol.input_size, scale=tuple(protocol.crop_scale),
                                          ratio=tuple(protocol.crop_ratio), antialias=True))
    else:
        steps.append(v2.CenterCrop(protocol.input_size))
    if protocol.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(protocol.flip_p))
    if protocol.rotation > 0:
        steps.append(v2.RandomRotation(protocol.rotation))
    if any(j > 0 for j in protocol.color_jitter):
        b, c, s, h = (float(j) for j in protocol.color_jitter)
        steps.append(v2.ColorJitter(brightness=b or None, contrast=c or None, saturation=s or None, hue=h or None))
    return steps


def decode_size(protocol: Protocol, train: bool) -> int | None:
    """The short side of a decoded copy the pipeline can start from exactly, or None when it needs the image as
    read (a square resize, or a random-resized crop, which crops the full-resolution image).

    A copy stored with its short side at ``resize_size`` is what ``Resize(resize_size)`` makes of the image, so
    it serves a short-side pipeline; any other copy would be resized again (and upsampled when smaller).
    """
    if protocol.resize_shape != "short-side" or (train and protocol.train_crop == "random-resized"):
        return None
    return protocol.resize_size


def build_transform(protocol: Protocol, train: bool) -> v2.Compose:
    """The protocol's train or eval transform on uint8 ``(3, H, W)`` tensors (see the module docstring)."""
    if train and protocol.train_crop == "random-resized":
        steps: list[v2.Transform] = random_steps(protocol)
    elif train:
        steps = [_resize(protocol), *random_steps(protocol)]
    else:
        steps = [_resize(protocol), v2.CenterCrop(protocol.input_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)

_RANDOM_BITS = 1 << 62


def uint8_transform(protocol: Protocol, train: bool = True) -> v2.Compose:
    """What the loader workers do under ``--gpu-augment``: the resize (none before a random-resized crop), uint8."""
    if train and protocol.train_crop == "random-resized":
        return v2.Compose([v2.Identity()])
    return v2.Compose([_resize(protocol)])


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
    """The random part of the train pipeline (or the eval centre crop), flip and normalisation of uint8 batches on
    ``device``: the same distribution as :func:`build_transform` (see the module docstring)."""

    def __init__(self, protocol: Protocol, train: bool, device: torch.device, seed: int = 0,
                 channels_last: bool = False) -> None:
        self.size = protocol.input_size
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.random_crop = train and protocol.train_crop == "random"
        self.flip_p = float(protocol.flip_p) if train else 0.0
        #: crop and flip only: the vectorised path; otherwise the CPU path's v2 steps, image by image
        self.vectorised = not train or (protocol.train_crop != "random-resized" and protocol.rotation == 0
                                        and not any(j > 0 for j in protocol.color_jitter))
        self.steps = None if self.vectorised else v2.Compose(random_steps(protocol))
        self.generator = torch.Generator(device=self.device if self.vectorised else "cpu")
        self.generator.manual_seed(int(seed))
        self.mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self.std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self._offsets = torch.arange(self.size, device=self.device)

    def sample(self, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image ``(top, left, flip)`` for true sizes ``(B, 2)``: uniform offsets (or the centre) and flips with
        probability ``flip_p`` (the vectorised path)."""
        sizes = sizes.to(self.device, non_blocking=True)  # pinned by the loader: no host sync
        span = sizes - self.size  # (B, 2) = H - s, W - s
        if self.random_crop:
            draws = torch.randint(0, _RANDOM_BITS, (len(sizes), 2), generator=self.generator, device=self.device)
            offsets = draws % (span + 1)  # modulo bias < 2**-40 for any real image size
        else:
            offsets = torch.round(span.double() / 2.0).long()  # round half to even, as torchvision's round()
        if self.flip_p > 0:
            flip = torch.rand(len(sizes), generator=self.generator, device=self.device) < self.flip_p
        else:
            flip = torch.zeros(len(sizes), dtype=torch.bool, device=self.device)
        return offsets[:, 0], offsets[:, 1], flip

    def apply(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Crop ``(top, left)``, flip where ``flip``, convert and normalise: float32 ``(B, 3, s, s)``."""
        b = torch.arange(len(images), device=images.device)[:, None, None]
        cols = torch.where(flip[:, None], self.size - 1 - self._offsets, self._offsets)
        rows = top[:, None] + self._offsets  # (B, s)
        cols = left[:, None] + cols  # (B, s)
        crops = images[b, :, rows[:, :, None], cols[:, None, :]]  # (B, s, s, 3): channels-last memory
        return self._normalise(crops.permute(0, 3, 1, 2))

    def _normalise(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.to(torch.float32).mul_(1.0 / 255)
        x = x.sub_(self.mean).div_(self.std)
        return x if self.channels_last else x.contiguous()

    def _per_image(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """The CPU path's v2 steps on each image's true region, drawing from this augmenter's generator."""
        assert self.steps is not None
        hw = sizes.tolist()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            crops = [self.steps(images[k, :, :h, :w]) for k, (h, w) in enumerate(hw)]
            self.generator.set_state(torch.get_rng_state())
        return self._normalise(torch.stack(crops))

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"DeviceAugment expects uint8 images, got {images.dtype}")
        if not self.vectorised:
            return self._per_image(images, sizes)
        return self.apply(images, *self.sample(sizes))

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
