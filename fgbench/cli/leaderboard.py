"""``fgbench leaderboard``: aggregate run records into leaderboards (printed, or written with --write)."""

from __future__ import annotations

from pathlib import Path

import click

from fgbench.cli._common import DEFAULT_RESULTS, dataset_loader, one_line_errors, print_leaderboard
from fgbench.data.base import default_data_root
from fgbench._plugins import get_host

DEFAULT_BOARDS = Path("leaderboards")
DEFAULT_DOCS_PAGE = Path("docs") / "leaderboards.md"
_BARE_WRITE = ":default:"


@click.command()
@click.option("--results", type=click.Path(path_type=Path), default=DEFAULT_RESULTS, show_default=True,
              help="Folder of run records; `records` holds the committed ones the published leaderboards use.")
@click.option("--write", "write", is_flag=False, flag_value=_BARE_WRITE, default=None, metavar="[DIR]",
              help="Write the leaderboards: per board <dataset>.md/.csv, README.md (summary) and figures/ into DIR "
                   "(default leaderboards/), and with a bare --write also docs/leaderboards.md.")
@click.option("--docs-page", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the docs page here (default: docs/leaderboards.md with a bare --write, else none).")
@click.option("--figures/--no-figures", default=True, show_default=True, help="Draw the figures (PNG + SVG).")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="FGBENCH_DATA", default=None,
              help="Folder holding the real datasets, for the retrieval panels' images (env FGBENCH_DATA).")
@one_line_errors
def leaderboard(results: Path, write: str | None, docs_page: Path | None, figures: bool,
                data_root: Path | None) -> None:
    """Print (and with --write, write) leaderboards aggregated from run records.

    \b
    Regenerate the committed leaderboards (leaderboards/, docs/leaderboards.md):
      fgbench leaderboard --results records --write
    The same records always give byte-identical files.
    """
    from fgbench.results.leaderboard import paper_numbers, write_leaderboards
    from fgbench.records import iter_records

    if write is None:
        if docs_page is not None:
            raise click.UsageError("--docs-page needs --write")
        print_leaderboard(results)
        return
    if write == _BARE_WRITE:
        out_dir, docs_page = DEFAULT_BOARDS, docs_page or DEFAULT_DOCS_PAGE
    else:
        out_dir = Path(write)
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{out_dir} exists and is not a directory", param_hint="--write")
    reg = get_host().registry
    report = write_leaderboards(
        iter_records(results), out_dir, docs_page=docs_page, paper=paper_numbers(reg),
        installed=set(reg.methods.names()), datasets=dataset_loader(reg, data_root or default_data_root()),
        figures=figures, metrics=reg.metrics.values(),
    )
    for path in report.written:
        click.echo(f"wrote {path}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
