"""The runner under faults: kills, SIGTERM, damaged checkpoints and records, full disk, failing jobs, divergence.

Every test injects one fault and checks: no silent wrong result (a resumed
record equals the uninterrupted one; a changed setting is refused), no
traceback (one-line error or recovery), nothing finished lost, no orphan file
(temporary files, stale checkpoints, lock files).

Speed: the ``crashy`` method on the ``tiny`` dataset (test_engine_support)
runs in this process (click's CliRunner, a second or two a run).  A run that
must die by SIGKILL or SIGTERM runs in a forked child of this process (no
new interpreter, no torch import); faults are injected through
``FGBENCH_FAULT`` (:mod:`fgbench._faults`).  torch uses one thread here
so that forking is safe and every run computes the same floats.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Iterator

import pytest
import torch
from click.testing import CliRunner

from fgbench.cli import main
from fgbench import _faults as faults
from fgbench.engine.divergence import divergence_reason
from fgbench.records import read_codes, read_record
from fgbench.testing import registered_plugin
from test_engine_support import PLUGIN_MODULE, plugin_dir, subprocess_env  # noqa: F401  (plugin_dir is a fixture)

RUN = ["run", "-m", "crashy", "-d", "tiny", "--bits", "8", "--epochs", "3", "--deterministic", "--checkpoint-every",
       "0", "--device", "cpu", "-q"]
RECORD = Path("fair/tiny/crashy/bits8-seed0.json")
ENV_KEYS = ("FGBENCH_FAULT", "FGB_TRAIN_LOG", "FGB_RAISE_AT_BITS", "FGB_CRASH_AT_EPOCH", "FGBENCH_DEBUG")


@pytest.fixture(scope="module")
def host(plugin_dir: Path) -> Iterator[None]:  # noqa: F811
    """The test plugin registered in this process; one torch thread (fork-safe, same floats every run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_dir))
        for key in ENV_KEYS:
            mp.delenv(key, raising=False)
        with registered_plugin(importlib.import_module(PLUGIN_MODULE)):
            yield
    torch.set_num_threads(threads)


class Result:
    def __init__(self, code: int | None, output: str, signal_number: int | None = None) -> None:
        self.code, self.output, self.signal = code, output, signal_number

    def __repr__(self) -> str:
        return f"Result(code={self.code}, signal={self.signal}):\n{self.output}"


def cli(results: Path, *extra: str, **env: str) -> Result:
    """``fgbench run`` in this process with ``env`` set (fault counters reset)."""
    faults.reset()
    out = CliRunner().invoke(main, [*RUN, "--results", str(results), *extra], env=dict(env), catch_exceptions=True)
    text = out.output
    if out.exception is not None and not isinstance(out.exception, SystemExit):
        text += "".join(traceback.format_exception(out.exception))
    return Result(out.exit_code, text)


SERVER = r"""
import importlib, json, os, resource, signal, sys, traceback

import torch
import tqdm.std

torch.set_num_threads(1)
tqdm.std.tqdm.monitor_interval = 0  # no tqdm monitor thread (a lock it holds across a fork would hang the child)

from fgbench.cli import main
from fgbench import _faults as faults
from fgbench.testing import registered_plugin

registered_plugin(importlib.import_module(sys.argv[1])).__enter__()


def child(req):
    code = 99
    try:
        out = open(req["log"], "w", buffering=1)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        os.environ.update(req["env"])
        faults.reset()
        if req.get("fsize"):  # files may not grow past this (EFBIG), like a full disk
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        try:
            main.main(req["args"], prog_name="fgbench", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


for line in sys.stdin:
    pids = []
    for req in json.loads(line):
        pid = os.fork()
        if pid == 0:
            child(req)
        pids.append(pid)
    print(json.dumps([os.waitpid(pid, 0)[1] for pid in pids]), flush=True)
"""


class ForkServer:
    """A Python process that imports fgbench once and forks one child per run.

    It computes nothing itself, so forking it is safe (this pytest process
    has started numba's GNU OpenMP threads, which a forked child may not
    use), and a child costs no interpreter start and no torch import.
    """

    def __init__(self, plugin_dir: Path) -> None:
        env = subprocess_env(plugin_dir)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env["PYTHONPATH"]])
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, PLUGIN_MODULE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        self.count = 0

    def run(self, *runs: tuple[Path, list[str], dict[str, str]], fsize: int | None = None) -> list[Result]:
        """Each ``(results, extra args, env)`` as a forked ``fgbench run``, all side by side."""
        reqs = []
        for results, extra, env in runs:
            self.count += 1
            results.parent.mkdir(parents=True, exist_ok=True)
            reqs.append({"args": [*RUN, "--results", str(results), *extra], "env": env, "fsize": fsize,
                         "log": str(results.parent / f"child-{self.count}.log")})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(reqs) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the fork server died"
        out = []
        for req, status in zip(reqs, json.loads(reply)):
            text = Path(req["log"]).read_text()
            if os.WIFSIGNALED(status):
                out.append(Result(None, text, os.WTERMSIG(status)))
            else:
                out.append(Result(os.WEXITSTATUS(status), text))
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(plugin_dir: Path) -> Iterator[ForkServer]:  # noqa: F811
    srv = ForkServer(plugin_dir)
    yield srv
    srv.close()


def forked(server: ForkServer, results: Path, *extra: str, fsize: int | None = None, **env: str) -> Result:
    """``fgbench run`` in a forked child (which a fault may SIGKILL or SIGTERM): its exit status and output."""
    return server.run((results, list(extra), env), fsize=fsize)[0]


def record(results: Path, rel: Path = RECORD) -> dict:
    return json.loads((results / rel).read_text())


def same_result(a: dict, b: dict) -> None:
    assert a["training"]["epoch_losses"] == b["training"]["epoch_losses"]
    assert a["metrics"] == b["metrics"]
    assert a["per_query_ap"] == b["per_query_ap"]  # the encoded field, compared whole


def leftovers(results: Path) -> list[str]:
    """Temporary files, checkpoints and locks anywhere under ``results``."""
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if p.name.endswith((".tmp", ".ckpt", ".lock")))


def one_line_error(res: Result) -> str:
    assert "Traceback" not in res.output, res
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res
    return errors[0]


@pytest.fixture(scope="module")
def reference(host: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The record of an uninterrupted run."""
    results = tmp_path_factory.mktemp("reference")
    res = cli(results)
    assert res.code == 0, res
    assert leftovers(results) == []
    return record(results)


@pytest.fixture(scope="module")
def checkpoint_bytes(server: "ForkServer", tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A valid checkpoint (after epoch 0) of the job: the test plugin's process exits at the end of epoch 1."""
    results = tmp_path_factory.mktemp("checkpoint") / "results"
    res = forked(server, results, FGB_CRASH_AT_EPOCH="1")
    assert res.code == 17, res
    assert not (results / RECORD).exists()
    ckpt = (results / RECORD).with_suffix(".ckpt")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    return ckpt.read_bytes()


# ------------------------------------------------------------------------------------------------ kills

# where the kill lands -> the epoch the rerun resumes from (checkpoints after epochs 0 and 1 of 3; None: record done)
KILLS = {"epoch_end:kill:1": 0, "epoch_end:kill:2": 1, "checkpoint_before_rename:kill:2": 1,
         "checkpoint_after_rename:kill": 1, "evaluate:kill": 2, "record_before_rename:kill": 2,
         "record_after_rename:kill": None}


@pytest.mark.parametrize("point", list(KILLS))
def test_killed_at_any_point_the_rerun_gives_the_uninterrupted_record(point: str, reference: dict,
                                                                      server: ForkServer, tmp_path: Path) -> None:
    results = tmp_path / "results"
    killed = forked(server, results, FGBENCH_FAULT=point)
    assert killed.signal == signal.SIGKILL, killed
    assert (results / RECORD).with_suffix(".json.lock").exists()  # the killed run's lock file is left...
    rerun = cli(results)
    assert rerun.code == 0, rerun
    assert "Traceback" not in rerun.output
    same_result(record(results), reference)
    assert leftovers(results) == []  # ...and removed by the rerun, with temporary files and checkpoints
    if KILLS[point] is None:  # the record was complete: the rerun only tidies up
        assert "1 already done, 0 to run" in rerun.output, rerun
        assert "removed" in rerun.output and ".ckpt" in rerun.output, rerun
    else:
        assert record(results)["training"]["resumed_from_epoch"] == KILLS[point], rerun
    if point.startswith(("checkpoint_before", "record_before")):  # the kill left a temporary file: removed, said so
        assert "temporary file(s) left by an interrupted run" in rerun.output, rerun
    if point.startswith("record_before"):  # killed between the codes sidecar and the record: the orphan went too
        assert ".codes.npz" in rerun.output, rerun
    assert read_codes(read_record(results / RECORD)).bits == 8  # the record's sidecar is there and intact


def test_sigterm_is_an_interruption_that_keeps_the_checkpoint(reference: dict, server: ForkServer,
                                                              tmp_path: Path) -> None:
    results = tmp_path / "results"
    termed = forked(server, results, FGBENCH_FAULT="epoch_end:term:2")
    assert termed.code == 1, termed
    assert one_line_error(termed).startswith("Error: interrupted; rerun the same command to resume")
    assert leftovers(results) == [str(RECORD.with_suffix(".ckpt"))]  # lock released, checkpoint kept
    rerun = cli(results)
    assert rerun.code == 0, rerun
    assert record(results)["training"]["resumed_from_epoch"] == 1
    same_result(record(results), reference)
    assert leftovers(results) == []


def test_two_processes_on_one_job_train_it_once(reference: dict, server: ForkServer, tmp_path: Path) -> None:
    results, log = tmp_path / "results", tmp_path / "trained.log"
    both = server.run(*[(results, [], {"FGB_TRAIN_LOG": str(log)})] * 2)  # side by side
    assert [r.code for r in both] == [0, 0], both
    assert len(log.read_text().splitlines()) == 1  # trained once; the other skipped or found it done
    assert any("running in another process (pid" in r.output or "1 already done" in r.output for r in both), both
    assert [p.name for p in results.rglob("*.json")] == [RECORD.name]
    same_result(record(results), reference)
    assert leftovers(results) == []


# ------------------------------------------------------------------------------------------------ checkpoints

def _damaged(kind: str, good: bytes, path: Path) -> None:
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
        return
    if kind == "empty dict":
        torch.save({}, path)
        return
    state = torch.load(_write(path, good), weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 2)
    if kind == "wrong shapes":
        state["model"][name] = torch.zeros(3, 5)
    elif kind == "NaN weights":
        state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    elif kind == "other settings":
        state["fingerprint"] = "0" * 16
    torch.save(state, path)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["truncated", "empty dict", "wrong shapes", "NaN weights", "other settings"])
def test_a_damaged_checkpoint_is_discarded_with_a_warning(kind: str, checkpoint_bytes: bytes, reference: dict,
                                                          tmp_path: Path) -> None:
    results = tmp_path / "results"
    ckpt = (results / RECORD).with_suffix(".ckpt")
    ckpt.parent.mkdir(parents=True)
    _damaged(kind, checkpoint_bytes, ckpt)
    res = cli(results)
    assert res.code == 0, res
    assert "Traceback" not in res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning: discarding checkpoint")]
    assert len(warnings) == 1 and str(ckpt) in warnings[0] and "starts from scratch" in warnings[0], res
    rec = record(results)
    assert rec["training"]["resumed_from_epoch"] == 0
    same_result(rec, reference)  # from scratch, exactly: nothing half-loaded from the bad file
    assert leftovers(results) == []


# ------------------------------------------------------------------------------------------------ full disk

def test_full_disk_at_checkpoint_rename_warns_and_the_job_finishes(reference: dict, tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = cli(results, FGBENCH_FAULT="checkpoint_before_rename:enospc")
    assert res.code == 0, res
    ckpt = (results / RECORD).with_suffix(".ckpt")
    lines = [line for line in res.output.splitlines() if line.startswith("warning: cannot write checkpoint")]
    assert len(lines) == 1 and str(ckpt) in lines[0] and "No space left on device" in lines[0], res
    same_result(record(results), reference)
    assert leftovers(results) == []


def test_full_disk_at_record_rename_names_the_file_and_keeps_finished_jobs(reference: dict, tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = cli(results, "--seeds", "0,1", FGBENCH_FAULT="record_before_rename:enospc:2")
    assert res.code == 1, res
    second = results / "fair/tiny/crashy/bits8-seed1.json"
    error = one_line_error(res)
    assert str(second) in error and "No space left on device" in error, res
    same_result(record(results), reference)  # the finished job's record is intact
    assert not second.exists()
    assert leftovers(results) == ["fair/tiny/crashy/bits8-seed1.ckpt"]  # no partial record; resumable
    rerun = cli(results, "--seeds", "0,1")
    assert rerun.code == 0 and "1 already done, 1 to run" in rerun.output, rerun
    assert record(results, second.relative_to(results))["training"]["resumed_from_epoch"] == 2
    assert leftovers(results) == []


def test_a_real_write_failure_is_one_line_naming_the_file(server: ForkServer, tmp_path: Path) -> None:
    """Files may not grow past 3 kB (RLIMIT_FSIZE): torch.save's checkpoint write fails inside inline_container.cc,
    then the record write fails."""
    results = tmp_path / "results"
    res = forked(server, results, fsize=3000)
    assert res.code == 1, res
    ckpt = (results / RECORD).with_suffix(".ckpt")
    assert f"warning: cannot write checkpoint {ckpt}" in res.output, res
    failed = [line for line in res.output.splitlines() if line.startswith("FAILED crashy/tiny/8b/seed0: ")]
    assert len(failed) == 1 and str(results / RECORD) in failed[0] and "File too large" in failed[0], res
    assert one_line_error(res).startswith("Error: 1 job(s) failed")
    assert list(results.rglob("*.json")) == [] and leftovers(results) == []


# ------------------------------------------------------------------------------------------------ identity

@pytest.mark.parametrize("change, differs", [(["--set", "crashy.eta=5"], "crashy.eta: record {eta}, now 5.0"),
                                             (["--lr", "0.5"], "lr: record {lr}, now 0.5"),
                                             (["--epochs", "2"], "epochs: record 3, now 2")])
def test_a_changed_setting_is_refused_not_skipped(change: list[str], differs: str, reference: dict,
                                                   tmp_path: Path) -> None:
    differs = differs.format(eta=reference["method_config"]["eta"], lr=reference["protocol"]["lr"])
    results, log = tmp_path / "results", tmp_path / "trained.log"
    (results / RECORD).parent.mkdir(parents=True)
    (results / RECORD).write_text(json.dumps(reference))
    res = cli(results, *change, FGB_TRAIN_LOG=str(log))
    assert res.code == 1, res
    error = one_line_error(res)
    assert str(results / RECORD) in error and differs in error and "another --results folder" in error, res
    assert not log.exists()  # refused before any job trained
    assert record(results) == reference
    same = cli(results)  # the unchanged command: already done
    assert same.code == 0 and "1 already done, 0 to run" in same.output, same


@pytest.mark.parametrize("content", ["{}", '{"method": "crashy", "metr', "[]"])
def test_a_damaged_record_is_refused_before_training(content: str, host: None, tmp_path: Path) -> None:
    results, log = tmp_path / "results", tmp_path / "trained.log"
    (results / RECORD).parent.mkdir(parents=True)
    (results / RECORD).write_text(content)
    res = cli(results, FGB_TRAIN_LOG=str(log))
    assert res.code == 1, res
    assert str(results / RECORD) in one_line_error(res)
    assert not log.exists()
    assert (results / RECORD).read_text() == content


# ------------------------------------------------------------------------------------------------ failing jobs

def test_a_plugin_exception_fails_its_job_and_the_grid_goes_on(host: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = cli(results, "--bits", "8,12", "--seeds", "0", FGB_RAISE_AT_BITS="8")
    assert res.code == 1, res
    assert ("FAILED crashy/tiny/8b/seed0: method 'crashy' raised ValueError: codes of 8 bits do not fit the memory"
            in res.output), res
    assert "[2/2] crashy/tiny/12b/seed0: mAP" in res.output  # the other job ran
    assert "1 job(s) failed:" in res.output
    assert one_line_error(res).startswith("Error: 1 job(s) failed (crashy/tiny/8b/seed0)")
    assert [p.name for p in results.rglob("*.json")] == ["bits12-seed0.json"]  # a failure is not a record
    assert leftovers(results) == []
    again = cli(results, "--bits", "8,12", "--seeds", "0")
    assert again.code == 0 and "1 already done, 1 to run" in again.output, again
    assert leftovers(results) == []


@pytest.mark.parametrize("extra, cause", [(["--set", "crashy.eta=inf"], "--set crashy.eta=inf"),
                                          (["--lr", "1e10"], "the learning rate (--lr, now 1e+10)")])
def test_a_non_finite_loss_names_the_job_and_the_likely_option(extra: list[str], cause: str, host: None,
                                                                tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = cli(results, *extra)
    assert res.code == 1, res
    failed = [line for line in res.output.splitlines() if line.startswith("FAILED crashy/tiny/8b/seed0: ")]
    assert len(failed) == 1 and "non-finite loss at epoch 0" in failed[0] and cause in failed[0], res
    assert "Traceback" not in res.output
    assert list(results.rglob("*.json")) == [] and leftovers(results) == []


def test_an_exploded_but_finite_loss_is_flagged_in_the_record(host: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    res = cli(results, "--set", "crashy.eta=1e30")
    assert res.code == 0, res
    rec = record(results)
    losses = [e["loss"] for e in rec["training"]["epoch_losses"]]
    assert all(math.isfinite(v) for v in losses) and max(losses) > 1e12
    assert rec["divergence"] and "exploded" in rec["divergence"]
    assert f"warning: crashy/tiny/8b/seed0 diverged: {rec['divergence']}" in res.output, res


def test_the_reference_run_is_not_flagged(reference: dict) -> None:
    assert reference["divergence"] is None
    assert reference["method_version"] == f"{PLUGIN_MODULE} 0.0"


# ------------------------------------------------------------------------------------------------ units

def test_divergence_rule() -> None:
    assert divergence_reason([]) is None
    assert divergence_reason([{"loss": 0.9}, {"loss": 0.95}, {"loss": 0.86}]) is None
    assert divergence_reason([{"loss": 1e-9}, {"loss": 0.01}]) is None  # tiny start, small end: not exploded
    assert divergence_reason([{"loss": -3.0}, {"loss": -2.5}]) is None
    assert "non-finite" in divergence_reason([{"loss": 1.0, "quant": float("nan")}])
    assert "exceeds" in divergence_reason([{"loss": 2e28}])
    assert "times epoch 0" in divergence_reason([{"loss": 1.0}, {"loss": 5e6}])
    assert "exceeds" in divergence_reason([{"loss": -5e12}])


def test_no_committed_record_is_flagged_as_diverged() -> None:
    paths = sorted((Path(__file__).resolve().parents[2] / "records").rglob("bits*-seed*.json"))
    assert len(paths) >= 5
    for path in paths:
        assert divergence_reason(json.loads(path.read_text())["training"]["epoch_losses"]) is None, path


def test_job_lock_excludes_a_second_holder_and_deletes_its_file(tmp_path: Path) -> None:
    from fgbench.engine.runner import JobLock

    path = tmp_path / "job.json.lock"
    path.write_text("999999999 gone-host\n")  # left by a killed process: not locked, so taken over
    first, second = JobLock(path), JobLock(path)
    assert first.acquire()
    assert path.read_text().split()[0] == str(os.getpid())
    assert not second.acquire()
    assert second.owner_text() == f" (pid {os.getpid()} on {path.read_text().split()[1]})"
    first.release()
    assert not path.exists()
    assert second.acquire()
    second.release()
    assert not path.exists()


def test_failure_messages_name_the_cause(host: None) -> None:
    from fgbench.engine.grid import expand_jobs
    from fgbench.engine.runner import failure_message, stops_the_grid
    from fgbench.engine.train import NonFiniteLossError
    from fgbench._plugins import get_host

    (job,) = expand_jobs(get_host().registry, ["crashy"], ["tiny"], "fair", [8], [0])
    nan = NonFiniteLossError(3, {"loss": float("nan")})
    assert "epoch 3" in failure_message(job, nan) and "--lr, now" in failure_message(job, nan)
    assert "--set crashy.eta=1e30 (or the learning rate" in failure_message(job, nan, {"crashy": {"eta": "1e30"}})
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert failure_message(job, oom).startswith("out of memory (CUDA out of memory.")
    assert f"--batch-size (now {job.protocol.batch_size})" in failure_message(job, oom)
    assert failure_message(job, MemoryError()).startswith("out of memory (MemoryError)")
    internal = KeyError("x")  # raised by the harness alone: not blamed on the method
    assert failure_message(job, internal) == "KeyError: 'x'"
    assert stops_the_grid(OSError(28, "No space left on device", "/r/x.json"))
    assert not stops_the_grid(OSError(2, "No such file or directory", "/r/x.json")) and not stops_the_grid(nan)


def test_identity_mismatch_names_the_differing_fields(reference: dict) -> None:
    import dataclasses

    from fgbench.engine.grid import expand_jobs
    from fgbench.engine.runner import identity_mismatch
    from fgbench._plugins import get_host
    from fgbench.records import RunRecord

    reg = get_host().registry
    (job,) = expand_jobs(reg, ["crashy"], ["tiny"], "fair", [8], [0], {"epochs": 3})
    spec = reg.methods.get("crashy")
    rec = RunRecord.from_dict(reference)
    config = spec.make_config()
    version = reference["method_version"]
    assert identity_mismatch(job, rec, config, version) is None
    (grid,) = [j for j in expand_jobs(reg, ["crashy"], ["tiny"], "fair", [8, 12], [0, 5], {"epochs": 3})
               if j.bits == 8 and j.seed == 0]
    assert identity_mismatch(grid, rec, config, version) is None  # the grid's bits/seeds lists are not the job's
    assert identity_mismatch(job, rec, config, "fgb_engine_testplug 0.1") == \
        f"plugin: record {version}, now fgb_engine_testplug 0.1"
    changed = identity_mismatch(job, rec, spec.make_config({"eta": "5"}), version)
    assert changed == f"crashy.eta: record {config.eta}, now 5.0"
    # written before a field existed: it matches when the value now is the field's default
    defaults = type(job.protocol)()
    same = next(f for f in ("momentum", "optimizer", "schedule") if getattr(job.protocol, f) == getattr(defaults, f))
    assert job.protocol.eval_batch_size != defaults.eval_batch_size
    old = dataclasses.replace(rec, method_version="", protocol={k: v for k, v in rec.protocol.items() if k != same})
    assert identity_mismatch(job, old, config, version) is None  # and method_source stands for method_version
    old = dataclasses.replace(rec, protocol={k: v for k, v in rec.protocol.items() if k != "eval_batch_size"})
    assert identity_mismatch(job, old, config, version) == \
        f"eval_batch_size: record (absent), now {job.protocol.eval_batch_size}"


def test_torch_writer_failure_becomes_an_error_naming_the_checkpoint(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from fgbench.engine import checkpoint

    def full_disk(obj: object, fh: object) -> None:  # what torch.save raises when the disk fills up mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    path = tmp_path / "job.ckpt"
    with pytest.raises(OSError) as info:
        checkpoint.atomic_torch_save({"w": torch.zeros(3)}, path)
    assert info.value.filename == str(path) and "disk full" in str(info.value)
    assert list(tmp_path.iterdir()) == []
