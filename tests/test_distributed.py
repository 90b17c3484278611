"""One job on two processes (DDP, gloo on the CPU) trains like one process; rank 0 alone writes.

The ``plain`` test method has no BatchNorm and a DPSH-style memory that is
written and read in the same loss, so with the centre crop (no random
augmentation) two processes must reproduce the single-process run up to
float summation order: same global batches (GlobalBatchSampler), averaged
gradients equal to the single-process gradient, memories gathered at each
update.  DPSH (``crashy``, a ResNet with BatchNorm) runs in the same launch
to exercise the BatchNorm buffer handling; its batch statistics are per
rank, so it is only checked to train and evaluate.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from fgbench.records import read_record

from test_engine_support import fgbench_cmd, plugin_dir, subprocess_env  # noqa: F401  (plugin_dir is a fixture)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

RUN = ["run", "-d", "tiny", "--bits", "8", "--epochs", "2", "--device", "cpu", "-q", "--set", "augmentation=none"]


def test_two_processes_match_one(plugin_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        (d / "dump").mkdir(parents=True)
    procs = [
        subprocess.Popen(fgbench_cmd(*RUN, "-m", "plain", "--results", str(one / "results")),
                         env=subprocess_env(plugin_dir, FGB_DUMP_DIR=str(one / "dump")),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen(fgbench_cmd(*RUN, "-m", "plain,crashy", "--nproc", "2", "--results", str(two / "results")),
                         env=subprocess_env(plugin_dir, FGB_DUMP_DIR=str(two / "dump")),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[1].count("2 job(s)") == 1, outs[1]  # only rank 0 prints

    # memories identical on both ranks after every epoch, and equal to the single-process memory
    for epoch in (0, 1):
        r0 = torch.load(two / "dump" / f"rank0-epoch{epoch}.pt")
        r1 = torch.load(two / "dump" / f"rank1-epoch{epoch}.pt")
        single = torch.load(one / "dump" / f"rank0-epoch{epoch}.pt")
        # encode_train() is sharded across ranks, then gathered; ClassMeans.add is all-gathered like memory updates
        for key in ("memory", "weight", "encoded", "class_sums", "class_counts"):
            assert torch.equal(r0[key], r1[key]), key
            torch.testing.assert_close(r0[key], single[key], atol=1e-4, rtol=1e-4)
        assert (single["memory"] != 0).all() and single["encoded"].shape == (24, 8)
        assert single["class_counts"].sum() == 24 and torch.equal(r0["class_counts"], single["class_counts"])

    a_path, b_path = (next((d / "results").rglob("plain/*.json")) for d in (one, two))
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    assert b["engine"]["world_size"] == 2 and b["environment"]["world_size"] == 2 and a["engine"]["world_size"] == 1
    for x, y in zip(a["training"]["epoch_losses"], b["training"]["epoch_losses"]):
        assert x.keys() == y.keys() and all(abs(x[k] - y[k]) < 1e-4 for k in x)
    assert read_record(a_path).per_query_ap == pytest.approx(read_record(b_path).per_query_ap, abs=1e-6)

    dpsh = json.loads(next((two / "results").rglob("crashy/*.json")).read_text())
    assert 0.0 <= dpsh["metrics"]["map"] <= 1.0 and dpsh["engine"]["world_size"] == 2
    files = sorted(p.name for p in (two / "results").rglob("*") if p.is_file())
    # one record and its codes sidecar per job, no locks or checkpoints left
    assert files == ["bits8-seed0.codes.npz", "bits8-seed0.codes.npz", "bits8-seed0.json", "bits8-seed0.json"]
