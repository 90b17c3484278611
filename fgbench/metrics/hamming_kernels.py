"""Per-query Hamming-distance histograms: the one hot loop of evaluation.

Distances between K-bit codes take only K+1 values, so every ranking metric
(with ties handled as an expectation over random order within a distance)
follows from two histograms per query: how many database items, and how
many *relevant* ones, lie at each distance.  Two exact backends:

* CPU (numba, parallel over queries), in two independent parts:

  - ``h_all`` does not depend on labels, so it is computed once per *distinct*
    query code against the *distinct* database codes (with multiplicities):
    exact, and it makes short codes cheap (at 12 bits there are at most 4,096
    distinct codes on either side).  The kernel packs codes into 64-bit words,
    uses LLVM ``ctpop`` and handles four queries per pass over the database,
    each with its own small histogram, so consecutive increments of one
    histogram do not wait on each other (store-to-load forwarding was the
    bottleneck of the one-query loop: ~2-4x faster at 48 bits).
  - ``h_rel`` only involves the database items of the query's own class:
    the database is grouped by label and de-duplicated per class, so each
    query scans about ``n_db / n_classes`` codes.

* GPU (torch): ``+-1`` codes in float16 (exact: products are +-1 and the sums
  are integers <= 256 accumulated in float32) multiplied in chunks of queries;
  ``h_all`` by ``scatter_add`` (or one comparison per distance, ``method=
  "compare"``), ``h_rel`` from a gather of each query's own class block, so it
  costs ``n_db / n_classes`` per query as on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic

# numba freezes globals into cached machine code and does not notice when another module changes, so only
# mathematical constants are taken as globals; the tunable thresholds are passed as arguments
from fgbench.metrics.harmonic import DIRECT_SUM_MAX, EULER_GAMMA, PSI_COEF, SMALL_HARMONIC

_ODD_RECIPROCALS = tuple(1.0 / (2 * k + 1) for k in range(9, 0, -1))


@intrinsic
def _popcount64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


F = TypeVar("F", bound=Callable[..., Any])


def _jit(parallel: bool = False) -> Callable[[F], F]:
    """``njit(cache=True)``, or without the on-disk cache when numba finds no writable place for it.

    numba caches compiled kernels in ``$NUMBA_CACHE_DIR``, else next to this
    file (``__pycache__``), else in ``$XDG_CACHE_HOME``/``~/.cache``; when none
    is writable (a read-only install and no usable home directory) it raises
    ``RuntimeError: cannot cache function`` at import.  The kernels then
    compile in memory in each process instead (a few seconds, same results).
    """

    def decorate(fn: F) -> F:
        try:
            return njit(parallel=parallel, cache=True)(fn)  # type: ignore[no-any-return]
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            return njit(parallel=parallel, cache=False)(fn)  # type: ignore[no-any-return]

    return decorate


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count after numba's parallel kernels.

    numba's OpenMP threading layer sets the OpenMP thread count of the calling
    thread to its own (all cores), which is also the count torch reads: a
    ``torch.set_num_threads(k)`` (or ``OMP_NUM_THREADS``) would silently be
    lost after the first evaluation and later training would oversubscribe
    the CPU.
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _keeps_torch_threads(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _torch_threads_kept():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack {-1,+1} (or {0,1}) codes ``(n, K)`` into uint64 words ``(n, ceil(K/64))``."""
    bits = np.asarray(codes) > 0
    n, k = bits.shape
    words = (k + 63) // 64
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :k] = bits
    packed8 = np.packbits(padded, axis=1, bitorder="little")
    return np.ascontiguousarray(packed8).view(np.uint64).reshape(n, words)


@_jit(parallel=True)
def _all_kernel(q, d, counts, weighted, n_bits):  # pragma: no cover - jitted
    """``h[i, k]`` = total ``counts[j]`` of database rows ``j`` at distance ``k`` from query row ``i``.

    Four queries per pass over ``d``, each with its own local histogram.
    """
    nq = q.shape[0]
    nw = q.shape[1]
    nd = d.shape[0]
    nb = n_bits + 1
    h = np.zeros((nq, nb), dtype=np.int64)
    for b in prange((nq + 3) // 4):
        loc = np.zeros((4, nb), dtype=np.int64)
        i0 = 4 * b
        m = min(4, nq - i0)
        if nw == 1 and m == 4:
            q0 = q[i0, 0]
            q1 = q[i0 + 1, 0]
            q2 = q[i0 + 2, 0]
            q3 = q[i0 + 3, 0]
            if weighted:
                for j in range(nd):
                    x = d[j, 0]
                    c = counts[j]
                    loc[0, _popcount64(q0 ^ x)] += c
                    loc[1, _popcount64(q1 ^ x)] += c
                    loc[2, _popcount64(q2 ^ x)] += c
                    loc[3, _popcount64(q3 ^ x)] += c
            else:
                for j in range(nd):
                    x = d[j, 0]
                    loc[0, _popcount64(q0 ^ x)] += 1
                    loc[1, _popcount64(q1 ^ x)] += 1
                    loc[2, _popcount64(q2 ^ x)] += 1
                    loc[3, _popcount64(q3 ^ x)] += 1
        else:
            for r in range(m):
                for j in range(nd):
                    dist = 0
                    for w in range(nw):
                        dist += _popcount64(q[i0 + r, w] ^ d[j, w])
                    loc[r, dist] += counts[j]
        for r in range(m):
            for k in range(nb):
                h[i0 + r, k] = loc[r, k]
    return h


@_jit(parallel=True)
def _rel_kernel(q, q_cls, d_cls, c_cls, cls_start, n_bits):  # pragma: no cover - jitted
    """``h[i, k]`` = relevant database items at distance ``k``: query ``i`` against its class block only."""
    nq = q.shape[0]
    nw = q.shape[1]
    h = np.zeros((nq, n_bits + 1), dtype=np.int64)
    for i in prange(nq):
        lab = q_cls[i]
        if lab < 0:
            continue
        for j in range(cls_start[lab], cls_start[lab + 1]):
            dist = 0
            for w in range(nw):
                dist += _popcount64(q[i, w] ^ d_cls[j, w])
            h[i, dist] += c_cls[j]
    return h


def _row_view(packed: np.ndarray) -> np.ndarray:
    """Rows of a 2-D uint64 array as one sortable scalar each (itself when one word)."""
    packed = np.ascontiguousarray(packed)
    if packed.shape[1] == 1:
        return packed[:, 0]
    return packed.view(np.dtype((np.void, packed.dtype.itemsize * packed.shape[1]))).reshape(-1)


def _unique_rows(packed: np.ndarray, return_inverse: bool = False):  # type: ignore[no-untyped-def]
    """Distinct rows of ``packed`` with counts (and the inverse index when asked)."""
    keys = _row_view(packed)
    out = np.unique(keys, return_inverse=return_inverse, return_counts=True)
    uniq = out[0]
    rows = np.ascontiguousarray(uniq.view(np.uint64).reshape(len(uniq), packed.shape[1]))
    counts = out[-1].astype(np.int64)
    if return_inverse:
        return rows, counts, np.asarray(out[1]).reshape(-1)
    return rows, counts


def _class_blocks(dp: np.ndarray, d_cls: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Database codes grouped by class and de-duplicated within each: (codes, counts, class starts)."""
    order = np.argsort(d_cls, kind="stable")
    bounds = np.searchsorted(d_cls[order], np.arange(n_classes + 1))
    blocks, counts, starts = [], [], [0]
    for c in range(n_classes):
        rows = dp[order[bounds[c] : bounds[c + 1]]]
        if len(rows):
            u, cnt = _unique_rows(rows)
        else:
            u, cnt = np.zeros((0, dp.shape[1]), np.uint64), np.zeros(0, np.int64)
        blocks.append(u)
        counts.append(cnt)
        starts.append(starts[-1] + len(u))
    d_blocks = np.ascontiguousarray(np.concatenate(blocks)) if blocks else np.zeros((0, dp.shape[1]), np.uint64)
    c_blocks = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    return d_blocks, c_blocks, np.asarray(starts, dtype=np.int64)


@_keeps_torch_threads
def histograms_all_cpu(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """``h_all`` ``(n_query, K+1)``: database items at each distance (labels play no part)."""
    n_bits = query_codes.shape[1]
    qp, dp = pack_codes(query_codes), pack_codes(db_codes)
    d_all, c_all = _unique_rows(dp)
    weighted = bool(len(c_all) and c_all.max() > 1)
    uq, _counts, inverse = _unique_rows(qp, return_inverse=True)
    if len(uq) == len(qp):  # nothing to share: skip the gather
        return _all_kernel(qp, d_all, c_all, weighted, n_bits)
    return _all_kernel(uq, d_all, c_all, weighted, n_bits)[inverse]


@_keeps_torch_threads
def histograms_cpu(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(h_all, h_rel)`` of shape ``(n_query, K+1)`` on the CPU."""
    n_bits = query_codes.shape[1]
    h_all = histograms_all_cpu(query_codes, db_codes)
    qp, dp = pack_codes(query_codes), pack_codes(db_codes)
    all_labels = np.concatenate([np.asarray(db_labels).reshape(-1), np.asarray(query_labels).reshape(-1)])
    classes, inverse = np.unique(all_labels, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1).astype(np.int64)
    d_cls, q_cls = inverse[: len(dp)], inverse[len(dp) :]
    d_blocks, c_blocks, starts = _class_blocks(dp, d_cls, len(classes))
    h_rel = _rel_kernel(qp, q_cls, d_blocks, c_blocks, starts, n_bits)
    return h_all, h_rel


def _auto_chunk(n_db: int, bytes_per_pair: int, budget: int = 1 << 30) -> int:
    return max(1, min(1 << 16, budget // max(1, n_db * bytes_per_pair)))


def histograms_torch(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    chunk: int | None = None,
    method: str = "scatter",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(h_all, h_rel)`` (int64) with torch on the codes' device (meant for CUDA).

    ``chunk`` queries are processed at a time (default: about 1 GiB of
    temporaries).  ``method``: ``"scatter"`` (``scatter_add`` of the distances)
    or ``"compare"`` (one equality count per distance; no atomics).
    """
    if method not in ("scatter", "compare"):
        raise ValueError(f"method {method!r}: use 'scatter' or 'compare'")
    device = db_codes.device if db_codes.is_cuda else query_codes.device
    n_bits = query_codes.shape[1]
    # +-1 in fp16 is exact on CUDA (integer sums <= 256 accumulate in fp32); the CPU has no fast fp16 matmul
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    q = torch.where(query_codes.to(device) > 0, 1.0, -1.0).to(dtype)
    d = torch.where(db_codes.to(device) > 0, 1.0, -1.0).to(dtype)
    ql, dl = query_labels.to(device).long().reshape(-1), db_labels.to(device).long().reshape(-1)
    n_q, n_db = len(q), len(d)
    h_all = torch.zeros(n_q, n_bits + 1, dtype=torch.int64, device=device)
    h_rel = torch.zeros_like(h_all)
    if n_q == 0:
        return h_all, h_rel

    # relevant items: the database sorted by label, each query gathers its own class block (padded)
    classes, d_cls = torch.unique(dl, return_inverse=True)
    order = torch.argsort(d_cls, stable=True)
    d_sorted = d[order]
    sizes = torch.bincount(d_cls, minlength=len(classes))
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.searchsorted(classes, ql).clamp_max(max(len(classes) - 1, 0))
    q_has = classes[pos] == ql if len(classes) else torch.zeros_like(ql, dtype=torch.bool)
    q_size = torch.where(q_has, sizes[pos], 0) if len(classes) else torch.zeros_like(ql)
    q_start = starts[pos] if len(classes) else torch.zeros_like(ql)
    max_size = int(sizes.max()) if len(classes) else 0
    offsets = torch.arange(max_size, device=device)

    one = torch.ones(1, 1, dtype=torch.int64, device=device)
    step = chunk or _auto_chunk(n_db, 16 if method == "scatter" else 8)
    for s in range(0, n_q, step):
        ip = (q[s : s + step] @ d.T).to(torch.int32)  # exact integers
        dist = (n_bits - ip) // 2
        del ip
        if method == "scatter":
            idx = dist.long()
            h_all[s : s + step].scatter_add_(1, idx, one.expand_as(idx))
        else:
            dist8 = dist.to(torch.uint8 if n_bits < 256 else torch.int16)
            for k in range(n_bits + 1):
                h_all[s : s + step, k] = (dist8 == k).sum(1)
        del dist
    if max_size:
        rel_step = chunk or _auto_chunk(max_size, n_bits * d.element_size() + 32)
        for s in range(0, n_q, rel_step):
            qc = q[s : s + rel_step]
            valid = offsets[None, :] < q_size[s : s + rel_step, None]
            rows = (q_start[s : s + rel_step, None] + offsets[None, :]).clamp_max(n_db - 1)
            rel_ip = torch.bmm(d_sorted[rows], qc[:, :, None]).squeeze(2).to(torch.int32)  # (chunk, max_size)
            h_rel[s : s + rel_step].scatter_add_(1, ((n_bits - rel_ip) // 2).long(), valid.long())
    return h_all, h_rel


# --- expected AP per query, accurate to a few ulp -------------------------------------------------------------
#
# A tie block of n items holding r relevant ones, after N items of which R are relevant, contributes
#     (r/n) * sum_{p=1..n} (R + 1 + (p-1)*beta) / (N + p)  =  (r/n) * ((R + 1) * S + beta * T),
#     S = sum_{p=1..n} 1/(N+p),   T = sum_{p=1..n} (p-1)/(N+p),   beta = (r-1)/(n-1)  (0 when n = 1),
# a sum of two non-negative terms.  The equivalent closed form of docs/metrics.md,
# beta*n + (R + 1 - beta*(1+N)) * (H[N+n] - H[N]), subtracts two nearly equal numbers when N >> n (up to
# 5e-4 relative error on a 1M-item database); S and T below are each computed without cancellation:
# directly for small n, else from the asymptotic expansion of the digamma function with log1p
# (fgbench.metrics.harmonic.block_sums is the same computation in numpy).


@_jit()
def _psi_tail_difference(m: float, a: float) -> float:  # pragma: no cover - jitted
    """sum_k B_2k/(2k) * (m^-2k - a^-2k) for a >= m >= ASYMPTOTIC_MIN (small; no cancellation concern)."""
    im2 = 1.0 / (m * m)
    ia2 = 1.0 / (a * a)
    pm = im2
    pa = ia2
    out = 0.0
    for c in PSI_COEF:
        out += c * (pm - pa)
        pm *= im2
        pa *= ia2
    return out


@_jit()
def _x_minus_log1p(x: float) -> float:  # pragma: no cover - jitted
    """x - log(1 + x) for 0 <= x < 1/4 without cancellation.

    With u = x/(2+x), log(1+x) = 2 atanh(u) = 2(u + u^3/3 + u^5/5 + ...) and x - 2u = x^2/(2+x) exactly, so
    x - log(1+x) = x^2/(2+x) - 2u^3 (1/3 + u^2/5 + ...): the second term is at most 1/20 of the first, and
    u <= 1/9 makes 9 terms enough (u^20/21 < 1e-20).
    """
    u = x / (2.0 + x)
    u2 = u * u
    acc = 0.0
    for c in _ODD_RECIPROCALS:  # 1/19, 1/17, ..., 1/3
        acc = c + u2 * acc
    return x * u - 2.0 * u * u2 * acc


@_jit()
def _harmonic_large(m: float) -> float:  # pragma: no cover - jitted
    """H(m) for m >= ASYMPTOTIC_MIN: ln m + gamma + 1/(2m) - sum_k B_2k/(2k m^2k)."""
    im2 = 1.0 / (m * m)
    p = im2
    tail = 0.0
    for c in PSI_COEF:
        tail += c * p
        p *= im2
    return math.log(m) + EULER_GAMMA + 0.5 / m - tail


@_jit()
def _block_sums(  # pragma: no cover - jitted
    n_before: int, n: int, small_harmonic: np.ndarray, direct_max: int
) -> tuple[float, float]:
    """``(S, T)`` = (sum_{p=1..n} 1/(N+p), sum_{p=1..n} (p-1)/(N+p)) with N = ``n_before``, each to a few ulp.

    ``small_harmonic`` is H[0..ASYMPTOTIC_MIN]; blocks of up to ``direct_max`` items are summed term by term.
    """
    if n <= direct_max:
        s = 0.0
        t = 0.0
        for p in range(1, n + 1):
            inv = 1.0 / (n_before + p)
            s += inv
            t += (p - 1) * inv
        return s, t
    m = float(n_before + 1)
    a = m + n
    if m >= len(small_harmonic) - 1:  # ASYMPTOTIC_MIN
        # S = psi(N+n+1) - psi(N+1)
        x = n / m
        tail = _psi_tail_difference(m, a)
        s = math.log1p(x) + n / (2.0 * m * a) + tail
        if x < 0.25:  # T = n - m*S would cancel: expand it instead
            t = m * _x_minus_log1p(x) - n / (2.0 * a) - m * tail
        else:
            t = n - m * s
        return s, t
    # few items before, many in the block (n/m > 2): S = H(N+n) - H(N) > 1; T = n - m*S loses at most a bit
    s = _harmonic_large(float(n_before + n)) - small_harmonic[n_before]
    return s, n - m * s


@_jit(parallel=True)
def _ap_kernel(h_all, h_rel, small_harmonic, direct_max):  # pragma: no cover - jitted
    nq, nb = h_all.shape
    ap = np.zeros(nq, dtype=np.float64)
    for i in prange(nq):
        total = 0
        for k in range(nb):
            total += h_rel[i, k]
        if total == 0:
            continue
        n_before = 0
        r_before = 0
        acc = 0.0
        for k in range(nb):
            n = h_all[i, k]
            r = h_rel[i, k]
            if r > 0:
                s, t = _block_sums(n_before, n, small_harmonic, direct_max)
                beta = (r - 1) / (n - 1) if n > 1 else 0.0
                acc += (r / n) * ((r_before + 1) * s + beta * t)
            n_before += n
            r_before += r
        ap[i] = acc / total
    return ap


@_keeps_torch_threads
def average_precision_fast(h_all: np.ndarray, h_rel: np.ndarray) -> np.ndarray:
    """:func:`fgbench.metrics.retrieval.average_precision_from_histograms` in one parallel pass.

    The same expected AP (random order within tied distances), block by
    block, with the same cancellation-free sums (relative error ~1e-15); it
    differs from the numpy version only in rounding.  At VegFru scale
    (116,931 queries) it takes milliseconds instead of about a second.
    """
    h_all = np.ascontiguousarray(h_all, dtype=np.int64)
    h_rel = np.ascontiguousarray(h_rel, dtype=np.int64)
    return _ap_kernel(h_all, h_rel, SMALL_HARMONIC, DIRECT_SUM_MAX)
