"""``fgbench profile``: parameters and FLOPs of each method's encode path."""

from __future__ import annotations


import click

from fgbench.backbones import BACKBONES
from fgbench.cli._common import check_method_sets, one_line_errors, parse_int_list, parse_sets, resolve_names
from fgbench._plugins import get_host


@click.command()
@click.option("--methods", "-m", default=None, help="Comma-separated methods (default: all installed).")
@click.option("--bits", default="12", show_default=True, help="Bit lengths.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default="resnet50", show_default=True)
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--num-classes", type=int, default=200, show_default=True, help="Classes (CUB: 200).")
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE",
              help="Method option, e.g. cnet.zoom=off; repeatable.")
@one_line_errors
def profile(methods: str | None, bits: str, backbone: str, input_size: int, num_classes: int,
            sets: tuple[str, ...]) -> None:
    """Parameters and FLOPs of each method's encode path (random weights, CPU).

    FLOPs follow the papers' convention: multiply-accumulates, one image.
    """
    from fgbench.engine.profile import profile_methods, profile_protocol

    reg = get_host().registry
    names = resolve_names("--methods", methods, reg.methods)
    if not names:
        raise click.ClickException("no method plugins are installed; install one, "
                                   "e.g. pip install -e plugins/fgbench-dpsh")
    method_sets, protocol_sets = parse_sets(sets)
    if protocol_sets:
        key, value = next(iter(protocol_sets.items()))
        raise click.BadParameter(f"{key}={value}: profile takes METHOD.KEY=VALUE only "
                                 f"(use --backbone, --input-size, --bits)", param_hint="--set")
    for note in check_method_sets(reg, method_sets, names):
        click.echo(note, err=True)
    bit_list = parse_int_list("--bits", bits) or []
    profile_protocol(backbone, input_size, bit_list, num_classes)  # every option checked before any model is built
    rows = profile_methods(reg, names, bit_list, backbone, input_size, num_classes, method_sets)
    from tabulate import tabulate

    from fgbench.engine.profile import bare_parameter_lines

    click.echo(f"encode path at {input_size}x{input_size}, backbone {backbone}; FLOPs = multiply-accumulates (G); "
               f"params (M) = parameters inside layers")
    table = [{k: v for k, v in row.items() if k not in ("bare", "all params (M)")} for row in rows]
    click.echo(tabulate(table, headers="keys", tablefmt="github", disable_numparse=True))
    for line in bare_parameter_lines(rows):
        click.echo(line)
