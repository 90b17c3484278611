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
import numba
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
    bits = np.asarray(codes)
    if bits.dtype != np.bool_:
        bits = bits > 0
    n, k = bits.shape
    words = (k + 63) // 64
    packed8 = np.packbits(bits, axis=1, bitorder="little")  # ceil(k/8) bytes per row, the last zero-padded
    if packed8.shape[1] != words * 8:  # pad the bytes (not the bits: a smaller copy) to whole 64-bit words
        full = np.zeros((n, words * 8), dtype=np.uint8)
        full[:, : packed8.shape[1]] = packed8
        packed8 = full
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


def _class_indices(query_labels: np.ndarray, db_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels as dense class indices 0..C-1 shared by both sides: (query classes, database classes, C).

    Small non-negative labels (the usual case) are mapped through a lookup table (no sort).
    """
    ql = np.asarray(query_labels).reshape(-1).astype(np.int64, copy=False)
    dl = np.asarray(db_labels).reshape(-1).astype(np.int64, copy=False)
    lo = min(int(ql.min()), int(dl.min()))
    hi = max(int(ql.max()), int(dl.max()))
    if lo >= 0 and hi < 4 * (len(ql) + len(dl)) + 1024:
        present = np.zeros(hi + 1, dtype=bool)
        present[ql] = True
        present[dl] = True
        index = np.cumsum(present) - 1
        return index[ql], index[dl], int(index[-1]) + 1
    classes, inverse = np.unique(np.concatenate([dl, ql]), return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1).astype(np.int64)
    return inverse[len(dl):], inverse[: len(dl)], len(classes)


def _distinct_codes(packed: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of packed codes: (rows, counts, inverse); a counting table instead of a sort up to 16 bits."""
    if n_bits <= 16:
        values = packed[:, 0].astype(np.int64)
        counts = np.bincount(values, minlength=1 << n_bits)
        present = np.flatnonzero(counts)
        lookup = np.empty(1 << n_bits, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        rows = np.ascontiguousarray(present.astype(np.uint64).reshape(-1, 1))
        return rows, counts[present].astype(np.int64), lookup[values]
    rows, counts, inverse = _unique_rows(packed, return_inverse=True)
    return rows, counts, inverse.astype(np.int64)


@_jit()
def _hypergeometric_ap(acc, r_before, n_before, n, r, m, small_harmonic, direct_max):  # pragma: no cover - jitted
    """Expected AP@K when the top K ends ``m`` items into a tie block of ``n`` items holding ``r`` relevant ones.

    ``acc``: summed precisions of the ``r_before`` relevant items among the ``n_before`` items before the block.
    The number x of relevant items among the block's first m places is hypergeometric; given x they sit
    uniformly in those m places, so they add ``(x/m) * ((R+1) S + beta_x T)`` (the whole-block formula with
    n -> m, r -> x, beta_x = (x-1)/(m-1)), and AP@K = E[(acc + that) / (R + x)] (0 when R + x = 0).
    """
    x_lo = max(0, m - (n - r))
    x_hi = min(r, m)
    s, t = _block_sums(n_before, m, small_harmonic, direct_max)
    # log weights by the ratio P(x+1)/P(x) = (r-x)(m-x) / ((x+1)(n-r-m+x+1)), then normalised
    count = x_hi - x_lo + 1
    lw = np.zeros(count)
    for c in range(1, count):
        x = x_lo + c - 1
        lw[c] = lw[c - 1] + math.log((r - x) * (m - x)) - math.log((x + 1) * (n - r - m + x + 1))
    top = lw.max()
    total_w = 0.0
    value = 0.0
    for c in range(count):
        x = x_lo + c
        w = math.exp(lw[c] - top)
        total_w += w
        if r_before + x == 0:
            continue
        beta = (x - 1) / (m - 1) if m > 1 else 0.0
        add = (x / m) * ((r_before + 1) * s + beta * t) if x > 0 else 0.0
        value += w * (acc + add) / (r_before + x)
    return value / total_w


@_jit()
def _expected_ap(h_all, h_rel, i, topk, small_harmonic, direct_max):  # pragma: no cover - jitted
    """Expected AP (random order within tied distances) of row ``i``; mAP@K when ``topk`` > 0.

    AP@K divides by the relevant items retrieved in the top K (as DeepHash-pytorch's CalcTopMap); with
    ``topk`` <= 0 or >= the database size that is every relevant item (AP@all).
    """
    nb = h_all.shape[1]
    n_before = 0
    r_before = 0
    acc = 0.0
    for k in range(nb):
        n = h_all[i, k]
        r = h_rel[i, k]
        if topk > 0 and n_before + n > topk:
            return _hypergeometric_ap(acc, r_before, n_before, n, r, topk - n_before, small_harmonic, direct_max)
        if r > 0:
            s, t = _block_sums(n_before, n, small_harmonic, direct_max)
            beta = (r - 1) / (n - 1) if n > 1 else 0.0
            acc += (r / n) * ((r_before + 1) * s + beta * t)
        n_before += n
        r_before += r
    return acc / r_before if r_before > 0 else 0.0


@_jit(parallel=True)  # the expected AP of a query costs about as much as its class block: at 48 bits (many
# distance blocks hold relevant items) this pass was a third of CUB-scale evaluation when serial
def _rel_ap_kernel(q, q_row, h_code, q_cls, d_sorted, cls_start, n_bits, topk,  # pragma: no cover - jitted
                   small_harmonic, direct_max):
    """Per query: ``h_all`` (row ``q_row[i]`` of the distinct-code table), ``h_rel`` (its class block only), AP."""
    nq = q.shape[0]
    nw = q.shape[1]
    nb = n_bits + 1
    h_all = np.empty((nq, nb), dtype=np.int64)
    h_rel = np.zeros((nq, nb), dtype=np.int64)
    ap = np.zeros(nq, dtype=np.float64)
    for i in prange(nq):
        row = q_row[i]
        for k in range(nb):
            h_all[i, k] = h_code[row, k]
        lab = q_cls[i]
        for j in range(cls_start[lab], cls_start[lab + 1]):
            dist = 0
            for w in range(nw):
                dist += _popcount64(q[i, w] ^ d_sorted[j, w])
            h_rel[i, dist] += 1
        ap[i] = _expected_ap(h_all, h_rel, i, topk, small_harmonic, direct_max)
    return h_all, h_rel, ap


@_jit(parallel=True)
def _index_ap_kernel(q, d, q_cls, d_cls, h_all, h_rel, topk):  # pragma: no cover - jitted
    """AP (AP@K when ``topk`` > 0) with ties broken by database index: rank by (distance, index).

    A relevant item j at distance k has rank ``#(dist < k) + #(dist == k, index < j) + 1`` and as many
    relevant items up to it: one pass over the database in index order counting what was seen per distance.
    """
    nq = q.shape[0]
    nw = q.shape[1]
    nd = d.shape[0]
    nb = h_all.shape[1]
    ap = np.zeros(nq, dtype=np.float64)
    for i in prange(nq):
        before_all = np.zeros(nb, dtype=np.int64)
        before_rel = np.zeros(nb, dtype=np.int64)
        for k in range(1, nb):
            before_all[k] = before_all[k - 1] + h_all[i, k - 1]
            before_rel[k] = before_rel[k - 1] + h_rel[i, k - 1]
        seen_all = np.zeros(nb, dtype=np.int64)
        seen_rel = np.zeros(nb, dtype=np.int64)
        lab = q_cls[i]
        acc = 0.0
        hits = 0
        for j in range(nd):
            dist = 0
            for w in range(nw):
                dist += _popcount64(q[i, w] ^ d[j, w])
            if d_cls[j] == lab:
                rank = before_all[dist] + seen_all[dist] + 1
                if topk <= 0 or rank <= topk:
                    acc += (before_rel[dist] + seen_rel[dist] + 1) / rank
                    hits += 1
                seen_rel[dist] += 1
            seen_all[dist] += 1
        ap[i] = acc / hits if hits > 0 else 0.0
    return ap


@_jit(parallel=True)
def _distance_rows(q, d, out):  # pragma: no cover - jitted
    """``out[i, j]`` = Hamming distance of query row ``i`` and database row ``j`` (float32, as CalcTopMap's)."""
    nq = q.shape[0]
    nw = q.shape[1]
    nd = d.shape[0]
    for i in prange(nq):
        for j in range(nd):
            dist = 0
            for w in range(nw):
                dist += _popcount64(q[i, w] ^ d[j, w])
            out[i, j] = dist


def _packed_inputs(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                   db_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    q_cls, d_cls, n_classes = _class_indices(query_labels, db_labels)
    return pack_codes(query_codes), pack_codes(db_codes), q_cls, d_cls, n_classes


def _histograms_and_ap(qp: np.ndarray, dp: np.ndarray, q_cls: np.ndarray, d_cls: np.ndarray, n_classes: int,
                       n_bits: int, topk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h_all, h_rel, expected AP) from packed codes and dense class indices."""
    uq, _qc, q_row = _distinct_codes(qp, n_bits)
    ud, ud_counts, _ = _distinct_codes(dp, n_bits)
    weighted = bool(len(ud_counts) and ud_counts.max() > 1)
    h_code = _all_kernel(uq, ud, ud_counts, weighted, n_bits)
    order = np.argsort(d_cls, kind="stable")
    d_sorted = np.ascontiguousarray(dp[order])
    cls_start = np.zeros(n_classes + 1, dtype=np.int64)
    np.cumsum(np.bincount(d_cls, minlength=n_classes), out=cls_start[1:])
    return _rel_ap_kernel(qp, q_row, h_code, q_cls, d_sorted, cls_start, n_bits, topk, SMALL_HARMONIC,
                          DIRECT_SUM_MAX)


@_keeps_torch_threads
def histograms_all_cpu(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """``h_all`` ``(n_query, K+1)``: database items at each distance (labels play no part)."""
    n_bits = query_codes.shape[1]
    qp, dp = pack_codes(query_codes), pack_codes(db_codes)
    uq, _counts, q_row = _distinct_codes(qp, n_bits)
    ud, ud_counts, _ = _distinct_codes(dp, n_bits)
    weighted = bool(len(ud_counts) and ud_counts.max() > 1)
    return _all_kernel(uq, ud, ud_counts, weighted, n_bits)[q_row]


@_keeps_torch_threads
def evaluate_cpu(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                 topk: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ``(h_all, h_rel, AP)`` on the CPU: histograms ``(n_query, K+1)`` and expected AP (AP@K if topk > 0).

    ``h_all`` is computed once per distinct query code against the distinct database codes (with
    multiplicities); ``h_rel`` by scanning the query's own class block of the class-sorted database; the AP of
    each query in the same parallel pass.
    """
    qp, dp, q_cls, d_cls, n_classes = _packed_inputs(query_codes, db_codes, query_labels, db_labels)
    return _histograms_and_ap(qp, dp, q_cls, d_cls, n_classes, query_codes.shape[1], topk)


def histograms_cpu(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(h_all, h_rel)`` of shape ``(n_query, K+1)`` on the CPU."""
    h_all, h_rel, _ap = evaluate_cpu(query_codes, db_codes, query_labels, db_labels)
    return h_all, h_rel


@_keeps_torch_threads
def index_ap_cpu(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                 topk: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AP per query (AP@K if topk > 0) with ties broken by database index, and the ``h_rel`` row totals."""
    n_bits = query_codes.shape[1]
    qp, dp, q_cls, d_cls, n_classes = _packed_inputs(query_codes, db_codes, query_labels, db_labels)
    h_all, h_rel, _ap = _histograms_and_ap(qp, dp, q_cls, d_cls, n_classes, n_bits, 0)
    return _index_ap_kernel(qp, dp, q_cls, d_cls, h_all, h_rel, topk), h_rel.sum(axis=1)


@_keeps_torch_threads
def deephash_ap_cpu(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                    topk: int = 0, block_elements: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """DeepHash-pytorch ``CalcTopMap``: per query ``np.argsort`` (numpy's default kind) of the float32 Hamming
    distances, the first ``topk`` (all if <= 0), AP over the relevant items among them (0 when none).

    Returns the AP per query and the number of relevant database items per query.
    """
    qp, dp, q_cls, d_cls, n_classes = _packed_inputs(query_codes, db_codes, query_labels, db_labels)
    n_db = len(dp)
    take = n_db if topk <= 0 else min(topk, n_db)
    ranks = np.arange(1, take + 1, dtype=np.float64)
    ap = np.zeros(len(qp))
    step = max(1, block_elements // n_db)
    dist = np.empty((min(step, len(qp)), n_db), dtype=np.float32)
    for s in range(0, len(qp), step):
        block = qp[s : s + step]
        out = dist[: len(block)]
        _distance_rows(block, dp, out)
        order = np.argsort(out, axis=1)[:, :take]
        rel = d_cls[order] == q_cls[s : s + step, None]
        hits = np.cumsum(rel, axis=1)
        found = hits[:, -1]
        ap[s : s + step] = np.where(found > 0, (rel * (hits / ranks)).sum(axis=1) / np.maximum(found, 1), 0.0)
    relevant = np.bincount(d_cls, minlength=n_classes)[q_cls]
    return ap, relevant


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
def _ap_kernel(h_all, h_rel, topk, small_harmonic, direct_max):  # pragma: no cover - jitted
    nq = h_all.shape[0]
    ap = np.zeros(nq, dtype=np.float64)
    for i in prange(nq):
        ap[i] = _expected_ap(h_all, h_rel, i, topk, small_harmonic, direct_max)
    return ap


@_keeps_torch_threads
def average_precision_fast(h_all: np.ndarray, h_rel: np.ndarray, topk: int = 0) -> np.ndarray:
    """:func:`fgbench.metrics.retrieval.average_precision_from_histograms` in one parallel pass.

    The same expected AP (random order within tied distances), block by
    block, with the same cancellation-free sums (relative error ~1e-15); it
    differs from the numpy version only in rounding.  At VegFru scale
    (116,931 queries) it takes milliseconds instead of about a second.
    With ``topk`` > 0: the expected AP@K (docs/metrics.md, "mAP@K").
    """
    h_all = np.ascontiguousarray(h_all, dtype=np.int64)
    h_rel = np.ascontiguousarray(h_rel, dtype=np.int64)
    return _ap_kernel(h_all, h_rel, int(topk), SMALL_HARMONIC, DIRECT_SUM_MAX)


def _signature(*args: Any) -> tuple[Any, ...]:
    return tuple(numba.typeof(a) for a in args)


def compile_kernels(conventions: tuple[str, ...] = ("average",)) -> None:
    """Compile (or load from numba's cache) the kernels evaluation calls, without running them.

    The argument types are taken from tiny inputs prepared by the same
    helpers as real ones, so the signatures are those evaluation uses
    (tested: evaluating afterwards compiles nothing new).  ``"average"``
    covers :func:`evaluate_cpu` and :func:`average_precision_fast` (the GPU
    path's AP); ``"index"`` and ``"deephash"`` their kernels.
    """
    codes = np.array([[1.0, -1.0], [-1.0, 1.0]])
    labels = np.array([0, 1])
    qp, dp, q_cls, d_cls, n_classes = _packed_inputs(codes, codes, labels, labels)
    n_bits = 2
    uq, _c, q_row = _distinct_codes(qp, n_bits)
    ud, ud_counts, _ = _distinct_codes(dp, n_bits)
    hist = np.zeros((len(qp), n_bits + 1), dtype=np.int64)
    cls_start = np.zeros(n_classes + 1, dtype=np.int64)
    topk = 0
    if "average" in conventions:
        _all_kernel.compile(_signature(uq, ud, ud_counts, False, n_bits))
        _rel_ap_kernel.compile(_signature(qp, q_row, hist, q_cls, dp, cls_start, n_bits, topk, SMALL_HARMONIC,
                                          DIRECT_SUM_MAX))
        _ap_kernel.compile(_signature(hist, hist, topk, SMALL_HARMONIC, DIRECT_SUM_MAX))
    if "index" in conventions:
        _index_ap_kernel.compile(_signature(qp, dp, q_cls, d_cls, hist, hist, topk))
    if "deephash" in conventions:
        _distance_rows.compile(_signature(qp, dp, np.zeros((2, 2), dtype=np.float32)))
