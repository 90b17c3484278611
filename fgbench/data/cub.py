"""CUB-200-2011 (Wah et al., 2011): 200 bird species, 5,994 train / 5,794 test.

Official layout below the data root (``CUB_200_2011.tgz`` unpacked)::

    CUB_200_2011/
      images.txt  image_class_labels.txt  train_test_split.txt  classes.txt
      images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
"""

from __future__ import annotations

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.cub_style import read_cub_style
from fgbench.data.official import OfficialDataset

EXPECTED = ExpectedSizes(train=5994, test=5794, classes=200)
HOMEPAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"

CUB = OfficialDataset(
    name="cub",
    folder="CUB_200_2011",
    summary="CUB-200-2011 birds: 200 species, 5,994 database / 5,794 query images",
    homepage=HOMEPAGE,
    instructions=(
        f"download CUB_200_2011.tgz from {HOMEPAGE} (data.caltech.edu/records/65de6-vzc23) "
        "and unpack it into the data root so that <root>/CUB_200_2011/images.txt exists"
    ),
    reader=read_cub_style,
    expected=EXPECTED,
)


def make_spec(expected: ExpectedSizes | None = None) -> DatasetSpec:
    """The ``cub`` spec; ``expected`` replaces the paper sizes (for test fixtures)."""
    return CUB.make_spec(expected)
