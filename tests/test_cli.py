"""End-to-end CLI: run + leaderboard on a tiny embedded dataset, resume, one-line errors."""

from __future__ import annotations

import dataclasses
import json

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TOY_SPEC, ToyHasher
from fgbench.cli import main
from fgbench.records import read_record
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

TINY_RUN = ["run", "--methods", "toy", "--datasets", "tiny", "--bits", "8,16", "--seeds", "0,1", "-q"]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def host():  # type: ignore[no-untyped-def]
    with registered_plugin(spec_plugin("toy-plugin", methods=[TOY_SPEC], datasets=[tiny_embedded()])) as h:
        yield h


@pytest.fixture(scope="module")
def tiny_run(host, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One tiny grid run shared by the tests below: (results dir, CLI output)."""
    results = tmp_path_factory.mktemp("results")
    res = invoke(*TINY_RUN, "--results", str(results))
    assert res.exit_code == 0, res.output
    return results, res.output


def test_run_writes_records_and_prints_leaderboard(tiny_run) -> None:  # type: ignore[no-untyped-def]
    tmp_path, output = tiny_run
    records = sorted(tmp_path.rglob("*.json"))
    assert [p.name for p in records] == ["bits16-seed0.json", "bits16-seed1.json", "bits8-seed0.json",
                                         "bits8-seed1.json"]
    rec = json.loads(records[0].read_text())
    assert rec["protocol"]["backbone"] == "resnet10" and rec["protocol"]["input_size"] == 32
    assert rec["backbone_weights"] == "random (explicit)"
    assert 0.0 <= rec["metrics"]["map"] <= 1.0 and {"p@10", "p@100", "p@r2"} <= set(rec["metrics"])
    assert rec["cost"]["params_m"] > 4.9 and rec["cost"]["input_size"] == 224  # the ResNet-10 trunk is 4.90 M
    assert rec["model_selection"].startswith("final epoch")
    assert rec["num_database"] == 24 and rec["num_query"] == 12 and len(read_record(records[0]).per_query_ap) == 12
    assert {"torch", "fgbench", "device"} <= set(rec["environment"])
    assert "| toy" in output and "(n=2)" in output
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.ckpt"))


def test_rerun_skips_finished_jobs(tiny_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(tiny_run[0], tmp_path, dirs_exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")}
    (next(iter(before))).unlink()
    res = invoke(*TINY_RUN, "--results", str(tmp_path))
    assert "3 already done, 1 to run" in res.output
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")}
    assert sum(after[p] != t for p, t in before.items() if p in after) == 1


def test_leaderboard_write_is_byte_identical(tiny_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    invoke("leaderboard", "--results", str(tiny_run[0]), "--write", str(tmp_path / "a"))
    invoke("leaderboard", "--results", str(tiny_run[0]), "--write", str(tmp_path / "b"))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"tiny.csv", "tiny.md", "README.md"} <= {str(f) for f in files}
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "mAP@8" in (tmp_path / "a" / "tiny.md").read_text()


def _error(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert lines, res.output
    return lines[-1]


def test_bad_input_gives_one_line_errors(host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert "Did you mean toy" in _error("run", "--methods", "tyo", "--results", str(tmp_path))
    assert "Unknown dataset 'cbu'" in _error("run", "--methods", "toy", "--datasets", "cbu")
    assert "--bits 2" in _error("run", "--methods", "toy", "--datasets", "tiny", "--bits", "2",
                                "--results", str(tmp_path))
    assert "unknown option(s) nope" in _error("run", "--methods", "toy", "--datasets", "tiny", "--set", "toy.nope=1",
                                              "--results", str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "not a directory" in _error("leaderboard", "--results", str(blocker))
    assert "does not exist" in _error("leaderboard", "--results", str(tmp_path / "nothing"))
    assert "no such file" in _error("run", "--methods", "toy", "--datasets", "tiny", "--backbone-weights",
                                    str(tmp_path / "w.pt"))


def test_list_and_profile(host) -> None:  # type: ignore[no-untyped-def]
    out = invoke("list").output
    assert "toy" in out and "tiny" in out and "map" in out
    out = invoke("profile", "--methods", "toy", "--bits", "12", "--backbone", "resnet18").output
    assert "11.18" in out and "1.814" in out   # ResNet-18 trunk + 512x12 hash layer; no classifier


def test_help_is_available_for_every_command() -> None:
    for cmd in ("run", "list", "profile", "leaderboard", "data"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


class _FlatHasher(ToyHasher):
    """The toy method with every code the same: a collapsed run."""

    def encode(self, images):  # type: ignore[no-untyped-def]
        return super().encode(images) * 0.0 + 1.0


def test_run_warns_when_the_codes_collapse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    flat = dataclasses.replace(TOY_SPEC, name="flat", build=_FlatHasher)
    with registered_plugin(spec_plugin("flat-plugin", methods=[flat, TOY_SPEC], datasets=[tiny_embedded()])):
        res = invoke("run", "--methods", "flat,toy", "--datasets", "tiny", "--bits", "8", "--seeds", "0", "-q",
                     "--results", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "warning: flat gave only 1 distinct code(s) for 24 database images of 4 classes" in res.output
    assert "warning: toy" not in res.output
    [flat_record] = [read_record(p) for p in tmp_path.rglob("flat/*.json")]
    assert flat_record.distinct_database_codes == 1


def test_plan_grid_is_the_validated_grid(host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`fgbench run` and `fgbench submit` share plan_grid: the jobs the engine receives, all checked."""
    from fgbench.cli._grid import plan_grid
    from fgbench.protocol import ProtocolError

    from fgbench.cli.run import run

    defaults = {p.name: p.default for p in run.params if p.name}
    params = {**defaults, "methods": "toy", "datasets": "tiny", "bits": "8,16", "seeds": "0",
              "sets": ("toy.margin=0.25",), "results": tmp_path}
    plan = plan_grid(host.registry, params)
    assert [(j.method, j.dataset, j.bits, j.seed) for j in plan.jobs] == [("toy", "tiny", 8, 0), ("toy", "tiny", 16, 0)]
    assert plan.method_sets == {"toy": {"margin": "0.25"}} and plan.notes == [] and plan.protocol == "fair"
    assert len({j.protocol for j in plan.jobs}) == 1 and plan.jobs[0].protocol.bits == (8, 16)
    assert [j.bits for j in plan_grid(host.registry, {**params, "shard": "1/2"}).jobs] == [16]
    with pytest.raises(ProtocolError, match="--seeds -1"):
        plan_grid(host.registry, {**params, "seeds": "-1"})
    assert not any(tmp_path.iterdir())


def _failing_build(ctx):  # type: ignore[no-untyped-def]
    raise ZeroDivisionError("the plugin divided by zero")


def test_a_plugins_exception_is_reported_as_the_plugins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not disguised as a user error, not an fgbench traceback: one line naming the plugin and the exception."""
    import dataclasses

    from conftest import TOY_SPEC
    from fgbench.testing import registered_plugin, spec_plugin

    broken = dataclasses.replace(TOY_SPEC, name="broken", build=_failing_build)
    with registered_plugin(spec_plugin("broken-plugin", methods=[broken])):
        res = CliRunner().invoke(main, ["profile", "--methods", "broken", "--backbone", "resnet18"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: plugin broken-plugin raised ZeroDivisionError: the plugin divided by zero"), line


def test_an_fgbench_bug_is_not_turned_into_a_user_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An exception from fgbench's own code keeps its traceback (a bug must look like one)."""
    from fgbench.cli import list as list_module

    def bug(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("an fgbench bug")

    monkeypatch.setattr(list_module, "get_host", bug)
    res = CliRunner().invoke(main, ["list"])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "Error: an fgbench bug" not in res.output


def test_a_missing_dataset_stops_the_grid_in_one_line_before_anything_is_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not one FAILED line per job: the dataset is loaded once, up front, and nothing is created."""
    from fgbench.errors import DatasetError

    def missing(_root):  # type: ignore[no-untyped-def]
        raise DatasetError("gone: not found at /nowhere/gone; download it first")

    gone = dataclasses.replace(tiny_embedded(), name="gone", load=missing)
    results = tmp_path / "results"
    with registered_plugin(spec_plugin("gone-plugin", methods=[TOY_SPEC], datasets=[gone])):
        res = CliRunner().invoke(main, ["run", "--methods", "toy", "--datasets", "gone", "--bits", "8,16",
                                        "--results", str(results), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1] == "Error: gone: not found at /nowhere/gone; download it first"
    assert "FAILED" not in res.output
    assert not [p for p in results.rglob("*") if p.is_file() or p.is_dir()]


def test_leaderboard_hint_writes_beside_the_records_not_over_the_committed_boards(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fgbench.cli._common import write_hint

    hint = write_hint(tmp_path / "my results")
    assert hint == f"fgbench leaderboard --results '{tmp_path / 'my results'}' --write '{tmp_path / 'my results' / 'leaderboards'}'"
    assert write_hint(Path("records")) == "fgbench leaderboard --results records --write"
