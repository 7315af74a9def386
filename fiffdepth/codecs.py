"""Image <-> latent and depth <-> latent through the frozen VAE (Marigold's encoding).

Images: [0, 1] RGB -> [-1, 1] -> VAE posterior mean × scaling factor.
Depth:  valid depth affine-normalised with its 2nd/98th percentiles to [-1, 1], clipped,
        replicated to 3 channels, encoded like an image; decoded by averaging the 3 decoded
        channels and clipping to [-1, 1]. The result is affine-invariant depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a module's first parameter. diffusers' ``ModelMixin.device``/``.dtype``
    walk every submodule looking for offloading hooks, which cost a few ms per call: a seventh of
    a 128-px image's inference time on a CPU when asked for on every call."""
    p = next(module.parameters())
    return p.device, p.dtype


class ImageCodec:
    """RGB images <-> SD latents.  images: (B, 3, H, W) in [0, 1];  latents: (B, C, H/f, W/f)."""

    def __init__(self, vae: AutoencoderKL):
        self.vae = vae

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        device, dtype = placement(self.vae)
        x = images.to(device=device, dtype=dtype) * 2.0 - 1.0
        return self.encode_signed(x)

    def encode_signed(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1] -> posterior mean × scaling factor (never a sample: encoding is deterministic)."""
        device, dtype = placement(self.vae)
        posterior = self.vae.encode(x.to(device=device, dtype=dtype)).latent_dist
        return posterior.mean * self.scaling_factor

    def decode_signed(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(placement(self.vae)[1]) / self.scaling_factor, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((self.decode_signed(latents) + 1.0) / 2.0).clamp(0.0, 1.0)


def normalize_depth(depth: torch.Tensor, valid_mask: torch.Tensor | None = None,
                    low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """Affine-normalise each depth map to [-1, 1] with its valid 2nd/98th percentiles, then clip.

    depth: (B, 1, H, W); valid_mask: (B, 1, H, W) bool or None (then depth > 0 and finite).
    Invalid pixels are set to +1 (far); losses exclude them with ``latent_valid_mask``.
    """
    if depth.ndim == 3:
        depth = depth[:, None]
    if valid_mask is None:
        valid_mask = torch.isfinite(depth) & (depth > 0)
    valid_mask = valid_mask.bool() & torch.isfinite(depth)
    out = torch.ones_like(depth, dtype=torch.float32)
    for i in range(depth.shape[0]):
        v = depth[i][valid_mask[i]].float()
        if v.numel() == 0:
            continue  # all invalid: stays +1; masked out of every loss
        lo, hi = _quantiles(v, low, high)
        scale = (hi - lo).clamp_min(1e-6)
        norm = ((depth[i].float() - lo) / scale) * 2.0 - 1.0
        out[i] = torch.where(valid_mask[i], norm.clamp(-1.0, 1.0), out[i])
    return out


def _quantiles(v: torch.Tensor, low: float, high: float):
    # torch.quantile refuses inputs above 2**24 elements; sort-based kthvalue has no such limit
    n = v.numel()
    lo_k = min(n, max(1, int(round(low * (n - 1))) + 1))
    hi_k = min(n, max(1, int(round(high * (n - 1))) + 1))
    if n <= 2**24:
        q = torch.quantile(v, torch.tensor([low, high], dtype=v.dtype, device=v.device))
        return q[0], q[1]
    return torch.kthvalue(v, lo_k).values, torch.kthvalue(v, hi_k).values


class DepthCodec:
    """Normalised depth (B, 1, H, W) in [-1, 1]  <->  depth latents (B, C, H/f, W/f).

    decoder: optional distilled ``AutoencoderTiny`` (``fiffdepth.distill``) used by ``decode`` in
    place of the VAE's decoder; encoding always uses the VAE.
    """

    def __init__(self, vae: AutoencoderKL, decoder=None):
        self.images = ImageCodec(vae)
        self.decoder = decoder

    @property
    def scale_factor(self) -> int:
        return self.images.scale_factor

    def encode(self, depth_norm: torch.Tensor) -> torch.Tensor:
        """depth_norm: (B, 1, H, W) in [-1, 1] -> latent (replicated to 3 channels, posterior mean)."""
        x = depth_norm.clamp(-1.0, 1.0).repeat(1, 3, 1, 1)
        return self.images.encode_signed(x)

    def encode_depth(self, depth: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Metric or relative depth -> normalised (2/98 percentiles) -> latent."""
        return self.encode(normalize_depth(depth, valid_mask))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latent -> (B, 1, H, W) normalised depth in [-1, 1] (mean of the 3 decoded channels)."""
        if self.decoder is None:
            decoded = self.images.decode_signed(latents)
        else:  # same call as for the VAE: the student's scaling_factor is 1.0 (it reads scaled latents)
            decoded = self.decoder.decode(latents.to(placement(self.decoder)[1]) / self.decoder.config.scaling_factor,
                                          return_dict=False)[0]
        return decoded.float().mean(dim=1, keepdim=True).clamp(-1.0, 1.0)


def latent_valid_mask(valid_mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Marigold's latent mask: a latent pixel counts only if its whole f×f pixel patch is valid.

    valid_mask: (B, 1, H, W) bool -> (B, 1, H/f, W/f) bool.
    """
    invalid = (~valid_mask.bool()).float()
    return F.max_pool2d(invalid, kernel_size=scale_factor, stride=scale_factor) < 0.5
