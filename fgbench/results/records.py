"""Run records: one JSON file per job, written atomically, read back for leaderboards.

Record version 2 stores the per-query AP list compactly (see
:func:`encode_per_query_ap`): at VegFru scale (116,931 queries) a version 1
list took about 1.4 MB per record, the encoded field about 0.5 MB, with the
same values.  Version 1 records are still read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fgbench.atomic import atomic_write_text

RECORD_VERSION = 2
PER_QUERY_AP_ENCODING = "micro-u32le-zlib-base64"


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
    # Distinct binary codes among the database items: fewer than the number of classes means the
    # codes cannot separate the classes (a collapsed training run; `fgbench run` warns).
    distinct_database_codes: int | None = None
    # Optional, for leaderboard figures (fgbench.results.examples builds both from the evaluation):
    # mean precision/recall at each Hamming radius 0..bits, and a few queries' top-10 database items.
    pr_curve: dict[str, list[float]] | None = None
    retrieval_examples: list[dict[str, Any]] | None = None
    # The installed distribution and version of the method's plugin (part of the job's identity on resume).
    method_version: str = ""
    # One line saying why training is considered diverged (non-finite or exploded loss), None when it is not;
    # the leaderboard flags such rows.
    divergence: str | None = None
    record_version: int = RECORD_VERSION

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if data["per_query_ap"] is not None:
            data["per_query_ap"] = encode_per_query_ap(data["per_query_ap"])
        return json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        """A record from its JSON dict (any record version; unknown keys ignored).

        Raises:
            ValueError: the per-query AP field cannot be decoded.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        fields["per_query_ap"] = decode_per_query_ap(fields.get("per_query_ap"))
        return cls(**fields)


def encode_per_query_ap(values: Sequence[float]) -> dict[str, Any]:
    """Per-query AP as whole millionths (the precision records keep), little-endian uint32, zlib, base64.

    About 4.2 characters a query instead of about 12 for an indented JSON
    list; :func:`decode_per_query_ap` gives back the values rounded to 1e-6.
    """
    micro = np.rint(np.asarray(values, dtype=np.float64) * 1e6)
    if micro.size and not (np.isfinite(micro).all() and micro.min() >= 0 and micro.max() <= 1e6):
        raise ValueError("per-query AP must be finite and within [0, 1]")
    blob = zlib.compress(micro.astype("<u4").tobytes(), 9)
    return {"encoding": PER_QUERY_AP_ENCODING, "count": int(micro.size), "data": base64.b64encode(blob).decode("ascii")}


def decode_per_query_ap(field: Any) -> list[float] | None:
    """The per-query AP list of a record: a version 1 list as is, a version 2 encoded field decoded."""
    if field is None or isinstance(field, list):
        return field
    if not isinstance(field, dict) or field.get("encoding") != PER_QUERY_AP_ENCODING:
        raise ValueError(f"per_query_ap: unknown encoding (expected {PER_QUERY_AP_ENCODING!r})")
    try:
        micro = np.frombuffer(zlib.decompress(base64.b64decode(field["data"], validate=True)), dtype="<u4")
    except (KeyError, TypeError, binascii.Error, zlib.error) as exc:
        raise ValueError(f"per_query_ap: damaged data ({type(exc).__name__})") from None
    if micro.size != field.get("count"):
        raise ValueError(f"per_query_ap: {micro.size} values, the record says {field.get('count')}")
    return (micro / 1e6).tolist()


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
        record = read_record(path)
        if record is not None:
            yield record


def read_record(path: Path) -> RunRecord | None:
    """The record in ``path``; None for a JSON file that is not a run record.

    Raises:
        RecordError: the file cannot be read or decoded (message names it).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not a readable run record ({type(exc).__name__}); delete it to rerun the job") from None
    if not isinstance(data, dict) or "method" not in data or "metrics" not in data:
        return None  # not a run record (e.g. an unrelated json)
    try:
        return RunRecord.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a readable run record ({exc}); delete it to rerun the job") from None
