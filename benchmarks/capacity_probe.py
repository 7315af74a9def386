"""What limits the embedded scale: UNet width against steps at a fixed wall time, and whether the
tiny UNet can even memorise a few scenes (issue 14, item 4).

    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/std.json --steps 250
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/small.json --steps 720 --width 16,32,64
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/xs.json --steps 1200 --width 8,16,32 --groups 8
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/fit64.json --steps 500 --train-scenes 64 --score-train

A stripped-down d0 term only (Eq. 1 with L_MAE on depth latents; no L_GM, no d₋₁, no L_k, no
real half): the tiny preset's UNet config with a chosen width, random init or the shipped
generator's UNet, fed the shipped VAE's image latents of ``outputs/data/synth`` (random flips),
AdamW with 20 warm-up steps and a cosine decay. Every ``steps/5`` steps it decodes the first 64
scenes of ``outputs/data/eval`` (or, with ``--score-train``, of the training scenes) and scores
them with Marigold's protocol (depth-space affine fit, AbsRel ×100) and boundary F1. Each line
of ``log`` carries the wall time, so runs of different widths compare at equal time. The latents
are cached in ``--latents`` (a torch file of tensors, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def encode_scenes(vae, folder: str, max_scenes: int | None = None):
    from fiffdepth.codecs import DepthCodec, ImageCodec, normalize_depth
    from fiffdepth.data.synthetic import load_scene_tensors

    images, depth, valid = load_scene_tensors(folder, 128, max_scenes=max_scenes)
    ic, dc = ImageCodec(vae), DepthCodec(vae)
    with torch.no_grad():
        x = torch.cat([ic.encode(images[i:i + 64]) for i in range(0, len(images), 64)])
        z = torch.cat([dc.encode(normalize_depth(depth[i:i + 64], valid[i:i + 64])) for i in range(0, len(images), 64)])
    return {"x": x, "z": z, "depth": depth, "valid": valid}


def load_latents(vae, data: Path, cache: Path) -> tuple[dict, dict]:
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return blob["train"], blob["eval"]
    train = encode_scenes(vae, str(data / "synth"))
    heldout = encode_scenes(vae, str(data / "eval"), 64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"train": train, "eval": heldout}, tmp)
    tmp.replace(cache)
    return train, heldout


def score(unet, codec, emb, scenes: dict, n: int = 64) -> tuple[float, float]:
    from fiffdepth import metrics as M

    preds = []
    with torch.no_grad():
        for i in range(0, n, 16):
            x = scenes["x"][i:i + 16]
            out = unet(x, torch.zeros(len(x), dtype=torch.long), encoder_hidden_states=emb.expand(len(x), -1, -1)).sample
            preds.append(codec.decode(out))
    pred = torch.cat(preds)[:, 0].double().numpy()
    gt, valid = scenes["depth"][:n, 0].double().numpy(), scenes["valid"][:n, 0].numpy()
    rel, f1 = [], []
    for p, g, m in zip(pred, gt, valid):
        aligned = np.clip(M.align_scale_shift(p, g, m)[0], g[m].min(), g[m].max())
        rel.append(M.abs_rel(aligned, g, m))
        f1.append(M.boundary_f1(np.where(m, aligned, np.nan), np.where(m, g, np.nan)))
    return 100 * float(np.mean(rel)), float(np.nanmean(f1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--data", default="outputs/data", help="folder holding synth/ and eval/ (stages.make_data)")
    ap.add_argument("--generator", default="weights/generator", help="generator directory (its VAE; its UNet with --init pretrained)")
    ap.add_argument("--latents", default="/tmp/fiffdepth-probe/latents.pt", help="cache of the encoded scenes")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", default="32,64,128", help="UNet block_out_channels (default: the tiny preset's width before issue 14's switch to 16,32,64)")
    ap.add_argument("--groups", type=int, default=16, help="GroupNorm groups (must divide every width)")
    ap.add_argument("--init", choices=["random", "pretrained"], default="random")
    ap.add_argument("--train-scenes", type=int, default=0, help="train on the first N scenes only (0: all)")
    ap.add_argument("--score-train", action="store_true", help="score the first 64 training scenes, not held-out ones")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from fiffdepth.codecs import DepthCodec
    from fiffdepth.config import TINY_UNET

    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.generator, subfolder="vae").eval().requires_grad_(False)
    train, heldout = load_latents(vae, Path(args.data), Path(args.latents))
    if args.init == "pretrained":
        unet = UNet2DConditionModel.from_pretrained(args.generator, subfolder="unet")
    else:
        cfg = copy.deepcopy(TINY_UNET)
        cfg["block_out_channels"] = [int(c) for c in args.width.split(",")]
        cfg["norm_num_groups"] = args.groups
        unet = UNet2DConditionModel(**cfg)
    unet.train()
    codec = DepthCodec(vae)
    emb = torch.zeros(1, 1, unet.config.cross_attention_dim)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warm = 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    n = args.train_scenes or len(train["x"])
    gen = torch.Generator().manual_seed(args.seed)
    scored = {k: v[:64] for k, v in train.items()} if args.score_train else heldout
    log, t0, every = [], time.time(), max(1, args.steps // 5)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        flip = (torch.rand(args.batch, generator=gen) < 0.5)[:, None, None, None]
        x, z = train["x"][idx], train["z"][idx]
        x, z = torch.where(flip, x.flip(-1), x), torch.where(flip, z.flip(-1), z)
        out = unet(x, torch.zeros(args.batch, dtype=torch.long), encoder_hidden_states=emb.expand(args.batch, -1, -1)).sample
        loss = F.l1_loss(out, z)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % every == 0 or step == args.steps:
            train_time = time.time() - t0
            unet.eval()
            rel, f1 = score(unet, codec, emb, scored)
            unet.train()
            log.append({"step": step, "loss": float(loss), "abs_rel": rel, "boundary_f1": f1, "train_s": round(train_time, 1)})
            print(json.dumps(log[-1]), flush=True)
            t0 += time.time() - t0 - train_time  # scoring time does not count as training time
    result = {"args": vars(args), "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "log": log}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
