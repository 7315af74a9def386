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
# # 00 · Data: the embedded RGB-D world in two looks, held-out scenes and real photos
#
# FiffDepth trains on **synthetic images with exact depth** (the d0 terms and the diffusion
# trajectory, Eq. 5–6) and on **real images supervised by a teacher** (the d₋₁ term, Eq. 4).
# At the embedded default both come from this machine. One procedural scene generator (indoor
# rooms and streets with exact depth and thin structures: chair legs, lamp poles, fences)
# renders two domains:
#
# - **synthetic**: clean renders, used with their exact depth for d0 and L_k (Hypersim and
#   Virtual KITTI's role);
# - **real-styled**: the same kind of scenes with a camera-like look (photo-modulated
#   materials, colour casts, haze, lens blur, vignetting, chromatic aberration, sensor noise,
#   JPEG). Their depth trains the teacher (as DA-V2 learnt from real images) and scores the
#   evaluation; FiffDepth's real half only sees the images, with the teacher's pseudo-labels
#   (LAION-Art's role), together with the photos that ship inside scikit-image.
#
# At paper scale this notebook only checks the data roots (Hypersim, Virtual KITTI 2,
# LAION-Art) given in `overrides`.
#
# *Runtime (tiny, 2 CPU cores): about 2 minutes.*
#
# *This copy has no outputs. `make reproduce` writes it executed, outputs included, to
# `outputs/notebooks/00_data.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
# here, where finished stages are reused.*

# %% tags=["parameters"]
# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
n_synth = 2000       # synthetic training scenes
n_styled = 1000      # real-styled scenes with depth (the teacher's training data only)
n_styled_real = 1000 # real-styled images without depth (FiffDepth's real half, with the photos)
n_eval = 64          # held-out scenes per domain (other seeds) for every evaluation
size = 128           # rendered side in pixels


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
if preset == "tiny":
    report = stages.make_data(out_dir, n_synth=n_synth, n_eval=n_eval, size=size, n_styled=n_styled,
                              n_styled_real=n_styled_real, seed=seed)
    print(json.dumps(report, indent=1))
else:
    cfg = stages.stage_config(out_dir, preset, overrides)
    missing = stages.check_data_roots(cfg)
    assert not missing, f"data roots not found: {missing} (set them with overrides)"
    print("paper-scale data:", cfg.data.synthetic, cfg.data.real)

# %% [markdown]
# Scenes, depth (near = red, far = blue) and valid masks (sky and invalid pixels are masked out of the loss):

# %%
from fiffdepth.data.synthetic import plot_scene_grid

plot_scene_grid(f"{figures_dir}/embedded_scenes.png", n=8, size=size, seed=seed)
display(Image(f"{figures_dir}/embedded_scenes.png"))

# %% [markdown]
# The two domains: the same scenes (same geometry and depth) rendered clean and real-styled:

# %%
from fiffdepth.data.synthetic import plot_domains

plot_domains(f"{figures_dir}/domains.png", n=6, size=size, seed=seed)
display(Image(f"{figures_dir}/domains.png"))

# %% [markdown]
# Depth statistics of the training set, and where the thin structures are (the details FiffDepth is about):

# %%
# NBVAL_CHECK_OUTPUT
from fiffdepth.data.cli import depth_stats

if preset == "tiny":
    stats = depth_stats(L.synth)
    print(f"{stats['scenes']} scenes, kinds {stats['kinds']}, scenes with thin structures: {stats['thin_scene_share']:.0%}")

# %%
if preset == "tiny":
    plots.thin_structure_grid(L.synth, n=4, out=f"{figures_dir}/thin_structures.png")
    plt.show()

# %% [markdown]
# The real photos (12 scikit-image photos, each also as augmented crops):

# %%
from fiffdepth.data.real import embedded_real_images

if preset == "tiny":
    plots.image_grid(embedded_real_images(12, size, seed), cols=6)
    plt.show()
