"""A FiffDepth training step at the embedded default: samples/s and the FLOP rate as a share of
this CPU's measured fp32 matmul peak, for the step as shipped and its variants.

    .venv/bin/python benchmarks/bench_train_step.py --out benchmarks/train_step_tiny.json

Each variant runs the full Eq. 7 objective (d0 on both halves, d₋₁ on the real half, L_k on
the synthetic half) forward + backward + AdamW on random latents of the tiny preset's shape
(batch 8 = 4 + 4, 32×32 latents at 128 px). FLOPs come from ``torch.utils.flop_counter``
(forward + backward, ``fiffdepth.bench.flop_counter``); the peak from a large sgemm (``fiffdepth.bench.matmul_tflops``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fiffdepth.bench import flop_counter, matmul_tflops, versions
from fiffdepth.config import get_config
from fiffdepth.losses import ObjectiveBatch, fiffdepth_objective, sample_trajectory_timesteps
from fiffdepth.model import FiffDepthModel


def make_step(cfg, channels_last: bool = False, compile: bool = False, bf16: bool = False):
    torch.manual_seed(0)
    model = FiffDepthModel.from_config(cfg.model, seed=0)
    unet = model.unet.train()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        model.unet = torch.compile(unet)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    half = cfg.train.batch_size // 2
    h = cfg.data.resolution // model.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def lat():
        return torch.randn(half, 4, h, h, generator=g).contiguous(memory_format=fmt)

    data = [lat(), lat(), torch.ones(half, 1, h, h), lat(), lat(), torch.ones(half, 1, h, h)]
    acp = len(model.scheduler.alphas_cumprod)

    def step():
        batch = ObjectiveBatch(data[0], data[1], data[3], data[4], data[2], data[5])
        t = sample_trajectory_timesteps(half, acp, generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # what train.mixed_precision=bf16 runs
            total, _ = fiffdepth_objective(model, batch, cfg.loss, timesteps=t,
                                           noise=torch.randn(data[0].shape, generator=g))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step


def measure(step, warmup: int = 3, repeats: int = 10) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    p.add_argument("--bf16", action="store_true",
                   help="also time bf16 autocast (fast only on CPUs with bf16 units, e.g. AMX on Xeon)")
    args = p.parse_args(argv)
    cfg = get_config("tiny", {"model.pretrained": ""})
    peak = matmul_tflops(torch.device("cpu"), torch.float32) * 1e12
    peak_bf16 = matmul_tflops(torch.device("cpu"), torch.bfloat16, n=1024) * 1e12 if args.bf16 else None
    counted = make_step(cfg)
    with flop_counter() as counter:
        counted()
    flops = int(counter.get_total_flops())
    rows = {}
    variants = [("as shipped (contiguous NCHW)", {}), ("channels_last", {"channels_last": True})]
    if args.compile:
        variants.append(("torch.compile", {"compile": True}))
    if args.bf16:
        variants.append(("bf16 autocast", {"bf16": True}))
    for name, kw in variants:
        sec = measure(make_step(cfg, **kw), repeats=args.repeats)
        rows[name] = {"seconds_per_step": round(sec, 4), "samples_per_s": round(cfg.train.batch_size / sec, 2),
                      "gflop_per_step": round(flops / 1e9, 2), "flop_rate_share_of_peak": round(flops / sec / peak, 3)}
        if kw.get("bf16"):
            rows[name]["flop_rate_share_of_bf16_peak"] = round(flops / sec / peak_bf16, 3)
        print(name, rows[name], flush=True)
    report = {"batch": cfg.train.batch_size, "resolution": cfg.data.resolution, "threads": torch.get_num_threads(),
              "matmul_peak_gflops": round(peak / 1e9, 1), "rows": rows, "versions": versions(),
              "command": "python benchmarks/bench_train_step.py" + (" --compile" if args.compile else "")
              + (" --bf16" if args.bf16 else "")}
    if peak_bf16:
        report["bf16_matmul_peak_gflops"] = round(peak_bf16 / 1e9, 1)
    if args.out:
        from fiffdepth.atomic import write_json

        write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
