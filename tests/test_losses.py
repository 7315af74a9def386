"""Eq. 2–7 against hand-computed values and diffusers' own schedule."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from fiffdepth.config import LossConfig
from fiffdepth.losses import (LOSS_TERMS, ObjectiveBatch, blended_latent, fiffdepth_objective, latent_gradient_matching,
                              latent_mae, noised_latent, sample_trajectory_timesteps, trajectory_loss, v_target)


def test_latent_mae_hand_computed():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[0.0, 2.5], [3.0, 1.0]]]])
    # |1| + |-0.5| + 0 + |3| = 4.5 over M = 4
    assert latent_mae(pred, target).item() == pytest.approx(4.5 / 4)
    mask = torch.tensor([[[[True, True], [False, False]]]])
    assert latent_mae(pred, target, mask).item() == pytest.approx(1.5 / 2)
    assert latent_mae(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_latent_gradient_matching_hand_computed():
    pred = torch.tensor([[[[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]]]])  # (1,1,2,3)
    target = torch.zeros_like(pred)
    # R = pred. x-diffs: |2-1|+|4-2| + 0 + 0 = 3; y-diffs: |0-1|+|0-2|+|0-4| = 7; M = 6
    assert latent_gradient_matching(pred, target).item() == pytest.approx(10 / 6)
    # a constant offset has no gradient: GM is shift-invariant, MAE is not
    assert latent_gradient_matching(target + 3.0, target).item() == 0.0
    assert latent_mae(target + 3.0, target).item() == 3.0


def test_blended_latent_eq2():
    x0, d0 = torch.full((1, 4, 2, 2), 2.0), torch.full((1, 4, 2, 2), -4.0)
    assert torch.allclose(blended_latent(x0, d0, 0.5), torch.full_like(x0, -1.0))
    assert torch.equal(blended_latent(x0, d0, 1.0), x0)
    assert torch.allclose(blended_latent(x0, d0, 0.25), 0.25 * x0 + 0.75 * d0)


def test_v_target_equals_diffusers_get_velocity():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    b0, noise = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    t = torch.tensor([1, 10, 500, 998, 999])
    assert torch.allclose(v_target(b0, noise, sched.alphas_cumprod, t), sched.get_velocity(b0, noise, t), atol=1e-6)
    assert torch.allclose(noised_latent(b0, noise, sched.alphas_cumprod, t), sched.add_noise(b0, noise, t), atol=1e-6)
    # hand value at one step: v = sqrt(abar) eps - sqrt(1 - abar) b0
    abar = sched.alphas_cumprod[500]
    assert torch.allclose(v_target(b0, noise, sched.alphas_cumprod, t)[2],
                          abar.sqrt() * noise[2] - (1 - abar).sqrt() * b0[2], atol=1e-6)


def test_trajectory_timesteps_never_feed_forward():
    t = sample_trajectory_timesteps(20000, 1000, generator=torch.Generator().manual_seed(0))
    assert int(t.min()) == 1 and int(t.max()) == 999


def test_trajectory_loss_is_mse_against_v(tiny_model):
    g = torch.Generator().manual_seed(1)
    x0, d0 = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    noise = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([3, 700])
    b0 = 0.5 * x0 + 0.5 * d0
    acp = tiny_model.scheduler.alphas_cumprod
    with torch.no_grad():
        expected = ((tiny_model.denoise(noised_latent(b0, noise, acp, t), t)
                     - tiny_model.scheduler.get_velocity(b0, noise, t)) ** 2).mean()
        got = trajectory_loss(tiny_model, x0, d0, 0.5, timesteps=t, noise=noise)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError):
        trajectory_loss(tiny_model, x0, d0, 0.5, timesteps=torch.tensor([0, 5]), noise=noise)


def _batch(seed=0, n=2, h=16):
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(n, 4, h, h, generator=g)  # noqa: E731
    return ObjectiveBatch(x0_syn=r(), d_syn=r(), x0_real=r(), d_teacher=r())


def test_objective_matches_eq7_sum(tiny_model):
    cfg = LossConfig()
    total, terms = fiffdepth_objective(tiny_model, _batch(), cfg, generator=torch.Generator().manual_seed(0))
    expected = (cfg.lambda_mae * (terms["d0_mae"] + terms["dm1_mae"]) + cfg.lambda_gm * (terms["d0_gm"] + terms["dm1_gm"])
                + cfg.lambda_k * terms["traj"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == set(LOSS_TERMS)


@pytest.mark.parametrize("switch,nonzero", [
    ({}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm", "traj"}),
    ({"trajectory": False}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm"}),
    ({"trajectory_target": "image"}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm", "traj"}),
    ({"teacher_supervision": "none"}, {"d0_mae", "d0_gm", "traj"}),
    ({"teacher_supervision": "d0"}, {"d0_mae", "d0_gm", "real_d0_mae", "real_d0_gm", "traj"}),
])
def test_ablation_switches_select_terms(tiny_model, switch, nonzero):
    cfg = LossConfig(**switch)
    _, terms = fiffdepth_objective(tiny_model, _batch(), cfg, generator=torch.Generator().manual_seed(0))
    assert {k for k, v in terms.items() if v.item() != 0.0} == nonzero


def test_image_target_ablation_changes_trajectory_term(tiny_model):
    b = _batch()
    t, noise = torch.tensor([100, 600]), torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    _, blend = fiffdepth_objective(tiny_model, b, LossConfig(), timesteps=t, noise=noise)
    _, image = fiffdepth_objective(tiny_model, b, LossConfig(trajectory_target="image"), timesteps=t, noise=noise)
    with torch.no_grad():
        direct = trajectory_loss(tiny_model, b.x0_syn, b.d_syn, 1.0, timesteps=t, noise=noise)
    assert image["traj"].item() == pytest.approx(direct.item(), rel=1e-5)
    assert not math.isclose(blend["traj"].item(), image["traj"].item(), rel_tol=1e-4)


def test_gradients_reach_unet_through_d0_and_d_minus1(tiny_model):
    """d₋₁ loss alone must move the UNet both via the t=-1 pass and via d0 (not detached)."""
    b = _batch()
    d0 = tiny_model.predict_latent(b.x0_real)
    d0.retain_grad()
    loss = latent_mae(tiny_model.extend(d0), b.d_teacher)
    loss.backward()
    assert d0.grad is not None and d0.grad.abs().sum() > 0  # gradient flows back through d0 ...
    grads = [p.grad for p in tiny_model.unet.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0  # ... and into the UNet weights
    tiny_model.unet.zero_grad()
    # the full objective with only the real half active reaches the weights as well
    total, _ = fiffdepth_objective(tiny_model, b, LossConfig(lambda_k=0.0))
    total.backward()
    assert all(p.grad is not None for p in tiny_model.unet.conv_in.parameters())


@pytest.mark.slow
def test_objective_overfits_8_samples(tiny_cfg):
    """Tiny preset: Eq. 7 falls at least 5x within 250 steps when overfitting 8 fixed samples
    (4 synthetic + 4 real); the loop stops once it has."""
    from fiffdepth.model import FiffDepthModel

    torch.manual_seed(0)
    model = FiffDepthModel.from_config(tiny_cfg.model, seed=0)
    g = torch.Generator().manual_seed(0)
    h = 16
    batch = ObjectiveBatch(*(torch.randn(4, 4, h, h, generator=g) for _ in range(4)))
    t, noise = torch.tensor([50, 300, 600, 900]), torch.randn(4, 4, h, h, generator=g)
    opt = torch.optim.AdamW(model.unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(250):
        total, _ = fiffdepth_objective(model, batch, tiny_cfg.loss, timesteps=t, noise=noise)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
        if losses[-1] < losses[0] / 5:
            break
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1], len(losses))
