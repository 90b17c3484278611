"""Leaderboards from synthetic run records: tables, paper columns, significance, figures, determinism, CLI.

Records are built directly (no training): ``alpha`` is clearly better than
``beta`` on a tiny embedded dataset, over bits 8 and 16 and seeds 0-2.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fgbench.cli import main
from fgbench.results import leaderboard as lb
from fgbench.metrics.summaries import retrieval_examples_field
from fgbench.records import RunRecord, iter_records, record_path, write_record
from fgbench.testing import tiny_embedded

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = {"name": "fair", "backbone": "resnet18", "weights": "random", "input_size": 32, "resize_size": 36,
            "epochs": 1, "optimizer": "adam", "lr": 0.0001, "bits": [8, 16], "seeds": [0, 1, 2]}


def _labels() -> tuple[np.ndarray, np.ndarray]:
    ds = tiny_embedded().load(Path("."))
    return np.asarray(ds.split("test").labels), np.asarray(ds.split("train").labels)


def synthetic_records(methods: dict[str, float] | None = None, bits: tuple[int, ...] = (8, 16),
                      seeds: tuple[int, ...] = (0, 1, 2), protocol: str = "fair", dataset: str = "tiny",
                      with_figure_data: bool = True) -> list[RunRecord]:
    """One record per (method, bits, seed); ``methods`` maps name -> mean AP level."""
    methods = methods or {"alpha": 0.6, "beta": 0.3}
    q_lab, d_lab = _labels()
    records = []
    for mi, (method, level) in enumerate(sorted(methods.items())):
        for b in bits:
            for s in seeds:
                rng = np.random.default_rng(1000 * mi + 10 * b + s)
                ap = np.clip(level + 0.002 * b + 0.05 * rng.standard_normal(len(q_lab)), 0, 1).round(6)
                extra = {}
                if with_figure_data:
                    centres = rng.standard_normal((int(d_lab.max()) + 1, b))
                    q = centres[q_lab] + (1.5 - level) * rng.standard_normal((len(q_lab), b))
                    d = centres[d_lab] + (1.5 - level) * rng.standard_normal((len(d_lab), b))
                    extra = {"pr_curve": {"precision": list(np.linspace(level + 0.2, 0.25, b + 1).round(6)),
                                          "recall": list(np.linspace(0.0, 1.0, b + 1).round(6))},
                             "retrieval_examples": retrieval_examples_field(torch.tensor(q), torch.tensor(d),
                                                                            q_lab, d_lab)}
                records.append(RunRecord(
                    method=method, dataset=dataset, bits=b, seed=s, protocol={**PROTOCOL, "name": protocol},
                    metrics={"map": float(ap.mean())}, cost={"params_m": 11.18 + mi + b / 1000,
                                                             "flops_g": 1.814 + mi, "input_size": 224},
                    train_seconds=2.0 + mi, eval_seconds=0.1,
                    environment={"device_name": "cpu", "fgbench": "0.1.0+gabc1234"},
                    backbone_weights="random", per_query_ap=[float(v) for v in ap], **extra))
    return records


def tiny_loader(name: str):  # type: ignore[no-untyped-def]
    if name != "tiny":
        raise LookupError(f"{name} is not on disk")
    return tiny_embedded().load(Path("."))


PAPER = {"alpha": {"tiny": {8: (0.7, "Table 1"), 16: (0.5, "Table 1")}}}


@pytest.fixture(scope="module")
def records() -> list[RunRecord]:
    return synthetic_records()


@pytest.fixture(scope="module")
def board(records) -> lb.Board:  # type: ignore[no-untyped-def]
    (b,) = lb.build_boards(lb.records_frame(records), PAPER, {"alpha", "beta"})
    return b


def test_cells_are_mean_std_over_seeds_with_n(records, board) -> None:  # type: ignore[no-untyped-def]
    values = [r.metrics["map"] for r in records if r.method == "alpha" and r.bits == 8]
    cell = board.row("alpha").cells[8]
    assert cell.n == 3 and cell.mean == pytest.approx(np.mean(values)) and cell.std == pytest.approx(np.std(values, ddof=1))
    table = lb.measured_table(board)
    assert f"**{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n=3)**" in table   # best mAP in bold
    assert [r.method for r in board.rows] == ["alpha", "beta"]                          # ordered by mean mAP
    assert table.splitlines()[0].endswith("| params (M) | FLOPs (G MACs @224) |")      # the convention in the header
    beta_line = next(line for line in table.splitlines() if line.startswith("| beta"))
    assert "**" not in beta_line.split("|")[2]                                          # beta's mAP not bold
    alpha_line = next(line for line in table.splitlines() if line.startswith("| alpha"))
    assert alpha_line.endswith("| **11.19** | **1.814** |")                            # lowest cost bold


def test_single_seed_cell_has_no_std() -> None:
    (b,) = lb.build_boards(lb.records_frame(synthetic_records(seeds=(0,), with_figure_data=False)))
    assert b.row("alpha").cells[8].text().endswith("(n=1)") and "±" not in b.row("alpha").cells[8].text()


def test_paper_numbers_sit_in_labelled_columns_with_the_gap(board) -> None:  # type: ignore[no-untyped-def]
    table = lb.paper_table(board)
    assert table is not None
    header = table.splitlines()[0]
    assert "paper-reported mAP@8" in header and "gap@8 (measured − paper)" in header
    measured = board.row("alpha").cells[8].mean
    alpha = next(line for line in table.splitlines() if line.startswith("| alpha")).split(" | ")
    assert alpha[1:4] == [f"{measured:.4f}", "0.7000", f"{measured - 0.7:+.4f}"]
    assert alpha[-1] == "[1] |" and "- [1] Table 1\n" in table
    assert "0.7000" not in lb.measured_table(board)            # paper numbers never in measured columns
    csv = lb.render_csv(board)
    assert "paper_map@8" in csv.splitlines()[0] and ",0.700000," in csv
    # a method whose plugin is not installed gets no paper numbers, and the board says why
    (b,) = lb.build_boards(lb.records_frame(synthetic_records(with_figure_data=False)), PAPER, {"beta"})
    assert "plugin not installed" in lb.paper_table(b)


def test_setup_table_shows_provenance_and_weights_honestly() -> None:
    recs = synthetic_records(with_figure_data=False)
    for r in recs:
        r.backbone_weights = "pretext:resnet18-48.pt"
    (b,) = lb.build_boards(lb.records_frame(recs))
    table = lb.setup_table(b)
    row = next(line for line in table.splitlines() if line.startswith("| alpha"))
    assert "| no | `pretext:resnet18-48.pt` | 0, 1, 2 | cpu | `0.1.0+gabc1234` |" in row
    assert "identical protocol setting" in lb.render_board(b)
    recs[0].protocol = {**recs[0].protocol, "lr": 0.1}
    (b,) = lb.build_boards(lb.records_frame(recs))
    assert "2 different protocol settings" in lb.render_board(b)


def test_significance_matrices(board) -> None:  # type: ignore[no-untyped-def]
    text = lb.significance_section(board)
    assert "### 8 bits" in text and "### 16 bits" in text
    assert "Over seeds — paired t-test" in text and "Over queries — paired t-test" in text
    assert "n = 12 queries" in text
    assert re.search(r"\| alpha \| · \| \*\*\+0\.\d{4} \(p", text)       # alpha beats beta significantly
    (one_seed,) = lb.build_boards(lb.records_frame(synthetic_records(seeds=(0,), with_figure_data=False)))
    text = lb.significance_section(one_seed)
    assert "Over seeds: not tested" in text and "Over queries — paired t-test" in text


def test_paper_protocol_gets_its_own_slug() -> None:
    recs = synthetic_records(protocol="paper", with_figure_data=False) + synthetic_records(with_figure_data=False)
    boards = lb.build_boards(lb.records_frame(recs))
    assert [b.slug for b in boards] == ["tiny", "tiny-paper"]
    assert "not a fair comparison" in lb.render_board(boards[1])


def _write(records: list[RunRecord], root: Path, **kw) -> lb.WriteReport:  # type: ignore[no-untyped-def]
    return lb.write_leaderboards(records, root / "leaderboards", docs_page=root / "docs" / "leaderboards.md",
                                 paper=PAPER, installed={"alpha", "beta"}, datasets=tiny_loader, **kw)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


WRITE_SCRIPT = """
import json, random, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_leaderboard import _write, synthetic_records
records = synthetic_records()
random.Random(1).shuffle(records)            # reading order must not matter
_write(records, Path(sys.argv[1]))
"""


def test_write_is_complete_linked_and_byte_identical_across_processes(records, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = _write(records, tmp_path / "a")
    assert not report.notes
    files = _files(tmp_path / "a")
    assert sorted(files) == [
        "docs/leaderboards.md", "leaderboards/README.md",
        "leaderboards/figures/tiny-map-vs-bits.png", "leaderboards/figures/tiny-map-vs-bits.svg",
        "leaderboards/figures/tiny-map-vs-flops.png", "leaderboards/figures/tiny-map-vs-flops.svg",
        "leaderboards/figures/tiny-pr.png", "leaderboards/figures/tiny-pr.svg",
        "leaderboards/figures/tiny-retrieval.png", "leaderboards/tiny.conventions.csv", "leaderboards/tiny.csv",
        "leaderboards/tiny.md", "leaderboards/tiny.metrics.csv"]
    # every relative link of the generated markdown resolves (to a generated file, or to a page of the repo)
    for md in ("leaderboards/tiny.md", "leaderboards/README.md", "docs/leaderboards.md"):
        page = tmp_path / "a" / md
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            assert (page.parent / target).exists() or (REPO / md).parent.joinpath(target).exists(), \
                f"{md} links {target}"
    svg = files["leaderboards/figures/tiny-pr.svg"].decode()
    assert "<dc:date>" not in svg and "matplotlib" in svg
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", WRITE_SCRIPT, str(tmp_path / "b"), str(Path(__file__).parent)],
                   check=True, env=env, cwd=tmp_path)
    other = _files(tmp_path / "b")
    assert sorted(other) == sorted(files)
    for name in files:
        assert files[name] == other[name], f"{name} differs between two runs on the same records"


def test_unavailable_dataset_keeps_links_and_skips_the_panel(records, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def missing(name: str):  # type: ignore[no-untyped-def]
        raise LookupError("not on disk")

    report = lb.write_leaderboards(records, tmp_path, datasets=missing, figures=True)
    assert any("retrieval panel of tiny not redrawn" in n for n in report.notes)
    assert not (tmp_path / "figures" / "tiny-retrieval.png").exists()
    assert "figures/tiny-retrieval.png" in (tmp_path / "tiny.md").read_text()


def test_cli_bare_write_makes_leaderboards_and_docs_page(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for r in synthetic_records(with_figure_data=False):
        write_record(r, record_path(tmp_path / "records", "fair", r.dataset, r.method, r.bits, r.seed))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["leaderboard", "--results", "records", "--write", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "leaderboards" / "tiny.md").exists() and (tmp_path / "leaderboards" / "tiny.csv").exists()
    page = (tmp_path / "docs" / "leaderboards.md").read_text()
    assert "(../leaderboards/tiny.md)" in page and lb.REGENERATE in page
    res = runner.invoke(main, ["leaderboard", "--results", "records", "--write", "elsewhere", "--no-figures"])
    assert res.exit_code == 0 and (tmp_path / "elsewhere" / "README.md").exists()
    assert not (tmp_path / "elsewhere" / "leaderboards.md").exists()
    res = runner.invoke(main, ["leaderboard", "--results", "records"])
    assert res.exit_code == 0 and "| alpha" in res.output and "(n=3)" in res.output


def _matplotlib_of(svg: Path) -> str | None:
    m = re.search(r"matplotlib ([0-9][^)<\s]*)\)", svg.read_text(errors="replace"))
    return m.group(1) if m else None


def test_committed_leaderboards_match_the_committed_records(tmp_path) -> None:
    """The files under leaderboards/ and docs/leaderboards.md are exactly what the command writes."""
    records_dir = REPO / "records"
    if not records_dir.is_dir():
        pytest.skip("no committed records/ yet")
    from fgbench._plugins import get_host

    reg = get_host().registry
    recs = list(iter_records(records_dir))
    missing = sorted({r.method for r in recs} - set(reg.methods.names()))
    if missing:
        pytest.skip(f"method plugin(s) not installed, paper columns would differ: {', '.join(missing)}")
    from fgbench.cli._common import dataset_loader
    from fgbench.data.base import default_data_root

    report = lb.write_leaderboards(recs, tmp_path / "leaderboards", docs_page=tmp_path / "docs" / "leaderboards.md",
                                   paper=lb.paper_numbers(reg), installed=set(reg.methods.names()),
                                   datasets=dataset_loader(reg, default_data_root()))
    how = f"regenerate with `{lb.REGENERATE}` and commit the result"
    generated = {p.relative_to(tmp_path).as_posix() for p in report.written}
    import matplotlib

    for rel in sorted(generated):
        committed = REPO / rel
        assert committed.exists(), f"{rel} is missing; {how}"
        if rel.endswith((".png", ".svg")):
            svg = committed.with_suffix(".svg") if committed.with_suffix(".svg").exists() else None
            if svg is not None and _matplotlib_of(svg) != matplotlib.__version__:
                continue  # drawn by another matplotlib version: pixels may legitimately differ
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} is stale; {how}"
    skipped_panels = {f"leaderboards/figures/{b.slug}-retrieval.png"
                      for b in lb.build_boards(lb.records_frame(recs)) if any(b.slug in n for n in report.notes)}
    for path in sorted((REPO / "leaderboards").rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and rel not in generated and rel not in skipped_panels:
            pytest.fail(f"{rel} is not produced from records/ any more; delete it or {how}")


def test_records_frame_does_not_depend_on_reading_order(records) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    a = lb.render_board(lb.build_boards(lb.records_frame(records))[0])
    b = lb.render_board(lb.build_boards(lb.records_frame(shuffled))[0])
    assert a == b
    assert json.loads(json.dumps(records[0].retrieval_examples))  # JSON-able as stored


def test_divergence_marks_only_the_cells_holding_a_diverged_run() -> None:
    recs = synthetic_records(with_figure_data=False)
    clean = lb.build_boards(lb.records_frame(recs))[0]
    target = next(r for r in recs if r.method == "beta" and r.bits == 16 and r.seed == 2)
    target.divergence = "loss 1e+28 at epoch 1\n(exploded)"
    (b,) = lb.build_boards(lb.records_frame(recs))
    assert b.row("beta").diverged == {16: {2: "loss 1e+28 at epoch 1 (exploded)"}} and not b.row("alpha").diverged
    table = lb.measured_table(b)
    beta = next(line for line in table.splitlines() if line.startswith("| beta")).split(" | ")
    assert not beta[1].endswith(lb.DIVERGED_MARK) and beta[2].endswith(f"(n=3) {lb.DIVERGED_MARK}")
    assert "- beta, 16 bits, seed 2: loss 1e+28 at epoch 1 (exploded)\n" in table
    assert lb.divergence_warnings([b]) == [
        f"tiny: beta at 16 bits, seed 2: training diverged (loss 1e+28 at epoch 1 (exploded)); its mAP is flagged "
        f"{lb.DIVERGED_MARK}"]
    assert lb.DIVERGED_MARK in lb.render_console(b) and lb.DIVERGED_MARK not in lb.render_console(clean)
    assert lb.measured_table(clean) + lb.divergence_note(b) == table.replace(f" {lb.DIVERGED_MARK} |", " |")
    assert "diverged" not in lb.render_csv(clean) and lb.render_csv(b).splitlines()[0].endswith(",diverged")


def _md_links(page: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")) if not re.match(r"^[a-z]+:", t)]


def test_boards_written_outside_the_repo_have_no_broken_links(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--write OUT`` anywhere: every relative link resolves from the page itself (no ``../docs/`` into nowhere)."""
    for r in synthetic_records(with_figure_data=False):
        write_record(r, record_path(tmp_path / "records", "fair", r.dataset, r.method, r.bits, r.seed))
    out = tmp_path / "far" / "away" / "boards"
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "records"), "--write", str(out),
                                    "--no-figures"])
    assert res.exit_code == 0, res.output
    pages = sorted(out.glob("*.md"))
    assert [p.name for p in pages] == ["README.md", "tiny.md"]
    broken = [f"{p.name} -> {t}" for p in pages for t in _md_links(p)
              if t.split("/")[0] != "figures" and not (p.parent / t).exists()]
    assert not broken, broken
    assert "`docs/metrics.md` of the fgbench documentation" in (out / "tiny.md").read_text(encoding="utf-8")
    assert "`docs/leaderboards.md` of the fgbench documentation" in (out / "README.md").read_text(encoding="utf-8")


def test_boards_written_beside_the_docs_link_them_relatively(records, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _write(records, tmp_path, figures=False)
    assert "[metrics](../docs/metrics.md)" in (tmp_path / "leaderboards" / "tiny.md").read_text(encoding="utf-8")
    assert "(../docs/leaderboards.md)" in (tmp_path / "leaderboards" / "README.md").read_text(encoding="utf-8")
    assert (tmp_path / "docs" / "leaderboards.md").exists()


def _mixed(tmp_path: Path) -> list[RunRecord]:
    """alpha/beta records: seed 2 from a dirty build, and beta's 16-bit runs with another learning rate."""
    recs = synthetic_records(with_figure_data=False)
    for r in recs:
        if r.seed == 2:
            r.environment = {**r.environment, "fgbench": "0.2.0+gdef5678.dirty"}
        if r.method == "beta" and r.bits == 16:
            r.protocol = {**r.protocol, "lr": 0.001}
        write_record(r, record_path(tmp_path / "records", "fair", r.dataset, r.method, r.bits, r.seed))
    return recs


VERSIONS_WARNING = ("tiny: the records of this board come from 2 code versions: 0.1.0+gabc1234 (8 records), "
                    "0.2.0+gdef5678.dirty (4 records)")
SETTINGS_WARNING = "tiny: the records of this board were run under 2 different protocol settings (differing: lr)"


def test_terminal_and_written_board_warn_alike_about_mixed_versions_and_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    recs = _mixed(tmp_path)
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "records")])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
    assert any(line.startswith(f"warning: {VERSIONS_WARNING}") for line in warnings), res.stderr
    assert any(line.startswith(f"warning: {SETTINGS_WARNING}") for line in warnings), res.stderr
    assert "warning:" not in res.stdout
    report = lb.write_leaderboards(recs, tmp_path / "boards", figures=False)
    page = (tmp_path / "boards" / "tiny.md").read_text(encoding="utf-8")
    assert VERSIONS_WARNING.removeprefix("tiny: ") in page and SETTINGS_WARNING.removeprefix("tiny: ") in page
    assert report.warnings == [w.removeprefix("warning: ") for w in warnings]


def test_one_code_version_and_one_setting_give_no_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for r in synthetic_records(with_figure_data=False):
        write_record(r, record_path(tmp_path / "records", "fair", r.dataset, r.method, r.bits, r.seed))
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "records")])
    assert res.exit_code == 0 and "warning:" not in res.stderr, res.stderr
    page = lb.render_board(lb.build_boards(lb.records_frame(synthetic_records(with_figure_data=False)))[0])
    assert "code versions" not in page and "**Warning:**" not in page


def test_setting_line_says_what_an_epoch_is_under_epoch_sampling() -> None:
    from fgbench.results.leaderboard.boards import _setting_summary

    plain = _setting_summary(json.dumps({"epochs": 12, "epoch_sample": 0, "batch_size": 32}))
    assert plain == "12 epochs, batch 32"
    sampled = _setting_summary(json.dumps({"epochs": 1200, "epoch_sample": 2000, "resample_every": 30}))
    assert sampled == "1200 epochs, 2000 training images per epoch, drawn afresh every 30 epochs"
