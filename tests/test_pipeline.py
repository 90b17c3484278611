"""The input pipeline as protocol fields (issue 14, items 1-3 and item 9's 336-px Multi-FusNet fixture).

* ``fair`` keeps the pre-issue pipeline: the same seed gives the same tensors (CPU loader and ``--gpu-augment``);
* the CPU loader and :class:`DeviceAugment` draw from one distribution (the shared v2 steps give the very same
  crops, angles and jitter factors from the same generator state; the vectorised crop/flip path's flip rate);
* records written before the fields read as what they ran, and a resume compares them sanely;
* each paper recipe resolves to its paper's pipeline (values quoted with their source);
* no image is upsampled from a smaller decoded cache, and the record says where the pixels came from;
* the ImageNet weights version is a protocol field that reaches the backbone and its error messages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import fgbench_cmbh
import fgbench_cnet
import fgbench_dpsh
import fgbench_exchnet
import fgbench_multifusnet
from fgbench import backbones
from fgbench.backbones import BackboneError, resolve_weights
from fgbench.data.loader import AS_LOADED, SplitDataset, input_split, make_loader, LoaderOptions
from fgbench.data.official import catalog
from fgbench.data.official.cache import build_cache
from fgbench.data.transforms import DeviceAugment, build_transform, pad_collate, uint8_transform
from fgbench.engine.runner import Job, identity_mismatch
from fgbench.methods import BuildContext
from fgbench.protocol import Protocol, ProtocolError, resolve_protocol, upgrade_protocol_dict
from fgbench.records import RunRecord
from fgbench.testing import tiny_embedded

from data.fixtures import write_cub

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def _pre_issue_train(resize: int, size: int) -> v2.Compose:
    """fgbench's train transform before issue 14 (``augmentation="crop-flip"``), written out."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.RandomCrop(size), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


# ------------------------------------------------------------------------------------------ fair is unchanged
def test_fair_training_batches_are_the_pre_issue_ones_for_the_same_seed() -> None:
    spec = tiny_embedded()
    for proto in (resolve_protocol("fair"), resolve_protocol("fair", spec.fair_overrides)):
        old = _pre_issue_train(proto.resize_size, proto.input_size)
        new = build_transform(proto, train=True)
        dataset = spec.load(Path("."))
        images = [torch.from_numpy(dataset.split("train").load_array(i)).permute(2, 0, 1) for i in range(6)]
        images += [_image(1, 300, 410), _image(2, 333, 257)]
        torch.manual_seed(7)
        before = [old(img) for img in images]
        torch.manual_seed(7)
        after = [new(img) for img in images]
        assert all(torch.equal(a, b) for a, b in zip(before, after))
    # through the loader too (workers' seeds come from the job's generator)
    proto = resolve_protocol("fair", spec.fair_overrides)
    train = spec.load(Path(".")).split("train")
    batches = []
    for transform in (_pre_issue_train(proto.resize_size, proto.input_size), build_transform(proto, train=True)):
        torch.manual_seed(3)
        loader = make_loader(SplitDataset(train, transform), LoaderOptions(), batch_size=8,
                             generator=torch.Generator().manual_seed(3))
        batches.append([b[0] for b in loader])
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_fair_device_augment_draws_the_pre_issue_offsets_and_flips() -> None:
    proto = resolve_protocol("fair")
    sizes = torch.tensor([[256, 341], [300, 256], [256, 256]])
    aug = DeviceAugment(proto, train=True, device=CPU, seed=11)
    top, left, flip = aug.sample(sizes)
    g = torch.Generator().manual_seed(11)  # the pre-issue draws: two 62-bit integers per image, then the flips
    draws = torch.randint(0, 1 << 62, (3, 2), generator=g) % (sizes - 224 + 1)
    assert torch.equal(top, draws[:, 0]) and torch.equal(left, draws[:, 1])
    assert torch.equal(flip, torch.rand(3, generator=g) < 0.5)


# ---------------------------------------------------------------------------- one distribution, two paths
RICH = {
    "multifusnet-like": dict(input_size=40, resize_size=44, resize_shape="square", flip_p=0.7, rotation=30.0,
                             color_jitter=(0.5, 0.5, 0.5, 0.5)),
    "random-resized": dict(input_size=40, resize_size=46, train_crop="random-resized", crop_scale=(0.2, 0.9),
                           crop_ratio=(0.5, 2.0)),
    "centre+jitter": dict(input_size=40, resize_size=46, train_crop="center", flip_p=0.0,
                          color_jitter=(0.3, 0.0, 0.2, 0.0)),
}


@pytest.mark.parametrize("name", sorted(RICH))
def test_device_augment_draws_what_the_cpu_loader_draws(name: str) -> None:
    """Rotation, jitter and random-resized crops: DeviceAugment (on a CPU device) runs the CPU path's v2 steps
    from its own generator, so from the same state it makes the same crops, angles and jitter factors."""
    proto = Protocol(weights="random", **RICH[name]).validate()
    images = [_image(k, h, w) for k, (h, w) in enumerate([(60, 75), (52, 52), (90, 48)])]
    cpu = build_transform(proto, train=True)
    torch.manual_seed(5)
    expected = torch.stack([cpu(img) for img in images])
    shipped = [uint8_transform(proto, train=True)(img) for img in images]
    raw, sizes, _l, _i = pad_collate([(img, 0, k) for k, img in enumerate(shipped)])
    aug = DeviceAugment(proto, train=True, device=CPU, seed=5)
    assert not aug.vectorised
    state = aug.state()
    out = aug(raw, sizes)
    assert out.shape == (3, 3, 40, 40) and torch.equal(out, expected)
    # its generator state round-trips (resume), and the global torch RNG is not touched
    torch.manual_seed(0)
    marker = torch.get_rng_state()
    aug.set_state(state)
    assert torch.equal(aug(raw, sizes), expected)
    assert torch.equal(torch.get_rng_state(), marker)


def test_vectorised_flip_rate_is_the_protocol_flip_p() -> None:
    """Crop + flip only stays vectorised on the device; its flips have the CPU RandomHorizontalFlip's rate."""
    proto = Protocol(weights="random", input_size=24, resize_size=32, flip_p=0.7).validate()
    aug = DeviceAugment(proto, train=True, device=CPU, seed=0)
    assert aug.vectorised
    _t, _l, flip = aug.sample(torch.tensor([[32, 40]] * 8000))
    torch.manual_seed(0)
    cpu = v2.RandomHorizontalFlip(0.7)
    probe = torch.arange(2, dtype=torch.uint8).view(1, 1, 2)
    cpu_rate = float(np.mean([int(cpu(probe)[0, 0, 0]) == 1 for _ in range(8000)]))
    assert abs(flip.float().mean().item() - 0.7) < 0.02 and abs(cpu_rate - 0.7) < 0.02


# ------------------------------------------------------------------------------------------- the fields
@pytest.mark.parametrize("change,message", [
    ({"resize_shape": "long-side"}, "resize_shape 'long-side': choose one of short-side, square"),
    ({"train_crop": "five-crop"}, "train_crop 'five-crop'"),
    ({"crop_scale": (0.9, 0.2)}, "crop_scale 0.9,0.2: use min,max"),
    ({"crop_scale": (0.0, 1.0)}, "crop_scale 0.0,1.0"),
    ({"crop_ratio": (2.0, 0.5)}, "crop_ratio 2.0,0.5"),
    ({"flip_p": 1.5}, "flip_p 1.5: use a probability in [0, 1]"),
    ({"rotation": -5.0}, "rotation -5.0: use degrees in [0, 180]"),
    ({"color_jitter": (0.5, 0.5, 0.5, 0.7)}, "hue <= 0.5"),
    ({"color_jitter": (0.5, 0.5)}, "use four strengths"),
    ({"imagenet_weights": "imagenet21k"}, "imagenet_weights 'imagenet21k'"),
    ({"weights": "imagenet", "backbone": "resnet18", "imagenet_weights": "imagenet1k_v2"},
     "torchvision has only imagenet1k_v1 for resnet18"),
    ({"weights": "imagenet", "backbone": "resnet10"}, "backbone resnet10 has no torchvision ImageNet weights"),
])
def test_bad_pipeline_fields_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        Protocol(**change).validate()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_pipeline_fields_read_from_set_strings() -> None:
    proto = Protocol().replace(crop_scale="0.25,1", color_jitter="0.4,0.4,0.4,0.1", rotation="15", flip_p="0.7",
                               resize_shape="square", train_crop="random-resized").validate()
    assert proto.crop_scale == (0.25, 1.0) and proto.color_jitter == (0.4, 0.4, 0.4, 0.1)
    assert proto.rotation == 15.0 and proto.flip_p == 0.7
    # the old field name still works on the command line, meaning what it meant
    assert Protocol().replace(augmentation="none").train_crop == "center"
    with pytest.raises(ProtocolError, match="augmentation 'cutmix'"):
        Protocol().replace(augmentation="cutmix")


# -------------------------------------------------------------------------------------- old records
def _record(protocol: dict) -> RunRecord:
    return RunRecord(method="toy", dataset="tiny", bits=8, seed=0, protocol=protocol, metrics={}, cost={},
                     train_seconds=0.0, eval_seconds=0.0, environment={})


def _old_fair_dict(**changes: object) -> dict:
    """A protocol as records before issue 14 stored it (``augmentation``, no pipeline or weights-version fields)."""
    d = {k: v for k, v in Protocol().to_dict().items()
         if k not in ("resize_shape", "train_crop", "crop_scale", "crop_ratio", "flip_p", "rotation",
                      "color_jitter", "imagenet_weights")}
    d.update({"augmentation": "crop-flip", **changes})
    return d


def test_old_records_read_as_the_pipeline_they_ran() -> None:
    assert Protocol.from_dict(_old_fair_dict(weights="random")) == Protocol(weights="random")
    none = Protocol.from_dict(_old_fair_dict(augmentation="none"))
    assert (none.train_crop, none.flip_p, none.rotation) == ("center", 0.0, 0.0)
    # before the field, weights=imagenet loaded torchvision's DEFAULT: V2 for ResNet-50, V1 for ResNet-18
    assert Protocol.from_dict(_old_fair_dict(weights="imagenet")).imagenet_weights == "imagenet1k_v2"
    assert Protocol.from_dict(_old_fair_dict(weights="imagenet", backbone="resnet18")).imagenet_weights \
        == "imagenet1k_v1"


def test_resume_compares_old_records_by_what_they_ran() -> None:
    @dataclasses.dataclass
    class Cfg:
        pass

    def job(**changes: object) -> Job:
        return Job("toy", "tiny", 8, 0, Protocol(weights="random", **changes))

    same = identity_mismatch(job(), _record(_old_fair_dict(weights="random")), Cfg(), "")
    assert same is None
    differs = identity_mismatch(job(), _record(_old_fair_dict(weights="random", augmentation="none")), Cfg(), "")
    assert differs is not None and "train_crop: record center, now random" in differs
    assert identity_mismatch(job(train_crop="center", flip_p=0.0),
                             _record(_old_fair_dict(weights="random", augmentation="none")), Cfg(), "") is None
    v2_run = identity_mismatch(Job("toy", "tiny", 8, 0, Protocol(weights="imagenet")),
                               _record(_old_fair_dict(weights="imagenet")), Cfg(), "")
    assert v2_run is not None and "imagenet_weights: record imagenet1k_v2, now imagenet1k_v1" in v2_run
    assert upgrade_protocol_dict({"augmentation": "mixup"}) == {"augmentation": "mixup"}  # shown, not guessed


# --------------------------------------------------------------------------------------- paper recipes
def _paper(spec, dataset: str = "cub") -> Protocol:  # type: ignore[no-untyped-def]
    return resolve_protocol("paper", method_recipe=spec.paper_recipe, dataset=dataset)


PIPELINE = ("input_size", "resize_size", "resize_shape", "train_crop", "flip_p", "rotation", "color_jitter",
            "imagenet_weights")


@pytest.mark.parametrize("spec,expected", [
    # CNET Sec. 4.3: "crops a random region of the input image and then resizes it to 224x224 and flips it
    # randomly horizontally ... the input image size of 256 x 256, which is then centered and cropped to 224 x 224"
    (fgbench_cnet.SPEC, (224, 256, "square", "random-resized", 0.5, 0.0, (0.0, 0.0, 0.0, 0.0), "imagenet1k_v1")),
    # Multi-FusNet "Implementation details": "random cropping ... 336 x 336 ... random rotation within a range of
    # 30 deg ... random horizontal flip with a probability of 0.7 ... brightness, contrast, saturation, and hue
    # ... with a factor of 0.5 ... shrunk to an image size of 356 x 356 ... centred ... 336 x 336"
    (fgbench_multifusnet.SPEC, (336, 356, "square", "random", 0.7, 30.0, (0.5, 0.5, 0.5, 0.5), "imagenet1k_v1")),
    # CMBH Sec. 4.1: "all images are first resized to 255 x 255; random crop to 224 x 224 at training; centre
    # crop 224 x 224 at test" (no flip listed)
    (fgbench_cmbh.SPEC, (224, 255, "square", "random", 0.0, 0.0, (0.0, 0.0, 0.0, 0.0), "imagenet1k_v1")),
    # ExchNet, aassxun/DSH_Analysis data/transform.py: RandomResizedCrop(224), RandomHorizontalFlip();
    # query: Resize(256), CenterCrop(224)
    (fgbench_exchnet.SPEC, (224, 256, "short-side", "random-resized", 0.5, 0.0, (0.0, 0.0, 0.0, 0.0),
                            "imagenet1k_v1")),
    # DPSH, jiangqy/DPSH-pytorch DPSH_CIFAR_10.py: one transform, Scale(256), CenterCrop(224), no flip
    (fgbench_dpsh.SPEC, (224, 256, "short-side", "center", 0.0, 0.0, (0.0, 0.0, 0.0, 0.0), "imagenet1k_v1")),
])
def test_each_paper_recipe_resolves_to_its_papers_pipeline(spec, expected) -> None:  # type: ignore[no-untyped-def]
    for dataset in ("cub", "aircraft", "food101"):
        proto = _paper(spec, dataset)
        assert tuple(getattr(proto, f) for f in PIPELINE) == expected, (spec.name, dataset)
        if proto.train_crop == "random-resized":  # torchvision's defaults: the papers and code give none
            assert proto.crop_scale == (0.08, 1.0) and proto.crop_ratio == pytest.approx((3 / 4, 4 / 3))


# ------------------------------------------------------------------------------------ resolution honoured
def _checkerboard(h: int, w: int, check: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // check) + (xx // check)) % 2 * 255).astype(np.uint8)
    return np.stack([board, 255 - board, board], axis=-1)


def _detail(x: torch.Tensor) -> float:
    """Mean absolute difference of horizontally adjacent pixels: what survives of a fine checkerboard."""
    return float((x[..., :, 1:] - x[..., :, :-1]).abs().mean())


@pytest.fixture
def checker_cub(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A CUB-layout fixture of 480x400 checkerboards (3-px checks) with a 256-px decoded cache beside it."""
    fx = write_cub(tmp_path, damaged=False, per_split=1)
    for path in sorted((fx.folder / "images").rglob("*.jpg")):
        Image.fromarray(_checkerboard(400, 480, 3)).save(path, "JPEG", quality=95)
    official = catalog.CUB.with_expected(fx.expected)
    build_cache(official(tmp_path, use_cache=False), tmp_path, 256)
    return official, tmp_path


def test_multifusnet_paper_pipeline_yields_336_px_tensors_not_upsampled_from_the_cache(checker_cub) -> None:  # type: ignore[no-untyped-def]
    official, root = checker_cub
    dataset = official(root)  # the 256-px cache attaches, as it does for every run
    proto = _paper(fgbench_multifusnet.SPEC)
    for which, train in (("test", False), ("train", True), ("train", False)):
        split, source = input_split(dataset, which, proto, train)
        assert source == "original files"
        image = SplitDataset(split, build_transform(proto, train))[0][0]
        assert image.shape == (3, 336, 336)
    query, _ = input_split(dataset, "test", proto, train=False)
    ours = SplitDataset(query, build_transform(proto, False))[0][0]
    cached = SplitDataset(dataset.split("test"), build_transform(proto, False))[0][0]  # what fgbench did before
    original = torch.from_numpy(np.array(Image.open(query.paths[0]).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ours, build_transform(proto, False)(original))
    assert tuple(dataset.split("test").load_array(0).shape[:2]) == (256, 307)  # the cache is the 256-px copy
    assert _detail(ours) > 1.5 * _detail(cached), (_detail(ours), _detail(cached))
    # --gpu-augment's eval path reads the same source and gives the same tensor
    raw, sizes, _l, _i = pad_collate([(uint8_transform(proto, train=False)(original), 0, 0)])
    assert torch.equal(DeviceAugment(proto, train=False, device=CPU)(raw, sizes)[0], ours)


def test_cache_serves_only_the_pipeline_that_starts_with_its_size(checker_cub) -> None:  # type: ignore[no-untyped-def]
    official, root = checker_cub
    dataset = official(root)
    fair = resolve_protocol("fair")
    assert input_split(dataset, "train", fair, train=True)[1] == "decoded-cache@256"
    assert input_split(dataset, "test", fair, train=False)[1] == "decoded-cache@256"
    rrc = fair.replace(train_crop="random-resized")  # crops the full-resolution image: the files
    assert input_split(dataset, "train", rrc, train=True)[1] == "original files"
    assert input_split(dataset, "train", rrc, train=False)[1] == "decoded-cache@256"
    big = fair.replace(resize_size=356, input_size=336)
    assert input_split(dataset, "test", big, train=False)[1] == "original files"  # never the 256 copy
    build_cache(official(root, use_cache=False), root, 356)
    again = official(root)
    split, source = input_split(again, "test", big, train=False)
    assert source == "decoded-cache@356" and min(split.load_array(0).shape[:2]) == 356
    assert input_split(tiny_embedded().load(root), "train", fair, train=True)[1] == AS_LOADED


# -------------------------------------------------------------------------------------- weights version
def test_imagenet_weights_version_reaches_the_backbone_and_its_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("FGBENCH_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for version in ("imagenet1k_v1", "imagenet1k_v2"):
        name, url, path = backbones.imagenet_checkpoint("resnet50", version)
        assert name.endswith(version.upper()) and Path(url).name == path.name
        with pytest.raises(BackboneError) as err:
            resolve_weights("resnet50", "imagenet", imagenet_version=version)
        assert f"put {path.name} (from {url})" in str(err.value) and version.upper() in str(err.value)
    assert backbones.imagenet_checkpoint("resnet50", "imagenet1k_v1")[2] != \
        backbones.imagenet_checkpoint("resnet50", "imagenet1k_v2")[2]
    proto = Protocol(imagenet_weights="imagenet1k_v2").validate()
    ctx = BuildContext.from_protocol(proto, 12, np.zeros(4, dtype=np.int64), 2, None, "cub", 0)
    assert ctx.backbone_factory.imagenet_version == "imagenet1k_v2"  # type: ignore[attr-defined]
    assert Protocol().imagenet_weights == "imagenet1k_v1"  # fair: what every paper's pretrained=True loads
