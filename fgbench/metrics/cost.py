"""Cost of the encode path: parameters and FLOPs.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on
``model.encode`` for one image at the given input size, and reported in the
papers' convention: *multiply-accumulates* labelled "FLOPs" (torchvision's
ResNet-50 at 224x224 is about 4.1 G in this convention).  Parameters are the
ones the encode path actually uses: modules that inference does not run
(training-only heads, a skipped last stage) are not counted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    """Encode-path cost: parameters (millions) and MACs reported as GFLOPs.

    ``params_m`` counts every parameter the encode output depends on.
    ``bare_params`` names those among them that a module holds *beside* its
    sub-layers rather than inside a layer (e.g. CMBH's C-vectors, an
    ``nn.Parameter`` of the model itself), with their counts: counters that
    sum the parameters of leaf modules (thop-style, as papers' cost tables
    usually are) never see them, so ``fgbench profile`` shows them on their
    own line (:attr:`layer_params_m` is the count without them).
    """

    params_m: float
    flops_g: float
    input_size: int
    bare_params: tuple[tuple[str, int], ...] = ()

    @property
    def bare_params_m(self) -> float:
        return sum(n for _, n in self.bare_params) / 1e6

    @property
    def layer_params_m(self) -> float:
        """Parameters inside layers (leaf modules) only: the papers' usual count."""
        return self.params_m - self.bare_params_m

    def to_dict(self) -> dict[str, float]:
        return {"params_m": self.params_m, "flops_g": self.flops_g, "input_size": self.input_size}


def _used_parameters(model: nn.Module, encode_name: str, example: torch.Tensor) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Parameters that the encode output depends on (those that receive a gradient), and the bare ones among them.

    A bare parameter is held by a module that has sub-modules (not a leaf
    layer).  Runs on a deep copy so the model's own gradients are untouched.
    """
    clone = copy.deepcopy(model)
    clone.eval()
    for p in clone.parameters():
        p.grad = None
        p.requires_grad_(True)
    out = getattr(clone, encode_name)(example)
    out.float().sum().backward()
    used = [(name, p) for name, p in clone.named_parameters() if p.grad is not None]
    bare = []
    for name, p in used:
        owner = clone.get_submodule(name.rpartition(".")[0])
        if next(owner.children(), None) is not None:
            bare.append((name, p.numel()))
    return sum(p.numel() for _, p in used), tuple(bare)


def encode_cost(model: nn.Module, input_size: int = 224, encode_name: str = "encode") -> Cost:
    """Parameters and FLOPs (MACs) of ``model.<encode_name>`` on one ``3 x input_size^2`` image."""
    fn = getattr(model, encode_name)
    was_training = model.training
    model.eval()
    example = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    example = example.to(next(model.parameters()).device)
    try:
        params, bare = _used_parameters(model, encode_name, example)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                fn(example)
    finally:
        model.train(was_training)
    return Cost(params_m=params / 1e6, flops_g=counter.get_total_flops() / 2 / 1e9, input_size=input_size,
                bare_params=bare)
