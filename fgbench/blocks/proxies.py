"""FISH-style binary proxy codes, learned from the labels before training (public API).

CNET (Zeng & Zheng, Sec. 3.4.2, Eq. 10-14) and Multi-FusNet (Cui et al.,
"Offline feature compression", Eq. 1-7) both take their hash targets from
FISH (Chen et al., "Fine-grained hashing with double filtering", TIP 2022):
before the network is trained, binary codes ``B`` are learned from the label
matrix ``Y`` alone by

    min_{B, P, V, R}  sigma * ||Y - P V||_F^2  +  delta * ||B - R V||_F^2
    s.t.  B in {-1, +1}^{bits x C},  R^T R = I                      (CNET Eq. 14)

with ``P`` (``C x bits``) the real-valued class proxies, ``V`` a real-valued
relaxation of ``B`` and ``R`` an orthogonal rotation.  Each variable is updated
in turn with the others fixed, every step solving its sub-problem exactly
(Multi-FusNet Eq. 3-7; 15 iterations in Multi-FusNet Sec. "Implementation
details", also the authors' code):

    B = sign(R V)                                        (Eq. 3-4)
    P = Y V^T (V V^T)^+                                  (Eq. 5, least squares)
    V = (sigma P^T P + delta I)^+ (sigma P^T Y + delta R^T B)   (Eq. 6)
    R = U W^T,  U S W^T = svd(B V^T)                     (Eq. 7, orthogonal Procrustes)

so the objective never increases (the CNET code base forms ``R`` as ``U W``
from ``torch.svd``, i.e. without the transpose; we use the Procrustes
solution ``U W^T``).  The network is then trained to regress its
relaxed codes onto ``B`` (the right half of CNET Eq. 11 / Multi-FusNet Eq. 16).

We solve the problem at the class level, ``Y = I_C`` (every class weighted
alike): the authors' code solves it per training image, where the label term
makes the codes of a class agree (after 15 iterations, all images of 93-95%
of the classes share one code for 200 classes x 30 images); the class-level
form gives exactly one code per class and needs only ``num_classes``.

Two guarantees the papers' scheme does not give are added, both on by default
and documented in the result (``balanced=False, distinct=False`` gives the
plain scheme):

* ``balanced``: the ``B`` step is solved under the bit-balance constraint
  ``|B 1| <= 1`` (each bit is +1 for half of the classes).  Its exact solution
  is a per-bit median split of ``R V``, so every step stays an exact block
  minimisation and the objective still never increases.  The plain scheme can
  leave a bit +1 for 11 of 12 classes.
* ``distinct``: after the last iteration, a class whose code equals that of a
  more confident class is moved to the nearest unused code (fewest and least
  confident bits of ``R V`` flipped).  The plain scheme gives 3-4 colliding
  pairs for 200 classes at 12 bits.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fgbench.errors import ConfigError

__all__ = ["ProxyCodes", "fish_proxy_codes", "solve_fish_proxies"]


@dataclass(frozen=True)
class ProxyCodes:
    """Result of :func:`solve_fish_proxies`.

    Attributes:
        codes: ``(num_classes, bits)`` float32 tensor in {-1, +1}: the binary
            hash target of each class (``B^T``).
        proxies: ``(num_classes, bits)`` float32 real-valued class proxies ``P``.
        objective: the objective of CNET Eq. 14 after each iteration
            (non-increasing).
        repaired: number of classes moved to an unused code by the ``distinct`` step.
    """

    codes: torch.Tensor
    proxies: torch.Tensor
    objective: tuple[float, ...]
    repaired: int

    def min_hamming_distance(self) -> int:
        """Smallest Hamming distance between the codes of two different classes."""
        c = self.codes.double()
        if c.shape[0] < 2:
            return int(c.shape[1])
        dist = 0.5 * (c.shape[1] - c @ c.T)
        dist.fill_diagonal_(float("inf"))
        return int(dist.min())

    def bit_balance(self) -> torch.Tensor:
        """Per-bit mean over classes, in [-1, 1] (0 = perfectly balanced)."""
        return self.codes.mean(0)


def fish_proxy_codes(num_classes: int, bits: int, iterations: int = 15, seed: int = 0) -> torch.Tensor:
    """Binary proxy code per class, ``(num_classes, bits)`` float32 in {-1, +1}.

    Deterministic given ``seed``; bits balanced and codes pairwise distinct
    (when ``num_classes <= 2**bits``).  See :func:`solve_fish_proxies` for the
    objective trace and the options.
    """
    return solve_fish_proxies(num_classes, bits, iterations=iterations, seed=seed).codes


def solve_fish_proxies(
    num_classes: int,
    bits: int,
    iterations: int = 15,
    seed: int = 0,
    *,
    sigma: float = 1.0,
    delta: float = 1e-4,
    balanced: bool = True,
    distinct: bool = True,
) -> ProxyCodes:
    """Learn the FISH proxy codes of ``num_classes`` classes (module docstring).

    Args:
        num_classes: number of classes ``C`` (>= 1).
        bits: code length (>= 1).
        iterations: alternating-optimisation sweeps (Multi-FusNet: 15).
        seed: seed of the random initialisation of ``V`` and ``B``.
        sigma, delta: weights of the label-regression and quantisation terms
            (the authors' code: 1 and 1e-4).
        balanced: solve the ``B`` step under the bit-balance constraint.
        distinct: move colliding classes to the nearest unused codes at the end.
    """
    if num_classes < 1 or bits < 1 or iterations < 1:
        raise ConfigError(f"num_classes, bits and iterations must be >= 1 (got {num_classes}, {bits}, {iterations}); "
                          f"check --set METHOD.proxy_iterations")
    g = torch.Generator().manual_seed(int(seed))
    dt = torch.float64
    Y = torch.eye(num_classes, dtype=dt)
    V = torch.randn(bits, num_classes, generator=g, dtype=dt)
    B = _sign(torch.randn(bits, num_classes, generator=g, dtype=dt))
    R = _procrustes(B @ V.T)
    eye = torch.eye(bits, dtype=dt)
    objective = []
    for _ in range(iterations):
        Z = R @ V
        B = _balanced_sign(Z) if balanced else _sign(Z)
        P = Y @ V.T @ torch.linalg.pinv(V @ V.T)
        V = torch.linalg.pinv(sigma * P.T @ P + delta * eye) @ (sigma * P.T @ Y + delta * R.T @ B)
        R = _procrustes(B @ V.T)
        obj = sigma * (Y - P @ V).pow(2).sum() + delta * (B - R @ V).pow(2).sum()
        objective.append(float(obj))
    repaired = 0
    if distinct and num_classes <= 2 ** min(bits, 62):
        B, repaired = _make_distinct(B, R @ V)
    return ProxyCodes(codes=B.T.float().contiguous(), proxies=P.float().contiguous(),
                      objective=tuple(objective), repaired=repaired)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _procrustes(m: torch.Tensor) -> torch.Tensor:
    """The orthogonal ``R`` maximising ``tr(R^T m)``: ``U W^T`` from ``svd(m)``."""
    u, _s, wh = torch.linalg.svd(m)
    return u @ wh


def _balanced_sign(z: torch.Tensor) -> torch.Tensor:
    """``argmin ||B - z||`` over ``B`` in {-1,+1} with each row's sum in {-1, 0, 1}.

    Per row: +1 for the larger half of the entries; with an odd count the
    median entry keeps its own sign.
    """
    n = z.shape[1]
    order = torch.argsort(z, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand_as(order).contiguous())
    b = torch.where(rank < n // 2, 1.0, -1.0).to(z.dtype)
    if n % 2:
        middle = rank == n // 2
        b = torch.where(middle, _sign(z), b)
    return b


def _make_distinct(B: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Move each class whose code is already taken to the nearest free code.

    Classes are visited from the most to the least confident (``b . z``);
    candidate codes are visited in increasing cost ``sum 4|z_k|`` of the
    flipped bits, so the increase of ``||B - Z||^2`` is the smallest possible
    for that class.
    """
    B = B.clone()
    confidence = (B * Z).sum(0)
    used: set[tuple[int, ...]] = set()
    repaired = 0
    for c in torch.argsort(confidence, descending=True, stable=True).tolist():
        code = B[:, c]
        key = tuple(int(v) for v in code.tolist())
        if key not in used:
            used.add(key)
            continue
        cost = Z[:, c].abs()
        order = torch.argsort(cost, stable=True).tolist()
        for flips in _subsets_by_cost([float(cost[k]) for k in order]):
            cand = code.clone()
            idx = [order[i] for i in flips]
            cand[idx] = -cand[idx]
            key = tuple(int(v) for v in cand.tolist())
            if key not in used:
                used.add(key)
                B[:, c] = cand
                repaired += 1
                break
    return B, repaired


def _subsets_by_cost(costs: list[float]) -> Iterator[tuple[int, ...]]:
    """Every non-empty subset of ``range(len(costs))`` in non-decreasing total cost.

    ``costs`` must be sorted ascending.  Standard best-first enumeration: from
    a subset ending at ``i``, either move ``i`` to ``i+1`` or also take ``i+1``.
    """
    n = len(costs)
    if n == 0:
        return
    heap: list[tuple[float, tuple[int, ...]]] = [(costs[0], (0,))]
    while heap:
        total, subset = heapq.heappop(heap)
        yield subset
        last = subset[-1]
        if last + 1 < n:
            heapq.heappush(heap, (total - costs[last] + costs[last + 1], subset[:-1] + (last + 1,)))
            heapq.heappush(heap, (total + costs[last + 1], subset + (last + 1,)))
