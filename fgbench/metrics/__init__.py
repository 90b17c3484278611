"""Retrieval metrics and cost (params/FLOPs) of the encode path."""

from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import MetricInputError, RetrievalEvaluation, evaluate_codes, mean_average_precision

__all__ = ["MetricInputError", "MetricSpec", "RetrievalEvaluation", "evaluate_codes", "mean_average_precision"]
