"""Boundary benchmarks of Depth Pro (Table 2 of the paper).

Depth GT (boundary F1): Sintel, Spring, iBims-1. Items ``image``, ``depth`` (1,H,W) float32
with **NaN** where invalid (Depth Pro's metric compares neighbouring inverse depths, and a 0
would create false edges), ``valid_mask``, ``name``.
Mask GT (boundary recall): AM-2k, P3M-10k, DIS-5k. Items ``image``, ``mask`` (1,H,W) float32
in [0,1], ``name``. Bad files raise ``DataError`` naming the file (evaluation policy).

Formats and layouts (facts, with where they were read):
- Sintel ``.dpt``: float32 tag 202021.25 ('PIEH'), int32 width, int32 height, then float32
  depth row-major (Sintel's ``sintel_io.depth_read``, as copied in many repos). Layout
  ``training/<pass>/<scene>/frame_NNNN.png`` and ``training/depth/<scene>/frame_NNNN.dpt``
  (MPI-Sintel images and depth archives unpacked into one root).
- Spring ``.dsp5``: HDF5 key ``"disparity"`` at twice the image resolution, use ``[::2, ::2]``
  (PROTOCOLS.md / Depth Pro); depth = fx * 0.065 m / disparity, fx from
  ``cam_data/intrinsics.txt`` (one "fx fy cx cy" line per frame, frames 1-indexed), sky
  disparity 0 (Spring's FAQ and ``flow_library`` as used by third-party loaders). Layout
  ``<split>/<seq>/frame_left/frame_left_NNNN.png``, ``disp1_left/disp1_left_NNNN.dsp5``.
- iBims-1: ``ibims1_core_raw/imagelist.txt`` (basenames), ``rgb/<b>.png``, ``depth/<b>.png``
  uint16 with metres = value * 50 / 65535, ``mask_invalid/<b>.png`` and ``mask_transp/<b>.png``
  (0 = exclude) (ZoeDepth's ``zoedepth/data/ibims.py``). 0 and 65535 (saturated) are invalid.
- AM-2k: ``validation/original/*.jpg`` + ``validation/mask/<stem>.png`` (GFM release).
- P3M-10k: ``validation/P3M-500-NP/{original_image,mask}`` and
  ``validation/P3M-500-P/{blurred_image,mask}`` (P3M release README).
- DIS-5k: ``DIS5K/DIS-TE{1..4}/{im/*.jpg, gt/*.png}``; Depth Pro scores a fixed 200-image list,
  ``src/depth_pro/eval/dis5k_sample_list.txt`` in apple/ml-depth-pro, lines
  ``DIS5K/DIS-TE1/im/<name>.jpg`` (pass it as ``sample_list``).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import h5py
import numpy as np
import torch

from .base import DepthDataset
from .io import DataError, image_tensor, list_files, read_bytes, read_depth_png, read_gray, read_rgb

SINTEL_TAG = 202021.25
SPRING_BASELINE = 0.065  # m
IBIMS_SCALE = 50.0 / 65535.0


def read_dpt(path) -> np.ndarray:
    """Sintel ``.dpt`` -> float32 (H, W) depth."""
    data = read_bytes(path)
    if len(data) < 12:
        raise DataError(f"{path}: truncated .dpt header ({len(data)} bytes)")
    tag, w, h = struct.unpack("<fii", data[:12])
    if tag != SINTEL_TAG:
        raise DataError(f"{path}: wrong .dpt tag {tag} (expected {SINTEL_TAG}, 'PIEH')")
    if not (0 < w < 100_000 and 0 < h < 100_000) or len(data) != 12 + 4 * w * h:
        raise DataError(f"{path}: .dpt says {w}x{h} but holds {len(data) - 12} data bytes")
    return np.frombuffer(data, dtype="<f4", offset=12).reshape(h, w).copy()


def read_dsp5(path) -> np.ndarray:
    """Spring ``.dsp5`` -> float32 disparity at image resolution (``[::2, ::2]``)."""
    try:
        with h5py.File(io.BytesIO(read_bytes(path)), "r") as f:
            if "disparity" not in f:
                raise DataError(f"{path}: no HDF5 key 'disparity'")
            disp = np.asarray(f["disparity"], dtype=np.float32)
    except OSError as err:
        raise DataError(f"{path}: cannot read HDF5 ({err})") from err
    if disp.ndim != 2:
        raise DataError(f"{path}: disparity has shape {disp.shape}")
    return disp[::2, ::2]


def _nan_invalid(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    depth = depth.astype(np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= valid
    return np.where(ok, depth, np.float32(np.nan)), ok


def _boundary_item(rgb, depth, valid, name) -> dict:
    if rgb.shape[:2] != depth.shape:
        raise DataError(f"{name}: image {rgb.shape[:2]} and depth {depth.shape} sizes differ")
    return {"image": image_tensor(rgb), "depth": torch.from_numpy(depth)[None],
            "valid_mask": torch.from_numpy(valid)[None], "name": name}


class Sintel(DepthDataset):
    on_bad_default = "raise"

    def __init__(self, root, pass_name: str = "final", on_bad: str | None = None):
        super().__init__(None, 0, on_bad)
        self.root, self.pass_name = Path(root), pass_name
        self.depths = list_files(self.root / "training" / "depth", (".dpt",))

    def __len__(self):
        return len(self.depths)

    def load(self, index):
        dpt = self.depths[index]
        rel = dpt.relative_to(self.root / "training" / "depth")
        rgb = read_rgb(self.root / "training" / self.pass_name / rel.with_suffix(".png"))
        depth, valid = _nan_invalid(read_dpt(dpt))
        return _boundary_item(rgb, depth, valid, str(rel.with_suffix("")))


class Spring(DepthDataset):
    on_bad_default = "raise"

    def __init__(self, root, split: str = "train", on_bad: str | None = None):
        super().__init__(None, 0, on_bad)
        self.root = Path(root) / split
        self.disps = list_files(self.root, (".dsp5",))
        self.disps = [p for p in self.disps if p.parent.name == "disp1_left"]
        if not self.disps:
            raise DataError(f"{self.root}: no */disp1_left/*.dsp5 files")

    def __len__(self):
        return len(self.disps)

    def load(self, index):
        path = self.disps[index]
        seq = path.parent.parent
        frame = int(path.stem.rsplit("_", 1)[1])
        rgb = read_rgb(seq / "frame_left" / f"frame_left_{frame:04d}.png")
        intr_path = seq / "cam_data" / "intrinsics.txt"
        try:
            fx = float(np.loadtxt(io.StringIO(read_bytes(intr_path).decode()), ndmin=2)[frame - 1, 0])
        except (ValueError, IndexError) as err:
            raise DataError(f"{intr_path}: no intrinsics for frame {frame} ({err})") from err
        disp = read_dsp5(path)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = fx * SPRING_BASELINE / disp
        depth, valid = _nan_invalid(depth, np.isfinite(disp) & (disp > 0))
        return _boundary_item(rgb, depth, valid, f"{seq.name}/{frame:04d}")


class IBims1(DepthDataset):
    on_bad_default = "raise"

    def __init__(self, root, on_bad: str | None = None):
        super().__init__(None, 0, on_bad)
        self.root = Path(root)
        names = read_bytes(self.root / "imagelist.txt").decode().split()
        if not names:
            raise DataError(f"{self.root / 'imagelist.txt'}: empty image list")
        self.names = names

    def __len__(self):
        return len(self.names)

    def load(self, index):
        b = self.names[index]
        rgb = read_rgb(self.root / "rgb" / f"{b}.png")
        raw = read_depth_png(self.root / "depth" / f"{b}.png")
        valid = (raw > 0) & (raw < 65535)
        for sub in ("mask_invalid", "mask_transp"):
            p = self.root / sub / f"{b}.png"
            if p.exists():
                valid &= read_gray(p) > 0
        depth, valid = _nan_invalid(raw * np.float32(IBIMS_SCALE), valid)
        return _boundary_item(rgb, depth, valid, b)


class MaskDataset(torch.utils.data.Dataset):
    """Image + matte/segmentation pairs -> ``image``, ``mask`` (1,H,W) in [0,1], ``name``."""

    def __init__(self, pairs: list[tuple[Path, Path]], names: list[str]):
        if not pairs:
            raise DataError("mask dataset: no image/mask pairs")
        self.pairs, self.names = pairs, names

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        img_path, mask_path = self.pairs[index]
        rgb = read_rgb(img_path)
        mask = read_gray(mask_path)
        if mask.shape != rgb.shape[:2]:
            raise DataError(f"{mask_path}: mask {mask.shape} does not match image {rgb.shape[:2]}")
        return {"image": image_tensor(rgb), "mask": torch.from_numpy(mask)[None], "name": self.names[index]}

    @classmethod
    def from_folders(cls, image_dir, mask_dir, mask_ext=".png"):
        images = list_files(image_dir, recursive=False)
        pairs = [(p, Path(mask_dir) / (p.stem + mask_ext)) for p in images]
        missing = [str(m) for _, m in pairs if not m.exists()]
        if missing:
            raise DataError(f"{missing[0]}: mask missing ({len(missing)} of {len(pairs)} images have none)")
        return cls(pairs, [p.stem for p, _ in pairs])


def AM2k(root) -> MaskDataset:
    root = Path(root)
    return MaskDataset.from_folders(root / "validation" / "original", root / "validation" / "mask")


def P3M10k(root, subset: str = "P3M-500-NP") -> MaskDataset:
    base = Path(root) / "validation" / subset
    image_dir = "original_image" if subset.endswith("NP") else "blurred_image"
    return MaskDataset.from_folders(base / image_dir, base / "mask")


def DIS5k(root, sample_list=None, subsets=("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")) -> MaskDataset:
    """``root`` holds ``DIS5K/``; ``sample_list`` is Depth Pro's ``dis5k_sample_list.txt``."""
    root = Path(root)
    if sample_list is not None:
        rels = read_bytes(sample_list).decode().splitlines()
        images = [root / r.strip() for r in rels if r.strip()]
    else:
        images = [p for s in subsets for p in list_files(root / "DIS5K" / s / "im", recursive=False)]
    pairs = [(p, p.parent.parent / "gt" / (p.stem + ".png")) for p in images]
    missing = [str(p) for pair in pairs for p in pair if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}: missing ({len(missing)} files absent)")
    return MaskDataset(pairs, [f"{p.parent.parent.name}/{p.stem}" for p, _ in pairs])
