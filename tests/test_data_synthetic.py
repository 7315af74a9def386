import numpy as np
import pytest
import torch

from fiffdepth.data import DataError
from fiffdepth.data.base import usable_items
from fiffdepth.data.synthetic import (
    THIN_MIN_PX, SyntheticDepthDataset, render_scene, scene_seed, thin_structure_mask, write_synthetic_dataset,
)


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(scene_seed(0, i), 256) for i in range(10)]


def test_depth_finite_positive_where_valid(scenes):
    for s in scenes:
        d, m = s["depth"], s["mask"]
        assert s["rgb"].shape == (256, 256, 3) and s["rgb"].dtype == np.uint8
        assert d.dtype == np.float32 and np.isfinite(d).all()
        assert (d[m] > 0).all() and (d[~m] == 0).all() and m.any()


def test_both_kinds_and_varied_depth_range(scenes):
    kinds = {s["meta"]["kind"] for s in scenes}
    assert kinds == {"indoor", "outdoor"}
    near = [np.percentile(s["depth"][s["mask"]], 2) for s in scenes]
    far = [np.percentile(s["depth"][s["mask"]], 98) for s in scenes]
    assert max(far) / min(far) > 3 and max(near) / min(near) > 1.5
    # outdoor scenes have invalid sky, indoor rooms are closed
    for s in scenes:
        if s["meta"]["kind"] == "indoor":
            assert s["mask"].all()


def test_thin_structures_in_at_least_half_the_scenes(scenes):
    has_thin = [thin_structure_mask(s["depth"], s["mask"]).sum() >= THIN_MIN_PX for s in scenes]
    assert np.mean(has_thin) >= 0.5


def test_thin_structure_detector_on_a_hand_made_map():
    d = np.full((20, 20), 10.0, np.float32)
    d[:, 5:7] = 2.0  # a 2 px wide pole in front
    d[:, 12:17] = 2.0  # a 5 px wide box: not thin
    thin = thin_structure_mask(d, np.ones_like(d, bool))
    assert thin[:, 5:7].all() and not thin[:, 12:17].any() and thin.sum() == 40


def test_deterministic_and_worker_independent(tmp_path):
    a = render_scene(123, 64)
    b = render_scene(123, 64)
    assert (a["rgb"] == b["rgb"]).all() and (a["depth"] == b["depth"]).all()
    write_synthetic_dataset(tmp_path / "w1", 3, 64, seed=5, workers=1, progress=False)
    write_synthetic_dataset(tmp_path / "w2", 3, 64, seed=5, workers=2, progress=False)
    for i in range(3):
        assert (np.load(tmp_path / "w1" / "depth" / f"{i:06d}.npy") == np.load(tmp_path / "w2" / "depth" / f"{i:06d}.npy")).all()
    assert (tmp_path / "w1" / "rgb" / "000002.png").exists() and (tmp_path / "w1" / "mask" / "000000.png").exists()


def test_dataset_reads_layout_augments_and_skips_bad(tmp_path):
    write_synthetic_dataset(tmp_path, 3, 64, seed=1, workers=1, progress=False)
    np.save(tmp_path / "depth" / "000001.npy", np.full((64, 64), np.nan, np.float32))  # all invalid
    ds = SyntheticDepthDataset(tmp_path, resolution=32, seed=7)
    x = ds[0]
    assert x["image"].shape == (3, 32, 32) and x["depth"].shape == (1, 32, 32) and x["valid_mask"].dtype == torch.bool
    assert torch.equal(ds[0]["image"], x["image"]) and torch.equal(ds[0]["depth"], x["depth"])
    assert ((x["depth"] > 0) == x["valid_mask"]).all()
    with pytest.raises(DataError, match="000001: no valid depth"):  # never silently item 2 instead
        ds[1]
    assert ds.skipped == 0
    with pytest.warns(UserWarning, match="000001"):
        names = [it["name"] for it in usable_items(ds)]
    assert names == ["000000", "000002"] and ds.skipped == 1  # dropped once, not replaced
    assert [it["name"] for it in usable_items(ds, limit=1)] == ["000000"]
    full = SyntheticDepthDataset(tmp_path)[0]
    ref = np.load(tmp_path / "depth" / "000000.npy")
    assert np.allclose(full["depth"][0].numpy(), ref)


def test_real_styled_render_same_geometry_other_look():
    from fiffdepth.data.synthetic import render_scene

    a = render_scene(5, 48, style="synthetic")
    b = render_scene(5, 48, style="real")
    again = render_scene(5, 48, style="real")
    assert np.array_equal(a["depth"], b["depth"]) and np.array_equal(a["mask"], b["mask"])
    assert np.array_equal(b["rgb"], again["rgb"])  # deterministic
    assert np.abs(a["rgb"].astype(int) - b["rgb"].astype(int)).mean() > 5  # a clearly different look
    assert b["meta"]["style"] == "real"
    with pytest.raises(ValueError):
        render_scene(5, 48, style="cartoon")


def test_scene_tensors_drop_a_bad_scene_instead_of_repeating_one(tmp_path):
    from fiffdepth.data.synthetic import load_scene_tensors

    write_synthetic_dataset(tmp_path, n=4, size=16, seed=0, progress=False)
    (tmp_path / "rgb" / "000001.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="000001.png"):
        images, _, _ = load_scene_tensors(tmp_path, 16)
    assert len(images) == 3 and len({im.numpy().tobytes() for im in images}) == 3


def test_thin_structure_grid_skips_a_bad_scene_and_draws_four_panels_each(tmp_path):
    from fiffdepth import plots

    write_synthetic_dataset(tmp_path / "s", n=3, size=32, seed=0, progress=False)
    (tmp_path / "s" / "rgb" / "000000.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="000000.png"):
        fig = plots.thin_structure_grid(tmp_path / "s", n=2, out=tmp_path / "grid.png")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["image", "depth", "valid mask", "thin structures"] * 2  # scenes 1 and 2, none repeated
    assert (tmp_path / "grid.png").stat().st_size > 0
