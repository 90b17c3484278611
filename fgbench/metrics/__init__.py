"""Retrieval metrics and cost (params/FLOPs) of the encode path."""

from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import (
    TIE_CONVENTIONS,
    MetricInputError,
    RankedEvaluation,
    RetrievalEvaluation,
    evaluate_codes,
    mean_average_precision,
)

__all__ = ["TIE_CONVENTIONS", "MetricInputError", "MetricSpec", "RankedEvaluation", "RetrievalEvaluation",
           "evaluate_codes", "mean_average_precision"]
