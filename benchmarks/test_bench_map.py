"""mAP evaluation speed against a packed-popcount lower bound measured in the same run (pytest-benchmark).

Codes are random +-1 (the worst case: few duplicate codes to share work),
labels uniform over the classes; query/database sizes are those of the
datasets (CUB-200-2011: 5,794 x 5,994, 200 classes; VegFru: 116,931 x 29,200,
292 classes).

* **fast path**: :func:`fgbench.metrics.retrieval.evaluate_codes` with its
  defaults (tie-averaged mAP@all; histograms, AP, everything a run needs).
* **lower bound**: the least any exact tie-averaged mAP must do -- for every
  query-database pair XOR the packed uint64 codes, popcount, and count the
  distance in the query's histogram (numba, parallel over queries; written
  here, independent of fgbench). Two forms: one query per pass over the
  database, and four (four independent histograms, no store-to-load
  stalls); the faster one is the bound. Packing the codes is not counted.
* the ``index`` and ``deephash`` tie conventions at CUB scale, and a per-query
  stable argsort (the usual deep-hashing mAP code) as a cross-check of
  ``ties="index"``.

The file also runs against older fgbench versions (only ``evaluate_codes``
with positional arguments is needed; the tie-convention benchmarks skip), so
"before" and "after" can be timed in one session on one machine::

    python -m pytest benchmarks/test_bench_map.py --benchmark-only -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from numba import njit, prange

pytest.importorskip("pytest_benchmark")

from fgbench.metrics import hamming_kernels as hk  # noqa: E402
from fgbench.metrics.retrieval import evaluate_codes  # noqa: E402

CUB = (5794, 5994, 200)
VEGFRU = (116931, 29200, 292)
_popcount = hk._popcount64


@njit(parallel=True, cache=True)
def lower_bound_one(q, d, n_bits):  # type: ignore[no-untyped-def]  # pragma: no cover - jitted
    """Per-query distance histogram over all pairs, one query per pass over the database."""
    nq, nw = q.shape
    nd = d.shape[0]
    h = np.zeros((nq, n_bits + 1), dtype=np.int64)
    for i in prange(nq):
        for j in range(nd):
            dist = 0
            for w in range(nw):
                dist += _popcount(q[i, w] ^ d[j, w])
            h[i, dist] += 1
    return h


@njit(parallel=True, cache=True)
def lower_bound_four(q, d, n_bits):  # type: ignore[no-untyped-def]  # pragma: no cover - jitted
    """The same histograms, four queries per pass over the database, each with its own local histogram."""
    nq, nw = q.shape
    nd = d.shape[0]
    h = np.zeros((nq, n_bits + 1), dtype=np.int64)
    for b in prange((nq + 3) // 4):
        loc = np.zeros((4, n_bits + 1), dtype=np.int64)
        i0 = 4 * b
        m = min(4, nq - i0)
        if nw == 1 and m == 4:  # codes of up to 64 bits: the four query words stay in registers
            q0, q1, q2, q3 = q[i0, 0], q[i0 + 1, 0], q[i0 + 2, 0], q[i0 + 3, 0]
            for j in range(nd):
                x = d[j, 0]
                loc[0, _popcount(q0 ^ x)] += 1
                loc[1, _popcount(q1 ^ x)] += 1
                loc[2, _popcount(q2 ^ x)] += 1
                loc[3, _popcount(q3 ^ x)] += 1
        else:
            for j in range(nd):
                for r in range(m):
                    dist = 0
                    for w in range(nw):
                        dist += _popcount(q[i0 + r, w] ^ d[j, w])
                    loc[r, dist] += 1
        for r in range(m):
            h[i0 + r] = loc[r]
    return h


def _codes(n_query: int, n_db: int, classes: int, bits: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, bits)) > 0.5, 1.0, -1.0).astype(np.float32)
    d = np.where(rng.random((n_db, bits)) > 0.5, 1.0, -1.0).astype(np.float32)
    return q, d, rng.integers(0, classes, n_query), rng.integers(0, classes, n_db)


def map_by_argsort(q: np.ndarray, d: np.ndarray, ql: np.ndarray, dl: np.ndarray, block: int = 256) -> float:
    """Reference mAP@all: per-query stable argsort of Hamming distances (ties in database order)."""
    bits = q.shape[1]
    aps = np.zeros(len(q))
    ranks = np.arange(1, len(d) + 1, dtype=np.float64)
    for s in range(0, len(q), block):
        dist = (bits - q[s : s + block] @ d.T) / 2
        order = np.argsort(dist, axis=1, kind="stable")
        rel = dl[order] == ql[s : s + block, None]
        hits = np.cumsum(rel, axis=1)
        n_rel = hits[:, -1]
        prec_sum = (rel * (hits / ranks)).sum(axis=1)
        aps[s : s + block] = np.where(n_rel > 0, prec_sum / np.maximum(n_rel, 1), 0.0)
    return float(aps.mean())


def _best(fn, *args, repeat: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def _lower_bound(q: np.ndarray, d: np.ndarray, repeat: int) -> dict[str, float]:
    qp, dp = hk.pack_codes(q), hk.pack_codes(d)
    bits = q.shape[1]
    out = {}
    for name, kernel in (("one", lower_bound_one), ("four", lower_bound_four)):
        kernel(qp[:8], dp[:8], bits)  # compile outside the timing
        out[name], h = _best(kernel, qp, dp, bits, repeat=repeat)
        assert int(h.sum()) == len(q) * len(d)
    return out


def _warm() -> None:
    for bits in (12, 48):
        q, d, ql, dl = _codes(20, 30, 3, bits)
        evaluate_codes(q, d, ql, dl)


@pytest.mark.parametrize("bits", [12, 48])
def test_cub_scale(benchmark, bits: int) -> None:  # type: ignore[no-untyped-def]
    _warm()
    q, d, ql, dl = _codes(*CUB, bits)
    ev = benchmark.pedantic(evaluate_codes, args=(q, d, ql, dl), rounds=7, iterations=1, warmup_rounds=1)
    fast = benchmark.stats.stats.min
    bound = _lower_bound(q, d, repeat=7)
    lb = min(bound.values())
    benchmark.extra_info.update({"evaluate_codes_s": round(fast, 4), "lower_bound_one_s": round(bound["one"], 4),
                                 "lower_bound_four_s": round(bound["four"], 4), "ratio": round(fast / lb, 2)})
    print(f"\nCUB scale {CUB[0]}x{CUB[1]}, {bits} bits: evaluate_codes {fast * 1e3:.1f} ms; packed-popcount lower "
          f"bound {lb * 1e3:.1f} ms (one query/pass {bound['one'] * 1e3:.1f}, four {bound['four'] * 1e3:.1f}) -> "
          f"ratio {fast / lb:.2f} (goal <= 1.5); mAP {ev.mean_average_precision:.5f}")


@pytest.mark.parametrize("ties", ["index", "deephash"])
def test_cub_scale_tie_conventions(benchmark, ties: str) -> None:  # type: ignore[no-untyped-def]
    from fgbench.metrics import retrieval

    if "index" not in getattr(retrieval, "TIE_CONVENTIONS", ()):
        pytest.skip("this fgbench has no tie conventions")
    _warm()
    q, d, ql, dl = _codes(*CUB, 12)
    evaluate_codes(q[:20], d[:30], ql[:20], dl[:30], ties=ties)
    ev = benchmark.pedantic(evaluate_codes, args=(q, d, ql, dl), kwargs={"ties": ties}, rounds=3, iterations=1)
    t = benchmark.stats.stats.min
    average, _ = _best(evaluate_codes, q, d, ql, dl, repeat=3)
    benchmark.extra_info.update({"seconds": round(t, 4), "average_ties_s": round(average, 4)})
    msg = ""
    if ties == "index":
        ref_time, ref_map = _best(map_by_argsort, q, d, ql, dl, repeat=1)
        assert ev.mean_average_precision == pytest.approx(ref_map, abs=1e-9)
        msg = f"; stable-argsort reference {ref_time:.2f} s, same mAP"
        benchmark.extra_info["argsort_reference_s"] = round(ref_time, 3)
    print(f"\nCUB scale, 12 bits, ties={ties}: {t * 1e3:.0f} ms (average ties {average * 1e3:.0f} ms){msg}")


@pytest.mark.parametrize("bits", [12, 48])
def test_vegfru_scale(benchmark, bits: int) -> None:  # type: ignore[no-untyped-def]
    _warm()
    q, d, ql, dl = _codes(*VEGFRU, bits)
    benchmark.pedantic(evaluate_codes, args=(q, d, ql, dl), rounds=3 if bits == 12 else 2, iterations=1,
                       warmup_rounds=1 if bits == 12 else 0)
    fast = benchmark.stats.stats.min
    benchmark.extra_info.update({"evaluate_codes_s": round(fast, 3), "threads": torch.get_num_threads()})
    print(f"\nVegFru scale {VEGFRU[0]}x{VEGFRU[1]}, {bits} bits: evaluate_codes {fast:.3f} s")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["scatter", "compare"])
def test_vegfru_scale_48_bits_gpu(benchmark, method: str) -> None:  # type: ignore[no-untyped-def]  # pragma: no cover
    q, d, ql, dl = _codes(*VEGFRU, 48)
    qt, dt = torch.tensor(q, device="cuda"), torch.tensor(d, device="cuda")
    qlt, dlt = torch.tensor(ql, device="cuda"), torch.tensor(dl, device="cuda")

    def run() -> None:
        hk.histograms_torch(qt, dt, qlt, dlt, method=method)
        torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    gpu = benchmark.stats.stats.min
    a = hk.histograms_torch(qt[:3000], dt, qlt[:3000], dlt, method=method)
    b = hk.histograms_cpu(q[:3000], d, ql[:3000], dl)
    assert all(np.array_equal(x.cpu().numpy(), y) for x, y in zip(a, b))
    benchmark.extra_info["histograms_s"] = round(gpu, 4)
    print(f"\nVegFru scale, 48 bits, GPU histograms ({method}): {gpu * 1e3:.0f} ms (goal: well under 1 s)")
