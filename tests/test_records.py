"""Run records: readable errors (atomic writes: test_atomic.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fgbench.results.records import RECORD_VERSION, RecordError, RunRecord, iter_records, read_record, write_record


def test_unreadable_results_dir_and_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError, match="does not exist"):
        list(iter_records(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        list(iter_records(tmp_path))


def _record(per_query_ap):  # type: ignore[no-untyped-def]
    return RunRecord(method="m", dataset="d", bits=8, seed=0, protocol={}, metrics={"map": 0.5}, cost={},
                     train_seconds=0.0, eval_seconds=0.0, environment={}, per_query_ap=per_query_ap)


def test_per_query_ap_round_trips_at_record_precision_and_is_compact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    ap = [round(float(v), 6) for v in rng.beta(2, 3, 5000)] + [0.0, 1.0]
    path = tmp_path / "r.json"
    write_record(_record(ap), path)
    raw = json.loads(path.read_text())
    assert raw["record_version"] == RECORD_VERSION == 2 and raw["per_query_ap"]["count"] == len(ap)
    assert read_record(path).per_query_ap == ap  # exactly: values are kept to 1e-6, as version 1 rounded them
    assert len(raw["per_query_ap"]["data"]) < 4.5 * len(ap)  # a version 1 list takes about 12 characters a query
    write_record(_record(None), path)
    assert read_record(path).per_query_ap is None


def test_version_1_records_with_a_plain_list_still_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_record(None).to_json())
    data.update(record_version=1, per_query_ap=[0.25, 0.5])
    (tmp_path / "old.json").write_text(json.dumps(data))
    [record] = list(iter_records(tmp_path))
    assert record.per_query_ap == [0.25, 0.5] and record.record_version == 1


def test_bad_per_query_ap_is_refused_on_write_and_named_on_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        _record([0.5, float("nan")]).to_json()
    data = json.loads(_record([0.5]).to_json())
    data["per_query_ap"]["data"] = data["per_query_ap"]["data"][:-4]
    (tmp_path / "cut.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"cut\.json: .*per_query_ap: damaged data"):
        list(iter_records(tmp_path))
    data["per_query_ap"] = {"encoding": "float16"}
    (tmp_path / "cut.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match="unknown encoding"):
        list(iter_records(tmp_path))
