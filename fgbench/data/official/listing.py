"""Reading the official list files into a :class:`Listing` (paths + 0-based labels per split).

The readers of the real datasets share these helpers so that every list file
is read the same way: UTF-8 with an optional byte-order mark (``utf-8-sig``;
some re-distributed copies of the CUB/NABirds lists carry one), blank lines
ignored, Windows line endings tolerated.

A reader never crashes on a bad line: it records a :class:`Problem` naming the
file and line and skips the entry, so that ``fgbench data check`` reports every
problem in one pass.  Only a list file that is missing or unreadable stops a
reader, with a one-line :class:`~fgbench.data.base.DatasetError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Literal, Mapping, Sequence

import numpy as np

from fgbench.data.base import SPLITS, DatasetError, ExpectedSizes, contiguous_labels


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located at a file (and line)."""

    file: Path
    message: str
    line: int | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Entry:
    """One listed image: where it was listed, its path and its raw (dataset) label."""

    source: Path
    line: int
    path: Path
    raw_label: Hashable


@dataclass(frozen=True)
class SplitList:
    """The images of one split, in list-file order, with 0-based labels."""

    paths: list[Path]
    labels: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Listing:
    """What the list files of a dataset say, after validation.

    Attributes:
        splits: ``{"train": SplitList, "test": SplitList}``.
        class_names: name of class ``i`` at index ``i``.
        class_source: the file that defines the labels (named in class-count errors).
        list_files: every list file read (their content keys the decoded cache).
        problems: what was wrong and skipped while reading.
    """

    splits: Mapping[str, SplitList]
    class_names: list[str]
    class_source: Path
    list_files: tuple[Path, ...]
    problems: list[Problem] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, int]:
        return {"train": len(self.splits["train"]), "test": len(self.splits["test"]), "classes": self.num_classes}


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank, stripped lines of ``path`` with their 1-based numbers.

    Raises:
        DatasetError: the file is missing, unreadable or not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: list file is missing") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: list file is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read list file ({exc.strerror or exc})") from None
    return [(n, s) for n, s in enumerate((ln.strip() for ln in text.splitlines()), start=1) if s]


def read_pairs(path: Path, problems: list[Problem], what: str = "'<key> <value>'") -> list[tuple[int, str, str]]:
    """Lines ``key value`` (the value may contain spaces) as ``(line, key, value)``.

    A line without a value is recorded in ``problems`` and skipped.
    """
    out = []
    for n, text in read_lines(path):
        parts = text.split(maxsplit=1)
        if len(parts) != 2:
            problems.append(Problem(path, f"expected {what}, got {text[:60]!r}", n))
            continue
        out.append((n, parts[0], parts[1].strip()))
    return out


def parse_int(value: str, path: Path, line: int, problems: list[Problem], what: str) -> int | None:
    """``int(value)``, or ``None`` after recording a problem."""
    try:
        return int(value)
    except ValueError:
        problems.append(Problem(path, f"{what} is not an integer: {value[:40]!r}", line))
        return None


def build_listing(
    entries: Mapping[str, Iterable[Entry]],
    class_names: Mapping[Any, str],
    class_source: Path,
    list_files: Sequence[Path],
    problems: list[Problem],
) -> Listing:
    """Validate ``entries`` per split and map raw labels to ``0..C-1``.

    * an image listed twice in one split is reported and its repeat dropped;
    * an image listed in both splits is reported (it would match itself);
    * raw labels (possibly sparse, e.g. NABirds ids up to 1010) are mapped to
      ``0..C-1`` in sorted raw-id order over both splits, so labels are
      stable across runs and identical between train and test.
    """
    kept: dict[str, list[Entry]] = {}
    first_seen: dict[Path, Entry] = {}
    for split in SPLITS:
        kept[split] = []
        local: set[Path] = set()
        for e in entries.get(split, ()):
            prev = first_seen.get(e.path)
            if e.path in local:
                problems.append(Problem(e.source, f"image listed twice: {e.path} (first at line {prev.line})", e.line))
                continue
            if prev is not None:
                problems.append(
                    Problem(e.source, f"image {e.path} is in both splits (also {prev.source.name}:{prev.line})", e.line)
                )
            local.add(e.path)
            first_seen.setdefault(e.path, e)
            kept[split].append(e)
    raw = [e.raw_label for split in SPLITS for e in kept[split]]
    mapped, classes = contiguous_labels(raw)
    splits: dict[str, SplitList] = {}
    start = 0
    for split in SPLITS:
        items = kept[split]
        source = items[0].source if items else class_source
        splits[split] = SplitList([e.path for e in items], mapped[start : start + len(items)], source)
        start += len(items)
    names = [str(class_names.get(c, c)) for c in classes]
    return Listing(splits, names, class_source, tuple(list_files), problems)


def size_problems(listing: Listing, expected: ExpectedSizes) -> list[Problem]:
    """Problems where the listing's split sizes or class count differ from ``expected``.

    A train/test pair that matches the expected sizes the other way round is
    reported as swapped (a known bug of re-distributed NABirds split files).
    """
    train, test = listing.splits["train"], listing.splits["test"]
    if (len(train), len(test)) == (expected.test, expected.train) and expected.train != expected.test:
        return [
            Problem(
                train.source,
                f"train and test look swapped ({len(train):,} train, {len(test):,} test; "
                f"expected {expected.train:,} train, {expected.test:,} test)",
            )
        ]
    out = []
    for split, want in (("train", expected.train), ("test", expected.test)):
        got = len(listing.splits[split])
        if got != want:
            src = listing.splits[split].source
            out.append(Problem(src, f"lists {got:,} {split} images, expected {want:,}"))
    if listing.num_classes != expected.classes:
        out.append(
            Problem(listing.class_source, f"{listing.num_classes:,} classes have images, expected {expected.classes:,}")
        )
    return out
