"""``fgbench evaluate``: re-score run records from their stored codes, with any metric and tie convention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fgbench.cli._common import DEFAULT_RESULTS, one_line_errors
from fgbench._plugins import get_host

TIES_HELP = ("Tie convention: average (fgbench's: expected value over random orders within ties), index (ties broken "
             "by database index), deephash (DeepHash-pytorch's CalcTopMap: argsort, top K); repeatable "
             "(default: average).")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[RESULTS_DIR|RECORD]...")
@click.option("--metric", "metric_names", multiple=True, metavar="NAME",
              help="A registered metric (`fgbench list`); repeatable (default: every registered metric).")
@click.option("--ties", "ties", multiple=True, metavar="average|index|deephash", help=TIES_HELP)
@click.option("--topk", type=click.IntRange(min=1), default=None, metavar="K",
              help="Rank only the top K database items (mAP@K, e.g. 1000; default: the whole database).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON (for scripts).")
@one_line_errors
def evaluate(paths: tuple[Path, ...], metric_names: tuple[str, ...], ties: tuple[str, ...], topk: int | None,
             as_json: bool) -> None:
    """Re-score run records from their stored codes, without retraining.

    Reads every record below each RESULTS_DIR (default: results) or the
    RECORD files given, and scores the codes they keep with the metrics and
    tie conventions asked for. Records are never rewritten: they hold what
    their run measured. Records written before records kept codes (record
    version 1 or 2) are listed as such; rerun those jobs to re-score them.

    \b
      fgbench evaluate records --ties average --ties index --ties deephash
      fgbench evaluate results/fair/cub/dpsh/bits12-seed0.json --ties deephash --topk 1000 --json
    """
    from fgbench.records import NoCodesError, iter_records, read_codes, read_record
    from fgbench.results.rescore import Convention, rescore

    reg = get_host().registry
    metrics = [reg.metrics.get(name) for name in dict.fromkeys(metric_names)] or reg.metrics.values()
    conventions = [Convention(t, topk) for t in dict.fromkeys(ties or ("average",))]
    records = []
    for given in paths or (DEFAULT_RESULTS,):
        if given.is_dir():
            records += list(iter_records(given))
        elif given.exists():
            records.append(read_record(given))
        else:
            raise click.BadParameter(f"{given}: no such results folder or record file", param_hint="PATHS")
    if not records:
        raise click.ClickException(f"no run records under {', '.join(map(str, paths or (DEFAULT_RESULTS,)))}")
    rows: list[dict[str, Any]] = []
    without: list[str] = []
    for record in records:
        try:
            codes = read_codes(record)
        except NoCodesError:
            without.append(str(record.path))
            continue
        for score in rescore(codes, metrics, conventions):
            rows.append({"record": str(record.path), "protocol": str(record.protocol.get("name", "")),
                         "method": record.method, "dataset": record.dataset, "bits": record.bits,
                         "seed": record.seed, "metric": score.metric, "convention": score.convention.label,
                         "ties": score.convention.ties, "topk": score.convention.topk, "value": score.value,
                         "note": score.note})
    if not rows:
        raise click.ClickException(f"{len(without)} record(s), none holds codes (written before records kept them, "
                                   f"e.g. {without[0]}); rerun those jobs to re-score them")
    if as_json:
        click.echo(json.dumps({"scores": rows, "without_codes": without}, indent=1, sort_keys=True))
        return
    from tabulate import tabulate

    hidden: list[dict[str, Any]] = []
    if not metric_names:  # every metric by default: leave out the ones a convention does not carry, and say so
        hidden = [r for r in rows if r["value"] is None]
        if len(hidden) == len(rows):
            hidden = []
    shown = [r for r in rows if r["value"] is not None] if hidden else rows
    table = [[r["protocol"], r["method"], r["dataset"], r["bits"], r["seed"], r["metric"], r["convention"],
              "n/a" if r["value"] is None else f"{r['value']:.6f}"] for r in shown]
    click.echo(tabulate(table, headers=["protocol", "method", "dataset", "bits", "seed", "metric", "convention",
                                        "value"], tablefmt="github", disable_numparse=True))
    notes = sorted({r["note"] for r in rows if r["note"]})
    omitted = sorted({(r["metric"], r["convention"]) for r in hidden})
    if omitted:
        pairs = ", ".join(f"{m} ({c})" for m, c in omitted)
        click.echo(f"note: not shown, not available under their convention: {pairs} ({'; '.join(notes)}); "
                   f"--metric NAME lists a metric anyway", err=True)
    else:
        for note in notes:
            click.echo(f"note: n/a = {note}", err=True)
    if without:
        click.echo(f"note: {len(without)} record(s) hold no codes (written before records kept them, e.g. "
                   f"{without[0]}); rerun those jobs to re-score them", err=True)
