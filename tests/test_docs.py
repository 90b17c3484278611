"""The docs stay true: hooks documented, public API listed, links resolve, CLI and API references current."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

import fgbench
from fgbench import hookspecs

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs)
                  if callable(getattr(hookspecs, name)) and hasattr(getattr(hookspecs, name), "fgbench_spec"))


def test_hookspecs_are_found() -> None:
    assert {"register_methods", "register_datasets", "register_metrics"} <= set(_hook_names())


@pytest.mark.parametrize("hook", _hook_names())
def test_every_hook_is_documented_in_the_plugin_guide(hook: str) -> None:
    guide = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert f"### `{hook}`" in guide, f"docs/plugins.md needs a '### `{hook}`' section (see the other hooks)"
    section = guide.split(f"### `{hook}`", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    assert f"def {hook}(" in section, f"the {hook} section of docs/plugins.md should show an implementation"


def test_every_public_name_is_listed_in_api_md() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [name for name in fgbench.__all__ if f"`{name}`" not in api]
    assert not missing, f"add to the table in docs/api.md: {', '.join(missing)}"


def test_every_docs_page_is_in_the_index() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {m for m in re.findall(r"\]\(([^)#]+)\)", index)}
    pages = {p.name for p in DOCS.glob("*.md") if p.name != "README.md"}
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"


def _anchors(page: Path) -> set[str]:
    """GitHub-style anchors of the page's headings."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_relative_links_resolve() -> None:
    pages = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for groups in LINK.findall(text):
            target = groups[0] or groups[1]
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)} -> {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_cli_reference_is_current() -> None:
    from fgbench.cli._reference import render_cli_reference

    committed = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert committed == render_cli_reference(), (
        "docs/cli.md is out of date with the CLI's --help; regenerate it with\n"
        "    python -m fgbench.cli._reference > docs/cli.md")


def test_cli_reference_does_not_depend_on_commands_run_before() -> None:
    """`fgbench recipe` builds a `run` context itself; click caches each command's help option at its first
    context, so that one must inherit the group's `-h, --help` (a fresh process: the cache is per process)."""
    import subprocess
    import sys

    script = ("from click.testing import CliRunner\n"
              "from fgbench.cli import main\n"
              "from fgbench.cli._reference import render_cli_reference\n"
              "result = CliRunner().invoke(main, ['recipe', 'dpsh'])\n"
              "assert result.exit_code == 0, result.output\n"
              "print(render_cli_reference(), end='')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == (DOCS / "cli.md").read_text(encoding="utf-8")


def test_api_reference_is_current() -> None:
    from fgbench.cli._api_reference import render_api_reference

    committed = (DOCS / "api-reference.md").read_text(encoding="utf-8")
    assert committed == render_api_reference(), (
        "docs/api-reference.md is out of date with the public docstrings and signatures; regenerate it with\n"
        "    python -m fgbench.cli._api_reference > docs/api-reference.md")


def test_api_reference_covers_every_public_name_with_its_signature() -> None:
    """Each name of ``fgbench.__all__`` and each public test helper has a section; callables show their signature."""
    import inspect

    from fgbench.cli._api_reference import TESTING_NAMES, render_api_reference
    import fgbench.testing

    page = render_api_reference()
    for module, names, prefix in ((fgbench, fgbench.__all__, ""), (fgbench.testing, TESTING_NAMES, "fgbench.testing.")):
        for name in names:
            assert f"### `{prefix}{name}`" in page, f"docs/api-reference.md has no section for {prefix}{name}"
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                params = list(inspect.signature(obj).parameters)
                section = page.split(f"### `{prefix}{name}`", 1)[1].split("\n### ", 1)[0]
                assert all(p in section.split("```")[1] for p in params), f"{prefix}{name}: signature missing"
    assert "*(no docstring)*" not in page, "a public name or method has no docstring (see docs/api-reference.md)"


def test_recipes_page_is_current() -> None:
    from fgbench.cli._recipes import render_recipes

    committed = (DOCS / "recipes.md").read_text(encoding="utf-8")
    assert committed == render_recipes(), (
        "docs/recipes.md is out of date with the registered paper recipes; regenerate it with\n"
        "    python -m fgbench.cli._recipes > docs/recipes.md")


def test_recipes_page_shows_each_recipe_value_and_its_source() -> None:
    from fgbench.cli._recipes import render_method
    from fgbench.methods import MethodSpec

    spec = MethodSpec(name="m", summary="", citation="A. B. Title. Venue 2020.", config_cls=_Config,
                      build=lambda ctx: None,  # type: ignore[arg-type,return-value]
                      paper_recipe={"default": {"lr": 0.1, "milestones": (5, 9)}, "cub": {"lr": 0.2}},
                      paper_recipe_sources={"lr": "Sec. 4.2"})
    rows = {line.split(" | ")[0]: line for line in render_method(spec).splitlines() if line.startswith("| `")}
    assert rows["| `lr`"] == "| `lr` | 0.1 | 0.2 | Sec. 4.2 |"
    assert rows["| `milestones`"] == "| `milestones` | 5, 9 |  | not cited |"


@dataclasses.dataclass(frozen=True)
class _Config:
    pass


def test_quickstart_has_the_two_setup_commands_and_a_first_run() -> None:
    quick = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for cmd in ("pip install -r requirements-dev.txt", "python -m pytest -q"):
        assert cmd in quick and cmd in readme
    assert "fgbench run" in quick and "fgbench leaderboard" in quick


DPSH_SOURCE = REPO / "plugins" / "fgbench-dpsh" / "fgbench_dpsh" / "__init__.py"
GAP = ("...", "# ...")


def _runs(block: str) -> list[list[str]]:
    """The lines of a shown block, split at gap lines (``...`` or ``# ...``) into runs that must appear verbatim."""
    runs: list[list[str]] = [[]]
    for line in block.rstrip("\n").splitlines():
        if line.strip() in GAP:
            runs.append([])
        else:
            runs[-1].append(line.rstrip())
    return [r for r in runs if r]


def _find(run: list[str], lines: list[str], start: int) -> int:
    for i in range(start, len(lines) - len(run) + 1):
        if lines[i:i + len(run)] == run:
            return i
    return -1


def test_the_worked_example_shows_the_dpsh_plugins_own_source() -> None:
    """Each ``<!-- dpsh-source -->`` block of plugins.md is the DPSH plugin's code, in order, gaps marked."""
    guide = (DOCS / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- dpsh-source -->\n```python\n(.*?)```", guide, flags=re.S)
    assert len(blocks) >= 6, "the DPSH walkthrough of docs/plugins.md lost its source blocks"
    source = [line.rstrip() for line in DPSH_SOURCE.read_text(encoding="utf-8").splitlines()]
    position = 0
    for number, block in enumerate(blocks, 1):
        for run in _runs(block):
            found = _find(run, source, position)
            assert found >= 0, (f"docs/plugins.md DPSH block {number} differs from {DPSH_SOURCE.relative_to(REPO)} "
                                f"(or is out of order) from the line {run[0]!r}: copy the code again")
            position = found + len(run)


def test_python_snippets_in_the_guides_compile() -> None:
    for name in ("plugins.md", "api.md", "quickstart.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
            compile(textwrap.dedent(block), f"docs/{name} python block {i + 1}", "exec")
