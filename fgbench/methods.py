"""The method contract: :class:`MethodSpec` and :class:`HashingModel`.

A method plugin registers one :class:`MethodSpec` per method.  The harness
calls ``spec.build(ctx)`` with a :class:`BuildContext` and trains the returned
:class:`HashingModel` with the protocol's optimizer and schedule.  Query and
database codes are always ``sign(model.encode(images))`` — never codes taken
from a learned code matrix or derived from labels (docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from fgbench._names import NAME_PATTERN, validate_name
from fgbench._values import coerce_value, type_hints

if TYPE_CHECKING:  # pragma: no cover
    from fgbench.backbones import Backbone
    from fgbench.protocol import Protocol

# the name rule of fgbench._names (a method name is a folder name of the results); \A..\Z: no trailing newline
METHOD_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")


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
    """Everything a method needs to build its model for one job."""

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
                                                    tuple((weights_providers or {}).items())))


@dataclass(frozen=True)
class TrainContext:
    """What lifecycle hooks receive: the device, the epoch count, the data.

    ``train_labels`` is the full training split's label array; ``encode_train``
    encodes the whole training split with the current model (eval mode,
    no augmentation) and returns real-valued codes on ``device`` — methods
    that refresh a code memory at epoch end use it.
    """

    device: torch.device
    epochs: int
    train_labels: torch.Tensor
    encode_train: Callable[[], torch.Tensor]
    log: Callable[[str, float], None]


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
        """Scalar loss and named components (tensors; logged without host syncs)."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Real-valued codes of shape ``(batch, bits)``; the harness takes sign."""
        raise NotImplementedError

    # --- optional lifecycle hooks -------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first epoch (code memories, proxy codes)."""

    def on_epoch_end(self, epoch: int, ctx: TrainContext) -> None:
        """Called after each epoch (memories of the previous epoch's codes)."""

    def param_groups(self, lr: float) -> list[dict] | None:
        """Optional optimizer parameter groups (e.g. smaller lr for the backbone)."""
        return None

    def extra_state_for_record(self) -> dict[str, Any]:
        """Optional JSON-able values to store in the run record (e.g. learned loss weights)."""
        return {}


@dataclass(frozen=True)
class PaperResult:
    """mAP numbers reported in a paper, kept apart from measured ones.

    ``map`` maps dataset name -> {bits: mAP in [0, 1]}; ``source`` says where
    the numbers were read (paper, table).
    """

    source: str
    map: Mapping[str, Mapping[int, float]]
    params_m: Mapping[str, float] = field(default_factory=dict)
    flops_g: Mapping[str, float] = field(default_factory=dict)


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
        paper_results: paper-reported numbers (shown in separate columns).
        paper_recipe: ``{dataset or "default": {protocol field: value}}`` used
            by ``--protocol paper``.
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
        for res in self.paper_results:
            for ds, per_bits in res.map.items():
                for b, v in per_bits.items():
                    if not 0.0 <= float(v) <= 1.0:
                        raise ValueError(f"method {self.name!r}: paper mAP {ds}/{b} = {v} not in [0, 1]")

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
