"""Multi-FusNet plugin: shapes, loss, adaptive weights, fusion/attention modules, inference path (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

import fgbench
import fgbench_multifusnet
from fgbench.testing import autocast_loss, build_context, random_batch, registered_plugin, train_steps
from fgbench_multifusnet import ECA, SPEC, SelfAttentionLayer, eca_kernel_size

SIZE = 32


def make(bits: int = 12, num_classes: int = 4, **overrides):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=bits, num_classes=num_classes, num_train=16, input_size=SIZE,
                        config=SPEC.make_config(overrides))
    return SPEC.build(ctx), ctx


@pytest.mark.parametrize("bits", [12, 24, 32, 48, 5])
def test_output_shapes_for_every_bit_length(bits: int) -> None:
    model, ctx = make(bits)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    assert out["codes"].shape == (4, bits)
    assert out["logits"].shape == out["zoom_logits"].shape == (4, ctx.num_classes)
    model.eval()
    with torch.no_grad():
        assert model.encode(batch.images).shape == (4, bits)
    assert torch.equal(model.proxy_codes, fgbench.fish_proxy_codes(ctx.num_classes, bits, iterations=15,
                                                                   seed=ctx.seed))


def test_loss_finite_and_decreasing_on_a_fixed_batch() -> None:
    model, ctx = make(12)
    losses = train_steps(model, random_batch(ctx, 8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_gradients_reach_alpha_beta_and_attention() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    model.train()
    loss, parts = model.loss(model(batch.images), batch)
    assert set(parts) == {"hash", "cls", "alpha", "beta"}
    loss.backward()
    for w in (model.alpha, model.beta, model.attention[0].qkv.weight, model.fusion[0].eca.conv.weight):
        assert w.grad is not None and w.grad.abs().sum() > 0
    # d/dbeta (L_cls / beta^2 + log(1 + beta)) at beta = 1
    assert float(model.beta.grad.detach()) == pytest.approx(-2 * float(parts["cls"].detach()) + 0.5, rel=1e-4)


def test_eca_adaptive_kernel_and_two_branch_fusion() -> None:
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    eca = ECA(16)
    x = torch.randn(2, 16, 5, 5)
    w = eca(x) / x  # a per-channel gate in (0, 1), constant over space
    assert torch.allclose(w, w[..., :1, :1].expand_as(w), atol=1e-5)
    assert bool(((w > 0) & (w < 1)).all())
    model, _ctx = make(12)
    fused = model.fusion[0](x.new_ones(1, model.backbone.stage_channels[1], 3, 3))
    assert bool((fused > 1).all() and (fused < 2).all())  # x + gate * x


def test_self_attention_mixes_levels() -> None:
    torch.manual_seed(0)
    layer = SelfAttentionLayer(16, heads=4, mlp_ratio=2.0)
    tokens = torch.randn(2, 3, 16)
    out = layer(tokens)
    assert out.shape == tokens.shape
    changed = tokens.clone()
    changed[:, 2] += 1.0
    assert not torch.allclose(layer(changed)[:, 0], out[:, 0])  # token 0 attends to token 2
    with pytest.raises(ValueError, match="attn_heads"):
        SelfAttentionLayer(10, heads=4, mlp_ratio=2.0)


def test_zoom_is_training_only_and_encode_is_deterministic() -> None:
    model, ctx = make(12)
    images = random_batch(ctx, 4).images
    model.eval()
    with torch.no_grad():
        assert "zoom_logits" not in model(images)
        a, b = model.encode(images), model.encode(images)
        single = model.encode(images[:1])
    assert torch.equal(a, b)
    assert torch.allclose(single, a[:1], atol=1e-5)


def test_encode_path_skips_training_heads() -> None:
    model, ctx = make(12)
    model.eval()
    model.encode(random_batch(ctx, 2).images).sum().backward()
    assert model.classifier.weight.grad is None and model.top_hash.weight.grad is None
    assert all(p.grad is not None for p in model.hash_head.parameters())
    assert all(p.grad is not None for p in model.attention.parameters())


def test_bf16_autocast_loss_is_float32_and_finite() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    loss, _ = autocast_loss(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_config_overrides_and_recipe() -> None:
    cfg = SPEC.make_config({"attn_heads": "4", "attn_depth": "2", "zoom": "off"})
    assert (cfg.attn_heads, cfg.attn_depth, cfg.zoom) == (4, 2, False)
    model, _ctx = make(12, attn_depth="2", stages="3,4")
    assert len(model.attention) == 2 and len(model.blocks) == 2
    with registered_plugin(fgbench_multifusnet) as host:
        spec = host.registry.methods.get("multifusnet")
    assert spec.paper_map("cub", 12) == pytest.approx(0.7202)
    assert spec.paper_map("vegfru", 48) == pytest.approx(0.8579)
    proto = fgbench.Protocol(name="paper").replace(**spec.paper_recipe["default"]).validate()
    assert (proto.input_size, proto.resize_size, proto.momentum, proto.lr, proto.epochs) == (
        336, 356, 0.91, 0.0035, 300)
