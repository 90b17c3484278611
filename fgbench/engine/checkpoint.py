"""Per-epoch checkpoints for resuming an interrupted job (atomic writes, ``weights_only`` loads).

A checkpoint is written to a temporary file in the same folder, flushed to
disk and renamed over the previous one, so a job killed at any moment leaves
either the old or the new checkpoint, never a torn one.  It holds only
tensors and plain Python values, so it loads with ``torch.load(...,
weights_only=True)`` (no pickled code runs when resuming).

A checkpoint that cannot be used — truncated, not a checkpoint (``{}``),
written for other settings (fingerprint), with tensors of other shapes or
non-finite weights — is reported by :func:`read_checkpoint` /
:func:`checkpoint_problem` with a one-line reason; the training loop then
warns, deletes it and starts the job from scratch.
"""

from __future__ import annotations

import errno
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgbench._atomic import atomic_output
from fgbench import _faults as faults

#: Keys every checkpoint written by :func:`fgbench.engine.train.train_model` has.
REQUIRED_KEYS = ("format", "fingerprint", "model", "optimizer", "scheduler", "scaler", "loader_rng", "epoch",
                 "epoch_losses", "logs")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed from (message: why)."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename into place.

    Raises:
        OSError: the file cannot be written (full disk, quota...); the message
            names ``path`` and no temporary file is left behind.  torch's own
            writer reports such failures as a ``RuntimeError`` from
            ``inline_container.cc``, which is turned into this ``OSError``.
    """
    with faults.writing("checkpoint"):
        try:
            with atomic_output(path, "wb", fsync=True) as fh:
                try:
                    torch.save(obj, fh)
                except RuntimeError as exc:  # torch's C++ writer: "[enforce fail at inline_container.cc:...]"
                    text = str(exc)
                    if "inline_container" not in text and "write" not in text.lower():
                        raise
                    raise OSError(errno.EIO, "torch.save could not write it (is the disk full?)", str(path)) from None
        except OSError as exc:
            if exc.filename != str(path):
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
            raise


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and numbers (``weights_only``-loadable)."""
    _name, keys, pos, has_gauss, cached = np.random.get_state()
    _version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor(np.asarray(keys).astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(cached)],
        "python": torch.tensor(list(py_state), dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy().astype(np.uint32)
    has_gauss, cached = state.get("numpy_gauss", [0, 0.0])
    np.random.set_state(("MT19937", keys, state["numpy_pos"], int(has_gauss), float(cached)))
    py = tuple(int(v) for v in state["python"].tolist())
    random.setstate((3, py, state.get("python_gauss")))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when absent or unreadable (see :func:`read_checkpoint` for why)."""
    try:
        return read_checkpoint(path)
    except CheckpointError:
        return None


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none.

    Raises:
        CheckpointError: the file exists but is not a loadable checkpoint
            (truncated, foreign, unreadable); the message says why.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: the caller discards it
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"unreadable ({type(exc).__name__}{': ' + first if first else ''})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"not a checkpoint (a {type(state).__name__}, expected a dict)")
    return state


def checkpoint_problem(state: dict[str, Any], fingerprint: str, epochs: int,
                       model_state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` cannot resume this job, or None when it looks usable.

    Checks the keys, the fingerprint (protocol, method config, seed), the
    epoch against ``epochs``, the model's parameter names and shapes against
    ``model_state`` (the freshly built model's ``state_dict()``) and that every
    floating-point tensor (weights, buffers, optimizer state) is finite.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        return f"not a checkpoint of this harness (missing {', '.join(missing)})"
    if state["fingerprint"] != fingerprint:
        return "written for other settings (protocol, method config or seed differ)"
    epoch = state["epoch"]
    if not isinstance(epoch, int) or not 0 <= epoch < epochs:
        return f"epoch {epoch!r} is outside this job's 0..{epochs - 1}"
    if not isinstance(state["epoch_losses"], list) or len(state["epoch_losses"]) != epoch + 1:
        return f"holds {len(state['epoch_losses']) if isinstance(state['epoch_losses'], list) else '?'} " \
               f"epoch losses for epoch {epoch}"
    saved = state["model"]
    if not isinstance(saved, dict):
        return "its model entry is not a state dict"
    absent = sorted(set(model_state) - set(saved))
    extra = sorted(set(saved) - set(model_state))
    if absent or extra:
        names = (absent or extra)[:3]
        return f"model {'lacks' if absent else 'has unexpected'} {', '.join(names)}" + \
               (f" and {len(absent or extra) - 3} more" if len(absent or extra) > 3 else "")
    for name, tensor in model_state.items():
        other = saved[name]
        if not isinstance(other, torch.Tensor) or tuple(other.shape) != tuple(tensor.shape):
            shape = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            return f"model {name} has shape {shape}, this model {tuple(tensor.shape)}"
    bad = _first_non_finite(saved) or _first_non_finite(state["optimizer"], "optimizer")
    if bad:
        return f"non-finite values in {bad}"
    for i, losses in enumerate(state["epoch_losses"]):
        if not isinstance(losses, dict) or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                   for v in losses.values()):
            return f"epoch {i}'s losses are not finite numbers"
    return None


def _first_non_finite(obj: Any, where: str = "model") -> str | None:
    """The name of the first floating-point tensor in ``obj`` (nested dicts/lists) holding NaN or inf."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            return where
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _first_non_finite(value, f"{where} {key}" if where == "model" else f"{where}[{key!r}]")
        if found:
            return found
    return None
