"""FiffDepth's training objective, Eq. 2–7, in the SD latent space.

Names are public API (notebooks and external checks call them):
``latent_mae`` (Eq. 5), ``latent_gradient_matching`` (Eq. 6), ``blended_latent`` (Eq. 2),
``trajectory_loss`` (Eq. 2–3), ``fiffdepth_objective`` (Eq. 7).

Timestep mapping. The paper's trajectory steps are t ∈ {1, …, T} with ᾱ_t = Π_{s≤t}(1 − β_s).
diffusers stores ᾱ 0-based: ``alphas_cumprod[i]`` = ᾱ_{i+1}, and Stable Diffusion was trained with
the UNet seeing the index i as its timestep. We keep that pairing (noise level ᾱ_{i+1} <-> embedding
input i), so the pretrained trajectory is the one we preserve, and we draw i from {1, …, T−1}
(paper's t ∈ {2, …, T}): index 0 is left out because embedding input 0 is the feed-forward step of
Eq. 1 and must mean one thing only. The feed-forward inputs 0 and −1 never index ``alphas_cumprod``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LossConfig

TEACHER_MODES = ("d_minus1", "d0", "none")
TRAJECTORY_TARGETS = ("blend", "image")


# -- Eq. 5 and 6 --------------------------------------------------------------------------

def latent_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: L_MAE = (1/M) Σ_i |d_i − d*_i|, the mean over all M latent elements.

    pred, target: (B, C, h, w); mask: optional (B, 1, h, w) bool of latent pixels to count
    (then M = number of counted elements). An all-False mask gives 0 (not NaN).
    """
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype).expand_as(diff)
    return (diff * m).sum() / m.sum().clamp_min(1.0)


def latent_gradient_matching(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                             scales: int = 1) -> torch.Tensor:
    """Eq. 6: L_GM = (1/M) Σ_i (|∇x R_i| + |∇y R_i|), R = pred − target, forward differences.

    M is the number of latent elements (B·C·h·w). With ``scales`` > 1, MiDaS's multi-scale
    variant: the same term on R sub-sampled by 2^k, averaged over scales. With a mask, a
    difference counts only where both pixels are valid and M is the number of valid elements.
    """
    total = pred.new_zeros(())
    R = pred - target
    m = None if mask is None else mask.to(R.dtype).expand_as(R)
    for k in range(scales):
        step = 2 ** k
        Rk = R[..., ::step, ::step]
        mk = None if m is None else m[..., ::step, ::step]
        gx = (Rk[..., :, 1:] - Rk[..., :, :-1]).abs()
        gy = (Rk[..., 1:, :] - Rk[..., :-1, :]).abs()
        if mk is None:
            total = total + (gx.sum() + gy.sum()) / Rk.numel()
        else:
            mx = mk[..., :, 1:] * mk[..., :, :-1]
            my = mk[..., 1:, :] * mk[..., :-1, :]
            total = total + ((gx * mx).sum() + (gy * my).sum()) / mk.sum().clamp_min(1.0)
    return total / scales


def depth_loss(pred, target, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The (L_MAE, L_GM) pair of Eq. 7 for one prediction."""
    return latent_mae(pred, target, mask), latent_gradient_matching(pred, target, mask)


# -- Eq. 2 and 3 --------------------------------------------------------------------------

def blended_latent(x0: torch.Tensor, d0: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 2: b0 = γ·x0 + (1 − γ)·d0 (image latent x0, depth latent d0)."""
    return gamma * x0 + (1.0 - gamma) * d0


def sample_trajectory_timesteps(batch: int, num_train_timesteps: int, device=None,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """diffusers indices uniform in {1, …, T−1} (paper's t ∈ {2, …, T}; 0 is the feed-forward step)."""
    return torch.randint(1, num_train_timesteps, (batch,), generator=generator, device="cpu").to(device)


def v_target(b0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor):
    """Eq. 3: v_t = √ᾱ_t·ε − √(1 − ᾱ_t)·b0 (equals ``DDPMScheduler.get_velocity``)."""
    abar = alphas_cumprod.to(device=b0.device, dtype=b0.dtype)[timesteps].view(-1, 1, 1, 1)
    return abar.sqrt() * noise - (1.0 - abar).sqrt() * b0


def noised_latent(b0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor):
    """Eq. 2: b_t = √ᾱ_t·b0 + √(1 − ᾱ_t)·ε."""
    abar = alphas_cumprod.to(device=b0.device, dtype=b0.dtype)[timesteps].view(-1, 1, 1, 1)
    return abar.sqrt() * b0 + (1.0 - abar).sqrt() * noise


def trajectory_loss(model, x0: torch.Tensor, d0_target: torch.Tensor, gamma: float,
                    timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 2–3: L_k = ‖v_t − ε̂θ(b_t, t)‖², mean over elements.

    x0: image latents, d0_target: GT depth latents (B, 4, h, w); γ = 1 gives the pure-image
    target of the Fig. 7 ablation. ``timesteps`` are diffusers indices in {1, …, T−1}.
    """
    b0 = blended_latent(x0, d0_target, gamma)
    alphas_cumprod = model.scheduler.alphas_cumprod
    if timesteps is None:
        timesteps = sample_trajectory_timesteps(b0.shape[0], len(alphas_cumprod), b0.device, generator)
    if noise is None:
        noise = torch.randn(b0.shape, generator=generator, dtype=b0.dtype, device="cpu").to(b0.device)
    if bool((timesteps < 1).any()):
        raise ValueError("trajectory timesteps must be diffusers indices >= 1 (0 is the feed-forward step)")
    b_t = noised_latent(b0, noise, alphas_cumprod, timesteps)
    v = v_target(b0, noise, alphas_cumprod, timesteps)
    return F.mse_loss(model.denoise(b_t, timesteps).float(), v.float())


# -- Eq. 7 --------------------------------------------------------------------------------

@dataclass
class ObjectiveBatch:
    """Latents for one optimisation step (all (B, 4, h, w); masks (B, 1, h, w) bool or None).

    Synthetic half: image latents ``x0_syn`` and GT depth latents ``d_syn``.
    Real half: image latents ``x0_real`` and teacher pseudo-label latents ``d_teacher``.
    """

    x0_syn: torch.Tensor
    d_syn: torch.Tensor
    x0_real: torch.Tensor | None = None
    d_teacher: torch.Tensor | None = None
    mask_syn: torch.Tensor | None = None
    mask_real: torch.Tensor | None = None


LOSS_TERMS = ("d0_mae", "d0_gm", "dm1_mae", "dm1_gm", "real_d0_mae", "real_d0_gm", "traj")


def fiffdepth_objective(model, batch: ObjectiveBatch, cfg: LossConfig,
                        generator: torch.Generator | None = None,
                        timesteps: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7: Σ_{t∈{−1,0}} (λ_MAE·L_MAE + λ_GM·L_GM)(d_t, d_t*) + λ_k·L_k.

    - d0 terms: synthetic images against GT depth latents (Eq. 1).
    - d₋₁ terms: real images, d₋₁ = ε̂θ(d0, −1) against teacher latents (Eq. 4); gradients
      flow through d0 (nothing is detached).
    - L_k on synthetic images with target b0 = γ·x0 + (1 − γ)·d0* (Eq. 2–3).
    Ablations (Fig. 7): ``cfg.trajectory=False`` drops L_k; ``trajectory_target="image"`` uses
    γ = 1; ``teacher_supervision="none"`` drops the real half; ``"d0"`` supervises d0 of real
    images with the teacher instead of d₋₁.

    Returns (total loss, per-term dict of detached scalars; unused terms are exactly 0).
    """
    if cfg.teacher_supervision not in TEACHER_MODES:
        raise ValueError(f"teacher_supervision must be one of {TEACHER_MODES}, got {cfg.teacher_supervision!r}")
    if cfg.trajectory_target not in TRAJECTORY_TARGETS:
        raise ValueError(f"trajectory_target must be one of {TRAJECTORY_TARGETS}, got {cfg.trajectory_target!r}")
    use_real = cfg.teacher_supervision != "none" and batch.x0_real is not None and batch.x0_real.shape[0] > 0
    if use_real and batch.d_teacher is None:
        raise ValueError("teacher supervision needs d_teacher latents for the real half-batch")
    mask_syn = batch.mask_syn if cfg.use_valid_mask else None
    mask_real = batch.mask_real if cfg.use_valid_mask else None
    n_syn = batch.x0_syn.shape[0]

    # One UNet pass at t = 0 for the synthetic and real halves together (GroupNorm is per sample);
    # two when their frames differ in shape (a Virtual KITTI step beside square real images).
    if use_real and batch.x0_real.shape[1:] != batch.x0_syn.shape[1:]:
        d0_syn, d0_real = model.predict_latent(batch.x0_syn), model.predict_latent(batch.x0_real)
    else:
        x0_all = torch.cat([batch.x0_syn, batch.x0_real]) if use_real else batch.x0_syn
        d0_all = model.predict_latent(x0_all)
        d0_syn, d0_real = d0_all[:n_syn], d0_all[n_syn:]

    zero = d0_syn.new_zeros(()).float()
    terms = {k: zero for k in LOSS_TERMS}
    terms["d0_mae"], terms["d0_gm"] = depth_loss(d0_syn.float(), batch.d_syn.float(), mask_syn)

    if use_real and cfg.teacher_supervision == "d_minus1":
        d_m1 = model.extend(d0_real)
        terms["dm1_mae"], terms["dm1_gm"] = depth_loss(d_m1.float(), batch.d_teacher.float(), mask_real)
    elif use_real and cfg.teacher_supervision == "d0":
        terms["real_d0_mae"], terms["real_d0_gm"] = depth_loss(d0_real.float(), batch.d_teacher.float(), mask_real)

    if cfg.trajectory and cfg.lambda_k > 0:
        gamma = 1.0 if cfg.trajectory_target == "image" else cfg.gamma
        terms["traj"] = trajectory_loss(model, batch.x0_syn, batch.d_syn, gamma, timesteps, noise, generator)

    total = (cfg.lambda_mae * (terms["d0_mae"] + terms["dm1_mae"] + terms["real_d0_mae"])
             + cfg.lambda_gm * (terms["d0_gm"] + terms["dm1_gm"] + terms["real_d0_gm"])
             + cfg.lambda_k * terms["traj"])
    return total, {k: v.detach() for k, v in terms.items()}
