"""Loss building blocks shared by several methods (public API).

* :func:`similar_pair_ratio` — ``N+/N-``, the similar to dissimilar pair
  ratio of a label set: ``-N+/N-`` for dissimilar pairs makes a similarity
  matrix sum to zero (CMBH's rebalancing, ExchNet's soft ``S``).
* :func:`label_smoothing_ce` — cross-entropy with label smoothing (CNET,
  Multi-FusNet), and :func:`smoothing_for_confidence` to express it as the
  true-class probability the papers state.
* :func:`balanced_multitask_loss` — CNET's multi-task balanced loss with
  learnable weights (CNET Eq. 16; Multi-FusNet's adaptive alpha, beta).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similar_pair_ratio(labels: torch.Tensor, num_classes: int) -> float:
    """``N+ / N-``: similar over dissimilar ordered pairs ``(i, j)`` of ``labels`` (all pairs, ``i = j`` included).

    Giving dissimilar pairs the similarity ``-N+/N-`` (similar ones ``+1``)
    makes the ``n x n`` matrix sum to zero.  With a single class there is no
    dissimilar pair and the ratio is never used; it is then 1.

    Args:
        labels: integer class labels (any shape, flattened), e.g. ``ctx.train_labels``.
        num_classes: the number of classes (labels are ``0..num_classes-1``).

    Returns:
        The ratio as a Python float (computed in float64).
    """
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).double()
    similar = float((counts ** 2).sum())
    dissimilar = float(counts.sum()) ** 2 - similar
    return similar / dissimilar if dissimilar > 0 else 1.0


def label_smoothing_ce(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing ``smoothing`` (0 = plain CE)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def smoothing_for_confidence(confidence: float, num_classes: int) -> float:
    """``label_smoothing`` of :func:`fgbench.label_smoothing_ce` giving the true class
    probability ``confidence`` and ``(1 - confidence) / (C - 1)`` to each other class (Eq. 6).

    Args:
        confidence: the true-class probability the paper states, in (0, 1].
        num_classes: ``C``; below 2 there is nothing to smooth and 0.0 is returned.

    Returns:
        The ``smoothing`` argument for :func:`fgbench.label_smoothing_ce` (a float).
    """
    if num_classes < 2:
        return 0.0
    return (1.0 - confidence) * num_classes / (num_classes - 1)


def balanced_multitask_loss(hash_loss: torch.Tensor, cls_loss: torch.Tensor, a: torch.Tensor,
                            b: torch.Tensor) -> torch.Tensor:
    """Eq. 16: ``L_hash / a^2 + L_cls / b^2 + log(1 + a) + log(1 + b)`` (float32).

    Args:
        hash_loss, cls_loss: the two scalar task losses.
        a, b: the learnable weights (scalar tensors, e.g. ``nn.Parameter(torch.ones(()))``
            of the model, so the optimizer trains them with the rest).

    Returns:
        The scalar balanced loss (float32); store ``a`` and ``b`` through
        ``extra_state_for_record`` to see the learned weights in the record.
    """
    a, b = a.float(), b.float()
    return hash_loss / a.pow(2) + cls_loss / b.pow(2) + torch.log1p(a) + torch.log1p(b)
