"""The mean-layout baseline: no model, no image.

``mean_layout_map`` averages the training scenes' affinely normalised depth per pixel (each
scene's valid depth mapped to [-1, 1] with its 2nd/98th percentiles and clipped: the formula
of ``fiffdepth.codecs.normalize_depth``, Marigold's depth encoding); ``mean_layout_predictor`` returns that one map,
resized, for every image. Scored by ``fiffdepth.evaluate`` exactly like a model (least-squares
affine alignment in depth space, AbsRel, δ1, boundary F1), it says how much of a score the
average layout of the training scenes (floor below, far things at the top) earns by itself: a
model's AbsRel divided by this one's is the "AbsRel / mean layout" column of the result tables.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

MEAN_LAYOUT = "mean_layout"  # method name in fiffdepth.stages, predictor kind in results.json
MEAN_LAYOUT_LABEL = "mean layout (no model, no image)"


def _scene_ids(scenes_dir: Path, max_scenes: int | None) -> list[str]:
    from .data.io import list_files

    return [p.stem for p in list_files(scenes_dir / "depth", (".npy",), recursive=False)][:max_scenes]


def _load(scenes_dir: Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    """Depth and valid mask of one scene, as ``SyntheticDepthDataset`` reads them."""
    from .data.io import clean_depth, read_gray, read_npy

    mask_path = scenes_dir / "mask" / f"{sid}.png"
    mask = read_gray(mask_path) > 0.5 if mask_path.exists() else None
    return clean_depth(read_npy(scenes_dir / "depth" / f"{sid}.npy"), valid=mask)


def _normalize(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``fiffdepth.codecs.normalize_depth`` of one map, in NumPy (about 5× faster on a small map,
    and without importing diffusers); invalid pixels are +1 as there."""
    lo, hi = np.percentile(depth[valid], [2, 98])
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6) * 2.0 - 1.0, -1.0, 1.0)
    return np.where(valid, norm, 1.0).astype(np.float32)


def _resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a (H, W) array."""
    if tuple(x.shape) == tuple(shape):
        return x
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    shrink = shape[0] < x.shape[0] or shape[1] < x.shape[1]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False, antialias=shrink)[0, 0].numpy()


def mean_layout_map(scenes_dir: str | os.PathLike, size: int | tuple[int, int] | None = None,
                    max_scenes: int | None = None) -> np.ndarray:
    """(H, W) float32: the per-pixel mean over the scenes of ``scenes_dir`` (``DIR/depth/*.npy``,
    ``DIR/mask/*.png``; the first ``max_scenes`` in name order) of their normalised depth.

    Each scene's depth is normalised as by ``fiffdepth.codecs.normalize_depth`` (valid 2nd/98th
    percentiles to [-1, 1], clipped); invalid pixels are left out of the mean, and a pixel
    valid in no scene gets the mean of the others. ``size``: the map's side (or (H, W));
    None = the first scene's size. A scene of another size is resized to it (its normalised
    depth and valid mask both, so the mean stays valid-weighted). Deterministic.
    """
    from .data.io import DataError

    scenes_dir = Path(scenes_dir)
    ids = _scene_ids(scenes_dir, max_scenes)
    shape = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    total = count = None
    for sid in ids:
        depth, valid = _load(scenes_dir, sid)
        if not valid.any():
            continue
        norm = _normalize(depth, valid)
        shape = shape or depth.shape
        if total is None:
            total, count = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
        total += _resize(np.where(valid, norm, np.float32(0.0)), shape)
        count += _resize(valid.astype(np.float32), shape)
    if total is None:
        raise DataError(f"{scenes_dir}: no scene with a valid depth pixel")
    seen = count > 1e-6
    mean = np.divide(total, count, out=np.zeros_like(total), where=seen)
    mean[~seen] = mean[seen].mean()
    return mean.astype(np.float32)


def scenes_digest(scenes_dir: str | os.PathLike) -> str:
    """Identifies the scenes a map is averaged over: names, sizes and mtimes of the depth and
    mask files (sha256; empty when the folder does not exist)."""
    scenes_dir = Path(scenes_dir)
    files = sorted(p for sub in ("depth", "mask") if (scenes_dir / sub).is_dir() for p in (scenes_dir / sub).iterdir())
    listing = "".join(f"{p.parent.name}/{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest() if files else ""


def mean_layout_predictor(scenes_dir: str | os.PathLike, max_scenes: int | None = None):
    """A ``fiffdepth.evaluate.Predictor`` (depth space) that returns ``mean_layout_map(scenes_dir)``
    resized to each image's size, whatever the image."""
    from .evaluate import Predictor

    layout_map = mean_layout_map(scenes_dir, max_scenes=max_scenes)

    def predict(images, processing_resolution=None):
        return [_resize(layout_map, tuple(im.shape[-2:])) for im in images]

    return Predictor(predict, "depth", {"kind": MEAN_LAYOUT, "scenes": str(scenes_dir), "max_scenes": max_scenes,
                                        "map_size": list(layout_map.shape)})
