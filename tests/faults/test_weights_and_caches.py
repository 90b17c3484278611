"""Faults in initial weights and decoded caches (issue #12): the weights used are the weights recorded.

Each test injects one fault and checks that the damaged file is never used
silently: it is rebuilt (pretext weights), ignored with a warning naming it
(decoded cache), or refused with a one-line error before training (ImageNet
and ``--backbone-weights`` files).  Nothing here downloads anything: the torch
hub cache is a private ``TORCH_HOME`` and downloads are made to fail.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from data.fixtures import WRITERS

from conftest import TOY_SPEC
from fgbench import backbones
from fgbench.data import pretext
from fgbench.backbones import BackboneError, build_backbone, resolve_weights
from fgbench.cli import main
from fgbench.data.official import catalog
from fgbench.data.official.cache import CachedSplit, build_cache, dataset_cache_dir, inspect_cache
from fgbench.data.official.images import FileSplit
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

SIZE = 24  # decoded-cache short side (the fixture JPEGs are 40x32)
PRETEXT = "pretext:16"


# ----------------------------------------------------------------------------- helpers
def _state(seed: int = 0, arch=torchvision.models.resnet18) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """A deterministic torchvision state_dict (no ``fc``), as pretext training would return."""
    return {k: v.clone() for k, v in _made_state(seed, arch).items()}


@functools.cache
def _made_state(seed: int, arch) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {k: v for k, v in arch().state_dict().items() if not k.startswith("fc.")}


def _saved(obj: object, path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _first_param(backbone: torch.nn.Module) -> torch.Tensor:
    return backbone.stem[0].weight.detach()


@pytest.fixture
def no_download(monkeypatch):  # type: ignore[no-untyped-def]
    """No network: any download attempt fails loudly instead of hanging."""

    def refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch, no_download):  # type: ignore[no-untyped-def]
    """An empty private torch hub cache."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.set_dir() by someone else must not leak in
    return home


@pytest.fixture
def fake_pretext(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A private pretext cache whose 'training' is instant and deterministic; counts the trainings."""
    monkeypatch.setenv("FGBENCH_CACHE", str(tmp_path / "fgbench-cache"))
    calls: list[tuple[str, int]] = []

    def train(backbone_name: str, image_size: int) -> dict[str, torch.Tensor]:
        calls.append((backbone_name, image_size))
        return _state(seed=image_size)

    monkeypatch.setattr(pretext, "_train", train)
    return calls


# ----------------------------------------------------------------------------- pretext weights
def _write_empty_dict_text(p: Path) -> None:
    p.write_text("{}")


def _write_empty_dict_torch(p: Path) -> None:
    _saved({}, p)


def _write_zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def _write_truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _write_flipped(p: Path) -> None:
    _flip_byte(p, 0.9)  # inside the tensor payload: still a readable zip


def _write_other_weights(p: Path) -> None:
    _saved(_state(seed=99), p)  # a valid resnet18 state_dict, but not the one recorded


def _remove_checksum(p: Path) -> None:
    pretext.meta_path(p).unlink()


PRETEXT_FAULTS = {
    "replaced by {} (text)": (_write_empty_dict_text, "truncated or replaced"),
    "replaced by torch.save({})": (_write_empty_dict_torch, "truncated or replaced"),
    "0 bytes": (_write_zero_bytes, r"empty \(0 bytes\)"),
    "truncated": (_write_truncated, "truncated or replaced"),
    "one flipped byte": (_write_flipped, r"damaged \(sha256"),
    "other valid weights": (_write_other_weights, "damaged|truncated or replaced"),
    "checksum record missing": (_remove_checksum, "no checksum recorded"),
}


@pytest.mark.parametrize("fault", list(PRETEXT_FAULTS))
def test_damaged_pretext_weights_are_rebuilt_never_used(fake_pretext, fault: str) -> None:  # type: ignore[no-untyped-def]
    good = build_backbone("resnet18", PRETEXT, pretext.WEIGHTS_PROVIDERS)
    path = pretext.weights_path("resnet18", 16)
    assert fake_pretext == [("resnet18", 16)]
    inject, problem = PRETEXT_FAULTS[fault]
    inject(path)
    with pytest.warns(UserWarning, match=rf"pretext weights .*{path.name}: ({problem}).*training them again"):
        again = build_backbone("resnet18", PRETEXT, pretext.WEIGHTS_PROVIDERS)
    assert len(fake_pretext) == 2, "the damaged file must be rebuilt"
    assert torch.equal(_first_param(again), _first_param(good)), "the damaged file was loaded"
    assert again.weights_source == good.weights_source == f"pretext:{path.name} sha256:{_sha(path)[:12]}"
    assert pretext.check_weights_file(path)[0] is None
    assert _no_temp_files(path.parent)


def test_pretext_label_carries_the_checksum_of_the_loaded_bytes(fake_pretext) -> None:  # type: ignore[no-untyped-def]
    backbone = build_backbone("resnet18", PRETEXT, pretext.WEIGHTS_PROVIDERS)
    path = pretext.weights_path("resnet18", 16)
    record = json.loads(pretext.meta_path(path).read_text())
    assert record["sha256"] == _sha(path) and record["bytes"] == path.stat().st_size
    assert backbone.weights_source == f"pretext:{path.name} sha256:{record['sha256'][:12]}"
    build_backbone("resnet18", PRETEXT, pretext.WEIGHTS_PROVIDERS)
    assert fake_pretext == [("resnet18", 16)], "an intact file must not be retrained"


# ----------------------------------------------------------------------------- ImageNet weights
def test_imagenet_offline_without_hub_cache_is_a_one_line_error(torch_home) -> None:  # type: ignore[no-untyped-def]
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(BackboneError) as err:
        resolve_weights("resnet18", "imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert f"put {expected.name} " in message and f"in {expected.parent}," in message
    assert "--backbone-weights FILE" in message and "--set weights=random" in message
    with pytest.raises(BackboneError, match="not in the torch hub cache"):
        build_backbone("resnet18", "imagenet")


def test_imagenet_offline_run_stops_before_any_training(torch_home, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fgbench.engine import runner

    def no_training(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "train_model", no_training)
    results = tmp_path / "results"
    with registered_plugin(spec_plugin("toy-plugin", methods=[TOY_SPEC], datasets=[tiny_embedded()])):
        res = CliRunner().invoke(main, ["run", "--methods", "toy", "--datasets", "tiny", "--set", "weights=imagenet",
                                        "--backbone", "resnet18", "--results", str(results), "-q"])
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert lines[-1].startswith("Error: ImageNet weights for resnet18") and "--set weights=random" in lines[-1]
    assert not [p for p in results.rglob("*") if p.is_file()], "nothing may be written for a job that cannot start"


def test_damaged_imagenet_checkpoint_in_hub_cache_is_refused(torch_home) -> None:  # type: ignore[no-untyped-def]
    path = _saved(_state(), torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")  # hash is not f37072fd…
    with pytest.raises(BackboneError, match=rf"ImageNet weights {path}: damaged \(sha256 .*delete it"):
        resolve_weights("resnet18", "imagenet")


def test_imagenet_checkpoint_is_loaded_and_recorded_with_its_checksum(torch_home, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A hub-cache checkpoint whose name carries its hash prefix (as torchvision's do) is loaded as is."""
    state = _state(seed=5)
    tmp = _saved(state, torch_home / "scratch.pth")
    sha = _sha(tmp)
    path = torch_home / "hub" / "checkpoints" / f"resnet18-{sha[:8]}.pth"
    path.parent.mkdir(parents=True)
    tmp.rename(path)
    monkeypatch.setattr(backbones, "imagenet_checkpoint",
                        lambda name, version="imagenet1k_v1": ("ResNet18_Weights.IMAGENET1K_V1",
                                                               "https://example.invalid/x.pth", path))
    backbone = build_backbone("resnet18", "imagenet")
    assert torch.equal(_first_param(backbone), state["conv1.weight"])
    assert backbone.weights_source == f"imagenet:ResNet18_Weights.IMAGENET1K_V1 {path.name} sha256:{sha[:12]}"
    _flip_byte(path)
    with pytest.raises(BackboneError, match="damaged"):
        build_backbone("resnet18", "imagenet")


# ----------------------------------------------------------------------------- --backbone-weights files
def _missing_two(p: Path) -> None:
    """A full torchvision file (with ``fc``) lacking two backbone tensors: they would stay randomly initialised."""
    state = {**_state(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    del state["conv1.weight"], state["layer4.1.bn2.weight"]
    _saved(state, p)


WEIGHTS_FILE_FAULTS = {
    "{} state_dict": (lambda p: _saved({}, p), "does not fit resnet18"),
    "0 bytes": (lambda p: p.write_bytes(b""), "not a readable torch state_dict file"),
    "truncated": (lambda p: _saved(_state(), p).write_bytes(p.read_bytes()[:1000]), "not a readable torch"),
    "text": (lambda p: p.write_text("{}"), "not a readable torch state_dict file"),
    "two tensors missing": (_missing_two, "does not fit resnet18 .2 missing"),
    "resnet34 weights": (lambda p: _saved(_state(arch=torchvision.models.resnet34), p), "unexpected"),
    "wrong shapes": (lambda p: _saved({k: v[..., :1] if v.ndim else v for k, v in _state().items()}, p),
                     "wrongly shaped"),
    "not a dict": (lambda p: _saved([torch.zeros(2)], p), "not a state_dict"),
}


@pytest.mark.parametrize("fault", list(WEIGHTS_FILE_FAULTS))
def test_bad_backbone_weights_file_is_refused_naming_it(tmp_path, fault: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "weights.pt"
    make, problem = WEIGHTS_FILE_FAULTS[fault]
    make(path)
    with pytest.raises(BackboneError, match=rf"--backbone-weights {path}: .*{problem}") as err:
        build_backbone("resnet18", str(path))
    assert "\n" not in str(err.value)


def test_backbone_weights_file_is_recorded_with_its_checksum(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _saved({"state_dict": _state(seed=3)}, tmp_path / "mine.pt")
    backbone = build_backbone("resnet18", str(path))
    assert backbone.weights_source == f"file:mine.pt sha256:{_sha(path)[:12]}"
    assert torch.equal(_first_param(backbone), _state(seed=3)["conv1.weight"])


def test_explicit_random_init_is_recorded_as_such(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = tmp_path / "results"
    with registered_plugin(spec_plugin("toy-plugin", methods=[TOY_SPEC], datasets=[tiny_embedded()])):
        res = CliRunner().invoke(main, ["run", "--methods", "toy", "--datasets", "tiny", "--set", "weights=random",
                                        "--results", str(results), "-q"])
    assert res.exit_code == 0, res.output
    [record] = results.rglob("*.json")
    assert json.loads(record.read_text())["backbone_weights"] == "random (explicit)"


# ----------------------------------------------------------------------------- decoded cache
@pytest.fixture
def prepared(tmp_path):  # type: ignore[no-untyped-def]
    """A built decoded cache of a tiny CUB fixture: (dataset loader, cache folder)."""
    fx = WRITERS["cub"](tmp_path, damaged=False)
    official = catalog.CUB.with_expected(fx.expected)
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    return official, dataset_cache_dir(tmp_path, "cub", SIZE)


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x93NUMPY garbage" + bytes(range(40)))


CACHE_FAULTS = {
    "pixels: one flipped byte": ("train.pixels", _flip_byte, "decoded-cache pixel file is damaged"),
    "pixels: truncated": ("test.pixels", _write_truncated, "size does not match"),
    "offsets: one flipped byte": ("train.offsets.npy", lambda p: _flip_byte(p, 0.95), "index file is damaged"),
    "shapes: one flipped byte": ("test.shapes.npy", lambda p: _flip_byte(p, 0.95), "index file is damaged"),
    "shapes: truncated": ("test.shapes.npy", lambda p: p.write_bytes(p.read_bytes()[:20]),
                          "index file is truncated"),
    "labels: garbage": ("train.labels.npy", _garbage, "index file is truncated"),
    "offsets: 0 bytes": ("test.offsets.npy", _write_zero_bytes, "index file is truncated"),
    "shapes: deleted": ("train.shapes.npy", lambda p: p.unlink(), "index file is missing"),
}


@pytest.mark.parametrize("fault", list(CACHE_FAULTS))
def test_damaged_decoded_cache_is_named_ignored_and_rebuilt(prepared, tmp_path, fault: str) -> None:  # type: ignore[no-untyped-def]
    official, directory = prepared
    cached = official(tmp_path, cache_size=SIZE)
    assert isinstance(cached.split("train"), CachedSplit)
    reference = {w: [cached.split(w).load_array(i) for i in range(len(cached.split(w)))] for w in ("train", "test")}
    name, inject, problem = CACHE_FAULTS[fault]
    inject(directory / name)
    state = inspect_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    assert state.state == "stale" and state.damaged and state.reason.startswith(str(directory / name))
    assert problem in state.reason and "\n" not in state.reason
    with pytest.warns(UserWarning, match=rf"ignoring damaged decoded cache \({directory / name}: .*fgbench data prepare"):
        ds = official(tmp_path, cache_size=SIZE)
    assert isinstance(ds.split("train"), FileSplit), "a damaged cache must not be served"
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)  # what `fgbench data prepare` does
    rebuilt = official(tmp_path, cache_size=SIZE)
    assert isinstance(rebuilt.split("train"), CachedSplit)
    for which, arrays in reference.items():
        for i, array in enumerate(arrays):
            np.testing.assert_array_equal(rebuilt.split(which).load_array(i), array)
    assert _no_temp_files(directory)


@pytest.fixture
def fixture_host():  # type: ignore[no-untyped-def]
    """A plugin host whose real-dataset specs expect the fixture sizes (as in tests/data/conftest.py)."""
    from data.fixtures import EXPECTED

    from fgbench.data.official.catalog import REAL_DATASETS
    from fgbench.hookspecs import hookimpl
    from fgbench._plugins import PluginHost, get_host, set_host

    class FixtureSized:
        @hookimpl
        def register_datasets(self, register):  # type: ignore[no-untyped-def]
            for dataset in REAL_DATASETS:
                register(dataset.make_spec(EXPECTED))

    previous = get_host()
    host = PluginHost()
    host.register_plugin(FixtureSized(), name="fixture-real")
    set_host(host)
    yield host
    set_host(previous)


def test_damaged_cache_is_named_by_fgbench_data_prepare(prepared, tmp_path, fixture_host) -> None:  # type: ignore[no-untyped-def]
    _official, directory = prepared
    _flip_byte(directory / "test.shapes.npy", 0.95)
    res = CliRunner().invoke(main, ["data", "prepare", "cub", "--data-root", str(tmp_path), "--size", str(SIZE),
                                    "--workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"{directory / 'test.shapes.npy'}: decoded-cache index file is damaged" in res.output
    assert inspect_cache(_official(tmp_path, use_cache=False), tmp_path, SIZE).state == "valid"


def test_cache_without_checksums_is_not_trusted(prepared, tmp_path) -> None:  # type: ignore[no-untyped-def]
    official, directory = prepared
    meta = directory / "meta.json"
    record = json.loads(meta.read_text())
    del record["files"]["train.pixels"]
    meta.write_text(json.dumps(record))
    state = inspect_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    assert state.state == "stale" and state.damaged and "no checksum for train.pixels" in state.reason
    with pytest.warns(UserWarning, match="ignoring damaged decoded cache"):
        assert isinstance(official(tmp_path, cache_size=SIZE).split("train"), FileSplit)
    build_cache(official(tmp_path, use_cache=False), tmp_path, SIZE)
    assert isinstance(official(tmp_path, cache_size=SIZE).split("train"), CachedSplit)
