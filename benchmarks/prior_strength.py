"""Does a stronger generator prior make FiffDepth's fine-tuning faster? (issue 14: the paper's mechanism)

Step 1 continues a generator prior's latent-diffusion UNet for more steps of its own objective
(v-prediction, t uniform over 0..999, empty prompt) on the images ``fiffdepth pretrain`` uses,
keeping its VAE, so the latent space does not move (``fiffdepth.generator.continue_generator``,
the same as ``fiffdepth pretrain --stage generator --continue-from DIR``):

    OMP_NUM_THREADS=1 python benchmarks/prior_strength.py --steps 8000 --out /tmp/prior/long

It writes a Stable Diffusion layout folder and prints the held-out v-loss before and after.
The shipped ``weights/generator`` is the stage-1 prior continued this way for 8000 steps (made at
commit 956167f by this script's first version, whose operations ``continue_generator`` repeats
byte for byte). Step 2 fine-tunes priors with the d0 probe at equal steps:

    OMP_NUM_THREADS=1 python benchmarks/capacity_probe.py --init pretrained --generator /tmp/prior/long --steps 250 --out long.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write (Stable Diffusion layout)")
    ap.add_argument("--generator", default="weights/generator", help="the prior to continue")
    ap.add_argument("--data", default="outputs/data", help="folder holding synth/ and styled/ (stages.make_data)")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4, help="peak of the fresh one-cycle schedule")
    args = ap.parse_args()

    from fiffdepth.generator import continue_generator

    data = Path(args.data)
    report = continue_generator(args.generator, data / "synth", args.out, unet_steps=args.steps,
                                styled_dir=data / "styled", seed=args.seed, lr=args.lr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
