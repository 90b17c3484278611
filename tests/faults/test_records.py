"""Faults in run records and names (issue #12): each is refused with one line, or recovered from; none is silent.

Every fault is injected into a copy of the committed records (``records/``:
five methods on ``embedded``, 12 bits, seeds 0-2) and the leaderboard is
built through the CLI.  Each test asserts: no silent wrong result (a refused
fault gives exit status 1 and one ``Error:`` line naming the file and the
field, never a board), no traceback, nothing finished lost (every other
record file is byte for byte as it was), no orphan file (no board, no
temporary file, nothing outside the output folder).
"""

from __future__ import annotations

import re

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from fgbench.cli import main
from fgbench.methods import MethodSpec
from fgbench.results import leaderboard as lb
from fgbench.records import RunRecord, iter_records, read_record
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

REPO = Path(__file__).resolve().parents[2]
CNET0 = Path("fair/embedded/cnet/bits12-seed0.json")
DPSH0 = Path("fair/embedded/dpsh/bits12-seed0.json")


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """A copy of the committed records."""
    root = tmp_path / "results"
    shutil.copytree(REPO / "records", root)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def _leaderboard(results: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["leaderboard", "--results", str(results), *args])


def _assert_refused(res: Any, *fragments: str) -> str:
    """Exit 1 with exactly one ``Error:`` line holding ``fragments``; no traceback."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception        # a ClickException, not a crash
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and res.output.strip().endswith(errors[0]), res.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _assert_nothing_left(tmp_path: Path, before: dict[str, bytes], results: Path, out: Path) -> None:
    """The other records are untouched, no board and no temporary file was written, nothing outside."""
    after = _snapshot(results)
    assert after == before
    assert not out.exists()
    outside = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert {p for p in outside if not p.startswith("results")} == set()


# ----------------------------------------------------------------------------- refused faults
def _empty(path: Path) -> None:
    path.write_text("{}")


def _truncated(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])   # a copy or a write cut halfway


def _set(key: str, value: Any) -> Callable[[Path], None]:
    return lambda path: _edit(path, lambda d: d.__setitem__(key, value))


def _set_map(value: Any) -> Callable[[Path], None]:
    return lambda path: _edit(path, lambda d: d["metrics"].__setitem__("map", value))


def _dpsh_copied(path: Path) -> None:
    shutil.copyfile(path.parents[1] / "dpsh" / path.name, path)


# (fault id, injection into fair/embedded/cnet/bits12-seed0.json, fragments the one error line must hold)
REFUSED = [
    ("empty-object", _empty, ["cnet/bits12-seed0.json", "field 'method' is missing"]),
    ("truncated-json", _truncated, ["cnet/bits12-seed0.json", "not valid JSON at line", "delete it to rerun"]),
    ("bits-as-string", _set("bits", "12"), ["field 'bits' is '12', not an integer"]),
    ("seed-as-string", _set("seed", "0"), ["field 'seed' is '0', not an integer"]),
    ("map-as-string", _set_map("0.5"), ["field 'metrics.map' is '0.5', not a number"]),
    ("map-1.5", _set_map(1.5), ["field 'metrics.map' is 1.5, not in [0, 1]"]),
    ("map-nan", _set_map(float("nan")), ["field 'metrics.map' is nan, not a finite number"]),
    ("map-negative", _set_map(-0.1), ["field 'metrics.map' is -0.1, not in [0, 1]"]),
    ("flops-infinite", lambda p: _edit(p, lambda d: d["cost"].__setitem__("flops_g", float("inf"))),
     ["field 'cost.flops_g' is inf, not a finite number"]),
    ("protocol-not-object", _set("protocol", "fair"), ["field 'protocol' is 'fair', not a JSON object"]),
    ("dpsh-copied-into-cnet", _dpsh_copied,
     ["cnet/bits12-seed0.json", "field 'method' is 'dpsh' but the file's path is that of method 'cnet'"]),
    ("seed-mismatch", _set("seed", 1), ["field 'seed' is 1 but the file's path is that of seed 0"]),
    ("bits-mismatch", _set("bits", 48), ["field 'bits' is 48 but the file's path is that of bits 12"]),
    ("protocol-mismatch", lambda p: _edit(p, lambda d: d["protocol"].__setitem__("name", "paper")),
     ["field 'protocol.name' is 'paper' but the file's path is that of protocol 'fair'"]),
    ("dataset-dotdot", _set("dataset", "../x"), ["field 'dataset' is '../x', not a valid dataset name"]),
    ("dataset-newline", _set("dataset", "embedded\n"), ["field 'dataset' is 'embedded\\n', not a valid dataset name"]),
    ("method-newline", _set("method", "cnet\nx"), ["field 'method' is 'cnet\\nx', not a valid method name"]),
]


@pytest.mark.parametrize("inject, fragments", [pytest.param(f, m, id=i) for i, f, m in REFUSED])
def test_bad_record_is_refused_with_one_line_and_nothing_written(tmp_path, results, inject, fragments) -> None:  # type: ignore[no-untyped-def]
    inject(results / CNET0)
    before = _snapshot(results)
    out = tmp_path / "boards"
    _assert_refused(_leaderboard(results, "--write", str(out), "--no-figures"), *fragments)
    _assert_refused(_leaderboard(results), *fragments)          # printing refuses it too: no board from bad records
    _assert_nothing_left(tmp_path, before, results, out)


def test_absolute_dataset_name_never_becomes_a_path_outside_the_output_folder(tmp_path, results) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "outside" / "x"                          # what `dataset` names: <target>.md on the old code
    _set("dataset", str(target))(results / CNET0)
    before = _snapshot(results)
    _assert_refused(_leaderboard(results, "--write", str(tmp_path / "boards"), "--no-figures"),
                    "not a valid dataset name")
    assert not (tmp_path / "outside").exists()
    _assert_nothing_left(tmp_path, before, results, tmp_path / "boards")


def _records_named(dataset: str, protocol: str = "fair") -> list[RunRecord]:
    records = list(iter_records(REPO / "records"))
    return [dataclasses.replace(r, dataset=dataset, protocol={**r.protocol, "name": protocol}) for r in records]


@pytest.mark.parametrize("dataset, protocol", [("../escaped", "fair"), ("embedded", "../../escaped"),
                                               ("sub/dir", "fair"), ("x\ny", "fair")])
def test_write_leaderboards_refuses_paths_outside_dir_even_when_read_checks_are_bypassed(
        tmp_path, dataset, protocol) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "deep" / "boards"
    with pytest.raises(ValueError, match="invalid (dataset|protocol) name") as info:  # lb.LeaderboardError
        lb.write_leaderboards(_records_named(dataset, protocol), out, figures=False)
    assert "\n" not in str(info.value)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == []


def test_write_leaderboards_refuses_a_link_out_of_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, elsewhere = tmp_path / "boards", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "embedded.md").symlink_to(elsewhere / "embedded.md")
    with pytest.raises(ValueError, match="outside the output folder"):  # lb.LeaderboardError
        lb.write_leaderboards(_records_named("embedded"), out, figures=False)
    assert list(elsewhere.iterdir()) == [] and [p.name for p in out.iterdir()] == ["embedded.md"]


# ----------------------------------------------------------------------------- names at registration
@dataclasses.dataclass(frozen=True)
class _Config:
    pass


def _method(name: str) -> MethodSpec:
    return MethodSpec(name=name, summary="a method with a bad name", citation="none", config_cls=_Config,
                      build=lambda ctx: None)


@pytest.mark.parametrize("name", ["evil\n", "a" * 70], ids=["newline", "too-long"])
@pytest.mark.parametrize("kind", ["method", "dataset"])
def test_bad_name_is_refused_at_registration_with_one_line(kind, name) -> None:  # type: ignore[no-untyped-def]
    if kind == "method":
        plugin = spec_plugin("badnames", methods=[_method(name)])
    else:
        plugin = spec_plugin("badnames", datasets=[dataclasses.replace(tiny_embedded(), name=name)])
    with registered_plugin(plugin) as host:
        registry = getattr(host.registry, f"{kind}s")
        assert name not in registry.names()
        [failure] = [f for f in host.registry.failures if f.plugin == "badnames"]
        assert f"invalid {kind} name {name!r}" in failure.reason and "\n" not in failure.reason
        res = CliRunner().invoke(main, ["list"])
        assert res.exit_code == 0 and "Traceback" not in res.output
        [line] = [line for line in res.output.splitlines() if line.startswith("  badnames (badnames): ")]
        assert f"invalid {kind} name {name!r}" in line


# ----------------------------------------------------------------------------- recovered / flagged
def test_unrelated_json_in_the_results_folder_is_ignored(tmp_path, results) -> None:  # type: ignore[no-untyped-def]
    clean = _leaderboard(results)
    assert clean.exit_code == 0, clean.output
    (results / "fair" / "notes.json").write_text("{}")               # not named like a record: not read
    (results / "fair" / "embedded" / "dpsh" / "best-config.json").write_text(  # a user's file with record-like keys
        json.dumps({"method": "dpsh", "metrics": {"map": 0.9}}))
    (results / "fair" / "embedded" / "cnet" / ".bits12-seed0.json.abc.tmp").write_text("{")  # a temp file
    res = _leaderboard(results)
    assert res.exit_code == 0 and res.output == clean.output


def test_diverged_run_is_flagged_on_every_board_output(tmp_path, results) -> None:  # type: ignore[no-untyped-def]
    why = "loss 3.1e+28 at epoch 2 exploded (1e6 x epoch 1)"
    _edit(results / DPSH0, lambda d: d.__setitem__("divergence", why))
    before = _snapshot(results)
    out = tmp_path / "boards"
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(results), "--write", str(out), "--no-figures"])
    assert res.exit_code == 0, res.output
    warning = f"warning: embedded: dpsh at 12 bits, seed 0: training diverged ({why})"
    assert warning in res.stderr
    board = (out / "embedded.md").read_text()
    dpsh_row = next(line for line in board.splitlines() if line.startswith("| dpsh |"))
    assert re.search(rf"\(n=\d+\) {re.escape(lb.DIVERGED_MARK)}$", dpsh_row.split(" | ")[1])
    assert f"- dpsh, 12 bits, seed 0: {why}" in board
    assert not any(line.endswith(lb.DIVERGED_MARK) for line in board.splitlines() if line.startswith("| cnet |"))
    csv = (out / "embedded.csv").read_text().splitlines()
    assert csv[0].endswith(",diverged")
    assert next(line for line in csv if ",dpsh," in line).endswith(f"12 bits seed 0: {why}")
    assert f"[embedded](embedded.md) {lb.DIVERGED_MARK}" in (out / "README.md").read_text()
    printed = CliRunner().invoke(main, ["leaderboard", "--results", str(results)])
    assert printed.exit_code == 0 and warning in printed.stderr and f"- dpsh, 12 bits, seed 0: {why}" in printed.stdout
    assert _snapshot(results) == before
    # without the divergence, no marker, no note, no column
    _edit(results / DPSH0, lambda d: d.__setitem__("divergence", None))
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(results), "--write", str(out), "--no-figures"])
    assert res.exit_code == 0 and "diverged" not in res.stderr  # (the committed records also mix code versions)
    assert lb.DIVERGED_MARK not in (out / "embedded.md").read_text()
    assert "diverged" not in (out / "embedded.csv").read_text()
    assert read_record(results / DPSH0).divergence is None
