"""Support for the engine tests that start other processes, and a test of that support.

Subprocesses (torchrun workers, a second ``fgbench run``, submitit jobs, a
job killed mid-training) load plugins from entry points only, so
:func:`plugin_dist` writes a throwaway *installed distribution* — a module
plus a ``.dist-info`` folder declaring an ``fgbench`` entry point — into a
folder that is put on ``PYTHONPATH``.  It registers:

* ``tiny`` — :func:`fgbench.testing.tiny_embedded` (24 train / 12 test images);
* ``crashy`` — a small conv net with BatchNorm and DPSH's loss and code
  memory (cheap enough for many subprocess runs), whose process exits
  (``os._exit(17)``) at the end of the epoch named by ``$FGB_CRASH_AT_EPOCH``,
  which appends one line per training start to ``$FGB_TRAIN_LOG``, and whose
  loss raises ``ValueError`` in jobs of the bit length ``$FGB_RAISE_AT_BITS``
  (a plugin bug, for the failing-job tests); none of which happens in the
  grid's plugin contract check (``BuildContext.dataset == "plugin-check"``);
* ``plain`` — a BatchNorm-free hasher with a DPSH-style code memory that is
  written and read in the same loss, and that saves its memory, weights and
  ``encode_train()`` codes per rank to ``$FGB_DUMP_DIR`` at each epoch end
  (for the multi-process tests).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from fgbench._plugins import PluginHost
from fgbench.testing import registered_plugin

PLUGIN_MODULE = "fgb_engine_testplug"

PLUGIN_SOURCE = '''
"""Test plugin for fgbench's engine tests (written by tests/test_engine_support.py)."""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import fgbench
from fgbench.testing import tiny_embedded
from fgbench_dpsh import DPSH, DPSHConfig

FGBENCH_API_VERSION = 1


class SmallNet(nn.Module):
    """conv-BN-ReLU x 2 -> global average pool: a stand-in backbone with BatchNorm buffers."""

    out_channels = 16

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU())

    def forward(self, x):
        return self.body(x)


class Crashy(DPSH):
    """DPSH's loss and memory on SmallNet; can die at the end of an epoch (to test resuming)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.backbone = SmallNet()
        self.hash_layer = nn.Linear(SmallNet.out_channels, ctx.bits)
        self.in_check = ctx.dataset == "plugin-check"  # the grid's contract check is not a training start

    def on_train_start(self, ctx):
        log = os.environ.get("FGB_TRAIN_LOG")
        if log and not self.in_check:
            with open(log, "a") as fh:
                fh.write(f"{self.bits} {os.getpid()}\\n")

    def on_epoch_end(self, epoch, ctx):
        if os.environ.get("FGB_CRASH_AT_EPOCH") == str(epoch):
            os._exit(17)

    def loss(self, u, batch):
        if os.environ.get("FGB_RAISE_AT_BITS") == str(self.bits) and not self.in_check:
            raise ValueError(f"codes of {self.bits} bits do not fit the memory (test plugin bug)")
        return super().loss(u, batch)


@dataclass(frozen=True)
class PlainConfig:
    eta: float = 1.0


class Plain(fgbench.HashingModel):
    """conv -> ReLU -> pool -> linear codes; pairwise loss against a memory written in the same loss (no BN)."""

    def __init__(self, ctx):
        super().__init__()
        self.bits = ctx.bits
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.hash = nn.Linear(32, ctx.bits)
        self.memory = fgbench.CodeMemory(ctx.num_train, ctx.bits)
        self.class_stats = fgbench.ClassMeans(ctx.num_classes, ctx.bits)
        self.register_buffer("train_labels", torch.as_tensor(ctx.train_labels, dtype=torch.long))

    def encode(self, images):
        return self.hash(self.features(images))

    def forward(self, images):
        return self.encode(images)

    def loss(self, u, batch):
        u = u.float()
        self.memory.update(batch.indices, u)
        self.class_stats.add(batch.labels, u)
        similar = (batch.labels[:, None] == self.train_labels[None, :]).float()
        theta = 0.5 * u @ self.memory.codes.T
        pair = (F.softplus(theta) - similar * theta).sum() / (len(u) * len(self.train_labels))
        quant = (torch.sign(u).detach() - u).pow(2).mean()
        return pair + 0.1 * quant, {"pair": pair}

    def on_epoch_end(self, epoch, ctx):
        folder = os.environ.get("FGB_DUMP_DIR")
        if folder:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            torch.save({"memory": self.memory.codes.clone(), "weight": self.hash.weight.detach().clone(),
                        "encoded": ctx.encode_train(), "class_sums": self.class_stats.sums.clone(),
                        "class_counts": self.class_stats.counts.clone()},
                       os.path.join(folder, f"rank{rank}-epoch{epoch}.pt"))
        self.class_stats.reset()


def _spec(name, build, config_cls, summary):
    return fgbench.MethodSpec(name=name, summary=summary, citation="test", config_cls=config_cls, build=build)


@fgbench.hookimpl
def register_methods(register):
    register(_spec("crashy", Crashy, DPSHConfig, "DPSH that can crash (engine tests)"))
    register(_spec("plain", Plain, PlainConfig, "BatchNorm-free memory hasher (engine tests)"))


@fgbench.hookimpl
def register_datasets(register):
    register(tiny_embedded())
'''


def write_plugin_dist(folder: Path) -> Path:
    """Write the test plugin as an installed distribution under ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    info = folder / f"{PLUGIN_MODULE}-0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN_MODULE}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[fgbench]\nengine-tests = {PLUGIN_MODULE}\n")
    return folder


def subprocess_env(plugin_dir: Path, threads: int = 1, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that sees the test plugin (and only needed plugins), ``threads`` CPU threads."""
    env = dict(os.environ)
    paths = [str(plugin_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = str(threads)
    env["FGBENCH_DISABLE_PLUGINS"] = ",".join(other_entry_points())
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra)
    return env


def other_entry_points() -> list[str]:
    """Installed fgbench entry points other than DPSH (skipping their imports makes subprocesses start faster)."""
    from importlib import metadata

    return sorted({ep.name for ep in metadata.entry_points(group="fgbench")} - {"dpsh", "engine-tests"})


def fgbench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fgbench", *args]


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugin_dist(tmp_path_factory.mktemp("plugin-dist"))


@pytest.fixture
def testplug_host(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginHost]:
    """The test plugin registered in this process (crashy, plain, tiny), for in-process runs."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    with registered_plugin(importlib.import_module(PLUGIN_MODULE)) as host:
        yield host


def test_the_test_plugin_is_an_installed_distribution(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    monkeypatch.syspath_prepend(str(plugin_dir))
    eps = [ep for ep in metadata.entry_points(group="fgbench") if ep.name == "engine-tests"]
    assert [ep.value for ep in eps] == [PLUGIN_MODULE]
    assert "engine-tests" not in subprocess_env(plugin_dir)["FGBENCH_DISABLE_PLUGINS"].split(",")
