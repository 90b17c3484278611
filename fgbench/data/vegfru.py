"""VegFru (Hou et al., 2017): 292 vegetable and fruit classes, 29,200 train / 116,931 test.

The dataset comes as three archives (``vegfru_list``, ``veg200_images``,
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

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.listing import Entry, Listing, Problem, build_listing, parse_int, read_lines
from fgbench.data.official import OfficialDataset

EXPECTED = ExpectedSizes(train=29200, test=116931, classes=292)
HOMEPAGE = "https://github.com/ustc-vim/vegfru"
SPLIT_FILES = {"train": "vegfru_list/vegfru_train.txt", "test": "vegfru_list/vegfru_test.txt"}


def read_vegfru(folder: Path) -> Listing:
    """Read ``vegfru_list/vegfru_{train,test}.txt`` (lines ``<relative path> <label>``)."""
    problems: list[Problem] = []
    entries: dict[str, list[Entry]] = {}
    names: dict[int, str] = {}
    for split, fname in SPLIT_FILES.items():
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
    files = [folder / f for f in SPLIT_FILES.values()]
    return build_listing(entries, names, files[0], files, problems)


VEGFRU = OfficialDataset(
    name="vegfru",
    folder="vegfru",
    summary="VegFru: 292 vegetables and fruits, 29,200 database / 116,931 query images",
    homepage=HOMEPAGE,
    instructions=(
        f"download vegfru_list.zip, veg200_images.tar and fru92_images.tar (links at {HOMEPAGE}) and unpack "
        "all three into <root>/vegfru/ so that <root>/vegfru/vegfru_list/vegfru_train.txt exists"
    ),
    reader=read_vegfru,
    expected=EXPECTED,
    image_dirs=("veg200_images", "fru92_images"),
)


def make_spec(expected: ExpectedSizes | None = None) -> DatasetSpec:
    """The ``vegfru`` spec; ``expected`` replaces the paper sizes (for test fixtures)."""
    return VEGFRU.make_spec(expected)
