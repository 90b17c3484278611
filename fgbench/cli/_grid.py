"""The job grid of one ``fgbench run`` command line, checked whole before any job trains.

Shared by ``fgbench run`` and ``fgbench submit`` (which plans the grid here before submitting it), so a grid is
refused the same way whether it runs here or on a cluster.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import click

from fgbench.cli._common import check_method_sets, parse_int_list, parse_sets, resolve_names, split_names
from fgbench.data.base import default_data_root
from fgbench._plugins import Registry
from fgbench.protocol import Protocol, ProtocolError, is_named_weights

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.engine.runner import Job


@dataclass(frozen=True)
class GridPlan:
    """The validated job grid of one ``fgbench run`` command line.

    ``jobs``: every job of the grid (this process's shard with ``--shard``),
    each with its resolved, validated protocol; ``method_sets``: the checked
    ``--set METHOD.KEY=VALUE`` values (strings; ``MethodSpec.make_config``
    converts them); ``notes``: one-line warnings to show the user (a
    ``--set`` for a method not selected, a dataset skipped by ``all``);
    ``protocol_overrides``: the protocol fields the command line sets (the
    ``user`` layer of :func:`fgbench.protocol.protocol_layers`, with
    ``bits``/``seeds`` when given).
    """

    jobs: list[Job]
    methods: list[str]
    datasets: list[str]
    protocol: str
    method_sets: dict[str, dict[str, str]]
    data_root: Path
    notes: list[str] = field(default_factory=list)
    protocol_overrides: dict[str, Any] = field(default_factory=dict)


#: protocol fields that have their own ``fgbench run`` option (a --set of the same field is refused)
_OPTION_FIELDS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "backbone": "--backbone",
                  "weights": "--backbone-weights", "bits": "--bits", "seeds": "--seeds", "split": "--split"}


def plan_grid(registry: Registry, params: Mapping[str, Any]) -> GridPlan:
    """Check every option of ``fgbench run`` and expand the grid; raise before anything runs.

    ``params`` are the parsed ``fgbench run`` options, all of them (click's
    ``ctx.params`` of the ``run`` command).  Both ``fgbench run``
    and ``fgbench submit`` call this, so a grid is refused the same way
    whether it runs here or on a cluster.  Checked: the engine options
    (``--workers``, ``--nproc``, ``--log-every``, ``--checkpoint-every``,
    ``--shard``, ``--results``), method and dataset names (an empty list is
    an error, never "all"), every ``--set METHOD.KEY=VALUE`` (also for
    methods not selected: a warning note), protocol ``--set`` fields that
    duplicate an option or may not be set (``name``), and the resolved
    protocol of every (dataset, method) pair (:meth:`Protocol.validate`).
    Jobs already done are part of the grid: a bad option fails even when
    every record exists.
    """
    from fgbench.engine.grid import expand_jobs
    from fgbench.engine.grid import shard as shard_jobs

    p = dict(params)
    _check_engine_options(p)
    root = Path(p["data_root"]) if p["data_root"] is not None else default_data_root()
    method_names = resolve_names("--methods", p["methods"], registry.methods)
    if not method_names:
        raise click.ClickException("no method plugins are installed; install one, "
                                   "e.g. pip install -e plugins/fgbench-dpsh")
    dataset_names, notes = _select_datasets(registry, p["datasets"], root)
    if not dataset_names:
        raise click.BadParameter("no dataset is available (see `fgbench data list`)", param_hint="--datasets")
    method_sets, protocol_sets = parse_sets(tuple(p["sets"] or ()))
    fields = sorted(f.name for f in dataclasses.fields(Protocol) if f.name != "name")
    for key, value in protocol_sets.items():
        if key not in fields and key not in ("name", "augmentation"):  # name: refused by resolve_protocol, with
            # what to do instead; augmentation: the old name of train_crop/flip_p, translated by Protocol.replace
            raise click.BadParameter(f"{key}={value}: {key} is no protocol field (valid: {', '.join(fields)}); "
                                     f"a method option is METHOD.KEY=VALUE", param_hint="--set")
    notes += check_method_sets(registry, method_sets, method_names)
    overrides: dict[str, Any] = dict(protocol_sets)
    cli_values: dict[str, Any] = {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"],
                                  "backbone": p["backbone"], "split": p.get("split")}
    if p["backbone_weights"] is not None:
        weights = Path(p["backbone_weights"])
        if not weights.is_file():
            raise click.BadParameter(f"{weights}: no such file", param_hint="--backbone-weights")
        cli_values["weights"] = str(weights)
    bits = parse_int_list("--bits", p["bits"])
    seeds = parse_int_list("--seeds", p["seeds"])
    cli_values.update(bits=bits, seeds=seeds)
    for key, value in cli_values.items():
        if value is None:
            continue
        if key in protocol_sets:
            raise click.BadParameter(f"{key}={protocol_sets[key]} and {_OPTION_FIELDS[key]} both set {key}; "
                                     f"give it once (the option {_OPTION_FIELDS[key]})", param_hint="--set")
        if key not in ("bits", "seeds"):
            overrides[key] = value
    jobs: list[Job] = []
    for dname in dataset_names:  # pair by pair, so that an error names the dataset (and, for paper, the method)
        for mname in method_names:
            try:
                jobs += expand_jobs(registry, [mname], [dname], p["protocol_name"], bits, seeds, overrides)
            except ProtocolError as exc:
                if p["protocol_name"] == "paper":  # the method's recipe is part of the cause
                    raise ProtocolError(f"{exc} [protocol paper, dataset {dname}, method {mname}]") from None
                if len(dataset_names) > 1:
                    raise ProtocolError(f"{exc} [dataset {dname}]") from None
                raise
    for weights in sorted({job.protocol.weights for job in jobs}):
        if not is_named_weights(weights) and not Path(weights).is_file():
            raise click.BadParameter(f"weights={weights}: no such file; use imagenet, random, pretext[:SIZE] or "
                                     f"--backbone-weights PATH", param_hint="--set")
    if p["shard"]:
        index, count = _parse_shard(p["shard"])
        jobs = shard_jobs(jobs, index, count)
    user = dict(overrides, **{k: tuple(v) for k, v in (("bits", bits), ("seeds", seeds)) if v})
    return GridPlan(jobs=jobs, methods=method_names, datasets=dataset_names, protocol=p["protocol_name"],
                    method_sets=method_sets, data_root=root, notes=notes, protocol_overrides=user)


def _check_engine_options(p: Mapping[str, Any]) -> None:
    """The options that shape how jobs run (not what they compute)."""
    if p["nproc"] < 1:
        raise click.BadParameter(f"{p['nproc']}: use 1 or more", param_hint="--nproc")
    if p["workers"] < -1:
        raise click.BadParameter(f"{p['workers']}: use 0 or more worker processes, or -1 for auto",
                                 param_hint="--workers")
    if p["log_every"] < 1:
        raise click.BadParameter(f"{p['log_every']}: use 1 or more steps", param_hint="--log-every")
    if not (math.isfinite(p["checkpoint_every"]) and p["checkpoint_every"] >= 0):
        raise click.BadParameter(f"{p['checkpoint_every']}: use 0 or more seconds (0 = every epoch)",
                                 param_hint="--checkpoint-every")
    results = Path(p["results"])
    if results.exists() and not results.is_dir():
        raise click.BadParameter(f"{results} exists and is not a directory", param_hint="--results")
    if p["shard"]:
        _parse_shard(p["shard"])


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise click.BadParameter(f"{text!r}: use I/N with 0 <= I < N", param_hint="--shard")
    return index, count


def _select_datasets(reg: Registry, given: str | None, root: Path) -> tuple[list[str], list[str]]:
    """The dataset names of ``--datasets`` and notes on datasets that ``all`` skipped."""
    names = split_names("--datasets", given, "dataset", reg.datasets.names())
    if names is None:
        return (["embedded"] if "embedded" in reg.datasets else reg.datasets.names()[:1]), []
    if names != ["all"]:
        for n in names:
            reg.datasets.get(n)
        return names, []
    from fgbench.data.official.catalog import available_datasets

    real, missing = available_datasets(reg, root)
    notes = [f"skipping dataset {name}: {reason} (see `fgbench data list`)" for name, reason in missing]
    synthetic = [spec.name for spec in reg.datasets.values() if spec.kind != "real"]
    return synthetic + real, notes


def check_results_dir(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise click.BadParameter(f"{results} exists and is not a directory", param_hint="--results")
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"{results}: cannot create ({exc.strerror})", param_hint="--results") from None
