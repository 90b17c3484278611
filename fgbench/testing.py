"""Test helpers for fgbench itself and for plugin authors (public, stable).

* :func:`registered_plugin` — register a plugin object/module for one test;
  :func:`spec_plugin` makes one from method and dataset specs.
* :func:`tiny_embedded` — a tiny embedded dataset spec (CPU, seconds).
* :func:`build_context` / :func:`random_batch` — build a method's model on
  small random inputs and feed it a batch, to test shapes and losses.
* :func:`train_context` — a CPU :class:`~fgbench.TrainContext` for calling
  lifecycle hooks (``on_train_start``, ``on_epoch_end``) directly.
* :func:`autocast_loss` — forward under bf16 autocast (as on a GPU) and the
  loss, to check that a method computes its loss in float32.
* :func:`train_steps` — a few optimizer steps through the real harness loop
  pieces, returning the losses (to check they are finite and decreasing).
* :func:`train_on_tiny_embedded` — build a method and train it for a few
  epochs through the harness's own training loop on :func:`tiny_embedded`
  (lifecycle hooks and code-memory updates included); returns the model and
  the per-epoch mean losses.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from fgbench.data.base import DatasetSpec
from fgbench.data.embedded import EmbeddedConfig, embedded_spec
from fgbench.metrics.cost import Cost
from fgbench.metrics.cost import encode_cost as profile_encode
from fgbench.methods import Batch, BuildContext, HashingModel, MethodSpec, TrainContext
from fgbench.hookspecs import hookimpl
from fgbench._plugins import PluginHost, get_host, load_plugins, set_host
from fgbench.protocol import Protocol

TINY = EmbeddedConfig(genera=2, species=2, train_per_class=6, test_per_class=3, image_size=32, seed=0)


@contextlib.contextmanager
def registered_plugin(*plugins: Any, autoload: bool = False) -> Iterator[PluginHost]:
    """A fresh process-wide plugin host with the built-ins and ``plugins`` (entry points only if ``autoload``)."""
    previous = get_host()
    host = load_plugins(autoload=autoload, extra=plugins)
    set_host(host)
    try:
        yield host
    finally:
        set_host(previous)


def tiny_embedded(name: str = "tiny", cfg: EmbeddedConfig = TINY, **overrides: Any) -> DatasetSpec:
    """A tiny embedded dataset (4 classes, 24 train / 12 test images, 32 px) with a 1-epoch random-init protocol
    (one full pass; ResNet-10 as the embedded protocol)."""
    import dataclasses

    spec = embedded_spec(cfg, name=name)
    fair = dict(spec.fair_overrides)
    fair.update({"weights": "random", "epochs": 1, "epoch_sample": 0, "batch_size": 8, "bits": (8,),
                 "eval_batch_size": 16})
    fair.update(overrides)
    return dataclasses.replace(spec, fair_overrides=fair)


def build_context(spec: MethodSpec, bits: int = 12, num_classes: int = 4, num_train: int = 16,
                  input_size: int = 64, backbone: str = "resnet18", config: Any = None, seed: int = 0) -> BuildContext:
    """A BuildContext for small CPU tests (random-init backbone)."""
    labels = np.arange(num_train) % num_classes
    protocol = Protocol(backbone=backbone, weights="random", input_size=input_size,
                        resize_size=input_size + input_size // 8, bits=(bits,))
    return BuildContext.from_protocol(protocol, bits, labels, num_classes,
                                      config if config is not None else spec.config_cls(), "test", seed)


def random_batch(ctx: BuildContext, batch_size: int = 4, seed: int = 0) -> Batch:
    """A batch of random images with labels/indices consistent with ``ctx``."""
    g = torch.Generator().manual_seed(seed)
    size = ctx.protocol.input_size
    indices = torch.randperm(ctx.num_train, generator=g)[:batch_size]
    labels = torch.as_tensor(ctx.train_labels)[indices].long()
    return Batch(torch.randn(len(indices), 3, size, size, generator=g), labels, indices)


def train_steps(model: HashingModel, batch: Batch, steps: int = 5, lr: float = 1e-3) -> list[float]:
    """Run ``steps`` Adam steps on one fixed batch; return the loss after each (for monotonicity checks)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss, _parts = model.loss(model(batch.images), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def autocast_loss(model: HashingModel, batch: Batch, dtype: torch.dtype = torch.bfloat16
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training forward under CPU autocast (``dtype``), then ``model.loss`` outside it, as the harness does.

    Returns:
        ``(loss, parts)``: the loss tensor and the components dict exactly as
        ``model.loss`` returned them (tensors, graph attached); a test checks
        ``loss.dtype == torch.float32`` and that both are finite.
    """
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        outputs = model(batch.images)
    loss, parts = model.loss(outputs, batch)
    return loss, dict(parts)


def train_context(ctx: BuildContext, epochs: int = 1, log: Any = None,
                  model: HashingModel | None = None) -> TrainContext:
    """A CPU TrainContext for ``ctx``'s training labels; ``encode_train`` returns zeros, ``log(name, value)`` defaults to a no-op.

    ``map_train(fn)`` applies ``fn`` under ``torch.no_grad`` to a fixed
    "training split" of ``ctx.num_train`` random images of ``ctx``'s input
    size (the same on every call; ``map_train(lambda x: x)`` returns them,
    in index order) in batches of ``ctx.protocol.eval_batch_size`` and
    concatenates the float32 outputs; with ``model`` given, the model is in
    eval mode meanwhile and its mode is restored afterwards, as in the harness.
    """
    def map_train(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        size = ctx.protocol.input_size
        images = torch.randn(ctx.num_train, 3, size, size, generator=torch.Generator().manual_seed(0))
        was = model.training if model is not None else False
        if model is not None:
            model.eval()
        try:
            with torch.no_grad():
                return torch.cat([fn(chunk).float() for chunk in images.split(ctx.protocol.eval_batch_size)])
        finally:
            if model is not None:
                model.train(was)

    return TrainContext(device=torch.device("cpu"), epochs=epochs, train_labels=torch.as_tensor(ctx.train_labels),
                        encode_train=lambda: torch.zeros(ctx.num_train, ctx.bits),
                        log=log or (lambda name, value: None), map_train=map_train)


def encode_cost(model: torch.nn.Module, input_size: int = 224) -> Cost:
    """The cost ``fgbench profile`` and every run record report for ``model``: parameters the ``encode`` output
    depends on (M, ``.params_m``; ``.bare_params`` those held beside layers) and its multiply-accumulates on one
    ``3 x input_size^2`` image (G, ``.flops_g``).  For plugin tests that compare a model with a paper's cost table.
    """
    return profile_encode(model, input_size)


def train_on_tiny_embedded(spec: MethodSpec, epochs: int = 3, bits: int = 8, seed: int = 0,
                           config: dict[str, Any] | None = None, **protocol_overrides: Any
                           ) -> tuple[HashingModel, list[dict[str, float]]]:
    """Train ``spec``'s method on :func:`tiny_embedded` with the harness loop (CPU); the model and its epoch losses.

    The run is what ``fgbench run`` does for one job, without evaluation or
    a record: the protocol is the tiny dataset's ``fair`` protocol with
    ``epochs``/``bits`` and ``protocol_overrides`` applied; ``config``
    overrides fields of the method's config.

    Returns:
        ``(model, epoch_losses)``: the trained model (train mode, on the CPU)
        and one ``{name: mean}`` dict per epoch holding ``"loss"`` and every
        component ``loss`` returned — what a record stores as
        ``training["epoch_losses"]``.
    """
    from pathlib import Path

    from fgbench.engine.device import EngineOptions, resolve_runtime
    from fgbench.engine.runner import Job, JobRunner
    from fgbench.engine.train import train_model
    from fgbench.protocol import resolve_protocol

    dataset = tiny_embedded(epochs=epochs, bits=(bits,), **protocol_overrides)
    with registered_plugin(spec_plugin(f"{spec.name}-on-tiny", [spec], [dataset])) as host:
        protocol = resolve_protocol("fair", dataset.fair_overrides)
        options = EngineOptions(device="cpu", progress=False, checkpoint=False)
        runner = JobRunner(host.registry, Path("."), Path("."), options, {spec.name: dict(config or {})})
        data = runner.dataset(dataset.name)
        model, _spec, _config = runner.build_model(Job(spec.name, dataset.name, bits, seed, protocol), data)
        result = train_model(model, data.split("train"), protocol, resolve_runtime(options), options, seed)
    return model, result.epoch_losses


class _SpecPlugin:
    """The plugin object :func:`spec_plugin` returns."""

    def __init__(self, name: str, methods: Sequence[MethodSpec], datasets: Sequence[DatasetSpec]) -> None:
        self.__name__ = name
        self.methods, self.datasets = tuple(methods), tuple(datasets)

    @hookimpl
    def register_methods(self, register: Any) -> None:
        for spec in self.methods:
            register(spec)

    @hookimpl
    def register_datasets(self, register: Any) -> None:
        for spec in self.datasets:
            register(spec)


def spec_plugin(name: str, methods: Sequence[MethodSpec] = (), datasets: Sequence[DatasetSpec] = ()) -> Any:
    """A plugin object named ``name`` that registers the given method and dataset specs (for :func:`registered_plugin`)."""
    return _SpecPlugin(name, methods, datasets)
