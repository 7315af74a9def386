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

from .codecs import DepthCodec, ImageCodec, normalize_depth
from .config import FiffDepthConfig, add_config_arguments, config_from_args
from .model import empty_prompt_embedding, make_scheduler


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


def train_vae(vae: AutoencoderKL, images: torch.Tensor, depths: torch.Tensor | None = None,
              depth_masks: torch.Tensor | None = None, steps: int = 1000, batch_size: int = 16, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0, progress: bool = True) -> dict:
    """Train the VAE on RGB images (N, 3, H, W) in [0, 1] and depth maps (M, 1, H, W).

    Each batch is half images and half depth maps (normalised with 2/98 percentiles to
    [-1, 1], replicated to 3 channels, as the depth codec will feed them). Afterwards the
    latent scaling factor is set so the image latents have unit standard deviation.
    Returns a log dict (final losses, seconds, scaling factor).
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    depth_x = None
    if depths is not None and len(depths):
        depth_x = normalize_depth(depths, depth_masks).repeat(1, 3, 1, 1)
    image_x = images * 2.0 - 1.0 if images is not None and len(images) else None
    if image_x is None and depth_x is None:
        raise ValueError("train_vae needs images or depth maps")
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
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
        x = torch.cat(parts)
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5, x, x.flip(-1))
        loss, stats = vae_loss(vae, x, kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{stats['rec'].item():.4f}")
    vae.eval()
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
                           progress: bool = True) -> dict:
    """Unconditional latent diffusion on image latents (N, 4, h, w): v-prediction, DDPM, empty prompt.

    The standard objective ‖v − ε̂θ(x_t, t)‖² with t uniform over all T steps (0..T−1), as SD
    was trained; the feed-forward steps t = 0 and −1 only acquire their FiffDepth meaning later.
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    acp = scheduler.alphas_cumprod
    T = len(acp)
    unet.train()
    t0 = time.time()
    ema = None
    bar = tqdm(range(steps), desc="pretrain UNet", disable=not progress)
    for _ in bar:
        x0 = latents[torch.randint(len(latents), (batch_size,), generator=g)]
        x0 = torch.where(torch.rand(batch_size, 1, 1, 1, generator=g) < 0.5, x0, x0.flip(-1))
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, T, (batch_size,), generator=g)
        xt = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        cond = empty_embedding.expand(batch_size, -1, -1)
        loss = F.mse_loss(unet(xt, t, encoder_hidden_states=cond).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
    unet.eval()
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
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
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def depth_roundtrip_abs_rel(vae: AutoencoderKL, depths: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean AbsRel of depth -> latent -> depth (after least-squares affine alignment) over valid pixels."""
    codec = DepthCodec(vae)
    errs = []
    with torch.no_grad():
        for d, m in zip(depths, masks):
            norm = normalize_depth(d[None], m[None])
            rec = codec.decode(codec.encode(norm))[0, 0]
            gt, mm = d[0], m[0].bool()
            a = torch.stack([rec[mm], torch.ones_like(rec[mm])], 1).double()
            sol = torch.linalg.lstsq(a, gt[mm].double()[:, None]).solution
            pred = (a @ sol)[:, 0].clamp_min(1e-6)
            errs.append(((pred - gt[mm]).abs() / gt[mm]).mean().item())
    return float(sum(errs) / max(1, len(errs)))


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
    parser.add_argument("--out", required=True, help="output directory (Stable Diffusion layout)")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=None, help="training resolution (default: data.resolution)")
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    report = pretrain_generator(cfg, args.synthetic, args.out, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                                resolution=args.resolution, max_images=args.max_images, seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0


def pretrain_generator(cfg: FiffDepthConfig, synthetic_dir: str | Path, out_dir: str | Path, vae_steps: int = 1500,
                       unet_steps: int = 2000, resolution: int | None = None, max_images: int = 2000,
                       holdout: int = 32, seed: int = 0, progress: bool = True) -> dict:
    """Both stages on the embedded data; writes the SD layout to ``out_dir`` and returns a report."""
    from .data.real import EmbeddedRealImages
    from .data.synthetic import SyntheticDepthDataset

    res = resolution or cfg.data.resolution
    ds = SyntheticDepthDataset(synthetic_dir, resolution=res, seed=seed)
    n = min(len(ds), max_images)
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    depths = torch.stack([it["depth"] for it in items])
    masks = torch.stack([it["valid_mask"] for it in items])
    real_set = EmbeddedRealImages(size=res, seed=seed)
    real = torch.stack([real_set[i]["image"] for i in range(len(real_set))])
    h = min(holdout, n // 4)
    train_imgs = torch.cat([images[h:], real[: max(0, len(real) - 8)]])
    torch.manual_seed(seed)
    vae = AutoencoderKL(**cfg.model.vae)
    unet = UNet2DConditionModel(**cfg.model.unet)
    tokenizer, text_encoder = build_tiny_text_encoder(unet.config.cross_attention_dim, seed)
    empty = empty_prompt_embedding(tokenizer, text_encoder)
    scheduler = make_scheduler(cfg.model)
    vae_log = train_vae(vae, train_imgs, depths[h:], masks[h:], steps=vae_steps, seed=seed, progress=progress)
    report = {"resolution": res, "train_images": len(train_imgs), "vae": vae_log,
              "heldout_image_psnr_db": image_psnr(vae, images[:h]) if h else None,
              "heldout_real_psnr_db": image_psnr(vae, real[-8:]),
              "heldout_depth_roundtrip_abs_rel": depth_roundtrip_abs_rel(vae, depths[:h], masks[:h]) if h else None}
    with torch.no_grad():
        codec = ImageCodec(vae)
        latents = torch.cat([codec.encode(train_imgs[i:i + 64]) for i in range(0, len(train_imgs), 64)])
    report["unet"] = train_latent_diffusion(unet, latents, empty, scheduler, steps=unet_steps, seed=seed,
                                            progress=progress)
    save_generator(out_dir, unet, vae, scheduler, tokenizer, text_encoder, meta=report)
    (Path(out_dir) / "pretrain_report.json").write_text(json.dumps(report, indent=2))
    return report
