"""The training loop shared by every method, and encoding to codes.

One loop for all methods: the protocol's optimizer, schedule, augmentation and
epochs; the method supplies only ``forward``/``loss``/``encode`` and optional
lifecycle hooks.  Per step there is no host synchronisation: losses are
accumulated on the device and read every ``log_every`` steps and at epoch end.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fgbench.data.base import Split
from fgbench.data.loader import LoaderOptions, SplitDataset, build_transform, make_loader
from fgbench.engine.checkpoint import atomic_torch_save, load_checkpoint, rng_state, set_rng_state
from fgbench.engine.device import EngineOptions, Runtime
from fgbench.engine.optim import build_optimizer, build_scheduler
from fgbench.methods import Batch, HashingModel, TrainContext
from fgbench.protocol import Protocol


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad method output); message says which."""


@dataclass
class TrainResult:
    """What the loop measured: per-epoch mean losses, logged values, seconds."""

    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    resumed_from_epoch: int = 0


def _autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.amp_dtype)


def _to_device(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    images = images.to(runtime.device, non_blocking=True)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def encode_split(
    model: HashingModel,
    split: Split,
    protocol: Protocol,
    runtime: Runtime,
    loader_options: LoaderOptions = LoaderOptions(),
    progress: bool = False,
    desc: str = "encode",
) -> torch.Tensor:
    """Real-valued codes ``(len(split), bits)`` of ``model.encode`` on ``split`` (eval transform), on the device."""
    was_training = model.training
    model.eval()
    dataset = SplitDataset(split, build_transform(protocol, train=False))
    loader = make_loader(dataset, protocol.eval_batch_size, shuffle=False, options=loader_options)
    chunks = []
    for images, _labels, _idx in tqdm(loader, desc=desc, leave=False, disable=not progress):
        with _autocast(runtime):
            codes = model.encode(_to_device(images, runtime))
        chunks.append(codes.float())
    model.train(was_training)
    codes = torch.cat(chunks)
    if codes.ndim != 2 or codes.shape[1] != model.bits:
        raise TrainingError(f"{type(model).__name__}.encode returned shape {tuple(codes.shape)}, expected (n, {model.bits})")
    return codes


def train_model(
    model: HashingModel,
    train_split: Split,
    protocol: Protocol,
    runtime: Runtime,
    options: EngineOptions,
    seed: int,
    checkpoint_path: Path | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` on ``train_split`` under ``protocol``; resumes from ``checkpoint_path``."""
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    loader_options = LoaderOptions(
        num_workers=options.num_workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=options.num_workers > 0,
    )
    dataset = SplitDataset(train_split, build_transform(protocol, train=True))
    drop_last = len(dataset) > protocol.batch_size
    loader = make_loader(dataset, protocol.batch_size, shuffle=True, options=loader_options, seed=seed, drop_last=drop_last)
    optimizer = build_optimizer(model, protocol)
    scheduler = build_scheduler(optimizer, protocol)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.use_scaler)
    result = TrainResult()
    labels_t = torch.as_tensor(train_split.labels, dtype=torch.long, device=runtime.device)

    def log(name: str, value: float) -> None:
        result.logs.setdefault(name, []).append(float(value))

    ctx = TrainContext(
        device=runtime.device,
        epochs=protocol.epochs,
        train_labels=labels_t,
        encode_train=lambda: encode_split(model, train_split, protocol, runtime, loader_options, desc="encode train"),
        log=log,
    )
    step_fn: Callable[..., Any] = model
    if options.compile:
        step_fn = torch.compile(model)

    start_epoch = 0
    state = load_checkpoint(checkpoint_path) if checkpoint_path else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        loader.generator.set_state(state["loader_rng"])
        result.epoch_losses = list(state["epoch_losses"])
        result.logs = {k: list(v) for k, v in state["logs"].items()}
        start_epoch = result.resumed_from_epoch = int(state["epoch"]) + 1
    else:
        model.on_train_start(ctx)

    t0 = time.perf_counter()
    n_images = 0
    model.train()
    epochs = tqdm(range(start_epoch, protocol.epochs), desc=desc, disable=not options.progress, leave=False,
                  initial=start_epoch, total=protocol.epochs)
    for epoch in epochs:
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for step, (images, labels, idx) in enumerate(loader):
            batch = Batch(_to_device(images, runtime), labels.to(runtime.device, non_blocking=True),
                          idx.to(runtime.device, non_blocking=True))
            with _autocast(runtime):
                outputs = step_fn(batch.images)
            loss, parts = model.loss(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            steps += 1
            n_images += len(images)
            for name, value in {"loss": loss, **parts}.items():
                v = value.detach().float()
                sums[name] = sums[name] + v if name in sums else v
            if options.log_every and (step + 1) % options.log_every == 0 and options.progress:
                epochs.set_postfix(loss=f"{(sums['loss'] / steps).item():.4f}")
        means = {k: float((v / max(steps, 1)).item()) for k, v in sums.items()}
        if not all(np.isfinite(v) for v in means.values()):
            raise TrainingError(f"epoch {epoch}: non-finite loss {means}; lower the learning rate (--lr)")
        result.epoch_losses.append(means)
        epochs.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
        scheduler.step()
        model.on_epoch_end(epoch, ctx)
        model.train()
        if checkpoint_path is not None and options.checkpoint and epoch + 1 < protocol.epochs:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "loader_rng": loader.generator.get_state(),
                    "epoch": epoch,
                    "epoch_losses": result.epoch_losses,
                    "logs": result.logs,
                },
                checkpoint_path,
            )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    result.seconds = time.perf_counter() - t0
    result.images_per_second = n_images / result.seconds if result.seconds > 0 else 0.0
    return result
