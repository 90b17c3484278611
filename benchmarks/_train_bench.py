"""Shared pieces of the training-speed benchmarks: the harness loop vs a minimal hand-written loop.

Both loops train a fresh copy of the same method model (same initial
weights) on the same in-memory synthetic images with the same transform,
batch size, optimizer and precision; the bare loop is what one would write
by hand around ``model(images)`` / ``model.loss`` / ``backward`` / ``step``.
Images per second are wall time over the whole call (model to device,
optimizer, loader, every epoch), after a warm-up call of each (cuDNN
autotuning, allocator), best of ``rounds`` alternating calls.

Used by ``test_bench_train.py`` (pytest-benchmark).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fgbench.backbones import BackboneFactory
from fgbench.data.base import ArraySplit
from fgbench.data.loader import SplitDataset
from fgbench.data.transforms import build_transform
from fgbench.engine.device import EngineOptions, auto_workers, resolve_runtime, seed_everything
from fgbench.engine.train import train_model
from fgbench.methods import Batch, BuildContext, MethodSpec
from fgbench.protocol import Protocol


def synthetic_split(n: int, size: int, classes: int = 10, seed: int = 0) -> ArraySplit:
    """``n`` random uint8 ``size x size`` images (smooth blobs + noise, so JPEG-like statistics don't matter)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, max(size // 8, 1), max(size // 8, 1), 3), dtype=np.uint8)
    images = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, :size, :size]
    images = np.ascontiguousarray(images)
    return ArraySplit(images, np.arange(n) % classes, name=f"synthetic{size}")


def bench_protocol(backbone: str, input_size: int, batch_size: int, epochs: int, resize_size: int | None = None,
                   optimizer: str = "sgd", bits: int = 12) -> Protocol:
    return Protocol(backbone=backbone, weights="random", input_size=input_size,
                    resize_size=resize_size or input_size, batch_size=batch_size, epochs=epochs,
                    optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-4, bits=(bits,),
                    schedule="constant").validate()


def build_model(spec: MethodSpec, protocol: Protocol, split: ArraySplit, seed: int = 0) -> torch.nn.Module:
    labels = np.asarray(split.labels)
    ctx = BuildContext(bits=protocol.bits[0], num_classes=int(labels.max()) + 1, num_train=len(split),
                       train_labels=labels, protocol=protocol, config=spec.config_cls(), dataset="synthetic",
                       seed=seed, backbone_factory=BackboneFactory(protocol.backbone, "random"))
    seed_everything(seed)
    model = spec.build(ctx)
    model.bits = protocol.bits[0]
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_images_per_second(model: torch.nn.Module, split: ArraySplit, protocol: Protocol,
                              options: EngineOptions) -> float:
    """Images/s of :func:`fgbench.engine.train.train_model` (wall time of the call)."""
    runtime = resolve_runtime(options)
    _sync(runtime.device)
    t0 = time.perf_counter()
    train_model(model, split, protocol, runtime, options, seed=0)
    _sync(runtime.device)
    steps = len(split) // protocol.batch_size if len(split) > protocol.batch_size else 1
    return steps * protocol.batch_size * protocol.epochs / (time.perf_counter() - t0)


def bare_images_per_second(model: torch.nn.Module, split: ArraySplit, protocol: Protocol,
                           options: EngineOptions) -> float:
    """Images/s of a minimal hand-written loop with the same model, data, transform, batch and precision."""
    runtime = resolve_runtime(options)  # the same device / autocast dtype / memory format decisions
    device, cuda = runtime.device, runtime.device.type == "cuda"
    _sync(device)
    t0 = time.perf_counter()
    model.to(device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if protocol.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum,
                                                     weight_decay=protocol.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=protocol.lr, weight_decay=protocol.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.use_scaler)
    workers = auto_workers(device, options.num_workers)
    loader = DataLoader(SplitDataset(split, build_transform(protocol, train=True)), batch_size=protocol.batch_size,
                        shuffle=True, drop_last=len(split) > protocol.batch_size, num_workers=workers,
                        pin_memory=cuda, persistent_workers=workers > 0)
    amp = (torch.autocast(device.type, dtype=runtime.amp_dtype) if runtime.amp_dtype is not None
           else contextlib.nullcontext())
    model.train()
    n = 0
    for _epoch in range(protocol.epochs):
        for images, labels, idx in loader:
            images = images.to(device, non_blocking=True)
            if runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch = Batch(images, labels.to(device, non_blocking=True), idx.to(device, non_blocking=True))
            with amp:
                out = model(images)
            loss, _parts = model.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            n += len(images)
    _sync(device)
    return n / (time.perf_counter() - t0)


@dataclass
class Comparison:
    harness: float
    bare: float
    harness_all: list[float]
    bare_all: list[float]

    @property
    def ratio(self) -> float:
        return self.harness / self.bare

    def as_dict(self) -> dict[str, Any]:
        return {"harness_images_per_s": round(self.harness, 2), "bare_images_per_s": round(self.bare, 2),
                "ratio": round(self.ratio, 4), "harness_rounds": [round(v, 2) for v in self.harness_all],
                "bare_rounds": [round(v, 2) for v in self.bare_all]}


def compare(spec: MethodSpec, split: ArraySplit, protocol: Protocol, options: EngineOptions,
            rounds: int = 3, warmup: bool = True) -> Comparison:
    """Best-of-``rounds`` images/s of the harness and of the bare loop, alternating (after one warm-up each)."""
    options = EngineOptions(**{**options.to_dict(), "progress": False, "checkpoint": False})
    template = build_model(spec, protocol, split)
    fresh = lambda: copy.deepcopy(template)  # noqa: E731 - the same initial weights for every call
    if warmup:
        harness_images_per_second(fresh(), split, protocol, options)
        bare_images_per_second(fresh(), split, protocol, options)
    h, b = [], []
    for _ in range(rounds):
        h.append(harness_images_per_second(fresh(), split, protocol, options))
        b.append(bare_images_per_second(fresh(), split, protocol, options))
    return Comparison(max(h), max(b), h, b)
