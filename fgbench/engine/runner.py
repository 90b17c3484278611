"""Expanding the job grid and running one job end to end.

A job is (method, dataset, bits, seed) under one protocol.  Its record lives
at ``<results>/<protocol>/<dataset>/<method>/bits<B>-seed<S>.json`` (below
``<results>/unseen-P/`` for an unseen-class split, :mod:`fgbench.data.class_split`); a job
whose record exists *with the same identity* is skipped (resume), an
interrupted job resumes from its last epoch checkpoint, and a lock file keeps
two processes from running the same job at once.

A job's identity (:func:`job_identity`) is its method, dataset, bits and
seed, its resolved protocol (less the grid's ``bits``/``seeds`` lists), the
method's config and the plugin's distribution and version
(:func:`method_version`).  A record whose identity differs is never taken as
done: :func:`identity_mismatch` names the first differing fields, and
``fgbench run`` refuses before any job trains.

Files a killed run leaves behind are removed by the next run of that job
(:meth:`JobRunner.tidy`): the temporary files of the record and the
checkpoint, a checkpoint whose record exists, and the lock file.  The lock
(:class:`JobLock`) is an ``flock`` on ``<record>.lock``, which the kernel
releases when its process dies (even by ``kill -9``); the file holds the
owner's PID and host for the "running in another process" message.

Under torchrun (one job on several GPUs, :mod:`fgbench.engine.distributed`)
every rank calls :meth:`JobRunner.run` for the same jobs in the same order;
rank 0 alone takes the lock, decides whether the job runs (and tells the
other ranks), evaluates and writes the record.

Model selection (docs/protocol.md): with ``selection=val`` the job carves
its validation split (:mod:`fgbench.data.valsplit`), trains on and uses as
the database the remaining training images, evaluates the validation
queries after every epoch and tests the best epoch's model.  With
``trace_test_map`` (``fgbench run --trace-test-map``) the test split is also
evaluated after every epoch; the trace is stored in the record but is not
part of the job's identity (it changes neither the model nor any reported
metric; it only changes the checkpoint fingerprint, so a resumed run never
mixes traced and untraced epochs).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fgbench._atomic import temp_files_of
from fgbench.backbones import Backbone
from fgbench.data.base import RetrievalDataset, Split
from fgbench.data.loader import input_split
from fgbench.data.valsplit import carve_validation
from fgbench import _faults as faults
from fgbench._version import __version__
from fgbench.engine import distributed
from fgbench.engine.device import EngineError, EngineOptions, resolve_runtime, seed_everything
from fgbench.engine.divergence import divergence_reason
from fgbench.engine.device import loader_options_for
from fgbench.engine.encode import encode_split
from fgbench.engine.train import NonFiniteLossError, train_model
from fgbench.data.class_split import class_split_field, evaluation_dataset, job_dataset, split_folder
from fgbench.methods import BuildContext, MethodSpec
from fgbench.metrics.cost import encode_cost
from fgbench.metrics.retrieval import evaluate_codes
from fgbench.metrics.warmup import compile_ahead
from fgbench._plugins import PluginError, Registry, entry_point_packages
from fgbench.protocol import Protocol, ProtocolError, upgrade_protocol_dict
from fgbench.metrics.summaries import pr_curve_field, retrieval_examples_field
from fgbench.records import RecordError, RunRecord, codes_path, read_record, record_path, write_codes, write_record

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

COST_INPUT_SIZE = 224
#: Protocol fields that describe the whole grid, not one job (the job's own bits and seed are compared instead).
GRID_FIELDS = ("bits", "seeds")
#: OSError numbers after which the next jobs would fail the same way: the grid stops.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Job:
    method: str
    dataset: str
    bits: int
    seed: int
    protocol: Protocol

    @property
    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.bits}b/seed{self.seed}"

    def path(self, results_dir: Path) -> Path:
        # an unseen-class split files its records below <results>/<split>/ (e.g. unseen-25/), never over standard ones
        return record_path(Path(results_dir) / split_folder(self.protocol.split), self.protocol.name, self.dataset,
                           self.method, self.bits, self.seed)


def code_version() -> str:
    """fgbench version plus the git commit of the source tree when available."""
    version = __version__
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            version += f"+g{out.stdout.strip()}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def environment() -> dict[str, Any]:
    return {
        "fgbench": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


class JobRunner:
    """Runs jobs against one registry, caching loaded datasets and costs."""

    def __init__(self, registry: Registry, data_root: Path, results_dir: Path, options: EngineOptions,
                 method_overrides: dict[str, dict[str, Any]] | None = None, trace_test_map: bool = False) -> None:
        self.registry = registry
        self.data_root = Path(data_root)
        self.results_dir = Path(results_dir)
        self.options = options
        self.method_overrides = method_overrides or {}
        self.trace_test_map = trace_test_map
        self._datasets: dict[str, RetrievalDataset] = {}
        self._costs: dict[tuple, dict[str, Any]] = {}

    def dataset(self, name: str) -> RetrievalDataset:
        if name not in self._datasets:
            self._datasets[name] = self.registry.datasets.get(name).load(self.data_root)
        return self._datasets[name]

    def job_dataset(self, job: Job) -> RetrievalDataset:
        """What ``job`` trains and retrieves on: its dataset, or the seen/unseen view of its class split."""
        return job_dataset(self.dataset(job.dataset), job.protocol.split, job.seed, job.dataset)

    def config(self, method: str) -> Any:
        """The config dataclass of ``method`` with this run's ``--set`` overrides."""
        return self.registry.methods.get(method).make_config(self.method_overrides.get(method))

    def check_done(self, job: Job) -> None:
        """Check that the existing record of ``job`` is valid and has ``job``'s identity.

        Raises:
            RecordError: the record cannot be read, is not a run record, or
                was made with other settings (one line naming the file, the
                first differing fields and what to do).
        """
        path = job.path(self.results_dir)
        record = read_record(path)
        mspec = self.registry.methods.get(job.method)
        mismatch = identity_mismatch(job, record, self.config(job.method), method_version(mspec))
        if mismatch:
            raise RecordError(f"{path} was made with other settings ({mismatch}); use another --results folder, "
                              f"or delete the record to rerun the job with these settings")

    def tidy(self, job: Job, warn: Callable[[str], None] = _stderr) -> bool:
        """For a finished job: remove what a killed run left (temporary files, checkpoint, lock file).

        Nothing is touched while another process holds the job's lock.  Returns
        False when it does.
        """
        path = job.path(self.results_dir)
        ckpt = path.with_suffix(".ckpt")
        if not (lock_path(path).exists() or ckpt.exists() or temp_files_of(path) or temp_files_of(ckpt)
                or temp_files_of(codes_path(path))):
            return True
        lock = JobLock(lock_path(path))
        if not lock.acquire():
            return False
        try:
            removed = remove_orphans(path, checkpoint_too=path.exists())
        finally:
            lock.release()
        _report_removed(job, removed, "file(s)", warn)
        return True

    def run(self, job: Job, log: Callable[[str], None] = print,
            warn: Callable[[str], None] = _stderr) -> RunRecord | None:
        """Run ``job`` unless its record exists or another process is running it.

        Returns the record (on rank 0), or None when skipped (and on other ranks).
        ``log`` gets progress lines, ``warn`` warnings (damaged checkpoint,
        files of a killed run removed, checkpoint not written).

        Raises:
            RecordError: another process wrote the job's record meanwhile,
                with other settings.
            OSError: the record cannot be written (message names it; no
                partial file is left).
        """
        path = job.path(self.results_dir)
        if distributed.info().enabled:
            return self._run_distributed(job, path, log, warn)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JobLock(lock_path(path))
        if not lock.acquire():
            log(f"skip {job.label}: running in another process{lock.owner_text()}")
            return None
        try:
            if path.exists():  # finished by another process since the grid was listed
                self.check_done(job)
                remove_orphans(path, checkpoint_too=True)
                return None
            self._remove_orphans(job, path, warn)
            record = self._run_locked(job, path, warn)
            assert record is not None
            return self._finish(record, path)
        finally:
            lock.release()

    @staticmethod
    def _finish(record: RunRecord, path: Path) -> RunRecord:
        """Write ``record`` atomically to ``path``, then remove the job's resume checkpoint."""
        try:
            with faults.writing("record"):
                write_record(record, path)
        except BaseException:
            if record.codes:  # its sidecar, written just before, would be an orphan
                codes_path(path).unlink(missing_ok=True)
            raise
        path.with_suffix(".ckpt").unlink(missing_ok=True)
        return record

    def _remove_orphans(self, job: Job, path: Path, warn: Callable[[str], None]) -> None:
        _report_removed(job, remove_orphans(path), "temporary file(s)", warn)

    def _run_distributed(self, job: Job, path: Path, log: Callable[[str], None],
                         warn: Callable[[str], None]) -> RunRecord | None:
        """Rank 0 locks and decides; every rank trains; rank 0 evaluates and writes the record."""
        lock = None
        go = False
        if distributed.info().is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = JobLock(lock_path(path))
            if lock.acquire():
                go = not path.exists()
                if go:
                    self._remove_orphans(job, path, warn)
            else:
                log(f"skip {job.label}: running in another process{lock.owner_text()}")
                lock = None
        try:
            if not distributed.broadcast_object(go):
                return None
            record = self._run_locked(job, path, warn)
            return self._finish(record, path) if record is not None else None
        finally:
            if lock is not None:
                lock.release()

    def build_model(self, job: Job, dataset: RetrievalDataset,
                    train: Split | None = None) -> tuple[Any, MethodSpec, Any]:
        mspec = self.registry.methods.get(job.method)
        config = self.config(job.method)
        train = dataset.split("train") if train is None else train
        ctx = BuildContext.from_protocol(job.protocol, job.bits, np.asarray(train.labels), dataset.num_classes, config,
                                         job.dataset, job.seed,
                                         self.registry.datasets.get(job.dataset).weights_providers)
        seed_everything(job.seed, self.options.deterministic)
        model = mspec.build(ctx)
        model.bits = job.bits
        return model, mspec, config

    def _run_locked(self, job: Job, path: Path, warn: Callable[[str], None] = _stderr) -> RunRecord | None:
        """Train, encode, evaluate, profile: the record (None on ranks other than 0)."""
        runtime = resolve_runtime(self.options)
        dataset = self.job_dataset(job)  # an unseen-class split: the seen classes, relabelled 0..S-1
        scored = evaluation_dataset(dataset)  # an unseen-class split: test = its query, train = its database
        train_split, train_source = input_split(dataset, "train", job.protocol, train=True)
        query, query_source = input_split(scored, "test", job.protocol, train=False)
        database, database_source = input_split(scored, "train", job.protocol, train=False)
        val = None
        if job.protocol.selection == "val":  # the same images leave training and the database (valsplit)
            train_split, _ = carve_validation(train_split, job.protocol.val_fraction, job.dataset, job.seed)
            database, val = carve_validation(database, job.protocol.val_fraction, job.dataset, job.seed)
        model, mspec, config = self.build_model(job, dataset, train_split)
        version = method_version(mspec)
        weights = _weights_source(model)
        meta = job_identity(job, config, version)
        if runtime.is_main:
            compile_ahead()  # the evaluation kernels compile while the model trains (docs/performance.md)
        lo = loader_options_for(runtime, self.options)
        traced = {"val_map": val} if val is not None else {}
        if self.trace_test_map:
            traced["test_map"] = query
            meta = {**meta, "trace_test_map": True}  # checkpoint fingerprint only (module docstring)
        epoch_eval = self._epoch_evaluator(job, runtime, lo, database, traced) if traced else None
        train_result = train_model(model, train_split, job.protocol, runtime, self.options, job.seed,
                                   checkpoint_path=path.with_suffix(".ckpt"), desc=job.label, checkpoint_meta=meta,
                                   warn=warn if runtime.is_main else _quiet, epoch_eval=epoch_eval,
                                   select_on="val_map" if val is not None else None)
        if not runtime.is_main:
            return None
        t0 = time.perf_counter()
        progress = self.options.progress
        q_codes = encode_split(model, query, job.protocol, runtime, lo, progress=progress, desc="encode query",
                               gpu_augment=self.options.gpu_augment)
        d_codes = encode_split(model, database, job.protocol, runtime, lo, progress=progress, desc="encode database",
                               gpu_augment=self.options.gpu_augment)
        q_labels = torch.as_tensor(query.labels)
        d_labels = torch.as_tensor(database.labels)
        if not q_codes.is_cuda:
            q_codes, d_codes = q_codes.cpu(), d_codes.cpu()
        faults.fault_point("evaluate")
        evaluation = evaluate_codes(q_codes, d_codes, q_labels, d_labels)
        metrics = {m.name: float(m.compute(evaluation)) for m in self.registry.metrics.values()}
        eval_seconds = time.perf_counter() - t0
        cost = self._cost(job, model)
        # the codes sidecar first, then (in _finish) the record that references it by checksum
        codes = write_codes(path, q_codes, d_codes, q_labels, d_labels)
        return RunRecord(
            method=job.method,
            dataset=job.dataset,
            bits=job.bits,
            seed=job.seed,
            protocol=job.protocol.to_dict(),
            metrics=metrics,
            cost=cost,
            train_seconds=round(train_result.seconds, 3),
            eval_seconds=round(eval_seconds, 3),
            environment={**environment(), **runtime.describe()},
            method_config=dataclasses.asdict(config),
            method_source=mspec.source,
            backbone_weights=weights,
            model_selection=_selection_text(job.protocol, val, train_result.best_epoch),
            selected_epoch=train_result.best_epoch,
            val_map_trace=_rounded(train_result.traces.get("val_map")),
            num_val=len(val) if val is not None else None,
            test_map_trace=_rounded(train_result.traces.get("test_map")),
            training={
                "optimizer_steps": train_result.steps,
                "epoch_losses": train_result.epoch_losses,
                "logs": train_result.logs,
                "images_per_second": round(train_result.images_per_second, 2),
                "resumed_from_epoch": train_result.resumed_from_epoch,
                "world_size": train_result.world_size,
                "loader_workers": train_result.loader_workers,
                "extra": model.extra_state_for_record(),
            },
            engine={**self.options.to_dict(), "world_size": runtime.world_size},
            queries_without_relevant=evaluation.queries_without_relevant,
            num_query=len(query),
            num_database=len(database),
            class_split=class_split_field(dataset),
            distinct_database_codes=distinct_codes(d_codes),
            per_query_ap=[round(float(v), 6) for v in evaluation.average_precision],
            pr_curve=pr_curve_field(evaluation),
            retrieval_examples=retrieval_examples_field(q_codes, d_codes, q_labels, d_labels),
            method_version=version,
            divergence=divergence_reason(train_result.epoch_losses),
            input_source={"train": train_source, "query": query_source, "database": database_source},
            codes=codes,
        )

    def _epoch_evaluator(self, job: Job, runtime: Any, lo: Any, database: Split,
                         queries: dict[str, Split]) -> Callable[[Any], dict[str, float]]:
        """After each epoch: the mAP of each of ``queries`` against ``database`` (encoded once per epoch).

        Every rank computes it (the same numbers), so ranks stay in step.
        """
        d_labels = torch.as_tensor(database.labels)

        def evaluate(model: Any) -> dict[str, float]:
            d_codes = encode_split(model, database, job.protocol, runtime, lo, gpu_augment=self.options.gpu_augment)
            out = {}
            for name, split in queries.items():
                q_codes = encode_split(model, split, job.protocol, runtime, lo, gpu_augment=self.options.gpu_augment)
                q, d = (q_codes, d_codes) if q_codes.is_cuda else (q_codes.cpu(), d_codes.cpu())
                out[name] = evaluate_codes(q, d, torch.as_tensor(split.labels), d_labels).mean_average_precision
            return out

        return evaluate

    def _cost(self, job: Job, model: Any) -> dict[str, Any]:
        key = (job.method, job.bits, job.protocol.backbone, job.protocol.input_size, job.dataset)
        if key not in self._costs:
            cpu_model = model.to("cpu").to(memory_format=torch.contiguous_format)
            at_224 = encode_cost(cpu_model, COST_INPUT_SIZE)
            at_input = encode_cost(cpu_model, job.protocol.input_size) if job.protocol.input_size != COST_INPUT_SIZE else at_224
            self._costs[key] = {
                "params_m": round(at_224.params_m, 4),
                "flops_g": round(at_224.flops_g, 4),
                "input_size": COST_INPUT_SIZE,
                "flops_g_at_protocol_input": round(at_input.flops_g, 4),
                "protocol_input_size": job.protocol.input_size,
                "convention": "multiply-accumulates reported as FLOPs (papers' convention), encode path, 1 image",
            }
        return self._costs[key]


def _rounded(trace: list[float] | None) -> list[float] | None:
    return [round(float(v), 6) for v in trace] if trace is not None else None


def _selection_text(protocol: Protocol, val: Split | None, best_epoch: int | None) -> str:
    if val is None or best_epoch is None:
        return "final epoch (no checkpoint chosen on test data)"
    return (f"epoch {best_epoch + 1} of {protocol.epochs}: best mAP of {len(val)} validation queries (a stratified "
            f"{protocol.val_fraction:g} of the training split, left out of training and of the database) against "
            f"the remaining training images; never chosen on test data")


def distinct_codes(codes: torch.Tensor) -> int:
    """Number of distinct binary codes (``> 0`` is bit 1, as in the evaluation) among the rows of ``codes``."""
    return int(torch.unique(codes > 0, dim=0).shape[0]) if len(codes) else 0


def collapse_warning(record: RunRecord, num_classes: int) -> str | None:
    """A one-line warning when ``record``'s database codes are fewer than the classes, else None."""
    distinct = record.distinct_database_codes
    if distinct is None or distinct >= num_classes:
        return None
    return (f"warning: {record.method} gave only {distinct} distinct code(s) for {record.num_database} database "
            f"images of {num_classes} classes: training collapsed; see the epoch losses in the record")


def _weights_source(model: torch.nn.Module) -> str:
    sources = sorted({m.weights_source for m in model.modules() if isinstance(m, Backbone)})
    return "; ".join(sources) if sources else "n/a (no fgbench backbone)"


def _report_removed(job: Job, removed: list[Path], what: str, warn: Callable[[str], None]) -> None:
    """One warning naming the files (``what``) a killed run of ``job`` left and that were removed (none: nothing)."""
    if removed:
        warn(f"{job.label}: removed {len(removed)} {what} left by an interrupted run "
             f"({', '.join(p.name for p in removed)})")


def _quiet(_message: str) -> None:
    """Warnings of ranks other than 0."""


def divergence_warning(label: str, record: RunRecord) -> str | None:
    """A one-line warning when ``record`` is flagged as diverged, else None."""
    if not record.divergence:
        return None
    return (f"warning: {label} diverged: {record.divergence}; the record is flagged as diverged "
            f"(lower the learning rate or the method options changed with --set)")


# ---------------------------------------------------------------------------------------------- identity

@functools.lru_cache(maxsize=None)
def _version_of(source: str, module: str) -> str:
    if source == "fgbench (built-in)" or module.split(".")[0] == "fgbench":
        return f"fgbench {__version__}"
    if re.fullmatch(r"\S+ \S+", source or ""):
        return source  # "<distribution> <version>", as the plugin host records entry-point plugins
    top = module.split(".")[0]
    try:
        if top in (owners := entry_point_packages()):
            return owners[top]
        names = metadata.packages_distributions().get(top) or []
        if names:
            dist = metadata.distribution(names[0])
            return f"{dist.metadata['Name']} {dist.version}"
    except Exception:  # noqa: BLE001 - broken metadata: fall back to the name
        pass
    return source or top


def method_version(spec: MethodSpec) -> str:
    """The distribution and version of the plugin that provides ``spec`` (e.g. ``fgbench-dpsh 0.1.0``)."""
    module = getattr(spec.build, "__module__", None) or getattr(spec.config_cls, "__module__", "") or ""
    return _version_of(spec.source or "", module)


def _plain(value: Any) -> Any:
    """``value`` as it reads back from a record's JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def job_identity(job: Job, config: Any, version: str) -> dict[str, Any]:
    """What makes a job's result: its coordinates, resolved protocol (less the grid lists), method config, plugin.

    Hashed into the job's checkpoints (a checkpoint of another identity is
    discarded) and compared with an existing record by :func:`identity_mismatch`.
    """
    protocol = {k: v for k, v in job.protocol.to_dict().items() if k not in GRID_FIELDS}
    return _plain({"method": job.method, "dataset": job.dataset, "bits": job.bits, "seed": job.seed,
                   "protocol": protocol, "method_config": dataclasses.asdict(config), "method_version": version})


def identity_mismatch(job: Job, record: RunRecord, config: Any, version: str, limit: int = 3) -> str | None:
    """The fields in which ``record`` differs from ``job`` run now, or None when it is the same job.

    ``config`` is the method's config dataclass for this run, ``version`` its
    :func:`method_version`.  Returns e.g. ``"dpsh.eta: record 10.0, now 5.0"``
    (at most ``limit`` fields, then ``"and N more"``).  A protocol or config
    field that the record lacks (written before the field existed) matches
    when the value now is the field's default.  The plugin version is compared
    with the record's ``method_version``, or for records written before that
    field existed with their ``method_source`` when it has the
    ``<distribution> <version>`` form.
    """
    now = job_identity(job, config, version)
    diffs: list[str] = []

    def differ(name: str, old: Any, new: Any) -> None:
        diffs.append(f"{name}: record {_show(old)}, now {_show(new)}")

    for key in ("method", "dataset", "bits", "seed"):
        if getattr(record, key) != now[key]:
            differ(key, getattr(record, key), now[key])
    recorded_protocol = upgrade_protocol_dict(record.protocol) if isinstance(record.protocol, dict) else {}
    defaults = _defaults(type(job.protocol))
    for key, value in now["protocol"].items():
        if key in recorded_protocol:
            if _plain(recorded_protocol[key]) != value:
                differ(key, recorded_protocol[key], value)
        elif key in defaults and _plain(defaults[key]) != value:
            differ(key, "(absent)", value)
    recorded_config = record.method_config if isinstance(record.method_config, dict) else {}
    config_defaults = _defaults(type(config))
    for key, value in now["method_config"].items():
        if key in recorded_config:
            if _plain(recorded_config[key]) != value:
                differ(f"{job.method}.{key}", recorded_config[key], value)
        elif key in config_defaults and _plain(config_defaults[key]) != value:
            differ(f"{job.method}.{key}", "(absent)", value)
    if "split" not in now["protocol"] and recorded_protocol.get("split", "standard") != "standard":
        differ("split", recorded_protocol["split"], "standard")  # a standard protocol's dict leaves split out
    recorded_version = record.method_version
    if not recorded_version and re.fullmatch(r"\S+ \S+", record.method_source or ""):
        recorded_version = record.method_source  # "<distribution> <version>" of an entry-point plugin
    if recorded_version and recorded_version != version:
        differ("plugin", recorded_version, version)
    if not diffs:
        return None
    more = len(diffs) - limit
    return "; ".join(diffs[:limit]) + (f"; and {more} more" if more > 0 else "")


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------------------------- locks, orphans

def lock_path(record: Path) -> Path:
    """The lock file of the job whose record is ``record``."""
    return Path(str(record) + ".lock")


class JobLock:
    """An exclusive, non-blocking lock on a job: ``flock`` on ``<record>.lock``, holding the owner's PID and host.

    The kernel drops an ``flock`` when its process dies, so the lock of a
    killed run never blocks the next one.  :meth:`release` deletes the file
    while still holding it, and :meth:`acquire` checks that the file it
    locked is still the one at the path (else retries), so deleting the file
    cannot let two processes hold the lock at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._fallback: Any = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        if fcntl is None:  # pragma: no cover - not POSIX: filelock, without the owner's PID
            from filelock import FileLock, Timeout

            self._fallback = FileLock(str(self.path))
            try:
                self._fallback.acquire(timeout=0)
            except Timeout:
                return False
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its owner deleted it on release, between our open and our lock: take the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd = fd
            return True

    def release(self) -> None:
        """Delete the lock file and drop the lock."""
        if self._fallback is not None:  # pragma: no cover - not POSIX
            self._fallback.release()
            self.path.unlink(missing_ok=True)
            self._fallback = None
            return
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def owner_text(self) -> str:
        """`` (pid N on HOST)`` from the lock file, or empty."""
        try:
            pid, host = self.path.read_text().split()[:2]
            return f" (pid {int(pid)} on {host})"
        except (OSError, ValueError):
            return ""


def remove_orphans(record: Path, checkpoint_too: bool = False) -> list[Path]:
    """Delete the temporary files of ``record``, of its codes sidecar and of its checkpoint (and the checkpoint
    itself when ``checkpoint_too``), and a sidecar without its record (a run killed between writing the two);
    the caller holds the job's lock, so no live process writes them.  Returns what was deleted."""
    ckpt = record.with_suffix(".ckpt")
    sidecar = codes_path(record)
    doomed = temp_files_of(record) + temp_files_of(ckpt) + temp_files_of(sidecar)
    if sidecar.exists() and not record.exists():
        doomed.append(sidecar)
    if checkpoint_too and ckpt.exists():
        doomed.append(ckpt)
    removed = []
    for path in doomed:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


# ---------------------------------------------------------------------------------------------- failures

#: Top-level modules of the harness and its dependencies; an exception raised only through these is not the method's.
_HARNESS_MODULES = {"fgbench", "torch", "torchvision", "numpy", "scipy", "numba", "pandas", "click", "tqdm",
                    "pluggy", "filelock", "PIL", "_pytest", "pytest"}


def _raised_in_plugin(exc: BaseException) -> bool:
    """Whether any frame of ``exc``'s traceback runs code outside fgbench, its dependencies and the stdlib."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if top and top not in _HARNESS_MODULES and top not in stdlib and top != "__main__":
            return True
    return False


def is_disk_error(exc: BaseException) -> bool:
    """A full disk, quota or read-only file system: every later job would fail the same way."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def stops_the_grid(exc: BaseException) -> bool:
    """Whether ``exc`` ends the whole grid rather than one job: a full disk, or an option, protocol or plugin
    registry error of the harness (the user's to fix; every later job would fail the same way)."""
    if is_disk_error(exc):
        return True
    return isinstance(exc, (EngineError, ProtocolError, PluginError)) and not _raised_in_plugin(exc)


def failure_message(job: Job, exc: BaseException, method_overrides: dict[str, Any] | None = None) -> str:
    """One line saying why ``job`` failed and, where it can, what probably caused it."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, NonFiniteLossError):
        parts = ", ".join(f"{k} {v:.4g}" for k, v in sorted(exc.losses.items()))
        changed = (method_overrides or {}).get(job.method) or {}
        cause = f"the learning rate (--lr, now {job.protocol.lr:g}); lower it"
        if changed:
            sets = " ".join(f"--set {job.method}.{k}={v}" for k, v in changed.items())
            cause = f"{sets} (or the learning rate: --lr, now {job.protocol.lr:g})"
        return f"non-finite loss at epoch {exc.epoch} ({parts}); likely cause: {cause}"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in text.lower()):
        return (f"out of memory ({text[:160] or type(exc).__name__}); lower --batch-size (now "
                f"{job.protocol.batch_size}) or --set eval_batch_size=N (now {job.protocol.eval_batch_size})")
    if isinstance(exc, OSError) or (type(exc).__module__.split(".")[0] == "fgbench" and text):
        return text  # the harness's own errors name what is wrong
    if _raised_in_plugin(exc):
        return f"method {job.method!r} raised {type(exc).__name__}: {text}" if text else \
            f"method {job.method!r} raised {type(exc).__name__}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
