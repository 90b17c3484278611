"""``fgbench run``: expand the job grid, train and evaluate, write records, print the leaderboard."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click

from fgbench.backbones import BACKBONES
from fgbench.cli._grid import check_results_dir, plan_grid
from fgbench.cli._common import (DEFAULT_RESULTS, print_leaderboard, one_line_errors)
from fgbench.engine.device import EngineOptions
from fgbench._plugins import get_host
from fgbench.protocol import PROTOCOL_NAMES

if TYPE_CHECKING:  # pragma: no cover
    pass


@click.command()
@click.option("--methods", "-m", default=None, help="Comma-separated methods, or 'all' (default: all installed).")
@click.option("--datasets", "-d", default=None,
              help="Comma-separated datasets; 'all' = every dataset available on disk (default: embedded).")
@click.option("--bits", default=None, help="Bit lengths, e.g. 12,24,32,48 (default: the protocol's).")
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2 (default: the protocol's, 0).")
@click.option("--protocol", "protocol_name", type=click.Choice(PROTOCOL_NAMES), default="fair", show_default=True,
              help="fair: identical settings for all methods; paper: each method's published recipe.")
@click.option("--split", default=None, metavar="SPLIT",
              help="Class split: standard (default: every class, query = test split, database = train split), "
                   "or unseen:P with P in 5, 15, 25 (train on the seen classes; query and database from the last "
                   "P% of the classes, as DSH_Analysis), or unseen:P:seeded (unseen classes drawn from the seed). "
                   "See docs/protocol.md.")
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
@click.option("--checkpoint-every", type=float, default=10.0, show_default=True, metavar="SECONDS",
              help="Least seconds between resume checkpoints (written at epoch ends, at most ~10% of the "
                   "training time; 0 = every epoch).")
@click.option("--log-every", type=int, default=50, show_default=True, help="Steps between progress-bar loss updates.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes (GPUs) per job: relaunches itself under torchrun with DistributedDataParallel.")
@click.option("--sync-bn", is_flag=True, help="SyncBatchNorm across processes (with --nproc > 1, CUDA).")
@click.option("--find-unused-parameters", is_flag=True,
              help="DDP option for methods whose forward leaves some parameters unused.")
@click.option("--shard", default=None, metavar="I/N", help="Run only slice I of N of the job grid (0-based).")
@click.option("--trace-test-map", is_flag=True,
              help="Also evaluate the test split after every epoch and store the trace in the record (shown as "
                   "the best-test-epoch inflation; never used to choose a model or to rank; not part of the "
                   "job's identity).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@one_line_errors
def run(methods: str | None, datasets: str | None, bits: str | None, seeds: str | None, protocol_name: str,
        split: str | None, epochs: int | None, batch_size: int | None, lr: float | None, backbone: str | None,
        backbone_weights: Path | None, sets: tuple[str, ...], results: Path, data_root: Path | None, device: str,
        amp: str, channels_last: str, compile_: bool, gpu_augment: bool, workers: int, deterministic: bool,
        checkpoint_every: float, log_every: int, nproc: int, sync_bn: bool, find_unused_parameters: bool,
        shard: str | None, trace_test_map: bool, quiet: bool) -> None:
    """Train and evaluate methods on datasets; write one record per job and print the leaderboard.

    Jobs whose record already exists in --results are skipped, so rerunning
    the same command resumes an interrupted grid.  Every option, every --set
    (also for methods not selected) and every job's protocol is checked
    before the first job trains.  With --nproc N (or when started by
    torchrun) each job trains on N processes; see docs/performance.md.
    """
    from fgbench.engine import distributed
    from fgbench.engine.grid import end_with_failures, run_grid
    from fgbench.engine.runner import JobRunner

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
            check_results_dir(results)
        runner = JobRunner(reg, root, results, options, method_sets, trace_test_map=trace_test_map)
        what = (f"methods {', '.join(method_names)}; datasets {', '.join(dataset_names)}; protocol {protocol_name}"
                + (f"; split {split}" if split not in (None, "standard") else "")
                + (f"; {dist.world_size} processes per job" if dist.enabled else ""))
        failures = run_grid(runner, jobs, echo, what)
        if dist.is_main:
            print_leaderboard(results, datasets=set(dataset_names))
        end_with_failures(failures, echo)


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
