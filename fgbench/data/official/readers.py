"""Readers of the five real datasets' official list files: ``folder -> Listing``.

Each reader records a :class:`~fgbench.data.official.listing.Problem` for a bad
line and skips it (``fgbench data check`` reports them all); only a missing or
unreadable list file stops it.  The datasets themselves (sizes, folders, download
instructions) are defined in :mod:`fgbench.data.official.catalog`.

**CUB-200-2011 and NABirds** (:func:`read_cub_style`). Both datasets ship, in their root folder::

    images.txt              <image_id> <relative path below images/>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <is_training_image: 1 or 0>
    classes.txt             <class_id> <class name>

Image ids are integers (CUB) or UUIDs (NABirds); class ids may be sparse
(NABirds: 555 leaf classes with ids up to 1010); labels are mapped to
``0..C-1`` in sorted class-id order.

**FGVC-Aircraft** (:func:`read_aircraft`). Official layout below the data root (``fgvc-aircraft-2013b.tar.gz`` unpacked)::

    fgvc-aircraft-2013b/data/
      variants.txt                     one variant name per line (class order)
      images_variant_trainval.txt      <image id> <variant name>
      images_variant_test.txt          <image id> <variant name>
      images/1025794.jpg ...

The bottom 20 pixel rows of every image are a copyright banner; the authors
ask that it be removed, so every image is cropped by 20 px at the bottom.

torchvision's ``FGVCAircraft`` reads this same layout but neither crops the
banner nor reports bad lines, so it is used for ``--download`` only.

**Food-101** (:func:`read_food101`). Official layout below the data root (``food-101.tar.gz`` unpacked)::

    food-101/
      meta/classes.txt   one class per line (class order)
      meta/train.txt     <class>/<image id>, e.g. apple_pie/1005649
      meta/test.txt
      images/apple_pie/1005649.jpg ...

torchvision's ``Food101`` reads the ``.json`` lists of the same archive; the
``.txt`` lists are read here (with per-line problems), torchvision is used
for ``--download`` only.

**VegFru** (:func:`read_vegfru`). The dataset comes as three archives (``vegfru_list``, ``veg200_images``,
``fru92_images``).  fgbench expects all three unpacked into one folder
``vegfru/`` below the data root::

    vegfru/
      vegfru_list/vegfru_train.txt   <path relative to vegfru/> <label 0..291>
      vegfru_list/vegfru_test.txt    (also vegfru_val.txt, veg200_*.txt, fru92_*.txt: unused)
      veg200_images/<class>/<file>.jpg
      fru92_images/<class>/<file>.jpg

The hashing papers use ``vegfru_train.txt`` (29,200) as the database and
``vegfru_test.txt`` (116,931) as the queries.  Class names are the image
folder names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable

from fgbench.data.official.listing import Entry, Listing, Problem, build_listing, parse_int, read_lines, read_pairs

LIST_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _class_key(value: str) -> Hashable:
    return int(value) if value.lstrip("-").isdigit() else value


def read_cub_style(folder: Path, image_dir: str = "images") -> Listing:
    """Read the four list files of ``folder`` into a :class:`Listing` (problems recorded, not raised)."""
    problems: list[Problem] = []
    images_txt, labels_txt, split_txt, classes_txt = (folder / f for f in LIST_FILES)
    paths = {}
    for n, key, rel in read_pairs(images_txt, problems, "'<image_id> <path>'"):
        if key in paths:
            problems.append(Problem(images_txt, f"image id {key} listed twice", n))
            continue
        paths[key] = (n, rel)
    labels = {}
    for n, key, cls in read_pairs(labels_txt, problems, "'<image_id> <class_id>'"):
        if key not in paths:
            problems.append(Problem(labels_txt, f"image id {key} is not in images.txt", n))
            continue
        if key in labels:
            problems.append(Problem(labels_txt, f"image id {key} labelled twice", n))
            continue
        labels[key] = _class_key(cls)
    names = {_class_key(k): v for _, k, v in read_pairs(classes_txt, problems, "'<class_id> <name>'")}
    entries: dict[str, list[Entry]] = {"train": [], "test": []}
    seen: set[str] = set()
    for n, key, flag in read_pairs(split_txt, problems, "'<image_id> <is_training_image>'"):
        value = parse_int(flag, split_txt, n, problems, "is_training_image")
        if value is None:
            continue
        if value not in (0, 1):
            problems.append(Problem(split_txt, f"is_training_image must be 1 or 0, got {flag!r}", n))
            continue
        if key not in paths:
            problems.append(Problem(split_txt, f"image id {key} is not in images.txt", n))
            continue
        if key in seen:
            problems.append(Problem(split_txt, f"image id {key} listed twice", n))
            continue
        if key not in labels:
            problems.append(Problem(labels_txt, f"image id {key} ({paths[key][1]}) has no class label"))
            continue
        seen.add(key)
        if labels[key] not in names:
            problems.append(Problem(classes_txt, f"class id {labels[key]} (of image id {key}) is not listed"))
        entries["train" if value == 1 else "test"].append(
            Entry(split_txt, n, folder / image_dir / paths[key][1], labels[key])
        )
    for key, (n, rel) in paths.items():
        if key not in seen and key in labels:
            problems.append(Problem(split_txt, f"image id {key} ({rel}) is in no split"))
    return build_listing(entries, names, labels_txt, [folder / f for f in LIST_FILES], problems)


AIRCRAFT_LISTS = {"train": "images_variant_trainval.txt", "test": "images_variant_test.txt"}


def read_aircraft(folder: Path) -> Listing:
    """Read ``folder/data/variants.txt`` and the variant trainval/test lists."""
    data = folder / "data"
    problems: list[Problem] = []
    variants_txt = data / "variants.txt"
    variants = [text for _, text in read_lines(variants_txt)]
    index = {v: i for i, v in enumerate(variants)}
    entries: dict[str, list[Entry]] = {}
    for split, fname in AIRCRAFT_LISTS.items():
        path = data / fname
        entries[split] = []
        for n, image_id, variant in read_pairs(path, problems, "'<image id> <variant>'"):
            if variant not in index:
                problems.append(Problem(path, f"variant {variant!r} is not in variants.txt", n))
                continue
            entries[split].append(Entry(path, n, data / "images" / f"{image_id}.jpg", index[variant]))
    names = dict(enumerate(variants))
    files = [variants_txt, *(data / f for f in AIRCRAFT_LISTS.values())]
    return build_listing(entries, names, variants_txt, files, problems)


def download_aircraft(root: Path) -> None:
    """Download and unpack the archive into ``root`` with torchvision (needs network, 2.6 GB)."""
    from torchvision.datasets import FGVCAircraft

    FGVCAircraft(str(root), split="test", download=True)


FOOD101_LISTS = {"train": "train.txt", "test": "test.txt"}


def read_food101(folder: Path) -> Listing:
    """Read ``meta/classes.txt`` and ``meta/{train,test}.txt``."""
    meta = folder / "meta"
    problems: list[Problem] = []
    classes_txt = meta / "classes.txt"
    classes = [text for _, text in read_lines(classes_txt)]
    index = {c: i for i, c in enumerate(classes)}
    entries: dict[str, list[Entry]] = {}
    for split, fname in FOOD101_LISTS.items():
        path = meta / fname
        entries[split] = []
        for n, text in read_lines(path):
            cls, sep, _ = text.partition("/")
            if not sep or cls not in index:
                problems.append(Problem(path, f"expected '<class>/<image id>' with a class of classes.txt, got {text[:60]!r}", n))
                continue
            entries[split].append(Entry(path, n, folder / "images" / f"{text}.jpg", index[cls]))
    files = [classes_txt, *(meta / f for f in FOOD101_LISTS.values())]
    return build_listing(entries, dict(enumerate(classes)), classes_txt, files, problems)


def download_food101(root: Path) -> None:
    """Download and unpack the archive into ``root`` with torchvision (needs network, 5 GB)."""
    from torchvision.datasets import Food101

    Food101(str(root), split="test", download=True)


VEGFRU_LISTS = {"train": "vegfru_list/vegfru_train.txt", "test": "vegfru_list/vegfru_test.txt"}


def read_vegfru(folder: Path) -> Listing:
    """Read ``vegfru_list/vegfru_{train,test}.txt`` (lines ``<relative path> <label>``)."""
    problems: list[Problem] = []
    entries: dict[str, list[Entry]] = {}
    names: dict[int, str] = {}
    for split, fname in VEGFRU_LISTS.items():
        path = folder / fname
        entries[split] = []
        for n, text in read_lines(path):
            rel, _, label_text = text.rpartition(" ")
            if not rel:
                problems.append(Problem(path, f"expected '<image path> <label>', got {text[:60]!r}", n))
                continue
            label = parse_int(label_text, path, n, problems, "label")
            if label is None:
                continue
            rel_path = Path(rel.strip())
            names.setdefault(label, rel_path.parent.name or str(label))
            entries[split].append(Entry(path, n, folder / rel_path, label))
    files = [folder / f for f in VEGFRU_LISTS.values()]
    return build_listing(entries, names, files[0], files, problems)
