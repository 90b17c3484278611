"""GPU benchmark at realistic scale (issue #18): one run, every number written as soon as it is measured.

Entry point: ``bash benchmarks/gpu_bench.sh`` (device run; ``--tiny`` for the
CPU smoke run).  This module can also be run directly::

    python benchmarks/gpu_bench.py --out DIR [--tiny] [--budget-s S] [--data-root DIR]
    python benchmarks/gpu_bench.py --out DIR --summarize [--note TEXT]   # rebuild summary.md from results.jsonl

What it does, most valuable first, each step its own *section* (skipped with
a recorded reason when the time budget no longer has room for it, cut off
when it overruns its own limit, its error recorded without stopping the
run):

1. ``environment``: GPU, torch, versions, which fgbench is imported.
2. ``data``: a synthetic fine-grained JPEG set in the official CUB layout
   (``make_cub_like.py``: 5,994 train / 5,794 test images, 200 classes,
   about 500 x 375), read by the official CUB reader (strict: CUB's sizes),
   then the decoded cache built as ``fgbench data prepare cub`` builds it
   and attached as ``fgbench run -d cub`` attaches it.
3. ``bare_dpsh``: a bare PyTorch loop on GPU-resident batches with the very
   model the harness trains (DPSH built by its plugin, ResNet-50 random
   init, batch 128, bf16 autocast, channels-last, fused SGD).
4. ``harness_dpsh_gpu_augment``: the harness on the real path (the engine of
   ``fgbench run -m dpsh -d cub --gpu-augment --set weights=random
   --batch-size 128``: ``JobRunner.build_model`` + ``train_model`` on the
   cached CUB split), steady state: the first epoch is warm-up, the rate is
   measured over the following epochs (several hundred steps) from
   per-epoch timestamps; ratio to the bare loop (goal >= 0.95).
5. loaders alone (each against the training rate; goal >= 1.2x): the
   harness loader from the decoded cache with ``--gpu-augment``; nvjpeg
   (``torchvision.io.decode_jpeg(device="cuda")`` of the JPEG files, resize
   and augmentation on the GPU); PIL workers (the harness loader on the
   JPEG files, CPU transform); later, more worker counts, the cache through
   the CPU transform, a pinned host uint8 cache and a GPU-resident one.
6. ``eval_codes``: mAP@all of CUB- and VegFru-sized codes on the GPU, 12 and
   48 bits, exactness against the CPU kernel on a subset.
7. ``harness_dpsh_cpu_transform``: the harness's default path (CPU
   transform in the workers) from the same cache; ratio to the bare loop.
8. ``e2e_record``: ``JobRunner.run`` end to end (train, encode, evaluate,
   write the record) on the CUB-layout set.
9. ``method_<name>``: every bundled method's steady-state images/s and
   peak GPU memory at its paper input size (batch 128, same path as 4).
10. ``harness_dpsh_compile``: 4 with ``--compile``; speed-up over 4.
11. ``bare_torchvision_ce``: torchvision ResNet-50 + cross-entropy on
    GPU-resident batches (the reference of the issue, 4,320 images/s).

Everything goes to ``OUT/results.jsonl`` (one JSON object per section, written
and fsynced as soon as the section ends) and ``OUT/summary.md`` (rewritten
atomically after each section), so a run killed at any moment keeps what it
measured.  ``--tiny`` (or ``FGBENCH_GPU_BENCH_TINY=1``) runs the same code
paths on the CPU in seconds: 40 images of 64 px, ResNet-18, 32 px crops, a
few steps; parts that need CUDA (nvjpeg, pinned memory, ``torch.compile``'s
GPU backend) run their CPU counterpart and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from make_cub_like import TINY as TINY_DATA  # noqa: E402
from make_cub_like import CubLikeConfig, make_cub_like  # noqa: E402

METHODS = ("dpsh", "cmbh", "cnet", "exchnet", "multifusnet")
HARNESS_GOAL = 0.95
LOADER_GOAL = 1.2
NO_CUDA = "no CUDA device: the full run needs a GPU (run with --tiny on the CPU)"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.md"


# ------------------------------------------------------------------------------------------------ scale


@dataclass(frozen=True)
class Scale:
    """Sizes of one mode: ``full`` (the GPU run) or ``tiny`` (the same code paths on the CPU in seconds)."""

    name: str
    data: CubLikeConfig
    backbone: str
    batch: int
    input_size: int
    resize_size: int  # also the decoded cache's short side
    bits: int
    amp: str
    channels_last: str
    bare_warmup_steps: int
    bare_steps: int
    harness_epochs: int  # steady epochs after one warm-up epoch (headline measurement)
    harness_cpu_epochs: int  # the same for the default path (CPU transform), often loader-bound: fewer
    method_epochs: int  # steady epochs after one warm-up epoch (per method)
    compile_warm_epochs: int
    compile_epochs: int
    e2e_epochs: int
    loader_passes: int  # the first is warm-up
    jpeg_loader_images: int  # the JPEG (PIL) loaders read only the first images of the split: they are slow
    nvjpeg_decode_images: int
    eval_sizes: tuple[tuple[str, int, int, int], ...]  # (name, queries, database, classes)
    exact_queries: int
    default_budget_s: float
    needs: Mapping[str, float] = field(default_factory=dict)  # seconds a section needs to be started
    limits: Mapping[str, float] = field(default_factory=dict)  # seconds after which a section is cut off

    def need(self, name: str) -> float:
        return float(self.needs.get(name, self.needs.get(name.split("_")[0], 10.0)))

    def limit(self, name: str) -> float:
        return float(self.limits.get(name, self.limits.get(name.split("_")[0], 120.0)))

    def paper_sizes(self, input_size: int, resize_size: int) -> tuple[int, int]:
        """A paper's (input, resize) sizes (224/256, 336/356, ...) at this scale (full: unchanged)."""
        return max(8, round(input_size * self.input_size / 224)), max(8, round(resize_size * self.resize_size / 256))


FULL = Scale(
    name="full", data=CubLikeConfig(), backbone="resnet50", batch=128, input_size=224, resize_size=256, bits=12,
    amp="bf16", channels_last="on", bare_warmup_steps=30, bare_steps=300, harness_epochs=7, harness_cpu_epochs=4,
    method_epochs=3, compile_warm_epochs=2, compile_epochs=4, e2e_epochs=2, loader_passes=2, jpeg_loader_images=2560,
    nvjpeg_decode_images=1024,
    eval_sizes=(("cub", 5794, 5994, 200), ("vegfru", 116931, 29200, 292)), exact_queries=1000,
    default_budget_s=450.0,
    needs={"environment": 0, "data": 40, "bare": 25, "harness": 30, "loader": 10, "eval": 15, "e2e": 25,
           "method": 20, "harness_dpsh_compile": 60},
    limits={"environment": 60, "data": 180, "bare": 90, "harness": 120, "loader": 60, "eval": 90, "e2e": 120,
            "method": 75, "harness_dpsh_compile": 200},
)

TINY = Scale(
    name="tiny", data=TINY_DATA, backbone="resnet18", batch=8, input_size=32, resize_size=40, bits=12,
    amp="off", channels_last="on", bare_warmup_steps=1, bare_steps=2, harness_epochs=1, harness_cpu_epochs=1,
    method_epochs=1, compile_warm_epochs=1, compile_epochs=1, e2e_epochs=1, loader_passes=2, jpeg_loader_images=24,
    nvjpeg_decode_images=16,
    eval_sizes=(("cub", 300, 320, 20), ("vegfru", 1200, 300, 29)), exact_queries=100,
    default_budget_s=900.0,
    needs={"environment": 0},
    limits={"environment": 60, "data": 120},
)


# ------------------------------------------------------------------------------------------------ bench


class SectionTimeout(BaseException):
    """A section ran past its own time limit (a BaseException: code that catches Exception does not swallow it)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line, written with one ``write`` and fsynced.

    A line torn by a kill mid-write is ended first, so it costs only itself
    (:func:`read_results` skips it), not the record appended after it.
    """
    line = json.dumps(record, default=_jsonable) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(out: Path) -> list[dict[str, Any]]:
    """The records of ``out/results.jsonl`` (a torn last line, from a kill, is left out)."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class Bench:
    """Runs sections under a time budget and records each result as soon as it is known."""

    def __init__(self, scale: Scale, out: Path, budget_s: float, data_root: Path, device: str) -> None:
        self.scale = scale
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.budget_s = budget_s
        self.data_root = Path(data_root)
        self.device = device
        self.t0 = time.time()
        self.results: dict[str, dict[str, Any]] = {}  # this run's records (results.jsonl may hold earlier runs)
        self.dataset: Any = None
        self._registry: Any = None
        self.plugin_errors: dict[str, str] = {}

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    def emit(self, name: str, status: str, **data: Any) -> dict[str, Any]:
        record = {"name": name, "status": status, "mode": self.scale.name,
                  "elapsed_s": round(time.time() - self.t0, 1), **data}
        _append_line(self.out / RESULTS_FILE, record)
        self.results[name] = json.loads(json.dumps(record, default=_jsonable))
        try:
            write_summary(self.out)
        except Exception as exc:  # noqa: BLE001 - the JSON line is written; the summary can be rebuilt later
            print(f"summary.md not updated: {_one_line(exc)}", file=sys.stderr, flush=True)
        brief = {k: v for k, v in record.items() if k not in ("traceback", "runtime", "environment", "modules")}
        print(json.dumps(brief, default=_jsonable)[:600], flush=True)
        return record

    def ok(self, name: str) -> dict[str, Any] | None:
        record = self.results.get(name)
        return record if record and record.get("status") == "ok" else None

    def section(self, name: str, fn: Callable[[], dict[str, Any]], requires: Sequence[str] = ()) -> dict[str, Any]:
        """Run ``fn`` as section ``name``: skipped, ok, error or timeout, recorded either way."""
        missing = [r for r in requires if not self.ok(r)]
        if missing:
            return self.emit(name, "skipped", reason=f"needs section {', '.join(missing)} (not ok)")
        need, left = self.scale.need(name), self.left()
        if need > 0 and left < need:
            return self.emit(name, "skipped", reason=f"time budget: {left:.0f} s left, needs ~{need:.0f} s")
        limit = self.scale.limit(name) if need <= 0 else max(1.0, min(self.scale.limit(name), left))
        t = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            result = fn()
            signal.setitimer(signal.ITIMER_REAL, 0)
            return self.emit(name, "ok", seconds=round(time.perf_counter() - t, 2), **result)
        except SectionTimeout:
            return self.emit(name, "timeout", seconds=round(time.perf_counter() - t, 2),
                             reason=f"cut off after its limit of {limit:.0f} s")
        except Exception as exc:  # noqa: BLE001 - record and go on with the next section
            signal.setitimer(signal.ITIMER_REAL, 0)
            return self.emit(name, "error", seconds=round(time.perf_counter() - t, 2),
                             error=_one_line(exc), traceback=traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            _free_memory()

    # ------------------------------------------------------------------------------ shared pieces
    @property
    def registry(self) -> Any:
        if self._registry is None:
            from fgbench._plugins import load_plugins

            modules = []
            for method in METHODS:
                try:
                    modules.append(importlib.import_module(f"fgbench_{method}"))
                except Exception as exc:  # noqa: BLE001 - a missing plugin skips its section only
                    self.plugin_errors[method] = _one_line(exc)
            self._registry = load_plugins(autoload=False, extra=modules).registry
        return self._registry

    def training_rate(self) -> tuple[float | None, str]:
        """What training consumes (images/s), for the loader ratios: the bare loop's rate (what the GPU can
        train on), else the harness's steady rate."""
        for name, key in (("bare_dpsh", "images_per_s"), ("harness_dpsh_gpu_augment", "steady_images_per_s")):
            record = self.ok(name)
            if record and record.get(key):
                return float(record[key]), name
        return None, "none measured"


def _raise_timeout(_signum: int, _frame: Any) -> None:
    raise SectionTimeout()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400]}" if text else type(exc).__name__


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(bench: Bench) -> None:
    if bench.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(bench: Bench) -> dict[str, Any]:
    if not bench.cuda:
        return {"peak_memory": "n/a (CPU)"}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _protocol(bench: Bench, epochs: int, input_size: int | None = None, resize_size: int | None = None) -> Any:
    """The ``fair`` protocol for ``cub`` with the benchmark's overrides, resolved as ``fgbench run`` resolves it."""
    from fgbench.protocol import resolve_protocol

    scale = bench.scale
    overrides = {"backbone": scale.backbone, "weights": "random", "batch_size": scale.batch, "bits": (scale.bits,),
                 "epochs": epochs, "input_size": input_size or scale.input_size,
                 "resize_size": resize_size or scale.resize_size}
    spec = bench.registry.datasets.get("cub")
    return resolve_protocol("fair", spec.fair_overrides, None, "cub", overrides)


def _options(bench: Bench, gpu_augment: bool, compile: bool = False, workers: int = -1) -> Any:
    """Engine options as ``fgbench run -q [--gpu-augment] [--compile] --amp .. --channels-last ..`` sets them."""
    from fgbench.engine.device import EngineOptions

    return EngineOptions(device=bench.device, amp=bench.scale.amp, channels_last=bench.scale.channels_last,
                         compile=compile, gpu_augment=gpu_augment, num_workers=workers, progress=False)


def _runner(bench: Bench, options: Any, results_dir: Path | None = None) -> Any:
    from fgbench.engine.runner import JobRunner

    class BenchRunner(JobRunner):
        """``JobRunner`` serving the already loaded (and cached) CUB-layout set."""

        def dataset(self, name: str) -> Any:
            return bench.dataset if name == "cub" else super().dataset(name)

    return BenchRunner(bench.registry, bench.data_root, results_dir or bench.out / "records", options)


def _job(bench: Bench, method: str, protocol: Any) -> Any:
    from fgbench.engine.runner import Job

    return Job(method, "cub", bench.scale.bits, 0, protocol)


# ------------------------------------------------------------------------------------------------ sections


def sec_environment(bench: Bench) -> dict[str, Any]:
    import importlib.metadata

    import torchvision
    from PIL import features

    mods: dict[str, str] = {}
    for name in ("numpy", "numba", "torchvision", "pluggy", "click", "filelock", "tqdm", "scipy", "PIL", "pandas",
                 "tabulate", "fgbench", *(f"fgbench_{m}" for m in METHODS)):
        try:
            module = importlib.import_module(name)
            try:
                version = importlib.metadata.version({"PIL": "pillow"}.get(name, name).replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                version = "no distribution metadata"
            mods[name] = f"{version} ({Path(getattr(module, '__file__', '') or '').parent})"
        except Exception as exc:  # noqa: BLE001
            mods[name] = f"MISSING ({_one_line(exc)})"
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "device": bench.device,
        "cpu_cores": _cores(), "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "budget_s": bench.budget_s, "data_root": str(bench.data_root), "modules": mods,
        "start_method": __import__("multiprocessing").get_start_method(),
    }
    if bench.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def sec_data(bench: Bench) -> dict[str, Any]:
    """Generate the CUB-layout JPEG set, check it with the official reader, build and attach the decoded cache."""
    from fgbench.data.official import catalog
    from fgbench.data.base import ExpectedSizes
    from fgbench.data.official.cache import CachedSplit, build_cache, dataset_cache_dir, inspect_cache

    cfg = bench.scale.data
    cores = _cores()
    made = make_cub_like(bench.data_root, cfg, workers=cores)
    expected = ExpectedSizes(cfg.train, cfg.test, cfg.classes)
    official = catalog.CUB if expected == catalog.CUB.expected else catalog.CUB.with_expected(expected)
    problems = official.problems(official.read(bench.data_root))
    if problems:
        raise RuntimeError(f"the official CUB reader found {len(problems)} problem(s), first: {problems[0]}")
    size = bench.scale.resize_size
    plain = official(bench.data_root, strict=True, use_cache=False)
    cache_reused = inspect_cache(plain, bench.data_root, size).state == "valid"
    t = time.perf_counter()
    build_cache(plain, bench.data_root, size=size, workers=cores)  # what `fgbench data prepare cub` does
    cache_s = time.perf_counter() - t
    dataset = official(bench.data_root, strict=True, cache_size=size)  # what `fgbench run -d cub` loads
    splits = {s: type(dataset.split(s)).__name__ for s in ("train", "test")}
    if not all(isinstance(dataset.split(s), CachedSplit) for s in ("train", "test")):
        raise RuntimeError(f"the decoded cache was not attached: splits {splits}")
    bench.dataset = dataset
    folder = dataset_cache_dir(bench.data_root, "cub", size)
    cache_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {"generated": made.as_dict(), "generation_s": made.seconds, "images": made.images,
            "jpeg_mib": round(made.jpeg_bytes / 2**20, 1),
            "mean_jpeg_kib": round(made.jpeg_bytes / made.images / 1024, 1),
            "official_cub_sizes": expected == catalog.CUB.expected, "reader_problems": 0, "cache_s": round(cache_s, 2),
            "cache_reused": cache_reused,
            "cache_short_side": size, "cache_mib": round(cache_bytes / 2**20, 1), "splits": splits,
            "workers": cores}


def _stamp_epochs(model: Any) -> list[float]:
    """Timestamps at each epoch end (when ``train_model`` calls ``on_epoch_end``, after its epoch-end sync)."""
    stamps: list[float] = []
    original = model.on_epoch_end

    def on_epoch_end(epoch: int, ctx: Any) -> None:
        original(epoch, ctx)
        stamps.append(time.perf_counter())

    model.on_epoch_end = on_epoch_end
    return stamps


def harness_steady(bench: Bench, method: str = "dpsh", *, gpu_augment: bool = True, compile: bool = False,
                   epochs: int, warm_epochs: int = 1, input_size: int | None = None,
                   resize_size: int | None = None) -> dict[str, Any]:
    """Steady-state images/s of the harness's training loop on the cached CUB-layout split.

    The job is built and trained as ``fgbench run`` does (``JobRunner.build_model``,
    then ``train_model`` with the job's protocol and engine options); the
    first ``warm_epochs`` are warm-up (workers, cuDNN autotuning, compilation)
    and the rate is taken over the remaining epochs from epoch-end timestamps.
    """
    from fgbench.engine.device import resolve_runtime
    from fgbench.engine.train import train_model

    protocol = _protocol(bench, warm_epochs + epochs, input_size, resize_size)
    options = _options(bench, gpu_augment=gpu_augment, compile=compile)
    job = _job(bench, method, protocol)
    runner = _runner(bench, options)
    model, _spec, config = runner.build_model(job, bench.dataset)
    stamps = _stamp_epochs(model)
    runtime = resolve_runtime(options)
    train = bench.dataset.split("train")
    _reset_peak(bench)
    t0 = time.perf_counter()
    result = train_model(model, train, protocol, runtime, options, seed=0,
                         checkpoint_meta={"job": job.label, "protocol": protocol.to_dict(),
                                          "method_config": dataclasses.asdict(config)})
    wall = time.perf_counter() - t0
    peak = _peak(bench)
    total_epochs = warm_epochs + epochs
    if len(stamps) != total_epochs:
        raise RuntimeError(f"expected {total_epochs} epoch ends, saw {len(stamps)}")
    per_epoch = round(result.images_per_second * result.seconds / total_epochs)
    steps = per_epoch // protocol.batch_size
    times = np.diff([t0, *stamps])
    steady = per_epoch * epochs / (stamps[-1] - stamps[warm_epochs - 1])
    del model
    return {"method": method, "backbone": protocol.backbone, "batch": protocol.batch_size,
            "input_size": protocol.input_size, "resize_size": protocol.resize_size, "gpu_augment": gpu_augment,
            "compile": compile, "warm_epochs": warm_epochs, "steady_epochs": epochs, "steps_per_epoch": steps,
            "steady_steps": steps * epochs, "steady_images_per_s": round(steady, 1),
            "epoch_s": [round(float(v), 3) for v in times],
            "first_epoch_s": round(float(times[0]), 2), "train_wall_s": round(wall, 2),
            "record_images_per_s": round(result.images_per_second, 1), "loader_workers": result.loader_workers,
            "runtime": runtime.describe(), **peak}


def bare_loop(bench: Bench, model: torch.nn.Module, runtime: Any, protocol: Any,
              loss_fn: Callable[[Any, Any], torch.Tensor], num_train: int, labels: np.ndarray) -> dict[str, Any]:
    """Images/s of a hand-written loop on GPU-resident batches: forward, loss, backward, fused SGD step."""
    from fgbench.methods import Batch

    device, cuda = runtime.device, runtime.device.type == "cuda"
    batch, size = protocol.batch_size, protocol.input_size
    model.to(device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    fused = {"fused": True} if cuda else {}
    opt = torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                          weight_decay=protocol.weight_decay, **fused)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.use_scaler)
    g = torch.Generator().manual_seed(0)
    all_labels = torch.as_tensor(labels, dtype=torch.long)
    batches = []
    for _ in range(4):
        x = torch.randn(batch, 3, size, size, generator=g).to(device)
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        idx = torch.randperm(num_train, generator=g)[:batch]
        batches.append(Batch(x, all_labels[idx].to(device), idx.to(device)))
    autocast = (torch.autocast(device.type, dtype=runtime.amp_dtype) if runtime.amp_dtype is not None
                else contextlib.nullcontext())

    def step(b: Any) -> None:
        with autocast:
            out = model(b.images)
        loss = loss_fn(out, b)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    _reset_peak(bench)
    for i in range(bench.scale.bare_warmup_steps):
        step(batches[i % len(batches)])
    _sync(device)
    steps = bench.scale.bare_steps
    t = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    _sync(device)
    seconds = time.perf_counter() - t
    return {"batch": batch, "input_size": size, "warmup_steps": bench.scale.bare_warmup_steps, "steps": steps,
            "timed_s": round(seconds, 3), "images_per_s": round(batch * steps / seconds, 1),
            "runtime": runtime.describe(), "optimizer": f"SGD(momentum, {'fused' if cuda else 'foreach'})",
            **_peak(bench)}


def sec_bare_dpsh(bench: Bench) -> dict[str, Any]:
    from fgbench.engine.device import resolve_runtime

    protocol = _protocol(bench, epochs=1)
    options = _options(bench, gpu_augment=True)
    model, _spec, _config = _runner(bench, options).build_model(_job(bench, "dpsh", protocol), bench.dataset)
    train = bench.dataset.split("train")
    out = bare_loop(bench, model, resolve_runtime(options), protocol, lambda o, b: model.loss(o, b)[0],
                    len(train), np.asarray(train.labels))
    return {"model": f"DPSH (fgbench_dpsh), {protocol.backbone} random init, {protocol.bits[0]} bits", **out}


def sec_bare_torchvision(bench: Bench) -> dict[str, Any]:
    import torch.nn.functional as F
    import torchvision

    from fgbench.engine.device import resolve_runtime

    protocol = _protocol(bench, epochs=1)
    options = _options(bench, gpu_augment=True)
    runtime = resolve_runtime(options)
    model = getattr(torchvision.models, bench.scale.backbone)(num_classes=bench.scale.data.classes)
    train = bench.dataset.split("train")
    out = bare_loop(bench, model, runtime, protocol, lambda o, b: F.cross_entropy(o.float(), b.labels),
                    len(train), np.asarray(train.labels))
    return {"model": f"torchvision {bench.scale.backbone} + cross-entropy ({bench.scale.data.classes} classes)", **out}


def _with_ratio(result: dict[str, Any], bench: Bench, reference: str = "bare_dpsh") -> dict[str, Any]:
    bare = bench.ok(reference)
    if bare:
        ratio = result["steady_images_per_s"] / bare["images_per_s"]
        result.update(bare_images_per_s=bare["images_per_s"], ratio_to_bare=round(ratio, 4),
                      goal=HARNESS_GOAL, meets_goal=ratio >= HARNESS_GOAL)
    else:
        result.update(ratio_to_bare=None, ratio_note=f"{reference} not measured")
    return result


def sec_harness(bench: Bench, gpu_augment: bool) -> dict[str, Any]:
    epochs = bench.scale.harness_epochs if gpu_augment else bench.scale.harness_cpu_epochs
    result = harness_steady(bench, "dpsh", gpu_augment=gpu_augment, epochs=epochs)
    return _with_ratio(result, bench)


def sec_compile(bench: Bench) -> dict[str, Any]:
    note = "torch.compile (inductor)"
    if bench.cuda:
        ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:  # the CPU inductor compile takes minutes: the same code path with dynamo switched off
        import torch._dynamo

        ctx = _patched(torch._dynamo.config, "disable", True)
        note = "no CUDA: torch.compile called with dynamo disabled (code path only, no compiled speed)"
    with ctx:
        result = harness_steady(bench, "dpsh", gpu_augment=True, compile=True,
                                warm_epochs=bench.scale.compile_warm_epochs, epochs=bench.scale.compile_epochs)
    result["compile_note"] = note
    off = bench.ok("harness_dpsh_gpu_augment")
    if off:
        result.update(compile_off_images_per_s=off["steady_images_per_s"],
                      speedup=round(result["steady_images_per_s"] / off["steady_images_per_s"], 4))
    return _with_ratio(result, bench)


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _paper_sizes(spec: Any) -> tuple[int, int, int | None]:
    recipes = spec.paper_recipe or {}
    recipe = dict(recipes.get("default", {}))
    recipe.update(recipes.get("cub", {}))
    return int(recipe.get("input_size", 224)), int(recipe.get("resize_size", 256)), recipe.get("batch_size")


def sec_method(bench: Bench, method: str) -> dict[str, Any]:
    if method not in bench.registry.methods:
        raise RuntimeError(f"fgbench_{method} is not importable: {bench.plugin_errors.get(method, 'not registered')}")
    paper_input, paper_resize, paper_batch = _paper_sizes(bench.registry.methods.get(method))
    size, resize = bench.scale.paper_sizes(paper_input, paper_resize)
    result = harness_steady(bench, method, gpu_augment=True, epochs=bench.scale.method_epochs,
                            input_size=size, resize_size=resize)
    result.update(paper_input_size=paper_input, paper_resize_size=paper_resize, paper_batch_cub=paper_batch)
    if resize > bench.scale.resize_size:
        result["note"] = (f"resize {resize} > decoded cache short side {bench.scale.resize_size}: "
                          f"the loader workers upscale the cached images")
    return result


# ------------------------------------------------------------------------------------------------ loaders


def _loader_result(bench: Bench, counts: list[tuple[int, float]], **info: Any) -> dict[str, Any]:
    """Rates of each pass (the first is warm-up); the loader's rate is the best later pass."""
    rates = [n / s for n, s in counts]
    rate = max(rates[1:]) if len(rates) > 1 else rates[0]
    training, source = bench.training_rate()
    out = {**info, "passes": len(counts), "images_per_pass": counts[0][0],
           "pass_images_per_s": [round(r, 1) for r in rates], "images_per_s": round(rate, 1)}
    if training:
        out.update(training_images_per_s=round(training, 1), training_source=source,
                   ratio_to_training=round(rate / training, 3), goal=LOADER_GOAL,
                   meets_goal=rate / training >= LOADER_GOAL)
    harness = bench.ok("harness_dpsh_gpu_augment")
    if harness:
        out["ratio_to_harness_training"] = round(rate / harness["steady_images_per_s"], 3)
    return out


def _passes(one_pass: Callable[[], int], passes: int) -> list[tuple[int, float]]:
    counts = []
    for _ in range(passes):
        t = time.perf_counter()
        n = one_pass()
        counts.append((n, time.perf_counter() - t))
    return counts


def _workers(bench: Bench, which: str) -> int:
    from fgbench.engine.device import auto_workers

    if which == "auto":
        return auto_workers(torch.device(bench.device), -1) if bench.cuda else 2
    return max(1, _cores() - 1)


class FirstImages:
    """The first ``n`` images of a split, itself a split (the slow JPEG loaders read fewer images per pass)."""

    def __init__(self, split: Any, n: int) -> None:
        self.split = split
        self.labels = np.asarray(split.labels)[:n]

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> Any:
        return self.split.load_image(index)

    def load_array(self, index: int) -> np.ndarray:
        return self.split.load_array(index)

    def describe(self, index: int) -> str:
        return self.split.describe(index)


def sec_loader_harness(bench: Bench, source: str, gpu_augment: bool, which: str) -> dict[str, Any]:
    """The harness's own training loader (``train._train_loader``) feeding the device, one epoch per pass."""
    from fgbench.engine.device import resolve_runtime
    from fgbench.engine.device import batch_images as _images
    from fgbench.engine.train import _train_loader

    if source == "cache":
        split: Any = bench.dataset.split("train")
    else:
        split = FirstImages(bench.dataset.file_split("train"), bench.scale.jpeg_loader_images)
    workers = _workers(bench, which)
    protocol = _protocol(bench, epochs=1)
    options = _options(bench, gpu_augment=gpu_augment, workers=workers)
    runtime = resolve_runtime(options)
    loader, _generator, augment = _train_loader(split, protocol, runtime, options, seed=0)

    def one_pass() -> int:
        n = 0
        for data in loader:
            images, _labels, _idx = _images(data, runtime, augment)
            n += len(images)
        _sync(runtime.device)
        return n

    try:
        counts = _passes(one_pass, bench.scale.loader_passes)
    finally:
        loader = None  # shuts the persistent workers down now  # noqa: F841
    return _loader_result(bench, counts, source={"cache": "decoded uint8 cache", "jpeg": "JPEG files (PIL)"}[source],
                          split=type(getattr(split, "split", split)).__name__, gpu_augment=gpu_augment, workers=workers,
                          transform="crop/flip/normalise on the device" if gpu_augment else "CPU transform in workers")


class JpegFiles(torch.utils.data.Dataset):
    """The raw bytes of JPEG files (for decoding on the GPU)."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        return np.frombuffer(self.paths[i].read_bytes(), dtype=np.uint8), int(self.labels[i]), i


def collate_bytes(items: Sequence[tuple[np.ndarray, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]:
    """``(all files' bytes in one uint8 tensor, each file's length, labels, indices)``.

    One tensor per batch: workers hand many small tensors over by file
    descriptor, which fails ("Bad file descriptor") and stalls the loader.
    """
    flat = torch.from_numpy(np.concatenate([d for d, _l, _i in items]))
    return (flat, torch.tensor([len(d) for d, _l, _i in items]), torch.tensor([lab for _d, lab, _i in items]),
            torch.tensor([i for _d, _l, i in items]))


def split_bytes(flat: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(flat, lengths.tolist()))


def decode_resize_pad(datas: list[torch.Tensor], device: torch.device, short_side: int) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """JPEG bytes -> (uint8 batch on ``device`` padded to its largest image, true sizes): nvjpeg on CUDA."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as TF

    images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    images = [TF.resize(im, [short_side], antialias=True) for im in images]
    sizes = torch.tensor([tuple(im.shape[-2:]) for im in images], dtype=torch.int64)
    if torch.device(device).type == "cuda":
        sizes = sizes.pin_memory()  # DeviceAugment copies it without blocking
    h, w = (int(v) for v in sizes.max(0).values)
    raw = torch.zeros(len(images), 3, h, w, dtype=torch.uint8, device=device)
    for k, im in enumerate(images):
        raw[k, :, : im.shape[-2], : im.shape[-1]] = im
    return raw, sizes


def sec_loader_nvjpeg(bench: Bench) -> dict[str, Any]:
    from torch.utils.data import DataLoader
    from torchvision.io import ImageReadMode, decode_jpeg

    from fgbench.engine.device import resolve_runtime
    from fgbench.data.transforms import DeviceAugment

    files = bench.dataset.file_split("train")
    protocol = _protocol(bench, epochs=1)
    runtime = resolve_runtime(_options(bench, gpu_augment=True))
    device = runtime.device
    batch = protocol.batch_size
    # decoding alone, on bytes already in memory
    jpegs = JpegFiles(files.paths, files.labels)
    sample = [torch.from_numpy(jpegs[i][0].copy()) for i in range(min(len(files), bench.scale.nvjpeg_decode_images))]
    decode_jpeg(sample[:batch], mode=ImageReadMode.RGB, device=device)
    _sync(device)
    t = time.perf_counter()
    for k in range(0, len(sample), batch):
        decode_jpeg(sample[k:k + batch], mode=ImageReadMode.RGB, device=device)
    _sync(device)
    decode_rate = len(sample) / (time.perf_counter() - t)
    # the whole pipeline: file bytes read by workers, decoded, resized, padded and augmented on the device
    workers = _workers(bench, "auto")
    loader = DataLoader(jpegs, batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, collate_fn=collate_bytes, persistent_workers=workers > 0)
    augment = DeviceAugment(protocol, train=True, device=device, seed=1, channels_last=runtime.channels_last)

    def one_pass() -> int:
        n = 0
        for flat, lengths, _labels, _idx in loader:
            raw, sizes = decode_resize_pad(split_bytes(flat, lengths), device, protocol.resize_size)
            n += len(augment(raw, sizes))
        _sync(device)
        return n

    try:
        counts = _passes(one_pass, bench.scale.loader_passes)
    finally:
        loader = None  # shuts the persistent workers down now  # noqa: F841
    decoder = "nvjpeg: torchvision.io.decode_jpeg(device='cuda')" if bench.cuda else \
        "skipped nvjpeg: no CUDA (the same pipeline with torchvision.io.decode_jpeg on the CPU)"
    return _loader_result(bench, counts, decoder=decoder, decode_only_images_per_s=round(decode_rate, 1),
                          decode_only_images=len(sample), workers_reading_files=workers,
                          transform="resize + crop/flip/normalise on the device")


def _uint8_array(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a cached split in one zero-padded uint8 tensor ``(N, H, W, 3)``, and the true ``(H, W)``."""
    shapes = np.asarray(split.shapes)
    h, w = int(shapes[:, 0].max()), int(shapes[:, 1].max())
    data = torch.zeros(len(split), h, w, 3, dtype=torch.uint8)
    for i in range(len(split)):
        array = split.load_array(i)
        data[i, : array.shape[0], : array.shape[1]] = torch.from_numpy(array)
    return data, torch.as_tensor(shapes[:, :2], dtype=torch.int64)


def sec_loader_resident(bench: Bench, where: str) -> dict[str, Any]:
    """A uint8 cache held whole in pinned host memory (gather -> copy) or on the GPU (gather only), augmented there."""
    from fgbench.engine.device import resolve_runtime
    from fgbench.data.transforms import DeviceAugment

    protocol = _protocol(bench, epochs=1)
    runtime = resolve_runtime(_options(bench, gpu_augment=True))
    device, batch = runtime.device, protocol.batch_size
    t = time.perf_counter()
    images, sizes = _uint8_array(bench.dataset.split("train"))
    note = ""
    if where == "gpu":
        images, sizes_dev = images.to(device), sizes.to(device)
        note = "" if bench.cuda else "no CUDA: held in CPU memory"
    elif bench.cuda:
        images = images.pin_memory()
    else:
        note = "no CUDA: pageable host memory (pinning needs CUDA)"
    _sync(device)
    setup_s = time.perf_counter() - t
    n_total = len(sizes)
    augment = DeviceAugment(protocol, train=True, device=device, seed=2, channels_last=runtime.channels_last)
    g = torch.Generator().manual_seed(0)
    # two pinned (images, sizes) buffers: one is filled while the other is copied (copies from pageable memory
    # would wait for the GPU's queued work first)
    buffers = [(torch.empty((batch, *images.shape[1:]), dtype=torch.uint8, pin_memory=bench.cuda),
                torch.empty((batch, 2), dtype=torch.int64, pin_memory=bench.cuda))
               for _ in range(2)] if where == "pinned" else []
    events: list[Any] = [None, None]

    def one_pass() -> int:
        n = 0
        if where == "gpu":
            perm = torch.randperm(n_total, generator=g).to(device)
            for k in range(n_total // batch):
                idx = perm[k * batch:(k + 1) * batch]
                n += len(augment(images[idx].permute(0, 3, 1, 2), sizes_dev[idx]))
            _sync(device)
            return n
        perm = torch.randperm(n_total, generator=g)
        for k in range(n_total // batch):
            idx = perm[k * batch:(k + 1) * batch]
            slot = k % 2
            if events[slot] is not None:
                events[slot].synchronize()  # the copies out of this slot's buffers have finished
            pixels, shapes = buffers[slot]
            torch.index_select(images, 0, idx, out=pixels)
            torch.index_select(sizes, 0, idx, out=shapes)
            raw = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)
            x = augment(raw, shapes)
            if bench.cuda:
                events[slot] = torch.cuda.Event()
                events[slot].record()
            n += len(x)
        _sync(device)
        return n

    counts = _passes(one_pass, bench.scale.loader_passes)
    gib = images.numel() / 2**30
    return _loader_result(bench, counts, where={"gpu": "GPU memory", "pinned": "pinned host memory"}[where],
                          setup_s=round(setup_s, 2), cache_gib=round(gib, 2), note=note or None,
                          transform="gather + crop/flip/normalise on the device")


# ------------------------------------------------------------------------------------------------ eval, e2e


def sec_eval_codes(bench: Bench) -> dict[str, Any]:
    """mAP@all of random +-1 codes at CUB and VegFru sizes on the device (evaluate_codes' CUDA path)."""
    from fgbench.metrics.hamming_kernels import histograms_torch
    from fgbench.metrics.retrieval import RetrievalEvaluation, evaluate_codes

    device = torch.device(bench.device)

    def evaluate(q: torch.Tensor, d: torch.Tensor, ql: torch.Tensor, dl: torch.Tensor) -> Any:
        if q.is_cuda:
            return evaluate_codes(q, d, ql, dl)
        h_all, h_rel = histograms_torch(q, d, ql, dl)  # the kernels of the CUDA path, on the CPU
        return RetrievalEvaluation(h_all.numpy(), h_rel.numpy())

    out: dict[str, Any] = {"path": "evaluate_codes (CUDA tensors)" if bench.cuda else
                           "no CUDA: histograms_torch on CPU tensors (the kernels of the CUDA path)"}
    g = torch.Generator().manual_seed(0)
    for name, nq, nd, classes in bench.scale.eval_sizes:
        for bits in (12, 48):
            q = (torch.randint(0, 2, (nq, bits), generator=g) * 2 - 1).float().to(device)
            d = (torch.randint(0, 2, (nd, bits), generator=g) * 2 - 1).float().to(device)
            ql = torch.randint(0, classes, (nq,), generator=g).to(device)
            dl = torch.randint(0, classes, (nd,), generator=g).to(device)
            evaluate(q[:256], d, ql[:256], dl)  # warm-up
            _sync(device)
            t = time.perf_counter()
            ev = evaluate(q, d, ql, dl)
            seconds = time.perf_counter() - t
            key = f"{name}_{bits}b"
            out[key] = {"queries": nq, "database": nd, "classes": classes, "seconds": round(seconds, 4),
                        "map": round(float(ev.mean_average_precision), 6)}
            if name == bench.scale.eval_sizes[0][0] and bits == 48:
                k = bench.scale.exact_queries
                cpu = evaluate_codes(q[:k].cpu().numpy(), d.cpu().numpy(), ql[:k].cpu().numpy(), dl.cpu().numpy())
                sub = evaluate(q[:k], d, ql[:k], dl)
                out[key]["exact_vs_cpu_kernel"] = bool(np.array_equal(cpu.h_all, sub.h_all)
                                                       and np.array_equal(cpu.h_rel, sub.h_rel))
                out[key]["exact_queries"] = k
    return out


def sec_e2e(bench: Bench) -> dict[str, Any]:
    """``JobRunner.run``: the job of ``fgbench run -m dpsh -d cub --gpu-augment`` (train, encode, evaluate, record)."""
    protocol = _protocol(bench, epochs=bench.scale.e2e_epochs)
    options = _options(bench, gpu_augment=True)
    results = bench.out / "records"
    runner = _runner(bench, options, results)
    job = _job(bench, "dpsh", protocol)
    path = job.path(results)
    path.unlink(missing_ok=True)  # a record of an earlier run into the same OUT
    t = time.perf_counter()
    record = runner.run(job, log=lambda _msg: None)
    wall = time.perf_counter() - t
    if record is None:
        raise RuntimeError(f"JobRunner.run skipped the job ({path})")
    env = record.environment
    return {"wall_s": round(wall, 2), "epochs": protocol.epochs, "train_seconds": record.train_seconds,
            "eval_seconds": record.eval_seconds, "images_per_second": record.training["images_per_second"],
            "loader_workers": record.training["loader_workers"], "map": record.metrics.get("map"),
            "num_query": record.num_query, "num_database": record.num_database,
            "distinct_database_codes": record.distinct_database_codes,
            "record": str(path.relative_to(bench.out)),
            "environment": {k: env.get(k) for k in ("device", "device_name", "amp", "channels_last",
                                                    "cudnn_benchmark", "torch")}}


# ------------------------------------------------------------------------------------------------ plan


def plan(bench: Bench) -> list[tuple[str, Callable[[], dict[str, Any]], tuple[str, ...]]]:
    """Every section in order of value: (name, function, sections it needs)."""
    d = ("data",)
    steps: list[tuple[str, Callable[[], dict[str, Any]], tuple[str, ...]]] = [
        ("data", lambda: sec_data(bench), ()),
        ("bare_dpsh", lambda: sec_bare_dpsh(bench), d),
        ("harness_dpsh_gpu_augment", lambda: sec_harness(bench, gpu_augment=True), d),
        ("loader_cache_gpu_augment_auto", lambda: sec_loader_harness(bench, "cache", True, "auto"), d),
        ("loader_nvjpeg", lambda: sec_loader_nvjpeg(bench), d),
        ("loader_jpeg_pil_auto", lambda: sec_loader_harness(bench, "jpeg", False, "auto"), d),
        ("eval_codes", lambda: sec_eval_codes(bench), ()),
        ("harness_dpsh_cpu_transform", lambda: sec_harness(bench, gpu_augment=False), d),
        ("e2e_record", lambda: sec_e2e(bench), d),
    ]
    for method in METHODS:
        steps.append((f"method_{method}", lambda m=method: sec_method(bench, m), d))
    steps += [
        ("harness_dpsh_compile", lambda: sec_compile(bench), d),
        ("loader_cache_gpu_augment_all_cores", lambda: sec_loader_harness(bench, "cache", True, "all"), d),
        ("loader_jpeg_pil_all_cores", lambda: sec_loader_harness(bench, "jpeg", False, "all"), d),
        ("loader_cache_cpu_transform_auto", lambda: sec_loader_harness(bench, "cache", False, "auto"), d),
        ("loader_pinned_uint8_cache", lambda: sec_loader_resident(bench, "pinned"), d),
        ("loader_gpu_resident_uint8_cache", lambda: sec_loader_resident(bench, "gpu"), d),
        ("bare_torchvision_ce", lambda: sec_bare_torchvision(bench), d),
    ]
    return steps


def section_names() -> list[str]:
    """The names of every section of a run, in order (``environment`` first)."""
    dummy = Bench.__new__(Bench)
    return ["environment", *(name for name, _fn, _req in plan(dummy))]


def run(bench: Bench, only: Sequence[str] = ()) -> bool:
    """Every section in order (or only those named, plus the sections they need), then ``done``.

    Returns False (after recording why) when the full run finds no CUDA device.
    """
    steps = plan(bench)
    wanted = set(only)
    for name, _fn, requires in reversed(steps):
        if name in wanted:
            wanted.update(requires)
    bench.emit("start", "ok", budget_s=bench.budget_s, out=str(bench.out), data_root=str(bench.data_root),
               scale=bench.scale.name, pid=os.getpid(), only=sorted(only) or None)
    env = bench.section("environment", lambda: sec_environment(bench))
    if bench.scale.name == "full" and not env.get("cuda_available"):
        bench.emit("stopped", "error", reason=NO_CUDA)
        return False
    for name, fn, requires in steps:
        if not only or name in wanted:
            bench.section(name, fn, requires)
    bench.emit("done", "ok", total_s=round(time.time() - bench.t0, 1))
    return True


# ------------------------------------------------------------------------------------------------ summary


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _reason(record: Mapping[str, Any]) -> str:
    return str(record.get("reason") or record.get("error") or record.get("note") or "").replace("|", "/")[:160]


def summary_text(records: Sequence[Mapping[str, Any]]) -> str:
    """``summary.md`` from the records of a run (the last record of each name counts)."""
    starts = [i for i, r in enumerate(records) if r.get("name") == "start"]
    records = records[starts[-1]:] if starts else records
    by = {r["name"]: r for r in records}
    ok = {k: v for k, v in by.items() if v.get("status") == "ok"}
    env = ok.get("environment", {})
    start = by.get("start", {})
    lines = ["# fgbench GPU benchmark (issue #18)", ""]
    lines.append(f"Mode **{start.get('scale', '?')}**; device {env.get('device_name', env.get('device', '?'))}; "
                 f"torch {env.get('torch', '?')}; {env.get('cpu_cores', '?')} CPU cores; "
                 f"budget {_fmt(start.get('budget_s'))} s; last record at {_fmt(records[-1].get('elapsed_s'), 1)} s"
                 if records else "No records.")
    if "done" in by:
        lines.append(f"Finished in {_fmt(by['done'].get('total_s'), 1)} s.")
    elif "stopped" in by:
        lines.append(f"Stopped: {_reason(by['stopped'])}.")
    else:
        lines.append("Not finished (running, or killed: the sections below are what was measured).")
    lines += ["", "## Headline", "", "| measure | value | goal |", "|---|---|---|"]
    bare = ok.get("bare_dpsh")
    for name, label in (("harness_dpsh_gpu_augment", "harness (cache + `--gpu-augment`) / bare loop"),
                        ("harness_dpsh_cpu_transform", "harness (cache, CPU transform) / bare loop"),
                        ("harness_dpsh_compile", "harness `--compile` (cache + `--gpu-augment`) / bare loop")):
        r = ok.get(name)
        if r:
            lines.append(f"| {label} | {_fmt(r.get('ratio_to_bare'), 3)} ({_fmt(r['steady_images_per_s'])} / "
                         f"{_fmt(r.get('bare_images_per_s'))} img/s, {r['steady_steps']} steady steps) | "
                         f"≥ {HARNESS_GOAL} |")
    if bare:
        lines.append(f"| bare loop, {bare['model']}, batch {bare['batch']} @{bare['input_size']}, GPU-resident "
                     f"batches | {_fmt(bare['images_per_s'])} img/s ({bare['steps']} steps) | |")
    tv = ok.get("bare_torchvision_ce")
    if tv:
        lines.append(f"| bare loop, {tv['model']} | {_fmt(tv['images_per_s'])} img/s | (issue: 4,320 on H200) |")
    comp = ok.get("harness_dpsh_compile")
    if comp and comp.get("speedup"):
        lines.append(f"| `--compile` speed-up (first epochs incl. compilation: {_fmt(comp['first_epoch_s'], 1)} s) | "
                     f"{_fmt(comp['speedup'], 3)}x | |")
    loaders = [(k, v) for k, v in ok.items() if k.startswith("loader_")]
    if loaders:
        lines += ["", "## Loaders alone (images/s delivered on the device)", "",
                  "| loader | workers | images/s | / training (bare loop) | goal |", "|---|---|---|---|---|"]
        for k, v in loaders:
            workers = v.get("workers", v.get("workers_reading_files", "–"))
            lines.append(f"| {k[len('loader_'):]} | {workers} | {_fmt(v['images_per_s'])} | "
                         f"{_fmt(v.get('ratio_to_training'), 2)} | ≥ {LOADER_GOAL} |")
        nv = ok.get("loader_nvjpeg")
        if nv:
            lines.append(f"\nDecoding alone ({nv['decoder']}): {_fmt(nv['decode_only_images_per_s'])} img/s.")
    methods = [(k, v) for k, v in ok.items() if k.startswith("method_")]
    if methods:
        lines += ["", "## Methods (harness, cache + `--gpu-augment`, steady state)", "",
                  "| method | input | batch | images/s | peak GiB allocated | steady steps |",
                  "|---|---|---|---|---|---|"]
        for _name, v in methods:
            lines.append(f"| {v['method']} | {v['input_size']} | {v['batch']} | {_fmt(v['steady_images_per_s'])} | "
                         f"{_fmt(v.get('peak_allocated_gib'), 2)} | {v['steady_steps']} |")
    ev = ok.get("eval_codes")
    if ev:
        lines += ["", f"## Evaluation ({ev['path']})", "", "| codes | queries x database | seconds | exact |",
                  "|---|---|---|---|"]
        for k, v in ev.items():
            if isinstance(v, dict) and "seconds" in v:
                lines.append(f"| {k} | {v['queries']:,} x {v['database']:,} | {_fmt(v['seconds'], 3)} | "
                             f"{_fmt(v.get('exact_vs_cpu_kernel'))} |")
    e2e = ok.get("e2e_record")
    if e2e:
        lines += ["", (f"End to end (`JobRunner.run`, {e2e['epochs']} epoch(s)): "
                       f"train {_fmt(e2e['train_seconds'], 1)} s ({_fmt(e2e['images_per_second'])} img/s incl. "
                       f"the first epoch), encode + evaluate {_fmt(e2e['eval_seconds'], 1)} s, "
                       f"mAP {_fmt(e2e.get('map'), 4)}.")]
    data = ok.get("data")
    if data:
        lines += ["", (f"Data: {data['images']:,} JPEGs ({_fmt(data['mean_jpeg_kib'], 1)} KiB each, official CUB "
                       f"sizes: {_fmt(data['official_cub_sizes'])}) generated in {_fmt(data['generation_s'], 1)} s, "
                       f"decoded cache ({_fmt(data['cache_mib'])} MiB) built in {_fmt(data['cache_s'], 1)} s on "
                       f"{data['workers']} processes.")]
    lines += ["", "## All sections", "", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, r in by.items():
        if name in ("start", "done"):
            continue
        lines.append(f"| {name} | {r.get('status')} | {_fmt(r.get('seconds'), 1)} | {_reason(r)} |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> None:
    from fgbench._atomic import atomic_write_text

    atomic_write_text(Path(out) / SUMMARY_FILE, summary_text(read_results(out)))


# ------------------------------------------------------------------------------------------------ main


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU benchmark at realistic scale (issue #18).")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/fgbench-gpu-bench"),
                        help="folder for results.jsonl and summary.md (default $OUT)")
    parser.add_argument("--tiny", action="store_true", default=os.environ.get("FGBENCH_GPU_BENCH_TINY") == "1",
                        help="the same code paths on the CPU in seconds (also FGBENCH_GPU_BENCH_TINY=1)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run (default FGBENCH_GPU_BENCH_BUDGET_S, else 450; tiny: 900)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the CUB-layout set and its cache go (default FGBENCH_GPU_BENCH_DATA, "
                             "else /tmp/fgbench-gpu-bench-data[-tiny]); never inside --out")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help="run only these sections (and the ones they need), e.g. to redo one that failed")
    parser.add_argument("--summarize", action="store_true", help="only rebuild summary.md from results.jsonl")
    parser.add_argument("--note", default=None, help="with --summarize: record why the run stopped")
    args = parser.parse_args(argv)
    scale = TINY if args.tiny else FULL
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(section_names()))
    if unknown:
        print(f"Error: --only {','.join(unknown)}: no such section; sections: {', '.join(section_names())}",
              file=sys.stderr)
        return 2
    if args.summarize:
        if args.note:
            _append_line(args.out / RESULTS_FILE, {"name": "stopped", "status": "error", "reason": args.note})
        write_summary(args.out)
        return 0
    env_budget = os.environ.get("FGBENCH_GPU_BENCH_BUDGET_S")
    budget = args.budget_s if args.budget_s is not None else float(env_budget) if env_budget else scale.default_budget_s
    data_root = args.data_root or Path(os.environ.get("FGBENCH_GPU_BENCH_DATA") or
                                       f"/tmp/fgbench-gpu-bench-data{'-tiny' if args.tiny else ''}")
    out = args.out.resolve()
    if out == data_root.resolve() or out in data_root.resolve().parents:
        print(f"Error: --data-root {data_root} is inside --out {out}; the data set must not be returned with the "
              f"results: choose a data root outside it", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(scale, out, budget, data_root, device)
    try:
        if not run(bench, only):
            print(f"Error: {NO_CUDA}", file=sys.stderr)
            return 3
    except (SystemExit, KeyboardInterrupt) as exc:
        bench.emit("stopped", "error", reason=f"interrupted ({type(exc).__name__} {getattr(exc, 'code', '')})".strip())
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
