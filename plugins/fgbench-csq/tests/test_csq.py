"""CSQ plugin: hash centres (Sec. 3.2), the losses of Eqs. 7-8, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fgbench_csq as csq
from fgbench.testing import build_context, random_batch, train_steps


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _distances(c: torch.Tensor) -> np.ndarray:
    d = (c.shape[1] - c @ c.T).numpy() / 2
    return d[np.triu_indices(len(c), 1)]


@pytest.mark.parametrize("bits,classes", [(16, 20), (32, 64), (64, 100)])
def test_hadamard_centres_are_at_least_half_the_bits_apart(bits: int, classes: int) -> None:
    c = csq.hash_centers(classes, bits)
    assert c.shape == (classes, bits)
    assert _distances(c).min() >= bits / 2


@pytest.mark.parametrize("bits,classes", [(12, 12), (24, 200), (48, 200)])
def test_bernoulli_centres_are_balanced_distinct_and_seeded(bits: int, classes: int) -> None:
    c = csq.hash_centers(classes, bits, seed=3)
    assert set(c.unique().tolist()) == {-1.0, 1.0}
    assert torch.all(c.sum(dim=1) == 0)  # K/2 bits at -1 in each centre
    assert _distances(c).min() > 0
    assert torch.equal(c, csq.hash_centers(classes, bits, seed=3))
    assert not torch.equal(c, csq.hash_centers(classes, bits, seed=4))


def test_central_loss_is_bce_and_quantization_is_log_cosh() -> None:
    torch.manual_seed(0)
    h = torch.tanh(torch.randn(5, 8))
    centers = torch.where(torch.randn(5, 8) > 0, 1.0, -1.0)
    p, t = ((h + 1) / 2).numpy(), ((centers + 1) / 2).numpy()
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert float(csq.central_similarity_loss(h, centers)) == pytest.approx(bce, rel=1e-5)
    q = np.log(np.cosh(np.abs(h.numpy()) - 1)).sum(axis=1).mean()
    assert float(csq.quantization_loss(h)) == pytest.approx(q, rel=1e-5)


def test_targets_are_the_class_centres() -> None:
    ctx = build_context(csq.SPEC, bits=16, num_classes=4, num_train=8, input_size=32)
    model = csq.build(ctx)
    batch = random_batch(ctx, batch_size=4)
    _, parts = model.loss(model.centers[batch.labels] * 0.999, batch)
    assert float(parts["central"]) < 0.01  # codes at their own centres: near-zero central loss


def test_loss_decreases_on_a_fixed_batch() -> None:
    ctx = build_context(csq.SPEC, bits=12, num_train=8, num_classes=2, input_size=32)
    model = csq.build(ctx)
    losses = train_steps(model, random_batch(ctx, batch_size=8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
