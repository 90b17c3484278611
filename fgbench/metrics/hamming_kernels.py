"""Per-query Hamming-distance histograms: the one hot loop of evaluation.

Distances between K-bit codes take only K+1 values, so every ranking metric
(with ties handled as an expectation over random order within a distance)
follows from two histograms per query: how many database items, and how
many *relevant* ones, lie at each distance.  Two exact backends:

* CPU: codes packed into 64-bit words, popcount (LLVM ``ctpop``) in a numba
  kernel parallel over queries; database codes are de-duplicated first
  (with multiplicities) per class, which is exact and makes short codes cheap.
* GPU: torch matmul of +-1 codes and ``scatter_add`` into the histograms,
  in chunks of queries.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack {-1,+1} (or {0,1}) codes ``(n, K)`` into uint64 words ``(n, ceil(K/64))``."""
    bits = np.asarray(codes) > 0
    n, k = bits.shape
    words = (k + 63) // 64
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :k] = bits
    packed8 = np.packbits(padded, axis=1, bitorder="little")
    return np.ascontiguousarray(packed8).view(np.uint64).reshape(n, words)


@njit(parallel=True, cache=True, fastmath=False)
def _histograms_kernel(q, q_label, d_all, c_all, d_cls, c_cls, cls_start, n_bits):  # pragma: no cover - jitted
    nq = q.shape[0]
    nw = q.shape[1]
    h_all = np.zeros((nq, n_bits + 1), dtype=np.int64)
    h_rel = np.zeros((nq, n_bits + 1), dtype=np.int64)
    for i in prange(nq):
        for j in range(d_all.shape[0]):
            dist = 0
            for w in range(nw):
                dist += _popcount64(q[i, w] ^ d_all[j, w])
            h_all[i, dist] += c_all[j]
        lab = q_label[i]
        if lab >= 0 and lab + 1 < cls_start.shape[0]:
            for j in range(cls_start[lab], cls_start[lab + 1]):
                dist = 0
                for w in range(nw):
                    dist += _popcount64(q[i, w] ^ d_cls[j, w])
                h_rel[i, dist] += c_cls[j]
    return h_all, h_rel


def _unique_with_counts(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, counts = np.unique(packed, axis=0, return_counts=True)
    return np.ascontiguousarray(uniq), counts.astype(np.int64)


def histograms_cpu(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(h_all, h_rel)`` of shape ``(n_query, K+1)`` on the CPU."""
    n_bits = query_codes.shape[1]
    qp, dp = pack_codes(query_codes), pack_codes(db_codes)
    d_all, c_all = _unique_with_counts(dp)
    # de-duplicate per class: database rows sorted by label, unique codes within each class
    classes = np.unique(np.concatenate([np.asarray(db_labels), np.asarray(query_labels)]))
    label_index = {int(c): i for i, c in enumerate(classes)}
    db_cls = np.array([label_index[int(v)] for v in db_labels], dtype=np.int64)
    q_cls = np.array([label_index[int(v)] for v in query_labels], dtype=np.int64)
    blocks, counts, starts = [], [], [0]
    order = np.argsort(db_cls, kind="stable")
    bounds = np.searchsorted(db_cls[order], np.arange(len(classes) + 1))
    for c in range(len(classes)):
        rows = dp[order[bounds[c] : bounds[c + 1]]]
        if len(rows):
            u, cnt = _unique_with_counts(rows)
        else:
            u, cnt = np.zeros((0, dp.shape[1]), np.uint64), np.zeros(0, np.int64)
        blocks.append(u)
        counts.append(cnt)
        starts.append(starts[-1] + len(u))
    d_cls = np.ascontiguousarray(np.concatenate(blocks)) if blocks else np.zeros((0, dp.shape[1]), np.uint64)
    c_cls = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    # identical (code, label) queries share their histograms
    key = np.concatenate([qp, q_cls[:, None].astype(np.uint64)], axis=1)
    uq, inverse = np.unique(key, axis=0, return_inverse=True)
    h_all, h_rel = _histograms_kernel(
        np.ascontiguousarray(uq[:, :-1]), uq[:, -1].astype(np.int64), d_all, c_all, d_cls, c_cls,
        np.asarray(starts, dtype=np.int64), n_bits,
    )
    inverse = np.asarray(inverse).reshape(-1)
    return h_all[inverse], h_rel[inverse]


def histograms_torch(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    chunk: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(h_all, h_rel)`` with torch on the codes' device (meant for CUDA)."""
    n_bits = query_codes.shape[1]
    dtype = torch.float32
    q = torch.where(query_codes > 0, 1.0, -1.0).to(dtype)
    d = torch.where(db_codes > 0, 1.0, -1.0).to(dtype)
    ql, dl = query_labels.to(d.device), db_labels.to(d.device)
    h_all = torch.zeros(len(q), n_bits + 1, dtype=torch.int64, device=d.device)
    h_rel = torch.zeros_like(h_all)
    for s in range(0, len(q), chunk):
        # +-1 inner products are exact small integers in fp32 (|x| <= K <= 256)
        dist = ((n_bits - q[s : s + chunk] @ d.T) * 0.5).round_().long()
        rel = (ql[s : s + chunk, None] == dl[None, :]).long()
        h_all[s : s + chunk].scatter_add_(1, dist, torch.ones_like(dist))
        h_rel[s : s + chunk].scatter_add_(1, dist, rel)
    return h_all, h_rel
