"""One-shot GPU check of the engine (issue 6): throughput and evaluation numbers on a CUDA machine.

Run through ``benchmarks/gpu_check.sh`` (which installs the repo without
touching the network).  Every measurement runs in its own ``try`` block and
is appended to ``$OUT/gpu_check.jsonl`` (one JSON object per line) and
``$OUT/summary.txt`` as soon as it finishes; a time budget
(``GPU_CHECK_BUDGET_S``, default 420 s from the start of this script) skips
whatever would not fit, most important measurements first:

1. environment (GPU, torch, bf16 support, installed modules);
   then ``fgbench run`` end to end on CUDA (DPSH, embedded dataset, random
   initial weights so nothing is pretrained first), default fast path and
   ``--gpu-augment``: the record's engine/environment fields and timings;
2. mAP@all on the GPU at VegFru scale (116,931 x 29,200 codes, 48 and 12
   bits): ``histograms_torch`` with ``scatter`` and ``compare``, exactness
   against the CPU kernel on 3,000 queries, ``evaluate_codes`` end to end;
3. training images/s, harness vs bare loop, DPSH ResNet-50 @224 batch 128,
   default fast path (bf16 autocast + channels-last), and the harness with
   ``--gpu-augment``;
4. the same for ResNet-18 batch 256;
5. loader throughput: uint8 + device augmentation vs CPU transform
   (0 and 8 workers);
6. DPSH ResNet-50 with AMP on/off x channels-last on/off (harness and bare);
7. CMBH (if ``fgbench_cmbh`` is importable): fast path, then the variants;
8. the harness with ``torch.compile`` (DPSH ResNet-50, fast path).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = Path(os.environ.get("OUT") or "/tmp/fgbench-gpu-check")
OUT.mkdir(parents=True, exist_ok=True)
BUDGET = float(os.environ.get("GPU_CHECK_BUDGET_S", "420"))
T0 = time.time()
# GPU_CHECK_DRY=1: the same steps on the CPU at toy sizes, to check the script itself without a GPU
DRY = os.environ.get("GPU_CHECK_DRY") == "1"
DEV = "cpu" if DRY else "cuda"
SIZE = 32 if DRY else 224
JSONL = OUT / "gpu_check.jsonl"
SUMMARY = OUT / "summary.txt"


def _write(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def emit(name: str, **data: Any) -> None:
    data = {"name": name, "elapsed_s": round(time.time() - T0, 1), **data}
    _write(JSONL, json.dumps(data, default=str) + "\n")
    brief = {k: v for k, v in data.items() if k not in ("traceback", "rounds")}
    _write(SUMMARY, json.dumps(brief, default=str) + "\n")
    print(json.dumps(brief, default=str), flush=True)


def step(name: str, fn: Callable[[], dict[str, Any]], needs_s: float = 20.0) -> dict[str, Any] | None:
    left = BUDGET - (time.time() - T0)
    if left < needs_s:
        emit(name, ok=False, skipped=f"time budget: {left:.0f} s left, needs ~{needs_s:.0f} s")
        return None
    t = time.time()
    try:
        result = fn()
        emit(name, ok=True, seconds=round(time.time() - t, 1), **result)
        return result
    except Exception as exc:  # noqa: BLE001 - record and go on
        emit(name, ok=False, seconds=round(time.time() - t, 1), error=f"{type(exc).__name__}: {exc}",
             traceback=traceback.format_exc())
        return None
    finally:
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


# --- 1. environment -------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    mods = {}
    for name in ("numpy", "numba", "torchvision", "pluggy", "click", "filelock", "tqdm", "scipy", "PIL", "pandas",
                 "tabulate", "submitit", "fgbench", "fgbench_dpsh", "fgbench_cmbh"):
        try:
            importlib.import_module(name)
            try:
                mods[name] = importlib.metadata.version({"PIL": "pillow"}.get(name, name))
            except importlib.metadata.PackageNotFoundError:
                mods[name] = "importable (no distribution metadata)"
        except Exception as exc:  # noqa: BLE001
            mods[name] = f"MISSING ({type(exc).__name__}: {exc})"
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "modules": mods, "cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version(), devices=torch.cuda.device_count(),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def cli_run(*extra: str) -> dict[str, Any]:
    import subprocess

    results = OUT / "-".join(["records", *(a.strip("-") for a in extra)])
    cmd = [sys.executable, "-m", "fgbench", "run", "-m", "dpsh", "--bits", "12", "--set", "weights=random",
           "--results", str(results), "-q", *extra]
    if DRY:
        cmd += ["--epochs", "1", "--device", "cpu"]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    wall = time.perf_counter() - t
    if out.returncode:
        raise RuntimeError(f"exit {out.returncode}: {(out.stdout + out.stderr)[-1500:]}")
    rec = json.loads(next(results.rglob("*.json")).read_text())
    return {"wall_s": round(wall, 1), "train_seconds": rec["train_seconds"], "eval_seconds": rec["eval_seconds"],
            "images_per_second": rec["training"]["images_per_second"], "map": rec["metrics"].get("map"),
            "engine": rec["engine"], "environment": {k: rec["environment"].get(k) for k in
                                                     ("device", "device_name", "amp", "channels_last",
                                                      "cudnn_benchmark", "world_size")}}


# --- 2. mAP on the GPU ------------------------------------------------------------------------


def map_gpu(bits: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from fgbench.metrics import hamming_kernels as hk
    from fgbench.metrics.retrieval import evaluate_codes

    nq, nd, classes = (1169, 292, 29) if DRY else (116931, 29200, 292)
    rng = np.random.default_rng(0)
    q = np.where(rng.random((nq, bits)) > 0.5, 1.0, -1.0).astype(np.float32)
    d = np.where(rng.random((nd, bits)) > 0.5, 1.0, -1.0).astype(np.float32)
    ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, nd)
    qt, dt = torch.tensor(q, device=DEV), torch.tensor(d, device=DEV)
    qlt, dlt = torch.tensor(ql, device=DEV), torch.tensor(dl, device=DEV)
    out: dict[str, Any] = {"bits": bits, "queries": nq, "database": nd}
    ref = hk.histograms_cpu(q[:3000], d, ql[:3000], dl)
    for method in ("scatter", "compare"):
        hk.histograms_torch(qt[:5000], dt, qlt[:5000], dlt, method=method)  # warm-up
        _sync()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            hk.histograms_torch(qt, dt, qlt, dlt, method=method)
            _sync()
            times.append(time.perf_counter() - t)
        got = hk.histograms_torch(qt[:3000], dt, qlt[:3000], dlt, method=method)
        out[f"{method}_s"] = round(min(times), 4)
        out[f"{method}_exact"] = all(np.array_equal(a.cpu().numpy(), b) for a, b in zip(got, ref))
    t = time.perf_counter()
    ev = evaluate_codes(qt, dt, qlt, dlt)
    out["evaluate_codes_cuda_s"] = round(time.perf_counter() - t, 3)
    out["map"] = round(ev.mean_average_precision, 6)
    t = time.perf_counter()
    hk.histograms_cpu(q, d, ql, dl)
    out["histograms_cpu_s"] = round(time.perf_counter() - t, 3)
    return out


# --- 3, 4, 6, 7, 8. training ------------------------------------------------------------------


def _sync() -> None:
    import torch

    if DEV == "cuda":
        torch.cuda.synchronize()


def _spec(module: str) -> Any:
    return importlib.import_module(module).SPEC


def train(module: str, backbone: str, batch: int, amp: str = "auto", channels_last: str = "auto",
          n_batches: int = 16, epochs: int = 2, rounds: int = 2, workers: int = 10) -> dict[str, Any]:
    from _train_bench import bench_protocol, compare, synthetic_split

    from fgbench.engine.device import EngineOptions

    if DRY:
        backbone, batch, n_batches, epochs, rounds, workers = "resnet18", 8, 2, 1, 1, 0
    split = synthetic_split(batch * n_batches, SIZE)
    protocol = bench_protocol(backbone, SIZE, batch, epochs=epochs)
    options = EngineOptions(device=DEV, amp=amp, channels_last=channels_last, num_workers=workers)
    result = compare(_spec(module), split, protocol, options, rounds=rounds)
    return {"method": module, "backbone": backbone, "batch": batch, "amp": amp, "channels_last": channels_last,
            "images": len(split), "epochs": epochs, **result.as_dict()}


def train_harness_only(module: str, backbone: str, batch: int, **engine: Any) -> dict[str, Any]:
    """Harness images/s with extra engine options (``gpu_augment``, ``compile``): warm-up call, then best of 2."""
    import copy

    from _train_bench import bench_protocol, build_model, harness_images_per_second, synthetic_split

    from fgbench.engine.device import EngineOptions

    n_batches, workers = 16, 10
    if DRY:
        backbone, batch, n_batches, workers = "resnet18", 8, 2, 0
    split = synthetic_split(batch * n_batches, SIZE)
    protocol = bench_protocol(backbone, SIZE, batch, epochs=2)
    options = EngineOptions(device=DEV, num_workers=workers, progress=False, checkpoint=False, **engine)
    template = build_model(_spec(module), protocol, split)
    t = time.perf_counter()
    warm = harness_images_per_second(copy.deepcopy(template), split, protocol, options)
    warm_s = time.perf_counter() - t
    rates = [harness_images_per_second(copy.deepcopy(template), split, protocol, options) for _ in range(2)]
    return {"method": module, "backbone": backbone, "batch": batch, **engine,
            "harness_images_per_s": round(max(rates), 2),
            "rounds": [round(r, 2) for r in rates], "first_call_images_per_s": round(warm, 2),
            "first_call_s": round(warm_s, 1)}


# --- 5. loader ------------------------------------------------------------------------------------


def loader(workers: int) -> dict[str, Any]:
    import torch
    from _augment_bench import N, CacheLikeSplit, cpu_path, device_path

    n = 64 if DRY else N
    split = CacheLikeSplit(n)
    dev = torch.device(DEV)
    out: dict[str, Any] = {"workers": workers, "images": n}
    for name, fn in (("gpu_augment", device_path), ("cpu_transform", cpu_path)):
        fn(split, dev, workers)  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn(split, dev, workers)
            best = min(best, time.perf_counter() - t)
        out[f"{name}_images_per_s"] = round(n / best, 1)
    out["ratio"] = round(out["gpu_augment_images_per_s"] / out["cpu_transform_images_per_s"], 2)
    return out


def main() -> None:
    emit("start", budget_s=BUDGET, out=str(OUT))
    env = step("environment", environment, needs_s=0)
    if not env or not (env.get("cuda_available") or DRY):
        emit("stop", reason="no CUDA device; nothing else to measure")
        return
    has_cmbh = not str(env["modules"].get("fgbench_cmbh", "")).startswith("MISSING")
    step("cli_run_embedded_dpsh_fast_path", lambda: cli_run(), needs_s=40)
    step("cli_run_embedded_dpsh_gpu_augment", lambda: cli_run("--gpu-augment"), needs_s=40)
    step("map_gpu_vegfru_48bits", lambda: map_gpu(48), needs_s=20)
    step("train_dpsh_resnet50_b128_fast_path", lambda: train("fgbench_dpsh", "resnet50", 128), needs_s=40)
    step("train_dpsh_resnet50_b128_gpu_augment",
         lambda: train_harness_only("fgbench_dpsh", "resnet50", 128, gpu_augment=True), needs_s=30)
    step("train_dpsh_resnet18_b256_fast_path", lambda: train("fgbench_dpsh", "resnet18", 256), needs_s=30)
    step("loader_gpu_augment_vs_cpu_0_workers", lambda: loader(0), needs_s=30)
    step("loader_gpu_augment_vs_cpu_8_workers", lambda: loader(8), needs_s=20)
    step("map_gpu_vegfru_12bits", lambda: map_gpu(12), needs_s=15)
    if has_cmbh:
        step("train_cmbh_resnet50_b128_fast_path", lambda: train("fgbench_cmbh", "resnet50", 128), needs_s=45)
    else:
        emit("train_cmbh", ok=False, skipped="fgbench_cmbh not importable")
    variants = (("off", "on"), ("auto", "off"), ("off", "off"))
    for amp, cl in variants:
        step(f"train_dpsh_resnet50_b128_amp_{amp}_channels_last_{cl}",
             lambda amp=amp, cl=cl: train("fgbench_dpsh", "resnet50", 128, amp=amp, channels_last=cl, n_batches=12,
                                          rounds=1), needs_s=40)
    if has_cmbh:
        for amp, cl in variants:
            step(f"train_cmbh_resnet50_b128_amp_{amp}_channels_last_{cl}",
                 lambda amp=amp, cl=cl: train("fgbench_cmbh", "resnet50", 128, amp=amp, channels_last=cl,
                                              n_batches=12, rounds=1), needs_s=45)
    step("train_dpsh_resnet50_b128_compile",
         lambda: train_harness_only("fgbench_dpsh", "resnet50", 128, compile=True), needs_s=90)
    emit("done", total_s=round(time.time() - T0, 1))


if __name__ == "__main__":
    main()
