"""Fault injection: bad command-line options are refused before any job trains (issue #12).

Each case injects one bad option into ``fgbench run`` (or ``profile`` /
``submit``) and asserts: a non-zero exit, a one-line ``Error: ...`` (click's
usage error included), no traceback, and nothing written to ``--results``
(no record, checkpoint, lock or temp file).  The grid has two methods so that
a bad ``--set`` for the second one must fail before the first one trains.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import TOY_SPEC
from fgbench.cli import main
from fgbench.protocol import resolve_protocol
from fgbench.records import RunRecord, record_path, write_record
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

OTHER_SPEC = dataclasses.replace(TOY_SPEC, name="other", summary="a second toy method")
TINY = tiny_embedded()
GRID = ["run", "--methods", "toy,other", "--datasets", "tiny", "--bits", "8", "--seeds", "0", "-q"]

# (case id, options added to GRID; a later --methods/--datasets/--bits/--seeds replaces the grid's)
BAD_RUN_OPTIONS = [
    ("methods-empty", ["--methods", ""]),
    ("methods-comma", ["--methods", ","]),
    ("methods-blank-items", ["--methods", " , "]),
    ("methods-twice", ["--methods", "toy,toy"]),
    ("methods-unknown", ["--methods", "toy,nosuch"]),
    ("datasets-empty", ["--datasets", ""]),
    ("datasets-comma", ["--datasets", ","]),
    ("datasets-unknown", ["--datasets", "tiny,cbu"]),
    ("bits-empty", ["--bits", ""]),
    ("bits-comma", ["--bits", ","]),
    ("bits-too-small", ["--bits", "2"]),
    ("bits-not-int", ["--bits", "8,x"]),
    ("bits-twice", ["--bits", "8,8"]),
    ("seeds-negative", ["--seeds", "-1"]),
    ("seeds-comma", ["--seeds", ","]),
    ("seeds-twice", ["--seeds", "0,0"]),
    ("workers-negative", ["--workers", "-5"]),
    ("nproc-zero", ["--nproc", "0"]),
    ("log-every-zero", ["--log-every", "0"]),
    ("checkpoint-every-negative", ["--checkpoint-every", "-1"]),
    ("checkpoint-every-nan", ["--checkpoint-every", "nan"]),
    ("shard-out-of-range", ["--shard", "2/2"]),
    ("epochs-zero", ["--epochs", "0"]),
    ("batch-size-zero", ["--batch-size", "0"]),
    ("lr-negative", ["--lr", "-1"]),
    ("lr-nan", ["--lr", "nan"]),
    ("lr-inf", ["--lr", "inf"]),
    ("backbone-weights-missing", ["--backbone-weights", "no-such-file.pt"]),
    ("set-name", ["--set", "name=paper"]),
    ("set-selection-val-unseen-split", ["--split", "unseen:25", "--set", "selection=val"]),
    ("set-selection-bogus", ["--set", "selection=best"]),
    ("set-eval-batch-size-zero", ["--set", "eval_batch_size=0"]),
    ("set-input-size-zero", ["--set", "input_size=0"]),
    ("set-input-size-negative", ["--set", "input_size=-3"]),
    ("set-input-size-over-resize", ["--set", "input_size=64"]),
    ("set-resize-size-zero", ["--set", "resize_size=0"]),
    ("set-val-fraction-zero", ["--set", "val_fraction=0"]),
    ("set-val-fraction-over-one", ["--set", "val_fraction=1.5"]),
    ("set-lr-nan", ["--set", "lr=nan"]),
    ("set-lr-text", ["--set", "lr=fast"]),
    ("set-momentum-one", ["--set", "momentum=1"]),
    ("set-weight-decay-negative", ["--set", "weight_decay=-1"]),
    ("set-backbone-lr-mult-negative", ["--set", "backbone_lr_mult=-0.1"]),
    ("set-warmup-not-below-epochs", ["--set", "warmup_epochs=1"]),
    ("set-milestones-without-step", ["--set", "milestones=1"]),
    ("set-milestones-not-int", ["--set", "schedule=step", "--set", "milestones=a"]),
    ("set-optimizer-unknown", ["--set", "optimizer=rmsprop"]),
    ("set-augmentation-unknown", ["--set", "augmentation=cutmix"]),
    ("set-schedule-unknown", ["--set", "schedule=linear"]),
    ("set-backbone-unknown", ["--set", "backbone=vgg16"]),
    ("set-weights-pretext-size", ["--set", "weights=pretext:big"]),
    ("set-weights-missing-file", ["--set", "weights=no-such-file.pt"]),
    ("set-seeds-negative", ["--seeds", None, "--set", "seeds=-1"]),
    ("set-bits-and-option", ["--set", "bits=16"]),
    ("set-seeds-and-option", ["--set", "seeds=1"]),
    ("set-epochs-and-option", ["--epochs", "1", "--set", "epochs=2"]),
    ("set-field-unknown", ["--set", "nosuch=1"]),
    ("set-field-twice", ["--set", "lr=0.1", "--set", "lr=0.2"]),
    ("set-no-equals", ["--set", "lr"]),
    ("set-empty-key", ["--set", "=1"]),
    ("set-empty-method", ["--set", ".margin=1"]),
    ("set-empty-method-key", ["--set", "toy.=1"]),
    ("set-method-unknown", ["--set", "nosuch.margin=1"]),
    ("set-method-key-unknown", ["--set", "toy.nosuch=1"]),
    ("set-method-value-bad", ["--set", "toy.margin=wide"]),
    ("set-method-value-nan", ["--set", "toy.margin=nan"]),
    ("set-second-method-key-unknown", ["--set", "other.nosuch=1"]),
    ("set-unselected-method-key-unknown", ["--methods", "toy", "--set", "other.nosuch=1"]),
    ("results-is-a-file", ["--results", "{file}"]),
]


def _args(extra: list[str | None]) -> list[str]:
    """GRID with ``extra`` applied: an option given again replaces the grid's value; ``None`` drops the option."""
    args = list(GRID)
    extra = list(extra)
    while extra:
        option, value = extra.pop(0), extra.pop(0)
        if option in args and option != "--set":
            i = args.index(option)
            del args[i:i + 2]
        if value is not None:
            args += [option, value]
    return args


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def _assert_one_line_error(res: Result) -> str:
    """Non-zero exit through click (no escaped exception), no traceback, an ``Error:`` line; that line."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def _written(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def two_methods():  # type: ignore[no-untyped-def]
    with registered_plugin(spec_plugin("bad-options", methods=[TOY_SPEC, OTHER_SPEC], datasets=[TINY])) as host:
        yield host


@pytest.mark.parametrize("extra", [case[1] for case in BAD_RUN_OPTIONS], ids=[case[0] for case in BAD_RUN_OPTIONS])
def test_bad_run_option_is_refused_before_anything_runs(two_methods, tmp_path, extra) -> None:  # type: ignore[no-untyped-def]
    results = tmp_path / "results"
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    args = [a.format(file=blocker) if a else a for a in extra]
    res = _invoke(_args(["--results", str(results), *args]))
    _assert_one_line_error(res)
    assert _written(results) == []
    assert "job(s):" not in res.output   # refused before the grid was announced ("N already done")


@pytest.mark.parametrize("setting, words", [
    ("name=paper", "--protocol"),
])
def test_settings_the_record_would_misstate_say_why(two_methods, tmp_path, setting, words) -> None:  # type: ignore[no-untyped-def]
    line = _assert_one_line_error(_invoke(_args(["--results", str(tmp_path), "--set", setting])))
    assert words in line and setting.split("=")[0] in line
    assert _written(tmp_path) == []


def test_empty_method_list_names_the_installed_methods(two_methods, tmp_path) -> None:  # type: ignore[no-untyped-def]
    line = _assert_one_line_error(_invoke(_args(["--results", str(tmp_path), "--methods", ","])))
    assert "--methods" in line and "other, toy" in line


def _done_record(results: Path) -> Path:
    """A finished record for toy/tiny/8b/seed0, as `fgbench run` files it."""
    proto = resolve_protocol("fair", TINY.fair_overrides, None, "tiny", {"bits": (8,), "seeds": (0,)})
    record = RunRecord(method="toy", dataset="tiny", bits=8, seed=0, protocol=proto.to_dict(), metrics={"map": 0.5},
                       cost={"params_m": 11.2, "flops_g": 1.8, "input_size": 224}, train_seconds=1.0,
                       eval_seconds=0.1, environment={"device_name": "cpu"}, backbone_weights="random")
    path = record_path(results, "fair", "tiny", "toy", 8, 0)
    write_record(record, path)
    return path


def test_bad_set_fails_even_when_every_job_is_done(two_methods, tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = _done_record(tmp_path)
    before = done.read_bytes()
    res = _invoke(_args(["--results", str(tmp_path), "--methods", "toy", "--set", "toy.nosuch=1"]))
    assert "nosuch" in _assert_one_line_error(res)
    assert _written(tmp_path) == [done] and done.read_bytes() == before


def test_valid_set_for_a_method_not_selected_warns(two_methods, tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = _done_record(tmp_path)
    res = _invoke(_args(["--results", str(tmp_path), "--methods", "toy", "--set", "other.margin=0.7"]))
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if "has no effect" in line]
    assert len(warnings) == 1 and "other.margin=0.7" in warnings[0] and warnings[0].startswith("warning:")
    assert "1 already done, 0 to run" in res.output
    assert _written(tmp_path) == [done]


@pytest.mark.parametrize("args", [
    ["--methods", ","],
    ["--methods", ""],
    ["--bits", ","],
    ["--bits", "2"],
    ["--input-size", "0"],
    ["--num-classes", "0"],
    ["--set", "input_size=112"],       # a protocol field: profile has its own options
    ["--set", "toy.nosuch=1"],
    ["--set", "toy.margin=wide"],
    ["--set", "nosuch.margin=1"],
], ids=lambda a: " ".join(a) or "empty")
def test_bad_profile_option_is_refused(two_methods, args) -> None:  # type: ignore[no-untyped-def]
    res = _invoke(["profile", "--methods", "toy", "--backbone", "resnet18", *args])
    _assert_one_line_error(res)
    assert "FLOPs" not in res.output   # refused before any model was built and profiled


@pytest.mark.parametrize("submit_args, run_args", [
    ([], ["--set", "other.nosuch=1"]),
    ([], ["--methods", ","]),
    ([], ["--seeds", "-1"]),
    ([], ["--split", "unseen:25", "--set", "selection=val"]),
    ([], ["--workers", "-5"]),
    (["--shards", "0"], []),
    (["--gpus", "-1"], []),
    (["--timeout-min", "0"], []),
    (["--mem-gb", "-2"], []),
], ids=["run-set-unselected-method-key", "run-methods-comma", "run-seeds-negative", "run-selection-val-unseen-split",
        "run-workers-negative", "shards-zero", "gpus-negative", "timeout-zero", "mem-negative"])
def test_submit_refuses_what_run_refuses(two_methods, tmp_path, submit_args, run_args) -> None:  # type: ignore[no-untyped-def]
    folder, results = tmp_path / "submitit", tmp_path / "results"
    res = _invoke(["submit", "--executor", "local", "--gpus", "0", "--folder", str(folder), *submit_args, "--",
                   *_args(["--results", str(results), *run_args])[1:]])
    _assert_one_line_error(res)
    assert "submitted" not in res.output
    assert _written(folder) == [] and _written(results) == []


def test_help_needs_no_writable_home(tmp_path) -> None:
    """Importing the CLI (and every command module) creates no folder: HOME is a file here."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "FGBENCH_DATA")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "fgbench", "run", "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home-is-a-file"]
