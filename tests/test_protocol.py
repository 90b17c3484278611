"""The protocol: resolution order, validation, identical objects across methods."""

from __future__ import annotations

import re

import pytest

from fgbench.engine.grid import expand_jobs
from fgbench.methods import coerce_value
from fgbench.protocol import Protocol, ProtocolError, is_named_weights, resolve_protocol


def test_resolution_order() -> None:
    recipe = {"default": {"lr": 0.5, "epochs": 9}, "cub": {"lr": 0.25}}
    fair = resolve_protocol("fair", {"input_size": 64, "resize_size": 72}, recipe, "cub", {"epochs": 3})
    assert (fair.lr, fair.epochs, fair.input_size) == (Protocol().lr, 3, 64)
    paper = resolve_protocol("paper", {"input_size": 64, "resize_size": 72}, recipe, "cub", {"epochs": 3})
    assert (paper.lr, paper.epochs) == (0.25, 3)


@pytest.mark.parametrize("change, message", [
    ({"bits": (2,)}, "--bits 2"),
    ({"bits": (300,)}, "--bits 300"),
    ({"input_size": 300}, "input_size"),
])
def test_invalid_settings_name_the_option(change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=message):
        Protocol().replace(**change).validate()


def test_unknown_field_lists_valid_ones() -> None:
    with pytest.raises(ProtocolError, match="valid:.*batch_size"):
        Protocol().replace(learning_rate=1)


def test_round_trip_through_dict() -> None:
    p = Protocol(bits=(12, 48), milestones=(3,))
    assert Protocol.from_dict(p.to_dict()) == p


def test_fair_protocol_is_identical_for_every_method(toy_host) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from conftest import TOY_SPEC
    from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

    other = dataclasses.replace(TOY_SPEC, name="toy2", paper_recipe={"default": {"lr": 9.0}})
    with registered_plugin(spec_plugin("p", methods=[TOY_SPEC, other], datasets=[tiny_embedded()])) as host:
        jobs = expand_jobs(host.registry, ["toy", "toy2"], ["tiny"], "fair", None, [0, 1])
        assert len({j.protocol for j in jobs}) == 1
        paper = expand_jobs(host.registry, ["toy", "toy2"], ["tiny"], "paper", None, [0])
        assert {j.method: j.protocol.lr for j in paper}["toy2"] == 9.0


@pytest.mark.parametrize("change, message", [
    ({"seeds": (-1,)}, "--seeds -1"),
    ({"seeds": ()}, "at least one seed"),
    ({"bits": (12, 12)}, "12 is given twice"),
    ({"epochs": 0}, "epochs 0"),
    ({"eval_batch_size": 0}, "eval_batch_size 0"),
    ({"input_size": 0}, "input_size 0"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"lr": float("nan")}, "--lr nan"),
    ({"lr": float("inf")}, "--lr inf"),
    ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"backbone_lr_mult": float("nan")}, "backbone_lr_mult"),
    ({"warmup_epochs": 30}, "warmup_epochs 30 >= epochs 30"),
    ({"milestones": (10,)}, "only schedule=step"),
    ({"schedule": "step", "milestones": (20, 10)}, "increasing"),
    ({"schedule": "step", "milestones": (0,)}, "increasing epochs >= 1"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "linear"}, "schedule"),
    ({"train_crop": "mixup"}, "train_crop"),
    ({"backbone": "vgg16"}, "backbone 'vgg16'"),
    ({"weights": "pretext:big"}, "pretext:SIZE"),
    ({"selection": "best"}, "selection 'best'"),
    ({"resample_every": 2}, "only epoch_sample > 0"),
])
def test_settings_the_engine_would_not_honour_are_refused(change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=re.escape(message)):
        Protocol(**change).validate()


def test_milestones_past_a_shortened_run_are_kept() -> None:
    p = Protocol(schedule="step", milestones=(70,), epochs=2).validate()
    assert p.milestones == (70,) and p.to_dict()["milestones"] == [70]


def test_step_schedule_with_milestones_inside_the_run_is_valid() -> None:
    p = Protocol(schedule="step", milestones=(10, 20), epochs=30, warmup_epochs=2).validate()
    assert p.milestones == (10, 20)


def test_replace_converts_strings_and_names_the_field() -> None:
    p = Protocol().replace(milestones="5,7", seeds="0,1", lr="0.5", schedule="step")
    assert (p.milestones, p.seeds, p.lr) == ((5, 7), (0, 1), 0.5)
    with pytest.raises(ProtocolError, match="protocol.milestones"):
        Protocol().replace(milestones="a")
    with pytest.raises(ProtocolError, match="protocol.epochs"):
        Protocol().replace(epochs="1.5")


def test_user_overrides_may_not_rename_the_protocol() -> None:
    with pytest.raises(ProtocolError, match="--protocol"):
        resolve_protocol("fair", user_overrides={"name": "paper"})
    assert resolve_protocol("paper", {"epochs": 3}).name == "paper"


def test_named_weights() -> None:
    assert all(map(is_named_weights, ["imagenet", "random", "pretext", "pretext:48"]))
    assert not any(map(is_named_weights, ["pretext:", "pretext:0", "pretextual", "w.pt", ""]))


def test_every_installed_recipe_and_dataset_scale_validates() -> None:
    """The stricter validation refuses none of the shipped fair/paper protocols (real datasets and embedded)."""
    from fgbench._plugins import get_host

    reg = get_host().registry
    assert len(reg.methods) and len(reg.datasets)
    for dspec in reg.datasets.values():
        for mspec in reg.methods.values():
            for name in ("fair", "paper"):
                resolve_protocol(name, dspec.fair_overrides, mspec.paper_recipe, dspec.name)


@pytest.mark.parametrize("default, value, annotation, expected", [
    (0.5, "1.5", None, 1.5),
    (True, "off", None, False),
    ((2, 3), "3,4", None, (3, 4)),
    ((), "3,4", tuple[int, ...], (3, 4)),
    (None, "4", int | None, 4),
    (None, "none", int | None, None),
    ("a", " b ", None, "b"),
])
def test_coerce_value_uses_the_default_then_the_annotation(default, value, annotation, expected) -> None:  # type: ignore[no-untyped-def]
    assert coerce_value(default, value, "m.k", annotation) == expected


@pytest.mark.parametrize("default, value", [(0.5, "nan"), (0.5, "x"), (1, "1.5"), (True, "maybe"), ((1,), "1,a")])
def test_coerce_value_names_the_option(default, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"option m\.k: cannot read"):
        coerce_value(default, value, "m.k")
