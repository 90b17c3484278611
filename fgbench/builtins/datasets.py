"""Built-in plugin registering the datasets: the embedded synthetic one and the five real ones.

The real ones are read from their official download layouts
(:mod:`fgbench.data.official.catalog`, docs/datasets.md); the embedded one is
generated (:mod:`fgbench.data.embedded`, docs/embedded-dataset.md).
"""

from __future__ import annotations

from typing import Callable

from fgbench.data.base import DatasetSpec
from fgbench.data.embedded import embedded_spec
from fgbench.data.official.catalog import REAL_DATASETS
from fgbench.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register ``embedded``, then cub, aircraft, food101, nabirds and vegfru."""
    register(embedded_spec())
    for dataset in REAL_DATASETS:
        register(dataset.make_spec())
