"""Metrics of Table 1 (Marigold protocol, DA-2K) and Table 2 (Depth Pro boundaries), and the tables."""

import numpy as np
import pytest

from fiffdepth import metrics as M
from fiffdepth.tables import table1_markdown, table2_markdown

# ---------------------------------------------------------------------------------------------
# Depth metrics, hand-computed on 2x2 arrays

GT = np.array([[1.0, 2.0], [4.0, 5.0]])
PRED = np.array([[1.0, 3.0], [2.0, 5.0]])  # ratios 1, 1.5, 2, 1
ALL = np.ones((2, 2), bool)


def test_hand_computed_depth_metrics():
    assert M.abs_rel(PRED, GT, ALL) == pytest.approx((0 + 1 / 2 + 2 / 4 + 0) / 4)
    assert M.sq_rel(PRED, GT, ALL) == pytest.approx((0 + 1 / 2 + 4 / 4 + 0) / 4)
    assert M.rmse(PRED, GT, ALL) == pytest.approx(np.sqrt((0 + 1 + 4 + 0) / 4))
    assert M.delta1(PRED, GT, ALL) == pytest.approx(2 / 4)   # 1.5 and 2 fail < 1.25
    assert M.delta2(PRED, GT, ALL) == pytest.approx(3 / 4)   # 1.5 < 1.5625 <= 2
    assert M.delta3(PRED, GT, ALL) == pytest.approx(3 / 4)   # 2 > 1.953
    mask = np.array([[True, True], [False, True]])           # drop the pixel with ratio 2
    assert M.abs_rel(PRED, GT, mask) == pytest.approx(0.5 / 3)
    assert M.delta1(PRED, GT, mask) == pytest.approx(2 / 3)


def test_perfect_prediction_and_clipping():
    gt = np.random.default_rng(0).uniform(0.5, 9.0, (16, 12))
    mask = gt < 8
    for alignment in ("depth", None):
        out = M.compute_depth_metrics(gt, gt, mask, 1e-3, 10.0, alignment=alignment)
        assert out["abs_rel"] == pytest.approx(0, abs=1e-12) and out["delta1"] == 1.0
        assert set(out) == {"abs_rel", "sq_rel", "rmse", "delta1", "delta2", "delta3"}
    # Without alignment a prediction of 20 m is clipped to the 10 m dataset maximum first.
    out = M.compute_depth_metrics(np.array([[20.0]]), np.array([[5.0]]), np.array([[True]]), 1e-3, 10.0,
                                  alignment=None)
    assert out["abs_rel"] == pytest.approx(1.0)


def test_empty_mask_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="no valid pixels"):
        M.abs_rel(PRED, GT, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="no valid pixels"):
        M.align_scale_shift(PRED, GT, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="alignment"):
        M.compute_depth_metrics(PRED, GT, ALL, 0.1, 10, alignment="median")
    with pytest.raises(ValueError, match="boolean"):
        M.delta1(PRED, GT, ALL.astype(float))


def test_aggregate_is_mean_over_images():
    out = M.aggregate([{"abs_rel": 0.1, "delta1": 0.9}, {"abs_rel": 0.3, "delta1": 0.5}])
    assert out == pytest.approx({"abs_rel": 0.2, "delta1": 0.7})
    with pytest.raises(ValueError):
        M.aggregate([])


# ---------------------------------------------------------------------------------------------
# Alignment


@pytest.mark.parametrize("max_resolution", [None, 16])
def test_affine_transform_is_recovered_in_depth_space(max_resolution):
    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 10.0, (32, 48))
    mask = rng.random(gt.shape) > 0.3
    pred = (gt + 0.3) / 2.5                       # gt = 2.5 * pred - 0.3
    aligned, scale, shift = M.align_scale_shift(pred, gt, mask, max_resolution)
    assert scale == pytest.approx(2.5) and shift == pytest.approx(-0.3)
    np.testing.assert_allclose(aligned, gt, rtol=1e-10)


def test_affine_transform_is_recovered_in_disparity_space():
    rng = np.random.default_rng(2)
    gt = rng.uniform(1.0, 10.0, (32, 48))
    mask = rng.random(gt.shape) > 0.3
    pred_disp = (1 / gt + 0.3) / 2.5              # 1 / gt = 2.5 * pred_disp - 0.3
    np.testing.assert_allclose(M.align_scale_shift_disparity(pred_disp, gt, mask), gt, rtol=1e-10)
    out = M.compute_depth_metrics(pred_disp, gt, mask, 1e-3, 80.0, alignment="disparity")
    assert out["abs_rel"] == pytest.approx(0, abs=1e-10) and out["delta1"] == 1.0


def test_fit_columns_follow_marigold_width_only_nearest_subsample():
    # (40, 60) at max 10 px: s = 1/6 on the width only, columns 0, 6, ..., 54.
    np.testing.assert_array_equal(M._fit_columns(60, 10, (40, 60)), np.arange(0, 60, 6))
    np.testing.assert_array_equal(M._fit_columns(60, None, (40, 60)), np.arange(60))
    np.testing.assert_array_equal(M._fit_columns(60, 100, (40, 60)), np.arange(60))
    torch = pytest.importorskip("torch")
    shape = (4032, 6048)  # ETH3D at Marigold's alignment_max_res 1024
    s = float(np.min(1024 / np.array(shape)))
    ref = torch.nn.Upsample(scale_factor=s, mode="nearest")(torch.arange(shape[1], dtype=torch.float64)[None, None])
    np.testing.assert_array_equal(M._fit_columns(shape[1], 1024, shape), ref[0, 0].numpy().astype(int))


# ---------------------------------------------------------------------------------------------
# Boundary F1 / recall (Depth Pro)


def square_scene(rows=slice(3, 7), cols=slice(3, 7), near=1.0, far=5.0, shape=(10, 10)):
    d = np.full(shape, far)
    d[rows, cols] = near
    return d


def test_boundary_f1_of_gt_is_one_and_flat_is_zero():
    gt = square_scene()
    assert M.boundary_f1(gt, gt) == pytest.approx(1.0)
    assert M.boundary_f1(3.0 * gt, gt) == pytest.approx(1.0)   # scale-invariant
    assert M.boundary_f1(np.full_like(gt, 2.0), gt) == 0.0


def test_boundary_f1_averages_the_four_directions():
    # A single left/right step has contours in one direction only: P = R = 1/4 even for the GT.
    step = np.ones((6, 6))
    step[:, 3:] = 5.0
    assert M.boundary_f1(step, step) == pytest.approx(0.25)


def test_boundary_precision_recall_hand_cases():
    gt = square_scene()
    # Square shifted right by one pixel: left/right contours all miss, top/bottom hit 3 of 4.
    shifted = square_scene(cols=slice(4, 8))
    assert M.boundary_precision_recall(shifted, gt, 1.05) == pytest.approx((0.375, 0.375))
    assert M.boundary_f1(shifted, gt) == pytest.approx(0.375)
    # Square one pixel wider: (left, top, right, bottom) precision 0/4, 4/5, 4/4, 4/5 and
    # recall 0/4, 4/4, 4/4, 4/4.
    wider = square_scene(cols=slice(3, 8))
    p, r = M.boundary_precision_recall(wider, gt, 1.05)
    assert (p, r) == pytest.approx((0.65, 0.75))
    assert M.boundary_f1(wider, gt) == pytest.approx(2 * 0.65 * 0.75 / 1.4)


def test_boundary_f1_weights_thresholds_by_t():
    gt = square_scene(near=1.0, far=1.15)   # inverse-depth ratio 1.15: an edge for t < 1.15 only
    t = M.BOUNDARY_THRESHOLDS
    assert M.boundary_f1(gt, gt) == pytest.approx(t[t < 1.15].sum() / t.sum())


def test_nan_gt_makes_no_edges_but_zero_does():
    pred = square_scene()
    gt = pred.copy()
    gt[0:2, 0:2] = np.nan                   # invalid GT in the background
    assert M.boundary_f1(pred, gt) == pytest.approx(1.0)
    # The same hole encoded as 0 is in front of everything: 2 false GT edges in the left and top
    # directions each, so R = (4/6 + 1 + 4/6 + 1) / 4 = 5/6, P = 1 and F1 = 10/11.
    gt[0:2, 0:2] = 0.0
    assert M.boundary_f1(pred, gt) == pytest.approx(10 / 11)
    with pytest.raises(ValueError):
        M.boundary_f1(pred, np.full_like(pred, np.nan))


def test_boundary_recall_matching_and_flat():
    mask = square_scene(near=1.0, far=0.0)  # 1 inside the square
    assert M.boundary_recall(square_scene(), mask) == pytest.approx(1.0)
    assert M.boundary_recall(np.full((10, 10), 2.0), mask) == 0.0


def test_thinning_keeps_the_first_maximum_of_each_run():
    ratio = np.array([[1.0, 1.1, 1.3, 1.2, 1.0, 1.5, 1.5],
                      [1.4, 1.1, 1.0, 1.0, 1.0, 1.0, 1.2]])
    kept = np.argwhere(M._thin_rows(ratio, 1.05)).tolist()
    assert kept == [[0, 2], [0, 5], [1, 0], [1, 6]]   # the run wrapping rows 0 -> 1 is split


def test_boundary_recall_uses_thinned_edges():
    # Depth ramps down to the foreground; the mask edge is between columns 3 and 4. Only the
    # strongest step of the ramp survives thinning, so the recall depends on where it is.
    mask = np.zeros((3, 8))
    mask[:, 4:] = 1.0                       # contours in the "right" direction only: max 1/4
    strongest_at_edge = np.tile([5, 5, 4, 2, 0.5, 0.5, 0.5, 0.5], (3, 1))
    strongest_before_edge = np.tile([5, 5, 4, 2, 1, 1, 1, 1], (3, 1))   # ratios 2, 2: first wins
    assert M.boundary_recall(strongest_at_edge, mask) == pytest.approx(0.25)
    assert M.boundary_recall(strongest_before_edge, mask) == 0.0


def test_boundary_metrics_at_full_resolution():
    # the vectorised metrics at 1024x768 (timing: benchmarks/bench_metrics.py)
    gt = square_scene(rows=slice(200, 500), cols=slice(300, 700), shape=(768, 1024))
    assert M.boundary_f1(gt, gt) == pytest.approx(1.0)
    assert M.boundary_f1(np.full_like(gt, 2.0), gt) == 0.0
    assert M.boundary_recall(gt, (gt < 2).astype(float)) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# DA-2K


def test_da2k_accuracy_hand_case():
    depth = np.array([[1.0, 2.0], [3.0, 4.0]])
    pairs = [
        {"point1": (0, 0), "point2": (1, 1), "closer": 0},   # 1 < 4: right
        {"point1": (0, 1), "point2": (1, 0), "closer": 0},   # 2 < 3: right
        {"point1": (0, 0), "point2": (0, 1), "closer": 1},   # says (0, 1) is closer: wrong
        {"point1": (1, 1), "point2": (1, 1), "closer": 0},   # tie: wrong
    ]
    assert M.da2k_accuracy(depth, pairs) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.da2k_accuracy(depth, [])


# ---------------------------------------------------------------------------------------------
# Tables


def test_table1_markdown():
    results = {
        "Ours": {"nyu": {"abs_rel": 0.044, "delta1": 0.978}, "da2k": {"da2k_accuracy": 0.971}},
        "Marigold": {"nyu": {"abs_rel": 0.055, "delta1": 0.964}},
        "Worse": {"nyu": {"abs_rel": 0.09, "delta1": 0.90}},
    }
    lines = table1_markdown(results, datasets=("nyu",)).splitlines()
    assert lines[0] == "| Method | NYUv2 AbsRel ↓ | NYUv2 δ1 ↑ | DA-2K Acc (%) ↑ |"
    assert lines[2] == "| Ours | **4.4** | **97.8** | **97.1** |"
    assert lines[3] == "| Marigold | <u>5.5</u> | <u>96.4</u> | – |"
    assert lines[4] == "| Worse | 9.0 | 90.0 | – |"
    assert "DA-2K" not in table1_markdown({"Marigold": results["Marigold"]}, datasets=("nyu",))


def test_table2_markdown():
    results = {"Depth Pro": {"sintel": {"boundary_f1": 0.409}, "am2k": {"boundary_recall": 0.173}},
               "Ours": {"sintel": {"boundary_f1": 0.4234}, "am2k": {"boundary_recall": 0.176}}}
    lines = table2_markdown(results, f1_datasets=("sintel",), recall_datasets=("am2k",)).splitlines()
    assert lines[0] == "| Method | Sintel F1 ↑ | AM R ↑ |"
    assert lines[2] == "| Depth Pro | <u>0.409</u> | <u>0.173</u> |"
    assert lines[3] == "| Ours | **0.423** | **0.176** |"
