"""A²-Net plugin: shapes, attribute encoder/decoder, reconstruction, decorrelation, ADSH update (CPU, random init)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import fgbench
import fgbench_a2net
from fgbench.testing import autocast_loss, build_context, random_batch, registered_plugin, train_context, train_steps
from fgbench_a2net import SPEC, decorrelation_loss

SIZE = 32


def make(bits: int = 12, num_classes: int = 4, **overrides):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=bits, num_classes=num_classes, num_train=16, input_size=SIZE,
                        config=SPEC.make_config(overrides))
    return SPEC.build(ctx), ctx


@pytest.mark.parametrize("bits", [12, 24, 32, 48, 7])
def test_output_shapes_for_every_bit_length(bits: int) -> None:
    model, ctx = make(bits)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    dim = model.backbone.out_channels
    assert out["features"].shape == (4, dim * (model.config.parts + 1))
    assert out["attention"].shape[:2] == (4, model.config.parts)
    assert model.W.shape == (bits, dim * (model.config.parts + 1))
    model.eval()
    with torch.no_grad():
        assert model.encode(batch.images).shape == (4, bits)


def test_parts_config_changes_the_representation() -> None:
    model, ctx = make(12, parts="2")
    assert model.W.shape[1] == 3 * model.backbone.out_channels
    with pytest.raises(ValueError, match="parts"):
        make(12, parts="0")


def test_decoder_is_the_encoders_transpose_and_reconstruction_is_its_error() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    _, parts = model.loss(out, batch)
    x = out["features"]
    u = torch.tanh(x @ model.W.T)
    torch.testing.assert_close(parts["reconstruction"], ((u @ model.W) - x).pow(2).mean())
    with torch.no_grad():
        torch.testing.assert_close(model.encode(batch.images), x @ model.W.T)  # sign(v) = sign(tanh(v))


def test_decorrelation_is_zero_for_orthogonal_unit_codes_and_positive_otherwise() -> None:
    orthogonal = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(decorrelation_loss(orthogonal)) == pytest.approx(0.0)
    repeated = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])
    # U^T U = [[4, 4], [4, 4]]: only the off-diagonals differ from 4 I, by 4 each -> mean 8 / (4 * 2)
    assert float(decorrelation_loss(repeated)) == pytest.approx(8 / 8)


def test_auxiliary_losses_start_at_aux_from_epoch() -> None:
    model, ctx = make(12, aux_from_epoch="1")
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    loss, parts = model.loss(out, batch)
    torch.testing.assert_close(loss, parts["similarity"] + parts["quantization"])
    model.on_epoch_end(0, train_context(ctx))
    loss, parts = model.loss(out, batch)
    torch.testing.assert_close(loss, sum(parts.values()))


def test_loss_finite_and_decreasing_on_a_fixed_batch() -> None:
    model, ctx = make(12)
    losses = train_steps(model, random_batch(ctx, 8), steps=5, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_database_code_update_never_increases_adsh_objective() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 8)
    model.train()
    model.loss(model(batch.images), batch)
    u = model.query_codes.codes.clone()
    labels = torch.as_tensor(ctx.train_labels)
    s = torch.where(labels[:, None] == labels[None, :], 1.0, model.dissimilar)

    def objective(v: torch.Tensor) -> float:
        return float((u @ v.T - 12 * s).pow(2).sum() + model.config.gamma * (v - u).pow(2).sum())

    before = objective(model.database_codes.codes)
    model.on_epoch_end(0, train_context(ctx))
    assert objective(model.database_codes.codes) <= before
    assert int(model.epoch) == 1


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
    loss, parts = autocast_loss(model, random_batch(ctx, 4))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def _sampled(epoch_sample: int, resample_every: int, **overrides):  # type: ignore[no-untyped-def]
    """A model under ADSH-style sampling (protocol ``epoch_sample``/``resample_every``) after one training batch."""
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=12, num_classes=4, num_train=16, input_size=SIZE,
                        config=SPEC.make_config(overrides))
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(epoch_sample=epoch_sample,
                                                                 resample_every=resample_every))
    model = SPEC.build(ctx)
    batch = random_batch(ctx, 8)
    model.train()
    model.loss(model(batch.images), batch)
    return model, ctx, batch


def _v_updates(epoch_sample: int, resample_every: int, epochs: int) -> list[int]:
    """The epochs (0-based) at whose end ``on_epoch_end`` updated ``V`` (it logs each update)."""
    model, ctx, _ = _sampled(epoch_sample, resample_every)
    updated: list[int] = []
    for epoch in range(epochs):
        model.on_epoch_end(epoch, train_context(ctx, epochs=epochs, log=lambda k, x, e=epoch: updated.append(e)))
    return updated


def test_sampled_schedule_updates_v_once_per_outer_iteration() -> None:
    # the re-implementation's A_2_Net.py: max_epoch epochs over one sample of num_samples images, then V
    # (solve_dcc); here resample_every = 3 epochs per outer iteration, 7 epochs: ends after 3, 6 and the last one
    assert _v_updates(epoch_sample=8, resample_every=3, epochs=7) == [2, 5, 6]


def test_v_is_updated_every_epoch_without_outer_iterations() -> None:
    assert _v_updates(epoch_sample=0, resample_every=1, epochs=3) == [0, 1, 2]
    assert _v_updates(epoch_sample=8, resample_every=1, epochs=3) == [0, 1, 2]


def test_aux_from_epoch_counts_outer_iterations_under_sampling() -> None:
    # A_2_Net.py switches the auxiliary losses on at outer iteration max_iter // 2, not at an epoch
    model, ctx, batch = _sampled(8, 2, aux_from_epoch="1")
    out = model(batch.images)
    tctx = train_context(ctx, epochs=6)
    model.on_epoch_end(0, tctx)  # inside outer iteration 0: still without L_rec, L_dec
    loss, parts = model.loss(out, batch)
    torch.testing.assert_close(loss, parts["similarity"] + parts["quantization"])
    model.on_epoch_end(1, tctx)  # outer iteration 0 ends
    loss, parts = model.loss(out, batch)
    torch.testing.assert_close(loss, sum(parts.values()))


@pytest.mark.parametrize("dataset, samples", [("cub", 2000), ("aircraft", 2000), ("food101", 2000),
                                              ("vegfru", 4000), ("nabirds", 4000)])
def test_paper_recipe_follows_the_reimplementations_outer_iterations(dataset: str, samples: int) -> None:
    """aassxun/DSH_Analysis set_flag.py (a2net; cub200 ... nabirds): max_iter 40, max_epoch 30, lr_step 35."""
    recipe = dict(SPEC.paper_recipe["default"], **SPEC.paper_recipe.get(dataset, {}))
    p = fgbench.Protocol(name="paper").replace(**recipe)
    p.validate()
    assert (p.epochs // p.resample_every, p.resample_every, p.epoch_sample, p.batch_size) == (40, 30, samples, 16)
    assert p.epochs % p.resample_every == 0
    # MultiStepLR([35]) stepped once per outer iteration: lr / 10 from outer iteration 35 = epoch 1,050
    assert (p.schedule, p.milestones) == ("step", (35 * 30,))
    assert p.epochs * (p.epoch_sample // p.batch_size) == 40 * 30 * samples // 16


def test_registered_with_paper_metadata_and_recipe() -> None:
    with registered_plugin(fgbench_a2net) as host:
        spec = host.registry.methods.get("a2net")
    assert spec.paper_map("cub", 12) == pytest.approx(0.3383)
    assert spec.paper_map("vegfru", 48) == pytest.approx(0.6977)
    proto = fgbench.Protocol(name="paper").replace(**spec.paper_recipe["default"])
    proto.validate()
    assert (proto.lr, proto.batch_size, proto.momentum) == (1e-4, 16, 0.9)


@pytest.mark.parametrize("epoch_sample, ignores_unseen", [(8, True), (0, False)])
def test_v_update_uses_only_the_sampled_rows_of_u(epoch_sample: int, ignores_unseen: bool) -> None:
    """Under epoch_sample V is updated from Omega's rows of U only (ADSH's expanded U; the reference's sampled U)."""
    model, ctx, batch = _sampled(epoch_sample, 1)
    twin, _, _ = _sampled(epoch_sample, 1)
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
