"""The decoded cache: round trip, use by the split, staleness, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fgbench.data.base import DatasetError
from fgbench.data.official import catalog
from fgbench.data.official.cache import CachedSplit, build_cache, dataset_cache_dir, inspect_cache
from fgbench.data.official.images import FileSplit, resized_shape

from .fixtures import AIRCRAFT_SIZE, WRITERS, write_text

SIZE = 24


def _prepared(tmp_path, name="cub", **kw):
    fx = WRITERS[name](tmp_path, damaged=False, **kw)
    official = {"cub": catalog.CUB, "aircraft": catalog.AIRCRAFT}[name].with_expected(fx.expected)
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    return fx, official


def test_round_trip_and_split_uses_cache(tmp_path):
    fx, official = _prepared(tmp_path)
    directory = dataset_cache_dir(tmp_path, "cub", SIZE)
    assert directory == tmp_path / ".fgbench-cache" / f"cub-{SIZE}"
    assert {"meta.json", "train.pixels", "train.offsets.npy", "test.shapes.npy"} <= {p.name for p in directory.iterdir()}
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    ds = official(tmp_path, cache_size=SIZE)
    files = official(tmp_path, use_cache=False)
    for which in ("train", "test"):
        split = ds.split(which)
        assert isinstance(split, CachedSplit)
        np.testing.assert_array_equal(split.labels, files.split(which).labels)
        for i in range(len(split)):
            arr = split.load_array(i)
            assert arr.dtype == np.uint8 and min(arr.shape[:2]) == SIZE and arr.flags.writeable
            # same pixels as decoding and resizing the JPEG
            ref = np.asarray(files.split(which).load_image(i).resize(arr.shape[1::-1], resample=2))
            assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 2
            assert split.describe(i) == str(fx.train_paths[i] if which == "train" else fx.test_paths[i])
    assert ds.split("train").load_image(0).size == resized_shape(40, 32, SIZE)
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["counts"] == {"train": 6, "test": 6} and meta["size"] == SIZE


def test_cache_of_other_size_is_not_used(tmp_path):
    _, official = _prepared(tmp_path)
    assert isinstance(official(tmp_path, cache_size=SIZE + 1).split("train"), FileSplit)


def test_aircraft_cache_keeps_the_banner_crop(tmp_path):
    _, official = _prepared(tmp_path, "aircraft")
    arr = official(tmp_path, cache_size=SIZE).split("train").load_array(2)
    w, h = AIRCRAFT_SIZE
    assert arr.shape[:2] == resized_shape(w, h - catalog.AIRCRAFT_BANNER_PX, SIZE)[::-1]


def test_stale_cache_is_ignored_then_rebuilt(tmp_path):
    fx, official = _prepared(tmp_path)
    classes = fx.list_files["classes"]
    classes.write_text(classes.read_text().replace("Sooty", "Sooty_renamed"))
    dataset = official(tmp_path, use_cache=False)
    state = inspect_cache(dataset, tmp_path, SIZE)
    assert state.state == "stale" and "list files changed" in state.reason
    with pytest.warns(UserWarning, match=r"ignoring stale decoded cache .*`fgbench data prepare cub --size 24`"):
        ds = official(tmp_path, cache_size=SIZE)
    assert isinstance(ds.split("train"), FileSplit)
    build_cache(dataset, tmp_path, SIZE)
    assert inspect_cache(dataset, tmp_path, SIZE).state == "valid"
    assert isinstance(official(tmp_path, cache_size=SIZE).split("train"), CachedSplit)


def test_truncated_cache_file_is_stale(tmp_path):
    _, official = _prepared(tmp_path)
    pixels = dataset_cache_dir(tmp_path, "cub", SIZE) / "test.pixels"
    pixels.write_bytes(pixels.read_bytes()[:-10])
    state = inspect_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    assert state.state == "stale" and "test.pixels" in state.reason


def test_damaged_image_commits_nothing(tmp_path):
    fx = WRITERS["cub"](tmp_path)  # with a truncated JPEG
    official = catalog.CUB.with_expected(fx.expected)
    with pytest.raises(DatasetError, match=str(fx.damaged)):
        build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    directory = dataset_cache_dir(tmp_path, "cub", SIZE)
    assert not (directory / "meta.json").exists()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert isinstance(official(tmp_path, cache_size=SIZE).split("train"), FileSplit)


def test_build_with_worker_processes(tmp_path):
    fx = WRITERS["cub"](tmp_path, damaged=False)
    official = catalog.CUB.with_expected(fx.expected)
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE, workers=2)
    one = official(tmp_path, cache_size=SIZE).split("test").load_array(3)
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE, workers=0, force=True)
    np.testing.assert_array_equal(official(tmp_path, cache_size=SIZE).split("test").load_array(3), one)


def test_up_to_date_cache_is_not_rewritten(tmp_path):
    _, official = _prepared(tmp_path)
    meta = dataset_cache_dir(tmp_path, "cub", SIZE) / "meta.json"
    before = meta.stat().st_mtime_ns
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    assert meta.stat().st_mtime_ns == before
    write_text(meta, ["{not json"])
    assert inspect_cache(official(tmp_path, use_cache=False), tmp_path, SIZE).state == "stale"
