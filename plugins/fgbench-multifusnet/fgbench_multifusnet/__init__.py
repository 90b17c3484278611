"""Multi-FusNet — Cui et al., "Multi-FusNet: fusion mapping of features for
fine-grained image retrieval networks", PeerJ Computer Science 10:e2025 (2024);
code github.com/BJFU-CS2012/MuiltNet (built on the CNET code base).

Model ("Online feature hash learning", Fig. 2-4):

* multi-level cascade on the protocol's ResNet: stage outputs ``x_j`` of
  ``config.stages`` (default ResNet ``layer2..layer4``, as in CNET);
* single-level feature fusion (Eq. 8): a two-branch sum of the original map
  and its ECA channel-attention reweighting, ``x_j + ECA(x_j)``, ECA with the
  ECA-Net adaptive kernel size ``k = |log2(C)/gamma + b/gamma|_odd``;
* each fused level goes through a CNET stage block (1x1 conv, 3x3 conv, global
  max pool; :class:`fgbench.ConvBlock`) and the levels are concatenated
  (Eq. 9);
* hash-feature enhancement (Fig. 4): multi-head self-attention over the level
  features (one token per level, a pre-norm transformer encoder layer), so the
  mapping can "selectively focus on different feature layers";
* hash mapping (Eq. 10-11): a two-layer linear map with LayerNorm and ELU,
  ``u = L2(ELU(LN(L1(f))))``; the code is ``sign(u)`` of the original image.

Loss ("Multi-task balanced loss", Eq. 12-16), the CNET recipe it builds on:

* offline FISH proxy codes learned from the labels with 15 alternating
  iterations ("Offline feature compression", Eq. 1-7;
  :func:`fgbench.solve_fish_proxies`), then the regression
  ``mean ||u_i - B_{y_i}||^2`` (right half of Eq. 16);
* classification with label smoothing at confidence 0.90 (Eq. 15) on the
  original and the Gaussian-enhanced (attention-zoomed,
  :func:`fgbench.attention_zoom`) image, from the top level's hash
  layer; the two logits are averaged (the authors' code);
* adaptive multi-task weights (Eq. 12), learnable ``alpha``, ``beta`` from 1::

      L = L_hash / alpha^2 + L_cls / beta^2 + log(1 + alpha) + log(1 + beta)

  logged every epoch (``multifusnet/alpha``, ``multifusnet/beta``).

The paper does not give the transformer's size: one pre-norm layer, 8 heads,
MLP ratio 2 (configurable).  Layer widths scale with the backbone as in CNET.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class MultiFusNetConfig:
    """Multi-FusNet hyper-parameters (paper defaults; our choices where it is silent).

    stages: backbone levels of the cascade (2,3,4 = ResNet layer2-4).
    block_mid_ratio, block_out_ratio, hidden_ratio: CNET block widths and the
        hash head's hidden width as fractions of the backbone's last-stage
        channels (ResNet-50: 512, 1024, 512).
    eca_gamma, eca_b: ECA adaptive kernel size parameters (ECA-Net: 2, 1).
    attn_heads, attn_depth, attn_mlp_ratio: the self-attention module (not
        given in the paper: 8 heads, 1 layer, MLP ratio 2).
    label_confidence: probability of the true class in the smoothed label
        (Eq. 15 and its text: "label smoothing ... with a confidence level of 0.90").
    zoom, zoom_grid, zoom_sigma, zoom_base, zoom_fwhm: the Gaussian-enhanced
        image (CNET's attention zoom and its settings).
    proxy_iterations, proxy_delta: FISH proxy-code optimisation (Eqs. 1-7;
        "Implementation details": 15 iterations of compression).
    init_alpha, init_beta: initial values of the learnable loss weights of
        Eq. 12 (not given in the paper; 1, as CNET Sec. 4.5.3).
    """

    stages: tuple[int, ...] = (2, 3, 4)
    block_mid_ratio: float = 0.25
    block_out_ratio: float = 0.5
    hidden_ratio: float = 0.25
    eca_gamma: float = 2.0
    eca_b: float = 1.0
    attn_heads: int = 8
    attn_depth: int = 1
    attn_mlp_ratio: float = 2.0
    label_confidence: float = 0.9
    zoom: bool = True
    zoom_grid: int = 31
    zoom_sigma: float = 0.08
    zoom_base: float = 0.09
    zoom_fwhm: float = 13.0
    proxy_iterations: int = 15
    proxy_delta: float = 1e-4
    init_alpha: float = 1.0
    init_beta: float = 1.0


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest above ``|log2(C)/gamma + b/gamma|``."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return max(t if t % 2 else t + 1, 1)


class ECA(nn.Module):
    """Efficient channel attention (Wang et al., CVPR 2020): GAP, 1-D conv across channels, sigmoid gate."""

    def __init__(self, channels: int, gamma: float = 2.0, b: float = 1.0) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1)
        return x * torch.sigmoid(w)[:, :, None, None]


class FusionLevel(nn.Module):
    """Two-branch sum fusion (Eq. 8): ``x + ECA(x)``."""

    def __init__(self, channels: int, gamma: float, b: float) -> None:
        super().__init__()
        self.eca = ECA(channels, gamma, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.eca(x)


class SelfAttentionLayer(nn.Module):
    """Pre-norm transformer encoder layer on ``(B, tokens, dim)``: ``x + MHSA(LN x)``, ``x + MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attn_heads={heads} must divide the level feature width {dim}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.norm2(x))


class MultiFusNet(HashingModel):
    """ECA-fused cascade levels -> self-attention over levels -> LayerNorm/ELU hash head."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: MultiFusNetConfig = ctx.config
        self.config = cfg
        self.bits = ctx.bits
        self.stages = check_stages(cfg.stages)
        self.backbone = ctx.backbone()
        mid, out, hidden = stage_widths(self.backbone.out_channels, cfg.block_mid_ratio, cfg.block_out_ratio,
                                        cfg.hidden_ratio)
        chans = [self.backbone.stage_channels[s - 1] for s in self.stages]
        self.fusion = nn.ModuleList([FusionLevel(c, cfg.eca_gamma, cfg.eca_b) for c in chans])
        self.blocks = nn.ModuleList([ConvBlock(c, mid, out) for c in chans])
        self.attention = nn.Sequential(*[SelfAttentionLayer(out, cfg.attn_heads, cfg.attn_mlp_ratio)
                                         for _ in range(cfg.attn_depth)])
        width = out * len(self.stages)
        self.hash_head = nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ELU(inplace=True),
                                       nn.Linear(hidden, ctx.bits))
        self.top_hash = nn.Linear(out, ctx.bits)
        self.classifier = nn.Linear(ctx.bits, ctx.num_classes)
        self.alpha = nn.Parameter(torch.tensor(float(cfg.init_alpha)))
        self.beta = nn.Parameter(torch.tensor(float(cfg.init_beta)))
        proxies = solve_fish_proxies(ctx.num_classes, ctx.bits, iterations=cfg.proxy_iterations, seed=ctx.seed,
                                     delta=cfg.proxy_delta)
        self.register_buffer("proxy_codes", proxies.codes)
        self.proxy_summary = {"min_hamming": proxies.min_hamming_distance(), "repaired": proxies.repaired,
                              "objective": [round(v, 6) for v in proxies.objective]}
        self.smoothing = smoothing_for_confidence(cfg.label_confidence, ctx.num_classes)

    def _levels(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fused top map (for the zoom) and the per-level block features."""
        maps = self.backbone.forward_stages(images, upto=self.stages[-1])
        fused = [fuse(maps[s - 1]) for s, fuse in zip(self.stages, self.fusion)]
        return fused[-1], [block(x) for block, x in zip(self.blocks, fused)]

    def _hash(self, feats: list[torch.Tensor]) -> torch.Tensor:
        tokens = self.attention(torch.stack(feats, 1))
        return self.hash_head(tokens.flatten(1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._hash(self._levels(images)[1])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        top_map, feats = self._levels(images)
        out = {"codes": self._hash(feats), "logits": self.classifier(self.top_hash(feats[-1]))}
        if self.training and self.config.zoom:
            zoomed = attention_zoom(images, top_map, self.config.zoom_grid, self.config.zoom_sigma,
                                    self.config.zoom_base, self.config.zoom_fwhm)
            top = self.backbone.forward_stages(zoomed, upto=self.stages[-1])[-1]
            out["zoom_logits"] = self.classifier(self.top_hash(self.blocks[-1](self.fusion[-1](top))))
        return out

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hash_loss = F.mse_loss(outputs["codes"].float(), self.proxy_codes[batch.labels])
        logits = outputs["logits"].float()
        if "zoom_logits" in outputs:
            logits = 0.5 * (logits + outputs["zoom_logits"].float())
        cls_loss = label_smoothing_ce(logits, batch.labels, self.smoothing)
        loss = balanced_multitask_loss(hash_loss, cls_loss, self.alpha, self.beta)
        return loss, {"hash": hash_loss, "cls": cls_loss, "alpha": self.alpha.detach(), "beta": self.beta.detach()}

    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        ctx.log("multifusnet/alpha", float(self.alpha.detach()))
        ctx.log("multifusnet/beta", float(self.beta.detach()))

    def extra_state_for_record(self) -> dict[str, Any]:
        return {"alpha": float(self.alpha.detach()), "beta": float(self.beta.detach()),
                "proxy_codes": self.proxy_summary}


def build(ctx: BuildContext) -> MultiFusNet:
    return MultiFusNet(ctx)


PAPER_MAP = {
    # Table 3, "Ours" column (percent in the paper), 12/24/32/48 bits
    "cub": {12: 0.7202, 24: 0.7870, 32: 0.8267, 48: 0.8469},
    "aircraft": {12: 0.7474, 24: 0.8527, 32: 0.8735, 48: 0.8820},
    "food101": {12: 0.7904, 24: 0.8143, 32: 0.8255, 48: 0.8403},
    "nabirds": {12: 0.7319, 24: 0.7996, 32: 0.8110, 48: 0.8211},
    "vegfru": {12: 0.7994, 24: 0.8103, 32: 0.8454, 48: 0.8579},
}

SPEC = MethodSpec(
    name="multifusnet",
    summary="ECA-fused multi-level cascade + self-attention hash mapping, FISH proxy codes, adaptive task weights",
    citation="Cui et al. Multi-FusNet: fusion mapping of features for fine-grained image retrieval networks. "
             "PeerJ Computer Science 10:e2025, 2024.",
    config_cls=MultiFusNetConfig,
    build=build,
    paper_results=(PaperResult(source="Multi-FusNet paper Table 3", map=PAPER_MAP),),
    # "Implementation details": SGD momentum 0.91, weight decay 5e-4, lr 0.0035 for all datasets, batch 128,
    # 300 "iterations" read as epochs (the authors' code: max_epochs=300; Fig. 11 converges in ~90).  One lr
    # for all layers and x0.1 every 80 epochs are from the authors' code (StepLR(step_size=80)).
    # Pipeline, "Implementation details": train random crop 336, random rotation within 30 deg, horizontal flip
    # p=0.7, brightness/contrast/saturation/hue jitter 0.5; test "shrunk to 356 x 356" (square), centre crop
    # 336.  The paper names no resize before the train crop: the test's 356 x 356 is used.  The authors' public
    # code (BJFU-CS2012/MuiltNet, datacsv/data_interface.py) has RandomResizedCrop(224) + flip, test
    # Resize(256) + CenterCrop(224) instead; the paper's pipeline is the one stated for its tables.
    # ImageNet weights: the authors' code builds torchvision resnet50(pretrained=True) (model/ca_net.py) = V1.
    paper_recipe_sources={
        "backbone": "Implementation details and experimental settings (pre-trained ResNet-50)",
        "weights": "Implementation details and experimental settings (pre-trained ResNet-50)",
        "optimizer": "Implementation details (SGD)",
        "momentum": "Implementation details (momentum 0.91)",
        "weight_decay": "Implementation details (weight decay 0.0005)",
        "lr": "Implementation details (initial learning rate 0.0035 on all datasets)",
        "batch_size": "Implementation details (mini-batch 128)",
        "epochs": "Implementation details (\"number of iterations ... 300\")",
        "input_size": "Implementation details (random crop to 336 x 336; test centre 336)",
        "resize_size": "Implementation details (test images shrunk to 356 x 356)",
        "backbone_lr_mult": "authors' code BJFU-CS2012/MuiltNet (one learning rate for all layers)",
        "schedule": "authors' code BJFU-CS2012/MuiltNet (StepLR(step_size=80))",
        "milestones": "authors' code BJFU-CS2012/MuiltNet (StepLR(step_size=80): 80, 160, 240)",
        "resize_shape": "Implementation details (test images shrunk to 356 x 356: square)",
        "train_crop": "Implementation details (random crop to 336 x 336)",
        "flip_p": "Implementation details (random horizontal flip with probability 0.7)",
        "rotation": "Implementation details (random rotation within 30 degrees)",
        "color_jitter": "Implementation details (brightness, contrast, saturation and hue factor 0.5)",
        "imagenet_weights": "authors' code model/ca_net.py (torchvision resnet50(pretrained=True) = V1)",
    },
    paper_recipe={
        "default": {"backbone": "resnet50", "weights": "imagenet", "optimizer": "sgd", "momentum": 0.91,
                    "weight_decay": 5e-4, "lr": 0.0035, "batch_size": 128, "epochs": 300,
                    "backbone_lr_mult": 1.0, "schedule": "step", "milestones": (80, 160, 240),
                    "input_size": 336, "resize_size": 356, "resize_shape": "square", "train_crop": "random",
                    "flip_p": 0.7, "rotation": 30.0, "color_jitter": (0.5, 0.5, 0.5, 0.5),
                    "imagenet_weights": "imagenet1k_v1"},
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
