"""Optimizer and learning-rate schedule as fixed by the protocol."""

from __future__ import annotations

import math

import torch
from torch import nn

from fgbench.backbones import Backbone
from fgbench.methods import HashingModel
from fgbench.protocol import Protocol


def default_param_groups(model: nn.Module, protocol: Protocol) -> list[dict]:
    """Backbone parameters at ``lr * backbone_lr_mult``, everything else at ``lr``."""
    backbone_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, Backbone):
            backbone_ids.update(id(p) for p in module.parameters())
    backbone = [p for p in model.parameters() if id(p) in backbone_ids and p.requires_grad]
    head = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    groups = [{"params": head, "lr": protocol.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": protocol.lr * protocol.backbone_lr_mult})
    return [g for g in groups if g["params"]]


def build_optimizer(model: HashingModel, protocol: Protocol, fused: bool = False) -> torch.optim.Optimizer:
    """The protocol's optimizer over the method's parameter groups.

    ``fused``: one fused kernel per step for all parameters (CUDA; same
    update rule, far fewer kernel launches than the per-tensor loop).
    """
    if fused:
        try:
            return _build_optimizer(model, protocol, {"fused": True})
        except (RuntimeError, TypeError, ValueError):  # older torch, or parameters a fused kernel cannot take
            pass
    return _build_optimizer(model, protocol, {})


def _build_optimizer(model: HashingModel, protocol: Protocol, extra: dict) -> torch.optim.Optimizer:
    groups = model.param_groups(protocol.lr) or default_param_groups(model, protocol)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay,
                               **extra)
    if protocol.optimizer == "adam":
        return torch.optim.Adam(groups, lr=protocol.lr, weight_decay=protocol.weight_decay, **extra)
    if protocol.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=protocol.lr, weight_decay=protocol.weight_decay, **extra)
    raise ValueError(f"protocol optimizer {protocol.optimizer!r}: use sgd, adam or adamw")


def lr_factor(protocol: Protocol, epoch: int) -> float:
    """Multiplier of the base learning rates at ``epoch`` (0-based, per-epoch schedule)."""
    if protocol.warmup_epochs and epoch < protocol.warmup_epochs:
        return (epoch + 1) / (protocol.warmup_epochs + 1)
    if protocol.schedule == "cosine":
        span = max(protocol.epochs - protocol.warmup_epochs, 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - protocol.warmup_epochs) / span))
    if protocol.schedule == "step":
        return 0.1 ** sum(epoch >= m for m in protocol.milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, protocol: Protocol) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(protocol, e))
