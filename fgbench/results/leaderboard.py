"""Aggregating run records into leaderboard tables (pandas) and rendering them (tabulate).

One table per (dataset, protocol): a row per method, mAP per bit length as
``mean ± std (n)`` over seeds, params (M) and FLOPs (G) of the encode path,
the protocol's backbone/input/epochs/weights, and paper-reported mAP in
separate, labelled columns.  Rendering is deterministic: the same records
give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fgbench.results.records import RunRecord, atomic_write_text

COST_HEADER = "FLOPs (G, MACs @224, encode path)"


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per record with the fields leaderboards need."""
    rows = []
    for r in records:
        proto = r.protocol
        rows.append({
            "dataset": r.dataset,
            "protocol": proto.get("name", "fair"),
            "method": r.method,
            "bits": int(r.bits),
            "seed": int(r.seed),
            "map": float(r.metrics.get("map", np.nan)),
            "params_m": float(r.cost.get("params_m", np.nan)),
            "flops_g": float(r.cost.get("flops_g", np.nan)),
            "backbone": proto.get("backbone", ""),
            "input_size": int(proto.get("input_size", 0)),
            "epochs": int(proto.get("epochs", 0)),
            "imagenet": str(r.backbone_weights).startswith("imagenet"),
            "device": r.environment.get("device_name", r.environment.get("device", "")),
            "version": r.environment.get("fgbench", ""),
            "train_seconds": float(r.train_seconds),
        })
    columns = ["dataset", "protocol", "method", "bits", "seed", "map", "params_m", "flops_g", "backbone",
               "input_size", "epochs", "imagenet", "device", "version", "train_seconds"]
    return pd.DataFrame(rows, columns=columns).sort_values(["dataset", "protocol", "method", "bits", "seed"],
                                                           kind="stable").reset_index(drop=True)


def _fmt_map(values: np.ndarray) -> str:
    if len(values) == 0:
        return ""
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f} (n={len(values)})"


@dataclass(frozen=True)
class Table:
    """One leaderboard table and its identity."""

    dataset: str
    protocol: str
    frame: pd.DataFrame

    @property
    def slug(self) -> str:
        return self.dataset if self.protocol == "fair" else f"{self.dataset}-{self.protocol}"


def build_tables(df: pd.DataFrame, paper: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None) -> list[Table]:
    """Leaderboard tables from :func:`records_frame` output.

    ``paper`` maps method -> dataset -> bits -> paper-reported mAP.
    """
    paper = paper or {}
    tables = []
    for (dataset, protocol), group in df.groupby(["dataset", "protocol"], sort=True):
        bits = sorted(group["bits"].unique())
        rows = []
        for method, mg in group.groupby("method", sort=True):
            row: dict[str, object] = {"method": method}
            for b in bits:
                row[f"mAP@{b}"] = _fmt_map(mg.loc[mg["bits"] == b, "map"].to_numpy())
            first = mg.iloc[0]
            row["params (M)"] = f"{mg['params_m'].max():.2f}"
            row[COST_HEADER] = f"{mg['flops_g'].max():.3f}"
            row["backbone"] = first["backbone"]
            row["input"] = int(first["input_size"])
            row["epochs"] = int(first["epochs"])
            row["ImageNet init"] = "yes" if bool(first["imagenet"]) else "no"
            row["ran on"] = ", ".join(sorted(set(mg["device"])))
            row["fgbench"] = ", ".join(sorted(set(mg["version"])))
            for b in bits:
                value = paper.get(method, {}).get(dataset, {}).get(int(b))
                row[f"paper-reported mAP@{b}"] = "" if value is None else f"{value:.4f}"
            rows.append(row)
        tables.append(Table(dataset, protocol, pd.DataFrame(rows)))
    return tables


def render_markdown(table: Table) -> str:
    header = (f"## {table.dataset} — protocol `{table.protocol}`\n\n"
              f"mAP@all, mean ± std over seeds (n = number of seeds). Cost: {COST_HEADER}; "
              f"paper-reported columns are copied from the papers, not measured here.\n\n")
    return header + table.frame.to_markdown(index=False, disable_numparse=True) + "\n"


def write_tables(tables: list[Table], out_dir: Path) -> list[Path]:
    """Write ``<slug>.md`` and ``<slug>.csv`` per table atomically; return the paths."""
    out_dir = Path(out_dir)
    written = []
    for t in tables:
        md_path, csv_path = out_dir / f"{t.slug}.md", out_dir / f"{t.slug}.csv"
        atomic_write_text(md_path, render_markdown(t))
        atomic_write_text(csv_path, t.frame.to_csv(index=False, lineterminator="\n"))
        written += [md_path, csv_path]
    return written
