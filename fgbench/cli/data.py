"""``fgbench data``: list, check, download and prepare the datasets.

Attached to the main CLI with ``main.add_command(data)``.  Every command takes
``--data-root`` (env ``FGBENCH_DATA``, default
:func:`~fgbench.data.base.default_data_root`); errors are one line
(:class:`click.ClickException`), exit status non-zero, no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from fgbench.cli._common import one_line_errors

from fgbench.data.base import DatasetError, DatasetSpec, default_data_root
from fgbench.data.official.cache import DEFAULT_SIZE, build_cache, inspect_cache
from fgbench.data.official.check import check_dataset
from fgbench.data.official.dataset import official_of

data_root_option = click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    envvar="FGBENCH_DATA",
    default=None,
    help="Folder holding one folder per dataset (env FGBENCH_DATA; default ~/.cache/fgbench/data).",
)


def _root(data_root: Path | None) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()


def _spec(name: str) -> DatasetSpec:
    from fgbench._plugins import get_host

    return get_host().registry.datasets.get(name)  # UnknownNameError: one line through one_line_errors


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _missing_message(spec: DatasetSpec, root: Path, reason: str) -> str:
    parts = [f"{spec.name} is not available under {root}: {reason}."]
    if spec.instructions and spec.instructions not in reason:
        parts.append(f"To install: {spec.instructions}.")
    if spec.homepage and spec.homepage not in " ".join(parts):
        parts.append(f"Homepage: {spec.homepage}.")
    if spec.download is not None:
        parts.append(f"Or run `fgbench data check {spec.name} --download` (needs network).")
    return _one_line(" ".join(parts))


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets: where they are, whether they are intact, the decoded cache."""


@data.command("list")
@data_root_option
@one_line_errors
def list_cmd(data_root: Path | None) -> None:
    """Every registered dataset: found / missing / damaged, with counts."""
    from fgbench._plugins import get_host

    root = _root(data_root)
    click.echo(f"data root: {root}")
    rows = [("NAME", "KIND", "STATE", "TRAIN", "TEST", "CLASSES", "NOTE")]
    for spec in get_host().registry.datasets.values():
        try:
            st = spec.status(root)
            state, counts, note = st.state, dict(st.counts), st.message
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the listing
            state, counts, note = "damaged", {}, f"status failed: {type(exc).__name__}: {exc}"
        if state == "missing":
            note = f"see `fgbench data check {spec.name}`"
        cells = [str(counts.get(k, "-")) for k in ("train", "test", "classes")]
        rows.append((spec.name, spec.kind, state, *cells, _one_line(note)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


@data.command("check")
@click.argument("name")
@data_root_option
@click.option("--download", is_flag=True, help="Download first, where torchvision can (Food-101, FGVC-Aircraft; needs network).")
@click.option("--max-problems", default=20, show_default=True, help="How many problems to print.")
@click.option("--workers", default=4, show_default=True, help="Threads decoding images.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@one_line_errors
def check_cmd(name: str, data_root: Path | None, download: bool, max_problems: int, workers: int, progress: bool) -> None:
    """Verify NAME: split sizes, classes, every listed image exists and decodes."""
    spec = _spec(name)
    root = _root(data_root)
    if download:
        _download(spec, root)
    status = spec.status(root)
    if status.state == "missing":
        raise click.ClickException(_missing_message(spec, root, status.message or "not found"))
    try:
        report = check_dataset(spec, root, progress=progress, workers=workers)
    except DatasetError as exc:
        raise click.ClickException(_one_line(exc)) from None
    exp = spec.expected
    counts = ", ".join(
        f"{k} {report.counts.get(k, 0):,}" + (f" (expected {getattr(exp, k):,})" if exp and getattr(exp, k) != report.counts.get(k) else "")
        for k in ("train", "test", "classes")
    )
    click.echo(f"{name}: {counts}; {report.checked_images:,} images decoded")
    for problem in report.problems[:max_problems]:
        click.echo(f"  {problem.severity}: {_one_line(problem)}")
    if len(report.problems) > max_problems:
        click.echo(f"  ... and {len(report.problems) - max_problems} more")
    if not report.ok:
        raise click.ClickException(f"{name}: {len(report.errors)} problem(s) found under {root}")
    click.echo(f"{name}: OK")


def _download(spec: DatasetSpec, root: Path) -> None:
    if spec.download is None:
        raise click.ClickException(_one_line(f"{spec.name} cannot be downloaded automatically: {spec.instructions}"))
    click.echo(f"downloading {spec.name} into {root} (needs network) ...")
    try:
        os.makedirs(root, exist_ok=True)
        spec.download(root)
    except Exception as exc:  # noqa: BLE001 - network/archive errors of many types
        raise click.ClickException(_one_line(f"download of {spec.name} failed: {type(exc).__name__}: {exc}")) from None


@data.command("prepare")
@click.argument("name")
@data_root_option
@click.option("--size", default=DEFAULT_SIZE, show_default=True, help="Short side of the cached images, in pixels.")
@click.option("--workers", default=min(8, os.cpu_count() or 1), show_default=True, help="Decoding processes.")
@click.option("--force", is_flag=True, help="Rebuild even if the cache is up to date.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@one_line_errors
def prepare_cmd(name: str, data_root: Path | None, size: int, workers: int, force: bool, progress: bool) -> None:
    """Write NAME's decoded cache (uint8, short side --size) below the data root."""
    spec = _spec(name)
    official = official_of(spec)
    if official is None:
        raise click.ClickException(f"{name}: the decoded cache is for the real datasets (kind 'real'), not {spec.kind!r}")
    if size < 8:
        raise click.ClickException(f"--size must be at least 8 pixels, got {size}")
    root = _root(data_root)
    try:
        dataset = official(root, strict=True, use_cache=False)
        state = inspect_cache(dataset, root, size)
        if state.state == "valid" and not force:
            click.echo(f"{name}: decoded cache is up to date at {state.directory}")
            return
        if state.state == "stale":
            click.echo(f"{name}: rebuilding stale cache ({_one_line(state.reason)})")
        directory = build_cache(dataset, root, size, workers=workers, progress=progress, force=True)
    except DatasetError as exc:
        if official.directory(root).is_dir():
            hint = "" if "fgbench data check" in str(exc) else f"; run `fgbench data check {name}` to list every problem"
            raise click.ClickException(f"{_one_line(exc)}{hint}") from None
        raise click.ClickException(_missing_message(spec, root, _one_line(exc))) from None
    total = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    click.echo(f"{name}: decoded cache written to {directory} ({total / 2**20:.1f} MiB)")
