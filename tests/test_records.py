"""Run records: atomic writes and readable errors."""

from __future__ import annotations

import os

import pytest

from fgbench.results.records import RecordError, atomic_write_text, iter_records


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out" / "record.json"

    def boom(src, dst):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "{}")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_unreadable_results_dir_and_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError, match="does not exist"):
        list(iter_records(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        list(iter_records(tmp_path))
