# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Figures and tables
#
# Regenerates the paper's figure analogues in `figures/` from the runs of 03–05:
# Fig. 1/4 (qualitative comparison on real photos and held-out scenes), Fig. 5 (depth vs ground
# truth), Fig. 6 (boundary close-ups), Fig. 7 (ablation grid), and the tables as markdown.
#
# *Runtime (tiny, 2 CPU cores): about a minute.*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/06_figures.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]
n_images = 4
marigold_steps = 10      # as 04_evaluate (the paper protocol: 50 × 10)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)


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
paths = stages.make_figures(out_dir, figures_dir, variants=variants, n_images=n_images,
                            marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble, device=device)
for p in paths:
    display(Markdown(f"**{Path(p).name}**"), Image(str(p)) if str(p).endswith(".png") else Markdown(Path(p).read_text()))

# %%
# checked by nbval (strict): the same on every execution
print(sorted(Path(p).name for p in paths))
