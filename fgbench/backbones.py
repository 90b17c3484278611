"""ResNet backbones with stage access, shared by every method.

The protocol fixes the architecture and the initial weights: ImageNet weights
through torchvision's weights API (from the local torch hub cache, or
downloaded when the network allows), an offline state-dict file
(``--backbone-weights PATH``), or random initialisation — and the run record
says which one was used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

BACKBONES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights"),
}


class BackboneError(Exception):
    """The backbone or its weights cannot be loaded (message says what to do)."""


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


@functools.lru_cache(maxsize=None)
def _imagenet_state_dict(name: str) -> tuple[dict | None, str]:
    """ImageNet weights for ``name`` via torchvision's weights API, or (None, reason)."""
    weights_enum = getattr(torchvision.models, BACKBONES[name][1])
    weights = weights_enum.DEFAULT
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network errors have many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"ImageNet weights {weights} unavailable ({reason})"
    return state, f"imagenet:{weights}"


def build_backbone(name: str = "resnet50", weights: str = "imagenet") -> Backbone:
    """Build a backbone.

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``"imagenet"`` (torchvision weights API; falls back to random
            init with the reason recorded when they cannot be had), ``"random"``,
            ``"pretext:<size>"`` (pretrained on the disjoint synthetic pretext
            set at ``size`` px, see :mod:`fgbench.pretext`), or a path to a
            ``state_dict`` file of the torchvision model.
    """
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    model = BACKBONES[name][0](weights=None)
    if weights == "random":
        source = "random"
    elif weights.startswith("pretext"):
        from fgbench.pretext import pretext_weights

        size = int(weights.split(":", 1)[1]) if ":" in weights else 48
        path = pretext_weights(name, size)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
        source = f"pretext:{path.name}"
    elif weights == "imagenet":
        state, source = _imagenet_state_dict(name)
        if state is None:
            source = f"random ({source})"
        else:
            model.load_state_dict(state)
    else:
        path = Path(weights)
        if not path.is_file():
            raise BackboneError(f"--backbone-weights {path}: no such file; pass a torchvision {name} state_dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            missing, unexpected = model.load_state_dict(state, strict=False)
        except Exception as exc:  # noqa: BLE001
            raise BackboneError(f"--backbone-weights {path}: cannot load as a {name} state_dict ({type(exc).__name__})") from None
        if len(missing) > 2 or unexpected and not all(k.startswith("fc.") for k in unexpected):
            raise BackboneError(f"--backbone-weights {path}: does not match {name} (missing {len(missing)} keys)")
        source = f"file:{path.name}"
    return Backbone(model, name, source)


@dataclass(frozen=True)
class BackboneFactory:
    """Picklable factory handed to methods through ``BuildContext.backbone()``."""

    name: str
    weights: str

    def __call__(self) -> Backbone:
        return build_backbone(self.name, self.weights)
