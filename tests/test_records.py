"""Run records: readable errors, validation on read (atomic writes: test_atomic.py; faults: faults/test_records.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fgbench.records import (RECORD_VERSION, read_codes, RecordError, RecordIdentity, RunRecord, iter_records,
                                     read_record, record_identity_from_path, record_path, validate_record,
                                     write_record)

REPO = Path(__file__).resolve().parent.parent


def test_unreadable_results_dir_and_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError, match="does not exist"):
        list(iter_records(tmp_path / "missing"))
    path = record_path(tmp_path, "fair", "d", "m", 8, 0)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(RecordError, match=r"bits8-seed0\.json: not a readable run record \(not valid JSON"):
        list(iter_records(tmp_path))


def _record(per_query_ap, **changes):  # type: ignore[no-untyped-def]
    fields = dict(method="m", dataset="d", bits=8, seed=0, protocol={"name": "fair"}, metrics={"map": 0.5}, cost={},
                  train_seconds=0.0, eval_seconds=0.0, environment={}, per_query_ap=per_query_ap)
    return RunRecord(**{**fields, **changes})


def _path(root: Path) -> Path:
    return record_path(root, "fair", "d", "m", 8, 0)


def test_per_query_ap_round_trips_at_record_precision_and_is_compact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    ap = [round(float(v), 6) for v in rng.beta(2, 3, 5000)] + [0.0, 1.0]
    path = _path(tmp_path)
    write_record(_record(ap), path)
    raw = json.loads(path.read_text())
    assert raw["record_version"] == RECORD_VERSION == 3 and raw["per_query_ap"]["count"] == len(ap)
    assert read_record(path).per_query_ap == ap  # exactly: values are kept to 1e-6, as version 1 rounded them
    assert len(raw["per_query_ap"]["data"]) < 4.5 * len(ap)  # a version 1 list takes about 12 characters a query
    write_record(_record(None), path)
    assert read_record(path).per_query_ap is None


def test_version_1_records_with_a_plain_list_still_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_record(None).to_json())
    data.update(record_version=1, per_query_ap=[0.25, 0.5])
    for key in ("method_version", "divergence", "distinct_database_codes"):  # fields newer than version 1
        del data[key]
    _path(tmp_path).parent.mkdir(parents=True)
    _path(tmp_path).write_text(json.dumps(data))
    [record] = list(iter_records(tmp_path))
    assert record.per_query_ap == [0.25, 0.5] and record.record_version == 1 and record.divergence is None


def test_bad_per_query_ap_is_refused_on_write_and_named_on_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        _record([0.5, float("nan")]).to_json()
    data = json.loads(_record([0.5]).to_json())
    data["per_query_ap"]["data"] = data["per_query_ap"]["data"][:-4]
    path = _path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"bits8-seed0\.json: field 'per_query_ap' cannot be decoded: damaged data"):
        list(iter_records(tmp_path))
    data["per_query_ap"] = {"encoding": "float16"}
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="unknown encoding"):
        list(iter_records(tmp_path))
    data["per_query_ap"] = [0.5, 1.25]  # a version 1 list out of range
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"field 'per_query_ap\[1\]' is 1.25, not in \[0, 1\]"):
        read_record(path)


def test_committed_records_are_valid() -> None:
    records = list(iter_records(REPO / "records"))
    assert records and all(r.metrics["map"] > 0 for r in records)
    assert {r.record_version for r in records} <= {1, 2, RECORD_VERSION}
    for r in records:  # a committed record that references codes has its sidecar, intact
        if r.codes:
            assert read_codes(r).bits == r.bits


def test_identity_from_path_and_validate_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = record_path(tmp_path, "paper", "cub", "dpsh", 48, 2)
    assert record_identity_from_path(path) == RecordIdentity("paper", "cub", "dpsh", 48, 2)
    assert record_identity_from_path(path).path(tmp_path) == path
    for bad in ("bits012-seed0.json", "bits12.json", "record.json"):
        with pytest.raises(RecordError, match="file name must be bits<B>-seed<S>.json"):
            record_identity_from_path(tmp_path / "fair" / "d" / "m" / bad)
    record = _record(None)
    assert validate_record(record, _path(tmp_path)) is record          # a RunRecord checked before writing
    with pytest.raises(RecordError, match=r"field 'bits' is 8 but the file's path is that of bits 48"):
        validate_record(record, record_path(tmp_path, "fair", "d", "m", 48, 0))
    assert validate_record(record, tmp_path / "elsewhere.json", check_path=False) is record
    with pytest.raises(RecordError, match="^run record: field 'metrics.map' is 2.0"):
        validate_record(_record(None, metrics={"map": 2.0}))


def test_only_files_named_like_records_are_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_record(_record(None), _path(tmp_path))
    (tmp_path / "fair" / "notes.json").write_text("{}")                 # unrelated JSON: ignored
    (tmp_path / "fair" / "d" / "m" / ".bits8-seed0.json.x.tmp").write_text("{")  # a temporary file: ignored
    assert [r.method for r in iter_records(tmp_path)] == ["m"]
    assert [r.method for r in iter_records(tmp_path / "fair" / "d")] == ["m"]       # a sub-folder reads too
    (tmp_path / "fair" / "bits8-seed0.json").write_text(_record(None).to_json())  # a record at the wrong depth
    with pytest.raises(RecordError, match=r"fair/bits8-seed0\.json: field 'protocol.name' is 'fair' but the file's "
                                          r"path is that of protocol"):
        list(iter_records(tmp_path))


def test_types_are_strict_and_unknown_keys_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = json.loads(_record(None).to_json())
    path = _path(tmp_path)
    path.parent.mkdir(parents=True)
    cases = [("seed", True, "field 'seed' is True, not an integer"),
             ("train_seconds", -1.0, "field 'train_seconds' is -1.0, below 0"),
             ("protocol", {"epochs": 1}, "field 'protocol.name' is missing"),
             ("metrics", {"p@10": 0.5}, "field 'metrics.map' is missing"),
             ("cost", {"flops_g": "1.2"}, "field 'cost.flops_g' is '1.2', not a number"),
             ("divergence", "", "field 'divergence' is '', not null or a non-empty string"),
             ("record_version", RECORD_VERSION + 1, "newer than this fgbench reads"),
             ("codes", {"file": "bits8-seed0.codes.npz"}, "field 'codes.sha256' is missing"),
             ("codes", {"file": "bits8-seed0.codes.npz", "sha256": "ABC"}, "'ABC', not 64 lower-case hex digits"),
             ("codes", {"file": "/etc/passwd", "sha256": "0" * 64}, "not this job's sidecar 'bits8-seed0.codes.npz'"),
             ("path", "/elsewhere", "")]  # a record's location is never read from its JSON
    for key, value, message in cases:
        path.write_text(json.dumps({**base, key: value}))
        if not message:
            assert read_record(path).path == path
            continue
        with pytest.raises(RecordError, match=re.escape(message)):
            read_record(path)
    path.write_text(json.dumps({**base, "added_in_a_later_version": [1, 2]}))
    assert read_record(path).method == "m"


def test_one_name_rule_for_methods_datasets_and_protocols() -> None:
    from fgbench._names import InvalidNameError, validate_name

    for good in ("dpsh", "food101", "cub-style", "my_hash", "a" * 64):
        assert validate_name("method", good) == good
    for bad in ("", "../x", "/tmp/x", "a/b", "a\\b", "x\n", "x\ny", "Tiny", "1abc", "-x", "a.b", "a" * 65, None, 3):
        with pytest.raises(InvalidNameError, match="invalid dataset name") as info:
            validate_name("dataset", bad)
        assert "\n" not in str(info.value)
    with pytest.raises(InvalidNameError, match="invalid method name 'x\\\\n'"):
        record_path(Path("results"), "fair", "embedded", "x\n", 12, 0)   # never a path from a bad name
