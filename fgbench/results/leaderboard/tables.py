"""Markdown tables of a board: measured, paper-reported, setup, divergence note, significance matrices."""

from __future__ import annotations

import math
from typing import Mapping, Sequence


from fgbench.results import stats
from fgbench.results.leaderboard.boards import Board, MethodRow

DIVERGED_MARK = "†"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A GitHub pipe table (``right[i]``: right-align column i)."""
    right = right or [False] * len(headers)
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _escape(cell: object) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text else text


def best_methods(values: Mapping[str, float], higher: bool) -> set[str]:
    """Keys holding the best value (ties at the displayed precision all count); empty with < 2 keys."""
    finite = {k: round(v, 4) for k, v in values.items() if not math.isnan(v)}
    if len(finite) < 2:
        return set()
    target = max(finite.values()) if higher else min(finite.values())
    return {k for k, v in finite.items() if v == target}


def _signed(x: float) -> str:
    return "" if math.isnan(x) else f"{x:+.4f}"


def cost_bits(board: Board) -> int:
    return board.bits[0]


def measured_table(board: Board) -> str:
    """method | mAP@bits... | params | FLOPs (best in bold)."""
    cb = cost_bits(board)
    best_map = {b: best_methods({r.method: r.cells[b].mean for r in board.rows if b in r.cells}, True) for b in board.bits}
    costs = {r.method: r.cost.get(cb, next(iter(r.cost.values()))) for r in board.rows}
    best_params = best_methods({m: c[0] for m, c in costs.items()}, False)
    best_flops = best_methods({m: c[1] for m, c in costs.items()}, False)
    headers = ["method", *[f"mAP@{b}" for b in board.bits], "params (M)", f"FLOPs (G MACs @{board.cost_input})"]
    rows = []
    for r in board.rows:
        cells = [bold(r.cells[b].text(), r.method in best_map[b]) + _diverged_mark(r, b) if b in r.cells else "—"
                 for b in board.bits]
        p, f = costs[r.method]
        rows.append([r.method, *cells, bold(f"{p:.2f}", r.method in best_params),
                     bold(f"{f:.3f}", r.method in best_flops)])
    return md_table(headers, rows, [False] + [True] * (len(headers) - 1)) + divergence_note(board)


def test_inflation_section(board: Board) -> str:
    """The separate table of best-test-epoch inflation ("" when no record of the board traced the test split)."""
    if not board.has_test_trace:
        return ""
    rows = [[r.method, *[r.test_inflation[b].text() if b in r.test_inflation else "—"
                         for b in board.bits]] for r in board.rows]
    return ("## Best test epoch minus reported (not a result; never used for ranking)\n\n"
            "From records run with `fgbench run --trace-test-map`, which evaluate the test split after every epoch: "
            "the best epoch's test mAP minus the mAP this board reports (the final epoch's, or the one chosen on "
            "the validation split), mean ± sample std over the traced seeds. It is the inflation built into tables "
            "from code that keeps the best test epoch (the CNET, Multi-FusNet and DSH_Analysis code do).\n\n"
            + md_table(["method", *[f"Δ mAP@{b}" for b in board.bits]], rows,
                       [False] + [True] * len(board.bits)))


def _diverged_mark(row: MethodRow, bits: int) -> str:
    return f" {DIVERGED_MARK}" if bits in row.diverged else ""


def diverged_runs(board: Board) -> list[tuple[str, int, int, str]]:
    """``(method, bits, seed, why)`` of every diverged run of ``board``, in row order."""
    return [(r.method, b, s, why) for r in board.rows for b, seeds in sorted(r.diverged.items())
            for s, why in sorted(seeds.items())]


def divergence_note(board: Board) -> str:
    """The note under a measured table naming its diverged runs ("" when none diverged)."""
    runs = diverged_runs(board)
    if not runs:
        return ""
    items = "".join(f"- {m}, {b} bits, seed {s}: {_escape(why)}\n" for m, b, s, why in runs)
    return (f"\n{DIVERGED_MARK} **Diverged training** (non-finite or exploded loss): the cell's mean includes "
            f"these runs, whose codes may be meaningless; rerun them (e.g. with a smaller learning rate) before "
            f"comparing.\n\n{items}")


def divergence_warnings(boards: Sequence[Board]) -> list[str]:
    """One console line per diverged run (``fgbench leaderboard`` prints them as warnings)."""
    return [f"{b.slug}: {m} at {bits} bits, seed {s}: training diverged ({why}); its mAP is flagged {DIVERGED_MARK}"
            for b in boards for m, bits, s, why in diverged_runs(b)]


def paper_table(board: Board) -> str | None:
    """Measured next to paper-reported mAP and the gap, sources as numbered notes; None when nothing to show."""
    if not any(r.paper or r.paper_note for r in board.rows):
        return None
    headers = ["method"]
    for b in board.bits:
        headers += [f"measured mAP@{b}", f"paper-reported mAP@{b}", f"gap@{b} (measured − paper)"]
    headers.append("source")
    sources: list[str] = []
    rows = []
    for r in board.rows:
        row = [r.method]
        for b in board.bits:
            measured = r.cells[b].mean if b in r.cells else math.nan
            reported = r.paper.get(b, (math.nan, ""))[0]
            row += ["—" if math.isnan(measured) else f"{measured:.4f}",
                    "—" if math.isnan(reported) else f"{reported:.4f}",
                    "—" if math.isnan(measured - reported) else _signed(measured - reported)]
        refs = []
        for src in sorted({src for _, src in r.paper.values()}):
            if src not in sources:
                sources.append(src)
            refs.append(f"[{sources.index(src) + 1}]")
        row.append(r.paper_note or " ".join(refs) or "—")
        rows.append(row)
    table = md_table(headers, rows, [False] + [True] * (len(headers) - 2) + [False])
    notes = "".join(f"- [{i}] {src}\n" for i, src in enumerate(sources, 1))
    return table + (f"\nSources:\n\n{notes}" if sources else "")


def paper_source(r: MethodRow) -> str:
    if r.paper_note:
        return r.paper_note
    return ", ".join(sorted({src for _, src in r.paper.values()}))


def setup_table(board: Board) -> str:
    headers = ["method", "backbone", "input", "epochs", "ImageNet init", "initial weights", "seeds", "ran on",
               "fgbench", "train s / job"]
    rows = [[r.method, r.backbone, r.input_size, r.epochs, r.imagenet, f"`{r.weights}`", r.seeds, r.devices,
             f"`{r.versions}`", f"{r.train_seconds:.1f}"] for r in board.rows]
    return md_table(headers, rows, [False, False, True, True, False, False, False, False, False, True])


def _p_text(p: float | None) -> str:
    if p is None:
        return "no test"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def matrix_table(matrix: stats.PairwiseMatrix) -> str:
    """Row − column mAP difference and Holm-adjusted p; bold where significant."""
    methods = list(matrix.methods)
    rows = []
    for a in methods:
        row = [a]
        for b in methods:
            if a == b:
                row.append("·")
                continue
            t, adj = matrix.cell(a, b)
            text = f"{_signed(t.diff)} ({_p_text(adj)})" if not math.isnan(t.diff) else "—"
            row.append(bold(text, adj is not None and adj < stats.ALPHA))
        rows.append(row)
    return md_table(["row − column", *methods], rows, [False] + [True] * len(methods))


def significance_section(board: Board) -> str:
    out = [(f"## Significance\n\nEach cell: mAP of the row method minus the column method, and the "
            f"Holm-adjusted p-value of a two-sided paired t-test over all pairs of the matrix; **bold**: "
            f"significant at {stats.ALPHA}. *Over seeds* pairs the two methods' mAP per seed (needs ≥ 2 shared "
            f"seeds) and reflects training randomness; *over queries* pairs their AP per query (averaged over "
            f"the shared seeds) and only reflects which queries were sampled. See `fgbench/results/stats.py` "
            f"for why a t-test.\n")]
    for b in board.bits:
        methods = board.methods_at(b)
        out.append(f"### {b} bits\n")
        if len(methods) < 2:
            out.append("Only one method; nothing to compare.\n")
            continue
        kinds = (
            ("", "seeds", "up to n", "per_seed", stats.seed_test, stats.SEED_TEST,
             "fewer than 2 shared seeds; run with e.g. `--seeds 0,1,2`"),
            ("\n", "queries", "n", "per_query", stats.query_test, stats.QUERY_TEST, "records hold no per-query AP"),
        )
        for lead, unit, n_label, field, test, test_name, why_not in kinds:
            result = stats.pairwise(methods, {m: getattr(board.row(m), field)[b] for m in methods}, test, test_name)
            if result.any_test:
                n = max(t.n for t in result.tests.values())
                out.append(f"{lead}Over {unit} — {test_name}, {n_label} = {n} {unit}:\n\n" + matrix_table(result))
            else:
                out.append(f"{lead}Over {unit}: not tested ({why_not}).\n")
    return "\n".join(out)
