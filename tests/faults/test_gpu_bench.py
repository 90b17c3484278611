"""Fault injection for the GPU benchmark (issue #18): the CUB-layout generator and the section runner.

Each test injects one fault and checks: no silent wrong result, no traceback
(a one-line error or a recovery), nothing finished lost, no orphan file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_bench  # noqa: E402
import make_cub_like as mcl  # noqa: E402

TINY = mcl.TINY


def _env(tmp_path: Path) -> dict[str, str]:
    paths = [str(REPO), *(str(p) for p in sorted((REPO / "plugins").glob("fgbench-*")))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))
    env.pop("FGBENCH_GPU_BENCH_BUDGET_S", None)
    env.pop("FGBENCH_GPU_BENCH_TINY", None)
    return env


def _no_orphans(root: Path) -> None:
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], "temporary files left behind"


# --------------------------------------------------------------------------------------------- generator


def test_an_existing_dataset_folder_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    real = tmp_path / "CUB_200_2011"
    real.mkdir()
    (real / "images.txt").write_text("1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg\n")
    code = mcl.main(["--root", str(tmp_path), "--tiny"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Error: ") and err.count("\n") == 1 and "was not made by make_cub_like.py" in err
    assert [p.name for p in real.iterdir()] == ["images.txt"]
    assert (real / "images.txt").read_text().startswith("1 001.Black_footed")


def test_a_write_failure_leaves_no_partial_set_and_a_rerun_completes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_render, calls = mcl.render, []

    def failing(config: mcl.CubLikeConfig, item: object) -> object:
        calls.append(item)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real_render(config, item)

    monkeypatch.setattr(mcl, "render", failing)
    with pytest.raises(OSError):
        mcl.make_cub_like(tmp_path, TINY, workers=1)
    assert not (tmp_path / mcl.FOLDER).exists()
    _no_orphans(tmp_path)
    monkeypatch.setattr(mcl, "render", real_render)
    made = mcl.make_cub_like(tmp_path, TINY, workers=1)
    assert not made.reused and made.images == TINY.train + TINY.test
    assert len(list((tmp_path / mcl.FOLDER / "images").rglob("*.jpg"))) == made.images


def test_the_leftover_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    leftover = tmp_path / f".{mcl.FOLDER}.tmp-999999" / "images" / "001.Synthetic_bird_001"
    leftover.mkdir(parents=True)
    (leftover / "half.jpg").write_bytes(b"\xff\xd8\xff")
    mcl.make_cub_like(tmp_path, TINY, workers=1)
    assert not leftover.parents[1].exists()
    _no_orphans(tmp_path)


def test_a_set_regenerated_with_other_settings_is_not_served_from_the_old_cache(tmp_path: Path) -> None:
    from fgbench.data.official import catalog
    from fgbench.data.base import ExpectedSizes
    from fgbench.data.official.cache import CachedSplit, build_cache

    official = catalog.CUB.with_expected(ExpectedSizes(TINY.train, TINY.test, TINY.classes))
    mcl.make_cub_like(tmp_path, TINY, workers=1)
    build_cache(official(tmp_path, use_cache=False), tmp_path, size=40)
    other = dataclasses.replace(TINY, long_side=72)  # other pixels, the same ids, labels and split
    made = mcl.make_cub_like(tmp_path, other, workers=1)  # replaces the first set
    assert not made.reused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = official(tmp_path, cache_size=40)
    assert not isinstance(dataset.split("train"), CachedSplit)
    assert any("stale decoded cache" in str(w.message) for w in caught)
    build_cache(official(tmp_path, use_cache=False), tmp_path, size=40)
    fresh = official(tmp_path, cache_size=40)
    from fgbench.data.official.images import load_resized

    first = fresh.split("train")
    assert isinstance(first, CachedSplit)
    assert np.array_equal(first.load_array(0), load_resized(fresh.file_split("train").paths[0], 40))


def test_bad_generator_settings_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert mcl.main(["--root", str(tmp_path), "--tiny", "--short-side", "60-40"]) == 1
    assert mcl.main(["--root", str(tmp_path), "--tiny", "--short-side", "abc"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("Error: ") for line in err)
    assert not (tmp_path / mcl.FOLDER).exists()


# --------------------------------------------------------------------------------------------- runner


def _bench(tmp_path: Path, **limits: float) -> gpu_bench.Bench:
    scale = dataclasses.replace(gpu_bench.TINY, limits={**gpu_bench.TINY.limits, **limits})
    return gpu_bench.Bench(scale, tmp_path / "out", 600.0, tmp_path / "data", "cpu")


def test_a_failing_section_is_recorded_in_one_line_and_the_run_goes_on(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    bench.section("broken", lambda: {"x": 1 / 0})
    bench.section("fine", lambda: {"value": 3})
    rec = {r["name"]: r for r in gpu_bench.read_results(bench.out)}
    assert rec["broken"]["status"] == "error" and rec["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert rec["fine"] == {**rec["fine"], "status": "ok", "value": 3}
    summary = (bench.out / "summary.md").read_text()
    assert "| broken | error |" in summary and "| fine | ok |" in summary
    _no_orphans(bench.out)


def test_a_hanging_section_is_cut_off_at_its_limit(tmp_path: Path) -> None:
    bench = _bench(tmp_path, hang=1.0)

    def hang() -> dict:
        try:
            time.sleep(30)
        except Exception:  # noqa: BLE001 - code that swallows exceptions must not swallow the time limit
            pass
        return {"slept": True}

    t = time.perf_counter()
    bench.section("hang", hang)
    assert time.perf_counter() - t < 10
    bench.section("after", lambda: {"value": 1})
    rec = {r["name"]: r for r in gpu_bench.read_results(bench.out)}
    assert rec["hang"]["status"] == "timeout" and "slept" not in rec["hang"]
    assert rec["after"]["status"] == "ok"


def test_a_missing_method_plugin_is_one_recorded_error(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    bench.section("method_nosuch", lambda: gpu_bench.sec_method(bench, "nosuch"))
    rec = gpu_bench.read_results(bench.out)[-1]
    assert rec["status"] == "error" and rec["error"].startswith("RuntimeError: fgbench_nosuch is not importable")


def test_a_torn_last_line_is_dropped_and_the_summary_still_written(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    bench.section("fine", lambda: {"value": 2})
    with open(bench.out / gpu_bench.RESULTS_FILE, "a") as fh:
        fh.write('{"name": "half", "sta')  # a kill in the middle of a write
    assert gpu_bench.main(["--out", str(bench.out), "--summarize", "--note", "killed"]) == 0
    rec = {r["name"]: r for r in gpu_bench.read_results(bench.out)}
    assert rec["fine"]["value"] == 2 and "half" not in rec and rec["stopped"]["reason"] == "killed"
    assert "Stopped: killed." in (bench.out / "summary.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--only", "bare_dpsh,nosuch"], "Error: --only nosuch: no such section"),
    (["--data-root", "{out}/data"], "is inside --out"),
])
def test_bad_options_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                             message: str) -> None:
    out = tmp_path / "out"
    argv = ["--tiny", "--out", str(out), *(a.format(out=out) for a in args)]
    assert gpu_bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and message in err
    assert not (out / gpu_bench.RESULTS_FILE).exists()


def test_the_full_run_without_cuda_stops_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py"), "--out", str(tmp_path / "out"),
                           "--data-root", str(tmp_path / "data")], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"Error: {gpu_bench.NO_CUDA}"
    rec = {r["name"]: r for r in gpu_bench.read_results(tmp_path / "out")}
    assert rec["stopped"]["reason"] == gpu_bench.NO_CUDA and "done" not in rec
    assert not (tmp_path / "data").exists()


def test_sigterm_keeps_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(BENCH / "gpu_bench.py"), "--tiny", "--out", str(out),
                             "--data-root", str(tmp_path / "data"), "--only", "bare_dpsh,harness_dpsh_gpu_augment"],
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(r["name"] == "data" for r in gpu_bench.read_results(out)):
            assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = (out / gpu_bench.RESULTS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    by = {r["name"]: r for r in records}
    assert by["data"]["status"] == "ok" and records[-1]["name"] == "stopped" and "done" not in by
    assert "Stopped: interrupted" in (out / "summary.md").read_text()
    _no_orphans(out)
    assert (tmp_path / "data" / mcl.FOLDER / "images.txt").is_file()  # the finished data set is kept
    _no_orphans(tmp_path / "data")
