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
# # 07 · Lab: train an ablation yourself
#
# Set the knobs of Eq. 7 and press **Train**. FiffDepth is fine-tuned from the shipped generator
# prior (`weights/generator`) in a background thread, so this notebook stays usable while a
# progress bar and the loss of every term (Eq. 5–7) update. A finished run joins the comparison:
# its scores beside the full method and the mean-layout baseline on the held-out scenes of both
# embedded domains, the split-view explorer, and its d0 and d₋₁ maps.
#
# | control | what it changes |
# |---|---|
# | γ | Eq. 2: the trajectory's clean latent b0 = γ·x0 + (1 − γ)·d0* (a box and a slider) |
# | λ_MAE, λ_GM | Eq. 5–7: weights of the latent MAE and gradient-matching terms at d0 and d₋₁ |
# | trajectory term, λ_k | Eq. 3: keep the diffusion trajectory L_k and its weight (off: Fig. 7's "w/o trajectory") |
# | L_k target | the blend of Eq. 2, or the pure image latent (Fig. 7's γ = 1 ablation) |
# | teacher at | where the teacher's pseudo-labels supervise real images: d₋₁ (Eq. 4), d0, or nowhere |
# | steps, seed | optimisation steps (batch 8, as 03_train) and the training seed |
#
# Runs are cached by their settings in `OUT/lab/runs/<settings>`: the same settings train once,
# across sessions too. Values that cannot train (γ outside [0, 1], fewer than 1 step, a negative
# weight) are refused with a message under the button. Paths are relative to the repository
# root (`make lab` starts kernels there); the data, pseudo-labels and latent caches of
# `make reproduce` are reused, or made here when missing.
#
# *Runtime (tiny, 2 CPU cores): a run at the default settings trains the same 250 steps as
# 03_train (145 s there), then scoring takes about 25 s, so about 3 minutes once the latent caches
# exist; a first run on a fresh OUT builds them (about 4 minutes more). Measured through the
# browser while other jobs loaded the machine (load 6–8): 31 minutes for a first run (README,
# Explore). Making the data, when missing, takes about 3 minutes.*

# %% tags=["parameters"]
# parameters
out_dir = "outputs"   # the reproduction's output root: data, pseudo-labels and latent caches come from there
device = "cpu"
defaults = {}         # the controls' starting values, e.g. {"steps": 50, "gamma": 0.7}
max_images = None     # held-out scenes scored per domain (None = all 64)
n_show = 3            # held-out scenes per domain in the explorer
data = {}             # stages.make_data settings, used only when OUT/data is missing (default: 00_data's)


# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
from fiffdepth import lab

lab.prepare_inputs(out_dir, **data)  # the embedded data and pseudo-labels, when 00 and 02 have not made them

# %% [markdown]
# The lab. Scoring the baselines takes a few seconds after it appears; a run's table row is highlighted.

# %% tags=["nbval-ignore-output"]
# nbval-ignore-output
ui = lab.LabWidget(lab.Lab(out_dir, max_images=max_images, n_show=n_show, device=device), lab.LabSettings(**defaults))
ui

# %% [markdown]
# The same from code: `ui.lab.train(lab.LabSettings(gamma=0.8, steps=100))` trains (or finds)
# a run and `ui.lab.compare()["markdown"]` gives the table as markdown.
