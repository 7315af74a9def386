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
# # 01 · The two priors: a latent diffusion generator and a Depth Anything teacher
#
# FiffDepth starts from a **pretrained image diffusion model** (Stable Diffusion 2 in the paper)
# and distils a **DINOv2-based depth model** (Depth Anything V2-Large) into its d₋₁ step. At
# paper scale both come from the hub. The embedded default mirrors that with small models
# pretrained on this project's 2-core machine and shipped in `weights/` (each with a model card:
# command, commit, data, steps, wall time, held-out scores), loaded with the libraries' own
# `from_pretrained`: a tiny `AutoencoderKL` + `UNet2DConditionModel` (unconditional latent
# diffusion on images of both domains and the photos, DDPM 1000 steps, v-prediction) and a
# tiny `DepthAnythingForDepthEstimation` trained with depth on both domains.
# `pretrain = True` re-creates them from scratch here (`fiffdepth pretrain`, about an hour).
#
# *Runtime (tiny, 2 CPU cores): under a minute with the shipped priors.*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/01_priors.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
pretrain = False      # True: pretrain the priors anew into OUT/priors instead of using weights/
vae_steps = None      # None = the defaults of `fiffdepth pretrain` (those of the shipped priors)
unet_steps = None
teacher_steps = None
sample_steps = 50


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
report = stages.make_priors(out_dir, preset, pretrain=pretrain, vae_steps=vae_steps, unet_steps=unet_steps,
                            teacher_steps=teacher_steps, seed=seed)
if preset == "tiny":
    print("generator:", L.generator)
    print("teacher:  ", L.teacher)
    display(Markdown(stages.priors_markdown(report)))
else:
    print(report)

# %%
# checked by nbval (strict): the same on every execution
if preset == "tiny":
    print("generator components:", sorted(p.name for p in Path(L.generator).iterdir() if p.is_dir()))

# %% [markdown]
# Samples of the generator prior and VAE round trips (the depth codec re-uses the image VAE, as in Marigold):

# %%
if preset == "tiny":
    from fiffdepth.generator import generator_figures

    figs = generator_figures(L.generator, L.eval, figures_dir, sample_steps=sample_steps, seed=seed)
    display(Image(figs["samples"]), Image(figs["roundtrip"]))
