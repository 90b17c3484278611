"""A synthetic fine-grained image set in the official CUB-200-2011 layout, written as JPEG files.

For benchmarking the real dataset path (official reader, decoded cache,
``--gpu-augment``) at CUB's scale without the real images::

    python benchmarks/make_cub_like.py --root /tmp/cub-like            # 5,994 train / 5,794 test, 200 classes
    python benchmarks/make_cub_like.py --root /tmp/cub-tiny --tiny     # 24 / 16 images, 4 classes, 64 px

writes ``<root>/CUB_200_2011/`` exactly as ``fgbench/data/official/readers.py:read_cub_style`` reads it::

    images.txt              <image_id> <class folder>/<file>.jpg
    image_class_labels.txt  <image_id> <class_id 1..C>
    train_test_split.txt    <image_id> <1: train | 0: test>
    classes.txt             <class_id> <class folder>
    images/001.Synthetic_bird_001/Synthetic_Bird_001_<digest>_1.jpg ...
    fgbench-synthetic.json  the generator's settings (marks the folder as synthetic)

The default sizes are CUB's own (5,994 / 5,794 / 200), so ``fgbench run -d cub
--data-root <root>`` accepts the set as CUB.  Images are about 500 x 375 (long
side 500, short side 320-380, one in five portrait): per class a colour
palette and a striped "bird" ellipse at a class-specific angle, per image
a random position, scale and background, plus pixel noise so that JPEG
files have a realistic size (about 50 KB at quality 90) and decoding cost.
Everything is deterministic in ``seed``; the file names carry a digest of the
settings, so a decoded cache built for other settings is detected as stale.

The set is written into a temporary folder beside the target and renamed into
place when complete: an interrupted run leaves no partial set (its leftover
temporary folder is removed by the next run).  A folder that exists and was
not made by this script (for example the real CUB) is never touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from filelock import FileLock
from PIL import Image

FOLDER = "CUB_200_2011"
MARKER = "fgbench-synthetic.json"
LIST_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


class MakeError(Exception):
    """The set cannot be written (one line: the path and what to do)."""


@dataclass(frozen=True)
class CubLikeConfig:
    """What to generate.  Defaults: CUB-200-2011's split sizes and class count, about 500 x 375 px."""

    train: int = 5994
    test: int = 5794
    classes: int = 200
    long_side: int = 500
    short_min: int = 320
    short_max: int = 380
    portrait_fraction: float = 0.2
    quality: int = 90
    seed: int = 0

    def validate(self) -> "CubLikeConfig":
        if self.classes < 1 or self.train < self.classes or self.test < self.classes:
            raise MakeError(f"need at least one train and one test image per class, got train={self.train} "
                            f"test={self.test} classes={self.classes}")
        if not 8 <= self.short_min <= self.short_max <= self.long_side:
            raise MakeError(f"image sides: need 8 <= short_min ({self.short_min}) <= short_max ({self.short_max}) "
                            f"<= long_side ({self.long_side})")
        if not 1 <= self.quality <= 100:
            raise MakeError(f"quality {self.quality}: use 1..100")
        return self

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:8]


TINY = CubLikeConfig(train=24, test=16, classes=4, long_side=64, short_min=44, short_max=50)


@dataclass
class CubLikeSet:
    """A generated (or reused) set: where it is, how many images and bytes, how long it took."""

    folder: Path
    images: int
    train: int
    test: int
    classes: int
    jpeg_bytes: int
    seconds: float
    workers: int
    reused: bool
    config: CubLikeConfig

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["folder"] = str(self.folder)
        return d


@dataclass(frozen=True)
class _Image:
    image_id: int
    label: int  # 0-based
    train: bool
    width: int
    height: int
    relpath: str


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts differing by at most one (the first ones larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def class_folder(label: int) -> str:
    return f"{label + 1:03d}.Synthetic_bird_{label + 1:03d}"


def plan(config: CubLikeConfig) -> list[_Image]:
    """Every image of the set (ids 1..N grouped by class as in CUB; train and test mixed within a class)."""
    rng = np.random.default_rng(config.seed)
    digest = config.digest()
    images: list[_Image] = []
    image_id = 0
    for label, (n_train, n_test) in enumerate(zip(_spread(config.train, config.classes),
                                                  _spread(config.test, config.classes), strict=True)):
        flags = np.array([True] * n_train + [False] * n_test)
        rng.shuffle(flags)
        for is_train in flags:
            image_id += 1
            short = int(rng.integers(config.short_min, config.short_max + 1))
            portrait = bool(rng.random() < config.portrait_fraction)
            width, height = (short, config.long_side) if portrait else (config.long_side, short)
            name = f"Synthetic_Bird_{label + 1:03d}_{digest}_{image_id}.jpg"
            images.append(_Image(image_id, label, bool(is_train), width, height, f"{class_folder(label)}/{name}"))
    return images


def _class_style(seed: int, label: int) -> dict:
    rng = np.random.default_rng([seed, 7919, label])
    return {"background": rng.uniform(40, 215, (2, 3)), "body": rng.uniform(20, 235, (2, 3)),
            "angle": rng.uniform(0, np.pi), "period": rng.uniform(3.0, 9.0)}


def render(config: CubLikeConfig, item: _Image) -> Image.Image:
    """The RGB image of ``item``: background blobs, a striped ellipse in its class's colours, pixel noise."""
    rng = np.random.default_rng([config.seed, item.image_id])
    style = _class_style(config.seed, item.label)
    # low-resolution drawing (1/4 size), upscaled bicubically: smooth shapes at a low cost
    h, w = max(item.height // 4, 2), max(item.width // 4, 2)
    grid = rng.random((4, 5, 1))
    bg = style["background"][0] * grid + style["background"][1] * (1 - grid)
    canvas = np.asarray(Image.fromarray(bg.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC),
                        dtype=np.float32).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.2, 0.4) * w
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    period = style["period"] * max(w, h) / 125  # in low-resolution pixels: the same look at any image size
    phase = (xx * np.cos(style["angle"]) + yy * np.sin(style["angle"])) / period
    stripe = (np.sin(phase * 2 * np.pi + rng.uniform(0, 6.3)) > 0)[..., None]
    body = np.where(stripe, style["body"][0], style["body"][1])
    canvas = np.where(inside[..., None], body, canvas)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((item.width, item.height),
                                                                              Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (item.height, item.width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_one(args: tuple[CubLikeConfig, _Image, str]) -> int:
    config, item, images_dir = args
    path = Path(images_dir) / item.relpath
    render(config, item).save(path, "JPEG", quality=config.quality)
    return path.stat().st_size


def _write_images(config: CubLikeConfig, items: list[_Image], images_dir: Path, workers: int) -> int:
    jobs: Iterable = ((config, item, str(images_dir)) for item in items)
    if workers <= 1:
        return sum(map(_write_one, jobs))
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ctx.Pool(workers) as pool:
        return sum(pool.imap_unordered(_write_one, jobs, chunksize=16))


def _write_lists(folder: Path, config: CubLikeConfig, items: list[_Image]) -> None:
    lines = {
        "images.txt": [f"{i.image_id} {i.relpath}" for i in items],
        "image_class_labels.txt": [f"{i.image_id} {i.label + 1}" for i in items],
        "train_test_split.txt": [f"{i.image_id} {int(i.train)}" for i in items],
        "classes.txt": [f"{c + 1} {class_folder(c)}" for c in range(config.classes)],
    }
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / MARKER).write_text(json.dumps({"generator": "benchmarks/make_cub_like.py",
                                             "config": dataclasses.asdict(config)}, indent=1) + "\n",
                                 encoding="utf-8")


def _marker_config(folder: Path) -> CubLikeConfig | None:
    """The settings recorded in ``folder``'s marker, or None when the folder is not one of ours."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return CubLikeConfig(**data["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _existing_size(folder: Path, items: list[_Image]) -> int | None:
    """Total JPEG bytes when every list file and image of ``items`` is present in ``folder``, else None."""
    if not all((folder / name).is_file() for name in LIST_FILES):
        return None
    total = 0
    for item in items:
        try:
            total += (folder / "images" / item.relpath).stat().st_size
        except OSError:
            return None
    return total


def make_cub_like(root: Path, config: CubLikeConfig = CubLikeConfig(), workers: int | None = None,
                  force: bool = False) -> CubLikeSet:
    """Write (or reuse) the synthetic CUB-layout set below ``root``; returns what is there.

    An existing folder made by this script with the same settings is reused
    (unless ``force``); one made with other settings is replaced; any other
    existing folder is refused.

    Raises:
        MakeError: one line naming the folder and what to do.
    """
    config = config.validate()
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise MakeError(f"{root}: exists and is not a directory; choose another --root")
    root.mkdir(parents=True, exist_ok=True)
    folder = root / FOLDER
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    t0 = time.perf_counter()
    with FileLock(str(root / f".{FOLDER}.lock")):
        for leftover in root.glob(f".{FOLDER}.tmp-*"):  # from an interrupted run
            shutil.rmtree(leftover, ignore_errors=True)
        if folder.exists() or folder.is_symlink():
            previous = _marker_config(folder)
            if previous is None:
                raise MakeError(f"{folder}: exists and was not made by make_cub_like.py (no {MARKER}); "
                                f"choose another --root (an existing dataset is never overwritten)")
            if previous == config and not force:
                size = _existing_size(folder, plan(config))
                if size is not None:
                    return CubLikeSet(folder, config.train + config.test, config.train, config.test, config.classes,
                                      size, round(time.perf_counter() - t0, 2), 0, True, config)
        items = plan(config)
        tmp = root / f".{FOLDER}.tmp-{os.getpid()}"
        try:
            images_dir = tmp / "images"
            for label in range(config.classes):
                (images_dir / class_folder(label)).mkdir(parents=True, exist_ok=True)
            size = _write_images(config, items, images_dir, min(workers, len(items)))
            _write_lists(tmp, config, items)
            if folder.exists():
                old = root / f".{FOLDER}.tmp-{os.getpid()}-old"
                folder.rename(old)
                tmp.rename(folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return CubLikeSet(folder, len(items), config.train, config.test, config.classes, size,
                      round(time.perf_counter() - t0, 2), workers, False, config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="data root; the set goes to ROOT/CUB_200_2011")
    parser.add_argument("--tiny", action="store_true", help="24 train / 16 test images, 4 classes, 64 px (tests)")
    parser.add_argument("--train", type=int, default=None)
    parser.add_argument("--test", type=int, default=None)
    parser.add_argument("--classes", type=int, default=None)
    parser.add_argument("--long-side", type=int, default=None)
    parser.add_argument("--short-side", default=None, metavar="MIN-MAX", help="range of the short side, e.g. 320-380")
    parser.add_argument("--quality", type=int, default=None, help="JPEG quality (default 90)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite a set made with the same settings")
    args = parser.parse_args(argv)
    config = TINY if args.tiny else CubLikeConfig()
    changes = {k: getattr(args, k) for k in ("train", "test", "classes", "long_side", "quality", "seed")
               if getattr(args, k) is not None}
    try:
        if args.short_side is not None:
            try:
                lo, hi = (int(v) for v in args.short_side.split("-"))
            except ValueError:
                raise MakeError(f"--short-side {args.short_side!r}: use MIN-MAX, e.g. 320-380") from None
            changes.update(short_min=lo, short_max=hi)
        made = make_cub_like(args.root, dataclasses.replace(config, **changes), args.workers, args.force)
    except MakeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    verb = "reused" if made.reused else f"wrote in {made.seconds:.1f} s on {made.workers} processes"
    print(f"{made.folder}: {made.images} images ({made.train} train / {made.test} test, {made.classes} classes, "
          f"{made.jpeg_bytes / 2**20:.1f} MiB of JPEG) {verb}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
