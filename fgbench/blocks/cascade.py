"""Building blocks of cascade (multi-stage) hashing networks, shared by CNET and Multi-FusNet.

* :class:`ConvBlock` — CNET's per-stage block ``C_j`` (Eq. 3), also
  Multi-FusNet's per-level branch: 1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU,
  global max pool.
* :func:`stage_widths`, :func:`check_stages` — block widths for a backbone
  and validation of the chosen backbone stages.
"""

from __future__ import annotations

from torch import nn

from fgbench.errors import ConfigError


class ConvBlock(nn.Sequential):
    """Stage block ``C_j`` (Eq. 3): 1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU, global max pool -> ``(B, out)``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(1),
        )


def stage_widths(backbone_channels: int, mid_ratio: float, out_ratio: float, hidden_ratio: float) -> tuple[int, int, int]:
    """Block 1x1 width, block output width and hash-head hidden width for a backbone."""
    return (max(1, round(backbone_channels * mid_ratio)), max(1, round(backbone_channels * out_ratio)),
            max(1, round(backbone_channels * hidden_ratio)))


def check_stages(stages: tuple[int, ...]) -> tuple[int, ...]:
    """The backbone stages a cascade hashes from, sorted and de-duplicated; each must be 1..4.

    Raises:
        ConfigError: one line naming the stages and the ``--set METHOD.stages=...`` to use.
    """
    stages = tuple(sorted({int(s) for s in stages}))
    if not stages or stages[0] < 1 or stages[-1] > 4:
        raise ConfigError(f"stages {stages}: choose backbone stages among 1, 2, 3, 4 (e.g. --set METHOD.stages=2,3,4)")
    return stages
