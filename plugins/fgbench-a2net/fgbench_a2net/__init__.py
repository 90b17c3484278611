"""A²-Net — X.-S. Wei, Y. Shen, X. Sun, H.-J. Ye, J. Yang, "A²-Net: Learning
Attribute-Aware Hash Codes for Large-Scale Fine-Grained Image Retrieval",
NeurIPS 2021; authors' code github.com/NJUST-VIPGroup (SEMICON's code base
grew out of it), re-implemented in aassxun/DSH_Analysis (``models/A_2_net.py``,
``models/A_2_net_loss.py``, ``A_2_Net.py``).  What comes from where: plugin README.

Representation (Sec. 3.2 of the paper, "attention-based appearance-specific
visual representations"):

* a shared trunk (the backbone's stem and ``layer1..layer3``) gives ``E``;
* a global refinement (the backbone's own ``layer4``) and global average
  pooling give ``x_global``;
* an attention module (a narrowing stack of bottleneck blocks, then a 1x1 conv
  to ``M`` maps, BN, ReLU) gives attention maps ``A_1..A_M``; the local
  features are ``E (.) A_m`` refined by a second ``layer4`` (its own weights,
  shared by the parts) and average pooled: ``x_m``;
* ``x = [x_1, ..., x_M, x_global]``, the appearance-specific representation.

Attribute-aware codes (Sec. 3.3, an encoder-decoder of a reconstruction task):

* encoder: ``v = W x`` (``W`` is ``k x (M+1)D``, no bias), the ``k``
  attribute-specific values, one per bit; the relaxed code is
  ``u = tanh(v)``, the binary code ``sign(v)``;
* decoder: ``x_hat = W^T u``, sharing the encoder's weights, and the
  **reconstruction loss** ``L_rec = mean (x_hat - x)^2``: the attribute vector
  must keep what describes the appearance, without attribute annotations;
* **feature decorrelation**: ``L_dec = mean (U^T U - n_b I)^2 / (n_b k)`` over
  a batch's ``n_b x k`` codes ``U``: different bits carry different attributes.

Hash learning (Sec. 3.4): asymmetric, ADSH-style, as in the authors' code:
with the database codes ``V in {-1,+1}^{n x k}`` fixed, minimise

    sum_i sum_j (u_i^T v_j - k S_ij)^2 + gamma sum_i (v_i - u_i)^2

(divided by batch x n and scaled by 12 / k, as the authors' loss), and
update ``V`` bit by bit in closed form at the end of each outer iteration
(discrete cyclic coordinate descent): one epoch, or under the protocol's
ADSH-style sampling (``epoch_sample > 0``, the paper recipe)
``resample_every`` epochs over one random subset of the training set.
``S_ij = 1`` same class, ``-N+/N-`` otherwise (the "soft similarity").  Total: ``L = L_hash + L_quant + L_rec + L_dec``.
fgbench protocol: query **and** database codes are ``sign(encode(x))``;
``V`` is only a training target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from fgbench import (
    Batch,
    BuildContext,
    CodeMemory,
    HashingModel,
    MethodSpec,
    PaperResult,
    TrainContext,
    adsh_update_database_codes,
    hookimpl,
    outer_iteration_epochs,
    similar_pair_ratio,
)

FGBENCH_API_VERSION = 2  # uses similar_pair_ratio (API 2)

__all__ = ["A2Net", "A2NetConfig", "AttentionMaps", "SPEC", "decorrelation_loss"]


@dataclass(frozen=True)
class A2NetConfig:
    """A²-Net hyper-parameters (README says which are the paper's and which are unsure).

    parts: ``M``, attention maps / local features (4; the re-implementation's
        module default — its training script uses ``M = k``, README).
    gamma: weight of ADSH's quantization term (200).
    reconstruction_weight, decorrelation_weight: weights of ``L_rec`` and
        ``L_dec`` (1 and 1).
    aux_from_epoch: first (0-based) outer iteration with ``L_rec`` and ``L_dec``
        (an outer iteration is one epoch, or ``resample_every`` epochs under
        ADSH-style sampling; 0: from the start; the re-implementation adds
        them from outer iteration ``max_iter // 2`` = 20 of 40).
    """

    parts: int = 4
    gamma: float = 200.0
    reconstruction_weight: float = 1.0
    decorrelation_weight: float = 1.0
    aux_from_epoch: int = 0


def decorrelation_loss(u: torch.Tensor) -> torch.Tensor:
    """``mean (U^T U - n I)^2 / (n k)`` for codes ``U`` (n, k): zero when the bits are orthogonal with unit power."""
    n, k = u.shape
    gram = u.T @ u
    return (gram - n * torch.eye(k, device=u.device, dtype=u.dtype)).pow(2).mean() / (n * k)


class AttentionMaps(nn.Module):
    """``M`` attention maps from the trunk's feature map: narrowing bottleneck stack, 1x1 conv, BN, ReLU."""

    def __init__(self, channels: int, parts: int) -> None:
        super().__init__()
        c = channels

        def reduce(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

        self.body = nn.Sequential(Bottleneck(c, c // 4), reduce(c, c // 4), Bottleneck(c // 4, c // 16),
                                  reduce(c // 4, c // 16), Bottleneck(c // 16, c // 64),
                                  nn.Conv2d(c // 16, parts, 1, bias=False), nn.BatchNorm2d(parts),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class A2Net(HashingModel):
    """Trunk, global ``layer4``, attention, local ``layer4``; encoder ``W`` and its transpose as decoder."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: A2NetConfig = ctx.config
        if cfg.parts < 1:
            raise ValueError(f"a2net: parts must be >= 1, got {cfg.parts}")
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.backbone = ctx.backbone()
        self.local_refine = copy.deepcopy(self.backbone.stages[3])  # same initial weights, its own parameters
        self.attention = AttentionMaps(self.backbone.stage_channels[2], cfg.parts)
        dim = self.backbone.out_channels * (cfg.parts + 1)
        self.W = nn.Parameter(torch.empty(ctx.bits, dim))
        nn.init.kaiming_uniform_(self.W, a=5 ** 0.5)  # nn.Linear's default

        labels = torch.as_tensor(ctx.train_labels, dtype=torch.long)
        self.register_buffer("train_labels", labels)
        self.dissimilar = -similar_pair_ratio(labels, ctx.num_classes)
        g = torch.Generator().manual_seed(int(ctx.seed))
        self.query_codes = CodeMemory(ctx.num_train, ctx.bits)  # U
        self.database_codes = CodeMemory(ctx.num_train, ctx.bits, init="sign-random", generator=g)  # V
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))  # outer iterations done
        # ADSH's outer iteration (the reference's train()): V is updated once per subset of the protocol's
        # epoch_sample images, i.e. every resample_every epochs; one epoch without epoch_sample
        self.period = outer_iteration_epochs(ctx.protocol)
        # Omega: the images trained on since V's last update.  Under epoch_sample V is updated from their rows of
        # U only (the others count as zero), as ADSH's expanded U and the reference code's sampled U do
        self.sampled = int(getattr(ctx.protocol, "epoch_sample", 0)) > 0
        self.omega = CodeMemory(ctx.num_train, 1)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = [x_1..x_M, x_global]`` (B, (M+1) D) and the attention maps (B, M, h, w)."""
        trunk = self.backbone.forward_stages(images, upto=3)[-1]
        global_f = self.backbone.stages[3](trunk).mean(dim=(2, 3))
        att = self.attention(trunk)
        b, m = att.shape[:2]
        local_in = (trunk.unsqueeze(1) * att.unsqueeze(2)).flatten(0, 1)  # parts batched
        local_f = self.local_refine(local_in).mean(dim=(2, 3)).reshape(b, -1)
        return torch.cat([local_f, global_f], dim=1), att

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)[0] @ self.W.T

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x, att = self.features(images)
        return {"features": x, "attention": att}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        x = outputs["features"].float()
        u = torch.tanh(x @ self.W.float().T)
        self.query_codes.update(batch.indices, u)
        self.omega.update(batch.indices, torch.ones(len(u), 1, device=u.device))
        v = self.database_codes.codes
        s = torch.where(batch.labels[:, None] == self.train_labels[None, :], 1.0, self.dissimilar)
        norm = u.shape[0] * v.shape[0] * self.bits / 12.0
        similarity = (u @ v.T - self.bits * s).pow(2).sum() / norm
        quantization = cfg.gamma * (v[batch.indices] - u).pow(2).sum() / norm
        reconstruction = (u @ self.W.float() - x).pow(2).mean()
        decorrelation = decorrelation_loss(u)
        total = similarity + quantization
        if int(self.epoch) >= cfg.aux_from_epoch:
            total = total + cfg.reconstruction_weight * reconstruction + cfg.decorrelation_weight * decorrelation
        return total, {"similarity": similarity, "quantization": quantization, "reconstruction": reconstruction,
                       "decorrelation": decorrelation}

    @torch.no_grad()
    def update_database_codes(self) -> None:
        """ADSH's closed-form bit-wise update of ``V`` with the network fixed
        (:func:`fgbench.adsh_update_database_codes`).  The rows of ``U`` are Omega: every training image, or
        under the protocol's ``epoch_sample`` the images sampled since the last update (the others count as
        zero, ADSH's expanded ``U``; the reference code's sampled ``U``).
        """
        u = self.query_codes.codes
        if self.sampled:
            u = u * self.omega.codes
        v = adsh_update_database_codes(u, self.database_codes.codes, self.train_labels, self.num_classes,
                                       self.dissimilar, self.config.gamma)
        self.database_codes.replace(v)

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        """At the end of an outer iteration (Sec. 3.4, ADSH's Alg. 1): update ``V`` with the network fixed.

        An outer iteration is one epoch, or ``resample_every`` epochs under the
        protocol's ``epoch_sample`` (the reference's ``max_epoch`` epochs over
        ``num_samples`` images, then ``V``); the last epoch always ends one.
        ``self.epoch`` counts outer iterations (``aux_from_epoch`` is in them).
        """
        if (epoch + 1) % self.period and epoch + 1 < ctx.epochs:
            return
        before = self.database_codes.codes.clone()
        self.update_database_codes()
        self.omega.replace(torch.zeros_like(self.omega.codes))
        ctx.log("a2net/v_bits_changed", float((before != self.database_codes.codes).float().mean()))
        self.epoch.add_(1)


def build(ctx: BuildContext) -> A2Net:
    return A2Net(ctx)


# CMBH (CVPR 2024) Table 2, A2-Net column, ResNet-50 (no gaps for A2-Net).
CMBH_TABLE2_MAP = {
    "cub": {12: 0.3383, 24: 0.6101, 32: 0.7161, 48: 0.7733},
    "aircraft": {12: 0.4272, 24: 0.6366, 32: 0.7251, 48: 0.8137},
    "food101": {12: 0.4644, 24: 0.6687, 32: 0.7427, 48: 0.8213},
    "nabirds": {12: 0.0820, 24: 0.1915, 32: 0.2441, 48: 0.3564},
    "vegfru": {12: 0.2552, 24: 0.4473, 32: 0.5275, 48: 0.6977},
}

SPEC = MethodSpec(
    name="a2net",
    summary="A2-Net: attention part features, attribute encoder-decoder with reconstruction and decorrelation, "
            "ADSH-style asymmetric hashing",
    citation="X.-S. Wei, Y. Shen, X. Sun, H.-J. Ye, J. Yang. A2-Net: Learning Attribute-Aware Hash Codes for "
             "Large-Scale Fine-Grained Image Retrieval. NeurIPS 2021.",
    config_cls=A2NetConfig,
    build=build,
    paper_results=(
        PaperResult(source="CMBH paper (CVPR 2024) Table 2, A2-Net column (ResNet-50)", map=CMBH_TABLE2_MAP),
    ),
    # The A2-Net paper's schedule could not be read here and no authors' code was found; these are the
    # re-implementation's (aassxun/DSH_Analysis: set_flag.py, flag "a2net" and the per-dataset functions cub200,
    # aircraft, food101, vegfru, nabirds; A_2_Net.py train(); the Namespace line of every logs/*/*a2net*/ log):
    # SGD lr 1e-4, momentum 0.9 (nesterov off), weight decay 1e-4, batch 16; max_iter = 40 outer iterations, each
    # sampling num_samples database images afresh (2000; VegFru, NABirds 4000), training max_epoch = 30 epochs over
    # them with V fixed, then updating V (solve_dcc); MultiStepLR(lr_step = 35) stepped once per outer iteration.
    # Expressed with ADSH-style sampling: epoch_sample = num_samples, resample_every = 30, epochs = 40 x 30 = 1,200,
    # milestones = 35 x 30 = 1,050 (README, "Schedule").
    paper_recipe={
        "default": {"backbone": "resnet50", "weights": "imagenet", "input_size": 224, "resize_size": 256,
                    "train_crop": "random-resized", "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3),
                    "flip_p": 0.5, "imagenet_weights": "imagenet1k_v1",
                    "optimizer": "sgd", "lr": 1e-4, "backbone_lr_mult": 1.0,
                    "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step",
                    "epoch_sample": 2000, "resample_every": 30, "epochs": 40 * 30, "milestones": (35 * 30,),
                    "batch_size": 16},
        "vegfru": {"epoch_sample": 4000},
        "nabirds": {"epoch_sample": 4000},
    },
    paper_recipe_sources={
        "backbone": "A2-Net / CMBH Table 2 (ResNet-50)",
        "backbone_lr_mult": "re-implementation aassxun/DSH_Analysis A_2_Net.py (one SGD lr for all parameters)",
        "batch_size": "re-implementation aassxun/DSH_Analysis set_flag.py, flag a2net (batch 16) and its logs",
        "epoch_sample": "re-implementation DSH_Analysis set_flag.py (num_samples 2000; vegfru, nabirds 4000) and "
                        "its logs",
        "resample_every": "re-implementation DSH_Analysis set_flag.py (max_epoch 30 epochs per outer iteration)",
        "epochs": "re-implementation DSH_Analysis set_flag.py (max_iter 40 outer iterations x 30 epochs = 1,200)",
        "flip_p": "re-implementation aassxun/DSH_Analysis data/transform.py (random flip)",
        "imagenet_weights": "torchvision pretrained=True of the re-implementation = V1",
        "input_size": "re-implementation aassxun/DSH_Analysis data/transform.py (224 crop)",
        "lr": "re-implementation DSH_Analysis set_flag.py, flag a2net (lr 1e-4) and its logs",
        "milestones": "re-implementation DSH_Analysis set_flag.py (lr_step 35 of 40 outer iterations = epoch 1,050; "
                      "A_2_Net.py steps MultiStepLR once per outer iteration)",
        "momentum": "re-implementation DSH_Analysis set_flag.py, flag a2net (momentum 0.9)",
        "optimizer": "re-implementation DSH_Analysis set_flag.py, flag a2net (SGD)",
        "resize_size": "re-implementation aassxun/DSH_Analysis data/transform.py (resize 256)",
        "schedule": "re-implementation DSH_Analysis A_2_Net.py (MultiStepLR, lr / 10 at each lr_step)",
        "train_crop": "re-implementation DSH_Analysis data/transform.py (train_transform: RandomResizedCrop(224) on the image as read)",
        "crop_scale": "re-implementation DSH_Analysis data/transform.py (RandomResizedCrop(224): torchvision's default scale 0.08-1)",
        "crop_ratio": "re-implementation DSH_Analysis data/transform.py (RandomResizedCrop(224): torchvision's default ratio 3/4-4/3)",
        "weight_decay": "re-implementation DSH_Analysis set_flag.py, flag a2net (weight decay 1e-4)",
        "weights": "A2-Net (ImageNet-pretrained ResNet-50)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
