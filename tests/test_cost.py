"""Params/FLOPs of the encode path against well-known counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fgbench.metrics.cost import encode_cost


class Wrapped(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.unused_head = nn.Linear(1000, 5000)  # training-only: must not be counted

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("factory, params_m, flops_g", [
    (torchvision.models.resnet18, 11.69, 1.82),
    (torchvision.models.resnet50, 25.56, 4.09),
])
def test_resnet_counts_at_224(factory, params_m, flops_g) -> None:  # type: ignore[no-untyped-def]
    cost = encode_cost(Wrapped(factory()), 224)
    assert cost.params_m == pytest.approx(params_m, abs=0.01)
    assert cost.flops_g == pytest.approx(flops_g, abs=0.01)  # MACs, the papers' "FLOPs"


def test_flops_scale_with_input_and_model_is_restored() -> None:
    model = Wrapped(torchvision.models.resnet18())
    model.train()
    small = encode_cost(model, 112)
    assert model.training
    assert small.flops_g == pytest.approx(encode_cost(model, 224).flops_g / 4, rel=0.08)  # conv cost ~ area; the fc layer does not scale
    assert all(p.grad is None for p in model.parameters())


class WithBareParameter(nn.Module):
    """A parameter held by the model beside its layers (like CMBH's C-vectors), one unused."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 4)
        self.centres = nn.Parameter(torch.randn(5, 4))
        self.unused = nn.Parameter(torch.randn(7))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.mean(dim=(2, 3))) @ self.centres.T


def test_bare_parameters_are_counted_and_named_apart() -> None:
    cost = encode_cost(WithBareParameter(), 8)
    assert cost.params_m * 1e6 == pytest.approx(3 * 4 + 4 + 5 * 4)   # every used parameter, the unused one not
    assert cost.bare_params == (("centres", 20),)
    assert cost.layer_params_m * 1e6 == pytest.approx(16)            # what a leaf-module counter sees
