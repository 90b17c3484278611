"""Many jobs: shards cover the grid exactly once, concurrent processes never double-run a job, submit via submitit."""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_engine_support import fgbench_cmd, plugin_dir, subprocess_env, testplug_host  # noqa: F401  (fixtures)
from fgbench.cli import main
from fgbench.engine.grid import expand_jobs, shard


def _key(job) -> tuple:  # type: ignore[no-untyped-def]
    return (job.method, job.dataset, job.bits, job.seed)


def test_shards_cover_the_grid_exactly_once(toy_host) -> None:  # type: ignore[no-untyped-def]
    jobs = expand_jobs(toy_host.registry, ["toy"], ["tiny", "embedded"], "fair", [8, 12, 16], [0, 1, 2])
    assert len(jobs) == 18
    shuffled = list(jobs)
    random.Random(0).shuffle(shuffled)
    for count in range(1, 8):
        parts = [shard(jobs, i, count) for i in range(count)]
        again = [shard(shuffled, i, count) for i in range(count)]  # independent of the grid's order
        assert [[_key(j) for j in p] for p in parts] == [[_key(j) for j in p] for p in again]
        seen = Counter(_key(j) for p in parts for j in p)
        assert set(seen) == {_key(j) for j in jobs} and set(seen.values()) == {1}
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_cli_shards_write_the_whole_grid(testplug_host, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    base = ["run", "-m", "crashy", "-d", "tiny", "--bits", "8,12", "--seeds", "0,1", "--results", str(tmp_path), "-q"]
    outputs = []
    for i in range(3):
        res = CliRunner().invoke(main, [*base, "--shard", f"{i}/3"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    assert [o.split(" job(s)")[0].strip().splitlines()[0] for o in outputs] == ["2", "1", "1"]
    assert len(list(tmp_path.rglob("*.json"))) == 4
    bad = CliRunner().invoke(main, [*base, "--shard", "3/3"])
    assert bad.exit_code != 0 and "--shard" in bad.output


def test_two_processes_on_one_results_dir_run_each_job_once(plugin_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    log = tmp_path / "trained.log"
    env = subprocess_env(plugin_dir, FGB_TRAIN_LOG=str(log))
    cmd = fgbench_cmd("run", "-m", "crashy", "-d", "tiny", "--bits", "8,12,16,20", "--device", "cpu", "-q",
                      "--results", str(tmp_path / "results"))
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trained = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert trained == {"8": 1, "12": 1, "16": 1, "20": 1}, (trained, outs)
    records = sorted((tmp_path / "results").rglob("*.json"))
    assert [p.name for p in records] == [f"bits{b}-seed0.json" for b in (12, 16, 20, 8)]
    assert all(json.loads(p.read_text())["method"] == "crashy" for p in records)  # whole, parseable files
    leftovers = [p.name for p in (tmp_path / "results").rglob("*") if p.suffix in (".lock", ".tmp", ".ckpt")]
    assert not leftovers
    assert sum(o.count(": mAP ") for o in outs) == 4  # each job reported by exactly one process


def test_submit_local_executor_runs_every_shard(plugin_dir: Path, tmp_path: Path,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch, testplug_host) -> None:  # noqa: F811
    # testplug_host: submit checks the grid in this process (plan_grid), so it must know the test plugin too
    pytest.importorskip("submitit")
    for key, value in subprocess_env(plugin_dir).items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "results"
    res = CliRunner().invoke(main, ["submit", "--executor", "local", "--shards", "2", "--gpus", "0", "--folder",
                                    str(tmp_path / "logs"), "--wait", "--", "-m", "crashy", "-d", "tiny", "--bits",
                                    "8,12", "--device", "cpu", "-q", "--results", str(results)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.count("done on") == 2, res.output
    assert sorted(p.name for p in results.rglob("*.json")) == ["bits12-seed0.json", "bits8-seed0.json"]


def test_submit_rejects_bad_run_options(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["submit", "--executor", "local", "--folder", str(tmp_path), "--",
                                    "--no-such-option"])
    assert res.exit_code != 0 and "RUN_ARGS" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["submit", "--executor", "local", "--folder", str(tmp_path), "--", "--shard", "0/2"])
    assert res.exit_code != 0 and "--shard" in res.output
