"""Datasets: the embedded RGB-D world, real photos, and loaders for the paper's datasets.

Depth items: ``image`` (3,H,W) float32 in [0,1], ``depth`` (1,H,W) float32 metres (0 invalid),
``valid_mask`` (1,H,W) bool, ``name``. Bad-input policy: see ``fiffdepth.data.io``.
"""

from .base import DepthDataset
from .boundary import DIS5k, AM2k, IBims1, MaskDataset, P3M10k, Sintel, Spring
from .da2k import DA2K
from .eval_sets import DIODE, ETH3D, EVAL_DATASETS, PROTOCOLS, EvalProtocol, KITTIEigen, NYUv2, ScanNet
from .hypersim import HypersimDataset, HypersimRawDataset
from .io import DataError
from .real import EmbeddedRealImages, ImageFolder, TarShards, embedded_real_images
from .synthetic import SyntheticDepthDataset, render_scene, write_synthetic_dataset
from .vkitti import VirtualKITTI2Dataset

__all__ = [
    "AM2k", "DA2K", "DIODE", "DIS5k", "DataError", "DepthDataset", "ETH3D", "EVAL_DATASETS", "EmbeddedRealImages",
    "EvalProtocol", "HypersimDataset", "HypersimRawDataset", "IBims1", "ImageFolder", "KITTIEigen", "MaskDataset",
    "NYUv2", "P3M10k", "PROTOCOLS", "ScanNet", "Sintel", "Spring", "SyntheticDepthDataset", "TarShards",
    "VirtualKITTI2Dataset", "embedded_real_images", "render_scene", "write_synthetic_dataset",
]
