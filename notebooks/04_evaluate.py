# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Evaluate: Table 1/2 analogues and Table 3 (runtime)
#
# Table 1: affine-invariant depth (Marigold's protocol: least squares in depth, clip, per-image
# AbsRel and δ1, ×100). Table 2: Depth Pro's boundary F1. At the embedded default the benchmark
# is the held-out scenes (exact depth); FiffDepth is compared with the tiny teacher (our Depth
# Anything V2 analogue) and a Marigold-style multi-step fine-tune of the same UNet. The row
# "FiffDepth, shipped weights" is the model in `weights/fiffdepth`: the same method trained for
# more steps than this notebook can afford, to show where more training goes. At paper
# scale pass `datasets` such as `["nyu:/data/nyuv2", "kitti:/data/kitti", ...]`.
# Table 3: `fiffdepth bench` times every method on the same components.
#
# *Runtime (tiny, 2 CPU cores): about 5 minutes (`03_train` trained every run): this table's four methods and `05_ablations`' five variants scored on both domains, two at a time, so `05` finds its scores kept.*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/04_evaluate.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
steps = 250              # Marigold baseline steps (same as FiffDepth's)
datasets = []            # [] = the held-out scenes of both embedded domains (synthetic, real-styled)
max_images = None
marigold_steps = 10      # the paper protocol is 50 DDIM steps × ensemble 10 (about 10 s/image here, 20× the time)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)
variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]  # 05's, scored here too
bench_images = 2
bench_resolution = 128   # the embedded models' processing resolution; Table 3 at 512 px: benchmarks/RESULTS.md


# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from fiffdepth import plots, stages

L = stages.layout(out_dir)
Path(figures_dir).mkdir(parents=True, exist_ok=True)


# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
stages.train_variants(out_dir, [stages.MARIGOLD], steps=steps, preset=preset, overrides=overrides)  # 03_train's run
# this table's methods and 05_ablations' variants, scored side by side in one pool (05 reads the kept scores)
stages.score_methods(out_dir, ["fiffdepth", stages.SHIPPED, "teacher", stages.MARIGOLD, *variants], datasets=datasets,
                     max_images=max_images, marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble,
                     device=device, name="main", pseudo_agreement=["fiffdepth", stages.MARIGOLD, *variants])
results = stages.evaluate_methods(out_dir, ["fiffdepth", stages.SHIPPED, "teacher", stages.MARIGOLD], datasets=datasets,
                                  max_images=max_images, marigold_steps=marigold_steps,
                                  marigold_ensemble=marigold_ensemble, device=device, name="main")
display(Markdown(results["markdown"]))

# %%
# checked by nbval (strict): the same on every execution
print({method: round(row["abs_rel"], 1) for method, row in results["rows"].items()})

# %% [markdown]
# Table 3 analogue: seconds per image for each method at `bench_resolution` on this machine, and the FLOP ratios:

# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
from fiffdepth.bench import bench_tiny

bench = bench_tiny(images=bench_images, resolution=bench_resolution, out=L.results / "bench_tiny.json")
print(json.dumps({k: bench[k] for k in ("ratios", "flop_ratios")}, indent=1))
