"""fiffdepth.numerics: importing fiffdepth makes CPU GEMM/convolution sums independent of the thread count."""

import os
import subprocess
import sys

import pytest
import torch

DEEP_CONV = r"""
import fiffdepth, torch
from fiffdepth.numerics import strict_mkl
torch.manual_seed(0)
conv, x = torch.nn.Conv2d(128, 128, 3, padding=1), torch.randn(1, 128, 4, 4)  # K = 1152: MKL may split it
outs = []
with torch.no_grad():
    for t in (1, 2, 1, 2):
        torch.set_num_threads(t)
        outs.append(conv(x).numpy().tobytes())
print(strict_mkl(), outs[0] == outs[1] == outs[2] == outs[3])
"""


def _run(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "FIFFDEPTH_MKL_STRICT")}
    res = subprocess.run([sys.executable, "-c", DEEP_CONV], env={**full, **env}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split()


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch built without MKL")
def test_import_sets_strict_mode_and_a_deep_conv_is_the_same_at_one_and_two_threads():
    assert _run() == ["on", "True"]


def test_a_users_choice_is_left_alone():
    assert _run(FIFFDEPTH_MKL_STRICT="0")[0] == "opted"
    assert _run(MKL_CBWR="COMPATIBLE")[:2] == ["user", "MKL_CBWR=COMPATIBLE"]
