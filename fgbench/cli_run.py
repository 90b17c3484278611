"""``fgbench run``: expand the job grid, train and evaluate, write records, print the leaderboard."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import click

from fgbench.backbones import BACKBONES
from fgbench.cli import (DEFAULT_RESULTS, check_method_sets, main, one_line_errors, parse_int_list, parse_sets,
                         resolve_names, split_names)
from fgbench.data.base import default_data_root
from fgbench.engine.device import EngineOptions
from fgbench.plugins import Registry, get_host
from fgbench.protocol import PROTOCOL_NAMES, Protocol, ProtocolError, is_named_weights

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.engine.runner import Job


@main.command()
@click.option("--methods", "-m", default=None, help="Comma-separated methods, or 'all' (default: all installed).")
@click.option("--datasets", "-d", default=None,
              help="Comma-separated datasets; 'all' = every dataset available on disk (default: embedded).")
@click.option("--bits", default=None, help="Bit lengths, e.g. 12,24,32,48 (default: the protocol's).")
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2 (default: the protocol's, 0).")
@click.option("--protocol", "protocol_name", type=click.Choice(PROTOCOL_NAMES), default="fair", show_default=True,
              help="fair: identical settings for all methods; paper: each method's published recipe.")
@click.option("--epochs", type=int, default=None, help="Override the protocol's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the protocol's batch size.")
@click.option("--lr", type=float, default=None, help="Override the protocol's learning rate.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default=None, help="Override the backbone.")
@click.option("--backbone-weights", type=click.Path(path_type=Path), default=None,
              help="Offline torchvision state_dict file for the backbone (instead of downloading ImageNet weights).")
@click.option("--set", "sets", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Method option (dpsh.eta=5) or protocol field (input_size=112); repeatable. "
                   "Not name (use --protocol); not both --set bits=... and --bits (same for each option).")
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True,
              help="Folder for run records (one JSON per job; existing ones are skipped).")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="FGBENCH_DATA", default=None,
              help="Folder holding the real datasets (env FGBENCH_DATA; default ~/.cache/fgbench/data).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision (auto: bf16 on CUDA when supported, fp16 otherwise, off on CPU).")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (CUDA).")
@click.option("--gpu-augment", is_flag=True,
              help="Ship uint8 images; random crop, flip and normalisation on the device (same distribution).")
@click.option("--workers", type=int, default=-1, show_default=True,
              help="DataLoader worker processes; -1 = auto (up to 8 on CUDA, 0 on the CPU).")
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms (slower; for exact resume checks).")
@click.option("--checkpoint-every", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Least seconds between resume checkpoints (written at epoch ends; 0 = every epoch).")
@click.option("--log-every", type=int, default=50, show_default=True, help="Steps between progress-bar loss updates.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes (GPUs) per job: relaunches itself under torchrun with DistributedDataParallel.")
@click.option("--sync-bn", is_flag=True, help="SyncBatchNorm across processes (with --nproc > 1, CUDA).")
@click.option("--find-unused-parameters", is_flag=True,
              help="DDP option for methods whose forward leaves some parameters unused.")
@click.option("--shard", default=None, metavar="I/N", help="Run only slice I of N of the job grid (0-based).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@one_line_errors
def run(methods: str | None, datasets: str | None, bits: str | None, seeds: str | None, protocol_name: str,
        epochs: int | None, batch_size: int | None, lr: float | None, backbone: str | None,
        backbone_weights: Path | None, sets: tuple[str, ...], results: Path, data_root: Path | None, device: str,
        amp: str, channels_last: str, compile_: bool, gpu_augment: bool, workers: int, deterministic: bool,
        checkpoint_every: float, log_every: int, nproc: int, sync_bn: bool, find_unused_parameters: bool,
        shard: str | None, quiet: bool) -> None:
    """Train and evaluate methods on datasets; write one record per job and print the leaderboard.

    Jobs whose record already exists in --results are skipped, so rerunning
    the same command resumes an interrupted grid.  Every option, every --set
    (also for methods not selected) and every job's protocol is checked
    before the first job trains.  With --nproc N (or when started by
    torchrun) each job trains on N processes; see docs/performance.md.
    """
    from fgbench.engine import distributed
    from fgbench.engine.runner import JobRunner, collapse_warning

    # every option, every --set and every job's protocol is checked here, before anything trains
    plan = plan_grid(get_host().registry, click.get_current_context().params)
    if nproc > 1 and not distributed.launched_by_torchrun():
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() and not device.startswith("cpu") else 0
        if gpus and nproc > gpus:
            raise click.BadParameter(f"{nproc} processes but {gpus} GPU(s): use at most {gpus} "
                                     f"(one process per GPU) or --device cpu", param_hint="--nproc")
        _relaunch_under_torchrun(click.get_current_context(), nproc)
        return
    with _process_group(device):
        dist = distributed.info()
        echo = click.echo if dist.is_main else _silent
        for note in plan.notes:
            echo(note, err=True)
        reg = get_host().registry
        root = plan.data_root
        method_names, dataset_names, method_sets, jobs = plan.methods, plan.datasets, plan.method_sets, plan.jobs
        options = EngineOptions(device=device, amp=amp, channels_last=channels_last, compile=compile_,
                                gpu_augment=gpu_augment, num_workers=workers, log_every=log_every,
                                deterministic=deterministic, progress=not quiet and dist.is_main,
                                checkpoint_every=checkpoint_every, nproc=dist.world_size, sync_bn=sync_bn,
                                find_unused_parameters=find_unused_parameters)
        if dist.is_main:
            _check_results_dir(results)
        runner = JobRunner(reg, root, results, options, method_sets)
        # every rank must walk the same list: rank 0's view of what is done decides
        todo = distributed.broadcast_object([j for j in jobs if not j.path(results).exists()])
        echo(f"{len(jobs)} job(s): {len(jobs) - len(todo)} already done, {len(todo)} to run "
             f"(methods {', '.join(method_names)}; datasets {', '.join(dataset_names)}; protocol {protocol_name}"
             + (f"; {dist.world_size} processes per job" if dist.enabled else "") + ")")
        for i, job in enumerate(todo, 1):
            record = runner.run(job, log=echo)
            if record is not None:
                echo(f"[{i}/{len(todo)}] {job.label}: mAP {record.metrics.get('map', float('nan')):.4f} "
                     f"(train {record.train_seconds:.1f}s, eval {record.eval_seconds:.2f}s)")
                warning = collapse_warning(record, runner.dataset(job.dataset).num_classes)
                if warning:
                    echo(warning, err=True)
        if dist.is_main:
            from fgbench.cli_leaderboard import print_leaderboard  # lazy: command modules stay independent

            print_leaderboard(results, datasets=set(dataset_names))


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """``click.echo`` on ranks other than 0."""


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[None]:
    """Join torchrun's process group for the duration of the command (no-op when not under torchrun)."""
    from fgbench.engine import distributed

    if not distributed.launched_by_torchrun() or distributed.info().enabled:
        yield
        return
    distributed.init(device)
    try:
        yield
    finally:
        distributed.shutdown()


def _relaunch_under_torchrun(ctx: click.Context, nproc: int) -> None:
    """Run this very command again under ``torchrun --standalone --nproc-per-node nproc``."""
    argv = ["run"] + _argv_without(ctx, skip={"nproc"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "fgbench", *argv]
    env = dict(os.environ)
    code = subprocess.call(cmd, env=env)
    if code:
        raise click.ClickException(f"torchrun exited with status {code}")


def _argv_without(ctx: click.Context, skip: set[str]) -> list[str]:
    """The command line of ``ctx`` rebuilt from its parsed parameters (options in ``skip`` left out)."""
    argv: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in skip:
            continue
        value = ctx.params.get(param.name)
        flag = max(param.opts, key=len)
        if param.is_flag:
            if value:
                argv.append(flag)
        elif param.multiple:
            for item in value or ():
                argv += [flag, str(item)]
        elif value is not None and value != param.default:
            argv += [flag, str(value)]
    return argv


@dataclass(frozen=True)
class GridPlan:
    """The validated job grid of one ``fgbench run`` command line.

    ``jobs``: every job of the grid (this process's shard with ``--shard``),
    each with its resolved, validated protocol; ``method_sets``: the checked
    ``--set METHOD.KEY=VALUE`` values (strings; ``MethodSpec.make_config``
    converts them); ``notes``: one-line warnings to show the user (a
    ``--set`` for a method not selected, a dataset skipped by ``all``).
    """

    jobs: list[Job]
    methods: list[str]
    datasets: list[str]
    protocol: str
    method_sets: dict[str, dict[str, str]]
    data_root: Path
    notes: list[str] = field(default_factory=list)


#: protocol fields that have their own ``fgbench run`` option (a --set of the same field is refused)
_OPTION_FIELDS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "backbone": "--backbone",
                  "weights": "--backbone-weights", "bits": "--bits", "seeds": "--seeds"}


def plan_grid(registry: Registry, params: Mapping[str, Any]) -> GridPlan:
    """Check every option of ``fgbench run`` and expand the grid; raise before anything runs.

    ``params`` are the parsed ``fgbench run`` options (click's
    ``ctx.params``; a missing one takes its default).  Both ``fgbench run``
    and ``fgbench submit`` call this, so a grid is refused the same way
    whether it runs here or on a cluster.  Checked: the engine options
    (``--workers``, ``--nproc``, ``--log-every``, ``--checkpoint-every``,
    ``--shard``, ``--results``), method and dataset names (an empty list is
    an error, never "all"), every ``--set METHOD.KEY=VALUE`` (also for
    methods not selected: a warning note), protocol ``--set`` fields that
    duplicate an option or may not be set (``name``), and the resolved
    protocol of every (dataset, method) pair (:meth:`Protocol.validate`).
    Jobs already done are part of the grid: a bad option fails even when
    every record exists.
    """
    from fgbench.engine.runner import expand_jobs
    from fgbench.engine.runner import shard as shard_jobs

    p = {**_run_defaults(), **params}
    _check_engine_options(p)
    root = Path(p["data_root"]) if p["data_root"] is not None else default_data_root()
    method_names = resolve_names("--methods", p["methods"], registry.methods)
    if not method_names:
        raise click.ClickException("no method plugins are installed; install one, "
                                   "e.g. pip install -e plugins/fgbench-dpsh")
    dataset_names, notes = _select_datasets(registry, p["datasets"], root)
    if not dataset_names:
        raise click.BadParameter("no dataset is available (see `fgbench data list`)", param_hint="--datasets")
    method_sets, protocol_sets = parse_sets(tuple(p["sets"] or ()))
    fields = sorted(f.name for f in dataclasses.fields(Protocol) if f.name != "name")
    for key, value in protocol_sets.items():
        if key not in fields and key != "name":  # name: refused by resolve_protocol, with what to do instead
            raise click.BadParameter(f"{key}={value}: {key} is no protocol field (valid: {', '.join(fields)}); "
                                     f"a method option is METHOD.KEY=VALUE", param_hint="--set")
    notes += check_method_sets(registry, method_sets, method_names)
    overrides: dict[str, Any] = dict(protocol_sets)
    cli_values: dict[str, Any] = {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"],
                                  "backbone": p["backbone"]}
    if p["backbone_weights"] is not None:
        weights = Path(p["backbone_weights"])
        if not weights.is_file():
            raise click.BadParameter(f"{weights}: no such file", param_hint="--backbone-weights")
        cli_values["weights"] = str(weights)
    bits = parse_int_list("--bits", p["bits"])
    seeds = parse_int_list("--seeds", p["seeds"])
    cli_values.update(bits=bits, seeds=seeds)
    for key, value in cli_values.items():
        if value is None:
            continue
        if key in protocol_sets:
            raise click.BadParameter(f"{key}={protocol_sets[key]} and {_OPTION_FIELDS[key]} both set {key}; "
                                     f"give it once (the option {_OPTION_FIELDS[key]})", param_hint="--set")
        if key not in ("bits", "seeds"):
            overrides[key] = value
    jobs: list[Job] = []
    for dname in dataset_names:  # pair by pair, so that an error names the dataset (and, for paper, the method)
        for mname in method_names:
            try:
                jobs += expand_jobs(registry, [mname], [dname], p["protocol_name"], bits, seeds, overrides)
            except ProtocolError as exc:
                if p["protocol_name"] == "paper":  # the method's recipe is part of the cause
                    raise ProtocolError(f"{exc} [protocol paper, dataset {dname}, method {mname}]") from None
                if len(dataset_names) > 1:
                    raise ProtocolError(f"{exc} [dataset {dname}]") from None
                raise
    for weights in sorted({job.protocol.weights for job in jobs}):
        if not is_named_weights(weights) and not Path(weights).is_file():
            raise click.BadParameter(f"weights={weights}: no such file; use imagenet, random, pretext[:SIZE] or "
                                     f"--backbone-weights PATH", param_hint="--set")
    if p["shard"]:
        index, count = _parse_shard(p["shard"])
        jobs = shard_jobs(jobs, index, count)
    return GridPlan(jobs=jobs, methods=method_names, datasets=dataset_names, protocol=p["protocol_name"],
                    method_sets=method_sets, data_root=root, notes=notes)


def _run_defaults() -> dict[str, Any]:
    return {param.name: param.default for param in run.params if param.name}


def _check_engine_options(p: Mapping[str, Any]) -> None:
    """The options that shape how jobs run (not what they compute)."""
    if p["nproc"] < 1:
        raise click.BadParameter(f"{p['nproc']}: use 1 or more", param_hint="--nproc")
    if p["workers"] < -1:
        raise click.BadParameter(f"{p['workers']}: use 0 or more worker processes, or -1 for auto",
                                 param_hint="--workers")
    if p["log_every"] < 1:
        raise click.BadParameter(f"{p['log_every']}: use 1 or more steps", param_hint="--log-every")
    if not (math.isfinite(p["checkpoint_every"]) and p["checkpoint_every"] >= 0):
        raise click.BadParameter(f"{p['checkpoint_every']}: use 0 or more seconds (0 = every epoch)",
                                 param_hint="--checkpoint-every")
    results = Path(p["results"])
    if results.exists() and not results.is_dir():
        raise click.BadParameter(f"{results} exists and is not a directory", param_hint="--results")
    if p["shard"]:
        _parse_shard(p["shard"])


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise click.BadParameter(f"{text!r}: use I/N with 0 <= I < N", param_hint="--shard")
    return index, count


def _select_datasets(reg: Registry, given: str | None, root: Path) -> tuple[list[str], list[str]]:
    """The dataset names of ``--datasets`` and notes on datasets that ``all`` skipped."""
    names = split_names("--datasets", given, "dataset", reg.datasets.names())
    if names is None:
        return (["embedded"] if "embedded" in reg.datasets else reg.datasets.names()[:1]), []
    if names != ["all"]:
        for n in names:
            reg.datasets.get(n)
        return names, []
    from fgbench.data.official.catalog import available_datasets

    real, missing = available_datasets(reg, root)
    notes = [f"skipping dataset {name}: {reason} (see `fgbench data list`)" for name, reason in missing]
    synthetic = [spec.name for spec in reg.datasets.values() if spec.kind != "real"]
    return synthetic + real, notes


def _check_results_dir(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise click.BadParameter(f"{results} exists and is not a directory", param_hint="--results")
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"{results}: cannot create ({exc.strerror})", param_hint="--results") from None
