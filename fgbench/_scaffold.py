"""Scaffold a new method plugin as its own pip distribution (``fgbench new-plugin NAME``).

The generated package mirrors ``plugins/fgbench-dpsh``: a ``pyproject.toml``
declaring the entry point ``[project.entry-points.fgbench] NAME = "fgbench_NAME"``,
a module with ``FGBENCH_API_VERSION``, a config dataclass, a minimal working
:class:`fgbench.HashingModel`, the ``MethodSpec`` and the ``register_methods``
hook, a test using :mod:`fgbench.testing`, and a README.  It installs with
``pip install -e`` and trains out of the box; the author then replaces the
model and loss with the paper's (docs/plugins.md walks through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgbench._version import __version__
from fgbench.errors import ScaffoldError
from fgbench.hookspecs import API_VERSION
from fgbench.methods import METHOD_NAME_RE


@dataclass(frozen=True)
class PluginNames:
    """The names derived from a method name ``NAME``."""

    method: str        # registry / CLI name, e.g. "my-hash"
    dist: str          # pip distribution, "fgbench-my-hash"
    package: str       # import package, "fgbench_my_hash"
    camel: str         # class prefix, "MyHash"

    @classmethod
    def from_method(cls, name: str) -> "PluginNames":
        if not METHOD_NAME_RE.match(name):
            raise ScaffoldError(f"invalid method name {name!r}: use lower case letters, digits, '-' or '_', "
                                f"starting with a letter (e.g. 'myhash')")
        parts = [p for p in name.replace("-", "_").split("_") if p]
        return cls(name, f"fgbench-{name}", "fgbench_" + name.replace("-", "_"),
                   "".join(p[:1].upper() + p[1:] for p in parts))


PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{method} as an fgbench method plugin"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["fgbench>={fgbench_min}", "torch>=2.2,<3"]

[project.optional-dependencies]
test = ["pytest>=7"]

# fgbench finds the plugin through this entry point (group "fgbench"):
# `fgbench list` shows the method as soon as the distribution is installed.
[project.entry-points.fgbench]
{method} = "{package}"

[tool.setuptools]
packages = ["{package}"]
'''

MODULE = '''\
"""{method} — <Authors>, "<Paper title>", <Venue Year>.

TODO: replace this template with the paper's method.  Say here which
section / equation each piece implements (see plugins/fgbench-dpsh in the
fgbench repository for the style).

The template is a minimal *working* supervised hashing method, so the
plugin installs, registers and trains before you change anything:

* model: the protocol's backbone -> global average pooling -> linear hash
  layer ``u`` (real-valued codes; the harness takes ``sign(u)``);
* loss: cross-entropy of a linear classifier on ``tanh(u)`` plus
  ``quantization * mean((|u| - 1)^2)`` pulling codes towards +-1.
  The classifier is training-only: ``encode`` does not run it, so it is not
  counted in the reported params/FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fgbench import Batch, BuildContext, HashingModel, MethodSpec, hookimpl

# The fgbench plugin API this plugin was written against (fgbench warns on a mismatch).
FGBENCH_API_VERSION = {api_version}


@dataclass(frozen=True)
class {camel}Config:
    """Hyper-parameters; the defaults are the paper's (settable with --set {method}.FIELD=VALUE).

    quantization: weight of the quantization term.
    """

    quantization: float = 0.1


class {camel}(HashingModel):
    """Backbone -> global average pool -> linear hash layer ``u``."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        self.bits = ctx.bits
        self.config: {camel}Config = ctx.config
        self.backbone = ctx.backbone()
        self.hash_layer = nn.Linear(self.backbone.out_channels, ctx.bits)
        self.classifier = nn.Linear(ctx.bits, ctx.num_classes)  # training only

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The inference path: real-valued codes ``(batch, bits)``."""
        feats = self.backbone(images)
        return self.hash_layer(torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def loss(self, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        u = u.float()  # losses in float32, also under bf16/fp16 autocast
        logits = self.classifier(torch.tanh(u)).float()
        ce = F.cross_entropy(logits, batch.labels)
        quantization = (u.abs() - 1).pow(2).mean()
        loss = ce + self.config.quantization * quantization
        return loss, {{"ce": ce, "quantization": quantization}}


def build(ctx: BuildContext) -> {camel}:
    return {camel}(ctx)


SPEC = MethodSpec(
    name="{method}",
    summary="TODO: one line for `fgbench list`",
    citation="TODO: Authors. Title. Venue Year.",
    config_cls={camel}Config,
    build=build,
    # Numbers as printed in the paper (mAP in [0, 1]); leaderboards show them in
    # separate "paper-reported" columns, never as measured ones:
    # paper_results=(PaperResult(source="Table 2", map={{"cub": {{12: 0.0, 24: 0.0}}}},
    #                            params_m={{"resnet50@12": 0.0}}, flops_g={{"resnet50@12": 0.0}}),),
    # The paper's own training recipe, used by `fgbench run --protocol paper`:
    paper_recipe={{"default": {{}}}},
)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(SPEC)
'''

TEST = '''\
"""Tests of the {method} plugin (CPU, small inputs, random init: seconds)."""

from __future__ import annotations

import math

from fgbench.testing import build_context, random_batch, registered_plugin, train_on_tiny_embedded, train_steps

import {package}
from {package} import SPEC


def test_encode_gives_one_code_per_image() -> None:
    ctx = build_context(SPEC, bits=12, num_classes=4, input_size=32)
    model = SPEC.build(ctx)
    batch = random_batch(ctx, batch_size=4)
    assert model.encode(batch.images).shape == (4, 12)


def test_loss_is_finite_and_decreases() -> None:
    ctx = build_context(SPEC, bits=12, num_classes=4, input_size=32)
    model = SPEC.build(ctx)
    losses = train_steps(model, random_batch(ctx, batch_size=8), steps=6)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_trains_through_the_harness_loop() -> None:
    """Two epochs of the real training loop on a tiny embedded dataset: lifecycle hooks included."""
    _model, epochs = train_on_tiny_embedded(SPEC, epochs=2, bits=12)
    assert len(epochs) == 2 and all(math.isfinite(e["loss"]) for e in epochs)


def test_plugin_registers_through_the_hook() -> None:
    with registered_plugin({package}) as host:
        assert not host.registry.failures
        assert host.registry.methods.get("{method}").config_cls is SPEC.config_cls
'''

README = '''\
# {dist}

The **{method}** hashing method as an fgbench method plugin.

TODO: cite the paper, say what the method does in two sentences and list any
choice the paper leaves open that this implementation makes.

## Install, test, run

```bash
python -m pip install -e .           # registers the entry point; `fgbench list` now shows {method}
python -m pytest -q tests            # CPU, seconds
fgbench run --methods {method}        # the embedded dataset, CPU, under a minute
fgbench profile --methods {method} --bits 12 --backbone resnet50   # params / FLOPs of encode()
```

Hyper-parameters (`{camel}Config`) are set with `--set {method}.FIELD=VALUE`.

## Layout

* `pyproject.toml` — the distribution, with the entry point
  `[project.entry-points.fgbench] {method} = "{package}"`;
* `{package}/__init__.py` — config dataclass, model (`HashingModel`),
  `SPEC` (`MethodSpec`) and the `register_methods` hook;
* `tests/test_{module}.py` — shape, loss and registration tests with
  `fgbench.testing`.

See fgbench's plugin author guide (`docs/plugins.md`) for the whole contract.
'''


def render_files(name: str) -> dict[str, str]:
    """Relative path -> content of every file of the plugin for method ``name``."""
    n = PluginNames.from_method(name)
    fields = {"method": n.method, "dist": n.dist, "package": n.package, "camel": n.camel,
              "module": n.package.removeprefix("fgbench_"), "api_version": API_VERSION,
              "fgbench_min": ".".join(__version__.split("+")[0].split(".")[:2])}
    return {
        "pyproject.toml": PYPROJECT.format(**fields),
        f"{n.package}/__init__.py": MODULE.format(**fields),
        f"tests/test_{fields['module']}.py": TEST.format(**fields),
        "README.md": README.format(**fields),
    }


def scaffold_plugin(name: str, directory: Path = Path(".")) -> Path:
    """Create ``directory/fgbench-NAME/`` with a working plugin; return that folder.

    Refuses (``ScaffoldError``) when the folder exists and is not empty.
    """
    files = render_files(name)
    root = Path(directory) / PluginNames.from_method(name).dist
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} already exists and is not empty; choose another --dir or name")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    return root
