"""Backbone pretraining on a *disjoint* synthetic pretext set (the CPU stand-in for ImageNet).

Hashing methods in the papers start from ImageNet weights; without them
(offline, CPU) pairwise losses such as DPSH's collapse from random
initialisation (all codes equal).  For the embedded dataset the ``fair``
protocol therefore starts every method from the same backbone pretrained by
classification on a separate synthetic set: generated with another seed and
another taxonomy (4 genera x 6 species, other stripe angles, all crown
colours), so no image or class of the embedded benchmark is seen.  The
weights are trained once per (backbone, image size), deterministically (on
``PRETEXT_THREADS`` threads, so not depending on the machine's core count), and
cached under ``$FGBENCH_CACHE`` (default ``~/.cache/fgbench``) behind a
file lock; the run record names them ``pretext:<file> sha256:<prefix>``.

Beside each weights file, ``<file>.json`` records the SHA-256 and size of its
bytes (written after the weights, both atomically).  The file is verified
against it every time it is used: a weights file that is empty, truncated,
replaced (e.g. by ``{}``) or has a flipped byte, or one without that record
(written by an older fgbench), is never loaded: a one-line warning names it
and it is trained again (deterministic: the same weights come back).

Training them takes a while on a CPU (the measured time is in
docs/embedded-dataset.md), so it is announced on stderr with one line when it
starts and one, with the seconds, when it ends, whatever the command's
``--quiet``: the first run never trains in silence.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from fgbench._atomic import atomic_write_bytes, atomic_write_text, file_sha256
from fgbench.backbones import WeightsProvider, build_backbone
from fgbench.data.base import user_cache_root
from fgbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fgbench.errors import BackboneError

PRETEXT_VERSION = 2  # 2: trained on PRETEXT_THREADS threads (version 1 used the process's thread count)
PRETEXT_EPOCHS = 5
#: torch intra-op threads the pretext trains on, whatever the machine: float sums are ordered by the thread
#: count, and five epochs at lr 2e-3 amplify that (measured: ResNet-10 weights trained on 1 and on 2 threads
#: differ, and HashNet seed 0 scored 0.4388 vs 0.3847 from them), so one fixed count makes the weights, and the
#: records that start from them, the same on every machine with the same torch build
PRETEXT_THREADS = 1
PRETEXT_SEED = 123


def _progress(message: str) -> None:
    """One progress line on stderr (shown with ``-q`` too: ``-q`` only hides progress bars)."""
    print(message, file=sys.stderr, flush=True)


def pretext_cache_root() -> Path:
    """``$FGBENCH_CACHE`` if set, else the user cache root (``~/.cache/fgbench``); weights go in ``weights/``."""
    env = os.environ.get("FGBENCH_CACHE")
    return Path(env).expanduser() if env else user_cache_root()


def _train(backbone_name: str, image_size: int) -> dict[str, torch.Tensor]:
    """Pretext weights; the caller's torch RNG state is left as it was.

    Pretraining runs inside a model's build (the first job that needs the
    weights), after the job was seeded: drawing from the global RNG there made
    that job's remaining initialisation differ from a run with the weights
    already cached (measured: CMBH seed 0, mAP 0.4275 vs 0.4133).  It runs on
    :data:`PRETEXT_THREADS` threads (the caller's count is restored), so the
    weights do not depend on the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETEXT_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            return _train_seeded(backbone_name, image_size)
    finally:
        torch.set_num_threads(threads)


def _train_seeded(backbone_name: str, image_size: int) -> dict[str, torch.Tensor]:
    from fgbench.data.embedded import EmbeddedConfig, EmbeddedDataset

    cfg = EmbeddedConfig(genera=4, species=6, train_per_class=30, test_per_class=0, image_size=image_size,
                         seed=PRETEXT_SEED)
    split = EmbeddedDataset(cfg).split("train")
    x = torch.from_numpy(split.uint8_images).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    y = torch.as_tensor(split.labels)
    gen = torch.Generator().manual_seed(PRETEXT_SEED)
    torch.manual_seed(PRETEXT_SEED)
    backbone = build_backbone(backbone_name, "random")
    model = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(backbone.out_channels,
                                                                                   cfg.num_classes))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _epoch in range(PRETEXT_EPOCHS):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - 31, 32):
            idx = perm[s : s + 32]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            batch[flip] = batch[flip].flip(3)
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    # stored in torchvision key names, so it loads like any offline weights file
    state = {}
    for k, v in backbone.state_dict().items():
        state[_torchvision_key(k)] = v.clone()
    return state


def _torchvision_key(key: str) -> str:
    if key.startswith("stem."):
        idx, rest = key.split(".", 2)[1:]
        return {"0": "conv1", "1": "bn1"}[idx] + "." + rest
    if key.startswith("stages."):
        idx, rest = key.split(".", 2)[1:]
        return f"layer{int(idx) + 1}.{rest}"
    return key


def weights_path(backbone_name: str, image_size: int) -> Path:
    """Where the pretext weights of ``backbone_name`` at ``image_size`` px are cached."""
    tag = hashlib.sha1(f"{PRETEXT_VERSION}-{backbone_name}-{image_size}-{PRETEXT_EPOCHS}-{torch.__version__}".encode())
    return pretext_cache_root() / "weights" / f"pretext-{backbone_name}-{image_size}px-{tag.hexdigest()[:8]}.pt"


def meta_path(weights: Path) -> Path:
    """The checksum record beside a pretext weights file: ``<file>.json``."""
    return weights.with_name(weights.name + ".json")


def check_weights_file(path: Path) -> tuple[str | None, str]:
    """``(None, sha256)`` when ``path`` matches the checksum recorded beside it, else ``(problem, "")``.

    ``problem`` is ``"absent"`` when there is no weights file, otherwise a
    short phrase saying what is wrong with it (for a one-line warning).
    """
    if not path.is_file():
        return "absent", ""
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)", ""
    meta = meta_path(path)
    if not meta.is_file():
        return f"no checksum recorded ({meta.name} missing; written by an older fgbench?)", ""
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        want_sha, want_size = str(recorded["sha256"]), int(recorded["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its checksum record {meta.name} is unreadable", ""
    if size != want_size:
        return f"truncated or replaced ({size} bytes, checksum record says {want_size})", ""
    sha = file_sha256(path)
    if sha != want_sha:
        return f"damaged (sha256 {sha[:12]}, checksum record says {want_sha[:12]})", ""
    return None, sha


def verified_pretext_weights(backbone_name: str, image_size: int) -> tuple[Path, str]:
    """Path and SHA-256 of the cached pretext weights, verified against their checksum record.

    Absent weights are trained now; damaged ones (see :func:`check_weights_file`)
    are trained again after a one-line warning naming the file.  Training
    prints a line on stderr when it starts and one with its seconds when it ends.  Both happen
    behind a file lock, and the new file is written atomically, then its record.
    """
    path = weights_path(backbone_name, image_size)
    problem, sha = check_weights_file(path)
    if problem is None:
        return path, sha
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        problem, sha = check_weights_file(path)  # another process may have just written it
        if problem is None:
            return path, sha
        if problem != "absent":
            warnings.warn(f"pretext weights {path}: {problem}; not using them, training them again", stacklevel=2)
        _progress(f"pretext: training the {backbone_name} backbone at {image_size} px on the synthetic pretext set "
                  f"({PRETEXT_EPOCHS} epochs; once per machine, cached in {path.parent}) ...")
        started = time.perf_counter()
        buffer = io.BytesIO()
        torch.save(_train(backbone_name, image_size), buffer)
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(path, data, fsync=True)
        record = {"sha256": sha, "bytes": len(data), "backbone": backbone_name, "image_size": image_size,
                  "pretext_version": PRETEXT_VERSION, "epochs": PRETEXT_EPOCHS, "torch": torch.__version__}
        atomic_write_text(meta_path(path), json.dumps(record, indent=2) + "\n")
        _progress(f"pretext: {backbone_name} backbone trained in {time.perf_counter() - started:.1f} s ({path.name})")
    return path, sha


def pretext_weights(backbone_name: str, image_size: int) -> Path:
    """Path of the cached, verified pretext weights (trained now when absent or damaged)."""
    return verified_pretext_weights(backbone_name, image_size)[0]


def provide_pretext_weights(backbone_name: str, argument: str) -> tuple[Path, str]:
    """The ``pretext`` weights provider: protocol weights ``pretext:<size>`` -> (verified file, sha256).

    The embedded dataset hands it to the backbone factory
    (``DatasetSpec.weights_providers``), so backbones never import a dataset.
    """
    size_text = argument or "48"
    if not size_text.isdigit() or int(size_text) < 8:
        raise BackboneError(f"weights 'pretext:{argument}': use pretext:<image size in px>, e.g. pretext:48")
    return verified_pretext_weights(backbone_name, int(size_text))


WEIGHTS_PROVIDERS: dict[str, WeightsProvider] = {"pretext": provide_pretext_weights}
