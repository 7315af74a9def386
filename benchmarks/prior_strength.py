"""Does a stronger generator prior make FiffDepth's fine-tuning faster? (issue 14: the paper's mechanism)

Step 1 continues the shipped generator's latent-diffusion UNet (``weights/generator``) for more
steps of the same objective (v-prediction, t uniform over 0..999, empty prompt) on the same
images as ``fiffdepth pretrain`` (synthetic + real-styled scenes + photos, first 32 scenes of
each domain and the last 8 photos held out), keeping its VAE, so the latent space does not move:

    OMP_NUM_THREADS=1 python benchmarks/prior_strength.py --steps 4000 --out /tmp/prior/long

It writes a Stable Diffusion layout folder (the shipped one with ``unet/`` replaced) and the
held-out v-loss of the shipped and the continued UNet at fixed (seeded) noise and timesteps.
Step 2 fine-tunes each prior with the d0 probe at equal steps and scores held-out scenes:

    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --init pretrained --generator /tmp/prior/long --steps 250 --out long.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F


@torch.no_grad()
def heldout_v_loss(unet, latents, empty, scheduler, n_draws: int = 8, seed: int = 1234) -> float:
    """Mean v-MSE over the held-out latents, at seeded noise and timesteps (the same for every UNet)."""
    g = torch.Generator().manual_seed(seed)
    T, losses = len(scheduler.alphas_cumprod), []
    unet.eval()
    for _ in range(n_draws):
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, T, (len(latents),), generator=g)
        xt, v = scheduler.add_noise(latents, noise, t), scheduler.get_velocity(latents, noise, t)
        out = unet(xt, t, encoder_hidden_states=empty.expand(len(latents), -1, -1)).sample
        losses.append(F.mse_loss(out, v).item())
    return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write (Stable Diffusion layout)")
    ap.add_argument("--generator", default="weights/generator", help="the prior to continue")
    ap.add_argument("--data", default="outputs/data", help="folder holding synth/ and styled/ (stages.make_data)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from diffusers import UNet2DConditionModel

    from fiffdepth.codecs import ImageCodec
    from fiffdepth.data.real import EmbeddedRealImages
    from fiffdepth.data.synthetic import load_scene_tensors
    from fiffdepth.generator import train_latent_diffusion
    from fiffdepth.model import FiffDepthModel

    torch.manual_seed(args.seed)
    base = FiffDepthModel.from_pretrained(args.generator)
    unet = UNet2DConditionModel.from_pretrained(Path(args.generator) / "unet")
    empty = base.empty_text_embedding
    res = unet.config.sample_size * base.vae_scale_factor
    h = 32
    synth = load_scene_tensors(str(Path(args.data) / "synth"), res, 0, 4000)[0]
    styled = load_scene_tensors(str(Path(args.data) / "styled"), res, 0, 4000)[0]
    real_set = EmbeddedRealImages(size=res, seed=0)
    real = torch.stack([real_set[i]["image"] for i in range(len(real_set))])
    codec = ImageCodec(base.vae)
    with torch.no_grad():
        enc = lambda x: torch.cat([codec.encode(x[i:i + 64]) for i in range(0, len(x), 64)])  # noqa: E731
        train = enc(torch.cat([synth[h:], styled[h:], real[:-8]]))
        held = enc(torch.cat([synth[:h], styled[:h], real[-8:]]))
    before = heldout_v_loss(unet, held, empty, base.scheduler)
    print(json.dumps({"heldout_v_loss_before": before}), flush=True)
    log = train_latent_diffusion(unet.train(), train, empty, base.scheduler, steps=args.steps, batch_size=args.batch,
                                 lr=args.lr, seed=args.seed, crop=None, progress=True)
    after = heldout_v_loss(unet, held, empty, base.scheduler)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.generator, tmp)
    shutil.rmtree(tmp / "unet")
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    report = {"args": vars(args), "heldout_v_loss_before": before, "heldout_v_loss_after": after,
              "train_images": len(train), "final_train_v_loss_ema": log["loss"], "seconds": round(log["seconds"], 1),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "created": time.strftime("%Y-%m-%d %H:%M")}
    (tmp / "prior_strength.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
