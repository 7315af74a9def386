"""``fiffdepth pretrain`` (fiffdepth/generator.py): the embedded priors are re-creatable bit for bit."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from fiffdepth.data.synthetic import write_synthetic_dataset


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.safetensors"))}


@pytest.mark.slow
def test_short_pretrain_is_bitwise_reproducible_across_fresh_processes(tmp_path):
    synth, styled = tmp_path / "synth", tmp_path / "styled"
    write_synthetic_dataset(synth, 12, size=32, seed=0, progress=False)
    write_synthetic_dataset(styled, 12, size=32, seed=1, progress=False, style="real")
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        cmd = [sys.executable, "-m", "fiffdepth", "pretrain", "--synthetic", str(synth), "--styled", str(styled),
               "--out", str(out), "--vae-steps", "3", "--unet-steps", "3", "--teacher-steps", "2",
               "--resolution", "32", "--no-progress"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        outs.append(_digests(out))
    assert len(outs[0]) >= 4  # unet, vae, text encoder, teacher
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_continued_prior_keeps_the_vae_and_is_bitwise_reproducible(tmp_path):
    """``fiffdepth pretrain --continue-from DIR`` (how the shipped prior got its longer training):
    the UNet moves, the VAE, text encoder and scheduler are DIR's own bytes, the report records
    the continuation, and two fresh processes give the same weights."""
    import json

    synth, styled = tmp_path / "synth", tmp_path / "styled"
    write_synthetic_dataset(synth, 12, size=32, seed=0, progress=False)
    write_synthetic_dataset(styled, 12, size=32, seed=1, progress=False, style="real")
    base = [sys.executable, "-m", "fiffdepth", "pretrain", "--synthetic", str(synth), "--styled", str(styled),
            "--stage", "generator", "--no-progress"]
    subprocess.run(base + ["--out", str(tmp_path / "src"), "--vae-steps", "2", "--unet-steps", "2",
                           "--resolution", "32"], check=True, capture_output=True, timeout=600)
    src = tmp_path / "src" / "generator"
    outs = []
    for k in range(2):
        out = tmp_path / f"cont{k}"
        subprocess.run(base + ["--out", str(out), "--continue-from", str(src), "--unet-steps", "3"],
                       check=True, capture_output=True, timeout=600)
        outs.append(_digests(out / "generator"))
    assert outs[0] == outs[1]
    before = _digests(src)
    assert outs[0]["unet/diffusion_pytorch_model.safetensors"] != before["unet/diffusion_pytorch_model.safetensors"]
    kept = {k: v for k, v in before.items() if not k.startswith("unet/")}
    assert kept and {k: outs[0][k] for k in kept} == kept
    report = json.loads((tmp_path / "cont0" / "generator" / "pretrain_report.json").read_text())
    assert report["steps"] == [2, 2]  # the source's own report is kept
    step = report["continued"][-1]
    assert step["unet_steps"] == 3 and step["continued_from"] == str(src)
    assert step["heldout_v_loss_before"] > 0 and step["heldout_v_loss_after"] > 0
    bad = subprocess.run(base[:-3] + ["--out", str(tmp_path / "x"), "--continue-from", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--continue-from needs --stage generator" in bad.stderr


def test_depth_roundtrip_scores_exact_codec(monkeypatch):
    """A depth map that survives the codec exactly scores AbsRel 0 and boundary F1 1; a blurred
    one loses its thin pole's edges."""
    import torch
    import torch.nn.functional as F

    from fiffdepth import generator

    class ExactCodec:  # stands in for a perfect VAE behind the depth codec
        def __init__(self, vae):
            self.blur = vae

        def encode(self, x):
            return x

        def decode(self, z):
            return F.avg_pool2d(z, 5, 1, 2, count_include_pad=False) if self.blur else z

    monkeypatch.setattr(generator, "DepthCodec", ExactCodec)
    d = torch.ones(1, 1, 32, 32) * 4.0
    d[..., 8:24, 14:16] = 1.0  # a thin near pole
    m = torch.ones_like(d, dtype=torch.bool)
    exact = generator.depth_roundtrip_scores(False, d, m)
    blurred = generator.depth_roundtrip_scores(True, d, m)
    assert exact["abs_rel"] < 1e-6 and exact["boundary_f1"] > 0.99
    assert blurred["abs_rel"] > 0.01 and blurred["boundary_f1"] < exact["boundary_f1"]


def test_prior_loops_train_through_accelerate(monkeypatch, tiny_cfg):
    """Issue 16: the VAE and UNet pretraining loops step through an ``Accelerator`` (its device,
    its backward, the launcher's precision) and leave the model on the device it came on."""
    import torch
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from fiffdepth.generator import train_latent_diffusion, train_vae
    from fiffdepth.model import make_scheduler
    from fiffdepth.train import make_accelerator

    seen = []
    backward = Accelerator.backward

    def spy(self, loss, **kw):
        seen.append((self.device.type, self.mixed_precision))
        return backward(self, loss, **kw)

    monkeypatch.setattr(Accelerator, "backward", spy)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_cfg.model.vae)
    train_vae(vae, torch.rand(4, 3, 32, 32), steps=2, batch_size=2, crop=16, progress=False)
    assert seen == [(make_accelerator().device.type, "no")] * 2
    assert vae.device.type == "cpu"

    seen.clear()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # as `accelerate launch --mixed_precision bf16` sets it
    unet = UNet2DConditionModel(**tiny_cfg.model.unet)
    empty = torch.zeros(1, 1, unet.config.cross_attention_dim)
    log = train_latent_diffusion(unet, torch.randn(4, 4, 8, 8), empty, make_scheduler(tiny_cfg.model), steps=2,
                                 batch_size=2, crop=None, progress=False)
    assert [p for _, p in seen] == ["bf16"] * 2 and torch.isfinite(torch.tensor(log["loss"]))
    assert unet.device.type == "cpu" and unet.dtype == torch.float32
