"""Boards: one per (dataset, protocol, class split), a :class:`MethodRow` per method with its cells (mean ± std over
seeds).  An unseen-class split (issue 16 item 4, ``protocol.split`` such as ``unseen:25``) gets boards of its own,
titled with the split, without paper columns (papers report the standard split)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from fgbench.results.leaderboard.frame import STANDARD_SPLIT, PaperNumbers


@dataclass(frozen=True)
class Cell:
    """mAP at one bit length over seeds."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        if self.n == 1:
            return f"{self.mean:.4f} (n=1)"
        return f"{self.mean:.4f} ± {self.std:.4f} (n={self.n})"


@dataclass
class MethodRow:
    """Everything a board shows about one method."""

    method: str
    cells: dict[int, Cell]
    per_seed: dict[int, dict[int, float]]                      # bits -> seed -> mAP
    per_query: dict[int, dict[int, list[float] | None]]        # bits -> seed -> per-query AP
    cost: dict[int, tuple[float, float]]                       # bits -> (params M, FLOPs G)
    pr: dict[int, tuple[list[float], list[float]]]             # bits -> (precision, recall), seed-averaged
    examples: tuple[int, int, list[dict[str, Any]]] | None     # (bits, seed, retrieval examples)
    backbone: str
    input_size: str
    epochs: str
    weights: str
    imagenet: str
    seeds: str
    devices: str
    versions: str
    train_seconds: float
    paper: dict[int, tuple[float, str]] = field(default_factory=dict)
    paper_note: str = ""
    diverged: dict[int, dict[int, str]] = field(default_factory=dict)  # bits -> seed -> why (diverged runs only)
    # bits -> best test epoch minus reported mAP over the seeds with a --trace-test-map trace (never ranked)
    test_inflation: dict[int, Cell] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean mAP over this method's bit lengths (for ordering rows)."""
        return float(np.mean([c.mean for c in self.cells.values()])) if self.cells else -math.inf


@dataclass
class Board:
    """One leaderboard: a dataset under one protocol."""

    dataset: str
    protocol: str
    split: str             # the class split: "standard" or e.g. "unseen:25" (a board never mixes splits)
    bits: list[int]
    rows: list[MethodRow]
    settings: int          # number of distinct protocol settings among the records (1 = identical for all)
    setting_summary: str
    cost_input: str
    versions: dict[str, int] = field(default_factory=dict)  # fgbench version/commit -> number of records
    differing: tuple[str, ...] = ()  # protocol fields whose value differs among the records (settings > 1)

    @property
    def slug(self) -> str:
        base = self.dataset if self.protocol == "fair" else f"{self.dataset}-{self.protocol}"
        return base if self.split == STANDARD_SPLIT else f"{base}-{self.split.replace(':', '-')}"

    @property
    def title(self) -> str:
        title = f"{self.dataset} — protocol `{self.protocol}`"
        return title if self.split == STANDARD_SPLIT else f"{title} — unseen classes, split `{self.split}`"

    @property
    def group(self) -> str:
        """The protocol, and the class split when it is not standard: what the summary averages within."""
        return self.protocol if self.split == STANDARD_SPLIT else f"{self.protocol}` / split `{self.split}"

    def row(self, method: str) -> MethodRow:
        return next(r for r in self.rows if r.method == method)

    @property
    def has_divergence(self) -> bool:
        """Whether a record of this board says its training diverged."""
        return any(r.diverged for r in self.rows)

    def methods_at(self, bits: int) -> list[str]:
        return [r.method for r in self.rows if bits in r.cells]

    @property
    def has_test_trace(self) -> bool:
        """Whether a record of this board holds a ``--trace-test-map`` trace."""
        return any(r.test_inflation for r in self.rows)

    @property
    def has_pr(self) -> bool:
        return any(r.pr for r in self.rows)

    @property
    def example_method(self) -> str | None:
        """The method the retrieval panel shows: the first row (best mean mAP) holding examples."""
        return next((r.method for r in self.rows if r.examples), None)


def joined(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values if str(v) != ""}, key=_natural)) or "?"


def _natural(text: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in _split_digits(text))


def _split_digits(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        if cur and ch.isdigit() != cur[-1].isdigit():
            out.append(cur)
            cur = ""
        cur += ch
    return out + ([cur] if cur else [])


_SETTING_LABELS = (("backbone", "backbone {}"), ("weights", "weights `{}`"), ("imagenet_weights", "ImageNet `{}`"),
                   ("input_size", "input {}"), ("resize_size", "resize {}"), ("resize_shape", "{} resize"),
                   ("augmentation", "augmentation {}"), ("train_crop", "{} crop"), ("flip_p", "flip p={}"),
                   ("rotation", "rotation {}°"), ("color_jitter", "jitter {}"), ("optimizer", "{}"),
                   ("lr", "lr {}"), ("backbone_lr_mult", "backbone lr x{}"), ("weight_decay", "weight decay {}"),
                   ("schedule", "{} schedule"), ("epochs", "{} epochs"), ("batch_size", "batch {}"),
                   ("selection", "model selection `{}`"),
                   ("split", "class split `{}` (trained on the seen classes only; query and database hold only the "
                             "unseen classes; see docs/protocol.md)"))


def _setting_summary(setting_json: str) -> str:
    """The protocol fields a reader compares, as one line (fields absent from the records are left out)."""
    p = json.loads(setting_json)
    if p.get("weights") != "imagenet":
        p.pop("imagenet_weights", None)  # only says which ImageNet weights when ImageNet weights are used
    parts = []
    for key, label in _SETTING_LABELS:
        if key in p:
            parts.append(label.format(p[key]))
        if key == "epochs" and int(p.get("epoch_sample") or 0) > 0:  # ADSH-style sampling: what an epoch is
            every = int(p.get("resample_every") or 1)
            parts.append(f"{p['epoch_sample']} training images per epoch, drawn afresh every "
                         + ("epoch" if every == 1 else f"{every} epochs"))
    return ", ".join(parts)


def _method_row(method: str, mg: pd.DataFrame, dataset: str, paper: PaperNumbers | None,
                installed: set[str] | None) -> MethodRow:
    cells, per_seed, per_query, cost, pr, diverged, inflation = {}, {}, {}, {}, {}, {}, {}
    examples = None
    for b, bg in mg.groupby("bits", sort=True):
        b = int(b)
        values = bg["map"].to_numpy(dtype=np.float64)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        cells[b] = Cell(float(np.mean(values)), std, len(values))
        per_seed[b] = {int(s): float(v) for s, v in zip(bg["seed"], bg["map"])}
        per_query[b] = {int(s): (None if q is None else list(q)) for s, q in zip(bg["seed"], bg["per_query_ap"])}
        cost[b] = (float(bg["params_m"].max()), float(bg["flops_g"].max()))
        why = {int(s): str(d) for s, d in zip(bg["seed"], bg["divergence"]) if d}
        if why:
            diverged[b] = why
        traced = bg["test_inflation"].dropna().to_numpy(dtype=np.float64)
        if len(traced):
            inflation[b] = Cell(float(np.mean(traced)), float(np.std(traced, ddof=1)) if len(traced) > 1 else 0.0,
                                len(traced))
        curves = [c for c in bg["pr_curve"] if c]
        lengths = {len(c["precision"]) for c in curves}
        if curves and len(lengths) == 1:
            pr[b] = ([round(float(v), 6) for v in np.mean([c["precision"] for c in curves], axis=0)],
                     [round(float(v), 6) for v in np.mean([c["recall"] for c in curves], axis=0)])
        with_examples = [(int(s), e) for s, e in zip(bg["seed"], bg["retrieval_examples"]) if e]
        if with_examples:
            examples = (b, *with_examples[0])  # largest bits wins (loop is ascending), lowest seed
    if paper is not None and installed is not None and method not in installed:
        paper_cells, note = {}, "plugin not installed"
    else:
        paper_cells = {int(b): v for b, v in (paper or {}).get(method, {}).get(dataset, {}).items()}
        note = ""
    return MethodRow(
        method=method, cells=cells, per_seed=per_seed, per_query=per_query, cost=cost, pr=pr, examples=examples,
        backbone=joined(mg["backbone"]), input_size=joined(mg["input_size"]), epochs=joined(mg["epochs"]),
        weights=joined(mg["weights"]), imagenet=joined("yes" if v else "no" for v in mg["imagenet"]),
        seeds=joined(mg["seed"]), devices=joined(mg["device"]), versions=joined(mg["version"]),
        train_seconds=float(mg["train_seconds"].mean()), paper=paper_cells, paper_note=note, diverged=diverged,
        test_inflation=inflation,
    )


def _differing(settings: list[str]) -> tuple[str, ...]:
    """The protocol fields whose values are not the same in every setting (JSON strings of :func:`records_frame`)."""
    parsed = [json.loads(s) for s in settings]
    keys = sorted({k for p in parsed for k in p})
    return tuple(k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in parsed}) > 1)


def build_boards(df: pd.DataFrame, paper: PaperNumbers | None = None,
                 installed: set[str] | None = None) -> list[Board]:
    """Boards from :func:`records_frame` output, sorted by (dataset, protocol); rows by mean mAP.

    ``installed``: names of installed methods; a method in the records but not
    installed gets no paper columns (they come from its plugin).
    """
    boards = []
    for (dataset, protocol, split), group in df.groupby(["dataset", "protocol", "split"], sort=True):
        numbers = paper if split == STANDARD_SPLIT else None  # papers' numbers are for the standard split
        rows = [_method_row(str(m), mg, str(dataset), numbers, installed) for m, mg in group.groupby("method", sort=True)]
        rows.sort(key=lambda r: (-round(r.score, 6), r.method))
        settings = sorted(set(group["setting"]))
        boards.append(Board(
            dataset=str(dataset), protocol=str(protocol), split=str(split),
            bits=sorted(int(b) for b in group["bits"].unique()),
            rows=rows, settings=len(settings),
            setting_summary=_setting_summary(settings[0]) if len(settings) == 1 else "",
            cost_input=joined(group["cost_input"]),
            versions={str(v) or "unknown": int(n) for v, n in sorted(group["version"].value_counts().items())},
            differing=_differing(settings),
        ))
    return boards
