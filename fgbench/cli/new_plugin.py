"""``fgbench new-plugin``: scaffold a method plugin as its own pip distribution."""

from __future__ import annotations

from pathlib import Path

import click

from fgbench.cli._common import one_line_errors
from fgbench._plugins import get_host


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder in which to create fgbench-NAME/.")
@one_line_errors
def new_plugin(name: str, directory: Path) -> None:
    """Create fgbench-NAME/: a pip-installable method plugin that works out of the box.

    \b
    It holds pyproject.toml (entry point group "fgbench"), the package with a
    minimal working method (config dataclass, HashingModel, MethodSpec, hook),
    a test using fgbench.testing and a README. Then:
      pip install -e fgbench-NAME && fgbench list
    and replace the template model and loss with the paper's (docs/plugins.md).
    """
    from fgbench._scaffold import scaffold_plugin

    reg = get_host().registry
    if name in reg.methods:
        raise click.ClickException(f"a method named {name!r} is already installed "
                                   f"({reg.methods.get(name).source}); choose another name")
    root = scaffold_plugin(name, directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        click.echo(f"created {path}")
    click.echo(f"\nnext: python -m pip install -e {root} && fgbench list && python -m pytest -q {root / 'tests'}")
