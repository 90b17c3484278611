"""The ``fgbench`` command line (click): run, list, profile, leaderboard, data."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from fgbench.backbones import BACKBONES, BackboneError
from fgbench.data.base import DatasetError, default_data_root
from fgbench.engine.device import EngineError
from fgbench.engine.train import TrainingError
from fgbench.plugins import PluginError, get_host
from fgbench.protocol import ProtocolError
from fgbench.records import RecordError

DEFAULT_RESULTS = Path("results")
EXPECTED_ERRORS = (PluginError, ProtocolError, DatasetError, RecordError, BackboneError, EngineError, TrainingError,
                   ValueError, OSError)


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a one-line ``Error: ...`` and exit status 1 (no traceback).

    Set ``FGBENCH_DEBUG=1`` to see the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as exc:
            if os.environ.get("FGBENCH_DEBUG"):
                raise
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


def _register_commands() -> None:
    """Import the modules that add their commands to :func:`main` (one module per command group)."""
    from fgbench import cli_leaderboard, cli_run, cli_scaffold, cli_submit  # noqa: F401  (register @main.command)
    from fgbench.cli_data import data

    main.add_command(data)


_register_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
