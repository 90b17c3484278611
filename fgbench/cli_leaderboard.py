"""``fgbench leaderboard``: aggregate run records into tables (printed, or written with --write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fgbench.cli import DEFAULT_RESULTS, main, one_line_errors
from fgbench.plugins import get_host


def _paper_numbers(reg: Any) -> dict[str, dict[str, dict[int, float]]]:
    out: dict[str, dict[str, dict[int, float]]] = {}
    for spec in reg.methods.values():
        for res in spec.paper_results:
            for ds, per_bits in res.map.items():
                for b, v in per_bits.items():
                    out.setdefault(spec.name, {}).setdefault(ds, {}).setdefault(int(b), float(v))
    return out


def print_leaderboard(results: Path, datasets: set[str] | None = None) -> None:
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
        print_leaderboard(results)
        return
    tables = build_tables(records_frame(iter_records(results)), _paper_numbers(get_host().registry))
    for path in write_tables(tables, write_dir):
        click.echo(f"wrote {path}")
