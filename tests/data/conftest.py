"""Shared fixtures of the dataset tests: a plugin host whose real-dataset specs expect the fixture sizes."""

from __future__ import annotations

import pytest

from fgbench.data.official.catalog import REAL_DATASETS
from fgbench.hookspecs import hookimpl
from fgbench._plugins import PluginHost, set_host

from .fixtures import EXPECTED


class FixtureSizedRealDatasets:
    """The five real datasets, registered with the fixtures' expected sizes."""

    @hookimpl
    def register_datasets(self, register):
        for dataset in REAL_DATASETS:
            register(dataset.make_spec(EXPECTED))


@pytest.fixture
def fixture_host():
    host = PluginHost()
    host.register_plugin(FixtureSizedRealDatasets(), name="fixture-real")
    assert not host.registry.failures
    set_host(host)
    yield host
    set_host(None)
