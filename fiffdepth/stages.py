"""The reproduction, stage by stage: what the numbered notebooks call.

Every stage writes under one output root and is idempotent: run again with the same settings,
it finds its finished outputs and returns their report instead of recomputing (so a notebook
can be re-executed, or a later one run alone, cheaply). Change a setting and the stage redoes
its work. Layout::

    OUT/data/synth     synthetic-domain training scenes (exact depth)            00_data
    OUT/data/styled    real-styled scenes with depth (the teacher's data only)   00_data
    OUT/data/eval      held-out synthetic scenes (another seed)                  00_data
    OUT/data/eval_real held-out real-styled scenes (another seed)                00_data
    OUT/data/real      FiffDepth's real half: photos (scikit-image, augmented)
                       and real-styled images without depth (real/styled/)       00_data
    OUT/priors/generator, OUT/priors/teacher                         01_priors
    OUT/data/pseudo    teacher pseudo-labels of OUT/data/real        02_teacher_pseudo_labels
    OUT/runs/<variant> FiffDepth and each ablation / baseline        03_train (04, 05 reuse them)
    OUT/results        results.json, results.md                      04_evaluate, 05_ablations

At paper scale (``preset="paper"``) nothing is generated or pretrained: the data stages check
the configured roots and the priors are the hub ids (or local copies) in the config.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_json, write_text
from .baselines import MEAN_LAYOUT, MEAN_LAYOUT_LABEL
from .config import FiffDepthConfig, get_config

# Fig. 7's four ablations (Section 4.3) and our two baselines; each is a config override of the
# full method. "marigold" is not a FiffDepth config: it is trained by fiffdepth.marigold.
VARIANTS: dict[str, tuple[str, dict]] = {
    "fiffdepth": ("FiffDepth (ours)", {}),
    "image_trajectory": ("trajectory to image latents (γ = 1)", {"loss.trajectory_target": "image"}),
    "no_trajectory": ("w/o diffusion trajectory (no L_k)", {"loss.trajectory": False}),
    "no_teacher": ("w/o teacher supervision", {"loss.teacher_supervision": "none"}),
    "teacher_on_d0": ("teacher supervision at d0", {"loss.teacher_supervision": "d0"}),
    "random_init": ("random-init UNet (no generator prior)", {"model.unet_init": "random"}),
}
MARIGOLD = "marigold"
MARIGOLD_LABEL = "Marigold-style multi-step fine-tune"
# The fine-tuned model shipped in weights/fiffdepth (trained longer than make reproduce can afford):
# scored and drawn beside the runs, so a reader sees what more steps give.
SHIPPED = "shipped"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def synth(self) -> Path:
        return self.root / "data" / "synth"

    @property
    def styled(self) -> Path:
        return self.root / "data" / "styled"

    @property
    def eval(self) -> Path:
        return self.root / "data" / "eval"

    @property
    def eval_real(self) -> Path:
        return self.root / "data" / "eval_real"

    @property
    def real(self) -> Path:
        return self.root / "data" / "real"

    @property
    def pseudo(self) -> Path:
        return self.root / "data" / "pseudo"

    @property
    def generator(self) -> Path:
        """OUT/priors/generator when ``make_priors(pretrain=True)`` made one, else the shipped one."""
        return _prior(self.root / "priors" / "generator", "generator")

    @property
    def teacher(self) -> Path:
        """OUT/priors/teacher when ``make_priors(pretrain=True)`` made one, else the shipped one."""
        return _prior(self.root / "priors" / "teacher", "teacher")

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return self.root / ".latent_cache"


def _prior(own: Path, name: str) -> Path:
    from .weights import WEIGHTS_DIR

    return own if (own / "pretrain_report.json").is_file() else WEIGHTS_DIR / name


def layout(out: str | os.PathLike = "outputs") -> Layout:
    return Layout(Path(out))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def link_inputs(root: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Make ``root`` an output root that shares OUT's inputs: its data folders, priors and
    latent cache are links to OUT's, so runs under ``root`` train and score on the same data
    (``seed_spread``'s roots, the lab's OUT/lab). Returns ``root``."""
    S, L = layout(root), layout(out)
    pairs = [(S.synth, L.synth), (S.eval, L.eval), (S.eval_real, L.eval_real), (S.real, L.real),
             (S.pseudo, L.pseudo), (S.cache, L.cache)]
    if (L.root / "priors").is_dir():  # priors pretrained into OUT (else both use the shipped ones)
        pairs.append((S.root / "priors", L.root / "priors"))
    for link, target in pairs:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link == S.cache:  # the only one that may not exist yet; missing data must stay an error
            target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return S.root


# -- configs ---------------------------------------------------------------------------------------

def stage_config(out: str | os.PathLike = "outputs", preset: str = "tiny", overrides: dict | None = None,
                 variant: str = "fiffdepth", steps: int | None = None) -> FiffDepthConfig:
    """The training config of a variant, with the tiny preset's data/prior paths under ``out``."""
    L = layout(out)
    base: dict = {}
    if preset == "tiny":
        base = {"data.synthetic": [f"embedded:{L.synth}"], "data.real": [str(L.real)],
                "data.pseudo_labels": str(L.pseudo), "model.pretrained": str(L.generator),
                "teacher.pretrained": str(L.teacher)}
    if variant in VARIANTS:  # another name (a lab run, fiffdepth.lab) is the full method with ``overrides``
        base.update(VARIANTS[variant][1])
    base.update(overrides or {})
    base["train.output_dir"] = str(L.runs / variant)
    if steps is not None:
        base["train.iterations"] = int(steps)
    return get_config(preset, base)


# -- 00: data ----------------------------------------------------------------------------------------

def make_data(out: str | os.PathLike = "outputs", n_synth: int = 2000, n_eval: int = 64, size: int = 128,
              n_real: int | None = None, n_styled: int = 1000, n_styled_real: int = 1000, seed: int = 0,
              workers: int = 2, progress: bool = True) -> dict:
    """Render the embedded world and export the real photos.

    Two domains from one scene generator (``fiffdepth.data.synthetic.render_scene``):
    *synthetic* (clean renders, exact depth: d0 and L_k) and *real-styled* (a camera-like
    look). Real-styled depth is used only to train the teacher (``OUT/data/styled``) and to
    evaluate (``OUT/data/eval_real``); FiffDepth's real half (``OUT/data/real``) gets the
    photos and other real-styled images without depth, labelled later by the teacher. Every
    set has its own seed, so no scene is in two sets.
    """
    import shutil

    from PIL import Image

    from .data.real import embedded_real_images
    from .data.synthetic import write_synthetic_dataset

    L = layout(out)
    report_path = L.root / "data" / "report.json"
    settings = {"n_synth": n_synth, "n_eval": n_eval, "size": size, "n_real": n_real, "n_styled": n_styled,
                "n_styled_real": n_styled_real, "seed": seed}
    old = _read_json(report_path)
    dirs = (L.synth, L.styled, L.eval, L.eval_real, L.real)
    if old and old.get("settings") == settings and all(d.is_dir() for d in dirs):
        return old
    seconds = {}
    sets = [(L.synth, n_synth, seed, "synthetic"), (L.styled, n_styled, seed + 2_000_003, "real"),
            # held-out scenes: disjoint seeds, so no training scene (nor the priors' data) is among them
            (L.eval, n_eval, seed + 1_000_003, "synthetic"), (L.eval_real, n_eval, seed + 3_000_017, "real")]
    for path, n, s, style in sets:
        t0 = time.time()
        write_synthetic_dataset(path, n, size, s, workers, progress=progress, style=style)
        seconds[path.name] = round(time.time() - t0, 1)
    L.real.mkdir(parents=True, exist_ok=True)
    images = embedded_real_images(n_real, size, seed)
    for i, im in enumerate(images):
        Image.fromarray(im).save(L.real / f"{i:06d}.png")
    # real-styled images for FiffDepth's real half: rendered with depth, of which only the RGB is kept
    t0 = time.time()
    tmp = L.root / "data" / ".styled_real_tmp"
    write_synthetic_dataset(tmp, n_styled_real, size, seed + 4_000_037, workers, progress=progress, style="real")
    if (L.real / "styled").exists():
        shutil.rmtree(L.real / "styled")
    (tmp / "rgb").rename(L.real / "styled")
    shutil.rmtree(tmp)
    seconds["real_styled"] = round(time.time() - t0, 1)
    report = {"settings": settings, "seconds": seconds, "real_photos": len(images), "real_styled": n_styled_real,
              "paths": {"synth": str(L.synth), "styled": str(L.styled), "eval": str(L.eval),
                        "eval_real": str(L.eval_real), "real": str(L.real)}}
    write_json(report_path, report)
    return report


def check_data_roots(cfg: FiffDepthConfig) -> list[str]:
    """Paper scale: the configured data roots that do not exist (empty list = all present)."""
    missing = []
    for entry in cfg.data.synthetic:
        path = entry.partition(":")[2] or entry
        if not Path(path).exists():
            missing.append(path)
    missing += [p for p in cfg.data.real if not Path(p).exists()]
    return missing


# -- 01: priors --------------------------------------------------------------------------------------

def make_priors(out: str | os.PathLike = "outputs", preset: str = "tiny", pretrain: bool = False,
                vae_steps: int | None = None, unet_steps: int | None = None, teacher_steps: int | None = None,
                seed: int = 0, progress: bool = True) -> dict:
    """The priors' reports. Tiny preset: the shipped ones (``weights/``), or with ``pretrain``
    the generator and the teacher pretrained anew on OUT/data (into OUT/priors, each skipped
    when already done with the same step counts; later stages then use them). Paper preset:
    nothing to train; returns the ids."""
    from . import generator as gen

    if preset != "tiny":
        cfg = get_config(preset)
        return {"generator": cfg.model.pretrained, "teacher": cfg.teacher.pretrained}
    L = layout(out)
    if not pretrain:
        return {"generator": _read_json(L.generator / "pretrain_report.json") or {"path": str(L.generator)},
                "teacher": _read_json(L.teacher / "pretrain_report.json") or {"path": str(L.teacher)}}
    vae_steps = gen.VAE_STEPS if vae_steps is None else vae_steps
    unet_steps = gen.UNET_STEPS if unet_steps is None else unet_steps
    teacher_steps = gen.TEACHER_STEPS if teacher_steps is None else teacher_steps
    report = {}
    own_gen, own_teacher = L.root / "priors" / "generator", L.root / "priors" / "teacher"
    g = _read_json(own_gen / "pretrain_report.json")
    if not (g and g.get("steps") == [vae_steps, unet_steps] and g.get("seed") == seed):
        g = gen.pretrain_generator(get_config("tiny"), L.synth, own_gen, vae_steps=vae_steps,
                                   unet_steps=unet_steps, seed=seed, progress=progress, styled_dir=L.styled)
    report["generator"] = g
    t = _read_json(own_teacher / "pretrain_report.json")
    if not (t and t.get("steps") == teacher_steps and t.get("seed") == seed):
        t = gen.pretrain_teacher(L.synth, own_teacher, steps=teacher_steps, seed=seed, progress=progress,
                                 styled_dir=L.styled)
    report["teacher"] = t
    return report


def priors_markdown(report: dict) -> str:
    """The embedded priors' held-out scores (``make_priors``'s report) as a markdown table."""
    g, t = report.get("generator") or {}, report.get("teacher") or {}

    def num(d, *keys, scale=1.0, fmt="{:.1f}"):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return "–" if d is None else fmt.format(scale * d)

    th = t.get("heldout") or {}
    rows = ["| prior | held-out result | train time (2 cores) |", "|---|---|---|"]
    if g:
        rows.append(f"| VAE | image PSNR {num(g, 'heldout_image_psnr_db')} dB synthetic, "
                    f"{num(g, 'heldout_styled_psnr_db')} dB real-styled, {num(g, 'heldout_real_psnr_db')} dB photos; "
                    f"depth→latent→depth AbsRel {num(g, 'heldout_depth_roundtrip_abs_rel', scale=100)} %, "
                    f"boundary F1 {num(g, 'heldout_depth_roundtrip_boundary_f1', fmt='{:.3f}')} | "
                    f"{num(g, 'vae', 'seconds', fmt='{:.0f}')} s |")
        rows.append(f"| latent diffusion UNet | final v-loss {num(g, 'unet', 'loss', fmt='{:.3f}')} | "
                    f"{num(g, 'unet', 'seconds', fmt='{:.0f}')} s |")
        for c in g.get("continued") or []:  # `fiffdepth pretrain --continue-from`: more UNet steps, same VAE
            rows.append(f"| … UNet continued {c.get('unet_steps')} steps | held-out v-loss "
                        f"{num(c, 'heldout_v_loss_before', fmt='{:.3f}')} → {num(c, 'heldout_v_loss_after', fmt='{:.3f}')} | "
                        f"{num(c, 'unet_seconds', fmt='{:.0f}')} s |")
    if t:
        doms = ", ".join(f"{name.replace('_', '-')}: AbsRel {num(m, 'abs_rel', scale=100)} %, δ1 {num(m, 'delta1', scale=100)} %"
                         for name, m in th.items())
        rows.append(f"| teacher | {doms} | {num(t, 'seconds', fmt='{:.0f}')} s |")
    return "\n".join(rows) + "\n"


# -- 02: pseudo-labels -----------------------------------------------------------------------------------

def make_pseudo_labels(out: str | os.PathLike = "outputs", teacher: str | None = None, images: str | None = None,
                       target: str | None = None, batch_size: int = 16, progress: bool = True,
                       preset: str = "tiny", overrides: dict | None = None) -> dict:
    """Pseudo-label the real images with the teacher (resumable: finished images are skipped).

    Tiny preset: OUT/data/real -> OUT/data/pseudo with OUT's teacher. Paper preset: every entry
    of the config's ``data.real`` (folders or tar shards) -> ``data.pseudo_labels`` with
    ``teacher.pretrained``, the folders training reads. ``teacher``/``images``/``target`` override."""
    from .teacher import Teacher, pseudolabel_folder

    L = layout(out)
    if preset == "tiny":
        sources, default_teacher, default_target = [L.real], L.teacher, L.pseudo
    else:
        cfg = stage_config(out, preset, overrides)
        sources, default_teacher, default_target = cfg.data.real, cfg.teacher.pretrained, cfg.data.pseudo_labels
    t0 = time.time()
    model = Teacher.from_pretrained(teacher or default_teacher)
    result = {"written": 0, "skipped": 0, "failed": []}
    for src in [images] if images else sources:
        r = pseudolabel_folder(model, src, target or default_target, batch_size=batch_size, progress=progress)
        result = {k: result[k] + r[k] for k in result}
    result["seconds"] = round(time.time() - t0, 1)
    return result


# -- 03 / 05: training -------------------------------------------------------------------------------------

def finished_run(out: str | os.PathLike = "outputs", variant: str = "fiffdepth", steps: int | None = None,
                 preset: str = "tiny", overrides: dict | None = None) -> dict | None:
    """The summary of OUT/runs/<variant> when it finished with the identical config, else None."""
    run_dir = layout(out).runs / variant
    cfg = stage_config(out, preset, overrides, variant, steps)
    done = _read_json(run_dir / "summary.json")
    if not done:
        return None
    if variant == MARIGOLD:
        return done if _read_json(run_dir / "fiffdepth_config.json") == cfg.to_dict() else None
    if (run_dir / "config.yaml").is_file() and FiffDepthConfig.load(run_dir / "config.yaml") == cfg:
        return done
    return None


def train_variant(out: str | os.PathLike = "outputs", variant: str = "fiffdepth", steps: int | None = None,
                  preset: str = "tiny", overrides: dict | None = None, progress: bool = True,
                  on_log=None) -> dict:
    """Train one variant into OUT/runs/<variant>, in this process with its threads; reuse a
    finished run with the identical config. ``train_variants`` trains several side by side."""
    L = layout(out)
    run_dir = L.runs / variant
    done = finished_run(out, variant, steps, preset, overrides)
    if done:
        return done
    cfg = stage_config(out, preset, overrides, variant, steps)
    if variant == MARIGOLD:
        from .marigold import train_marigold

        summary = train_marigold(cfg, run_dir, cache_root=L.cache, progress=progress)
        write_json(run_dir / "fiffdepth_config.json", cfg.to_dict())
        return summary
    from .train import train

    # a killed run of this config resumes; checkpoints of another config are replaced, not resumed
    return train(cfg, resume="latest", overwrite=True, progress=progress, cache_root=L.cache, on_log=on_log)


def _cache_builder():
    """``prepare(job)`` for ``pool.run_jobs``: build the latent caches ``job`` will read (a no-op
    when they exist), in this process, so that pooled runs never build the same cache at once.
    The VAE is loaded once per model config (the variants differ in losses and UNet init only)."""
    from .train import _load_model, build_caches

    vaes: dict[str, object] = {}

    def prepare(job) -> None:
        cfg = stage_config(job.out, job.preset, job.overrides, job.variant, job.steps)
        if job.variant == MARIGOLD:  # the Marigold-style baseline reads only the synthetic cache
            cfg = cfg.override({"loss.teacher_supervision": "none"})
        model_cfg = {**cfg.to_dict()["model"], "unet_init": None}
        if not cfg.model.pretrained:  # a VAE made from the config depends on the seed
            model_cfg["seed"] = cfg.train.seed
        key = json.dumps(model_cfg, sort_keys=True, default=str)
        if key not in vaes:
            vaes[key] = _load_model(cfg).vae
        build_caches(cfg, vaes[key], layout(job.out).cache, progress=False)

    return prepare


def _train_jobs(jobs: list, workers: int | None = None, progress: bool = True, on_log: dict | None = None) -> dict:
    """``fiffdepth.pool.run_jobs`` for these jobs, finished runs reused without a new process."""
    from .pool import run_jobs

    done = {j.name: finished_run(j.out, j.variant, j.steps, j.preset, j.overrides) for j in jobs}
    todo = [j for j in jobs if not done[j.name]]
    if todo:
        done.update(run_jobs(todo, workers=workers, progress=progress, on_log=on_log, prepare=_cache_builder(),
                             log_path=lambda j: layout(j.out).runs / j.variant / "losses.jsonl"))
    return {j.name: done[j.name] for j in jobs}


def train_variants(out: str | os.PathLike = "outputs", variants: list[str] | tuple = ("fiffdepth",),
                   steps: int | None = None, preset: str = "tiny", overrides: dict | None = None,
                   workers: int | None = None, progress: bool = True, on_log: dict | None = None) -> dict:
    """Train several variants (``VARIANTS`` names or ``MARIGOLD``) into OUT/runs, side by side:
    on a CPU-only machine each in its own one-thread process, as many at a time as there are
    cores (``workers``), so a run's bytes do not depend on the machine's core count; with a GPU,
    one after another. Finished runs with the identical config are reused. ``on_log``:
    ``{variant: callback}`` fed with that run's ``losses.jsonl`` records as they appear.
    Returns ``{variant: summary}``."""
    from .pool import Job

    jobs = [Job(str(out), v, steps, preset, dict(overrides or {})) for v in dict.fromkeys(variants)]
    return _train_jobs(jobs, workers=workers, progress=progress, on_log=on_log)


# -- 04 / 05: evaluation ----------------------------------------------------------------------------------

# evaluate_methods' row keys per held-out domain: the first dataset (default: the synthetic
# scenes, OUT/data/eval) unprefixed, the second (default: the real-styled ones, OUT/data/eval_real) "real_"
DOMAIN_PREFIXES = ("", "real_")
DOMAIN_TITLES = ("synthetic", "real-styled")


def default_eval_datasets(out: str | os.PathLike = "outputs") -> list[str]:
    """The held-out scenes of both domains (only the synthetic ones while OUT/data/eval_real is missing)."""
    L = layout(out)
    return [f"embedded:{L.eval}"] + ([f"embedded:{L.eval_real}"] if L.eval_real.is_dir() else [])


def predictor_for(out: str | os.PathLike, variant: str, device: str = "cpu"):
    """A predictor for ``fiffdepth.evaluate.evaluate_model`` for a trained variant (a
    ``FiffDepthPipeline``; the Marigold-style baseline: diffusers' ``MarigoldDepthPipeline``, its
    steps and ensemble from ``pipeline_kwargs_for``), the teacher or ``"mean_layout"``
    (``fiffdepth.baselines``: the mean normalised depth of OUT/data/synth)."""
    from . import evaluate as ev

    L = layout(out)
    if variant == MEAN_LAYOUT:
        from .baselines import mean_layout_predictor

        return mean_layout_predictor(L.synth)
    if variant == "teacher":
        return ev.depth_anything_predictor(str(L.teacher), device=device)
    if variant == SHIPPED:
        from .pipeline import FiffDepthPipeline

        return FiffDepthPipeline.from_pretrained(_method_dir(L, SHIPPED), device=device)
    if variant == MARIGOLD:
        from .marigold import load_marigold

        return load_marigold(L.runs / MARIGOLD, device=device)
    from .pipeline import FiffDepthPipeline

    return FiffDepthPipeline.from_pretrained(L.runs / variant, device=device)


def pipeline_kwargs_for(variant: str, marigold_steps: int = 50, marigold_ensemble: int = 10) -> dict | None:
    """The extra call arguments ``fiffdepth.evaluate`` passes to ``predictor_for(variant)``: the
    Marigold baseline's DDIM steps and ensemble size; None for every other method."""
    from .evaluate import marigold_call

    return marigold_call(marigold_steps, marigold_ensemble) if variant == MARIGOLD else None


def _weights_digest(out: str | os.PathLike, variant: str) -> str:
    """Identifies the weights a method is scored with: sizes and mtimes of its weight files (for
    the mean layout: of the training scenes' depth and masks); empty when there are none."""
    L = layout(out)
    if variant == MEAN_LAYOUT:
        from .baselines import scenes_digest

        return scenes_digest(L.synth)
    root = _method_dir(L, variant)
    if not root.is_dir():
        return ""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json")
                   and "checkpoints" not in p.parts)
    return ";".join(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _method_dir(L: Layout, method: str) -> Path:
    """Where a scored method's weights live: the teacher, the shipped model, or a run under OUT/runs."""
    if method == "teacher":
        return L.teacher
    if method == SHIPPED:
        from .weights import WEIGHTS_DIR

        return WEIGHTS_DIR / "fiffdepth"
    return L.runs / method


def label_of(variant: str) -> str:
    if variant == SHIPPED:
        summary = _read_json(_method_dir(layout(), SHIPPED) / "summary.json") or {}
        steps = summary.get("total_steps", summary.get("steps"))  # all fine-tuning stages
        return f"FiffDepth, shipped weights ({steps} steps)" if steps else "FiffDepth, shipped weights"
    if variant == MEAN_LAYOUT:
        return MEAN_LAYOUT_LABEL
    if variant == MARIGOLD:
        return MARIGOLD_LABEL
    if variant == "teacher":
        return "teacher (tiny Depth Anything V2)"
    return VARIANTS[variant][0] if variant in VARIANTS else variant


def pseudo_label_agreement(predict, images_dir: str | os.PathLike, pseudo_dir: str | os.PathLike,
                           processing_resolution: int | None = None, max_images: int | None = 128,
                           pipeline_kwargs: dict | None = None) -> dict:
    """AbsRel / δ1 (×100) of a model's depth against the teacher's pseudo-labels on the real
    photos, after least-squares scale and shift in depth (Marigold's protocol, the pseudo-label
    standing in for ground truth). It measures how far a model follows the teacher's
    generalisation to real images — not accuracy: the teacher is not ground truth."""
    from .data.io import list_files, read_npy, read_rgb
    from .evaluate import predict_depths
    from .metrics import aggregate, compute_depth_metrics

    images_dir, pseudo_dir = Path(images_dir), Path(pseudo_dir)
    files = list_files(images_dir, recursive=True)
    if max_images and len(files) > max_images:  # an even spread over the folder (photos and real-styled images)
        files = files[:: -(-len(files) // max_images)]
    rows = []
    for f in files:
        label_path = pseudo_dir / f.relative_to(images_dir).with_suffix(".npy")
        if not label_path.is_file():
            continue
        label = read_npy(label_path)
        import torch

        image = torch.from_numpy(read_rgb(f)).permute(2, 0, 1).float() / 255.0
        pred = predict_depths(predict, [image], processing_resolution, pipeline_kwargs=pipeline_kwargs)[0]
        mask = np.isfinite(label) & (label > 0)
        rows.append(compute_depth_metrics(pred, label, mask, float(label[mask].min()), float(label[mask].max())))
    out = aggregate(rows) if rows else {}
    out["images"] = len(rows)
    return out


def _scorable(L: Layout, method: str) -> bool:
    """Whether a method has what it is scored with: training scenes (the mean layout), the
    teacher's weights, or a finished run."""
    if method == MEAN_LAYOUT:
        return (L.synth / "depth").is_dir()
    if method == "teacher":
        return L.teacher.is_dir()
    return (_method_dir(L, method) / "summary.json").is_file()


def _method_scores(out, m: str, specs: list, max_images, marigold_steps: int, marigold_ensemble: int, device: str,
                   name: str | None, pseudo_agreement: bool, compute: bool = True, progress: bool = False) -> dict | None:
    """``{"key", "results"[, "pseudo"]}``: method ``m``'s scores, from OUT/results/.scores/<m>.json while its
    weights and the settings are the same, else computed and kept there (None with ``compute=False``).
    "schema" in the key is bumped when the scores gain fields (2: per scene kind), so older ones are redone."""
    from . import evaluate as ev

    L = layout(out)
    key = {"schema": 2, "method": m, "weights": _weights_digest(out, m), "datasets": [str(x) for x in specs],
           "max_images": max_images, "device": device,
           "marigold": [marigold_steps, marigold_ensemble] if m == MARIGOLD else None}
    path = L.results / ".scores" / f"{m}.json"
    cached = _read_json(path)
    if not (cached and cached.get("key") == key):
        cached = None
    need_pseudo = pseudo_agreement and m != "teacher"  # the teacher against its own labels says nothing
    if cached is not None and (not need_pseudo or "pseudo" in cached):
        return cached
    if not compute:
        return None
    predictor, call = predictor_for(out, m, device), pipeline_kwargs_for(m, marigold_steps, marigold_ensemble)
    if cached is None:
        rows_dir = L.results / "per_image" / m if name else None
        res = ev.evaluate_model(predictor, specs, out_dir=rows_dir, progress=progress, max_images=max_images,
                                label=label_of(m), model=m, pipeline_kwargs=call)
        cached = {"key": key, "results": res}
    if need_pseudo:
        cached["pseudo"] = pseudo_label_agreement(predictor, L.real, L.pseudo, max_images=max_images or 128,
                                                  pipeline_kwargs=call)
    write_json(path, cached)
    return cached


def _score_in_child(out: str, m: str, settings: dict) -> None:
    """``_method_scores`` in a pooled process (``pool.in_processes``): kept in OUT/results/.scores."""
    _method_scores(out, m, **settings)


def _score_settings(out, datasets, max_images, marigold_steps: int, marigold_ensemble: int, device: str,
                    name: str | None, pseudo: bool) -> dict:
    """The keyword arguments of ``_method_scores`` (the held-out scenes of both domains when ``datasets`` is empty)."""
    return dict(specs=list(datasets) if datasets else default_eval_datasets(out), max_images=max_images,
                marigold_steps=marigold_steps, marigold_ensemble=marigold_ensemble, device=device, name=name,
                pseudo_agreement=pseudo)


def _score_side_by_side(jobs: list[tuple[str, str, dict]], workers: int | None,
                        progress: bool) -> list[tuple[str, str]]:
    """Compute the kept scores of the ``(out, method, settings)`` jobs that have none: side by side in
    one-thread processes (``workers``; None: one per core) on a CPU-only machine when more than one is
    to do and ``workers`` is not 1, else left to the caller (``_method_scores`` computes in-process).
    The Marigold-style baseline goes first: it makes steps × ensemble UNet passes per image, and the
    longest job should not end alone. Returns the ``(out, method)`` pairs scored here."""
    todo = [j for j in jobs if j[1] != MEAN_LAYOUT and _method_scores(j[0], j[1], compute=False, **j[2]) is None]
    todo.sort(key=lambda j: j[1] != MARIGOLD)
    if len(todo) < 2 or workers == 1 or any(j[2]["device"] != "cpu" for j in todo):
        return []
    from .pool import accelerator_present, in_processes

    if accelerator_present():
        return []
    one_root = len({o for o, _, _ in todo}) == 1
    names = [m if one_root else f"{Path(o).name}/{m}" for o, m, _ in todo]
    in_processes(_score_in_child, [(str(o), m, st) for o, m, st in todo], workers=workers, names=names,
                 desc="score", progress=progress)
    return [(o, m) for o, m, _ in todo]


def score_methods(out: str | os.PathLike = "outputs", methods: list[str] | tuple = ("fiffdepth", "teacher"),
                  datasets: list[str] | None = None, max_images: int | None = None, marigold_steps: int = 50,
                  marigold_ensemble: int = 10, device: str = "cpu", name: str | None = "results",
                  pseudo_agreement: bool | list[str] | tuple = False, progress: bool = True,
                  workers: int | None = None) -> list[str]:
    """Compute and keep (OUT/results/.scores) the scores of those ``methods`` that have none yet,
    exactly as ``evaluate_methods`` would, without making a table; returns the methods scored.
    ``pseudo_agreement``: True, False, or the methods that are also scored against the teacher's
    pseudo-labels (``evaluate_methods(..., pseudo_agreement=True)`` then finds them kept). The
    mean-layout baseline, which every table shows, is scored too (in this process: no model). With
    ``name`` (any, not None), per-image rows go to OUT/results/per_image/<method>.

    One call scores every method side by side, so one pool can serve several tables
    (``04_evaluate`` scores ``05_ablations``' variants too, and pays the pool's imports once).
    """
    L = layout(out)
    wanted = set(methods) if pseudo_agreement is True else set(pseudo_agreement or ())
    if wanted:
        wanted.add(MEAN_LAYOUT)  # the baseline row of a table with the agreement columns has them too
    jobs = [(str(out), m, _score_settings(out, datasets, max_images, marigold_steps, marigold_ensemble, device, name,
                                          m in wanted))
            for m in dict.fromkeys([MEAN_LAYOUT, *methods]) if _scorable(L, m)]
    todo = [m for o, m, st in jobs if _method_scores(o, m, compute=False, **st) is None]
    pooled = _score_side_by_side(jobs, workers, progress)
    for o, m, st in jobs:
        if m in todo and (o, m) not in pooled:
            _method_scores(o, m, progress=progress, **st)
    return todo


def evaluate_methods(out: str | os.PathLike = "outputs", methods: list[str] | tuple = ("fiffdepth", "teacher"),
                     datasets: list[str] | None = None, max_images: int | None = None, marigold_steps: int = 50,
                     marigold_ensemble: int = 10, device: str = "cpu", name: str = "results",
                     pseudo_agreement: bool = False, progress: bool = True, workers: int | None = None) -> dict:
    """Score each method (a variant with a finished run, ``"marigold"``, ``"teacher"`` or
    ``"mean_layout"``) with ``fiffdepth.evaluate`` on ``datasets`` (default: the held-out scenes
    of both domains, ``default_eval_datasets``) and, with ``pseudo_agreement``, against the
    teacher's pseudo-labels on the real images. The mean-layout baseline (``fiffdepth.baselines``:
    no model, no image) is always scored, and is the first row.

    Writes OUT/results/<name>.json (``{"rows": {label: metrics}, "results": [...]}``), <name>.md
    and the per-image rows of the methods it scores, OUT/results/per_image/<method>, atomically
    (nothing when ``name`` is None); methods with nothing to score (no
    finished run, no teacher, no training scenes) are skipped with a note. Returns ``{"rows",
    "markdown", "results", "skipped", "columns"}``. ``rows`` per method: on the first dataset
    abs_rel, delta1, boundary_f1 (×100) and abs_rel_ratio (AbsRel over the mean layout's); the
    same prefixed ``real_`` on the second dataset; pseudo_abs_rel / pseudo_delta1 (×100) when
    asked. Further datasets are only in the tables of ``fiffdepth.evaluate.results_table``.
    ``columns``: (row key, header, decimals) of the first table (``seed_spread`` shows the same).

    Scores are kept in OUT/results/.scores and reused while a method's weights and the settings
    are the same (``score_methods`` computes them ahead, e.g. for several tables in one pool). On a
    CPU-only machine, methods without kept scores are scored side by side in one-thread processes,
    ``workers`` of them (None: one per core; 1: in this process), as ``train_variants`` trains.
    """
    from . import evaluate as ev

    L = layout(out)
    specs = list(datasets) if datasets else default_eval_datasets(out)
    keys = ev.dataset_keys([ev.parse_dataset_spec(x) for x in specs])
    domains = list(zip(DOMAIN_PREFIXES, keys))
    titles = list(DOMAIN_TITLES[:len(domains)]) if not datasets else [ev.dataset_title(k) for _, k in domains]
    rows, results = {}, []
    asked = list(dict.fromkeys([MEAN_LAYOUT, *methods]))  # the baseline first, each method once
    order = [m for m in asked if _scorable(L, m)]
    skipped = [m for m in asked if m not in order]
    settings = _score_settings(out, specs, max_images, marigold_steps, marigold_ensemble, device, name,
                               pseudo_agreement)
    _score_side_by_side([(str(out), m, settings) for m in order], workers, progress)
    for m in order:
        label = label_of(m)
        cached = _method_scores(out, m, progress=progress, **settings)
        res = cached["results"]
        results.append(res)
        row = {}
        for prefix, k in domains:
            scores = res["datasets"].get(k, {}).get("metrics", {})
            row.update({prefix + "abs_rel": 100 * scores.get("abs_rel", np.nan),
                        prefix + "delta1": 100 * scores.get("delta1", np.nan),
                        prefix + "boundary_f1": 100 * scores.get("boundary_f1", np.nan),
                        prefix + "abs_rel_ratio": np.nan})  # below, once the baseline is known
        if pseudo_agreement:
            if m == "teacher":  # the teacher against its own labels says nothing
                row.update(pseudo_abs_rel=np.nan, pseudo_delta1=np.nan)
            else:
                agree = cached["pseudo"]
                row.update(pseudo_abs_rel=100 * agree.get("abs_rel", np.nan),
                           pseudo_delta1=100 * agree.get("delta1", np.nan))
        rows[label] = {k: float(v) for k, v in row.items()}
    for row, ratios in zip(rows.values(), ev.abs_rel_ratios(results)):
        for prefix, k in domains:
            row[prefix + "abs_rel_ratio"] = float("nan") if ratios.get(k) is None else float(ratios[k])
    columns = _table_columns(titles, pseudo_agreement)
    where = ("the held-out " + " and ".join(titles) + " scenes") if not datasets else ", ".join(titles)
    markdown = (f"Scores ×100 on {where}{' (the first two datasets)' if len(keys) > 2 else ''}. {_RATIO_NOTE}"
                + (_PSEUDO_NOTE if pseudo_agreement else "") + "\n\n" + _methods_table(rows, columns, _cell))
    if skipped:
        markdown += f"\nNot evaluated (no finished run, teacher or training scenes): {', '.join(skipped)}\n"
    if results:
        markdown += "\n" + ev.results_table(results)
    if name:
        write_json(L.results / f"{name}.json", {"rows": _finite_or_none(rows), "skipped": skipped, "results": results})
        write_text(L.results / f"{name}.md", markdown)
    return {"rows": rows, "markdown": markdown, "results": results, "skipped": skipped, "columns": columns}


_RATIO_NOTE = ("AbsRel / mean layout: a method's AbsRel over that of the mean layout (the training scenes' mean "
               "normalised depth, the same for every image: no model, no image); below 1, the method sees more "
               "than the average layout.")
_PSEUDO_NOTE = " Agreement with the teacher's pseudo-labels on the real images is not accuracy."


def _table_columns(titles: list[str], pseudo_agreement: bool) -> list[tuple[str, str, int]]:
    """(row key, header, decimals) of the methods tables: per domain AbsRel, δ1, boundary F1
    (×100, the domain's title in the header when there are two) and the AbsRel ratio to the
    mean layout; then the agreement with the teacher when asked."""
    columns = []
    for prefix, title in zip(DOMAIN_PREFIXES, titles):
        head = f"{title} " if len(titles) > 1 else ""
        columns += [(prefix + "abs_rel", head + "AbsRel ↓", 1), (prefix + "delta1", head + "δ1 ↑", 1),
                    (prefix + "boundary_f1", head + "boundary F1 ↑", 1),
                    (prefix + "abs_rel_ratio", head + "AbsRel / mean layout ↓", 2)]
    if pseudo_agreement:
        columns += [("pseudo_abs_rel", "AbsRel vs teacher, real images ↓", 1),
                    ("pseudo_delta1", "δ1 vs teacher, real images ↑", 1)]
    return columns


def _cell(value, decimals: int) -> str:
    """A value of ``rows``, or a (mean, std, n) of ``spread_over_seeds`` as mean ± std; "–" if none."""
    mean, std = (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, np.nan)
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if np.isfinite(std) else "")


def _methods_table(rows: dict[str, dict], columns: list[tuple[str, str, int]], cell=_cell,
                   seeds: dict[str, int] | None = None) -> str:
    """Markdown: a row per label of ``rows`` (in order), ``cell(rows[label].get(key), decimals)``
    per column, and with ``seeds`` a column of how many seeds scored each label."""
    lead = ["Method"] + (["seeds"] if seeds is not None else [])
    lines = ["| " + " | ".join(lead + [h for _, h, _ in columns]) + " |",
             "|---|" + "---:|" * (len(lead) - 1 + len(columns))]
    for label, r in rows.items():
        cells = [label] + ([str(seeds[label])] if seeds is not None else [])
        lines.append("| " + " | ".join(cells + [cell(r.get(k), d) for k, _, d in columns]) + " |")
    return "\n".join(lines) + "\n"


def _finite_or_none(rows: dict) -> dict:
    """``{label: {metric: v}}`` with NaN/inf as None (JSON has no NaN)."""
    return {label: {k: (None if not np.isfinite(v) else v) for k, v in r.items()} for label, r in rows.items()}


def spread_over_seeds(rows_by_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, tuple]]:
    """``{seed: {label: {metric: v}}}`` → ``{label: {metric: (mean, sample std, n)}}`` over the
    seeds that scored that label (std is NaN for one seed; non-finite values are left out)."""
    labels = list(dict.fromkeys(label for rows in rows_by_seed.values() for label in rows))
    out: dict[str, dict[str, tuple]] = {}
    for label in labels:
        per_metric: dict[str, list[float]] = {}
        for rows in rows_by_seed.values():
            for k, v in rows.get(label, {}).items():
                if v is not None and np.isfinite(v):
                    per_metric.setdefault(k, []).append(float(v))
        out[label] = {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
                      for k, v in per_metric.items()}
    return out


def seed_spread(out: str | os.PathLike = "outputs", seeds: list[int] | tuple = (1, 2),
                variants: list[str] | tuple = tuple(VARIANTS), steps: int | None = None, preset: str = "tiny",
                overrides: dict | None = None, max_images: int | None = None, device: str = "cpu",
                progress: bool = True, workers: int | None = None) -> dict:
    """Retrain ``variants`` with other training seeds (``train.seed``) on the same data and
    priors, score each like ``evaluate_methods(..., pseudo_agreement=True)``, and report every
    metric as mean ± std over the seeds, the main run (seed 0, OUT/runs) included.

    Seed n lives in OUT/seeds/seed<n>, whose data/, priors/ and latent cache link to OUT's. All
    seeds' runs train in one pool (``train_variants``: one-thread processes side by side).
    Writes OUT/results/seeds.json and seeds.md; returns ``{"spread", "rows_by_seed", "markdown"}``.
    """
    from .pool import Job

    L = layout(out)
    variants = list(variants)
    base_seed = int((overrides or {}).get("train.seed", 0))
    marigold = dict(marigold_steps=50, marigold_ensemble=10)  # evaluate_methods' defaults, for every seed
    main = evaluate_methods(out, variants, max_images=max_images, device=device, name=None,
                            pseudo_agreement=True, progress=progress, **marigold)  # cached scores of 05_ablations
    rows_by_seed = {base_seed: main["rows"]}
    roots: dict[int, Path] = {}
    for seed in seeds:
        if int(seed) in rows_by_seed:
            continue
        roots[int(seed)] = link_inputs(L.root / "seeds" / f"seed{seed}", out)
    # every seed's runs in one pool, so the cores stay busy until the last run
    _train_jobs([Job(str(root), v, steps, preset, {**(overrides or {}), "train.seed": seed})
                 for seed, root in roots.items() for v in variants], workers=workers, progress=progress)
    # and every seed's scoring in one pool too; the tables below then read the kept scores
    _score_side_by_side([(str(root), m, _score_settings(root, None, max_images, **marigold, device=device,
                                                        name="ablations", pseudo=True))
                         for root in roots.values() for m in variants if _scorable(layout(root), m)],
                        workers, progress)
    for seed, root in roots.items():
        res = evaluate_methods(root, variants, max_images=max_images, device=device, name="ablations",
                               pseudo_agreement=True, progress=progress, **marigold)
        rows_by_seed[seed] = res["rows"]
    spread = spread_over_seeds(rows_by_seed)
    seeds_per_label = {label: max((s[2] for s in stats.values()), default=0) for label, stats in spread.items()}
    markdown = (f"Mean ± sample std over training seeds {sorted(rows_by_seed)} (same data, priors and steps), "
                f"×100 on the held-out scenes. {_RATIO_NOTE}{_PSEUDO_NOTE}\n\n"
                + _methods_table(spread, main["columns"], _cell, seeds=seeds_per_label))
    clean = {label: {k: [m, sd if np.isfinite(sd) else None, n] for k, (m, sd, n) in stats.items()}
             for label, stats in spread.items()}
    write_json(L.results / "seeds.json", {"seeds": sorted(rows_by_seed), "spread": clean,
                                          "rows_by_seed": {str(k): _finite_or_none(v) for k, v in rows_by_seed.items()}})
    write_text(L.results / "seeds.md", markdown)
    return {"spread": spread, "rows_by_seed": rows_by_seed, "markdown": markdown}


# -- 06: figures -------------------------------------------------------------------------------------------

def make_figures(out: str | os.PathLike = "outputs", figures_dir: str | os.PathLike = "figures",
                 variants: tuple | list = ("image_trajectory", "no_trajectory", "no_teacher", "teacher_on_d0", "random_init"),
                 n_images: int = 4, marigold_steps: int = 50, marigold_ensemble: int = 10, device: str = "cpu") -> list[Path]:
    """Fig. 1/4 (real photos), Fig. 5 (held-out scenes vs GT), Fig. 6 (boundary close-ups),
    Fig. 7 (ablation grid) analogues, and ``tables.md`` from OUT/results. In Fig. 5 and 6 each
    prediction is aligned to the ground truth as it is scored and drawn on the ground truth's
    colour scale; the photos (no ground truth) stretch each map on its own."""
    import matplotlib.pyplot as plt
    import torch

    from . import plots
    from .data.base import usable_items
    from .data.io import list_files, read_rgb
    from .data.synthetic import SyntheticDepthDataset
    from .evaluate import aligned_depth, depth_like, output_space, predict_depths, predict_raw, protocol_of

    L = layout(out)
    figs = Path(figures_dir)
    figs.mkdir(parents=True, exist_ok=True)
    # the first items of OUT/data/real are the plain (uncropped) photos, one per photo
    photo_files = [f for f in list_files(L.real) if f.parent == L.real][:max(n_images, 6)]
    photos = [torch.from_numpy(read_rgb(f)).permute(2, 0, 1).float() / 255.0 for f in photo_files]
    # held-out scenes: half synthetic, half real-styled (when that set exists)
    domains = [SyntheticDepthDataset(L.eval)] + ([SyntheticDepthDataset(L.eval_real)] if L.eval_real.is_dir() else [])
    per = [(n_images + 1) // len(domains)] + [n_images // len(domains)] * (len(domains) - 1)
    items = [it for ds, k in zip(domains, per) for it in usable_items(ds, k)]
    scenes = [it["image"] for it in items]
    gts = [it["depth"][0].numpy() for it in items]
    valids = [it["valid_mask"][0].numpy() for it in items]
    main = ["fiffdepth", SHIPPED, MARIGOLD, "teacher"]
    available = [m for m in main + list(variants) if _scorable(L, m)]
    protocol = protocol_of("embedded")
    preds_photo, preds_scene, aligned_scene = {}, {}, {}
    for m in available:
        p, call = predictor_for(out, m, device), pipeline_kwargs_for(m, marigold_steps, marigold_ensemble)
        preds_photo[m] = predict_depths(p, photos, None, pipeline_kwargs=call)
        raw, space = predict_raw(p, scenes, None, pipeline_kwargs=call), output_space(p)
        preds_scene[m] = depth_like(raw, space)
        # as scored: fitted to the ground truth in the predictor's own space (depth or disparity)
        aligned_scene[m] = [aligned_depth(r, g, v, space, protocol) for r, g, v in zip(raw, gts, valids)]
    hwc = lambda xs: [x.permute(1, 2, 0).numpy() for x in xs]  # noqa: E731
    cols = lambda preds, ms: {label_of(m): preds[m] for m in ms if m in preds}  # noqa: E731
    paths = [figs / "fig1_real_photos.png", figs / "fig5_heldout_scenes.png", figs / "fig6_boundaries.png",
             figs / "fig7_ablations.png"]
    plots.comparison_grid(hwc(photos), cols(preds_photo, main), out=paths[0],
                          title="real photos (scikit-image): FiffDepth (this run, shipped) vs Marigold-style "
                                "fine-tune vs teacher")
    on_gt = ("\neach prediction fitted to the ground truth by least-squares scale and shift, as scored, "
             "and drawn on the ground truth's colour scale")
    plots.comparison_grid(hwc(scenes), cols(aligned_scene, main), gt=gts, valid=valids, out=paths[1], gt_scale=True,
                          title="held-out scenes (exact ground truth): "
                                + ("synthetic rows, then real-styled rows" if len(domains) > 1 else "synthetic")
                                + on_gt)
    zoom = [plots.detail_window(g, v, size=max(16, g.shape[0] // 4)) for g, v in zip(gts, valids)]
    plots.comparison_grid(hwc(scenes), cols(aligned_scene, main), gt=gts, valid=valids, zoom=zoom, out=paths[2],
                          gt_scale=True, title="boundary close-ups (window with the most GT depth edges)" + on_gt)
    pick = [0, len(scenes) - 1] if len(scenes) > 1 else [0]  # a synthetic and a real-styled scene
    mixed = hwc(photos[:2] + [scenes[i] for i in pick])
    abl = ["fiffdepth", *variants]
    plots.comparison_grid(mixed, {label_of(m): preds_photo[m][:2] + [preds_scene[m][i] for i in pick]
                                  for m in abl if m in preds_photo},
                          out=paths[3], title="ablations (Fig. 7): 2 photos, a synthetic and a real-styled scene")
    plt.close("all")
    tables = [p for p in sorted(L.results.glob("*.md"))]
    if tables:
        text = "# Result tables (regenerated by notebooks/06_figures.ipynb)\n\n" + "\n\n".join(
            f"## {p.stem}\n\n{p.read_text()}" for p in tables)
        write_text(figs / "tables.md", text)
        paths.append(figs / "tables.md")
    return paths
