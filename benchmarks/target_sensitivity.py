"""How precise must a prediction be, in the training target's own space, to reach a given AbsRel?
(issue 14: where the embedded scale's error is, and why outdoor scenes carry most of it.)

    OMP_NUM_THREADS=2 python benchmarks/target_sensitivity.py --out benchmarks/target_sensitivity.json

Every model here predicts affine-invariant depth: the target is each map's depth normalised to
[-1, 1] by its valid 2nd/98th percentiles and clipped (``fiffdepth.codecs.normalize_depth``,
Marigold's convention), and it is scored after a least-squares scale-and-shift fit in *depth*
(Marigold's protocol, ``fiffdepth.evaluate.score_item``, the same code as ``fiffdepth evaluate``).
This script scores oracles built from the ground truth itself, split by scene kind:

- ``target``: the normalised, clipped ground truth (what a perfect d0 would decode to, before the VAE);
- ``target + N(0, s)``: the same plus Gaussian noise of std ``s`` in the normalised space (where
  L_MAE is computed, up to the VAE), i.e. a model whose errors are that size and image-independent;
- ``min/max target (+ noise)``: the 0/100-percentile normalisation (nothing clipped), for comparison;
- ``target blurred``: a Gaussian blur of the target (the layout right, the edges gone);
- ``VAE round trip``: the target through the shipped generator's VAE (``DepthCodec``) and back.

It also scores models (``--model LABEL=DIR``, repeatable; default the shipped
``weights/fiffdepth``) and the mean-layout baseline, and reports each depth model's error in the
normalised space: the RMS residual after a least-squares fit of its prediction to the clipped
target on valid pixels (the oracles get the same column). Comparing that with the oracle rows says how much
of a model's AbsRel is precision in the target space and how much the metric's amplification.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

NOISE_STDS = (0.01, 0.02, 0.05)
BLUR_SIGMAS = (1, 2, 4)


def _normalised(depth: np.ndarray, valid: np.ndarray, low: float, high: float) -> np.ndarray:
    from fiffdepth.codecs import normalize_depth

    t = torch.from_numpy(np.where(valid, depth, 0.0)).float()[None, None]
    return normalize_depth(t, torch.from_numpy(valid)[None, None], low, high)[0, 0].double().numpy()


def _fit_rms(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """RMS residual of the least-squares affine fit of pred to target over valid pixels."""
    a = np.stack([pred[valid], np.ones(int(valid.sum()))], 1)
    sol = np.linalg.lstsq(a, target[valid], rcond=None)[0]
    return float(np.sqrt(np.mean((a @ sol - target[valid]) ** 2)))


def oracle_maps(depth: np.ndarray, valid: np.ndarray, rng: np.random.Generator, codec=None) -> dict:
    """Name -> a depth-like map (larger = farther) built from the ground truth alone."""
    from skimage.filters import gaussian

    clipped = _normalised(depth, valid, 0.02, 0.98)
    full = _normalised(depth, valid, 0.0, 1.0)
    noise = rng.standard_normal(depth.shape)
    maps = {"target": clipped}
    maps.update({f"target + N(0, {s})": clipped + s * noise for s in NOISE_STDS})
    maps["min/max target"] = full
    maps.update({f"min/max target + N(0, {s})": full + s * noise for s in NOISE_STDS[:2]})
    for sigma in BLUR_SIGMAS:  # a correct but blurred prediction (edges lost, layout kept)
        maps[f"target blurred, sigma {sigma} px"] = gaussian(clipped, sigma=sigma, mode="nearest", preserve_range=True, truncate=4.0)
    if codec is not None:
        with torch.no_grad():
            z = codec.encode(torch.from_numpy(clipped).float()[None, None])
            maps["VAE round trip"] = codec.decode(z)[0, 0].double().numpy()
    return maps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/data", help="folder with eval/ and eval_real/ (make reproduce's)")
    parser.add_argument("--model", action="append", default=None, metavar="[LABEL=]DIR",
                        help="a model directory to score (repeatable; default: the shipped weights/fiffdepth)")
    parser.add_argument("--mean-layout", default="outputs/data/synth",
                        help="training scenes for the mean-layout baseline ('' to skip)")
    parser.add_argument("--vae", default="weights/generator/vae", help="the VAE for the round-trip row ('' to skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the results here as JSON")
    args = parser.parse_args()

    from diffusers import AutoencoderKL

    from fiffdepth import evaluate as ev
    from fiffdepth.baselines import mean_layout_predictor
    from fiffdepth.codecs import DepthCodec

    codec = DepthCodec(AutoencoderKL.from_pretrained(args.vae).float().eval()) if args.vae else None
    models = {}
    if args.mean_layout:
        models["mean layout"] = mean_layout_predictor(args.mean_layout)
    for spec in args.model if args.model is not None else ["shipped model=weights/fiffdepth"]:
        label, _, path = spec.rpartition("=")
        models[label or path] = ev.load_predictor(path)
    t0 = time.perf_counter()
    results = {}
    for split in ("eval", "eval_real"):
        spec = ev.parse_dataset_spec(f"embedded:{Path(args.data) / split}")
        dataset, kinds = ev.open_dataset(spec), ev.scene_kinds(spec.path)
        protocol = ev.protocol_of("embedded")
        rng = np.random.default_rng(args.seed)
        per_kind: dict[str, dict[str, list]] = {}
        for i in range(len(dataset)):
            item = dataset[i]
            gt = item["depth"][0].numpy().astype(np.float64)
            valid = item["valid_mask"][0].numpy().astype(bool)
            maps = oracle_maps(gt, valid, rng, codec)
            scores = {name: ev.score_item(ev.EMBEDDED, item, m, "depth", protocol)["abs_rel"] for name, m in maps.items()}
            scores.update({f"{name}: target-space RMS": _fit_rms(m, maps["target"], valid)
                           for name, m in maps.items() if name != "target"})
            for label, model in models.items():
                pred = ev.predict_raw(model, [item["image"]])[0]
                scores[label] = ev.score_item(ev.EMBEDDED, item, pred, ev.output_space(model), protocol)["abs_rel"]
                if ev.output_space(model) == "depth":  # a disparity model's residual would be in another space
                    scores[f"{label}: target-space RMS"] = _fit_rms(np.asarray(pred, np.float64), maps["target"], valid)
            kind = kinds.get(str(item["name"]), "all")
            for k in (kind, "all"):
                for name, v in scores.items():
                    per_kind.setdefault(k, {}).setdefault(name, []).append(v)
        results[split] = {k: {"n": len(next(iter(v.values()))), **{n: float(np.mean(x)) for n, x in v.items()}}
                          for k, v in per_kind.items()}

    names = sorted(list(results["eval"]["all"].keys())[1:], key=lambda n: "RMS" in n)
    cols = [(s, k) for s in ("eval", "eval_real") for k in ("indoor", "outdoor", "all") if k in results[s]]
    print("| " + " | ".join(["AbsRel ×100 (RMS rows: target-space units)"] +
                            [f"{'synthetic' if s == 'eval' else 'real-styled'} {k} ({results[s][k]['n']})" for s, k in cols]) + " |")
    print("|---" + "|---:" * len(cols) + "|")
    for n in names:
        scale = 1.0 if "RMS" in n else 100.0
        print(f"| {n} | " + " | ".join(f"{scale * results[s][k][n]:.{3 if scale == 1 else 1}f}" for s, k in cols) + " |")
    if args.out:
        from fiffdepth.atomic import write_text
        from fiffdepth.bench import versions

        write_text(args.out, json.dumps({
            "command": shlex.join(["python", "benchmarks/target_sensitivity.py", *sys.argv[1:]]),
            "results": results, "seconds": round(time.perf_counter() - t0, 1),
            "versions": versions(), "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
