"""The embedded generator prior: a tiny latent diffusion model trained here (``fiffdepth pretrain``).

At paper scale nothing is trained: FiffDepth fine-tunes Stable Diffusion 2 loaded with
``from_pretrained``. The embedded default has no such model, so we make a small honest one in
the same directory layout (``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/``,
``tokenizer/``), and FiffDepth fine-tunes from it with exactly the same loader:

1. ``train_vae`` — a tiny ``AutoencoderKL`` on RGB images (embedded scenes + real photos) and
   on depth maps as 3-channel images (Marigold's encoding), L1 reconstruction + a small KL
   term, as in latent diffusion; the latent scaling factor is then set to 1/std of the
   latents (how SD's 0.18215 was chosen).
2. ``train_latent_diffusion`` — a tiny ``UNet2DConditionModel`` as an unconditional latent
   diffusion model on image latents: empty-prompt conditioning, DDPM 1000 steps, v-prediction.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from .atomic import staged_dir
from .codecs import DepthCodec, ImageCodec, normalize_depth
from .config import FiffDepthConfig, add_config_arguments, config_from_args
from .model import empty_prompt_embedding, make_scheduler
from .schedules import one_cycle


# -- a tiny CLIP text encoder, so the empty prompt comes from a real text encoder ---------------

def build_tiny_text_encoder(hidden_size: int, seed: int = 0):
    """A 1-layer ``CLIPTextModel`` + ``CLIPTokenizer`` with a 4-token vocabulary.

    Only the empty prompt is ever encoded (BOS + EOS, as Marigold), so a vocabulary of special
    tokens is enough; the point is that the embedding is computed by the same code as for SD2.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="fiffdepth-tok-"))
    try:
        (tmp / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}))
        (tmp / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=4, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1,
            projection_dim=hidden_size))
    finally:
        torch.random.set_rng_state(state)
    return tokenizer, encoder.eval()


# -- stage 1: VAE ------------------------------------------------------------------------------

def vae_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float = 1e-6) -> tuple[torch.Tensor, dict]:
    """L1 reconstruction (from a posterior sample) + KL to N(0, I); x in [-1, 1]."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    rec = (recon - x).abs().mean()
    kl = posterior.kl().mean() / x[0].numel()
    return rec + kl_weight * kl, {"rec": rec.detach(), "kl": kl.detach()}


def _random_crop(x: torch.Tensor, size: int | None, g: torch.Generator) -> torch.Tensor:
    """One random ``size``×``size`` window per sample (the nets are convolutional, so training on
    crops teaches the same per-pixel statistics at a fraction of the cost of full frames)."""
    h, w = x.shape[-2:]
    if not size or (size >= h and size >= w):
        return x
    size = min(size, h, w)
    tops = torch.randint(0, h - size + 1, (len(x),), generator=g).tolist()
    lefts = torch.randint(0, w - size + 1, (len(x),), generator=g).tolist()
    return torch.stack([xi[..., t:t + size, l:l + size] for xi, t, l in zip(x, tops, lefts)])


def train_vae(vae: AutoencoderKL, images: torch.Tensor, depths: torch.Tensor | None = None,
              depth_masks: torch.Tensor | None = None, steps: int = 1000, batch_size: int = 8, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0, crop: int | None = 64, progress: bool = True) -> dict:
    """Train the VAE on RGB images (N, 3, H, W) in [0, 1] and depth maps (M, 1, H, W).

    Each batch is half images and half depth maps (normalised per map with 2/98 percentiles
    to [-1, 1], replicated to 3 channels, as the depth codec will feed them), as random
    ``crop``-pixel windows. Afterwards the latent scaling factor is set so the image latents
    have unit standard deviation. Returns a log dict (final losses, seconds, scaling factor).
    Trains on accelerate's device (fp32 unless ``accelerate launch`` sets a precision); ``vae``
    is left on the device it came on. Batches are drawn on the CPU, the same on every device.
    """
    from tqdm.auto import tqdm

    from .train import one_process_accelerator

    g = torch.Generator().manual_seed(seed)
    depth_x = None
    if depths is not None and len(depths):
        depth_x = normalize_depth(depths, depth_masks).repeat(1, 3, 1, 1)
    image_x = images * 2.0 - 1.0 if images is not None and len(images) else None
    if image_x is None and depth_x is None:
        raise ValueError("train_vae needs images or depth maps")
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = one_cycle(opt, lr, steps)
    home = vae.device
    accelerator = one_process_accelerator("VAE pretraining")
    vae, opt = accelerator.prepare(vae, opt)
    vae.train()
    t0 = time.time()
    bar = tqdm(range(steps), desc="pretrain VAE", disable=not progress)
    stats = {}
    for _ in bar:
        half = batch_size // 2 if depth_x is not None and image_x is not None else batch_size
        parts = []
        if image_x is not None:
            parts.append(image_x[torch.randint(len(image_x), (half,), generator=g)])
        if depth_x is not None:
            parts.append(depth_x[torch.randint(len(depth_x), (batch_size - len(torch.cat(parts)) if parts else batch_size,), generator=g)])
        x = _random_crop(torch.cat(parts), crop, g)
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5, x, x.flip(-1))
        with accelerator.autocast():  # encode/decode are not forward: prepare's autocast would miss them
            loss, stats = vae_loss(vae, x.to(accelerator.device), kl_weight)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{stats['rec'].item():.4f}")
    vae = accelerator.unwrap_model(vae, keep_fp32_wrapper=False).to(home).eval()
    with torch.no_grad():
        ref = image_x if image_x is not None else depth_x
        lat = vae.encode(ref[: min(len(ref), 64)]).latent_dist.mean
    scaling = float(1.0 / lat.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scaling)
    return {"rec": float(stats.get("rec", torch.tensor(float("nan")))), "seconds": time.time() - t0,
            "scaling_factor": scaling}


# -- stage 2: latent diffusion UNet ----------------------------------------------------------------

def train_latent_diffusion(unet: UNet2DConditionModel, latents: torch.Tensor, empty_embedding: torch.Tensor,
                           scheduler, steps: int = 2000, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                           crop: int | None = 16, progress: bool = True) -> dict:
    """Unconditional latent diffusion on image latents (N, 4, h, w): v-prediction, DDPM, empty prompt.

    The standard objective ‖v − ε̂θ(x_t, t)‖² with t uniform over all T steps (0..T−1), as SD
    was trained; the feed-forward steps t = 0 and −1 only acquire their FiffDepth meaning later.
    Trained on random ``crop``×``crop`` latent windows (full frames when ``crop`` is None), on
    accelerate's device (fp32 unless ``accelerate launch`` sets a precision); ``unet`` is left on
    the device it came on. Batches and noise are drawn on the CPU, the same on every device.
    """
    from tqdm.auto import tqdm

    from .train import one_process_accelerator

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = one_cycle(opt, lr, steps)
    acp = scheduler.alphas_cumprod
    T = len(acp)
    home = unet.device
    accelerator = one_process_accelerator("UNet pretraining")
    unet, opt = accelerator.prepare(unet, opt)
    dev = accelerator.device
    unet.train()
    t0 = time.time()
    ema = None
    bar = tqdm(range(steps), desc="pretrain UNet", disable=not progress)
    for _ in bar:
        x0 = _random_crop(latents[torch.randint(len(latents), (batch_size,), generator=g)], crop, g)
        x0 = torch.where(torch.rand(batch_size, 1, 1, 1, generator=g) < 0.5, x0, x0.flip(-1))
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, T, (batch_size,), generator=g)
        x0, noise, t = x0.to(dev), noise.to(dev), t.to(dev)
        xt = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        cond = empty_embedding.to(dev).expand(batch_size, -1, -1)
        with accelerator.autocast():
            loss = F.mse_loss(unet(xt, t, encoder_hidden_states=cond).sample.float(), target)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
    unet = accelerator.unwrap_model(unet, keep_fp32_wrapper=False).to(home).eval()
    return {"loss": ema, "seconds": time.time() - t0}


@torch.no_grad()
def sample_images(unet: UNet2DConditionModel, vae: AutoencoderKL, empty_embedding: torch.Tensor, scheduler_config,
                  n: int = 8, latent_size: int = 32, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Draw n images (n, 3, H, W) in [0, 1] with DDIM from the trained prior (to look at what it learned)."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler_config, prediction_type="v_prediction", clip_sample=False,
                                     set_alpha_to_one=False, timestep_spacing="trailing")
    ddim.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, unet.config.in_channels, latent_size, latent_size, generator=g)
    cond = empty_embedding.expand(n, -1, -1)
    for t in ddim.timesteps:
        v = unet(x, t, encoder_hidden_states=cond).sample
        x = ddim.step(v, t, x).prev_sample
    return ImageCodec(vae).decode(x)


def save_generator(out_dir: str | Path, unet, vae, scheduler, tokenizer, text_encoder, meta: dict | None = None) -> Path:
    """Stable Diffusion directory layout, written atomically."""
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        tokenizer.save_pretrained(tmp / "tokenizer")
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"],
                 "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                 "fiffdepth_pretrain": meta or {}}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    return out_dir


def depth_roundtrip_abs_rel(vae: AutoencoderKL, depths: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean AbsRel of depth -> latent -> depth (after least-squares affine alignment) over valid pixels."""
    return depth_roundtrip_scores(vae, depths, masks)["abs_rel"]


def depth_roundtrip_scores(vae: AutoencoderKL, depths: torch.Tensor, masks: torch.Tensor) -> dict:
    """Depth -> latent -> depth on (N, 1, H, W) maps: mean AbsRel after least-squares affine
    alignment, and Depth Pro's boundary F1 of the round trip against the input (do thin
    structures survive the VAE?)."""
    import numpy as np

    from .metrics import boundary_f1

    codec = DepthCodec(vae)
    errs, f1s = [], []
    with torch.no_grad():
        for d, m in zip(depths, masks):
            norm = normalize_depth(d[None], m[None])
            rec = codec.decode(codec.encode(norm))[0, 0]
            gt, mm = d[0], m[0].bool()
            a = torch.stack([rec[mm], torch.ones_like(rec[mm])], 1).double()
            sol = torch.linalg.lstsq(a, gt[mm].double()[:, None]).solution
            pred = (a @ sol)[:, 0].clamp_min(1e-6)
            errs.append(((pred - gt[mm]).abs() / gt[mm]).mean().item())
            full = torch.full_like(gt, float("nan"), dtype=torch.float64)
            full[mm] = pred
            f1s.append(boundary_f1(full.numpy(), torch.where(mm, gt, float("nan")).double().numpy()))
    n = max(1, len(errs))
    return {"abs_rel": float(sum(errs) / n), "boundary_f1": float(np.mean(f1s)) if f1s else float("nan")}


def image_psnr(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean PSNR (dB) of image -> latent -> image on [0, 1] images."""
    codec = ImageCodec(vae)
    with torch.no_grad():
        rec = codec.decode(codec.encode(images))
    mse = ((rec - images) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


# -- CLI: fiffdepth pretrain -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--synthetic", required=True, help="embedded scenes folder (rgb/ depth/ mask/)")
    parser.add_argument("--styled", default=None,
                        help="real-styled scenes folder (same layout): images for the VAE and the UNet, "
                             "images + depth for the teacher")
    parser.add_argument("--out", required=True,
                        help="output root: OUT/generator (Stable Diffusion layout) and OUT/teacher (transformers layout)")
    parser.add_argument("--stage", choices=["all", "generator", "teacher"], default="all", help="which prior(s) to pretrain")
    parser.add_argument("--vae-steps", type=int, default=VAE_STEPS, help="VAE optimisation steps")
    parser.add_argument("--unet-steps", type=int, default=UNET_STEPS, help="latent-diffusion UNet optimisation steps")
    parser.add_argument("--teacher-steps", type=int, default=TEACHER_STEPS, help="teacher optimisation steps")
    parser.add_argument("--resolution", type=int, default=None, help="generator training resolution (default: data.resolution)")
    parser.add_argument("--max-images", type=int, default=4000, help="use at most this many training images")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, sampling and augmentation")
    parser.add_argument("--continue-from", default=None, metavar="DIR",
                        help="generator stage only: continue DIR's UNet for --unet-steps more steps (lr 5e-4, its VAE "
                             "kept) instead of pretraining from scratch; the shipped prior is weights/generator")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); the result does not depend on it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {}
    if args.continue_from and args.stage != "generator":
        raise SystemExit("fiffdepth pretrain: --continue-from needs --stage generator")
    if args.continue_from:
        report["generator"] = continue_generator(args.continue_from, args.synthetic, out / "generator",
                                                 unet_steps=args.unet_steps, styled_dir=args.styled,
                                                 max_images=args.max_images, seed=args.seed,
                                                 progress=not args.no_progress)
    elif args.stage in ("all", "generator"):
        report["generator"] = pretrain_generator(cfg, args.synthetic, out / "generator", vae_steps=args.vae_steps,
                                                 unet_steps=args.unet_steps, resolution=args.resolution,
                                                 max_images=args.max_images, seed=args.seed,
                                                 progress=not args.no_progress, styled_dir=args.styled)
    if args.stage in ("all", "teacher"):
        report["teacher"] = pretrain_teacher(args.synthetic, out / "teacher", steps=args.teacher_steps, seed=args.seed,
                                             progress=not args.no_progress, styled_dir=args.styled)
    print(json.dumps(report, indent=2))
    return 0


# Embedded-default step counts of the shipped priors (weights/*/README.md has their wall times).
VAE_STEPS, UNET_STEPS, TEACHER_STEPS = 2500, 1500, 2000


def pretrain_teacher(synthetic_dir: str | Path, out_dir: str | Path, steps: int = TEACHER_STEPS, holdout: int = 32,
                     seed: int = 0, progress: bool = True, styled_dir: str | Path | None = None) -> dict:
    """Train the tiny Depth Anything teacher on all but the first ``holdout`` scenes of
    ``synthetic_dir`` (and of ``styled_dir``, the real-styled domain, when given) and report
    its AbsRel/δ1 on the held-out scenes of each."""
    from .data.synthetic import SyntheticDepthDataset
    from .teacher import EMBEDDED_TEACHER, Teacher, evaluate_teacher, tiny_teacher_config, train_tiny_teacher

    out_dir = Path(out_dir)
    roots = {"synthetic": Path(synthetic_dir)}
    if styled_dir:
        roots["real_styled"] = Path(styled_dir)
    with tempfile.TemporaryDirectory(prefix="fiffdepth-split-") as tmp:
        train_dirs, held_dirs, counts = [], {}, {}
        for name, root in roots.items():
            n = len(SyntheticDepthDataset(root))
            h = min(holdout, n // 4)
            held, train_dir = _split_scenes(root, Path(tmp) / name, h)
            train_dirs.append(train_dir)
            counts[name] = {"train": n - h, "heldout": h}
            if h:
                held_dirs[name] = held
        t0 = time.time()
        res = EMBEDDED_TEACHER["image_size"]
        train_tiny_teacher(train_dirs, out_dir, steps=steps, seed=seed, progress=progress, resolution=res,
                           config=tiny_teacher_config(**EMBEDDED_TEACHER))
        seconds = time.time() - t0
        teacher = Teacher.from_pretrained(out_dir, device="cpu")
        metrics = {name: evaluate_teacher(teacher, d) for name, d in held_dirs.items()}
    report = {"steps": steps, "seed": seed, "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
              "scenes": counts, "heldout": metrics}
    (out_dir / "pretrain_report.json").write_text(json.dumps(report, indent=2))
    return report


def _split_scenes(src: Path, tmp: Path, n_first: int) -> tuple[Path, Path]:
    """Two embedded-layout folders of symlinks: the first ``n_first`` scenes and the rest."""
    stems = sorted(p.stem for p in (src / "rgb").glob("*.png"))
    parts = {tmp / "first": stems[:n_first], tmp / "rest": stems[n_first:]}
    for root, names in parts.items():
        for sub, ext in (("rgb", ".png"), ("depth", ".npy"), ("mask", ".png")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            for stem in names:
                f = src / sub / (stem + ext)
                if f.exists():
                    (root / sub / f.name).symlink_to(f.resolve())
    return tmp / "first", tmp / "rest"


def _prior_images(synthetic_dir: str | Path, styled_dir: str | Path | None, res: int, seed: int, max_images: int,
                  holdout: int) -> dict:
    """The images the generator prior learns from, at ``res``: the synthetic scenes, the
    real-styled ones (``styled_dir``) and the photos. The first ``h`` scenes of each domain and
    the last 8 photos are held out (``h = min(holdout, scenes // 4)``). Returns the domains'
    tensors (``images``, ``depths``, ``masks``, ``styled`` or None, ``real``), ``h``, and the
    concatenated ``train`` and ``heldout`` images."""
    from .data.real import EmbeddedRealImages
    from .data.synthetic import load_scene_tensors

    images, depths, masks = load_scene_tensors(synthetic_dir, res, seed, max_images)
    styled = load_scene_tensors(styled_dir, res, seed, max_images)[0] if styled_dir else None
    real_set = EmbeddedRealImages(size=res, seed=seed)
    real = torch.stack([real_set[i]["image"] for i in range(len(real_set))])
    h = min(holdout, len(images) // 4)
    domains = [images] + ([styled] if styled is not None else [])
    n_real = max(0, len(real) - 8)
    return {"images": images, "depths": depths, "masks": masks, "styled": styled, "real": real, "h": h,
            "train": torch.cat([d[h:] for d in domains] + [real[:n_real]]),
            "heldout": torch.cat([d[:h] for d in domains] + [real[n_real:]])}


@torch.no_grad()
def _encode_images(vae: AutoencoderKL, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Image latents (``ImageCodec``), encoded ``chunk`` images at a time."""
    codec = ImageCodec(vae)
    return torch.cat([codec.encode(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def pretrain_generator(cfg: FiffDepthConfig, synthetic_dir: str | Path, out_dir: str | Path, vae_steps: int = VAE_STEPS,
                       unet_steps: int = UNET_STEPS, resolution: int | None = None, max_images: int = 4000,
                       holdout: int = 32, seed: int = 0, progress: bool = True, styled_dir: str | Path | None = None,
                       vae_batch: int = 8, vae_crop: int = 64, unet_batch: int = 16, unet_crop: int | None = None) -> dict:
    """Both stages on the embedded data; writes the SD layout to ``out_dir`` and returns a report.

    Images: the synthetic scenes, the real-styled scenes (``styled_dir``) and the photos, the
    first ``holdout`` scenes of each domain and the last 8 photos held out. Depth maps (VAE
    only): the synthetic scenes'. The UNet learns the image latents of full frames.
    """
    t_start = time.time()
    res = resolution or cfg.data.resolution
    data = _prior_images(synthetic_dir, styled_dir, res, seed, max_images, holdout)
    images, depths, masks, styled, real, h = (data[k] for k in ("images", "depths", "masks", "styled", "real", "h"))
    train_imgs = data["train"]
    torch.manual_seed(seed)
    vae = AutoencoderKL(**cfg.model.vae)
    unet = UNet2DConditionModel(**cfg.model.unet)
    tokenizer, text_encoder = build_tiny_text_encoder(unet.config.cross_attention_dim, seed)
    empty = empty_prompt_embedding(tokenizer, text_encoder)
    scheduler = make_scheduler(cfg.model)
    vae_log = train_vae(vae, train_imgs, depths[h:], masks[h:], steps=vae_steps, batch_size=vae_batch, crop=vae_crop,
                        seed=seed, progress=progress)
    roundtrip = depth_roundtrip_scores(vae, depths[:h], masks[:h]) if h else {}
    report = {"steps": [vae_steps, unet_steps], "seed": seed, "resolution": res, "train_images": len(train_imgs),
              "vae": vae_log,
              "heldout_image_psnr_db": image_psnr(vae, images[:h]) if h else None,
              "heldout_styled_psnr_db": image_psnr(vae, styled[:h]) if h and styled is not None else None,
              "heldout_real_psnr_db": image_psnr(vae, real[-8:]),
              "heldout_depth_roundtrip_abs_rel": roundtrip.get("abs_rel"),
              "heldout_depth_roundtrip_boundary_f1": roundtrip.get("boundary_f1"),
              "threads": torch.get_num_threads()}
    latents = _encode_images(vae, train_imgs)
    report["unet"] = train_latent_diffusion(unet, latents, empty, scheduler, steps=unet_steps, batch_size=unet_batch,
                                            crop=unet_crop, seed=seed, progress=progress)
    report["seconds"] = round(time.time() - t_start, 1)
    save_generator(out_dir, unet, vae, scheduler, tokenizer, text_encoder, meta=report)
    (Path(out_dir) / "pretrain_report.json").write_text(json.dumps(report, indent=2))
    return report


@torch.no_grad()
def heldout_v_loss(unet: UNet2DConditionModel, latents: torch.Tensor, empty_embedding: torch.Tensor, scheduler,
                   n_draws: int = 8, seed: int = 1234) -> float:
    """Mean v-prediction MSE over held-out latents at seeded noise and timesteps (the same draws
    for every UNet, so two priors on one VAE compare directly)."""
    g = torch.Generator().manual_seed(seed)
    T, losses = len(scheduler.alphas_cumprod), []
    unet.eval()
    for _ in range(n_draws):
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, T, (len(latents),), generator=g)
        xt, v = scheduler.add_noise(latents, noise, t), scheduler.get_velocity(latents, noise, t)
        out = unet(xt, t, encoder_hidden_states=empty_embedding.expand(len(latents), -1, -1)).sample
        losses.append(F.mse_loss(out, v).item())
    return sum(losses) / len(losses)


def continue_generator(generator_dir: str | Path, synthetic_dir: str | Path, out_dir: str | Path,
                       unet_steps: int = 8000, styled_dir: str | Path | None = None, max_images: int = 4000,
                       holdout: int = 32, batch_size: int = 16, lr: float = 5e-4, seed: int = 1,
                       progress: bool = True) -> dict:
    """More latent-diffusion steps for an existing prior's UNet; its VAE, scheduler and text
    encoder are kept as they are, so the latent space does not move.

    Same images and held-out split as ``pretrain_generator`` (the data are read with seed 0,
    as there), full-frame latents, a fresh one-cycle schedule at ``lr``. Writes ``out_dir``
    (the input directory with ``unet/`` replaced, atomically) and returns a report with the
    held-out v-loss before and after (``heldout_v_loss``).
    """
    from .model import FiffDepthModel

    t_start = time.time()
    generator_dir, out_dir = Path(generator_dir), Path(out_dir)
    torch.manual_seed(seed)
    base = FiffDepthModel.from_pretrained(generator_dir)
    unet = UNet2DConditionModel.from_pretrained(generator_dir / "unet")
    empty = base.empty_text_embedding
    res = unet.config.sample_size * base.vae_scale_factor
    data = _prior_images(synthetic_dir, styled_dir, res, 0, max_images, holdout)
    train = _encode_images(base.vae, data["train"])
    held = _encode_images(base.vae, data["heldout"])
    before = heldout_v_loss(unet, held, empty, base.scheduler)
    log = train_latent_diffusion(unet.train(), train, empty, base.scheduler, steps=unet_steps, batch_size=batch_size,
                                 lr=lr, seed=seed, crop=None, progress=progress)
    after = heldout_v_loss(unet, held, empty, base.scheduler)
    report = {"continued_from": str(generator_dir), "unet_steps": unet_steps, "batch_size": batch_size, "lr": lr,
              "seed": seed, "train_images": len(train), "heldout_images": len(held),
              "heldout_v_loss_before": before, "heldout_v_loss_after": after, "final_train_v_loss_ema": log["loss"],
              "unet_seconds": round(log["seconds"], 1), "seconds": round(time.time() - t_start, 1),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    earlier = {}
    if (generator_dir / "pretrain_report.json").is_file():
        earlier = json.loads((generator_dir / "pretrain_report.json").read_text())
    with staged_dir(out_dir) as tmp:
        for f in sorted(generator_dir.rglob("*")):
            rel = f.relative_to(generator_dir)
            if f.is_file() and rel.parts[0] != "unet" and rel.name not in ("README.md", "manifest.json"):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, tmp / rel)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        full = dict(earlier, continued=earlier.get("continued", []) + [report])
        (tmp / "pretrain_report.json").write_text(json.dumps(full, indent=2))
    return report


# -- figures -----------------------------------------------------------------------------------------

def generator_figures(generator_dir: str | Path, scenes_dir: str | Path, out_dir: str | Path, n: int = 8,
                      sample_steps: int = 50, seed: int = 0) -> dict[str, Path]:
    """``generator_samples.png`` (DDIM samples of the prior: do they show scene structure?) and
    ``vae_roundtrip.png`` (image → latent → image, depth → latent → depth on held-out scenes)."""
    import numpy as np

    from . import plots
    from .data.base import usable_items
    from .data.synthetic import SyntheticDepthDataset
    from .model import FiffDepthModel

    model = FiffDepthModel.from_pretrained(generator_dir)
    unet = UNet2DConditionModel.from_pretrained(Path(generator_dir) / "unet")
    latent_size = unet.config.sample_size  # the size the prior was trained at
    res = latent_size * model.vae_scale_factor
    samples = sample_images(unet.eval(), model.vae, model.empty_text_embedding, model.scheduler.config, n=n,
                            latent_size=latent_size, steps=sample_steps, seed=seed)
    out_dir = Path(out_dir)
    paths = {"samples": out_dir / "generator_samples.png", "roundtrip": out_dir / "vae_roundtrip.png"}
    plots.image_grid([s.permute(1, 2, 0).numpy() for s in samples], cols=min(8, n), out=paths["samples"],
                     title=f"tiny generator: {n} DDIM samples ({sample_steps} steps, {res} px)")
    ds = SyntheticDepthDataset(scenes_dir, resolution=res)
    items = list(usable_items(ds, 4))
    images = torch.stack([it["image"] for it in items])
    with torch.no_grad():
        rec = ImageCodec(model.vae).decode(ImageCodec(model.vae).encode(images))
        depth_codec = DepthCodec(model.vae)
        norm = normalize_depth(torch.stack([it["depth"] for it in items]), torch.stack([it["valid_mask"] for it in items]))
        drec = depth_codec.decode(depth_codec.encode(norm))[:, 0]
    panels, titles = [], []
    for i, it in enumerate(items):
        valid = it["valid_mask"][0].numpy()
        panels += [it["image"].permute(1, 2, 0).numpy(), rec[i].permute(1, 2, 0).numpy(),
                   plots.depth_rgb(norm[i, 0].numpy(), valid), plots.depth_rgb(drec[i].numpy(), valid)]
        titles += ["image", "VAE(image)", "depth", "VAE(depth)"]
    plots.image_grid(panels, titles, cols=8, out=paths["roundtrip"], title="VAE round trips on held-out scenes")
    import matplotlib.pyplot as plt

    plt.close("all")
    return paths
