"""FiffDepthModel: Eq. 1 and Eq. 4 steps, timestep embeddings, empty prompt, save/load, hub errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fiffdepth.hub import FiffDepthError, HubUnreachableError
from fiffdepth.model import EXTEND_T, FEED_FORWARD_T, FiffDepthModel, empty_prompt_embedding


def test_feed_forward_and_extend_shapes(tiny_model):
    x0 = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        d0 = tiny_model.predict_latent(x0)
        dm1 = tiny_model.extend(d0)
    assert d0.shape == x0.shape and dm1.shape == x0.shape
    # the UNet keeps its 4-channel input: the image latent alone (no concatenation)
    assert tiny_model.unet.config.in_channels == 4
    # t = 0 and t = -1 are different functions of the same weights
    with torch.no_grad():
        assert not torch.allclose(tiny_model.denoise(x0, FEED_FORWARD_T), tiny_model.denoise(x0, EXTEND_T))


def test_timestep_embeddings_distinct_for_minus1_0_and_trajectory(tiny_model):
    t = torch.arange(-1, 1000)  # -1, 0 and every trajectory index 1..999
    emb = tiny_model.unet.time_proj(t)
    assert emb.shape[0] == 1001
    d = torch.cdist(emb, emb)
    d.fill_diagonal_(float("inf"))
    assert d.min().item() > 1e-4
    # -1 is an embedding input, not an index: it must not coincide with step 999
    assert not torch.allclose(emb[0], emb[-1])


def _tiny_clip(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                       num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                       eos_token_id=1, pad_token_id=1, projection_dim=32))
    return tok, enc


def test_empty_prompt_is_bos_eos_only(tmp_path):
    tok, enc = _tiny_clip(tmp_path)
    ids = tok("", padding="do_not_pad", return_tensors="pt").input_ids
    assert ids.tolist() == [[0, 1]]
    emb = empty_prompt_embedding(tok, enc)
    assert emb.shape == (1, 2, 32)


def test_save_load_same_outputs(tiny_model, tmp_path):
    tiny_model.eval()  # from_pretrained returns eval mode; compare like with like
    x0 = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        ref0, ref1 = tiny_model.predict_latent(x0), tiny_model.extend(x0)
    tiny_model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "m" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "m" / "scheduler" / "scheduler_config.json").is_file()
    loaded = FiffDepthModel.from_pretrained(tmp_path / "m")
    again = FiffDepthModel.from_pretrained(tmp_path / "m")
    for name, p in tiny_model.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    with torch.no_grad():
        # identical weights; oneDNN kernels may round differently for differently aligned
        # buffers (safetensors memory-maps), so fresh-vs-loaded agrees to float precision ...
        assert torch.allclose(loaded.predict_latent(x0), ref0, atol=1e-5, rtol=0)
        assert torch.allclose(loaded.extend(x0), ref1, atol=1e-5, rtol=0)
        # ... and two loads of the same directory agree bit for bit
        assert torch.equal(loaded.predict_latent(x0), again.predict_latent(x0))
    # saving over an existing directory replaces it atomically, leaving no temp dirs behind
    loaded.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_stable_diffusion_layout_loads_and_computes_empty_embedding(tiny_model, tmp_path):
    """A directory in SD's layout (unet/ vae/ scheduler/ text_encoder/ tokenizer/) loads."""
    sd = tmp_path / "sd"
    tiny_model.unet.save_pretrained(sd / "unet")
    tiny_model.vae.save_pretrained(sd / "vae")
    tiny_model.scheduler.save_pretrained(sd / "scheduler")
    tok, enc = _tiny_clip(tmp_path)
    tok.save_pretrained(sd / "tokenizer")
    enc.save_pretrained(sd / "text_encoder")
    m = FiffDepthModel.from_pretrained(sd)
    assert torch.allclose(m.empty_text_embedding, empty_prompt_embedding(tok, enc))
    assert m.scheduler.config.prediction_type == "v_prediction"
    assert m.scheduler.config.num_train_timesteps == 1000


def test_unreachable_hub_id_fails_with_one_line():
    code = ("from fiffdepth.model import FiffDepthModel\n"
            "FiffDepthModel.from_pretrained('fiffdepth-test/does-not-exist')\n")
    with pytest.raises(HubUnreachableError) as info:
        exec(code, {})
    msg = str(info.value)
    assert "\n" not in msg
    assert "fiffdepth-test/does-not-exist" in msg and "local directory" in msg


def test_missing_local_directory_is_clear(tmp_path):
    with pytest.raises(FiffDepthError, match="does not exist"):
        FiffDepthModel.from_pretrained(tmp_path / "nope")


def test_cli_reports_unreachable_model_in_one_line(tmp_path):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (10, 20, 30)).save(img)
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # same code path, minus the library's 30 s of retries
    r = subprocess.run([sys.executable, "-m", "fiffdepth.cli", "predict", str(img), "--model",
                        "fiffdepth-test/does-not-exist", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "local directory" in lines[0], r.stderr


def test_random_init_unet_keeps_the_pretrained_latent_space():
    """The "no generator prior" baseline: a seeded random UNet, the shipped VAE and embedding."""
    from fiffdepth.config import get_config
    from fiffdepth.train import _load_model

    cfg = get_config("tiny")
    prior = _load_model(cfg)
    cfg.model.unet_init = "random"
    a, b = _load_model(cfg), _load_model(cfg)
    for k, v in prior.vae.state_dict().items():
        assert torch.equal(a.vae.state_dict()[k], v)
    assert torch.equal(a.empty_text_embedding, prior.empty_text_embedding)
    ua, ub, up = a.unet.state_dict(), b.unet.state_dict(), prior.unet.state_dict()
    assert ua.keys() == up.keys() and all(torch.equal(ua[k], ub[k]) for k in ua)  # seeded
    assert not all(torch.equal(ua[k], up[k].to(ua[k].dtype)) for k in ua)
    cfg.model.unet_init = "nonsense"
    with pytest.raises(ValueError, match="unet_init"):
        _load_model(cfg)


# -- the model directory contract (issue 17) -----------------------------------------------------


def _weights(d):
    return d / "unet" / "diffusion_pytorch_model.safetensors"


def test_save_writes_a_manifest_and_load_detects_zeroed_bytes(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in files and "model_index.json" in files
    FiffDepthModel.from_pretrained(d)  # intact: loads
    data = bytearray(_weights(d).read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # zeroed bytes inside a tensor: still a valid file
    _weights(d).write_bytes(bytes(data))
    with pytest.raises(FiffDepthError, match="checksum") as info:
        FiffDepthModel.from_pretrained(d)
    assert str(_weights(d)) in str(info.value) and "\n" not in str(info.value)


def test_garbled_weights_without_manifest_are_one_line_naming_the_file(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    (d / "manifest.json").unlink()
    _weights(d).write_bytes(b"not a safetensors file")
    with pytest.raises(FiffDepthError) as info:
        FiffDepthModel.from_pretrained(d)
    assert "UNet" in str(info.value) and str(d / "unet") in str(info.value) and "\n" not in str(info.value)


def test_processing_resolution_from_index_or_unet_config(tiny_model, tmp_path):
    tiny_model.processing_resolution = 64
    d = tiny_model.save_pretrained(tmp_path / "m")
    assert FiffDepthModel.from_pretrained(d).processing_resolution == 64
    (d / "model_index.json").unlink()
    (d / "manifest.json").unlink()
    with pytest.raises(FiffDepthError, match="model_index.json: missing"):  # no silent 768 px
        FiffDepthModel.from_pretrained(d)
    sd = tmp_path / "sd"  # a UNet/VAE directory without an index: the UNet's sample_size × the VAE's factor
    tiny_model.unet.save_pretrained(sd / "unet")
    tiny_model.vae.save_pretrained(sd / "vae")
    from safetensors.torch import save_file

    save_file({"empty_text_embedding": tiny_model.empty_text_embedding.contiguous()}, str(sd / "empty_text_embedding.safetensors"))
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    m = FiffDepthModel.from_pretrained(sd)
    assert m.processing_resolution == tiny_model.unet.config.sample_size * m.vae_scale_factor == 128


def test_directory_written_before_issue_16_still_loads(tiny_model, tmp_path):
    """Embedding in empty_text_embedding.safetensors and the resolution under the index's
    "fiffdepth" key (the layout before the pipeline became a DiffusionPipeline)."""
    from safetensors.torch import save_file

    tiny_model.processing_resolution = 96
    d = tiny_model.save_pretrained(tmp_path / "m")
    (d / "manifest.json").unlink()
    (d / "fiffdepth_pipeline.py").unlink()
    save_file({"empty_text_embedding": tiny_model.empty_text_embedding.contiguous()}, str(d / "empty_text_embedding.safetensors"))
    (d / "model_index.json").write_text(json.dumps({
        "_class_name": "FiffDepthPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"],
        "fiffdepth": {"processing_resolution": 96, "feed_forward_timestep": 0, "extend_timestep": -1}}))
    m = FiffDepthModel.from_pretrained(d)
    assert m.processing_resolution == 96 and torch.equal(m.empty_text_embedding, tiny_model.empty_text_embedding)
    m.save_pretrained(d)  # re-saved in the new layout: the embedding file goes, the index holds it
    assert not (d / "empty_text_embedding.safetensors").exists()
    assert torch.equal(FiffDepthModel.from_pretrained(d).empty_text_embedding, tiny_model.empty_text_embedding)


def test_unreachable_hub_fails_fast_in_one_line(tmp_path):
    """No network (a closed local port as the endpoint): one probe, one line, well under 5 s."""
    code = ("import time\nfrom fiffdepth.model import FiffDepthModel\nt = time.time()\n"
            "try:\n    FiffDepthModel.from_pretrained('fiffdepth-test/some-model')\n"
            "except Exception as err:\n    print(type(err).__name__, time.time() - t)\n    print(err)\n")
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    kind, seconds = r.stdout.splitlines()[0].split()
    assert kind == "HubUnreachableError" and float(seconds) < 5.0, r.stdout + r.stderr
    msg = r.stdout.splitlines()[1:]
    assert len(msg) == 1 and "cannot reach the hub" in msg[0] and "local directory" in msg[0]
