"""``fgbench data`` commands, invoked on the group with click's CliRunner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fgbench.cli.data import data
from fgbench.data.official.cache import dataset_cache_dir

from .fixtures import WRITERS


@pytest.fixture
def run(fixture_host, monkeypatch):
    monkeypatch.delenv("FGBENCH_DATA", raising=False)

    def invoke(*args, env=None):
        return CliRunner().invoke(data, list(args), env=env, catch_exceptions=False)

    return invoke


def test_list_found_missing_damaged(tmp_path, run):
    WRITERS["cub"](tmp_path)
    WRITERS["aircraft"](tmp_path)
    (WRITERS["food101"](tmp_path).list_files["test"]).unlink()
    result = run("list", env={"FGBENCH_DATA": str(tmp_path)})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert rows["cub"][1:6] == ["real", "found", "6", "6", "3"]
    assert rows["aircraft"][2] == "found"
    assert rows["food101"][2] == "damaged" and "test.txt: list file is missing" in result.output
    assert rows["nabirds"][2] == "missing" and rows["vegfru"][2] == "missing"
    assert f"data root: {tmp_path}" in result.output


def test_check_reports_every_problem_with_paths(tmp_path, run):
    fx = WRITERS["cub"](tmp_path)
    fx.test_paths[0].unlink()
    result = run("check", "cub", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    out = result.output
    assert f"error: {fx.test_paths[0]}: image file is missing" in out
    assert f"error: {fx.damaged}: cannot decode image" in out
    assert "warning:" in out and "2 image(s) are not RGB" in out
    assert out.strip().splitlines()[-1] == f"Error: cub: 2 problem(s) found under {tmp_path}"
    assert "Traceback" not in out


def test_check_clean_dataset(tmp_path, run):
    WRITERS["vegfru"](tmp_path, damaged=False)
    result = run("check", "vegfru", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "vegfru: train 6, test 6, classes 3; 12 images decoded" in result.output
    assert result.output.strip().endswith("vegfru: OK")


def test_check_wrong_count_shows_expected(tmp_path, run):
    fx = WRITERS["food101"](tmp_path, damaged=False)
    lines = fx.list_files["train"].read_text().splitlines()
    fx.list_files["train"].write_text("\n".join(lines[:-1]) + "\n")
    result = run("check", "food101", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    assert "train 5 (expected 6)" in result.output
    assert f"{fx.list_files['train']}: lists 5 train images, expected 6" in result.output


def test_check_missing_gives_instructions(tmp_path, run):
    result = run("check", "aircraft", "--data-root", str(tmp_path), "--no-progress")
    assert result.exit_code == 1
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/" in line
    assert "fgvc-aircraft-2013b" in line and "--download` (needs network)" in line
    result = run("check", "cub", "--data-root", str(tmp_path))
    assert "CUB_200_2011" in result.output and "--download" not in result.output


def test_download_not_available(tmp_path, run):
    result = run("check", "nabirds", "--download", "--data-root", str(tmp_path))
    assert result.exit_code == 1 and "cannot be downloaded automatically" in result.output


def test_download_failure_is_one_line(tmp_path, run, monkeypatch):
    import fgbench.cli.data as cli

    spec = cli._spec("food101")

    def offline(root):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    import dataclasses

    monkeypatch.setattr(cli, "_spec", lambda name: dataclasses.replace(spec, download=offline))
    result = run("check", "food101", "--download", "--data-root", str(tmp_path))
    assert result.exit_code == 1
    assert "needs network" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: download of food101 failed: OSError")


def test_unknown_name(tmp_path, run):
    result = run("check", "cubb", "--data-root", str(tmp_path))
    assert result.exit_code == 1 and "Unknown dataset 'cubb'. Did you mean cub?" in result.output


def test_prepare_then_up_to_date(tmp_path, run):
    WRITERS["nabirds"](tmp_path, damaged=False)
    args = ("prepare", "nabirds", "--data-root", str(tmp_path), "--size", "16", "--workers", "0", "--no-progress")
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert (dataset_cache_dir(tmp_path, "nabirds", 16) / "meta.json").is_file()
    assert "decoded cache written to" in result.output
    assert "up to date" in run(*args).output


def test_prepare_damaged_points_to_check(tmp_path, run):
    fx = WRITERS["cub"](tmp_path)
    result = run("prepare", "cub", "--data-root", str(tmp_path), "--size", "16", "--workers", "0", "--no-progress")
    assert result.exit_code == 1
    assert str(fx.damaged) in result.output and "run `fgbench data check cub`" in result.output
    result = run("prepare", "vegfru", "--data-root", str(tmp_path), "--workers", "0")
    assert result.exit_code == 1 and "vegfru is not available" in result.output


def test_root_is_a_file(tmp_path, run):
    root = tmp_path / "file"
    root.write_text("")
    result = run("check", "cub", "--data-root", str(root))
    assert result.exit_code == 1 and "data root is not a directory" in result.output
