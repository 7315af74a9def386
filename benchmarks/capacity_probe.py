"""What limits the embedded scale: UNet width against steps at a fixed wall time, and whether the
tiny UNet can even memorise a few scenes (issue 14, item 4).

    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/std.json --steps 250
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/small.json --steps 720 --width 16,32,64
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/xs.json --steps 1200 --width 8,16,32 --groups 8
    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --out /tmp/probe/fit64.json --steps 500 --train-scenes 64 --score-train

Three switches ask whether the latent path is what holds a short run back (each against the
default run at equal steps): ``--arch conv`` swaps the diffusers UNet for a plain three-level
convolutional U-Net (no time embedding, no attention); ``--input s2d`` feeds the image itself,
space-to-depth folded to the latent grid (4×4×3 = 48 channels: nothing is lost, unlike the VAE's
image latents, which lose colour), instead of the VAE's image latents; ``--target pixel``
regresses the normalised depth average-pooled to the latent grid (1 channel, bilinearly
upsampled to score) instead of the depth latent, so the VAE's depth decoder is out of the loop.

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


class ConvUNet(torch.nn.Module):
    """A plain three-level U-Net (GroupNorm + SiLU, average-pool down, nearest up, no time
    embedding, no attention), called like a ``UNet2DConditionModel``: ``net(x, t, ...).sample``."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64):
        super().__init__()
        nn = torch.nn

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())

        w = width
        self.e1, self.e2, self.e3 = block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.d2, self.d1 = block(6 * w, 2 * w), block(3 * w, w)
        self.out = nn.Conv2d(w, out_channels, 1)

    def forward(self, x, *_, **__):
        from types import SimpleNamespace

        a1 = self.e1(x)
        a2 = self.e2(F.avg_pool2d(a1, 2))
        a3 = self.e3(F.avg_pool2d(a2, 2))
        b2 = self.d2(torch.cat([F.interpolate(a3, scale_factor=2), a2], 1))
        b1 = self.d1(torch.cat([F.interpolate(b2, scale_factor=2), a1], 1))
        return SimpleNamespace(sample=self.out(b1))


class PooledDepth:
    """``--target pixel``: the prediction is normalised depth on the latent grid; decoding
    upsamples it bilinearly to the image size."""

    def __init__(self, size: int):
        self.size = size

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        return F.interpolate(out, size=self.size, mode="bilinear", align_corners=False)


def switch_inputs_and_targets(scenes: dict, data: str, n_eval: int | None, args) -> dict:
    """Replace the VAE latents of ``scenes`` by what ``--input`` / ``--target`` ask for."""
    from fiffdepth.codecs import normalize_depth
    from fiffdepth.data.synthetic import load_scene_tensors

    scenes = dict(scenes)
    factor = scenes["depth"].shape[-1] // scenes["x"].shape[-1]
    if args.input == "s2d":
        images = load_scene_tensors(data, scenes["depth"].shape[-1], max_scenes=n_eval)[0]
        scenes["x"] = F.pixel_unshuffle(images * 2.0 - 1.0, factor)
    if args.target == "pixel":
        scenes["z"] = F.avg_pool2d(normalize_depth(scenes["depth"], scenes["valid"]), factor)
    return scenes


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
    ap.add_argument("--arch", choices=["unet", "conv"], default="unet",
                    help="unet: the tiny preset's UNet2DConditionModel; conv: a plain U-Net (ConvUNet, --conv-width)")
    ap.add_argument("--conv-width", type=int, default=64)
    ap.add_argument("--input", choices=["latent", "s2d"], default="latent",
                    help="latent: the VAE's image latents; s2d: the image folded space-to-depth onto the latent grid")
    ap.add_argument("--target", choices=["latent", "pixel"], default="latent",
                    help="latent: the depth latent (decoded by the VAE to score); pixel: normalised depth pooled to the latent grid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from fiffdepth.codecs import DepthCodec
    from fiffdepth.config import TINY_UNET

    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.generator, subfolder="vae").eval().requires_grad_(False)
    train, heldout = load_latents(vae, Path(args.data), Path(args.latents))
    train = switch_inputs_and_targets(train, str(Path(args.data) / "synth"), None, args)
    heldout = switch_inputs_and_targets(heldout, str(Path(args.data) / "eval"), 64, args)
    in_ch, out_ch = train["x"].shape[1], train["z"].shape[1]
    # seeded here, not only at the start: encoding the scenes (a first run, no cache yet) draws
    # from the global RNG, so the initial weights would depend on whether the cache existed
    torch.manual_seed(args.seed)
    if args.arch == "conv":
        unet = ConvUNet(in_ch, out_ch, args.conv_width)
    elif args.init == "pretrained":
        unet = UNet2DConditionModel.from_pretrained(args.generator, subfolder="unet")
    else:
        cfg = copy.deepcopy(TINY_UNET)
        cfg["block_out_channels"] = [int(c) for c in args.width.split(",")]
        cfg["norm_num_groups"] = args.groups
        cfg["in_channels"], cfg["out_channels"] = in_ch, out_ch
        unet = UNet2DConditionModel(**cfg)
    unet.train()
    codec = PooledDepth(train["depth"].shape[-1]) if args.target == "pixel" else DepthCodec(vae)
    emb = torch.zeros(1, 1, TINY_UNET["cross_attention_dim"])
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
        loss = F.l1_loss(out, z)  # --target pixel: sky pixels (+1 after normalize_depth) count too, as latents do
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
            log.append({"step": step, "loss": loss.item(), "abs_rel": rel, "boundary_f1": f1, "train_s": round(train_time, 1)})
            print(json.dumps(log[-1]), flush=True)
            t0 += time.time() - t0 - train_time  # scoring time does not count as training time
    result = {"args": vars(args), "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "log": log}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
