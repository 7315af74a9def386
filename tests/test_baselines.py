"""The mean-layout baseline (no model, no image): the map against a hand computation, the
predictor ignores the image, and evaluate_methods puts it first with an AbsRel ratio of 1."""

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth import baselines, stages
from fiffdepth import evaluate as ev


def _write_scene(root, sid, depth, mask=None):
    for sub in ("rgb", "depth", "mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "rgb" / f"{sid}.png")
    np.save(root / "depth" / f"{sid}.npy", depth.astype(np.float32))
    if mask is not None:
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "mask" / f"{sid}.png")


def _normalised(depth, valid):
    lo, hi = np.percentile(depth[valid].astype(np.float64), [2, 98])
    return np.clip((depth - lo) / (hi - lo) * 2 - 1, -1, 1)


@pytest.fixture()
def three_scenes(tmp_path):
    """Three 4×5 scenes: invalid pixels by depth 0 and by mask; pixel (0, 0) is valid in none."""
    rng = np.random.default_rng(0)
    depths, valids = [], []
    for i in range(3):
        d = rng.uniform(1, 10, (4, 5)).astype(np.float32)
        d[0, 0] = 0.0
        mask = np.ones((4, 5), bool)
        if i == 1:
            d[3, 4] = 0.0
        if i == 2:
            mask[2, 1:3] = False
        _write_scene(tmp_path / "scenes", f"{i:06d}", d, mask if i == 2 else None)
        depths.append(d)
        valids.append((d > 0) & mask)
    return tmp_path / "scenes", depths, valids


def test_map_is_the_hand_computed_mean(three_scenes):
    root, depths, valids = three_scenes
    total, count = np.zeros((4, 5)), np.zeros((4, 5))
    for d, v in zip(depths, valids):
        total += np.where(v, _normalised(d, v), 0)
        count += v
    expected = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    expected[count == 0] = expected[count > 0].mean()
    m = baselines.mean_layout_map(root)
    assert m.dtype == np.float32 and m.shape == (4, 5)
    np.testing.assert_allclose(m, expected, atol=1e-6)
    np.testing.assert_array_equal(m, baselines.mean_layout_map(root))  # deterministic
    # the first scene alone, and the normalisation is fiffdepth.codecs.normalize_depth's
    first = baselines.mean_layout_map(root, max_scenes=1)
    np.testing.assert_allclose(first[valids[0]], _normalised(depths[0], valids[0])[valids[0]], atol=1e-6)
    from fiffdepth.codecs import normalize_depth

    ref = normalize_depth(torch.from_numpy(depths[2])[None, None], torch.from_numpy(valids[2])[None, None])[0, 0]
    np.testing.assert_allclose(baselines._normalize(depths[2], valids[2]), ref.numpy(), atol=1e-5)
    assert baselines.mean_layout_map(root, size=(8, 10)).shape == (8, 10)
    assert baselines.scenes_digest(root) == baselines.scenes_digest(root) != ""


def test_predictor_ignores_the_image(three_scenes):
    root, _, _ = three_scenes
    p = baselines.mean_layout_predictor(root)
    a, b = torch.rand(3, 4, 5), torch.zeros(3, 4, 5)
    out = ev.predict_raw(p, [a, b])
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], baselines.mean_layout_map(root))
    big = ev.predict_raw(p, [torch.rand(3, 8, 10), torch.ones(3, 8, 10)])
    assert big[0].shape == (8, 10) and np.array_equal(big[0], big[1])
    info = ev.describe_predictor(p)
    assert info["kind"] == baselines.MEAN_LAYOUT and info["output_space"] == "depth"


@pytest.fixture()
def out_root(tmp_path):
    from fiffdepth.data.synthetic import write_synthetic_dataset

    L = stages.layout(tmp_path / "out")
    write_synthetic_dataset(L.synth, n=3, size=32, seed=0, progress=False)
    write_synthetic_dataset(L.eval, n=2, size=32, seed=1_000_003, progress=False)
    write_synthetic_dataset(L.eval_real, n=2, size=32, seed=3_000_017, progress=False, style="real")
    (L.real / "styled").mkdir(parents=True)
    L.pseudo.mkdir(parents=True)
    for i, sub in enumerate(("", "styled/")):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(L.real / f"{sub}p{i}.png")
        (L.pseudo / sub).mkdir(parents=True, exist_ok=True)
        np.save(L.pseudo / f"{sub}p{i}.npy", np.linspace(1, 4, 32, dtype=np.float32)[:, None].repeat(32, 1))
    return L


def test_evaluate_methods_puts_the_mean_layout_first(out_root, monkeypatch):
    L = out_root
    r = stages.evaluate_methods(L.root, methods=["fiffdepth"], name="t", pseudo_agreement=True, progress=False)
    assert r["skipped"] == ["fiffdepth"]  # no finished run
    label = baselines.MEAN_LAYOUT_LABEL
    assert list(r["rows"]) == [label] == [stages.label_of("mean_layout")]
    row = r["rows"][label]
    assert list(row) == ["abs_rel", "delta1", "boundary_f1", "abs_rel_ratio", "real_abs_rel", "real_delta1",
                         "real_boundary_f1", "real_abs_rel_ratio", "pseudo_abs_rel", "pseudo_delta1"]
    assert row["abs_rel_ratio"] == 1.0 and row["real_abs_rel_ratio"] == 1.0
    assert 0 < row["abs_rel"] < 100 and 0 <= row["real_delta1"] <= 100 and np.isfinite(row["pseudo_abs_rel"])
    assert set(r["results"][0]["datasets"]) == {"embedded", "embedded_eval_real"}
    md = r["markdown"]
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert "synthetic AbsRel / mean layout ↓" in table[0] and "real-styled AbsRel / mean layout ↓" in table[0]
    assert table[2].startswith(f"| {label} |") and table[2].count("| 1.00 |") == 2
    assert "Embedded (eval_real) AbsRel ↓" in md and (L.results / "t.md").read_text() == md
    # cached: scored again without computing anything
    monkeypatch.setattr(stages, "predictor_for", lambda *a, **k: pytest.fail("not cached"))
    again = stages.evaluate_methods(L.root, methods=[], name=None, pseudo_agreement=True, progress=False)
    assert again["rows"] == r["rows"]
    assert stages._weights_digest(L.root, "mean_layout") and isinstance(stages._weights_digest(L.root, "teacher"), str)
    assert stages._weights_digest(L.root, "fiffdepth") == ""
    # seed_spread's table: the same columns, mean ± std over seeds
    spread = stages.spread_over_seeds({0: r["rows"], 1: again["rows"]})
    md = stages._methods_table(spread, r["columns"], seeds={label: 2})
    assert md.splitlines()[2].startswith(f"| {label} | 2 |") and "| 1.00 ± 0.00 |" in md


def test_default_datasets_without_real_styled_scenes(out_root):
    import shutil

    shutil.rmtree(out_root.eval_real)
    assert stages.default_eval_datasets(out_root.root) == [f"embedded:{out_root.eval}"]
    r = stages.evaluate_methods(out_root.root, methods=[], name=None, progress=False)
    row = r["rows"][baselines.MEAN_LAYOUT_LABEL]
    assert list(row) == ["abs_rel", "delta1", "boundary_f1", "abs_rel_ratio"] and row["abs_rel_ratio"] == 1.0
    assert "| AbsRel / mean layout ↓ |" in r["markdown"]
