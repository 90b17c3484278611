"""``fgbench check-plugin NAME``: a method's contract checked on a tiny random batch (CPU, seconds)."""

from __future__ import annotations

import click

from fgbench.backbones import BACKBONES
from fgbench.cli._common import check_method_sets, one_line_errors, parse_sets, resolve_names
from fgbench.errors import PluginError
from fgbench._plugins import get_host


@click.command("check-plugin")
@click.argument("names", metavar="NAME[,NAME...]")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default="resnet18", show_default=True,
              help="Backbone to build the model with (random weights).")
@click.option("--input-size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Image size of the random batch.")
@click.option("--bits", type=click.IntRange(min=1), default=8, show_default=True, help="Code length.")
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE",
              help="Method option to check with, e.g. cnet.zoom=off; repeatable.")
@one_line_errors
def check_plugin(names: str, backbone: str, input_size: int, bits: int, sets: tuple[str, ...]) -> None:
    """Check that a method keeps the plugin contract, before any training.

    \b
    Builds the model on a batch of 4 random images (CPU, random weights) and
    checks: every config field survives --set (value -> text -> same value);
    build returns a HashingModel; loss(forward(images), batch) returns
    (scalar tensor, {name: tensor}) and backpropagates; encode in eval mode
    returns (batch, bits) real values, the same on a second call, connected
    to the parameters (not detached); cost profiling works. Every failure is
    one line; the exit status is 1 when any check fails. `fgbench run` runs
    the same check before a method's first job. NAME may be `all`.
    """
    from fgbench.engine.plugin_check import check_method

    reg = get_host().registry
    selected = resolve_names("NAME", names, reg.methods)
    method_sets, protocol_sets = parse_sets(sets)
    if protocol_sets:
        key, value = next(iter(protocol_sets.items()))
        raise click.BadParameter(f"{key}={value}: check-plugin takes METHOD.KEY=VALUE only", param_hint="--set")
    for note in check_method_sets(reg, method_sets, selected):
        click.echo(note, err=True)
    failed = []
    for name in selected:
        spec = reg.methods.get(name)
        result = check_method(spec, spec.make_config(method_sets.get(name)), backbone, bits, input_size)
        if result.ok:
            click.echo(f"ok     {name} ({spec.source}): contract holds ({result.seconds:.1f}s)")
            continue
        failed.append(name)
        click.echo(f"FAILED {name} ({spec.source}): {len(result.failures)} check(s) ({result.seconds:.1f}s)")
        for line in result.failures:
            click.echo(f"  {line}")
    if failed:
        raise PluginError(f"the plugin contract check failed for {', '.join(failed)} (see the lines above); "
                          f"fix the plugin and rerun fgbench check-plugin {','.join(failed)}")
