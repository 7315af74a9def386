"""Is a model's AbsRel in the scene's layout or in its detail? (issue 14: what to improve next.)

    OMP_NUM_THREADS=2 python benchmarks/layout_vs_detail.py --out benchmarks/layout_vs_detail.json

Each prediction is first aligned to the ground truth as the protocol aligns it (least squares
in depth for a depth model, in disparity for a disparity model such as the teacher, then
clipped to the protocol's depth range). Then, in the model's own space (depth, or disparity =
1 / depth), both the aligned prediction P and the ground truth G are split into a layout part, L(x), a Gaussian blur of σ px taken over valid pixels only
(a normalised convolution: sky and other invalid pixels do not leak in), and a detail part,
x − L(x). These maps are scored with the protocol of ``fiffdepth evaluate`` (``score_item``,
which aligns each again, in the model's space):

- ``model``: P itself (the number ``fiffdepth evaluate`` prints);
- ``GT layout + model detail``: L(G) + P − L(P), the model's error if its layout were exact;
- ``model layout + GT detail``: L(P) + G − L(G), its error if its detail were exact;
- ``GT layout alone``: L(G), what the layout alone scores, without any detail.

When the first composite is far below ``model`` and the second is close to it, the error is in
the layout, and sharper edges would not move AbsRel much.
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

SIGMAS = (3.0, 8.0)


def layout_of(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``x`` over the valid pixels only (0 where no valid pixel is near)."""
    from scipy.ndimage import gaussian_filter

    weight = gaussian_filter(valid.astype(np.float64), sigma)
    blurred = gaussian_filter(np.where(valid, x, 0.0), sigma)
    return np.where(weight > 1e-6, blurred / np.maximum(weight, 1e-6), 0.0)


def aligned(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, space: str, protocol) -> tuple[np.ndarray, np.ndarray]:
    """(aligned prediction, ground truth), both in the model's own space, as the protocol aligns
    and clips it (``fiffdepth.evaluate.aligned_depth``): depth, or for a disparity model
    disparity (1 / depth)."""
    from fiffdepth.evaluate import aligned_depth

    depth = np.clip(aligned_depth(pred, gt, valid, space, protocol), protocol.min_depth, protocol.max_depth)
    if space == "disparity":
        return 1.0 / depth, np.where(valid, 1.0 / np.maximum(gt, protocol.min_depth), 0.0)
    return depth, gt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/data", help="folder with eval/ and eval_real/ (make reproduce's)")
    parser.add_argument("--model", action="append", default=None, metavar="[LABEL=]DIR",
                        help="a model to split (repeatable; default: the shipped FiffDepth and teacher)")
    parser.add_argument("--sigma", type=float, action="append", default=None,
                        help=f"layout blur σ in pixels (repeatable; default {', '.join(map(str, SIGMAS))})")
    parser.add_argument("--out", default="", help="write the results here as JSON")
    args = parser.parse_args()

    from fiffdepth import evaluate as ev

    sigmas = args.sigma or list(SIGMAS)
    specs = args.model if args.model is not None else ["shipped FiffDepth=weights/fiffdepth", "teacher=weights/teacher"]
    models = {}
    for spec in specs:
        label, _, path = spec.rpartition("=")
        models[label or path] = ev.load_predictor(path)
    protocol = ev.protocol_of("embedded")
    t0 = time.perf_counter()
    results = {}
    for split in ("eval", "eval_real"):
        spec = ev.parse_dataset_spec(f"embedded:{Path(args.data) / split}")
        dataset, kinds = ev.open_dataset(spec), ev.scene_kinds(spec.path)
        per_kind: dict[str, dict[str, list]] = {}
        for i in range(len(dataset)):
            item = dataset[i]
            gt = item["depth"][0].numpy().astype(np.float64)
            valid = item["valid_mask"][0].numpy().astype(bool)

            def score(m, space="depth"):
                return ev.score_item(ev.EMBEDDED, item, m, space, protocol)["abs_rel"]

            scores = {f"GT layout alone, σ {s:g}": score(layout_of(gt, valid, s)) for s in sigmas}
            for label, model in models.items():
                raw, space = ev.predict_raw(model, [item["image"]])[0], ev.output_space(model)
                scores[label] = score(raw, space)
                p, g = aligned(raw, gt, valid, space, protocol)
                for s in sigmas:
                    lg, lp = layout_of(g, valid, s), layout_of(p, valid, s)
                    scores[f"{label}: GT layout + model detail, σ {s:g}"] = score(lg + p - lp, space)
                    scores[f"{label}: model layout + GT detail, σ {s:g}"] = score(lp + g - lg, space)
            kind = kinds.get(str(item["name"]), "all")
            for k in dict.fromkeys((kind, "all")):
                for name, v in scores.items():
                    per_kind.setdefault(k, {}).setdefault(name, []).append(v)
        results[split] = {k: {"n": len(next(iter(v.values()))), **{n: float(np.mean(x)) for n, x in v.items()}}
                          for k, v in per_kind.items()}

    names = [n for n in results["eval"]["all"] if n != "n"]
    cols = [(s, k) for s in ("eval", "eval_real") for k in ("indoor", "outdoor", "all") if k in results[s]]
    print("| AbsRel ×100 | " + " | ".join(
        f"{'synthetic' if s == 'eval' else 'real-styled'} {k} ({results[s][k]['n']})" for s, k in cols) + " |")
    print("|---" + "|---:" * len(cols) + "|")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{100 * results[s][k][n]:.1f}" for s, k in cols) + " |")
    if args.out:
        from fiffdepth.atomic import write_text
        from fiffdepth.bench import versions

        write_text(args.out, json.dumps({
            "command": shlex.join(["python", "benchmarks/layout_vs_detail.py", *sys.argv[1:]]),
            "results": results, "sigmas": sigmas, "seconds": round(time.perf_counter() - t0, 1),
            "versions": versions(), "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
