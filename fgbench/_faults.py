"""Test-only fault injection: make a run die or fail at a named point, to test recovery.

**For tests only.**  Nothing here runs unless the environment variable
``FGBENCH_FAULT`` is set; unset, :func:`fault_point` is one dictionary
lookup.  Never set it for a real run.

``FGBENCH_FAULT=<point>:<action>[:<n>]`` fires at the ``n``-th time (default
the first) this process reaches ``<point>``.  Actions:

* ``kill`` — ``SIGKILL`` this process (no cleanup at all, like ``kill -9``);
* ``term`` — ``SIGTERM`` this process (what a scheduler sends first);
* ``enospc`` — raise ``OSError(ENOSPC)`` naming the file being written;
* ``raise`` — raise ``RuntimeError``.

Points (see the callers): ``epoch_end`` (after an epoch's losses, hooks and
before its checkpoint), ``evaluate`` (after encoding, before the metrics),
``checkpoint_before_rename``/``checkpoint_after_rename`` and
``record_before_rename``/``record_after_rename`` (around the atomic rename of
a checkpoint or a record: :func:`fgbench._atomic.atomic_output` calls
:func:`rename_point` inside a :func:`writing` block).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

ENV = "FGBENCH_FAULT"
POINTS = ("epoch_end", "evaluate", "checkpoint_before_rename", "checkpoint_after_rename", "record_before_rename",
          "record_after_rename")
ACTIONS = ("kill", "term", "enospc", "raise")

_hits: dict[str, int] = {}
_writing: ContextVar[str | None] = ContextVar("fgbench_fault_writing", default=None)


def fault_point(name: str, path: Path | str | None = None) -> None:
    """Carry out ``$FGBENCH_FAULT``'s action if it names ``name`` and this is the chosen hit; else nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name:
        return
    if len(parts) not in (2, 3) or parts[1] not in ACTIONS:
        raise ValueError(f"{ENV}={spec!r}: use <point>:<action>[:<n>] with action one of {', '.join(ACTIONS)}")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != (int(parts[2]) if len(parts) == 3 else 1):
        return
    action = parts[1]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path is not None else name)
    else:
        raise RuntimeError(f"injected fault at {name}")


@contextlib.contextmanager
def writing(kind: str) -> Iterator[None]:
    """Name the kind of file (``checkpoint``, ``record``) the atomic writes in this block produce."""
    token = _writing.set(kind)
    try:
        yield
    finally:
        _writing.reset(token)


def rename_point(stage: str, path: Path | str) -> None:
    """``<kind>_<stage>_rename`` for the kind set by :func:`writing` (``stage``: ``before`` or ``after``)."""
    if not os.environ.get(ENV):
        return
    kind = _writing.get()
    if kind:
        fault_point(f"{kind}_{stage}_rename", path)


def reset() -> None:
    """Forget the hit counts (for in-process tests that run several commands)."""
    _hits.clear()
