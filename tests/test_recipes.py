"""The bundled paper recipes resolve to their papers' values; `fgbench recipe`; the encode-path cost of CNET and CMBH.

The expected values are quoted from the papers (and, where a paper is
silent, from the authors' code), with the section cited — not copied from
the plugins.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fgbench._plugins import get_host
from fgbench.cli import main
from fgbench.engine.grid import expand_jobs
from fgbench.protocol import Protocol

REAL = ("cub", "aircraft", "food101", "nabirds", "vegfru")
BUNDLED = ("cmbh", "cnet", "dpsh", "exchnet", "multifusnet", "fish", "semicon", "a2net", "hashnet", "adsh", "csq")


def _registry():  # type: ignore[no-untyped-def]
    registry = get_host().registry
    missing = [m for m in BUNDLED if m not in registry.methods]
    if missing:
        pytest.skip(f"bundled plugin(s) not installed: {', '.join(missing)}")
    return registry


def _paper(method: str, dataset: str) -> Protocol:
    """The protocol `fgbench run --protocol paper` gives a job (the grid's own resolution)."""
    return expand_jobs(_registry(), [method], [dataset], "paper", [12], [0])[0].protocol


def _fields(proto: Protocol, expected: dict) -> dict:
    return {k: getattr(proto, k) for k in expected}


# CMBH, CVPR 2024, Sec. 4.1 (Implementation details): "SGD ... momentum 0.9, weight decay 5e-4; 100 epochs;
# initial learning rate 0.001, divided by 10 at the 70th epoch; batch size 16 for CUB-200-2011 and
# Aircraft, 64 for the other three (large) datasets"; ResNet-50 (Table 2).
@pytest.mark.parametrize("dataset, batch", [("cub", 16), ("aircraft", 16), ("food101", 64), ("nabirds", 64),
                                            ("vegfru", 64)])
def test_cmbh_recipe_is_sec_4_1(dataset: str, batch: int) -> None:
    expected = {"backbone": "resnet50", "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "epochs": 100,
                "lr": 0.001, "schedule": "step", "milestones": (70,), "batch_size": batch}
    assert _fields(_paper("cmbh", dataset), expected) == expected


# CNET (Zeng & Zheng 2023), Sec. 4.3: "SGD with a momentum of 0.9, a weight decay of 0.0003 ... number of
# iterations of 150. FGVC-Aircraft: initial learning rate 0.0035, mini-batch 32. VegFru: 0.005, 128.
# CUB-200-2011, Food101 and NABirds: 0.008, 128."  Authors' code: StepLR(step_size=80), one lr for all layers.
@pytest.mark.parametrize("dataset, lr, batch", [("aircraft", 0.0035, 32), ("vegfru", 0.005, 128),
                                                ("cub", 0.008, 128), ("food101", 0.008, 128),
                                                ("nabirds", 0.008, 128)])
def test_cnet_recipe_is_sec_4_3(dataset: str, lr: float, batch: int) -> None:
    expected = {"backbone": "resnet50", "optimizer": "sgd", "momentum": 0.9, "weight_decay": 3e-4, "epochs": 150,
                "lr": lr, "batch_size": batch, "schedule": "step", "milestones": (80,), "backbone_lr_mult": 1.0}
    assert _fields(_paper("cnet", dataset), expected) == expected


# Multi-FusNet (PeerJ CS 2024), "Implementation details": "SGD ... momentum 0.91. weight decay 0.0005,
# number of iterations 300. In all datasets, a uniform starting learning rate of 0.0035 ... mini-batch
# size of 128"; pre-trained ResNet-50.  Authors' code: StepLR(step_size=80).
@pytest.mark.parametrize("dataset", REAL)
def test_multifusnet_recipe_is_the_implementation_details(dataset: str) -> None:
    expected = {"backbone": "resnet50", "optimizer": "sgd", "momentum": 0.91, "weight_decay": 5e-4, "epochs": 300,
                "lr": 0.0035, "batch_size": 128, "schedule": "step", "milestones": (80, 160, 240)}
    assert _fields(_paper("multifusnet", dataset), expected) == expected


# DPSH (IJCAI 2016), Sec. 4: mini-batch SGD, batch 128 (CNN-F, replaced by the protocol's backbone).
# Authors' PyTorch code (jiangqy/DPSH-pytorch, DPSH_CIFAR_10.py): optim.SGD(lr=0.05, weight_decay=1e-5),
# no momentum, epochs = 150, lr * 0.1 ** (epoch // 50).
@pytest.mark.parametrize("dataset", REAL)
def test_dpsh_recipe_is_sec_4_and_the_authors_code(dataset: str) -> None:
    expected = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.05, "weight_decay": 1e-5, "batch_size": 128,
                "epochs": 150, "schedule": "step", "milestones": (50, 100), "backbone_lr_mult": 1.0,
                "backbone": Protocol().backbone}  # the protocol's backbone: CNN-F is not in torchvision
    assert _fields(_paper("dpsh", dataset), expected) == expected


# ExchNet: the reference code aassxun/DSH_Analysis adsh_exchnet.py: SGD lr 1e-4, momentum 0.9, weight decay
# 1e-4, batch 16, ResNet-50 (its schedule in optimizer steps is tested with the ExchNet plugin).
@pytest.mark.parametrize("dataset", REAL)
def test_exchnet_recipe_optimizer_is_the_reference_code(dataset: str) -> None:
    expected = {"backbone": "resnet50", "optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 1e-4,
                "batch_size": 16}
    assert _fields(_paper("exchnet", dataset), expected) == expected


def _train_steps(proto: Protocol, dataset: str) -> int:
    """Optimizer steps of the whole run on the official training split (the engine's count per epoch)."""
    from fgbench.data.official.catalog import REAL_DATASETS
    from fgbench.engine.sampling import steps_per_epoch

    n = next(d for d in REAL_DATASETS if d.name == dataset).expected.train
    return proto.epochs * steps_per_epoch(n, proto.batch_size, proto.epoch_sample)


# SEMICON: the authors' README training commands (aassxun/SEMICON, the mirror of NJUST-VIPGroup/SEMICON; the
# Namespace lines of its SEMICON_log/*/train.log agree): --max-epoch 30 --batch-size 16 --optim SGD --wd 1e-4
# --momen 0.91, and per dataset --max-iter / --num-samples / --lr / --lr-step: CUB, Aircraft 40 / 2000 / 2.5e-4 /
# 40; Food101 50 / 2000 / 2.5e-4 / 45; VegFru, NABirds 50 / 4000 / 5e-4 / 45.  SEMICON_train.py: each outer
# iteration samples num_samples images and trains max_epoch epochs over them; MultiStepLR steps once per outer
# iteration.  Steps: max_iter x 30 x num_samples / 16.
@pytest.mark.parametrize("dataset, outer, samples, lr, lr_step, steps", [
    ("cub", 40, 2000, 2.5e-4, 40, 150_000), ("aircraft", 40, 2000, 2.5e-4, 40, 150_000),
    ("food101", 50, 2000, 2.5e-4, 45, 187_500), ("vegfru", 50, 4000, 5e-4, 45, 375_000),
    ("nabirds", 50, 4000, 5e-4, 45, 375_000)])
def test_semicon_recipe_is_the_authors_training_commands(dataset: str, outer: int, samples: int, lr: float,
                                                          lr_step: int, steps: int) -> None:
    proto = _paper("semicon", dataset)
    expected = {"backbone": "resnet50", "optimizer": "sgd", "lr": lr, "momentum": 0.91, "weight_decay": 1e-4,
                "batch_size": 16, "epoch_sample": samples, "resample_every": 30, "epochs": outer * 30}
    assert _fields(proto, expected) == expected
    decays = [m for m in proto.milestones if m < proto.epochs] if proto.schedule == "step" else []
    assert decays == ([lr_step * 30] if lr_step < outer else [])
    assert _train_steps(proto, dataset) == steps


# A2-Net: no authors' code was found; the re-implementation aassxun/DSH_Analysis (set_flag.py: flag "a2net" and
# cub200 / aircraft / food101 / vegfru / nabirds; A_2_Net.py; every logs/*/*a2net* Namespace line): SGD lr 1e-4,
# momentum 0.9, weight decay 1e-4, batch 16, max_iter 40, max_epoch 30, lr_step 35, num_samples 2000 (VegFru,
# NABirds 4000).  Steps: 40 x 30 x num_samples / 16.
@pytest.mark.parametrize("dataset, samples, steps", [("cub", 2000, 150_000), ("aircraft", 2000, 150_000),
                                                     ("food101", 2000, 150_000), ("vegfru", 4000, 300_000),
                                                     ("nabirds", 4000, 300_000)])
def test_a2net_recipe_is_the_reimplementations_schedule(dataset: str, samples: int, steps: int) -> None:
    proto = _paper("a2net", dataset)
    expected = {"backbone": "resnet50", "optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 1e-4,
                "batch_size": 16, "epoch_sample": samples, "resample_every": 30, "epochs": 40 * 30,
                "schedule": "step", "milestones": (35 * 30,)}
    assert _fields(proto, expected) == expected
    assert _train_steps(proto, dataset) == steps


@pytest.mark.parametrize("method", BUNDLED)
def test_every_recipe_field_cites_its_source(method: str) -> None:
    spec = _registry().methods.get(method)
    fields = {key for entry in spec.paper_recipe.values() for key in entry}
    assert fields, f"{method} has no paper recipe"
    assert sorted(fields - set(spec.paper_recipe_sources)) == [], f"{method}: recipe fields without a source"
    assert sorted(set(spec.paper_recipe_sources) - fields) == [], f"{method}: sources for fields it does not set"


def test_cmbh_default_config_runs_all_four_regions() -> None:
    # CMBH Sec. 4.1: M = 4 regions; Eq. 14 sums L_region over all M of them
    config = _registry().methods.get("cmbh").make_config()
    assert config.regions == 4 and config.regions_per_step in (0, 4)


# --- fgbench recipe ------------------------------------------------------------------------------


def _recipe(*args: str) -> dict:
    _registry()
    res = CliRunner().invoke(main, ["recipe", *args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_recipe_names_the_layer_that_set_each_field() -> None:
    out = _recipe("cmbh", "--dataset", "cub", "--protocol", "paper", "--epochs", "3", "--set", "eval_batch_size=64",
                  "--set", "cmbh.k=3")
    proto = out["protocol"]
    assert proto["epochs"] == {"value": 3, "set_by": "command line"}              # over the recipe's 100
    assert proto["batch_size"]["value"] == 16 and proto["batch_size"]["set_by"] == "paper recipe (cub)"
    assert proto["lr"]["set_by"] == "paper recipe" and proto["lr"]["source"].startswith("Sec. 4.1")
    assert proto["eval_batch_size"] == {"value": 64, "set_by": "command line"}
    assert proto["selection"] == {"value": "final", "set_by": "default"}
    assert out["config"]["k"] == {"value": 3, "set_by": "command line"}
    assert out["config"]["regions"]["set_by"] == "default"


def test_recipe_fair_on_the_embedded_dataset_shows_its_scale_overrides() -> None:
    from fgbench.data.embedded import embedded_spec

    scale = embedded_spec().fair_overrides
    out = _recipe("dpsh")
    for key, value in scale.items():
        shown = out["protocol"][key]
        assert shown["value"] == (list(value) if isinstance(value, tuple) else value)
        assert shown["set_by"] == "dataset scale"
    assert all(f["set_by"] != "paper recipe" for f in out["protocol"].values())


def test_recipe_agrees_with_the_job_fgbench_run_would_run() -> None:
    out = _recipe("cnet", "--dataset", "aircraft", "--protocol", "paper", "--bits", "24", "--lr", "0.01")
    proto = expand_jobs(_registry(), ["cnet"], ["aircraft"], "paper", [24], None, {"lr": 0.01})[0].protocol
    assert {k: f["value"] for k, f in out["protocol"].items()} == proto.to_dict()
    assert out["protocol"]["bits"]["set_by"] == "command line"


def test_recipe_refuses_grid_options_and_bad_names_in_one_line() -> None:
    _registry()
    for args, text in ((["dpsh", "--methods", "cnet"], "give the method as METHOD"),
                       (["nope"], "Unknown method"), (["dpsh", "-d", "nope"], "Unknown dataset"),
                       (["dpsh", "--set", "bogus=1"], "no protocol field")):
        res = CliRunner().invoke(main, ["recipe", *args])
        assert res.exit_code != 0 and text in res.output and "Traceback" not in res.output, res.output


# --- encode-path cost ----------------------------------------------------------------------------


def _cost(method: str):  # type: ignore[no-untyped-def]
    from fgbench.engine.profile import profile_methods

    return profile_methods(_registry(), [method], [12], "resnet50", 224, 200)[0]


def test_cnet_encode_path_is_the_authors_41_09_m_and_9_30_g() -> None:
    # the authors' code (kaiba007/FG-CNET) at ResNet-50, 12 bits, 200 classes, 224 px: 41.09 M params, 9.30 G MACs
    row = _cost("cnet")
    assert float(row["params (M)"]) == pytest.approx(41.09, abs=0.005)
    assert float(row["FLOPs (G MACs)"]) == pytest.approx(9.30, abs=0.01)
    assert row["bare"] == ()


def test_cmbh_encode_path_is_table_5_with_the_c_vectors_apart() -> None:
    # CMBH Table 5, ResNet-50 @12 bits: 14.32 M params, 4.35 G FLOPs; the C-vectors are 200 x k=2 x d=512
    row = _cost("cmbh")
    assert float(row["params (M)"]) == pytest.approx(14.32, abs=0.005)
    assert row["bare"] == (("c_vectors", 200 * 2 * 512),)
    # fgbench counts conv / matmul MACs only; Table 5's counter adds element-wise ops (BN, ReLU, pooling): ~1 %
    assert float(row["FLOPs (G MACs)"]) == pytest.approx(4.35, rel=0.015)


def test_profile_reports_the_c_vectors_on_their_own_line() -> None:
    _registry()
    res = CliRunner().invoke(main, ["profile", "--methods", "cmbh", "--bits", "12"], catch_exceptions=False)
    lines = res.output.splitlines()
    row = next(line for line in lines if line.startswith("| cmbh"))
    assert "| 14.32 " in row
    extra = [line for line in lines if line.startswith("cmbh @12:")]
    assert len(extra) == 1 and "0.205 M" in extra[0] and "c_vectors" in extra[0] and "14.53 M" in extra[0]
