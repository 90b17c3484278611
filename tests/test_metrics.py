"""Exactness of mAP@all / P@k / radius precision against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fgbench.metrics.hamming_kernels import histograms_cpu, histograms_torch, pack_codes
from fgbench.metrics.reference import ap_of_ranking, expected_ap_by_enumeration, hamming, map_by_sort
from fgbench.metrics.retrieval import MetricInputError, evaluate_codes, mean_average_precision


def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return np.where(rng.random((n, bits)) > 0.5, 1.0, -1.0)


def test_tie_free_matches_per_query_sort() -> None:
    # each query sees database items at distances 0..K exactly once: no ties at all
    rng = np.random.default_rng(1)
    bits = 16
    for trial in range(5):
        q = random_codes(rng, 1, bits)
        db = np.repeat(q, bits + 1, axis=0)
        for d in range(bits + 1):
            flip = rng.permutation(bits)[:d]
            db[d, flip] *= -1
        perm = rng.permutation(bits + 1)
        db = db[perm]
        labels = rng.integers(0, 3, bits + 1)
        q_label = np.array([labels[rng.integers(0, bits + 1)]])
        assert len(np.unique(hamming(q, db))) == bits + 1
        ours = mean_average_precision(q, db, q_label, labels)
        assert ours == pytest.approx(map_by_sort(q, db, q_label, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_tie_heavy_matches_expectation_over_all_orders(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = random_codes(rng, 6, 4)          # 4 bits: 5 distance values, many ties
    db = random_codes(rng, 7, 4)
    ql, dl = rng.integers(0, 2, 6), rng.integers(0, 2, 7)
    ours = evaluate_codes(q, db, ql, dl).average_precision
    ref = [expected_ap_by_enumeration(q[i], db, ql[i], dl) for i in range(len(q))]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_result_does_not_depend_on_database_order() -> None:
    rng = np.random.default_rng(7)
    q, db = random_codes(rng, 50, 12), random_codes(rng, 300, 12)
    ql, dl = rng.integers(0, 5, 50), rng.integers(0, 5, 300)
    base = evaluate_codes(q, db, ql, dl)
    perm = rng.permutation(300)
    shuffled = evaluate_codes(q, db[perm], ql, dl[perm])
    np.testing.assert_array_equal(base.average_precision, shuffled.average_precision)
    # and a sort-based reference with a fixed tie order *does* depend on order: ties matter here
    assert map_by_sort(q, db, ql, dl) != pytest.approx(map_by_sort(q, db[perm], ql, dl[perm]), abs=1e-9)


def test_monte_carlo_over_random_tie_orders_converges_to_exact() -> None:
    rng = np.random.default_rng(3)
    q, db = random_codes(rng, 4, 6), random_codes(rng, 60, 6)
    ql, dl = rng.integers(0, 3, 4), rng.integers(0, 3, 60)
    exact = mean_average_precision(q, db, ql, dl)
    samples = [map_by_sort(q, db, ql, dl, tie_break=rng.permutation(60)) for _ in range(400)]
    assert np.mean(samples) == pytest.approx(exact, abs=3 * np.std(samples) / np.sqrt(400) + 1e-3)


def test_precision_at_k_and_radius_against_enumeration() -> None:
    rng = np.random.default_rng(5)
    q, db = random_codes(rng, 5, 4), random_codes(rng, 6, 4)
    ql, dl = rng.integers(0, 2, 5), rng.integers(0, 2, 6)
    ev = evaluate_codes(q, db, ql, dl)
    dist = hamming(q, db)
    import itertools

    for k in (1, 3, 6, 10):
        expected = []
        for i in range(len(q)):
            vals = []
            for perm in itertools.permutations(range(6)):
                order = np.lexsort((np.asarray(perm), dist[i]))
                top = (dl[order] == ql[i])[: min(k, 6)]
                vals.append(top.mean())
            expected.append(np.mean(vals))
        assert ev.precision_at(k) == pytest.approx(float(np.mean(expected)), abs=1e-12)
    within = dist <= 2
    ref = [((dl == ql[i]) & within[i]).sum() / within[i].sum() if within[i].any() else 0.0 for i in range(5)]
    assert ev.precision_radius(2) == pytest.approx(float(np.mean(ref)), abs=1e-12)


def test_query_without_relevant_items_counts_as_zero() -> None:
    q = np.array([[1, 1, -1, -1], [1, -1, 1, -1]], dtype=float)
    db = np.array([[1, 1, -1, -1], [-1, -1, 1, 1]], dtype=float)
    ev = evaluate_codes(q, db, np.array([0, 9]), np.array([0, 1]))
    assert ev.queries_without_relevant == 1
    assert ev.average_precision[1] == 0.0
    assert ev.mean_average_precision == pytest.approx(0.5)


def test_whole_database_is_ranked() -> None:
    # the last database item is the only relevant one: a topk=-1 slicing bug would give 0
    q = np.ones((1, 8))
    db = np.ones((5, 8))
    db[4] = -1  # the relevant item is the farthest one
    labels = np.array([1, 1, 1, 1, 0])
    assert mean_average_precision(q, db, np.array([0]), labels) == pytest.approx(1 / 5)


def test_torch_path_equals_numba_path() -> None:
    rng = np.random.default_rng(11)
    for bits in (12, 48, 70):
        q, db = random_codes(rng, 40, bits), random_codes(rng, 90, bits)
        ql, dl = rng.integers(0, 4, 40), rng.integers(0, 4, 90)
        a = histograms_cpu(q, db, ql, dl)
        b = histograms_torch(torch.tensor(q), torch.tensor(db), torch.tensor(ql), torch.tensor(dl), chunk=16)
        np.testing.assert_array_equal(a[0], b[0].numpy())
        np.testing.assert_array_equal(a[1], b[1].numpy())


def test_pack_codes_popcount_distance() -> None:
    rng = np.random.default_rng(2)
    a, b = random_codes(rng, 3, 130), random_codes(rng, 3, 130)
    pa, pb = pack_codes(a), pack_codes(b)
    assert pa.shape == (3, 3)
    dist = [sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(pa[i], pb[i])) for i in range(3)]
    assert dist == [int((a[i] != b[i]).sum()) for i in range(3)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_matches_cpu() -> None:  # pragma: no cover - CI has no GPU
    rng = np.random.default_rng(0)
    q, db = random_codes(rng, 500, 48), random_codes(rng, 700, 48)
    ql, dl = rng.integers(0, 10, 500), rng.integers(0, 10, 700)
    cpu = evaluate_codes(q, db, ql, dl).average_precision
    gpu = evaluate_codes(torch.tensor(q).cuda(), torch.tensor(db).cuda(), torch.tensor(ql), torch.tensor(dl))
    np.testing.assert_allclose(gpu.average_precision, cpu, atol=1e-12)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(MetricInputError, match="bits"):
        evaluate_codes(np.ones((2, 8)), np.ones((3, 12)), np.zeros(2), np.zeros(3))
    with pytest.raises(MetricInputError, match="one label"):
        evaluate_codes(np.ones((2, 8)), np.ones((3, 8)), np.zeros(1), np.zeros(3))


def test_textbook_ap() -> None:
    assert ap_of_ranking(np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)


def test_fast_ap_kernel_equals_the_documented_closed_form() -> None:
    from fgbench.metrics.hamming_kernels import average_precision_fast
    from fgbench.metrics.retrieval import average_precision_from_histograms

    rng = np.random.default_rng(8)
    q, db = random_codes(rng, 200, 10), random_codes(rng, 500, 10)
    h_all, h_rel = histograms_cpu(q, db, rng.integers(0, 7, 200), rng.integers(0, 7, 500))
    np.testing.assert_allclose(average_precision_fast(h_all, h_rel), average_precision_from_histograms(h_all, h_rel),
                               rtol=0, atol=1e-14)


# --- tie conventions and mAP@K (issue 16): each against a straightforward implementation written here ----------


def _ap_at_k(relevant_in_rank_order: np.ndarray, topk: int | None) -> float:
    """AP of one ranking cut at ``topk``: mean of hits/rank over the relevant items retrieved (0 when none)."""
    rel = np.asarray(relevant_in_rank_order, dtype=bool)[: topk if topk else None]
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) if len(ranks) else 0.0


def _map_index_reference(q, db, ql, dl, topk):  # type: ignore[no-untyped-def]
    """Rank by (distance, database index) with a lexsort per query."""
    dist = hamming(q, db)
    return [_ap_at_k(dl[np.lexsort((np.arange(len(db)), dist[i]))] == ql[i], topk) for i in range(len(q))]


def _calc_top_map(q_codes, r_codes, q_labels, r_labels, topk):  # type: ignore[no-untyped-def]
    """DeepHash-pytorch's CalcTopMap as written there (float32 +-1 codes, one-hot labels), per query AP."""
    q_b = np.where(q_codes > 0, 1.0, -1.0).astype(np.float32)
    r_b = np.where(r_codes > 0, 1.0, -1.0).astype(np.float32)
    n_cls = int(max(q_labels.max(), r_labels.max())) + 1
    q_l, r_l = np.eye(n_cls, dtype=np.float32)[q_labels], np.eye(n_cls, dtype=np.float32)[r_labels]
    aps = []
    for it in range(len(q_b)):
        gnd = (np.dot(q_l[it, :], r_l.transpose()) > 0).astype(np.float32)
        hamm = 0.5 * (r_b.shape[1] - np.dot(q_b[it, :], r_b.transpose()))
        ind = np.argsort(hamm)
        tgnd = gnd[ind][0:topk]
        tsum = np.sum(tgnd).astype(int)
        if tsum == 0:
            aps.append(0.0)
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        aps.append(float(np.mean(count / tindex)))
    return aps


def _expected_ap_at_k_by_enumeration(q_code, db, q_label, dl, topk):  # type: ignore[no-untyped-def]
    """AP@K averaged over every order of the database (tiny databases only)."""
    import itertools

    dist = hamming(np.asarray(q_code)[None], db)[0]
    return float(np.mean([_ap_at_k(dl[np.lexsort((np.asarray(p), dist))] == q_label, topk)
                          for p in itertools.permutations(range(len(db)))]))


def _tie_heavy(seed: int, n_q: int, n_db: int, bits: int, classes: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    q, db = random_codes(rng, n_q, bits), random_codes(rng, n_db, bits)
    # class `classes` occurs only among queries: those queries have no relevant item
    return q, db, rng.integers(0, classes + 1, n_q), rng.integers(0, classes, n_db)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("topk", [None, 1, 3, 5, 7, 50])
def test_average_ties_at_k_equal_the_mean_over_all_orders(seed: int, topk: int | None) -> None:
    q, db, ql, dl = _tie_heavy(seed, 6, 7, 3, 2)  # 3 bits: 4 distances for 7 items
    ev = evaluate_codes(q, db, ql, dl, ties="average", topk=topk)
    expected = [_expected_ap_at_k_by_enumeration(q[i], db, ql[i], dl, topk) for i in range(len(q))]
    np.testing.assert_allclose(ev.average_precision, expected, rtol=0, atol=1e-12)
    assert ev.precision_at(3) == evaluate_codes(q, db, ql, dl).precision_at(3)  # p@k does not depend on topk


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("topk", [None, 1, 10, 77, 300, 1000])
def test_index_ties_equal_a_lexsort_per_query(seed: int, topk: int | None) -> None:
    q, db, ql, dl = _tie_heavy(seed, 40, 300, 5, 6)
    ev = evaluate_codes(q, db, ql, dl, ties="index", topk=topk)
    np.testing.assert_allclose(ev.average_precision, _map_index_reference(q, db, ql, dl, topk), rtol=0, atol=1e-12)
    assert ev.queries_without_relevant == int((~np.isin(ql, dl)).sum()) > 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("topk", [None, 1, 10, 77, 300, 1000])
def test_deephash_ties_equal_calc_top_map(seed: int, topk: int | None) -> None:
    q, db, ql, dl = _tie_heavy(seed, 40, 300, 5, 6)
    ev = evaluate_codes(q, db, ql, dl, ties="deephash", topk=topk)
    expected = _calc_top_map(q, db, ql, dl, topk if topk else len(db))
    np.testing.assert_allclose(ev.average_precision, expected, rtol=0, atol=1e-12)
    assert ev.mean_average_precision == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_deephash_blocks_of_queries_give_the_same_ranking() -> None:
    from fgbench.metrics.hamming_kernels import deephash_ap_cpu

    q, db, ql, dl = _tie_heavy(4, 50, 200, 6, 5)
    whole, _ = deephash_ap_cpu(q, db, ql, dl, 20)
    blocked, _ = deephash_ap_cpu(q, db, ql, dl, 20, block_elements=3 * 200)
    np.testing.assert_array_equal(whole, blocked)


def test_topk_at_or_beyond_the_database_is_map_at_all() -> None:
    q, db, ql, dl = _tie_heavy(5, 30, 80, 6, 4)
    for ties in ("average", "index", "deephash"):
        full = evaluate_codes(q, db, ql, dl, ties=ties).average_precision
        np.testing.assert_array_equal(evaluate_codes(q, db, ql, dl, ties=ties, topk=80).average_precision, full)
        np.testing.assert_array_equal(evaluate_codes(q, db, ql, dl, ties=ties, topk=10**6).average_precision, full)


def test_evaluate_codes_ap_is_the_histogram_closed_form_bit_for_bit() -> None:
    """The fused kernel of evaluate_codes gives the numbers records hold (average_precision_fast on the histograms)."""
    from fgbench.metrics.hamming_kernels import average_precision_fast

    for bits in (6, 12, 20, 48):
        q, db, ql, dl = _tie_heavy(bits, 120, 400, bits, 9)
        ev = evaluate_codes(q, db, ql, dl)
        np.testing.assert_array_equal(ev.average_precision, average_precision_fast(ev.h_all, ev.h_rel))


def test_class_ordered_database_inflates_index_ties_over_average() -> None:
    """The issue's effect: with the database in class order, a query of the first class finds its relevant items
    first inside every tie block, so the index tie-break scores above the tie-averaged value."""
    rng = np.random.default_rng(12)
    centres = random_codes(rng, 3, 4)
    dl = np.repeat(np.arange(3), 3)  # database in class order
    db = centres[dl] * np.where(rng.random((9, 4)) < 0.2, -1.0, 1.0)  # noisy class centres
    q, ql = centres[:1], np.array([0])
    index = mean_average_precision(q, db, ql, dl, ties="index")
    average = mean_average_precision(q, db, ql, dl, ties="average")
    assert index == pytest.approx(float(np.mean(_map_index_reference(q, db, ql, dl, None))), abs=1e-12)
    assert average == pytest.approx(expected_ap_by_enumeration(q[0], db, 0, dl), abs=1e-12)
    assert index > average
    # the same database in reverse order puts the relevant items last in their tie blocks
    assert mean_average_precision(q, db[::-1], ql, dl[::-1], ties="index") < average


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ties": "random"}, "ties='random': use one of average, index, deephash"),
    ({"ties": None}, "ties=None"),
    ({"topk": 0}, "topk=0: use a positive"),
    ({"topk": -5}, "topk=-5"),
    ({"topk": True}, "topk=True"),
    ({"topk": 2.5}, "topk=2.5"),
])
def test_bad_convention_options_are_one_line_errors(kwargs: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(MetricInputError, match="^[^\n]+$") as info:
        evaluate_codes(np.ones((2, 8)), np.ones((3, 8)), np.zeros(2), np.zeros(3), **kwargs)
    assert fragment in str(info.value)


def test_ranked_evaluation_refuses_average_only_metrics() -> None:
    q, db, ql, dl = _tie_heavy(6, 10, 30, 6, 3)
    ev = evaluate_codes(q, db, ql, dl, ties="index")
    for ask in (lambda: ev.precision_at(10), lambda: ev.precision_radius(2), ev.pr_curve):
        with pytest.raises(MetricInputError, match="ties='average' only"):
            ask()
