"""Summaries of one job's evaluation kept in its run record for the leaderboard figures.

* :func:`pr_curve_field` -> ``RunRecord.pr_curve``: mean precision and recall
  over queries at each Hamming radius ``0..bits``
  (:meth:`RetrievalEvaluation.pr_curve`).
* :func:`retrieval_examples_field` -> ``RunRecord.retrieval_examples``: for a
  few queries, the database indices of their top-k, their Hamming distances
  and whether each is relevant (same label).  The leaderboard's retrieval
  panel draws these images from the dataset.

The top-k shows **one** ranking: database items sorted by Hamming distance,
ties broken by database index (a stable sort).  mAP itself is the expected
value over all tie orders (docs/metrics.md); the panel is an illustration,
not a metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

EXAMPLE_QUERIES = 5
EXAMPLE_TOP_K = 10


def pr_curve_field(evaluation: Any) -> dict[str, list[float]]:
    """``{"precision": [...], "recall": [...]}`` at radii ``0..bits`` (6 decimals)."""
    precision, recall = evaluation.pr_curve()
    return {"precision": [round(float(v), 6) for v in precision], "recall": [round(float(v), 6) for v in recall]}


def example_query_indices(num_query: int, count: int = EXAMPLE_QUERIES) -> list[int]:
    """``count`` query indices spread evenly over the query split (first and last included).

    Splits are usually ordered by class, so evenly spaced queries show
    several classes rather than the first class ``count`` times.
    """
    if num_query <= 0:
        return []
    count = min(count, num_query)
    return sorted({round(float(v)) for v in np.linspace(0, num_query - 1, count)})


def retrieval_examples_field(
    query_codes: torch.Tensor | np.ndarray,
    db_codes: torch.Tensor | np.ndarray,
    query_labels: torch.Tensor | np.ndarray,
    db_labels: torch.Tensor | np.ndarray,
    num_queries: int = EXAMPLE_QUERIES,
    k: int = EXAMPLE_TOP_K,
) -> list[dict[str, Any]]:
    """Top-``k`` database items of a few evenly spaced queries (see the module docstring).

    Codes are real-valued or ±1 (sign is taken, ``> 0`` is bit 1, as in
    :func:`fgbench.evaluate_codes`); CUDA tensors are fine.  Each entry is
    ``{"query": i, "label": y, "top": [db indices], "distance": [...],
    "relevant": [bools]}``.
    """
    q = torch.as_tensor(query_codes)
    d = torch.as_tensor(db_codes, device=q.device)
    q_lab = np.asarray(torch.as_tensor(query_labels).cpu())
    d_lab = np.asarray(torch.as_tensor(db_labels).cpu())
    picks = example_query_indices(len(q), num_queries)
    if not picks:
        return []
    qb = (q[picks] > 0).float() * 2 - 1
    db = (d > 0).float() * 2 - 1
    bits = q.shape[1]
    dist = ((bits - qb @ db.T) / 2).round().long().cpu().numpy()
    k = min(k, len(d))
    out = []
    for row, qi in enumerate(picks):
        order = np.argsort(dist[row], kind="stable")[:k]
        out.append({
            "query": int(qi),
            "label": int(q_lab[qi]),
            "top": [int(j) for j in order],
            "distance": [int(dist[row, j]) for j in order],
            "relevant": [bool(d_lab[j] == q_lab[qi]) for j in order],
        })
    return out
