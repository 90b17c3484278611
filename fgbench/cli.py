"""The ``fgbench`` command line (click): run, list, profile, leaderboard, data."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click

from fgbench.backbones import BACKBONES, BackboneError
from fgbench.data.base import DatasetError, default_data_root
from fgbench.engine.device import EngineError
from fgbench.engine.train import TrainingError
from fgbench.plugins import NamedRegistry, PluginError, Registry, get_host
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
    """``"12,48"`` -> ``[12, 48]``; None when the option was not given.

    An option given with no integer in it (``""``, ``","``) is a usage error,
    never "the default".
    """
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=option) from None
    if not items:
        example = {"--seeds": "0,1,2"}.get(option, "12,48")
        raise click.BadParameter(f"{value!r}: give at least one integer, e.g. {option} {example} "
                                 f"(leave the option out for the default)", param_hint=option)
    return items


def parse_sets(values: tuple[str, ...]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``--set method.key=value`` (method option) or ``--set key=value`` (protocol field).

    Only the syntax is checked here (``KEY=VALUE``, no empty name, no key set
    twice to different values); :func:`check_method_sets` and the protocol
    resolution check the names and values.
    """
    methods: dict[str, dict[str, str]] = {}
    protocol: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE or METHOD.KEY=VALUE", param_hint="--set")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            method, field = (part.strip() for part in key.split(".", 1))
            target = methods.setdefault(method, {})
        else:
            method, field, target = "", key, protocol
        if not field or "." in key and not method:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE or METHOD.KEY=VALUE (a name is missing)",
                                     param_hint="--set")
        if field in target and target[field] != value:
            raise click.BadParameter(f"{key} is set twice ({target[field]!r} and {value!r}); give it once",
                                     param_hint="--set")
        target[field] = value
    return methods, protocol


def split_names(option: str, given: str | None, kind: str, known: list[str]) -> list[str] | None:
    """The names in a comma-separated option; None when it was not given.

    Given but empty (``""``, ``","``) or with a name twice is a usage error
    naming the option and the ``known`` names.
    """
    if given is None:
        return None
    names = [n.strip() for n in given.split(",") if n.strip()]
    if not names:
        example = known[0] if known else "NAME"
        raise click.BadParameter(f"give at least one {kind} name, e.g. {option} {example} "
                                 f"(available: {', '.join(known) or '(none)'}, or all)", param_hint=option)
    for i, name in enumerate(names):
        if name in names[:i]:
            raise click.BadParameter(f"{given!r}: {name} is given twice", param_hint=option)
    return names


def resolve_names(option: str, given: str | None, table: NamedRegistry[Any],
                  default: list[str] | None = None) -> list[str]:
    """Registry names from a comma-separated option: ``all``, a checked list, or ``default`` (all) when not given.

    ``table`` is a registry table (``registry.methods``); an unknown name
    raises its one-line "Unknown method 'x'. Did you mean ...?" error.
    """
    names = split_names(option, given, table.kind, table.names())
    if names is None:
        return list(table.names() if default is None else default)
    if names == ["all"]:
        return table.names()
    for name in names:
        table.get(name)
    return names


def check_method_sets(registry: Registry, method_sets: Mapping[str, Mapping[str, str]],
                      selected: Sequence[str]) -> list[str]:
    """Check every ``--set METHOD.KEY=VALUE`` against its method's config, selected or not.

    The method must exist, each key be a field of its config and each value
    convert (``MethodSpec.make_config``); otherwise a usage error on
    ``--set``.  Returns one warning line per method that is valid but not in
    ``selected`` (its settings have no effect).
    """
    notes = []
    for name, values in method_sets.items():
        shown = " ".join(f"{name}.{k}={v}" for k, v in values.items())
        try:
            spec = registry.methods.get(name)
        except PluginError as exc:
            raise click.BadParameter(f"{shown}: {exc}", param_hint="--set") from None
        try:
            spec.make_config(values)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc).strip().splitlines()[0], param_hint="--set") from None
        if name not in selected:
            notes.append(f"warning: --set {shown} has no effect: method {name} is not selected "
                         f"(methods: {', '.join(selected)})")
    return notes


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


@main.command()
@click.option("--methods", "-m", default=None, help="Comma-separated methods (default: all installed).")
@click.option("--bits", default="12", show_default=True, help="Bit lengths.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default="resnet50", show_default=True)
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--num-classes", type=int, default=200, show_default=True, help="Classes (CUB: 200).")
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE",
              help="Method option, e.g. cnet.zoom=off; repeatable.")
@one_line_errors
def profile(methods: str | None, bits: str, backbone: str, input_size: int, num_classes: int,
            sets: tuple[str, ...]) -> None:
    """Parameters and FLOPs of each method's encode path (random weights, CPU).

    FLOPs follow the papers' convention: multiply-accumulates, one image.
    """
    from fgbench.profiling import profile_methods, profile_protocol

    reg = get_host().registry
    names = resolve_names("--methods", methods, reg.methods)
    if not names:
        raise click.ClickException("no method plugins are installed; install one, "
                                   "e.g. pip install -e plugins/fgbench-dpsh")
    method_sets, protocol_sets = parse_sets(sets)
    if protocol_sets:
        key, value = next(iter(protocol_sets.items()))
        raise click.BadParameter(f"{key}={value}: profile takes METHOD.KEY=VALUE only "
                                 f"(use --backbone, --input-size, --bits)", param_hint="--set")
    for note in check_method_sets(reg, method_sets, names):
        click.echo(note, err=True)
    bit_list = parse_int_list("--bits", bits) or []
    profile_protocol(backbone, input_size, bit_list, num_classes)  # every option checked before any model is built
    rows = profile_methods(reg, names, bit_list, backbone, input_size, num_classes, method_sets)
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
