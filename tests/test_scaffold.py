"""``fgbench new-plugin``: the scaffolded package installs, registers, passes its own tests and runs."""

from __future__ import annotations

import importlib
import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner

from fgbench.backbones import build_backbone
from fgbench.cli import main
from fgbench.hookspecs import API_VERSION
from fgbench._scaffold import PluginNames, ScaffoldError, render_files, scaffold_plugin

NAME = "scaffold-probe"

# Run inside the scaffold's virtual environment: the installed entry point must be found by the
# normal plugin loading (autoload), next to a tiny dataset registered for speed.
RUN_SCRIPT = """
import sys
from fgbench import hookimpl
from fgbench.cli import main
from fgbench.testing import registered_plugin, tiny_embedded


class TinyData:
    __name__ = "tiny-data"

    @hookimpl
    def register_datasets(self, register):
        register(tiny_embedded())


with registered_plugin(TinyData(), autoload=True):
    main(["list"], standalone_mode=False)
    main(["run", "--methods", sys.argv[1], "--datasets", "tiny", "--results", sys.argv[2], "-q"],
         standalone_mode=False)
"""


def test_names_and_validation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    n = PluginNames.from_method("my-hash_2")
    assert (n.dist, n.package, n.camel) == ("fgbench-my-hash_2", "fgbench_my_hash_2", "MyHash2")
    for bad in ("MyHash", "2hash", "my hash", ""):
        with pytest.raises(ScaffoldError, match="invalid method name"):
            PluginNames.from_method(bad)
    files = render_files("my-hash")
    assert sorted(files) == ["README.md", "fgbench_my_hash/__init__.py", "pyproject.toml", "tests/test_my_hash.py"]
    assert '[project.entry-points.fgbench]\nmy-hash = "fgbench_my_hash"' in files["pyproject.toml"]
    assert f"FGBENCH_API_VERSION = {API_VERSION}" in files["fgbench_my_hash/__init__.py"]
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")
    (tmp_path / "fgbench-my-hash").mkdir()
    (tmp_path / "fgbench-my-hash" / "keep.txt").write_text("x")
    with pytest.raises(ScaffoldError, match="not empty"):
        scaffold_plugin("my-hash", tmp_path)


def test_cli_refuses_a_name_that_is_installed(tmp_path, toy_host) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(main, ["new-plugin", "toy", "--dir", str(tmp_path)])
    assert res.exit_code != 0 and "already installed" in res.output
    assert not list(tmp_path.iterdir())


def _run_generated_tests(root: Path, package: str) -> None:
    """Import the generated test module from the scaffold folder and call its tests (no nested pytest)."""
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "tests"))
    try:
        module = importlib.import_module(f"test_{package.removeprefix('fgbench_')}")
        tests = [getattr(module, n) for n in sorted(dir(module)) if n.startswith("test_")]
        assert len(tests) == 4
        for test in tests:
            test()
    finally:
        sys.path.remove(str(root))
        sys.path.remove(str(root / "tests"))
        for mod in [m for m in sys.modules if m == package or m.startswith(package + ".") or m.startswith("test_")
                    and m.endswith(package.removeprefix("fgbench_"))]:
            del sys.modules[mod]


def test_scaffolded_plugin_installs_registers_tests_and_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(main, ["new-plugin", NAME, "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    root = tmp_path / f"fgbench-{NAME}"
    assert f"created {root / 'pyproject.toml'}" in res.output

    names = PluginNames.from_method(NAME)
    _run_generated_tests(root, names.package)

    # Install it the way a user would (editable, no deps), into a throwaway environment layered on this one:
    # the shared interpreter other processes use never sees the probe plugin, and nothing needs uninstalling.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _layer_on_this_environment(python)
    env = {**os.environ, "FGBENCH_DISABLE_PLUGINS": "dpsh,cnet,cmbh,multifusnet,exchnet", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(root),
                          "-q", "--disable-pip-version-check", "--no-input"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr

    results = tmp_path / "results"
    out = subprocess.run([str(python), "-c", RUN_SCRIPT, NAME, str(results)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{NAME:<14} TODO: one line" in out.stdout and f"[{names.dist} 0.1.0]" in out.stdout
    record = json.loads(next(results.rglob("bits8-seed0.json")).read_text())
    assert record["method"] == NAME and 0.0 <= record["metrics"]["map"] <= 1.0
    assert record["method_source"] == f"{names.dist} 0.1.0"
    trunk = build_backbone(record["protocol"]["backbone"], "random")
    trunk_m = sum(p.numel() for p in trunk.parameters()) / 1e6
    assert trunk_m < record["cost"]["params_m"] < trunk_m + 0.1  # the trunk and the hash layer; no classifier
    assert importlib.util.find_spec(names.package) is None  # not installed into the test environment itself


def _layer_on_this_environment(python: Path) -> None:
    """Make the throwaway environment see this interpreter's packages, also when this one is itself a venv.

    ``system_site_packages`` layers a venv on the *base* interpreter, which
    inside a virtualenv has neither fgbench nor torch; a ``.pth`` line that
    runs ``site.addsitedir`` adds the active environment's site-packages
    (and processes their ``.pth`` files, so editable installs resolve too).
    """
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    (Path(target) / "_fgbench_parent_env.pth").write_text(lines, encoding="utf-8")
