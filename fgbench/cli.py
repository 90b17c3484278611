"""The ``fgbench`` command line (click): run, list, profile, leaderboard, data."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

from fgbench.backbones import BACKBONES, BackboneError
from fgbench.data.base import DatasetError, default_data_root
from fgbench.engine.device import EngineError, EngineOptions
from fgbench.engine.train import TrainingError
from fgbench.plugins import PluginError, get_host
from fgbench.protocol import PROTOCOL_NAMES, ProtocolError
from fgbench.results.records import RecordError

DEFAULT_RESULTS = Path("results")
EXPECTED_ERRORS = (PluginError, ProtocolError, DatasetError, RecordError, BackboneError, EngineError, TrainingError,
                   ValueError, OSError)


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a one-line ``Error: ...`` and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; rerun the same command to resume (finished jobs are kept)") from None

    return wrapper


def parse_int_list(option: str, value: str | None) -> list[int] | None:
    if value is None or value == "":
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=option) from None


def parse_sets(values: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``--set method.key=value`` (method option) or ``--set key=value`` (protocol field)."""
    methods: dict[str, dict[str, str]] = {}
    protocol: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE or METHOD.KEY=VALUE", param_hint="--set")
        key, value = item.split("=", 1)
        if "." in key:
            method, field = key.split(".", 1)
            methods.setdefault(method.strip(), {})[field.strip()] = value
        else:
            protocol[key.strip()] = value
    return methods, protocol


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fgbench")
def main() -> None:
    """fgbench: benchmark fine-grained deep hashing methods under one protocol.

    \b
    Quick start (CPU, offline, a few minutes):
      fgbench list                 installed methods, datasets, metrics
      fgbench run                  every method on the embedded dataset
      fgbench leaderboard          tables from the run records
    """


@main.command("list")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="FGBENCH_DATA", default=None,
              help="Folder holding the real datasets (env FGBENCH_DATA).")
@one_line_errors
def list_cmd(data_root: Path | None) -> None:
    """List installed methods, datasets (with availability), metrics and broken plugins."""
    host = get_host()
    reg = host.registry
    root = data_root or default_data_root()
    click.echo("Methods:")
    for spec in reg.methods.values():
        click.echo(f"  {spec.name:<14} {spec.summary}  [{spec.source}]")
    if not len(reg.methods):
        click.echo("  (none installed: pip install -e plugins/fgbench-dpsh)")
    click.echo("Datasets:")
    for spec in reg.datasets.values():
        status = spec.status(root)
        counts = ", ".join(f"{k} {v}" for k, v in status.counts.items())
        click.echo(f"  {spec.name:<14} {status.state:<8} {counts}  {spec.summary}")
    click.echo("Metrics:")
    for spec in reg.metrics.values():
        click.echo(f"  {spec.name:<14} {spec.summary}")
    if reg.failures:
        click.echo("Broken plugins (skipped):")
        for f in reg.failures:
            click.echo(f"  {f.plugin} ({f.source}): {f.reason}")


def resolve_names(kind: str, given: str | None, available: list[str], default: list[str]) -> list[str]:
    if not given:
        return default
    names = [n.strip() for n in given.split(",") if n.strip()]
    if names == ["all"]:
        return available
    return names


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
    _print_leaderboard(results, datasets=set(dataset_names))


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


def _paper_numbers(reg: Any) -> dict[str, dict[str, dict[int, float]]]:
    out: dict[str, dict[str, dict[int, float]]] = {}
    for spec in reg.methods.values():
        for res in spec.paper_results:
            for ds, per_bits in res.map.items():
                for b, v in per_bits.items():
                    out.setdefault(spec.name, {}).setdefault(ds, {}).setdefault(int(b), float(v))
    return out


def _print_leaderboard(results: Path, datasets: set[str] | None = None) -> None:
    from fgbench.results.leaderboard import build_tables, records_frame, render_markdown
    from fgbench.results.records import iter_records

    df = records_frame(iter_records(results))
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if df.empty:
        click.echo("no run records yet")
        return
    for table in build_tables(df, _paper_numbers(get_host().registry)):
        click.echo("\n" + render_markdown(table))


@main.command()
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True,
              help="Folder of run records.")
@click.option("--write", "write_dir", type=click.Path(path_type=Path), default=None,
              help="Write one markdown table + CSV per dataset into this folder.")
@one_line_errors
def leaderboard(results: Path, write_dir: Path | None) -> None:
    """Print (and with --write, write) leaderboards aggregated from run records."""
    from fgbench.results.leaderboard import build_tables, records_frame, write_tables
    from fgbench.results.records import iter_records

    if write_dir is None:
        _print_leaderboard(results)
        return
    tables = build_tables(records_frame(iter_records(results)), _paper_numbers(get_host().registry))
    for path in write_tables(tables, write_dir):
        click.echo(f"wrote {path}")


@main.command()
@click.option("--methods", "-m", default=None, help="Comma-separated methods (default: all installed).")
@click.option("--bits", default="12", show_default=True, help="Bit lengths.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default="resnet50", show_default=True)
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--num-classes", type=int, default=200, show_default=True, help="Classes (CUB: 200).")
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE", help="Method option; repeatable.")
@one_line_errors
def profile(methods: str | None, bits: str, backbone: str, input_size: int, num_classes: int,
            sets: tuple[str, ...]) -> None:
    """Parameters and FLOPs of each method's encode path (random weights, CPU).

    FLOPs follow the papers' convention: multiply-accumulates, one image.
    """
    from fgbench.profiling import profile_methods

    reg = get_host().registry
    names = resolve_names("method", methods, reg.methods.names(), reg.methods.names())
    method_sets, _ = parse_sets(sets)
    rows = profile_methods(reg, names, parse_int_list("--bits", bits) or [12], backbone, input_size, num_classes,
                           method_sets)
    from tabulate import tabulate

    click.echo(f"encode path at {input_size}x{input_size}, backbone {backbone}; FLOPs = multiply-accumulates (G)")
    click.echo(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))


def _attach_optional_groups() -> None:
    try:
        from fgbench.cli_data import data
    except ImportError:  # pragma: no cover - data commands not available
        return
    main.add_command(data)


_attach_optional_groups()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
