"""ExchNet — Q. Cui, Q.-Y. Jiang, X.-S. Wei, W.-J. Li, O. Yoshie, "ExchNet: A
Unified Hashing Network for Large-Scale Fine-Grained Image Retrieval", ECCV 2020.

There is no official code; this is a reconstruction (what comes from where:
plugin README).  Section and equation numbers are the paper's.

Representation learning (Sec. 3.1):

* a shared trunk (ResNet up to ``layer3``) gives ``E_i``; an attention
  generation module turns it into ``M`` part attention maps ``A_i^j`` and
  the attentive local features are ``E_i^j = E_i (.) A_i^j`` (Eq. 1);
* a Local Features Refinement network (a ``layer4``-like conv stack, shared
  by the parts) gives ``F_i^j`` (Eq. 2) and ``f_i^j = GAP(F_i^j)`` (Eq. 3);
  a Global Features Refinement network (the backbone's own ``layer4``) gives
  ``f_i^global`` (Eq. 4);
* attention constraints on the local features: *spatial diversity* (the
  spatial distributions of different parts should differ) and *channel
  diversity* (their channel distributions should differ by a margin), both
  measured with the Hellinger distance.

Local feature alignment (Sec. 3.2): categorical anchors ``C_y^j`` — the mean
``j``-th local feature of class ``y`` over the training set, refreshed every
epoch — and the feature exchange of Eq. 8: each of a sample's ``M`` local
features is replaced by its class's anchor with probability 0.5
(``xi ~ B(0.5)``), so parts are swapped only *within* a class.

Hash learning (Sec. 3.3): asymmetric, ADSH-style.  Query codes
``u_i = tanh(g(x_i))`` come from a hashing layer on
``[f^1 .. f^M, f^global]`` (exchanged local features in training); database
codes ``V in {-1,+1}^{n x k}`` of the training set are free variables.  The
network is trained with ``V`` fixed on::

    sum_i sum_j (u_i^T v_j - k S_ij)^2 + gamma sum_i (v_i - u_i)^2

(``S_ij = +1`` same class; ``-1`` otherwise in ADSH, ``-N+/N-`` here by default:
``ExchNetConfig.soft_similarity``), and at each epoch end ``V`` is
updated bit by bit in closed form (ADSH's discrete cyclic coordinate
descent) with the network fixed: the alternating learning algorithm.

fgbench protocol: query **and** database codes are ``sign(encode(x))``; ``V``
is only a training target, never the database codes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fgbench import (
    Batch,
    BuildContext,
    ClassMeans,
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

FGBENCH_API_VERSION = 2  # uses ClassMeans and similar_pair_ratio (API 2)
_SQRT2 = 2.0 ** 0.5
ANCHOR_SOURCES = ("batches", "eval-pass")  # ExchNetConfig.anchors


@dataclass(frozen=True)
class ExchNetConfig:
    """ExchNet hyper-parameters.

    parts: ``M``, attention maps / local features per image.
    gamma: weight of ADSH's quantization term ``(v_i - u_i)^2`` in the loss and in
        ``V``'s update.  Default 0: the reference re-implementation's
        ``quan_loss=False`` (README, "Other differences from the reference":
        measured on three seeds); ADSH's own value is 200.
    spatial_weight / channel_weight: weights of the spatial and channel
        diversity constraints.
    channel_margin: margin ``t`` of the channel diversity constraint.
    exchange_prob: probability that a local feature is exchanged with its
        class anchor (Eq. 8: 0.5).
    exchange_from: when feature exchange starts, as the fraction of the
        job's outer iterations done before it: exchange runs from the 0-based
        outer iteration ``max(1, floor(exchange_from * T))`` on (``T`` outer
        iterations: ``epochs``, or ``epochs / resample_every`` with the
        protocol's ``epoch_sample``; anchors exist from the end of the first,
        so 1 is the earliest; 1.0 = never).  Default 0.875: the reference's
        ``align_step = 35`` of ``max_iter = 40`` (exchange in the last 5 of 40
        outer iterations; the last 2 of 12 in the fair embedded protocol).
    reference_scaling: multiply the similarity and quantization terms by
        ``12 / k`` as the reference re-implementation's loss does (README,
        source 4); default on (the reference's); identical at 12 bits.
    soft_similarity: rebalance the dissimilar entries of ``S`` from ``-1`` to
        ``-N+/N-`` (similar / dissimilar pair counts), so that every row of
        ``S`` sums to zero.  ADSH's plain ``S in {-1, +1}`` has a row sum of
        ``n (2/C - 1)`` with ``C`` balanced classes: the similarity gradient
        is then dominated by one direction shared by every image, and V's
        update by ``-sum_i u_i``, which drove codes to a single value
        (measured: seed 1 on the embedded dataset stayed at chance).  The
        re-implementation (plugin README, source 4) uses the same rescaling
        "to converge".  ``False`` gives ADSH's ``S``.
    anchors: how the categorical anchors ``C_y^j`` of the feature exchange
        (Sec. 3.2, Fig. 4 / Eq. 8) are refreshed at the end of each outer
        iteration.  ``"batches"``: class means of ``f^j`` accumulated from
        that outer iteration's training batches (train mode, augmented
        images).  ``"eval-pass"``: class means of ``f^j`` over an evaluation
        pass of the whole training split (= the database; model in eval
        mode, no augmentation, ``TrainContext.map_train``), as the
        re-implementation does (aassxun/DSH_Analysis ``adsh_exchnet.py``,
        plugin README source 4) — one extra pass over the training split at
        the end of each outer iteration whose successor exchanges (the
        reference computes anchors from ``align_step`` on), never after the
        last.  Default ``"eval-pass"`` (the reference's).
    """

    parts: int = 4
    gamma: float = 0.0
    spatial_weight: float = 1.0
    channel_weight: float = 1.0
    channel_margin: float = 0.4
    exchange_prob: float = 0.5
    exchange_from: float = 0.875
    soft_similarity: bool = True
    reference_scaling: bool = True
    anchors: str = "eval-pass"

    def __post_init__(self) -> None:
        if not 0.0 <= self.exchange_from <= 1.0:
            raise ValueError(f"exchnet.exchange_from {self.exchange_from}: use a fraction of the outer iterations "
                             f"in [0, 1] (0.875: the reference's 35 of 40; 1: no exchange)")
        if self.anchors not in ANCHOR_SOURCES:
            raise ValueError(f"exchnet.anchors {self.anchors!r}: use one of {', '.join(ANCHOR_SOURCES)}")


def hellinger_diversity(dist: torch.Tensor) -> torch.Tensor:
    """Mean pairwise Hellinger distance between the ``M`` distributions of each sample.

    ``dist`` is ``(batch, M, D)`` with rows summing to 1; returns ``(batch,)``
    in ``[0, 1]``: ``H(p, q) = ||sqrt(p) - sqrt(q)||_2 / sqrt(2)`` averaged over
    the ``M (M - 1) / 2`` pairs.
    """
    root = dist.clamp_min(0).sqrt()
    m = root.shape[1]
    i, j = torch.triu_indices(m, m, offset=1, device=dist.device)
    return ((root[:, i] - root[:, j]).norm(dim=-1) / _SQRT2).mean(dim=1)


def dissimilar_similarity(labels: torch.Tensor, num_classes: int, soft: bool) -> float:
    """The value of ``S_ij`` for a dissimilar pair: ``-1`` (ADSH) or ``-N+/N-`` (``soft``).

    ``N+``/``N-`` count the similar / dissimilar ordered pairs of the
    training set, so that ``sum_j S_ij`` is zero on average over ``i``.
    """
    return -similar_pair_ratio(labels, num_classes) if soft else -1.0


def exchange_features(local: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor,
                      keep: torch.Tensor) -> torch.Tensor:
    """Feature exchanging (Eq. 8): part ``j`` of sample ``i`` stays if ``keep[i, j]``, else becomes ``C_{y_i}^j``.

    ``local`` (B, M, D), ``labels`` (B,), ``anchors`` (classes, M, D),
    ``keep`` (B, M) bool.  Features are only ever replaced by the anchor of
    the sample's own class and the same part, so shapes and part semantics
    are kept.
    """
    return torch.where(keep.unsqueeze(-1), local, anchors[labels].to(local.dtype))


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AttentionGeneration(nn.Module):
    """``M`` part attention maps in ``(0, 1)`` from the trunk's feature map (Sec. 3.1)."""

    def __init__(self, channels: int, parts: int) -> None:
        super().__init__()
        mid = max(channels // 4, 1)
        self.body = nn.Sequential(*_conv_bn_relu(channels, mid, 1), *_conv_bn_relu(mid, mid, 3),
                                  nn.Conv2d(mid, parts, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


class ExchNet(HashingModel):
    """Trunk, attention, LFR/GFR, hashing layer ``g``; ``V`` and the anchors as buffers (Sec. 3)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: ExchNetConfig = ctx.config
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.backbone = ctx.backbone()  # trunk = stem + layer1..3, GFR = its layer4
        self.lfr = copy.deepcopy(self.backbone.stages[3])  # LFR: same architecture and initial weights
        self.attention = AttentionGeneration(self.backbone.stage_channels[2], cfg.parts)
        dim = self.backbone.out_channels
        self.hash_layer = nn.Linear(dim * (cfg.parts + 1), ctx.bits)  # g

        labels = torch.as_tensor(ctx.train_labels, dtype=torch.long)
        self.register_buffer("train_labels", labels)
        self.dissimilar_value = dissimilar_similarity(labels, ctx.num_classes, cfg.soft_similarity)
        g = torch.Generator().manual_seed(int(ctx.seed))
        self.query_codes = CodeMemory(ctx.num_train, ctx.bits)  # U: latest u_i of every training image
        self.database_codes = CodeMemory(ctx.num_train, ctx.bits, init="sign-random", generator=g)  # V
        self.register_buffer("anchors", torch.zeros(ctx.num_classes, cfg.parts, dim))  # C
        self.anchor_stats = ClassMeans(ctx.num_classes, (cfg.parts, dim))  # this epoch's sums of f^j per class
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))  # outer iterations done
        # ADSH's outer iteration (Alg. 1): V and the anchors are updated once per subset of the protocol's
        # epoch_sample images (every resample_every epochs), with Omega = the images sampled in it
        protocol = ctx.protocol
        self.sampled = int(getattr(protocol, "epoch_sample", 0)) > 0
        self.period = outer_iteration_epochs(protocol)
        outer_iterations = -(-int(getattr(protocol, "epochs", 1)) // self.period)
        #: first (0-based) outer iteration with feature exchange (config ``exchange_from``; never when past the last)
        self.exchange_start = max(1, math.floor(cfg.exchange_from * outer_iterations))
        self.omega = CodeMemory(ctx.num_train, 1)  # 1 for the images trained on since V's last update

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Local features ``f^j`` (B, M, D), global ``f^global`` (B, D), local maps ``F^j`` (B, M, D, h, w)."""
        trunk = self.backbone.forward_stages(images, upto=3)[-1]  # E_i
        att = self.attention(trunk)  # A_i, (B, M, H, W)
        b, m = att.shape[:2]
        local_in = (trunk.unsqueeze(1) * att.unsqueeze(2)).flatten(0, 1)  # Eq. 1, parts batched
        local_maps = self.lfr(local_in)  # Eq. 2
        local_maps = local_maps.view(b, m, *local_maps.shape[1:])
        global_f = self.backbone.stages[3](trunk).mean(dim=(2, 3))  # Eq. 4 + GAP
        return local_maps.mean(dim=(3, 4)), global_f, local_maps  # Eq. 3

    def hash_codes(self, local: torch.Tensor, global_f: torch.Tensor) -> torch.Tensor:
        return self.hash_layer(torch.cat([local.flatten(1), global_f], dim=1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        local, global_f, _ = self.features(images)
        return self.hash_codes(local, global_f)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        local, global_f, maps = self.features(images)
        return {"local": local, "global": global_f, "maps": maps}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        labels = batch.labels
        # loss() runs outside the autocast region: hash the (possibly bf16) features in float32
        local, global_f = outputs["local"].float(), outputs["global"].float()
        if cfg.anchors == "batches":
            self.anchor_stats.add(labels, local)  # this epoch's anchors: class means of f^j
        if self.training and int(self.epoch) >= self.exchange_start and cfg.exchange_prob > 0:
            keep = torch.rand(local.shape[:2], device=local.device) >= cfg.exchange_prob
            local = exchange_features(local, labels, self.anchors, keep)
        u = torch.tanh(self.hash_codes(local, global_f).float())
        self.query_codes.update(batch.indices, u)
        if self.training:
            self.omega.update(batch.indices, torch.ones(len(u), 1, device=u.device))

        # ADSH objective with V fixed, divided by batch x n as in ADSH
        v = self.database_codes.codes
        s = torch.where(labels[:, None] == self.train_labels[None, :], 1.0, self.dissimilar_value)  # S_ij, (B, n)
        norm = u.shape[0] * v.shape[0] * (self.bits / 12.0 if cfg.reference_scaling else 1.0)
        similarity = (u @ v.T - self.bits * s).pow(2).sum() / norm
        quantization = cfg.gamma * (v[batch.indices] - u).pow(2).sum() / norm

        # attention constraints on the local features F_i^j
        maps = outputs["maps"].float()
        spatial = torch.softmax(maps.mean(dim=2).flatten(2), dim=-1)  # (B, M, h*w)
        channel = torch.softmax(outputs["local"].float(), dim=-1)  # (B, M, D), before any exchange
        l_sp = (1.0 - hellinger_diversity(spatial)).mean()
        l_cp = F.relu(cfg.channel_margin - hellinger_diversity(channel)).mean()
        total = similarity + quantization + cfg.spatial_weight * l_sp + cfg.channel_weight * l_cp
        return total, {"similarity": similarity, "quantization": quantization, "spatial": l_sp, "channel": l_cp}

    @torch.no_grad()
    def update_database_codes(self) -> None:
        """ADSH's closed-form bit-wise update of ``V`` with the network fixed
        (:func:`fgbench.adsh_update_database_codes`).  Ω (the rows of ``U``) is the whole training set, or with
        the protocol's ``epoch_sample`` the images sampled since the last update (ADSH's Ω; other rows of ``U``
        count as zero, as ADSH's expanded ``U`` does).
        """
        u = self.query_codes.codes
        if self.sampled:
            u = u * self.omega.codes
        v = adsh_update_database_codes(u, self.database_codes.codes, self.train_labels, self.num_classes,
                                       self.dissimilar_value, self.config.gamma)
        self.database_codes.replace(v)

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """The local features ``f^j`` (B, M, D) alone (Eq. 3): what the anchors average and the exchange replaces."""
        return self.features(images)[0]

    @torch.no_grad()
    def eval_pass_anchors(self, ctx: TrainContext) -> None:
        """Anchors ``C_y^j`` = class means of ``f^j`` over an evaluation pass of the training split (``anchors="eval-pass"``).

        The re-implementation's refresh (aassxun/DSH_Analysis ``adsh_exchnet.py``):
        the model in eval mode over the whole database (fgbench's training
        split), no augmentation; classes without an image keep their anchors.
        """
        local = ctx.map_train(self.local_features).to(self.anchors.device)
        means = ClassMeans(self.num_classes, tuple(self.anchors.shape[1:])).to(self.anchors.device)
        means.add(self.train_labels, local)
        seen = means.seen()
        self.anchors[seen] = means.means()[seen]

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        """At the end of an outer iteration: update ``V`` (network fixed), refresh the anchors ``C`` (Sec. 3.2).

        An outer iteration is one epoch, or ``resample_every`` epochs under the
        protocol's ``epoch_sample`` (ADSH's schedule).  The anchors come from
        the outer iteration's training batches, or with ``anchors="eval-pass"``
        from :meth:`eval_pass_anchors` (not after the last epoch).
        """
        if (epoch + 1) % self.period and epoch + 1 < ctx.epochs:
            return
        before = self.database_codes.codes.clone()
        self.update_database_codes()
        ctx.log("exchnet/v_bits_changed", float((before != self.database_codes.codes).float().mean()))
        if self.config.anchors == "eval-pass":
            if epoch + 1 < ctx.epochs and int(self.epoch) + 1 >= self.exchange_start:
                self.eval_pass_anchors(ctx)  # the next outer iteration exchanges
        else:
            seen = self.anchor_stats.seen()
            self.anchors[seen] = self.anchor_stats.means()[seen]
        self.anchor_stats.reset()
        self.omega.replace(torch.zeros_like(self.omega.codes))
        self.epoch.add_(1)


def build(ctx: BuildContext) -> ExchNet:
    return ExchNet(ctx)


SPEC = MethodSpec(
    name="exchnet",
    summary="ExchNet: attention part features + global feature, anchor feature exchange, ADSH-style asymmetric hashing",
    citation="Q. Cui, Q.-Y. Jiang, X.-S. Wei, W.-J. Li, O. Yoshie. ExchNet: A Unified Hashing Network for "
             "Large-Scale Fine-Grained Image Retrieval. ECCV 2020.",
    config_cls=ExchNetConfig,
    build=build,
    paper_results=(
        PaperResult(
            source="ExchNet (ResNet-50) as cited by CNET (Zeng & Zheng 2023, Table I) and CMBH (CVPR 2024, "
                   "Table 2), identical values in both; not checked against the ExchNet paper's own table",
            map={
                "cub": {12: 0.2514, 24: 0.5898, 32: 0.6774, 48: 0.7105},
                "aircraft": {12: 0.3327, 24: 0.4583, 32: 0.5183, 48: 0.5905},
                "food101": {12: 0.4563, 24: 0.5548, 32: 0.5639, 48: 0.6419},
                "nabirds": {12: 0.0522, 24: 0.1569, 32: 0.2194, 48: 0.3481},
                "vegfru": {12: 0.2355, 24: 0.3593, 32: 0.4827, 48: 0.6930},
            },
        ),
    ),
    # The paper's training recipe could not be read; these are the values of the third-party
    # re-implementation (aassxun/DSH_Analysis, adsh_exchnet.py): SGD lr 1e-4, momentum 0.9,
    # weight decay 1e-4, batch 16; 40 outer iterations of 30 epochs over 2,000 training images sampled
    # afresh per outer iteration (ADSH, Alg. 1): 1,200 epochs of 125 steps = 150,000 SGD steps on every
    # dataset; lr / 10 for the last 5 outer iterations (README, "Schedule").
    # Pipeline, from the same code (data/transform.py: train_transform, query_transform; adsh_exchnet.py trains
    # on train_transform through data_loader.sample_dataloader): RandomResizedCrop(224) (torchvision defaults:
    # scale 0.08-1, ratio 3/4-4/3) + flip p=0.5; query and database Resize(256) (short side) + CenterCrop(224).
    # ImageNet weights: its models/resnet.py loads resnet50-19c8e357.pth, torchvision's original checkpoint = V1.
    paper_recipe_sources={
        "backbone": "reference code aassxun/DSH_Analysis (ResNet-50; the paper text could not be read)",
        "input_size": "reference code aassxun/DSH_Analysis (224 px crops)",
        "resize_size": "reference code aassxun/DSH_Analysis (resize 256)",
        "optimizer": "reference code aassxun/DSH_Analysis adsh_exchnet.py (SGD)",
        "lr": "reference code aassxun/DSH_Analysis adsh_exchnet.py (lr 1e-4)",
        "backbone_lr_mult": "reference code aassxun/DSH_Analysis adsh_exchnet.py (one lr for all layers)",
        "momentum": "reference code aassxun/DSH_Analysis adsh_exchnet.py (momentum 0.9)",
        "weight_decay": "reference code aassxun/DSH_Analysis adsh_exchnet.py (weight decay 1e-4)",
        "schedule": "reference code aassxun/DSH_Analysis adsh_exchnet.py (lr / 10 after 35 of 40 outer iterations = epoch 1,050)",
        "milestones": "reference code aassxun/DSH_Analysis adsh_exchnet.py (35 of 40 outer iterations)",
        "epochs": "reference code aassxun/DSH_Analysis adsh_exchnet.py (40 outer iterations x 30 epochs = 1,200 epochs)",
        "batch_size": "reference code aassxun/DSH_Analysis adsh_exchnet.py (batch 16)",
        "resize_shape": "reference code DSH_Analysis data/transform.py (Resize(256): short side)",
        "train_crop": "reference code DSH_Analysis data/transform.py (RandomResizedCrop(224))",
        "crop_scale": "torchvision RandomResizedCrop default (as the reference code uses it)",
        "crop_ratio": "torchvision RandomResizedCrop default (as the reference code uses it)",
        "flip_p": "reference code DSH_Analysis data/transform.py (RandomHorizontalFlip)",
        "rotation": "reference code DSH_Analysis data/transform.py (no rotation)",
        "color_jitter": "reference code DSH_Analysis data/transform.py (no colour jitter)",
        "imagenet_weights": "reference code models/resnet.py (resnet50-19c8e357.pth = V1)",
        "epoch_sample": "reference code adsh_exchnet.py (2,000 database images sampled per outer iteration)",
        "resample_every": "reference code adsh_exchnet.py (30 epochs per outer iteration)",
    },
    paper_recipe={
        "default": {"backbone": "resnet50", "optimizer": "sgd", "lr": 1e-4,
                    "backbone_lr_mult": 1.0, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step",
                    "epoch_sample": 2000, "resample_every": 30, "epochs": 40 * 30, "milestones": (35 * 30,),
                    "batch_size": 16,
                    "input_size": 224, "resize_size": 256, "resize_shape": "short-side",
                    "train_crop": "random-resized", "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3),
                    "flip_p": 0.5, "rotation": 0.0, "color_jitter": (0.0, 0.0, 0.0, 0.0),
                    "imagenet_weights": "imagenet1k_v1"},
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
