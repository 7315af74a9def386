"""bf16 autocast vs fp32 on a trained model: relative error of the depth and of the d0 latents.

    python benchmarks/bf16_on_model.py MODEL_DIR EVAL_DIR [--images 16] [--out FILE]

``fiffdepth bench`` measures the same quantity on random weights (the only paper-size weights
available offline); this script measures it on real weights, with both decoders when
``MODEL_DIR/depth_decoder`` exists.
"""

import argparse
import json

import torch

from fiffdepth.bench import rel_err, versions
from fiffdepth.data.base import usable_items
from fiffdepth.data.synthetic import SyntheticDepthDataset
from fiffdepth.pipeline import FiffDepthPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("eval_dir")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = SyntheticDepthDataset(args.eval_dir)
    images = [it["image"] for it in usable_items(ds, args.images)]
    result = {"model": args.model, "eval_dir": args.eval_dir, "images": len(images), "versions": versions()}
    for decoder in ("full", "tiny"):
        try:
            fp32 = FiffDepthPipeline.from_pretrained(args.model, decoder=decoder)
        except Exception as err:  # no distilled decoder: report the full one only
            result[decoder] = f"skipped: {err}"
            continue
        bf16 = FiffDepthPipeline.from_pretrained(args.model, decoder=decoder, torch_dtype=torch.bfloat16)
        a = fp32(images, batch_size=8, output_latent=True)
        b = bf16(images, batch_size=8, output_latent=True)
        result[decoder] = {"depth_rel_err": rel_err(b.prediction, a.prediction),
                           "latent_rel_err": rel_err(b.latent.numpy(), a.latent.numpy()),
                           "resolution": fp32.config.processing_resolution}
        print(decoder, result[decoder])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
