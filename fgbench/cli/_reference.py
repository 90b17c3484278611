"""Render the CLI reference (docs/cli.md) from click's own help text.

Regenerate after changing a command or option::

    python -m fgbench.cli._reference > docs/cli.md

``tests/test_docs.py`` fails when the committed file differs.  The help is
rendered at a fixed width (100 columns), independent of the terminal.
"""

from __future__ import annotations

import sys

import click

WIDTH = 100
HEADER = """\
# CLI reference

<!-- Generated from click's help by `python -m fgbench.cli._reference > docs/cli.md`. Do not edit by hand. -->

Every command prints the same text with `--help`. Start with the
[quickstart](quickstart.md).
"""


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The context ``--help`` would use (the command's context_settings), at a fixed width, parsing nothing."""
    return cmd.make_context(name, [], parent=parent, resilient_parsing=True, terminal_width=WIDTH,
                            max_content_width=WIDTH)


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command, click.Context]]:
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = _context(cmd, name, ctx)
        out.append((sub.command_path, cmd, sub))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, sub)
    return out


def render_cli_reference() -> str:
    """Markdown: the top-level help, then one section per command (sub-groups recursed), sorted by path."""
    from fgbench.cli import main

    root = _context(main, "fgbench", None)
    commands = _commands(main, root)
    parts = [HEADER, "Commands: " + ", ".join(f"[`{path}`](#{_anchor(path)})" for path, _, _ in commands) + ".\n",
             "## `fgbench`\n", "```text\n" + main.get_help(root).rstrip() + "\n```\n"]
    for path, cmd, ctx in commands:
        parts += [f"## `{path}`\n", "```text\n" + cmd.get_help(ctx).rstrip() + "\n```\n"]
    return "\n".join(parts)


def _anchor(path: str) -> str:
    """GitHub's heading anchor for ``## `path` ``: lower case, spaces to '-', punctuation dropped."""
    return "".join(ch for ch in path.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_cli_reference())
