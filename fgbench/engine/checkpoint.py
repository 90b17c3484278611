"""Per-epoch checkpoints for resuming an interrupted job (atomic writes, ``weights_only`` loads).

A checkpoint is written to a temporary file in the same folder, flushed to
disk and renamed over the previous one, so a job killed at any moment leaves
either the old or the new checkpoint, never a torn one.  It holds only
tensors and plain Python values, so it loads with ``torch.load(...,
weights_only=True)`` (no pickled code runs when resuming).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgbench.atomic import atomic_output


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename into place."""
    with atomic_output(path, "wb", fsync=True) as fh:
        torch.save(obj, fh)


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
    """The checkpoint at ``path``, or None when absent/unreadable (then training restarts)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file: start over
        return None
