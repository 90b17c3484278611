"""``TrainContext.map_train`` (issue #14, item 5): any function of the images over an evaluation pass of the
training split, in index order (eval mode, eval transform, no grad, mode restored), in the harness loop, the
plugin check and ``fgbench.testing.train_context``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import fgbench
from fgbench.data.transforms import build_transform
from fgbench.engine.device import EngineOptions, resolve_runtime
from fgbench.engine.plugin_check import check_method
from fgbench.engine.runner import Job, JobRunner
from fgbench.engine.train import train_model
from fgbench.errors import TrainingError
from fgbench.protocol import resolve_protocol
from fgbench.testing import build_context, registered_plugin, spec_plugin, tiny_embedded, train_context

from conftest import TOY_SPEC, ToyHasher


class MapProbe(ToyHasher):
    """The toy method calling ``ctx.map_train`` at epoch end, keeping what it got and the mode ``fn`` saw."""

    def on_epoch_end(self, epoch, ctx):  # type: ignore[no-untyped-def]
        self.seen_in_fn: list[tuple[bool, bool]] = []

        def pixels(images: torch.Tensor) -> torch.Tensor:
            self.seen_in_fn.append((self.training, torch.is_grad_enabled()))
            return images.flatten(1)

        self.mode_before = self.training
        self.mapped_pixels = ctx.map_train(pixels)
        self.mapped_codes = ctx.map_train(self.encode)
        self.mode_after = self.training
        self.encoded = ctx.encode_train()


def _train_probe(tmp_path: Path) -> tuple[MapProbe, fgbench.Split, fgbench.Protocol]:
    dataset = tiny_embedded()
    spec = dataclasses.replace(TOY_SPEC, name="mapprobe", build=MapProbe)
    with registered_plugin(spec_plugin("mapprobe-plugin", [spec], [dataset])) as host:
        protocol = resolve_protocol("fair", dataset.fair_overrides)
        options = EngineOptions(device="cpu", progress=False, checkpoint=False)
        runner = JobRunner(host.registry, tmp_path, tmp_path, options, {"mapprobe": {}})
        data = runner.dataset(dataset.name)
        model, _spec, _config = runner.build_model(Job("mapprobe", dataset.name, 8, 0, protocol), data)
        split = data.split("train")
        train_model(model, split, protocol, resolve_runtime(options), options, 0)
    return model, split, protocol


def test_map_train_in_the_loop_is_fn_of_the_eval_transformed_split_in_index_order(tmp_path):
    torch.manual_seed(0)
    model, split, protocol = _train_probe(tmp_path)
    assert len(split) > protocol.eval_batch_size  # more than one batch is concatenated
    transform = build_transform(protocol, train=False)
    direct = torch.stack([transform(torch.from_numpy(np.ascontiguousarray(split.load_array(i))).permute(2, 0, 1))
                          for i in range(len(split))])
    torch.testing.assert_close(model.mapped_pixels, direct.flatten(1))
    assert model.mapped_pixels.dtype == torch.float32
    # model in eval mode (BatchNorm running statistics), no grad, train mode restored after the pass
    assert model.seen_in_fn and set(model.seen_in_fn) == {(False, False)}
    assert model.mode_before and model.mode_after
    model.eval()
    with torch.no_grad():
        expected = model.encode(direct)
    torch.testing.assert_close(model.mapped_codes, expected)
    torch.testing.assert_close(model.encoded, model.mapped_codes)  # encode_train is map_train(model.encode)


def test_plugin_check_context_has_map_train():
    class NeedsMapTrain(ToyHasher):
        def on_train_start(self, ctx):  # type: ignore[no-untyped-def]
            self.train()
            codes = ctx.map_train(self.encode)
            if codes.shape[1] != self.bits or not self.training:
                raise AssertionError(f"map_train gave {tuple(codes.shape)}, training={self.training}")

    spec = dataclasses.replace(TOY_SPEC, name="needsmap", build=NeedsMapTrain)
    result = check_method(spec)
    assert result.ok, result.failures


def test_testing_train_context_maps_its_images_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    ctx = build_context(TOY_SPEC, bits=8, num_classes=4, num_train=20, input_size=32)
    ctx = dataclasses.replace(ctx, protocol=ctx.protocol.replace(eval_batch_size=8))
    model = ToyHasher(ctx)
    model.train()
    modes: list[bool] = []

    def fn(images: torch.Tensor) -> torch.Tensor:
        modes.append(model.training)
        return model.encode(images)

    tctx = train_context(ctx, model=model)
    out = tctx.map_train(fn)
    assert modes == [False, False, False] and model.training  # 20 images in batches of 8, mode restored
    images = tctx.map_train(lambda x: x)
    assert images.shape == (20, 3, 32, 32)
    torch.testing.assert_close(images, train_context(ctx).map_train(lambda x: x))  # the same images every time
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(out, model.encode(images))


def test_a_context_built_without_map_train_says_so_in_one_line():
    tctx = fgbench.TrainContext(device=torch.device("cpu"), epochs=1, train_labels=torch.zeros(2, dtype=torch.long),
                                encode_train=lambda: torch.zeros(2, 8), log=lambda name, value: None)
    with pytest.raises(TrainingError, match="without map_train") as info:
        tctx.map_train(lambda images: images)
    assert "\n" not in str(info.value)
