"""Pretext backbone weights: training them does not disturb the job that asked for them; damaged ones are retrained.

Faults of the weights file itself (``{}``, 0 bytes, truncated, ...) are in
tests/faults/test_weights_and_caches.py, with an instant fake training.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from fgbench import build_backbone
from fgbench.data import pretext
from fgbench.errors import BackboneError


@pytest.fixture
def quick_pretext(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A private cache and a one-epoch pretext (the real one takes ~20 s): same code path, less work."""
    monkeypatch.setenv("FGBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(pretext, "PRETEXT_EPOCHS", 1)


def test_training_the_weights_leaves_the_callers_rng_alone(quick_pretext) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(7)
    state = torch.get_rng_state()
    path = pretext.pretext_weights("resnet18", 16)
    assert path.is_file()
    assert torch.equal(torch.get_rng_state(), state)


def test_cold_and_warm_cache_build_the_same_model(quick_pretext) -> None:  # type: ignore[no-untyped-def]
    """The first job (weights trained in-process) must initialise exactly like later ones (weights cached)."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)  # what the runner does before building a model
        backbone = build_backbone("resnet18", "pretext:16", pretext.WEIGHTS_PROVIDERS)
        head = torch.nn.Linear(backbone.out_channels, 8)  # a method's own layers, drawn after the backbone
        return next(backbone.parameters()).detach().clone(), head.weight.detach().clone()

    cold, warm = build(), build()
    assert torch.equal(cold[0], warm[0]) and torch.equal(cold[1], warm[1])


def test_damaged_weights_are_retrained_to_the_same_bytes(quick_pretext) -> None:  # type: ignore[no-untyped-def]
    """The real (deterministic) training gives back the file recorded: same checksum, same label, same model."""
    first = build_backbone("resnet18", "pretext:16", pretext.WEIGHTS_PROVIDERS)
    path = pretext.weights_path("resnet18", 16)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(pretext.meta_path(path).read_text())["sha256"] == sha
    assert first.weights_source == f"pretext:{path.name} sha256:{sha[:12]}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"{path.name}: damaged"):
        second = build_backbone("resnet18", "pretext:16", pretext.WEIGHTS_PROVIDERS)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert second.weights_source == first.weights_source
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_training_announces_its_start_and_its_seconds_on_stderr(quick_pretext, capfd) -> None:  # type: ignore[no-untyped-def]
    """The first run must not train the pretext backbone in silence, even with ``-q`` (issue 15)."""
    pretext.pretext_weights("resnet18", 16)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("pretext: training the resnet18 backbone at 16 px") and "1 epochs" in err[0]
    assert re.fullmatch(r"pretext: resnet18 backbone trained in \d+\.\d s \(pretext-resnet18-16px-\w+\.pt\)", err[1])
    pretext.pretext_weights("resnet18", 16)  # cached: nothing to say
    assert capfd.readouterr().err == ""


def test_resnet10_is_resnet18_with_one_block_per_stage() -> None:
    """The embedded protocol's CPU backbone: ResNet-18's stem, widths and strides, half its blocks."""
    r10, r18 = build_backbone("resnet10", "random"), build_backbone("resnet18", "random")
    assert r10.stage_channels == r18.stage_channels
    assert [len(s) for s in r10.stages] == [1, 1, 1, 1] and [len(s) for s in r18.stages] == [2, 2, 2, 2]
    x = torch.randn(2, 3, 48, 48)
    assert [f.shape for f in r10.forward_stages(x)] == [f.shape for f in r18.forward_stages(x)]
    assert sum(p.numel() for p in r10.parameters()) < 0.5 * sum(p.numel() for p in r18.parameters())


def test_resnet10_has_no_imagenet_weights_and_takes_pretext_weights(quick_pretext) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackboneError, match="resnet10 has no torchvision ImageNet weights") as err:
        build_backbone("resnet10", "imagenet")
    assert "\n" not in str(err.value)
    backbone = build_backbone("resnet10", "pretext:16", pretext.WEIGHTS_PROVIDERS)
    assert backbone.weights_source.startswith("pretext:pretext-resnet10-16px-")


def test_weights_do_not_depend_on_the_callers_thread_count(quick_pretext) -> None:  # type: ignore[no-untyped-def]
    """Trained on PRETEXT_THREADS threads whatever the process uses (float sums depend on the thread count);
    the caller's count is restored."""
    before = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            states.append(pretext._train("resnet10", 16))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
