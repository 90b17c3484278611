"""The plugin contract check (issue #15): each violation is one line naming the method, what was expected and
what came back; every check runs; the bundled methods pass; ``fgbench check-plugin`` exits 1 on a failure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import fgbench
from fgbench.cli import main
from fgbench._plugins import get_host
from fgbench.engine.plugin_check import check_method
from fgbench.testing import registered_plugin, spec_plugin

from conftest import TOY_SPEC, ToyHasher


class ToyCodes(ToyHasher):
    """The toy method with its training path independent of ``encode``, so ``encode`` can be broken alone."""

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        return self.hash(F.adaptive_avg_pool2d(self.backbone(images), 1).flatten(1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codes(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.codes(images)))


class BareTensorLoss(ToyCodes):
    def loss(self, logits, batch):  # type: ignore[no-untyped-def]
        return F.cross_entropy(logits.float(), batch.labels)


class DetachedEncode(ToyCodes):
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codes(images).detach()


class WrongShapeEncode(ToyCodes):
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codes(images)[:, :-1]


class NoisyEncode(ToyCodes):
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codes(images) + torch.randn(images.shape[0], self.bits)


class SignEncode(ToyCodes):
    """Sign-quantised codes are fine: the output stays in the autograd graph."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sign(self.codes(images))


class TwoFaults(BareTensorLoss, DetachedEncode):
    pass


@dataclass(frozen=True)
class ListConfig:
    steps: list = field(default_factory=lambda: [1, 2])  # --set gives back the string "1,2"
    margin: float = 0.5


def _spec(model: type, name: str = "bad", config_cls: type = TOY_SPEC.config_cls) -> fgbench.MethodSpec:
    return dataclasses.replace(TOY_SPEC, name=name, build=model, config_cls=config_cls)


def _only_failure(model: type, **kw) -> str:  # type: ignore[no-untyped-def]
    result = check_method(_spec(model, **kw))
    assert len(result.failures) == 1, result.failures
    line = result.failures[0]
    assert "\n" not in line and line.startswith("method 'bad': ")
    return line


def test_toy_method_passes() -> None:
    result = check_method(_spec(ToyCodes))
    assert result.ok, result.failures
    assert check_method(_spec(SignEncode)).ok


def test_bare_tensor_loss_is_one_line() -> None:
    line = _only_failure(BareTensorLoss)
    assert "loss(outputs, batch): expected (scalar loss tensor, {name: tensor}), got a tensor of shape ()" in line


def test_detached_encode_is_one_line() -> None:
    line = _only_failure(DetachedEncode)
    assert "encode(images): expected an output connected to the parameters" in line
    assert "does not require grad" in line


def test_wrong_encode_shape_is_one_line() -> None:
    line = _only_failure(WrongShapeEncode)
    assert "expected shape (batch, bits) = (4, 8), got (4, 7)" in line


def test_non_deterministic_encode_is_one_line() -> None:
    line = _only_failure(NoisyEncode)
    assert "expected the same codes on a second call" in line


def test_config_that_does_not_round_trip_is_one_line() -> None:
    line = _only_failure(ToyCodes, config_cls=ListConfig)
    assert "config field steps = [1, 2] does not round-trip through --set bad.steps=1,2" in line
    assert "expected [1, 2], got '1,2'" in line


def test_every_failure_is_reported_not_only_the_first() -> None:
    result = check_method(_spec(TwoFaults))
    assert len(result.failures) == 2
    assert "loss(outputs, batch)" in result.failures[0] and "encode(images)" in result.failures[1]


def test_a_build_that_raises_is_one_line() -> None:
    def build(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("no such layer\nsecond line")

    line = _only_failure(build)
    assert line == "method 'bad': build(ctx) raised RuntimeError: no such layer"


def test_the_check_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_method(_spec(ToyCodes))
    assert torch.equal(torch.rand(3), expected)


def _bundled() -> list[str]:
    return get_host().registry.methods.names()


@pytest.mark.parametrize("name", _bundled())
def test_every_bundled_method_passes(name: str) -> None:
    spec = get_host().registry.methods.get(name)
    result = check_method(spec)
    assert result.ok, result.failures


def test_check_plugin_command_lists_every_failure_and_exits_1() -> None:
    good, bad = _spec(ToyCodes, name="good"), _spec(TwoFaults, name="bad")
    with registered_plugin(spec_plugin("check-plugin-test", methods=[good, bad])):
        res = CliRunner().invoke(main, ["check-plugin", "good,bad"])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert any(line.startswith("ok     good") for line in lines)
    failures = [line.strip() for line in lines if line.startswith("  method 'bad': ")]
    assert len(failures) == 2
    assert lines[-1].startswith("Error: the plugin contract check failed for bad")


def test_grid_checks_each_method_once_before_training_and_fails_only_its_jobs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fgbench.testing import tiny_embedded

    builds: list[tuple[str, str]] = []

    def counted(cls: type, name: str):  # type: ignore[no-untyped-def]
        def build(ctx):  # type: ignore[no-untyped-def]
            builds.append((name, ctx.dataset))
            return cls(ctx)
        return build

    good, bad = _spec(counted(ToyCodes, "good"), name="good"), _spec(counted(BareTensorLoss, "bad"), name="bad")
    args = ["run", "--methods", "good,bad", "--datasets", "tiny", "--bits", "8,16", "--seeds", "0", "-q",
            "--device", "cpu", "--results", str(tmp_path)]
    with registered_plugin(spec_plugin("grid-check-test", methods=[good, bad], datasets=[tiny_embedded()])):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, res.output
        reason = ("plugin check failed: method 'bad': loss(outputs, batch): expected (scalar loss tensor, "
                  "{name: tensor}), got a tensor of shape ()")
        for bits in (8, 16):
            assert f"FAILED bad/tiny/{bits}b/seed0: {reason}" in res.output
        assert "Traceback" not in res.output and "0-d tensor" not in res.output
        # one check per method (on the check's own context), then the good method's two jobs; bad never trains
        assert sorted(builds) == [("bad", "plugin-check"), ("good", "plugin-check"), ("good", "tiny"), ("good", "tiny")]
        assert sorted(p.name for p in tmp_path.rglob("*.json")) == ["bits16-seed0.json", "bits8-seed0.json"]
        builds.clear()
        again = CliRunner().invoke(main, [*args[:2], "good", *args[3:]])  # every job of good is done: no check
        assert again.exit_code == 0 and "2 already done, 0 to run" in again.output, again.output
        assert builds == []
