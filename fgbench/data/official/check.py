"""A full check of a dataset, reporting every problem in one pass (``fgbench data check``).

For a real dataset: the list files (bad lines, duplicates, unknown ids), the
split sizes and class count against the spec's ``expected``, and every listed
image (exists, decodes completely).  Grayscale/CMYK/palette images are not
errors (they are converted to RGB) but are counted.  Other datasets (synthetic,
Hugging Face) are loaded and every item is read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fgbench.data.base import SPLITS, DatasetError, DatasetSpec
from fgbench.data.official.dataset import official_of
from fgbench.data.official.images import progress as progress_bar
from fgbench.data.official.images import verify_image
from fgbench.data.official.listing import Problem, size_problems
from fgbench.errors import first_line


@dataclass
class CheckReport:
    """What a check found: counts, problems (errors and warnings), converted-image count."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checked_images: int = 0
    converted: list[Path] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _verify(path: Path) -> tuple[Path, str | None, str | None]:
    try:
        return path, verify_image(path), None
    except DatasetError as exc:
        return path, None, str(exc)



def check_dataset(spec: DatasetSpec, root: Path, progress: bool = False, workers: int = 4) -> CheckReport:
    """Check ``spec`` under ``root`` completely.

    Raises:
        DatasetError: the dataset is not there at all (missing folder or list file).
    """
    official = official_of(spec)
    if official is None:
        return _check_generic(spec, root, progress)
    report = CheckReport(spec.name)
    listing = official.read(root)
    report.counts = listing.counts()
    report.problems += listing.problems
    if spec.expected is not None:
        report.problems += size_problems(listing, spec.expected)
    paths = [p for s in SPLITS for p in listing.splits[s].paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = progress_bar(pool.map(_verify, paths), len(paths), f"checking {spec.name}", progress)
        for path, mode, error in results:
            report.checked_images += 1
            if error is not None:
                report.problems.append(Problem(path, error.removeprefix(f"{path}: ")))
            elif mode != "RGB":
                report.converted.append(path)
    if report.converted:
        report.problems.append(
            Problem(
                report.converted[0],
                f"{len(report.converted)} image(s) are not RGB (grayscale/CMYK/...) and are converted to RGB",
                severity="warning",
            )
        )
    return report


def _check_generic(spec: DatasetSpec, root: Path, progress: bool) -> CheckReport:
    report = CheckReport(spec.name)
    dataset = spec.load(root)
    report.counts = dataset.summary()
    exp = spec.expected
    if exp is not None:
        for key, want in (("train", exp.train), ("test", exp.test), ("classes", exp.classes)):
            if report.counts[key] != want:
                report.problems.append(Problem(Path(spec.name), f"{report.counts[key]:,} {key}, expected {want:,}"))
    for which in SPLITS:
        split = dataset.split(which)
        for i in progress_bar(range(len(split)), len(split), f"checking {spec.name} {which}", progress):
            report.checked_images += 1
            try:
                split.load_array(i)
            except Exception as exc:  # noqa: BLE001 - report, keep checking
                where = split.describe(i)
                text = first_line(exc)
                report.problems.append(Problem(Path(where), text.removeprefix(f"{where}: ")))
    return report
