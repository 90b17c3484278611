"""The Hugging Face ``datasets`` backend on a local imagefolder the test writes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("datasets")

from fgbench.data.base import DatasetError  # noqa: E402
from fgbench.data.hf import HFConfig, hf_spec, load_hf  # noqa: E402

from .fixtures import truncate, write_jpeg  # noqa: E402


@pytest.fixture
def imagefolder(tmp_path):
    root = tmp_path / "birds"
    for split in ("train", "validation"):
        for c, name in enumerate(["wren", "finch", "albatross"]):
            for i in range(2):
                write_jpeg(root / split / name / f"{name}_{i}.jpg", (40 + 80 * c, 60, 90), seed=i)
    write_jpeg(root / "train" / "finch" / "finch_gray.jpg", (90, 90, 90), mode="L")
    return root


def _cfg(folder, tmp_path, **kw):
    return HFConfig(path="imagefolder", data_dir=str(folder), test_split="validation", cache_dir=str(tmp_path / "hf-cache"), **kw)


def test_imagefolder_as_retrieval_dataset(imagefolder, tmp_path):
    ds = load_hf(_cfg(imagefolder, tmp_path), name="birds")
    assert ds.summary() == {"train": 7, "test": 6, "classes": 3}
    assert ds.class_names == ("albatross", "finch", "wren")
    train, test = ds.split("train"), ds.split("test")
    assert sorted(set(train.labels.tolist())) == [0, 1, 2] and train.labels.dtype == np.int64
    for split in (train, test):
        for i in range(len(split)):
            arr = split.load_array(i)
            assert arr.shape == (32, 40, 3) and arr.dtype == np.uint8
            name = split.describe(i).rsplit("/", 2)[-2]
            assert ds.class_names[split.labels[i]] == name


def test_saved_folder_and_split_mapping_errors(imagefolder, tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.load_dataset("imagefolder", data_dir=str(imagefolder), cache_dir=str(tmp_path / "c")).save_to_disk(str(saved))
    ds = load_hf(HFConfig(path=str(saved), test_split="validation"))
    assert ds.summary()["test"] == 6
    with pytest.raises(DatasetError, match="no split 'test' .*set test_split"):
        load_hf(HFConfig(path=str(saved)))
    with pytest.raises(DatasetError, match="no column 'species'"):
        load_hf(HFConfig(path=str(saved), test_split="validation", label_column="species"))


def test_damaged_image_and_missing_dataset(imagefolder, tmp_path):
    victim = imagefolder / "validation" / "wren" / "wren_1.jpg"
    truncate(victim)
    ds = load_hf(_cfg(imagefolder, tmp_path))
    index = next(i for i in range(6) if ds.split("test").describe(i) == str(victim))
    with pytest.raises(DatasetError, match="cannot decode image"):
        ds.split("test").load_array(index)
    with pytest.raises(DatasetError, match="cannot load Hugging Face dataset"):
        load_hf(HFConfig(path="imagefolder", data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c")))


def test_hf_spec(imagefolder, tmp_path):
    spec = hf_spec("birds", _cfg(imagefolder, tmp_path))
    spec.validate()
    assert spec.kind == "hf" and spec.status(tmp_path).state == "found"
    assert spec.load(tmp_path).num_classes == 3
    gone = hf_spec("gone", _cfg(tmp_path / "nowhere", tmp_path))
    assert gone.status(tmp_path).state == "missing"
