"""Time Depth Pro's boundary metrics (Table 2) at 1024×768, the size of iBims/Sintel-like frames.

    python benchmarks/bench_metrics.py [--repeats 5] [--out FILE]

Prints the median seconds per call of ``boundary_f1`` and ``boundary_recall`` on a synthetic
depth map with a square occluder and multiplicative noise, and writes them as JSON.
"""

import argparse
import json
import time

import numpy as np

from fiffdepth import metrics as M
from fiffdepth.bench import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    gt = np.full((768, 1024), 5.0)
    gt[200:500, 300:700] = 1.0
    pred = gt * rng.uniform(0.97, 1.03, gt.shape)
    result = {"resolution": [768, 1024], "repeats": args.repeats, "versions": versions(), "seconds": {}}
    for fn, target in ((M.boundary_f1, gt), (M.boundary_recall, (gt < 2).astype(float))):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn(pred, target)
            times.append(time.perf_counter() - t0)
        result["seconds"][fn.__name__] = float(np.median(times))
        print(f"{fn.__name__}: {np.median(times):.3f} s per call (median of {args.repeats})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
