"""The plugin contract check: a method's model built and driven once on a tiny random batch, on the CPU.

``fgbench check-plugin NAME`` runs it, and :func:`fgbench.engine.grid.run_grid`
runs it once per method before that method's first job trains, so that a
broken contract is one line before training instead of a traceback after it
(issue #15).  What is checked is what the harness relies on
(:class:`fgbench.methods.HashingModel`; docs/plugins.md):

* ``config``: every field of the config survives the ``--set`` round trip
  (value -> string -> :meth:`~fgbench.methods.MethodSpec.make_config` -> equal);
* ``build``: ``spec.build(ctx)`` returns a :class:`~fgbench.methods.HashingModel`;
* ``loss``: after ``on_train_start``, ``loss(forward(images), batch)`` returns
  ``(scalar tensor, {name: tensor})`` with a loss that backpropagates into some
  parameter (the training loop's ``loss, parts = model.loss(...)``;
  ``loss.backward()``; a non-finite loss is left to the training loop, which
  names its likely cause);
* ``encode``: in eval mode a floating tensor of shape ``(batch, bits)``, finite,
  identical when called twice, and connected to the parameters by the autograd
  graph (the cost profile backpropagates through it to find the parameters the
  encode path uses; ``torch.sign`` keeps the graph, ``detach`` cuts it);
* ``cost``: :func:`fgbench.metrics.cost.encode_cost` works on the model (checked when ``encode`` passed).

Every check runs (a failing one does not hide the others, unless it leaves
nothing to check: no model, no training output); each failure is one line
``method 'x': <what>: expected ..., got ...``.  The global RNG state is left
as it was.  The model is built with ``BuildContext.dataset ==`` :data:`CHECK_DATASET`
so that a plugin with side effects (logging, fault injection) can tell the
check from a job.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from fgbench.errors import described
from fgbench.methods import Batch, BuildContext, HashingModel, MethodSpec, TrainContext
from fgbench.metrics.cost import encode_cost
from fgbench.protocol import Protocol

CHECK_DATASET = "plugin-check"  # BuildContext.dataset of the check's model
CHECK_BITS = 8
CHECK_INPUT_SIZE = 64
CHECK_BATCH = 4
CHECK_CLASSES = 4
CHECK_TRAIN = 8


@dataclass(frozen=True)
class PluginCheck:
    """The outcome of :func:`check_method`: one line per failure (empty: the contract holds) and the seconds taken."""

    method: str
    failures: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """All failures in one line (the grid's FAILED reason)."""
        if self.ok:
            return f"method {self.method!r}: plugin check passed"
        rest = f" (+{len(self.failures) - 1} more: fgbench check-plugin {self.method})" if len(self.failures) > 1 else ""
        return f"plugin check failed: {self.failures[0]}{rest}"


def set_string(value: Any) -> str:
    """``value`` as it would be written after ``--set METHOD.KEY=`` (tuples comma-separated, None as ``none``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(set_string(v) for v in value)
    return str(value)


def _show(value: Any) -> str:
    """A short description of what came back: a tensor's type, shape and dtype, else the type and repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({str(value.dtype).replace('torch.', '')})"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: ({', '.join(type(v).__name__ for v in value[:4])})"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def config_round_trip(spec: MethodSpec, config: Any) -> list[str]:
    """What does not survive ``--set``: one line per config field whose string form reads back as another value."""
    problems = []
    for f in dataclasses.fields(config):
        if not f.init:  # not settable at all (derived in __post_init__)
            continue
        value = getattr(config, f.name)
        text = set_string(value)
        try:
            back = getattr(spec.make_config({f.name: text}), f.name)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            problems.append(f"config field {f.name} = {value!r} does not round-trip through --set "
                            f"{spec.name}.{f.name}={text}: expected the same value, got {described(exc)}")
            continue
        if back != value or type(back) is not type(value):
            problems.append(f"config field {f.name} = {value!r} does not round-trip through --set "
                            f"{spec.name}.{f.name}={text}: expected {value!r}, got {back!r}")
    return problems


def check_context(spec: MethodSpec, config: Any = None, backbone: str = "resnet18", bits: int = CHECK_BITS,
                  input_size: int = CHECK_INPUT_SIZE) -> BuildContext:
    """The small random-init :class:`BuildContext` the check builds ``spec``'s model with."""
    labels = np.arange(CHECK_TRAIN) % CHECK_CLASSES
    protocol = Protocol(name="check", backbone=backbone, weights="random", input_size=input_size,
                        resize_size=input_size, bits=(bits,), batch_size=CHECK_BATCH, epochs=1)
    return BuildContext.from_protocol(protocol, bits, labels, CHECK_CLASSES,
                                      config if config is not None else spec.make_config(), CHECK_DATASET, 0)


def check_method(spec: MethodSpec, config: Any = None, backbone: str = "resnet18", bits: int = CHECK_BITS,
                 input_size: int = CHECK_INPUT_SIZE) -> PluginCheck:
    """Check ``spec``'s contract on the CPU (random weights, a batch of :data:`CHECK_BATCH` images).

    ``config`` is the config to build with (default: the paper defaults);
    the global RNG state is restored afterwards.
    """
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        failures = _run_checks(spec, config, backbone, bits, input_size)
    prefix = f"method {spec.name!r}: "
    return PluginCheck(spec.name, tuple(prefix + f for f in failures), time.perf_counter() - start)


def _run_checks(spec: MethodSpec, config: Any, backbone: str, bits: int, input_size: int) -> list[str]:
    failures: list[str] = []

    def attempt(what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, fn()
        except Exception as exc:  # noqa: BLE001 - a plugin's exception is a finding, reported in one line
            failures.append(f"{what} raised {described(exc)}")
            return False, None

    ok, config = attempt("make_config()", lambda: config if config is not None else spec.make_config())
    if not ok:
        return failures
    failures += config_round_trip(spec, config)
    ctx = check_context(spec, config, backbone, bits, input_size)
    ok, model = attempt("build(ctx)", lambda: spec.build(ctx))
    if not ok:
        return failures
    if not isinstance(model, HashingModel):
        failures.append(f"build(ctx): expected a fgbench.HashingModel, got {_show(model)}")
        return failures
    model.bits = bits
    model.to("cpu")
    g = torch.Generator().manual_seed(0)
    train_images = torch.randn(CHECK_TRAIN, 3, input_size, input_size, generator=g)
    labels = torch.as_tensor(ctx.train_labels).long()
    indices = torch.arange(CHECK_BATCH)
    batch = Batch(train_images[:CHECK_BATCH], labels[:CHECK_BATCH], indices)

    def map_train(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(train_images).float()
        finally:
            model.train(was)

    tctx = TrainContext(device=torch.device("cpu"), epochs=1, train_labels=labels,
                        encode_train=lambda: map_train(model.encode), log=lambda name, value: None,
                        map_train=map_train)
    if attempt("on_train_start(ctx)", lambda: model.on_train_start(tctx))[0]:
        failures += _check_training_step(model, batch, attempt)
    before = len(failures)
    failures += _check_encode(model, batch.images, bits, attempt)
    if len(failures) > before:  # the cost profile runs encode: its failure would repeat the one above
        return failures
    ok, cost = attempt("cost profiling (encode_cost)", lambda: encode_cost(model, input_size))
    if ok and not cost.params_m > 0:
        failures.append(f"cost profiling: expected encode to use some parameters, got {cost.params_m:g} M")
    return failures


def _check_training_step(model: HashingModel, batch: Batch, attempt: Callable[..., tuple[bool, Any]]) -> list[str]:
    failures: list[str] = []
    model.train()
    model.zero_grad(set_to_none=True)
    ok, outputs = attempt("forward(images)", lambda: model(batch.images))
    if not ok:
        return failures
    ok, result = attempt("loss(outputs, batch)", lambda: model.loss(outputs, batch))
    if not ok:
        return failures
    expected = "(scalar loss tensor, {name: tensor})"
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        failures.append(f"loss(outputs, batch): expected {expected}, got {_show(result)}")
        return failures
    loss, parts = result
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or loss.dim() > 1:
        failures.append(f"loss(outputs, batch)[0]: expected a scalar loss tensor, got {_show(loss)}")
        return failures
    if not isinstance(parts, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in parts.items()):
        failures.append(f"loss(outputs, batch)[1]: expected a mapping {{name: tensor}} (the logged components), "
                        f"got {_show(parts) if not isinstance(parts, Mapping) else _mapping_types(parts)}")
    if not loss.requires_grad:
        failures.append("loss: expected a tensor connected to the parameters (requires_grad), "
                        "got one that does not require grad (detached?)")
        return failures
    ok, _ = attempt("loss.backward()", lambda: loss.reshape(()).backward())
    if ok and not any(p.grad is not None for p in model.parameters()):
        failures.append("loss.backward(): expected a gradient on some parameter, got none")
    model.zero_grad(set_to_none=True)
    return failures


def _mapping_types(parts: Mapping[Any, Any]) -> str:
    return "{" + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(parts.items())[:4]) + "}"


def _check_encode(model: HashingModel, images: torch.Tensor, bits: int,
                  attempt: Callable[..., tuple[bool, Any]]) -> list[str]:
    failures: list[str] = []
    model.eval()
    ok, first = attempt("encode(images) in eval mode", lambda: model.encode(images))
    if not ok:
        return failures
    expected_shape = (images.shape[0], bits)
    if not isinstance(first, torch.Tensor):
        failures.append(f"encode(images): expected a tensor of shape {expected_shape}, got {_show(first)}")
        return failures
    if tuple(first.shape) != expected_shape:
        failures.append(f"encode(images): expected shape (batch, bits) = {expected_shape}, got {tuple(first.shape)}")
    if not first.is_floating_point():
        failures.append(f"encode(images): expected real-valued (floating) codes, got dtype "
                        f"{str(first.dtype).replace('torch.', '')}")
    elif not bool(torch.isfinite(first.detach()).all()):
        failures.append("encode(images): expected finite values, got inf or nan")
    if not first.requires_grad:
        failures.append("encode(images): expected an output connected to the parameters (the cost profile "
                        "backpropagates through it), got a tensor that does not require grad (detached or under "
                        "no_grad?)")
    else:
        ok, _ = attempt("encode(images).sum().backward()", lambda: first.float().sum().backward())
        if ok and not any(p.grad is not None for p in model.parameters()):
            failures.append("encode(images): expected a gradient path to some parameter, got none")
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        ok, second = attempt("encode(images) (second call)", lambda: model.encode(images))
    if ok and isinstance(second, torch.Tensor) and second.shape == first.shape and first.is_floating_point():
        a, b = first.detach().float(), second.detach().float()
        if not (torch.allclose(a, b, rtol=1e-5, atol=1e-6) and torch.equal(a.sign(), b.sign())):
            diff = float((a - b).abs().max())
            failures.append(f"encode(images) in eval mode: expected the same codes on a second call, "
                            f"got values differing by up to {diff:.3g}")
    return failures


def check_grid_methods(registry: Any, configs: Mapping[str, Any], jobs: Sequence[Any],
                       warn: Callable[[str], None]) -> dict[str, str]:
    """The contract check of every method with a job in ``jobs``, once, before any of them trains.

    Each method is checked with the backbone and bit length of its first job,
    at that job's input size or :data:`CHECK_INPUT_SIZE`, whichever is
    smaller, and its run config (``configs[name]``).  Every failure line is
    passed to ``warn``; returns method name -> the one-line reason its jobs
    fail with (:meth:`PluginCheck.summary`), for the methods that failed.
    """
    first: dict[str, Any] = {}
    for job in jobs:
        first.setdefault(job.method, job)
    refused: dict[str, str] = {}
    for name, job in sorted(first.items()):
        result = check_method(registry.methods.get(name), configs[name], job.protocol.backbone, job.bits,
                              min(job.protocol.input_size, CHECK_INPUT_SIZE))
        if not result.ok:
            for line in result.failures:
                warn(f"plugin check: {line}")
            refused[name] = result.summary()
    return refused
