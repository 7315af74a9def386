"""How much colour survives the shipped VAE's image round trip (issue 14 diagnostics).

    .venv/bin/python benchmarks/vae_colour.py [--vae weights/generator] [--scenes outputs/data/eval]

Saturation = mean over pixels of max(R, G, B) − min(R, G, B). It also prints the L1 error of
luma (the channel mean) and of chroma (each channel minus the luma) separately.
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> int:
    from diffusers import AutoencoderKL

    from fiffdepth.codecs import ImageCodec
    from fiffdepth.data.base import usable_items
    from fiffdepth.data.synthetic import SyntheticDepthDataset

    p = argparse.ArgumentParser()
    p.add_argument("--vae", default="weights/generator")
    p.add_argument("--scenes", default="outputs/data/eval")
    p.add_argument("--n", type=int, default=32)
    args = p.parse_args(argv)
    codec = ImageCodec(AutoencoderKL.from_pretrained(args.vae, subfolder="vae"))
    ds = SyntheticDepthDataset(args.scenes)
    x = torch.stack([it["image"] for it in usable_items(ds, args.n)])
    with torch.no_grad():
        r = codec.decode(codec.encode(x))
    sat = lambda t: (t.max(1).values - t.min(1).values).mean().item()  # noqa: E731
    luma = lambda t: t.mean(1, keepdim=True)  # noqa: E731
    print(f"{len(x)} scenes from {args.scenes}: saturation {sat(x):.3f} in, {sat(r):.3f} out; "
          f"luma L1 {(luma(x) - luma(r)).abs().mean().item():.4f}, "
          f"chroma L1 {((x - luma(x)) - (r - luma(r))).abs().mean().item():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
