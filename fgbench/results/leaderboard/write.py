"""Writing the leaderboards: every file below the output folder (checked), atomically, figures included."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence


from fgbench._atomic import atomic_write_text
from fgbench._names import validate_name
from fgbench.metrics.base import MetricSpec
from fgbench.records import RunRecord
from fgbench.results.leaderboard.conventions import (conventions_csv, conventions_section, metrics_csv,
                                                     metrics_section, score_records)
from fgbench.results.leaderboard.frame import PaperNumbers, records_frame
from fgbench.results.leaderboard.boards import Board, build_boards
from fgbench.results.leaderboard.pages import (FIGURES_DIR, board_warnings, figure_stems, render_board, render_csv,
                                               render_docs_page, render_summary)
from fgbench.errors import LeaderboardError, first_line


@dataclass
class WriteReport:
    """What :func:`write_leaderboards` wrote, and what it skipped (with the reason)."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # mixed settings/versions, diverged runs (board_warnings)


DatasetLoader = Callable[[str], Any]
"""name -> :class:`fgbench.RetrievalDataset`; raises when the dataset is not available."""


def write_figures(board: Board, fig_dir: Path, datasets: DatasetLoader | None, report: WriteReport,
                  style: Mapping[str, Mapping[str, Any]]) -> None:
    from fgbench.results import figures

    stems = figure_stems(board)
    title = f"{board.dataset} ({board.protocol})" if board.split == "standard" else \
        f"{board.dataset} ({board.protocol}, unseen classes {board.split})"
    series = {r.method: [(b, c.mean, c.std, c.n) for b, c in sorted(r.cells.items())] for r in board.rows}
    report.written += figures.save(figures.map_vs_bits(title, series, style), fig_dir / stems["map-vs-bits"])
    points = {b: {r.method: (r.cost[b][1], r.cells[b].mean, r.cells[b].std, r.cells[b].n)
                  for r in board.rows if b in r.cells} for b in board.bits}
    report.written += figures.save(figures.map_vs_flops(title, points, style, f"FLOPs (G, MACs @{board.cost_input})"),
                                   fig_dir / stems["map-vs-flops"])
    if "pr" in stems:
        curves = {b: {r.method: r.pr[b] for r in board.rows if b in r.pr} for b in board.bits}
        curves = {b: c for b, c in curves.items() if c}
        report.written += figures.save(figures.pr_curves(title, curves, style), fig_dir / stems["pr"])
    m = board.example_method
    if m is None or board.split != "standard":  # no panel for unseen-class boards (see figure_stems)
        return
    try:
        if datasets is None:
            raise LookupError("no dataset loader given")
        ds = datasets(board.dataset)
        query, database = ds.split("test"), ds.split("train")
    except Exception as exc:  # noqa: BLE001 - any reason the images cannot be had
        report.notes.append(f"retrieval panel of {board.slug} not redrawn: dataset {board.dataset} unavailable "
                            f"({first_line(exc)}); an existing panel is kept")
        return
    bits, seed, examples = board.row(m).examples  # type: ignore[misc]
    fig = figures.retrieval_panel(f"{m} on {board.dataset} ({board.protocol}), {bits} bits, seed {seed}",
                                  examples, query, database)
    report.written += figures.save(fig, fig_dir / stems["retrieval"], svg=False)


def output_paths(boards: Sequence[Board], out_dir: Path, figures: bool = True) -> list[Path]:
    """Every path :func:`write_leaderboards` may write below ``out_dir`` (docs page aside)."""
    out_dir = Path(out_dir)
    paths = [out_dir / "README.md"]
    for b in boards:
        paths += [out_dir / f"{b.slug}.md", out_dir / f"{b.slug}.csv", out_dir / f"{b.slug}.conventions.csv",
                  out_dir / f"{b.slug}.metrics.csv"]
        if figures:
            paths += [out_dir / FIGURES_DIR / f"{stem}{ext}" for stem in figure_stems(b).values()
                      for ext in (".png", ".svg")]
    return paths


def check_output_paths(boards: Sequence[Board], out_dir: Path, figures: bool = True) -> None:
    """Refuse boards whose names would put a file outside ``out_dir`` (defence in depth: records are validated on read).

    Raises:
        LeaderboardError: one line naming the board's dataset or protocol, or the path.
    """
    for b in boards:
        try:
            validate_name("dataset", b.dataset)
            validate_name("protocol", b.protocol)
        except ValueError as exc:
            raise LeaderboardError(f"leaderboard of {b.dataset!r} ({b.protocol!r}): {exc}; fix or delete its "
                                   f"records") from None
    root = Path(out_dir).resolve()
    for path in output_paths(boards, out_dir, figures):
        target = path.resolve()
        if root not in target.parents:
            raise LeaderboardError(f"{path}: resolves to {target}, outside the output folder {root} (a symbolic "
                                   f"link?); nothing was written: remove the link or pick another --write DIR")


def write_leaderboards(records: Iterable[RunRecord], out_dir: Path, *, docs_page: Path | None = None,
                       paper: PaperNumbers | None = None, installed: set[str] | None = None,
                       datasets: DatasetLoader | None = None, figures: bool = True,
                       metrics: Sequence[MetricSpec] = ()) -> WriteReport:
    """Write every board (``.md`` + ``.csv``), the summary ``README.md``, figures and the docs page.

    Files are written atomically and never deleted (a board whose records
    disappeared keeps its old files).  ``figures=False``, or matplotlib not
    installed, skips the figures (the markdown still links them).  Every file
    but ``docs_page`` is written below ``out_dir``: before anything is written,
    each board's dataset and protocol must be valid names
    (:func:`fgbench._names.validate_name`) and each output path must
    resolve inside ``out_dir``.  The warnings the pages carry (mixed protocol
    settings, mixed code versions, diverged runs) are listed in
    ``report.warnings``, one line each.

    Links from the boards to the docs (``metrics.md``, ``leaderboards.md``) are
    relative to the folder of ``docs_page`` when one is written (a bare
    ``--write``: ``leaderboards/`` beside ``docs/``); without a docs page the
    output folder may be anywhere, so the pages name the docs instead of
    linking them (no link can break).
    Each board also gets its tie-convention and registered-metrics tables
    (:mod:`.conventions`: page sections and ``<slug>.conventions.csv``,
    ``<slug>.metrics.csv``), re-scored from the records' stored codes;
    ``metrics`` are the registered metrics (a record lacking one is re-scored
    from its codes).

    Raises:
        LeaderboardError: an output path would leave ``out_dir`` (nothing is written then).
    """
    out_dir = Path(out_dir)
    records = list(records)
    boards = build_boards(records_frame(records), paper, installed)
    check_output_paths(boards, out_dir, figures)
    report = WriteReport(warnings=board_warnings(boards))
    scores, report.notes = score_records(records, metrics) if boards else ([], [])
    docs_prefix = None
    if docs_page is not None:
        docs_prefix = Path(os.path.relpath(docs_page.resolve().parent, out_dir.resolve())).as_posix() + "/"
    for b in boards:
        md_path, csv_path = out_dir / f"{b.slug}.md", out_dir / f"{b.slug}.csv"
        conv_path, metrics_path = out_dir / f"{b.slug}.conventions.csv", out_dir / f"{b.slug}.metrics.csv"
        page = (render_board(b, docs_prefix) + "\n" + conventions_section(b, scores, docs_prefix=docs_prefix)
                + "\n" + metrics_section(b, scores, metrics, docs_prefix=docs_prefix))
        atomic_write_text(md_path, page)
        atomic_write_text(csv_path, render_csv(b))
        atomic_write_text(conv_path, conventions_csv(b, scores))
        atomic_write_text(metrics_path, metrics_csv(b, scores, metrics))
        report.written += [md_path, csv_path, conv_path, metrics_path]
    readme = out_dir / "README.md"
    atomic_write_text(readme, render_summary(boards, docs_prefix))
    report.written.append(readme)
    if docs_page is not None:
        prefix = Path(os.path.relpath(out_dir.resolve(), docs_page.resolve().parent)).as_posix() + "/"
        atomic_write_text(docs_page, render_docs_page(boards, prefix))
        report.written.append(docs_page)
    if figures and boards:
        try:
            from fgbench.results import figures as _figures  # noqa: F401
        except ImportError:
            report.notes.append("figures skipped: matplotlib is not installed (pip install 'fgbench[plots]')")
            return report
        from fgbench.results.figures import method_style

        style = method_style(sorted({r.method for b in boards for r in b.rows}))
        for b in boards:
            write_figures(b, out_dir / FIGURES_DIR, datasets, report, style)
    return report
