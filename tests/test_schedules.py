"""fiffdepth.schedules: the pretraining LR schedule runs for any step count and is OneCycleLR from 40 steps on."""

import torch

from fiffdepth.schedules import one_cycle


def _lrs(sched, opt, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_every_step_count_runs_within_max_lr():
    for steps in range(1, 120):   # torch's own OneCycleLR(pct_start=0.05) divides by zero at 20
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        lrs = _lrs(one_cycle(opt, 0.1, steps), opt, steps)
        assert len(lrs) == steps and all(0 < lr <= 0.1 + 1e-12 for lr in lrs)


def test_long_runs_equal_torch_one_cycle():
    a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(b, max_lr=0.1, total_steps=500, pct_start=0.05)
    assert _lrs(one_cycle(a, 0.1, 500), a, 500) == _lrs(ref, b, 500)
