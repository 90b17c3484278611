"""CNET plugin: shapes, loss, balance weights, attention zoom, inference path (CPU, random init)."""

from __future__ import annotations

import math

import pytest
import torch

import fgbench
import fgbench_cnet
from fgbench.testing import autocast_loss, build_context, train_context, random_batch, registered_plugin, train_steps
from fgbench import attention_zoom, balanced_multitask_loss, peak_saliency, saliency_sample, smoothing_for_confidence
from fgbench_cnet import SPEC

SIZE = 32


def make(bits: int = 12, num_classes: int = 4, **overrides):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = build_context(SPEC, bits=bits, num_classes=num_classes, num_train=16, input_size=SIZE,
                        config=SPEC.make_config(overrides))
    return SPEC.build(ctx), ctx


@pytest.mark.parametrize("bits", [12, 24, 32, 48, 4, 7])
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
    assert model.proxy_codes.shape == (ctx.num_classes, bits)
    assert torch.equal(model.proxy_codes, fgbench.fish_proxy_codes(ctx.num_classes, bits, seed=ctx.seed))


def test_loss_finite_and_decreasing_on_a_fixed_batch() -> None:
    model, ctx = make(12)
    losses = train_steps(model, random_batch(ctx, 8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_gradients_reach_the_balance_weights_and_parts_are_reported() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    model.train()
    loss, parts = model.loss(model(batch.images), batch)
    assert set(parts) == {"hash", "cls", "a", "b"}
    loss.backward()
    for w in (model.a, model.b):
        assert w.grad is not None and w.grad.abs() > 0
    # dL/da = -2 L_hash / a^3 + 1 / (1 + a) at a = 1
    assert float(model.a.grad.detach()) == pytest.approx(-2 * float(parts["hash"].detach()) + 0.5, rel=1e-4)


def test_balanced_multitask_loss_formula() -> None:
    a, b = torch.tensor(0.5), torch.tensor(2.0)
    got = balanced_multitask_loss(torch.tensor(1.0), torch.tensor(3.0), a, b)
    assert float(got) == pytest.approx(1 / 0.25 + 3 / 4 + math.log(1.5) + math.log(3.0))


def test_label_smoothing_puts_confidence_on_the_true_class() -> None:
    eps = smoothing_for_confidence(0.9, 10)
    # torch's label_smoothing gives the true class 1 - eps + eps / C
    assert 1 - eps + eps / 10 == pytest.approx(0.9)
    assert eps / 10 == pytest.approx(0.1 / 9)


def coordinate_images(n: int, size: int) -> torch.Tensor:
    """Channel 0 = x, channel 1 = y in [0, 1]: the zoomed image tells where each pixel was sampled."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([xx, yy, torch.zeros_like(xx)])[None].repeat(n, 1, 1, 1)


def test_attention_zoom_magnifies_the_peak_region() -> None:
    images = coordinate_images(2, 48)
    fmap = torch.zeros(2, 16, 6, 6)
    fmap[0, :, 1, 4] = 5.0  # peak top-right: x = 0.8, y = 0.2
    fmap[1, :, 4, 1] = 2.0  # peak bottom-left
    zoomed = attention_zoom(images, fmap)
    assert zoomed.shape == images.shape
    for i, (px, py) in enumerate([(0.8, 0.2), (0.2, 0.8)]):
        def near(img: torch.Tensor, px: float = px, py: float = py) -> float:
            return float((((img[0] - px) ** 2 + (img[1] - py) ** 2).sqrt() < 0.15).float().mean())

        assert near(zoomed[i]) > 1.8 * near(images[i])  # the peak region takes more of the output
        cx, cy = zoomed[i, :2, 24, 24].tolist()  # where the output centre was sampled: pulled towards the peak
        assert math.hypot(cx - px, cy - py) < 0.9 * math.hypot(0.5 - px, 0.5 - py)


def test_uniform_saliency_is_the_identity_and_peak_is_at_the_maximum() -> None:
    images = torch.randn(2, 3, 40, 40)
    assert torch.allclose(saliency_sample(images, torch.ones(2, 1, 31, 31)), images, atol=1e-3)
    fmap = torch.zeros(1, 4, 31, 31)
    fmap[0, 2, 7, 20] = 1.0
    sal = peak_saliency(fmap, grid=31, sigma=0.08, base=0.09)
    assert sal.shape == (1, 1, 31, 31)
    assert divmod(int(sal.flatten().argmax()), 31) == (7, 20)
    assert float(sal.max()) == pytest.approx(1.09)
    assert float(sal.min()) == pytest.approx(0.09, abs=1e-3)


def test_zoom_is_training_only_and_encode_is_deterministic() -> None:
    model, ctx = make(12)
    images = random_batch(ctx, 4).images
    model.eval()
    with torch.no_grad():
        assert "zoom_logits" not in model(images)
        a, b = model.encode(images), model.encode(images)
        single = model.encode(images[:1])
    assert torch.equal(a, b)
    assert torch.allclose(single, a[:1], atol=1e-5)  # eval BN: codes do not depend on the batch


def test_encode_path_skips_classifier_and_top_hash_layer() -> None:
    model, ctx = make(12)
    model.eval()
    model.encode(random_batch(ctx, 2).images).sum().backward()
    assert model.classifier.weight.grad is None and model.top_hash.weight.grad is None
    assert model.a.grad is None
    assert all(p.grad is not None for p in model.hash_head.parameters())


def test_bf16_autocast_loss_is_float32_and_finite() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    loss, _ = autocast_loss(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_config_overrides_from_cli_strings() -> None:
    cfg = SPEC.make_config({"zoom": "false", "stages": "3,4", "label_confidence": "0.8"})
    assert cfg.zoom is False and cfg.stages == (3, 4) and cfg.label_confidence == 0.8
    model, ctx = make(12, zoom="false", stages="3,4")
    assert len(model.blocks) == 2
    model.train()
    assert "zoom_logits" not in model(random_batch(ctx, 2).images)
    with pytest.raises(ValueError, match="stages"):
        make(12, stages="0,5")


def test_registered_with_paper_metadata_and_recipes() -> None:
    with registered_plugin(fgbench_cnet) as host:
        spec = host.registry.methods.get("cnet")
    assert spec.paper_map("cub", 12) == pytest.approx(0.7710)
    assert spec.paper_map("nabirds", 48) == pytest.approx(0.7881)
    cost = next(r for r in spec.paper_results if r.params_m)
    assert cost.params_m["resnet50@12"] == pytest.approx(41.13, abs=0.01)
    assert cost.flops_g["resnet50@12"] == pytest.approx(9.35, abs=0.01)
    for ds, lr, bs in [("aircraft", 0.0035, 32), ("vegfru", 0.005, 128), ("cub", 0.008, 128)]:
        proto = fgbench.Protocol(name="paper").replace(**spec.paper_recipe["default"]).replace(**spec.paper_recipe[ds])
        proto.validate()
        assert (proto.lr, proto.batch_size, proto.epochs, proto.weight_decay) == (lr, bs, 150, 3e-4)


def test_balance_weights_logged_and_recorded() -> None:
    model, build_ctx = make(12)
    logged: dict[str, list[float]] = {}
    ctx = train_context(build_ctx, log=lambda k, v: logged.setdefault(k, []).append(v))
    model.on_epoch_end(0, ctx)
    assert logged == {"cnet/a": [1.0], "cnet/b": [1.0]}
    state = model.extra_state_for_record()
    assert state["a"] == 1.0 and state["proxy_codes"]["min_hamming"] >= 1
