"""Render the paper recipes (docs/recipes.md) from the registered method specs.

Regenerate after changing a plugin's ``paper_recipe`` or ``paper_recipe_sources``::

    python -m fgbench.cli._recipes > docs/recipes.md

``tests/test_docs.py`` fails when the committed file differs.  Per method:
every field its ``paper_recipe`` sets, the value for all datasets (the
``"default"`` entry), the values of the per-dataset entries, and the source
the plugin cites (``MethodSpec.paper_recipe_sources``).
"""

from __future__ import annotations

import sys
from typing import Any

from fgbench.methods import MethodSpec

HEADER = """\
# Paper recipes

<!-- Generated from the registered method specs by `python -m fgbench.cli._recipes > docs/recipes.md`.
Do not edit by hand. -->

What `--protocol paper` runs for each method: the protocol fields its
recipe sets, and where each value comes from (a section or table of the
paper, or the authors' code where the paper is silent). A field a recipe does
not set keeps the protocol default ([protocol.md](protocol.md)); the
dataset's scale overrides apply first and the command line last.
`fgbench recipe METHOD --dataset D --protocol paper` prints one job's
protocol fully resolved, with the layer that set each field
([cli.md](cli.md#fgbench-recipe)). Method hyper-parameters (loss weights,
widths) are each plugin's config defaults, documented in its README.
"""


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_method(spec: MethodSpec) -> str:
    """One method's section: a table of recipe fields, per-dataset values and sources."""
    default = dict(spec.paper_recipe.get("default", {}))
    datasets = sorted(k for k in spec.paper_recipe if k != "default")
    keys = list(default) + sorted({k for d in datasets for k in spec.paper_recipe[d]} - set(default))
    lines = [f"## `{spec.name}`\n", f"{spec.citation}\n"]
    if not keys:
        return "\n".join(lines + ["No paper recipe: `--protocol paper` runs the protocol defaults.\n"])
    head = ["field", "all datasets"] + [f"`{d}`" for d in datasets] + ["source"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key in keys:
        row = [f"`{key}`", _show(default[key]) if key in default else ""]
        row += [_show(spec.paper_recipe[d][key]) if key in spec.paper_recipe[d] else "" for d in datasets]
        row.append(spec.recipe_source(key))
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def render_recipes(specs: list[MethodSpec] | None = None) -> str:
    """Markdown: the header, then one section per method (sorted by name)."""
    if specs is None:
        from fgbench._plugins import get_host

        specs = list(get_host().registry.methods.values())
    ordered = sorted(specs, key=lambda s: s.name)
    index = "Methods: " + ", ".join(f"[`{s.name}`](#{s.name})" for s in ordered) + ".\n"
    return "\n".join([HEADER, index] + [render_method(s) for s in ordered])


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_recipes())
