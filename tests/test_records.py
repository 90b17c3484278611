"""Run records: readable errors (atomic writes: test_atomic.py)."""

from __future__ import annotations

import pytest

from fgbench.results.records import RecordError, iter_records


def test_unreadable_results_dir_and_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError, match="does not exist"):
        list(iter_records(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        list(iter_records(tmp_path))
