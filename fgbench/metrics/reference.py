"""Straightforward per-query-sort reference implementations (tests and benchmarks only).

Deliberately naive and independent of :mod:`fgbench.metrics.retrieval`:
explicit distances, an explicit ranking, AP by its textbook definition.
"""

from __future__ import annotations

import itertools

import numpy as np


def hamming(query: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances between +-1 codes: (n_query, n_db)."""
    q = np.asarray(query) > 0
    d = np.asarray(db) > 0
    return (q[:, None, :] != d[None, :, :]).sum(axis=2)


def ap_of_ranking(relevant_in_rank_order: np.ndarray) -> float:
    """Textbook AP: mean over relevant items of precision at their rank."""
    rel = np.asarray(relevant_in_rank_order, dtype=bool)
    if not rel.any():
        return 0.0
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def map_by_sort(query, db, q_labels, db_labels, tie_break: np.ndarray | None = None) -> float:  # type: ignore[no-untyped-def]
    """mAP with a per-query argsort; ties broken by ``tie_break`` order (default: database order)."""
    dist = hamming(query, db)
    order_key = np.arange(len(db)) if tie_break is None else np.asarray(tie_break)
    aps = []
    for i in range(len(query)):
        order = np.lexsort((order_key, dist[i]))
        aps.append(ap_of_ranking(np.asarray(db_labels)[order] == q_labels[i]))
    return float(np.mean(aps))


def expected_ap_by_enumeration(query_code, db, q_label, db_labels) -> float:  # type: ignore[no-untyped-def]
    """Expected AP of one query over *all* database orders (tiny databases only)."""
    dist = hamming(np.asarray(query_code)[None], db)[0]
    labels = np.asarray(db_labels)
    values = []
    for perm in itertools.permutations(range(len(db))):
        order = np.lexsort((np.asarray(perm), dist))
        values.append(ap_of_ranking(labels[order] == q_label))
    return float(np.mean(values))
