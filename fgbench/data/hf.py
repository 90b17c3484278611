"""Hugging Face ``datasets`` backend: any image-classification dataset as a :class:`RetrievalDataset`.

A dataset comes from ``datasets.load_dataset(path, name, data_dir=...)`` (a
hub id such as ``"user/cub-200"``, or a packaged builder such as
``"imagefolder"`` with a local ``data_dir``) or, when ``path`` is a folder
written by ``DatasetDict.save_to_disk``, from ``datasets.load_from_disk``.
:class:`HFConfig` maps its columns and split names onto fgbench's::

    cfg = HFConfig(path="imagefolder", data_dir="/data/birds", test_split="validation")
    dataset = load_hf(cfg, name="birds")

Labels: a ``ClassLabel`` column keeps its ids (remapped to ``0..C-1`` over the
ids in use) and names; any other column's values are mapped to ``0..C-1`` in
sorted order over both splits.  Images are decoded by fgbench (not by
``datasets``) so a damaged one raises a one-line ``DatasetError``.

Register one from a plugin with :func:`hf_spec`.  Needs ``pip install fgbench[hf]``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from fgbench.data.base import (
    DatasetError,
    DatasetSpec,
    DatasetStatus,
    ExpectedSizes,
    RetrievalDataset,
    Split,
    SplitName,
    contiguous_labels,
)


@dataclass(frozen=True)
class HFConfig:
    """Where a Hugging Face dataset is and how its columns/splits map to fgbench's.

    Attributes:
        path: hub id, packaged builder (``"imagefolder"``) or a ``save_to_disk`` folder.
        name: the dataset configuration (``load_dataset``'s ``name``).
        data_dir: local data folder (for ``imagefolder``).
        image_column, label_column: column names.
        train_split: split used as the database.
        test_split: split used as the queries.
        cache_dir: ``datasets`` cache folder (default: theirs).
        load_kwargs: further keyword arguments for ``load_dataset``.
    """

    path: str
    name: str | None = None
    data_dir: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    cache_dir: str | None = None
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def is_saved_folder(self) -> bool:
        p = Path(self.path).expanduser()
        return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def _open_datasets(cfg: HFConfig) -> Mapping[str, Any]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - optional dependency
        raise DatasetError("the Hugging Face backend needs the `datasets` package: pip install 'fgbench[hf]'") from None
    try:
        if cfg.is_saved_folder():
            return datasets.load_from_disk(str(Path(cfg.path).expanduser()))
        return datasets.load_dataset(
            cfg.path, cfg.name, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, **dict(cfg.load_kwargs)
        )
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DatasetError(f"{cfg.path}: cannot load Hugging Face dataset ({type(exc).__name__}: {first})") from None


def _column(ds: Any, column: str, where: str) -> None:
    if column not in ds.column_names:
        raise DatasetError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)})")


class HFSplit(Split):
    """One split of a Hugging Face dataset; images decoded by PIL on access."""

    def __init__(self, ds: Any, image_column: str, labels: np.ndarray, where: str) -> None:
        import datasets

        self._ds = ds.cast_column(image_column, datasets.Image(decode=False))
        self._column = image_column
        self._where = where
        self.labels = labels

    def _record(self, index: int) -> Mapping[str, Any]:
        return self._ds[int(index)][self._column] or {}

    def load_image(self, index: int) -> Image.Image:
        rec = self._record(index)
        try:
            if rec.get("bytes"):
                im = Image.open(io.BytesIO(rec["bytes"]))
            elif rec.get("path"):
                im = Image.open(rec["path"])
            else:
                raise DatasetError(f"{self.describe(index)}: no image data")
            im.load()
        except DatasetError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{self.describe(index)}: cannot decode image ({exc})") from None
        return im.convert("RGB")

    def describe(self, index: int) -> str:
        try:
            path = self._record(index).get("path")
        except Exception:  # noqa: BLE001
            path = None
        if path and Path(path).is_absolute():
            return str(path)
        return f"{self._where}[{index}]" + (f" ({path})" if path else "")


class HFDataset(RetrievalDataset):
    """A Hugging Face dataset as a retrieval dataset (train = database, test = query)."""

    def __init__(self, name: str, cfg: HFConfig, data: Mapping[str, Any]) -> None:
        self.name = name
        self.config = cfg
        parts = {}
        for ours, theirs in (("train", cfg.train_split), ("test", cfg.test_split)):
            if theirs not in data:
                raise DatasetError(f"{cfg.path}: no split {theirs!r} (splits: {', '.join(data)}); set {ours}_split")
            ds = data[theirs]
            where = f"{cfg.path}:{theirs}"
            _column(ds, cfg.image_column, where)
            _column(ds, cfg.label_column, where)
            parts[ours] = ds
        raw_train = list(parts["train"][cfg.label_column])
        raw_test = list(parts["test"][cfg.label_column])
        mapped, classes = contiguous_labels(raw_train + raw_test)
        feature = parts["train"].features.get(cfg.label_column)
        names = getattr(feature, "names", None)
        self.class_names = tuple(names[c] if names and isinstance(c, int) else str(c) for c in classes)
        self.num_classes = len(classes)
        n = len(raw_train)
        self._splits = {
            "train": HFSplit(parts["train"], cfg.image_column, mapped[:n], f"{cfg.path}:{cfg.train_split}"),
            "test": HFSplit(parts["test"], cfg.image_column, mapped[n:], f"{cfg.path}:{cfg.test_split}"),
        }

    def split(self, which: SplitName) -> Split:
        return self._splits[which]


def load_hf(cfg: HFConfig, name: str = "hf") -> HFDataset:
    """Load ``cfg`` as a :class:`RetrievalDataset`.

    Raises:
        DatasetError: one line (missing package, dataset, split or column).
    """
    return HFDataset(name, cfg, _open_datasets(cfg))


def hf_spec(name: str, cfg: HFConfig, summary: str = "", expected: ExpectedSizes | None = None) -> DatasetSpec:
    """A :class:`DatasetSpec` (``kind="hf"``) for a plugin's ``register_datasets``.

    The data root is not used: ``cfg`` says where the data is.  ``status`` is
    "found" for a local folder that exists and for hub ids (checked on load).
    """

    def load(root: Path) -> HFDataset:
        return load_hf(cfg, name)

    def status(root: Path) -> DatasetStatus:
        local = Path(cfg.data_dir or cfg.path).expanduser()
        if cfg.data_dir or cfg.is_saved_folder() or local.is_absolute():
            if not local.exists():
                return DatasetStatus("missing", f"{local}: not found")
            return DatasetStatus("found", str(local))
        return DatasetStatus("found", f"Hugging Face hub dataset {cfg.path} (fetched on first load)")

    return DatasetSpec(
        name=name,
        summary=summary or f"Hugging Face dataset {cfg.path}",
        load=load,
        status=status,
        kind="hf",
        expected=expected,
        homepage=f"https://huggingface.co/datasets/{cfg.path}" if "/" in cfg.path and not Path(cfg.path).is_absolute() else "",
    )
