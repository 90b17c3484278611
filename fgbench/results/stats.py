"""Paired significance tests between methods on one dataset and bit length.

Two tests per pair of methods, both **paired t-tests** (``scipy.stats.ttest_rel``,
two-sided):

* **over seeds** — pairs are the two methods' mAP on the same seed (needs at
  least 2 shared seeds).  It asks whether the difference survives the
  randomness of training (initialisation, data order).
* **over queries** — pairs are the two methods' AP on the same query (the
  per-query AP stored in every record, averaged over the seeds both methods
  ran).  It gives a test even with one seed, but it only asks whether the
  difference is more than the luck of which queries were sampled; it says
  nothing about training randomness.

Why a t-test and not Wilcoxon signed-rank: the leaderboard compares *means*
(mAP is the mean of AP), and the t-test tests exactly the mean difference;
Wilcoxon tests a shift of the median/symmetric location, which can disagree
with the sign of the mAP difference.  Over queries there are hundreds to
thousands of pairs, so the t-test is valid by the central limit theorem even
though AP is bounded and skewed (Smucker, Allan & Carterette, CIKM 2007,
found the t-test agrees with the randomization test on retrieval metrics,
while Wilcoxon and the sign test do not).  Over seeds there are typically 3–5
pairs, where Wilcoxon cannot reach p < 0.05 at all (the smallest two-sided
p-value with n = 5 is 2/2^5 = 0.0625).

Each matrix (one dataset, bit length and test) corrects its m(m-1)/2
p-values for multiple comparisons with Holm's step-down method; a difference
is called significant when the Holm-adjusted p is below :data:`ALPHA`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np
from scipy import stats

ALPHA = 0.05
SEED_TEST = "paired t-test on mAP per shared seed (scipy.stats.ttest_rel, two-sided)"
QUERY_TEST = "paired t-test on AP per query, averaged over shared seeds (scipy.stats.ttest_rel, two-sided)"

T = TypeVar("T")


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison ``a - b``: mean difference, p-value (None: no test possible), pairs."""

    diff: float
    p: float | None
    n: int
    reason: str = ""


def paired_t(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired t-test of ``a - b``.

    Degenerate cases: fewer than 2 pairs -> no test; all differences zero ->
    p = 1; differences constant but non-zero -> no test (zero variance).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired test needs equal lengths, got {x.shape} and {y.shape}")
    n = int(x.size)
    if n == 0:
        return PairedTest(math.nan, None, 0, "no pairs")
    d = x - y
    diff = float(d.mean())
    if n < 2:
        return PairedTest(diff, None, n, "fewer than 2 pairs")
    if np.all(d == 0):
        return PairedTest(0.0, 1.0, n)
    if float(np.std(d)) == 0.0:
        return PairedTest(diff, None, n, "constant difference (zero variance)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(x, y).pvalue)
    return PairedTest(diff, None if math.isnan(p) else p, n)


def seed_test(a: Mapping[int, float], b: Mapping[int, float]) -> PairedTest:
    """Paired t-test over the seeds both methods ran (``{seed: mAP}``)."""
    seeds = sorted(set(a) & set(b))
    result = paired_t([a[s] for s in seeds], [b[s] for s in seeds])
    if result.p is None and len(seeds) < 2:
        return PairedTest(result.diff, None, len(seeds), f"{len(seeds)} shared seed(s); needs 2")
    return result


def query_test(a: Mapping[int, Sequence[float] | None], b: Mapping[int, Sequence[float] | None]) -> PairedTest:
    """Paired t-test over queries (``{seed: per-query AP}``), AP averaged over the shared seeds."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None)
    if not seeds:
        return PairedTest(math.nan, None, 0, "no shared seed with per-query AP")
    lengths = {len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}  # type: ignore[arg-type]
    if len(lengths) != 1:
        return PairedTest(math.nan, None, 0, "different query counts")
    mean_a = np.mean([np.asarray(a[s], dtype=np.float64) for s in seeds], axis=0)
    mean_b = np.mean([np.asarray(b[s], dtype=np.float64) for s in seeds], axis=0)
    return paired_t(mean_a, mean_b)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are skipped and stay None)."""
    index = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(index, key=lambda i: (pvalues[i], i))
    m = len(order)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PairwiseMatrix:
    """All pairs of ``methods`` under one test; ``tests[(a, b)]`` is ``a - b`` for a before b."""

    methods: tuple[str, ...]
    tests: Mapping[tuple[str, str], PairedTest]
    adjusted: Mapping[tuple[str, str], float | None]
    name: str

    def cell(self, row: str, col: str) -> tuple[PairedTest, float | None]:
        """The comparison ``row - col`` and its Holm-adjusted p."""
        if (row, col) in self.tests:
            return self.tests[(row, col)], self.adjusted[(row, col)]
        t = self.tests[(col, row)]
        return PairedTest(-t.diff, t.p, t.n, t.reason), self.adjusted[(col, row)]

    @property
    def any_test(self) -> bool:
        return any(t.p is not None for t in self.tests.values())


def pairwise(methods: Sequence[str], values: Mapping[str, T], test: Callable[[T, T], PairedTest],
             name: str) -> PairwiseMatrix:
    """Run ``test`` on every pair of ``methods`` (in the given order) and Holm-correct the p-values."""
    methods = tuple(methods)
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    tests = {pair: test(values[pair[0]], values[pair[1]]) for pair in pairs}
    adjusted = holm([tests[pair].p for pair in pairs])
    return PairwiseMatrix(methods, tests, dict(zip(pairs, adjusted)), name)
