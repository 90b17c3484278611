"""DPSH — Li, Wang, Kang, "Feature Learning based Deep Supervised Hashing with
Pairwise Labels", IJCAI 2016.

Model (Sec. 3.2): a CNN feature ``phi(x)`` (here the protocol's backbone with
global average pooling, in place of CNN-F) and a linear hash layer
``u_i = W^T phi(x_i) + v``; at inference ``b_i = sign(u_i)``.

Objective (Eq. 4, the relaxed form the paper optimises)::

    J = - sum_{s_ij in S} ( s_ij * Theta_ij - log(1 + e^{Theta_ij}) )
        + eta * sum_i || b_i - u_i ||^2 ,      Theta_ij = 1/2 u_i^T u_j

with ``b_i = sign(u_i)``.  As in the authors' released code, the pairs of a
mini-batch are taken against a memory ``U`` of the whole training set's
latest ``u`` (updated with each batch), and the objective is divided by
``batch x num_train``.  ``eta = 10`` is the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fgbench import Batch, BuildContext, CodeMemory, HashingModel, MethodSpec, hookimpl

FGBENCH_API_VERSION = 1


@dataclass(frozen=True)
class DPSHConfig:
    """DPSH hyper-parameters (paper defaults).

    eta: weight of the quantization term ``||b - u||^2`` of Eq. 4 (the
        paper's setting, eta = 10; the authors' PyTorch code runs its
        CIFAR-10 script with lambda = 50, see README).
    """

    eta: float = 10.0


class DPSH(HashingModel):
    """Backbone -> global average pool -> linear hash layer ``u`` (Sec. 3.2)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        self.bits = ctx.bits
        self.config: DPSHConfig = ctx.config
        self.backbone = ctx.backbone()
        self.hash_layer = nn.Linear(self.backbone.out_channels, ctx.bits)
        self.memory = CodeMemory(ctx.num_train, ctx.bits)
        self.register_buffer("train_labels", torch.as_tensor(ctx.train_labels, dtype=torch.long))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(images)
        return self.hash_layer(torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def loss(self, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        u = u.float()
        self.memory.update(batch.indices, u)
        memory = self.memory.codes
        similar = (batch.labels[:, None] == self.train_labels[None, :]).float()
        theta = 0.5 * u @ memory.T
        # -(s*theta - log(1+e^theta)) = softplus(theta) - s*theta, numerically stable
        likelihood = (F.softplus(theta) - similar * theta).sum()
        quantization = (torch.sign(u).detach() - u).pow(2).sum()
        norm = u.shape[0] * memory.shape[0]
        loss = (likelihood + self.config.eta * quantization) / norm
        return loss, {"likelihood": likelihood / norm, "quantization": quantization / norm}


def build(ctx: BuildContext) -> DPSH:
    return DPSH(ctx)


SPEC = MethodSpec(
    name="dpsh",
    summary="Deep pairwise-supervised hashing: pairwise likelihood + quantization (baseline)",
    citation="W.-J. Li, S. Wang, W.-C. Kang. Feature Learning based Deep Supervised Hashing with Pairwise Labels. "
             "IJCAI 2016.",
    config_cls=DPSHConfig,
    build=build,
    # The paper (Sec. 4) trains CNN-F (VGG-F) with mini-batch SGD, batch 128; the rest of the schedule is the
    # authors' PyTorch code (jiangqy/DPSH-pytorch, DPSH_CIFAR_10.py): SGD without momentum, lr 0.05 for every
    # layer, weight decay 1e-5, 150 epochs, lr / 10 every 50 epochs.  The backbone stays the protocol's
    # (CNN-F is not in torchvision; the authors' PyTorch code replaces it too, by AlexNet / VGG-11).
    # Pipeline: the paper describes no augmentation; the PyTorch code of the paper's group (jiangqy/DPSH-pytorch,
    # DPSH_CIFAR_10.py) uses one transform for training and evaluation, Resize(256) (short side) +
    # CenterCrop(224), no flip.  ImageNet weights: that code uses torchvision pretrained=True models = V1 (the
    # paper's CNN-F is replaced by the protocol's backbone).
    paper_recipe={"default": {"optimizer": "sgd", "momentum": 0.0, "lr": 0.05, "backbone_lr_mult": 1.0,
                              "weight_decay": 1e-5, "batch_size": 128, "epochs": 150, "schedule": "step",
                              "milestones": (50, 100),
                              "input_size": 224, "resize_size": 256, "resize_shape": "short-side",
                              "train_crop": "center", "flip_p": 0.0, "rotation": 0.0,
                              "color_jitter": (0.0, 0.0, 0.0, 0.0), "imagenet_weights": "imagenet1k_v1"}},
    paper_recipe_sources={
        "optimizer": "Sec. 4 (mini-batch SGD); authors' code DPSH_CIFAR_10.py (optim.SGD)",
        "momentum": "authors' code DPSH_CIFAR_10.py (optim.SGD without momentum)",
        "lr": "authors' code DPSH_CIFAR_10.py (learning_rate = 0.05)",
        "backbone_lr_mult": "authors' code DPSH_CIFAR_10.py (one learning rate for all parameters)",
        "weight_decay": "authors' code DPSH_CIFAR_10.py (weight_decay = 1e-5)",
        "batch_size": "Sec. 4 (mini-batch size 128); authors' code (batch_size = 128)",
        "epochs": "authors' code DPSH_CIFAR_10.py (epochs = 150)",
        "schedule": "authors' code DPSH_CIFAR_10.py (AdjustLearningRate: lr * 0.1 ** (epoch // 50))",
        "milestones": "authors' code DPSH_CIFAR_10.py (lr / 10 after epochs 50 and 100)",
        "input_size": "authors' group's code DPSH-pytorch (CenterCrop(224))",
        "resize_size": "authors' group's code DPSH-pytorch (Scale(256))",
        "resize_shape": "authors' group's code DPSH-pytorch (Scale(256): short side)",
        "train_crop": "authors' group's code DPSH-pytorch (the same CenterCrop for training; the paper lists no augmentation)",
        "flip_p": "authors' group's code DPSH-pytorch (no flip)",
        "rotation": "authors' group's code DPSH-pytorch (no rotation)",
        "color_jitter": "authors' group's code DPSH-pytorch (no colour jitter)",
        "imagenet_weights": "authors' group's code DPSH-pytorch (torchvision pretrained=True = V1)",
    },
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
