"""One-shot GPU measurements for a short device lease (writes JSON to $OUT as it goes).

Superseded by ``benchmarks/gpu_bench.sh`` (issue #18: realistic CUB-sized data,
steady-state rates, loaders, every method); kept because it produced
``benchmarks/results/gpu_session-h200-*.json``.

Run on a CUDA machine from the repository root, without installing anything::

    PYTHONPATH=.:plugins/fgbench-dpsh:plugins/fgbench-cnet:plugins/fgbench-multifusnet:plugins/fgbench-cmbh:\
plugins/fgbench-exchnet python benchmarks/gpu_session.py

``FGB_SCALE=tiny`` runs the same code paths at toy sizes (CPU smoke test).
Measured: mAP@all on the GPU at VegFru scale (12/48 bits); a bare PyTorch
training loop (ResNet-50 @224 batch 128: fp32, bf16, bf16 + channels_last;
ResNet-18 batch 256); the harness loop for every method at 224 on the
embedded dataset upscaled (AMP + channels_last, plus AMP off / channels_last
off for DPSH and CMBH), with the mAP reached after a few epochs.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

TINY = os.environ.get("FGB_SCALE") == "tiny"
OUT = Path(os.environ.get("OUT", "/tmp/gpu_session"))
OUT.mkdir(parents=True, exist_ok=True)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RESULTS: dict[str, Any] = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
                           "torch": torch.__version__}
T0 = time.time()
BUDGET_S = float(os.environ.get("FGB_BUDGET_S", "150"))


def save() -> None:
    (OUT / "gpu_session.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def measure(name: str, fn: Callable[[], Any]) -> None:
    if time.time() - T0 > BUDGET_S:
        RESULTS[name] = "skipped: time budget"
    else:
        try:
            RESULTS[name] = fn()
        except Exception as exc:  # noqa: BLE001 - keep going, record the failure
            RESULTS[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(name, RESULTS[name], flush=True)
    save()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def gpu_map() -> dict[str, float]:
    from fgbench.metrics.hamming_kernels import histograms_torch
    from fgbench.metrics.retrieval import evaluate_codes

    nq, nd = (2000, 500) if TINY else (116_931, 29_200)
    out = {}
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for bits in (12, 48):
        q = torch.randint(0, 2, (nq, bits), device=DEVICE, generator=g).float() * 2 - 1
        d = torch.randint(0, 2, (nd, bits), device=DEVICE, generator=g).float() * 2 - 1
        ql = torch.randint(0, 292, (nq,), device=DEVICE, generator=g)
        dl = torch.randint(0, 292, (nd,), device=DEVICE, generator=g)
        histograms_torch(q[:100], d, ql[:100], dl)
        sync()
        t = time.perf_counter()
        histograms_torch(q, d, ql, dl)
        sync()
        out[f"histograms_{bits}b_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ev = evaluate_codes(q, d, ql, dl)
        sync()
        out[f"map_total_{bits}b_s"] = time.perf_counter() - t
        out[f"map_{bits}b"] = ev.mean_average_precision
    return out


def bare_loop(arch: str, batch: int, amp: bool, channels_last: bool, steps: int = 15) -> float:
    import torchvision

    size = 64 if TINY else 224
    batch = 8 if TINY else batch
    steps = 2 if TINY else steps
    model = getattr(torchvision.models, arch)(num_classes=100).to(DEVICE)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=DEVICE).to(memory_format=fmt)
    y = torch.randint(0, 100, (batch,), device=DEVICE)
    torch.backends.cudnn.benchmark = True

    def step() -> None:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return round(batch * steps / (time.perf_counter() - t), 1)


def harness(method: str, amp: str = "auto", channels_last: str = "auto", epochs: int = 3) -> dict[str, Any]:
    epochs = 1 if TINY else epochs
    from fgbench.data.embedded import EmbeddedConfig, EmbeddedDataset
    from fgbench.engine.device import EngineOptions, resolve_runtime
    from fgbench.engine.runner import Job, JobRunner
    from fgbench.engine.encode import encode_split
    from fgbench.engine.train import train_model
    from fgbench.metrics.retrieval import evaluate_codes
    from fgbench._plugins import load_plugins
    from fgbench.protocol import Protocol

    modules = [importlib.import_module(f"fgbench_{m}") for m in ("dpsh", "cnet", "multifusnet", "cmbh", "exchnet")
               if importlib.util.find_spec(f"fgbench_{m}")]
    host = load_plugins(autoload=False, extra=modules)
    size, resize = (64, 72) if TINY else (224, 256)
    protocol = Protocol(backbone="resnet18" if TINY else "resnet50", weights="random", input_size=size, resize_size=resize,
                        optimizer="adam", lr=1e-4, backbone_lr_mult=1.0, epochs=epochs, batch_size=8 if TINY else 64,
                        bits=(12,))
    options = EngineOptions(amp=amp, channels_last=channels_last, num_workers=0 if TINY else 8, progress=False,
                            checkpoint=False, gpu_augment=DEVICE.type == "cuda")
    runner = JobRunner(host.registry, Path("/tmp"), Path("/tmp"), options)
    dataset = EmbeddedDataset(EmbeddedConfig(train_per_class=4, test_per_class=2) if TINY else EmbeddedConfig())
    job = Job(method, "embedded", 12, 0, protocol)
    model, _spec, _cfg = runner.build_model(job, dataset)
    runtime = resolve_runtime(options)
    train = dataset.split("train")
    result = train_model(model, train, protocol, runtime, options, seed=0)
    q = encode_split(model, dataset.split("test"), protocol, runtime)
    d = encode_split(model, train, protocol, runtime)
    ev = evaluate_codes(q, d, torch.as_tensor(dataset.split("test").labels), torch.as_tensor(train.labels))
    return {"images_per_second": round(result.images_per_second, 1), "train_s": round(result.seconds, 2),
            "epochs": epochs, "map_12b": round(ev.mean_average_precision, 4), "runtime": runtime.describe()}


ONLY = os.environ.get("FGB_ONLY", "")
if not ONLY:
    measure("gpu_map_vegfru_scale", gpu_map)
for arch, batch in (("resnet50", 128), ("resnet18", 256)):
    for amp, cl in ((False, False), (True, False), (True, True)):
        if ONLY:
            break
        measure(f"bare_{arch}_bs{batch}_{'bf16' if amp else 'fp32'}{'_cl' if cl else ''}_img_s",
                lambda arch=arch, batch=batch, amp=amp, cl=cl: bare_loop(arch, batch, amp, cl))
if ONLY == "steady":  # a warm-up job first, then longer runs (steady-state images/s)
    measure("warmup", lambda: harness("dpsh", epochs=1))
    for method in ("dpsh", "cmbh"):
        measure(f"steady_{method}_bf16_cl", lambda m=method: harness(m, epochs=8))
        measure(f"steady_{method}_fp32", lambda m=method: harness(m, amp="off", channels_last="off", epochs=4))
    save()
    raise SystemExit(0)
for method in ("dpsh", "cmbh", "cnet", "multifusnet", "exchnet"):
    measure(f"harness_{method}_bf16_cl", lambda m=method: harness(m))
for method in ("dpsh", "cmbh"):
    measure(f"harness_{method}_amp_off_cl_off", lambda m=method: harness(m, amp="off", channels_last="off", epochs=1))
    measure(f"harness_{method}_bf16_cl_off", lambda m=method: harness(m, channels_last="off", epochs=1))
RESULTS["wall_s"] = round(time.time() - T0, 1)
save()
