"""``fiffdepth data {synth,real,stats,figure}``: make or inspect datasets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True, help="what to do")
    p = sub.add_parser("synth", help="render embedded synthetic RGB-D scenes to DIR/{rgb,depth,mask}")
    p.add_argument("--n", type=int, default=1000, help="number of scenes")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--workers", type=int, default=2, help="processes (output does not depend on it)")
    p = sub.add_parser("real", help="export the augmented embedded real photos to a folder")
    p.add_argument("--n", type=int, default=None, help="number of images (default 8 per photo)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("stats", help="print depth statistics of a synth DIR")
    p.add_argument("dir")
    p = sub.add_parser("figure", help="draw the embedded-scenes figure")
    p.add_argument("--out", default="figures/embedded_scenes.png")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)


def depth_stats(root) -> dict:
    """Per-scene near (2nd pct), median and far (98th pct) depth over a synth DIR, summarised."""
    from .io import DataError, list_files, read_gray, read_npy
    from .synthetic import THIN_MIN_PX, thin_structure_mask

    root = Path(root)
    files = list_files(root / "depth", (".npy",), recursive=False)
    rows, skipped = [], 0
    for f in files:
        try:
            depth = read_npy(f)
            mpath = root / "mask" / (f.stem + ".png")
            mask = (read_gray(mpath) > 0.5) if mpath.exists() else depth > 0
        except DataError as err:
            skipped += 1
            print(f"skip: {err}")
            continue
        mask &= np.isfinite(depth) & (depth > 0)
        v = depth[mask]
        if v.size == 0:
            skipped += 1
            continue
        p2, p50, p98 = np.percentile(v, [2, 50, 98])
        rows.append((p2, p50, p98, mask.mean(), thin_structure_mask(depth, mask).sum()))
    if not rows:
        raise DataError(f"{root}: no scene with valid depth")
    a = np.array(rows)
    kinds = {}
    meta = root / "meta.jsonl"
    if meta.exists():
        for line in meta.read_text().splitlines():
            k = json.loads(line).get("kind", "?")
            kinds[k] = kinds.get(k, 0) + 1
    q = lambda x: [float(np.min(x)), float(np.median(x)), float(np.max(x))]  # noqa: E731
    return {"scenes": len(rows), "skipped": skipped, "kinds": kinds,
            "near_p2_min_med_max": q(a[:, 0]), "median_min_med_max": q(a[:, 1]), "far_p98_min_med_max": q(a[:, 2]),
            "far_over_near_median": float(np.median(a[:, 2] / a[:, 0])),
            "valid_fraction_mean": float(a[:, 3].mean()),
            "thin_scene_share": float((a[:, 4] >= THIN_MIN_PX).mean()), "thin_px_median": float(np.median(a[:, 4]))}


def run(args) -> int:
    if args.data_command == "synth":
        from .synthetic import write_synthetic_dataset

        t0 = time.perf_counter()
        metas = write_synthetic_dataset(args.out, args.n, args.size, args.seed, args.workers)
        dt = time.perf_counter() - t0
        from .synthetic import THIN_MIN_PX

        thin = np.mean([m["thin_px"] >= THIN_MIN_PX for m in metas]) if metas else 0.0
        print(f"wrote {len(metas)} scenes to {args.out} in {dt:.1f} s ({1000 * dt / max(1, len(metas)):.1f} ms/scene "
              f"with {args.workers} workers); scenes with thin structures: {100 * thin:.0f}%")
        return 0
    if args.data_command == "real":
        from PIL import Image

        from .real import embedded_real_images

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        images = embedded_real_images(args.n, args.size, args.seed)
        for i, im in enumerate(images):
            Image.fromarray(im).save(out / f"{i:06d}.png")
        print(f"wrote {len(images)} images to {out}")
        return 0
    if args.data_command == "stats":
        s = depth_stats(args.dir)
        for k, v in s.items():
            print(f"{k:>24}: {[round(x, 2) for x in v] if isinstance(v, list) else v}")
        return 0
    if args.data_command == "figure":
        from .synthetic import plot_scene_grid

        plot_scene_grid(args.out, args.n, args.size, args.seed)
        print(f"wrote {args.out}")
        return 0
    raise SystemExit(f"unknown data command {args.data_command}")
