"""``fgbench run``: expand the job grid, train and evaluate, write records, print the leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fgbench.backbones import BACKBONES
from fgbench.cli import DEFAULT_RESULTS, main, one_line_errors, parse_int_list, parse_sets, resolve_names
from fgbench.cli_leaderboard import print_leaderboard
from fgbench.data.base import default_data_root
from fgbench.engine.device import EngineOptions
from fgbench.plugins import get_host
from fgbench.protocol import PROTOCOL_NAMES


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
              help="Method option (dpsh.eta=5) or protocol field (input_size=112); repeatable.")
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True,
              help="Folder for run records (one JSON per job; existing ones are skipped).")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="FGBENCH_DATA", default=None,
              help="Folder holding the real datasets (env FGBENCH_DATA; default ~/.cache/fgbench/data).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision (auto: bf16 on CUDA when supported, fp16 otherwise, off on CPU).")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (CUDA).")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms (slower; for exact resume checks).")
@click.option("--shard", default=None, metavar="I/N", help="Run only slice I of N of the job grid (0-based).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@one_line_errors
def run(methods: str | None, datasets: str | None, bits: str | None, seeds: str | None, protocol_name: str,
        epochs: int | None, batch_size: int | None, lr: float | None, backbone: str | None,
        backbone_weights: Path | None, sets: tuple[str, ...], results: Path, data_root: Path | None, device: str,
        amp: str, channels_last: str, compile_: bool, workers: int, deterministic: bool, shard: str | None,
        quiet: bool) -> None:
    """Train and evaluate methods on datasets; write one record per job and print the leaderboard.

    Jobs whose record already exists in --results are skipped, so rerunning
    the same command resumes an interrupted grid.
    """
    from fgbench.engine.runner import JobRunner, expand_jobs
    from fgbench.engine.runner import shard as shard_jobs

    host = get_host()
    reg = host.registry
    root = data_root or default_data_root()
    method_names = resolve_names("method", methods, reg.methods.names(), reg.methods.names())
    if not method_names:
        raise click.ClickException("no method plugins are installed; install one, e.g. pip install -e plugins/fgbench-dpsh")
    dataset_names = _select_datasets(reg, datasets, root)
    method_sets, protocol_sets = parse_sets(sets)
    for name in method_sets:
        reg.methods.get(name)
    overrides: dict[str, Any] = dict(protocol_sets)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("backbone", backbone)):
        if value is not None:
            overrides[key] = value
    if backbone_weights is not None:
        if not backbone_weights.is_file():
            raise click.BadParameter(f"{backbone_weights}: no such file", param_hint="--backbone-weights")
        overrides["weights"] = str(backbone_weights)
    jobs = expand_jobs(reg, method_names, dataset_names, protocol_name, parse_int_list("--bits", bits),
                       parse_int_list("--seeds", seeds), overrides)
    if shard:
        try:
            index, count = (int(v) for v in shard.split("/"))
            assert 0 <= index < count
        except (ValueError, AssertionError):
            raise click.BadParameter(f"{shard!r}: use I/N with 0 <= I < N", param_hint="--shard") from None
        jobs = shard_jobs(jobs, index, count)
    options = EngineOptions(device=device, amp=amp, channels_last=channels_last, compile=compile_, num_workers=workers,
                            deterministic=deterministic, progress=not quiet)
    _check_results_dir(results)
    runner = JobRunner(reg, root, results, options, method_sets)
    todo = [j for j in jobs if not j.path(results).exists()]
    click.echo(f"{len(jobs)} job(s): {len(jobs) - len(todo)} already done, {len(todo)} to run "
               f"(methods {', '.join(method_names)}; datasets {', '.join(dataset_names)}; protocol {protocol_name})")
    for i, job in enumerate(todo, 1):
        record = runner.run(job, log=click.echo)
        if record is not None:
            click.echo(f"[{i}/{len(todo)}] {job.label}: mAP {record.metrics.get('map', float('nan')):.4f} "
                       f"(train {record.train_seconds:.1f}s, eval {record.eval_seconds:.2f}s)")
    print_leaderboard(results, datasets=set(dataset_names))


def _select_datasets(reg: Any, given: str | None, root: Path) -> list[str]:
    if not given:
        return ["embedded"] if "embedded" in reg.datasets else reg.datasets.names()[:1]
    names = [n.strip() for n in given.split(",") if n.strip()]
    if names != ["all"]:
        for n in names:
            reg.datasets.get(n)
        return names
    from fgbench.data.availability import available_datasets

    real, missing = available_datasets(reg, root)
    for name, reason in missing:
        click.echo(f"skipping dataset {name}: {reason} (see `fgbench data list`)", err=True)
    synthetic = [spec.name for spec in reg.datasets.values() if spec.kind != "real"]
    return synthetic + real


def _check_results_dir(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise click.BadParameter(f"{results} exists and is not a directory", param_hint="--results")
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"{results}: cannot create ({exc.strerror})", param_hint="--results") from None
