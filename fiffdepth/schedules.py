"""The learning-rate schedule of the pretraining stages (VAE, latent diffusion, teacher, decoder)."""

from __future__ import annotations

import torch


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, steps: int,
              warmup: float = 0.05) -> torch.optim.lr_scheduler.OneCycleLR:
    """``OneCycleLR`` over ``steps`` optimiser steps with ``warmup`` of them warming up.

    The warm-up is at least two steps and at most half the run: torch's ``OneCycleLR`` divides by
    zero when its warm-up ends exactly one step in (e.g. 20 steps at 5 %). For runs of 40 steps or
    more the schedule is exactly ``OneCycleLR(total_steps=steps, pct_start=warmup)``.
    """
    steps = max(int(steps), 1)
    pct = min(0.5, max(warmup, 2 / steps))
    if abs(pct * steps - 1.0) < 1e-9:  # 2 steps: the warm-up would again end one step in
        pct = 0.75
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=pct)
