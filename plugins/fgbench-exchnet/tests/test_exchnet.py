"""ExchNet plugin tests (CPU, random init, small inputs)."""

from __future__ import annotations

import dataclasses
import math

import fgbench_exchnet as exchnet
import pytest
import torch

from fgbench import STANDARD_BITS, TrainContext
from fgbench.testing import (
    autocast_loss,
    build_context,
    random_batch,
    registered_plugin,
    train_context,
    train_on_tiny_embedded,
    train_steps,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models run faster, and far more steadily on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(bits: int = 12, num_train: int = 16, **config):
    ctx = build_context(exchnet.SPEC, bits=bits, num_classes=4, num_train=num_train, input_size=32,
                        config=exchnet.SPEC.make_config(config))
    return ctx, exchnet.build(ctx)


def _train_context(ctx, logs: list) -> TrainContext:
    return train_context(ctx, epochs=2, log=lambda name, value: logs.append((name, value)))


def _similarity_matrix(model) -> torch.Tensor:
    """The explicit n x n ``S`` of the training set (1 same class, the model's dissimilar value otherwise)."""
    same = model.train_labels[:, None] == model.train_labels[None, :]
    return torch.where(same, 1.0, model.dissimilar_value)


def _adsh_objective(model) -> float:
    """ADSH objective over the whole training set with U = the query-code memory (for the V-step test)."""
    u, v = model.query_codes.codes, model.database_codes.codes
    s = _similarity_matrix(model)
    return float(((u @ v.T - model.bits * s) ** 2).sum() + model.config.gamma * ((v - u) ** 2).sum())


def _dcc_reference(u: torch.Tensor, v: torch.Tensor, s: torch.Tensor, bits: int, gamma: float) -> torch.Tensor:
    """ADSH's bit-wise V update written with the explicit matrix ``S`` (no class-sum shortcut)."""
    v = v.clone()
    q = bits * s.T @ u + gamma * u
    for k in range(bits):
        rest = [j for j in range(bits) if j != k]
        v[:, k] = torch.sign(q[:, k] - v[:, rest] @ u[:, rest].T @ u[:, k])
    return v


def test_registers_with_cited_numbers():
    with registered_plugin(exchnet) as host:
        spec = host.registry.methods.get("exchnet")
    spec.validate()
    assert [spec.paper_map("cub", b) for b in STANDARD_BITS] == pytest.approx([0.2514, 0.5898, 0.6774, 0.7105])
    assert "CNET" in spec.paper_results[0].source


@pytest.mark.parametrize("bits", STANDARD_BITS)
def test_shapes_every_bit_length(bits):
    torch.manual_seed(0)
    ctx, model = _model(bits)
    batch = random_batch(ctx, batch_size=4)
    model.train()
    out = model(batch.images)
    parts, dim = model.config.parts, model.backbone.out_channels
    assert out["local"].shape == (4, parts, dim) and out["global"].shape == (4, dim)
    assert out["maps"].shape[:3] == (4, parts, dim)
    loss, terms = model.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(terms) == {"similarity", "quantization", "spatial", "channel"}
    model.eval()
    codes = model.encode(batch.images)
    assert codes.shape == (4, bits) and torch.isfinite(codes).all()


def test_exchange_keeps_shapes_and_swaps_only_within_a_class():
    torch.manual_seed(0)
    b, m, d, classes = 64, 4, 5, 3
    local = torch.randn(b, m, d)
    labels = torch.randint(0, classes, (b,))
    anchors = 100.0 + torch.arange(classes * m * d, dtype=torch.float).view(classes, m, d)
    keep = torch.rand(b, m) >= 0.5
    out = exchnet.exchange_features(local, labels, anchors, keep)
    assert out.shape == local.shape
    for i in range(b):
        for j in range(m):
            if keep[i, j]:
                assert torch.equal(out[i, j], local[i, j])
            else:  # the same part of the anchor of the sample's own class, never another class's
                assert torch.equal(out[i, j], anchors[labels[i], j])
    assert 0 < int((~keep).sum()) < b * m


def test_exchange_in_the_model_starts_once_anchors_exist():
    torch.manual_seed(0)
    ctx, model = _model(anchors="batches", exchange_from=0.0)
    batch = random_batch(ctx, batch_size=8)
    model.train()
    logs: list = []
    out = model(batch.images)
    model.loss(out, batch)
    u_no_exchange = model.query_codes.codes[batch.indices].clone()
    # the anchors are the class means of this epoch's local features
    expected = torch.zeros_like(model.anchors)
    for c in batch.labels.unique():
        expected[c] = out["local"].detach()[batch.labels == c].mean(0)
    model.on_epoch_end(0, _train_context(ctx, logs))
    seen = batch.labels.unique()
    torch.testing.assert_close(model.anchors[seen], expected[seen])
    assert int(model.epoch) == 1 and model.anchor_stats.counts.sum() == 0
    torch.manual_seed(1)
    model.loss(out, batch)  # same features, now with exchange
    assert not torch.allclose(model.query_codes.codes[batch.indices], u_no_exchange)
    model.eval()  # no exchange at inference: encode is deterministic
    torch.testing.assert_close(model.encode(batch.images), model.encode(batch.images))


def test_eval_pass_anchors_are_class_means_of_part_features_over_the_training_split():
    """anchors="eval-pass": C_y^j = class mean of f^j over the whole training split in eval mode (the reference's
    evaluation pass), not over the training batches the outer iteration saw."""
    torch.manual_seed(0)
    ctx, model = _model(num_train=12, anchors="eval-pass", exchange_from=0.0)
    batch = random_batch(ctx, batch_size=8)
    model.train()
    model.loss(model(batch.images), batch)  # a training batch: must not feed the anchors
    assert model.anchor_stats.counts.sum() == 0
    tctx = train_context(ctx, epochs=2, model=model)
    model.on_epoch_end(0, tctx)
    assert model.training  # mode restored after the pass
    model.eval()
    with torch.no_grad():
        local = model.features(tctx.map_train(lambda images: images))[0]  # the context's training images
    labels = torch.as_tensor(ctx.train_labels)
    expected = torch.stack([local[labels == c].mean(0) for c in range(ctx.num_classes)])
    torch.testing.assert_close(model.anchors, expected)
    assert int(model.epoch) == 1


def test_eval_pass_is_skipped_after_the_last_epoch_and_batches_mode_never_runs_it():
    calls: list[int] = []
    for anchors, epoch, expected_calls in (("eval-pass", 1, 0), ("eval-pass", 0, 1), ("batches", 0, 0)):
        ctx, model = _model(anchors=anchors, exchange_from=0.0)
        tctx = train_context(ctx, epochs=2, model=model)
        counting = dataclasses.replace(tctx, map_train=lambda fn, t=tctx: calls.append(1) or t.map_train(fn))
        calls.clear()
        model.on_epoch_end(epoch, counting)
        assert len(calls) == expected_calls, (anchors, epoch)


def test_bad_anchors_value_is_a_one_line_error():
    with pytest.raises(ValueError, match="exchnet.anchors 'eval'.*batches, eval-pass") as info:
        exchnet.SPEC.make_config({"anchors": "eval"})
    assert "\n" not in str(info.value)


def test_hellinger_diversity_bounds():
    same = torch.full((2, 3, 4), 0.25)
    torch.testing.assert_close(exchnet.hellinger_diversity(same), torch.zeros(2))
    disjoint = torch.eye(3)[None].repeat(2, 1, 1)  # three point masses on different positions
    torch.testing.assert_close(exchnet.hellinger_diversity(disjoint), torch.ones(2))


@pytest.mark.parametrize("soft", [True, False])
def test_database_codes_step_lowers_the_adsh_objective(soft):
    torch.manual_seed(0)
    ctx, model = _model(bits=24, num_train=16, soft_similarity=soft)
    model.query_codes.replace(torch.tanh(torch.randn(16, 24)))
    before_v = model.database_codes.codes.clone()
    before = _adsh_objective(model)
    logs: list = []
    model.on_epoch_end(0, _train_context(ctx, logs))
    assert _adsh_objective(model) < before
    v = model.database_codes.codes
    assert set(v.unique().tolist()) <= {-1.0, 1.0} and not torch.equal(v, before_v)
    assert logs[0][0] == "exchnet/v_bits_changed"


@pytest.mark.parametrize("soft", [True, False])
def test_database_codes_step_matches_the_explicit_similarity_matrix(soft):
    torch.manual_seed(1)
    ctx, model = _model(bits=12, num_train=20, soft_similarity=soft)
    u = torch.tanh(2.0 * torch.randn(20, 12))
    model.query_codes.replace(u)
    expected = _dcc_reference(u, model.database_codes.codes, _similarity_matrix(model), 12, model.config.gamma)
    model.update_database_codes()
    torch.testing.assert_close(model.database_codes.codes, expected)


def test_soft_similarity_rows_sum_to_zero_and_hard_is_adsh():
    """Soft S sums to zero, so a direction shared by every relaxed code adds nothing to S^T U (the
    collapse seen with ADSH's S on the embedded dataset); hard S is ADSH's {-1, +1}."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    soft = exchnet.dissimilar_similarity(labels, 4, soft=True)
    same = labels[:, None] == labels[None, :]
    s = torch.where(same, 1.0, torch.tensor(soft, dtype=torch.float64))
    assert s.sum().item() == pytest.approx(0.0, abs=1e-9)
    assert soft == pytest.approx(-(9 + 4 + 16 + 1) / (100 - 30))
    assert exchnet.dissimilar_similarity(labels, 4, soft=False) == -1.0


def test_loss_decreases_training_through_the_harness_on_the_embedded_dataset():
    torch.manual_seed(0)
    model, losses = train_on_tiny_embedded(exchnet.SPEC, epochs=3, bits=12)
    totals = [epoch["loss"] for epoch in losses]
    assert len(totals) == 3 and all(math.isfinite(t) for t in totals)
    assert totals[-1] < totals[0]
    assert int(model.epoch) == 3  # on_epoch_end ran after every epoch: anchors and V refreshed
    assert (model.anchors.abs().sum(dim=(1, 2)) > 0).all()


def test_database_codes_are_not_the_encoder():
    torch.manual_seed(0)
    ctx, model = _model()
    images = random_batch(ctx, batch_size=2).images
    model.eval()
    codes = model.encode(images)
    model.database_codes.replace(-model.database_codes.codes)
    torch.testing.assert_close(model.encode(images), codes)


@pytest.mark.parametrize("config", [{}, {"exchange_from": 0.0}, {"gamma": 200.0, "anchors": "batches"}])
def test_loss_finite_and_decreasing_on_a_fixed_batch(config):
    torch.manual_seed(0)
    ctx, model = _model(**config)
    batch = random_batch(ctx, batch_size=8)
    losses = train_steps(model, batch, steps=5, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_losses_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    ctx, model = _model()
    batch = random_batch(ctx, batch_size=4)
    loss, terms = autocast_loss(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(v.dtype == torch.float32 for v in terms.values())


def _sampled_model(every: int = 2):
    """An ExchNet under ADSH-style sampling (protocol epoch_sample > 0, resample_every = ``every``)."""
    import dataclasses

    ctx = build_context(exchnet.SPEC, bits=8, num_classes=4, num_train=16, input_size=32,
                        config=exchnet.SPEC.make_config({"anchors": "batches"}))
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epoch_sample=8, resample_every=every))
    return ctx, exchnet.build(ctx)


def test_sampled_schedule_updates_v_and_anchors_once_per_outer_iteration():
    torch.manual_seed(0)
    ctx, model = _sampled_model(every=2)
    batch = random_batch(ctx, batch_size=8)
    model.train()
    model.loss(model(batch.images), batch)
    v0 = model.database_codes.codes.clone()
    tctx = train_context(ctx, epochs=4)
    model.on_epoch_end(0, tctx)  # mid outer iteration: nothing changes
    assert torch.equal(model.database_codes.codes, v0) and int(model.epoch) == 0
    assert model.anchor_stats.counts.sum() > 0
    model.on_epoch_end(1, tctx)  # end of outer iteration 0
    assert int(model.epoch) == 1 and model.anchor_stats.counts.sum() == 0 and model.omega.codes.sum() == 0


def test_sampled_v_update_uses_only_the_sampled_rows_of_u():
    """ADSH's Omega: rows of U not trained on since the last update count as zero (the expanded U of ADSH)."""
    torch.manual_seed(0)
    ctx, model = _sampled_model()
    batch = random_batch(ctx, batch_size=6)
    model.train()
    model.loss(model(batch.images), batch)
    others = torch.ones(16, dtype=torch.bool)
    others[batch.indices] = False
    u = model.query_codes.codes.clone()
    u[others] = 0.0
    model.query_codes.codes[others] = 0.9  # stale codes of images outside this outer iteration: ignored
    expected = _dcc_reference(u, model.database_codes.codes, _similarity_matrix(model), model.bits,
                              model.config.gamma)
    model.update_database_codes()
    torch.testing.assert_close(model.database_codes.codes, expected)


def test_reference_scaling_is_12_over_k():
    torch.manual_seed(0)
    ctx, plain = _model(bits=24, reference_scaling=False, gamma=200.0)  # gamma > 0: both terms are non-zero
    _, scaled = _model(bits=24, reference_scaling=True, gamma=200.0)
    scaled.load_state_dict(plain.state_dict())
    batch = random_batch(ctx, batch_size=4)
    plain.eval(), scaled.eval()  # no exchange: the same u in both
    out = plain(batch.images)
    _, parts = plain.loss(out, batch)
    _, scaled_parts = scaled.loss(out, batch)
    for key in ("similarity", "quantization"):
        torch.testing.assert_close(scaled_parts[key], parts[key] * 12 / 24)
    torch.testing.assert_close(scaled_parts["spatial"], parts["spatial"])


def test_paper_recipe_matches_the_reference_step_count():
    """aassxun/DSH_Analysis adsh_exchnet.py: 40 outer iterations x 30 epochs x 2,000 images / batch 16."""
    from fgbench.protocol import resolve_protocol

    p = resolve_protocol("paper", {}, exchnet.SPEC.paper_recipe, "cub")
    steps = p.epochs * (p.epoch_sample // p.batch_size)
    assert (p.epochs // p.resample_every, p.resample_every, p.epoch_sample, p.batch_size) == (40, 30, 2000, 16)
    assert steps == 150_000 and p.milestones == (35 * 30,)


@pytest.mark.parametrize("epochs, every, fraction, start", [(12, 1, 0.875, 10), (1200, 30, 0.875, 35),
                                                             (40, 1, 0.875, 35), (12, 1, 0.0, 1), (6, 1, 1.0, 6)])
def test_exchange_starts_at_the_fraction_of_the_outer_iterations(epochs, every, fraction, start):
    """exchange_from = 0.875: the reference's align_step 35 of max_iter 40 outer iterations, for any schedule."""
    import dataclasses

    ctx = build_context(exchnet.SPEC, bits=8, num_classes=4, num_train=16, input_size=32,
                        config=exchnet.SPEC.make_config({"exchange_from": fraction}))
    sampled = {"epoch_sample": 8, "resample_every": every} if every > 1 else {}
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epochs=epochs, **sampled))
    assert exchnet.SPEC.build(ctx).exchange_start == start


def test_eval_pass_anchors_only_before_outer_iterations_that_exchange():
    """The reference computes anchors from align_step on: no evaluation pass while exchange has not begun."""
    calls: list[int] = []
    ctx, _ = _model()
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epochs=8))
    model = exchnet.build(ctx)  # the default anchors (eval-pass) and exchange_from (0.875): start 7 of 8
    for epoch in range(ctx.protocol.epochs):
        tctx = train_context(ctx, epochs=ctx.protocol.epochs, model=model)
        counting = dataclasses.replace(tctx, map_train=lambda fn, t=tctx: calls.append(epoch) or t.map_train(fn))
        model.on_epoch_end(epoch, counting)
    assert model.exchange_start == 7 and calls == [6]


def test_bad_exchange_from_is_a_one_line_error():
    with pytest.raises(ValueError, match="exchnet.exchange_from 1.5") as info:
        exchnet.SPEC.make_config({"exchange_from": 1.5})
    assert "\n" not in str(info.value)
