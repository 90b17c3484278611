"""CMBH plugin tests (CPU, random init, small inputs)."""

from __future__ import annotations

import math

import fgbench_cmbh as cmbh
import numpy as np
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


def _model(bits: int = 12, input_size: int = 32, num_train: int = 16, **config):
    ctx = build_context(cmbh.SPEC, bits=bits, num_classes=4, num_train=num_train, input_size=input_size,
                        config=cmbh.SPEC.make_config(config))
    return ctx, cmbh.build(ctx)


def _train_context(ctx, logs: list) -> TrainContext:
    return train_context(ctx, epochs=1, log=lambda name, value: logs.append((name, value)))


# --- registration -----------------------------------------------------------------------------


def test_registers_with_paper_numbers():
    with registered_plugin(cmbh) as host:
        spec = host.registry.methods.get("cmbh")
    spec.validate()
    assert spec.paper_map("cub", 12) == pytest.approx(0.8407)
    assert spec.paper_map("vegfru", 48) == pytest.approx(0.8906)
    res = spec.paper_results[0]
    assert res.params_m == {"resnet50@12": 14.32, "resnet18@12": 4.23}
    assert res.flops_g == {"resnet50@12": 4.35, "resnet18@12": 1.67}
    assert spec.paper_recipe["cub"]["batch_size"] == 16 and spec.paper_recipe["default"]["resize_size"] == 255


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", STANDARD_BITS)
def test_shapes_every_bit_length(bits):
    torch.manual_seed(0)
    ctx, model = _model(bits)
    batch = random_batch(ctx, batch_size=4)
    model.train()
    out = model(batch.images)
    assert out["codes"].shape == (4, bits)
    assert len(out["logits"]) == model.config.num_layers + 1
    assert all(z.shape == (4, ctx.num_classes) for z in out["logits"])
    r = out["regions_per_image"]
    assert all(z.shape == (4 * r, ctx.num_classes) for z in out["region_logits"])
    loss, parts = model.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(parts) == {"hash_pair", "hash_proxy", "cls", "trans", "region"}
    model.eval()
    codes = model.encode(batch.images)
    assert codes.shape == (4, bits) and torch.isfinite(codes).all()


def test_matching_matrix_is_cosine_and_codes_follow_eq12():
    torch.manual_seed(0)
    _, model = _model()
    f = torch.randn(3, model.config.feature_dim)
    m = model.match(f)
    assert m.shape == (3, 4, model.config.k)
    expected = torch.nn.functional.cosine_similarity(f[:, None, None, :], model.c_vectors[None], dim=-1)
    torch.testing.assert_close(m, expected, atol=1e-5, rtol=1e-5)
    codes, logits = model.hash_codes(m)
    torch.testing.assert_close(logits, model.config.alpha * m.sum(-1))
    weighted = torch.softmax(logits, -1)[..., None] * m
    torch.testing.assert_close(codes, weighted.flatten(1) @ model.hash_layer.weight.T)


# --- Algorithm 1 ------------------------------------------------------------------------------


def test_algorithm1_threshold_component_and_suppression():
    amap = np.zeros((7, 7))
    amap[1:3, 1:3] = 1.0  # the largest component above 0.85 * max
    amap[5, 5], amap[5, 6] = 0.95, 0.9  # a smaller component above the same threshold
    boxes = cmbh.critical_regions(amap, 4, (224, 224))  # 32 px per cell
    # m=1: a=1, threshold 0.85 -> the 2x2 block wins over the 2-cell component
    # suppression (line 7): A <- a - A on H, so the block -> 0, (5,5) -> 0.05, (5,6) -> 0.1
    # m=2: a=0.1, threshold 0.08 -> only (5,6); m=3: a=0.05 -> only (5,5); m=4: nothing left -> whole image
    expected = [[32, 32, 96, 96], [192, 160, 224, 192], [160, 160, 192, 192], [0, 0, 224, 224]]
    np.testing.assert_allclose(boxes, expected)


def test_algorithm1_threshold_decreases_with_m():
    amap = np.array([[1.0, 0.0, 0.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0]])
    amap[3, 3] = 0.5
    # after m=1 suppresses the peak, a = 0.5 and only (3,3) is left above 0.8 a
    boxes = cmbh.critical_regions(amap, 2, (40, 40))
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10], [30, 30, 40, 40]])
    # a cell at 0.83 a joins at m=2 (threshold 0.80 a) but not at m=1 (0.85 a)
    amap2 = np.zeros((1, 4))
    amap2[0, :2] = [1.0, 0.83]
    amap2[0, 3] = 0.5
    one = cmbh.critical_regions(amap2, 1, (1, 4))
    np.testing.assert_allclose(one, [[0, 0, 1, 1]])


def test_algorithm1_degenerate_maps():
    zeros = cmbh.critical_regions(np.zeros((5, 5)), 4, (50, 60))
    np.testing.assert_allclose(zeros, [[0, 0, 60, 50]] * 4)
    single = np.zeros((5, 5))
    single[2, 3] = 7.0
    boxes = cmbh.critical_regions(single, 4, (50, 50))
    # the peak is found once, then suppressed to a - a = 0 and nothing is left
    np.testing.assert_allclose(boxes, [[30, 20, 40, 30]] + [[0, 0, 50, 50]] * 3)


def test_algorithm1_ties_prefer_the_component_with_the_peak():
    amap = np.zeros((3, 5))
    amap[1, 0] = 0.95
    amap[1, 4] = 1.0
    boxes = cmbh.critical_regions(amap, 1, (3, 5))
    np.testing.assert_allclose(boxes, [[4, 1, 5, 2]])


def test_crop_regions_resizes_to_the_input_size():
    images = torch.zeros(2, 3, 8, 8)
    images[:, :, :5, :5] = 1.0  # white top-left 5x5 (bilinear samples near a box edge see one pixel beyond it)
    boxes = np.array([[[0, 0, 4, 4], [6, 6, 8, 8]], [[0, 0, 8, 8], [0, 0, 4, 8]]], dtype=np.float32)
    crops = cmbh.crop_regions(images, boxes)
    assert crops.shape == (4, 3, 8, 8)
    torch.testing.assert_close(crops[0], torch.ones(3, 8, 8))  # image 0, inside the white square
    torch.testing.assert_close(crops[1], torch.zeros(3, 8, 8))  # image 0, black corner
    torch.testing.assert_close(crops[2], images[1])  # image 1, whole image
    assert cmbh.crop_regions(images, boxes, (4, 4)).shape == (4, 3, 4, 4)


def test_activation_map_averages_channels_at_the_last_stage_size():
    maps = [torch.ones(2, 3, 4, 4), torch.full((2, 1, 2, 2), 5.0)]
    amap = cmbh.activation_map(maps)
    assert amap.shape == (2, 2, 2)
    torch.testing.assert_close(amap, torch.full((2, 2, 2), 2.0))  # (3 * 1 + 1 * 5) / 4


# --- inference path ---------------------------------------------------------------------------


def test_encode_does_not_run_the_last_stage():
    torch.manual_seed(0)
    ctx, model = _model()
    calls = []
    model.backbone.stages[3].register_forward_hook(lambda *_: calls.append(1))
    images = random_batch(ctx, batch_size=2).images
    model.eval()
    with torch.no_grad():
        model.encode(images)
    assert calls == []
    model.train()
    model(images)  # the training graph does use it (and the hook works)
    assert calls


def test_encode_uses_only_the_hash_layer_path():
    torch.manual_seed(0)
    ctx, model = _model()
    model.eval()
    model.encode(random_batch(ctx, batch_size=2).images).sum().backward()
    used = {name for name, p in model.named_parameters() if p.grad is not None}
    assert not any(n.startswith("backbone.stages.3.") for n in used)
    assert not any(n.startswith(("fuse.", "classifiers.", "subnets.0.", "subnets.2.")) for n in used)
    assert {"c_vectors", "hash_layer.weight"} <= used and any(n.startswith("subnets.1.") for n in used)


# --- training ---------------------------------------------------------------------------------


def test_code_memories_update_between_epochs():
    torch.manual_seed(0)
    ctx, model = _model(num_train=16)
    prev_codes, prev_proxies = model.prev_codes.clone(), model.prev_proxies.clone()
    batch = random_batch(ctx, batch_size=8)
    model.train()
    out = model(batch.images)
    model.loss(out, batch)
    u = torch.tanh(out["codes"].detach().float())
    # within the epoch, b^(t-1) and c^(t-1) stay fixed
    torch.testing.assert_close(model.prev_codes, prev_codes)
    torch.testing.assert_close(model.prev_proxies, prev_proxies)
    logs: list = []
    model.on_epoch_end(0, _train_context(ctx, logs))
    torch.testing.assert_close(model.prev_codes[batch.indices], torch.where(u >= 0, 1.0, -1.0))
    untouched = torch.ones(ctx.num_train, dtype=torch.bool)
    untouched[batch.indices] = False
    torch.testing.assert_close(model.prev_codes[untouched], prev_codes[untouched])
    labels = torch.as_tensor(ctx.train_labels)
    relaxed = model.memory.codes
    for c in range(ctx.num_classes):
        torch.testing.assert_close(model.prev_proxies[c], relaxed[labels == c].mean(0))
    assert not torch.equal(model.prev_proxies, prev_proxies)
    assert logs and logs[0][0] == "cmbh/bits_changed" and 0 < logs[0][1] <= 1


def test_hash_loss_uses_rebalanced_similarities():
    _, model = _model(num_train=16)  # 4 classes x 4 images
    # sum(S) / sum(1 - S) over all pairs: 4 * 16 / (256 - 64)
    assert model.pair_negative == pytest.approx(64 / 192)
    assert model.proxy_negative == pytest.approx(1 / 3)


@pytest.mark.parametrize("config", [{}, {"regions_per_step": 1}, {"use_regions": False, "use_transfer": False}])
def test_loss_finite_and_decreasing_on_a_fixed_batch(config):
    torch.manual_seed(0)
    ctx, model = _model(bits=12, **config)
    batch = random_batch(ctx, batch_size=8)
    losses = train_steps(model, batch, steps=6, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_loss_decreases_training_through_the_harness_on_the_embedded_dataset():
    torch.manual_seed(0)
    model, losses = train_on_tiny_embedded(cmbh.SPEC, epochs=3, bits=12)
    totals = [epoch["loss"] for epoch in losses]
    assert len(totals) == 3 and all(math.isfinite(t) for t in totals)
    assert totals[-1] < totals[0]
    assert (model.memory.codes != 0).all()  # every training image's relaxed code was recorded
    torch.testing.assert_close(model.prev_codes, model.memory.binary())  # and on_epoch_end took it as b^(t-1)


def test_region_loss_sums_over_regions():
    torch.manual_seed(0)
    ctx, model = _model()  # the default config runs Eq. 14 as written: all M = 4 regions (Sec. 4.1: M = 4)
    batch = random_batch(ctx, batch_size=4)
    model.train()
    out = model(batch.images)
    assert out["regions_per_image"] == 4 and out["region_logits"][0].shape[0] == 16
    _, parts = model.loss(out, batch)
    r_cls, r_trans = model._semantic(out["region_logits"], batch.labels.repeat_interleave(4))
    torch.testing.assert_close(parts["region"], 4 * (r_cls + r_trans))


def test_losses_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    ctx, model = _model()
    batch = random_batch(ctx, batch_size=4)
    loss, parts = autocast_loss(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(v.dtype == torch.float32 for v in parts.values())
