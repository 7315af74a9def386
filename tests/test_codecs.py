"""Codecs: Marigold's depth normalisation, the latent valid mask, and VAE round trips."""

import pytest
import torch
from diffusers import AutoencoderKL

from fiffdepth.codecs import DepthCodec, ImageCodec, latent_valid_mask, normalize_depth
from fiffdepth.generator import depth_roundtrip_abs_rel, train_vae


def test_normalize_depth_percentiles_and_invalid():
    d = torch.arange(1, 101, dtype=torch.float32).view(1, 1, 10, 10)
    n = normalize_depth(d)
    lo, hi = torch.quantile(d.flatten(), torch.tensor([0.02, 0.98]))
    assert n[0, 0, 5, 5].item() == pytest.approx(((d[0, 0, 5, 5] - lo) / (hi - lo) * 2 - 1).item())
    assert n.min().item() == -1.0 and n.max().item() == 1.0  # clipped
    d2 = d.clone()
    d2[0, 0, 0, :3] = torch.tensor([0.0, float("nan"), float("inf")])
    n2 = normalize_depth(d2)
    assert torch.isfinite(n2).all()
    assert (n2[0, 0, 0, :3] == 1.0).all()  # invalid -> far, excluded from losses by the mask
    assert (normalize_depth(torch.zeros(1, 1, 4, 4)) == 1.0).all()  # all invalid: no NaN


def test_latent_valid_mask_whole_patch():
    m = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    m[0, 0, 0, 0] = False
    lm = latent_valid_mask(m, 4)
    assert lm.shape == (1, 1, 2, 2)
    assert lm.tolist() == [[[[False, True], [True, True]]]]


@pytest.fixture(scope="module")
def vae(tiny_cfg):
    torch.manual_seed(0)
    return AutoencoderKL(**tiny_cfg.model.vae).eval()


def test_encode_is_deterministic_posterior_mean(vae):
    codec = ImageCodec(vae)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = codec.encode(x), codec.encode(x)
        mean = vae.encode(x * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    assert torch.equal(a, b) and torch.allclose(a, mean)
    assert a.shape == (2, 4, 32 // codec.scale_factor, 32 // codec.scale_factor)


def test_depth_decode_averages_three_channels(vae):
    codec = DepthCodec(vae)
    lat = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        rgb = vae.decode(lat / vae.config.scaling_factor).sample
        out = codec.decode(lat)
    assert out.shape == (1, 1, 32, 32)
    assert torch.allclose(out, rgb.mean(1, keepdim=True).clamp(-1, 1), atol=1e-6)


def _planar_scenes(n, h, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, h), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = torch.rand(3, generator=g)
        d = 1 + 3 * a + 2 * b * yy + c * xx
        x0, y0 = (torch.rand(2, generator=g) * 0.6).tolist()
        box = (xx > x0) & (xx < x0 + 0.3) & (yy > y0) & (yy < y0 + 0.3)
        out.append(torch.where(box, 0.5 * d, d)[None])
    return torch.stack(out)


@pytest.mark.slow
def test_depth_roundtrip_bounded_on_trained_tiny_vae(tiny_cfg):
    """depth -> latent -> depth on held-out maps: AbsRel after affine alignment < 0.08 once the
    tiny VAE has seen depth maps (random init is ~0.17, so the bound says something)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_cfg.model.vae)
    train = _planar_scenes(64, 32, 0)
    held = _planar_scenes(8, 32, 1)
    ones = torch.ones_like(held, dtype=torch.bool)
    before = depth_roundtrip_abs_rel(vae, held, ones)
    train_vae(vae, None, train, torch.ones_like(train, dtype=torch.bool), steps=100, batch_size=8, lr=2e-3,
              progress=False)
    after = depth_roundtrip_abs_rel(vae, held, ones)
    assert after < 0.08, (before, after)
    assert after < before / 2, (before, after)
