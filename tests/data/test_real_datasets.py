"""The five real datasets read from tiny fixtures in their official layouts."""

from __future__ import annotations

import numpy as np
import pytest

from fgbench.data.base import DatasetError, ExpectedSizes
from fgbench.data.official import catalog
from fgbench.data.official.catalog import REAL_DATASETS, available_datasets
from fgbench.data.official.listing import read_lines
from fgbench._plugins import PluginHost, load_plugins

from .fixtures import AIRCRAFT_SIZE, EXPECTED, NABIRDS_LEAVES, WRITERS, write_text

NAMES = [d.name for d in REAL_DATASETS]
DATASETS = {d.name: d for d in REAL_DATASETS}


@pytest.mark.parametrize("name", NAMES)
def test_split_sizes_and_labels(tmp_path, name):
    fx = WRITERS[name](tmp_path)
    ds = DATASETS[name].make_spec(fx.expected).load(tmp_path)
    assert ds.summary() == {"train": 6, "test": 6, "classes": 3}
    for which, paths in (("train", fx.train_paths), ("test", fx.test_paths)):
        split = ds.split(which)
        # list-file order is kept, labels are 0-based and contiguous
        assert [split.describe(i) for i in range(len(split))] == [str(p) for p in paths]
        assert split.labels.dtype == np.int64
        assert split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    # stable: a second load gives the same labels and class order
    again = DATASETS[name].make_spec(fx.expected).load(tmp_path)
    assert again.class_names == ds.class_names and len(set(ds.class_names)) == 3
    np.testing.assert_array_equal(again.split("test").labels, ds.split("test").labels)


@pytest.mark.parametrize("name", NAMES)
def test_images_decode_to_rgb_including_grayscale_and_cmyk(tmp_path, name):
    fx = WRITERS[name](tmp_path)
    ds = DATASETS[name].make_spec(fx.expected).load(tmp_path)
    train = ds.split("train")
    for i in range(3):  # grayscale, CMYK, RGB
        arr = train.load_array(i)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.flags.writeable
        assert train.load_image(i).mode == "RGB"
    # class colour survives: image 1 is class 1 (green) written as CMYK
    mean = train.load_array(1).reshape(-1, 3).mean(0)
    assert mean[1] > mean[0] + 80 and mean[1] > mean[2] + 80


@pytest.mark.parametrize("name", NAMES)
def test_truncated_jpeg_is_one_line_error_naming_the_file(tmp_path, name):
    fx = WRITERS[name](tmp_path)
    ds = DATASETS[name].make_spec(fx.expected).load(tmp_path)
    with pytest.raises(DatasetError) as err:
        ds.split("test").load_array(5)
    msg = str(err.value)
    assert str(fx.damaged) in msg and "\n" not in msg and "cannot decode" in msg


@pytest.mark.parametrize("name", NAMES)
def test_utf8_bom_list_files(tmp_path, name):
    fx = WRITERS[name](tmp_path, bom=True)
    assert next(iter(fx.list_files.values())).read_bytes().startswith(b"\xef\xbb\xbf")
    ds = DATASETS[name].make_spec(fx.expected).load(tmp_path)
    assert ds.summary() == {"train": 6, "test": 6, "classes": 3}
    assert not any(n.startswith("\ufeff") for n in ds.class_names)
    assert ds.split("train").describe(0) == str(fx.train_paths[0])
    for path in fx.list_files.values():
        assert not read_lines(path)[0][1].startswith("\ufeff")


@pytest.mark.parametrize("name", NAMES)
def test_wrong_count_names_the_list_file(tmp_path, name):
    WRITERS[name](tmp_path)
    spec = DATASETS[name].make_spec()  # the paper sizes
    with pytest.raises(DatasetError) as err:
        spec.load(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "lists 6 train images, expected" in msg
    assert f"{DATASETS[name].expected.train:,}" in msg
    assert ".txt" in msg.split(":")[0]
    # not strict: loads with the sizes on disk
    assert spec.load(tmp_path, strict=False).summary()["train"] == 6
    status = spec.status(tmp_path)
    assert status.state == "damaged" and status.counts["train"] == 6


@pytest.mark.parametrize("name", NAMES)
def test_missing_list_file(tmp_path, name):
    fx = WRITERS[name](tmp_path)
    victim = next(p for p in fx.list_files.values() if "test" in p.name or p.name == "train_test_split.txt")
    victim.unlink()
    spec = DATASETS[name].make_spec(fx.expected)
    with pytest.raises(DatasetError, match="list file is missing") as err:
        spec.load(tmp_path)
    assert str(victim) in str(err.value)
    assert spec.status(tmp_path).state == "damaged"


@pytest.mark.parametrize("name", NAMES)
def test_absent_dataset_is_missing_with_instructions(tmp_path, name):
    spec = DATASETS[name].make_spec(EXPECTED)
    status = spec.status(tmp_path)
    assert status.state == "missing" and DATASETS[name].folder in status.message
    with pytest.raises(DatasetError, match="not found at"):
        spec.load(tmp_path)
    assert spec.homepage.startswith("https://") and DATASETS[name].folder in spec.instructions


def test_root_that_is_a_file(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("x")
    with pytest.raises(DatasetError, match="data root is not a directory"):
        catalog.CUB.make_spec(EXPECTED).load(root)
    status = catalog.CUB.make_spec(EXPECTED).status(root)
    assert status.state == "missing" and "not a directory" in status.message


def test_image_listed_twice(tmp_path):
    fx = WRITERS["food101"](tmp_path)
    train = fx.list_files["train"]
    lines = train.read_text().splitlines()
    write_text(train, [*lines, lines[0]])
    spec = catalog.FOOD101.make_spec(fx.expected)
    with pytest.raises(DatasetError, match="image listed twice") as err:
        spec.load(tmp_path)
    assert str(train) in str(err.value) and ":7:" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 1 bad list entries"):
        assert spec.load(tmp_path, strict=False).summary()["train"] == 6


def test_image_in_both_splits(tmp_path):
    fx = WRITERS["vegfru"](tmp_path)
    first_train = fx.list_files["train"].read_text().splitlines()[0]
    test_lines = fx.list_files["test"].read_text().splitlines()
    write_text(fx.list_files["test"], [first_train, *test_lines[1:]])
    with pytest.raises(DatasetError, match="in both splits"):
        catalog.VEGFRU.make_spec(fx.expected).load(tmp_path)


def test_bad_lines_are_all_reported(tmp_path):
    fx = WRITERS["cub"](tmp_path)
    split = fx.list_files["split"]
    lines = split.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " yes"
    lines[1] = "99999 1"
    split.write_text("\n".join(lines) + "\n")
    ds = catalog.CUB.with_expected(fx.expected)
    listing = ds.read(tmp_path)
    messages = [str(p) for p in ds.problems(listing)]
    assert any("is not an integer" in m and ":1:" in m for m in messages)
    assert any("99999 is not in images.txt" in m for m in messages)
    assert any("lists 4 train images, expected 6" in m for m in messages)
    with pytest.raises(DatasetError, match=r"\+\d+ more; run `fgbench data check cub`"):
        ds(tmp_path)


def test_aircraft_banner_is_cropped(tmp_path):
    fx = WRITERS["aircraft"](tmp_path)
    ds = catalog.AIRCRAFT.make_spec(fx.expected).load(tmp_path)
    w, h = AIRCRAFT_SIZE
    arr = ds.split("test").load_array(0)
    assert arr.shape == (h - catalog.AIRCRAFT_BANNER_PX, w, 3)
    # the banner was white; what is left is the red class colour (JPEG edge ringing aside)
    assert arr[-3:].mean(axis=(0, 1))[1] < 120
    assert np.asarray(ds.split("test").load_image(0)).shape == arr.shape
    assert ds.class_names == ("707-320", "F/A-18", "Boeing 717")


def test_aircraft_unknown_variant(tmp_path):
    fx = WRITERS["aircraft"](tmp_path)
    write_text(fx.list_files["variants"], ["707-320", "F/A-18"])
    with pytest.raises(DatasetError, match="variant 'Boeing 717' is not in variants.txt"):
        catalog.AIRCRAFT.make_spec(fx.expected).load(tmp_path)


def test_nabirds_sparse_ids_map_to_contiguous_labels(tmp_path):
    fx = WRITERS["nabirds"](tmp_path)
    ds = catalog.NABIRDS.make_spec(fx.expected).load(tmp_path)
    assert ds.num_classes == 3
    # leaves 295, 817, 1010 -> 0, 1, 2 in id order; interior taxonomy ids without images are not classes
    assert ds.class_names == ("Song Sparrow", "Snow Goose (Blue morph)", "Yellow-rumped Warbler (Myrtle)")
    assert set(ds.split("train").labels.tolist()) == {0, 1, 2}
    assert NABIRDS_LEAVES == sorted(NABIRDS_LEAVES)
    assert ds.split("train").describe(2).split("/")[-2] == "1010"


def test_nabirds_swapped_split_is_reported(tmp_path):
    fx = WRITERS["nabirds"](tmp_path, swapped=True)
    # make the sizes differ so a swap is recognisable: move one image to the (swapped) test side
    lines = fx.list_files["split"].read_text().splitlines()
    flip = next(i for i, ln in enumerate(lines) if ln.endswith(" 1"))
    lines[flip] = lines[flip][:-1] + "0"
    write_text(fx.list_files["split"], lines)
    expected = ExpectedSizes(train=7, test=5, classes=3)
    with pytest.raises(DatasetError, match=r"train and test look swapped \(5 train, 7 test; expected 7 train, 5 test\)"):
        catalog.NABIRDS.make_spec(expected).load(tmp_path)
    # the unswapped official file loads
    WRITERS["nabirds"](tmp_path / "ok")
    assert catalog.NABIRDS.make_spec(EXPECTED).load(tmp_path / "ok").summary()["train"] == 6
    assert catalog.NABIRDS.expected == ExpectedSizes(23929, 24633, 555)


def test_class_count_mismatch(tmp_path):
    WRITERS["food101"](tmp_path)
    with pytest.raises(DatasetError, match=r"classes.txt: 3 classes have images, expected 4"):
        catalog.FOOD101.make_spec(ExpectedSizes(6, 6, 4)).load(tmp_path)


def test_paper_sizes():
    got = {d.name: (d.expected.train, d.expected.test, d.expected.classes) for d in REAL_DATASETS}
    assert got == {
        "cub": (5994, 5794, 200),
        "aircraft": (6667, 3333, 100),
        "food101": (75750, 25250, 101),
        "nabirds": (23929, 24633, 555),
        "vegfru": (29200, 116931, 292),
    }
    assert {d.name for d in REAL_DATASETS if d.download} == {"aircraft", "food101"}


def test_builtin_plugin_registers_the_five():
    host = load_plugins(autoload=False)
    for name in NAMES:
        spec = host.registry.datasets.get(name)
        assert spec.kind == "real" and spec.expected == DATASETS[name].expected
        assert spec.source == "fgbench (built-in)"


def test_available_datasets(tmp_path, fixture_host):
    WRITERS["cub"](tmp_path)
    WRITERS["aircraft"](tmp_path)
    (tmp_path / "food-101").mkdir()  # present but empty: damaged
    available, missing = available_datasets(fixture_host, tmp_path)
    assert available == ["aircraft", "cub"]
    reasons = dict(missing)
    assert sorted(reasons) == ["food101", "nabirds", "vegfru"]
    assert reasons["food101"].startswith("damaged") and reasons["nabirds"].startswith("missing")
    # also accepts the registry itself, and skips non-real kinds
    assert available_datasets(fixture_host.registry.datasets, tmp_path)[0] == available


def test_available_datasets_survives_a_broken_status(tmp_path):
    from fgbench.data.base import DatasetSpec
    from fgbench.hookspecs import hookimpl

    def boom(root):
        raise RuntimeError("disk on fire")

    class Broken:
        @hookimpl
        def register_datasets(self, register):
            register(DatasetSpec("broken", "x", load=lambda r: None, status=boom, kind="real"))

    host = PluginHost()
    host.register_plugin(Broken(), name="broken")
    available, missing = available_datasets(host, tmp_path)
    assert available == [] and missing == [("broken", "status check failed: RuntimeError: disk on fire")]


def test_generic_check_reads_every_item(tmp_path):
    from fgbench.data.base import (
        ArraySplit,
        DatasetSpec,
        DatasetStatus,
        RetrievalDataset,
    )
    from fgbench.data.official.check import check_dataset

    class Broken(ArraySplit):
        def load_array(self, index):
            if index == 1:
                raise DatasetError(f"{self.describe(index)}: broken")
            return super().load_array(index)

    class Tiny(RetrievalDataset):
        name, num_classes = "tiny", 2

        def split(self, which):
            images = np.zeros((3, 4, 4, 3), np.uint8)
            return Broken(images, np.array([0, 1, 1]), name=f"tiny-{which}")

    spec = DatasetSpec("tiny", "x", load=lambda r: Tiny(), status=lambda r: DatasetStatus("found"), kind="synthetic",
                       expected=ExpectedSizes(3, 4, 2))
    report = check_dataset(spec, tmp_path)
    assert report.checked_images == 6 and not report.ok
    assert [str(p) for p in report.errors] == ["tiny: 3 test, expected 4", "tiny-train[1]: broken", "tiny-test[1]: broken"]
