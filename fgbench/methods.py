"""The method contract: :class:`MethodSpec` and :class:`HashingModel`.

A method plugin registers one :class:`MethodSpec` per method.  The harness
calls ``spec.build(ctx)`` with a :class:`BuildContext` and trains the returned
:class:`HashingModel` with the protocol's optimizer and schedule.  Query and
database codes are always ``sign(model.encode(images))`` — never codes taken
from a learned code matrix or derived from labels (docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

import numpy as np
import torch
from torch import nn

from fgbench._names import NAME_PATTERN, validate_name
from fgbench._values import coerce_value, type_hints
from fgbench.errors import TrainingError

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.backbones import Backbone
    from fgbench.protocol import Protocol

# the name rule of fgbench._names (a method name is a folder name of the results); \A..\Z: no trailing newline
METHOD_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")
# the key of a paper-reported cost (PaperResult.params_m / flops_g): "<backbone>@<bits>", e.g. "resnet50@12"
COST_KEY_RE = re.compile(r"\A([a-z0-9_]+)@([1-9][0-9]*)\Z")


@dataclass(frozen=True)
class Batch:
    """One training mini-batch as the harness hands it to ``HashingModel.loss``.

    ``indices`` are positions in the training split (0..num_train-1), stable
    across epochs, for methods that keep a memory of the whole training set
    (DPSH, CMBH, ExchNet).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


@dataclass(frozen=True)
class BuildContext:
    """Everything a method needs to build its model for one job.

    Attributes:
        bits: the code length of this job.
        num_classes: classes of the dataset's training split (= database).
        num_train: images in the training split (rows of a ``CodeMemory``).
        train_labels: the training labels, 0-based, a numpy array of ``num_train`` ints.
        protocol: the resolved :class:`fgbench.Protocol` of the job (backbone, input size, optimizer, epochs, ...).
        config: an instance of the method's ``config_cls`` with the user's ``--set`` overrides applied.
        dataset: the dataset's registry name.
        seed: the job's seed (the harness has seeded torch with it before calling ``build``).
        backbone_factory: what :meth:`backbone` calls; use :meth:`backbone`.
    """

    bits: int
    num_classes: int
    num_train: int
    train_labels: np.ndarray
    protocol: "Protocol"
    config: Any
    dataset: str
    seed: int
    backbone_factory: Callable[[], "Backbone"]

    def backbone(self) -> "Backbone":
        """A fresh backbone as fixed by the protocol (architecture, weights)."""
        return self.backbone_factory()

    @classmethod
    def from_protocol(cls, protocol: "Protocol", bits: int, train_labels: np.ndarray, num_classes: int, config: Any,
                      dataset: str, seed: int, weights_providers: Mapping[str, Any] | None = None) -> "BuildContext":
        """The context of one job: the backbone comes from ``protocol`` (architecture, weights), with the
        dataset's ``weights_providers`` for weights it supplies."""
        from fgbench.backbones import BackboneFactory

        labels = np.asarray(train_labels)
        return cls(bits=bits, num_classes=num_classes, num_train=len(labels), train_labels=labels,
                   protocol=protocol, config=config, dataset=dataset, seed=seed,
                   backbone_factory=BackboneFactory(protocol.backbone, protocol.weights,
                                                    tuple((weights_providers or {}).items()),
                                                    protocol.imagenet_weights))


class _NoMapTrain:
    """``TrainContext.map_train`` of a context built without one: calling it raises ``TrainingError``."""

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        raise TrainingError("this TrainContext was built without map_train: pass map_train=... "
                            "(the harness and fgbench.testing.train_context provide one)")

    def __repr__(self) -> str:
        return "none (calling it raises TrainingError)"


@dataclass(frozen=True)
class TrainContext:
    """What lifecycle hooks receive: the device, the epoch count, the data.

    ``train_labels`` is the full training split's label array; ``encode_train``
    encodes the whole training split with the current model (eval mode,
    no augmentation) and returns real-valued codes on ``device`` — methods
    that refresh a code memory at epoch end use it; ``map_train`` runs any
    function of the images over the same pass (e.g. part features for
    class-mean anchors).

    Attributes:
        device: where the model and batches are.
        epochs: the number of epochs the job trains (``protocol.epochs``).
        train_labels: the training labels, a long tensor on ``device``.
        encode_train: ``encode_train() -> (num_train, bits)`` real codes of the
            whole training split in index order (eval mode, no augmentation);
            the model is put back in train mode afterwards by the loop.
        log: ``log(name, value)`` appends a float to the series ``name``,
            stored in the run record at ``training["logs"][name]`` (one list
            per name, in call order).
        map_train: ``map_train(fn) -> tensor``: ``fn(images)`` over the whole
            training split in batches of ``protocol.eval_batch_size`` (model
            in eval mode, no augmentation, ``torch.no_grad``), the outputs
            concatenated along dim 0 in index order, float32 on ``device``;
            the model's train/eval mode is restored afterwards.  Under
            ``--nproc N`` each rank maps ``1/N`` of the split and every rank
            gets all outputs (as ``encode_train``, which is
            ``map_train(model.encode)``).  The default (a context built
            without it) raises :class:`~fgbench.errors.TrainingError`.
    """

    device: torch.device
    epochs: int
    train_labels: torch.Tensor
    encode_train: Callable[[], torch.Tensor]
    log: Callable[[str, float], None]
    map_train: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor] = field(
        default=_NoMapTrain(), compare=False)


class HashingModel(nn.Module):
    """Base class of every method's model.

    Subclasses implement ``forward``, ``loss`` and ``encode``; the lifecycle
    hooks are optional.  ``encode`` is the *inference path*: the harness takes
    ``sign`` of its output for the query and database codes and profiles
    parameters and FLOPs on exactly this path, so it must not run modules
    that inference does not need.
    """

    bits: int

    def forward(self, images: torch.Tensor) -> Any:  # pragma: no cover - abstract
        """Training forward pass; any output structure ``loss`` understands."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:  # pragma: no cover
        """``(scalar loss, {name: scalar tensor})``: the loss to minimise and its named components.

        Runs outside autocast; ``outputs`` may be half precision, so cast to
        float32 first.  Return tensors, not floats (the loop sums them on the
        device, without a host sync per step).  Each epoch's means of the
        loss (``"loss"``) and of every component land in the run record at
        ``training["epoch_losses"]``: a list with one ``{name: mean}`` dict per
        epoch.  A non-finite epoch mean stops the job with a one-line error.
        """
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Real-valued codes of shape ``(batch, bits)``; the harness takes sign."""
        raise NotImplementedError

    # --- optional lifecycle hooks -------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first epoch (code memories, proxy codes)."""

    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        """Called after each epoch; ``epoch`` counts from 0 (the last call gets ``ctx.epochs - 1``).

        Runs after the epoch's optimizer steps and learning-rate step, with the
        model in train mode; typical use: refresh a code memory with
        ``ctx.encode_train()``.  On a resumed run, epochs already done are not
        called again.
        """

    def param_groups(self, lr: float) -> list[dict] | None:
        """Optional optimizer parameter groups (e.g. smaller lr for the backbone).

        ``None`` (the default): the backbone at ``lr * protocol.backbone_lr_mult``,
        every other parameter at ``lr``.
        """
        return None

    def extra_state_for_record(self) -> dict[str, Any]:
        """Optional JSON-able values to store in the run record (e.g. learned loss weights).

        Called once after training; the dict is stored as the record's
        ``training["extra"]`` (``{}`` by default).
        """
        return {}


@dataclass(frozen=True)
class PaperResult:
    """mAP numbers reported in a paper, kept apart from measured ones.

    ``map`` maps dataset name -> {bits: mAP in [0, 1]}; ``source`` says where
    the numbers were read (paper, table).

    Attributes:
        source: where the numbers were read, e.g. ``"Table 2"``.
        map: ``{dataset name: {bits: mAP as a fraction in [0, 1]}}`` (a paper's 62.21 % is 0.6221).
        params_m: ``{"<backbone>@<bits>": params in millions}`` of the paper's encode path, e.g. ``"resnet50@12"``.
        flops_g: ``{"<backbone>@<bits>": G multiply-accumulates}``, keyed like ``params_m``.
        cost_note: why the reported cost differs from what ``fgbench profile`` measures (shown in
            ``docs/costs.md``).
    """

    source: str
    map: Mapping[str, Mapping[int, float]]
    params_m: Mapping[str, float] = field(default_factory=dict)
    flops_g: Mapping[str, float] = field(default_factory=dict)
    cost_note: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A hashing method as registered by a plugin.

    Attributes:
        name: registry name used on the CLI and as a results folder name
            (:func:`fgbench._names.validate_name`: lower case, ``[a-z0-9_-]``, starting with a letter).
        summary: one line shown by ``fgbench list``.
        citation: the paper (authors, title, venue, year).
        config_cls: a dataclass whose defaults are the paper's hyper-parameters.
        build: ``build(ctx) -> HashingModel``.
        paper_results: paper-reported numbers (shown in separate columns):
            ``map`` by registered dataset name; ``params_m`` (millions) and
            ``flops_g`` (G multiply-accumulates, one image) keyed
            ``"<backbone>@<bits>"`` (:data:`COST_KEY_RE`), e.g. ``"resnet50@12"``,
            with a backbone of :data:`fgbench.backbones.BACKBONES`; ``fgbench
            profile`` shows them beside the measured cost of that backbone and
            bit length.  Keys are checked when the plugin registers
            (:meth:`validate`), dataset names once every plugin is loaded
            (:meth:`validate_datasets`): a bad one makes the plugin broken.
        paper_recipe: ``{dataset or "default": {protocol field: value}}`` used
            by ``--protocol paper``; keys are registered dataset names or
            ``"default"``, fields are :class:`~fgbench.protocol.Protocol` fields
            (except ``name``).
        paper_recipe_sources: ``{protocol field: where the value comes from}``
            (a paper section or table, or the authors' code where the paper is
            silent), for the fields of ``paper_recipe`` — the same source for
            the field's value in every entry; shown by ``fgbench recipe`` and
            docs/recipes.md.  Optional (a field without one is shown as
            "not cited").
        source: the distribution that registered it (filled in by the host).
    """

    name: str
    summary: str
    citation: str
    config_cls: type
    build: Callable[[BuildContext], HashingModel]
    paper_results: tuple[PaperResult, ...] = ()
    paper_recipe: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""
    paper_recipe_sources: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable reason when the spec is malformed."""
        validate_name("method", self.name)
        if not dataclasses.is_dataclass(self.config_cls):
            raise ValueError(f"method {self.name!r}: config_cls must be a dataclass")
        if not callable(self.build):
            raise ValueError(f"method {self.name!r}: build must be callable")
        from fgbench.backbones import BACKBONES
        from fgbench.protocol import Protocol

        for i, res in enumerate(self.paper_results):
            if not isinstance(res, PaperResult):
                raise ValueError(f"method {self.name!r}: paper_results[{i}] must be a PaperResult, "
                                 f"got {type(res).__name__}")
            for ds, per_bits in res.map.items():
                for b, v in per_bits.items():
                    if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
                        raise ValueError(f"method {self.name!r}: paper_results[{i}].map[{ds!r}] key {b!r} "
                                         f"must be a bit length (a positive int)")
                    if not 0.0 <= float(v) <= 1.0:
                        raise ValueError(f"method {self.name!r}: paper mAP {ds}/{b} = {v} not in [0, 1]")
            for what in ("params_m", "flops_g"):
                for key, v in getattr(res, what).items():
                    match = COST_KEY_RE.match(key) if isinstance(key, str) else None
                    if match is None or match.group(1) not in BACKBONES:
                        raise ValueError(f"method {self.name!r}: paper_results[{i}].{what} key {key!r} must be "
                                         f"'<backbone>@<bits>', e.g. 'resnet50@12', with a backbone of "
                                         f"{', '.join(sorted(BACKBONES))}")
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v) >= 0:
                        raise ValueError(f"method {self.name!r}: paper_results[{i}].{what}[{key!r}] = {v!r} "
                                         f"must be a number >= 0")
        fields = sorted(f.name for f in dataclasses.fields(Protocol) if f.name != "name")
        for key, recipe in self.paper_recipe.items():
            if not isinstance(key, str) or not isinstance(recipe, Mapping):
                raise ValueError(f"method {self.name!r}: paper_recipe must map a dataset name or 'default' to "
                                 f"{{protocol field: value}}, got {key!r}: {type(recipe).__name__}")
            unknown = sorted(set(recipe) - set(fields))
            if unknown:
                raise ValueError(f"method {self.name!r}: paper_recipe[{key!r}] has {', '.join(map(str, unknown))}, "
                                 f"not a protocol field; valid: {', '.join(fields)}")

    def validate_datasets(self, known: Collection[str]) -> None:
        """Raise ``ValueError`` naming the field and the valid names when metadata names a dataset not in ``known``.

        Checked by the plugin host once every plugin is loaded: the datasets
        of ``paper_results`` maps and the keys of ``paper_recipe`` (besides
        ``"default"``).
        """
        valid = ", ".join(sorted(known))
        for i, res in enumerate(self.paper_results):
            for ds in res.map:
                if ds not in known:
                    raise ValueError(f"method {self.name!r}: paper_results[{i}].map names dataset {ds!r}, "
                                     f"which no plugin registers; valid: {valid}")
        for key in self.paper_recipe:
            if key != "default" and key not in known:
                raise ValueError(f"method {self.name!r}: paper_recipe key {key!r} is not 'default' or a registered "
                                 f"dataset; valid: default, {valid}")

    def recipe_source(self, key: str) -> str:
        """Where the paper recipe's value of protocol field ``key`` comes from, or ``"not cited"``."""
        return str(self.paper_recipe_sources.get(key, "not cited"))

    def make_config(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The config dataclass with the paper defaults, updated by ``overrides``.

        String values (from the CLI) are converted to the field's type (see
        :func:`coerce_value`); an unknown key or a value that does not convert
        raises ``ValueError`` naming ``METHOD.KEY`` and what to pass instead.
        """
        overrides = dict(overrides or {})
        fields = {f.name: f for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for method {self.name!r}; "
                f"valid: {', '.join(sorted(fields)) or '(none)'}"
            )
        default = self.config_cls()
        hints = type_hints(self.config_cls)
        converted = {k: coerce_value(getattr(default, k), v, f"{self.name}.{k}", hints.get(k))
                     for k, v in overrides.items()}
        return dataclasses.replace(default, **converted)

    def paper_map(self, dataset: str, bits: int) -> float | None:
        """The first paper-reported mAP for ``dataset``/``bits``, or None."""
        for res in self.paper_results:
            value = res.map.get(dataset, {}).get(bits)
            if value is not None:
                return float(value)
        return None
