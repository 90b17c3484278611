"""The metric interface: :class:`MetricSpec` and what a metric receives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.metrics.retrieval import RetrievalEvaluation

METRIC_NAME_RE = re.compile(r"\A[a-z][a-z0-9_@\-.]*\Z")  # \A..\Z: no trailing newline


@dataclass(frozen=True)
class MetricSpec:
    """A retrieval metric computed for every run.

    ``compute(evaluation)`` receives a
    :class:`~fgbench.metrics.retrieval.RetrievalEvaluation` (per-query Hamming
    distance histograms of all and of relevant database items, from which
    every ranking metric with the documented tie rule follows) and returns a
    float.

    Attributes:
        name: its key in the run record's ``metrics``.
        summary: one line for ``fgbench list``.
        compute: ``compute(evaluation) -> float``.
        higher_is_better: whether larger values are better (declared for readers and tools; fgbench does
            not use it yet).
        source: the distribution that registered it (filled in by the host).
    """

    name: str
    summary: str
    compute: Callable[["RetrievalEvaluation"], float]
    higher_is_better: bool = True
    source: str = ""

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable reason when the spec is malformed (the host calls it)."""
        if not isinstance(self.name, str) or not METRIC_NAME_RE.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if not callable(self.compute):
            raise ValueError(f"metric {self.name!r}: compute must be callable")
