"""Run records to one pandas frame (a row per record), and the installed plugins' paper-reported numbers."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from fgbench.records import RunRecord

# protocol fields that are not part of "the setting" (they enumerate the grid)
_GRID_FIELDS = ("name", "bits", "seeds")
#: the class split of a record whose protocol has none (every record before issue 16, every standard run)
STANDARD_SPLIT = "standard"

PaperNumbers = Mapping[str, Mapping[str, Mapping[int, tuple[float, str]]]]
"""method -> dataset -> bits -> (paper-reported mAP, source)."""


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per record with the fields leaderboards need (sorted, so order of reading never matters)."""
    rows = []
    for r in records:
        proto = dict(r.protocol)
        rows.append({
            "dataset": r.dataset,
            "protocol": proto.get("name", "fair"),
            "split": str(proto.get("split", STANDARD_SPLIT)),
            "method": r.method,
            "bits": int(r.bits),
            "seed": int(r.seed),
            "map": float(r.metrics.get("map", np.nan)),
            "params_m": float(r.cost.get("params_m", np.nan)),
            "flops_g": float(r.cost.get("flops_g", np.nan)),
            "cost_input": int(r.cost.get("input_size", 224) or 0),
            "backbone": str(proto.get("backbone", "")),
            "input_size": int(proto.get("input_size", 0)),
            "epochs": int(proto.get("epochs", 0)),
            "weights": str(r.backbone_weights),
            "imagenet": str(r.backbone_weights).startswith("imagenet"),
            "device": str(r.environment.get("device_name", r.environment.get("device", ""))),
            "version": str(r.environment.get("fgbench", "")),
            "train_seconds": float(r.train_seconds),
            "setting": json.dumps({k: v for k, v in sorted(proto.items()) if k not in _GRID_FIELDS}, sort_keys=True),
            "per_query_ap": r.per_query_ap,
            "pr_curve": r.pr_curve,
            "retrieval_examples": r.retrieval_examples,
            "divergence": _one_line(r.divergence) if r.divergence else "",
            "test_inflation": test_inflation(r),
        })
    columns = ["dataset", "protocol", "split", "method", "bits", "seed", "map", "params_m", "flops_g", "cost_input", "backbone",
               "input_size", "epochs", "weights", "imagenet", "device", "version", "train_seconds", "setting",
               "per_query_ap", "pr_curve", "retrieval_examples", "divergence", "test_inflation"]
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["dataset", "protocol", "split", "method", "bits", "seed"], kind="stable").reset_index(drop=True)


def test_inflation(record: RunRecord) -> float:
    """Best epoch's test mAP minus the reported mAP, from a ``--trace-test-map`` record (NaN without a trace).

    Under ``selection=final`` the reported mAP is the last epoch's, so this
    is "best epoch on test minus final": what a table gains by keeping the
    best test epoch, as the CNET, Multi-FusNet and DSH_Analysis code do.
    """
    trace = record.test_map_trace
    if not trace:
        return float("nan")
    return float(max(trace)) - float(record.metrics.get("map", np.nan))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def paper_numbers(registry: Any) -> dict[str, dict[str, dict[int, tuple[float, str]]]]:
    """Paper-reported mAP of every registered method (the first ``PaperResult`` naming a cell wins)."""
    out: dict[str, dict[str, dict[int, tuple[float, str]]]] = {}
    for spec in registry.methods.values():
        for res in spec.paper_results:
            for ds, per_bits in res.map.items():
                for b, v in per_bits.items():
                    out.setdefault(spec.name, {}).setdefault(ds, {}).setdefault(int(b), (float(v), res.source))
    return out
