"""An ipywidgets explorer: pick an image, two methods and a colormap; a slider moves the split
between the two depth maps (left = method A, right = method B)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from . import plots


def split_view(a: np.ndarray, b: np.ndarray, split: float) -> np.ndarray:
    """Left ``split`` fraction of the columns from ``a``, the rest from ``b`` (both H×W×3)."""
    w = a.shape[1]
    k = int(round(np.clip(split, 0.0, 1.0) * w))
    out = b.copy()
    out[:, :k] = a[:, :k]
    return out


def split_figure(image: np.ndarray, a: np.ndarray, b: np.ndarray, title: str, cmap: str = "Spectral",
                 split: float = 0.5):
    """Image | depth ``a`` left of the split, ``b`` right of it (H×W maps); returns the figure."""
    import matplotlib.pyplot as plt

    va, vb = plots.depth_rgb(a, cmap=cmap), plots.depth_rgb(b, cmap=cmap)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
    axes[0].imshow(image)
    axes[1].imshow(split_view(va, vb, split))
    axes[1].axvline(split * va.shape[1] - 0.5, color="white", lw=1)
    axes[1].set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    return fig


def collect_predictions(out: str | os.PathLike, methods: Sequence[str], n_scenes: int = 8, n_photos: int = 8,
                        marigold_steps: int = 4, marigold_ensemble: int = 1, device: str = "cpu"):
    """(images, {method: [depth]}) for the first held-out scenes and real photos."""
    from . import stages
    from .data.base import usable_items
    from .data.io import list_files, read_rgb
    from .data.synthetic import SyntheticDepthDataset
    from .evaluate import predict_depths

    L = stages.layout(out)
    ds = SyntheticDepthDataset(L.eval)
    images = [it["image"] for it in usable_items(ds, n_scenes)]
    import torch

    images += [torch.from_numpy(read_rgb(f)).permute(2, 0, 1).float() / 255.0 for f in list_files(L.real)[:n_photos]]
    preds = {}
    for m in methods:
        if not ((L.runs / m).is_dir() or m == "teacher"):
            continue
        predictor = stages.predictor_for(out, m, device)
        preds[stages.label_of(m)] = predict_depths(predictor, images, None,
                                                   pipeline_kwargs=stages.pipeline_kwargs_for(m, marigold_steps,
                                                                                              marigold_ensemble))
    return [im.permute(1, 2, 0).numpy() for im in images], preds


def explorer(out: str | os.PathLike, methods: Sequence[str], **kw):
    """Build and return the widget (display it as a notebook cell's last expression).

    The view is an ``ipywidgets.Image`` redrawn by the controls' observers, not ``interactive``'s
    captured ``plt.show()``: under papermill (ipykernel 7, nbclient 0.11), a large figure shown
    inside ``interactive``'s Output widget left the cell "running" after the kernel went idle,
    and `make reproduce` hung in 05_ablations."""
    import ipywidgets as W

    images, preds = collect_predictions(out, methods, **kw)
    names = list(preds)
    if not names:
        raise FileNotFoundError(f"{out}: none of {list(methods)} has a run or a predictor to explore")
    image = W.IntSlider(0, 0, len(images) - 1, description="image")
    a = W.Dropdown(options=names, value=names[0], description="left")
    b = W.Dropdown(options=names, value=names[min(1, len(names) - 1)], description="right")
    cmap = W.Dropdown(options=["Spectral", "viridis", "magma", "gray"], value="Spectral", description="colormap")
    split = W.FloatSlider(0.5, min=0.0, max=1.0, step=0.02, description="split")
    view = W.Image(format="png")

    def draw(_=None):
        fig = split_figure(images[image.value], preds[a.value][image.value], preds[b.value][image.value],
                           f"{a.value}  |  {b.value}", cmap.value, split.value)
        view.value = plots.figure_png(fig)  # closes the figure

    for control in (image, a, b, cmap, split):
        control.observe(draw, names="value")
    draw()
    return W.VBox([image, a, b, cmap, split, view])
