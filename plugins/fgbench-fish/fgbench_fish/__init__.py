"""FISH — Z.-D. Chen, X. Luo, Y. Wang, S. Guo, X.-S. Xu, "Fine-grained hashing
with double filtering", IEEE TIP 31, 2022.

What is read where (plugin README): the paper's method description as
summarised by CMBH (Sec. 2) and CNET (Sec. 3.4.2, which takes FISH's proxy
codes over), the third-party re-implementation aassxun/DSH_Analysis
(``models/fish.py``, ``fish.py``, ``utils/fish_tools.py``), and the parameter
counts of CMBH Table 5, which fix the layer layout (README).

Model (the encode path is the whole model):

* a ResNet gives the top feature map ``F`` (C x h x w);
* **feature filtering**: the channel-sum activation map ``A = sum_c F_c``;
  positions above its spatial mean keep their features, the others are
  damped by ``feature_low`` (0.5):  ``F' = F (.) M``,
  ``M = 1[A > mean A] + feature_low 1[A <= mean A]`` (no gradient through M);
* global average pooling and a classifier ``z = W_c GAP(F')`` (C classes);
* **class filtering**: every class score but the largest is multiplied by
  ``class_keep`` (0.7), ``z' = z (.) m``, ``m_c = 1`` for ``c = argmax z``;
* the hash layer maps the filtered class scores to the code, ``u = W_h z' + b``
  (a ``classes -> bits`` linear layer: with ResNet-50 and 200 classes,
  23.508 M + 0.410 M + 0.002 M = 23.920 M parameters, CMBH Table 5).

Training:

* **proxy codes**: before training, binary codes ``B`` of the classes are learned
  from the labels alone (``min sigma ||Y - P V||^2 + delta ||B - R V||^2``,
  ``B = sign(R V)``: FISH's objective, CNET Eq. 13-14) with
  :func:`fgbench.solve_fish_proxies` in FISH's own form
  (``balanced=False, distinct=False``: plain sign, no bit balancing, no
  collision repair — those are CNET's/Multi-FusNet's additions);
* hash loss: ``mean ||u_i - B_{y_i}||^2`` (regression onto the class's proxy code);
* classification loss: cross-entropy on ``z``;
* **attention-based erasing**: the most activated region of each image
  (``A`` upsampled to the input, positions ``>= t max A`` with
  ``t ~ U(0.9, 1.0)`` per image) is zeroed in the input and the erased image is
  classified again (a second cross-entropy), pushing the network to other
  discriminative parts.  Training only.

Total loss: ``L = L_cls + L_cls_erased + L_hash`` (equal weights, as in the
re-implementation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fgbench import (
    Batch,
    BuildContext,
    HashingModel,
    MethodSpec,
    PaperResult,
    hookimpl,
    solve_fish_proxies,
)

FGBENCH_API_VERSION = 1

__all__ = ["FISH", "SPEC", "FISHConfig", "feature_filter", "class_filter", "erase_peak"]


@dataclass(frozen=True)
class FISHConfig:
    """FISH hyper-parameters (defaults as in the re-implementation; README).

    feature_low: weight of the feature-map positions at or below the mean
        activation (feature filtering; 0.5).
    class_keep: factor on every class score but the largest (class filtering; 0.7).
    erase_low, erase_high: range of the erasing threshold ``t`` (fraction of the
        maximum activation; 0.9-1.0).
    erase: train on the attention-erased image too.
    proxy_iterations, proxy_sigma, proxy_delta: proxy-code optimisation
        (15 iterations, sigma = 1, delta = 1e-4).
    hash_weight, erased_weight: weights of the hash loss and of the erased
        image's classification loss (1 and 1).
    """

    feature_low: float = 0.5
    class_keep: float = 0.7
    erase_low: float = 0.9
    erase_high: float = 1.0
    erase: bool = True
    proxy_iterations: int = 15
    proxy_sigma: float = 1.0
    proxy_delta: float = 1e-4
    hash_weight: float = 1.0
    erased_weight: float = 1.0


def activation_map(fmap: torch.Tensor) -> torch.Tensor:
    """``A = sum_c F_c``, (B, 1, h, w), without gradient."""
    return fmap.detach().sum(dim=1, keepdim=True)


def feature_filter(fmap: torch.Tensor, low: float) -> torch.Tensor:
    """Feature filtering: positions whose activation is above the image's mean keep ``F``, the rest get ``low F``."""
    a = activation_map(fmap)
    mask = torch.where(a > a.mean(dim=(2, 3), keepdim=True), 1.0, low).to(fmap.dtype)
    return fmap * mask


def class_filter(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Class filtering: every score but each row's largest is multiplied by ``keep``."""
    top = F.one_hot(scores.detach().argmax(dim=1), scores.shape[1]).bool()
    return torch.where(top, scores, scores * keep)


@torch.no_grad()
def erase_peak(images: torch.Tensor, fmap: torch.Tensor, low: float, high: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Attention-based erasing: zero the input where the upsampled ``A`` is ``>= t max A``, ``t ~ U(low, high)``."""
    a = F.interpolate(activation_map(fmap).float(), size=images.shape[-2:], mode="bilinear", align_corners=True)
    t = torch.empty(len(images), 1, 1, 1).uniform_(low, high, generator=generator).to(a.device)
    keep = a < t * a.amax(dim=(2, 3), keepdim=True)
    return images * keep.to(images.dtype)


class FISH(HashingModel):
    """ResNet -> feature filtering -> GAP -> classifier -> class filtering -> hash layer; proxy-code targets."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: FISHConfig = ctx.config
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.backbone = ctx.backbone()
        self.classifier = nn.Linear(self.backbone.out_channels, ctx.num_classes)
        self.hash_layer = nn.Linear(ctx.num_classes, ctx.bits)
        proxies = solve_fish_proxies(ctx.num_classes, ctx.bits, iterations=cfg.proxy_iterations, seed=ctx.seed,
                                     sigma=cfg.proxy_sigma, delta=cfg.proxy_delta, balanced=False, distinct=False)
        self.register_buffer("proxy_codes", proxies.codes)
        self.proxy_summary = {"min_hamming": proxies.min_hamming_distance(),
                              "max_bit_imbalance": float(proxies.bit_balance().abs().max()),
                              "objective": [round(v, 6) for v in proxies.objective]}
        self._erase_rng = torch.Generator().manual_seed(int(ctx.seed))

    def _heads(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = feature_filter(fmap, self.config.feature_low).mean(dim=(2, 3))
        scores = self.classifier(pooled)
        return scores, self.hash_layer(class_filter(scores, self.config.class_keep))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._heads(self.backbone(images))[1]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.backbone(images)
        scores, codes = self._heads(fmap)
        out = {"codes": codes, "logits": scores}
        if self.training and self.config.erase:
            erased = erase_peak(images, fmap, self.config.erase_low, self.config.erase_high, self._erase_rng)
            out["erased_logits"] = self._heads(self.backbone(erased))[0]
        return out

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        hash_loss = F.mse_loss(outputs["codes"].float(), self.proxy_codes[batch.labels])
        cls = F.cross_entropy(outputs["logits"].float(), batch.labels)
        parts = {"hash": hash_loss, "cls": cls}
        total = cfg.hash_weight * hash_loss + cls
        if "erased_logits" in outputs:
            erased = F.cross_entropy(outputs["erased_logits"].float(), batch.labels)
            parts["cls_erased"] = erased
            total = total + cfg.erased_weight * erased
        return total, parts

    def extra_state_for_record(self) -> dict[str, Any]:
        return {"proxy_codes": self.proxy_summary}


def build(ctx: BuildContext) -> FISH:
    return FISH(ctx)


# CMBH (CVPR 2024) Table 2, FISH column, ResNet-50; "-" cells left out (gaps stay gaps).
CMBH_TABLE2_MAP = {
    "cub": {12: 0.7677, 24: 0.7993, 32: 0.8009, 48: 0.8088},
    "aircraft": {12: 0.8829, 24: 0.8920, 32: 0.8928, 48: 0.8949},
    "vegfru": {12: 0.7917, 24: 0.8533, 32: 0.8543, 48: 0.8551},
}

SPEC = MethodSpec(
    name="fish",
    summary="FISH: feature + class filtering, attention erasing, regression onto label-learned proxy codes",
    citation="Z.-D. Chen, X. Luo, Y. Wang, S. Guo, X.-S. Xu. Fine-grained hashing with double filtering. "
             "IEEE Transactions on Image Processing 31, 2022.",
    config_cls=FISHConfig,
    build=build,
    paper_results=(
        PaperResult(source="CMBH paper (CVPR 2024) Table 2, FISH column (ResNet-50); Food101 and NABirds are "
                           "gaps there", map=CMBH_TABLE2_MAP),
        PaperResult(
            source="CMBH paper (CVPR 2024) Table 5",
            map={},
            params_m={"resnet50@12": 23.9202, "resnet50@24": 23.9227, "resnet50@32": 23.9243,
                      "resnet50@48": 23.9275,
                      "resnet18@12": 11.2815, "resnet18@24": 11.2839, "resnet18@32": 11.2855,
                      "resnet18@48": 11.2887},
            flops_g={"resnet50@12": 4.1321, "resnet50@24": 4.1321, "resnet50@32": 4.1321, "resnet50@48": 4.1321,
                     "resnet18@12": 1.8236, "resnet18@24": 1.8236, "resnet18@32": 1.8236, "resnet18@48": 1.8236},
            cost_note="fgbench counts conv and matmul MACs only; the paper's counter also adds element-wise operations (BN, ReLU, pooling)",
        ),
    ),
    # The FISH paper's schedule could not be read here; these are the values of the re-implementation's
    # runs (aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs): SGD lr 0.01, momentum 0.9, no weight
    # decay (fish.py does not pass it), batch 16, 40 outer iterations ("epochs" here) with lr / 10 after
    # iterations 5, 15 and 35, and the usual 224 crop of fine-grained hashing (README).
    paper_recipe={
        "default": {"backbone": "resnet50", "weights": "imagenet", "input_size": 224, "resize_size": 256,
                    "train_crop": "random", "flip_p": 0.5, "imagenet_weights": "imagenet1k_v1",
                    "optimizer": "sgd", "lr": 0.01, "backbone_lr_mult": 1.0,
                    "momentum": 0.9, "weight_decay": 0.0, "schedule": "step", "milestones": (5, 15, 35),
                    "epochs": 40, "batch_size": 16},
    },
    paper_recipe_sources={
        "backbone": "CMBH Table 5 / FISH (ResNet-50 and ResNet-18 rows)",
        "backbone_lr_mult": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "batch_size": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "epochs": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "flip_p": "the usual random flip of fine-grained hashing (not verified in the FISH paper; README)",
        "imagenet_weights": "torchvision pretrained=True of the re-implementation = V1",
        "input_size": "the usual 224 crop of fine-grained hashing (not verified in the FISH paper; README)",
        "lr": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "milestones": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "momentum": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "optimizer": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "resize_size": "the usual 256 resize of fine-grained hashing (not verified in the FISH paper; README)",
        "schedule": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "train_crop": "the usual random crop of fine-grained hashing (not verified in the FISH paper; README)",
        "weight_decay": "re-implementation aassxun/DSH_Analysis fish.py and its CUB/Aircraft logs (the FISH paper's schedule could not be read here)",
        "weights": "FISH (ImageNet-pretrained backbone)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
