"""HashNet — Cao, Long, Wang, Yu, "HashNet: Deep Learning to Hash by
Continuation", ICCV 2017.

Model (Sec. 3.1): a CNN feature (here the protocol's backbone with global
average pooling, in place of AlexNet's fc7) and a fully connected hash layer
``fch`` with ``h = tanh(beta * z)``; at inference ``b = sign(h)``.

Objective (Sec. 3.2, Eqs. 4-5, the weighted maximum likelihood)::

    L = sum_{s_ij in S} w_ij ( log(1 + exp(alpha <h_i, h_j>)) - alpha s_ij <h_i, h_j> )

with the pair weights of Eq. 5 for single-label data (``c_ij = 1``):
``w_ij = |S| / |S_1|`` for similar pairs and ``|S| / |S_0|`` for dissimilar
ones, so that both kinds weigh the same in total (the "imbalanced data" of
the title).  The loss is normalised by ``|S|`` as in the authors' code.
``alpha`` (the sigmoid's slope) is ``10 / bits`` in the authors' released
PyTorch code (the paper leaves it to cross-validation).  The pairs are those
of the mini-batch (``i != j``).

Continuation (Sec. 3.3, Algorithm 1): ``beta`` starts at 1 and grows during
training so that ``tanh(beta z)`` tends to ``sign(z)``.  The authors' code
updates ``beta = (1 + gamma * t) ** power`` every ``step`` iterations ``t``
(gamma = 0.005, power = 0.5, step = 200); the iteration count is a buffer of
the model, so a resumed run continues the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fgbench import Batch, BuildContext, HashingModel, MethodSpec, PaperResult, hookimpl

FGBENCH_API_VERSION = 1


@dataclass(frozen=True)
class HashNetConfig:
    """HashNet hyper-parameters (the authors' released PyTorch settings).

    alpha: slope of the pairwise sigmoid; ``0`` means ``10 / bits`` (authors' code).
    beta_gamma, beta_power, beta_step: the continuation schedule of ``beta``
        (Sec. 3.3): ``beta = (1 + beta_gamma * t) ** beta_power``, ``t`` the
        training iteration rounded down to a multiple of ``beta_step``.
    """

    alpha: float = 0.0
    beta_gamma: float = 0.005
    beta_power: float = 0.5
    beta_step: int = 200


def continuation_beta(iteration: int, cfg: HashNetConfig) -> float:
    """``beta`` at training ``iteration`` (Sec. 3.3; step-wise as in the authors' code)."""
    t = (iteration // max(cfg.beta_step, 1)) * max(cfg.beta_step, 1)
    return float((1.0 + cfg.beta_gamma * t) ** cfg.beta_power)


def weighted_pair_likelihood(h: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eqs. 4-5: the weighted pairwise negative log-likelihood over the batch's pairs ``i != j``."""
    similar = (labels[:, None] == labels[None, :]).float()
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=h.device)
    theta = alpha * (h @ h.T)
    nll = F.softplus(theta) - similar * theta  # log(1 + e^theta) - s * theta, numerically stable
    pos = (similar > 0) & off_diagonal
    neg = (similar == 0) & off_diagonal
    n_pos, n_neg = pos.sum(), neg.sum()
    total = n_pos + n_neg
    if total == 0:
        return h.sum() * 0.0
    weights = torch.zeros_like(theta)
    if n_pos > 0:
        weights = torch.where(pos, total / n_pos, weights)
    if n_neg > 0:
        weights = torch.where(neg, total / n_neg, weights)
    return (weights * nll).sum() / total


class HashNet(HashingModel):
    """Backbone -> global average pool -> ``fch`` -> ``tanh(beta z)`` (Sec. 3.1, 3.3)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        self.bits = ctx.bits
        self.config: HashNetConfig = ctx.config
        self.alpha = self.config.alpha if self.config.alpha > 0 else 10.0 / ctx.bits
        self.backbone = ctx.backbone()
        self.hash_layer = nn.Linear(self.backbone.out_channels, ctx.bits)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        return continuation_beta(int(self.iteration), self.config)

    def _z(self, images: torch.Tensor) -> torch.Tensor:
        return self.hash_layer(torch.flatten(F.adaptive_avg_pool2d(self.backbone(images), 1), 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.beta * self._z(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def loss(self, h: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.training:
            self.iteration += 1
        loss = weighted_pair_likelihood(h.float(), batch.labels, self.alpha)
        return loss, {"likelihood": loss.detach(), "beta": torch.tensor(self.beta)}


def build(ctx: BuildContext) -> HashNet:
    return HashNet(ctx)


# mAP@all (%) of HashNet on the five fine-grained datasets, as reported in Multi-FusNet's Table 3
# (Multi-FusNet, PeerJ Comput. Sci. 2024; the same values appear in CNET's Table I for CUB). HashNet's own
# paper reports no fine-grained dataset.
_PAPER_MAP = {
    "cub": {12: 12.03, 24: 17.77, 32: 19.93, 48: 22.13},
    "aircraft": {12: 14.91, 24: 17.75, 32: 19.42, 48: 20.32},
    "food101": {12: 24.42, 24: 34.48, 32: 35.90, 48: 39.65},
    "nabirds": {12: 23.40, 24: 32.90, 32: 45.20, 48: 49.70},
    "vegfru": {12: 3.70, 24: 6.24, 32: 7.83, 48: 10.29},
}

SPEC = MethodSpec(
    name="hashnet",
    summary="HashNet: weighted pairwise likelihood + tanh continuation (ICCV 2017 baseline)",
    citation="Z. Cao, M. Long, J. Wang, P. S. Yu. HashNet: Deep Learning to Hash by Continuation. ICCV 2017.",
    config_cls=HashNetConfig,
    build=build,
    paper_results=(
        PaperResult(
            source="Multi-FusNet (PeerJ CS 2024), Table 3, HashNet column (mAP@all; HashNet's own paper has no "
                   "fine-grained dataset)",
            map={d: {b: round(v / 100, 4) for b, v in row.items()} for d, row in _PAPER_MAP.items()},
        ),
    ),
    # The authors' released PyTorch code (thuml/HashNet, pytorch/src/train.py): SGD (Nesterov) with momentum 0.9,
    # weight decay 5e-4, the hash layer at 10x the rate of the fine-tuned layers, base lr 3e-4 (README example),
    # batches of 36 + 36 images, 10,000 iterations.  The epochs below are those 10,000 iterations of 72 images
    # over each dataset's training split.  Their learning rate halves every 2,000 iterations; fgbench's step
    # schedule divides by 10, so a constant rate is used (README: "Differences").
    paper_recipe={
        "default": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "lr": 3e-3, "backbone_lr_mult": 0.1,
                    "schedule": "constant", "batch_size": 72},
        "cub": {"epochs": 120},
        "aircraft": {"epochs": 108},
        "food101": {"epochs": 10},
        "nabirds": {"epochs": 30},
        "vegfru": {"epochs": 25},
    },
    paper_recipe_sources={
        "backbone_lr_mult": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
        "batch_size": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
        "epochs": "authors' code (10,000 iterations of 72 images over the dataset's training split)",
        "lr": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
        "momentum": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
        "optimizer": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
        "schedule": "authors' code halves the lr every 2,000 iterations, which fgbench's schedule cannot say: constant (README)",
        "weight_decay": "authors' PyTorch code thuml/HashNet pytorch/src/train.py and README (lr 3e-4 base, hash layer 10x, SGD momentum 0.9, weight decay 5e-4, 36 + 36 images)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)


__all__ = ["HashNet", "HashNetConfig", "SPEC", "build", "continuation_beta", "weighted_pair_likelihood"]
