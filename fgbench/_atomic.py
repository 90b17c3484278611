"""Atomic file output: every result, checkpoint, cache and figure file is written this way.

The content goes to a temporary file in the target's folder, which is
renamed over the target only once it is complete, so a crash, a full disk or
a kill at any moment leaves the old file or the new one, never a torn one,
and no temporary file behind.  The new file gets the permissions an ordinary
``open(path, "w")`` would (``0o666`` less the umask), not ``mkstemp``'s
private ``0o600``: results folders are often shared.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from fgbench import _faults as faults


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # read once, at import (single-threaded), not per write


@contextlib.contextmanager
def atomic_output(path: Path | str, mode: str = "w", fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``mode`` ``"w"``: UTF-8 text with ``\\n`` newlines, or ``"wb"``).

    On a normal exit from the ``with`` block the file is closed (flushed to
    disk first when ``fsync``) and renamed to ``path``; on an exception it is
    deleted and ``path`` is left as it was.  An ``OSError`` (a full disk, a
    quota, a read-only folder) is raised with ``path`` as its file name, so its
    one-line message names the file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode {mode!r}: use 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        try:
            with os.fdopen(fd, mode, **text) as fh:
                yield fh
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, _FILE_MODE)
            faults.rename_point("before", path)
            os.replace(tmp, path)
        except OSError as exc:
            raise _naming(exc, path) from None
        faults.rename_point("after", path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an ``OSError`` whose message names ``path`` (the target, not the temporary file)."""
    if exc.filename == str(path):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def temp_files_of(path: Path | str) -> list[Path]:
    """The temporary files :func:`atomic_output` would leave beside ``path`` if killed (``.<name>.*.tmp``)."""
    path = Path(path)
    try:
        return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return []


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: Path | str, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk first when ``fsync``)."""
    with atomic_output(path, "wb", fsync=fsync) as fh:
        fh.write(data)


_SHA256_MEMO: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of the bytes of ``path``, read in 8 MiB chunks.

    Memoised per process on the file's identity and stat (device, inode,
    size, modification time), so a large file opened by every job of a run
    is hashed once; a file rewritten or replaced (new inode or mtime) is
    hashed again.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _SHA256_MEMO.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(8 << 20), b""):
                h.update(chunk)
        digest = _SHA256_MEMO[key] = h.hexdigest()
    return digest
