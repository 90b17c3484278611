"""The protocol: resolution order, validation, identical objects across methods."""

from __future__ import annotations

import pytest

from fgbench.engine.runner import expand_jobs
from fgbench.protocol import Protocol, ProtocolError, resolve_protocol


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
