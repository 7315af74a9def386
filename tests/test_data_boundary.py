import json
import struct

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth.data import DA2K, AM2k, DataError, DIS5k, IBims1, P3M10k, Sintel, Spring
from fiffdepth.data.boundary import read_dpt


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_sintel_dpt(tmp_path):
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    depth[0, 1] = np.inf
    p = tmp_path / "training" / "depth" / "alley_1" / "frame_0001.dpt"
    p.parent.mkdir(parents=True)
    p.write_bytes(struct.pack("<fii", 202021.25, 4, 3) + depth.tobytes())
    _save(tmp_path / "training" / "final" / "alley_1" / "frame_0001.png", np.zeros((3, 4, 3), np.uint8))
    x = Sintel(tmp_path)[0]
    assert x["name"] == "alley_1/frame_0001" and x["depth"][0, 2, 3].item() == 12.0
    assert torch.isnan(x["depth"][0, 0, 1]) and not x["valid_mask"][0, 0, 1]
    p.write_bytes(struct.pack("<fii", 1.0, 4, 3) + depth.tobytes())
    with pytest.raises(DataError, match="frame_0001.dpt: wrong .dpt tag"):
        read_dpt(p)


def test_spring_dsp5_half_resolution(tmp_path):
    seq = tmp_path / "train" / "0001"
    _save(seq / "frame_left" / "frame_left_0002.png", np.zeros((2, 3, 3), np.uint8))
    disp = np.zeros((4, 6), np.float32)
    disp[::2, ::2] = [[10.0, 20.0, 0.0], [np.nan, 40.0, 5.0]]
    disp[1::2] = 999.0  # odd rows are dropped by [::2, ::2]
    (seq / "disp1_left").mkdir()
    with h5py.File(seq / "disp1_left" / "disp1_left_0002.dsp5", "w") as f:
        f["disparity"] = disp
    (seq / "cam_data").mkdir()
    (seq / "cam_data" / "intrinsics.txt").write_text("1000 1000 960 540\n2000 2000 960 540\n")
    x = Spring(tmp_path)[0]
    d = x["depth"][0]
    assert d[0, 0].item() == pytest.approx(2000 * 0.065 / 10) and d[1, 1].item() == pytest.approx(2000 * 0.065 / 40)
    assert torch.isnan(d[0, 2]) and torch.isnan(d[1, 0]) and x["valid_mask"].sum() == 4


def test_ibims_png_scale_and_masks(tmp_path):
    (tmp_path / "imagelist.txt").write_text("corridor_01\n")
    _save(tmp_path / "rgb" / "corridor_01.png", np.zeros((2, 3, 3), np.uint8))
    _save(tmp_path / "depth" / "corridor_01.png", np.array([[65535, 13107, 0], [13107, 13107, 13107]], np.uint16))
    _save(tmp_path / "mask_invalid" / "corridor_01.png", np.array([[1, 1, 1], [0, 1, 1]], np.uint8))
    _save(tmp_path / "mask_transp" / "corridor_01.png", np.array([[1, 1, 1], [1, 0, 1]], np.uint8))
    x = IBims1(tmp_path)[0]
    d = x["depth"][0]
    assert d[0, 1].item() == pytest.approx(13107 * 50 / 65535) and d[1, 2].item() == pytest.approx(10.0)
    assert torch.isnan(d[0, 0]) and torch.isnan(d[0, 2]) and torch.isnan(d[1, 0]) and torch.isnan(d[1, 1])


def test_mask_datasets(tmp_path):
    _save(tmp_path / "am" / "validation" / "original" / "m_1.jpg", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "am" / "validation" / "mask" / "m_1.png", np.full((4, 4), 255, np.uint8))
    x = AM2k(tmp_path / "am")[0]
    assert x["mask"].shape == (1, 4, 4) and x["mask"].dtype == torch.float32 and x["mask"].max() == 1.0
    base = tmp_path / "p3m" / "validation" / "P3M-500-P"
    _save(base / "blurred_image" / "p_1.jpg", np.zeros((4, 4, 3), np.uint8))
    _save(base / "mask" / "p_1.png", np.full((4, 4), 51, np.uint8))
    assert P3M10k(tmp_path / "p3m", "P3M-500-P")[0]["mask"][0, 0, 0].item() == pytest.approx(0.2)
    te = tmp_path / "dis" / "DIS5K" / "DIS-TE1"
    _save(te / "im" / "12#Graphics#4#TrafficSign#8245751856_821be14f86_o.jpg", np.zeros((4, 4, 3), np.uint8))
    _save(te / "gt" / "12#Graphics#4#TrafficSign#8245751856_821be14f86_o.png", np.full((4, 4), 255, np.uint8))
    (tmp_path / "list.txt").write_text("DIS5K/DIS-TE1/im/12#Graphics#4#TrafficSign#8245751856_821be14f86_o.jpg\n")
    ds = DIS5k(tmp_path / "dis", tmp_path / "list.txt")
    assert len(ds) == 1 and ds[0]["mask"].min() == 1.0
    _save(te / "im" / "no_gt.jpg", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="no_gt.png"):
        DIS5k(tmp_path / "dis", subsets=("DIS-TE1",))


def test_da2k_points_are_row_col(tmp_path):
    _save(tmp_path / "images" / "indoor" / "a.jpg", np.zeros((10, 20, 3), np.uint8))
    ann = {"images/indoor/a.jpg": [{"point1": [9, 3], "point2": [2, 19], "closer_point": "point1"},
                                   {"point1": [0, 0], "point2": [1, 1], "closer_point": "point2"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(ann))
    x = DA2K(tmp_path)[0]
    assert x["image"].shape == (3, 10, 20) and x["name"] == "images/indoor/a.jpg"
    assert x["pairs"][0] == {"point1": (9, 3), "point2": (2, 19), "closer": 0} and x["pairs"][1]["closer"] == 1
    ann["images/indoor/a.jpg"][0]["point2"] = [19, 2]  # (row 19, col 2): outside a 10-row image
    (tmp_path / "annotations.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match="a.jpg: annotation 0"):
        DA2K(tmp_path)[0]
