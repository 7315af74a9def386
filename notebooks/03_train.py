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
# # 03 · Train FiffDepth (Eq. 7)
#
# One optimisation step = half a batch of synthetic latents (d0 = ε̂θ(x0, 0) against GT depth
# latents with MAE + gradient matching, Eq. 5; the diffusion trajectory term L_k on the blended
# latent of Eq. 2, Eq. 6) and half real latents (d₋₁ = ε̂θ(d0, −1) against the teacher's
# pseudo-label latents, Eq. 4). The plot below redraws as training logs; the run directory
# (`OUT/runs/fiffdepth`) holds checkpoints, `losses.jsonl`, TensorBoard logs and the final model.
#
# The same cell trains the models `04_evaluate` and `05_ablations` compare with it: the Fig. 7
# ablations, the random-init UNet and the Marigold-style baseline, with the same data and steps.
# On a CPU every run trains in its own one-thread process, as many at a time as there are cores
# (`stages.train_variants`): on 2 cores that is faster than one run after another on 2 threads, and
# a run's bytes do not depend on the machine's core count. With a GPU they train one after another.
#
# *Runtime (tiny, 2 CPU cores): about 18 minutes on the slower of the project's machines (latent caches, then seven runs of 250 steps, two at a time).*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/03_train.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
steps = 250          # the same for every variant in 05_ablations (make reproduce's 30-minute budget)
variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]  # as 05_ablations'
baseline = True          # also train the Marigold-style baseline of 04_evaluate
workers = None           # runs side by side on a CPU (None: one per core)
n_show = 4


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
live = plots.LiveLossPlot("fiffdepth", every=5)
runs = stages.train_variants(out_dir, ["fiffdepth", *variants] + ([stages.MARIGOLD] if baseline else []), steps=steps,
                             preset=preset, overrides=overrides, workers=workers, on_log={"fiffdepth": live})
for name, s in runs.items():
    print(f"{name:>18}: {s['steps']} steps, {s['it_per_s'] or 0:.2f} it/s")
summary = runs["fiffdepth"]

# %%
# checked by nbval (strict): the same on every execution
print(f"{summary['steps']} steps, final loss {summary['final'].get('loss', float('nan')):.4f}")

# %%
plots.plot_losses({"FiffDepth": L.runs / "fiffdepth"}, out=f"{figures_dir}/loss_curves.png")
plt.show()

# %% [markdown]
# d0 (Eq. 1, what inference returns) and d₋₁ (Eq. 4, the step the teacher supervises), side by side:

# %%
from fiffdepth.data.io import list_files, read_rgb
from fiffdepth.data.synthetic import SyntheticDepthDataset
from fiffdepth.pipeline import FiffDepthPipeline

pipe = FiffDepthPipeline.from_pretrained(L.runs / "fiffdepth", device=device)
scenes = SyntheticDepthDataset(L.eval)
images = [scenes[i]["image"] for i in range(n_show)] + [read_rgb(f) for f in list_files(L.real)[::24][:n_show]]
out = pipe(images, return_extended=True)
shown = [im.permute(1, 2, 0).numpy() if hasattr(im, "permute") else im for im in images]
plots.comparison_grid(shown, {"d0 (Eq. 1)": [p[..., 0] for p in out.prediction],  # Marigold's (H, W, 1) per image
                             "d₋₁ (Eq. 4)": [p[..., 0] for p in out.prediction_extended]},
                      out=f"{figures_dir}/d0_vs_dminus1.png")
plt.show()
