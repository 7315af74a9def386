"""Write the numbered notebooks from the cell lists below (``python notebooks/make_notebooks.py``).

The notebooks are kept thin and without outputs in git; this script is their source, so a
change to a notebook is a reviewable diff here. Cell markers: a cell starting with ``#
parameters`` gets papermill's ``parameters`` tag; ``# nbval-ignore-output`` tags timing or
random output; ``# NBVAL_CHECK_OUTPUT`` asks nbval to compare the output exactly.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

COMMON_PARAMS = '''# parameters
preset = "tiny"          # "tiny" (embedded, CPU) or "paper" (SD2 + Depth Anything V2-L + Hypersim/VKITTI/LAION-Art)
out_dir = "outputs"      # every stage writes under here (relative to the repository root)
figures_dir = "figures"  # where the paper's figure analogues go
seed = 0
device = "cpu"
overrides = {}           # dotted config overrides, e.g. {"data.synthetic": ["hypersim:/data/hypersim"]}
'''

SETUP = '''import json
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from fiffdepth import plots, stages

L = stages.layout(out_dir)
Path(figures_dir).mkdir(parents=True, exist_ok=True)
'''

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["00_data"] = [
    ("md", """# 00 · Data: the embedded RGB-D world in two looks, held-out scenes and real photos

FiffDepth trains on **synthetic images with exact depth** (the d0 terms and the diffusion
trajectory, Eq. 5–6) and on **real images supervised by a teacher** (the d₋₁ term, Eq. 4).
At the embedded default both come from this machine. One procedural scene generator (indoor
rooms and streets with exact depth and thin structures: chair legs, lamp poles, fences)
renders two domains:

- **synthetic**: clean renders, used with their exact depth for d0 and L_k (Hypersim and
  Virtual KITTI's role);
- **real-styled**: the same kind of scenes with a camera-like look (photo-modulated
  materials, colour casts, haze, lens blur, vignetting, chromatic aberration, sensor noise,
  JPEG). Their depth trains the teacher (as DA-V2 learnt from real images) and scores the
  evaluation; FiffDepth's real half only sees the images, with the teacher's pseudo-labels
  (LAION-Art's role), together with the photos that ship inside scikit-image.

At paper scale this notebook only checks the data roots (Hypersim, Virtual KITTI 2,
LAION-Art) given in `overrides`.

*Runtime (tiny, 2 CPU cores): about 2 minutes.*"""),
    ("code", COMMON_PARAMS + '''n_synth = 2000       # synthetic training scenes
n_styled = 1000      # real-styled scenes with depth (the teacher's training data only)
n_styled_real = 1000 # real-styled images without depth (FiffDepth's real half, with the photos)
n_eval = 64          # held-out scenes per domain (other seeds) for every evaluation
size = 128           # rendered side in pixels
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
if preset == "tiny":
    report = stages.make_data(out_dir, n_synth=n_synth, n_eval=n_eval, size=size, n_styled=n_styled,
                              n_styled_real=n_styled_real, seed=seed)
    print(json.dumps(report, indent=1))
else:
    cfg = stages.stage_config(out_dir, preset, overrides)
    missing = stages.check_data_roots(cfg)
    assert not missing, f"data roots not found: {missing} (set them with overrides)"
    print("paper-scale data:", cfg.data.synthetic, cfg.data.real)'''),
    ("md", "Scenes, depth (near = red, far = blue) and valid masks (sky and invalid pixels are masked out of the loss):"),
    ("code", '''from fiffdepth.data.synthetic import plot_scene_grid

plot_scene_grid(f"{figures_dir}/embedded_scenes.png", n=8, size=size, seed=seed)
display(Image(f"{figures_dir}/embedded_scenes.png"))'''),
    ("md", "The two domains: the same scenes (same geometry and depth) rendered clean and real-styled:"),
    ("code", '''from fiffdepth.data.synthetic import plot_domains

plot_domains(f"{figures_dir}/domains.png", n=6, size=size, seed=seed)
display(Image(f"{figures_dir}/domains.png"))'''),
    ("md", "Depth statistics of the training set, and where the thin structures are (the details FiffDepth is about):"),
    ("code", '''# NBVAL_CHECK_OUTPUT
from fiffdepth.data.cli import depth_stats

if preset == "tiny":
    stats = depth_stats(L.synth)
    print(f"{stats['scenes']} scenes, kinds {stats['kinds']}, scenes with thin structures: {stats['thin_scene_share']:.0%}")'''),
    ("code", '''if preset == "tiny":
    from fiffdepth.data.synthetic import SyntheticDepthDataset, thin_structure_mask

    ds = SyntheticDepthDataset(L.synth)
    panels, titles = [], []
    for i in range(4):
        it = ds[i]
        d, v = it["depth"][0].numpy(), it["valid_mask"][0].numpy()
        panels += [it["image"].permute(1, 2, 0).numpy(), plots.depth_rgb(d, v), v.astype(float), thin_structure_mask(d, v).astype(float)]
        titles += ["image", "depth", "valid mask", "thin structures"]
    plots.image_grid(panels, titles, cols=8, out=f"{figures_dir}/thin_structures.png")
    plt.show()'''),
    ("md", "The real photos (12 scikit-image photos, each also as augmented crops):"),
    ("code", '''from fiffdepth.data.real import embedded_real_images

if preset == "tiny":
    plots.image_grid(embedded_real_images(12, size, seed), cols=6)
    plt.show()'''),
]

NOTEBOOKS["01_priors"] = [
    ("md", """# 01 · The two priors: a latent diffusion generator and a Depth Anything teacher

FiffDepth starts from a **pretrained image diffusion model** (Stable Diffusion 2 in the paper)
and distils a **DINOv2-based depth model** (Depth Anything V2-Large) into its d₋₁ step. At
paper scale both come from the hub. The embedded default mirrors that with small models
pretrained on this project's 2-core machine and shipped in `weights/` (each with a model card:
command, commit, data, steps, wall time, held-out scores), loaded with the libraries' own
`from_pretrained`: a tiny `AutoencoderKL` + `UNet2DConditionModel` (unconditional latent
diffusion on images of both domains and the photos, DDPM 1000 steps, v-prediction) and a
tiny `DepthAnythingForDepthEstimation` trained with depth on both domains.
`pretrain = True` re-creates them from scratch here (`fiffdepth pretrain`, about an hour).

*Runtime (tiny, 2 CPU cores): under a minute with the shipped priors.*"""),
    ("code", COMMON_PARAMS + '''pretrain = False      # True: pretrain the priors anew into OUT/priors instead of using weights/
vae_steps = None      # None = the defaults of `fiffdepth pretrain` (those of the shipped priors)
unet_steps = None
teacher_steps = None
sample_steps = 50
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
report = stages.make_priors(out_dir, preset, pretrain=pretrain, vae_steps=vae_steps, unet_steps=unet_steps,
                            teacher_steps=teacher_steps, seed=seed)
if preset == "tiny":
    print("generator:", L.generator)
    print("teacher:  ", L.teacher)
    display(Markdown(stages.priors_markdown(report)))
else:
    print(report)'''),
    ("md", "Samples of the generator prior and VAE round trips (the depth codec re-uses the image VAE, as in Marigold):"),
    ("code", '''if preset == "tiny":
    from fiffdepth.generator import generator_figures

    figs = generator_figures(L.generator, L.eval, figures_dir, sample_steps=sample_steps, seed=seed)
    display(Image(figs["samples"]), Image(figs["roundtrip"]))'''),
]

NOTEBOOKS["02_teacher_pseudo_labels"] = [
    ("md", """# 02 · Teacher pseudo-labels for the real images

The teacher predicts relative inverse depth (disparity). FiffDepth supervises d₋₁ with it in
the normalised depth representation of the depth codec: `depth = p98(disp) / disp`, with pixels
below 0.02 × p98 (sky, background) left invalid (`fiffdepth.teacher.disparity_to_depth`), then
the codec's 2/98-percentile affine normalisation over the valid pixels, as for synthetic ground
truth. The job is resumable: finished images are skipped.

*Runtime (tiny, 2 CPU cores): under a minute (1096 images).*"""),
    ("code", COMMON_PARAMS + '''batch_size = 16
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
result = stages.make_pseudo_labels(out_dir, batch_size=batch_size, preset=preset, overrides=overrides)
print({k: (v if k != "failed" else len(v)) for k, v in result.items()})'''),
    ("md", "Image | pseudo-label (near = red) on six photos and six real-styled images:"),
    ("code", '''from fiffdepth.data.io import list_files, read_rgb
from fiffdepth.teacher import Teacher, plot_pseudo_labels

files = list_files(L.real)
photos = [read_rgb(f) for f in files[:6] + files[-6:]]  # six photos, six real-styled images
plot_pseudo_labels(Teacher.from_pretrained(L.teacher), photos, f"{figures_dir}/teacher_pseudo_labels.png")
display(Image(f"{figures_dir}/teacher_pseudo_labels.png"))'''),
]

NOTEBOOKS["03_train"] = [
    ("md", """# 03 · Train FiffDepth (Eq. 7)

One optimisation step = half a batch of synthetic latents (d0 = ε̂θ(x0, 0) against GT depth
latents with MAE + gradient matching, Eq. 5; the diffusion trajectory term L_k on the blended
latent of Eq. 2, Eq. 6) and half real latents (d₋₁ = ε̂θ(d0, −1) against the teacher's
pseudo-label latents, Eq. 4). The plot below redraws as training logs; the run directory
(`OUT/runs/fiffdepth`) holds checkpoints, `losses.jsonl`, TensorBoard logs and the final model.

*Runtime (tiny, 2 CPU cores): about 6 minutes (latent caches, then 250 steps).*"""),
    ("code", COMMON_PARAMS + '''steps = 250          # the same for every variant in 05_ablations (make reproduce's 30-minute budget)
n_show = 4
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
live = plots.LiveLossPlot("fiffdepth", every=5)
summary = stages.train_variant(out_dir, "fiffdepth", steps=steps, preset=preset, overrides=overrides, on_log=live)
print(f"{summary['steps']} steps, {summary['it_per_s'] or 0:.2f} it/s, final loss {summary['final'].get('loss', float('nan')):.4f}")'''),
    ("code", '''plots.plot_losses({"FiffDepth": L.runs / "fiffdepth"}, out=f"{figures_dir}/loss_curves.png")
plt.show()'''),
    ("md", "d0 (Eq. 1, what inference returns) and d₋₁ (Eq. 4, the step the teacher supervises), side by side:"),
    ("code", '''from fiffdepth.data.io import list_files, read_rgb
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
plt.show()'''),
]

NOTEBOOKS["04_evaluate"] = [
    ("md", """# 04 · Evaluate: Table 1/2 analogues and Table 3 (runtime)

Table 1: affine-invariant depth (Marigold's protocol: least squares in depth, clip, per-image
AbsRel and δ1, ×100). Table 2: Depth Pro's boundary F1. At the embedded default the benchmark
is the held-out scenes (exact depth); FiffDepth is compared with the tiny teacher (our Depth
Anything V2 analogue) and a Marigold-style multi-step fine-tune of the same UNet. The row
"FiffDepth, shipped weights" is the model in `weights/fiffdepth`: the same method trained for
more steps than this notebook can afford, to show where more training goes. At paper
scale pass `datasets` such as `["nyu:/data/nyuv2", "kitti:/data/kitti", ...]`.
Table 3: `fiffdepth bench` times every method on the same components.

*Runtime (tiny, 2 CPU cores): about 6 minutes (training the Marigold baseline, then evaluation on both domains).*"""),
    ("code", COMMON_PARAMS + '''steps = 250              # Marigold baseline steps (same as FiffDepth's)
datasets = []            # [] = the held-out scenes of both embedded domains (synthetic, real-styled)
max_images = None
marigold_steps = 10      # the paper protocol is 50 DDIM steps × ensemble 10 (about 10 s/image here, 20× the time)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)
bench_images = 2
bench_resolution = 256   # Table 3 at 512 px: benchmarks/RESULTS.md (fiffdepth bench)
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
stages.train_variant(out_dir, stages.MARIGOLD, steps=steps, preset=preset, overrides=overrides)
results = stages.evaluate_methods(out_dir, ["fiffdepth", stages.SHIPPED, "teacher", stages.MARIGOLD], datasets=datasets,
                                  max_images=max_images, marigold_steps=marigold_steps,
                                  marigold_ensemble=marigold_ensemble, device=device, name="main")
display(Markdown(results["markdown"]))'''),
    ("md", "Table 3 analogue: seconds per image for each method at 512×512 on this machine, and the FLOP ratios:"),
    ("code", '''# nbval-ignore-output
from fiffdepth.bench import bench_tiny

bench = bench_tiny(images=bench_images, resolution=bench_resolution, out=L.results / "bench_tiny.json")
print(json.dumps({k: bench[k] for k in ("ratios", "flop_ratios")}, indent=1))'''),
]

NOTEBOOKS["05_ablations"] = [
    ("md", """# 05 · Ablations (Fig. 7) and baselines

The four ablations of Section 4.3 — the trajectory predicting pure image latents, no
trajectory, no teacher, the teacher at d0 instead of d₋₁ — plus FiffDepth from a randomly
initialised UNet (no generator prior) and a Marigold-style multi-step fine-tune, all with
the same data and steps. Scored on held-out scenes (AbsRel, δ1, boundary F1) and by
agreement with the teacher's pseudo-labels on the real photos. Whatever the numbers say is
reported as is.

*Runtime (tiny, 2 CPU cores): about 20 minutes: five variants of ≈ 2 minutes each, then scoring eight methods; each extra seed adds about as much again.*"""),
    ("code", COMMON_PARAMS + '''steps = 250            # the same as 03_train's
variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]
max_images = None
marigold_steps = 10      # as 04_evaluate (the paper protocol: 50 × 10)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)
extra_seeds = []         # e.g. [1, 2]: retrain every variant with these training seeds, report mean ± std
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
for v in variants:
    s = stages.train_variant(out_dir, v, steps=steps, preset=preset, overrides=overrides)
    print(f"{v:>18}: {s['steps']} steps in {s['seconds']:.0f} s")'''),
    ("code", '''plots.plot_losses({stages.label_of(v): L.runs / v for v in ["fiffdepth", *variants]},
                  terms=("loss", "d0_mae", "heldout_d0_mae"), out=f"{figures_dir}/ablation_losses.png")
plt.show()'''),
    ("code", '''# nbval-ignore-output
table = stages.evaluate_methods(out_dir, ["fiffdepth", *variants, stages.MARIGOLD, "teacher"], max_images=max_images,
                                marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble, device=device,
                                name="ablations", pseudo_agreement=True)
display(Markdown(table["markdown"]))'''),
    ("code", '''plots.metric_bars(table["rows"], [("abs_rel", "synthetic AbsRel ×100 ↓"), ("boundary_f1", "synthetic boundary F1 ×100 ↑"),
                                  ("real_abs_rel", "real-styled AbsRel ×100 ↓"), ("real_boundary_f1", "real-styled boundary F1 ×100 ↑")],
                  out=f"{figures_dir}/ablations.png")
plt.show()'''),
    ("md", """One training seed per variant cannot separate small differences from seed noise. With
`extra_seeds` set, every FiffDepth variant is retrained with those seeds (same data, priors and
steps) and each metric is reported as mean ± std over all seeds (about 6 minutes per extra
seed on 2 CPU cores; off by default to keep `make reproduce` short)."""),
    ("code", '''# nbval-ignore-output
if extra_seeds:
    spread = stages.seed_spread(out_dir, seeds=extra_seeds, variants=["fiffdepth", *variants], steps=steps,
                                preset=preset, overrides=overrides, max_images=max_images, device=device)
    display(Markdown(spread["markdown"]))'''),
    ("md", "Explorer: pick an image, two methods and a colormap; the slider moves the split between them."),
    ("code", '''# nbval-ignore-output
from fiffdepth.explorer import explorer

explorer(out_dir, ["fiffdepth", *variants, stages.MARIGOLD, "teacher"], marigold_steps=4, marigold_ensemble=1)'''),
]

NOTEBOOKS["06_figures"] = [
    ("md", """# 06 · Figures and tables

Regenerates the paper's figure analogues in `figures/` from the runs of 03–05:
Fig. 1/4 (qualitative comparison on real photos and held-out scenes), Fig. 5 (depth vs ground
truth), Fig. 6 (boundary close-ups), Fig. 7 (ablation grid), and the tables as markdown.

*Runtime (tiny, 2 CPU cores): about a minute.*"""),
    ("code", COMMON_PARAMS + '''variants = ["image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"]
n_images = 4
marigold_steps = 10      # as 04_evaluate (the paper protocol: 50 × 10)
marigold_ensemble = 1      # 10 steps × 1 for the 30-minute budget (an ensemble of 5 is 5× the UNet passes)
'''),
    ("code", SETUP),
    ("code", '''# nbval-ignore-output
paths = stages.make_figures(out_dir, figures_dir, variants=variants, n_images=n_images,
                            marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble, device=device)
for p in paths:
    display(Markdown(f"**{Path(p).name}**"), Image(str(p)) if str(p).endswith(".png") else Markdown(Path(p).read_text()))'''),
]

NOTEBOOKS["07_lab"] = [
    ("md", """# 07 · Lab: train an ablation yourself

Set the knobs of Eq. 7 and press **Train**. FiffDepth is fine-tuned from the shipped generator
prior (`weights/generator`) in a background thread, so this notebook stays usable while a
progress bar and the loss of every term (Eq. 5–7) update. A finished run joins the comparison:
its scores beside the full method and the mean-layout baseline on the held-out scenes of both
embedded domains, the split-view explorer, and its d0 and d₋₁ maps.

| control | what it changes |
|---|---|
| γ | Eq. 2: the trajectory's clean latent b0 = γ·x0 + (1 − γ)·d0* (a box and a slider) |
| λ_MAE, λ_GM | Eq. 5–7: weights of the latent MAE and gradient-matching terms at d0 and d₋₁ |
| trajectory term, λ_k | Eq. 3: keep the diffusion trajectory L_k and its weight (off: Fig. 7's "w/o trajectory") |
| L_k target | the blend of Eq. 2, or the pure image latent (Fig. 7's γ = 1 ablation) |
| teacher at | where the teacher's pseudo-labels supervise real images: d₋₁ (Eq. 4), d0, or nowhere |
| steps, seed | optimisation steps (batch 8, as 03_train) and the training seed |

Runs are cached by their settings in `OUT/lab/runs/<settings>`: the same settings train once,
across sessions too. Values that cannot train (γ outside [0, 1], fewer than 1 step, a negative
weight) are refused with a message under the button. Paths are relative to the repository
root (`make lab` starts kernels there); the data, pseudo-labels and latent caches of
`make reproduce` are reused, or made here when missing.

*Runtime (tiny, 2 CPU cores): a run at the default settings trains the same 250 steps as
03_train (145 s there), then scoring takes about 25 s, so about 3 minutes once the latent caches
exist; a first run on a fresh OUT builds them (about 4 minutes more). Measured through the
browser while other jobs loaded the machine (load 6–8): 31 minutes for a first run (README,
Explore). Making the data, when missing, takes about 3 minutes.*"""),
    ("code", '''# parameters
out_dir = "outputs"   # the reproduction's output root: data, pseudo-labels and latent caches come from there
device = "cpu"
defaults = {}         # the controls' starting values, e.g. {"steps": 50, "gamma": 0.7}
max_images = None     # held-out scenes scored per domain (None = all 64)
n_show = 3            # held-out scenes per domain in the explorer
data = {}             # stages.make_data settings, used only when OUT/data is missing (default: 00_data's)
'''),
    ("code", '''# nbval-ignore-output
from fiffdepth import lab

lab.prepare_inputs(out_dir, **data)  # the embedded data and pseudo-labels, when 00 and 02 have not made them'''),
    ("md", "The lab. Scoring the baselines takes a few seconds after it appears; a run's table row is highlighted."),
    ("code", '''# nbval-ignore-output
ui = lab.LabWidget(lab.Lab(out_dir, max_images=max_images, n_show=n_show, device=device), lab.LabSettings(**defaults))
ui'''),
    ("md", """The same from code: `ui.lab.train(lab.LabSettings(gamma=0.8, steps=100))` trains (or finds)
a run and `ui.lab.compare()["markdown"]` gives the table as markdown."""),
]


def _cell(kind: str, src: str):
    if kind == "md":
        return nbformat.v4.new_markdown_cell(src)
    cell = nbformat.v4.new_code_cell(src)
    tags = []
    if src.startswith("# parameters"):
        tags.append("parameters")
    if src.startswith("# nbval-ignore-output"):
        tags.append("nbval-ignore-output")
    if tags:
        cell.metadata["tags"] = tags
    return cell


# Notebooks that `make reproduce` executes say in their first cell where their outputs are.
INTERACTIVE = {"07_lab"}
OUTPUTS_NOTE = """

*This copy has no outputs. `make reproduce` writes it executed, outputs included, to
`outputs/notebooks/{name}.ipynb` (`make lab LAB_DIR=outputs/notebooks` opens those); or run it
here, where finished stages are reused.*"""


def build(directory: Path = HERE) -> list[Path]:
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        nb.metadata["language_info"] = {"name": "python"}
        if name not in INTERACTIVE:
            (kind, first), *rest = cells
            cells = [(kind, first + OUTPUTS_NOTE.format(name=name)), *rest]
        nb.cells = [_cell(k, s) for k, s in cells]
        for i, c in enumerate(nb.cells):
            c.id = f"{name[:2]}-{i:02d}"
        path = directory / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
