"""Run records: one JSON file per job, written atomically, read back (and validated) for leaderboards.

A record lives at ``<results>/<protocol>/<dataset>/<method>/bits<B>-seed<S>.json``
(:func:`record_path`).  Reading one (:func:`read_record`) validates it
(:func:`validate_record`): every field's type and range (mAP in [0, 1] and
finite, costs finite and >= 0, ...), the required fields, and the job identity
it claims (protocol, dataset, method, bits, seed), which must be the one its
path names (:func:`record_identity_from_path`).  A failing record is a one-line
:class:`RecordError` naming the file and the field; deleting the file makes
``fgbench run`` redo the job.  Below a results folder, :func:`iter_records`
reads every file named like a record (``bits<B>-seed<S>.json``) and ignores
other files; names taken from records never become paths outside the output
folder (:mod:`fgbench._names`).

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
import math
import numbers
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from fgbench._atomic import atomic_write_text
from fgbench._names import NAME_RULE, is_valid_name, validate_name
from fgbench.errors import RecordError

__all__ = ["PER_QUERY_AP_ENCODING", "RECORD_VERSION", "RecordError", "RecordIdentity", "RunRecord",
           "decode_per_query_ap", "encode_per_query_ap", "is_record_file_name", "iter_records", "read_record",
           "record_file_name", "record_identity_from_path", "record_path", "validate_name", "validate_record",
           "write_record"]

RECORD_VERSION = 2
PER_QUERY_AP_ENCODING = "micro-u32le-zlib-base64"


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
    # Optional, for leaderboard figures (fgbench.metrics.summaries builds both from the evaluation):
    # mean precision/recall at each Hamming radius 0..bits, and a few queries' top-10 database items.
    pr_curve: dict[str, list[float]] | None = None
    retrieval_examples: list[dict[str, Any]] | None = None
    # The installed distribution and version of the method's plugin (part of the job's identity on resume).
    method_version: str = ""
    # The seen and unseen classes of an unseen-class split run (fgbench.data.class_split.ClassSplit.to_dict:
    # name, num_classes, seen, unseen); absent (None, not saved) for the standard split and older records.
    class_split: dict[str, Any] | None = None
    # One line saying why training is considered diverged (non-finite or exploded loss), None when it is not;
    # the leaderboard flags such rows.
    divergence: str | None = None
    record_version: int = RECORD_VERSION

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if data["per_query_ap"] is not None:
            data["per_query_ap"] = encode_per_query_ap(data["per_query_ap"])
        if data.get("class_split") is None:
            data.pop("class_split", None)  # standard split: the record is what it was before the field existed
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


# --------------------------------------------------------------------------- paths
RECORD_FILE_RE = re.compile(r"bits(\d+)-seed(-?\d+)\.json")
"""File names that claim to be run records (:func:`iter_records` reads these and ignores other files)."""


@dataclass(frozen=True)
class RecordIdentity:
    """The job a record path names: ``<protocol>/<dataset>/<method>/bits<bits>-seed<seed>.json``."""

    protocol: str
    dataset: str
    method: str
    bits: int
    seed: int

    def path(self, results_dir: Path) -> Path:
        return record_path(results_dir, self.protocol, self.dataset, self.method, self.bits, self.seed)


def record_file_name(bits: int, seed: int) -> str:
    return f"bits{int(bits)}-seed{int(seed)}.json"


def is_record_file_name(name: str) -> bool:
    """Whether a file name claims to be a run record (``bits<B>-seed<S>.json``)."""
    return RECORD_FILE_RE.fullmatch(name) is not None


def record_path(results_dir: Path, protocol: str, dataset: str, method: str, bits: int, seed: int) -> Path:
    """``<results_dir>/<protocol>/<dataset>/<method>/bits<bits>-seed<seed>.json``.

    Raises:
        InvalidNameError: ``protocol``, ``dataset`` or ``method`` is not a valid name (it would not be one folder).
    """
    for kind, name in (("protocol", protocol), ("dataset", dataset), ("method", method)):
        validate_name(kind, name)
    return Path(results_dir) / protocol / dataset / method / record_file_name(bits, seed)


def _shown_path(path: Path | str) -> str:
    """The path for a one-line message (``repr`` when it holds a control character such as a newline)."""
    text = str(path)
    return repr(text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def record_identity_from_path(path: Path | str) -> RecordIdentity:
    """The job identity a record path names (its last three folders and its file name).

    Raises:
        RecordError: the file name is not ``bits<B>-seed<S>.json`` (canonical integers), or a folder name is
            not a valid protocol, dataset or method name.
    """
    path = Path(path)
    m = RECORD_FILE_RE.fullmatch(path.name)
    if m is None or path.name != record_file_name(int(m.group(1)), int(m.group(2))):
        raise RecordError(f"{_shown_path(path)}: a run record's file name must be bits<B>-seed<S>.json "
                          f"(e.g. bits12-seed0.json); rename or delete it")
    parents = path.parent.parts[-3:]
    if len(parents) < 3:
        raise RecordError(f"{_shown_path(path)}: not at <protocol>/<dataset>/<method>/{path.name}; "
                          f"move it there or delete it")
    protocol, dataset, method = parents
    for kind, name in (("protocol", protocol), ("dataset", dataset), ("method", method)):
        if not is_valid_name(name):
            raise RecordError(f"{_shown_path(path)}: folder {name!r} is not a valid {kind} name, so this is "
                              f"not a record path; delete or move it")
    return RecordIdentity(protocol, dataset, method, int(m.group(1)), int(m.group(2)))


def write_record(record: RunRecord, path: Path) -> None:
    atomic_write_text(path, record.to_json())


# --------------------------------------------------------------------------- validation
_ADVICE = "delete it to rerun the job"


class _Invalid(Exception):
    def __init__(self, field: str, problem: str, advice: str = _ADVICE) -> None:
        super().__init__(field, problem)
        self.field, self.problem, self.advice = field, problem, advice


_REQUIRED = ("method", "dataset", "bits", "seed", "protocol", "metrics", "cost", "train_seconds", "eval_seconds",
             "environment")
_DICT_FIELDS = ("environment", "method_config", "training", "engine")
_STR_FIELDS = ("method_source", "backbone_weights", "model_selection", "method_version")
_COUNT_FIELDS = ("queries_without_relevant", "num_query", "num_database")
# metrics whose contract is a fraction (mAP, precision/recall at k or at a radius): must lie in [0, 1]
BOUNDED_METRIC_RE = re.compile(r"(map|p|r|precision|recall)(@.*)?")
_SLACK = 1e-9  # a mean of values in [0, 1] may exceed 1 by rounding


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int(value: Any, name: str, lo: int | None = None) -> int:
    if not _is_int(value):
        raise _Invalid(name, f"is {_show(value)}, not an integer")
    if lo is not None and value < lo:
        raise _Invalid(name, f"is {value}, below {lo}")
    return int(value)


def _real(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if not _is_real(value):
        raise _Invalid(name, f"is {_show(value)}, not a number")
    x = float(value)
    if not math.isfinite(x):
        raise _Invalid(name, f"is {x}, not a finite number")
    if hi is not None and lo is not None and not lo <= x <= hi + _SLACK:
        raise _Invalid(name, f"is {x!r}, not in [{lo:g}, {hi:g}]")
    if lo is not None and x < lo:
        raise _Invalid(name, f"is {x!r}, below {lo:g}")
    return x


def _dict(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(name, f"is {_show(value)}, not a JSON object")
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(name, f"has the key {_show(key)}, not a string")
    return value


def _fractions(values: Any, name: str) -> list[float]:
    if not isinstance(values, (list, tuple)):
        raise _Invalid(name, f"is {_show(values)}, not a list")
    for i, v in enumerate(values):
        _real(v, f"{name}[{i}]", 0.0, 1.0)
    return list(values)


def _check_protocol(value: Any) -> None:
    from fgbench.protocol import Protocol  # lazy: fgbench.protocol imports the method contract (torch)

    proto = _dict(value, "protocol")
    if "name" not in proto:
        raise _Invalid("protocol.name", "is missing (required)")
    _name(proto["name"], "protocol.name", "protocol")
    defaults = Protocol()
    for f in dataclasses.fields(Protocol):
        if f.name not in proto or f.name == "name":
            continue
        default, v, where = getattr(defaults, f.name), proto[f.name], f"protocol.{f.name}"
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise _Invalid(where, f"is {_show(v)}, not true/false")
        elif isinstance(default, int):
            _int(v, where)
        elif isinstance(default, float):
            _real(v, where)
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise _Invalid(where, f"is {_show(v)}, not a string")
        elif isinstance(default, tuple):
            if not isinstance(v, (list, tuple)):
                raise _Invalid(where, f"is {_show(v)}, not a list")
            for i, item in enumerate(v):
                _int(item, f"{where}[{i}]")


def _check_class_split(value: Any, protocol: Mapping[str, Any]) -> None:
    """``{"name", "num_classes", "seen", "unseen"}``: disjoint class lists that cover the classes, under the
    protocol's split name."""
    split = _dict(value, "class_split")
    for key in ("name", "num_classes", "seen", "unseen"):
        if key not in split:
            raise _Invalid(f"class_split.{key}", "is missing")
    if split["name"] != protocol.get("split"):
        raise _Invalid("class_split.name", f"is {_show(split['name'])} but protocol.split is "
                                           f"{_show(protocol.get('split'))}")
    num = _int(split["num_classes"], "class_split.num_classes", 1)
    classes: list[int] = []
    for key in ("seen", "unseen"):
        if not isinstance(split[key], list) or not split[key]:
            raise _Invalid(f"class_split.{key}", f"is {_show(split[key])}, not a non-empty list of classes")
        classes += [_int(c, f"class_split.{key}", 0) for c in split[key]]
    if sorted(classes) != list(range(num)):
        raise _Invalid("class_split", f"seen and unseen classes do not split 0..{num - 1} (overlap or gap)")


def _name(value: Any, field_name: str, kind: str) -> str:
    if not is_valid_name(value):
        raise _Invalid(field_name, f"is {_show(value)}, not a valid {kind} name ({NAME_RULE}; names become folder "
                                   f"and file names)")
    return value


def _check_metrics(value: Any) -> None:
    metrics = _dict(value, "metrics")
    if "map" not in metrics:
        raise _Invalid("metrics.map", "is missing (required)")
    for key, v in metrics.items():
        if BOUNDED_METRIC_RE.fullmatch(key):
            _real(v, f"metrics.{key}", 0.0, 1.0)
        else:
            _real(v, f"metrics.{key}")


def _check_cost(value: Any) -> None:
    """Numbers finite and >= 0 (``params_m``, ``flops_g``, ... ; ``*input_size`` a positive integer); text allowed."""
    cost = _dict(value, "cost")
    for key, v in cost.items():
        if key.endswith("input_size"):
            _int(v, f"cost.{key}", 1)
        elif key in ("params_m", "flops_g") or _is_real(v):
            _real(v, f"cost.{key}", 0.0)
        elif not isinstance(v, str) and v is not None:
            raise _Invalid(f"cost.{key}", f"is {_show(v)}, not a number or a string")


def _check_pr_curve(value: Any) -> None:
    curve = _dict(value, "pr_curve")
    for key in ("precision", "recall"):
        if key not in curve:
            raise _Invalid(f"pr_curve.{key}", "is missing")
        _fractions(curve[key], f"pr_curve.{key}")
    if len(curve["precision"]) != len(curve["recall"]):
        raise _Invalid("pr_curve", f"has {len(curve['precision'])} precision but {len(curve['recall'])} recall values")


def _check_examples(value: Any, num_query: int, num_database: int) -> None:
    if not isinstance(value, list):
        raise _Invalid("retrieval_examples", f"is {_show(value)}, not a list")
    for i, ex in enumerate(value):
        where = f"retrieval_examples[{i}]"
        ex = _dict(ex, where)
        for key in ("query", "label", "top", "distance", "relevant"):
            if key not in ex:
                raise _Invalid(f"{where}.{key}", "is missing")
        query = _int(ex["query"], f"{where}.query", 0)
        if num_query and query >= num_query:
            raise _Invalid(f"{where}.query", f"is {query}, beyond the {num_query} queries")
        _int(ex["label"], f"{where}.label", 0)
        lists = {key: ex[key] for key in ("top", "distance", "relevant")}
        for key, items in lists.items():
            if not isinstance(items, list):
                raise _Invalid(f"{where}.{key}", f"is {_show(items)}, not a list")
        if len({len(items) for items in lists.values()}) != 1:
            raise _Invalid(where, "top, distance and relevant differ in length")
        for j, item in enumerate(lists["top"]):
            top = _int(item, f"{where}.top[{j}]", 0)
            if num_database and top >= num_database:
                raise _Invalid(f"{where}.top[{j}]", f"is {top}, beyond the {num_database} database items")
        for j, item in enumerate(lists["distance"]):
            _int(item, f"{where}.distance[{j}]", 0)
        for j, item in enumerate(lists["relevant"]):
            if not isinstance(item, bool):
                raise _Invalid(f"{where}.relevant[{j}]", f"is {_show(item)}, not true/false")


def _check(d: Mapping[str, Any], identity: RecordIdentity | None) -> list[float] | None:
    """Raise :class:`_Invalid` for the first bad field; the decoded per-query AP otherwise."""
    for key in _REQUIRED:
        if key not in d:
            raise _Invalid(key, "is missing (required)")
    version = _int(d.get("record_version", 1), "record_version", 1)
    if version > RECORD_VERSION:
        raise _Invalid("record_version", f"is {version}, newer than this fgbench reads ({RECORD_VERSION})",
                       f"upgrade fgbench, or {_ADVICE}")
    method = _name(d["method"], "method", "method")
    dataset = _name(d["dataset"], "dataset", "dataset")
    bits = _int(d["bits"], "bits", 1)
    seed = _int(d["seed"], "seed")
    _check_protocol(d["protocol"])
    _check_metrics(d["metrics"])
    _check_cost(d["cost"])
    for key in ("train_seconds", "eval_seconds"):
        _real(d[key], key, 0.0)
    for key in _DICT_FIELDS:
        if key in d:
            _dict(d[key], key)
    for key in _STR_FIELDS:
        if key in d and not isinstance(d[key], str):
            raise _Invalid(key, f"is {_show(d[key])}, not a string")
    counts = {key: _int(d.get(key, 0), key, 0) for key in _COUNT_FIELDS}
    if counts["queries_without_relevant"] > counts["num_query"] > 0:
        raise _Invalid("queries_without_relevant", f"is {counts['queries_without_relevant']}, more than the "
                                                   f"{counts['num_query']} queries")
    if d.get("distinct_database_codes") is not None:
        _int(d["distinct_database_codes"], "distinct_database_codes", 0)
    divergence = d.get("divergence")
    if divergence is not None and (not isinstance(divergence, str) or not divergence.strip()):
        raise _Invalid("divergence", f"is {_show(divergence)}, not null or a non-empty string")
    if d.get("class_split") is not None:
        _check_class_split(d["class_split"], d["protocol"])
    try:
        per_query = decode_per_query_ap(d.get("per_query_ap"))
    except ValueError as exc:
        raise _Invalid("per_query_ap", f"cannot be decoded: {str(exc).removeprefix('per_query_ap: ')}") from None
    if per_query is not None:
        if not isinstance(d.get("per_query_ap"), dict):  # a version 1 list: check every value
            _fractions(per_query, "per_query_ap")
        if counts["num_query"] and len(per_query) != counts["num_query"]:
            raise _Invalid("per_query_ap", f"holds {len(per_query)} values for {counts['num_query']} queries")
    if d.get("pr_curve") is not None:
        _check_pr_curve(d["pr_curve"])
    if d.get("retrieval_examples") is not None:
        _check_examples(d["retrieval_examples"], counts["num_query"], counts["num_database"])
    if identity is not None:
        claimed = {"protocol.name": d["protocol"]["name"], "dataset": dataset, "method": method, "bits": bits,
                   "seed": seed}
        named = {"protocol.name": identity.protocol, "dataset": identity.dataset, "method": identity.method,
                 "bits": identity.bits, "seed": identity.seed}
        for key, value in claimed.items():
            if value != named[key]:
                raise _Invalid(key, f"is {_show(value)} but the file's path is that of {key.split('.')[0]} "
                                    f"{_show(named[key])} (a record of another job copied or renamed there)",
                               f"move it to its own path, or {_ADVICE}")
    return per_query


def validate_record(record: RunRecord | Mapping[str, Any], path: Path | str | None = None, *,
                    check_path: bool = True) -> RunRecord:
    """``record`` (a :class:`RunRecord` or its JSON dict) as a :class:`RunRecord`, once it is known valid.

    Checks every field's type and range, the required fields and, with a
    ``path`` and ``check_path``, that the job identity the record claims
    (``protocol["name"]``, ``dataset``, ``method``, ``bits``, ``seed``) is the
    one its path names (:func:`record_identity_from_path`).  Unknown keys are
    ignored; fields newer than the record's version may be absent.

    Raises:
        RecordError: one line naming the file (when given) and the field, and what to do.
    """
    where = _shown_path(path) if path is not None else "run record"
    identity = record_identity_from_path(path) if path is not None and check_path else None
    if isinstance(record, RunRecord):
        data: Mapping[str, Any] = {f.name: getattr(record, f.name) for f in dataclasses.fields(RunRecord)}
    elif isinstance(record, Mapping):
        data = record
    else:
        raise RecordError(f"{where}: holds {type(record).__name__}, not a run record (a JSON object); "
                          f"delete it to rerun the job")
    try:
        per_query = _check(data, identity)
    except _Invalid as bad:
        raise RecordError(f"{where}: field {bad.field!r} {bad.problem}; {bad.advice}") from None
    if isinstance(record, RunRecord):
        return record
    names = {f.name for f in dataclasses.fields(RunRecord)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["per_query_ap"] = per_query
    return RunRecord(**fields)


# --------------------------------------------------------------------------- reading
def iter_records(results_dir: Path) -> Iterator[RunRecord]:
    """Every record below ``results_dir`` in sorted path order, each validated (:func:`read_record`).

    Only files named like a record (``bits<B>-seed<S>.json``) are read, and
    each must be a valid record of the job its path names
    (``.../<protocol>/<dataset>/<method>/bits<B>-seed<S>.json``, so
    ``results_dir`` may also be a protocol or dataset folder); other files
    and hidden ones (temporary files) are ignored.

    Raises:
        RecordError: the folder cannot be read, or a record is invalid (one line naming the file and the field).
    """
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
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not is_record_file_name(path.name):
            continue  # temporary files, hidden folders, and JSON files that do not claim to be records
        yield read_record(path)  # its job identity must be the one its last three folders and its name say


def read_record(path: Path, *, check_path: bool = True) -> RunRecord:
    """The valid record in ``path`` (:func:`validate_record`; never None).

    ``check_path=False`` skips the comparison of the record's job identity
    with its path (for a record file kept elsewhere under another name).

    Raises:
        RecordError: the file cannot be read, is not JSON, or is not a valid
            record of the job its path names (one line naming the file and the field).
    """
    where = _shown_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordError(f"{where}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise RecordError(f"{where}: not a readable run record (not UTF-8 text); delete it to rerun the job") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise RecordError(f"{where}: not a readable run record ({what}; truncated or damaged?); "
                          f"delete it to rerun the job") from None
    except RecursionError:
        raise RecordError(f"{where}: not a readable run record (nested too deeply); "
                          f"delete it to rerun the job") from None
    if not isinstance(data, dict):
        raise RecordError(f"{where}: not a run record (a JSON {type(data).__name__}, not an object); "
                          f"delete it to rerun the job")
    return validate_record(data, path, check_path=check_path)
