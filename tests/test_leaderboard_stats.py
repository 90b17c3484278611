"""Significance tests and the optional record fields for figures (pr_curve, retrieval_examples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as sps

from fgbench.metrics.retrieval import RetrievalEvaluation
from fgbench.results import stats
from fgbench.metrics.summaries import example_query_indices, pr_curve_field, retrieval_examples_field
from fgbench.records import RunRecord


def test_paired_t_matches_scipy_and_handles_degenerate_cases() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30)
    t = stats.paired_t(a, b)
    assert t.p == pytest.approx(sps.ttest_rel(a, b).pvalue) and t.diff == pytest.approx(np.mean(a - b))
    assert t.n == 30
    assert stats.paired_t([0.5], [0.4]).p is None                      # one pair: no test
    assert stats.paired_t([0.5, 0.6], [0.5, 0.6]).p == 1.0             # identical
    assert stats.paired_t([0.5, 0.6], [0.4, 0.5]).p is None            # constant difference, zero variance
    with pytest.raises(ValueError):
        stats.paired_t([1.0, 2.0], [1.0])


def test_seed_test_uses_only_shared_seeds() -> None:
    a = {0: 0.50, 1: 0.52, 2: 0.55, 7: 0.9}
    b = {0: 0.40, 1: 0.45, 2: 0.41, 8: 0.1}
    t = stats.seed_test(a, b)
    assert t.n == 3 and t.diff == pytest.approx(np.mean([0.10, 0.07, 0.14]))
    assert t.p == pytest.approx(sps.ttest_rel([0.50, 0.52, 0.55], [0.40, 0.45, 0.41]).pvalue)
    one = stats.seed_test({0: 0.5}, {0: 0.4})
    assert one.p is None and "needs 2" in one.reason


def test_query_test_gives_a_test_with_one_seed_and_averages_over_seeds() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(200)
    better = np.clip(base + 0.05 + 0.02 * rng.standard_normal(200), 0, 1)
    t = stats.query_test({0: list(better)}, {0: list(base)})
    assert t.n == 200 and t.p is not None and t.p < 1e-6 and t.diff > 0
    noise = {0: list(base + 0.01 * rng.standard_normal(200)), 1: list(base + 0.01 * rng.standard_normal(200))}
    same = stats.query_test(noise, {0: list(base), 1: list(base)})
    assert same.p is not None and same.p > 0.01                            # no real difference
    avg = stats.query_test({0: [0.2, 0.4], 1: [0.4, 0.6]}, {0: [0.1, 0.1], 1: [0.1, 0.3]})
    assert avg.diff == pytest.approx(np.mean([0.3 - 0.1, 0.5 - 0.2]))     # AP averaged over seeds first
    assert stats.query_test({0: None}, {0: [0.1]}).p is None
    assert stats.query_test({0: [0.1, 0.2]}, {0: [0.1]}).reason == "different query counts"


def test_holm_adjustment() -> None:
    # textbook example: p = 0.01, 0.04, 0.03 -> 0.03, 0.06, 0.06 (monotone step-down)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


def test_pairwise_matrix_is_antisymmetric() -> None:
    values = {"a": {0: 0.5, 1: 0.6, 2: 0.55}, "b": {0: 0.3, 1: 0.35, 2: 0.33}, "c": {0: 0.31, 1: 0.36, 2: 0.30}}
    m = stats.pairwise(["a", "b", "c"], values, stats.seed_test, "seeds")
    ab, p_ab = m.cell("a", "b")
    ba, p_ba = m.cell("b", "a")
    assert ab.diff == pytest.approx(-ba.diff) and p_ab == p_ba
    assert p_ab is not None and p_ab >= ab.p  # Holm never lowers a p-value


def test_pr_curve_field_from_an_evaluation() -> None:
    h_all = np.array([[1, 1, 2], [0, 2, 2]])
    h_rel = np.array([[1, 0, 1], [0, 1, 1]])
    field = pr_curve_field(RetrievalEvaluation(h_all, h_rel))
    assert field["recall"] == [0.25, 0.5, 1.0]
    assert field["precision"] == [0.5, pytest.approx(0.5 * (0.5 + 0.5)), pytest.approx(0.5 * (0.5 + 0.5))]


def test_retrieval_examples_rank_by_hamming_distance_ties_by_index() -> None:
    db = torch.tensor([[1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, -1], [1, 1, 1, 1], [1, -1, 1, -1]],
                      dtype=torch.float32)
    q = torch.tensor([[0.3, 2.0, 0.1, 5.0], [-1.0, -1.0, -1.0, -1.0]])
    ex = retrieval_examples_field(q, db, torch.tensor([0, 1]), torch.tensor([0, 1, 0, 1, 0]), k=3)
    assert [e["query"] for e in ex] == [0, 1]
    assert ex[0]["top"] == [0, 3, 2] and ex[0]["distance"] == [0, 0, 1]   # tie at distance 0: lower index first
    assert ex[0]["relevant"] == [True, False, True] and ex[0]["label"] == 0
    assert ex[1]["top"] == [1, 4, 2] and ex[1]["distance"] == [0, 2, 3]
    assert example_query_indices(240) == [0, 60, 120, 179, 239]
    assert example_query_indices(3) == [0, 1, 2] and example_query_indices(0) == []


def test_records_round_trip_the_new_fields() -> None:
    rec = RunRecord(method="m", dataset="d", bits=8, seed=0, protocol={}, metrics={"map": 0.1}, cost={},
                    train_seconds=1.0, eval_seconds=0.1, environment={},
                    pr_curve={"precision": [0.5], "recall": [1.0]},
                    retrieval_examples=[{"query": 0, "label": 1, "top": [2], "distance": [0], "relevant": [True]}])
    import json

    back = RunRecord.from_dict(json.loads(rec.to_json()))
    assert back.pr_curve == rec.pr_curve and back.retrieval_examples == rec.retrieval_examples
    old = json.loads(rec.to_json())
    del old["pr_curve"], old["retrieval_examples"]
    assert RunRecord.from_dict(old).pr_curve is None   # records written before the fields existed still load
