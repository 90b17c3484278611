"""Built-in plugin registering the five real fine-grained datasets.

Each is read from its official download layout, in its own folder below the
data root (``--data-root`` / ``$FGBENCH_DATA`` / :func:`~fgbench.data.base.default_data_root`).
See docs/datasets.md.
"""

from __future__ import annotations

from typing import Callable

from fgbench.data import aircraft, cub, food101, nabirds, vegfru
from fgbench.data.base import DatasetSpec
from fgbench.data.official import OfficialDataset
from fgbench.hookspecs import hookimpl

REAL_DATASETS: tuple[OfficialDataset, ...] = (
    cub.CUB,
    aircraft.AIRCRAFT,
    food101.FOOD101,
    nabirds.NABIRDS,
    vegfru.VEGFRU,
)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register cub, aircraft, food101, nabirds and vegfru."""
    for dataset in REAL_DATASETS:
        register(dataset.make_spec())
