"""The training loop shared by every method, and encoding to codes.

One loop for all methods: the protocol's optimizer, schedule, augmentation and
epochs; the method supplies only ``forward``/``loss``/``encode`` and optional
lifecycle hooks.

Speed (docs/performance.md): per step there is no host synchronisation —
batches come from pinned memory with non-blocking copies, losses are summed
on the device and read every ``log_every`` steps (progress bar only) and at
epoch end; bf16 autocast (fp16 + GradScaler without bf16), channels-last
tensors, cuDNN autotuning and fused optimizers on CUDA; optional
``torch.compile`` and device-side augmentation (:mod:`fgbench.data.transforms`).

Several processes (:mod:`fgbench.engine.distributed`): the forward runs under
DistributedDataParallel, each rank loads its slice of every global batch,
code memories are kept identical across ranks and rank 0 alone writes
checkpoints.

Resume: a checkpoint (model with its buffers — method memories included —,
optimizer, scheduler, GradScaler, every rank's RNG states, the loader's
generator) is written atomically at the end of an epoch when at least
``checkpoint_every`` seconds (default 10) and at least nine times the last
checkpoint's writing time have passed since the last one (so writing costs
at most about a tenth of the training time); ``checkpoint_every=0`` writes
after every epoch.  A rerun of the job continues after the last saved epoch
and, with ``--deterministic`` on the CPU, ends with the same weights as an
uninterrupted run.  A checkpoint that cannot be used (unreadable, ``{}``,
other settings, other shapes, non-finite values) is reported in a warning,
deleted, and the job starts from scratch.  A checkpoint that cannot be
written (full disk) is reported in a warning and training goes on without it.

Per-epoch evaluation (``epoch_eval``): after each epoch's hooks the runner's
callback returns named values (the validation mAP of ``selection=val``, the
test mAP of ``--trace-test-map``), appended to ``TrainResult.traces``; with
``select_on`` the weights of the epoch with the highest value of that trace
(the first such epoch on ties) are kept in memory and in the checkpoint and
loaded into the model when training ends.  ADSH-style subsets
(``protocol.epoch_sample``): :mod:`fgbench.engine.sampling`.  The optimizer
steps taken are counted (``TrainResult.steps``, resumed from the checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fgbench.data.base import Split
from fgbench.data.loader import SplitDataset, make_loader
from fgbench.data.transforms import DeviceAugment, build_transform, pad_collate, uint8_transform
from fgbench.engine.device import autocast_for, batch_images, loader_options_for
from fgbench.engine.encode import encode_split_sharded
from fgbench.engine import distributed
from fgbench import _faults as faults
from fgbench.engine.checkpoint import (CheckpointError, atomic_torch_save, checkpoint_problem, read_checkpoint,
                                       rng_state, set_rng_state)
from fgbench.engine.device import EngineError, EngineOptions, Runtime
from fgbench.engine.optim import build_optimizer, build_scheduler
from fgbench.engine.sampling import ResampledBatchSampler
from fgbench.methods import Batch, HashingModel, TrainContext
from fgbench.protocol import Protocol
from fgbench.errors import TrainingError

CHECKPOINT_FORMAT = 2
#: With ``checkpoint_every > 0``, the least time between checkpoints is also this many times the last write's.
CHECKPOINT_COST_FACTOR = 9.0


class NonFiniteLossError(TrainingError):
    """An epoch's mean loss is NaN or infinite (``epoch``, ``losses``: the epoch's means)."""

    def __init__(self, epoch: int, losses: dict[str, float]) -> None:
        self.epoch = epoch
        self.losses = dict(losses)
        parts = ", ".join(f"{k} {v:.4g}" for k, v in sorted(losses.items()))
        super().__init__(f"non-finite loss at epoch {epoch} ({parts}); lower the learning rate (--lr)")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    """What the loop measured: per-epoch mean losses, logged values, seconds."""

    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    resumed_from_epoch: int = 0
    world_size: int = 1
    loader_workers: int = 0
    #: optimizer steps taken by this rank over the whole run (resumed runs included)
    steps: int = 0
    #: per-epoch values of ``epoch_eval`` (e.g. ``{"val_map": [...], "test_map": [...]}``), one per epoch
    traces: dict[str, list[float]] = field(default_factory=dict)
    #: with ``select_on``: the 0-based epoch whose weights the model holds at the end
    best_epoch: int | None = None


def checkpoint_fingerprint(meta: dict[str, Any] | None) -> str:
    """A short hash of what a checkpoint must match to be resumed (protocol, method config, seed)."""
    return hashlib.sha256(json.dumps(meta or {}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train_loader(train_split: Split, protocol: Protocol, runtime: Runtime, options: EngineOptions,
                  seed: int) -> tuple[DataLoader, torch.Generator, DeviceAugment | None]:
    """The shuffled training loader of this rank (its slice of each global batch) and the device augmenter.

    With ``protocol.epoch_sample > 0`` the batches come from a
    :class:`~fgbench.engine.sampling.ResampledBatchSampler` (call its
    ``set_epoch`` before each epoch; the loader's ``batch_sampler``).
    """
    if options.gpu_augment:
        dataset = SplitDataset(train_split, uint8_transform(protocol))
        collate = pad_collate
        augment: DeviceAugment | None = DeviceAugment(protocol, train=True, device=runtime.device,
                                                      seed=seed * 1000 + runtime.rank + 1,
                                                      channels_last=runtime.channels_last)
    else:
        dataset = SplitDataset(train_split, build_transform(protocol, train=True))
        collate = None
        augment = None
    generator = torch.Generator().manual_seed(seed)
    try:
        sampler: Any
        if protocol.epoch_sample > 0:
            sampler = ResampledBatchSampler(len(dataset), protocol.epoch_sample, protocol.resample_every, seed,
                                            protocol.batch_size, generator, rank=runtime.rank,
                                            world=runtime.world_size)
        else:
            sampler = distributed.GlobalBatchSampler(len(dataset), protocol.batch_size, generator,
                                                     drop_last=len(dataset) > protocol.batch_size,
                                                     rank=runtime.rank, world=runtime.world_size)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    loader = make_loader(dataset, loader_options_for(runtime, options), batch_sampler=sampler, generator=generator,
                         collate_fn=collate)
    return loader, generator, augment


def _local_state(augment: DeviceAugment | None) -> dict[str, Any]:
    state: dict[str, Any] = {"rng": rng_state()}
    if augment is not None:
        state["augment"] = augment.state()
    return state


def train_model(
    model: HashingModel,
    train_split: Split,
    protocol: Protocol,
    runtime: Runtime,
    options: EngineOptions,
    seed: int,
    checkpoint_path: Path | None = None,
    desc: str = "train",
    checkpoint_meta: dict[str, Any] | None = None,
    warn: Callable[[str], None] = _stderr,
    epoch_eval: Callable[[HashingModel], dict[str, float]] | None = None,
    select_on: str | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_split`` under ``protocol``; resumes from ``checkpoint_path``.

    ``checkpoint_meta`` (JSON-able: protocol, method config, seed) is hashed
    into the checkpoint; a checkpoint written for other settings, or damaged,
    is discarded with a ``warn`` line (on rank 0) and training starts over.
    ``epoch_eval`` is called on every rank after each epoch (model in eval
    mode is its business; training mode is restored after it) and its values
    are traced; ``select_on`` names the traced value whose best epoch's
    weights the model ends with (module docstring).

    Raises:
        NonFiniteLossError: an epoch's mean loss is NaN or infinite.
    """
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    result = TrainResult(world_size=runtime.world_size)
    if options.sync_bn and runtime.distributed:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loader_options = loader_options_for(runtime, options)
    loader, generator, augment = _train_loader(train_split, protocol, runtime, options, seed)
    result.loader_workers = loader_options.num_workers
    sampler = loader.batch_sampler if isinstance(loader.batch_sampler, ResampledBatchSampler) else None
    best: dict[str, Any] = {}
    optimizer = build_optimizer(model, protocol, fused=runtime.device.type == "cuda")
    scheduler = build_scheduler(optimizer, protocol)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.use_scaler)
    labels_t = torch.as_tensor(train_split.labels, dtype=torch.long, device=runtime.device)

    def log(name: str, value: float) -> None:
        result.logs.setdefault(name, []).append(float(value))

    ctx = TrainContext(
        device=runtime.device,
        epochs=protocol.epochs,
        train_labels=labels_t,
        encode_train=lambda: encode_split_sharded(model, train_split, protocol, runtime, loader_options,
                                                  gpu_augment=options.gpu_augment, desc="encode train"),
        log=log,
        map_train=lambda fn: encode_split_sharded(model, train_split, protocol, runtime, loader_options,
                                                  gpu_augment=options.gpu_augment, desc="map train", fn=fn),
    )
    fingerprint = checkpoint_fingerprint(checkpoint_meta)
    memory_sync = distributed.MemorySync(model)

    start_epoch = 0
    with memory_sync:
        # hooks first, so buffers they create exist when a checkpoint is loaded over them
        model.on_train_start(ctx)
    if checkpoint_path is not None:
        start_epoch = _resume(checkpoint_path, fingerprint, protocol.epochs, model, optimizer, scheduler, scaler,
                              generator, augment, result, runtime, warn, best)

    step_fn: Callable[..., Any] = model
    if runtime.distributed:
        step_fn = distributed.wrap_ddp(model, runtime.device, options.find_unused_parameters)
    if options.compile:
        step_fn = torch.compile(step_fn)

    t0 = last_save = time.perf_counter()
    save_cost = 0.0
    n_images = 0
    model.train()
    show = options.progress and runtime.is_main
    epochs = tqdm(range(start_epoch, protocol.epochs), desc=desc, disable=not show, leave=False,
                  initial=start_epoch, total=protocol.epochs)
    with memory_sync:
        for epoch in epochs:
            sums: dict[str, torch.Tensor] = {}
            steps = 0
            if sampler is not None:
                sampler.set_epoch(epoch)
            for step, data in enumerate(loader):
                images, labels, idx = batch_images(data, runtime, augment)
                batch = Batch(images, labels.to(runtime.device, non_blocking=True),
                              idx.to(runtime.device, non_blocking=True))
                with autocast_for(runtime):
                    outputs = _forward(step_fn, batch.images)
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
                if show and options.log_every and (step + 1) % options.log_every == 0:
                    epochs.set_postfix(loss=f"{(sums['loss'] / steps).item():.4f}")
            means = _epoch_means(sums, steps, runtime)
            if not all(np.isfinite(v) for v in means.values()):
                raise NonFiniteLossError(epoch, means)
            result.epoch_losses.append(means)
            epochs.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
            scheduler.step()
            distributed.broadcast_norm_buffers(model)
            result.steps += steps
            model.on_epoch_end(epoch, ctx)
            if epoch_eval is not None:
                _trace_epoch(model, epoch, epoch_eval, select_on, result, best)
            model.train()
            faults.fault_point("epoch_end")
            if checkpoint_path is not None and options.checkpoint and epoch + 1 < protocol.epochs:
                due = checkpoint_due(time.perf_counter() - last_save, options.checkpoint_every, save_cost)
                if distributed.broadcast_object(due):
                    started = time.perf_counter()
                    _save_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, generator, augment,
                                     epoch, result, fingerprint, runtime, warn, best)
                    last_save = time.perf_counter()
                    save_cost = last_save - started
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    if select_on is not None and "state" in best:
        model.load_state_dict(best["state"])
        result.best_epoch = int(best["epoch"])
    result.seconds = time.perf_counter() - t0
    total_images = n_images * runtime.world_size
    result.images_per_second = total_images / result.seconds if result.seconds > 0 else 0.0
    return result


def _trace_epoch(model: HashingModel, epoch: int, epoch_eval: Callable[[HashingModel], dict[str, float]],
                 select_on: str | None, result: TrainResult, best: dict[str, Any]) -> None:
    """Append ``epoch_eval``'s values to the traces; keep a CPU copy of the weights when ``select_on`` improves."""
    with torch.no_grad():
        values = epoch_eval(model)
    for name, value in values.items():
        result.traces.setdefault(name, []).append(float(value))
    if select_on is None:
        return
    score = float(values[select_on])
    if "score" not in best or score > best["score"]:  # strictly better: the first best epoch is kept
        best.update(score=score, epoch=epoch,
                    state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})


def checkpoint_due(elapsed: float, every: float, last_cost: float) -> bool:
    """Whether to write a checkpoint ``elapsed`` seconds after the last one (or the start of training).

    ``every <= 0``: always.  Otherwise when at least ``every`` seconds and at
    least ``CHECKPOINT_COST_FACTOR`` times the last write's ``last_cost``
    seconds have passed, so writing takes at most about a tenth of the time.
    """
    if every <= 0:
        return True
    return elapsed >= max(every, CHECKPOINT_COST_FACTOR * last_cost)


def _forward(step_fn: Callable[..., Any], images: torch.Tensor) -> Any:
    try:
        return step_fn(images)
    except RuntimeError as exc:
        if "find_unused_parameters" in str(exc):
            raise TrainingError("DDP: this method's forward leaves some parameters without gradients; "
                                "rerun with --find-unused-parameters") from exc
        raise


def _epoch_means(sums: dict[str, torch.Tensor], steps: int, runtime: Runtime) -> dict[str, float]:
    """Mean of each loss over the epoch's steps (and ranks): the one host sync of an epoch."""
    if not sums:
        return {}
    names = sorted(sums)
    stacked = torch.stack([sums[k] for k in names]) / max(steps, 1)
    stacked = distributed.all_reduce_mean(stacked)
    return dict(zip(names, (float(v) for v in stacked.tolist())))


def _resume(path: Path, fingerprint: str, epochs: int, model: HashingModel, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: torch.amp.GradScaler, generator: torch.Generator, augment: DeviceAugment | None,
            result: TrainResult, runtime: Runtime, warn: Callable[[str], None],
            best: dict[str, Any] | None = None) -> int:
    """Load the checkpoint at ``path`` into the training state; the epoch to start from (0 without one).

    A checkpoint that cannot be used is discarded (warning, file deleted) and
    everything it may have half-loaded is put back, so the job starts from
    scratch exactly as without a checkpoint.  Under several processes the
    ranks agree: if any rank cannot use it, none does.
    """
    problem: str | None = None
    state: dict[str, Any] | None = None
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        problem = str(exc)
    if state is not None:
        problem = checkpoint_problem(state, fingerprint, epochs, model.state_dict())
    fresh = _snapshot(model, optimizer, scheduler, scaler, generator, augment) if state is not None else None
    if state is not None and problem is None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            ranks = state.get("rank_states") or [{"rng": state["rng"]}]
            mine = ranks[runtime.rank] if runtime.rank < len(ranks) else ranks[0]
            set_rng_state(mine["rng"])
            if augment is not None and "augment" in mine:
                augment.set_state(mine["augment"])
            generator.set_state(state["loader_rng"])
            epoch_losses = [dict(v) for v in state["epoch_losses"]]
            logs = {str(k): [float(x) for x in v] for k, v in state["logs"].items()}
            steps = int(state.get("steps", 0))
            traces = {str(k): [float(x) for x in v] for k, v in state.get("traces", {}).items()}
            saved_best = dict(state.get("best") or {})
        except Exception as exc:  # noqa: BLE001 - any inconsistency: the checkpoint is unusable
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            problem = f"does not fit this job ({type(exc).__name__}{': ' + first if first else ''})"
    problems = [p for p in distributed.gather_objects(problem) if p]
    if problems and fresh is not None:
        _restore(fresh, model, optimizer, scheduler, scaler, generator, augment)
    if problems:
        if runtime.is_main:
            warn(f"warning: discarding checkpoint {path}: {problems[0]}; the job starts from scratch")
            path.unlink(missing_ok=True)
        return 0
    if state is None:
        return 0
    result.epoch_losses = epoch_losses
    result.logs = logs
    result.steps = steps
    result.traces = traces
    if best is not None:
        best.clear()
        best.update(saved_best)
    result.resumed_from_epoch = int(state["epoch"]) + 1
    return result.resumed_from_epoch


def _snapshot(model: HashingModel, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
              generator: torch.Generator, augment: DeviceAugment | None) -> dict[str, Any]:
    """Copies of the freshly initialised training state (to undo a half-loaded checkpoint)."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
        "scaler": copy.deepcopy(scaler.state_dict()),
        "rng": rng_state(),
        "loader_rng": generator.get_state(),
        "augment": augment.state() if augment is not None else None,
    }


def _restore(snapshot: dict[str, Any], model: HashingModel, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: torch.amp.GradScaler, generator: torch.Generator, augment: DeviceAugment | None) -> None:
    model.load_state_dict(snapshot["model"])
    optimizer.state.clear()
    optimizer.load_state_dict(snapshot["optimizer"])
    scheduler.load_state_dict(snapshot["scheduler"])
    scaler.load_state_dict(snapshot["scaler"])
    set_rng_state(snapshot["rng"])
    generator.set_state(snapshot["loader_rng"])
    if augment is not None and snapshot["augment"] is not None:
        augment.set_state(snapshot["augment"])


def _save_checkpoint(path: Path, model: HashingModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: torch.amp.GradScaler, generator: torch.Generator, augment: DeviceAugment | None,
                     epoch: int, result: TrainResult, fingerprint: str, runtime: Runtime,
                     warn: Callable[[str], None] = _stderr, best: dict[str, Any] | None = None) -> None:
    """Every rank's RNG states are gathered; rank 0 writes the file atomically.

    A write that fails (full disk, quota) leaves the previous checkpoint as it
    was and no temporary file; training goes on after a warning naming the
    file (the job is then resumable only from the previous checkpoint).
    """
    rank_states = distributed.gather_objects(_local_state(augment))
    if not runtime.is_main:
        return
    try:
        _write_checkpoint(path, model, optimizer, scheduler, scaler, generator, epoch, result, fingerprint,
                          runtime, rank_states, best)
    except OSError as exc:
        warn(f"warning: cannot write checkpoint {path} ({exc.strerror or exc}); training goes on without it "
             f"(an interruption now loses the epochs since the last checkpoint)")


def _write_checkpoint(path: Path, model: HashingModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                      scaler: torch.amp.GradScaler, generator: torch.Generator, epoch: int, result: TrainResult,
                      fingerprint: str, runtime: Runtime, rank_states: list[Any],
                      best: dict[str, Any] | None = None) -> None:
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rank_states": rank_states,
            "world_size": runtime.world_size,
            "loader_rng": generator.get_state(),
            "epoch": epoch,
            "epoch_losses": result.epoch_losses,
            "logs": result.logs,
            "steps": result.steps,
            "traces": result.traces,
            "best": dict(best or {}),
        },
        path,
    )
