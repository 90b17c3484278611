"""Food-101 (Bossard et al., 2014): 101 dishes, 75,750 train / 25,250 test.

Official layout below the data root (``food-101.tar.gz`` unpacked)::

    food-101/
      meta/classes.txt   one class per line (class order)
      meta/train.txt     <class>/<image id>, e.g. apple_pie/1005649
      meta/test.txt
      images/apple_pie/1005649.jpg ...

torchvision's ``Food101`` reads the ``.json`` lists of the same archive; the
``.txt`` lists are read here (with per-line problems), torchvision is used
for ``--download`` only.
"""

from __future__ import annotations

from pathlib import Path

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.listing import Entry, Listing, Problem, build_listing, read_lines
from fgbench.data.official import OfficialDataset

EXPECTED = ExpectedSizes(train=75750, test=25250, classes=101)
HOMEPAGE = "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"
SPLIT_FILES = {"train": "train.txt", "test": "test.txt"}


def read_food101(folder: Path) -> Listing:
    """Read ``meta/classes.txt`` and ``meta/{train,test}.txt``."""
    meta = folder / "meta"
    problems: list[Problem] = []
    classes_txt = meta / "classes.txt"
    classes = [text for _, text in read_lines(classes_txt)]
    index = {c: i for i, c in enumerate(classes)}
    entries: dict[str, list[Entry]] = {}
    for split, fname in SPLIT_FILES.items():
        path = meta / fname
        entries[split] = []
        for n, text in read_lines(path):
            cls, sep, _ = text.partition("/")
            if not sep or cls not in index:
                problems.append(Problem(path, f"expected '<class>/<image id>' with a class of classes.txt, got {text[:60]!r}", n))
                continue
            entries[split].append(Entry(path, n, folder / "images" / f"{text}.jpg", index[cls]))
    files = [classes_txt, *(meta / f for f in SPLIT_FILES.values())]
    return build_listing(entries, dict(enumerate(classes)), classes_txt, files, problems)


def download(root: Path) -> None:
    """Download and unpack the archive into ``root`` with torchvision (needs network, 5 GB)."""
    from torchvision.datasets import Food101

    Food101(str(root), split="test", download=True)


FOOD101 = OfficialDataset(
    name="food101",
    folder="food-101",
    summary="Food-101: 101 dishes, 75,750 database / 25,250 query images",
    homepage=HOMEPAGE,
    instructions=(
        f"download food-101.tar.gz from {HOMEPAGE} and unpack it into the data root so that "
        "<root>/food-101/meta/train.txt exists"
    ),
    reader=read_food101,
    expected=EXPECTED,
    download=download,
)


def make_spec(expected: ExpectedSizes | None = None) -> DatasetSpec:
    """The ``food101`` spec; ``expected`` replaces the paper sizes (for test fixtures)."""
    return FOOD101.make_spec(expected)
