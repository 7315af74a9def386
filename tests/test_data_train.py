import io
import math
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth.data import (
    DataError, EmbeddedRealImages, HypersimDataset, HypersimRawDataset, ImageFolder, TarShards, VirtualKITTI2Dataset,
    embedded_real_images,
)
from fiffdepth.data.base import usable_items
from fiffdepth.data.hypersim import distance_to_planar


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_hypersim_marigold_layout(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 1] = 128
    depth = np.full((6, 8), 2500, np.uint16)
    depth[0, 0] = 0  # invalid
    depth[1, 1] = 65000  # 65 m: outside Marigold's (1e-5, 65) range
    _png(tmp_path / "ai_001_001" / "rgb_cam_00_fr0000.png", rgb)
    _png(tmp_path / "ai_001_001" / "depth_plane_cam_00_fr0000.png", depth)
    (tmp_path / "split.txt").write_text("ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png\n")
    for ds in (HypersimDataset(tmp_path, tmp_path / "split.txt"), HypersimDataset(tmp_path)):
        x = ds[0]
        assert x["depth"][0, 2, 3].item() == pytest.approx(2.5)
        assert not x["valid_mask"][0, 0, 0] and not x["valid_mask"][0, 1, 1] and x["valid_mask"].sum() == 46
        assert x["depth"][0, 0, 0] == 0 and x["image"][1, 0, 0].item() == pytest.approx(128 / 255)


def test_hypersim_raw_hdf5_distance_to_planar(tmp_path):
    frames = tmp_path / "ai_001_001" / "images"
    (frames / "scene_cam_00_final_hdf5").mkdir(parents=True)
    (frames / "scene_cam_00_geometry_hdf5").mkdir()
    color = np.full((768, 1024, 3), 0.5, np.float16)
    dist = np.full((768, 1024), 5.0, np.float16)
    dist[10, 10] = np.nan
    ent = np.zeros((768, 1024), np.int32)
    ent[700:, :] = -1  # no surface
    with h5py.File(frames / "scene_cam_00_final_hdf5" / "frame.0000.color.hdf5", "w") as f:
        f["dataset"] = color
    with h5py.File(frames / "scene_cam_00_geometry_hdf5" / "frame.0000.depth_meters.hdf5", "w") as f:
        f["dataset"] = dist
    with h5py.File(frames / "scene_cam_00_geometry_hdf5" / "frame.0000.render_entity_id.hdf5", "w") as f:
        f["dataset"] = ent
    x = HypersimRawDataset(tmp_path)[0]
    corner = 5.0 * 886.81 / math.sqrt(511.5 ** 2 + 383.5 ** 2 + 886.81 ** 2)  # pixel (0, 0)
    assert x["depth"][0, 0, 0].item() == pytest.approx(corner, rel=1e-5)
    assert x["depth"][0, 384, 512].item() == pytest.approx(5.0 * 886.81 / math.sqrt(0.5 + 886.81 ** 2), rel=1e-5)
    assert not x["valid_mask"][0, 10, 10] and not x["valid_mask"][0, 700:].any()
    # tone map: 90th-percentile brightness 0.5 -> 0.8 after gamma 1/2.2
    assert x["image"][0, 0, 0].item() == pytest.approx(0.8, abs=2 / 255)
    assert distance_to_planar(np.ones((2, 2)), 1.0)[0, 0] == pytest.approx(1 / math.sqrt(0.25 + 0.25 + 1))


def test_vkitti_cm_png_sky_and_kb_crop(tmp_path):
    rgb_rel = "rgb/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg"
    depth_rel = "depth/Scene01/clone/frames/depth/Camera_0/depth_00000.png"
    (tmp_path / rgb_rel).parent.mkdir(parents=True)
    Image.fromarray(np.full((375, 1242, 3), 90, np.uint8)).save(tmp_path / rgb_rel)
    depth = np.full((375, 1242), 1234, np.uint16)  # 12.34 m
    depth[-1, 13] = 65535  # sky; bottom row, column 13 = crop column 0
    depth[-1, 14] = 9000  # 90 m > 80 m
    _png(tmp_path / depth_rel, depth)
    (tmp_path / "split.txt").write_text(f"{rgb_rel} {depth_rel}\n")
    for ds in (VirtualKITTI2Dataset(tmp_path, tmp_path / "split.txt"), VirtualKITTI2Dataset(tmp_path)):
        x = ds[0]
        assert x["image"].shape == (3, 352, 1216)
        assert x["depth"][0, 0, 100].item() == pytest.approx(12.34, rel=1e-6)
        assert not x["valid_mask"][0, -1, 0] and x["depth"][0, -1, 0] == 0 and not x["valid_mask"][0, -1, 1]
    aug = VirtualKITTI2Dataset(tmp_path, resolution=64, seed=3)
    assert aug[0]["depth"].shape == (1, 64, 64) and torch.equal(aug[0]["depth"], aug[0]["depth"])


def test_vkitti_bad_depth_png_skipped_with_count(tmp_path):
    rgb_rel = "rgb/S/clone/frames/rgb/Camera_0/rgb_00000.jpg"
    (tmp_path / rgb_rel).parent.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / rgb_rel)
    _png(tmp_path / "depth/S/clone/frames/depth/Camera_0/depth_00000.png", np.zeros((8, 8), np.uint8))  # 8-bit
    ds = VirtualKITTI2Dataset(tmp_path, kb_crop=False)
    with pytest.raises(DataError, match="depth_00000.png: expected a 16-bit"):
        ds[0]
    with pytest.warns(UserWarning, match="depth_00000.png"):
        assert list(usable_items(ds)) == []
    assert ds.skipped == 1
    with pytest.raises(DataError, match="depth_00000.png: expected a 16-bit"):
        list(usable_items(VirtualKITTI2Dataset(tmp_path, kb_crop=False, on_bad="raise")))


def test_image_folder_and_tar_shards(tmp_path):
    _png(tmp_path / "imgs" / "a" / "1.png", np.zeros((10, 12), np.uint8))  # grayscale
    _png(tmp_path / "imgs" / "2.png", np.zeros((10, 12, 4), np.uint8))  # RGBA
    (tmp_path / "imgs" / "3.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = ImageFolder(tmp_path / "imgs", resolution=8)
    assert len(ds) == 3 and ds[0]["image"].shape == (3, 8, 8)
    with pytest.raises(DataError, match="3.jpg: cannot decode"):  # sorted: 2.png, 3.jpg, a/1.png
        ds[1]
    with pytest.warns(UserWarning, match="3.jpg"):
        assert [it["name"] for it in usable_items(ds)] == ["2.png", "a/1.png"]
    assert ds.skipped == 1
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="none"):
        ImageFolder(tmp_path / "none")

    shard = tmp_path / "000000.tar"
    with tarfile.open(shard, "w") as tar:
        for key in ("s0", "s1"):
            buf = io.BytesIO()
            Image.fromarray(np.full((5, 7, 3), 30, np.uint8)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
            txt = tarfile.TarInfo(f"{key}.txt")
            txt.size = 3
            tar.addfile(txt, io.BytesIO(b"cap"))
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    ts = TarShards(str(tmp_path / "*.tar"))
    with pytest.warns(UserWarning, match="bad.tar"):  # found when the shards are first listed
        assert len(ts) == 2
    assert ts.skipped == 1 and ts[1]["image"].shape == (3, 5, 7) and ts[1]["name"] == "000000.tar:s1.jpg"


def _shard(path, members, size=(5, 7)):
    with tarfile.open(path, "w") as tar:
        for name in members:
            buf = io.BytesIO()
            Image.fromarray(np.full((*size, 3), 30, np.uint8)).save(buf, format="PNG")
            info = tarfile.TarInfo(name)
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)


def test_tar_shards_open_only_the_shard_they_read(tmp_path, monkeypatch):
    """Issue 15: no shard is opened to construct; listing reads each once; an item opens only its own shard."""
    _shard(tmp_path / "b.tar", ["k0.png", "sub/k1.png"])
    _shard(tmp_path / "a.tar", ["z.png", "y.png"])
    _shard(tmp_path / "c.tar", ["../up.png"])
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    ts = TarShards(tmp_path)
    assert opened == []
    assert len(ts) == 5 and opened == ["a.tar", "b.tar", "c.tar"]  # counted once, in sorted order
    opened.clear()
    assert ts[3]["name"] == "b.tar:sub/k1.png" and opened == ["b.tar"]
    assert ts.name(2) == "b.tar:k0.png" and opened == ["b.tar"]  # the shard's index is kept
    assert [ts.name(i) for i in range(5)] == ["a.tar:z.png", "a.tar:y.png", "b.tar:k0.png", "b.tar:sub/k1.png",
                                              "c.tar:../up.png"]  # shard order, then member order
    assert opened == ["b.tar", "a.tar", "b.tar", "c.tar"]
    with pytest.raises(IndexError):
        ts.name(5)
    _shard(tmp_path / "a.tar", ["z.png"])  # rewritten after it was listed
    with pytest.raises(DataError, match="a.tar: tar shard changed since it was listed"):
        ts[0]


def test_embedded_real_images():
    ds = EmbeddedRealImages(n=20, size=64, seed=0)
    assert len(ds) == 20 and ds[0]["image"].shape == (3, 64, 64)
    assert torch.equal(ds[15]["image"], EmbeddedRealImages(n=20, size=64, seed=0)[15]["image"])
    assert not torch.equal(ds[15]["image"], EmbeddedRealImages(n=20, size=64, seed=1)[15]["image"])
    imgs = embedded_real_images(n=3, size=32)
    assert len(imgs) == 3 and imgs[1].shape == (32, 32, 3) and imgs[1].dtype == np.uint8
    assert len(EmbeddedRealImages()) >= 64  # 8 augmentations of each shipped photo
