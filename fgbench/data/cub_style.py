"""Reader of the CUB-200-2011 list format, shared by CUB and NABirds.

Both datasets ship, in their root folder::

    images.txt              <image_id> <relative path below images/>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <is_training_image: 1 or 0>
    classes.txt             <class_id> <class name>

Image ids are integers (CUB) or UUIDs (NABirds); class ids may be sparse
(NABirds: 555 leaf classes with ids up to 1010); labels are mapped to
``0..C-1`` in sorted class-id order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable

from fgbench.data.listing import Entry, Listing, Problem, build_listing, parse_int, read_pairs

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
