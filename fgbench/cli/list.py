"""``fgbench list``: installed methods, datasets (with availability), metrics, conflicting names and broken plugins."""

from __future__ import annotations

from pathlib import Path

import click

from fgbench.cli._common import one_line_errors
from fgbench.data.base import default_data_root
from fgbench._plugins import get_host


@click.command("list")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="FGBENCH_DATA", default=None,
              help="Folder holding the real datasets (env FGBENCH_DATA).")
@one_line_errors
def list_cmd(data_root: Path | None) -> None:
    """List installed methods, datasets (with availability), metrics, conflicting names and broken plugins."""
    host = get_host()
    reg = host.registry
    root = data_root or default_data_root()
    click.echo("Methods:")
    for spec in reg.methods.values():
        click.echo(f"  {spec.name:<14} {spec.summary}  [{spec.source}]")
    if not len(reg.methods) and not reg.methods.conflicts:
        click.echo("  (none installed: pip install -e plugins/fgbench-dpsh)")
    click.echo("Datasets:")
    for spec in reg.datasets.values():
        status = spec.status(root)
        counts = ", ".join(f"{k} {v}" for k, v in status.counts.items())
        click.echo(f"  {spec.name:<14} {status.state:<8} {counts}  {spec.summary}")
    click.echo("Metrics:")
    for spec in reg.metrics.values():
        click.echo(f"  {spec.name:<14} {spec.summary}")
    conflicts = reg.conflicts()
    if conflicts:
        click.echo("Conflicting names (refused until one is uninstalled):")
        for kind, name, sources in conflicts:
            click.echo(f"  {name:<14} {kind} registered by {', '.join(sources[:-1])} and {sources[-1]}: "
                       f"uninstall one of them")
    if reg.failures:
        click.echo("Broken plugins (skipped):")
        for f in reg.failures:
            click.echo(f"  {f.plugin} ({f.source}): {f.reason}")
