"""The GPU benchmark of issue #18 (``benchmarks/gpu_bench.sh``) in its tiny CPU mode.

The tiny mode runs the code paths of the device run at toy sizes (40 JPEGs of
64 px in the CUB layout, ResNet-18, 32 px crops, a few steps), so the script
is known to work before GPU time is spent on it.  The default suite runs the
headline sections through the real entry point (bash script, PYTHONPATH set
up by it); every section runs in the ``slow`` test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_bench  # noqa: E402

HEADLINE = ["data", "bare_dpsh", "harness_dpsh_gpu_augment", "loader_cache_gpu_augment_auto", "loader_nvjpeg",
            "loader_jpeg_pil_auto", "eval_codes"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    paths = [str(REPO), *(str(p) for p in sorted((REPO / "plugins").glob("fgbench-*")))]
    env = dict(os.environ, OUT=str(tmp_path / "out"), FGBENCH_GPU_BENCH_DATA=str(tmp_path / "data"),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))
    env.pop("FGBENCH_GPU_BENCH_BUDGET_S", None)
    env.update(extra)
    return env


def run_tiny(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, dict[str, Any]]]:
    """``bash benchmarks/gpu_bench.sh --tiny ARGS``; returns the process and the records by section name."""
    proc = subprocess.run(["bash", str(BENCH / "gpu_bench.sh"), "--tiny", *args], env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=900)
    records = {r["name"]: r for r in gpu_bench.read_results(tmp_path / "out")}
    return proc, records


def _log(tmp_path: Path) -> str:
    log = tmp_path / "out" / "gpu_bench.log"
    return log.read_text()[-3000:] if log.exists() else "(no log)"


def _check_outputs(tmp_path: Path) -> None:
    """Every results line is JSON, no temporary file is left in OUT, the data set is outside OUT and complete."""
    out = tmp_path / "out"
    for line in (out / "results.jsonl").read_text().splitlines():
        json.loads(line)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock")]
    assert not leftovers, leftovers
    assert not list(out.rglob("*.jpg")) and not list(out.rglob("*.pixels")), "data must not be written into OUT"
    data = tmp_path / "data"
    assert (data / "CUB_200_2011" / "images.txt").is_file()
    assert not list(data.glob(".CUB_200_2011.tmp-*"))


def test_tiny_headline_sections(tmp_path: Path) -> None:
    proc, rec = run_tiny(tmp_path, "--only", ",".join(HEADLINE))
    assert proc.returncode == 0, _log(tmp_path)
    assert "exit status 0" in proc.stdout
    for name in ["environment", *HEADLINE, "done"]:
        assert rec[name]["status"] == "ok", (name, rec[name].get("error") or rec[name].get("reason"), _log(tmp_path))
    assert not set(rec) - {"start", "environment", "done", *HEADLINE}, "--only ran other sections"

    data = rec["data"]
    assert data["images"] == 40 and data["reader_problems"] == 0
    assert data["splits"] == {"train": "CachedSplit", "test": "CachedSplit"}  # read through the decoded cache
    assert data["official_cub_sizes"] is False and data["cache_short_side"] == gpu_bench.TINY.resize_size

    bare, harness = rec["bare_dpsh"], rec["harness_dpsh_gpu_augment"]
    assert bare["steps"] == gpu_bench.TINY.bare_steps and bare["images_per_s"] > 0
    assert harness["gpu_augment"] is True and harness["runtime"]["channels_last"] is True
    assert len(harness["epoch_s"]) == harness["warm_epochs"] + harness["steady_epochs"]
    assert harness["steady_steps"] == harness["steps_per_epoch"] * harness["steady_epochs"] > 0
    assert harness["ratio_to_bare"] == pytest.approx(harness["steady_images_per_s"] / bare["images_per_s"], rel=0.01)

    for name in ("loader_cache_gpu_augment_auto", "loader_nvjpeg", "loader_jpeg_pil_auto"):
        loader = rec[name]
        assert loader["images_per_pass"] == 24 and loader["images_per_s"] > 0  # 24 train images, batches of 8
        assert loader["ratio_to_training"] == pytest.approx(loader["images_per_s"] / bare["images_per_s"], rel=0.01)
    assert rec["loader_cache_gpu_augment_auto"]["split"] == "CachedSplit"
    assert rec["loader_jpeg_pil_auto"]["split"] == "FileSplit"
    assert "no CUDA" in rec["loader_nvjpeg"]["decoder"]  # recorded, not silently passed off as nvjpeg

    assert rec["eval_codes"]["cub_48b"]["exact_vs_cpu_kernel"] is True

    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "harness (cache + `--gpu-augment`) / bare loop" in summary and "Finished in" in summary
    _check_outputs(tmp_path)


@pytest.mark.slow
def test_tiny_every_section(tmp_path: Path) -> None:
    proc, rec = run_tiny(tmp_path)
    assert proc.returncode == 0, _log(tmp_path)
    for name in gpu_bench.section_names():
        assert rec[name]["status"] == "ok", (name, rec[name].get("error") or rec[name].get("reason"), _log(tmp_path))
    assert rec["done"]["status"] == "ok"
    assert {r["method"] for n, r in rec.items() if n.startswith("method_")} == set(gpu_bench.METHODS)
    assert rec["method_multifusnet"]["input_size"] == gpu_bench.TINY.paper_sizes(336, 356)[0]
    assert "dynamo disabled" in rec["harness_dpsh_compile"]["compile_note"]
    record = json.loads((tmp_path / "out" / rec["e2e_record"]["record"]).read_text())
    assert record["dataset"] == "cub" and record["method"] == "dpsh" and record["engine"]["gpu_augment"] is True
    assert record["num_query"] == 16 and record["num_database"] == 24
    _check_outputs(tmp_path)


def test_no_time_left_skips_every_section_with_its_reason(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py"), "--tiny", "--budget-s", "0",
                           "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data")],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = {r["name"]: r for r in gpu_bench.read_results(tmp_path / "out")}
    assert rec["environment"]["status"] == "ok"
    names = gpu_bench.section_names()[1:]
    assert all(rec[n]["status"] == "skipped" for n in names), {n: rec[n]["status"] for n in names}
    assert rec["data"]["reason"].startswith("time budget")
    assert rec["bare_dpsh"]["reason"] == "needs section data (not ok)"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| bare_dpsh | skipped |" in summary
    assert not (tmp_path / "data").exists()
