"""FISH plugin: shapes, loss, double filtering, erasing, proxy codes in FISH's form, cost (CPU, random init)."""

from __future__ import annotations

import math

import pytest
import torch

import fgbench
import fgbench_fish
from fgbench.testing import autocast_loss, build_context, encode_cost, random_batch, registered_plugin, train_steps
from fgbench_fish import SPEC, class_filter, erase_peak, feature_filter

SIZE = 32


def make(bits: int = 12, num_classes: int = 4, **kwargs):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    overrides = kwargs.pop("config", {})
    ctx = build_context(SPEC, bits=bits, num_classes=num_classes, num_train=max(16, num_classes),
                        input_size=kwargs.pop("input_size", SIZE), config=SPEC.make_config(overrides), **kwargs)
    return SPEC.build(ctx), ctx



@pytest.mark.parametrize("bits", [12, 24, 32, 48, 7])
def test_output_shapes(bits: int) -> None:
    model, ctx = make(bits)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    assert out["codes"].shape == (4, bits)
    assert out["logits"].shape == out["erased_logits"].shape == (4, ctx.num_classes)
    model.eval()
    with torch.no_grad():
        assert model.encode(batch.images).shape == (4, bits)
        assert "erased_logits" not in model(batch.images)


def test_proxy_codes_are_fishs_plain_form() -> None:
    model, ctx = make(12, num_classes=200)
    plain = fgbench.solve_fish_proxies(200, 12, iterations=15, seed=ctx.seed, balanced=False, distinct=False)
    assert torch.equal(model.proxy_codes, plain.codes)
    # FISH's form keeps B = sign(R V): at 200 classes x 12 bits that leaves colliding codes / unbalanced bits,
    # which the balanced/distinct variant (CNET's choice) would have repaired
    repaired = fgbench.solve_fish_proxies(200, 12, iterations=15, seed=ctx.seed)
    assert not torch.equal(plain.codes, repaired.codes)
    assert model.proxy_summary["min_hamming"] == plain.min_hamming_distance()
    objective = plain.objective
    assert all(b <= a + 1e-9 for a, b in zip(objective, objective[1:]))


def test_feature_filter_damps_positions_at_or_below_the_mean() -> None:
    fmap = torch.ones(1, 2, 2, 2)
    fmap[0, :, 0, 0] = 3.0  # channel sum 6 at (0,0), 2 elsewhere; mean 3
    out = feature_filter(fmap, 0.5)
    assert torch.equal(out[0, :, 0, 0], torch.tensor([3.0, 3.0]))
    assert torch.equal(out[0, :, 1, 1], torch.tensor([0.5, 0.5]))
    assert torch.equal(feature_filter(torch.ones(1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), 0.5))  # flat: none above


def test_class_filter_keeps_only_the_top_score() -> None:
    scores = torch.tensor([[1.0, 4.0, -2.0], [5.0, 0.0, 1.0]])
    out = class_filter(scores, 0.7)
    torch.testing.assert_close(out, torch.tensor([[0.7, 4.0, -1.4], [5.0, 0.0, 0.7]]))


def test_erasing_removes_the_peak_region_only() -> None:
    images = torch.ones(2, 3, 16, 16)
    fmap = torch.zeros(2, 4, 4, 4)
    fmap[0, :, 0, 3] = 1.0  # top-right peak
    fmap[1, :, 3, 0] = 1.0  # bottom-left peak
    erased = erase_peak(images, fmap, 0.9, 1.0, torch.Generator().manual_seed(0))
    assert erased[0, :, 0, 15].eq(0).all() and erased[0, :, 15, 0].eq(1).all()
    assert erased[1, :, 15, 0].eq(0).all() and erased[1, :, 0, 15].eq(1).all()
    assert 0 < float((erased == 0).float().mean()) < 0.2


def test_loss_finite_and_decreasing_on_a_fixed_batch() -> None:
    model, ctx = make(12)
    losses = train_steps(model, random_batch(ctx, 8), steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_loss_parts_and_hash_target_is_the_class_proxy() -> None:
    model, ctx = make(12)
    batch = random_batch(ctx, 4)
    model.train()
    out = model(batch.images)
    loss, parts = model.loss(out, batch)
    assert set(parts) == {"hash", "cls", "cls_erased"}
    expected = ((out["codes"] - model.proxy_codes[batch.labels]) ** 2).mean()
    torch.testing.assert_close(parts["hash"], expected)
    torch.testing.assert_close(loss, parts["hash"] + parts["cls"] + parts["cls_erased"])


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


@pytest.mark.parametrize("backbone", ["resnet50", "resnet18"])
def test_cost_within_5_percent_of_cmbh_table5(backbone: str) -> None:
    model, _ = make(12, num_classes=200, backbone=backbone, input_size=224)
    cost = encode_cost(model, 224)
    params, flops = cost.params_m, cost.flops_g
    paper = next(r for r in SPEC.paper_results if r.params_m)
    key = f"{backbone}@12"
    assert params == pytest.approx(paper.params_m[key], rel=0.05)
    assert flops == pytest.approx(paper.flops_g[key], rel=0.05)


def test_registered_with_paper_metadata_and_recipe() -> None:
    with registered_plugin(fgbench_fish) as host:
        spec = host.registry.methods.get("fish")
    assert spec.paper_map("cub", 12) == pytest.approx(0.7677)
    assert spec.paper_map("food101", 12) is None  # a gap in CMBH Table 2 stays a gap
    proto = fgbench.Protocol(name="paper").replace(**spec.paper_recipe["default"])
    proto.validate()
    assert (proto.optimizer, proto.batch_size, proto.epochs) == ("sgd", 16, 40)
