"""Run records: one JSON file per job, written atomically, read back for leaderboards."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fgbench.atomic import atomic_write_text

RECORD_VERSION = 1


class RecordError(ValueError):
    """An unreadable results directory or record file (message names it)."""


@dataclass
class RunRecord:
    """Everything one job produced, enough to reproduce its leaderboard row."""

    method: str
    dataset: str
    bits: int
    seed: int
    protocol: dict[str, Any]
    metrics: dict[str, float]
    cost: dict[str, Any]
    train_seconds: float
    eval_seconds: float
    environment: dict[str, Any]
    method_config: dict[str, Any] = field(default_factory=dict)
    method_source: str = ""
    backbone_weights: str = ""
    model_selection: str = "final epoch"
    training: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    queries_without_relevant: int = 0
    num_query: int = 0
    num_database: int = 0
    per_query_ap: list[float] | None = None
    # Optional, for leaderboard figures (fgbench.results.examples builds both from the evaluation):
    # mean precision/recall at each Hamming radius 0..bits, and a few queries' top-10 database items.
    pr_curve: dict[str, list[float]] | None = None
    retrieval_examples: list[dict[str, Any]] | None = None
    record_version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True, default=_jsonable) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def record_path(results_dir: Path, protocol: str, dataset: str, method: str, bits: int, seed: int) -> Path:
    return Path(results_dir) / protocol / dataset / method / f"bits{bits}-seed{seed}.json"


def write_record(record: RunRecord, path: Path) -> None:
    atomic_write_text(path, record.to_json())


def iter_records(results_dir: Path) -> Iterator[RunRecord]:
    """Every record below ``results_dir`` in sorted path order."""
    root = Path(results_dir)
    if not root.exists():
        raise RecordError(f"results dir {root}: does not exist; run `fgbench run` first or pass --results DIR")
    if not root.is_dir():
        raise RecordError(f"results dir {root}: is not a directory")
    try:
        paths = sorted(root.rglob("*.json"))
    except OSError as exc:
        raise RecordError(f"results dir {root}: cannot be read ({exc.strerror})") from None
    for path in paths:
        if path.name.startswith("."):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecordError(f"{path}: not a readable run record ({type(exc).__name__}); delete it to rerun the job") from None
        if not isinstance(data, dict) or "method" not in data or "metrics" not in data:
            continue  # not a run record (e.g. an unrelated json)
        yield RunRecord.from_dict(data)
