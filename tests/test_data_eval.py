import tarfile

import numpy as np
import pytest
from PIL import Image

from fiffdepth.data import DIODE, ETH3D, PROTOCOLS, DataError, KITTIEigen, NYUv2, ScanNet
from fiffdepth.data.base import usable_items
from fiffdepth.data.eval_sets import eval_crop_mask


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, arr)
    else:
        Image.fromarray(arr).save(path)


def test_protocol_facts():
    assert PROTOCOLS["eth3d"].processing_resolution == 756 and PROTOCOLS["eth3d"].alignment_max_res == 1024
    assert PROTOCOLS["diode"].processing_resolution == 640 and (PROTOCOLS["diode"].min_depth, PROTOCOLS["diode"].max_depth) == (0.6, 350)
    assert PROTOCOLS["nyu"].processing_resolution == 0 and PROTOCOLS["kitti"].max_depth == 80
    assert NYUv2.protocol.eval_crop == "nyu_eigen" and eval_crop_mask("nyu_eigen", 480, 640).sum() == 426 * 560


def test_nyu_png_mm_with_eigen_crop(tmp_path):
    _save(tmp_path / "test/kitchen_0004/rgb_0001.png", np.full((480, 640, 3), 40, np.uint8))
    depth = np.full((480, 640), 2500, np.uint16)
    depth[100, 100] = 12000  # 12 m > 10 m
    depth[200, 200] = 0
    _save(tmp_path / "test/kitchen_0004/depth_0001.png", depth)
    _save(tmp_path / "test/kitchen_0004/filled_0001.png", depth)
    (tmp_path / "split.txt").write_text(
        "test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png test/kitchen_0004/filled_0001.png\n")
    ds = NYUv2(tmp_path, tmp_path / "split.txt")
    x = ds[0]
    assert ds.min_depth == 1e-3 and ds.max_depth == 10.0 and x["name"] == "test/kitchen_0004/rgb_0001.png"
    assert x["depth"][0, 300, 300].item() == pytest.approx(2.5)
    assert x["valid_mask"][0, 300, 300] and not x["valid_mask"][0, 10, 300]  # row 10 is outside rows 45:471
    assert not x["valid_mask"][0, 300, 620] and x["depth"][0, 10, 300].item() == pytest.approx(2.5)  # crop masks, keeps depth
    assert x["valid_mask"].sum() == 426 * 560 - 2


def test_kitti_png_256_kb_and_eigen_crop(tmp_path):
    rgb = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    _save(tmp_path / rgb, np.zeros((375, 1242, 3), np.uint8))
    depth = np.zeros((375, 1242), np.uint16)
    depth[23 + 200, 13 + 500] = 20 * 256  # cropped pixel (200, 500): 20 m, inside the Eigen crop
    depth[23 + 50, 13 + 500] = 20 * 256  # cropped row 50: outside the Eigen crop (rows 117:321)
    _save(tmp_path / gt, depth)
    (tmp_path / "split.txt").write_text(f"{rgb} {gt} 721.5377\n{rgb} None 721.5377\n")
    ds = KITTIEigen(tmp_path, tmp_path / "split.txt")
    assert len(ds) == 1
    x = ds[0]
    assert x["image"].shape == (3, 352, 1216)
    assert x["depth"][0, 200, 500].item() == pytest.approx(20.0) and x["valid_mask"][0, 200, 500]
    assert x["depth"][0, 50, 500].item() == pytest.approx(20.0) and not x["valid_mask"][0, 50, 500]
    assert x["valid_mask"].sum() == 1
    assert eval_crop_mask("kitti_eigen", 352, 1216).sum() == (321 - 117) * (1172 - 43)


def test_eth3d_raw_float32_with_inf_from_tar(tmp_path):
    rgb = "rgb/office/images/dslr_images/DSC_0219.JPG"
    gt = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    _save(tmp_path / "d" / rgb, np.full((6, 8, 3), 100, np.uint8))
    raw = np.full((6, 8), 3.25, np.float32)
    raw[0, 0] = np.inf
    (tmp_path / "d" / gt).parent.mkdir(parents=True)
    (tmp_path / "d" / gt).write_bytes(raw.tobytes())
    with tarfile.open(tmp_path / "eth3d.tar", "w") as tar:
        tar.add(tmp_path / "d", arcname=".")
    (tmp_path / "split.txt").write_text(f"{rgb} {gt}\n")
    ds = ETH3D(tmp_path / "eth3d.tar", tmp_path / "split.txt")
    x = ds[0]
    assert ds.processing_resolution == 756 and ds.alignment_max_res == 1024
    assert x["depth"][0, 1, 1].item() == 3.25 and x["depth"][0, 0, 0] == 0 and not x["valid_mask"][0, 0, 0]
    (tmp_path / "d" / gt).write_bytes(raw.tobytes()[:-4])  # truncated raster, plain directory root
    with pytest.raises(DataError, match="DSC_0219.JPG.*bytes"):
        ETH3D(tmp_path / "d", tmp_path / "split.txt")[0]


def test_scannet_and_diode(tmp_path):
    _save(tmp_path / "scene0406_02/color/000300.jpg", np.zeros((4, 5, 3), np.uint8))
    _save(tmp_path / "scene0406_02/depth/000300.png", np.full((4, 5), 1500, np.uint16))
    (tmp_path / "s.txt").write_text("scene0406_02/color/000300.jpg scene0406_02/depth/000300.png\n")
    x = ScanNet(tmp_path, tmp_path / "s.txt")[0]
    assert x["depth"][0, 2, 2].item() == pytest.approx(1.5) and x["valid_mask"].all()

    stem = "indoors/scene_00021/scan_00189/00021_00189_indoors_200_010"
    _save(tmp_path / f"{stem}.png", np.zeros((4, 5, 3), np.uint8))
    depth = np.full((4, 5, 1), 4.0, np.float32)
    depth[0, 0, 0] = 0.5  # below DIODE's 0.6 m
    mask = np.ones((4, 5), np.float32)
    mask[1, 1] = 0
    _save(tmp_path / f"{stem}_depth.npy", depth)
    _save(tmp_path / f"{stem}_depth_mask.npy", mask)
    (tmp_path / "d.txt").write_text(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy\n")
    ds = DIODE(tmp_path, tmp_path / "d.txt")
    x = ds[0]
    assert ds.processing_resolution == 640 and x["depth"][0, 3, 3].item() == 4.0
    assert not x["valid_mask"][0, 0, 0] and not x["valid_mask"][0, 1, 1] and x["valid_mask"].sum() == 18


def test_eval_all_invalid_raises_naming_file(tmp_path):
    _save(tmp_path / "c.jpg", np.zeros((4, 5, 3), np.uint8))
    _save(tmp_path / "d.png", np.zeros((4, 5), np.uint16))
    (tmp_path / "s.txt").write_text("c.jpg d.png\n")
    with pytest.raises(DataError, match="c.jpg: no valid depth"):
        ScanNet(tmp_path, tmp_path / "s.txt")[0]
    with pytest.raises(DataError, match="c.jpg: no valid depth"):  # iterating an evaluation set raises too
        list(usable_items(ScanNet(tmp_path, tmp_path / "s.txt")))
    with pytest.raises(DataError, match="c.jpg: no valid depth"):  # on_bad governs iteration, not ds[i]
        ScanNet(tmp_path, tmp_path / "s.txt", on_bad="skip")[0]
    lenient = ScanNet(tmp_path, tmp_path / "s.txt", on_bad="skip")
    with pytest.warns(UserWarning, match="c.jpg"):
        assert list(usable_items(lenient)) == []
    assert lenient.skipped == 1
