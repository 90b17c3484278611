"""A job killed mid-training resumes from its last checkpoint and ends with the record of an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from test_engine_support import fgbench_cmd, plugin_dir, subprocess_env  # noqa: F401  (plugin_dir is a fixture)

RUN = ["run", "-m", "crashy", "-d", "tiny", "--bits", "8", "--epochs", "3", "--deterministic", "--checkpoint-every",
       "0", "--device", "cpu", "-q"]


def _record(results: Path) -> dict:
    (path,) = results.rglob("*.json")
    return json.loads(path.read_text())


def test_killed_job_resumes_to_the_same_record(plugin_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    env = subprocess_env(plugin_dir)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    # the uninterrupted run and the run that dies at the end of epoch 1 (after epoch 0's checkpoint) side by side
    procs = [subprocess.Popen(fgbench_cmd(*RUN, "--results", str(whole)), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen(fgbench_cmd(*RUN, "--results", str(broken)), env={**env, "FGB_CRASH_AT_EPOCH": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode == 0, outs[0]
    assert procs[1].returncode == 17, outs[1]  # killed: no record, a checkpoint of epoch 0
    assert not list(broken.rglob("*.json"))
    (ckpt,) = broken.rglob("*.ckpt")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"] == 0
    assert not [p for p in broken.rglob("*") if p.name.endswith(".tmp")]

    again = subprocess.run(fgbench_cmd(*RUN, "--results", str(broken)), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = _record(whole), _record(broken)
    assert b["training"]["resumed_from_epoch"] == 1 and a["training"]["resumed_from_epoch"] == 0
    assert a["training"]["epoch_losses"] == b["training"]["epoch_losses"]
    assert a["metrics"] == b["metrics"]
    assert a["per_query_ap"] == b["per_query_ap"]  # the encoded field, compared whole
    assert not list(broken.rglob("*.ckpt"))  # removed once the record is written


def test_a_job_of_a_minute_is_resumable_and_checkpoints_stay_cheap() -> None:
    from fgbench.engine.device import EngineOptions
    from fgbench.engine.train import checkpoint_due

    every = EngineOptions().checkpoint_every
    assert every <= 20  # a ~minute job (e.g. 6 epochs of 8 s) checkpoints before its end
    assert checkpoint_due(16.0, every, last_cost=0.6)  # after the second 8-second epoch
    assert not checkpoint_due(every - 1, every, last_cost=0.6)
    # a checkpoint that takes 2 s to write waits 18 s: writing stays near a tenth of the time
    assert not checkpoint_due(12.0, every, last_cost=2.0) and checkpoint_due(18.0, every, last_cost=2.0)
    assert checkpoint_due(0.0, 0, last_cost=5.0)  # --checkpoint-every 0: every epoch, whatever the cost
