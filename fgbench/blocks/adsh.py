"""ADSH's alternating optimisation, shared by the ADSH-style methods (ExchNet, SEMICON, A²-Net).

Q.-Y. Jiang, W.-J. Li, "Asymmetric Deep Supervised Hashing", AAAI 2018:
the network is trained for an *outer iteration* with the database codes
``V`` fixed, then ``V`` is updated in closed form with the network fixed
(Alg. 1; Sec. 3.2.2, discrete cyclic coordinate descent, one bit column at a
time).  The ExchNet, SEMICON and A²-Net reference codes all build on it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["adsh_update_database_codes", "outer_iteration_epochs"]


def outer_iteration_epochs(protocol: Any) -> int:
    """Epochs per outer iteration: the protocol's ``resample_every`` under ADSH-style sampling
    (``epoch_sample > 0``: a fresh subset every ``resample_every`` epochs), else 1 (every epoch ends one)."""
    sampled = int(getattr(protocol, "epoch_sample", 0)) > 0
    return int(getattr(protocol, "resample_every", 1)) if sampled else 1


@torch.no_grad()
def adsh_update_database_codes(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, num_classes: int,
                               dissimilar: float, gamma: float) -> torch.Tensor:
    """ADSH's closed-form bit-wise update of ``V`` with the network fixed (Sec. 3.2.2): the new ``V``.

    ``V_{*k} = sign(k (S^T U)_{*k} + gamma U_{*k} - V_hat U_hat^T U_{*k})``, where hats drop column ``k``.
    ``S^T U`` is formed from class sums (no n x n matrix): with ``S_ij = 1`` (same class) or ``dissimilar``
    ``= -p``, ``(S^T U)_j = (1 + p) sum_{i in y_j} u_i - p sum_i u_i``.

    Args:
        u: ``(n, k)`` relaxed codes ``U`` of the training images; rows outside Omega (the images not trained on
            in this outer iteration) set to zero, as ADSH's expanded ``U``.
        v: ``(n, k)`` current ``V`` in {-1, +1} (not modified).
        labels: ``(n,)`` class indices of the training images.
        num_classes: number of classes.
        dissimilar: the value of ``S`` for pairs of different classes (ADSH: -1).
        gamma: weight of the quantisation term ``||V - U||^2``.
    """
    bits = u.shape[1]
    v = v.clone()
    class_sums = torch.zeros(num_classes, bits, device=u.device).index_add_(0, labels, u)
    p = -dissimilar
    s_t_u = (1.0 + p) * class_sums[labels] - p * u.sum(dim=0, keepdim=True)
    q = bits * s_t_u + gamma * u
    for k in range(bits):
        rest = torch.arange(bits, device=u.device) != k
        column = q[:, k] - v[:, rest] @ (u[:, rest].T @ u[:, k])
        v[:, k] = torch.where(column >= 0, 1.0, -1.0)
    return v
