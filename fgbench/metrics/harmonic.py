"""Sums of 1/(N+p) over a tie block, without cancellation (numpy; numba twin in hamming_kernels).

The expected AP of a tie block of ``n`` items after ``N`` others (see
:func:`fgbench.metrics.retrieval.average_precision_from_histograms`) needs

    S = sum_{p=1..n} 1/(N+p)          (= H[N+n] - H[N])
    T = sum_{p=1..n} (p-1)/(N+p)      (= n - (N+1) S)

both non-negative.  Differences of tabulated harmonic numbers, and
``n - (N+1) S``, lose most of their digits when ``N >> n`` (a few relevant
items alone at the end of a 1M-item ranking).  Here each is computed to a
few ulp: term by term for ``n <= DIRECT_SUM_MAX``; otherwise from the
asymptotic expansion of the digamma function, with ``log1p`` and a series
for ``x - log(1+x)`` where the leading terms would cancel.

No numba here: this module is imported by the harness at start-up.
"""

from __future__ import annotations

import numpy as np

DIRECT_SUM_MAX = 64  # blocks up to this size are summed term by term (relative error <= n * 2^-53)
ASYMPTOTIC_MIN = 32  # psi(m) from its asymptotic series for m >= this (truncation error < 1e-17 relative)
EULER_GAMMA = 0.57721566490153286061
# B_2k / (2k), k = 1..5: psi(m) ~ ln m - 1/(2m) - sum_k B_2k / (2k m^2k)
PSI_COEF = (1.0 / 12.0, -1.0 / 120.0, 1.0 / 252.0, -1.0 / 240.0, 1.0 / 132.0)
SMALL_HARMONIC = np.cumsum(np.concatenate([[0.0], 1.0 / np.arange(1, ASYMPTOTIC_MIN + 1)]))  # H[0..32]


def _psi_tail_difference(m: np.ndarray, a: np.ndarray) -> np.ndarray:
    """sum_k B_2k/(2k) * (m^-2k - a^-2k) for a >= m >= ASYMPTOTIC_MIN."""
    im2, ia2 = 1.0 / (m * m), 1.0 / (a * a)
    pm, pa = im2, ia2
    out = np.zeros_like(m)
    for c in PSI_COEF:
        out += c * (pm - pa)
        pm, pa = pm * im2, pa * ia2
    return out


def _x_minus_log1p(x: np.ndarray) -> np.ndarray:
    """x - log(1 + x) for 0 <= x < 1/4 without cancellation (see hamming_kernels._x_minus_log1p).

    u = x/(2+x): x - log(1+x) = x^2/(2+x) - 2u^3 (1/3 + u^2/5 + ...), the second term < 1/20 of the first.
    """
    u = x / (2.0 + x)
    u2 = u * u
    acc = np.zeros_like(x)
    for k in range(9, 0, -1):
        acc = 1.0 / (2 * k + 1) + u2 * acc
    return x * u - 2.0 * u * u2 * acc


def _harmonic_large(m: np.ndarray) -> np.ndarray:
    """H(m) for m >= ASYMPTOTIC_MIN: ln m + gamma + 1/(2m) - sum_k B_2k/(2k m^2k)."""
    im2 = 1.0 / (m * m)
    p = im2
    tail = np.zeros_like(m)
    for c in PSI_COEF:
        tail += c * p
        p = p * im2
    return np.log(m) + EULER_GAMMA + 0.5 / m - tail


def block_sums(n_before: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(S, T)`` elementwise for integer arrays ``n_before`` (N) and ``n`` (>= 1 where used; 0 gives 0)."""
    n_before = np.asarray(n_before, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    s = np.zeros(n.shape, dtype=np.float64)
    t = np.zeros(n.shape, dtype=np.float64)

    small = (n > 0) & (n <= DIRECT_SUM_MAX)
    if small.any():
        nb, nn = n_before[small].astype(np.float64), n[small]
        ss, tt = np.zeros(len(nn)), np.zeros(len(nn))
        for p in range(1, int(nn.max()) + 1):
            inv = np.where(nn >= p, 1.0 / (nb + p), 0.0)
            ss += inv
            tt += (p - 1) * inv
        s[small], t[small] = ss, tt

    m_all = (n_before + 1).astype(np.float64)
    large = n > DIRECT_SUM_MAX
    far = large & (m_all >= ASYMPTOTIC_MIN)
    if far.any():
        m, nn = m_all[far], n[far].astype(np.float64)
        a = m + nn
        x = nn / m
        tail = _psi_tail_difference(m, a)
        ss = np.log1p(x) + nn / (2.0 * m * a) + tail
        tt = nn - m * ss
        close = x < 0.25  # nn - m*ss would cancel
        if close.any():
            mc, ac, nc = m[close], a[close], nn[close]
            tt[close] = mc * _x_minus_log1p(x[close]) - nc / (2.0 * ac) - mc * tail[close]
        s[far], t[far] = ss, tt
    near = large & ~far
    if near.any():
        nb, nn = n_before[near], n[near]
        ss = _harmonic_large((nb + nn).astype(np.float64)) - SMALL_HARMONIC[nb]
        s[near], t[near] = ss, nn - m_all[near] * ss
    return s, t
