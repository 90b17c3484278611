"""ResNet backbones with stage access, shared by every method.

The protocol fixes the architecture and the initial weights: torchvision's
ImageNet checkpoint from the local torch hub cache, an offline state-dict file
(``--backbone-weights PATH``), weights a dataset provides (the embedded dataset's pretext weights, :mod:`fgbench.data.pretext`), or
random initialisation asked for explicitly (``weights=random``).  The weights
are resolved and checked before training (:func:`resolve_weights`); missing
or damaged weights stop the run with a one-line error, never a silent random
initialisation, and the run record names the file loaded and its SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torchvision
from torch import nn

from fgbench._atomic import file_sha256
from fgbench.errors import BackboneError, described

def resnet10(*, weights: object = None, **kwargs: object) -> nn.Module:
    """ResNet-10: torchvision's ResNet with one ``BasicBlock`` per stage (``[1, 1, 1, 1]``).

    The CPU-scale backbone of the embedded dataset's ``fair`` protocol: the
    same stem, stage widths (64, 128, 256, 512) and strides as ResNet-18 with
    half its blocks, so every method's stage access works unchanged at about
    half the compute.  torchvision ships no ImageNet checkpoint for it; its
    weights come from the embedded pretext (``pretext:<size>``), a state_dict
    file, or ``random``.
    """
    if weights is not None:
        raise BackboneError("resnet10 has no torchvision ImageNet weights; use weights=pretext:<size> (embedded "
                            "dataset), random, or a state_dict file")
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], **kwargs)


BACKBONES: dict[str, tuple[Callable[..., nn.Module], str | None]] = {
    "resnet10": (resnet10, None),
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights"),
}


class Backbone(nn.Module):
    """A torchvision ResNet split into ``stem`` and four ``stages`` (layer1..layer4).

    ``stage_channels[i]`` is the channel count of stage ``i+1``'s output;
    ``weights_source`` records where the initial weights came from.
    """

    def __init__(self, resnet: nn.Module, name: str, weights_source: str) -> None:
        super().__init__()
        self.name = name
        self.weights_source = weights_source
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.stage_channels: tuple[int, ...] = tuple(_out_channels(s) for s in self.stages)
        self.out_channels = self.stage_channels[-1]

    def forward_stages(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """Outputs of stages 1..``upto``; stages above ``upto`` are not run."""
        feats = []
        x = self.stem(x)
        for stage in self.stages[:upto]:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map."""
        return self.forward_stages(x)[-1]


def _out_channels(stage: nn.Module) -> int:
    last = list(stage.children())[-1]
    for attr in ("bn3", "bn2"):
        if hasattr(last, attr):
            return getattr(last, attr).num_features
    raise BackboneError("cannot infer stage channels")


WeightsKind = str
"""``"random"``, ``"imagenet"``, ``"file"``, or a provider's prefix (``"pretext"``)."""

WeightsProvider = Callable[[str, str], "tuple[Path, str]"]
"""``provider(backbone, argument) -> (weights file, its sha256)`` for protocol weights ``"<prefix>:<argument>"``."""


@dataclass(frozen=True)
class WeightsSource:
    """A backbone's initial weights, resolved and checked before anything trains.

    ``label`` is what the run record stores in ``backbone_weights``: the kind,
    the file's name and the first 12 hex digits of the SHA-256 of its bytes
    (``random (explicit)`` for random initialisation).  ``path`` is the full
    path of that file on this machine (None for random).
    """

    backbone: str
    kind: WeightsKind
    label: str
    path: Path | None = None
    sha256: str | None = None

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The checked state dict (``fc.*`` dropped), or None for random init.

        The bytes loaded are the bytes hashed: a file changed since it was
        resolved raises :class:`BackboneError` instead of loading other weights.
        """
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise BackboneError(f"{self._what()}: cannot read ({exc.strerror or exc})") from None
        sha = hashlib.sha256(data).hexdigest()
        if sha != self.sha256:
            raise BackboneError(f"{self._what()}: changed while in use (sha256 {sha[:12]}, was {str(self.sha256)[:12]}); "
                                f"rerun the command")
        return _parse_state(data, self.backbone, self._what())

    def _what(self) -> str:
        return _describe(self.kind, self.path)


def _describe(kind: str, path: Path | None) -> str:
    return {"imagenet": f"ImageNet weights {path}", "pretext": f"pretext weights {path}",
            "file": f"--backbone-weights {path}"}.get(kind, str(path))


#: the ImageNet weights version a paper's ``pretrained=True`` loads (torchvision's original checkpoint)
IMAGENET_V1 = "imagenet1k_v1"


def imagenet_versions(name: str) -> tuple[str, ...]:
    """The ImageNet weights versions torchvision has for backbone ``name`` (``imagenet1k_v1``, maybe ``_v2``)."""
    if name not in BACKBONES or BACKBONES[name][1] is None:
        return ()
    return tuple(w.name.lower() for w in getattr(torchvision.models, BACKBONES[name][1]))


def imagenet_checkpoint(name: str, version: str = IMAGENET_V1) -> tuple[str, str, Path]:
    """``(weights enum name, download url, expected path in the torch hub cache)`` of ``name``'s ImageNet weights
    ``version`` (the protocol's ``imagenet_weights``: ``imagenet1k_v1`` is what ``pretrained=True`` loads).

    The path is where torchvision's weights API looks first:
    ``torch.hub.get_dir()/checkpoints/<file name of the url>`` (``$TORCH_HOME/hub``,
    default ``~/.cache/torch/hub``).
    """
    if not imagenet_versions(name):
        raise BackboneError(f"{name} has no torchvision ImageNet weights; use weights=pretext:<size> (embedded "
                            f"dataset), random, or --backbone-weights FILE")
    enum = getattr(torchvision.models, str(BACKBONES[name][1]))
    if version.lower() not in imagenet_versions(name):
        raise BackboneError(f"imagenet_weights {version}: torchvision has only {', '.join(imagenet_versions(name))} "
                            f"for {name}; --set imagenet_weights=imagenet1k_v1")
    weights = enum[version.upper()]
    url = str(weights.url)
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    return str(weights), url, Path(torch.hub.get_dir()) / "checkpoints" / filename


_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: <name>-<sha256 prefix>.pth
_FITTING: set[tuple[str, str]] = set()  # (backbone, sha256) of files already checked to fit


def resolve_weights(backbone: str, weights: str, providers: Mapping[str, WeightsProvider] | None = None,
                    imagenet_version: str = IMAGENET_V1) -> WeightsSource:
    """Find and check the initial weights named by a protocol (downloading only torchvision's ImageNet checkpoint).

    Call it for every job's ``(protocol.backbone, protocol.weights)`` before
    any job trains: a missing or damaged file stops the run at once instead of
    training from random initialisation.  Cheap when repeated (file hashes and
    checks are memoised per process on the file's stat).

    Args:
        backbone: one of :data:`BACKBONES`.
        weights: ``"imagenet"`` (torchvision's checkpoint in the local torch hub
            cache, downloaded there once when missing and the network allows;
            ``FGBENCH_OFFLINE=1`` never tries), ``"random"`` (on purpose),
            ``"<prefix>:<argument>"`` for a prefix in ``providers`` (the
            embedded dataset provides ``pretext:<size>``,
            :mod:`fgbench.data.pretext`), or a path to a state_dict file.
        providers: ``prefix -> provider(backbone, argument) -> (file, sha256)``.
        imagenet_version: which torchvision ImageNet checkpoint ``"imagenet"`` means (the protocol's
            ``imagenet_weights``); the label names it (``imagenet:ResNet50_Weights.IMAGENET1K_V1 ...``).

    Raises:
        BackboneError: one line naming the file and what to do.
    """
    return _resolve(backbone, weights, providers, imagenet_version)[0]


def _resolve(backbone: str, weights: str, providers: Mapping[str, WeightsProvider] | None = None,
             imagenet_version: str = IMAGENET_V1) -> tuple[WeightsSource, dict[str, torch.Tensor] | None]:
    """:func:`resolve_weights`, plus the state dict when checking the file just loaded it (else None)."""
    if backbone not in BACKBONES:
        raise BackboneError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if weights == "random":
        return WeightsSource(backbone, "random", "random (explicit)"), None
    prefix, _, argument = weights.partition(":")
    if providers and prefix in providers:
        path, sha = providers[prefix](backbone, argument)
        return _checked(WeightsSource(backbone, prefix, f"{prefix}:{path.name} sha256:{sha[:12]}", path, sha))
    if prefix == "pretext":
        raise BackboneError(f"weights {weights!r} are provided by a dataset (the embedded one); pass that dataset's "
                            f"weights_providers, or use imagenet, random or a state_dict file")
    if weights == "imagenet":
        enum_name, url, path = imagenet_checkpoint(backbone, imagenet_version)
        if not path.is_file():
            failure = _download_checkpoint(url, path)
            if failure is not None:
                raise BackboneError(
                    f"ImageNet weights for {backbone} ({enum_name}) are not in the torch hub cache and could not be "
                    f"downloaded ({failure}): put {path.name} (from {url}) in {path.parent}, or pass "
                    f"--backbone-weights FILE, or --set weights=random to train from random initialisation on purpose")
        sha = file_sha256(path)
        match = _HASH_IN_NAME.search(path.name)
        if match and not sha.startswith(match.group(1)):
            raise BackboneError(f"ImageNet weights {path}: damaged (sha256 {sha[:12]}, its name says {match.group(1)}); "
                                f"delete it and put a fresh copy from {url} there")
        return _checked(WeightsSource(backbone, "imagenet", f"imagenet:{enum_name} {path.name} sha256:{sha[:12]}",
                                      path, sha))
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneError(f"--backbone-weights {path}: no such file; pass a torchvision {backbone} state_dict file "
                            f"(protocol weights are imagenet, random, pretext:<size> or a file)")
    sha = file_sha256(path)
    return _checked(WeightsSource(backbone, "file", f"file:{path.name} sha256:{sha[:12]}", path.resolve(), sha))


def _download_checkpoint(url: str, path: Path) -> str | None:
    """Download ``url`` to ``path`` (torch hub's own temp-file-and-rename download); None, or why it failed.

    Set ``FGBENCH_OFFLINE=1`` to never try (the test suite does).
    """
    if os.environ.get("FGBENCH_OFFLINE"):
        return "FGBENCH_OFFLINE is set"
    match = _HASH_IN_NAME.search(path.name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=True)
    except Exception as exc:  # noqa: BLE001 - any network or disk failure becomes the one-line error
        return described(exc)
    finally:
        socket.setdefaulttimeout(previous)
    return None if path.is_file() else "no file after the download"


def _checked(source: WeightsSource) -> tuple[WeightsSource, dict[str, torch.Tensor] | None]:
    """``source`` once its file loads and fits the architecture (memoised on the file's hash), and the state
    dict if it was loaded for that check."""
    key = (source.backbone, str(source.sha256))
    if key in _FITTING:
        return source, None
    state = source.state_dict()
    _FITTING.add(key)
    return source, state


def _parse_state(data: bytes, name: str, what: str) -> dict[str, torch.Tensor]:
    """The backbone tensors of a torchvision ``name`` state_dict serialised in ``data``; checked key by key."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip/pickle readers raise many types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "zip archive" in text:
            reason = "truncated or damaged archive"
        elif "Weights only load failed" in text or not data:
            reason = "empty" if not data else "not written by torch.save, or holds more than tensors"
        else:
            reason = f"{type(exc).__name__}: {text[:80]}" if text else type(exc).__name__
        raise BackboneError(f"{what}: not a readable torch state_dict file ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{what}: not a state_dict (a dict of tensors); pass a torchvision {name} state_dict")
    state = {k: v for k, v in state.items() if not str(k).startswith("fc.")}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in BACKBONES[name][0](weights=None).state_dict().items()
                    if not k.startswith("fc.")}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise BackboneError(f"{what}: does not fit {name} ({len(missing)} missing, {len(unexpected)} unexpected, "
                            f"{len(wrong)} wrongly shaped tensors, e.g. {first!r}); pass a torchvision {name} state_dict")
    return state


def build_backbone(name: str = "resnet50", weights: str = "imagenet",
                   providers: Mapping[str, WeightsProvider] | None = None,
                   imagenet_version: str = IMAGENET_V1) -> Backbone:
    """Build a backbone with the initial weights :func:`resolve_weights` finds for ``weights``.

    ``weights_source`` (recorded as the run record's ``backbone_weights``) is
    the resolved source's label.  Never falls back to random initialisation.
    A method builds its backbone with ``ctx.backbone()`` instead (the
    protocol's choice); this function is for tests and tools.

    Args:
        name: one of :data:`BACKBONES` (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``).
        weights: ``imagenet``, ``random``, ``<provider prefix>:<argument>`` or a state_dict file (see
            :func:`resolve_weights`).
        providers: weights a dataset supplies (``DatasetSpec.weights_providers``).

    Returns:
        A :class:`Backbone` (``stem``, ``stages``, ``out_channels``, ``forward_stages``).

    Raises:
        BackboneError: unknown backbone, weights missing, damaged or not fitting (one line).
    """
    source, state = _resolve(name, weights, providers, imagenet_version)
    model = BACKBONES[name][0](weights=None)
    if state is None:
        state = source.state_dict()
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise BackboneError(f"{source._what()}: does not fit {name}")  # _parse_state checked this already
    return Backbone(model, name, source.label)


@dataclass(frozen=True)
class BackboneFactory:
    """Picklable factory handed to methods through ``BuildContext.backbone()``."""

    name: str
    weights: str
    #: ``(prefix, provider)`` pairs for weights a dataset supplies (``DatasetSpec.weights_providers``)
    providers: tuple[tuple[str, WeightsProvider], ...] = ()
    #: the torchvision ImageNet checkpoint ``weights="imagenet"`` loads (the protocol's ``imagenet_weights``)
    imagenet_version: str = IMAGENET_V1

    def __call__(self) -> Backbone:
        return build_backbone(self.name, self.weights, dict(self.providers), self.imagenet_version)
