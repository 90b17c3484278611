"""Records keep their codes (sidecar), `fgbench evaluate` re-scores them, the leaderboard's convention/metric tables.

Codes come from a noisy class-centre model on a database in class order (the
setting of issue #16), small enough to run in seconds.  Every expected value is
computed here by a direct call of the engine on the same codes, never copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fgbench.errors import MetricInputError
from click.testing import CliRunner

from fgbench.cli import main
from fgbench.engine.runner import JobRunner, remove_orphans
from fgbench.hookspecs import hookimpl
from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import TIE_CONVENTIONS, evaluate_codes, mean_average_precision
from fgbench.records import (CodesError, NoCodesError, RecordError, RunRecord, codes_path, read_codes, read_record,
                             record_path, write_codes, write_record)
from fgbench.results import leaderboard as lb
from fgbench.results.leaderboard.conventions import NO_CODES
from fgbench.results.rescore import peer_conventions
from fgbench.testing import registered_plugin

PROTOCOL = {"name": "fair", "backbone": "resnet18", "input_size": 32, "epochs": 1}
# the engine of this branch may offer only "average" until the mAP engine's conventions are merged
TOPK = [None, 7] if "index" in TIE_CONVENTIONS else [None]


def class_centre_codes(seed: int, bits: int = 12, n_query: int = 30, n_db: int = 60, classes: int = 5,
                       flip: float = 0.2) -> tuple[np.ndarray, ...]:
    """±1 codes: a random centre per class with bits flipped at random; database in class order (many ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.random((classes, bits)) < 0.5
    ql = rng.integers(0, classes, n_query)
    dl = np.sort(rng.integers(0, classes, n_db))
    q = centres[ql] ^ (rng.random((n_query, bits)) < flip)
    d = centres[dl] ^ (rng.random((n_db, bits)) < flip)
    return np.where(q, 1.0, -1.0), np.where(d, 1.0, -1.0), ql, dl


def make_record(root: Path, method: str, seed: int, *, bits: int = 12, codes: bool = True,
                drop: tuple[str, ...] = ()) -> Path:
    """A record (and its sidecar when ``codes``) whose metrics are what the engine measures on its codes."""
    q, d, ql, dl = class_centre_codes(seed + 10 * len(method), bits)
    ev = evaluate_codes(q, d, ql, dl)
    metrics = {"map": ev.mean_average_precision, "p@10": ev.precision_at(10), "p@100": ev.precision_at(100),
               "p@r2": ev.precision_radius(2)}
    path = record_path(root, "fair", "tiny", method, bits, seed)
    record = RunRecord(method=method, dataset="tiny", bits=bits, seed=seed, protocol=PROTOCOL,
                       metrics={k: v for k, v in metrics.items() if k not in drop}, cost={"params_m": 1.0,
                       "flops_g": 0.5, "input_size": 224}, train_seconds=1.0, eval_seconds=0.1,
                       environment={}, num_query=len(q), num_database=len(d),
                       per_query_ap=[round(float(v), 6) for v in ev.average_precision])
    if codes:
        record.codes = write_codes(path, q, d, ql, dl)
    else:
        record.record_version = 2
    write_record(record, path)
    return path


# ------------------------------------------------------------------------------------------------ the sidecar

@pytest.mark.parametrize("bits", [12, 48, 5])
def test_codes_round_trip_exactly_and_are_verified(bits: int, tmp_path: Path) -> None:
    path = make_record(tmp_path, "alpha", 0, bits=bits)
    q, d, ql, dl = class_centre_codes(10 * len("alpha"), bits)
    codes = read_codes(read_record(path))
    assert np.array_equal(codes.query_codes, q > 0) and np.array_equal(codes.database_codes, d > 0)
    assert np.array_equal(codes.query_labels, ql) and np.array_equal(codes.database_labels, dl)
    assert codes_path(path).name == f"bits{bits}-seed0.codes.npz"
    saved = json.loads(read_record(path).to_json())
    assert saved["record_version"] == 3 and "path" not in saved  # where it was read from is never saved


def test_codes_from_torch_tensors_of_any_float_dtype(tmp_path: Path) -> None:
    import torch

    q, d, ql, dl = class_centre_codes(3)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        ref = write_codes(tmp_path / "bits12-seed0.json", torch.tensor(q, dtype=dtype), torch.tensor(d, dtype=dtype),
                          torch.tensor(ql), torch.tensor(dl))
        record = RunRecord("m", "tiny", 12, 0, PROTOCOL, {"map": 0.5}, {}, 0.0, 0.0, {}, codes=ref)
        codes = read_codes(record, tmp_path / "bits12-seed0.json")
        assert np.array_equal(codes.query_codes, q > 0) and np.array_equal(codes.database_labels, dl)


def test_damaged_or_missing_sidecar_is_one_line_naming_it_and_metrics_still_read(tmp_path: Path) -> None:
    path = make_record(tmp_path, "alpha", 0)
    sidecar = codes_path(path)
    good = sidecar.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    sidecar.write_bytes(bytes(damaged))
    record = read_record(path)  # the record and its metrics never need the codes
    assert record.metrics["map"] > 0
    with pytest.raises(CodesError, match=r"bits12-seed0\.codes\.npz: damaged or replaced") as exc:
        read_codes(record)
    assert "\n" not in str(exc.value)
    sidecar.unlink()
    with pytest.raises(CodesError, match=r"bits12-seed0\.codes\.npz: missing \(the codes of .*bits12-seed0.json\)"):
        read_codes(record)
    res = CliRunner().invoke(main, ["evaluate", str(path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "codes.npz: missing" in res.output, res.output


def test_a_record_cannot_point_at_another_jobs_sidecar(tmp_path: Path) -> None:
    path = make_record(tmp_path, "alpha", 0)
    data = json.loads(path.read_text())
    data["codes"]["file"] = "../../elsewhere/bits12-seed0.codes.npz"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"field 'codes.file' .* not this job's sidecar 'bits12-seed0.codes.npz'"):
        read_record(path)


def test_old_records_have_no_codes_and_evaluate_says_rerun_in_one_line(tmp_path: Path) -> None:
    path = make_record(tmp_path, "alpha", 0, codes=False)
    with pytest.raises(NoCodesError, match="record version 2 holds no codes"):
        read_codes(read_record(path))
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert res.output.startswith("Error: 1 record(s), none holds codes") and "rerun" in res.output


def test_an_orphan_sidecar_is_removed_by_the_next_run_and_a_recorded_one_kept(tmp_path: Path) -> None:
    path = make_record(tmp_path, "alpha", 0)
    assert remove_orphans(path) == [] and codes_path(path).exists()  # its record exists: kept
    path.unlink()  # as if the run died between the sidecar and the record
    assert remove_orphans(path) == [codes_path(path)] and not codes_path(path).exists()


def test_a_failed_record_write_leaves_no_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_record(tmp_path, "alpha", 0)
    record = read_record(path)
    path.unlink()
    import fgbench.engine.runner as runner

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runner, "write_record", full_disk)
    with pytest.raises(OSError):
        JobRunner._finish(record, path)
    assert list(tmp_path.rglob("*.npz")) == [] and not path.exists()


# ------------------------------------------------------------------------------------------------ fgbench evaluate

@pytest.mark.parametrize("topk", TOPK)
def test_evaluate_gives_what_the_engine_gives_on_the_stored_codes(topk: int | None, tmp_path: Path) -> None:
    paths = [make_record(tmp_path, m, s) for m in ("alpha", "beta") for s in (0, 1)]
    before = {p: p.read_bytes() for p in paths}
    args = ["evaluate", str(tmp_path), "--json", "--metric", "map", "--metric", "p@10"]
    args += [a for t in TIE_CONVENTIONS for a in ("--ties", t)] + (["--topk", str(topk)] if topk else [])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["without_codes"] == [] and len(out["scores"]) == len(paths) * len(TIE_CONVENTIONS) * 2
    for row in out["scores"]:
        q, d, ql, dl = class_centre_codes(row["seed"] + 10 * len(row["method"]))
        ev = evaluate_codes(q, d, ql, dl, ties=row["ties"], topk=row["topk"])
        if row["metric"] == "map":
            assert row["value"] == mean_average_precision(q, d, ql, dl, ties=row["ties"], topk=row["topk"])
        elif row["value"] is not None:
            assert row["value"] == ev.precision_at(10)
        else:  # the engine's lighter index/deephash evaluations refuse precision@k: said so
            assert row["ties"] != "average" and row["note"]
            with pytest.raises(MetricInputError):
                ev.precision_at(10)
    assert {p: p.read_bytes() for p in paths} == before  # re-scoring never rewrites a record


def test_evaluate_table_and_a_metric_registered_later(tmp_path: Path) -> None:
    make_record(tmp_path, "alpha", 0)
    make_record(tmp_path / "old", "beta", 0, codes=False)

    class Later:
        @hookimpl
        def register_metrics(self, register):  # type: ignore[no-untyped-def]
            register(MetricSpec("p@3", "precision of the top 3", lambda ev: ev.precision_at(3)))

    with registered_plugin(Later()):
        res = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--metric", "p@3"])
    assert res.exit_code == 0, res.output
    q, d, ql, dl = class_centre_codes(10 * len("alpha"))
    expected = evaluate_codes(q, d, ql, dl).precision_at(3)
    (line,) = [ln for ln in res.stdout.splitlines() if "alpha" in ln]
    assert [c.strip() for c in line.strip("|").split("|")] == ["fair", "alpha", "tiny", "12", "0", "p@3", "average",
                                                                f"{expected:.6f}"]
    assert "1 record(s) hold no codes" in res.stderr and "rerun" in res.stderr


def test_evaluate_leaves_out_metrics_a_convention_does_not_carry_unless_named(tmp_path: Path) -> None:
    make_record(tmp_path, "alpha", 0)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--ties", "index"])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.stdout.splitlines() if "alpha" in ln]
    assert rows and not [ln for ln in rows if "n/a" in ln]  # only what the index convention gives (mAP)
    assert "not shown, not available under their convention: p@10 (index" in res.stderr
    named = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--ties", "index", "--metric", "p@10"])
    assert named.exit_code == 0 and "n/a" in named.stdout and "note: n/a = " in named.stderr


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "nowhere: no such results folder or record file"),
    (["{root}", "--metric", "nope"], "Unknown metric 'nope'"),
    (["{root}", "--ties", "sideways"], "sideways"),
    (["{root}", "--topk", "0"], "0 is not in the range x>=1"),
])
def test_evaluate_bad_options_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    make_record(tmp_path, "alpha", 0)
    res = CliRunner().invoke(main, ["evaluate", *[a.format(root=tmp_path) for a in args]])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("Error")] == [res.output.splitlines()[-1]]


# ------------------------------------------------------------------------------------------------ leaderboard

def _board_files(records: list[RunRecord], out: Path, metrics: list[MetricSpec]) -> dict[str, bytes]:
    lb.write_leaderboards(records, out, figures=False, metrics=metrics)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_leaderboard_rescores_a_metric_records_lack_and_tabulates_conventions(tmp_path: Path) -> None:
    root = tmp_path / "records"
    for m in ("alpha", "beta"):
        for s in (0, 1):
            make_record(root, m, s, drop=("p@100",))
    make_record(root, "gamma", 0, codes=False, drop=("p@100",))
    with registered_plugin() as host:
        metrics = host.registry.metrics.values()
    files = _board_files(list(lb_records(root)), tmp_path / "a", metrics)
    assert files == _board_files(list(lb_records(root)), tmp_path / "b", metrics)  # byte-stable
    rows = {(r["method"], r["bits"]): r for r in _csv(files["tiny.metrics.csv"])}
    for m in ("alpha", "beta"):  # p@100 was not recorded: computed from the stored codes
        expected = np.mean([evaluate_codes(*class_centre_codes(s + 10 * len(m))).precision_at(100) for s in (0, 1)])
        assert float(rows[(m, "12")]["p@100"]) == pytest.approx(expected, abs=1e-6)
        assert rows[(m, "12")]["p@100_from_codes"] == "2"
    assert rows[("gamma", "12")]["p@100"] == "" and rows[("gamma", "12")]["p@100_runs"] == "0"
    conv = {r["method"]: r for r in _csv(files["tiny.conventions.csv"])}
    assert conv["gamma"]["runs_with_codes"] == "0" and NO_CODES in conv["gamma"]["note"]
    for m in ("alpha", "beta"):
        runs = [class_centre_codes(s + 10 * len(m)) for s in (0, 1)]
        assert float(conv[m]["map_average"]) == pytest.approx(np.mean([mean_average_precision(*c) for c in runs]),
                                                              abs=1e-6)
        for peer in peer_conventions():
            diff = np.mean([mean_average_precision(*c, ties=peer.ties, topk=peer.topk) - mean_average_precision(*c)
                            for c in runs])
            assert float(conv[m][f"{peer.label}_minus_average"]) == pytest.approx(diff, abs=1e-6)
    page = files["tiny.md"].decode()
    assert "## Tie conventions" in page and f"| gamma | 12 | 0/1 | {NO_CODES} |" in page
    assert "## Registered metrics" in page and "0.4" not in NO_CODES


def lb_records(root: Path):  # type: ignore[no-untyped-def]
    from fgbench.records import iter_records

    return iter_records(root)


def _csv(data: bytes) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(data.decode())))


def test_leaderboard_notes_an_unreadable_sidecar_and_keeps_the_records_metrics(tmp_path: Path) -> None:
    root = tmp_path / "records"
    good, bad = make_record(root, "alpha", 0), make_record(root, "alpha", 1)
    codes_path(bad).write_bytes(b"not an npz")
    report = lb.write_leaderboards(list(lb_records(root)), tmp_path / "out", figures=False)
    assert [n for n in report.notes if "bits12-seed1.codes.npz: damaged or replaced" in n] == report.notes != []
    (row,) = _csv((tmp_path / "out" / "tiny.conventions.csv").read_bytes())
    assert row["runs"] == "2" and row["runs_with_codes"] == "1" and "1 run(s): codes unreadable" in row["note"]
    assert float(row["map_average"]) == pytest.approx(mean_average_precision(*class_centre_codes(10 * 5)), abs=1e-6)
    (metrics,) = _csv((tmp_path / "out" / "tiny.metrics.csv").read_bytes())
    recorded = [read_record(p).metrics["map"] for p in (good, bad)]
    assert metrics["map_runs"] == "2" and float(metrics["map"]) == pytest.approx(np.mean(recorded), abs=1e-6)
