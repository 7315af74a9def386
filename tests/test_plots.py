"""Figures draw what is scored: predictions aligned as the evaluation aligns them, on the ground truth's colours."""

import numpy as np
import pytest

from fiffdepth import plots
from fiffdepth.evaluate import aligned_depth, depth_like
from fiffdepth.teacher import PSEUDO_LABEL_EPS


def _scene(seed=0, h=24):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:h] / h
    gt = 1.0 + 4.0 * yy + rng.uniform(0, 0.5) * xx
    gt[6:12, 8:14] = 1.5  # a near box
    valid = np.ones_like(gt, bool)
    valid[:3] = False  # "sky"
    return gt, valid


def test_stretch_with_limits_is_linear_and_keeps_invalid_out():
    d = np.array([[0.0, 1.0], [2.0, 4.0]])
    v = np.array([[True, True], [True, False]])
    s = plots.stretch(d, v, limits=(0.0, 2.0))
    assert s[0, 0] == 0.0 and s[0, 1] == 0.5 and s[1, 0] == 1.0 and np.isnan(s[1, 1])
    assert plots.stretch_limits(np.zeros((2, 2)), np.zeros((2, 2), bool)) is None
    assert np.isnan(plots.stretch(np.zeros((2, 2)), np.zeros((2, 2), bool))).all()


@pytest.mark.parametrize("space", ["depth", "disparity"])
def test_aligned_depth_undoes_the_affine_map_of_the_predictors_space(space):
    gt, valid = _scene()
    pred = 3.0 * gt - 1.0 if space == "depth" else 0.7 / gt + 0.2
    out = aligned_depth(pred, gt, valid, space)
    assert out.shape == gt.shape
    np.testing.assert_allclose(out[valid], gt[valid], rtol=1e-6)


def test_depth_like_matches_predict_depths_conventions():
    disp = np.array([[0.5, 0.25], [0.0, 1.0]], np.float32)
    depth = depth_like([disp], "disparity")[0]
    assert depth[0, 1] == pytest.approx(2 * depth[0, 0])  # 1 / disparity, up to its scale
    assert depth[1, 0] == pytest.approx(1 / PSEUDO_LABEL_EPS)  # no disparity: the far plane, not invalid
    assert depth_like([disp], "depth")[0] is disp


def test_gt_scale_draws_an_exact_prediction_in_the_ground_truths_colours():
    """On the ground truth's scale, a prediction equal to it gets its colours on every valid pixel,
    and one off by a constant gets other colours (its own 2/98 stretch would hide the offset)."""
    gt, valid = _scene(1)
    images = [np.zeros(gt.shape + (3,))]
    fig = plots.comparison_grid(images, {"exact": [gt.copy()], "farther": [gt + 1.0]}, gt=[gt], valid=[valid],
                                gt_scale=True)
    panel = [ax.images[0].get_array() for ax in fig.axes[:4]]  # image, ground truth, exact, farther
    np.testing.assert_array_equal(panel[2][valid], panel[1][valid])
    assert not np.allclose(panel[3][valid], panel[1][valid])
    every = np.ones_like(valid)  # its own stretch hides the offset
    own = plots.comparison_grid(images, {"farther": [gt + 1.0]}, gt=[gt], valid=[every])
    np.testing.assert_allclose(own.axes[2].images[0].get_array(), own.axes[1].images[0].get_array())
