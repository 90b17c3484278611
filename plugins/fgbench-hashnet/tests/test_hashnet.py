"""HashNet plugin: the weighted likelihood against a direct loop over pairs, continuation, learning."""

from __future__ import annotations

import math

import pytest
import torch

import fgbench_hashnet as hn
from fgbench.testing import build_context, random_batch, train_steps


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("bits", [12, 48])
def test_encode_shape_and_range(bits: int) -> None:
    model = hn.build(build_context(hn.SPEC, bits=bits, input_size=32))
    model.eval()
    with torch.no_grad():
        h = model.encode(torch.randn(3, 3, 32, 32))
    assert h.shape == (3, bits)
    assert float(h.abs().max()) < 1.0


def test_weighted_likelihood_matches_eqs_4_and_5_pair_by_pair() -> None:
    torch.manual_seed(0)
    h = torch.tanh(torch.randn(6, 8))
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    alpha = 10.0 / 8
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    n_sim = sum(1 for i, j in pairs if labels[i] == labels[j])
    n_dis = len(pairs) - n_sim
    total = 0.0
    for i, j in pairs:
        theta = alpha * float(h[i] @ h[j])
        s = float(labels[i] == labels[j])
        w = len(pairs) / (n_sim if s else n_dis)
        total += w * (math.log1p(math.exp(theta)) - s * theta)
    expected = total / len(pairs)
    assert float(hn.weighted_pair_likelihood(h, labels, alpha)) == pytest.approx(expected, rel=1e-5)


def test_similar_and_dissimilar_pairs_weigh_the_same_in_total() -> None:
    """Eq. 5: with every theta equal, the loss is the mean of the similar and the dissimilar terms."""
    h = torch.zeros(5, 4)  # theta = 0 everywhere: each pair's term is log 2
    labels = torch.tensor([0, 0, 1, 2, 3])
    assert float(hn.weighted_pair_likelihood(h, labels, 1.0)) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_a_batch_without_pairs_gives_zero_with_a_gradient_path() -> None:
    h = torch.randn(1, 4, requires_grad=True)
    loss = hn.weighted_pair_likelihood(h, torch.tensor([0]), 1.0)
    loss.backward()
    assert float(loss) == 0.0


def test_continuation_grows_beta_stepwise_and_survives_a_checkpoint() -> None:
    cfg = hn.HashNetConfig()
    betas = [hn.continuation_beta(t, cfg) for t in (0, 199, 200, 399, 400, 10_000)]
    assert betas[0] == betas[1] == 1.0
    assert betas[1] < betas[2] == betas[3] < betas[4] < betas[5]
    assert betas[2] == pytest.approx(math.sqrt(1 + 0.005 * 200))
    ctx = build_context(hn.SPEC, bits=8, input_size=32, config=hn.SPEC.make_config({"beta_step": 1}))
    model = hn.build(ctx)
    model.train()
    train_steps(model, random_batch(ctx, batch_size=4), steps=3)
    assert int(model.iteration) == 3
    again = hn.build(ctx)
    again.load_state_dict(model.state_dict())
    assert again.beta == model.beta > 1.0


def test_loss_decreases_on_a_fixed_batch() -> None:
    ctx = build_context(hn.SPEC, bits=12, num_train=8, num_classes=2, input_size=32)
    model = hn.build(ctx)
    losses = train_steps(model, random_batch(ctx, batch_size=8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_paper_numbers_are_fractions_with_a_source() -> None:
    [result] = hn.SPEC.paper_results
    assert "Table 3" in result.source
    assert all(0 < v < 1 for row in result.map.values() for v in row.values())
