"""fiffdepth.distill: the TAESD depth decoder — training, latent convention, saving, pipeline use."""

import json

import pytest
import torch
from conftest import save_tiny_model

from fiffdepth.codecs import DepthCodec
from fiffdepth.distill import (DECODER_DIR, DECODER_META, distill_decoder, load_depth_decoder, make_tiny_decoder,
                               tiny_decoder_config, tiny_depth, upsampling_factor)
from fiffdepth.hub import FiffDepthError
from fiffdepth.pipeline import FiffDepthPipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_cfg):
    return save_tiny_model(tmp_path_factory.mktemp("distill") / "model", tiny_cfg.model, 32)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from fiffdepth.data.synthetic import write_synthetic_dataset

    d = tmp_path_factory.mktemp("distill") / "synth"
    write_synthetic_dataset(d, n=10, size=48, seed=0, progress=False)
    return d


@pytest.fixture(scope="module")
def distilled(model_dir, synth_dir):
    return distill_decoder(model_dir, synth_dir, steps=40, batch_size=4, learning_rate=3e-3, progress=False)


def test_student_matches_the_vae_shape_and_reads_scaled_latents(tiny_model):
    vae = tiny_model.vae
    dec = make_tiny_decoder(vae)
    assert upsampling_factor(dec) == tiny_model.vae_scale_factor
    assert dec.config.latent_channels == vae.config.latent_channels
    assert dec.config.scaling_factor == 1.0 and max(dec.config.decoder_block_out_channels) <= 64
    # the paper's SD VAE gets TAESD's published architecture
    from diffusers import AutoencoderKL

    from fiffdepth.bench import SD2_VAE

    sd = tiny_decoder_config(AutoencoderKL.from_config(SD2_VAE))
    assert sd["decoder_block_out_channels"] == (64, 64, 64, 64) and sd["num_decoder_blocks"] == (3, 3, 3, 1)
    # the codec hands the student the UNet's (scaled) latents unchanged, the VAE latents ÷ its factor
    seen = {}
    real_decode = dec.decode

    def spy(x, *a, **k):
        seen["x"] = x
        return real_decode(x, *a, **k)

    dec.decode = spy
    lat = torch.randn(2, 4, 8, 8) * 2
    with torch.no_grad():
        out = DepthCodec(vae, decoder=dec).decode(lat)
    assert torch.equal(seen["x"], lat)
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1.0
    with torch.no_grad():
        assert torch.allclose(out, tiny_depth(dec, lat).clamp(-1, 1))


def test_distillation_learns_the_full_decoder(distilled, model_dir, synth_dir):
    assert distilled["pairs"] == 20  # GT-depth latents and predicted d0 for each of 10 scenes
    meta = json.loads((model_dir / DECODER_DIR / DECODER_META).read_text())
    assert meta["distill"]["steps"] == 40 and meta["vae_scaling_factor"] == 1.0
    # the student is fitted: its held-out error is well below a fresh student's
    from fiffdepth.distill import distillation_pairs
    from fiffdepth.model import FiffDepthModel

    model = FiffDepthModel.from_pretrained(model_dir)
    lat, tgt = distillation_pairs(model, synth_dir, 32, progress=False)
    fresh = make_tiny_decoder(model.vae, seed=1)
    trained = load_depth_decoder(model_dir / DECODER_DIR, vae=model.vae)
    with torch.no_grad():
        err_fresh = (tiny_depth(fresh, lat).clamp(-1, 1) - tgt).abs().mean().item()
        err_trained = (tiny_depth(trained, lat).clamp(-1, 1) - tgt).abs().mean().item()
    assert err_trained < 0.5 * err_fresh, (err_trained, err_fresh)


def test_pipeline_with_tiny_decoder(distilled, model_dir):
    img = torch.rand(3, 40, 56)
    tiny = FiffDepthPipeline.from_pretrained(model_dir, decoder="tiny")
    full = FiffDepthPipeline.from_pretrained(model_dir)
    assert tiny.decoder_name == "tiny" and full.decoder_name == "full"
    a, b = tiny(img).prediction, full(img).prediction
    assert a.shape == b.shape == (1, 40, 56, 1) and torch.isfinite(torch.from_numpy(a)).all()
    assert (a >= 0).all() and (a <= 1).all()
    assert torch.equal(torch.from_numpy(a), torch.from_numpy(tiny(img).prediction))  # deterministic
    # the constructor finds depth_decoder/ next to the weights the model was loaded from
    again = FiffDepthPipeline.from_model(tiny.model, decoder="tiny")
    assert (again(img).prediction == a).all()
    # save/load round trip keeps the decoder
    out = model_dir.parent / "copy"
    tiny.save_pretrained(out)
    assert (FiffDepthPipeline.from_pretrained(out, decoder="tiny")(img).prediction == a).all()


def test_missing_or_mismatched_decoder_is_a_clear_error(tmp_path, distilled, model_dir, tiny_cfg):
    from fiffdepth.model import FiffDepthModel

    bare = tmp_path / "bare"
    FiffDepthModel.from_config(tiny_cfg.model, seed=0).save_pretrained(bare)
    with pytest.raises(FiffDepthError, match="fiffdepth distill-decoder"):
        FiffDepthPipeline.from_pretrained(bare, decoder="tiny")
    with pytest.raises(FiffDepthError, match="model's directory"):
        FiffDepthPipeline.from_model(FiffDepthModel.from_config(tiny_cfg.model), decoder="tiny")
    with pytest.raises(ValueError, match="decoder must be"):
        FiffDepthPipeline.from_model(FiffDepthModel.from_config(tiny_cfg.model), decoder="small")
    # a decoder distilled for a VAE with another scaling factor is refused
    import shutil

    other = tmp_path / "other"
    shutil.copytree(model_dir / DECODER_DIR, other)
    meta = json.loads((other / DECODER_META).read_text())
    meta["vae_scaling_factor"] = 0.18215
    (other / DECODER_META).write_text(json.dumps(meta))
    model = FiffDepthModel.from_pretrained(model_dir)
    with pytest.raises(FiffDepthError, match="scaling factor"):
        load_depth_decoder(other, vae=model.vae)


def test_cli_distill_decoder(tmp_path, model_dir, synth_dir):
    from fiffdepth.cli import main

    out = tmp_path / "dec"
    assert main(["distill-decoder", "--model", str(model_dir), "--data", str(synth_dir), "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--limit", "4", "--no-progress"]) == 0
    assert (out / "config.json").is_file() and (out / DECODER_META).is_file()
    assert main(["distill-decoder", "--model", str(model_dir), "--data", str(tmp_path / "nothing"),
                 "--steps", "1", "--no-progress"]) == 2


def test_a_bad_scene_is_dropped_and_counted_not_replaced(tmp_path, distilled, model_dir):
    import numpy as np

    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.distill import compare_decoders, distillation_pairs
    from fiffdepth.model import FiffDepthModel

    write_synthetic_dataset(tmp_path, n=3, size=32, seed=0, progress=False)
    np.save(tmp_path / "depth" / "000001.npy", np.full((32, 32), np.nan, np.float32))  # no valid pixel
    model = FiffDepthModel.from_pretrained(model_dir)
    with pytest.warns(UserWarning, match="000001"):
        lat, tgt = distillation_pairs(model, tmp_path, 32, batch_size=2, progress=False)
    assert len(lat) == len(tgt) == 4  # 2 usable scenes × (GT latent, d0); scene 2 not used twice
    decoder = load_depth_decoder(model_dir / DECODER_DIR, vae=model.vae)
    with pytest.warns(UserWarning, match="000001"):
        report = compare_decoders(model, decoder, tmp_path, processing_resolution=32)
    assert report["scenes"] == 2 and report["skipped"] == 1
