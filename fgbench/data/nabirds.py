"""NABirds (Van Horn et al., 2015): 555 North American bird categories, 23,929 train / 24,633 test.

Official layout below the data root (``nabirds.tar.gz`` unpacked)::

    nabirds/
      images.txt  image_class_labels.txt  train_test_split.txt  classes.txt  hierarchy.txt
      images/0295/0000139e21dc4d0cbfe14cae3c85c829.jpg ...

Known pitfalls, guarded against:

* ``classes.txt`` lists 1,011 ids (the whole taxonomy, ids 0..1010); only the
  555 leaf classes have images.  Labels are those 555 ids mapped to
  ``0..554`` in id order.
* Some re-distributed copies and papers swap train and test; a swapped
  ``train_test_split.txt`` is reported as such (``is_training_image`` = 1 is
  the 23,929-image training set).
* Copies edited on Windows may carry a UTF-8 byte-order mark (read as
  ``utf-8-sig``).
"""

from __future__ import annotations

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.cub_style import read_cub_style
from fgbench.data.official import OfficialDataset

EXPECTED = ExpectedSizes(train=23929, test=24633, classes=555)
HOMEPAGE = "https://dl.allaboutbirds.org/nabirds"

NABIRDS = OfficialDataset(
    name="nabirds",
    folder="nabirds",
    summary="NABirds: 555 bird categories, 23,929 database / 24,633 query images",
    homepage=HOMEPAGE,
    instructions=(
        f"request and download nabirds.tar.gz from {HOMEPAGE} (terms of use apply) and unpack it "
        "into the data root so that <root>/nabirds/images.txt exists"
    ),
    reader=read_cub_style,
    expected=EXPECTED,
)


def make_spec(expected: ExpectedSizes | None = None) -> DatasetSpec:
    """The ``nabirds`` spec; ``expected`` replaces the paper sizes (for test fixtures)."""
    return NABIRDS.make_spec(expected)
