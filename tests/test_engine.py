"""The training engine: fast-path defaults, device augmentation, batch sharding, no per-step syncs, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision.transforms import v2

from test_engine_support import plugin_dir, testplug_host  # noqa: F401  (fixtures)
from fgbench.cli import main
from fgbench.data.transforms import build_transform
from fgbench.engine import device as device_mod
from fgbench.engine.checkpoint import load_checkpoint
from fgbench.engine.device import EngineError, EngineOptions, resolve_runtime
from fgbench.engine.distributed import GlobalBatchSampler
from fgbench.data.transforms import DeviceAugment, pad_collate, uint8_transform
from fgbench.engine.train import train_model
from fgbench.protocol import Protocol, resolve_protocol
from fgbench.testing import tiny_embedded

PROTO = Protocol(input_size=24, resize_size=32, weights="random")


def _images(rng: np.random.Generator, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    return [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in sizes]


# --- defaults and options -------------------------------------------------------------------


def test_cpu_runtime_stays_float32_contiguous() -> None:
    rt = resolve_runtime(EngineOptions(device="cpu"))
    assert rt.device.type == "cpu" and rt.amp_dtype is None and not rt.channels_last and not rt.use_scaler
    assert rt.describe()["world_size"] == 1


def test_cuda_defaults_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda *_a: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    rt = resolve_runtime(EngineOptions())
    assert rt.device.type == "cuda" and rt.amp_dtype == torch.bfloat16 and rt.channels_last and not rt.use_scaler
    assert torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    rt = resolve_runtime(EngineOptions())
    assert rt.amp_dtype == torch.float16 and rt.use_scaler  # fp16 needs the GradScaler
    rt = resolve_runtime(EngineOptions(amp="off", channels_last="off", deterministic=True))
    assert rt.amp_dtype is None and not rt.channels_last and not torch.backends.cudnn.benchmark


def test_auto_workers() -> None:
    from fgbench.engine.device import auto_workers

    assert auto_workers(torch.device("cpu"), -1) == 0 and auto_workers(torch.device("cpu"), 3) == 3
    assert 0 <= auto_workers(torch.device("cuda"), -1) <= 8 and auto_workers(torch.device("cuda"), 0) == 0


def test_bad_engine_options_are_named() -> None:
    with pytest.raises(EngineError, match="--amp"):
        resolve_runtime(EngineOptions(amp="fp8"))
    with pytest.raises(EngineError, match="--channels-last"):
        resolve_runtime(EngineOptions(channels_last="maybe"))


def test_every_engine_option_is_recorded(testplug_host, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    res = CliRunner().invoke(main, ["run", "-m", "crashy", "-d", "tiny", "--results", str(tmp_path), "-q", "--device",
                                    "cpu", "--gpu-augment", "--checkpoint-every", "0", "--log-every", "7"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads(next(tmp_path.rglob("*.json")).read_text())
    fields = {f.name for f in dataclasses.fields(EngineOptions)}
    assert fields <= set(rec["engine"]), fields - set(rec["engine"])
    assert rec["engine"]["gpu_augment"] is True and rec["engine"]["log_every"] == 7
    assert rec["engine"]["checkpoint_every"] == 0 and rec["engine"]["world_size"] == 1
    assert rec["environment"]["amp"] == "off" and rec["training"]["world_size"] == 1
    assert rec["engine"]["num_workers"] == -1 and rec["training"]["loader_workers"] == 0  # auto: none on the CPU
    assert rec["training"]["images_per_second"] > 0


# --- device augmentation ----------------------------------------------------------------------


def test_device_augment_equals_cpu_transform_for_the_same_crop() -> None:
    rng = np.random.default_rng(0)
    images = [uint8_transform(PROTO)(img) for img in _images(rng, [(40, 52), (32, 32), (61, 35), (33, 90)])]
    raw, sizes, _labels, _idx = pad_collate([(img, 0, i) for i, img in enumerate(images)])
    assert raw.dtype == torch.uint8 and [tuple(s) for s in sizes.tolist()] == [tuple(i.shape[-2:]) for i in images]
    aug = DeviceAugment(PROTO, train=True, device=torch.device("cpu"), seed=3)
    top, left, flip = aug.sample(sizes)
    out = aug.apply(raw, top, left, flip)
    tail = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for k, img in enumerate(images):
        crop = v2.functional.crop(img, int(top[k]), int(left[k]), 24, 24)
        if flip[k]:
            crop = v2.functional.horizontal_flip(crop)
        assert torch.equal(out[k], tail(crop)), k  # bit-identical
    # evaluation: the centre crop of the CPU eval transform, bit for bit
    centre = DeviceAugment(PROTO, train=False, device=torch.device("cpu"))(raw, sizes)
    cpu_eval = build_transform(PROTO, train=False)
    for k, img in enumerate(images):
        assert torch.equal(centre[k], cpu_eval(img)), k


def test_device_augment_has_the_cpu_crop_and_flip_distribution() -> None:
    """Offsets uniform over every position (as RandomCrop), flips with p = 1/2 (as RandomHorizontalFlip)."""
    h, w, s, n = 30, 27, 24, 6000
    aug = DeviceAugment(PROTO, train=True, device=torch.device("cpu"), seed=0)
    top, left, flip = aug.sample(torch.tensor([[h, w]] * n))
    torch.manual_seed(0)
    crop = v2.RandomCrop(s)
    cpu = [crop.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
    cpu_top = np.array([p["top"] for p in cpu])
    for ours, theirs, span in ((top.numpy(), cpu_top, h - s), (left.numpy(), None, w - s)):
        counts = np.bincount(ours, minlength=span + 1)
        assert ours.min() == 0 and ours.max() == span and len(counts) == span + 1
        expected = n / (span + 1)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 30, (counts, chi2)  # df <= 6: p < 1e-4 under uniformity
        if theirs is not None:
            assert np.bincount(theirs, minlength=span + 1).min() > 0.7 * expected
    assert abs(flip.float().mean().item() - 0.5) < 0.03
    # a different seed draws different crops; the generator state round-trips
    state = aug.state()
    a = aug.sample(torch.tensor([[h, w]] * 8))
    aug.set_state(state)
    assert all(torch.equal(x, y) for x, y in zip(a, aug.sample(torch.tensor([[h, w]] * 8))))


def test_none_augmentation_uses_the_centre_crop_in_training() -> None:
    proto = dataclasses.replace(PROTO, train_crop="center", flip_p=0.0)
    aug = DeviceAugment(proto, train=True, device=torch.device("cpu"))
    top, left, flip = aug.sample(torch.tensor([[32, 41]]))
    assert (int(top), int(left), bool(flip)) == (4, int(round((41 - 24) / 2)), False)


# --- batches of one or several processes ------------------------------------------------------


@pytest.mark.parametrize("n,batch", [(24, 8), (29, 8), (6, 8)])
def test_global_batches_are_split_across_ranks(n: int, batch: int) -> None:
    drop_last = n > batch
    single = list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5), drop_last))
    ranks = [list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5), drop_last, rank=r, world=2))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for k, full in enumerate(single):
        assert len(ranks[0][k]) == len(ranks[1][k])  # ranks stay in step
        assert ranks[0][k] + ranks[1][k] == full[: 2 * (len(full) // 2)]
    seen = [i for b in single for i in b]
    assert len(seen) == len(set(seen)) and len(seen) == (n // batch * batch if drop_last else n)
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(n, batch, torch.Generator(), drop_last, rank=0, world=3)


# --- the loop ---------------------------------------------------------------------------------


def _tiny_job(host, batch_size: int, epochs: int = 1, **proto: object):  # type: ignore[no-untyped-def]
    """A fresh ``crashy`` model (small conv net with BatchNorm, DPSH loss and memory) on the tiny dataset."""
    from fgbench.engine.runner import Job, JobRunner

    spec = tiny_embedded(batch_size=batch_size, epochs=epochs, **proto)
    protocol = resolve_protocol("fair", spec.fair_overrides)
    runner = JobRunner(host.registry, Path("."), Path("."), EngineOptions(device="cpu"))
    data = runner.dataset("tiny")
    model, _spec, _config = runner.build_model(Job("crashy", "tiny", 8, 0, protocol), data)
    return model, data.split("train"), protocol


def _harness_syncs(host, batch_size: int) -> int:  # type: ignore[no-untyped-def]
    """Host reads of tensor values made by fgbench/engine code during one epoch of ``batch_size`` batches."""
    model, split, protocol = _tiny_job(host, batch_size)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
            original = getattr(torch.Tensor, name)

            def spy(self, *a, _original=original, **k):  # type: ignore[no-untyped-def]
                if "fgbench/engine" in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                    calls.append(sys._getframe(1).f_lineno)
                return _original(self, *a, **k)

            mp.setattr(torch.Tensor, name, spy)
        train_model(model, split, protocol, resolve_runtime(EngineOptions(device="cpu")),
                    EngineOptions(device="cpu", progress=False), seed=0)
    return len(calls)


def test_no_host_sync_per_step(testplug_host) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    few = _harness_syncs(testplug_host, batch_size=12)  # 2 steps
    many = _harness_syncs(testplug_host, batch_size=2)  # 12 steps
    assert many == few, f"{many} host reads with 12 steps vs {few} with 2: the loop syncs per step"


def test_checkpoint_is_complete_atomic_and_weights_only(
    testplug_host: object, tmp_path: Path  # noqa: F811
) -> None:
    model, split, protocol = _tiny_job(testplug_host, batch_size=8, epochs=2)
    ckpt = tmp_path / "job.ckpt"
    opts = EngineOptions(device="cpu", progress=False, checkpoint_every=0, gpu_augment=True)
    rt = resolve_runtime(opts)
    train_model(model, split, protocol, rt, opts, seed=0, checkpoint_path=ckpt, checkpoint_meta={"a": 1})
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # raises if anything needs unpickling code
    expected = {"model", "optimizer", "scheduler", "scaler", "rank_states", "loader_rng", "epoch", "fingerprint"}
    assert expected <= set(state)
    assert state["epoch"] == 0 and len(state["rank_states"]) == 1  # the last epoch writes no checkpoint
    assert {"rng", "augment"} <= set(state["rank_states"][0])
    assert [p.name for p in tmp_path.iterdir()] == ["job.ckpt"]  # no temporary files left
    saved = ckpt.read_bytes()
    model2, *_ = _tiny_job(testplug_host, batch_size=8, epochs=2)
    result = train_model(model2, split, protocol, rt, opts, seed=0, checkpoint_path=ckpt, checkpoint_meta={"a": 1})
    assert result.resumed_from_epoch == 1 and len(result.epoch_losses) == 2
    # a checkpoint written for other settings (another fingerprint) is not loaded: training starts over
    ckpt.write_bytes(saved)
    model3, *_ = _tiny_job(testplug_host, batch_size=8, epochs=2)
    result = train_model(model3, split, protocol, rt, opts, seed=0, checkpoint_path=ckpt, checkpoint_meta={"a": 2})
    assert result.resumed_from_epoch == 0
    ckpt.write_bytes(b"torn")
    assert load_checkpoint(ckpt) is None


def test_checkpoint_interval_skips_saves(testplug_host, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    model, split, protocol = _tiny_job(testplug_host, batch_size=8, epochs=2)
    opts = EngineOptions(device="cpu", progress=False, checkpoint_every=3600)
    train_model(model, split, protocol, resolve_runtime(opts), opts, seed=0, checkpoint_path=tmp_path / "j.ckpt")
    assert not (tmp_path / "j.ckpt").exists()


def test_relaunch_command_line_round_trips() -> None:
    from fgbench.cli.run import _argv_without, run

    args = ["--methods", "dpsh", "--bits", "12,48", "--set", "dpsh.eta=5", "--set", "input_size=32", "--gpu-augment",
            "--nproc", "2", "-q", "--checkpoint-every", "0"]
    ctx = run.make_context("run", list(args))
    argv = _argv_without(ctx, skip={"nproc"})
    again = run.make_context("run", list(argv))
    assert {k: v for k, v in again.params.items() if k != "nproc"} == {k: v for k, v in ctx.params.items()
                                                                        if k != "nproc"}
    assert again.params["nproc"] == 1 and "--nproc" not in argv


def test_device_module_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="CUDA is not available"):
        device_mod.resolve_runtime(EngineOptions(device="cuda"))
