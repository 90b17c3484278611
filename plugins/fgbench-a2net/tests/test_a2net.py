"""A²-Net plugin: shapes, attribute encoder/decoder, reconstruction, decorrelation, ADSH update (CPU, random init)."""

from __future__ import annotations

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


def test_registered_with_paper_metadata_and_recipe() -> None:
    with registered_plugin(fgbench_a2net) as host:
        spec = host.registry.methods.get("a2net")
    assert spec.paper_map("cub", 12) == pytest.approx(0.3383)
    assert spec.paper_map("vegfru", 48) == pytest.approx(0.6977)
    proto = fgbench.Protocol(name="paper").replace(**spec.paper_recipe["default"])
    proto.validate()
    assert (proto.lr, proto.batch_size, proto.epochs) == (1e-4, 16, 40)
