"""Held-out scores along one long fine-tuning run (issue 14: how far do more steps go?).

    python benchmarks/finetune_curve.py --out /tmp/curve/A --steps 2000 --every 250            # from the shipped prior
    python benchmarks/finetune_curve.py --out /tmp/curve/B --steps 2000 --every 250 --random-unet   # UNet from scratch

Trains the full method (tiny preset, the embedded data of ``stages.make_data("outputs")``) with
a cosine schedule over ``--steps``, keeps a checkpoint every ``--every`` steps, and scores each
checkpoint's UNet on the first ``--images`` held-out scenes of both domains (Marigold's
protocol, ×100). Mid-run checkpoints are taken at a learning rate that has not decayed yet, so
they are not the same as shorter runs. Scores go to OUT/ck_scores.jsonl, one line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--data", default="outputs", help="stages layout root holding data/")
    ap.add_argument("--steps", type=int, default=2000, help="training steps (cosine schedule over all of them)")
    ap.add_argument("--every", type=int, default=250, help="checkpoint and score every this many steps")
    ap.add_argument("--random-unet", action="store_true", help="start the UNet from random weights (model.unet_init=random)")
    ap.add_argument("--images", type=int, default=32, help="held-out scenes per domain")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import UNet2DConditionModel

    from fiffdepth import evaluate as ev
    from fiffdepth import stages
    from fiffdepth.pipeline import FiffDepthPipeline
    from fiffdepth.train import train

    out = Path(args.out)
    overrides = {"train.checkpoint_every": args.every, "train.keep_checkpoints": 10_000, "train.eval_every": args.every}
    if args.random_unet:
        overrides["model.unet_init"] = "random"
    cfg = stages.stage_config(args.data, "tiny", overrides, "fiffdepth", args.steps)
    cfg.train.output_dir = str(out)
    train(cfg, resume="latest", cache_root=stages.layout(args.data).cache)

    L = stages.layout(args.data)
    pipe = FiffDepthPipeline.from_pretrained(out)
    for ck in sorted((out / "checkpoints").glob("checkpoint-*")) + [out]:
        pipe.model.unet.load_state_dict(UNet2DConditionModel.from_pretrained(ck / "unet").state_dict())
        pipe.model.unet.eval()
        res = ev.evaluate_model(pipe, [f"embedded:{L.eval}", f"embedded:{L.eval_real}"], progress=False,
                                max_images=args.images)
        row = {"checkpoint": ck.name}
        for key, d in res["datasets"].items():
            row[key] = {m: round(100 * d["metrics"][m], 2) for m in ("abs_rel", "delta1", "boundary_f1")}
        print(json.dumps(row), flush=True)
        with open(out / "ck_scores.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
