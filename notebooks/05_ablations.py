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
# # 05 · Ablations (Fig. 7) and baselines
#
# The four ablations of Section 4.3 — the trajectory predicting pure image latents, no
# trajectory, no teacher, the teacher at d0 instead of d₋₁ — plus FiffDepth from a randomly
# initialised UNet (no generator prior) and a Marigold-style multi-step fine-tune, all with
# the same data and steps. Scored on held-out scenes (AbsRel, δ1, boundary F1) and by
# agreement with the teacher's pseudo-labels on the real photos. Whatever the numbers say is
# reported as is.
#
# *Runtime (tiny, 2 CPU cores): under a minute after `03_train` and `04_evaluate`, which trained the variants and scored them (run alone, this notebook trains and scores them, two at a time); each extra seed retrains six variants and scores them again.*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/05_ablations.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
steps = 250            # the same as 03_train's
variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]
max_images = None
marigold_steps = 10      # as 04_evaluate (the paper protocol: 50 × 10)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)
extra_seeds = []         # e.g. [1, 2]: retrain every variant with these training seeds, report mean ± std


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
runs = stages.train_variants(out_dir, variants, steps=steps, preset=preset, overrides=overrides)  # 03_train's runs
for v, s in runs.items():
    print(f"{v:>18}: {s['steps']} steps in {s['seconds']:.0f} s")

# %%
plots.plot_losses({stages.label_of(v): L.runs / v for v in ["fiffdepth", *variants]},
                  terms=("loss", "d0_mae", "heldout_d0_mae"), out=f"{figures_dir}/ablation_losses.png")
plt.show()

# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
table = stages.evaluate_methods(out_dir, ["fiffdepth", *variants, stages.MARIGOLD, "teacher"], max_images=max_images,
                                marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble, device=device,
                                name="ablations", pseudo_agreement=True)
display(Markdown(table["markdown"]))

# %%
# checked by nbval (strict): the same on every execution
print({method: round(row["abs_rel"], 1) for method, row in table["rows"].items()})

# %%
plots.metric_bars(table["rows"], [("abs_rel", "synthetic AbsRel ×100 ↓"), ("boundary_f1", "synthetic boundary F1 ×100 ↑"),
                                  ("real_abs_rel", "real-styled AbsRel ×100 ↓"), ("real_boundary_f1", "real-styled boundary F1 ×100 ↑")],
                  out=f"{figures_dir}/ablations.png")
plt.show()

# %% [markdown]
# One training seed per variant cannot separate small differences from seed noise. With
# `extra_seeds` set, every FiffDepth variant is retrained with those seeds (same data, priors and
# steps) and each metric is reported as mean ± std over all seeds. All seeds' runs train in one
# pool of one-thread processes, as in `03_train` (off by default to keep `make reproduce` short).

# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
if extra_seeds:
    spread = stages.seed_spread(out_dir, seeds=extra_seeds, variants=["fiffdepth", *variants], steps=steps,
                                preset=preset, overrides=overrides, max_images=max_images, device=device)
    display(Markdown(spread["markdown"]))

# %% [markdown]
# Explorer: pick an image, two methods and a colormap; the slider moves the split between them.

# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
from fiffdepth.explorer import explorer

explorer(out_dir, ["fiffdepth", *variants, stages.MARIGOLD, "teacher"], marigold_steps=4, marigold_ensemble=1)
