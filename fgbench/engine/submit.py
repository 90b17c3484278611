"""Submitting the job grid as an array of cluster jobs (Slurm) or local processes, through submitit.

``fgbench submit --executor slurm --shards 8 -- --methods all --datasets cub``
submits a job array of 8 tasks; task ``i`` runs ``fgbench run <run options>
--shard i/8`` as a child process (:func:`run_shard`), so the grid is covered
exactly once (:func:`fgbench.engine.grid.shard`) and every task writes its records
into the shared results folder, where the per-job lock files keep two tasks
(or a resubmission) from running the same job twice and finished jobs are
skipped.  A task that is preempted or times out is resubmitted by rerunning
the same command: finished jobs are skipped, interrupted ones resume from
their last checkpoint.

With ``--gpus N`` (N > 1) each array task gets N GPUs and N processes on one
node; submitit's ``TorchDistributedEnvironment`` exports the torchrun
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and each job of the shard trains under DDP
(:mod:`fgbench.engine.distributed`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgbench.errors import SubmitError

EXECUTORS = ("slurm", "local")


@dataclass(frozen=True)
class SubmitOptions:
    """Where and how the array runs.

    ``shards``: array tasks (the grid is split round robin);
    ``gpus``: GPUs (= processes) per task, 0 for CPU-only tasks;
    ``slurm``: extra ``#SBATCH`` settings, e.g. ``{"account": "abc", "qos": "high"}``.
    """

    executor: str = "slurm"
    shards: int = 1
    folder: Path = Path("submitit")
    gpus: int = 1
    cpus_per_task: int = 8
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    partition: str | None = None
    array_parallelism: int = 64
    name: str = "fgbench"
    slurm: dict[str, str] = field(default_factory=dict)


def run_shard(run_args: list[str], index: int, count: int) -> str:
    """One array task: ``fgbench run <run_args> --shard index/count`` in a child process.

    Under a multi-process task the torchrun environment is exported first, so
    the run joins its process group.
    """
    try:
        import submitit

        tasks = submitit.JobEnvironment().num_tasks
    except Exception:  # noqa: BLE001 - not inside a submitit job (e.g. called directly)
        tasks = 1
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    # a fresh `python -m fgbench run` process: the engine never imports the command line
    command = [sys.executable, "-m", "fgbench", "run", *run_args, "--shard", f"{index}/{count}"]
    code = subprocess.call(command)
    if code:
        raise SubmitError(f"shard {index}/{count} on {os.uname().nodename}: `fgbench run` exited with status {code}; "
                          f"its output is in this task's log")
    return f"shard {index}/{count} done on {os.uname().nodename}"


def submit_grid(run_args: list[str], options: SubmitOptions) -> list[Any]:
    """Submit ``options.shards`` tasks covering the grid of ``fgbench run <run_args>``; returns submitit jobs."""
    try:
        import submitit
    except ImportError:
        raise SubmitError("fgbench submit needs submitit: pip install 'fgbench[slurm]' "
                          "(or pip install submitit)") from None
    if options.executor not in EXECUTORS:
        raise SubmitError(f"--executor {options.executor!r}: use {' or '.join(EXECUTORS)}")
    if options.shards < 1:
        raise SubmitError(f"--shards {options.shards}: use 1 or more")
    if any(a == "--shard" or a.startswith("--shard=") for a in run_args):
        raise SubmitError("do not pass --shard to the run options: submit assigns one shard per task")
    if any(a == "--nproc" or a.startswith("--nproc=") for a in run_args):
        raise SubmitError("use --gpus N of submit (one process per GPU) instead of the run option --nproc")
    executor = submitit.AutoExecutor(folder=str(options.folder), cluster=options.executor)
    tasks = max(1, options.gpus)
    params: dict[str, Any] = {
        "name": options.name,
        "timeout_min": options.timeout_min,
        "nodes": 1,
        "tasks_per_node": tasks,
        "cpus_per_task": options.cpus_per_task,
    }
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.executor == "slurm":
        params["slurm_array_parallelism"] = options.array_parallelism
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.slurm:
            params["slurm_additional_parameters"] = dict(options.slurm)
    executor.update_parameters(**params)
    n = options.shards
    return list(executor.map_array(run_shard, [list(run_args)] * n, list(range(n)), [n] * n))
