"""Plugin discovery, isolation of broken plugins, duplicates, API version checks."""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import sys
import textwrap
import warnings

import pytest

import fgbench
from fgbench import hookspecs
from fgbench._plugins import DEFAULT_PLUGINS, DuplicateNameError, PluginError, UnknownNameError, load_plugins
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
    assert host.registry.conflicts() == [("method", "toy", ["dist-one", "dist-two"])]
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


# ------------------------------------------------------------------ broken plugins by name, clashes (issue #15)

def _installed(monkeypatch, tmp_path, dist: str, modules: dict[str, str], eps: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Install ``modules`` as distribution ``dist`` 0.1.0 (a .dist-info on sys.path) with ``fgbench`` entry points ``eps``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
    info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[fgbench]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(tmp_path))


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from fgbench.cli import main

    return CliRunner().invoke(main, list(args))


def test_a_broken_plugin_asked_for_by_name_is_installed_but_broken(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FGBENCH_DISABLE_PLUGINS", "cmbh,cnet,dpsh,exchnet,multifusnet")  # only the broken one
    _installed(monkeypatch, tmp_path, "fgbench-x", {"fgbench_x": "raise ImportError('needs libfoo')\n"},
               {"x": "fgbench_x"})
    expected = "method 'x' is installed (fgbench-x 0.1.0) but broken: ImportError: needs libfoo"
    with registered_plugin(autoload=True) as host:
        with pytest.raises(PluginError) as err:
            host.registry.methods.get("x")
        assert str(err.value) == expected
        res = _cli("run", "--methods", "x", "--datasets", "embedded", "-q", "--results", str(tmp_path / "r"))
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == f"Error: {expected}", res.output
    with registered_plugin(autoload=True) as host:  # a name nobody installed is still unknown
        with pytest.raises(UnknownNameError):
            host.registry.methods.get("y")


def test_a_spec_refused_at_registration_is_broken_by_its_name() -> None:
    bad = dataclasses.replace(TOY_SPEC, name="overrated",
                              paper_results=(fgbench.PaperResult(source="t", map={"cub": {12: 1.5}}),))
    with registered_plugin(spec_plugin("overrated-plugin", methods=[bad])) as host:
        with pytest.raises(PluginError, match=r"^method 'overrated' is installed \(overrated-plugin\) but broken: "
                                              r"ValueError: method 'overrated': paper mAP cub/12 = 1.5 not in"):
            host.registry.methods.get("overrated")


def test_a_name_clash_lists_both_distributions_and_refuses_the_name(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two distributions registering one method name (as a plugin re-registering the bundled dpsh): neither is
    kept, both are named, their other registrations work."""
    monkeypatch.setenv("FGBENCH_DISABLE_PLUGINS", "cmbh,cnet,dpsh,exchnet,multifusnet")
    _installed(monkeypatch, tmp_path / "one", "fgbench-one", {"fgbench_one": GOOD.format(name="clashy")},
               {"one": "fgbench_one"})
    _installed(monkeypatch, tmp_path / "fake", "fgbench-fake", {"fgbench_fake": GOOD.format(name="clashy") + textwrap.dedent("""
        @fgbench.hookimpl
        def register_datasets(register):
            from fgbench.testing import tiny_embedded
            register(tiny_embedded("faketiny"))
        """)}, {"fake": "fgbench_fake"})
    with registered_plugin(autoload=True) as host:
        assert host.registry.failures == []
        assert host.registry.conflicts() == [("method", "clashy", ["fgbench-fake 0.1.0", "fgbench-one 0.1.0"])]
        assert "clashy" not in host.registry.methods and "faketiny" in host.registry.datasets
        listing = _cli("list").output
        run = _cli("run", "--methods", "clashy", "--datasets", "faketiny", "-q", "--results", str(tmp_path / "r"))
        default = _cli("run", "--datasets", "faketiny", "-q", "--results", str(tmp_path / "r"))
    methods = listing.split("Methods:")[1].split("Datasets:")[0]
    assert not [line for line in methods.splitlines() if "clashy" in line]
    conflicts = listing.split("Conflicting names (refused until one is uninstalled):\n")[1].splitlines()[0]
    assert conflicts.split()[:2] == ["clashy", "method"]
    assert "fgbench-fake 0.1.0 and fgbench-one 0.1.0: uninstall one" in conflicts
    assert "Broken plugins" not in listing
    refusal = ("method 'clashy' is registered by both fgbench-fake 0.1.0 and fgbench-one 0.1.0; "
               "uninstall one of them")
    assert run.exit_code == 1 and run.output.strip().splitlines()[-1] == f"Error: {refusal}", run.output
    assert f"warning: {refusal}; method clashy is left out" in default.output


# ------------------------------------------------------------------ metadata checked at registration (issue #15)

def _meta(**changes):  # type: ignore[no-untyped-def]
    return dataclasses.replace(TOY_SPEC, name="meta", **changes)


@pytest.mark.parametrize("changes, reason", [
    ({"paper_results": (fgbench.PaperResult(source="t", map={"cubb": {12: 0.5}}),)},
     "method 'meta': paper_results[0].map names dataset 'cubb', which no plugin registers; valid: aircraft, cub, "),
    ({"paper_recipe": {"default": {"lr": 0.1}, "birds": {"lr": 0.2}}},
     "method 'meta': paper_recipe key 'birds' is not 'default' or a registered dataset; valid: default, aircraft, "),
    ({"paper_recipe": {"cub": {"learning_rate": 0.1}}},
     "ValueError: method 'meta': paper_recipe['cub'] has learning_rate, not a protocol field; valid: "),
    ({"paper_results": (fgbench.PaperResult(source="t", map={}, params_m={"resnet50-12": 1.0}),)},
     "ValueError: method 'meta': paper_results[0].params_m key 'resnet50-12' must be '<backbone>@<bits>', "
     "e.g. 'resnet50@12', with a backbone of resnet10, resnet101, resnet18, resnet34, resnet50"),
    ({"paper_results": (fgbench.PaperResult(source="t", map={}, flops_g={"vgg16@12": 1.0}),)},
     "paper_results[0].flops_g key 'vgg16@12' must be '<backbone>@<bits>'"),
])
def test_malformed_metadata_makes_the_plugin_broken(changes, reason) -> None:  # type: ignore[no-untyped-def]
    with registered_plugin(spec_plugin("meta-plugin", methods=[_meta(**changes), TOY_SPEC])) as host:
        [failure] = host.registry.failures
        assert failure.plugin == "meta-plugin" and reason in failure.reason and "\n" not in failure.reason
        assert "meta" not in host.registry.methods and "toy" not in host.registry.methods  # the plugin is skipped
        with pytest.raises(PluginError, match="^method 'meta' is installed \\(meta-plugin\\) but broken: "):
            host.registry.methods.get("meta")
        listing = _cli("list").output
    assert f"  meta-plugin (meta-plugin): {failure.reason}" in listing.split("Broken plugins (skipped):")[1]


def test_metadata_may_name_a_dataset_of_a_plugin_loaded_later() -> None:
    from fgbench.testing import tiny_embedded

    uses = _meta(paper_results=(fgbench.PaperResult(source="t", map={"tiny": {8: 0.5}}, params_m={"resnet18@8": 11.2}),),
                 paper_recipe={"default": {"lr": 0.1}, "tiny": {"epochs": 2}})
    with registered_plugin(spec_plugin("a-meta", methods=[uses]), spec_plugin("b-data", datasets=[tiny_embedded()])) as host:
        assert host.registry.failures == []
        assert host.registry.methods.get("meta").paper_map("tiny", 8) == 0.5
