"""CSQ — Yuan, Wang, Zhang, Tay, Jie, Liu, Feng, "Central Similarity
Quantization for Efficient Image and Video Retrieval", CVPR 2020.

Hash centres (Sec. 3.2): one centre ``c_y in {-1, +1}^K`` per class, far
apart in Hamming space.  With a Hadamard matrix ``H_K`` (``K`` a power of 2),
the rows of ``[H_K; -H_K]`` are ``2K`` centres at mutual distance ``>= K/2``,
used when ``2K >= m`` classes (Sec. 3.2.1).  Otherwise each centre is drawn
from a Bernoulli distribution (Sec. 3.2.2); as in the authors' centre
generation notebook, each draw has exactly ``K/2`` bits at -1 and the whole
set is redrawn (up to 20 times) until the minimum pairwise distance exceeds
``K/4`` and the mean reaches ``K/2``.  The draws are seeded by the run seed.

Objective (Sec. 3.3, Eqs. 6-9): the central similarity, a binary
cross-entropy between ``(h + 1)/2`` and ``(c_y + 1)/2`` averaged over bits
(Eq. 7), plus ``lambda`` times the quantisation loss of Eq. 8 in its smooth
form ``sum_k log cosh(|h_k| - 1)`` (``h = tanh(z)``; ``|2h' - 1| - 1`` in the
paper's ``h' in [0, 1]`` notation).  ``lambda = 0.05`` is the authors' code
(``lambda2``; their code uses the square ``(|h| - 1)^2``).  Their code also
adds a HashNet-style pairwise term (``lambda1 = 0.2``) that the paper's
objective (Eq. 9) does not have; it is left out here (README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import hadamard
from torch import nn

from fgbench import Batch, BuildContext, HashingModel, MethodSpec, hookimpl

FGBENCH_API_VERSION = 1


@dataclass(frozen=True)
class CSQConfig:
    """CSQ hyper-parameters.

    quantization_weight: ``lambda`` of Eq. 9 (0.05, the authors' code).
    """

    quantization_weight: float = 0.05


def _is_power_of_two(k: int) -> bool:
    return k > 0 and k & (k - 1) == 0


def hash_centers(num_classes: int, bits: int, seed: int = 0, trials: int = 20) -> torch.Tensor:
    """Sec. 3.2: ``(num_classes, bits)`` centres in {-1, +1} (Hadamard rows when possible, else Bernoulli)."""
    if _is_power_of_two(bits) and 2 * bits >= num_classes:
        h = hadamard(bits)
        return torch.as_tensor(np.concatenate([h, -h])[:num_classes], dtype=torch.float32)
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_min = -1
    for _ in range(max(trials, 1)):
        centers = np.ones((num_classes, bits), dtype=np.float32)
        for row in centers:
            row[rng.choice(bits, bits // 2, replace=False)] = -1.0
        dist = (bits - centers @ centers.T) / 2
        upper = dist[np.triu_indices(num_classes, 1)]
        low = int(upper.min()) if upper.size else bits
        if low > best_min:
            best, best_min = centers, low
        if upper.size == 0 or (upper.min() > bits / 4 and upper.mean() >= bits / 2):
            best = centers
            break
    assert best is not None
    return torch.as_tensor(best)


def central_similarity_loss(h: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Eq. 7: the mean binary cross-entropy between ``(h+1)/2`` and ``(c+1)/2``."""
    p = ((h + 1) / 2).clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(p, (centers + 1) / 2)


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``log cosh(|h| - 1)``, summed over bits, averaged over the batch."""
    x = h.abs() - 1
    # log cosh(x) = |x| + softplus(-2|x|) - log 2, stable for every x
    return (x.abs() + F.softplus(-2 * x.abs()) - float(np.log(2.0))).sum(dim=1).mean()


class CSQ(HashingModel):
    """Backbone -> global average pool -> hash layer -> tanh (Sec. 3.3), trained towards each class's centre."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        self.bits = ctx.bits
        self.config: CSQConfig = ctx.config
        self.backbone = ctx.backbone()
        self.hash_layer = nn.Linear(self.backbone.out_channels, ctx.bits)
        self.register_buffer("centers", hash_centers(ctx.num_classes, ctx.bits, seed=ctx.seed))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hash_layer(torch.flatten(F.adaptive_avg_pool2d(self.backbone(images), 1), 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def loss(self, h: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = h.float()
        center = central_similarity_loss(h, self.centers[batch.labels])
        quant = quantization_loss(h)
        loss = center + self.config.quantization_weight * quant
        return loss, {"central": center.detach(), "quantization": quant.detach()}


def build(ctx: BuildContext) -> CSQ:
    return CSQ(ctx)


SPEC = MethodSpec(
    name="csq",
    summary="CSQ: hash centres from Hadamard/Bernoulli codes, central similarity + quantization (CVPR 2020)",
    citation="L. Yuan, T. Wang, X. Zhang, F. E. H. Tay, Z. Jie, W. Liu, J. Feng. Central Similarity Quantization "
             "for Efficient Image and Video Retrieval. CVPR 2020.",
    config_cls=CSQConfig,
    build=build,
    # No paper-reported mAP: neither CSQ's paper nor the papers in ../shared/papers report it on the five
    # fine-grained datasets (README).
    # The authors' code (yuanli2333/Hadamard-Matrix-for-hashing, train.py/options.py): Adam (0.9, 0.999),
    # lr 1e-3 for the hash layer and 0.01x for the backbone, batch 64, 90 epochs; their rate is multiplied by
    # 0.7 every 10 epochs, which fgbench's schedule vocabulary cannot say: constant here (README).
    paper_recipe={
        "default": {"optimizer": "adam", "lr": 1e-3, "backbone_lr_mult": 0.01, "weight_decay": 0.0,
                    "schedule": "constant", "epochs": 90, "batch_size": 64},
    },
    paper_recipe_sources={
        "backbone_lr_mult": "authors' code yuanli2333/Hadamard-Matrix-for-hashing train.py / options.py (Adam lr 1e-3, backbone 0.01x, batch 64, 90 epochs)",
        "batch_size": "authors' code yuanli2333/Hadamard-Matrix-for-hashing train.py / options.py (Adam lr 1e-3, backbone 0.01x, batch 64, 90 epochs)",
        "epochs": "authors' code yuanli2333/Hadamard-Matrix-for-hashing train.py / options.py (Adam lr 1e-3, backbone 0.01x, batch 64, 90 epochs)",
        "lr": "authors' code yuanli2333/Hadamard-Matrix-for-hashing train.py / options.py (Adam lr 1e-3, backbone 0.01x, batch 64, 90 epochs)",
        "optimizer": "authors' code yuanli2333/Hadamard-Matrix-for-hashing train.py / options.py (Adam lr 1e-3, backbone 0.01x, batch 64, 90 epochs)",
        "schedule": "authors' code multiplies the lr by 0.7 every 10 epochs, which fgbench's schedule cannot say: constant (README)",
        "weight_decay": "authors' code train.py (Adam without weight decay)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
