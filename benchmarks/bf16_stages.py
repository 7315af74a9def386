"""Where bf16's error comes from: each stage run in bf16 on the *same* fp32 input.

    python benchmarks/bf16_stages.py [--preset paper] [--resolution 128] [--model DIR] [--out FILE]

For VAE encode, UNet (d0 = ε̂θ(x0, 0)) and depth decode, the relative error
‖stage_bf16(a) − stage_fp32(a)‖ / ‖stage_fp32(a)‖ with `a` the fp32 input of that stage, in two
bf16 recipes: (1) weights and activations in bf16 (what ``FiffDepthPipeline(torch_dtype=bf16)``
runs) and (2) fp32 weights under ``torch.autocast`` (fp32 residual stream, norms in fp32). The
decode error is measured on the pipeline's [0, 1] depth. Random weights of ``--preset`` unless
``--model`` names a trained model directory.
"""

import argparse
import copy
import json

import torch

from fiffdepth.bench import Components, bench_images, rel_err, versions
from fiffdepth.codecs import DepthCodec, ImageCodec


def stage_errors(model, x: torch.Tensor) -> dict:
    ic, dc = ImageCodec(model.vae), DepthCodec(model.vae)
    with torch.inference_mode():
        x0 = ic.encode(x)
        d0 = model.predict_latent(x0)
        depth = (dc.decode(d0) + 1) / 2
        bf = copy.deepcopy(model).to(torch.bfloat16)
        icb, dcb = ImageCodec(bf.vae), DepthCodec(bf.vae)
        out = {}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16_weights"] = {
                "encode": rel_err(icb.encode(x.bfloat16()).float(), x0),
                "unet": rel_err(bf.predict_latent(x0.bfloat16()).float(), d0),
                "decode": rel_err((dcb.decode(d0.bfloat16()).float() + 1) / 2, depth),
            }
            out["fp32_weights_autocast"] = {
                "encode": rel_err(ic.encode(x).float(), x0),
                "unet": rel_err(model.predict_latent(x0).float(), d0),
                "decode": rel_err((dc.decode(d0).float() + 1) / 2, depth),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--model", default=None, help="a trained FiffDepth directory instead of random weights")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.model:
        from fiffdepth.model import FiffDepthModel

        model, weights = FiffDepthModel.from_pretrained(args.model).eval(), args.model
    else:
        model, weights = Components(args.preset, args.resolution, torch.device("cpu")).model.eval(), "random"
    x = bench_images(1, args.resolution)[0]
    result = {"preset": args.preset, "weights": weights, "resolution": args.resolution,
              "errors": stage_errors(model, x), "versions": versions()}
    for recipe, errs in result["errors"].items():
        print(f"{recipe:>22}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
