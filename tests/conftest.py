"""Shared fixtures: a toy method and a tiny embedded dataset registered as plugins."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgbench
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded


@dataclass(frozen=True)
class ToyConfig:
    """Config of the toy method used by harness tests."""

    margin: float = 0.5


class ToyHasher(fgbench.HashingModel):
    """Backbone -> pooled features -> linear codes, trained with CE on a code-space classifier."""

    def __init__(self, ctx: fgbench.BuildContext) -> None:
        super().__init__()
        self.bits = ctx.bits
        self.backbone = ctx.backbone()
        self.hash = nn.Linear(self.backbone.out_channels, ctx.bits)
        self.classifier = nn.Linear(ctx.bits, ctx.num_classes)
        self.epochs_seen: list[int] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.hash(F.adaptive_avg_pool2d(self.backbone(images), 1).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.encode(images)))

    def loss(self, logits, batch):  # type: ignore[no-untyped-def]
        loss = F.cross_entropy(logits.float(), batch.labels)
        return loss, {"ce": loss}

    def on_epoch_end(self, epoch, ctx):  # type: ignore[no-untyped-def]
        self.epochs_seen.append(epoch)


TOY_SPEC = fgbench.MethodSpec(name="toy", summary="toy method for harness tests", citation="none",
                              config_cls=ToyConfig, build=ToyHasher)


@pytest.fixture
def toy_host():  # type: ignore[no-untyped-def]
    """A host with the built-ins, the toy method and a tiny embedded dataset named 'tiny'."""
    with registered_plugin(spec_plugin("toy-plugin", methods=[TOY_SPEC], datasets=[tiny_embedded()])) as host:
        yield host
