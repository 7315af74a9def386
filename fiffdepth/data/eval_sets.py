"""Affine-invariant depth benchmarks in Marigold's evaluation layout (Table 1 of the paper).

Each dataset is a root (directory or Marigold's tar) plus Marigold's split file; each split
line gives the RGB path and the depth path relative to the root. All protocol facts live in
``PROTOCOLS`` (one place per dataset fact); the dataset classes read them from there.

Sources, all in prs-eth/Marigold:
- ranges and decoding: ``src/dataset/{nyu,kitti,eth3d,scannet,diode}_dataset.py``;
- Eigen/Garg crops: ``kitti_dataset.py`` (fractions of the GT size) and ``nyu_dataset.py``
  (rows 45:471, cols 41:601), applied to the *valid mask* only;
- which dataset uses which crop: ``config/dataset_depth/data_*.yaml`` (``eigen_valid_mask``,
  ``kitti_bm_crop``, ``valid_mask_crop``);
- processing resolution 756 (ETH3D), 640 (DIODE), 0 = native for the rest, and
  ``--alignment_max_res 1024`` for ETH3D: ``script/depth/eval/*_infer_*.sh``, ``32_eval_eth3d.sh``;
- split files (image counts): ``data_split/{nyu_depth/labeled/filename_list_test.txt (654),
  kitti_depth/eigen_test_files_with_gt.txt (697 lines, 652 with GT), eth3d_depth/
  eth3d_filename_list.txt (454), scannet_depth/scannet_val_sampled_list_800_1.txt (800),
  diode_depth/diode_val_all_filename_list.txt (771)}``.

Decoding: NYUv2 and ScanNet depth PNG / 1000; KITTI PNG / 256 with the KITTI benchmark crop
(352 x 1216) before anything else and "None" depth lines dropped; ETH3D a headerless
float32 raster the size of the DSLR image with inf = invalid; DIODE ``*_depth.npy`` (H, W, 1)
plus ``*_depth_mask.npy``. Valid means ``min_depth < d < max_depth`` (strict) and inside the
eval crop. Bad files raise ``DataError`` (``on_bad="raise"``; see ``fiffdepth.data.io``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import DepthDataset
from .io import DataError, Root, clean_depth, depth_item, read_depth_png, read_npy, read_raw_float32, read_rgb, read_split_file
from .vkitti import kitti_benchmark_crop


@dataclass(frozen=True)
class EvalProtocol:
    name: str
    min_depth: float
    max_depth: float
    eval_crop: str | None = None  # "nyu_eigen" | "kitti_eigen" | "kitti_garg" | None
    processing_resolution: int = 0  # 0 = native resolution
    alignment_max_res: int | None = None
    kb_crop: bool = False
    n_images: int = 0
    split_file: str = ""  # path inside prs-eth/Marigold


PROTOCOLS: dict[str, EvalProtocol] = {
    "nyu": EvalProtocol("nyu", 1e-3, 10.0, "nyu_eigen", 0, None, False, 654,
                        "data_split/nyu_depth/labeled/filename_list_test.txt"),
    "kitti": EvalProtocol("kitti", 1e-5, 80.0, "kitti_eigen", 0, None, True, 652,
                          "data_split/kitti_depth/eigen_test_files_with_gt.txt"),
    "eth3d": EvalProtocol("eth3d", 1e-5, float("inf"), None, 756, 1024, False, 454,
                          "data_split/eth3d_depth/eth3d_filename_list.txt"),
    "scannet": EvalProtocol("scannet", 1e-3, 10.0, None, 0, None, False, 800,
                            "data_split/scannet_depth/scannet_val_sampled_list_800_1.txt"),
    "diode": EvalProtocol("diode", 0.6, 350.0, None, 640, None, False, 771,
                          "data_split/diode_depth/diode_val_all_filename_list.txt"),
}


def eval_crop_mask(kind: str | None, h: int, w: int) -> np.ndarray:
    """Boolean (h, w) evaluation region of a crop kind (True everywhere for None)."""
    m = np.zeros((h, w), bool)
    if kind is None:
        m[:] = True
    elif kind == "nyu_eigen":
        m[45:471, 41:601] = True
    elif kind == "kitti_eigen":
        m[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
    elif kind == "kitti_garg":
        m[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    else:
        raise ValueError(f"unknown eval crop {kind!r}")
    return m


class MarigoldEvalDataset(DepthDataset):
    """Base: ``root`` (dir or tar) + Marigold split file; subclasses decode depth."""

    protocol: EvalProtocol
    on_bad_default = "raise"

    def __init__(self, root, split_file, on_bad: str | None = None):
        super().__init__(None, 0, on_bad)
        self.root = Root(root)
        self.samples = [line for line in read_split_file(split_file) if len(line) > 1 and line[1] != "None"]
        if not self.samples:
            raise DataError(f"{split_file}: no sample with a depth file")

    # protocol facts, exposed as attributes for convenience
    min_depth = property(lambda self: self.protocol.min_depth)
    max_depth = property(lambda self: self.protocol.max_depth)
    eval_crop = property(lambda self: self.protocol.eval_crop)
    processing_resolution = property(lambda self: self.protocol.processing_resolution)
    alignment_max_res = property(lambda self: self.protocol.alignment_max_res)

    def __len__(self) -> int:
        return len(self.samples)

    def read_depth(self, line: list[str], rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def load(self, index: int) -> dict:
        line = self.samples[index]
        rgb = read_rgb(self.root.read(line[0]), self.root.describe(line[0]))
        depth, extra_valid = self.read_depth(line, rgb)
        if self.protocol.kb_crop:
            rgb, depth = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth)
            extra_valid = None if extra_valid is None else kitti_benchmark_crop(extra_valid)
        if depth.shape != rgb.shape[:2]:
            raise DataError(f"{self.root.describe(line[1])}: depth {depth.shape} does not match image {rgb.shape[:2]}")
        depth, valid = clean_depth(depth, self.protocol.min_depth, self.protocol.max_depth, extra_valid)
        valid &= eval_crop_mask(self.protocol.eval_crop, *depth.shape)
        return depth_item(rgb, depth, valid, line[0])

    def _png(self, rel: str, scale: float) -> np.ndarray:
        return read_depth_png(self.root.read(rel), self.root.describe(rel), scale)


class NYUv2(MarigoldEvalDataset):
    """NYUv2 labeled test split; the raw (not inpainted, column 2) depth is scored."""

    protocol = PROTOCOLS["nyu"]

    def read_depth(self, line, rgb):
        return self._png(line[1], 1e-3), None


class KITTIEigen(MarigoldEvalDataset):
    protocol = PROTOCOLS["kitti"]

    def read_depth(self, line, rgb):
        return self._png(line[1], 1 / 256), None


class ETH3D(MarigoldEvalDataset):
    protocol = PROTOCOLS["eth3d"]

    def read_depth(self, line, rgb):
        rel = line[1]
        return read_raw_float32(self.root.read(rel), rgb.shape[:2], self.root.describe(rel)), None


class ScanNet(MarigoldEvalDataset):
    protocol = PROTOCOLS["scannet"]

    def read_depth(self, line, rgb):
        return self._png(line[1], 1e-3), None


class DIODE(MarigoldEvalDataset):
    protocol = PROTOCOLS["diode"]

    def read_depth(self, line, rgb):
        if len(line) < 3:
            raise DataError(f"{self.root.describe(line[0])}: DIODE split line needs rgb, depth and mask paths")
        depth = read_npy(self.root.read(line[1]), self.root.describe(line[1])).squeeze()
        mask = read_npy(self.root.read(line[2]), self.root.describe(line[2])).squeeze()
        if depth.ndim != 2 or mask.shape != depth.shape:
            raise DataError(f"{self.root.describe(line[1])}: depth {depth.shape} / mask {mask.shape} not a matching 2-D pair")
        return depth.astype(np.float32), mask.astype(bool)


EVAL_DATASETS = {"nyu": NYUv2, "kitti": KITTIEigen, "eth3d": ETH3D, "scannet": ScanNet, "diode": DIODE}
