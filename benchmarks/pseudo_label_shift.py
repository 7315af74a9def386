"""How the d₋₁ target moves with Depth Anything's unknown disparity shift, and what sky does to it.

A known scene (96×128): sky on the top 30 % of the rows, a ground plane receding from 2 m to
40 m below it, a box at 3 m and a pole at 8 m. The "teacher" disparity is the true disparity
scaled to a 98th percentile of 1, plus a shift s on the scene (0, 0.05, 0.1), and 0 on the sky
(Depth Anything V2's sky). Each map goes through ``fiffdepth.teacher.disparity_to_depth`` and
the depth codec's normalisation (``fiffdepth.codecs.normalize_depth``, valid = label > 0): the
d₋₁ target before VAE encoding, in [-1, 1]. Two conventions are compared: the sky masked out
(what training uses) and the sky clipped to the far plane 1/eps (the previous convention).

    python benchmarks/pseudo_label_shift.py      # prints a table, writes pseudo_label_shift.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fiffdepth.codecs import normalize_depth
from fiffdepth.teacher import PSEUDO_LABEL_EPS, disparity_to_depth

SHIFTS = (0.0, 0.05, 0.1)
H, W = 96, 128


def scene() -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """(depth in m with 0 on the sky, sky mask, named probe pixels)."""
    horizon = int(0.3 * H)
    rows = np.arange(H, dtype=np.float64)[:, None].repeat(W, 1)
    depth = np.clip(2.0 * (H - horizon) / np.maximum(rows - horizon, 1e-6), 2.0, 40.0)
    depth[rows < horizon] = 0.0
    depth[55:85, 40:70] = 3.0  # a box
    depth[horizon:80, 100:103] = 8.0  # a pole
    pixels = {"box": (70, 55), "pole": (50, 101), "ground": (horizon + 22, 20), "far ground": (horizon + 7, 20)}
    probes = {f"{k} ({depth[p]:.1f} m)": p for k, p in pixels.items()}
    return depth, depth == 0, probes


def target(label: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(label)[None, None]
    return normalize_depth(t, t > 0)[0, 0].numpy()


def measure() -> dict:
    depth, sky, probes = scene()
    fg = ~sky
    true_disp = np.where(fg, 1.0 / np.where(fg, depth, 1.0), 0.0)
    true_disp = true_disp / np.percentile(true_disp[fg], 98)
    out = {"shifts": list(SHIFTS), "sky_fraction": float(sky.mean()), "conventions": {}}
    for name, background in (("sky masked (training)", 0.0), ("sky at the far plane 1/eps (before)", 1.0 / PSEUDO_LABEL_EPS)):
        rows, base = [], None
        for s in SHIFTS:
            disp = np.where(fg, true_disp + s, 0.0).astype(np.float32)
            t = target(disparity_to_depth(disp, background=background))
            base = t if base is None else base
            rows.append({"shift": s, **{k: round(float(t[p]), 3) for k, p in probes.items()},
                         "scene range": [round(float(t[fg].min()), 3), round(float(t[fg].max()), 3)],
                         "mean |change| vs shift 0": round(float(np.abs(t - base)[fg].mean()), 3)})
        out["conventions"][name] = rows
    return out


def markdown(result: dict) -> str:
    lines = []
    for name, rows in result["conventions"].items():
        keys = [k for k in rows[0] if k != "shift"]
        lines += [f"{name}:", "", "| shift | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        for r in rows:
            cells = [f"[{r[k][0]:.2f}, {r[k][1]:.2f}]" if isinstance(r[k], list) else f"{r[k]:.2f}" for k in keys]
            lines.append(f"| {r['shift']:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    res = measure()
    (Path(__file__).with_name("pseudo_label_shift.json")).write_text(json.dumps(res, indent=2) + "\n")
    print(f"sky: {100 * res['sky_fraction']:.0f} % of the pixels; normalised d₋₁ target in [-1, 1] (near = -1)\n")
    print(markdown(res))
