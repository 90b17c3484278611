"""Plugin discovery, isolation of broken plugins, duplicates, API version checks."""

from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
import warnings

import pytest

import fgbench
from fgbench import hookspecs
from fgbench._plugins import DEFAULT_PLUGINS, DuplicateNameError, UnknownNameError, load_plugins
from fgbench.testing import registered_plugin, spec_plugin

from conftest import TOY_SPEC


def _fake_entry_points(monkeypatch, tmp_path, modules: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Write ``modules`` (name -> source) and expose each as an entry point of group fgbench."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [md.EntryPoint(name=n, value=n, group="fgbench") for n in modules]
    real = md.entry_points

    def fake(**kw):  # type: ignore[no-untyped-def]
        if kw.get("group") == "fgbench":
            return md.EntryPoints(eps)
        return real(**kw)

    monkeypatch.setattr(md, "entry_points", fake)
    for n in modules:
        sys.modules.pop(n, None)


GOOD = """
import dataclasses, fgbench
@dataclasses.dataclass(frozen=True)
class Cfg:
    x: int = 1
@fgbench.hookimpl
def register_methods(register):
    register(fgbench.MethodSpec(name="{name}", summary="s", citation="c", config_cls=Cfg, build=lambda ctx: None))
"""


def test_builtins_register_through_hooks() -> None:
    host = load_plugins(autoload=False)
    assert "embedded" in host.registry.datasets
    assert {"map", "p@10", "p@100", "p@r2"} <= set(host.registry.metrics.names())
    assert set(DEFAULT_PLUGINS) <= {name for name, _ in host.pm.list_name_plugin()}
    assert host.registry.failures == []


def test_entry_point_plugins_are_discovered(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fake_entry_points(monkeypatch, tmp_path, {"ep_alpha": GOOD.format(name="alpha")})
    host = load_plugins(autoload=True)
    assert "alpha" in host.registry.methods
    assert host.registry.methods.get("alpha").source  # the host records where it came from


def test_broken_plugins_are_reported_and_skipped(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fake_entry_points(monkeypatch, tmp_path, {
        "ep_good": GOOD.format(name="good"),
        "ep_import": "raise ImportError('needs libfoo')\n",
        "ep_invalid": GOOD.format(name="Bad Name!"),
        "ep_typo": "import fgbench\n@fgbench.hookimpl\ndef register_methodz(register):\n    pass\n",
    })
    host = load_plugins(autoload=True)
    assert host.registry.methods.names() == ["good"]
    reasons = {f.plugin: f.reason for f in host.registry.failures}
    assert "needs libfoo" in reasons["ep_import"]
    assert "invalid method name" in reasons["ep_invalid"]
    assert "register_methodz" in reasons["ep_typo"]


def test_disable_switches(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fake_entry_points(monkeypatch, tmp_path, {"ep_a": GOOD.format(name="a"), "ep_b": GOOD.format(name="b")})
    monkeypatch.setenv("FGBENCH_DISABLE_PLUGINS", "ep_a")
    assert load_plugins().registry.methods.names() == ["b"]
    monkeypatch.setenv("FGBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert load_plugins().registry.methods.names() == []


def test_duplicate_method_names_error_names_both_sources() -> None:
    one = spec_plugin("dist-one", methods=[TOY_SPEC])
    two = spec_plugin("dist-two", methods=[TOY_SPEC])
    with registered_plugin(one, two) as host:
        with pytest.raises(DuplicateNameError) as err:
            host.registry.methods.get("toy")
    assert "dist-one" in str(err.value) and "dist-two" in str(err.value)
    assert any("dist-two" in f.reason for f in host.registry.failures)
    three = spec_plugin("dist-three", methods=[TOY_SPEC])
    with registered_plugin(one, two, three) as host:
        with pytest.raises(DuplicateNameError, match="both dist-one, dist-two and dist-three;"):
            host.registry.methods.get("toy")


def test_unknown_name_suggests_close_names(toy_host) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError) as err:
        toy_host.registry.methods.get("tyo")
    assert "Did you mean toy" in str(err.value) and "Available: toy" in str(err.value)


def test_api_version_mismatch_warns() -> None:
    plugin = spec_plugin("future-plugin")
    plugin.FGBENCH_API_VERSION = hookspecs.API_VERSION + 1  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with registered_plugin(plugin):
            pass
    assert any("newer" in str(w.message) for w in caught)


def test_plugin_targeting_an_older_api_loads_without_warning() -> None:
    plugin = spec_plugin("old-plugin")
    plugin.FGBENCH_API_VERSION = 1  # type: ignore[attr-defined]
    assert hookspecs.API_VERSION > 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with registered_plugin(plugin):
            pass
    assert not [w for w in caught if "API version" in str(w.message)]


def test_every_hook_is_documented_and_typed() -> None:
    for name in ("register_methods", "register_datasets", "register_metrics"):
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40
        assert "register" in fn.__annotations__


def test_public_api_is_importable_from_package_root() -> None:
    for name in fgbench.__all__:
        assert hasattr(fgbench, name), name
