"""FiffDepthPipeline and `fiffdepth predict`: inputs, determinism, outputs, bad files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import save_tiny_model
from PIL import Image

from fiffdepth.pipeline import BadImageError, FiffDepthPipeline, find_images, image_to_tensor, load_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_cfg):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tiny_cfg.model, 64)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return FiffDepthPipeline.from_pretrained(model_dir)


def _rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_output_matches_input_resolution_and_range(pipe):
    out = pipe(_rgb())
    assert out.prediction.shape == (1, 40, 56, 1)  # Marigold's layout: (N, H, W, 1)
    assert out.prediction.dtype == np.float32 and np.isfinite(out.prediction).all()
    assert out.prediction.min() >= 0.0 and out.prediction.max() <= 1.0
    small = pipe(_rgb(), match_input_resolution=False)
    assert small.prediction.shape == (1, 64 * 40 // 56, 64, 1)  # Marigold's resize: longest side = 64
    as_pt = pipe(_rgb(), output_type="pt")
    assert as_pt.prediction.shape == (1, 1, 40, 56) and torch.equal(as_pt.prediction[:, 0], torch.from_numpy(out.prediction[..., 0]))
    pred, uncertainty, latent = pipe(_rgb(), output_latent=True, return_dict=False)
    assert np.array_equal(pred, out.prediction) and uncertainty is None and latent.shape == (1, 4, 12, 16)  # 45×64, padded to 48×64, VAE ×4
    with pytest.warns(DeprecationWarning, match="prediction"):
        assert np.array_equal(out.depth, out.prediction[..., 0])  # the old name, (N, H, W)


def test_same_input_bit_identical(pipe, model_dir):
    img = _rgb(seed=3)
    a = pipe(img).prediction
    b = pipe(img).prediction
    c = FiffDepthPipeline.from_pretrained(model_dir)(img).prediction
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_input_types_agree(pipe):
    arr = _rgb(32, 32, seed=1)
    ref = pipe(arr).prediction[0]
    as_pil = pipe(Image.fromarray(arr)).prediction[0]
    as_tensor = pipe(torch.from_numpy(arr).permute(2, 0, 1).float() / 255).prediction[0]
    as_u16 = pipe(arr.astype(np.uint16) * 257).prediction[0]
    assert np.allclose(ref, as_pil) and np.allclose(ref, as_tensor, atol=1e-5) and np.allclose(ref, as_u16, atol=1e-5)
    rgba = np.concatenate([arr, np.full((32, 32, 1), 7, np.uint8)], -1)
    assert np.array_equal(pipe(rgba).prediction[0], ref)


def test_list_and_batch(pipe):
    imgs = [_rgb(32, 32, s) for s in range(3)] + [_rgb(24, 40, 9)]
    out = pipe(imgs, batch_size=2, return_extended=True, output_latent=True)
    assert isinstance(out.prediction, list) and [d.shape for d in out.prediction] == [(32, 32, 1)] * 3 + [(24, 40, 1)]
    one_by_one = [pipe(i).prediction[0] for i in imgs]
    for a, b in zip(out.prediction, one_by_one):
        assert np.allclose(a, b, atol=1e-5)
    assert len(out.prediction_extended) == 4 and len(out.latent) == 4
    assert not np.allclose(out.prediction_extended[0], out.prediction[0])  # d₋₁ differs from d0
    same = pipe(imgs[:3], batch_size=2, output_type="pt", output_latent=True)
    assert same.prediction.shape == (3, 1, 32, 32) and same.latent.shape == (3, 4, 16, 16)


def test_diffusers_loads_the_directory_as_our_pipeline(model_dir, pipe):
    """The saved directory is diffusers' hub layout: DiffusionPipeline.from_pretrained (its index
    names fiffdepth_pipeline.py, diffusers asks for trust_remote_code) and custom_pipeline give
    our class and the same prediction."""
    import json

    from diffusers import DiffusionPipeline

    img = _rgb(seed=11)
    ref = pipe(img).prediction
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["fiffdepth_pipeline", "FiffDepthPipeline"] and index["processing_resolution"] == 64
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and np.shape(index["empty_text_embedding"]) == (1, 2, 32)
    for kw in ({}, {"custom_pipeline": str(model_dir / "fiffdepth_pipeline.py")}, {"custom_pipeline": "fiffdepth_pipeline"}):
        loaded = DiffusionPipeline.from_pretrained(str(model_dir), trust_remote_code=True, **kw)
        assert type(loaded) is FiffDepthPipeline and loaded.to("cpu") is loaded and loaded.device.type == "cpu"
        np.testing.assert_array_equal(loaded(img).prediction, ref)
    assert sorted(loaded.components) == ["scheduler", "unet", "vae"]
    assert loaded.config.processing_resolution == 64
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(str(model_dir))
    again = model_dir.parent / "resaved"  # a pipeline diffusers loaded saves the same layout back
    loaded.save_pretrained(again)
    assert json.loads((again / "model_index.json").read_text())["_class_name"] == index["_class_name"]
    np.testing.assert_array_equal(FiffDepthPipeline.from_pretrained(again)(img).prediction, ref)


def test_progress_bar_is_diffusers(pipe, capsys):
    pipe.set_progress_bar_config(disable=False, desc="fiffdepth-bar")
    try:
        pipe([_rgb(32, 32, s) for s in range(3)], batch_size=2)
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert "fiffdepth-bar" in capsys.readouterr().err


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


# -- the fast path (issue 9): bf16 autocast, channels_last, SDPA, determinism ---------------------


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def fast_images():
    return torch.stack([torch.from_numpy(_rgb(64, 64, s)).permute(2, 0, 1).float() / 255 for s in range(2)])


def test_channels_last_matches_contiguous(model_dir, fast_images):
    ref = FiffDepthPipeline.from_pretrained(model_dir, channels_last=False)
    nhwc = FiffDepthPipeline.from_pretrained(model_dir, channels_last=True)
    assert nhwc.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    a = ref(fast_images, batch_size=2, output_latent=True)
    b = nhwc(fast_images, batch_size=2, output_latent=True)
    assert np.allclose(a.prediction, b.prediction, atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a.latent, b.latent))


def test_attention_runs_through_sdpa(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = list(pipe.model.unet.attn_processors.values()) + list(pipe.model.vae.attn_processors.values())
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs)


def test_bf16_autocast_close_to_fp32_and_deterministic(model_dir, fast_images):
    fp32 = FiffDepthPipeline.from_pretrained(model_dir)(fast_images, batch_size=2, output_latent=True)
    bf16 = FiffDepthPipeline.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
    assert bf16.autocast and bf16.channels_last and bf16.model.unet.dtype == torch.bfloat16
    out = bf16(fast_images, batch_size=2, output_latent=True)
    assert out.prediction.dtype == np.float32 and np.isfinite(out.prediction).all()
    assert not np.array_equal(out.prediction, fp32.prediction)  # it really ran in bf16
    # Random weights amplify bf16 rounding (8-bit mantissa): this model's depth differs by ~1.7e-2
    # relative (the trained tiny prior: ~6e-3, see benchmarks/RESULTS.md); the UNet latent by ~4e-2.
    assert _rel_err(out.prediction, fp32.prediction) < 3e-2
    assert _rel_err(out.latent.numpy(), fp32.latent.numpy()) < 8e-2
    again = bf16(fast_images, batch_size=2).prediction
    assert np.array_equal(out.prediction, again)


def test_stage_hook_sees_each_stage(pipe):
    import contextlib

    seen = []

    @contextlib.contextmanager
    def hook(name):
        seen.append(name)
        yield

    pipe.stage_hook = hook
    try:
        pipe(_rgb(32, 32), return_extended=True)
    finally:
        pipe.stage_hook = None
    assert seen == ["encode", "unet", "decode"]


@pytest.mark.slow
def test_compiled_pipeline_matches_eager(model_dir):
    """torch.compile (inductor; ~1–3 min to compile on 2 CPU cores): same depth, still deterministic."""
    img = _rgb(64, 64, seed=5)
    eager = FiffDepthPipeline.from_pretrained(model_dir)(img).prediction
    compiled = FiffDepthPipeline.from_pretrained(model_dir, compile=True)
    a, b = compiled(img).prediction, compiled(img).prediction
    assert np.allclose(a, eager, atol=1e-4) and np.array_equal(a, b)


# -- input contract (issue 17): dtype ranges, no clamping, validated resolution --------------------


def test_integers_scaled_by_dtype_range_floats_outside_unit_range_refused(pipe):
    arr = _rgb(32, 32, seed=4)
    ref = pipe(arr).prediction[0]
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    assert np.array_equal(pipe(chw).prediction[0], ref)  # uint8 tensor: / 255, not clamped to white
    assert np.allclose(pipe(chw.float() / 255).prediction[0], ref, atol=1e-5)
    assert torch.equal(image_to_tensor(arr.astype(np.uint16) * 257), image_to_tensor(arr))
    for bad in (chw.float(), arr.astype(np.float32), arr.astype(np.float32) / 255 - 0.1):
        with pytest.raises(BadImageError, match=r"\[0, 1\]"):
            pipe(bad)
    with pytest.raises(BadImageError, match="uint8"):  # an int64 array has no one obvious range
        image_to_tensor(arr.astype(np.int64))


def test_processing_resolution_is_validated(pipe):
    from fiffdepth.hub import UsageError

    assert pipe.size_multiple == 16
    for bad in (-5, 3, 15, 2.5):
        with pytest.raises(UsageError, match="processing_resolution"):
            pipe(_rgb(32, 32), processing_resolution=bad)
    native = pipe(_rgb(40, 56), processing_resolution=0, match_input_resolution=False).prediction
    assert native.shape == (1, 40, 56, 1)
    assert pipe(_rgb(40, 56), processing_resolution=16, match_input_resolution=False).prediction.shape[2] == 16


def test_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch):
    Image.fromarray(_rgb(32, 32)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32 × 32 > 2 × 100: PIL's bomb error
    with pytest.raises(BadImageError, match="bomb.png"):
        load_image(tmp_path / "bomb.png")


# -- predict: outputs never touch inputs (issue 17) --------------------------------------------------


def _predict(capsys, *argv):
    from fiffdepth.cli import main

    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_predict_refuses_out_equal_to_an_input_folder(tmp_path, capsys, model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_rgb(32, 32, 0)).save(photos / "a.png")
    before = _snapshot(photos)
    code, _, err = _predict(capsys, photos, "--model", model_dir, "--out", photos)
    assert code == 2 and err.count("error:") == 1 and "input folder" in err
    assert _snapshot(photos) == before


def test_predict_out_subfolder_is_skipped_and_names_never_collide(tmp_path, capsys, model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_rgb(32, 32, 0)).save(photos / "x.png")
    Image.fromarray(_rgb(32, 32, 1)).save(photos / "x_colored.png")  # x's colour map would take this name
    Image.fromarray(_rgb(32, 32, 2)).save(photos / "x.jpg")
    inputs = _snapshot(photos)
    code, out, _ = _predict(capsys, photos, "--model", model_dir, "--out", photos / "depth")
    assert code == 0 and "wrote 3 depth map(s)" in out
    written = _snapshot(photos / "depth")
    # x.jpg takes x.*, x.png gets x_1, and x_colored.png must not reuse the colour map of x: x_colored_1
    assert sorted(n for n in written if n.endswith(".npy")) == ["x.npy", "x_1.npy", "x_colored_1.npy"]
    assert len([n for n in written if not n.startswith(".")]) == 9  # 3 files per input, none overwritten
    # a second run into another subfolder does not read the first run's depth maps back as images
    code, out, _ = _predict(capsys, photos, "--model", model_dir, "--out", photos / "depth2")
    assert code == 0 and "wrote 3 depth map(s)" in out
    assert {k: v for k, v in _snapshot(photos).items() if "/" not in k} == inputs
    assert _snapshot(photos / "depth") == written


def test_predict_keeps_inputs_and_foreign_files_in_the_out_folder(tmp_path, capsys, model_dir):
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(_rgb(32, 32, 0)).save(out / "a.png")  # an input that lives in --out
    (out / "b.npy").write_bytes(b"someone else's file")
    Image.fromarray(_rgb(32, 32, 1)).save(tmp_path / "b.png")
    before = _snapshot(out)
    code, _, _ = _predict(capsys, out / "a.png", tmp_path / "b.png", "--model", model_dir, "--out", out)
    assert code == 0
    after = _snapshot(out)
    assert all(after[k] == v for k, v in before.items())
    assert "a_1.npy" in after and "b_1.npy" in after
    code, _, _ = _predict(capsys, out / "a.png", tmp_path / "b.png", "--model", model_dir, "--out", out)
    assert code == 0 and _snapshot(out).keys() == after.keys()  # a re-run overwrites its own outputs only


def test_predict_checks_out_before_loading_the_model(tmp_path, capsys):
    Image.fromarray(_rgb(32, 32, 0)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    # the model does not exist either: the --out error must come first, before any loading
    code, _, err = _predict(capsys, tmp_path / "a.png", "--model", tmp_path / "no-model", "--out", tmp_path / "file" / "sub")
    assert code == 2 and err.count("error:") == 1 and "not writable" in err and "no-model" not in err


def test_predict_bad_resolution_and_bad_model_exit_2_in_one_line(tmp_path, capsys, model_dir):
    Image.fromarray(_rgb(32, 32, 0)).save(tmp_path / "a.png")
    code, _, err = _predict(capsys, tmp_path / "a.png", "--model", model_dir, "--out", tmp_path / "o",
                            "--processing-resolution", "-5")
    assert code == 2 and err.strip().count("\n") == 0 and "processing_resolution=-5" in err
    assert not list((tmp_path / "o").glob("*.npy"))


def test_same_bytes_at_one_and_two_threads(pipe):
    """oneDNN's 1×1 convolution splits its sums by thread; the pipeline routes those convolutions around it."""
    from fiffdepth.pipeline import thread_independent_1x1_convs

    img = _rgb(45, 67, seed=7)
    threads = torch.get_num_threads()
    try:
        out = {}
        for t in (1, 2):
            torch.set_num_threads(t)
            out[t] = [pipe(img).prediction, pipe(img, processing_resolution=0).prediction]
    finally:
        torch.set_num_threads(threads)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out[1], out[2]))
    conv = torch.nn.Conv2d(16, 32, 1)
    x = torch.randn(2, 16, 48, 64)
    with torch.no_grad():
        ref = conv(x)
        thread_independent_1x1_convs(conv)
        fixed = []
        for t in (1, 2):
            torch.set_num_threads(t)
            fixed.append(conv(x))
    torch.set_num_threads(threads)
    assert torch.equal(*fixed) and torch.allclose(fixed[0], ref, atol=1e-5)  # the same convolution
    import copy

    half = copy.deepcopy(conv).to(torch.bfloat16)  # a copy computes with its own weights
    assert half(x.bfloat16()).dtype == torch.bfloat16
