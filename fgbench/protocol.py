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
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
RESIZE_SHAPES = ("short-side", "square")
TRAIN_CROPS = ("random", "random-resized", "center")
IMAGENET_WEIGHTS = ("imagenet1k_v1", "imagenet1k_v2")
SELECTIONS = ("final", "val")


@dataclass(frozen=True)
class Protocol:
    """Everything that is held identical across methods in a comparison.

    Learning rates apply to the new (method) layers; the backbone is trained
    with ``lr * backbone_lr_mult``.  ``schedule`` is ``"cosine"``, ``"step"``
    (divide by 10 at each of ``milestones``) or ``"constant"``.  Model
    selection is ``"final"`` (the last epoch's model) or ``"val"``: a
    validation split of ``val_fraction`` of the training images, stratified
    by class and fixed by (dataset, seed) (:mod:`fgbench.data.valsplit`), is
    left out of training and of the database; after each epoch its images
    are queries against the remaining training images, and the epoch with
    the best validation mAP is the model evaluated on the test split.

    ADSH-style sampling (Jiang & Li, AAAI 2018, Alg. 1): ``epoch_sample > 0``
    makes an epoch one pass over a random subset of ``epoch_sample`` training
    images, drawn afresh every ``resample_every`` epochs (one "outer
    iteration") from the job's seed; ``0`` is the whole training split.

    Attributes:
        name: ``"fair"`` or ``"paper"``: which protocol this is; it names the
            board (``paper`` records go to ``<dataset>-paper``), it is not a setting.
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, or ``resnet10`` (no ImageNet
            weights; the embedded dataset's CPU-scale backbone).
        weights: the backbone's initial weights: ``imagenet`` (torchvision's
            checkpoint), ``random`` (random initialisation, on purpose: no
            pretrained weights at all), ``pretext:SIZE`` (the embedded dataset's
            synthetic pretext backbone) or a state_dict file.
        input_size: the square crop the network sees, in px.
        resize_size: the short side images are resized to before cropping.
        resize_shape: ``short-side`` (resize the short side to ``resize_size``) or ``square``.
        train_crop: ``random`` crop, ``random-resized`` crop (``crop_scale``, ``crop_ratio``) or ``center``.
        crop_scale: area range of the random-resized crop.
        crop_ratio: aspect-ratio range of the random-resized crop.
        flip_p: probability of a horizontal flip in training.
        rotation: random rotation range in degrees (0: none).
        color_jitter: brightness, contrast, saturation, hue strengths (0: none).
        imagenet_weights: which torchvision ImageNet checkpoint ``weights=imagenet`` loads.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate of the method's own layers.
        backbone_lr_mult: the backbone trains at ``lr * backbone_lr_mult``.
        momentum: SGD momentum.
        weight_decay: weight decay of every parameter group.
        schedule: ``cosine``, ``step`` (divide by 10 at each of ``milestones``) or ``constant``.
        milestones: epochs of the ``step`` schedule.
        warmup_epochs: epochs of linear learning-rate warm-up.
        epochs: training epochs.
        batch_size: training mini-batch size (per job, split over processes with ``--nproc``).
        bits: the code lengths of the grid (one job per length).
        seeds: the seeds of the grid (one job per seed).
        selection: model selection: ``final`` (the last epoch's model) or ``val`` (above).
        val_fraction: the share of each class's training images the ``selection="val"``
            validation split takes.
        epoch_sample: training images per epoch under ADSH-style sampling (0: all; above).
        resample_every: epochs per outer iteration (a fresh subset each; above).
        eval_batch_size: batch size of encoding the query and database
            splits after training (memory only: codes do not depend on it).
    """

    name: str = "fair"
    backbone: str = "resnet50"
    weights: str = "imagenet"
    input_size: int = 224
    resize_size: int = 256
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
    # -- input pipeline (issue 14, items 1 and 3); applied by fgbench.data.transforms on the CPU and the device.
    #    ``resize_size``/``input_size`` above are the resize and the crop; the defaults are the ``fair`` pipeline.
    resize_shape: Literal["short-side", "square"] = "short-side"
    train_crop: Literal["random", "random-resized", "center"] = "random"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    rotation: float = 0.0
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    imagenet_weights: Literal["imagenet1k_v1", "imagenet1k_v2"] = "imagenet1k_v1"
    # -- sampling and model selection (issue 14 items 5 and 7) --
    epoch_sample: int = 0
    resample_every: int = 1

    def validate(self) -> "Protocol":
        """Return ``self`` when every field is usable and truthful, else raise :class:`ProtocolError`.

        A record stores the protocol as the truth about how its model was
        trained, so settings the engine would not honour are refused too:
        milestones that the schedule does not use, ``resample_every`` without
        ``epoch_sample``.  A milestone at or past ``epochs`` is kept (a
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
        if self.split != STANDARD_SPLIT and self.selection == "val":
            raise ProtocolError(f"selection val with --split {self.split}: the validation split is carved from the "
                                f"training classes, which an unseen-class split keeps apart from the database; "
                                f"use selection=final")
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
        self._validate_pipeline()
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
            raise ProtocolError(f"selection {self.selection!r}: choose one of {', '.join(SELECTIONS)} "
                                f"(--set selection=val)")
        _at_least("epoch_sample", self.epoch_sample, 0)
        _at_least("resample_every", self.resample_every, 1)
        if self.epoch_sample == 0 and self.resample_every != 1:
            raise ProtocolError(f"resample_every {self.resample_every}: only epoch_sample > 0 draws subsets; "
                                f"also --set epoch_sample=N, or leave resample_every at 1")
        return self

    def _validate_pipeline(self) -> None:
        """The input-pipeline fields (issue 14): each checked in one line naming the field and what to use."""
        _choice("resize_shape", self.resize_shape, RESIZE_SHAPES)
        _choice("train_crop", self.train_crop, TRAIN_CROPS)
        _range("crop_scale", self.crop_scale, 0.0, 1.0, "e.g. --set crop_scale=0.08,1.0 (fractions of the image area)")
        _range("crop_ratio", self.crop_ratio, 0.0, math.inf, "e.g. --set crop_ratio=0.75,1.3333 (width/height)")
        if not (math.isfinite(self.flip_p) and 0.0 <= self.flip_p <= 1.0):
            raise ProtocolError(f"flip_p {self.flip_p}: use a probability in [0, 1], e.g. --set flip_p=0.5")
        if not (math.isfinite(self.rotation) and 0.0 <= self.rotation <= 180.0):
            raise ProtocolError(f"rotation {self.rotation}: use degrees in [0, 180] (the angle is drawn from "
                                f"[-rotation, rotation]), e.g. --set rotation=30")
        jitter = tuple(self.color_jitter)
        if len(jitter) != 4 or not all(math.isfinite(j) and j >= 0 for j in jitter) or jitter[3] > 0.5:
            raise ProtocolError(f"color_jitter {','.join(str(j) for j in jitter)}: use four strengths >= 0 "
                                f"(brightness, contrast, saturation, hue <= 0.5), "
                                f"e.g. --set color_jitter=0.5,0.5,0.5,0.5")
        _choice("imagenet_weights", self.imagenet_weights, IMAGENET_WEIGHTS)
        if self.weights == "imagenet":
            from fgbench.backbones import imagenet_versions  # lazy: keeps this module light

            if not imagenet_versions(self.backbone):
                raise ProtocolError(f"backbone {self.backbone} has no torchvision ImageNet weights: use "
                                    f"weights=pretext:<size> (embedded dataset), random, or --backbone-weights FILE; "
                                    f"or another backbone")
            if self.imagenet_weights not in imagenet_versions(self.backbone):
                raise ProtocolError(f"imagenet_weights {self.imagenet_weights}: torchvision has only "
                                    f"{', '.join(imagenet_versions(self.backbone))} for {self.backbone}; "
                                    f"--set imagenet_weights=imagenet1k_v1")

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
        changes = _legacy_augmentation(changes)
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
        for key in ("crop_scale", "crop_ratio", "color_jitter"):
            if key in conv:
                try:
                    conv[key] = tuple(float(v) for v in conv[key])
                except (TypeError, ValueError):
                    raise ProtocolError(f"option {key}: cannot read {conv[key]!r} as numbers") from None
        for key in ("flip_p", "rotation"):
            if key in conv and isinstance(conv[key], int) and not isinstance(conv[key], bool):
                conv[key] = float(conv[key])
        return dataclasses.replace(self, **conv)

    def to_dict(self) -> dict[str, Any]:
        """Every field, tuples as lists (JSON-able): what a run record stores as ``protocol``."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        _drop_standard_split(d)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Protocol":
        """The protocol a record stores; records written before the pipeline fields read as what they ran
        (:func:`upgrade_protocol_dict`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in upgrade_protocol_dict(d).items() if k in names}
        return cls(**kw)


#: the legacy ``augmentation`` field (records before issue 14) as the pipeline fields it meant; the resize, crop
#: and test pipeline were ``resize_size`` (short side), ``input_size`` and the centre crop, as they still are.
LEGACY_AUGMENTATION: dict[str, dict[str, Any]] = {
    "crop-flip": {"train_crop": "random", "flip_p": 0.5},
    "none": {"train_crop": "center", "flip_p": 0.0},
}
_LEGACY_DEFAULTS = {"resize_shape": "short-side", "rotation": 0.0, "color_jitter": (0.0, 0.0, 0.0, 0.0)}


def _legacy_augmentation(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` with a legacy ``augmentation`` name replaced by the fields it stands for (explicit ones win)."""
    out = dict(changes)
    if "augmentation" not in out:
        return out
    name = str(out.pop("augmentation")).strip()
    if name not in LEGACY_AUGMENTATION:
        raise ProtocolError(f"augmentation {name!r}: choose one of {', '.join(LEGACY_AUGMENTATION)} (an old name for "
                            f"train_crop/flip_p; set those fields instead)")
    return {**LEGACY_AUGMENTATION[name], **out}


def upgrade_protocol_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded protocol with fields added since it was written filled in with what the run actually used.

    * ``augmentation`` (before issue 14): ``crop-flip`` is ``train_crop=random, flip_p=0.5``, ``none`` is
      ``train_crop=center, flip_p=0``, both with the short-side resize and no rotation or colour jitter.
    * ``imagenet_weights`` absent with ``weights=imagenet``: fgbench loaded torchvision's ``DEFAULT`` weights,
      ``imagenet1k_v2`` where the backbone has them (ResNet-50/101), else ``imagenet1k_v1``.

    Fields still absent stay absent (a resume compares them with the field's default).
    """
    try:
        out = {**_LEGACY_DEFAULTS, **_legacy_augmentation(d)} if "augmentation" in d else dict(d)
    except ProtocolError:  # not a name fgbench ever wrote: left for the comparison to show
        out = dict(d)
    if "imagenet_weights" not in out and out.get("weights") == "imagenet":
        from fgbench.backbones import imagenet_versions  # lazy: keeps this module light

        versions = imagenet_versions(str(out.get("backbone", Protocol.backbone)))
        out["imagenet_weights"] = "imagenet1k_v2" if "imagenet1k_v2" in versions else "imagenet1k_v1"
    return out


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


def _range(field: str, value: tuple[float, ...], low: float, high: float, example: str) -> None:
    """A ``(min, max)`` pair with ``low < min <= max <= high``."""
    pair = tuple(value)
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair) or not low < pair[0] <= pair[1] <= high:
        raise ProtocolError(f"{field} {','.join(str(v) for v in pair)}: use min,max with {low:g} < min <= max"
                            f"{'' if math.isinf(high) else f' <= {high:g}'}; {example}")


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
    proto = Protocol(name=name)
    for _, layer in protocol_layers(name, dataset_overrides, method_recipe, dataset, user_overrides):
        proto = proto.replace(**layer)
    return proto.validate()


def protocol_layers(
    name: str,
    dataset_overrides: Mapping[str, Any] | None = None,
    method_recipe: Mapping[str, Mapping[str, Any]] | None = None,
    dataset: str = "",
    user_overrides: Mapping[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The override layers :func:`resolve_protocol` applies over the defaults, in order, named.

    ``("dataset", the dataset's scale overrides)``, then for ``paper`` only
    ``("recipe", the recipe's "default" entry)`` and ``("recipe:dataset",
    its entry for ``dataset``)``, then ``("user", the CLI options)``.  A field
    is set by the last layer that names it (``fgbench recipe`` shows which).
    """
    layers = [("dataset", dict(dataset_overrides or {}))]
    if name == "paper" and method_recipe:
        layers += [("recipe", dict(method_recipe.get("default", {}))),
                   ("recipe:dataset", dict(method_recipe.get(dataset, {})))]
    layers.append(("user", dict(user_overrides or {})))
    return layers
