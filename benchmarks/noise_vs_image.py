"""Does a depth model's picture come from the image or from its noise draw?

    OMP_NUM_THREADS=2 python benchmarks/noise_vs_image.py \
        --model marigold=outputs/runs/marigold --model fiffdepth=outputs/runs/fiffdepth \
        --out benchmarks/noise_vs_image.json

Run after ``make reproduce`` (it reads ``outputs/``). For the first ``--n`` held-out synthetic
scenes, each model predicts every image twice, with noise seeds 0 and 1 (one ensemble member,
``--steps`` DDIM steps for a Marigold pipeline; FiffDepth draws no noise). Each map is
normalised to [0, 1] by its own 2/98 percentiles (``fiffdepth.plots.stretch``, as the figures
draw it), and the script reports:

- ``across_images``: the per-pixel std over the images at seed 0, averaged over pixels. A model
  that ignores the image and always draws the same noise scores 0; the ground truth's own value
  is ``gt_across_images``;
- ``across_seeds``: the mean absolute difference between the seed-0 and seed-1 maps of the same
  image. A model that draws no noise scores 0;
- ``corr_with_gt``: the Pearson correlation of each seed-0 map with its ground truth, averaged.

When ``across_seeds`` exceeds ``across_images``, the noise sets more of the picture than the image.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import numpy as np

from fiffdepth.plots import stretch


def probe(model: str, images, gts, steps: int) -> dict:
    from fiffdepth import evaluate as ev

    predictor = ev.load_predictor(model)
    kwargs = ev.marigold_call(steps, 1) if ev._is_marigold(predictor) else None
    a = np.stack([stretch(m) for m in ev.predict_depths(predictor, images, pipeline_kwargs=kwargs, seed=0)])
    b = np.stack([stretch(m) for m in ev.predict_depths(predictor, images, pipeline_kwargs=kwargs, seed=1)])
    corr = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, gts)]
    return {"across_images": float(a.std(0).mean()), "across_seeds": float(np.abs(a - b).mean()),
            "corr_with_gt": float(np.mean(corr))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="LABEL=DIR")
    p.add_argument("--dataset", default="embedded:outputs/data/eval")
    p.add_argument("--n", type=int, default=12, help="held-out scenes (the first N)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of a Marigold pipeline")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch

    from fiffdepth import evaluate as ev

    torch.manual_seed(0)
    ds = ev.open_dataset(args.dataset)
    n = min(args.n, len(ds))
    items = [ds[i] for i in range(n)]
    images = [it["image"] for it in items]
    gts = np.stack([stretch(np.asarray(it["depth"], dtype=np.float32).squeeze()) for it in items])
    t0 = time.time()
    results = {"gt_across_images": float(gts.std(0).mean())}
    for spec in args.model:
        label, _, path = spec.partition("=")
        if not path:
            p.error(f"--model {spec!r}: expected LABEL=DIR")
        results[label] = probe(path, images, gts, args.steps)
        print(label, json.dumps(results[label]))
    print("ground truth across images", round(results["gt_across_images"], 3))
    if args.out:
        from fiffdepth.atomic import write_json
        from fiffdepth.bench import versions

        record = {"command": "python benchmarks/noise_vs_image.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                  "dataset": args.dataset, "n": n, "steps": args.steps, "results": results,
                  "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d"),
                  "versions": versions(), "threads": torch.get_num_threads()}
        write_json(args.out, record)  # atomic: a failed run leaves the previous file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
