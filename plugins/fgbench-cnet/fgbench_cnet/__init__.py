"""CNET — Zeng & Zheng, "Cascading Hierarchical Networks with Multi-task
Balanced Loss for Fine-grained hashing", arXiv 2303.11274 (2023); code
github.com/kaiba007/FG-CNET (the Lightning code base also in BJFU-CS2012/MuiltNet).

Model (Sec. 3.1-3.3, Fig. 1-2):

* multi-stage backbone ``F_j = Phi_j(x)`` (Eq. 1): the protocol's ResNet,
  stages ``config.stages`` (default 2, 3, 4 = ResNet ``layer2..layer4``, as in
  the authors' code);
* per stage a convolutional block ``f_j = C_j(F_j)`` (Eq. 3): 1x1 conv-BN-ReLU,
  3x3 conv-BN-ReLU, global max pooling (:class:`ConvBlock`);
* the stage hash features are concatenated into the global hash feature
  ``f = [f_1, ..., f_J]`` (Eq. 4) and a hash layer maps it to the global code
  ``u = H(f)`` (Eq. 5) — in the authors' code (and in the 41.13 M parameters
  CMBH's Table 5 counts) a BN-Linear-BN-ELU-Linear head; the code is
  ``b = sign(u)`` (Eq. 17).  Every stage feature feeds every bit, so any bit
  length works; bits are not split across stages;
* classification (Sec. 3.2.1) on the topmost features: the top stage's hash
  layer ``b_J = H_J(f_J)`` then a linear classifier ``y = W b_J``;
* attention zoom (Sec. 3.2.2, :mod:`fgbench.blocks.zoom`): channel sum of the
  top feature map, a Gaussian at its maximum, Saliency-Sampler resampling;
  the zoomed image is classified by the same backbone/block/classifier.
  Training only: codes are generated from the raw image (Sec. 3.5, Eq. 17).

Loss (Sec. 3.4):

* classification (Eq. 6-9): cross-entropy with label smoothing (target 0.9,
  the rest spread over the other classes) on the raw and zoomed images; as in
  the authors' code the two logits are averaged before the loss;
* hash (Eq. 10-12): FISH proxy codes ``B`` learned from the labels before
  training (:func:`fgbench.solve_fish_proxies`, Eq. 13-14), then the
  regression ``mean ||u_i - B_{y_i}||^2`` of the relaxed code onto the code of
  the image's class (the right half of Eq. 11);
* multi-task balanced loss (Eq. 15-16), learnable ``a``, ``b`` initialised at
  1 (Sec. 4.5.3)::

      L = L_hash / a^2 + L_cls / b^2 + log(1 + a) + log(1 + b)

  (the form of the authors' code; the log terms keep the weights from
  collapsing).  ``a`` and ``b`` are logged every epoch (``cnet/a``,
  ``cnet/b``); the paper reports them settling near 0.7 and 1.9 on CUB.

Layer widths are the authors' for ResNet-50 and scale with the backbone's
last-stage width (``*_ratio`` fields), so ResNet-18 gets 4x narrower blocks.
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
    ConvBlock,
    HashingModel,
    MethodSpec,
    PaperResult,
    TrainContext,
    attention_zoom,
    balanced_multitask_loss,
    check_stages,
    hookimpl,
    label_smoothing_ce,
    smoothing_for_confidence,
    solve_fish_proxies,
    stage_widths,
)

FGBENCH_API_VERSION = 1

__all__ = ["CNET", "SPEC", "CNETConfig"]


@dataclass(frozen=True)
class CNETConfig:
    """CNET hyper-parameters (paper / authors' code defaults).

    stages: backbone stages cascaded into the code (Sec. 3.3; 2,3,4 = layer2-4).
    block_mid_ratio, block_out_ratio: widths of the 1x1 and 3x3 convs of each
        stage block, as fractions of the backbone's last-stage channels
        (ResNet-50: 512 and 1024, the authors' code).
    hidden_ratio: hidden width of the global hash head (ResNet-50: 512).
    label_confidence: probability of the true class in the smoothed label (Eq. 6: 0.9).
    zoom: train on the attention-zoomed image too (Sec. 3.2.2).
    zoom_grid, zoom_sigma, zoom_base, zoom_fwhm: saliency lattice size, Gaussian
        width (fraction of the lattice), saliency floor, sampler kernel FWHM
        (cells) — the Saliency-Sampler settings of the authors' code.
    proxy_iterations, proxy_delta: FISH proxy-code optimisation (Eq. 14; 15 and 1e-4).
    init_a, init_b: initial balance weights of the hash and classification losses (Sec. 4.5.3: 1).
    """

    stages: tuple[int, ...] = (2, 3, 4)
    block_mid_ratio: float = 0.25
    block_out_ratio: float = 0.5
    hidden_ratio: float = 0.25
    label_confidence: float = 0.9
    zoom: bool = True
    zoom_grid: int = 31
    zoom_sigma: float = 0.08
    zoom_base: float = 0.09
    zoom_fwhm: float = 13.0
    proxy_iterations: int = 15
    proxy_delta: float = 1e-4
    init_a: float = 1.0
    init_b: float = 1.0


class CNET(HashingModel):
    """Cascaded stage blocks -> concatenated hash feature -> global code; top-stage classifier with zoom."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: CNETConfig = ctx.config
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.stages = check_stages(cfg.stages)
        self.backbone = ctx.backbone()
        mid, out, hidden = stage_widths(self.backbone.out_channels, cfg.block_mid_ratio, cfg.block_out_ratio,
                                        cfg.hidden_ratio)
        self.blocks = nn.ModuleList([ConvBlock(self.backbone.stage_channels[s - 1], mid, out) for s in self.stages])
        width = out * len(self.stages)
        self.hash_head = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, hidden), nn.BatchNorm1d(hidden),
                                       nn.ELU(inplace=True), nn.Linear(hidden, ctx.bits))
        self.top_hash = nn.Linear(out, ctx.bits)
        self.classifier = nn.Linear(ctx.bits, ctx.num_classes)
        self.a = nn.Parameter(torch.tensor(float(cfg.init_a)))
        self.b = nn.Parameter(torch.tensor(float(cfg.init_b)))
        proxies = solve_fish_proxies(ctx.num_classes, ctx.bits, iterations=cfg.proxy_iterations, seed=ctx.seed,
                                     delta=cfg.proxy_delta)
        self.register_buffer("proxy_codes", proxies.codes)
        self.proxy_summary = {"min_hamming": proxies.min_hamming_distance(), "repaired": proxies.repaired,
                              "objective": [round(v, 6) for v in proxies.objective]}
        self.smoothing = smoothing_for_confidence(cfg.label_confidence, ctx.num_classes)

    def _stage_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        maps = self.backbone.forward_stages(images, upto=self.stages[-1])
        return maps, [block(maps[s - 1]) for s, block in zip(self.stages, self.blocks)]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _maps, feats = self._stage_features(images)
        return self.hash_head(torch.cat(feats, 1))

    def classify_top(self, top_feature: torch.Tensor) -> torch.Tensor:
        """``y = W H_J(f_J)`` (Sec. 3.2.1)."""
        return self.classifier(self.top_hash(top_feature))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, feats = self._stage_features(images)
        out = {"codes": self.hash_head(torch.cat(feats, 1)), "logits": self.classify_top(feats[-1])}
        if self.training and self.config.zoom:
            zoomed = attention_zoom(images, maps[-1], self.config.zoom_grid, self.config.zoom_sigma,
                                    self.config.zoom_base, self.config.zoom_fwhm)
            top = self.backbone.forward_stages(zoomed, upto=self.stages[-1])[-1]
            out["zoom_logits"] = self.classify_top(self.blocks[-1](top))
        return out

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = self.proxy_codes[batch.labels]
        hash_loss = F.mse_loss(outputs["codes"].float(), target)
        logits = outputs["logits"].float()
        if "zoom_logits" in outputs:
            logits = 0.5 * (logits + outputs["zoom_logits"].float())
        cls_loss = label_smoothing_ce(logits, batch.labels, self.smoothing)
        loss = balanced_multitask_loss(hash_loss, cls_loss, self.a, self.b)
        return loss, {"hash": hash_loss, "cls": cls_loss, "a": self.a.detach(), "b": self.b.detach()}

    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        ctx.log("cnet/a", float(self.a.detach()))
        ctx.log("cnet/b", float(self.b.detach()))

    def extra_state_for_record(self) -> dict[str, Any]:
        return {"a": float(self.a.detach()), "b": float(self.b.detach()), "proxy_codes": self.proxy_summary}


def build(ctx: BuildContext) -> CNET:
    return CNET(ctx)


PAPER_MAP = {
    # Table I, "OURS" column, 12/24/32/48 bits
    "cub": {12: 0.7710, 24: 0.8211, 32: 0.8309, 48: 0.8392},
    "aircraft": {12: 0.8615, 24: 0.8827, 32: 0.8840, 48: 0.8917},
    "vegfru": {12: 0.8163, 24: 0.8641, 32: 0.8680, 48: 0.8775},
    "food101": {12: 0.8306, 24: 0.8585, 32: 0.8635, 48: 0.8642},
    "nabirds": {12: 0.6842, 24: 0.7573, 32: 0.7711, 48: 0.7881},
}

SPEC = MethodSpec(
    name="cnet",
    summary="Cascaded stage blocks + attention zoom, FISH proxy-code regression, learnable multi-task balance",
    citation="X. Zeng, Y. Zheng. Cascading Hierarchical Networks with Multi-task Balanced Loss for Fine-grained "
             "hashing. arXiv:2303.11274, 2023.",
    config_cls=CNETConfig,
    build=build,
    paper_results=(
        PaperResult(source="CNET paper Table I", map=PAPER_MAP),
        PaperResult(
            source="CMBH paper Table 5",
            map={},
            params_m={"resnet50@12": 41.1342, "resnet50@24": 41.1797, "resnet50@32": 41.2100,
                      "resnet50@48": 41.2706},
            flops_g={"resnet50@12": 9.3546, "resnet50@24": 9.3546, "resnet50@32": 9.3547, "resnet50@48": 9.3547},
            cost_note="fgbench counts conv and matmul MACs only; the paper's counter also adds element-wise operations (BN, ReLU, pooling)",
        ),
    ),
    # Sec. 4.3: SGD momentum 0.9, weight decay 3e-4, 150 epochs ("iterations"); per-dataset lr / batch size.
    # One lr for all layers and the step decay (x0.1 at epoch 80) are from the authors' code
    # (StepLR(step_size=80)).
    # Pipeline, Sec. 4.3: train "crops a random region of the input image and then resizes it to 224x224 and
    # flips it randomly horizontally" = RandomResizedCrop(224) (torchvision's default scale 0.08-1 and ratio
    # 3/4-4/3: the paper gives none) + flip p=0.5; test "adjusted to 256 x 256, then centre-cropped to 224 x 224"
    # (a square resize; the authors' code, datacsv/data_interface.py, has the same train steps but resizes the
    # test images' short side: Resize(256)).  ImageNet weights: the authors' model/ca_net.py builds
    # torchvision resnet50(pretrained=True) = V1.
    paper_recipe_sources={
        "backbone": "Sec. 3.1 and Table 2 (ResNet-50)",
        "weights": "Sec. 4.3 (ImageNet-pretrained ResNet-50)",
        "optimizer": "Sec. 4.3 (mini-batch SGD)",
        "momentum": "Sec. 4.3 (momentum 0.9)",
        "weight_decay": "Sec. 4.3 (weight decay 0.0003)",
        "epochs": "Sec. 4.3 (\"number of iterations of 150\")",
        "input_size": "Sec. 4.3 (random region resized to 224 x 224; test centre crop 224)",
        "resize_size": "Sec. 4.3 (test images resized to 256 x 256)",
        "backbone_lr_mult": "authors' code kaiba007/FG-CNET (one learning rate for all layers)",
        "schedule": "authors' code kaiba007/FG-CNET (StepLR(step_size=80); Fig. 6: mAP stable from epoch 80)",
        "milestones": "authors' code kaiba007/FG-CNET (StepLR(step_size=80))",
        "lr": "Sec. 4.3 (Aircraft 0.0035, VegFru 0.005, CUB / Food-101 / NABirds 0.008)",
        "batch_size": "Sec. 4.3 (Aircraft 32, otherwise 128)",
        "resize_shape": "Sec. 4.3 (test images adjusted to 256 x 256: square)",
        "train_crop": "Sec. 4.3 (crops a random region and resizes it to 224 x 224 = random-resized crop)",
        "crop_scale": "torchvision RandomResizedCrop default (the paper gives no scale)",
        "crop_ratio": "torchvision RandomResizedCrop default (the paper gives no ratio)",
        "flip_p": "Sec. 4.3 (flips it randomly horizontally)",
        "rotation": "Sec. 4.3 (no rotation listed)",
        "color_jitter": "Sec. 4.3 (no colour jitter listed)",
        "imagenet_weights": "authors' code model/ca_net.py (torchvision resnet50(pretrained=True) = V1)",
    },
    paper_recipe={
        "default": {"backbone": "resnet50", "weights": "imagenet", "optimizer": "sgd", "momentum": 0.9,
                    "weight_decay": 3e-4, "epochs": 150, "backbone_lr_mult": 1.0, "schedule": "step",
                    "milestones": (80,), "lr": 0.008, "batch_size": 128,
                    "input_size": 224, "resize_size": 256, "resize_shape": "square", "train_crop": "random-resized",
                    "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3), "flip_p": 0.5, "rotation": 0.0,
                    "color_jitter": (0.0, 0.0, 0.0, 0.0), "imagenet_weights": "imagenet1k_v1"},
        "aircraft": {"lr": 0.0035, "batch_size": 32},
        "vegfru": {"lr": 0.005, "batch_size": 128},
        "cub": {"lr": 0.008, "batch_size": 128},
        "food101": {"lr": 0.008, "batch_size": 128},
        "nabirds": {"lr": 0.008, "batch_size": 128},
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
