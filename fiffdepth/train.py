"""Fine-tune FiffDepth with accelerate (Eq. 7): one trainer from a laptop CPU to many GPUs.

Each optimisation step draws a synthetic half-batch (image, GT depth) and a real half-batch
(image, teacher pseudo-label) from latent caches and minimises ``fiffdepth_objective``.
Everything random in a step (which samples, the trajectory noise and timesteps) is a function
of (seed, micro-step, rank), so a resumed run replays exactly what an uninterrupted run does.

    fiffdepth train --preset tiny
    accelerate launch --num_processes 8 -m fiffdepth.cli train --preset paper --set data.synthetic=...
    torchrun --nproc_per_node 2 -m fiffdepth.cli train --preset tiny      # CPU, gloo

Precision and device are accelerate's: ``train.mixed_precision`` is the default that
``accelerate launch --mixed_precision`` (or ``accelerate config``) overrides; the run records
the one it used in ``summary.json``.

Run directory: the final model in the diffusers layout (loadable by
``FiffDepthPipeline.from_pretrained(run_dir)``), ``losses.jsonl``, ``config.yaml``,
``summary.json``, tracker logs under ``logs/`` (``train.report_to``), and
``checkpoints/checkpoint-NNNNNN/``: ``accelerator.save_state`` (optimiser, LR schedule, each
rank's RNG states, the trainer's counters, the EMA weights when kept; the UNet in ``unet/``)
plus ``trainer_state.json`` and a sha256 ``manifest.json`` written last.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import replace_dir, verify_manifest, write_manifest, write_text
from .cache import LatentCache, build_latent_cache, cache_key, files_fingerprint
from .codecs import ImageCodec
from .config import ConfigError, FiffDepthConfig, add_config_arguments, config_from_args
from .data.base import usable_items
from .data.io import DataError
from .data.real import pseudo_label_path  # noqa: F401  (re-exported: the trainer's label lookup)
from .hub import FiffDepthError
from .losses import LOSS_TERMS, ObjectiveBatch, fiffdepth_objective, latent_mae, sample_trajectory_timesteps
from .model import FiffDepthModel

CKPT_PREFIX = "checkpoint-"


class ResumeError(FiffDepthError):
    """A checkpoint that cannot be resumed (none intact, another run's), or one in the way of a fresh run."""


class NonFiniteLossError(FiffDepthError, FloatingPointError):
    pass


# -- data: sources -> latent caches ---------------------------------------------------------------

def _synthetic_dataset(entry: str):
    kind, _, path = entry.partition(":")
    if not path:
        kind, path = "embedded", kind
    if kind == "embedded":
        from .data.synthetic import SyntheticDepthDataset as cls
    elif kind == "hypersim":
        from .data.hypersim import HypersimDataset as cls
    elif kind in ("hypersim_raw", "hypersim-raw"):
        from .data.hypersim import HypersimRawDataset as cls
    elif kind == "vkitti":
        from .data.vkitti import VirtualKITTI2Dataset as cls
    else:
        raise ConfigError(f"data.synthetic entry {entry!r}: unknown kind {kind!r} (embedded, hypersim, hypersim_raw, vkitti)")
    return cls(path)


def _real_dataset(entry: str):
    from .data.real import ImageFolder, TarShards

    p = Path(entry)
    if p.is_dir() and not any(p.glob("*.tar")):
        return ImageFolder(p)
    return TarShards(entry)


def make_accelerator(mixed_precision: str = "no", grad_accumulation: int = 1, **kwargs):
    """The ``Accelerator`` of a training loop (this trainer's and the small ones: the Marigold
    baseline, decoder distillation, the priors' pretraining).

    - Precision: ``mixed_precision`` (the config's), unless ``accelerate launch`` chose one
      (``--mixed_precision`` or its config file set ``ACCELERATE_MIXED_PRECISION``): the launcher wins.
    - Device: ``cpu=True`` only on a machine with no CUDA, MPS or XPU device; accelerate then runs
      launched processes as MULTI_CPU over gloo.
    - A second run in the same single-process Python session (a notebook, the tests) may use
      another precision: accelerate keeps its state process-wide and would refuse, so the
      single-process state is started afresh. A launched multi-process state is never reset.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState, GradientState

    precision = None if os.environ.get("ACCELERATE_MIXED_PRECISION") else mixed_precision
    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    xpu = getattr(torch, "xpu", None)
    has_device = (torch.cuda.is_available() or torch.backends.mps.is_available()
                  or bool(xpu is not None and xpu.is_available()))
    return Accelerator(cpu=not has_device, mixed_precision=precision,
                       gradient_accumulation_steps=grad_accumulation, **kwargs)


def one_process_accelerator(loop: str, mixed_precision: str = "no"):
    """``make_accelerator`` for the small training loops (``loop`` names one in errors): they take
    accelerate's device and precision, but every process would draw the same batches, so they
    run in one process."""
    accelerator = make_accelerator(mixed_precision)
    if accelerator.num_processes > 1:
        raise FiffDepthError(f"{loop} runs in one process ({accelerator.num_processes} were launched): run it "
                             "without `accelerate launch --num_processes N` / torchrun")
    return accelerator


REPORT_TO = ("auto", "tensorboard", "wandb", "none")


def trackers(report_to: str) -> list[str] | None:
    """``train.report_to`` as accelerate's ``log_with``: "auto" is TensorBoard where it is
    installed and no tracker otherwise; a named tracker must be installed."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    if report_to not in REPORT_TO:
        raise ConfigError(f"train.report_to={report_to!r}: choose one of {', '.join(REPORT_TO)}")
    installed = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    if report_to == "auto":
        return ["tensorboard"] if installed["tensorboard"] else None
    if report_to == "none":
        return None
    if not installed[report_to]:
        raise ConfigError(f"train.report_to={report_to!r}: {report_to} is not installed "
                          f"(pip install {report_to}, or --set train.report_to=none)")
    return [report_to]


def _dataset_files(ds) -> list:
    """The files a dataset reads, for the cache key (their sizes and mtimes invalidate it)."""
    root = getattr(ds, "root", None)
    if hasattr(root, "is_tar"):  # data.io.Root: Hypersim / Virtual KITTI 2, (rgb, depth) pairs under it
        if root.is_tar:
            return [str(root.path)]
        return sorted({str(root.path / rel) for pair in ds.samples for rel in pair})
    for attr in ("files", "paths", "index", "frames"):
        v = getattr(ds, attr, None)
        if isinstance(v, (list, tuple)) and v:
            return sorted({str(x[0] if isinstance(x, tuple) else x) for x in v})
    if root is not None and Path(root).is_dir():
        return sorted(str(p) for p in Path(root).rglob("*") if p.is_file())
    return [str(root)]


def _augment(item: dict, resolution: int, seed: int, index: int, version: int = 0, keep_aspect: int = 0) -> dict:
    """Version ``version`` of a training image (``data.augmentations``), in pixel space:
    0 the frame, 1 the same mirrored, 2+ a random crop of 60–100 % of it, mirrored at random,
    resized back to the frame's size. The frame is the maximal square crop resized to
    ``resolution``; with ``keep_aspect`` (the VAE's factor) it is ``native_frame``: the whole
    image at its own aspect ratio, never upsampled. A function of (seed, index, version) only."""
    from .data.base import SPATIAL_KEYS, crop_resize, native_frame

    rng = np.random.default_rng([seed, index, version])
    if keep_aspect:
        item = native_frame(item, resolution, keep_aspect, rng)
    size = tuple(item["image"].shape[-2:]) if keep_aspect else (resolution, resolution)
    if version >= 2:
        _, h, w = item["image"].shape
        zoom = rng.uniform(0.6, 1.0)
        ch, cw = (h, w) if keep_aspect else (min(h, w),) * 2
        ch, cw = max(8, round(ch * zoom)), max(8, round(cw * zoom))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        item = {k: (v[:, top:top + ch, left:left + cw] if k in SPATIAL_KEYS else v) for k, v in item.items()}
    out = crop_resize(item, size, rng, flip=False)
    if version == 1 or (version >= 2 and rng.random() < 0.5):
        out = {k: (v.flip(-1) if k in SPATIAL_KEYS else v) for k, v in out.items()}
    return out


def build_caches(cfg: FiffDepthConfig, vae, cache_root: Path, progress: bool = True):
    """(synthetic cache, real cache or None) for the config's data, built once per VAE/settings.
    Files are read by ``data.num_workers`` DataLoader workers (``usable_items``), in order."""
    res = cfg.data.resolution
    seed = cfg.train.seed
    workers = cfg.data.num_workers  # reads files in parallel; the cache is the same bytes for any count
    syn_sets = [_synthetic_dataset(e) for e in cfg.data.synthetic]
    if not syn_sets:
        raise ConfigError("data.synthetic is empty: the d0 and trajectory terms need synthetic images with depth")
    # a dataset with ``keeps_aspect`` (Virtual KITTI) is cached at its own frame shape, never upsampled
    keep = [ImageCodec(vae).scale_factor if getattr(d, "keeps_aspect", False) else 0 for d in syn_sets]
    syn_src = {"synthetic": [[e, files_fingerprint(_dataset_files(d))] + (["keeps_aspect"] if kp else [])
                             for e, d, kp in zip(cfg.data.synthetic, syn_sets, keep)]}
    n_aug = max(1, cfg.data.augmentations)
    n_syn = sum(len(d) for d in syn_sets) * n_aug

    def syn_items():  # scene-major: the n_aug versions of a scene are adjacent; bad scenes dropped
        k = 0
        for d, kp in zip(syn_sets, keep):
            for item in usable_items(d, num_workers=workers):
                for v in range(n_aug):
                    yield _augment(item, res, seed, k, v, keep_aspect=kp)
                k += 1

    syn_key = cache_key(vae, res, {**syn_src, "augmentations": n_aug, "seed": seed})
    syn = build_latent_cache(cache_root, "syn-" + syn_key, syn_items, n_syn, vae,
                             progress=progress, description="synthetic")
    if cfg.loss.teacher_supervision == "none" or not cfg.data.real:
        return syn, None
    pseudo_dir = Path(cfg.data.pseudo_labels)
    if not pseudo_dir.is_dir():
        raise DataError(f"{pseudo_dir}: pseudo-label folder not found (run `fiffdepth pseudolabel` first)")
    real_sets = [_real_dataset(e) for e in cfg.data.real]
    real_src = {"real": [[e, files_fingerprint(_dataset_files(d))] for e, d in zip(cfg.data.real, real_sets)],
                "pseudo": files_fingerprint(pseudo_dir.rglob("*.npy")), "augmentations": n_aug, "seed": seed}
    missing = []

    def real_items():
        k = 0
        for d in real_sets:
            for item in usable_items(d, num_workers=workers):
                try:
                    label = pseudo_label_path(pseudo_dir, item["name"])
                    depth = np.load(label, allow_pickle=False).astype(np.float32)
                    if depth.shape != tuple(item["image"].shape[-2:]):
                        raise DataError(f"{label}: shape {depth.shape}, image is {tuple(item['image'].shape[-2:])}")
                    if not (np.isfinite(depth) & (depth > 0)).any():
                        raise DataError(f"{label}: no valid pixel (all NaN, inf, zero or negative)")
                except (OSError, ValueError) as err:  # DataError is a ValueError
                    missing.append(item["name"])
                    warnings.warn(f"skipping {item['name']}: pseudo-label unusable ({err})")
                    continue
                t = torch.from_numpy(depth)[None]
                valid = torch.isfinite(t) & (t > 0)
                labelled = {"image": item["image"], "depth": torch.where(valid, t, 0.0), "valid_mask": valid,
                            "name": item["name"]}
                for v in range(n_aug):
                    yield _augment(labelled, res, seed, 10_000_000 + k, v)
                k += 1

    # the count is only needed to build: listing tar shards reads their headers
    real = build_latent_cache(cache_root, "real-" + cache_key(vae, res, real_src), real_items,
                              lambda: sum(len(d) for d in real_sets) * n_aug, vae, progress=progress, description="real")
    if missing:
        warnings.warn(f"{len(missing)} real image(s) had no usable pseudo-label and were skipped")
    if real.valid_pixels() == 0:  # the teacher term would be exactly 0 for the whole run
        raise DataError(f"{pseudo_dir}: no valid pseudo-label pixel in any of the {len(real)} cached real "
                        "images (every label NaN/zero or masked out); the teacher term would be silently 0")
    return syn, real


def heldout_split(n_items: int, augmentations: int, heldout: int) -> tuple[int, range]:
    """(number of training items, cache indices of the held-out frames) for a synthetic cache
    of ``n_items`` = scenes × ``augmentations`` (scene-major). The last ``heldout`` scenes (at
    most a quarter), with all their versions, stay out of training; their un-augmented frames
    measure the held-out d0 loss."""
    n_aug = max(1, augmentations)
    n_scenes = n_items // n_aug
    n_held = min(heldout, n_scenes // 4) if heldout else 0
    n_train = (n_scenes - n_held) * n_aug
    return n_train, range(n_train, n_items, n_aug) if n_held else range(0)


# -- deterministic sampling ---------------------------------------------------------------------------

def _seed_for(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(",".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def stream_indices(n: int, start: int, count: int, seed: int, salt: int) -> list[int]:
    """Positions [start, start+count) of an endless stream of per-epoch permutations of range(n)."""
    out = []
    perms: dict[int, torch.Tensor] = {}
    for p in range(start, start + count):
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_for(seed, salt, epoch)))
        out.append(int(perms[epoch][p % n]))
    return out


def synthetic_indices(buckets, m: int, count: int, seed: int) -> list[int]:
    """The ``count`` synthetic cache indices of micro-step ``m`` (all ranks' together), all of one
    frame shape. ``buckets``: the training indices grouped by shape (``LatentCache.shape_buckets``).
    One bucket: positions [m·count, (m+1)·count) of ``stream_indices`` over it. Several (Virtual
    KITTI's own shape beside the square frames): a bucket drawn per micro-step with probability
    proportional to its size, then the same positions of that bucket's own stream."""
    b = 0
    if len(buckets) > 1:
        ends = np.cumsum([len(x) for x in buckets])
        draw = int(np.random.default_rng(_seed_for(seed, 3, m)).integers(ends[-1]))
        b = int(np.searchsorted(ends, draw, side="right"))
    salt = 0 if len(buckets) == 1 else 10 + b
    return [buckets[b][p] for p in stream_indices(len(buckets[b]), m * count, count, seed, salt)]


class ObjectiveModule(nn.Module):
    """Eq. 7 as one ``forward`` so DDP sees a single forward per backward (the UNet runs 2–3 times)."""

    def __init__(self, model: FiffDepthModel, loss_cfg):
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, x0_syn, d_syn, mask_syn, x0_real, d_real, mask_real, timesteps, noise):
        batch = ObjectiveBatch(x0_syn, d_syn, x0_real, d_real, mask_syn, mask_real)
        total, terms = fiffdepth_objective(self.model, batch, self.loss_cfg, timesteps=timesteps, noise=noise)
        return total, torch.stack([terms[k].float() for k in LOSS_TERMS])


# -- checkpoints ----------------------------------------------------------------------------------------

@dataclass
class TrainerState:
    """The counters a resumed run continues from. Registered with ``accelerator.register_for_checkpointing``,
    so ``save_state``/``load_state`` carry it; also written as ``trainer_state.json`` for people and for
    the run-config check made before anything is loaded. The data order is a function of (seed,
    micro-step, rank), so restoring ``step`` restores it."""

    step: int = 0
    micro_step: int = 0
    data_position: int = 0  # samples per half drawn so far (global)
    world_size: int = 1
    config_hash: str = ""
    last: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def checkpoint_unet_in_diffusers_layout(accelerator) -> None:
    """Make ``save_state``/``load_state`` keep the prepared ``ObjectiveModule`` as its UNet in
    ``unet/`` (diffusers layout, loadable with ``from_pretrained``) instead of one state dict that
    would copy the frozen VAE into every checkpoint. Under FSDP and DeepSpeed accelerate saves
    the model its own way and these hooks see no model."""
    from safetensors.torch import load_file

    def save_unet(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                accelerator.unwrap_model(m).model.unet.save_pretrained(Path(output_dir) / "unet",
                                                                       safe_serialization=True)
        weights.clear()

    def load_unet(models, input_dir):
        while models:
            unet = accelerator.unwrap_model(models.pop()).model.unet
            unet.load_state_dict(load_file(str(Path(input_dir) / "unet" / UNET_WEIGHTS)))

    accelerator.register_save_state_pre_hook(save_unet)
    accelerator.register_load_state_pre_hook(load_unet)


def save_checkpoint(accelerator, ckpt_root: Path, state: TrainerState, keep: int) -> Path:
    """checkpoint-<step>: ``accelerator.save_state`` on every rank (FSDP and DeepSpeed shard the
    optimiser state; each rank's RNG state is its own) into a staging folder, then
    ``trainer_state.json`` and the sha256 manifest, written last, then a rename: a kill leaves
    either the whole checkpoint or a ``.tmp-`` folder that is never resumed. Keeps the last ``keep``.
    (Not ``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=...)``: that writes in
    place under the final name, so a kill could leave half a checkpoint there.)"""
    final = ckpt_root / f"{CKPT_PREFIX}{state.step:06d}"
    tmp = ckpt_root / f".tmp-{state.step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state.state_dict(), indent=2))
        write_manifest(tmp, {"step": state.step}, fsync=True)
        replace_dir(tmp, final)
        for old in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, n_registered: int) -> None:
    """``accelerator.load_state(path)`` after checking that the checkpoint holds what this run
    registered (``n_registered`` custom objects: trainer state, LR schedule, EMA when on)."""
    saved = len(list(path.glob("custom_checkpoint_*.pkl")))
    if saved != n_registered:
        raise ResumeError(f"{path}: holds {saved} training state object(s), this run keeps {n_registered} "
                          "(train.ema differs?); pass --resume none --overwrite to start over")
    accelerator.load_state(str(path))


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX))


def verify_checkpoint(path: Path) -> str | None:
    """None if complete and intact, else the problem (naming the file)."""
    return verify_manifest(path)


def find_resume_checkpoint(ckpt_root: Path, resume: str) -> Path | None:
    """``latest``: newest intact checkpoint, warning about each broken one skipped (None when
    there is no checkpoint at all); or a path. No intact one among those there is an error."""
    if resume in ("", "none", None):
        return None
    candidates = list_checkpoints(ckpt_root)[::-1] if resume == "latest" else [Path(resume)]
    problems = []
    for c in candidates:
        problem = verify_checkpoint(c)
        if problem is None:
            return c
        problems.append(problem)
        warnings.warn(f"ignoring checkpoint {c.name}: {problem}; falling back to the previous one")
    if problems:
        where = ckpt_root if resume == "latest" else resume
        raise ResumeError(f"{where}: no intact checkpoint ({len(problems)} broken, newest: {problems[0]}); "
                          "pass --resume none --overwrite to start over")
    return None


# Settings that say where a run goes and how long or how often it logs, not what it learns:
# a checkpoint made under other values of these still belongs to the run.
RUN_SETTINGS = ("train.output_dir", "train.iterations", "train.checkpoint_every", "train.keep_checkpoints",
                "train.log_every", "train.eval_every", "train.report_to", "data.num_workers")


def config_hash(cfg: FiffDepthConfig) -> str:
    """sha256 (16 hex digits) of the method settings: the config without ``RUN_SETTINGS``."""
    d = cfg.to_dict()
    for key in RUN_SETTINGS:
        section, name = key.split(".")
        d[section].pop(name, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_run_directory(ckpt_root: Path, resume: str | None, chash: str, force_resume: bool = False,
                        overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from (None: a fresh start), after checking that it belongs to
    this run: written by ``save_checkpoint``, and with the same ``config_hash`` unless
    ``force_resume``. A fresh run into a directory that already holds checkpoints is refused
    unless ``overwrite``; with ``overwrite``, checkpoints that cannot be resumed (broken, another
    run's, an earlier format) mean a fresh start too. The caller removes
    the old checkpoints when this returns None under ``overwrite``."""
    try:
        start = find_resume_checkpoint(ckpt_root, resume or "none")
    except ResumeError as err:
        if not overwrite:
            raise
        warnings.warn(f"starting over (--overwrite): {err}")
        return None
    if start is not None:
        if not (start / "random_states_0.pkl").is_file():  # accelerate's save_state writes one per rank
            old = f"{start}: an earlier fiffdepth's checkpoint format, not accelerate's save_state"
            if overwrite:
                warnings.warn(f"starting over (--overwrite): {old}")
                return None
            raise ResumeError(f"{old}; resume it with that version, or pass --resume none --overwrite to start over")
        state = json.loads((start / "trainer_state.json").read_text())
        theirs = state.get("config_hash")
        if theirs != chash and overwrite and not force_resume:
            warnings.warn(f"starting over (--overwrite): {start} was made with other method settings")
            return None
        if theirs != chash and not force_resume:
            raise ResumeError(f"{start}: made with other method settings (config hash {theirs}, this run {chash}; "
                              f"see {ckpt_root.parent / 'config.yaml'}); pass --force-resume to resume anyway, "
                              "or --resume none --overwrite to start over")
    elif resume in (None, "", "none") and list_checkpoints(ckpt_root) and not overwrite:
        raise ResumeError(f"{ckpt_root}: holds checkpoints of an earlier run; pass --resume latest to continue it "
                          "or --overwrite to delete them and start over")
    return start


# -- the loop ---------------------------------------------------------------------------------------------

UNET_INITS = ("pretrained", "random")


def _load_model(cfg: FiffDepthConfig) -> FiffDepthModel:
    if cfg.model.unet_init not in UNET_INITS:
        raise ValueError(f"model.unet_init must be one of {UNET_INITS}, got {cfg.model.unet_init!r}")
    if not cfg.model.pretrained:
        return FiffDepthModel.from_config(cfg.model, seed=cfg.train.seed)
    model = FiffDepthModel.from_pretrained(cfg.model.pretrained, cfg.model)
    return model.reinit_unet(cfg.train.seed) if cfg.model.unet_init == "random" else model


def prior_fine_tune_steps(pretrained: str | os.PathLike | None) -> int:
    """Fine-tuning steps the starting weights already carry: 0 for a generator prior, a hub id
    or nothing; for a local FiffDepth model written by ``train`` (a ``summary.json`` beside its
    ``unet/``), its ``total_steps`` (or ``steps``, for summaries older than that field). A run
    started from it records ``total_steps`` = that + its own steps, so a model fine-tuned in
    stages is labelled with all of them."""
    if not pretrained:
        return 0
    f = Path(pretrained) / "summary.json"
    if not f.is_file():
        return 0
    try:
        s = json.loads(f.read_text())
        return int(s.get("total_steps", s["steps"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{f}: not a training summary ({err}); pass a model directory written by "
                         f"`fiffdepth train`, or remove the file") from err


def train(cfg: FiffDepthConfig, resume: str | None = None, progress: bool = True, cache_root: str | Path | None = None,
          on_log=None, force_resume: bool = False, overwrite: bool = False) -> dict:
    """Run (or resume) a training run; returns a summary dict. See the module docstring.

    ``resume``: "latest", a checkpoint path, or None/"none" (fresh; refused where checkpoints
    exist unless ``overwrite``). A checkpoint with other method settings is refused unless
    ``force_resume`` (see ``check_run_directory``).

    ``on_log(record)`` (main process only) is called with each record appended to
    ``losses.jsonl`` — e.g. a live loss plot in a notebook (``fiffdepth.plots.LiveLossPlot``).
    """
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    tc = cfg.train
    out = Path(tc.output_dir)
    prior_steps = prior_fine_tune_steps(cfg.model.pretrained)  # before any work: a bad summary fails fast
    log_with = trackers(tc.report_to)
    accelerator = make_accelerator(tc.mixed_precision, tc.grad_accumulation, log_with=log_with,
                                   project_config=ProjectConfiguration(project_dir=str(out),
                                                                       logging_dir=str(out / "logs")))
    set_seed(tc.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    ckpt_root, chash = out / "checkpoints", config_hash(cfg)
    start = check_run_directory(ckpt_root, resume, chash, force_resume, overwrite)
    if accelerator.is_main_process:
        if start is None and overwrite:
            shutil.rmtree(ckpt_root, ignore_errors=True)
        for stale in ckpt_root.glob(".tmp-*"):  # a checkpoint a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    half = tc.batch_size // 2
    if half < world or half % (world * tc.grad_accumulation):
        raise ConfigError(f"train.batch_size={tc.batch_size}: each half ({half}) must split evenly over "
                         f"{world} process(es) × {tc.grad_accumulation} accumulation step(s)")
    micro_half = half // tc.grad_accumulation  # global samples per half per micro-step
    local_half = micro_half // world

    model = _load_model(cfg)
    model.vae.to(accelerator.device)
    if cfg.model.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    cache_root = Path(cache_root) if cache_root else out.parent / ".latent_cache"
    with accelerator.main_process_first():
        syn, real = build_caches(cfg, model.vae, cache_root, progress=progress and accelerator.is_main_process)
    n_train, held_idx = heldout_split(len(syn), cfg.data.augmentations, tc.heldout)
    buckets = syn.shape_buckets(range(n_train))  # one per frame shape: a micro-step draws from one
    held = [syn.tensors(group) for group in syn.shape_buckets(held_idx)] if held_idx else None
    use_real = real is not None and len(real) > 0 and cfg.loss.teacher_supervision != "none"
    # Without teacher supervision there is no real half: the batch is refilled with synthetic
    # samples, so every variant sees train.batch_size samples a step (issue 15).
    syn_share = 1 if use_real else 2
    model.vae.to("cpu")  # the VAE is not needed while training on cached latents

    model.unet.train()
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lr_scheduler = get_scheduler(tc.lr_schedule, optimizer, num_warmup_steps=tc.lr_warmup_steps,
                                 num_training_steps=tc.iterations)
    ema = None
    if tc.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.unet.parameters(), decay=tc.ema_decay)
    module = ObjectiveModule(model, cfg.loss)
    module, optimizer = accelerator.prepare(module, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    # The LR schedule is registered, not prepared: a prepared one steps once per process per call.
    state = TrainerState(config_hash=chash, world_size=world)
    checkpointed = [state, lr_scheduler] + ([ema] if ema is not None else [])
    accelerator.register_for_checkpointing(*checkpointed)
    checkpoint_unet_in_diffusers_layout(accelerator)

    if start is not None:
        load_checkpoint(accelerator, start, len(checkpointed))
        if ema is not None:
            ema.to(accelerator.device)  # load_state reads it onto the CPU
        state.config_hash, state.world_size = chash, world  # a forced resume continues as this run
        if accelerator.is_main_process:
            print(f"resumed from {start} at step {state.step}")
    step = state.step
    log_path = out / "losses.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
        _truncate_log(log_path, step)
        if log_with:
            accelerator.init_trackers("fiffdepth", config=_flat(cfg.to_dict()))

    if held is not None and step == 0 and accelerator.is_main_process:
        first = {"step": 0, "heldout_d0_mae": heldout_d0_mae(model, held, ema)}
        _append_log(log_path, first)
        if on_log is not None:
            on_log(first)
    acp_len = len(model.scheduler.alphas_cumprod)
    bar = tqdm(total=tc.iterations, initial=step, desc="train", disable=not (progress and accelerator.is_main_process))
    t_start, steps_done, last = time.time(), 0, {}
    while step < tc.iterations:
        sums = torch.zeros(len(LOSS_TERMS) + 1, device=accelerator.device)
        for a in range(tc.grad_accumulation):
            m = step * tc.grad_accumulation + a
            batch = _micro_batch(syn, real if use_real else None, buckets, m, micro_half, rank, local_half,
                                 tc.seed, acp_len, accelerator.device, syn_share)
            with accelerator.accumulate(module):
                total, terms = module(*batch)
                if not torch.isfinite(total):
                    names = _batch_names(syn, real if use_real else None, buckets, m, micro_half, rank, local_half,
                                         tc.seed, syn_share)
                    good = [c for c in list_checkpoints(ckpt_root) if verify_checkpoint(c) is None]
                    raise NonFiniteLossError(f"non-finite loss ({float(total.detach())}) at step {step + 1}, batch {names}; "
                                             f"last good checkpoint: {good[-1] if good else 'none'}")
                accelerator.backward(total)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(module.parameters(), tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums += torch.cat([total.detach().float()[None], terms.detach()]) / tc.grad_accumulation
        lr_scheduler.step()
        if ema is not None:
            ema.step(accelerator.unwrap_model(module).model.unet.parameters())
        step += 1
        steps_done += 1
        sums = accelerator.reduce(sums, reduction="mean")
        last = {"step": step, "loss": float(sums[0]), **{k: float(v) for k, v in zip(LOSS_TERMS, sums[1:])},
                "lr": lr_scheduler.get_last_lr()[0]}
        if held is not None and (step % tc.eval_every == 0 or step == tc.iterations):
            last["heldout_d0_mae"] = heldout_d0_mae(accelerator.unwrap_model(module).model, held, ema)
        if accelerator.is_main_process:
            if step % tc.log_every == 0 or "heldout_d0_mae" in last or step == tc.iterations:
                _append_log(log_path, last)
                if on_log is not None:
                    on_log(dict(last))
                if log_with:
                    accelerator.log({f"loss/{k}" if k in LOSS_TERMS or k == "loss" else k: v
                                     for k, v in last.items() if k != "step"}, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", it_s=f"{steps_done / max(1e-9, time.time() - t_start):.2f}")
        if step % tc.checkpoint_every == 0 and step < tc.iterations:
            state.step, state.micro_step, state.data_position = step, step * tc.grad_accumulation, step * half
            state.last = last
            save_checkpoint(accelerator, ckpt_root, state, tc.keep_checkpoints)
    bar.close()
    elapsed = time.time() - t_start
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(module).model
    trained_digest = weights_digest(final.unet)
    if ema is not None:
        ema.copy_to(final.unet.parameters())
    # every rank's weight digest (of the saved weights, EMA when on): DDP must leave all replicas identical
    from accelerate.utils import gather_object

    digests = gather_object([weights_digest(final.unet)])
    summary = {"steps": step, "total_steps": prior_steps + step, "seconds": elapsed, "it_per_s": steps_done / elapsed if elapsed > 0 else None,
               "final": last, "output_dir": str(out), "world_size": world, "device": str(accelerator.device),
               "mixed_precision": accelerator.mixed_precision, "report_to": log_with or [],
               "trained_weight_digest": trained_digest, "rank_weight_digests": digests}
    if prior_steps:
        summary["fine_tuned_from"] = {"path": str(cfg.model.pretrained), "total_steps": prior_steps}
    if accelerator.is_main_process:
        final.unet.eval()
        final.vae.to("cpu")
        final.save_pretrained(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        msg = (f"trained {steps_done} step(s) to step {step} in {elapsed:.1f}s "
               f"({summary['it_per_s'] or 0:.2f} it/s on {world} process(es)); loss {last.get('loss', float('nan')):.4f}")
        if "heldout_d0_mae" in last:
            msg += f", held-out d0 MAE {last['heldout_d0_mae']:.4f}"
        print(msg + f"; model saved to {out}")
    accelerator.wait_for_everyone()  # the main process has saved the model: every rank leaves together
    if world > 1:
        # Free DDP first: its reducer holds the process group, so the group's last reference would
        # otherwise go at interpreter exit, after a faster peer has gone, and the gloo destructor
        # can then block forever joining its worker thread.
        del module, optimizer
        accelerator.free_memory()
        gc.collect()
    accelerator.end_training()  # trackers; and the process group, on every rank at once
    if world > 1 and torch.distributed.is_initialized():  # older accelerate leaves it
        torch.distributed.destroy_process_group()
    return summary


def _micro_batch(syn: LatentCache, real: LatentCache | None, buckets, m: int, micro_half: int, rank: int,
                 local_half: int, seed: int, acp_len: int, device, syn_share: int = 1):
    """One micro-step's tensors for this rank: ``syn_share`` × ``local_half`` synthetic samples
    (2 when there is no real half, which the synthetic side then fills), drawn by
    ``synthetic_indices`` from the training ``buckets``, and ``local_half`` real."""
    n_syn, local_syn = micro_half * syn_share, local_half * syn_share
    lo = rank * local_syn
    idx = synthetic_indices(buckets, m, n_syn, seed)[lo:lo + local_syn]
    x0_syn, d_syn, mask_syn = syn.tensors(idx)
    if real is not None:
        rlo = rank * local_half
        ridx = stream_indices(len(real), m * micro_half, micro_half, seed, 1)[rlo:rlo + local_half]
        x0_real, d_real, mask_real = real.tensors(ridx)
    else:
        x0_real = d_real = mask_real = None
    # augmentation (mirror images, crops) happened in pixel space when the cache was built
    g = torch.Generator().manual_seed(_seed_for(seed, 2, m, rank))
    timesteps = sample_trajectory_timesteps(len(idx), acp_len, generator=g)
    noise = torch.randn(x0_syn.shape, generator=g)
    tensors = [x0_syn, d_syn, mask_syn, x0_real, d_real, mask_real, timesteps, noise]
    return [t.to(device) if t is not None else None for t in tensors]


def _batch_names(syn: LatentCache, real: LatentCache | None, buckets, m: int, micro_half: int, rank: int,
                 local_half: int, seed: int, syn_share: int = 1) -> list[str]:
    """The sample names ``_micro_batch`` drew for micro-step ``m`` on this rank (same indices)."""
    n_syn, local_syn = micro_half * syn_share, local_half * syn_share
    lo = rank * local_syn
    names = [syn.names[i] for i in synthetic_indices(buckets, m, n_syn, seed)[lo:lo + local_syn]]
    lo = rank * local_half
    if real is not None:
        names += [real.names[i] for i in stream_indices(len(real), m * micro_half, micro_half, seed, 1)[lo:lo + local_half]]
    return names


@torch.no_grad()
def heldout_d0_mae(model: FiffDepthModel, held, ema=None) -> float:
    """Eq. 5 on held-out synthetic latents (d0 against GT depth latents), EMA weights if kept;
    ``held``: one (x0, d, mask) per frame shape."""
    unet = model.unet
    was_training = unet.training
    unet.eval()
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    dev = next(unet.parameters()).device
    try:
        vals = [latent_mae(model.predict_latent(x0[i:i + 16].to(dev)).float(), d[i:i + 16].to(dev), mask[i:i + 16].to(dev)).item()
                for x0, d, mask in held for i in range(0, len(x0), 16)]
    finally:
        if ema is not None:
            ema.restore(unet.parameters())
        unet.train(was_training)
    return float(np.mean(vals))


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint (a killed run may have logged further); on a
    fresh start (step 0) drop them all, since step 0 is logged again."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if 0 < step and json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue  # a torn last line from a kill
    write_text(path, "".join(x + "\n" for x in keep))


def read_log(path: str | Path) -> list[dict]:
    """The run's losses.jsonl as a list of dicts (for notebooks and tests)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


# -- CLI ------------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", default="none", help="'latest', a checkpoint directory, or 'none' (default)")
    parser.add_argument("--force-resume", action="store_true",
                        help="resume even from a checkpoint made with other method settings")
    parser.add_argument("--overwrite", action="store_true",
                        help="a fresh run into an output directory with checkpoints: delete them and start over")
    parser.add_argument("--output-dir", default=None, help="shortcut for --set train.output_dir=...")
    parser.add_argument("--cache-dir", default=None, help="latent cache root (default: <output_dir>/../.latent_cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.output_dir:
        cfg = cfg.override({"train.output_dir": args.output_dir})
    train(cfg, resume=args.resume, progress=not args.no_progress, cache_root=args.cache_dir,
          force_resume=args.force_resume, overwrite=args.overwrite)
    return 0
