"""Full-size dry run (issue 15): two optimisation steps of the ``paper`` preset with the real SD2
UNet/VAE configs (``fiffdepth.bench.SD2_UNET``/``SD2_VAE``, random weights) on CPU, at 256 px,
batch 2 (1 synthetic + 1 real), gradient checkpointing, through ``fiffdepth.train.train`` —
pseudo-labels, latent caches, AdamW, the saved run — on toy data in the real formats (the
writers of tests/conftest.py: Hypersim HDF5, Virtual KITTI 2 PNG, webdataset shards).

Departures from the preset, each forced by the machine: ``train.mixed_precision=no`` (this CPU
has no bf16 instructions, and CPU autocast keeps a bf16 copy of the weights on top of the fp32
ones and AdamW's two moments); the teacher is a tiny Depth Anything V2 (its size is not what
is measured). A watchdog stops the run if the resident set passes ``--max-rss-gib``.

    /usr/bin/time -v python benchmarks/paper_dry_run.py     # writes benchmarks/paper_dry_run.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the on-disk format writers live with the tests


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


STARTED = time.time()
STEPS_DONE: list = []


def watchdog(limit_gib: float, out: Path) -> None:
    while True:
        if rss_gib() > limit_gib:
            out.write_text(json.dumps({"stopped": f"resident set passed {limit_gib} GiB",
                                       "seconds_to_stop": round(time.time() - STARTED, 1),
                                       "steps_logged_before_stop": list(STEPS_DONE)}, indent=2) + "\n")
            print(f"stopped: resident set passed {limit_gib} GiB", file=sys.stderr, flush=True)
            os._exit(3)
        time.sleep(0.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-rss-gib", type=float, default=20.0)  # the run peaks at 15.7 GiB
    p.add_argument("--out", default=str(Path(__file__).with_name("paper_dry_run.json")))
    args = p.parse_args()
    out_json = Path(args.out)
    threading.Thread(target=watchdog, args=(args.max_rss_gib, out_json), daemon=True).start()

    from diffusers import UNet2DConditionModel

    from conftest import write_depth_anything_layout, write_hypersim_raw, write_vkitti2, write_webdataset_shards
    from fiffdepth import stages
    from fiffdepth.bench import SD2_UNET, SD2_VAE
    from fiffdepth.train import read_log, train

    with torch.device("meta"):
        n_unet = sum(p.numel() for p in UNet2DConditionModel(**SD2_UNET).parameters())
    work = Path(tempfile.mkdtemp(prefix="fiffdepth-dry-run-"))
    try:
        data = work / "data"
        overrides = {
            "model.pretrained": "", "model.unet": SD2_UNET, "model.vae": SD2_VAE,
            "model.gradient_checkpointing": True, "model.processing_resolution": args.resolution,
            "teacher.pretrained": str(write_depth_anything_layout(work / "teacher")),
            "data.synthetic": [f"hypersim_raw:{write_hypersim_raw(data / 'hypersim', n=1, h=768, w=1024)}",
                               f"vkitti:{write_vkitti2(data / 'vkitti', n=1)}"],
            "data.real": [str(write_webdataset_shards(data / "laion_art", n_shards=1, per_shard=2))],
            "data.pseudo_labels": str(data / "laion_art_pseudo"), "data.resolution": args.resolution,
            "train.batch_size": 2, "train.mixed_precision": "no", "train.log_every": 1,
        }
        out = work / "out"
        stages.make_pseudo_labels(out, preset="paper", overrides=overrides, progress=False)
        cfg = stages.stage_config(out, "paper", overrides, steps=args.steps)
        stamps = []
        t0 = time.time()
        summary = train(cfg, progress=False, cache_root=out / ".latent_cache",
                        on_log=lambda rec: (stamps.append((rec["step"], time.time())), STEPS_DONE.append(rec)))
        total = time.time() - t0
        log = [r for r in read_log(Path(cfg.train.output_dir) / "losses.jsonl") if "loss" in r]
        step_s = [round(b[1] - a[1], 1) for a, b in zip(stamps, stamps[1:])]
        result = {
            "command": "/usr/bin/time -v python benchmarks/paper_dry_run.py",
            "preset": "paper", "resolution": args.resolution, "batch_size": 2, "steps": args.steps,
            "gradient_checkpointing": True, "mixed_precision": "no (fp32: no CPU bf16)",
            "unet_parameters": n_unet,
            "s_per_step_mean": round(summary["seconds"] / args.steps, 1),  # the loop alone (both steps)
            "s_per_step_after_first": step_s,
            "train_call_s": round(total, 1),  # + model construction and the latent caches
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "losses": [{k: round(v, 5) for k, v in r.items() if k in ("step", "loss", "d0_mae", "dm1_mae", "traj")}
                       for r in log],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "gpu": "not measured: no GPU lent",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
