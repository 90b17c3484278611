"""Compile the evaluation kernels ahead of the first evaluation, in a background thread (issue 16, item 6).

A fresh environment (no numba cache yet) spends seconds compiling the
kernels of :mod:`fgbench.metrics.hamming_kernels` at its first evaluation.
:func:`compile_ahead` starts that compilation (or the load from numba's disk
cache) in a daemon thread, so it overlaps training: the engine calls it when a
job starts training (``engine/runner.py``).  numba compiles under one global
lock, so an evaluation that starts before the thread is done waits only for
the rest of it and never compiles a kernel twice.  If compiling fails in the
thread, nothing is reported there: the evaluation compiles on demand and
raises the error itself.

This module does not import numba; the thread does.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_thread: threading.Thread | None = None
_seconds: float | None = None


def _compile() -> None:
    global _seconds
    t0 = time.perf_counter()
    try:
        from fgbench.metrics import hamming_kernels

        hamming_kernels.compile_kernels()
    except Exception:  # noqa: BLE001 - the evaluation compiles on demand and reports the error itself
        return
    _seconds = time.perf_counter() - t0


def compile_ahead() -> threading.Thread:
    """Start compiling the tie-averaged evaluation kernels in a daemon thread (once per process); the thread."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_compile, name="fgbench-compile-kernels", daemon=True)
            _thread.start()
        return _thread


def compile_seconds() -> float | None:
    """How long the background compilation took (None while running, if it failed, or if never started)."""
    return _seconds
