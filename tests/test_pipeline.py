"""FiffDepthPipeline and `fiffdepth predict`: inputs, determinism, outputs, bad files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fiffdepth.pipeline import BadImageError, FiffDepthPipeline, find_images, image_to_tensor, load_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_cfg):
    from fiffdepth.model import FiffDepthModel

    d = tmp_path_factory.mktemp("model") / "tiny"
    m = FiffDepthModel.from_config(tiny_cfg.model, seed=0)
    m.processing_resolution = 64
    m.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pipe(model_dir):
    return FiffDepthPipeline.from_pretrained(model_dir)


def _rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_output_matches_input_resolution_and_range(pipe):
    out = pipe(_rgb())
    assert out.depth.shape == (1, 40, 56)
    assert out.depth.dtype == np.float32 and np.isfinite(out.depth).all()
    assert out.depth.min() >= 0.0 and out.depth.max() <= 1.0
    small = pipe(_rgb(), match_input_resolution=False)
    assert max(small.depth.shape[1:]) == 64


def test_same_input_bit_identical(pipe, model_dir):
    img = _rgb(seed=3)
    a = pipe(img).depth
    b = pipe(img).depth
    c = FiffDepthPipeline.from_pretrained(model_dir)(img).depth
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_input_types_agree(pipe):
    arr = _rgb(32, 32, seed=1)
    ref = pipe(arr).depth[0]
    as_pil = pipe(Image.fromarray(arr)).depth[0]
    as_tensor = pipe(torch.from_numpy(arr).permute(2, 0, 1).float() / 255).depth[0]
    as_u16 = pipe(arr.astype(np.uint16) * 257).depth[0]
    assert np.allclose(ref, as_pil) and np.allclose(ref, as_tensor, atol=1e-5) and np.allclose(ref, as_u16, atol=1e-5)
    rgba = np.concatenate([arr, np.full((32, 32, 1), 7, np.uint8)], -1)
    assert np.array_equal(pipe(rgba).depth[0], ref)


def test_list_and_batch(pipe):
    imgs = [_rgb(32, 32, s) for s in range(3)] + [_rgb(24, 40, 9)]
    out = pipe(imgs, batch_size=2, return_extended=True, output_latent=True)
    assert isinstance(out.depth, list) and [d.shape for d in out.depth] == [(32, 32)] * 3 + [(24, 40)]
    one_by_one = [pipe(i).depth[0] for i in imgs]
    for a, b in zip(out.depth, one_by_one):
        assert np.allclose(a, b, atol=1e-5)
    assert len(out.depth_extended) == 4 and len(out.latent) == 4
    assert not np.allclose(out.depth_extended[0], out.depth[0])  # d₋₁ differs from d0


def test_image_to_tensor_conversions():
    g = image_to_tensor(np.full((10, 12), 128, np.uint8))
    assert g.shape == (3, 10, 12) and torch.allclose(g, torch.full_like(g, 128 / 255))
    with pytest.raises(BadImageError, match="1×1"):
        image_to_tensor(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(BadImageError, match="NaN"):
        image_to_tensor(np.full((10, 10, 3), np.nan, np.float32))


def _write_inputs(d):
    d.mkdir()
    Image.fromarray(_rgb(32, 32, 0)).save(d / "good.png")
    Image.fromarray(_rgb(32, 32, 1)[..., 0]).save(d / "gray.png")
    Image.fromarray(np.concatenate([_rgb(32, 32, 2), np.full((32, 32, 1), 255, np.uint8)], -1)).save(d / "rgba.png")
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(d / "sixteen.png")
    Image.fromarray(_rgb(1, 1, 3)).save(d / "tiny.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty").mkdir()


def test_load_image_reports_problems(tmp_path):
    _write_inputs(tmp_path / "in")
    t, notes = load_image(tmp_path / "in" / "sixteen.png")
    assert t.shape == (3, 32, 32) and any("16-bit" in n for n in notes)
    for name in ["broken.jpg", "truncated.png", "tiny.png"]:
        with pytest.raises(BadImageError) as info:
            load_image(tmp_path / "in" / name)
        assert name in str(info.value)
    files, problems = find_images([tmp_path / "in" / "empty", tmp_path / "missing.png"])
    assert files == [] and len(problems) == 2 and "no images" in problems[0]


def test_predict_cli_writes_good_files_and_reports_bad_ones(tmp_path, model_dir):
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "fiffdepth.cli", "predict", str(tmp_path / "in"),
                        str(tmp_path / "in" / "empty"), "--model", str(model_dir), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr  # some inputs failed ...
    for stem in ["good", "gray", "rgba", "sixteen"]:  # ... but every good one was written
        png = np.asarray(Image.open(out / f"{stem}.png"))
        assert png.dtype == np.uint16 and png.shape == (32, 32)
        npy = np.load(out / f"{stem}.npy")
        assert npy.shape == (32, 32) and np.isfinite(npy).all()
        assert np.abs(png / 65535.0 - npy).max() < 1e-4
        assert np.asarray(Image.open(out / f"{stem}_colored.png")).shape == (32, 32, 3)
    err = r.stderr
    for name in ["broken.jpg", "truncated.png", "tiny.png", "empty"]:
        assert any(name in line and line.startswith("error:") for line in err.splitlines()), (name, err)
    assert "grayscale" in err and "alpha" in err and "16-bit" in err
    assert not list(out.glob(".*tmp*"))  # no temp files left behind
