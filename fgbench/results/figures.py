"""Leaderboard figures (matplotlib, PNG + SVG), byte-identical for the same input.

* :func:`map_vs_bits` — mAP against code length, one line per method, error
  bars = sample std over seeds (drawn when n >= 2).
* :func:`map_vs_flops` — mAP against encode-path FLOPs, one panel per bit
  length, with the accuracy/cost (Pareto) frontier.
* :func:`pr_curves` — precision against recall over Hamming radii
  0..bits (``RunRecord.pr_curve``, averaged over seeds), one panel per bit
  length.
* :func:`retrieval_panel` — a few queries and their top-10 database images
  (``RunRecord.retrieval_examples``), correct ones framed green, wrong ones red.
  PNG only: it is a raster mosaic, an SVG would only wrap the same pixels at
  a third more bytes.

Determinism: figures are drawn on :class:`matplotlib.figure.Figure` objects
(no pyplot, no global backend), inside an rc context reset to matplotlib's
defaults with ``svg.hashsalt`` fixed, and saved with fixed metadata (no
date; the creator names the matplotlib version, since another version may
draw differently).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from fgbench._atomic import atomic_output

CREATOR = f"fgbench leaderboard (matplotlib {matplotlib.__version__})"
RC = {
    "svg.hashsalt": "fgbench",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "image.resample": False,
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """matplotlib defaults plus :data:`RC`, restored afterwards (user matplotlibrc is ignored)."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        yield


def method_style(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A fixed colour and marker per method (by sorted name, so stable across figures)."""
    palette = matplotlib.colormaps["tab10"].colors
    return {m: {"color": palette[i % 10], "marker": MARKERS[(i // 10 + i) % len(MARKERS)]}
            for i, m in enumerate(sorted(methods))}


def save(fig: Figure, stem: Path, svg: bool = True) -> list[Path]:
    """Write ``stem.png`` (and ``stem.svg``) deterministically and atomically; return the paths."""
    formats = {"png": {"Software": CREATOR}}
    if svg:
        formats["svg"] = {"Creator": CREATOR, "Date": None, "Format": "image/svg+xml"}
    paths = []
    with figure_style():
        for fmt, metadata in formats.items():
            paths.append(stem.with_suffix(f".{fmt}"))
            with atomic_output(paths[-1], "wb") as fh:
                fig.savefig(fh, format=fmt, metadata=metadata)
    return paths


def map_vs_bits(title: str, series: Mapping[str, Sequence[tuple[int, float, float, int]]],
                style: Mapping[str, Mapping[str, Any]]) -> Figure:
    """``series[method] = [(bits, mean, std, n), ...]``; error bars where n >= 2."""
    with figure_style():
        fig = Figure(figsize=(5.2, 3.4))
        ax = fig.add_subplot()
        all_bits: set[int] = set()
        for method in sorted(series):
            pts = sorted(series[method])
            bits = [p[0] for p in pts]
            all_bits.update(bits)
            yerr = [p[2] if p[3] >= 2 else 0.0 for p in pts]
            ax.errorbar(bits, [p[1] for p in pts], yerr=yerr, label=method, capsize=3, linewidth=1.4,
                        markersize=5, **style[method])
        ax.set_xticks(sorted(all_bits))
        ax.set_xlabel("code length (bits)")
        ax.set_ylabel("mAP@all")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="best")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (no other has <= cost and >= mAP, one strictly), by cost."""
    front = []
    best = -np.inf
    for cost, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if value > best:
            front.append((cost, value))
            best = value
    return front


def map_vs_flops(title: str, points: Mapping[int, Mapping[str, tuple[float, float, float, int]]],
                 style: Mapping[str, Mapping[str, Any]], cost_label: str) -> Figure:
    """``points[bits][method] = (flops_g, mean, std, n)``: one panel per bit length with the frontier."""
    bits_list = sorted(points)
    with figure_style():
        fig = Figure(figsize=(3.3 * len(bits_list) + 0.6, 3.4))
        axes = fig.subplots(1, len(bits_list), squeeze=False)[0]
        for ax, bits in zip(axes, bits_list):
            per = points[bits]
            for method in sorted(per):
                flops, mean, std, n = per[method]
                ax.errorbar([flops], [mean], yerr=[std if n >= 2 else 0.0], capsize=3, linestyle="none",
                            markersize=6, label=method, **style[method])
                ax.annotate(method, (flops, mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
            front = pareto_front([(v[0], v[1]) for v in per.values()])
            if len(front) > 1:
                ax.plot([f[0] for f in front], [f[1] for f in front], color="0.4", linestyle="--", linewidth=1,
                        zorder=0, label="frontier")
            ax.set_xlabel(cost_label)
            ax.set_title(f"{bits} bits")
        axes[0].set_ylabel("mAP@all")
        axes[-1].legend(fontsize=7, loc="best")
        fig.suptitle(title)
    return fig


def pr_curves(title: str, curves: Mapping[int, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
              style: Mapping[str, Mapping[str, Any]]) -> Figure:
    """``curves[bits][method] = (precision, recall)`` at radii 0..bits: one panel per bit length."""
    bits_list = sorted(curves)
    with figure_style():
        fig = Figure(figsize=(3.3 * len(bits_list) + 0.6, 3.4))
        axes = fig.subplots(1, len(bits_list), squeeze=False)[0]
        for ax, bits in zip(axes, bits_list):
            for method in sorted(curves[bits]):
                precision, recall = curves[bits][method]
                st = style[method]
                ax.plot(recall, precision, color=st["color"], marker=st["marker"], markersize=3, linewidth=1.2,
                        label=method)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_title(f"{bits} bits")
        axes[0].set_ylabel("precision")
        axes[-1].legend(fontsize=7, loc="best")
        fig.suptitle(title)
    return fig


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` px (PIL bilinear; deterministic)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _framed(image: np.ndarray, colour: tuple[int, int, int], width: int) -> np.ndarray:
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def retrieval_mosaic(examples: Sequence[Mapping[str, Any]], query_split: Any, db_split: Any, thumb: int = 48,
                     gap: int = 4, frame: int = 3) -> np.ndarray:
    """One uint8 image: a row per query, the query then its top-k, each framed (grey/green/red)."""
    k = max(len(e["top"]) for e in examples)
    width = (k + 1) * (thumb + gap) + 3 * gap
    mosaic = np.full((len(examples) * (thumb + gap), width, 3), 255, dtype=np.uint8)
    for r, ex in enumerate(examples):
        y = r * (thumb + gap)
        mosaic[y:y + thumb, :thumb] = _framed(thumbnail(query_split.load_array(ex["query"]), thumb), QUERY_RGB, frame)
        for c, (j, ok) in enumerate(zip(ex["top"], ex["relevant"])):
            x = (c + 1) * (thumb + gap) + 3 * gap
            tile = _framed(thumbnail(db_split.load_array(j), thumb), CORRECT_RGB if ok else WRONG_RGB, frame)
            mosaic[y:y + thumb, x:x + thumb] = tile
    return mosaic


QUERY_RGB = (90, 90, 90)
CORRECT_RGB = (26, 158, 58)
WRONG_RGB = (214, 39, 40)


def retrieval_panel(title: str, examples: Sequence[Mapping[str, Any]], query_split: Any, db_split: Any,
                    thumb: int = 48) -> Figure:
    """Rows = queries (left, grey frame) and their top-k: green frame same class, red different.

    ``query_split``/``db_split`` are :class:`fgbench.Split` objects (``load_array``).
    The thumbnails are composed into one image (one axes), which keeps the
    figure fast to draw and small on disk.
    """
    gap = 4
    mosaic = retrieval_mosaic(examples, query_split, db_split, thumb, gap)
    h, w = mosaic.shape[:2]
    dpi = RC["savefig.dpi"]
    with figure_style():
        fig = Figure(figsize=(w / dpi + 0.2, h / dpi + 0.6))
        ax = fig.add_axes((0.0, 0.0, 1.0, h / dpi / (h / dpi + 0.6)))
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_axis_off()
        for r, ex in enumerate(examples):
            ax.text(-gap, r * (thumb + gap) + thumb / 2, f"q{ex['query']}", ha="right", va="center", fontsize=6)
        fig.suptitle(f"{title}\nleft: query; then top-{max(len(e['top']) for e in examples)} "
                     f"(green: same class, red: different class)", fontsize=8)
    return fig
