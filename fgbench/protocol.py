"""The shared training and evaluation settings (the *protocol*).

One :class:`Protocol` object is resolved per (protocol name, dataset) and
handed unchanged to every method of a run, so methods differ only in their
own model and loss.  Two protocols exist:

* ``fair`` (default): identical settings for every method.  A dataset may
  scale it (the CPU-sized embedded dataset uses a smaller input and
  backbone) through ``DatasetSpec.fair_overrides``; those overrides are the
  same for every method.
* ``paper``: each method's published recipe (``MethodSpec.paper_recipe``),
  to reproduce its tables.  Not a fair comparison, and labelled as such.

Every run record stores the resolved protocol in full.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from fgbench._values import coerce_value
from fgbench.errors import ProtocolError

#: the bit lengths the fine-grained hashing papers report (the default grid)
STANDARD_BITS = (12, 24, 32, 48)
PROTOCOL_NAMES = ("fair", "paper")
MIN_BITS, MAX_BITS = 4, 256
AUGMENTATIONS = ("crop-flip", "none")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
SELECTIONS = ("final", "val")  # "val" is refused by validate() until it is implemented


@dataclass(frozen=True)
class Protocol:
    """Everything that is held identical across methods in a comparison.

    Learning rates apply to the new (method) layers; the backbone is trained
    with ``lr * backbone_lr_mult``.  ``schedule`` is ``"cosine"``, ``"step"``
    (divide by 10 at each of ``milestones``) or ``"constant"``.  Model
    selection is ``"final"`` (the last epoch's model; the only one
    implemented): ``"val"`` (best on a validation split carved from the
    training set, never the test split) is reserved and refused by
    :meth:`validate` until it is implemented, so that no record claims it.
    """

    name: str = "fair"
    backbone: str = "resnet50"
    weights: str = "imagenet"
    input_size: int = 224
    resize_size: int = 256
    augmentation: Literal["crop-flip", "none"] = "crop-flip"
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    backbone_lr_mult: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()
    warmup_epochs: int = 0
    epochs: int = 30
    batch_size: int = 64
    bits: tuple[int, ...] = STANDARD_BITS
    seeds: tuple[int, ...] = (0,)
    # the class split (issue 16 item 4): "standard", or "unseen:P[:seeded]" (fgbench.data.class_split)
    split: str = "standard"
    selection: Literal["final", "val"] = "final"
    val_fraction: float = 0.1
    eval_batch_size: int = 256

    def validate(self) -> "Protocol":
        """Return ``self`` when every field is usable and truthful, else raise :class:`ProtocolError`.

        A record stores the protocol as the truth about how its model was
        trained, so settings the engine would not honour are refused too:
        ``selection="val"`` (not implemented yet), milestones that the
        schedule does not use.  A milestone at or past ``epochs`` is kept (a
        paper recipe shortened with ``--epochs`` for a smoke run): the record
        holds both numbers, so it says truthfully that the step never came.
        """
        if self.name not in PROTOCOL_NAMES:
            raise ProtocolError(f"--protocol {self.name!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
        if not self.bits:
            raise ProtocolError("--bits: give at least one bit length, e.g. --bits 12,48")
        for b in self.bits:
            if not MIN_BITS <= int(b) <= MAX_BITS:
                raise ProtocolError(f"--bits {b}: bit lengths must be between {MIN_BITS} and {MAX_BITS}")
        _no_repeats("--bits", self.bits)
        if not self.seeds:
            raise ProtocolError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
        for s in self.seeds:
            if not 0 <= int(s) < 2**32:
                raise ProtocolError(f"--seeds {s}: seeds must be between 0 and 2**32-1")
        _no_repeats("--seeds", self.seeds)
        _validate_split(self.split)
        from fgbench.backbones import BACKBONES  # lazy: keeps this module light

        if self.backbone not in BACKBONES:
            raise ProtocolError(f"backbone {self.backbone!r}: choose one of {', '.join(sorted(BACKBONES))}")
        if not self.weights.strip():
            raise ProtocolError("weights '': use imagenet, random, pretext[:SIZE] or a state_dict file "
                                "(--backbone-weights PATH)")
        if self.weights.startswith("pretext") and not is_named_weights(self.weights):
            raise ProtocolError(f"weights {self.weights!r}: use pretext:SIZE with SIZE in pixels, e.g. pretext:48")
        _at_least("epochs", self.epochs, 1, "--epochs")
        _at_least("batch_size", self.batch_size, 1, "--batch-size")
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        _at_least("input_size", self.input_size, 1)
        _at_least("resize_size", self.resize_size, 1)
        if self.input_size > self.resize_size:
            raise ProtocolError(f"input_size {self.input_size} > resize_size {self.resize_size}: the crop must fit "
                                f"in the resized image; also --set resize_size=N with N >= {self.input_size}")
        _choice("augmentation", self.augmentation, AUGMENTATIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ProtocolError(f"--lr {self.lr}: the learning rate must be a finite number > 0")
        _finite_at_least("backbone_lr_mult", self.backbone_lr_mult, 0.0)
        _finite_at_least("weight_decay", self.weight_decay, 0.0)
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ProtocolError(f"momentum {self.momentum}: use a value in [0, 1)")
        if not (math.isfinite(self.val_fraction) and 0.0 < self.val_fraction < 1.0):
            raise ProtocolError(f"val_fraction {self.val_fraction}: use a fraction strictly between 0 and 1")
        _at_least("warmup_epochs", self.warmup_epochs, 0)
        if self.warmup_epochs >= self.epochs:
            raise ProtocolError(f"warmup_epochs {self.warmup_epochs} >= epochs {self.epochs}: the warm-up must "
                                f"end before training does")
        self._validate_milestones()
        if self.selection not in SELECTIONS:
            raise ProtocolError(f"selection {self.selection!r}: use 'final'")
        if self.selection == "val":
            raise ProtocolError("selection 'val' is not implemented yet (the model would still be the final "
                                "epoch's); leave it at the default, final")
        return self

    def _validate_milestones(self) -> None:
        ms = [int(m) for m in self.milestones]
        if not ms:
            return
        shown = ",".join(str(m) for m in ms)
        if self.schedule != "step":
            raise ProtocolError(f"milestones {shown}: only schedule=step uses milestones (schedule is "
                                f"{self.schedule}); --set milestones= to clear them")
        if ms != sorted(set(ms)) or ms[0] < 1:
            raise ProtocolError(f"milestones {shown}: use increasing epochs >= 1, e.g. --set milestones=20,40")

    def replace(self, **changes: Any) -> "Protocol":
        """A copy with fields changed; strings are converted to the field types."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ProtocolError(f"unknown protocol field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        hints = _field_hints()
        try:
            conv = {k: coerce_value(getattr(self, k), v, f"protocol.{k}", hints.get(k)) for k, v in changes.items()}
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        for key in ("bits", "seeds", "milestones"):
            if key in conv:
                try:
                    conv[key] = tuple(int(v) for v in conv[key])
                except (TypeError, ValueError):
                    raise ProtocolError(f"option {key}: cannot read {conv[key]!r} as integers") from None
        return dataclasses.replace(self, **conv)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        _drop_standard_split(d)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Protocol":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)


def is_named_weights(weights: str) -> bool:
    """True for the weights sources that are not a file: ``imagenet``, ``random``, ``pretext`` or ``pretext:SIZE``."""
    return weights in ("imagenet", "random") or re.fullmatch(r"pretext(:[1-9][0-9]*)?", weights) is not None


def _field_hints() -> dict[str, Any]:
    try:
        return typing.get_type_hints(Protocol)
    except Exception:  # noqa: BLE001 - the defaults still decide the types
        return {}


def _at_least(field: str, value: int, least: int, option: str | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        how = f"{option} N" if option else f"--set {field}=N"
        raise ProtocolError(f"{field} {value!r}: use an integer >= {least} ({how})")


def _finite_at_least(field: str, value: float, least: float) -> None:
    if not (math.isfinite(value) and value >= least):
        raise ProtocolError(f"{field} {value}: use a finite number >= {least:g}")


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ProtocolError(f"{field} {value!r}: choose one of {', '.join(allowed)}")


def _no_repeats(option: str, values: tuple[int, ...]) -> None:
    seen: set[int] = set()
    for v in values:
        if int(v) in seen:
            raise ProtocolError(f"{option} {','.join(str(x) for x in values)}: {v} is given twice")
        seen.add(int(v))


# ---------------------------------------------------------------------------------------------- class split
# The ``split`` field (issue 16 item 4): which classes a job trains on and retrieves among.  The split itself
# (which classes, which images) is fgbench.data.class_split; here only its names.

STANDARD_SPLIT = "standard"
UNSEEN_PERCENTS = (5, 15, 25)
SPLIT_NAMES = (STANDARD_SPLIT, *(f"unseen:{p}" for p in UNSEEN_PERCENTS),
               *(f"unseen:{p}:seeded" for p in UNSEEN_PERCENTS))


def split_parts(name: str) -> tuple[int, bool]:
    """(percent of unseen classes, drawn from the seed?) of an ``unseen:P[:seeded]`` split name."""
    _validate_split(name)
    if name == STANDARD_SPLIT:
        raise ProtocolError("split 'standard' has no unseen classes")
    parts = name.split(":")
    return int(parts[1]), len(parts) == 3


def _validate_split(name: str) -> None:
    if name not in SPLIT_NAMES:
        raise ProtocolError(f"--split {name!r}: choose one of {', '.join(SPLIT_NAMES)} (unseen:P trains on the "
                            f"first classes and retrieves among the last P%; :seeded draws them from the seed)")


def _drop_standard_split(d: dict[str, Any]) -> None:
    """Leave ``split`` out of a standard protocol's dict, so standard records stay what they were."""
    if d.get("split") == STANDARD_SPLIT:
        del d["split"]


def resolve_protocol(
    name: str,
    dataset_overrides: Mapping[str, Any] | None = None,
    method_recipe: Mapping[str, Mapping[str, Any]] | None = None,
    dataset: str = "",
    user_overrides: Mapping[str, Any] | None = None,
) -> Protocol:
    """The protocol for one dataset (and, for ``paper``, one method).

    Order: defaults, then the dataset's scale overrides, then (``paper`` only)
    the method's recipe (``"default"`` entry, then the dataset's entry), then
    the user's explicit overrides (CLI options), which may not change the
    protocol's ``name`` (it files the record; only ``--protocol`` sets it).
    The result is validated (:meth:`Protocol.validate`).
    """
    if name not in PROTOCOL_NAMES:
        raise ProtocolError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
    if "name" in (user_overrides or {}):
        raise ProtocolError(f"--set name={user_overrides['name']}: the protocol name is chosen with --protocol "
                            f"({' or '.join(PROTOCOL_NAMES)}), not --set")
    proto = Protocol(name=name).replace(**dict(dataset_overrides or {}))
    if name == "paper" and method_recipe:
        proto = proto.replace(**dict(method_recipe.get("default", {})))
        proto = proto.replace(**dict(method_recipe.get(dataset, {})))
    proto = proto.replace(**dict(user_overrides or {}))
    return proto.validate()
