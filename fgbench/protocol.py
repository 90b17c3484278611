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
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from fgbench.methods import STANDARD_BITS, coerce_value

PROTOCOL_NAMES = ("fair", "paper")
MIN_BITS, MAX_BITS = 4, 256


class ProtocolError(ValueError):
    """An invalid protocol setting (message names the option)."""


@dataclass(frozen=True)
class Protocol:
    """Everything that is held identical across methods in a comparison.

    Learning rates apply to the new (method) layers; the backbone is trained
    with ``lr * backbone_lr_mult``.  ``schedule`` is ``"cosine"``, ``"step"``
    (divide by 10 at each of ``milestones``) or ``"constant"``.  Model
    selection is ``"final"`` (the last epoch's model; default) or ``"val"``
    (best on a validation split carved from the training set, never the test
    split).
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
    selection: Literal["final", "val"] = "final"
    val_fraction: float = 0.1
    eval_batch_size: int = 256

    def validate(self) -> "Protocol":
        if self.name not in PROTOCOL_NAMES:
            raise ProtocolError(f"--protocol {self.name!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
        for b in self.bits:
            if not MIN_BITS <= int(b) <= MAX_BITS:
                raise ProtocolError(f"--bits {b}: bit lengths must be between {MIN_BITS} and {MAX_BITS}")
        if not self.bits:
            raise ProtocolError("--bits: give at least one bit length, e.g. --bits 12,48")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ProtocolError("epochs, batch size and lr must be positive")
        if self.input_size > self.resize_size:
            raise ProtocolError(f"input_size {self.input_size} > resize_size {self.resize_size}")
        if self.selection not in ("final", "val"):
            raise ProtocolError(f"selection {self.selection!r}: use 'final' or 'val'")
        return self

    def replace(self, **changes: Any) -> "Protocol":
        """A copy with fields changed; strings are converted to the field types."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ProtocolError(f"unknown protocol field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        conv = {k: coerce_value(getattr(self, k), v, f"protocol.{k}") for k, v in changes.items()}
        if "bits" in conv:
            conv["bits"] = tuple(int(b) for b in conv["bits"])
        if "seeds" in conv:
            conv["seeds"] = tuple(int(s) for s in conv["seeds"])
        if "milestones" in conv:
            conv["milestones"] = tuple(int(m) for m in conv["milestones"])
        return dataclasses.replace(self, **conv)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Protocol":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)


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
    the user's explicit overrides (CLI options).
    """
    if name not in PROTOCOL_NAMES:
        raise ProtocolError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
    proto = Protocol(name=name).replace(**dict(dataset_overrides or {}))
    if name == "paper" and method_recipe:
        proto = proto.replace(**dict(method_recipe.get("default", {})))
        proto = proto.replace(**dict(method_recipe.get(dataset, {})))
    proto = proto.replace(**dict(user_overrides or {}))
    return proto.validate()
