"""Running a job grid: what is done, what to run, and one failing job never stopping the others.

``fgbench run`` plans the grid (:mod:`fgbench.cli._grid`) and hands it here;
``fgbench submit`` runs each shard as a child ``fgbench run`` process.  This
module expands the grid (:func:`expand_jobs`), slices it (:func:`shard`) and
runs it (:func:`run_grid`) with a :class:`~fgbench.engine.runner.JobRunner`
that runs one job.  Messages go through ``echo(message, err=False)`` (the
command line passes ``click.echo``); what stops the grid is a one-line
:class:`~fgbench.errors.GridError`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Callable, Iterator, Protocol as TypingProtocol, Sequence

from fgbench.backbones import resolve_weights
from fgbench.engine import distributed
from fgbench.engine.device import resolve_runtime
from fgbench.engine.plugin_check import check_grid_methods
from fgbench.engine.runner import (Job, JobRunner, collapse_warning, divergence_warning, failure_message,
                                   is_disk_error, stops_the_grid)
from fgbench.errors import GridError, RecordError, first_line
from fgbench._plugins import Registry
from fgbench.protocol import resolve_protocol


class Echo(TypingProtocol):
    """``click.echo``-like: ``echo(message)`` or ``echo(message, err=True)`` for stderr."""

    def __call__(self, message: str, err: bool = False) -> Any: ...


def expand_jobs(
    registry: Registry,
    methods: Sequence[str],
    datasets: Sequence[str],
    protocol_name: str,
    bits: Sequence[int] | None,
    seeds: Sequence[int] | None,
    protocol_overrides: dict[str, Any] | None = None,
) -> list[Job]:
    """The grid method x dataset x bits x seed, with each job's resolved protocol.

    The protocol is resolved per dataset (and per method for ``paper``); under
    ``fair`` every method of a dataset gets the identical object.
    """
    overrides = dict(protocol_overrides or {})
    if bits:
        overrides["bits"] = tuple(bits)
    if seeds is not None and len(seeds):
        overrides["seeds"] = tuple(seeds)
    jobs = []
    for dname in datasets:
        dspec = registry.datasets.get(dname)
        for mname in methods:
            mspec = registry.methods.get(mname)
            proto = resolve_protocol(protocol_name, dspec.fair_overrides, mspec.paper_recipe, dname, overrides)
            for b in proto.bits:
                for s in proto.seeds:
                    jobs.append(Job(mname, dname, int(b), int(s), proto))
    return jobs


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """Deterministic slice ``index`` of ``count`` (round robin over the sorted grid)."""
    ordered = sorted(jobs, key=lambda j: (j.dataset, j.method, j.bits, j.seed))
    return ordered[index::count]


def run_grid(runner: JobRunner, jobs: list[Job], echo: Echo, what: str) -> list[tuple[str, str]]:
    """Decide what is done, refuse mismatched or damaged records, run the rest; a failing job does not stop the grid.

    Before any job trains: the device options are resolved, every method's
    config built once (an invalid one is an error, not a failure of every
    job), every dataset of a job to run loaded (a missing one is one line),
    the initial weights of every job to run found and checked
    (:func:`fgbench.backbones.resolve_weights`), and every existing record
    is read and its identity compared with its job
    (:meth:`fgbench.engine.runner.JobRunner.check_done`): a record that is
    damaged or was made with other settings stops the command with one line.
    Every method with a job to run passes the plugin contract check
    (:func:`fgbench.engine.plugin_check.check_grid_methods`, once per method,
    on rank 0); the jobs of a method that fails it are reported ``FAILED``
    with its one-line reason, untrained, and the other methods go on.
    Files left by killed runs of finished jobs are removed.  Then each job
    runs; one that raises is reported as ``FAILED <job>: <reason>`` and the
    grid goes on (returned as ``(job label, reason)``; :func:`end_with_failures`
    summarises them and exits with status 1).  A full disk, an option or
    protocol error, an interruption (Ctrl-C, SIGTERM) or any failure under
    several processes stops the grid at once
    (:func:`fgbench.engine.runner.stops_the_grid`).
    """
    dist = distributed.info()

    def warn(message: str) -> None:
        echo(message, err=True)

    resolve_runtime(runner.options)
    for name in sorted({job.method for job in jobs}):
        runner.config(name)  # a bad --set value or key: one line now, not a failure of each job
    decision: tuple[list[Any], int, str | None] | None = None
    if dist.is_main:
        decision = _done_and_todo(runner, jobs, warn)
    # every rank must walk the same list: rank 0's view of what is done decides
    todo, done, refusal = distributed.broadcast_object(decision)
    if refusal:
        raise RecordError(refusal)
    for job in todo:
        if job.protocol.split != "standard":
            runner.job_dataset(job)  # a class split the dataset cannot give: one line now, not a failure of each job
    for name in sorted({j.dataset for j in todo}):
        runner.dataset(name)  # loaded once for all its jobs: missing or damaged is one line now, not a failure of each
    for backbone, weights, version, dataset in sorted({(j.protocol.backbone, j.protocol.weights,
                                                         j.protocol.imagenet_weights, j.dataset) for j in todo}):
        # the initial weights of every job to run, found and checked before the first one trains
        resolve_weights(backbone, weights, runner.registry.datasets.get(dataset).weights_providers, version)
    echo(f"{len(jobs)} job(s): {done} already done, {len(todo)} to run ({what})")
    refused: dict[str, str] | None = None
    if dist.is_main:  # the plugin contract, once per method to run, before its first job trains
        refused = check_grid_methods(runner.registry, {m: runner.config(m) for m in {j.method for j in todo}},
                                     todo, warn)
    refused = distributed.broadcast_object(refused)
    failures: list[tuple[str, str]] = []
    with sigterm_as_interrupt():
        try:
            for i, job in enumerate(todo, 1):
                if job.method in refused:
                    echo(f"FAILED {job.label}: {refused[job.method]}", err=True)
                    failures.append((job.label, refused[job.method]))
                    continue
                record = None
                try:
                    record = runner.run(job, log=echo, warn=warn)
                except Exception as exc:  # noqa: BLE001 - one job's failure is reported, the grid goes on
                    if is_disk_error(exc):
                        raise GridError(f"{exc}; free some space and rerun the same command "
                                        f"(finished jobs are kept)") from None
                    if stops_the_grid(exc) or os.environ.get("FGBENCH_DEBUG"):
                        raise
                    if dist.enabled:  # the other ranks may be waiting in a collective: the grid stops
                        raise GridError(f"{job.label}: {failure_message(job, exc, runner.method_overrides)}") from None
                    reason = failure_message(job, exc, runner.method_overrides)
                    echo(f"FAILED {job.label}: {reason}", err=True)
                    failures.append((job.label, reason))
                if failures and failures[-1][0] == job.label:
                    _free_memory()  # the failed job's model and tensors (e.g. after an out-of-memory error)
                elif record is not None:
                    echo(f"[{i}/{len(todo)}] {job.label}: mAP {record.metrics.get('map', float('nan')):.4f} "
                         f"(train {record.train_seconds:.1f}s, eval {record.eval_seconds:.2f}s)")
                    for warning in (divergence_warning(job.label, record),
                                    collapse_warning(record, len(record.class_split["unseen"]) if record.class_split
                                                     else runner.dataset(job.dataset).num_classes)):
                        if warning:
                            warn(warning)
        except BaseException:
            summarise_failures(failures, echo)
            raise
    return failures



def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()



def _done_and_todo(runner: JobRunner, jobs: list[Job], warn: Callable[[str], None]) -> tuple[list[Any], int, str | None]:
    """(jobs to run, number already done, a refusal naming the first bad record or None)."""
    todo, done, problems = [], [], []
    for job in jobs:
        if not os.path.lexists(job.path(runner.results_dir)):
            todo.append(job)
            continue
        try:
            runner.check_done(job)
            done.append(job)
        except RecordError as exc:
            problems.append(first_line(exc))
    if problems:
        more = f" ({len(problems) - 1} more record(s) are refused too)" if len(problems) > 1 else ""
        return todo, len(done), problems[0] + more
    for job in done:
        runner.tidy(job, warn)
    return todo, len(done), None



def summarise_failures(failures: list[tuple[str, str]], echo: Echo) -> None:
    if failures:
        echo(f"{len(failures)} job(s) failed:", err=True)
        for label, reason in failures:
            echo(f"  {label}: {reason}", err=True)



def end_with_failures(failures: list[tuple[str, str]], echo: Echo) -> None:
    """Exit status 1 with a summary when jobs of this command failed (their records are not written)."""
    if not failures:
        return
    summarise_failures(failures, echo)
    labels = [label for label, _ in failures]
    shown = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
    raise GridError(f"{len(labels)} job(s) failed ({shown}); the other jobs' records are kept; "
                               f"rerun the same command to retry the failed ones")



class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the job's lock is released, its checkpoint kept, the run resumable."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (what schedulers send first) raises KeyboardInterrupt like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
