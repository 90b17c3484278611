"""One real dataset in its official download layout: :class:`OfficialDataset`.

An :class:`OfficialDataset` ties a small reader (``folder -> Listing``) to the
sizes the fine-grained hashing papers use, the download instructions, and the
decoded cache.  It *is* the ``load`` callable of its :class:`DatasetSpec`:
``load(root, strict=True)`` asserts :attr:`expected`; tests build specs with
their fixtures' sizes through :meth:`OfficialDataset.make_spec`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fgbench.data.base import DatasetError, DatasetSpec, DatasetStatus, ExpectedSizes
from fgbench.data.official.images import ListedDataset
from fgbench.data.official.listing import Listing, Problem, size_problems

Reader = Callable[[Path], Listing]


def _first_and_count(problems: list[Problem], name: str) -> str:
    more = f" (+{len(problems) - 1} more; run `fgbench data check {name}`)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


@dataclass(frozen=True)
class OfficialDataset:
    """A real dataset read from its official layout below ``<root>/<folder>``.

    Attributes:
        name: registry name.
        folder: the folder below the data root, as unpacked from the archive.
        reader: ``reader(folder_path) -> Listing``; raises DatasetError only for
            a missing/unreadable list file, records other problems.
        expected: split sizes and class count asserted in strict mode.
        image_dirs: folders (relative to ``folder``) that must exist.
        crop_bottom: pixel rows to cut from the bottom of every image.
        download: ``download(root)`` via torchvision where it can (needs network).
    """

    name: str
    folder: str
    summary: str
    homepage: str
    instructions: str
    reader: Reader
    expected: ExpectedSizes
    image_dirs: tuple[str, ...] = ("images",)
    crop_bottom: int = 0
    download: Callable[[Path], None] | None = None

    # ----------------------------------------------------------------- reading
    def directory(self, root: Path) -> Path:
        return Path(root).expanduser() / self.folder

    def _ensure_present(self, root: Path) -> Path:
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root}: data root is not a directory")
        folder = self.directory(root)
        try:
            present = folder.is_dir()
        except OSError as exc:  # pragma: no cover - e.g. permission denied on root
            raise DatasetError(f"{root}: cannot read data root ({exc.strerror or exc})") from None
        if not present:
            raise DatasetError(f"{self.name}: not found at {folder}; {self.instructions}")
        for sub in self.image_dirs:
            if not (folder / sub).is_dir():
                raise DatasetError(f"{folder / sub}: image folder is missing; {self.instructions}")
        return folder

    def read(self, root: Path) -> Listing:
        """The listing, with its problems (not raised).  DatasetError if absent/unreadable."""
        return self.reader(self._ensure_present(root))

    def problems(self, listing: Listing, expected: ExpectedSizes | None = None) -> list[Problem]:
        """Reading problems plus size mismatches against ``expected`` (default: :attr:`expected`)."""
        return [*listing.problems, *size_problems(listing, expected or self.expected)]

    def __call__(self, root: Path, strict: bool = True, use_cache: bool = True, cache_size: int | None = None) -> ListedDataset:
        """Load the dataset (this is the spec's ``load``).

        Args:
            root: the data root (the dataset is in ``root / folder``).
            strict: assert :attr:`expected` and treat any list problem as an
                error; otherwise skip bad entries with one counted warning.
            use_cache: attach the decoded cache when present and up to date.
            cache_size: the cache's short side (default
                :data:`fgbench.data.official.cache.DEFAULT_SIZE`).

        Raises:
            DatasetError: one line naming the file (and how to find the rest).
        """
        listing = self.read(root)
        if strict:
            problems = [p for p in self.problems(listing) if p.severity == "error"]
            if problems:
                raise DatasetError(_first_and_count(problems, self.name))
        elif listing.problems:
            warnings.warn(
                f"{self.name}: skipped {len(listing.problems)} bad list entries, first: {listing.problems[0]}",
                stacklevel=2,
            )
        dataset = ListedDataset(self.name, listing, self.crop_bottom)
        if use_cache:
            from fgbench.data.official import cache

            cache.attach(dataset, root, cache.DEFAULT_SIZE if cache_size is None else cache_size)
        return dataset

    def status(self, root: Path) -> DatasetStatus:
        """Cheap look: folder and list files present, parseable, sizes as expected (images not opened)."""
        try:
            listing = self.read(root)
        except DatasetError as exc:
            return DatasetStatus("damaged" if self.directory(root).is_dir() else "missing", str(exc))
        counts = listing.counts()
        problems = self.problems(listing)
        if problems:
            return DatasetStatus("damaged", _first_and_count(problems, self.name), counts)
        return DatasetStatus("found", str(self.directory(root)), counts)

    # ------------------------------------------------------------------- specs
    def with_expected(self, expected: ExpectedSizes) -> "OfficialDataset":
        return dataclasses.replace(self, expected=expected)

    def make_spec(self, expected: ExpectedSizes | None = None) -> DatasetSpec:
        """The :class:`DatasetSpec` to register; ``expected`` overrides the paper sizes (test fixtures)."""
        ds = self if expected is None else self.with_expected(expected)
        return DatasetSpec(
            name=ds.name,
            summary=ds.summary,
            load=ds,
            status=ds.status,
            kind="real",
            expected=ds.expected,
            homepage=ds.homepage,
            instructions=ds.instructions,
            download=ds.download,
        )


def official_of(spec: DatasetSpec) -> OfficialDataset | None:
    """The :class:`OfficialDataset` behind ``spec``, if it is one of the real datasets."""
    return spec.load if isinstance(spec.load, OfficialDataset) else None
