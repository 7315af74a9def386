"""Hypersim (Roberts et al. 2021), the paper's indoor synthetic training set, in two layouts.

Facts (from prs-eth/Marigold ``script/depth/dataset_preprocess/hypersim/``):
- Raw release: ``<scene>/images/scene_<cam>_final_hdf5/frame.<NNNN>.color.hdf5`` (linear HDR
  RGB), ``scene_<cam>_geometry_hdf5/frame.<NNNN>.depth_meters.hdf5`` (distance from the camera
  centre, metres, not planar depth) and ``frame.<NNNN>.render_entity_id.hdf5`` (-1 = no
  surface); every file stores its array under the HDF5 key ``"dataset"``.
- Camera: 1024 x 768 pinhole, focal 886.81 px; planar depth = distance * f / |(x, y, f)| with
  pixel centres x in linspace(-W/2 + 0.5, W/2 - 0.5), y likewise.
- Tone map: gamma 1/2.2; scale so that the 90th percentile of CCIR601 brightness
  (0.3 R + 0.59 G + 0.11 B) over valid pixels becomes 0.8 after gamma.
- Marigold's preprocessed layout: ``<scene>/rgb_<cam>_fr<NNNN>.png`` (8-bit tone-mapped RGB) and
  ``<scene>/depth_plane_<cam>_fr<NNNN>.png`` (uint16 planar depth in mm, 0 invalid), listed in
  ``data_split/hypersim_depth/filename_list_train_filtered.txt`` as "rgb depth" lines.
- Valid range (``src/dataset/hypersim_dataset.py``): 1e-5 < depth < 65 m.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import numpy as np

from .base import DepthDataset
from .io import DataError, Root, clean_depth, depth_item, read_bytes, read_depth_png, read_rgb, read_split_file

WIDTH, HEIGHT, FOCAL = 1024, 768, 886.81
MIN_DEPTH, MAX_DEPTH = 1e-5, 65.0


def distance_to_planar(distance: np.ndarray, focal: float = FOCAL) -> np.ndarray:
    """Hypersim ``depth_meters`` (ray distance) -> z-depth, for any (H, W) with the same focal
    per pixel unit (pass ``focal * W / 1024`` for a resized frame)."""
    h, w = distance.shape
    x = np.linspace(-0.5 * w + 0.5, 0.5 * w - 0.5, w, dtype=np.float64)[None, :]
    y = np.linspace(-0.5 * h + 0.5, 0.5 * h - 0.5, h, dtype=np.float64)[:, None]
    # float64 first: Hypersim stores float16, and float16 * python float stays float16 (NEP 50)
    return (distance.astype(np.float64) * focal / np.sqrt(x * x + y * y + focal * focal)).astype(np.float32)


def tone_map(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear HDR (H, W, 3) -> uint8 sRGB-like image, Hypersim's own tone mapper."""
    rgb = np.nan_to_num(rgb.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    gamma, percentile, target = 1.0 / 2.2, 90, 0.8
    if valid.any():
        brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
        current = np.percentile(brightness[valid], percentile)
        scale = 0.0 if current < 1e-4 else target ** (1 / gamma) / current
    else:
        scale = 1.0
    out = np.clip(np.power(np.maximum(scale * rgb, 0), gamma), 0, 1)
    return (out * 255).astype(np.uint8)


def read_hdf5(path: str | os.PathLike, key: str = "dataset") -> np.ndarray:
    try:
        with h5py.File(io.BytesIO(read_bytes(path)), "r") as f:
            if key not in f:
                raise DataError(f"{path}: no HDF5 key {key!r} (has {list(f.keys())})")
            return np.asarray(f[key])
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read HDF5 ({err})") from err


class HypersimDataset(DepthDataset):
    """Marigold's preprocessed Hypersim (``root`` a directory or tar; ``split_file`` optional:
    without it every ``*/rgb_*.png`` under a directory root is paired with its ``depth_plane_``)."""

    min_depth, max_depth = MIN_DEPTH, MAX_DEPTH

    def __init__(self, root, split_file=None, resolution: int | None = None, seed: int = 0, on_bad: str | None = None):
        super().__init__(resolution, seed, on_bad)
        self.root = Root(root)
        if split_file is not None:
            self.samples = [(line[0], line[1]) for line in read_split_file(split_file)]
        else:
            if self.root.is_tar:
                raise DataError(f"{root}: a tar root needs a split file")
            rgbs = sorted(self.root.path.glob("*/rgb_*.png"))
            if not rgbs:
                raise DataError(f"{root}: no */rgb_*.png files (Marigold's Hypersim layout)")
            self.samples = [(str(p.relative_to(self.root.path)),
                             str(p.relative_to(self.root.path).with_name(p.name.replace("rgb_", "depth_plane_", 1))))
                            for p in rgbs]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        rgb_rel, depth_rel = self.samples[index]
        rgb = read_rgb(self.root.read(rgb_rel), self.root.describe(rgb_rel))
        depth = read_depth_png(self.root.read(depth_rel), self.root.describe(depth_rel), scale=1e-3)
        depth, valid = clean_depth(depth, self.min_depth, self.max_depth)
        return depth_item(rgb, depth, valid, rgb_rel)


class HypersimRawDataset(DepthDataset):
    """The raw Hypersim release (HDF5), tone-mapped and converted to planar depth on the fly."""

    min_depth, max_depth = MIN_DEPTH, MAX_DEPTH

    def __init__(self, root, resolution: int | None = None, seed: int = 0, on_bad: str | None = None):
        super().__init__(resolution, seed, on_bad)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a directory")
        self.frames = sorted(self.root.glob("*/images/scene_*_final_hdf5/frame.*.color.hdf5"))
        if not self.frames:
            raise DataError(f"{self.root}: no <scene>/images/scene_*_final_hdf5/frame.*.color.hdf5 files")

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> dict:
        color = self.frames[index]
        geo = color.parent.with_name(color.parent.name.replace("_final_hdf5", "_geometry_hdf5"))
        frame = color.name.split(".")[1]
        rgb = read_hdf5(color)
        dist = read_hdf5(geo / f"frame.{frame}.depth_meters.hdf5")
        if rgb.ndim != 3 or rgb.shape[:2] != dist.shape:
            raise DataError(f"{color}: colour {rgb.shape} and distance {dist.shape} do not match")
        ent_path = geo / f"frame.{frame}.render_entity_id.hdf5"
        surface = read_hdf5(ent_path) != -1 if ent_path.exists() else np.isfinite(dist)
        depth = distance_to_planar(np.nan_to_num(dist, nan=0.0, posinf=0.0), FOCAL * dist.shape[1] / WIDTH)
        depth, valid = clean_depth(np.where(np.isfinite(dist), depth, np.nan), self.min_depth, self.max_depth, surface)
        return depth_item(tone_map(rgb, surface), depth, valid, str(color.relative_to(self.root)))
