"""DPSH plugin: shapes, the pairwise likelihood against a direct formula, memory, learning."""

from __future__ import annotations

import math

import pytest
import torch

import fgbench_dpsh
from fgbench.testing import build_context, random_batch, train_steps


@pytest.mark.parametrize("bits", [12, 24, 32, 48])
def test_encode_shape(bits: int) -> None:
    model = fgbench_dpsh.build(build_context(fgbench_dpsh.SPEC, bits=bits, input_size=32))
    model.eval()
    assert model.encode(torch.randn(3, 3, 32, 32)).shape == (3, bits)


def test_loss_matches_paper_objective() -> None:
    ctx = build_context(fgbench_dpsh.SPEC, bits=8, num_train=6, num_classes=3, input_size=32)
    model = fgbench_dpsh.build(ctx)
    model.memory.codes.copy_(torch.randn(6, 8))
    batch = random_batch(ctx, batch_size=2)
    u = torch.randn(2, 8)
    loss, parts = model.loss(u, batch)
    memory = model.memory.codes  # already holds u at the batch's rows
    total = 0.0
    for a in range(2):
        for j in range(6):
            theta = 0.5 * float(u[a] @ memory[j])
            s = float(batch.labels[a] == int(ctx.train_labels[j]))
            total += -(s * theta - math.log1p(math.exp(theta)))
    quant = float((torch.sign(u) - u).pow(2).sum())
    assert float(loss) == pytest.approx((total + 10.0 * quant) / 12, rel=1e-5)
    assert torch.equal(model.memory.codes[batch.indices], u)


def test_loss_decreases_on_a_fixed_batch() -> None:
    ctx = build_context(fgbench_dpsh.SPEC, bits=12, num_train=8, num_classes=2, input_size=32)
    model = fgbench_dpsh.build(ctx)
    losses = train_steps(model, random_batch(ctx, batch_size=8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_config_defaults_and_overrides() -> None:
    assert fgbench_dpsh.SPEC.make_config().eta == 10.0
    assert fgbench_dpsh.SPEC.make_config({"eta": "2.5"}).eta == 2.5
