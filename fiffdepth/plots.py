"""Figures for the notebooks and ``figures/``: loss curves (live or from logs), qualitative
comparison grids with boundary close-ups, generator samples, ablation bars.

Every function returns the matplotlib figure and, given ``out``, also writes it (atomically).
Depth maps are shown as affine-invariant depth: each map is stretched between its own 2nd and
98th percentiles (near = red, far = blue with the default ``Spectral`` colormap), so methods
that differ by scale and shift look alike and only structure differs.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .atomic import atomic_write
from .losses import LOSS_TERMS


def _plt():
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | os.PathLike | None, dpi: int = 120) -> None:
    if out is None:
        return
    atomic_write(out, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight"))


def figure_png(fig, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (for an ``ipywidgets.Image``), then closed."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def stretch_limits(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float] | None:
    """The 2nd and 98th percentiles of ``depth`` over its valid, finite pixels (None: there are none)."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) if valid is None else (valid & np.isfinite(d))
    if not valid.any():
        return None
    lo, hi = np.percentile(d[valid], [2, 98])
    return float(lo), float(hi)


def stretch(depth: np.ndarray, valid: np.ndarray | None = None,
            limits: tuple[float, float] | None = None) -> np.ndarray:
    """Depth -> [0, 1] between its 2nd and 98th percentiles over valid pixels, or between the
    given ``limits`` (invalid -> NaN)."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) if valid is None else (valid & np.isfinite(d))
    if limits is None:
        limits = stretch_limits(d, valid)
    if limits is None:
        return np.full(d.shape, np.nan)
    lo, hi = limits
    out = np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1)
    out[~valid] = np.nan
    return out


def depth_rgb(depth: np.ndarray, valid: np.ndarray | None = None, cmap: str = "Spectral",
              limits: tuple[float, float] | None = None) -> np.ndarray:
    """A depth map in colour (near red, far blue with Spectral), stretched over its own 2/98
    percentiles or over ``limits``; invalid pixels black."""
    import matplotlib

    s = stretch(depth, valid, limits)
    rgb = matplotlib.colormaps[cmap](np.nan_to_num(s, nan=0.0))[..., :3]
    rgb[np.isnan(s)] = 0.0
    return rgb


# -- losses ---------------------------------------------------------------------------------------

def read_losses(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "losses.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def plot_losses(runs: Mapping[str, Sequence[dict] | str | os.PathLike], terms: Sequence[str] = ("loss", *LOSS_TERMS, "heldout_d0_mae"),
                out=None, smooth: int = 5):
    """One panel per loss term (Eq. 5–7) and the held-out d0 MAE, one line per run."""
    plt = _plt()
    logs = {k: (v if isinstance(v, (list, tuple)) else read_losses(v)) for k, v in runs.items()}
    present = [t for t in terms if any(t in r for rows in logs.values() for r in rows)]
    cols = min(4, max(1, len(present)))
    rows_n = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.4 * rows_n), squeeze=False)
    for ax in axes.flat[len(present):]:
        ax.axis("off")
    for ax, term in zip(axes.flat, present):
        for label, rows in logs.items():
            pts = [(r["step"], r[term]) for r in rows if term in r and r[term] is not None and np.isfinite(r[term])]
            if not pts:
                continue
            x, y = map(np.asarray, zip(*pts))
            if smooth > 1 and len(y) > smooth and term != "heldout_d0_mae":
                y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
                x = x[smooth - 1:]
            ax.plot(x, y, label=label, lw=1.2, marker="o" if term == "heldout_d0_mae" else None, ms=3)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    if len(logs) > 1:
        axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out)
    return fig


def plot_terms(rows: Sequence[dict], terms: Sequence[str], smooth: int = 5, title: str | None = None, out=None):
    """Every term of one run in one panel (a few times cheaper to draw than ``plot_losses``'s panel
    per term, for views that redraw while training); the held-out d0 MAE as dots."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for term in terms:
        pts = [(r["step"], r[term]) for r in rows if r.get(term) is not None and np.isfinite(r[term])]
        if not pts:
            continue
        x, y = map(np.asarray, zip(*pts))
        if term == "heldout_d0_mae":
            ax.plot(x, y, "o--", label=term, lw=0.8, ms=3)
            continue
        if smooth > 1 and len(y) > smooth:
            x, y = x[smooth - 1:], np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        ax.plot(x, y, label=term, lw=1.2 if term == "loss" else 0.9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    return fig


class LiveLossPlot:
    """``on_log`` callback for ``fiffdepth.train.train``: redraws the loss panels in a notebook
    every ``every`` records (outside IPython it only collects the records)."""

    def __init__(self, label: str = "run", every: int = 5):
        self.label, self.every, self.rows, self._handle = label, every, [], None

    def __call__(self, record: dict) -> None:
        self.rows.append(record)
        if len(self.rows) % self.every == 0 or "heldout_d0_mae" in record:
            self.draw()

    def draw(self):
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return None
        if get_ipython() is None:
            return None
        plt = _plt()
        fig = plot_losses({self.label: self.rows})
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        return fig


# -- qualitative grids --------------------------------------------------------------------------------

def comparison_grid(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[np.ndarray]],
                    gt: Sequence[np.ndarray] | None = None, valid: Sequence[np.ndarray] | None = None,
                    zoom: Sequence[tuple[int, int, int]] | None = None, out=None, cmap: str = "Spectral",
                    cell: float = 1.9, title: str | None = None, gt_scale: bool = False):
    """Rows = images; columns = image | (GT) | each method's depth. ``zoom`` = per row
    ``(top, left, size)``: adds a second row of close-ups of that window (Fig. 6 style).
    Each depth map is stretched over its own 2/98 percentiles. With ``gt_scale`` (and ``gt``), the
    predictions are drawn on the ground truth's colour scale instead, so a colour means the same
    depth across a row: pass them aligned to the ground truth (``fiffdepth.evaluate.aligned_depth``,
    as they are scored). Pixels without ground truth (sky) show the prediction, clipped to that scale."""
    plt = _plt()
    names = (["image"] + (["ground truth"] if gt is not None else []) + list(columns))
    per = 2 if zoom is not None else 1
    fig, axes = plt.subplots(per * len(images), len(names), figsize=(cell * len(names), cell * per * len(images)),
                             squeeze=False)
    for i, img in enumerate(images):
        panels = [np.asarray(img)]
        v = valid[i] if valid is not None else None
        if gt is not None:
            panels.append(depth_rgb(gt[i], v, cmap))
        if gt_scale and gt is not None:
            limits = stretch_limits(gt[i], v)
            panels += [depth_rgb(columns[k][i], None, cmap, limits) for k in columns]
        else:
            panels += [depth_rgb(columns[k][i], None, cmap) for k in columns]
        for j, p in enumerate(panels):
            ax = axes[per * i, j]
            ax.imshow(p)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(textwrap.fill(names[j], 24), fontsize=8)
            if zoom is not None:
                top, left, size = zoom[i]
                ax.add_patch(plt.Rectangle((left, top), size, size, fill=False, ec="white", lw=1))
                z = axes[per * i + 1, j]
                z.imshow(p[top:top + size, left:left + size], interpolation="nearest")
                z.set_xticks([]), z.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return fig


def detail_window(depth: np.ndarray, valid: np.ndarray | None = None, size: int = 32) -> tuple[int, int, int]:
    """The ``size`` window with the most depth edges (for boundary close-ups)."""
    d = np.where(valid if valid is not None else np.isfinite(depth), depth, np.nan)
    inv = 1.0 / np.maximum(d, 1e-6)
    gy = np.abs(np.diff(inv, axis=0, prepend=inv[:1]))
    gx = np.abs(np.diff(inv, axis=1, prepend=inv[:, :1]))
    e = np.nan_to_num(gx + gy) / (np.nanmedian(inv) + 1e-9) > 0.05
    h, w = e.shape
    size = min(size, h, w)
    c = np.pad(np.cumsum(np.cumsum(e, 0), 1), ((1, 0), (1, 0)))
    best, arg = -1, (0, 0)
    for top in range(0, h - size + 1, max(1, size // 4)):
        for left in range(0, w - size + 1, max(1, size // 4)):
            s = c[top + size, left + size] - c[top, left + size] - c[top + size, left] + c[top, left]
            if s > best:
                best, arg = s, (top, left)
    return arg[0], arg[1], size


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, cols: int = 8, out=None,
               cell: float = 1.5, title: str | None = None):
    plt = _plt()
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, im) in enumerate(zip(axes.flat, images)):
        ax.imshow(np.clip(np.asarray(im), 0, 1) if np.asarray(im).dtype != np.uint8 else im)
        if titles:
            ax.set_title(titles[k], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return fig


def thin_structure_grid(root: str | os.PathLike, n: int = 4, out=None):
    """The first ``n`` usable scenes of an embedded scene folder, four panels each: image, depth,
    valid mask and thin-structure mask (``fiffdepth.data.synthetic.thin_structure_mask``). A bad
    scene is skipped and counted by ``usable_items``, never replaced by a neighbour."""
    from .data.base import usable_items
    from .data.synthetic import SyntheticDepthDataset, thin_structure_mask

    panels, titles = [], []
    for it in usable_items(SyntheticDepthDataset(root), limit=n):
        d, v = it["depth"][0].numpy(), it["valid_mask"][0].numpy()
        panels += [it["image"].permute(1, 2, 0).numpy(), depth_rgb(d, v), v.astype(float),
                   thin_structure_mask(d, v).astype(float)]
        titles += ["image", "depth", "valid mask", "thin structures"]
    return image_grid(panels, titles, cols=8, out=out)


def metric_bars(table: Mapping[str, Mapping[str, float]], metrics: Sequence[tuple[str, str]], out=None,
                title: str | None = None):
    """Horizontal bars per method for each (metric key, panel title)."""
    plt = _plt()
    methods = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 0.35 * len(methods) + 1.0), squeeze=False)
    for ax, (key, name) in zip(axes[0], metrics):
        vals = [table[m].get(key, np.nan) for m in methods]
        ax.barh(range(len(methods)), vals, color=["C3" if i == 0 else "C0" for i in range(len(methods))])
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(methods if ax is axes[0][0] else [""] * len(methods), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.text(v, i, f" {v:.1f}", va="center", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return fig
