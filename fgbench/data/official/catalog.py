"""The five real fine-grained datasets: the sizes the hashing papers use, folders, download instructions.

* ``cub``: CUB-200-2011 (Wah et al., 2011), 200 bird species, 5,994 train / 5,794 test.
* ``aircraft``: FGVC-Aircraft 2013b (Maji et al., 2013), 100 variants, 6,667 trainval / 3,333 test.
* ``food101``: Food-101 (Bossard et al., 2014), 101 dishes, 75,750 train / 25,250 test.
* ``nabirds``: NABirds (Van Horn et al., 2015), 555 bird categories, 23,929 train / 24,633 test.
* ``vegfru``: VegFru (Hou et al., 2017), 292 vegetables and fruits, 29,200 train / 116,931 test.

Each is read from its official download layout (the layouts and readers are in
:mod:`fgbench.data.official.readers`), in its own folder below the data root
(``--data-root`` / ``$FGBENCH_DATA`` / :func:`~fgbench.data.base.default_data_root`).
The built-in plugin :mod:`fgbench.builtins.datasets` registers :data:`REAL_DATASETS`.

NABirds pitfalls, guarded against: ``classes.txt`` lists 1,011 ids (the whole
taxonomy); only the 555 leaf classes have images, mapped to ``0..554`` in id
order.  Some re-distributed copies and papers swap train and test; a swapped
``train_test_split.txt`` is reported as such (``is_training_image`` = 1 is the
23,929-image training set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgbench.data.base import DatasetSpec, ExpectedSizes
from fgbench.data.official.dataset import OfficialDataset
from fgbench.data.official.readers import (
    download_aircraft,
    download_food101,
    read_aircraft,
    read_cub_style,
    read_food101,
    read_vegfru,
)

AIRCRAFT_BANNER_PX = 20  # the copyright banner at the bottom of every FGVC-Aircraft image

CUB_HOMEPAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
CUB = OfficialDataset(
    name="cub",
    folder="CUB_200_2011",
    summary="CUB-200-2011 birds: 200 species, 5,994 database / 5,794 query images",
    homepage=CUB_HOMEPAGE,
    instructions=(
        f"download CUB_200_2011.tgz from {CUB_HOMEPAGE} (data.caltech.edu/records/65de6-vzc23) "
        "and unpack it into the data root so that <root>/CUB_200_2011/images.txt exists"
    ),
    reader=read_cub_style,
    expected=ExpectedSizes(train=5994, test=5794, classes=200),
)

AIRCRAFT_HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
AIRCRAFT = OfficialDataset(
    name="aircraft",
    folder="fgvc-aircraft-2013b",
    summary="FGVC-Aircraft 2013b: 100 variants, 6,667 database / 3,333 query images (banner cropped)",
    homepage=AIRCRAFT_HOMEPAGE,
    instructions=(
        f"download fgvc-aircraft-2013b.tar.gz from {AIRCRAFT_HOMEPAGE} and unpack it into the data root so that "
        "<root>/fgvc-aircraft-2013b/data/variants.txt exists"
    ),
    reader=read_aircraft,
    expected=ExpectedSizes(train=6667, test=3333, classes=100),
    image_dirs=("data/images",),
    crop_bottom=AIRCRAFT_BANNER_PX,
    download=download_aircraft,
)

FOOD101_HOMEPAGE = "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"
FOOD101 = OfficialDataset(
    name="food101",
    folder="food-101",
    summary="Food-101: 101 dishes, 75,750 database / 25,250 query images",
    homepage=FOOD101_HOMEPAGE,
    instructions=(
        f"download food-101.tar.gz from {FOOD101_HOMEPAGE} and unpack it into the data root so that "
        "<root>/food-101/meta/train.txt exists"
    ),
    reader=read_food101,
    expected=ExpectedSizes(train=75750, test=25250, classes=101),
    download=download_food101,
)

NABIRDS_HOMEPAGE = "https://dl.allaboutbirds.org/nabirds"
NABIRDS = OfficialDataset(
    name="nabirds",
    folder="nabirds",
    summary="NABirds: 555 bird categories, 23,929 database / 24,633 query images",
    homepage=NABIRDS_HOMEPAGE,
    instructions=(
        f"request and download nabirds.tar.gz from {NABIRDS_HOMEPAGE} (terms of use apply) and unpack it "
        "into the data root so that <root>/nabirds/images.txt exists"
    ),
    reader=read_cub_style,
    expected=ExpectedSizes(train=23929, test=24633, classes=555),
)

VEGFRU_HOMEPAGE = "https://github.com/ustc-vim/vegfru"
VEGFRU = OfficialDataset(
    name="vegfru",
    folder="vegfru",
    summary="VegFru: 292 vegetables and fruits, 29,200 database / 116,931 query images",
    homepage=VEGFRU_HOMEPAGE,
    instructions=(
        f"download vegfru_list.zip, veg200_images.tar and fru92_images.tar (links at {VEGFRU_HOMEPAGE}) and "
        "unpack all three into <root>/vegfru/ so that <root>/vegfru/vegfru_list/vegfru_train.txt exists"
    ),
    reader=read_vegfru,
    expected=ExpectedSizes(train=29200, test=116931, classes=292),
    image_dirs=("veg200_images", "fru92_images"),
)

REAL_DATASETS: tuple[OfficialDataset, ...] = (CUB, AIRCRAFT, FOOD101, NABIRDS, VEGFRU)


def _specs(host_registry: Any) -> list[DatasetSpec]:
    """Dataset specs of a :class:`~fgbench._plugins.PluginHost`, ``Registry`` or dataset ``NamedRegistry``."""
    reg = getattr(host_registry, "registry", host_registry)
    reg = getattr(reg, "datasets", reg)
    return list(reg.values())


def available_datasets(host_registry: Any, root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Split the registered ``kind == "real"`` datasets into available and missing.

    Args:
        host_registry: the plugin host, its ``Registry``, or its dataset registry.
        root: the data root.

    Returns:
        ``(available names, [(name, one-line reason), ...])``, both sorted by
        name.  A dataset is available when its cheap ``status`` says "found";
        a ``status`` that raises counts as missing with the error as reason.
        The synthetic dataset (always available) is not included.
    """
    available: list[str] = []
    missing: list[tuple[str, str]] = []
    for spec in sorted(_specs(host_registry), key=lambda s: s.name):
        if spec.kind != "real":
            continue
        try:
            status = spec.status(Path(root))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the run
            missing.append((spec.name, f"status check failed: {type(exc).__name__}: {exc}"))
            continue
        if status.available:
            available.append(spec.name)
        else:
            missing.append((spec.name, f"{status.state}: {status.message}" if status.message else status.state))
    return available, missing
