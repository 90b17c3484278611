"""The fast evaluation kernels agree exactly with straightforward counting (every code path of hamming_kernels)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fgbench.metrics import hamming_kernels as hk
from fgbench.metrics.retrieval import average_precision_from_histograms


def _naive(q: np.ndarray, d: np.ndarray, ql: np.ndarray, dl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist = ((q[:, None, :] > 0) != (d[None, :, :] > 0)).sum(axis=2)
    bits = q.shape[1]
    h_all = np.stack([np.bincount(row, minlength=bits + 1) for row in dist])
    h_rel = np.stack([np.bincount(row[dl == lab], minlength=bits + 1) for row, lab in zip(dist, ql)])
    return h_all, h_rel


def _codes(rng: np.random.Generator, n: int, bits: int, distinct: int | None = None) -> np.ndarray:
    codes = np.where(rng.random((distinct or n, bits)) > 0.5, 1.0, -1.0)
    return codes[rng.integers(0, len(codes), n)] if distinct else codes


@pytest.mark.parametrize("bits", [4, 12, 48, 64, 100, 130])
@pytest.mark.parametrize("duplicates", [False, True])
def test_cpu_and_torch_histograms_equal_naive_counts(bits: int, duplicates: bool) -> None:
    rng = np.random.default_rng(bits)
    # duplicates: few distinct codes on both sides (the weighted / shared-query paths)
    q = _codes(rng, 37, bits, 5 if duplicates else None)
    d = _codes(rng, 91, bits, 7 if duplicates else None)
    ql = rng.integers(0, 5, len(q))
    dl = rng.integers(0, 4, len(d))  # label 4 occurs only among queries: no relevant items
    expected = _naive(q, d, ql, dl)
    got = hk.histograms_cpu(q, d, ql, dl)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    for method in ("scatter", "compare"):
        t = hk.histograms_torch(torch.tensor(q), torch.tensor(d), torch.tensor(ql), torch.tensor(dl), chunk=10,
                                method=method)
        for e, g in zip(expected, t):
            np.testing.assert_array_equal(g.numpy(), e)


def test_numba_ap_equals_numpy_ap() -> None:
    rng = np.random.default_rng(0)
    q, d = _codes(rng, 300, 16), _codes(rng, 500, 16, 40)
    h_all, h_rel = hk.histograms_cpu(q, d, rng.integers(0, 9, 300), rng.integers(0, 8, 500))
    np.testing.assert_allclose(hk.average_precision_fast(h_all, h_rel), average_precision_from_histograms(h_all, h_rel),
                               rtol=0, atol=1e-12)


def test_evaluation_keeps_torch_thread_count() -> None:
    """numba's OpenMP layer sets its own thread count when it first runs; torch's must survive (fresh process)."""
    script = ("import numpy as np, torch\n"
              "from fgbench.metrics.hamming_kernels import histograms_cpu\n"
              "q = np.ones((50, 12)); histograms_cpu(q, -q, np.zeros(50, int), np.zeros(50, int))\n"
              "print(torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"


def test_torch_rejects_unknown_method() -> None:
    x = torch.ones(2, 8)
    with pytest.raises(ValueError, match="method"):
        hk.histograms_torch(x, x, torch.zeros(2), torch.zeros(2), method="sort")


def test_kernels_compiled_ahead_are_the_ones_evaluation_runs() -> None:
    """After compile_ahead (and compile_kernels for the other conventions) evaluating compiles nothing new: the
    warm-up's signatures are exactly those of real calls (fresh process; kernels may come from numba's cache)."""
    script = (
        "import numpy as np, torch\n"
        "from fgbench.metrics.warmup import compile_ahead, compile_seconds\n"
        "compile_ahead().join(); assert compile_seconds() is not None\n"
        "from fgbench.metrics import hamming_kernels as hk, evaluate_codes\n"
        "hk.compile_kernels(('index', 'deephash'))\n"
        "kernels = {n: k for n, k in vars(hk).items() if hasattr(k, 'signatures') and hasattr(k, 'py_func')}\n"
        "before = {n: list(k.signatures) for n, k in kernels.items()}\n"
        "rng = np.random.default_rng(0)\n"
        "for bits in (12, 48, 70):\n"
        "    q = np.sign(rng.standard_normal((30, bits))); d = np.sign(rng.standard_normal((50, bits)))\n"
        "    ql, dl = rng.integers(0, 4, 30), rng.integers(0, 4, 50)\n"
        "    for ties in ('average', 'index', 'deephash'):\n"
        "        for topk in (None, 7):\n"
        "            evaluate_codes(q, d, ql, dl, ties=ties, topk=topk)\n"
        "            evaluate_codes(torch.tensor(q), torch.tensor(d), list(ql), list(dl), ties=ties, topk=topk)\n"
        "    hk.average_precision_fast(np.ones((2, bits + 1), int), np.ones((2, bits + 1), int), 3)\n"
        "new = {n: [s for s in k.signatures if s not in before[n]] for n, k in kernels.items()}\n"
        "print(sorted(n for n, s in before.items() if s)); print({n: s for n, s in new.items() if s})\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    compiled, new = out.stdout.strip().splitlines()[-2:]
    assert "_rel_ap_kernel" in compiled and "_index_ap_kernel" in compiled and "_distance_rows" in compiled
    assert new == "{}"
