"""Faults in evaluation input (issue #12): bad codes/labels, precision at 1M items, no writable numba cache.

Each bad input must be refused with a one-line :class:`MetricInputError`
(never scored silently); every accepted representation of the same codes and
labels must give the same result; the tie-averaged AP must stay accurate to
1e-9 relative where the old closed form cancelled; and a user without a
writable home directory (read-only install) must get ``fgbench --help`` and
working kernels instead of a numba cache traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fgbench
from fgbench.metrics import hamming_kernels as hk
from fgbench.metrics.reference import map_by_sort
from fgbench.metrics.retrieval import (
    MetricInputError,
    average_precision_from_histograms,
    evaluate_codes,
)

RNG = np.random.default_rng(12)
Q = np.where(RNG.random((6, 8)) > 0.5, 1.0, -1.0)
D = np.where(RNG.random((9, 8)) > 0.5, 1.0, -1.0)
QL = np.array([0, 1, 2, 0, 1, 2])
DL = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])


def _one_hot(labels: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.eye(classes)[labels]


def _with(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = a.astype(np.float64).copy()
    out[index] = value
    return out


# (name, arguments of evaluate_codes, a fragment the one-line message must contain)
BAD_INPUTS: list[tuple[str, Callable[[], tuple[Any, Any, Any, Any]], str]] = [
    ("one-hot labels", lambda: (Q, D, _one_hot(QL), _one_hot(DL)), "argmax(1)"),
    ("multi-hot labels", lambda: (Q, D, _one_hot(QL) + _one_hot((QL + 1) % 3), _one_hot(DL)), "class index"),
    ("column labels", lambda: (Q, D, QL[:, None], DL), "reshape(-1)"),
    ("NaN query label", lambda: (Q, D, _with(QL, (2,), np.nan), DL), "NaN"),
    ("inf database label", lambda: (Q, D, QL, _with(DL, (0,), np.inf)), "infinite"),
    ("non-integer float label", lambda: (Q, D, QL + 0.5, DL), "non-integer"),
    ("string-digit query labels vs int database labels", lambda: (Q, D, QL.astype(str), DL), "string"),
    ("string labels on both sides", lambda: (Q, D, [f"c{i}" for i in QL], [f"c{i}" for i in DL]), "string"),
    ("object labels", lambda: (Q, D, [0, 1, None, 0, 1, 2], DL), "dtype object"),
    ("NaN query code", lambda: (_with(Q, (1, 3), np.nan), D, QL, DL), "NaN"),
    ("inf database code", lambda: (Q, _with(D, (4, 0), -np.inf), QL, DL), "infinite"),
    ("NaN code in a torch tensor", lambda: (torch.tensor(_with(Q, (0, 0), np.nan)), D, QL, DL), "NaN"),
    ("query labels shorter than query codes", lambda: (Q, D, QL[:-1], DL), "5 labels for 6"),
    ("database labels longer than database codes", lambda: (Q, D, QL, np.append(DL, 0)), "10 labels for 9"),
    ("code width mismatch", lambda: (Q, D[:, :6], QL, DL), "8 bits, db_codes 6"),
    ("empty query", lambda: (Q[:0], D, QL[:0], DL), "empty"),
    ("empty database", lambda: (Q, D[:0], QL, DL[:0]), "empty"),
    ("empty lists", lambda: ([], [], [], []), "(n, bits)"),
    ("1-D code vector", lambda: (Q[0], D, QL[:1], DL), "(n, bits)"),
    ("ragged code list", lambda: ([[1, -1], [1]], D[:, :2], [0, 1], DL), "rectangular"),
    ("string codes", lambda: (Q.astype(str), D, QL, DL), "dtype <U"),
    ("complex codes", lambda: (Q.astype(complex), D, QL, DL), "complex"),
]


@pytest.mark.parametrize("name,make,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_with_one_line(name: str, make: Callable[[], tuple[Any, Any, Any, Any]],
                                            fragment: str) -> None:
    with pytest.raises(MetricInputError) as info:
        evaluate_codes(*make())
    message = str(info.value)
    assert "\n" not in message and fragment in message, message
    # the CLI turns ValueErrors into "Error: <message>" (no traceback)
    assert isinstance(info.value, ValueError)


CUDA_CASES = [b for b in BAD_INPUTS if b[0] in {"one-hot labels", "NaN query code", "NaN code in a torch tensor",
                                                 "empty query", "code width mismatch"}]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,make,fragment", CUDA_CASES, ids=[b[0] for b in CUDA_CASES])
def test_bad_cuda_input_is_refused(name: str, make: Callable[[], tuple[Any, Any, Any, Any]],
                                   fragment: str) -> None:  # pragma: no cover - needs a GPU
    q, d, ql, dl = make()
    q = torch.as_tensor(np.asarray(q, dtype=np.float32)).cuda()
    with pytest.raises(MetricInputError, match=re.escape(fragment)):
        evaluate_codes(q, torch.as_tensor(d).cuda(), torch.as_tensor(np.asarray(ql, dtype=float)).cuda(), dl)


def _representations() -> list[tuple[str, Any, Any, Any, Any]]:
    bits01 = (Q > 0).astype(np.uint8), (D > 0).astype(np.uint8)
    zeros = np.where(Q > 0, 1.0, 0.0), np.where(D > 0, 0.7, 0.0)  # 0 is bit 0, like -1
    return [
        ("python lists", Q.tolist(), D.tolist(), QL.tolist(), DL.tolist()),
        ("float32", Q.astype(np.float32), D.astype(np.float32), QL, DL),
        ("float16", Q.astype(np.float16), D.astype(np.float16), QL, DL),
        ("int8", Q.astype(np.int8), D.astype(np.int8), QL.astype(np.int8), DL.astype(np.int16)),
        ("int16", Q.astype(np.int16), D.astype(np.int16), QL.astype(np.uint8), DL.astype(np.uint32)),
        ("bool", Q > 0, D > 0, QL, DL),
        ("uint8 0/1", *bits01, QL, DL),
        ("zeros and reals", *zeros, QL, DL),
        ("integer-valued float labels", Q, D, QL.astype(np.float32), DL.astype(np.float64)),
        ("torch cpu", torch.tensor(Q), torch.tensor(D, dtype=torch.float32), torch.tensor(QL), torch.tensor(DL)),
        ("torch bfloat16 with grad", torch.tensor(Q, dtype=torch.bfloat16, requires_grad=True),
         torch.tensor(D, dtype=torch.bfloat16), torch.tensor(QL, dtype=torch.float32), DL.tolist()),
        ("torch int8 / numpy mix", torch.tensor(Q, dtype=torch.int8), D, torch.tensor(QL), DL),
    ]


@pytest.mark.parametrize("name,q,d,ql,dl", _representations(), ids=[r[0] for r in _representations()])
def test_every_representation_gives_the_same_result(name: str, q: Any, d: Any, ql: Any, dl: Any) -> None:
    expected = evaluate_codes(Q, D, QL, DL)
    got = evaluate_codes(q, d, ql, dl)
    np.testing.assert_array_equal(got.h_all, expected.h_all)
    np.testing.assert_array_equal(got.h_rel, expected.h_rel)
    np.testing.assert_array_equal(got.average_precision, expected.average_precision)


def test_bool_labels_are_two_classes() -> None:
    got = evaluate_codes(Q, D, QL == 1, DL == 1).average_precision
    np.testing.assert_array_equal(got, evaluate_codes(Q, D, (QL == 1).astype(int), (DL == 1).astype(int))
                                  .average_precision)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_give_the_same_result() -> None:  # pragma: no cover - needs a GPU
    expected = evaluate_codes(Q, D, QL, DL).average_precision
    for q, d in [(torch.tensor(Q).cuda(), torch.tensor(D).cuda()),
                 (torch.tensor(Q > 0).cuda(), D),                       # bool on the GPU, numpy database
                 (Q.tolist(), torch.tensor(D, dtype=torch.int8).cuda())]:  # only the database on the GPU
        got = evaluate_codes(q, d, torch.tensor(QL).cuda(), DL).average_precision
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# --- precision: relevant items alone at the largest distance of a 1M-item ranking -----------------------------

def _exact_ap_alone_at_end(n_before: int, n_rel: int) -> Fraction:
    """Textbook AP when the only ``n_rel`` relevant items take ranks n_before+1 .. n_before+n_rel."""
    return sum((Fraction(p, n_before + p) for p in range(1, n_rel + 1)), Fraction(0)) / n_rel


def _exact_expected_block(n_before: int, r_before: int, n: int, r: int) -> Fraction:
    """Expected sum of precisions of the relevant items of a tie block, position by position (exact)."""
    beta = Fraction(r - 1, n - 1) if n > 1 else Fraction(0)
    return Fraction(r, n) * sum((Fraction(r_before + 1) + (p - 1) * beta) / (n_before + p) for p in range(1, n + 1))


def _relative_error(value: float, exact: Fraction) -> float:
    return float(abs(Fraction(value) - exact) / exact)


@pytest.mark.parametrize("n_rel", [1, 3, 64, 65, 1000])  # direct sums up to 64 items, expansions beyond
def test_ap_accurate_when_relevant_items_sit_alone_at_the_end_of_1m_items(n_rel: int) -> None:
    n_db = 1_000_000
    h_all = np.zeros((1, 13), dtype=np.int64)
    h_all[0, :12] = np.random.default_rng(n_rel).multinomial(n_db - n_rel, np.full(12, 1 / 12))
    h_all[0, 12] = n_rel
    h_rel = np.zeros_like(h_all)
    h_rel[0, 12] = n_rel
    exact = _exact_ap_alone_at_end(n_db - n_rel, n_rel)
    for ap in (hk.average_precision_fast(h_all, h_rel)[0], average_precision_from_histograms(h_all, h_rel)[0]):
        assert _relative_error(float(ap), exact) < 1e-9


@pytest.mark.parametrize("n,r", [(3, 2), (200, 7), (5000, 4999)])
def test_tied_last_block_of_1m_items_is_accurate(n: int, r: int) -> None:
    h_all = np.array([[5, 1_000_000 - 5 - n, n]], dtype=np.int64)  # 2 relevant among the 5 nearest, r among the n last
    h_rel = np.array([[2, 0, r]], dtype=np.int64)
    exact = (_exact_expected_block(0, 0, 5, 2) + _exact_expected_block(1_000_000 - n, 2, n, r)) / (2 + r)
    for ap in (hk.average_precision_fast(h_all, h_rel)[0], average_precision_from_histograms(h_all, h_rel)[0]):
        assert _relative_error(float(ap), exact) < 1e-9


def test_evaluate_codes_on_1m_database_is_accurate() -> None:
    """End to end: 1M database codes (4 bits), the 3 relevant ones at the largest distance."""
    n_db, n_rel, bits = 1_000_000, 3, 4
    rng = np.random.default_rng(0)
    db = rng.integers(0, 2, (n_db, bits), dtype=np.int8)
    db[db.sum(axis=1) == 0, 0] = 1            # no other item at distance 4 from the all-ones query
    db[:n_rel] = 0                            # the relevant items: every bit differs
    labels = np.ones(n_db, dtype=np.int64)
    labels[:n_rel] = 0
    ev = evaluate_codes(np.ones((1, bits), dtype=np.int8), db, np.array([0]), labels)
    assert ev.h_rel[0].tolist() == [0, 0, 0, 0, n_rel]
    assert _relative_error(ev.mean_average_precision, _exact_ap_alone_at_end(n_db - n_rel, n_rel)) < 1e-9


def test_accurate_ap_still_matches_textbook_ap_without_ties() -> None:
    # distinct distances: the expected AP is the textbook AP of the one ranking
    q = np.ones((1, 10))
    db = np.ones((11, 10))
    for k in range(11):
        db[k, :k] = -1
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    assert evaluate_codes(q, db, [1], labels).mean_average_precision == pytest.approx(
        map_by_sort(q, db, np.array([1]), labels), rel=1e-14)


# --- numba cache: no writable home, read-only install -----------------------------------------------------------

def _readonly_install(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of fgbench where numba can write no cache anywhere (even as root), and the env to run it with.

    ``__pycache__`` next to the kernels is a regular file (no in-tree cache),
    ``$HOME`` is a file and ``$XDG_CACHE_HOME`` lies under it (no user-wide
    cache), ``$NUMBA_CACHE_DIR`` is unset: what a read-only site-packages and
    a missing or read-only home directory look like to numba.
    """
    site = tmp_path / "site"
    shutil.copytree(Path(fgbench.__file__).parent, site / "fgbench", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "fgbench" / "metrics" / "__pycache__").write_text("not a directory\n")
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), PYTHONPATH=str(site), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    return site, env


def test_help_works_without_writable_home(tmp_path: Path) -> None:
    _site, env = _readonly_install(tmp_path)
    (tmp_path / "numba").write_text("")  # with XDG_CACHE_HOME empty numba would use ./numba: not a directory either
    env.update(HOME=str(tmp_path / "nonexistent"), XDG_CACHE_HOME="")  # the HOME=/nonexistent XDG_CACHE_HOME=
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "fgbench", "--help"], check=False, cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "Commands:" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "fgbench.cli" in imported and not any(m == "numba" or m.startswith("numba.") for m in imported)
    assert not (tmp_path / "nonexistent").exists()


def test_kernels_work_without_any_writable_cache_dir(tmp_path: Path) -> None:
    """Every kernel compiles in memory instead (the old code: RuntimeError 'cannot cache function' at import)."""
    _site, env = _readonly_install(tmp_path)
    script = ("import numpy as np\n"
              "from fgbench.metrics import evaluate_codes, hamming_kernels as hk\n"
              f"q = np.array({Q.tolist()}); d = np.array({D.tolist()})\n"
              f"print(repr(evaluate_codes(q, d, {QL.tolist()}, {DL.tolist()}).mean_average_precision))\n"
              "print(repr(float(hk.average_precision_fast(np.array([[1, 2, 3]]), np.array([[1, 0, 1]]))[0])))\n")
    out = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    mean_ap, small = (float(v) for v in out.stdout.split()[-2:])
    assert mean_ap == evaluate_codes(Q, D, QL, DL).mean_average_precision
    # ranks: 1 relevant at distance 0 (rank 1), 1 relevant among 3 tied at distance 2 (ranks 4..6)
    assert small == pytest.approx(float((1 + _exact_expected_block(3, 1, 3, 1)) / 2), rel=1e-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home-is-a-file", "site"]  # no cache written anywhere
