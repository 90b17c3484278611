"""SEMICON plugin: shapes, bit split, SEM mask, ICON, ADSH loss and V update, cost (CPU, random init)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import fgbench
import fgbench_semicon
from fgbench.testing import (autocast_loss, build_context, encode_cost, random_batch, registered_plugin, train_context,
                             train_steps)
from fgbench_semicon import ICON, SEMAttention, SPEC, sem_mask, split_bits

SIZE = 32


def make(bits: int = 12, num_classes: int = 4, **kwargs):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=bits, num_classes=num_classes, num_train=16,
                        input_size=kwargs.pop("input_size", SIZE), config=SPEC.make_config(kwargs.pop("config", {})),
                        **kwargs)
    return SPEC.build(ctx), ctx



@pytest.mark.parametrize("bits", [12, 24, 32, 48, 7])
def test_output_shapes_for_every_bit_length(bits: int) -> None:
    model, ctx = make(bits)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    assert out["codes"].shape == (4, bits)
    assert out["attention"].shape[:2] == (4, 3)
    model.eval()
    with torch.no_grad():
        assert model.encode(batch.images).shape == (4, bits)


def test_bit_split_matches_the_authors_for_the_standard_lengths() -> None:
    assert split_bits(12) == (6, 2, 2, 2)
    assert split_bits(24) == (12, 4, 4, 4)
    assert split_bits(32) == (17, 5, 5, 5)
    assert split_bits(48) == (24, 8, 8, 8)
    assert all(sum(split_bits(b)) == b for b in range(1, 65))


def test_sem_mask_suppresses_the_attended_region() -> None:
    att = torch.zeros(2, 1, 4, 4)
    att[0, 0, 1, 2] = 5.0
    m = sem_mask(att, 0.3)
    assert m.shape == att.shape and float(m.min()) >= 0 and float(m.max()) <= 2
    assert float(m[0, 0, 1, 2]) > 1.0  # attended: 2 - m < 1, suppressed in the next stage
    assert float(m[0, 0, 3, 3]) < 1.0  # elsewhere: enhanced
    torch.testing.assert_close(m[1], torch.ones(1, 4, 4))  # flat map: neither
    # per-image statistics: an image's mask does not depend on the rest of the batch
    torch.testing.assert_close(sem_mask(att[:1], 0.3), m[:1])


def test_sem_stages_see_the_suppressed_features() -> None:
    torch.manual_seed(0)
    sem = SEMAttention(64, parts=3, alpha=0.3).eval()
    x = torch.randn(2, 64, 6, 6)
    with torch.no_grad():
        maps = sem(x)
        f = sem.body(x)
        first = sem.heads[0](f)
        second_unmasked = sem.heads[1](f)
        second = sem.heads[1](f * (2.0 - sem_mask(first, 0.3)))
    assert maps.shape == (2, 3, 6, 6)
    torch.testing.assert_close(maps[:, :1], first)
    torch.testing.assert_close(maps[:, 1:2], second)
    assert not torch.allclose(second, second_unmasked)


def test_icon_mixes_channels_across_groups() -> None:
    torch.manual_seed(0)
    icon = ICON(16, groups=4).eval()
    x = torch.randn(1, 16, 3, 3)
    with torch.no_grad():
        base = icon(x)
        poked = x.clone()
        poked[0, 0] += 1.0  # change one channel of group 0
        diff = (icon(poked) - base).abs().amax(dim=(0, 2, 3))
    # after the two steps every group's channels respond (step 1 alone would only change group 0)
    assert (diff.reshape(4, 4).amax(dim=1) > 1e-6).all()
    with pytest.raises(ValueError, match="divisible"):
        ICON(10, groups=4)


def test_loss_finite_and_decreasing_on_a_fixed_batch() -> None:
    model, ctx = make(12)
    losses = train_steps(model, random_batch(ctx, 8), steps=5, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_adsh_loss_and_database_code_update() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 8)
    model.train()
    loss, parts = model.loss(model(batch.images), batch)
    torch.testing.assert_close(loss, parts["similarity"] + parts["quantization"])
    u = model.query_codes.codes.clone()
    v = model.database_codes.codes
    labels = torch.as_tensor(ctx.train_labels)
    s = torch.where(labels[:, None] == labels[None, :], 1.0, model.dissimilar)

    def objective(v: torch.Tensor) -> float:
        return float((u @ v.T - 12 * s).pow(2).sum() + model.config.gamma * (v - u).pow(2).sum())

    before = objective(v)
    logs: list = []
    model.on_epoch_end(0, train_context(ctx, log=lambda k, x: logs.append((k, x))))
    after = objective(model.database_codes.codes)
    assert after <= before  # each bit's closed-form step never increases ADSH's objective
    assert model.database_codes.codes.abs().eq(1).all()
    assert logs and logs[0][0] == "semicon/v_bits_changed"


def test_encode_is_deterministic_and_batch_independent() -> None:
    model, ctx = make(12)
    images = random_batch(ctx, 4).images
    model.eval()
    with torch.no_grad():
        a, b, single = model.encode(images), model.encode(images), model.encode(images[:1])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[:1], atol=1e-5, rtol=1e-4)


def test_bf16_autocast_loss_is_float32_and_finite() -> None:
    model, ctx = make(12)
    loss, _ = autocast_loss(model, random_batch(ctx, 4))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_cost_within_5_percent_of_cmbh_table5() -> None:
    model, _ = make(12, num_classes=200, backbone="resnet50", input_size=224)
    cost = encode_cost(model, 224)
    params, flops = cost.params_m, cost.flops_g
    paper = next(r for r in SPEC.paper_results if r.params_m)
    assert params == pytest.approx(paper.params_m["resnet50@12"], rel=0.05)
    assert flops == pytest.approx(paper.flops_g["resnet50@12"], rel=0.05)


def _v_updates(epoch_sample: int, resample_every: int, epochs: int) -> list[int]:
    """The epochs (0-based) at whose end ``on_epoch_end`` updated ``V`` (it logs each update)."""
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=12, num_classes=4, num_train=16, input_size=SIZE, config=SPEC.make_config({}))
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epoch_sample=epoch_sample,
                                                                 resample_every=resample_every))
    model = SPEC.build(ctx)
    batch = random_batch(ctx, 8)
    model.train()
    model.loss(model(batch.images), batch)
    updated: list[int] = []
    for epoch in range(epochs):
        tctx = train_context(ctx, epochs=epochs, log=lambda k, x, e=epoch: updated.append(e))
        model.on_epoch_end(epoch, tctx)
    return updated


def test_sampled_schedule_updates_v_once_per_outer_iteration() -> None:
    # the authors' SEMICON_train.py: max_epoch epochs over one sample of num_samples images, then V (solve_dcc);
    # here resample_every = 3 epochs per outer iteration, 7 epochs: ends after epochs 3, 6 and the last one
    assert _v_updates(epoch_sample=8, resample_every=3, epochs=7) == [2, 5, 6]


def test_v_is_updated_every_epoch_without_outer_iterations() -> None:
    assert _v_updates(epoch_sample=0, resample_every=1, epochs=3) == [0, 1, 2]
    assert _v_updates(epoch_sample=8, resample_every=1, epochs=3) == [0, 1, 2]


@pytest.mark.parametrize("dataset, outer, samples, lr_step", [("cub", 40, 2000, None), ("aircraft", 40, 2000, None),
                                                              ("food101", 50, 2000, 45), ("vegfru", 50, 4000, 45),
                                                              ("nabirds", 50, 4000, 45)])
def test_paper_recipe_follows_the_authors_outer_iterations(dataset: str, outer: int, samples: int,
                                                           lr_step: int | None) -> None:
    """aassxun/SEMICON README commands: --max-iter, --max-epoch 30, --num-samples, --batch-size 16, --lr-step."""
    recipe = dict(SPEC.paper_recipe["default"], **SPEC.paper_recipe.get(dataset, {}))
    p = fgbench.Protocol(name="paper").replace(**recipe)
    p.validate()
    assert (p.epochs // p.resample_every, p.resample_every, p.epoch_sample, p.batch_size) == (outer, 30, samples, 16)
    assert p.epochs % p.resample_every == 0
    # MultiStepLR(lr_step) is stepped once per outer iteration: lr / 10 from outer iteration lr_step on
    # (CUB, Aircraft: --lr-step 40 of 40 iterations, never inside the run)
    assert p.milestones == (() if lr_step is None else (lr_step * 30,))
    assert p.schedule == ("constant" if lr_step is None else "step")
    assert p.epochs * (p.epoch_sample // p.batch_size) == outer * 30 * samples // 16


def test_registered_with_paper_metadata_and_recipe() -> None:
    with registered_plugin(fgbench_semicon) as host:
        spec = host.registry.methods.get("semicon")
    assert spec.paper_map("cub", 12) == pytest.approx(0.3776)
    assert spec.paper_map("nabirds", 48) == pytest.approx(0.4115)
    for ds, lr in [("cub", 2.5e-4), ("vegfru", 5e-4)]:
        recipe = dict(spec.paper_recipe["default"], **spec.paper_recipe.get(ds, {}))
        proto = fgbench.Protocol(name="paper").replace(**recipe)
        proto.validate()
        assert (proto.lr, proto.momentum, proto.batch_size) == (lr, 0.91, 16)


def _sampled(epoch_sample: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=12, num_classes=4, num_train=16, input_size=SIZE, config=SPEC.make_config({}))
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epoch_sample=epoch_sample, resample_every=1))
    model = SPEC.build(ctx)
    batch = random_batch(ctx, 8)
    model.train()
    model.loss(model(batch.images), batch)
    return model, ctx, batch


@pytest.mark.parametrize("epoch_sample, ignores_unseen", [(8, True), (0, False)])
def test_v_update_uses_only_the_sampled_rows_of_u(epoch_sample: int, ignores_unseen: bool) -> None:
    """Under epoch_sample V is updated from Omega's rows of U only (ADSH's expanded U; SEMICON_train.py's sampled U)."""
    model, ctx, batch = _sampled(epoch_sample)
    twin, _, _ = _sampled(epoch_sample)
    unseen = torch.ones(ctx.num_train, dtype=torch.bool)
    unseen[batch.indices] = False
    noisy = twin.query_codes.codes.clone()
    noisy[unseen] = torch.rand(int(unseen.sum()), ctx.bits, generator=torch.Generator().manual_seed(1)) * 2 - 1
    twin.query_codes.replace(noisy)
    for m in (model, twin):
        m.on_epoch_end(0, train_context(ctx, epochs=2))
    same = torch.equal(model.database_codes.codes, twin.database_codes.codes)
    assert same == ignores_unseen
    assert not model.omega.codes.any()  # Omega starts afresh with the next outer iteration
