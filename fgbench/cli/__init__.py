"""The ``fgbench`` command line (click): one module per command, registered here explicitly.

Commands call the engine, data and results layers and share only
:mod:`fgbench.cli._common` (error handling, option parsing) and
:mod:`fgbench.cli._grid` (the job grid that ``run`` and ``submit`` both
plan); no command imports another, and nothing below the CLI imports it.
"""

from __future__ import annotations

import sys

import click

from fgbench.cli import data, evaluate, leaderboard, list, new_plugin, profile, recipe, run, submit

from fgbench.cli import check_plugin  # noqa: E402 - kept apart from the line above (merges)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fgbench")
def main() -> None:
    """fgbench: benchmark fine-grained deep hashing methods under one protocol.

    \b
    Quick start (CPU, offline, a few minutes):
      fgbench list                 installed methods, datasets, metrics
      fgbench run                  every method on the embedded dataset
      fgbench leaderboard          tables from the run records
    """


for _command in (list.list_cmd, run.run, leaderboard.leaderboard, profile.profile, data.data, new_plugin.new_plugin,
                 submit.submit, evaluate.evaluate, recipe.recipe):
    main.add_command(_command)

main.add_command(check_plugin.check_plugin)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
