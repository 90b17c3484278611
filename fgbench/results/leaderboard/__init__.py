"""Leaderboards from run records: tables (markdown + CSV), significance matrices, figures.

The path from records to files, one module per step: :mod:`.frame` (records ->
pandas frame) -> :mod:`.boards` (frame -> boards) -> :mod:`.tables` (a board's
markdown tables) -> :mod:`.pages` (whole pages) -> :mod:`.write` (files below
the output folder).  What a board holds:

One *board* per (dataset, protocol), a row per method (and one per unseen-class split, ``protocol.split``, kept
apart from the standard boards and averaged only among themselves in the summary):

* measured mAP@all per bit length as ``mean ± std (n=...)`` over seeds
  (sample std, ddof = 1), params (M) and FLOPs (G) of the encode path at
  224 x 224 (multiply-accumulates, the papers' convention);
* paper-reported mAP in separate, labelled columns with the gap
  ``measured - paper`` (the numbers come from the installed plugins'
  ``PaperResult``; they are never mixed into measured columns);
* the setup and provenance of the runs: backbone, input size, epochs,
  initial weights (``imagenet:...``, or e.g. ``pretext:...`` on the embedded
  dataset, which is *not* ImageNet), seeds, device, fgbench version;
* pairwise significance matrices per bit length (:mod:`fgbench.results.stats`);
* figures (:mod:`fgbench.results.figures`): mAP vs bits, mAP vs FLOPs,
  precision-recall curves, retrieval examples;
* diverged training (a record whose ``divergence`` is set: a non-finite or
  exploded loss) is flagged: a ``†`` after the cell holding such a run, a
  note under the table naming the runs, a ``diverged`` CSV column, and a
  console warning (:func:`divergence_warnings`).  The marker, note and column
  appear only on boards holding a diverged run, so boards without one are
  byte for byte what they were before the flag existed.

:func:`write_leaderboards` writes ``<out>/<slug>.md`` and ``.csv`` per board
(slug ``<dataset>`` for ``fair``, ``<dataset>-<protocol>`` otherwise),
``<out>/README.md`` (summary across datasets), ``<out>/figures/`` and
optionally a docs page.  Output depends only on the records, the paper
numbers and (for retrieval panels) the dataset images: the same inputs give
byte-identical files.  Every file is written below ``out`` (names come from
records, so they are checked, and each path must resolve inside ``out``).
"""


from fgbench.results.leaderboard.boards import Board, Cell, MethodRow, build_boards
from fgbench.results.leaderboard.frame import PaperNumbers, paper_numbers, records_frame
from fgbench.results.leaderboard.pages import (REGENERATE, board_warnings, render_board, render_console, render_csv,
                                               render_docs_page, render_summary)
from fgbench.results.leaderboard.tables import (DIVERGED_MARK, divergence_note, divergence_warnings, measured_table,
                                                paper_table, setup_table, significance_section)
from fgbench.results.leaderboard.write import LeaderboardError, WriteReport, write_leaderboards

__all__ = [
    "Board", "Cell", "DIVERGED_MARK", "LeaderboardError", "MethodRow", "PaperNumbers", "REGENERATE", "WriteReport",
    "board_warnings", "build_boards", "divergence_note", "divergence_warnings", "measured_table", "paper_numbers",
    "paper_table", "records_frame", "render_board", "render_console", "render_csv", "render_docs_page",
    "render_summary", "setup_table", "significance_section", "write_leaderboards",
]
