"""The embedded synthetic fine-grained dataset ("embedded"): ships as code, no download.

Every image shows the same kind of object — a "bird": an elliptical body in
a shared base colour, a round head, a wing, a tail — at a random position,
scale and orientation, on a textured background with noise.  Classes are
organised like a fine-grained taxonomy (``genera x species``):

* the **genus** sets a moderately visible cue: the wing's stripe pattern
  (stripe orientation and frequency);
* the **species** sets small local details: the colour of a small crown
  patch on the head and the shape/position of a small spot on the body.

So every class shares the global appearance and classes of one genus differ
only in small parts, as in CUB or NABirds.  Generation is deterministic given
``seed`` (numpy ``default_rng``), vectorised per image, and takes about a
second for the default size.  See docs/embedded-dataset.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fgbench.data.pretext import WEIGHTS_PROVIDERS
from fgbench.data.base import ArraySplit, DatasetSpec, DatasetStatus, RetrievalDataset, Split, SplitName

CROWN_COLOURS = np.array(
    [[220, 40, 40], [40, 90, 220], [250, 210, 30], [40, 180, 70], [200, 60, 200], [20, 20, 20]], dtype=np.float32
)
BODY_COLOUR = np.array([150, 120, 90], dtype=np.float32)


@dataclass(frozen=True)
class EmbeddedConfig:
    """Size of the embedded dataset (the defaults are what ``fgbench run`` uses)."""

    genera: int = 3
    species: int = 4
    train_per_class: int = 40
    test_per_class: int = 20
    image_size: int = 48
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return self.genera * self.species


def _class_attributes(cfg: EmbeddedConfig) -> list[dict[str, float]]:
    """Attributes per class, fixed by the class index (same for every seed)."""
    attrs = []
    for c in range(cfg.num_classes):
        genus, species = divmod(c, cfg.species)
        attrs.append(
            {
                "stripe_angle": np.pi * genus / max(cfg.genera, 1),
                "stripe_freq": 0.9 + 0.35 * (genus % 2),
                "crown": species % len(CROWN_COLOURS),
                "spot_shape": (species // 2) % 2,  # 0 round, 1 square
                "spot_pos": 0.35 if species % 2 == 0 else -0.35,
            }
        )
    return attrs


def render_image(attr: dict[str, float], rng: np.random.Generator, size: int) -> np.ndarray:
    """One ``size x size x 3`` uint8 image of a bird with the class attributes ``attr``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # background: smooth gradient + low-frequency texture, random per image
    bg0 = rng.uniform(70, 190) + rng.normal(0, 15, 3)
    bg1 = rng.uniform(70, 190) + rng.normal(0, 15, 3)
    t = rng.uniform(0, 1)
    grad = (xx * np.cos(t * 6.28) + yy * np.sin(t * 6.28))[..., None]
    tex = np.sin(xx * rng.uniform(4, 12) + yy * rng.uniform(4, 12))[..., None] * 10
    img = bg0 * (1 - grad) + bg1 * grad + tex

    # pose: centre, scale, orientation
    cx, cy = rng.uniform(0.38, 0.62, 2)
    scale = rng.uniform(0.9, 1.15)
    theta = rng.uniform(-0.5, 0.5)
    flip = rng.choice([-1.0, 1.0])
    cos, sin = np.cos(theta), np.sin(theta)
    # body coordinates: u along the body axis, v across
    u = ((xx - cx) * cos + (yy - cy) * sin) / scale * flip
    v = (-(xx - cx) * sin + (yy - cy) * cos) / scale

    body_colour = BODY_COLOUR + rng.normal(0, 12, 3)
    body = (u / 0.26) ** 2 + (v / 0.15) ** 2 <= 1
    img[body] = body_colour
    tail = (u < -0.2) & (u > -0.38) & (np.abs(v) < (u + 0.38) * 0.5)
    img[tail] = body_colour * 0.8
    hu, hv = 0.27, -0.06
    head = ((u - hu) / 0.1) ** 2 + ((v - hv) / 0.1) ** 2 <= 1
    img[head] = body_colour * 1.1

    # genus: striped wing
    wing = ((u + 0.02) / 0.16) ** 2 + ((v - 0.02) / 0.09) ** 2 <= 1
    a = attr["stripe_angle"]
    phase = (u * np.cos(a) + v * np.sin(a)) * 2 * np.pi * 7 * attr["stripe_freq"]
    stripes = (np.sin(phase) > 0)[..., None]
    wing_col = np.where(stripes, body_colour * 0.45, body_colour * 1.25)
    img = np.where(wing[..., None], wing_col, img)

    # species: small crown patch colour and a small spot (shape, position)
    crown = ((u - hu) / 0.07) ** 2 + ((v - hv + 0.06) / 0.05) ** 2 <= 1
    img[crown] = CROWN_COLOURS[int(attr["crown"])] + rng.normal(0, 10, 3)
    su, sv = -0.05 + attr["spot_pos"] * 0.25, 0.1
    if attr["spot_shape"] == 0:
        spot = ((u - su) / 0.05) ** 2 + ((v - sv) / 0.05) ** 2 <= 1
    else:
        spot = (np.abs(u - su) < 0.045) & (np.abs(v - sv) < 0.045)
    img[spot] = np.array([245, 245, 245]) - rng.uniform(0, 30)

    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_split(cfg: EmbeddedConfig, which: SplitName) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, S, S, 3)`` uint8 and labels of one split, deterministic given ``cfg``."""
    per_class = cfg.train_per_class if which == "train" else cfg.test_per_class
    rng = np.random.default_rng([cfg.seed, 0 if which == "train" else 1])
    attrs = _class_attributes(cfg)
    labels = np.repeat(np.arange(cfg.num_classes), per_class)
    images = np.stack([render_image(attrs[c], rng, cfg.image_size) for c in labels])
    return images, labels.astype(np.int64)


class EmbeddedDataset(RetrievalDataset):
    """The synthetic dataset, generated in memory on construction."""

    def __init__(self, cfg: EmbeddedConfig = EmbeddedConfig()) -> None:
        self.cfg = cfg
        self.name = "embedded"
        self.num_classes = cfg.num_classes
        self.class_names = [f"genus{g}-species{s}" for g in range(cfg.genera) for s in range(cfg.species)]
        self._splits: dict[str, Split] = {}

    def split(self, which: SplitName) -> Split:
        if which not in self._splits:
            images, labels = generate_split(self.cfg, which)
            self._splits[which] = ArraySplit(images, labels, name=f"embedded/{which}")
        return self._splits[which]


def embedded_spec(cfg: EmbeddedConfig = EmbeddedConfig(), name: str = "embedded") -> DatasetSpec:
    """The DatasetSpec of an embedded dataset of size ``cfg`` (tests use tiny ones)."""
    load: Callable[[Path], RetrievalDataset] = lambda root: EmbeddedDataset(cfg)  # noqa: E731
    counts = {"train": cfg.num_classes * cfg.train_per_class, "test": cfg.num_classes * cfg.test_per_class,
              "classes": cfg.num_classes}
    return DatasetSpec(
        name=name,
        summary=f"synthetic fine-grained birds, {cfg.num_classes} classes ({cfg.genera} genera x {cfg.species} species), "
                f"{cfg.image_size}px, generated offline",
        load=load,
        status=lambda root: DatasetStatus("found", "generated in memory", counts),
        kind="synthetic",
        homepage="docs/embedded-dataset.md",
        weights_providers=WEIGHTS_PROVIDERS,
        fair_overrides={
            # CPU-sized, the same for every method on this dataset (docs/embedded-dataset.md, "Its fair protocol"):
            # ResNet-10 from the pretext weights; 12 epochs of a fifth of the training split each (96 images, three
            # batches), drawn afresh every epoch, so `fgbench run` trains eleven methods in under 5 CPU minutes
            "backbone": "resnet10",
            "weights": f"pretext:{cfg.image_size}",
            "input_size": cfg.image_size,
            "resize_size": cfg.image_size + cfg.image_size // 8,
            "optimizer": "adam",
            "lr": 2e-4,
            "backbone_lr_mult": 1.0,
            "weight_decay": 1e-5,
            "epochs": 12,
            "epoch_sample": max(1, cfg.num_classes * cfg.train_per_class // 5),
            "resample_every": 1,
            "batch_size": 32,
            "bits": (12,),  # one code length; add --bits 12,24,32,48 for more (one more model per method each)
        },
    )
