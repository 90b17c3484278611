"""FGVC-Aircraft 2013b (Maji et al., 2013): 100 variants, 6,667 trainval / 3,333 test.

Official layout below the data root (``fgvc-aircraft-2013b.tar.gz`` unpacked)::

    fgvc-aircraft-2013b/data/
      variants.txt                     one variant name per line (class order)
      images_variant_trainval.txt      <image id> <variant name>
      images_variant_test.txt          <image id> <variant name>
      images/1025794.jpg ...

The bottom 20 pixel rows of every image are a copyright banner; the authors
ask that it be removed, so every image is cropped by 20 px at the bottom.

torchvision's ``FGVCAircraft`` reads this same layout but neither crops the
banner nor reports bad lines, so it is used for ``--download`` only.
"""

from __future__ import annotations

from pathlib import Path

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.listing import Entry, Listing, Problem, build_listing, read_lines, read_pairs
from fgbench.data.official import OfficialDataset

EXPECTED = ExpectedSizes(train=6667, test=3333, classes=100)
HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
BANNER_PX = 20
SPLIT_FILES = {"train": "images_variant_trainval.txt", "test": "images_variant_test.txt"}


def read_aircraft(folder: Path) -> Listing:
    """Read ``folder/data/variants.txt`` and the variant trainval/test lists."""
    data = folder / "data"
    problems: list[Problem] = []
    variants_txt = data / "variants.txt"
    variants = [text for _, text in read_lines(variants_txt)]
    index = {v: i for i, v in enumerate(variants)}
    entries: dict[str, list[Entry]] = {}
    for split, fname in SPLIT_FILES.items():
        path = data / fname
        entries[split] = []
        for n, image_id, variant in read_pairs(path, problems, "'<image id> <variant>'"):
            if variant not in index:
                problems.append(Problem(path, f"variant {variant!r} is not in variants.txt", n))
                continue
            entries[split].append(Entry(path, n, data / "images" / f"{image_id}.jpg", index[variant]))
    names = dict(enumerate(variants))
    files = [variants_txt, *(data / f for f in SPLIT_FILES.values())]
    return build_listing(entries, names, variants_txt, files, problems)


def download(root: Path) -> None:
    """Download and unpack the archive into ``root`` with torchvision (needs network, 2.6 GB)."""
    from torchvision.datasets import FGVCAircraft

    FGVCAircraft(str(root), split="test", download=True)


AIRCRAFT = OfficialDataset(
    name="aircraft",
    folder="fgvc-aircraft-2013b",
    summary="FGVC-Aircraft 2013b: 100 variants, 6,667 database / 3,333 query images (banner cropped)",
    homepage=HOMEPAGE,
    instructions=(
        f"download fgvc-aircraft-2013b.tar.gz from {HOMEPAGE} and unpack it into the data root so that "
        "<root>/fgvc-aircraft-2013b/data/variants.txt exists"
    ),
    reader=read_aircraft,
    expected=EXPECTED,
    image_dirs=("data/images",),
    crop_bottom=BANNER_PX,
    download=download,
)


def make_spec(expected: ExpectedSizes | None = None) -> DatasetSpec:
    """The ``aircraft`` spec; ``expected`` replaces the paper sizes (for test fixtures)."""
    return AIRCRAFT.make_spec(expected)
