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
# # 02 · Teacher pseudo-labels for the real images
#
# The teacher predicts relative inverse depth (disparity). FiffDepth supervises d₋₁ with it in
# the normalised depth representation of the depth codec: `depth = p98(disp) / disp`, with pixels
# below 0.02 × p98 (sky, background) left invalid (`fiffdepth.teacher.disparity_to_depth`), then
# the codec's 2/98-percentile affine normalisation over the valid pixels, as for synthetic ground
# truth. The job is resumable: finished images are skipped.
#
# *Runtime (tiny, 2 CPU cores): under a minute (1096 images).*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/02_teacher_pseudo_labels.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
batch_size = 16


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
result = stages.make_pseudo_labels(out_dir, batch_size=batch_size, preset=preset, overrides=overrides)
print({k: (v if k != "failed" else len(v)) for k, v in result.items()})

# %%
# checked by nbval (strict): the same on every execution
print(f"{result['written'] + result['skipped']} images have pseudo-labels, {len(result['failed'])} could not be read")

# %% [markdown]
# Image | pseudo-label (near = red) on six photos and six real-styled images:

# %%
from fiffdepth.data.io import list_files, read_rgb
from fiffdepth.teacher import Teacher, plot_pseudo_labels

files = list_files(L.real)
photos = [read_rgb(f) for f in files[:6] + files[-6:]]  # six photos, six real-styled images
plot_pseudo_labels(Teacher.from_pretrained(L.teacher), photos, f"{figures_dir}/teacher_pseudo_labels.png")
display(Image(f"{figures_dir}/teacher_pseudo_labels.png"))
