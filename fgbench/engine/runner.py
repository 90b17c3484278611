"""Expanding the job grid and running one job end to end.

A job is (method, dataset, bits, seed) under one protocol.  Its record lives
at ``<results>/<protocol>/<dataset>/<method>/bits<B>-seed<S>.json``; a job
whose record exists is skipped (resume), an interrupted job resumes from its
last epoch checkpoint, and a lock file keeps two processes from running the
same job at once.

Under torchrun (one job on several GPUs, :mod:`fgbench.engine.distributed`)
every rank calls :meth:`JobRunner.run` for the same jobs in the same order;
rank 0 alone takes the lock, decides whether the job runs (and tells the
other ranks), evaluates and writes the record.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from filelock import FileLock, Timeout

import fgbench
from fgbench.backbones import BackboneFactory
from fgbench.data.base import RetrievalDataset
from fgbench.engine import distributed
from fgbench.engine.device import EngineOptions, resolve_runtime, seed_everything
from fgbench.engine.train import encode_split, loader_options_for, train_model
from fgbench.methods import BuildContext, MethodSpec
from fgbench.metrics.cost import encode_cost
from fgbench.metrics.retrieval import evaluate_codes
from fgbench.plugins import Registry
from fgbench.protocol import Protocol, resolve_protocol
from fgbench.metrics.summaries import pr_curve_field, retrieval_examples_field
from fgbench.records import RunRecord, record_path, write_record

COST_INPUT_SIZE = 224


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
        return record_path(results_dir, self.protocol.name, self.dataset, self.method, self.bits, self.seed)


def expand_jobs(
    registry: Registry,
    methods: Sequence[str],
    datasets: Sequence[str],
    protocol_name: str,
    bits: Sequence[int] | None,
    seeds: Sequence[int] | None,
    protocol_overrides: dict[str, Any] | None = None,
) -> list[Job]:
    """The grid method x dataset x bits x seed, with each job's resolved protocol.

    The protocol is resolved per dataset (and per method for ``paper``); under
    ``fair`` every method of a dataset gets the identical object.
    """
    overrides = dict(protocol_overrides or {})
    if bits:
        overrides["bits"] = tuple(bits)
    if seeds is not None and len(seeds):
        overrides["seeds"] = tuple(seeds)
    jobs = []
    for dname in datasets:
        dspec = registry.datasets.get(dname)
        for mname in methods:
            mspec = registry.methods.get(mname)
            proto = resolve_protocol(protocol_name, dspec.fair_overrides, mspec.paper_recipe, dname, overrides)
            for b in proto.bits:
                for s in proto.seeds:
                    jobs.append(Job(mname, dname, int(b), int(s), proto))
    return jobs


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """Deterministic slice ``index`` of ``count`` (round robin over the sorted grid)."""
    ordered = sorted(jobs, key=lambda j: (j.dataset, j.method, j.bits, j.seed))
    return ordered[index::count]


def code_version() -> str:
    """fgbench version plus the git commit of the source tree when available."""
    version = fgbench.__version__
    try:
        root = Path(fgbench.__file__).resolve().parent.parent
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
                 method_overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.registry = registry
        self.data_root = Path(data_root)
        self.results_dir = Path(results_dir)
        self.options = options
        self.method_overrides = method_overrides or {}
        self._datasets: dict[str, RetrievalDataset] = {}
        self._costs: dict[tuple, dict[str, Any]] = {}

    def dataset(self, name: str) -> RetrievalDataset:
        if name not in self._datasets:
            self._datasets[name] = self.registry.datasets.get(name).load(self.data_root)
        return self._datasets[name]

    def status(self, job: Job) -> str:
        """``done`` (record exists), ``busy`` (another process holds the lock) or ``todo``."""
        path = job.path(self.results_dir)
        if path.exists():
            return "done"
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return "busy"
        lock.release()
        return "todo"

    def run(self, job: Job, log: Callable[[str], None] = print) -> RunRecord | None:
        """Run ``job`` unless its record exists or another process is running it.

        Returns the record (on rank 0), or None when skipped (and on other ranks).
        """
        path = job.path(self.results_dir)
        if distributed.info().enabled:
            return self._run_distributed(job, path, log)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"skip {job.label}: running in another process")
            return None
        try:
            if path.exists():
                return None
            record = self._run_locked(job, path)
            write_record(record, path)
            ckpt = path.with_suffix(".ckpt")
            if ckpt.exists():
                ckpt.unlink()
            return record
        finally:
            lock.release()
            Path(str(path) + ".lock").unlink(missing_ok=True)

    def _run_distributed(self, job: Job, path: Path, log: Callable[[str], None]) -> RunRecord | None:
        """Rank 0 locks and decides; every rank trains; rank 0 evaluates and writes the record."""
        lock = None
        go = False
        if distributed.info().is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + ".lock")
            try:
                lock.acquire(timeout=0)
                go = not path.exists()
            except Timeout:
                log(f"skip {job.label}: running in another process")
                lock = None
        try:
            if not distributed.broadcast_object(go):
                return None
            record = self._run_locked(job, path)
            if record is not None:
                write_record(record, path)
                path.with_suffix(".ckpt").unlink(missing_ok=True)
            return record
        finally:
            if lock is not None:
                lock.release()
                Path(str(path) + ".lock").unlink(missing_ok=True)

    def build_model(self, job: Job, dataset: RetrievalDataset) -> tuple[Any, MethodSpec, Any]:
        mspec = self.registry.methods.get(job.method)
        config = mspec.make_config(self.method_overrides.get(job.method))
        train = dataset.split("train")
        ctx = BuildContext(
            bits=job.bits,
            num_classes=dataset.num_classes,
            num_train=len(train),
            train_labels=np.asarray(train.labels),
            protocol=job.protocol,
            config=config,
            dataset=job.dataset,
            seed=job.seed,
            backbone_factory=BackboneFactory(job.protocol.backbone, job.protocol.weights),
        )
        seed_everything(job.seed, self.options.deterministic)
        model = mspec.build(ctx)
        model.bits = job.bits
        return model, mspec, config

    def _run_locked(self, job: Job, path: Path) -> RunRecord | None:
        """Train, encode, evaluate, profile: the record (None on ranks other than 0)."""
        runtime = resolve_runtime(self.options)
        dataset = self.dataset(job.dataset)
        model, mspec, config = self.build_model(job, dataset)
        weights = _weights_source(model)
        meta = {"job": job.label, "protocol": job.protocol.to_dict(), "method_config": dataclasses.asdict(config)}
        train_result = train_model(model, dataset.split("train"), job.protocol, runtime, self.options, job.seed,
                                   checkpoint_path=path.with_suffix(".ckpt"), desc=job.label, checkpoint_meta=meta)
        if not runtime.is_main:
            return None
        t0 = time.perf_counter()
        query = dataset.split("test")
        database = dataset.split("train")
        progress = self.options.progress
        lo = loader_options_for(runtime, self.options)
        q_codes = encode_split(model, query, job.protocol, runtime, lo, progress=progress, desc="encode query",
                               gpu_augment=self.options.gpu_augment)
        d_codes = encode_split(model, database, job.protocol, runtime, lo, progress=progress, desc="encode database",
                               gpu_augment=self.options.gpu_augment)
        q_labels = torch.as_tensor(query.labels)
        d_labels = torch.as_tensor(database.labels)
        if not q_codes.is_cuda:
            q_codes, d_codes = q_codes.cpu(), d_codes.cpu()
        evaluation = evaluate_codes(q_codes, d_codes, q_labels, d_labels)
        metrics = {m.name: float(m.compute(evaluation)) for m in self.registry.metrics.values()}
        eval_seconds = time.perf_counter() - t0
        cost = self._cost(job, model)
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
            model_selection="final epoch (no checkpoint chosen on test data)",
            training={
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
            distinct_database_codes=distinct_codes(d_codes),
            per_query_ap=[round(float(v), 6) for v in evaluation.average_precision],
            pr_curve=pr_curve_field(evaluation),
            retrieval_examples=retrieval_examples_field(q_codes, d_codes, q_labels, d_labels),
        )

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
    sources = sorted({m.weights_source for m in model.modules() if isinstance(m, fgbench.Backbone)})
    return "; ".join(sources) if sources else "n/a (no fgbench backbone)"


def pending(jobs: Iterable[Job], runner: JobRunner) -> list[Job]:
    return [j for j in jobs if runner.status(j) == "todo"]
