"""Hook specifications of fgbench (pluggy project name ``"fgbench"``).

Every hook hands the plugin a ``register`` callable; the host owns the
registries, their validation and the duplicate policy (see
:mod:`fgbench._plugins`).  Hooks are only ever *extended* with new arguments,
never renamed or shrunk: pluggy lets an implementation accept a subset of a
spec's arguments, so published plugins keep working.

``API_VERSION`` is bumped when a hook or a public contract gains something a
plugin may rely on; a plugin may declare the version it targets with a module
attribute ``FGBENCH_API_VERSION`` and the host warns on a mismatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.data.base import DatasetSpec
    from fgbench.methods import MethodSpec
    from fgbench.metrics.base import MetricSpec

PROJECT_NAME = "fgbench"
API_VERSION = 2  # 2: fgbench.ClassMeans (all-gathered under --nproc like CodeMemory), similar_pair_ratio

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_methods(register: Callable[["MethodSpec"], None]) -> None:
    """Register hashing methods.

    Fires once when the plugin manager is loaded.  Call
    ``register(MethodSpec(...))`` for each method the plugin provides.  A name
    already taken by another plugin is an error naming both distributions.
    """


@hookspec
def register_datasets(register: Callable[["DatasetSpec"], None]) -> None:
    """Register retrieval datasets.

    Fires once when the plugin manager is loaded.  Call
    ``register(DatasetSpec(...))`` for each dataset.  The built-in datasets
    (the embedded synthetic one and the real ones) use this same hook.
    """


@hookspec
def register_metrics(register: Callable[["MetricSpec"], None]) -> None:
    """Register retrieval metrics computed on every run.

    Fires once when the plugin manager is loaded.  Call
    ``register(MetricSpec(...))``; the metric's ``compute`` receives the query
    and database codes and labels and returns a float.
    """
