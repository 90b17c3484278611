"""Retrieval metrics on binary codes: mAP@all, precision@k, precision within radius r, PR.

Definitions (docs/metrics.md):

* Query = test split, database = train split, relevant = same label.
  The database is ranked by Hamming distance to the query; *all* of it is
  ranked (mAP@all), nothing is dropped.
* **Ties.** Hamming distances take K+1 values, so many items tie.  Every
  metric is the *expected value over a uniformly random order of the items
  within each distance* (McSherry & Najork, ECIR 2008).  It therefore does
  not depend on database order, and it is computed exactly and in closed form
  from per-distance counts (see :func:`average_precision_from_histograms`).
* A query with no relevant database item has AP 0 and is counted in the mean
  (the count of such queries is reported as ``queries_without_relevant``).
* Precision within Hamming radius r: relevant / retrieved among items at
  distance <= r; 0 when nothing lies within r (the DPSH/DeepHash convention).
* Inputs (docs/metrics.md, "Input rules"): entries > 0 are bit 1, labels are
  integer class indices; anything else raises :class:`MetricInputError`.
* Other tie conventions (``ties=``, docs/metrics.md "Tie conventions"):
  ``index`` ranks by (distance, database index); ``deephash`` is
  DeepHash-pytorch's ``CalcTopMap`` (``np.argsort`` per query, ``topk``).
  ``topk=K`` gives mAP@K, normalised by the relevant items retrieved in the
  top K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch

from fgbench.errors import MetricInputError
from fgbench.metrics.harmonic import block_sums

# numba (fgbench.metrics.hamming_kernels) is imported when codes are first evaluated, not with fgbench:
# `fgbench --help` and friends neither pay for it nor depend on a numba cache directory.

CodesLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
LabelsLike = np.ndarray | torch.Tensor | Sequence[int]


def average_precision_from_histograms(h_all: np.ndarray, h_rel: np.ndarray) -> np.ndarray:
    """Exact expected AP per query under random order within tied distances.

    For a tie block of ``n`` items holding ``r`` relevant ones, preceded by
    ``N`` items of which ``R`` are relevant, the expected sum of precisions
    at its relevant items is::

        sum_{p=1..n} (r/n) * (R + 1 + (p-1)(r-1)/(n-1)) / (N + p)
          = (r/n) * ((R + 1) * S + beta * T)
          = (r/n) * (beta*n + (R + 1 - beta*(1 + N)) * (H[N+n] - H[N]))

    with ``beta = (r-1)/(n-1)`` (0 when n = 1), ``S = sum_p 1/(N+p)``,
    ``T = sum_p (p-1)/(N+p)`` and H the harmonic numbers: position p is
    relevant with probability r/n, and given that, the other r-1 relevant
    items fill the other n-1 places uniformly.  The second form (two
    non-negative terms, :func:`fgbench.metrics.harmonic.block_sums`) is the
    one computed: the third cancels when ``N >> n`` (5e-4 relative error for
    a few relevant items alone at the end of a 1M-item ranking); this is
    accurate to ~1e-15 relative.
    """
    h_all = np.asarray(h_all, dtype=np.int64)
    h_rel = np.asarray(h_rel, dtype=np.int64)
    n = h_all.astype(np.float64)
    r = h_rel.astype(np.float64)
    n_before = np.cumsum(h_all, axis=1) - h_all
    r_before = np.cumsum(h_rel, axis=1) - h_rel
    used = h_rel > 0
    s = np.zeros(h_all.shape)
    t = np.zeros(h_all.shape)
    s[used], t[used] = block_sums(n_before[used], h_all[used])
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
        block = (r / np.maximum(n, 1)) * ((r_before + 1) * s + beta * t)
    block = np.where(used, block, 0.0)
    total_rel = r.sum(axis=1)
    return np.where(total_rel > 0, block.sum(axis=1) / np.maximum(total_rel, 1), 0.0)


def precision_at_k_from_histograms(h_all: np.ndarray, h_rel: np.ndarray, k: int) -> np.ndarray:
    """Expected precision of the top ``k`` per query (ties in random order)."""
    n_db = h_all.sum(axis=1)
    kk = np.minimum(k, n_db).astype(np.float64)
    cum_n = np.cumsum(h_all, axis=1)
    before_n = cum_n - h_all
    # fraction of each distance block inside the top k
    taken = np.clip(kk[:, None] - before_n, 0, h_all).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(h_all > 0, taken / np.maximum(h_all, 1), 0.0)
    hits = (frac * h_rel).sum(axis=1)
    return np.where(kk > 0, hits / np.maximum(kk, 1), 0.0)


def precision_within_radius(h_all: np.ndarray, h_rel: np.ndarray, radius: int) -> np.ndarray:
    """relevant / retrieved within Hamming distance ``radius`` (0 when none retrieved)."""
    got = h_all[:, : radius + 1].sum(axis=1).astype(np.float64)
    rel = h_rel[:, : radius + 1].sum(axis=1).astype(np.float64)
    return np.where(got > 0, rel / np.maximum(got, 1), 0.0)


def pr_curve_from_histograms(h_all: np.ndarray, h_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall at each Hamming radius 0..K (queries averaged)."""
    got = np.cumsum(h_all, axis=1).astype(np.float64)
    rel = np.cumsum(h_rel, axis=1).astype(np.float64)
    total = h_rel.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(got > 0, rel / np.maximum(got, 1), 0.0)
        recall = np.where(total > 0, rel / np.maximum(total, 1), 0.0)
    return precision.mean(axis=0), recall.mean(axis=0)


TIE_CONVENTIONS: tuple[str, ...] = ("average", "index", "deephash")


@dataclass
class RetrievalEvaluation:
    """Per-query distance histograms and the per-query AP derived from them (``ties="average"``).

    ``average_precision`` is the expected AP over tie orders, AP@``topk``
    when ``topk`` is set; it is computed from the histograms when not given.
    Precision@k, radius precision and the PR curve do not depend on
    ``topk``.

    Attributes:
        h_all: ``(num_query, bits + 1)`` ints: per query, how many database codes lie at Hamming distance 0..bits.
        h_rel: the same, counting only the relevant (same-class) database codes.
        average_precision: ``(num_query,)`` float64: each query's AP (docs/metrics.md).
    """

    h_all: np.ndarray
    h_rel: np.ndarray
    average_precision: np.ndarray = None  # type: ignore[assignment]
    topk: int | None = None
    ties: str = field(default="average", init=False)

    def __post_init__(self) -> None:
        if self.average_precision is None:
            from fgbench.metrics.hamming_kernels import average_precision_fast

            # the same closed form as average_precision_from_histograms, in one numba pass (ms at VegFru scale)
            self.average_precision = average_precision_fast(self.h_all, self.h_rel, self.topk or 0)

    @property
    def n_bits(self) -> int:
        """The code length."""
        return self.h_all.shape[1] - 1

    @property
    def mean_average_precision(self) -> float:
        """mAP@all: the mean of ``average_precision`` (0.0 for no query)."""
        return float(self.average_precision.mean()) if len(self.average_precision) else 0.0

    @property
    def queries_without_relevant(self) -> int:
        """Queries with no relevant database item (their AP is 0)."""
        return int((self.h_rel.sum(axis=1) == 0).sum())

    def precision_at(self, k: int) -> float:
        """Mean precision of the top ``k`` (P@k; ties at the k-th distance by the rule of docs/metrics.md)."""
        return float(precision_at_k_from_histograms(self.h_all, self.h_rel, k).mean())

    def precision_radius(self, radius: int = 2) -> float:
        """Mean precision of the database items within Hamming distance ``radius`` (docs/metrics.md)."""
        return float(precision_within_radius(self.h_all, self.h_rel, radius).mean())

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(precision, recall)``, each ``(bits + 1,)``: averaged over queries at Hamming radius 0..bits."""
        return pr_curve_from_histograms(self.h_all, self.h_rel)


@dataclass
class RankedEvaluation:
    """The lighter result of ``ties="index"`` or ``"deephash"``: AP per query (AP@``topk`` when set) only.

    Precision@k, radius precision and the PR curve are defined under the
    tie-averaged convention only; asking for them raises
    :class:`MetricInputError`.
    """

    average_precision: np.ndarray
    relevant_per_query: np.ndarray
    ties: str
    topk: int | None = None

    @property
    def mean_average_precision(self) -> float:
        return float(self.average_precision.mean()) if len(self.average_precision) else 0.0

    @property
    def queries_without_relevant(self) -> int:
        return int((self.relevant_per_query == 0).sum())

    def _average_only(self, what: str) -> MetricInputError:
        return MetricInputError(f"{what} is computed under ties='average' only (this evaluation used "
                                f"ties={self.ties!r}); evaluate with ties='average' for it")

    def precision_at(self, k: int) -> float:
        raise self._average_only(f"precision@{k}")

    def precision_radius(self, radius: int = 2) -> float:
        raise self._average_only(f"precision within radius {radius}")

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        raise self._average_only("the PR curve")


def check_convention(ties: Any, topk: Any) -> int:
    """Validate ``ties`` and ``topk``; ``topk`` as the kernels take it (0 = whole database)."""
    if not isinstance(ties, str) or ties not in TIE_CONVENTIONS:
        raise MetricInputError(f"ties={ties!r}: use one of {', '.join(TIE_CONVENTIONS)}")
    if topk is None:
        return 0
    if isinstance(topk, (bool, np.bool_)) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise MetricInputError(f"topk={topk!r}: use a positive whole number of database items (e.g. 1000), "
                               "or None for the whole database")
    return int(topk)


_INT64_MAX = np.iinfo(np.int64).max
_EXACT_FLOAT_INT = 2.0**53  # float labels beyond this are not exact integers


def _code_shape_ok(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2 or shape[1] < 1:
        raise MetricInputError(f"{what}: expected a (n, bits) code matrix, got shape {shape}")
    if shape[0] == 0:
        raise MetricInputError(f"{what}: empty (0 codes); there is nothing to evaluate")


def _as_bits(x: Any, what: str) -> np.ndarray | torch.Tensor:
    """Codes as booleans (entry > 0 is bit 1): a numpy array, or a bool tensor on its CUDA device."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise MetricInputError(f"{what}: complex dtype {t.dtype}; codes must be real numbers or booleans")
        _code_shape_ok(tuple(t.shape), what)
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise MetricInputError(f"{what}: {bad} NaN or infinite entries; evaluate finite codes "
                                       "(e.g. torch.sign of finite network outputs)")
        bits = t > 0
        return bits if bits.is_cuda else bits.cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{what}: not a rectangular array of numbers ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise MetricInputError(f"{what}: dtype {a.dtype}; codes must be real numbers or booleans (entry > 0 is bit 1)")
    _code_shape_ok(a.shape, what)
    if a.dtype.kind == "f":
        bad = int((~np.isfinite(a)).sum())
        if bad:
            raise MetricInputError(f"{what}: {bad} NaN or infinite entries; evaluate finite codes "
                                   "(e.g. np.sign of finite network outputs)")
    return a > 0


def _as_class_indices(x: Any, what: str, n_codes: int, codes_what: str) -> np.ndarray:
    """Labels as a 1-D int64 array of class indices, one per code; anything else is refused."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_complex():
            raise MetricInputError(f"{what}: complex dtype {t.dtype}; labels must be integer class indices")
        a = (t.double() if t.is_floating_point() else t).numpy()
    else:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise MetricInputError(f"{what}: not a flat sequence of class indices ({exc})") from None
    if a.ndim == 2 and a.shape[1] > 1:
        raise MetricInputError(
            f"{what}: 2-D labels of shape {a.shape} (one-hot or multi-hot?); relevance is 'same class', so pass one "
            f"class index per item, e.g. labels.argmax(1) for one-hot (multi-label relevance is not supported)")
    if a.ndim != 1:
        hint = " (a column: pass labels.reshape(-1))" if a.ndim == 2 and a.shape[1] == 1 else ""
        raise MetricInputError(f"{what}: expected a 1-D array of class indices, got shape {a.shape}{hint}")
    if len(a) != n_codes:
        raise MetricInputError(f"{what}: {len(a)} labels for {n_codes} {codes_what} (each code needs one label)")
    kind = a.dtype.kind
    if kind in "US":
        raise MetricInputError(
            f"{what}: string labels (e.g. {a[0].item()!r}); labels must be integer class indices on both sides "
            f"(convert them, e.g. np.unique(np.concatenate([query, database]), return_inverse=True))")
    if kind == "b":
        return a.astype(np.int64)
    if kind in "iu":
        if kind == "u" and a.dtype.itemsize == 8 and a.max() > _INT64_MAX:
            raise MetricInputError(f"{what}: class index {int(a.max())} does not fit in int64")
        return a.astype(np.int64)
    if kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            raise MetricInputError(f"{what}: {int((~finite).sum())} NaN or infinite labels; every item needs a class")
        if (a != np.round(a)).any() or (np.abs(a) >= _EXACT_FLOAT_INT).any():
            bad = float(a[(a != np.round(a)) | (np.abs(a) >= _EXACT_FLOAT_INT)][0])
            raise MetricInputError(f"{what}: non-integer label {bad!r}; labels must be integer class indices")
        return a.astype(np.int64)
    raise MetricInputError(f"{what}: dtype {a.dtype}; labels must be integer class indices")


@overload
def evaluate_codes(query_codes: CodesLike, db_codes: CodesLike, query_labels: LabelsLike, db_labels: LabelsLike, *,
                   ties: Literal["average"] = ..., topk: int | None = ...) -> RetrievalEvaluation: ...


@overload
def evaluate_codes(query_codes: CodesLike, db_codes: CodesLike, query_labels: LabelsLike, db_labels: LabelsLike, *,
                   ties: str, topk: int | None = ...) -> RetrievalEvaluation | RankedEvaluation: ...


def evaluate_codes(
    query_codes: CodesLike,
    db_codes: CodesLike,
    query_labels: LabelsLike,
    db_labels: LabelsLike,
    *,
    ties: str = "average",
    topk: int | None = None,
) -> RetrievalEvaluation | RankedEvaluation:
    """Histograms for query vs database codes, and the metrics that follow from them.

    Codes: ``(n, bits)`` numpy arrays, torch tensors (CPU or CUDA) or nested
    lists, of any real or boolean dtype; an entry > 0 is bit 1 and anything
    else (negative *or zero*) is bit 0, so {-1, +1}, {0, 1} and bool codes
    all mean the same.  Labels: one integer class index per code (1-D; ints,
    bools or integer-valued floats).  Anything else -- NaN/inf codes or
    labels, 2-D (one-hot) or string labels, length or width mismatches,
    empty inputs -- raises :class:`MetricInputError` (docs/metrics.md).

    ``ties`` (one of :data:`TIE_CONVENTIONS`): ``"average"`` (expected AP
    over random order within tied distances; a full
    :class:`RetrievalEvaluation`), ``"index"`` (ties broken by database
    index) or ``"deephash"`` (DeepHash-pytorch ``CalcTopMap``); the last two
    give a :class:`RankedEvaluation` (AP per query only).  ``topk``: mAP@K,
    each AP divided by the relevant items retrieved in the top K (None: the
    whole database).

    With ``ties="average"`` and a CUDA tensor on either side the torch GPU
    path computes the histograms on that device; everything else runs on the
    CPU (numba).

    Args:
        query_codes: ``(num_query, bits)`` codes of the queries (test split).
        db_codes: ``(num_db, bits)`` codes of the database (training split).
        query_labels: ``(num_query,)`` class indices.
        db_labels: ``(num_db,)`` class indices.

    Returns:
        ``.mean_average_precision`` is mAP, ``.average_precision`` the per-query APs (plus P@k, radius
        precision and the PR curve under ``ties="average"``).
    """
    k = check_convention(ties, topk)
    q_bits = _as_bits(query_codes, "query_codes")
    d_bits = _as_bits(db_codes, "db_codes")
    if q_bits.shape[1] != d_bits.shape[1]:
        raise MetricInputError(f"query_codes have {q_bits.shape[1]} bits, db_codes {d_bits.shape[1]}: "
                               "evaluate codes of one length")
    ql = _as_class_indices(query_labels, "query_labels", q_bits.shape[0], "query codes")
    dl = _as_class_indices(db_labels, "db_labels", d_bits.shape[0], "database codes")
    cuda = next((b.device for b in (q_bits, d_bits) if isinstance(b, torch.Tensor)), None)
    from fgbench.metrics import hamming_kernels as hk

    if cuda is not None and ties == "average":
        h_all, h_rel = hk.histograms_torch(torch.as_tensor(q_bits, device=cuda), torch.as_tensor(d_bits, device=cuda),
                                           torch.as_tensor(ql), torch.as_tensor(dl))
        return RetrievalEvaluation(h_all.cpu().numpy(), h_rel.cpu().numpy(), topk=topk)
    q_np = q_bits.cpu().numpy() if isinstance(q_bits, torch.Tensor) else q_bits
    d_np = d_bits.cpu().numpy() if isinstance(d_bits, torch.Tensor) else d_bits
    if ties == "average":
        h_all, h_rel, ap = hk.evaluate_cpu(q_np, d_np, ql, dl, k)
        return RetrievalEvaluation(h_all, h_rel, ap, topk=topk)
    kernel = hk.index_ap_cpu if ties == "index" else hk.deephash_ap_cpu
    ap, relevant = kernel(q_np, d_np, ql, dl, k)
    return RankedEvaluation(ap, relevant, ties, topk)


def mean_average_precision(
    query_codes: CodesLike,
    db_codes: CodesLike,
    query_labels: LabelsLike,
    db_labels: LabelsLike,
    *,
    ties: str = "average",
    topk: int | None = None,
) -> float:
    """mAP (mAP@``topk`` when set) under the tie convention ``ties`` (see :func:`evaluate_codes`)."""
    return evaluate_codes(query_codes, db_codes, query_labels, db_labels, ties=ties,
                          topk=topk).mean_average_precision
