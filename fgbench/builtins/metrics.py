"""Built-in metrics, registered through the ``register_metrics`` hook like any plugin's."""

from __future__ import annotations

from typing import Callable

from fgbench.hookspecs import hookimpl
from fgbench.metrics.base import MetricSpec


@hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec("map", "mAP@all (query = test, database = train; expected AP over random order within ties)",
                        lambda ev: ev.mean_average_precision))
    for k in (10, 100):
        register(MetricSpec(f"p@{k}", f"precision of the top {k} (expected over tie order)",
                            lambda ev, k=k: ev.precision_at(k)))
    register(MetricSpec("p@r2", "precision within Hamming radius 2 (0 when nothing retrieved)",
                        lambda ev: ev.precision_radius(2)))


