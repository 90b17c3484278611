"""SEMICON — Y. Shen, X. Sun, X.-S. Wei, Q.-Y. Jiang, J. Yang, "SEMICON: A
Learning-to-hash Solution for Large-scale Fine-grained Image Retrieval",
ECCV 2022 (arXiv:2209.13833); authors' code github.com/NJUST-VIPGroup/SEMICON
(also aassxun/SEMICON), re-implemented in aassxun/DSH_Analysis
(``models/SEMICON.py``).  What comes from where: plugin README.

Model (Sec. 3 of the paper, "global-level" and "local-level" branches):

* a shared trunk, the backbone's stem and ``layer1..layer3``, gives ``E``;
* **global branch**: the backbone's ``layer4`` with an ICON module after each
  of its blocks but the first (the authors' layout), global average pooling,
  and a bias-free projection ``W_G`` to the global part of the code;
* **SEM attention** (suppression-enhancing mask, Sec. 3.2): a narrowing stack of
  bottleneck blocks on ``E`` gives ``f``; stage ``s = 1..3`` computes an
  attention map ``a_s = ReLU(BN(conv1x1(f)))``, then *restrains* the regions it
  found before the next stage looks:  ``f <- f (.) (2 - m(a_s))`` with the mask

      p = softmax over positions of a_s,   m = clamp((p - mean p) / std(p)^alpha + 1, 0, 2)

  (no gradient through ``m``): regions the stage attended (``m > 1``) are
  suppressed, the others enhanced, so the three maps find complementary parts;
* **local branch**: ``E (.) a_s`` for each of the three maps goes through a
  second ``layer4`` with ICON (its own weights, shared by the three parts),
  is average pooled and projected by its own ``W_L,s``;
* **ICON** (interactive channel transformation, Sec. 3.3), an efficient
  two-step channel self-attention: the channels are split into ``g`` groups;
  step 1 attends among the channels *within* each group
  (``softmax(phi(q k^T / sqrt(d))) v`` per group, ``phi(x) = sign(x) sqrt(|x|)``),
  adds the input and normalises (BN); step 2 regroups the channels so that
  each new group holds one channel of every old group and attends again,
  adding the step-1 output: every channel can interact with every other in
  two cheap steps;
* code ``u = tanh([W_G f_G, W_L1 f_L1, W_L2 f_L2, W_L3 f_L3])``; each local
  part gets ``bits // 6`` bits and the global part the rest (12 bits: 6 + 3 x 2,
  the authors' split; 32 bits: 17 + 3 x 5).

Hash learning: asymmetric, ADSH-style (Sec. 3.4): with the database codes
``V in {-1,+1}^{n x k}`` of the training set fixed, the network minimises

    sum_i sum_j (u_i^T v_j - k S_ij)^2 + gamma sum_i (v_i - u_i)^2

(divided by batch x n and scaled by 12 / k, as the authors' loss), and at
the end of each outer iteration ``V`` is updated bit by bit in closed form
(ADSH's discrete cyclic coordinate descent).  An outer iteration is one epoch,
or, under the protocol's ADSH-style sampling (``epoch_sample > 0``, the paper
recipe), ``resample_every`` epochs over one random subset of the training set
(the authors' ``max_epoch`` epochs over ``num_samples`` images).
``S_ij = 1`` for the same class and ``-N+/N-`` otherwise (the authors' "soft
similarity matrix").
fgbench protocol: query **and** database codes are ``sign(encode(x))``;
``V`` is only a training target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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

__all__ = ["ICON", "SEMAttention", "SEMICON", "SEMICONConfig", "SPEC", "sem_mask",
           "split_bits"]


@dataclass(frozen=True)
class SEMICONConfig:
    """SEMICON hyper-parameters (paper defaults; README).

    parts: SEM stages = attention maps = local features (3).
    alpha: exponent of the standard deviation in the SEM mask (paper: 0.3;
        the authors' later code uses 0.15).
    min_groups, group_width: ICON uses ``max(C / group_width, min_groups)``
        channel groups (authors' code: 64 and 16, i.e. 32 groups of 64 channels
        for ResNet-50's 2048).
    gamma: weight of ADSH's quantization term (200).
    """

    parts: int = 3
    alpha: float = 0.3
    min_groups: int = 16
    group_width: int = 64
    gamma: float = 200.0


def split_bits(bits: int, parts: int = 3) -> tuple[int, ...]:
    """Bits of the global part and of each local part: ``bits // 6`` per local part, the rest global."""
    local = bits // (2 * parts)
    return (bits - parts * local,) + (local,) * parts


@torch.no_grad()
def sem_mask(att: torch.Tensor, alpha: float) -> torch.Tensor:
    """The SEM mask of one stage's attention map ``att`` (B, 1, h, w): values in [0, 2], > 1 where attended.

    ``p = softmax(att)`` over the positions of each image,
    ``m = clamp((p - mean p) / std(p)^alpha + 1, 0, 2)``; statistics per image
    (the authors' code pools them over the batch, README).
    """
    b, _, h, w = att.shape
    p = torch.softmax(att.float().reshape(b, h * w), dim=1)
    std, mean = torch.std_mean(p, dim=1, keepdim=True, correction=0)
    m = (p - mean) / std.clamp_min(1e-12).pow(alpha) + 1.0
    return m.clamp(0.0, 2.0).reshape(b, 1, h, w).to(att.dtype)


def _signed_sqrt_softmax(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    a = (q @ k.transpose(-2, -1)) * scale
    return torch.softmax(torch.sign(a) * torch.sqrt(a.abs() + 1e-5), dim=-1)


class ICON(nn.Module):
    """Interactive channel transformation (Sec. 3.3): intra-group then inter-group channel attention."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"semicon: ICON needs channels ({channels}) divisible by groups ({groups})")
        self.groups, self.width = groups, channels // groups
        self.qkv_intra = nn.Conv2d(channels, 3 * channels, 1, groups=groups)
        self.norm = nn.BatchNorm2d(channels)
        self.qkv_inter = nn.Conv2d(channels, 3 * channels, 1, groups=self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g, d = self.groups, self.width
        # step 1: within each group of d consecutive channels
        q, k, v = self.qkv_intra(x).reshape(b, g, 3, d, h * w).unbind(2)
        y = self.norm((_signed_sqrt_softmax(q, k, d ** -0.5) @ v).reshape(b, c, h, w) + x)
        # step 2: across groups; new group j holds channel j of every old group
        z = F.relu(y).reshape(b, g, d, h, w).transpose(1, 2).reshape(b, c, h, w)
        q, k, v = self.qkv_inter(z).reshape(b, d, 3, g, h * w).unbind(2)
        out = (_signed_sqrt_softmax(q, k, g ** -0.5) @ v).reshape(b, d, g, h, w).transpose(1, 2).reshape(b, c, h, w)
        return out + y


def with_icon(stage: nn.Module, min_groups: int, group_width: int) -> nn.Sequential:
    """A ResNet stage with an ICON module after each of its blocks but the first (authors' layout)."""
    layers: list[nn.Module] = []
    for i, block in enumerate(stage.children()):
        layers.append(block)
        if i > 0:
            channels = block.bn2.num_features if not hasattr(block, "bn3") else block.bn3.num_features
            layers.append(ICON(channels, max(channels // group_width, min_groups)))
    return nn.Sequential(*layers)


class SEMAttention(nn.Module):
    """SEM attention (Sec. 3.2): a narrowing bottleneck stack, then ``parts`` stages, each masking the next."""

    def __init__(self, channels: int, parts: int, alpha: float) -> None:
        super().__init__()
        c = channels

        def reduce(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

        self.body = nn.Sequential(Bottleneck(c, c // 4), reduce(c, c // 4), Bottleneck(c // 4, c // 16),
                                  reduce(c // 4, c // 16), Bottleneck(c // 16, c // 64))
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(c // 16, 1, 1, bias=False), nn.BatchNorm2d(1),
                                                 nn.ReLU(inplace=True)) for _ in range(parts))
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        maps = []
        for s, head in enumerate(self.heads):
            att = head(f)
            maps.append(att)
            if s + 1 < len(self.heads):
                f = f * (2.0 - sem_mask(att, self.alpha))  # suppress what this stage found, enhance the rest
        return torch.cat(maps, dim=1)


class SEMICON(HashingModel):
    """Trunk; global layer4+ICON; SEM attention; local layer4+ICON shared by the parts; ``W_G``, ``W_L``."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        cfg: SEMICONConfig = ctx.config
        self.config = cfg
        self.bits = ctx.bits
        self.num_classes = ctx.num_classes
        self.backbone = ctx.backbone()
        self.backbone.stages[3] = with_icon(self.backbone.stages[3], cfg.min_groups, cfg.group_width)
        self.local_refine = copy.deepcopy(self.backbone.stages[3])  # same initial weights, its own parameters
        self.attention = SEMAttention(self.backbone.stage_channels[2], cfg.parts, cfg.alpha)
        dim = self.backbone.out_channels
        self.split = split_bits(ctx.bits, cfg.parts)
        self.projections = nn.ModuleList(nn.Linear(dim, n, bias=False) for n in self.split)  # W_G, W_L1..W_Lparts

        labels = torch.as_tensor(ctx.train_labels, dtype=torch.long)
        self.register_buffer("train_labels", labels)
        self.dissimilar = -similar_pair_ratio(labels, ctx.num_classes)
        g = torch.Generator().manual_seed(int(ctx.seed))
        self.query_codes = CodeMemory(ctx.num_train, ctx.bits)  # U: latest u_i of every training image
        self.database_codes = CodeMemory(ctx.num_train, ctx.bits, init="sign-random", generator=g)  # V
        self.period = outer_iteration_epochs(ctx.protocol)
        # Omega: the images trained on since V's last update.  Under epoch_sample V is updated from their rows of
        # U only (the others count as zero), as ADSH's expanded U and the reference code's sampled U do
        self.sampled = int(getattr(ctx.protocol, "epoch_sample", 0)) > 0
        self.omega = CodeMemory(ctx.num_train, 1)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global feature (B, D), local features (B, parts, D), attention maps (B, parts, h, w)."""
        trunk = self.backbone.forward_stages(images, upto=3)[-1]
        global_f = self.backbone.stages[3](trunk).mean(dim=(2, 3))
        att = self.attention(trunk)
        b, m = att.shape[:2]
        local_in = (trunk.unsqueeze(1) * att.unsqueeze(2)).flatten(0, 1)  # parts batched
        local_f = self.local_refine(local_in).mean(dim=(2, 3)).reshape(b, m, -1)
        return global_f, local_f, att

    def project(self, global_f: torch.Tensor, local_f: torch.Tensor) -> torch.Tensor:
        outs = [self.projections[0](global_f)] + [p(local_f[:, s]) for s, p in enumerate(self.projections[1:])]
        return torch.cat(outs, dim=1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        global_f, local_f, _ = self.features(images)
        return self.project(global_f, local_f)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        global_f, local_f, att = self.features(images)
        return {"codes": self.project(global_f, local_f), "attention": att}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        u = torch.tanh(outputs["codes"].float())
        self.query_codes.update(batch.indices, u)
        self.omega.update(batch.indices, torch.ones(len(u), 1, device=u.device))
        v = self.database_codes.codes
        s = torch.where(batch.labels[:, None] == self.train_labels[None, :], 1.0, self.dissimilar)
        norm = u.shape[0] * v.shape[0] * self.bits / 12.0
        similarity = (u @ v.T - self.bits * s).pow(2).sum() / norm
        quantization = self.config.gamma * (v[batch.indices] - u).pow(2).sum() / norm
        return similarity + quantization, {"similarity": similarity, "quantization": quantization}

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
        protocol's ``epoch_sample`` (the authors' schedule: ``max_epoch`` epochs
        over ``num_samples`` images, then ``V``); the last epoch always ends one.
        """
        if (epoch + 1) % self.period and epoch + 1 < ctx.epochs:
            return
        before = self.database_codes.codes.clone()
        self.update_database_codes()
        self.omega.replace(torch.zeros_like(self.omega.codes))
        ctx.log("semicon/v_bits_changed", float((before != self.database_codes.codes).float().mean()))


def build(ctx: BuildContext) -> SEMICON:
    return SEMICON(ctx)


# CMBH (CVPR 2024) Table 2, SEMICON column, ResNet-50 (no gaps for SEMICON).
CMBH_TABLE2_MAP = {
    "cub": {12: 0.3776, 24: 0.6541, 32: 0.7261, 48: 0.7967},
    "aircraft": {12: 0.4987, 24: 0.7508, 32: 0.8045, 48: 0.8423},
    "food101": {12: 0.5000, 24: 0.7657, 32: 0.8019, 48: 0.8244},
    "nabirds": {12: 0.0812, 24: 0.1944, 32: 0.2826, 48: 0.4115},
    "vegfru": {12: 0.3032, 24: 0.5845, 32: 0.6992, 48: 0.7977},
}

SPEC = MethodSpec(
    name="semicon",
    summary="SEMICON: suppression-enhancing mask attention, interactive channel transformation, "
            "global + local codes, ADSH-style asymmetric hashing",
    citation="Y. Shen, X. Sun, X.-S. Wei, Q.-Y. Jiang, J. Yang. SEMICON: A Learning-to-hash Solution for "
             "Large-scale Fine-grained Image Retrieval. ECCV 2022.",
    config_cls=SEMICONConfig,
    build=build,
    paper_results=(
        PaperResult(source="CMBH paper (CVPR 2024) Table 2, SEMICON column (ResNet-50)", map=CMBH_TABLE2_MAP),
        PaperResult(
            source="CMBH paper (CVPR 2024) Table 5",
            map={},
            params_m={"resnet50@12": 42.3937, "resnet50@24": 42.3691, "resnet50@32": 42.4346,
                      "resnet50@48": 42.4676},
            flops_g={"resnet50@12": 7.0910, "resnet50@24": 7.091, "resnet50@32": 7.0911, "resnet50@48": 7.0911},
            cost_note="fgbench's profiler also counts the ICON module's matrix products, which the paper's counter leaves out",
        ),
    ),
    # The authors' schedule (aassxun/SEMICON, mirror of NJUST-VIPGroup/SEMICON: SEMICON_train.py, run.py and the
    # README's training commands, confirmed by the Namespace line of SEMICON_log/*/train.log): max_iter outer
    # iterations; each samples num_samples database images afresh (sample_dataloader), trains max_epoch = 30
    # epochs over them in batches of 16 with V fixed, then updates V (solve_dcc); MultiStepLR(lr_step) steps once
    # per outer iteration.  Per dataset (README commands): CUB, Aircraft 40 x 2000, lr 2.5e-4, lr-step 40 (no
    # decay inside the run); Food101 50 x 2000, lr 2.5e-4, step 45; VegFru, NABirds 50 x 4000, lr 5e-4, step 45.
    # Expressed with ADSH-style sampling: epoch_sample = num_samples, resample_every = 30, epochs = max_iter x 30,
    # milestones = lr_step x 30 (README, "Schedule").  SGD momentum 0.91, weight decay 1e-4.  Input: 224 crops, query
    # and database Resize(256) + CenterCrop(224) (the authors' data/transform.py).
    paper_recipe={
        "default": {"backbone": "resnet50", "weights": "imagenet", "input_size": 224, "resize_size": 256,
                    "train_crop": "random-resized", "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3),
                    "flip_p": 0.5, "imagenet_weights": "imagenet1k_v1",
                    "optimizer": "sgd", "lr": 2.5e-4, "backbone_lr_mult": 1.0,
                    "momentum": 0.91, "weight_decay": 1e-4, "schedule": "constant",
                    "epoch_sample": 2000, "resample_every": 30, "epochs": 40 * 30, "batch_size": 16},
        "food101": {"epochs": 50 * 30, "schedule": "step", "milestones": (45 * 30,)},
        "vegfru": {"lr": 5e-4, "epoch_sample": 4000, "epochs": 50 * 30, "schedule": "step",
                   "milestones": (45 * 30,)},
        "nabirds": {"lr": 5e-4, "epoch_sample": 4000, "epochs": 50 * 30, "schedule": "step",
                    "milestones": (45 * 30,)},
    },
    paper_recipe_sources={
        "backbone": "SEMICON / CMBH Table 5 (ResNet-50)",
        "backbone_lr_mult": "authors' SEMICON_train.py (one SGD lr for all parameters)",
        "batch_size": "authors' README commands and SEMICON_log Namespace (--batch-size 16, every dataset)",
        "epoch_sample": "authors' README commands (--num-samples 2000; VegFru, NABirds 4000) and SEMICON_log Namespace",
        "resample_every": "authors' README commands (--max-epoch 30 epochs per outer iteration, every dataset)",
        "epochs": "authors' README commands (--max-iter 40 outer iterations = 1,200 epochs; Food101, VegFru, "
                  "NABirds 50 = 1,500) and SEMICON_log Namespace",
        "flip_p": "authors' data/transform.py (train_transform: RandomHorizontalFlip)",
        "imagenet_weights": "torchvision pretrained=True of the authors' code = V1",
        "input_size": "authors' data/transform.py (224 crops)",
        "lr": "authors' README commands (--lr 2.5e-4; VegFru, NABirds 5e-4; SEMICON_log NAbirds [12] logged 2.5e-4, "
              "its [24, 32] and [48] 5e-4)",
        "milestones": "authors' README commands (--lr-step 45 of 50 outer iterations = epoch 1,350; MultiStepLR "
                      "stepped once per outer iteration in SEMICON_train.py)",
        "momentum": "authors' README commands (--momen 0.91)",
        "optimizer": "authors' README commands (--optim SGD)",
        "resize_size": "authors' data/transform.py (query_transform: Resize(256) + CenterCrop(224))",
        "schedule": "authors' README commands (CUB, Aircraft --lr-step 40 of 40 outer iterations: no decay in the "
                    "run; Food101, VegFru, NABirds lr / 10 after 45 of 50)",
        "train_crop": "authors' data/transform.py (train_transform: RandomResizedCrop(224) on the image as read)",
        "crop_scale": "authors' data/transform.py (RandomResizedCrop(224): torchvision's default scale 0.08-1)",
        "crop_ratio": "authors' data/transform.py (RandomResizedCrop(224): torchvision's default ratio 3/4-4/3)",
        "weight_decay": "authors' README commands (--wd 1e-4)",
        "weights": "SEMICON (ImageNet-pretrained ResNet-50)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
