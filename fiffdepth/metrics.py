"""Evaluation metrics of the paper's Table 1 (affine-invariant depth, DA-2K) and Table 2 (boundaries).

All functions take numpy arrays of shape (H, W); ``mask`` is a boolean (H, W) array of valid
ground-truth pixels. Metric values are fractions (AbsRel 0.044, δ1 0.978); tables multiply by
100 (``fiffdepth.tables``).

Affine-invariant depth follows Marigold's published evaluation (prs-eth/Marigold,
``script/depth/eval.py``, ``src/util/alignment.py``, ``src/util/metric.py``), which the paper
adopts ("the same datasets and evaluation protocol as Marigold"):

1. fit scale and shift by least squares over the valid pixels, in depth space (or in disparity
   space for models that predict disparity), optionally on a column-subsampled copy
   (``alignment_max_res``, 1024 for ETH3D);
2. clip the aligned prediction to the dataset's [min_depth, max_depth], then to >= 1e-6;
3. compute each metric per image over the valid pixels, then average over images
   (``aggregate``).

Boundary metrics follow Depth Pro (apple/ml-depth-pro, ``src/depth_pro/eval/boundary_metrics.py``),
as the paper's Table 2 does ("Following Depth Pro ..."): occluding contours are read from the
ratio of neighbouring inverse depths, swept over thresholds ``linspace(1.05, 1.25, 10)`` and
averaged with weights ``t / sum(t)``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

# Marigold: disparity below this is clipped before inverting (``script/depth/eval.py``).
MIN_ALIGNED_DISPARITY = 1e-3
# Marigold: predictions are clipped to d > 0 for evaluation after the dataset range clip.
MIN_EVAL_DEPTH = 1e-6
# Depth Pro: thresholds on the neighbour ratio of inverse depth, and the inverse-depth guard.
BOUNDARY_THRESHOLDS = np.linspace(1.05, 1.25, 10)
BOUNDARY_DEPTH_EPS = 1e-6
# Depth Pro: a matting / segmentation mask is foreground where alpha > 0.1.
MASK_ALPHA_THRESHOLD = 0.1


# ----------------------------------------------------------------------------------------------
# Input checks


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {x.shape}")
    return x


def _valid_pairs(pred, gt, mask) -> tuple[np.ndarray, np.ndarray]:
    """pred, gt at the valid pixels as float64 vectors; raises ValueError on bad input."""
    pred, gt, mask = _as_2d("pred", pred), _as_2d("gt", gt), _as_2d("mask", mask)
    if not (pred.shape == gt.shape == mask.shape):
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}, mask {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got {mask.dtype}")
    if not mask.any():
        raise ValueError("mask has no valid pixels: the metric is undefined")
    return pred[mask].astype(np.float64), gt[mask].astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Alignment (Marigold ``align_depth_least_square``)


def _fit_columns(width: int, max_resolution: int | None, shape: tuple[int, int]) -> np.ndarray:
    """Column indices the least-squares fit uses when ``max_resolution`` is set.

    Marigold passes the (H, W) arrays to ``torch.nn.Upsample(scale_factor=s, mode="nearest")`` as
    a (1, H, W) tensor, which torch reads as a 1-D signal: only the *width* is subsampled, with
    ``s = min(max_resolution / (H, W))`` (only when s < 1), output width ``floor(W * s)`` and source
    column ``floor(j / s)`` (computed in float32). We reproduce that, quirk included, so our
    ETH3D numbers fit the same pixels as Marigold's.
    """
    all_cols = np.arange(width)
    if max_resolution is None:
        return all_cols
    s = float(np.min(max_resolution / np.asarray(shape, dtype=np.float64)))
    if s >= 1:
        return all_cols
    out_width = int(np.floor(width * s))
    step = np.float32(1.0 / s)
    cols = np.floor(np.arange(out_width, dtype=np.float32) * step).astype(np.int64)
    return np.minimum(cols, width - 1)


def _least_squares_scale_shift(pred, target, mask, max_resolution) -> tuple[float, float]:
    """argmin_{s, b} sum_mask (s * pred + b - target)^2, fitted on Marigold's subsample."""
    pred, target, mask = _as_2d("pred", pred), _as_2d("gt", target), _as_2d("mask", mask)
    if not (pred.shape == target.shape == mask.shape):
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {target.shape}, mask {mask.shape}")
    cols = _fit_columns(pred.shape[1], max_resolution, pred.shape)
    p, t, m = pred[:, cols], target[:, cols], mask[:, cols].astype(bool)
    if not m.any():
        raise ValueError("mask has no valid pixels: cannot fit scale and shift")
    p, t = p[m].astype(np.float64), t[m].astype(np.float64)
    design = np.stack([p, np.ones_like(p)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, t, rcond=None)
    return float(scale), float(shift)


def align_scale_shift(pred, gt, mask, max_resolution: int | None = None):
    """Least-squares affine alignment of a depth prediction to GT depth (Marigold, depth space).

    pred, gt: (H, W); mask: (H, W) bool valid GT. ``max_resolution`` (Marigold's
    ``--alignment_max_res``; 1024 for ETH3D) fits on a column subsample, see ``_fit_columns``.
    Returns ``(aligned, scale, shift)`` with ``aligned = scale * pred + shift`` at full resolution.
    """
    scale, shift = _least_squares_scale_shift(pred, gt, mask, max_resolution)
    return np.asarray(pred, dtype=np.float64) * scale + shift, scale, shift


def align_scale_shift_disparity(pred_disp, gt_depth, mask, max_resolution: int | None = None,
                                min_disparity: float = MIN_ALIGNED_DISPARITY) -> np.ndarray:
    """Affine alignment in disparity space for models that predict disparity (Marigold's
    ``least_square_disparity``); returns the aligned prediction as *depth*.

    The fit uses pixels that are valid, have GT depth > 0 and predicted disparity > 0; GT
    disparity is 1 / depth. The aligned disparity is clipped to >= ``min_disparity`` (1e-3) before
    inverting, so depth is at most 1000.
    """
    pred_disp = _as_2d("pred_disp", pred_disp).astype(np.float64)
    gt_depth = _as_2d("gt_depth", gt_depth).astype(np.float64)
    mask = _as_2d("mask", mask).astype(bool)
    positive_gt = gt_depth > 0
    gt_disp = np.zeros_like(gt_depth)
    gt_disp[positive_gt] = 1.0 / gt_depth[positive_gt]
    fit_mask = mask & positive_gt & (pred_disp > 0)
    scale, shift = _least_squares_scale_shift(pred_disp, gt_disp, fit_mask, max_resolution)
    aligned_disp = np.maximum(pred_disp * scale + shift, min_disparity)
    return 1.0 / aligned_disp


# ----------------------------------------------------------------------------------------------
# Per-image depth metrics (Marigold ``src/util/metric.py``), means over the valid pixels


def abs_rel(pred, gt, mask) -> float:
    """Absolute relative error, mean |pred - gt| / gt."""
    p, g = _valid_pairs(pred, gt, mask)
    return float(np.mean(np.abs(p - g) / g))


def sq_rel(pred, gt, mask) -> float:
    """Squared relative error, mean (pred - gt)^2 / gt."""
    p, g = _valid_pairs(pred, gt, mask)
    return float(np.mean((p - g) ** 2 / g))


def rmse(pred, gt, mask) -> float:
    """Root mean squared error, sqrt(mean (pred - gt)^2), in GT units."""
    p, g = _valid_pairs(pred, gt, mask)
    return float(np.sqrt(np.mean((p - g) ** 2)))


def _delta(pred, gt, mask, threshold: float) -> float:
    p, g = _valid_pairs(pred, gt, mask)
    return float(np.mean(np.maximum(p / g, g / p) < threshold))


def delta1(pred, gt, mask) -> float:
    """Share of valid pixels with max(pred / gt, gt / pred) < 1.25."""
    return _delta(pred, gt, mask, 1.25)


def delta2(pred, gt, mask) -> float:
    """Share of valid pixels with max(pred / gt, gt / pred) < 1.25^2."""
    return _delta(pred, gt, mask, 1.25**2)


def delta3(pred, gt, mask) -> float:
    """Share of valid pixels with max(pred / gt, gt / pred) < 1.25^3."""
    return _delta(pred, gt, mask, 1.25**3)


DEPTH_METRICS = {"abs_rel": abs_rel, "sq_rel": sq_rel, "rmse": rmse,
                 "delta1": delta1, "delta2": delta2, "delta3": delta3}


def compute_depth_metrics(pred, gt, mask, min_depth: float, max_depth: float,
                          alignment: str | None = "depth",
                          alignment_max_res: int | None = None) -> dict[str, float]:
    """Marigold's per-image protocol: align -> clip to [min_depth, max_depth] -> metrics.

    pred: (H, W) depth (alignment "depth" or None) or disparity (alignment "disparity");
    gt: (H, W) depth; mask: (H, W) bool valid GT (range and eval crop already applied).
    Returns ``{name: value}`` for every entry of ``DEPTH_METRICS`` (fractions, not percent).
    """
    if alignment == "depth":
        pred, _, _ = align_scale_shift(pred, gt, mask, alignment_max_res)
    elif alignment == "disparity":
        pred = align_scale_shift_disparity(pred, gt, mask, alignment_max_res)
    elif alignment is not None:
        raise ValueError(f"alignment must be 'depth', 'disparity' or None, got {alignment!r}")
    pred = np.clip(np.asarray(pred, dtype=np.float64), min_depth, max_depth)
    pred = np.maximum(pred, MIN_EVAL_DEPTH)
    return {name: fn(pred, gt, mask) for name, fn in DEPTH_METRICS.items()}


def aggregate(per_image: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (Marigold averages per-image values, not pixels)."""
    per_image = list(per_image)
    if not per_image:
        raise ValueError("aggregate needs at least one per-image result")
    keys = list(per_image[0])
    for i, d in enumerate(per_image):
        if set(d) != set(keys):
            raise ValueError(f"result {i} has keys {sorted(d)}, expected {sorted(keys)}")
    return {k: float(np.mean([d[k] for d in per_image])) for k in keys}


# ----------------------------------------------------------------------------------------------
# DA-2K (Depth Anything V2): ordinal accuracy on annotated point pairs


def da2k_accuracy(pred_depth, pairs: Iterable[Mapping]) -> float:
    """Share of pairs whose closer point has strictly smaller predicted depth, in [0, 1].

    pred_depth: (H, W) depth (smaller = closer; pass 1 / disparity for disparity models).
    pairs: ``{"point1": (row, col), "point2": (row, col), "closer": 0 | 1}``, 0 meaning point1
    (the layout of ``fiffdepth.data.da2k``). Ties and NaN count as wrong.
    """
    depth = _as_2d("pred_depth", pred_depth)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("da2k_accuracy needs at least one pair")
    p1 = np.array([pair["point1"] for pair in pairs], dtype=np.int64).reshape(-1, 2)
    p2 = np.array([pair["point2"] for pair in pairs], dtype=np.int64).reshape(-1, 2)
    closer = np.array([pair["closer"] for pair in pairs])
    if not np.isin(closer, (0, 1)).all():
        raise ValueError("'closer' must be 0 (point1) or 1 (point2)")
    d1, d2 = depth[p1[:, 0], p1[:, 1]], depth[p2[:, 0], p2[:, 1]]
    correct = np.where(closer == 0, d1 < d2, d2 < d1)
    return float(np.mean(correct))


# ----------------------------------------------------------------------------------------------
# Boundary metrics (Depth Pro ``boundary_metrics.py``)
#
# A pair of neighbouring pixels is an occluding contour when one of them is in front:
# inverse_depth(front) / inverse_depth(back) > t. The four directions (left, top, right, bottom)
# name which pixel of a horizontal or vertical pair is in front; they are scored separately and
# averaged with weight 1/4 each, so a map whose contours all face one way scores at most 1/4.


def _inverse_depth(depth) -> np.ndarray:
    """1 / max(depth, 1e-6). NaN stays NaN and never forms an edge; 0 becomes 1e6 (an edge!)."""
    depth = _as_2d("depth", depth)
    if not np.issubdtype(depth.dtype, np.floating):
        depth = depth.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return 1.0 / np.maximum(depth, BOUNDARY_DEPTH_EPS)


def _neighbour_ratios(inv: np.ndarray) -> tuple[np.ndarray, ...]:
    """Front-to-back inverse-depth ratios with the (left, top, right, bottom) pixel in front.

    Shapes (H, W-1), (H-1, W), (H, W-1), (H-1, W): entry [i, j] compares pixel pairs
    (i, j)-(i, j+1) horizontally and (i, j)-(i+1, j) vertically.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inv[:, :-1] / inv[:, 1:],   # left pixel in front of right
                inv[:-1, :] / inv[1:, :],   # top pixel in front of bottom
                inv[:, 1:] / inv[:, :-1],   # right pixel in front of left
                inv[1:, :] / inv[:-1, :])   # bottom pixel in front of top


def _mask_edges(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mask contours in the same four directions: the named pixel is foreground, the other not."""
    return (mask[:, :-1] & ~mask[:, 1:], mask[:-1, :] & ~mask[1:, :],
            mask[:, 1:] & ~mask[:, :-1], mask[1:, :] & ~mask[:-1, :])


def _thin_rows(ratio: np.ndarray, threshold: float) -> np.ndarray:
    """Non-maximum suppression along rows: of each horizontal run of ``ratio > threshold`` keep
    only the first pixel holding the run's maximum (Depth Pro's ``nms_horizontal``)."""
    keep = np.zeros(ratio.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        idx = np.flatnonzero(ratio > threshold)
    if idx.size == 0:
        return keep
    values = ratio.ravel()[idx]
    width = ratio.shape[1]
    starts_run = np.ones(idx.size, dtype=bool)
    starts_run[1:] = (idx[1:] != idx[:-1] + 1) | (idx[1:] % width == 0)
    run = np.cumsum(starts_run) - 1
    run_max = np.maximum.reduceat(values, np.flatnonzero(starts_run))
    at_max = np.flatnonzero(values == run_max[run])
    first = at_max[np.r_[True, run[at_max[1:]] != run[at_max[:-1]]]]
    keep.ravel()[idx[first]] = True
    return keep


def _vertical_transposed(arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """(left, top, right, bottom) with top and bottom transposed, so every run lies along a row."""
    return [np.ascontiguousarray(a.T) if i in (1, 3) else a for i, a in enumerate(arrays)]


def _direction_mean(hits: Sequence[np.ndarray], totals: Sequence[np.ndarray]) -> float:
    """0.25 * sum over directions of |hits| / max(|totals|, 1)."""
    return 0.25 * sum(np.count_nonzero(h) / max(np.count_nonzero(t), 1) for h, t in zip(hits, totals))


def _threshold_weights(thresholds) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return thresholds, thresholds / thresholds.sum()


def boundary_precision_recall(pred_depth, gt_depth, threshold: float) -> tuple[float, float]:
    """Direction-averaged contour precision and recall at one ratio threshold (no NMS)."""
    pred_ratios = _neighbour_ratios(_inverse_depth(pred_depth))
    gt_ratios = _neighbour_ratios(_inverse_depth(gt_depth))
    return _precision_recall(pred_ratios, gt_ratios, threshold)


def _precision_recall(pred_ratios, gt_ratios, threshold) -> tuple[float, float]:
    with np.errstate(invalid="ignore"):
        pred_edges = [r > threshold for r in pred_ratios]
        gt_edges = [r > threshold for r in gt_ratios]
    hits = [p & g for p, g in zip(pred_edges, gt_edges)]
    return _direction_mean(hits, pred_edges), _direction_mean(hits, gt_edges)


def boundary_f1(pred_depth, gt_depth, thresholds=BOUNDARY_THRESHOLDS) -> float:
    """Depth Pro's scale-invariant boundary F1 for depth GT (Sintel, Spring, iBims-1).

    pred_depth, gt_depth: (H, W) depth, any positive scale (the ratios are scale-invariant).
    Invalid GT must be NaN: NaN pixels form no GT edge, whereas 0 would become a strong one.
    Predicted edges next to NaN GT still count against precision, as in Depth Pro.
    Per threshold t: precision and recall are each averaged over the four directions, then
    F1 = 2PR / (P + R) (0 when P + R = 0); the score is sum_t F1(t) * t / sum(t).
    """
    pred_depth, gt_depth = _as_2d("pred_depth", pred_depth), _as_2d("gt_depth", gt_depth)
    if pred_depth.shape != gt_depth.shape:
        raise ValueError(f"shape mismatch: pred {pred_depth.shape}, gt {gt_depth.shape}")
    if np.isnan(gt_depth).all():
        raise ValueError("gt_depth has no valid (non-NaN) pixels")
    pred_ratios = _neighbour_ratios(_inverse_depth(pred_depth))
    gt_ratios = _neighbour_ratios(_inverse_depth(gt_depth))
    thresholds, weights = _threshold_weights(thresholds)
    score = 0.0
    for t, w in zip(thresholds, weights):
        p, r = _precision_recall(pred_ratios, gt_ratios, t)
        score += w * (0.0 if p + r == 0 else 2 * p * r / (p + r))
    return float(score)


def boundary_recall(pred_depth, gt_mask, thresholds=BOUNDARY_THRESHOLDS,
                    alpha_threshold: float = MASK_ALPHA_THRESHOLD) -> float:
    """Depth Pro's scale-invariant boundary recall for mask GT (AM-2k, P3M-10k, DIS-5k).

    pred_depth: (H, W) depth; gt_mask: (H, W) alpha matte or mask, foreground where
    > ``alpha_threshold`` (0.1). Predicted contours are thinned by non-maximum suppression along
    each direction, then recall against the mask contours is averaged over the four directions
    and weighted over thresholds by t / sum(t).
    """
    pred_depth, gt_mask = _as_2d("pred_depth", pred_depth), _as_2d("gt_mask", gt_mask)
    if pred_depth.shape != gt_mask.shape:
        raise ValueError(f"shape mismatch: pred {pred_depth.shape}, gt_mask {gt_mask.shape}")
    # Depth Pro thins horizontal directions along rows and vertical ones along columns. Edge
    # counts do not change under transposition, so vertical directions are scored transposed.
    mask_edges = _vertical_transposed(_mask_edges(np.asarray(gt_mask > alpha_threshold)))
    pred_ratios = _vertical_transposed(_neighbour_ratios(_inverse_depth(pred_depth)))
    thresholds, weights = _threshold_weights(thresholds)
    score = 0.0
    for t, w in zip(thresholds, weights):
        pred_edges = [_thin_rows(r, t) for r in pred_ratios]
        hits = [p & g for p, g in zip(pred_edges, mask_edges)]
        score += w * _direction_mean(hits, mask_edges)
    return float(score)
