"""Atomic file output (fgbench._atomic): complete file or none, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from fgbench._atomic import atomic_output, atomic_write_text
from fgbench.engine.checkpoint import atomic_torch_save
from fgbench.records import RunRecord, write_record


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path) -> int:  # type: ignore[no-untyped-def]
    return stat.S_IMODE(path.stat().st_mode)


def test_text_lands_whole_with_unix_newlines_and_no_temp_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "deep" / "board.md"
    atomic_write_text(target, "a\nb\n")
    assert target.read_bytes() == b"a\nb\n"
    assert [p.name for p in target.parent.iterdir()] == ["board.md"]


def test_error_inside_the_block_keeps_the_old_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, "wb", fsync=True) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out" / "record.json"

    def boom(src, dst):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "{}")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_files_get_umask_permissions_not_private_temp_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """mkstemp creates 0o600 files; results in a shared folder must be readable like any other file."""
    expected = 0o666 & ~_umask()
    text, blob, ckpt, record = (tmp_path / n for n in ("a.md", "b.bin", "c.ckpt", "r.json"))
    atomic_write_text(text, "x")
    with atomic_output(blob, "wb") as fh:
        fh.write(b"\0")
    atomic_torch_save({"epoch": 1}, ckpt)
    write_record(RunRecord(method="m", dataset="d", bits=8, seed=0, protocol={}, metrics={}, cost={},
                           train_seconds=0.0, eval_seconds=0.0, environment={}), record)
    assert [_mode(p) for p in (text, blob, ckpt, record)] == [expected] * 4


def test_only_write_modes() -> None:
    with pytest.raises(ValueError, match="mode 'a'"):
        with atomic_output("unused", "a"):
            pass
