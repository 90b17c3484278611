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

Record version 3 keeps the job's binary codes: the query and database codes
and the labels they were scored with, as packed bits in a sidecar file next
to the record (``bits<B>-seed<S>.codes.npz``, :func:`write_codes`), which the
record's ``codes`` field references by SHA-256.  The sidecar is written
first, then the record, each atomically, so a record never points at a
missing or other sidecar; a sidecar without its record is an orphan that the
next run of the job removes.  :func:`read_codes` verifies the checksum; a
record without codes (versions 1 and 2) or with a missing or damaged sidecar
is a one-line error (:class:`NoCodesError`, :class:`CodesError`) only when
its codes are needed: reading the record and its metrics never needs them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import math
import numbers
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from fgbench._atomic import atomic_write_bytes, atomic_write_text
from fgbench._names import NAME_RULE, is_valid_name, validate_name
from fgbench.errors import RecordError, first_line

__all__ = ["CODES_FORMAT", "CodesError", "NoCodesError", "PER_QUERY_AP_ENCODING", "RECORD_VERSION", "RecordError",
           "RecordIdentity", "RunRecord", "StoredCodes", "codes_path", "decode_per_query_ap", "encode_per_query_ap", "is_record_file_name", "iter_records", "read_record",
           "read_codes", "record_file_name", "record_identity_from_path", "record_path", "validate_name",
           "validate_record", "write_codes", "write_record"]

RECORD_VERSION = 3
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
    # Where each pipeline's pixels came from: {"train"|"query"|"database": "decoded-cache@256" | "original files"
    # | ...}; a decoded copy is used only when the pipeline starts with exactly its resize (never upsampled).
    input_source: dict[str, str] = field(default_factory=dict)
    # Version 3: the sidecar holding the job's codes and labels (:func:`write_codes`): {"file", "sha256", "bytes",
    # "format"}; None for records written before records kept codes.
    codes: dict[str, Any] | None = None
    # Model selection (docs/protocol.md): with selection=val, the 0-based epoch whose model was tested, the
    # validation mAP after every epoch and the number of validation images; with `fgbench run
    # --trace-test-map`, the test mAP after every epoch (never used to choose a model or to rank).
    selected_epoch: int | None = None
    val_map_trace: list[float] | None = None
    num_val: int | None = None
    test_map_trace: list[float] | None = None
    record_version: int = RECORD_VERSION
    # Where the record was read from (set by :func:`read_record`; never saved): its sidecar lies next to it.
    path: Path | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for key in _NOT_SAVED:
            data.pop(key)
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
        fields = {k: v for k, v in d.items() if k in _saved_fields()}
        fields["per_query_ap"] = decode_per_query_ap(fields.get("per_query_ap"))
        return cls(**fields)


_NOT_SAVED = ("path",)


def _saved_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(RunRecord)} - set(_NOT_SAVED)


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
_DICT_FIELDS = ("environment", "method_config", "training", "engine", "input_source")
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
            real = bool(default) and isinstance(default[0], float)  # crop_scale, color_jitter, ...
            for i, item in enumerate(v):
                (_real if real else _int)(item, f"{where}[{i}]")


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


def _check_codes_field(value: Any, bits: int, seed: int) -> None:
    """``{"file": "bits<B>-seed<S>.codes.npz", "sha256": <64 hex>, "bytes": n, "format": ...}``.

    The file name must be the job's own (names from records never become other paths).
    """
    codes = _dict(value, "codes")
    for key in ("file", "sha256"):
        if key not in codes:
            raise _Invalid(f"codes.{key}", "is missing")
    if codes["file"] != codes_file_name(bits, seed):
        raise _Invalid("codes.file", f"is {_show(codes['file'])}, not this job's sidecar "
                                     f"{codes_file_name(bits, seed)!r}")
    if not isinstance(codes["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", codes["sha256"]):
        raise _Invalid("codes.sha256", f"is {_show(codes['sha256'])}, not 64 lower-case hex digits")
    if "bytes" in codes:
        _int(codes["bytes"], "codes.bytes", 0)


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
    for key in ("val_map_trace", "test_map_trace"):
        if d.get(key) is not None:
            _fractions(d[key], key)
    for key in ("selected_epoch", "num_val"):
        if d.get(key) is not None:
            _int(d[key], key, 0)
    if d.get("selected_epoch") is not None and d.get("val_map_trace") is not None \
            and d["selected_epoch"] >= len(d["val_map_trace"]):
        raise _Invalid("selected_epoch", f"is {d['selected_epoch']}, beyond the {len(d['val_map_trace'])} traced "
                                         f"epochs")
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
    if d.get("codes") is not None:  # after the identity: a record copied to another job's path says so first
        _check_codes_field(d["codes"], bits, seed)
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
    fields = {k: v for k, v in data.items() if k in _saved_fields()}
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
    record = validate_record(data, path, check_path=check_path)
    record.path = Path(path)
    return record


# --------------------------------------------------------------------------- codes sidecar
CODES_FORMAT = "fgbench-codes-1"
"""Sidecar layout: an ``.npz`` (``np.savez_compressed``) holding ``format``, ``bits``, ``n_query``,
``n_database``, ``query_labels``/``database_labels`` (the class indices the run scored the codes with, in the
smallest integer type that holds them), ``classes`` (the distinct labels, sorted), ``centres`` (each class's
majority code) and ``query_bits``/``database_bits``: each code XOR its class's centre (bit 1 = entry > 0),
flattened row-major and packed with ``np.packbits``.  The XOR leaves mostly zero bits for codes that follow
their class, which deflate shrinks (learned codes are far from random); it loses nothing."""

_CODES_SUFFIX = ".codes.npz"


class NoCodesError(RecordError):
    """A record written before records kept codes (version 1 or 2): nothing to re-score from."""


class CodesError(RecordError):
    """A record's codes sidecar is missing, damaged or not the one the record references (message names it)."""


@dataclass(frozen=True)
class StoredCodes:
    """A job's binary codes (bool, ``(n, bits)``) and the class labels (int64) they were scored with."""

    query_codes: np.ndarray
    database_codes: np.ndarray
    query_labels: np.ndarray
    database_labels: np.ndarray

    @property
    def bits(self) -> int:
        return int(self.query_codes.shape[1])


def codes_file_name(bits: int, seed: int) -> str:
    """``bits<B>-seed<S>.codes.npz``: the sidecar of record ``bits<B>-seed<S>.json``."""
    return record_file_name(bits, seed).removesuffix(".json") + _CODES_SUFFIX


def codes_path(record_file: Path | str) -> Path:
    """The sidecar path of the record at ``record_file`` (same folder, ``.codes.npz`` for ``.json``)."""
    record_file = Path(record_file)
    return record_file.with_name(record_file.name.removesuffix(".json") + _CODES_SUFFIX)


def _as_bool_codes(codes: Any, what: str) -> np.ndarray:
    if hasattr(codes, "detach"):  # a torch tensor of any dtype (bfloat16 too), on any device
        codes = (codes.detach() > 0).cpu().numpy()
    a = np.asarray(codes)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a (n, bits) matrix, got shape {a.shape}")
    return a > 0


def _as_labels(labels: Any, n: int, what: str) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.shape != (n,) or a.dtype.kind not in "iub":
        raise ValueError(f"{what}: expected {n} integer class indices, got shape {a.shape} dtype {a.dtype}")
    a = a.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if n else (0, 0)
    for dtype in (np.uint8, np.uint16, np.uint32):
        if lo >= 0 and hi <= np.iinfo(dtype).max:
            return a.astype(dtype)
    return a


def encode_codes(query_codes: Any, database_codes: Any, query_labels: Any, database_labels: Any) -> bytes:
    """The sidecar's bytes (:data:`CODES_FORMAT`) for codes (entry > 0 is bit 1) and integer labels."""
    q = _as_bool_codes(query_codes, "query codes")
    d = _as_bool_codes(database_codes, "database codes")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits, database codes {d.shape[1]}")
    ql = _as_labels(query_labels, q.shape[0], "query labels")
    dl = _as_labels(database_labels, d.shape[0], "database labels")
    classes, inverse = np.unique(np.concatenate([ql, dl]), return_inverse=True)
    both = np.concatenate([q, d])
    ones = np.stack([np.bincount(inverse, weights=col, minlength=len(classes)) for col in both.T], axis=1)
    counts = np.bincount(inverse, minlength=len(classes))[:, None]
    centres = 2 * ones > counts  # each class's majority code
    buf = io.BytesIO()
    np.savez_compressed(buf, format=np.array(CODES_FORMAT), bits=np.int64(q.shape[1]),
                        n_query=np.int64(q.shape[0]), n_database=np.int64(d.shape[0]),
                        classes=classes, centres=np.packbits(centres.ravel()),
                        query_bits=np.packbits((q ^ centres[inverse[:len(ql)]]).ravel()),
                        database_bits=np.packbits((d ^ centres[inverse[len(ql):]]).ravel()),
                        query_labels=_narrow(ql), database_labels=_narrow(dl))
    return buf.getvalue()


def _narrow(labels: np.ndarray) -> np.ndarray:
    """``labels`` in the smallest integer dtype that holds them (292 VegFru classes: 2 bytes, not 8, before
    deflating; 146,131 labels in random order then deflate to 10.8 bits each instead of 13.6)."""
    if not len(labels):
        return labels
    return labels.astype(np.result_type(np.min_scalar_type(int(labels.min())), np.min_scalar_type(int(labels.max()))))


def write_codes(record_file: Path | str, query_codes: Any, database_codes: Any, query_labels: Any,
                database_labels: Any) -> dict[str, Any]:
    """Write the sidecar of the record at ``record_file`` atomically; its reference for ``RunRecord.codes``.

    Write the sidecar before the record that references it (:func:`write_record`).
    """
    data = encode_codes(query_codes, database_codes, query_labels, database_labels)
    path = codes_path(record_file)
    atomic_write_bytes(path, data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "format": CODES_FORMAT}


def _decode_codes(data: bytes) -> StoredCodes:
    """Raises ValueError (any reason) when ``data`` is not a well-formed sidecar."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if str(z["format"]) != CODES_FORMAT:
                raise ValueError(f"format {str(z['format'])!r}, expected {CODES_FORMAT!r}")
            bits, n_query, n_db = (int(z[k]) for k in ("bits", "n_query", "n_database"))
            classes = z["classes"]
            if classes.ndim != 1 or z["centres"].size != (len(classes) * bits + 7) // 8:
                raise ValueError(f"centres hold {z['centres'].size} bytes for {len(classes)} classes")
            centres = np.unpackbits(z["centres"], count=len(classes) * bits).astype(bool).reshape(-1, bits)
            sides = []
            for key, n in (("query", n_query), ("database", n_db)):
                packed = z[f"{key}_bits"]
                if packed.dtype != np.uint8 or packed.size != (n * bits + 7) // 8:
                    raise ValueError(f"{key}_bits holds {packed.size} bytes for {n} codes of {bits} bits")
                labels = z[f"{key}_labels"]
                if labels.shape != (n,) or labels.dtype.kind not in "iu":
                    raise ValueError(f"{key}_labels has shape {labels.shape} dtype {labels.dtype}")
                labels = labels.astype(np.int64)
                row = np.searchsorted(classes, labels)
                if n and (row.max() >= len(classes) or (classes[row] != labels).any()):
                    raise ValueError(f"{key}_labels hold a class without a centre")
                codes = np.unpackbits(packed, count=n * bits).astype(bool).reshape(n, bits) ^ centres[row]
                sides.append((codes, labels))
    except (OSError, KeyError, EOFError, zlib.error, zipfile.BadZipFile, TypeError) as exc:  # np.load's ways of saying "not an npz"
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return StoredCodes(sides[0][0], sides[1][0], sides[0][1], sides[1][1])


def read_codes(record: RunRecord, record_file: Path | str | None = None) -> StoredCodes:
    """The codes and labels ``record`` was scored with, from its sidecar (checksum verified).

    ``record_file`` is where the record lies (default: where :func:`read_record` read it).

    Raises:
        NoCodesError: the record holds no codes (version 1 or 2); one line suggesting a rerun.
        CodesError: the sidecar is missing, damaged or not the one the record references; one line naming it.
    """
    where = record_file if record_file is not None else record.path
    if where is None:
        where = Path(record_file_name(record.bits, record.seed))
    shown = _shown_path(where)
    if not record.codes:
        raise NoCodesError(f"{shown}: record version {record.record_version} holds no codes (written before "
                           f"records kept them); delete the record and rerun the job to re-score it")
    sidecar = Path(where).parent / str(record.codes["file"])
    rerun = f"delete {Path(where).name} and rerun the job to get its codes back"
    try:
        data = sidecar.read_bytes()
    except FileNotFoundError:
        raise CodesError(f"{_shown_path(sidecar)}: missing (the codes of {shown}); {rerun}") from None
    except OSError as exc:
        raise CodesError(f"{_shown_path(sidecar)}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if hashlib.sha256(data).hexdigest() != record.codes.get("sha256"):
        raise CodesError(f"{_shown_path(sidecar)}: damaged or replaced (its SHA-256 is not the one {Path(where).name} "
                         f"records); {rerun}")
    try:
        codes = _decode_codes(data)
    except ValueError as exc:
        raise CodesError(f"{_shown_path(sidecar)}: not a readable codes file ({first_line(exc)}); {rerun}") from None
    expected = (record.bits, record.num_query or len(codes.query_codes), record.num_database or len(codes.database_codes))
    if (codes.bits, len(codes.query_codes), len(codes.database_codes)) != expected:
        raise CodesError(f"{_shown_path(sidecar)}: holds {len(codes.query_codes)} x {len(codes.database_codes)} codes "
                         f"of {codes.bits} bits, the record {expected[1]} x {expected[2]} of {expected[0]}; {rerun}")
    return codes
