"""CMBH — Z.-D. Chen, L.-J. Zhao, Z.-C. Zhang, X. Luo, X.-S. Xu, "Characteristics
Matching Based Hash Codes Generation for Efficient Fine-grained Image
Retrieval", CVPR 2024.

Hash codes describe how well an image *matches* learned class characteristics,
not the image itself (Sec. 3.1).  Section and equation numbers below are the
paper's.

Inference path (Sec. 3.2, Eqs. 1-4, 12) — the only part ``encode`` runs:

* backbone stages up to layer ``l`` of the last ``L`` stages (L = 3, l = 2:
  ResNet ``layer3``; the last stage is never run at inference);
* ``f^l = N_sub-l(F^l)`` (Eq. 2): 1x1 conv -> 3x3 conv -> global max pool ->
  FC to ``d``;
* matching matrix ``M_i[a, b] = cos(C[a, b], f^l)`` with the learned C-vectors
  ``C in R^{y x k x d}`` (Eq. 3);
* ``b_i = sign(W_h vec(softmax(y^l) (.) M_i))`` with ``y^l = alpha sum_k M_i``
  (Eq. 12, the class-weighted form of Eq. 4).

Training-only modules (Sec. 3.3), never part of ``encode``:

* cross-layer semantic transfer (Sec. 3.3.1): early fusion
  ``f^0 = N_con(concat(f^1..f^L))`` (Eq. 8) with its own matching scores
  ``M^con`` (Eq. 9); ``L_cls`` (Eq. 10) over ``y^0 = alpha sum_k M^con``,
  ``y^l = alpha sum_k M`` and ``y^j = N_cls-j(f^j)`` for the other layers;
  ``L_trans`` (Eq. 11) distils ``softmax(sum_j y^j)`` into layer ``l``;
* multi-region embedding (Sec. 3.3.2): Algorithm 1 (parameter-free) finds
  ``M`` regions on the channel-mean activation map of the last ``L`` stages;
  the crops go through the same layers with row-wise *max* matching (Eq. 13)
  and ``L_region = sum_m (L_cls^m + L_trans^m)`` (Eq. 14).

Hash loss (Eqs. 5-7): a pairwise term between the relaxed codes
``u = tanh(W_h ...)`` and the previous epoch's binary codes ``b^(t-1)`` of the
whole training set, and a proxy term towards the previous epoch's class-mean
codes ``c^(t-1)``; both similarity matrices have their zeros replaced by
``-sum(S) / sum(1 - S)`` (rebalancing).  The memories hold the codes the
network produced *during* epoch ``t-1`` (collected from the training batches,
as the paper's "codes generated in the (t-1)-th epoch"), and are swapped in
``on_epoch_end``; before the first epoch they are random (Sec. 3.2).

Total loss (Eq. 15): ``L = L_hash + L_cls + L_trans + L_region``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torchvision.ops import roi_align

from fgbench import (
    Batch,
    BuildContext,
    CodeMemory,
    HashingModel,
    MethodSpec,
    PaperResult,
    TrainContext,
    hookimpl,
    similar_pair_ratio,
)

FGBENCH_API_VERSION = 2  # uses similar_pair_ratio (API 2)


@dataclass(frozen=True)
class CMBHConfig:
    """CMBH hyper-parameters: every default is the paper's (Sec. 4.1, Implementation details; Fig. 2).

    k: C-vectors (critical characteristics) per class (Sec. 4.1: k = 2).
    alpha: scale of the matching-score logits (Fig. 2b: 12 or 16 is stable across bit lengths; 16).
    num_layers: ``L``, the last stages used for features (Sec. 4.1: L = 3).
    hash_layer: ``l``, 1-based among those ``L`` stages, used for the codes
        (Sec. 4.1: l = 2, the penultimate stage).
    regions: ``M``, regions found by Algorithm 1 (Sec. 4.1: M = 4).
    feature_dim: ``d``, dimension of ``f^j`` and of the C-vectors (512; the
        paper's parameter count in Table 5 implies it, see README).
    conv_width: width of the 1x1 conv in ``N_sub`` (512, idem).
    region_scale: side of the resized region crops as a fraction of the input
        size (the paper does not give it; 1.0 = the input size).
    regions_per_step: how many of each image's ``M`` regions enter one
        step's ``L_region``; 0 (the default) = all ``M``, Eq. 14 as written.
        With ``r < M`` regions sampled uniformly, ``M x`` their mean is an
        unbiased estimate of Eq. 14's sum at ``r/M`` of the region cost (not
        the paper's; an option for a smaller budget, see README).
    use_transfer / use_regions: ablation switches for ``L_trans`` and
        ``L_region`` (Table 4's T and R).
    """

    k: int = 2
    alpha: float = 16.0
    num_layers: int = 3
    hash_layer: int = 2
    regions: int = 4
    feature_dim: int = 512
    conv_width: int = 512
    region_scale: float = 1.0
    regions_per_step: int = 0
    use_transfer: bool = True
    use_regions: bool = True


# --- Algorithm 1: distinct critical image regions ------------------------------------------


def activation_map(feature_maps: list[torch.Tensor]) -> torch.Tensor:
    """``A_i`` of Sec. 3.3.2: the stage outputs resized to the last one's size, stacked, channel-averaged.

    Returns ``(batch, h_L, w_L)`` in float32.  Resizing is adaptive average
    pooling (all earlier stages are larger).
    """
    h, w = feature_maps[-1].shape[-2:]
    resized = [fm.float() if fm.shape[-2:] == (h, w) else F.adaptive_avg_pool2d(fm.float(), (h, w))
               for fm in feature_maps]
    return torch.cat(resized, dim=1).mean(dim=1)


def critical_regions(amap: np.ndarray, num_regions: int, image_size: tuple[int, int]) -> np.ndarray:
    """Algorithm 1 on one activation map ``amap`` (h, w): ``num_regions`` boxes ``[x1, y1, x2, y2]``.

    Boxes are in image pixel coordinates (``image_size = (H, W)``; a feature
    cell covers ``H/h x W/w`` pixels; ``x2``/``y2`` are exclusive edges).  For
    ``m = 1..M``: ``a = max(A)``; ``H = A > a (0.9 - 0.05 m)``; the bounding box
    of the largest 4-connected component of ``H`` (ties: the one holding the
    highest activation) mapped to the image; then the found region is
    suppressed, ``A <- A (1 - H) + (H a - H A)`` (line 7).  A map with no
    positive value left (all zeros, or everything suppressed) has no critical
    region: the box is the whole image.
    """
    A = np.asarray(amap, dtype=np.float64).copy()
    h, w = A.shape
    sy, sx = image_size[0] / h, image_size[1] / w
    boxes = np.zeros((num_regions, 4), dtype=np.float32)
    for m in range(1, num_regions + 1):
        a = float(A.max())
        if not a > 0:
            boxes[m - 1] = (0.0, 0.0, image_size[1], image_size[0])
            continue
        mask = A > a * (0.9 - 0.05 * m)
        labels, count = ndimage.label(mask)
        ids = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(mask, labels, ids)
        peaks = ndimage.maximum(A, labels, ids)
        best = ids[np.lexsort((-np.asarray(peaks), -np.asarray(sizes)))[0]]
        ys, xs = np.nonzero(labels == best)
        boxes[m - 1] = (xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)
        A = A * (1 - mask) + (mask * a - mask * A)
    return boxes


@torch.no_grad()
def crop_regions(images: torch.Tensor, boxes: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Crop ``boxes`` (batch, R, 4) from ``images`` and resize each crop to ``size`` (default: input size).

    One batched call; returns ``(batch * R, C, *size)``, image-major (image
    ``i``'s crops at ``i*R .. i*R+R-1``), bilinear (``roi_align`` with
    pixel-aligned boxes, one sample per output pixel: plain bilinear resizing).
    """
    b, r = boxes.shape[:2]
    rois = torch.as_tensor(boxes.reshape(b * r, 4), dtype=torch.float32, device=images.device)
    index = torch.arange(b, device=images.device, dtype=torch.float32).repeat_interleave(r)[:, None]
    crops = roi_align(images.float(), torch.cat([index, rois], dim=1), output_size=size or images.shape[-2:],
                      spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return crops.to(images.dtype)


# --- model -------------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SubNetwork(nn.Module):
    """``N_sub-j`` (Eq. 2): two conv layers, global max pooling, an FC layer to ``d``.

    1x1 conv to ``width``, 3x3 conv to ``out_channels``; the FC layer is
    ``BN1d -> Linear -> BN1d -> ELU`` (the layout whose parameter count
    reproduces Table 5 exactly, see README).
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*_conv_bn_relu(in_channels, width, 1), *_conv_bn_relu(width, out_channels, 3))
        self.fc = nn.Sequential(nn.BatchNorm1d(out_channels), nn.Linear(out_channels, dim), nn.BatchNorm1d(dim),
                                nn.ELU(inplace=True))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.convs(fmap), dim=(2, 3)))


class CMBH(HashingModel):
    """Backbone + ``N_sub`` per layer, C-vector matching and ``W_h`` (Sec. 3.2-3.3)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: CMBHConfig = ctx.config
        if not 1 <= cfg.hash_layer <= cfg.num_layers <= 4:
            raise ValueError(f"cmbh: need 1 <= hash_layer <= num_layers <= 4, got {cfg.hash_layer}, {cfg.num_layers}")
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.backbone = ctx.backbone()
        self.stage_ids = list(range(4 - cfg.num_layers, 4))  # 0-based ResNet stages of layers 1..L
        self.hash_pos = cfg.hash_layer - 1  # position of layer l among them
        self.hash_upto = self.stage_ids[self.hash_pos] + 1  # encode runs the backbone up to this stage
        out_channels = self.backbone.out_channels // 2
        self.subnets = nn.ModuleList(
            SubNetwork(self.backbone.stage_channels[s], cfg.conv_width, out_channels, cfg.feature_dim)
            for s in self.stage_ids)
        d = cfg.feature_dim
        self.fuse = nn.Sequential(nn.BatchNorm1d(cfg.num_layers * d), nn.Linear(cfg.num_layers * d, d),
                                  nn.BatchNorm1d(d), nn.ELU(inplace=True))  # N_con (Eq. 8)
        self.classifiers = nn.ModuleList(nn.Linear(d, ctx.num_classes) for _ in self.stage_ids)  # N_cls-j, j != l
        self.c_vectors = nn.Parameter(torch.randn(ctx.num_classes, cfg.k, d))  # C (Sec. 3.1)
        self.hash_layer = nn.Linear(ctx.num_classes * cfg.k, ctx.bits, bias=False)  # W_h (Eq. 4)

        labels = torch.as_tensor(ctx.train_labels, dtype=torch.long)
        self.register_buffer("train_labels", labels)
        # rebalancing of Eqs. 6-7: zeros of S become -sum(S) / sum(1 - S) = -N+/N-
        self.pair_negative = similar_pair_ratio(labels, ctx.num_classes)
        self.proxy_negative = 1.0 / max(ctx.num_classes - 1, 1)
        g = torch.Generator().manual_seed(int(ctx.seed))
        self.memory = CodeMemory(ctx.num_train, ctx.bits, init="sign-random", generator=g)  # this epoch's u
        self.register_buffer("prev_codes", self.memory.binary().clone())  # b^(t-1)
        self.register_buffer("prev_proxies", self.memory.class_means(labels, ctx.num_classes, binary=False))  # c^(t-1)

    # --- shared pieces ---------------------------------------------------------------------
    def match(self, f: torch.Tensor) -> torch.Tensor:
        """Matching matrix (Eqs. 3/9): cosine of ``f`` (B, d) with every C-vector -> (B, y, k), float32."""
        with torch.autocast(f.device.type, enabled=False):
            c = F.normalize(self.c_vectors.float(), dim=-1)
            return torch.einsum("bd,ykd->byk", F.normalize(f.float(), dim=-1), c)

    def hash_codes(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real codes ``W_h vec(softmax(y^l) (.) M)`` (Eq. 12) and ``y^l = alpha sum_k M`` (Eq. 10)."""
        logits = self.config.alpha * m.sum(dim=-1)
        with torch.autocast(m.device.type, enabled=False):
            weighted = torch.softmax(logits, dim=-1).unsqueeze(-1) * m
            return self.hash_layer(weighted.flatten(1)), logits

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_stages(images, upto=self.hash_upto)
        f = self.subnets[self.hash_pos](feats[self.stage_ids[self.hash_pos]])
        return self.hash_codes(self.match(f))[0]

    def _branch(self, images: torch.Tensor, reduce: str) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """All layers on ``images``: stage maps, logits ``[y^0, y^1..y^L]`` (float32) and ``M`` of layer l.

        ``reduce`` is ``"sum"`` over the k C-vectors (Eq. 10) or ``"max"``
        (row-wise max, Eq. 13, for region crops).
        """
        maps = self.backbone.forward_stages(images, upto=4)
        maps = [maps[s] for s in self.stage_ids]
        fs = [sub(fm) for sub, fm in zip(self.subnets, maps)]
        f0 = self.fuse(torch.cat(fs, dim=1))
        m_con, m = self.match(f0), self.match(fs[self.hash_pos])
        pool = (lambda x: x.sum(dim=-1)) if reduce == "sum" else (lambda x: x.amax(dim=-1))
        logits = [self.config.alpha * pool(m_con)]
        for j, f in enumerate(fs):
            logits.append(self.config.alpha * pool(m) if j == self.hash_pos else self.classifiers[j](f).float())
        return maps, logits, m

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        maps, logits, m = self._branch(images, "sum")
        out: dict[str, Any] = {"logits": logits, "codes": self.hash_codes(m)[0]}
        cfg = self.config
        if self.training and cfg.use_regions and cfg.regions > 0:
            amap = activation_map([fm.detach() for fm in maps]).cpu().numpy()
            boxes = np.stack([critical_regions(a, cfg.regions, tuple(images.shape[-2:])) for a in amap])
            per_step = cfg.regions if cfg.regions_per_step <= 0 else min(cfg.regions_per_step, cfg.regions)
            if per_step < cfg.regions:
                pick = torch.rand(len(boxes), cfg.regions).argsort(dim=1)[:, :per_step].numpy()
                boxes = np.take_along_axis(boxes, pick[..., None], axis=1)
            size = tuple(max(1, round(s * cfg.region_scale)) for s in images.shape[-2:])
            out["region_logits"] = self._branch(crop_regions(images, boxes, size), "max")[1]
            out["regions_per_image"] = per_step
        return out

    # --- losses ----------------------------------------------------------------------------
    def _semantic(self, logits: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_cls`` (Eq. 10) and ``L_trans`` (Eq. 11), batch means, float32.

        The distillation target ``softmax(sum_j y^j)`` is a teacher: no
        gradient flows through it (it supervises layer ``l``).
        """
        logits = [z.float() for z in logits]
        cls = sum(F.cross_entropy(z, labels) for z in logits)
        if not self.config.use_transfer:
            return cls, torch.zeros((), device=cls.device)
        teacher = torch.softmax(torch.stack(logits).sum(dim=0), dim=-1).detach()
        student = F.log_softmax(logits[self.hash_pos + 1], dim=-1)
        return cls, -(teacher * student).sum(dim=-1).mean()

    def loss(self, outputs: dict[str, Any], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch.labels
        cls, trans = self._semantic(outputs["logits"], labels)
        u = torch.tanh(outputs["codes"].float())
        self.memory.update(batch.indices, u)
        bits = float(self.bits)
        same = labels[:, None] == self.train_labels[None, :]
        s_pair = torch.where(same, 1.0, -self.pair_negative)
        pair = (u @ self.prev_codes.T - bits * s_pair).pow(2).mean()  # Eq. 6
        own = F.one_hot(labels, self.num_classes).bool()
        s_proxy = torch.where(own, 1.0, -self.proxy_negative)
        proxy = (u @ self.prev_proxies.T - bits * s_proxy).pow(2).mean()  # Eq. 7
        parts = {"hash_pair": pair, "hash_proxy": proxy, "cls": cls, "trans": trans}
        total = pair + proxy + cls + trans
        if "region_logits" in outputs:
            r = outputs["regions_per_image"]
            r_cls, r_trans = self._semantic(outputs["region_logits"], labels.repeat_interleave(r))
            # Eq. 14: sum over the M regions of per-region batch means = M x mean over crops
            # (exact with all M crops, unbiased with r < M sampled ones)
            region = self.config.regions * (r_cls + r_trans)
            parts["region"] = region
            total = total + region
        return total, parts

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        """Epoch ``t`` becomes ``t-1``: its codes become ``b^(t-1)``, their class means ``c^(t-1)``."""
        new = self.memory.binary()
        ctx.log("cmbh/bits_changed", float((new != self.prev_codes).float().mean()))
        self.prev_codes.copy_(new)
        self.prev_proxies.copy_(self.memory.class_means(self.train_labels, self.num_classes, binary=False))


def build(ctx: BuildContext) -> CMBH:
    return CMBH(ctx)


SPEC = MethodSpec(
    name="cmbh",
    summary="Characteristics matching hashing: codes from C-vector matching at layer3, cross-layer + region training",
    citation="Z.-D. Chen, L.-J. Zhao, Z.-C. Zhang, X. Luo, X.-S. Xu. Characteristics Matching Based Hash Codes "
             "Generation for Efficient Fine-grained Image Retrieval. CVPR 2024.",
    config_cls=CMBHConfig,
    build=build,
    paper_results=(
        PaperResult(
            source="CMBH, CVPR 2024, Table 2 (ResNet-50, mAP@all) and Table 5 (cost at 12 bits)",
            map={
                "cub": {12: 0.8407, 24: 0.8579, 32: 0.8621, 48: 0.8647},
                "aircraft": {12: 0.8911, 24: 0.9145, 32: 0.9160, 48: 0.9288},
                "food101": {12: 0.8785, 24: 0.8871, 32: 0.8928, 48: 0.8887},
                "nabirds": {12: 0.7442, 24: 0.8104, 32: 0.8164, 48: 0.8207},
                "vegfru": {12: 0.8437, 24: 0.8863, 32: 0.8846, 48: 0.8906},
            },
            params_m={"resnet50@12": 14.32, "resnet18@12": 4.23},
            flops_g={"resnet50@12": 4.35, "resnet18@12": 1.67},
            cost_note="params: the table counts layers; the C-vectors (0.205 M, used by encode) are on their own line of fgbench profile; the paper's counts (14.32 M with ResNet-50, 4.23 M with ResNet-18) match the layers without them. FLOPs: fgbench counts conv and matmul MACs only; the paper's counter also adds element-wise operations (BN, ReLU, pooling)",
        ),
    ),
    # Sec. 4.1: SGD momentum 0.9, weight decay 5e-4; 100 epochs, lr 0.001 divided by 10 at epoch 70;
    # batch 16 (CUB, Aircraft), 64 otherwise.
    # Pipeline, Sec. 4.1 (data preprocessing): every image resized to 255 x 255 (square), random crop 224 at
    # training, centre crop 224 at test; no flip or other augmentation is listed.  ImageNet weights: the paper
    # says ImageNet-pretrained ResNet-50/18 and names no version: torchvision's pretrained=True = V1.
    paper_recipe_sources={
        "backbone": "Sec. 4.1 (ResNet-50 and ResNet-18; Table 2 reports ResNet-50)",
        "input_size": "Sec. 4.1 (random crop 224 x 224)",
        "resize_size": "Sec. 4.1 (images resized to 255 x 255)",
        "optimizer": "Sec. 4.1 (standard SGD)",
        "lr": "Sec. 4.1 (initial learning rate 0.001)",
        "backbone_lr_mult": "Sec. 4.1 (one learning rate for the whole network)",
        "momentum": "Sec. 4.1 (momentum 0.9)",
        "weight_decay": "Sec. 4.1 (weight decay 5e-4)",
        "schedule": "Sec. 4.1 (divided by 10 at epoch 70)",
        "milestones": "Sec. 4.1 (divided by 10 at epoch 70)",
        "epochs": "Sec. 4.1 (100 epochs)",
        "batch_size": "Sec. 4.1 (16 for CUB-200-2011 and Aircraft, 64 for the three large datasets)",
        "resize_shape": "Sec. 4.1 (images resized to 255 x 255: square)",
        "train_crop": "Sec. 4.1 (random crop 224 x 224 in training, centre crop at test)",
        "flip_p": "Sec. 4.1 (no flip listed)",
        "rotation": "Sec. 4.1 (no rotation listed)",
        "color_jitter": "Sec. 4.1 (no colour jitter listed)",
        "imagenet_weights": "Sec. 4.1 (ImageNet-pretrained, no version named: torchvision pretrained=True = V1)",
    },
    paper_recipe={
        "default": {"backbone": "resnet50", "optimizer": "sgd",
                    "lr": 1e-3, "backbone_lr_mult": 1.0, "momentum": 0.9, "weight_decay": 5e-4,
                    "schedule": "step", "milestones": (70,), "epochs": 100, "batch_size": 64,
                    "input_size": 224, "resize_size": 255, "resize_shape": "square", "train_crop": "random",
                    "flip_p": 0.0, "rotation": 0.0, "color_jitter": (0.0, 0.0, 0.0, 0.0),
                    "imagenet_weights": "imagenet1k_v1"},
        "cub": {"batch_size": 16},
        "aircraft": {"batch_size": 16},
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
