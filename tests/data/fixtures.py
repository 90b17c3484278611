"""Writers of tiny fixtures in the exact official layout of each real dataset.

Every fixture has 3 classes, 2 train and 2 test images per class (6 / 6), small
JPEGs whose colour encodes the class, one grayscale and one CMYK JPEG, and --
unless ``damaged=False`` -- one truncated JPEG in the test split.  Each writer
returns a :class:`Fixture` with the sizes to pass as ``expected=``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fgbench.data.base import ExpectedSizes

CLASSES = 3
PER_SPLIT = 2
EXPECTED = ExpectedSizes(train=CLASSES * PER_SPLIT, test=CLASSES * PER_SPLIT, classes=CLASSES)
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@dataclass
class Fixture:
    """Where a fixture is and what it holds."""

    root: Path
    folder: Path
    expected: ExpectedSizes = EXPECTED
    list_files: dict[str, Path] = field(default_factory=dict)
    damaged: Path | None = None
    grayscale: Path | None = None
    cmyk: Path | None = None
    train_paths: list[Path] = field(default_factory=list)
    test_paths: list[Path] = field(default_factory=list)


def write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 32), mode: str = "RGB",
               banner: int = 0, seed: int = 0) -> Path:
    """A ``size`` (w, h) JPEG filled with ``colour`` plus mild noise; ``banner`` white rows at the bottom."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, np.int16)[None, None] + rng.integers(-10, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    if banner:
        arr[h - banner :] = 255
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=90)
    return path


def truncate(path: Path) -> Path:
    """Cut ``path`` to half its bytes (a truncated JPEG)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_text(path: Path, lines: list[str], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _images(fx: Fixture, paths_by_split: dict[str, list[tuple[Path, int]]], damaged: bool, banner: int = 0,
            size: tuple[int, int] = (40, 32)) -> None:
    """Write the JPEGs; the first train image is grayscale, the second CMYK, the last test one truncated."""
    for split, items in paths_by_split.items():
        for i, (path, cls) in enumerate(items):
            mode = "RGB"
            if split == "train" and i == 0:
                mode = "L"
            elif split == "train" and i == 1:
                mode = "CMYK"
            write_jpeg(path, COLOURS[cls % len(COLOURS)], size=size, mode=mode, banner=banner, seed=i)
            (fx.train_paths if split == "train" else fx.test_paths).append(path)
    fx.grayscale = paths_by_split["train"][0][0]
    fx.cmyk = paths_by_split["train"][1][0]
    if damaged:
        fx.damaged = truncate(paths_by_split["test"][-1][0])


def _layout(per_split: int = PER_SPLIT) -> dict[str, list[int]]:
    """Class index per image, per split, classes interleaved."""
    return {s: [c for _ in range(per_split) for c in range(CLASSES)] for s in ("train", "test")}


# --------------------------------------------------------------------------- CUB / NABirds
def _write_cub_style(fx: Fixture, class_ids: list[int], class_names: dict[int, str], image_id, image_rel,
                     bom: bool, damaged: bool, swapped: bool = False, per_split: int = PER_SPLIT,
                     size: tuple[int, int] = (40, 32)) -> Fixture:
    images, labels, split_lines = [], [], []
    paths: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    n = 0
    for split, classes in _layout(per_split).items():
        for cls in classes:
            n += 1
            iid, rel = image_id(n), image_rel(n, class_ids[cls])
            images.append(f"{iid} {rel}")
            labels.append(f"{iid} {class_ids[cls]}")
            flag = (split == "train") != swapped
            split_lines.append(f"{iid} {int(flag)}")
            paths[split].append((fx.folder / "images" / rel, cls))
    fx.list_files = {
        "images": write_text(fx.folder / "images.txt", images, bom),
        "labels": write_text(fx.folder / "image_class_labels.txt", labels, bom),
        "split": write_text(fx.folder / "train_test_split.txt", split_lines, bom),
        "classes": write_text(fx.folder / "classes.txt", [f"{k} {v}" for k, v in sorted(class_names.items())], bom),
    }
    _images(fx, paths, damaged, size=size)
    fx.expected = ExpectedSizes(CLASSES * per_split, CLASSES * per_split, CLASSES)
    return fx


def write_cub(root: Path, bom: bool = False, damaged: bool = True, per_split: int = PER_SPLIT,
              size: tuple[int, int] = (40, 32)) -> Fixture:
    """``<root>/CUB_200_2011/`` with class ids 1..3."""
    fx = Fixture(root, root / "CUB_200_2011")
    names = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 3: "003.Sooty_Albatross"}
    return _write_cub_style(
        fx, [1, 2, 3], names, image_id=lambda n: str(n),
        image_rel=lambda n, c: f"{names[c]}/{names[c].split('.')[1]}_{n:04d}_{n}.jpg",
        bom=bom, damaged=damaged, per_split=per_split, size=size,
    )


NABIRDS_LEAVES = [295, 817, 1010]


def write_nabirds(root: Path, bom: bool = False, damaged: bool = True, swapped: bool = False) -> Fixture:
    """``<root>/nabirds/``: taxonomy ids 0..1010 in classes.txt, images only in sparse leaves 295, 817, 1010."""
    fx = Fixture(root, root / "nabirds")
    names = {0: "Birds", 1: "Perching Birds", 22: "Sparrows", 295: "Song Sparrow", 817: "Snow Goose (Blue morph)",
             1010: "Yellow-rumped Warbler (Myrtle)"}
    write_text(fx.folder / "hierarchy.txt", ["1 0", "22 1", "295 22", "817 0", "1010 1"], bom)
    ids = {n: uuid.UUID(int=n * 7919) for n in range(1, 40)}
    return _write_cub_style(
        fx, NABIRDS_LEAVES, names, image_id=lambda n: str(ids[n]),
        image_rel=lambda n, c: f"{c:04d}/{ids[n].hex}.jpg", bom=bom, damaged=damaged, swapped=swapped,
    )


# --------------------------------------------------------------------------- Aircraft
AIRCRAFT_VARIANTS = ["707-320", "F/A-18", "Boeing 717"]
AIRCRAFT_SIZE = (48, 60)  # w, h (including the 20-px banner)


def write_aircraft(root: Path, bom: bool = False, damaged: bool = True) -> Fixture:
    """``<root>/fgvc-aircraft-2013b/data/`` with 3 variants; every image has a white 20-px bottom banner."""
    fx = Fixture(root, root / "fgvc-aircraft-2013b")
    data = fx.folder / "data"
    paths: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    n = 1000000
    for split, classes in _layout().items():
        for cls in classes:
            n += 17
            lines[split].append(f"{n:07d} {AIRCRAFT_VARIANTS[cls]}")
            paths[split].append((data / "images" / f"{n:07d}.jpg", cls))
    fx.list_files = {
        "variants": write_text(data / "variants.txt", AIRCRAFT_VARIANTS, bom),
        "train": write_text(data / "images_variant_trainval.txt", lines["train"], bom),
        "test": write_text(data / "images_variant_test.txt", lines["test"], bom),
    }
    _images(fx, paths, damaged, banner=20, size=AIRCRAFT_SIZE)
    return fx


# --------------------------------------------------------------------------- Food-101
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "beignets"]


def write_food101(root: Path, bom: bool = False, damaged: bool = True) -> Fixture:
    """``<root>/food-101/`` with ``meta/{classes,train,test}.txt``."""
    fx = Fixture(root, root / "food-101")
    paths: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    n = 100000
    for split, classes in _layout().items():
        for cls in classes:
            n += 31
            lines[split].append(f"{FOOD_CLASSES[cls]}/{n}")
            paths[split].append((fx.folder / "images" / FOOD_CLASSES[cls] / f"{n}.jpg", cls))
    meta = fx.folder / "meta"
    fx.list_files = {
        "classes": write_text(meta / "classes.txt", FOOD_CLASSES, bom),
        "train": write_text(meta / "train.txt", lines["train"], bom),
        "test": write_text(meta / "test.txt", lines["test"], bom),
    }
    _images(fx, paths, damaged)
    return fx


# --------------------------------------------------------------------------- VegFru
VEGFRU_CLASSES = [("veg200_images", "Chinese_artichoke", 0), ("veg200_images", "okra", 1), ("fru92_images", "mango", 200)]


def write_vegfru(root: Path, bom: bool = False, damaged: bool = True) -> Fixture:
    """``<root>/vegfru/`` with ``vegfru_list/``, ``veg200_images/``, ``fru92_images/``."""
    fx = Fixture(root, root / "vegfru")
    paths: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    n = 0
    for split, classes in _layout().items():
        for cls in classes:
            n += 1
            top, name, label = VEGFRU_CLASSES[cls]
            rel = f"{top}/{name}/{'v' if top.startswith('veg') else 'f'}_{label:03d}_{n:04d}.jpg"
            lines[split].append(f"{rel} {label}")
            paths[split].append((fx.folder / rel, cls))
    lst = fx.folder / "vegfru_list"
    fx.list_files = {
        "train": write_text(lst / "vegfru_train.txt", lines["train"], bom),
        "test": write_text(lst / "vegfru_test.txt", lines["test"], bom),
        "veg200_train": write_text(lst / "veg200_train.txt", [ln for ln in lines["train"] if ln.startswith("veg")], bom),
    }
    _images(fx, paths, damaged)
    (fx.folder / "fru92_images").mkdir(exist_ok=True)
    return fx


WRITERS = {
    "cub": write_cub,
    "aircraft": write_aircraft,
    "food101": write_food101,
    "nabirds": write_nabirds,
    "vegfru": write_vegfru,
}
