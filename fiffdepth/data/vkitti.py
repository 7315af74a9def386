"""Virtual KITTI 2 (Cabon et al. 2020), the paper's outdoor synthetic training set.

Facts (prs-eth/Marigold ``src/dataset/vkitti_dataset.py``, ``config/dataset_depth/
data_vkitti_train.yaml``, ``data_split/vkitti_depth/vkitti_train.txt``):
- RGB ``rgb/<Scene>/<variation>/frames/rgb/Camera_<k>/rgb_<NNNNN>.jpg``; depth
  ``depth/<Scene>/<variation>/frames/depth/Camera_<k>/depth_<NNNNN>.png``, a 16-bit PNG in
  centimetres (depth = value / 100). The official archives name the top folders
  ``vkitti_2.0.3_rgb`` / ``vkitti_2.0.3_depth``; both spellings are accepted.
- 65535 (655.35 m) is the sky: invalid here. Marigold's valid range is 1e-5 < depth < 80 m.
- Marigold crops training frames to the KITTI benchmark size 352 x 1216 (bottom rows, centred
  columns) before anything else (``kitti_bm_crop: true``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DepthDataset
from .io import DataError, Root, clean_depth, depth_item, read_depth_png, read_rgb, read_split_file

SKY = 65535
MIN_DEPTH, MAX_DEPTH = 1e-5, 80.0
KB_HEIGHT, KB_WIDTH = 352, 1216


def kitti_benchmark_crop(x: np.ndarray) -> np.ndarray:
    """Bottom 352 rows, centred 1216 columns (Marigold's ``kitti_benchmark_crop``); (H, W, ...)."""
    h, w = x.shape[:2]
    top, left = h - KB_HEIGHT, (w - KB_WIDTH) // 2
    if top < 0 or left < 0:
        return x
    return x[top:top + KB_HEIGHT, left:left + KB_WIDTH]


def vkitti_depth_path(rgb_rel: str) -> str:
    """``rgb/.../frames/rgb/Camera_0/rgb_00000.jpg`` -> ``depth/.../frames/depth/Camera_0/depth_00000.png``."""
    parts = Path(rgb_rel).parts
    top = parts[0][: -len("rgb")] + "depth" if parts[0].endswith("rgb") else parts[0]
    mid = ["depth" if p == "rgb" else p for p in parts[1:-1]]
    name = parts[-1].replace("rgb_", "depth_", 1).rsplit(".", 1)[0] + ".png"
    return str(Path(top, *mid, name))


class VirtualKITTI2Dataset(DepthDataset):
    """VKITTI 2 depth: ``root`` a directory or tar; ``split_file`` in Marigold's format, or None
    to pair every ``**/frames/rgb/**/rgb_*.jpg`` under a directory with its depth PNG."""

    min_depth, max_depth = MIN_DEPTH, MAX_DEPTH
    keeps_aspect = True  # training caches the whole (KB-cropped) frame, never upsampled (``train._augment``)

    def __init__(self, root, split_file=None, resolution: int | None = None, seed: int = 0,
                 kb_crop: bool = True, on_bad: str | None = None):
        super().__init__(resolution, seed, on_bad)
        self.root, self.kb_crop = Root(root), kb_crop
        if split_file is not None:
            self.samples = [(line[0], line[1]) for line in read_split_file(split_file) if line[1] != "None"]
        else:
            if self.root.is_tar:
                raise DataError(f"{root}: a tar root needs a split file")
            rgbs = sorted(self.root.path.glob("**/frames/rgb/**/rgb_*.jpg"))
            if not rgbs:
                raise DataError(f"{root}: no **/frames/rgb/**/rgb_*.jpg files (Virtual KITTI 2 layout)")
            rels = [str(p.relative_to(self.root.path)) for p in rgbs]
            self.samples = [(r, vkitti_depth_path(r)) for r in rels]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        rgb_rel, depth_rel = self.samples[index]
        rgb = read_rgb(self.root.read(rgb_rel), self.root.describe(rgb_rel))
        raw = read_depth_png(self.root.read(depth_rel), self.root.describe(depth_rel))
        depth, valid = clean_depth(raw / 100.0, self.min_depth, self.max_depth, valid=raw != SKY)
        if self.kb_crop:
            rgb, depth, valid = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth), kitti_benchmark_crop(valid)
        return depth_item(rgb, depth, valid, rgb_rel)
