"""The unseen-class (zero-shot) split, issue 16 item 4: class choice, the seen/unseen view, records, resume, CLI,
leaderboard boards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TOY_SPEC
from fgbench.cli import main
from fgbench.data.class_split import (UnseenClassDataset, class_split, class_split_field, evaluation_dataset,
                                     job_dataset, unseen_count)
from fgbench.engine.device import EngineOptions
from fgbench.engine.runner import Job, JobRunner
from fgbench.errors import ProtocolError, RecordError
from fgbench.protocol import Protocol, resolve_protocol
from fgbench.records import iter_records, read_record, write_record
from fgbench.results import leaderboard as lb
from fgbench.testing import registered_plugin, spec_plugin, tiny_embedded

RUN = ["run", "--methods", "toy", "--datasets", "tiny", "--bits", "8", "-q", "--device", "cpu"]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def host():  # type: ignore[no-untyped-def]
    with registered_plugin(spec_plugin("toy-plugin", methods=[TOY_SPEC], datasets=[tiny_embedded()])) as h:
        yield h


@pytest.fixture(scope="module")
def runs(host, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One results folder holding a standard run and an unseen:25 run of the same job: (folder, outputs)."""
    results = tmp_path_factory.mktemp("results")
    unseen = invoke(*RUN, "--split", "unseen:25", "--results", str(results))
    assert unseen.exit_code == 0, unseen.output
    standard = invoke(*RUN, "--results", str(results))
    assert standard.exit_code == 0, standard.output
    return results, unseen.output, standard.output


# --- which classes --------------------------------------------------------------------------------------------


def test_counts_follow_dsh_analysis_and_the_clamp() -> None:
    # DSH_Analysis set_flag.py: unseen classes per split for CUB (200), NABirds (555), Food101 (101), Dogs (120)
    assert [unseen_count(200, p) for p in (5, 15, 25)] == [10, 30, 50]
    assert [unseen_count(555, p) for p in (5, 15, 25)] == [27, 83, 138]
    assert [unseen_count(101, p) for p in (5, 15, 25)] == [5, 15, 25]
    assert [unseen_count(120, p) for p in (5, 15, 25)] == [6, 18, 30]
    # the embedded dataset's 12 classes: at least 2 unseen, at least 2 seen
    assert [unseen_count(12, p) for p in (5, 15, 25)] == [2, 2, 3]
    assert unseen_count(4, 25) == 2


def test_unseen_are_the_latter_classes_for_every_seed() -> None:
    splits = {seed: class_split("unseen:25", 200, seed, "cub") for seed in range(4)}
    assert {s.unseen for s in splits.values()} == {tuple(range(150, 200))}
    assert splits[0].seen == tuple(range(150))


def test_seeded_split_is_deterministic_per_seed_and_dataset() -> None:
    a = [class_split("unseen:25:seeded", 200, seed, "cub") for seed in range(4)]
    b = [class_split("unseen:25:seeded", 200, seed, "cub") for seed in range(4)]
    assert a == b
    assert len({s.unseen for s in a}) == 4  # every seed its own classes
    assert class_split("unseen:25:seeded", 200, 0, "aircraft").unseen != a[0].unseen
    for s in a:
        assert len(s.unseen) == 50 and not set(s.seen) & set(s.unseen)
        assert sorted(s.seen + s.unseen) == list(range(200))


def test_standard_has_no_class_split() -> None:
    assert class_split("standard", 12, 0, "embedded") is None


# --- the view a job trains and retrieves on -------------------------------------------------------------------


def test_view_trains_on_seen_and_retrieves_among_unseen(host) -> None:  # type: ignore[no-untyped-def]
    base = host.registry.datasets.get("tiny").load(Path("."))
    for name in ("unseen:25", "unseen:5:seeded"):
        for seed in (0, 1):
            view = job_dataset(base, name, seed, "tiny")
            assert isinstance(view, UnseenClassDataset)
            split = view.class_split
            seen, unseen = set(split.seen), set(split.unseen)
            assert not seen & unseen and seen | unseen == set(range(base.num_classes))
            scored = evaluation_dataset(view)
            train, query, database = view.split("train"), scored.split("test"), scored.split("train")
            assert class_split_field(scored) == class_split_field(view) == split.to_dict()
            assert view.num_classes == len(seen)
            assert set(train.labels.tolist()) == set(range(len(seen)))  # remapped 0..S-1
            assert set(query.labels.tolist()) == unseen and set(database.labels.tolist()) == unseen
            full_train, full_test = base.split("train"), base.split("test")
            assert len(train) + len(database) == len(full_train)
            assert len(query) == int(np.isin(full_test.labels, sorted(unseen)).sum())
            # the images are the base's: a training item is a seen-class train image, with its class remapped
            order = sorted(seen)
            for i in range(len(train)):
                j = int(np.flatnonzero(np.isin(full_train.labels, order))[i])
                assert np.array_equal(train.load_array(i), full_train.load_array(j))
                assert order[train.labels[i]] == full_train.labels[j]
    assert job_dataset(base, "standard", 0, "tiny") is base
    assert evaluation_dataset(base) is base and class_split_field(base) is None


def test_method_gets_the_seen_class_count(host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proto = resolve_protocol("fair", host.registry.datasets.get("tiny").fair_overrides,
                             user_overrides={"split": "unseen:25"})
    runner = JobRunner(host.registry, Path("."), tmp_path, EngineOptions(device="cpu"))
    job = Job("toy", "tiny", 8, 0, proto)
    model, _spec, _config = runner.build_model(job, runner.job_dataset(job))
    assert model.classifier.out_features == 2  # 4 classes: 2 seen, 2 unseen


# --- protocol, records, resume --------------------------------------------------------------------------------


def test_bad_split_is_refused_naming_the_option() -> None:
    for bad in ("unseen:30", "unseen", "zero-shot", "unseen:25:random", "Standard"):
        with pytest.raises(ProtocolError, match=r"^--split .*choose one of standard, unseen:5"):
            Protocol(split=bad).validate()


def test_standard_protocol_dict_is_unchanged_and_unseen_is_recorded() -> None:
    assert "split" not in Protocol().to_dict()
    assert Protocol(split="unseen:15").to_dict()["split"] == "unseen:15"
    assert Protocol.from_dict(Protocol(split="unseen:15").to_dict()).split == "unseen:15"


def test_records_hold_the_split_in_their_own_folder(runs) -> None:  # type: ignore[no-untyped-def]
    results, unseen_out, _ = runs
    (unseen_path,) = (results / "unseen-25").rglob("*.json")
    assert unseen_path == results / "unseen-25" / "fair" / "tiny" / "toy" / "bits8-seed0.json"
    rec = json.loads(unseen_path.read_text())
    assert rec["protocol"]["split"] == "unseen:25"
    assert rec["class_split"] == {"name": "unseen:25", "num_classes": 4, "seen": [0, 1], "unseen": [2, 3]}
    assert rec["num_query"] == 6 and rec["num_database"] == 12  # tiny: 3 test and 6 train images per class
    standard = json.loads((results / "fair" / "tiny" / "toy" / "bits8-seed0.json").read_text())
    assert "class_split" not in standard and "split" not in standard["protocol"]
    assert standard["num_query"] == 12 and standard["num_database"] == 24
    assert "split unseen:25" in unseen_out


def test_rerun_skips_and_splits_do_not_collide(runs) -> None:  # type: ignore[no-untyped-def]
    results = runs[0]
    before = {p: p.read_bytes() for p in results.rglob("*.json")}
    res = invoke(*RUN, "--split", "unseen:25", "--results", str(results))
    assert res.exit_code == 0 and "1 already done, 0 to run" in res.output, res.output
    assert {p: p.read_bytes() for p in results.rglob("*.json")} == before


def test_resume_refuses_a_record_of_another_split(host, runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = runs[0]
    record = read_record(results / "unseen-25" / "fair" / "tiny" / "toy" / "bits8-seed0.json")
    # the unseen record moved to the standard job's path: the standard job must not take it as done
    record.class_split = None
    write_record(record, tmp_path / "fair" / "tiny" / "toy" / "bits8-seed0.json")
    res = CliRunner().invoke(main, [*RUN, "--results", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "other settings (split: record unseen:25, now standard)" in res.output
    # and a standard record under the unseen folder, the other way round
    other = tmp_path / "other"
    std = read_record(results / "fair" / "tiny" / "toy" / "bits8-seed0.json")
    write_record(std, other / "unseen-25" / "fair" / "tiny" / "toy" / "bits8-seed0.json")
    res = CliRunner().invoke(main, [*RUN, "--split", "unseen:25", "--results", str(other)])
    assert res.exit_code == 1 and "split: record (absent), now unseen:25" in res.output, res.output


def test_record_class_split_is_validated(runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = runs[0] / "unseen-25" / "fair" / "tiny" / "toy" / "bits8-seed0.json"
    d = json.loads(path.read_text())
    d["class_split"]["unseen"] = [1, 2, 3]  # overlaps the seen classes
    bad = tmp_path / "fair" / "tiny" / "toy" / "bits8-seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps(d))
    with pytest.raises(RecordError, match="class_split"):
        read_record(bad)


# --- command line ---------------------------------------------------------------------------------------------


def test_bad_split_option_is_one_line(host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(main, [*RUN, "--split", "unseen:30", "--results", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert res.output.startswith("Error: --split 'unseen:30': choose one of standard, unseen:5, unseen:15, unseen:25")
    res = CliRunner().invoke(main, [*RUN, "--split", "unseen:5", "--set", "split=unseen:5", "--results",
                                    str(tmp_path)])
    assert res.exit_code != 0 and "--split" in res.output and "give it once" in res.output, res.output
    assert not list(tmp_path.rglob("*.json"))


# --- leaderboard ----------------------------------------------------------------------------------------------


def test_leaderboard_gives_the_split_its_own_boards(runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = list(iter_records(runs[0]))
    boards = lb.build_boards(lb.records_frame(records))
    assert [(b.dataset, b.split, b.slug) for b in boards] == [("tiny", "standard", "tiny"),
                                                              ("tiny", "unseen:25", "tiny-unseen-25")]
    standard, unseen = boards
    assert standard.title == "tiny — protocol `fair`" and "unseen:25" in unseen.title
    assert standard.row("toy").cells[8].n == 1 and unseen.row("toy").cells[8].n == 1  # never averaged together
    summary = lb.render_summary(boards)
    assert "## Protocol `fair`: mAP averaged" in summary
    assert "## Protocol `fair` / split `unseen:25`: mAP averaged" in summary
    assert "split" not in lb.render_csv(standard).splitlines()[0].split(",")
    assert lb.render_csv(unseen).splitlines()[1].startswith("tiny,fair,unseen:25,toy,")
    page = lb.render_board(unseen)
    assert "class split `unseen:25` (trained on the seen classes only" in page
    assert "Retrieval examples: not drawn for unseen-class boards." in page
    report = lb.write_leaderboards(records, tmp_path, figures=False)
    assert (tmp_path / "tiny-unseen-25.md").exists() and (tmp_path / "tiny.md").exists(), report
