"""Re-scoring run records from their stored codes (issue #16): any registered metric, any tie convention.

A version 3 record keeps the binary codes and labels its job was scored with
(:func:`fgbench.records.read_codes`).  :func:`rescore` evaluates them again,
without retraining, with :func:`fgbench.metrics.retrieval.evaluate_codes`
under a :class:`Convention` (``ties`` one of
:data:`~fgbench.metrics.retrieval.TIE_CONVENTIONS`, and ``topk`` for mAP@K)
and computes each :class:`~fgbench.metrics.base.MetricSpec` on the
evaluation.  ``fgbench evaluate`` prints these scores; the leaderboard uses
:func:`peer_conventions` for its convention-effect table and
:func:`missing_metrics` to fill registered metrics a record lacks.

A metric that the evaluation of a convention cannot give (the engine's
evaluations for ``index``/``deephash`` carry mAP and per-query AP only) is
reported as not available (``value`` None, with the reason), never guessed.
Re-scoring never changes a record: records are what their run measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import TIE_CONVENTIONS, evaluate_codes
from fgbench.errors import MetricInputError
from fgbench.records import StoredCodes

__all__ = ["AVERAGE", "Convention", "Score", "missing_metrics", "peer_conventions", "rescore"]

#: The topk of the mAP@K peer column (DeepHash-pytorch's ``CalcTopMap(topk=1000)``, as papers reporting mAP@1000 run it).
PEER_TOPK = 1000


@dataclass(frozen=True)
class Convention:
    """How a ranking is scored: the tie rule (``ties``) and, for mAP@K, the cut-off ``topk`` (None: all)."""

    ties: str = "average"
    topk: int | None = None

    @property
    def label(self) -> str:
        """``average``, ``index``, ``deephash``, or ``<ties>@<K>`` with a cut-off (e.g. ``deephash@1000``)."""
        return self.ties if self.topk is None else f"{self.ties}@{self.topk}"


AVERAGE = Convention()
"""fgbench's own: the expected value over random orders within ties, the whole database ranked."""


def peer_conventions() -> tuple[Convention, ...]:
    """The conventions other code bases score with, for the convention-effect table.

    Every tie convention of the engine other than ``average`` over the whole
    database, then DeepHash-pytorch's ``CalcTopMap`` at ``topk=1000`` (the
    mAP@1000 many papers report) when the engine has the ``deephash`` rule.
    """
    peers = [Convention(t) for t in TIE_CONVENTIONS if t != AVERAGE.ties]
    if "deephash" in TIE_CONVENTIONS:
        peers.append(Convention("deephash", PEER_TOPK))
    return tuple(peers)


@dataclass(frozen=True)
class Score:
    """One metric of one record's codes under one convention; ``value`` None when not available (``note`` says why)."""

    metric: str
    convention: Convention
    value: float | None
    note: str = ""


def rescore(codes: StoredCodes, metrics: Sequence[MetricSpec],
            conventions: Iterable[Convention] = (AVERAGE,)) -> list[Score]:
    """Every metric of ``metrics`` on ``codes`` under every convention, in that order (conventions outer).

    Raises:
        MetricInputError: a convention the engine does not have, or a bad ``topk`` (one line naming it).
    """
    scores = []
    for conv in conventions:
        evaluation = evaluate_codes(codes.query_codes, codes.database_codes, codes.query_labels,
                                    codes.database_labels, ties=conv.ties, topk=conv.topk)
        for spec in metrics:
            try:
                value: float | None = float(spec.compute(evaluation))
                note = ""
            except (AttributeError, NotImplementedError, MetricInputError):  # refused outside ties=average
                value, note = None, f"not available under ties={conv.label} (the evaluation carries mAP only)"
            scores.append(Score(spec.name, conv, value, note))
    return scores


def missing_metrics(recorded: Iterable[str], metrics: Sequence[MetricSpec]) -> list[MetricSpec]:
    """The registered ``metrics`` whose name is not among a record's ``recorded`` metric names."""
    have = set(recorded)
    return [m for m in metrics if m.name not in have]
