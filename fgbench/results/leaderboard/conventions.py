"""What each board's stored codes say beyond the measured table: the convention effect and registered metrics.

Two tables per board, each in the board's page and in its own CSV:

* **Tie conventions** (``<slug>.conventions.csv``): each method's mAP under
  the conventions other code bases score with
  (:func:`fgbench.results.rescore.peer_conventions`: ``index``, ``deephash``,
  ``deephash@1000``) minus its tie-averaged mAP@all, both computed from the
  same stored codes (issue #16: the convention alone moves published numbers
  by points).  Mean over the runs (seeds) that keep codes.
* **Registered metrics** (``<slug>.metrics.csv``): every registered metric
  (and every metric the records hold), mean over seeds; a value a record
  lacks (a metric plugin installed after the run) is computed from its
  stored codes under fgbench's convention, so adding a metric re-scores every
  record that keeps codes.

Records without codes (record version 1 or 2) are counted and named as such,
never guessed; an unreadable sidecar is reported in a note (the record's own
metrics still count).  Output depends only on the records and their sidecars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from fgbench.errors import first_line
from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import mean_average_precision
from fgbench.records import CodesError, NoCodesError, RunRecord, read_codes
from fgbench.results.leaderboard.boards import Board
from fgbench.results.leaderboard.pages import docs_link
from fgbench.results.leaderboard.tables import md_table
from fgbench.results.rescore import AVERAGE, Convention, missing_metrics, peer_conventions, rescore

NO_CODES = "no stored codes"
UNREADABLE = "codes unreadable"


_MAP = MetricSpec("map", "mAP@all, tie-averaged", lambda ev: ev.mean_average_precision)


@dataclass
class RunScores:
    """What one record's codes gave (``status`` "" when they were read, else why not)."""

    dataset: str
    protocol: str
    method: str
    bits: int
    seed: int
    metrics: dict[str, float]                                  # recorded, plus those filled from the codes
    filled: set[str] = field(default_factory=set)              # names computed from the codes
    average: float | None = None                               # tie-averaged mAP@all from the codes
    peers: dict[str, float] = field(default_factory=dict)      # convention label -> mAP from the codes
    status: str = ""


def score_records(records: Iterable[RunRecord], metrics: Sequence[MetricSpec] = (),
                  peers: Sequence[Convention] | None = None) -> tuple[list[RunScores], list[str]]:
    """Per record: its metrics (missing registered ones computed from its codes) and its peer-convention mAP.

    Returns the scores and one note per record whose sidecar could not be read.
    """
    peers = peer_conventions() if peers is None else tuple(peers)
    out, notes = [], []
    for r in records:
        s = RunScores(r.dataset, str(r.protocol.get("name", "fair")), r.method, int(r.bits), int(r.seed),
                      {k: float(v) for k, v in r.metrics.items()})
        try:
            codes = read_codes(r)
        except NoCodesError:
            s.status = NO_CODES
        except CodesError as exc:
            s.status = UNREADABLE
            notes.append(f"{first_line(exc)} (its tie-convention and re-scored cells are left out)")
        else:
            by_name = {m.name: m for m in missing_metrics(r.metrics, metrics)}
            needed = [*by_name.values()] + ([] if "map" in by_name else [_MAP])
            for score in rescore(codes, needed, [AVERAGE]):
                if score.metric in by_name and score.value is not None:
                    s.metrics[score.metric] = score.value
                    s.filled.add(score.metric)
                if score.metric == "map":
                    s.average = score.value
            for conv in peers:
                s.peers[conv.label] = mean_average_precision(codes.query_codes, codes.database_codes,
                                                             codes.query_labels, codes.database_labels,
                                                             ties=conv.ties, topk=conv.topk)
        out.append(s)
    return out, notes


def _runs(board: Board, scores: Sequence[RunScores]) -> dict[tuple[str, int], list[RunScores]]:
    """(method, bits) -> the board's runs, seed order."""
    out: dict[tuple[str, int], list[RunScores]] = {}
    for s in sorted(scores, key=lambda s: s.seed):
        if s.dataset == board.dataset and s.protocol == board.protocol:
            out.setdefault((s.method, s.bits), []).append(s)
    return out


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def convention_rows(board: Board, scores: Sequence[RunScores],
                    peers: Sequence[Convention] | None = None) -> list[dict[str, object]]:
    """One row per (method, bits) of ``board``: runs, runs with codes, tie-averaged mAP and each peer's difference."""
    peers = peer_conventions() if peers is None else tuple(peers)
    runs = _runs(board, scores)
    rows = []
    for r in board.rows:
        for bits in board.bits:
            group = runs.get((r.method, bits), [])
            if not group:
                continue
            coded = [s for s in group if s.average is not None]
            row: dict[str, object] = {"method": r.method, "bits": bits, "runs": len(group),
                                      "runs_with_codes": len(coded),
                                      "map_average": float(np.mean([s.average for s in coded])) if coded else math.nan}
            for conv in peers:
                diffs = [s.peers[conv.label] - s.average for s in coded if conv.label in s.peers]  # type: ignore[operator]
                row[f"{conv.label}_minus_average"] = float(np.mean(diffs)) if diffs else math.nan
            statuses = sorted({s.status for s in group if s.status})
            row["note"] = "; ".join(f"{sum(s.status == st for s in group)} run(s): {st}" for st in statuses)
            rows.append(row)
    return rows


def conventions_section(board: Board, scores: Sequence[RunScores], peers: Sequence[Convention] | None = None,
                        docs_prefix: str | None = "../docs/") -> str:
    """The board page's "Tie conventions" section."""
    peers = peer_conventions() if peers is None else tuple(peers)
    rows = convention_rows(board, scores, peers)
    text = ["## Tie conventions\n",
            ("The same stored codes scored under the conventions other code bases use, minus fgbench's mAP@all "
             "(expected value over random orders within ties): positive means that convention reports a higher "
             "mAP for the same codes. `index`: ties broken by database index; `deephash`: DeepHash-pytorch's "
             "`CalcTopMap` (argsort per query) over the whole database; `deephash@1000`: `CalcTopMap` with "
             "topk = 1000, the mAP@1000 many papers report. Mean over the runs that keep their codes (record "
             "version 3); `fgbench evaluate` re-scores single runs "
             f"({docs_link('metrics', 'metrics.md', docs_prefix)}). Also in "
             f"[{board.slug}.conventions.csv]({board.slug}.conventions.csv).\n")]
    if not peers:
        text.append("The installed evaluation engine has no tie convention other than `average`.\n")
    headers = ["method", "bits", "runs with codes", "mAP@all (average)", *[f"{c.label} − average" for c in peers]]
    table = []
    for row in rows:
        if not row["runs_with_codes"]:
            cells = [NO_CODES if "no stored codes" in str(row["note"]) else UNREADABLE] * (1 + len(peers))
        else:
            cells = [f"{row['map_average']:.4f}"] + [
                "—" if math.isnan(row[f"{c.label}_minus_average"]) else _signed(row[f"{c.label}_minus_average"])  # type: ignore[arg-type]
                for c in peers]
        table.append([str(row["method"]), str(row["bits"]), f"{row['runs_with_codes']}/{row['runs']}", *cells])
    text.append(md_table(headers, table, [False, True, True, True] + [True] * len(peers)))
    if rows and not any(row["runs_with_codes"] for row in rows):
        text.append("No record of this board keeps its codes (they were written before records kept them, record "
                    "version ≤ 2): rerun the jobs to fill this table.\n")
    return "\n".join(text)


def conventions_csv(board: Board, scores: Sequence[RunScores], peers: Sequence[Convention] | None = None) -> str:
    rows = [{"dataset": board.dataset, "protocol": board.protocol, **row}
            for row in convention_rows(board, scores, peers)]
    return _csv(rows)


def metric_names(scores: Sequence[RunScores], metrics: Sequence[MetricSpec] = ()) -> list[str]:
    """``map`` first, then every other registered or recorded metric by name."""
    names = {m.name for m in metrics} | {k for s in scores for k in s.metrics}
    return sorted(names, key=lambda n: (n != "map", n))


def metric_rows(board: Board, scores: Sequence[RunScores], names: Sequence[str]) -> list[dict[str, object]]:
    """One row per (method, bits): each metric's mean over the runs that have it, and how many were re-scored."""
    runs = _runs(board, scores)
    rows = []
    for r in board.rows:
        for bits in board.bits:
            group = runs.get((r.method, bits), [])
            if not group:
                continue
            row: dict[str, object] = {"method": r.method, "bits": bits, "runs": len(group)}
            for name in names:
                values = [s.metrics[name] for s in group if name in s.metrics]
                row[name] = float(np.mean(values)) if values else math.nan
                row[f"{name}_runs"] = len(values)
                row[f"{name}_from_codes"] = sum(name in s.filled for s in group)
            rows.append(row)
    return rows


def metrics_section(board: Board, scores: Sequence[RunScores], metrics: Sequence[MetricSpec] = (),
                    docs_prefix: str | None = "../docs/") -> str:
    """The board page's "Registered metrics" section."""
    names = metric_names([s for s in scores if s.dataset == board.dataset and s.protocol == board.protocol], metrics)
    rows = metric_rows(board, scores, names)
    table = []
    for row in rows:
        cells = []
        for name in names:
            if row[f"{name}_runs"] == 0:
                cells.append("—")
                continue
            star = "*" if row[f"{name}_from_codes"] else ""
            cells.append(f"{row[name]:.4f}{star}" + (f" (n={row[f'{name}_runs']})"
                                                       if row[f"{name}_runs"] != row["runs"] else ""))
        table.append([str(row["method"]), str(row["bits"]), str(row["runs"]), *cells])
    text = ["## Registered metrics\n",
            ("Every registered metric, mean over seeds (fgbench's convention: expected value over random orders "
             f"within ties; {docs_link('metrics', 'metrics.md', docs_prefix)}). "
             "\\* a value that some runs did not record (its metric "
             "was registered after they ran), computed from their stored codes. —: no run of the row has it "
             f"(records without stored codes cannot be re-scored). Also in [{board.slug}.metrics.csv]"
             f"({board.slug}.metrics.csv).\n"),
            md_table(["method", "bits", "runs", *names], table, [False, True, True] + [True] * len(names))]
    return "\n".join(text)


def metrics_csv(board: Board, scores: Sequence[RunScores], metrics: Sequence[MetricSpec] = ()) -> str:
    names = metric_names([s for s in scores if s.dataset == board.dataset and s.protocol == board.protocol], metrics)
    return _csv([{"dataset": board.dataset, "protocol": board.protocol, **row}
                 for row in metric_rows(board, scores, names)])


def _csv(rows: list[dict[str, object]]) -> str:
    frame = pd.DataFrame(rows)
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6f", na_rep="")
