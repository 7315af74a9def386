"""Each Fig. 7 switch against the full method over training seeds: the README's table.

    python benchmarks/seed_switches.py benchmarks/seeds_tiny.json

Reads a ``seeds.json`` written by ``stages.seed_spread`` (``make reproduce SEEDS=3``) and prints,
per switch and metric, the difference of the means (switch − full, ×100) and 2 × the larger of
the two sample stds; a difference beyond that is marked better or worse.
"""

from __future__ import annotations

import json
import sys

METRICS = [("abs_rel", "synthetic AbsRel", -1), ("real_abs_rel", "real-styled AbsRel", -1),
           ("boundary_f1", "synthetic F1", 1), ("real_boundary_f1", "real-styled F1", 1)]  # sign: +1 higher is better
NOT_SWITCHES = ("FiffDepth", "mean layout", "teacher (", "Marigold")


def main(path: str) -> None:
    spread = json.load(open(path))["spread"]
    full = next(label for label in spread if label.startswith("FiffDepth"))
    print("| switch (vs full method) | " + " | ".join(name for _, name, _ in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for label, stats in spread.items():
        if label.startswith(NOT_SWITCHES):
            continue
        cells = []
        for key, _, sign in METRICS:
            (m0, s0, _), (m1, s1, _) = spread[full][key], stats[key]
            diff, two_std = m1 - m0, 2 * max(s0, s1)
            mark = f" **{'better' if diff * sign > 0 else 'worse'}**" if abs(diff) > two_std else ""
            cells.append(f"{diff:+.2f} (2 std {two_std:.2f}){mark}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/seeds_tiny.json")
