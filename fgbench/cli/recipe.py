"""``fgbench recipe``: the fully resolved protocol and method config of one job, and which layer set each field."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from fgbench.cli._common import one_line_errors
from fgbench._plugins import Registry, get_host
from fgbench.protocol import PROTOCOL_NAMES, Protocol, protocol_layers

#: how each override layer of :func:`fgbench.protocol.protocol_layers` is shown
LAYER_LABELS = {"default": "default", "dataset": "dataset scale", "recipe": "paper recipe",
                "recipe:dataset": "paper recipe ({dataset})", "user": "command line"}
#: ``fgbench run`` options that pick the grid: recipe takes them as its own argument and options
_GRID_OPTIONS = ("--methods", "-m", "--datasets", "-d", "--protocol", "--shard")


def resolve_recipe(registry: Registry, method: str, dataset: str, protocol_name: str,
                   run_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """What ``fgbench run --methods METHOD --datasets DATASET --protocol P RUN_ARGS`` would run, field by field.

    The job is planned by :func:`fgbench.cli._grid.plan_grid` (the same checks
    and the same resolution as ``fgbench run``); each protocol field is
    attributed to the last layer of :func:`fgbench.protocol.protocol_layers`
    that names it, with the recipe's cited source for a recipe field.
    """
    from fgbench.cli._grid import plan_grid

    for arg in run_args:
        if arg.split("=", 1)[0] in _GRID_OPTIONS:
            raise click.BadParameter(f"{arg}: give the method as METHOD, the dataset with --dataset and the "
                                     f"protocol with --protocol (one job's recipe)", param_hint="RUN_ARGS")
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is None or not isinstance(root.command, click.Group):  # pragma: no cover - called outside the CLI
        from fgbench.cli import main as group_cmd

        root = click.Context(group_cmd, info_name="fgbench")
    run_cmd = root.command.get_command(root, "run")  # the sibling command, looked up, not imported
    try:
        # parent=root: click caches a command's help option at its first context; without the group's
        # context_settings that cache would say "--help" where `fgbench run -h` works (and docs/cli.md shows it)
        run_ctx = run_cmd.make_context("run", ["--methods", method, "--datasets", dataset, "--protocol",
                                               protocol_name, *run_args], parent=root, resilient_parsing=False)
    except click.UsageError as exc:
        raise click.BadParameter(f"fgbench run options: {exc.format_message()}", param_hint="RUN_ARGS") from None
    plan = plan_grid(registry, run_ctx.params)
    mspec = registry.methods.get(method)
    dspec = registry.datasets.get(dataset)
    protocol: Protocol = plan.jobs[0].protocol
    set_by = {f.name: "default" for f in dataclasses.fields(Protocol)}
    for layer, values in protocol_layers(protocol_name, dspec.fair_overrides, mspec.paper_recipe, dataset,
                                         plan.protocol_overrides):
        for key in values:
            set_by[key] = layer
    fields: dict[str, dict[str, Any]] = {}
    for key, value in protocol.to_dict().items():
        layer = set_by[key]
        label = "--protocol" if key == "name" else LAYER_LABELS[layer].format(dataset=dataset)
        entry = {"value": value, "set_by": label}
        if layer.startswith("recipe"):
            entry["source"] = mspec.recipe_source(key)
        elif layer == "dataset":
            entry["source"] = f"DatasetSpec.fair_overrides of {dataset} (the same for every method)"
        fields[key] = entry
    sets = plan.method_sets.get(method, {})
    config = mspec.make_config(sets)
    config_fields = {f.name: {"value": _plain(getattr(config, f.name)),
                              "set_by": "command line" if f.name in sets else "default"}
                     for f in dataclasses.fields(config)}
    return {"method": method, "dataset": dataset, "protocol_name": protocol_name, "citation": mspec.citation,
            "protocol": fields, "config": config_fields, "notes": list(plan.notes)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(none)"
    return str(value)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("method")
@click.option("--dataset", "-d", default="embedded", show_default=True, help="The dataset of the job.")
@click.option("--protocol", "protocol_name", type=click.Choice(PROTOCOL_NAMES), default="fair", show_default=True,
              help="fair: identical settings for all methods; paper: the method's published recipe.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@one_line_errors
def recipe(method: str, dataset: str, protocol_name: str, as_json: bool, run_args: tuple[str, ...]) -> None:
    """Print the resolved protocol and method config one job would run with, and which layer set each field.

    \b
    Layers, later ones win: default -> dataset scale (the dataset's fair
    overrides) -> paper recipe -> paper recipe (dataset entry) -> command
    line.  RUN_ARGS are `fgbench run` override options, resolved exactly as
    `fgbench run` resolves them:
      fgbench recipe cmbh --dataset cub --protocol paper
      fgbench recipe dpsh --epochs 3 --set input_size=40 --set dpsh.eta=5
    A paper-recipe field shows its source (paper section or authors' code);
    docs/recipes.md lists every recipe.
    """
    result = resolve_recipe(get_host().registry, method, dataset, protocol_name, run_args)
    for note in result["notes"]:
        click.echo(note, err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from tabulate import tabulate

    click.echo(f"{method} on {dataset}, protocol {protocol_name}  ({result['citation']})")
    rows = [[key, _show(f["value"]), f["set_by"], f.get("source", "")] for key, f in result["protocol"].items()]
    click.echo(tabulate(rows, headers=["protocol field", "value", "set by", "source"], tablefmt="github",
                        disable_numparse=True))
    click.echo("")
    rows = [[key, _show(f["value"]), f["set_by"]] for key, f in result["config"].items()]
    click.echo(tabulate(rows, headers=[f"{method} config", "value", "set by"], tablefmt="github",
                        disable_numparse=True))
