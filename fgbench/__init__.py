"""fgbench: one harness, one protocol, one evaluation for fine-grained deep hashing.

This module is the public API for plugin authors; everything a method plugin
needs is importable from here.  Anything not listed in ``__all__`` is internal
and may change without notice.
"""

from fgbench._version import __version__
from fgbench.backbones import Backbone, build_backbone
from fgbench.data.base import (
    ArraySplit,
    DatasetError,
    DatasetSpec,
    DatasetStatus,
    ExpectedSizes,
    RetrievalDataset,
    Split,
)
from fgbench.hookspecs import API_VERSION, hookimpl, hookspec
from fgbench.blocks.adsh import adsh_update_database_codes, outer_iteration_epochs
from fgbench.blocks.cascade import ConvBlock, check_stages, stage_widths
from fgbench.blocks.losses import (
    balanced_multitask_loss,
    label_smoothing_ce,
    similar_pair_ratio,
    smoothing_for_confidence,
)
from fgbench.blocks.memories import ClassMeans, CodeMemory
from fgbench.methods import (
    Batch,
    BuildContext,
    HashingModel,
    MethodSpec,
    PaperResult,
    TrainContext,
)
from fgbench.metrics.base import MetricSpec
from fgbench.metrics.retrieval import RetrievalEvaluation, evaluate_codes, mean_average_precision
from fgbench.protocol import STANDARD_BITS, Protocol
from fgbench.blocks.zoom import attention_zoom, peak_saliency, saliency_sample
from fgbench.blocks.proxies import ProxyCodes, fish_proxy_codes, solve_fish_proxies


__all__ = [
    "API_VERSION",
    "ArraySplit",
    "Backbone",
    "Batch",
    "BuildContext",
    "ClassMeans",
    "CodeMemory",
    "ConvBlock",
    "DatasetError",
    "DatasetSpec",
    "DatasetStatus",
    "ExpectedSizes",
    "HashingModel",
    "MethodSpec",
    "MetricSpec",
    "PaperResult",
    "Protocol",
    "ProxyCodes",
    "RetrievalDataset",
    "RetrievalEvaluation",
    "STANDARD_BITS",
    "Split",
    "TrainContext",
    "__version__",
    "attention_zoom",
    "adsh_update_database_codes",
    "balanced_multitask_loss",
    "build_backbone",
    "check_stages",
    "evaluate_codes",
    "fish_proxy_codes",
    "hookimpl",
    "hookspec",
    "label_smoothing_ce",
    "outer_iteration_epochs",
    "mean_average_precision",
    "peak_saliency",
    "saliency_sample",
    "similar_pair_ratio",
    "smoothing_for_confidence",
    "solve_fish_proxies",
    "stage_widths",
]
