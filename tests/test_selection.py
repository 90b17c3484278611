"""Model selection (selection=val), --trace-test-map and ADSH-style epoch sampling (issue 14 items 5 and 7)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from test_engine_support import fgbench_cmd, plugin_dir, subprocess_env, testplug_host  # noqa: F401  (fixtures)
from fgbench.cli import main
from fgbench.data.base import ArraySplit
from fgbench.data.valsplit import carve_validation, validation_indices
from fgbench.engine.sampling import ResampledBatchSampler, epoch_subset, steps_per_epoch
from fgbench.errors import ProtocolError
from fgbench.protocol import Protocol
from fgbench.records import RunRecord, read_record, validate_record
from fgbench.results.leaderboard import build_boards, records_frame, render_board, render_csv

RUN = ["run", "-m", "crashy", "-d", "tiny", "--bits", "8", "--device", "cpu", "-q", "--checkpoint-every", "0"]


def _run(tmp: Path, *extra: str) -> dict:
    res = CliRunner().invoke(main, [*RUN, "--results", str(tmp), *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (path,) = tmp.rglob("*.json")
    read_record(path)  # a valid record
    return json.loads(path.read_text())


# --- the validation split ------------------------------------------------------------------------


def test_val_split_is_stratified_deterministic_and_disjoint() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 3, 2, 1])
    val = validation_indices(labels, 0.25, "cub", seed=3)
    counts = {c: int((labels[val] == c).sum()) for c in range(5)}
    # round(0.25 * n) per class, at least one, never the whole class; a one-image class stays in training
    assert counts == {0: 2, 1: 5, 2: 1, 3: 1, 4: 0}
    assert np.array_equal(val, validation_indices(labels, 0.25, "cub", seed=3))  # fixed per (dataset, seed)
    assert not np.array_equal(val, validation_indices(labels, 0.25, "cub", seed=4))
    assert not np.array_equal(val, validation_indices(labels, 0.25, "aircraft", seed=3))
    split = ArraySplit(np.zeros((len(labels), 2, 2, 3), np.uint8), labels)
    train, held = carve_validation(split, 0.25, "cub", 3)
    assert set(train.indices).isdisjoint(held.indices)
    assert sorted([*train.indices, *held.indices]) == list(range(len(labels)))
    assert np.array_equal(held.labels, labels[held.indices])


def test_selection_val_records_the_argmax_of_its_trace_and_leaves_val_out(testplug_host, tmp_path) -> None:  # noqa: F811
    rec = _run(tmp_path, "--epochs", "3", "--set", "selection=val", "--set", "val_fraction=0.2")
    trace = rec["val_map_trace"]
    assert len(trace) == 3 and rec["selected_epoch"] == int(np.argmax(trace))
    # tiny: 4 classes x 6 training images; round(0.2 * 6) = 1 per class held out of the database
    assert rec["num_val"] == 4 and rec["num_database"] == 24 - 4
    assert "validation" in rec["model_selection"] and rec["protocol"]["selection"] == "val"


def test_selection_val_tests_the_chosen_epoch(testplug_host, tmp_path) -> None:  # noqa: F811
    """The reported test mAP is the test trace's value at the chosen epoch, not the final one's."""
    rec = _run(tmp_path, "--epochs", "3", "--set", "selection=val", "--trace-test-map")
    assert len(rec["test_map_trace"]) == 3
    assert rec["metrics"]["map"] == pytest.approx(rec["test_map_trace"][rec["selected_epoch"]], abs=2e-6)


def test_trace_test_map_changes_no_result(testplug_host, tmp_path) -> None:  # noqa: F811
    plain = _run(tmp_path / "plain", "--epochs", "2")
    traced = _run(tmp_path / "traced", "--epochs", "2", "--trace-test-map")
    assert plain.get("test_map_trace") is None
    assert len(traced["test_map_trace"]) == 2  # one per epoch
    assert traced["metrics"] == plain["metrics"]
    assert traced["training"]["epoch_losses"] == plain["training"]["epoch_losses"]
    assert traced["test_map_trace"][-1] == pytest.approx(traced["metrics"]["map"], abs=2e-6)  # final = last epoch
    # not part of the job identity: the untraced record counts as done for a traced rerun
    again = CliRunner().invoke(main, [*RUN, "--results", str(tmp_path / "plain"), "--epochs", "2",
                                      "--trace-test-map"], catch_exceptions=False)
    assert again.exit_code == 0 and "1 already done, 0 to run" in again.output, again.output


# --- the leaderboard column ----------------------------------------------------------------------


def _record(method: str, seed: int, final: float, trace: list[float] | None) -> RunRecord:
    return RunRecord(method=method, dataset="tiny", bits=8, seed=seed, protocol=Protocol(bits=(8,)).to_dict(),
                     metrics={"map": final}, cost={"params_m": 1.0, "flops_g": 1.0, "input_size": 224},
                     train_seconds=1.0, eval_seconds=1.0, environment={"fgbench": "x"}, test_map_trace=trace)


def test_leaderboard_shows_best_test_epoch_minus_reported_from_traces() -> None:
    rng = np.random.default_rng(0)
    traces = {s: list(rng.uniform(0.1, 0.9, 4)) for s in range(3)}
    records = [_record("a", s, traces[s][-1], traces[s]) for s in range(3)] + [_record("b", 0, 0.5, None)]
    for r in records:
        validate_record(r)
    (board,) = build_boards(records_frame(records))
    expected = np.mean([max(t) - t[-1] for t in traces.values()])
    cell = board.row("a").test_inflation[8]
    assert cell.n == 3 and cell.mean == pytest.approx(expected)
    assert 8 not in board.row("b").test_inflation
    page = render_board(board)
    assert "Best test epoch minus reported" in page and f"{expected:.4f}" in page
    assert "best_test_epoch_minus_reported@8_mean" in render_csv(board)
    # rows stay ordered by reported mAP, never by the traced best epoch
    assert [r.method for r in board.rows] == sorted(["a", "b"], key=lambda m: -board.row(m).score)
    (untraced,) = build_boards(records_frame([_record("a", 0, 0.3, None)]))
    assert "Best test epoch" not in render_board(untraced) and "best_test" not in render_csv(untraced)


# --- ADSH-style epoch sampling -------------------------------------------------------------------


def test_resampled_batches_come_from_a_fresh_subset_per_outer_iteration() -> None:
    n, size, every = 50, 12, 2
    sampler = ResampledBatchSampler(n, size, every, seed=7, batch_size=4, generator=torch.Generator().manual_seed(7))
    seen = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == size // 4
        seen.append(sorted(i for b in batches for i in b))
    for o in range(3):
        assert seen[2 * o] == seen[2 * o + 1] == list(epoch_subset(n, size, 7, o))  # the whole subset, each epoch
    assert seen[0] != seen[2] != seen[4]
    # a resumed run (a new sampler) draws the same subsets
    again = ResampledBatchSampler(n, size, every, seed=7, batch_size=4, generator=torch.Generator().manual_seed(1))
    again.set_epoch(5)
    assert sorted(i for b in again for i in b) == seen[5]
    assert steps_per_epoch(n, 4, size) == 3 and steps_per_epoch(n, 4) == 12


def test_epoch_sample_gives_the_expected_step_count(testplug_host, tmp_path) -> None:  # noqa: F811
    rec = _run(tmp_path / "s", "--epochs", "3", "--batch-size", "4", "--set", "epoch_sample=10",
               "--set", "resample_every=2")
    assert rec["training"]["optimizer_steps"] == 3 * (10 // 4)
    full = _run(tmp_path / "f", "--epochs", "2", "--batch-size", "4")
    assert full["training"]["optimizer_steps"] == 2 * (24 // 4)


def test_killed_sampled_run_resumes_with_the_same_subsets(plugin_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    env = subprocess_env(plugin_dir)
    args = [*RUN, "--epochs", "4", "--batch-size", "4", "--deterministic", "--set", "epoch_sample=12",
            "--set", "resample_every=2", "--set", "selection=val"]
    whole = subprocess.run(fgbench_cmd(*args, "--results", str(tmp_path / "w")), env=env, capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    killed = subprocess.run(fgbench_cmd(*args, "--results", str(tmp_path / "b")),
                            env={**env, "FGB_CRASH_AT_EPOCH": "2"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 17, killed.stdout + killed.stderr
    again = subprocess.run(fgbench_cmd(*args, "--results", str(tmp_path / "b")), env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    (a,), (b,) = (list((tmp_path / d).rglob("*.json")) for d in ("w", "b"))
    a, b = json.loads(a.read_text()), json.loads(b.read_text())
    assert b["training"]["resumed_from_epoch"] == 2
    for key in ("val_map_trace", "selected_epoch", "metrics"):
        assert a[key] == b[key], key
    assert a["training"]["epoch_losses"] == b["training"]["epoch_losses"]
    assert a["training"]["optimizer_steps"] == b["training"]["optimizer_steps"] == 4 * 3


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    ({"selection": "best"}, "selection 'best'"),
    ({"epoch_sample": -1}, "epoch_sample -1"),
    ({"epoch_sample": 10, "resample_every": 0}, "resample_every 0"),
    ({"resample_every": 3}, "only epoch_sample > 0"),
    ({"val_fraction": 1.0}, "val_fraction"),
])
def test_bad_values_are_one_line_errors(changes: dict, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as info:
        Protocol().replace(**changes).validate()
    assert "\n" not in str(info.value)


def test_bad_value_on_the_command_line(testplug_host, tmp_path) -> None:  # noqa: F811
    res = CliRunner().invoke(main, [*RUN, "--results", str(tmp_path), "--set", "resample_every=0",
                                    "--set", "epoch_sample=5"])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "resample_every" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
