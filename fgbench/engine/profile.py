"""``fgbench profile``: encode-path cost of methods, beside paper-reported cost."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fgbench.methods import BuildContext
from fgbench.metrics.cost import encode_cost
from fgbench._plugins import Registry
from fgbench.protocol import Protocol, ProtocolError


def profile_protocol(backbone: str, input_size: int, bits: Sequence[int], num_classes: int) -> Protocol:
    """The validated protocol ``fgbench profile`` builds models under; ``ProtocolError`` for a bad option."""
    if num_classes < 1:
        raise ProtocolError(f"--num-classes {num_classes}: use 1 or more")
    if input_size < 1:
        raise ProtocolError(f"--input-size {input_size}: use 1 or more")
    return Protocol(backbone=backbone, weights="random", input_size=input_size,
                    resize_size=max(input_size, int(input_size * 256 / 224)), bits=tuple(bits)).validate()


def profile_methods(registry: Registry, methods: Sequence[str], bits: Sequence[int], backbone: str, input_size: int,
                    num_classes: int, method_sets: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One row per (method, bits): measured params/FLOPs and the paper's, when reported.

    Every option and every method's config is checked before the first model is built.
    """
    rows = []
    protocol = profile_protocol(backbone, input_size, bits, num_classes)
    labels = np.arange(num_classes).repeat(2)
    configs = {name: registry.methods.get(name).make_config((method_sets or {}).get(name)) for name in methods}
    for name in methods:
        spec = registry.methods.get(name)
        config = configs[name]
        for b in bits:
            ctx = BuildContext.from_protocol(protocol, b, labels, num_classes, config,
                                             "profile", 0)
            model = spec.build(ctx)
            cost = encode_cost(model, input_size)
            paper_p = paper_f = ""
            for res in spec.paper_results:
                key = f"{backbone}@{b}"
                if key in res.params_m:
                    paper_p, paper_f = f"{res.params_m[key]:.2f}", f"{res.flops_g.get(key, float('nan')):.2f}"
            rows.append({"method": name, "bits": b, "params (M)": f"{cost.layer_params_m:.2f}",
                         "FLOPs (G MACs)": f"{cost.flops_g:.3f}", "paper params (M)": paper_p,
                         "paper FLOPs (G)": paper_f, "bare": cost.bare_params, "all params (M)": cost.params_m})
    return rows


def bare_parameter_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row whose encode path uses parameters held outside any layer (see ``Cost.bare_params``)."""
    lines = []
    for row in rows:
        if row["bare"]:
            names = ", ".join(f"{n} {c / 1e6:.3f} M" for n, c in row["bare"])
            total = sum(c for _, c in row["bare"]) / 1e6
            lines.append(f"{row['method']} @{row['bits']}: + {total:.3f} M parameters held outside any layer "
                         f"({names}), used by encode but not in params (M); with them {row['all params (M)']:.2f} M")
    return lines
