"""A distilled depth decoder: diffusers' ``AutoencoderTiny`` (TAESD) in place of the VAE decoder.

At 512×512 the SD2 VAE decoder costs ~2.5 TFLOP, three times the UNet (issue 9). Depth is a
smooth, single-channel signal, so a TAESD-sized decoder trained to reproduce the full decoder
does nearly as well for a fraction of the arithmetic. The student sees both kinds of depth
latent that matter: ground-truth depth encoded by the depth codec, and the UNet's own d0
predictions for the training images (what it decodes at inference). The target is the full
decoder's depth (``DepthCodec.decode``: mean of the 3 decoded channels, clipped to [-1, 1]);
the loss is L1 on the student's 3-channel mean.

Latent convention. The student reads the *scaled* latents the UNet works with (d0), exactly as
TAESD does for Stable Diffusion: ``AutoencoderTiny(scaling_factor=1.0)``, so the generic
diffusers call ``decoder.decode(latents / decoder.config.scaling_factor)`` is the right call for
both decoders (``fiffdepth.codecs.DepthCodec``). TAESD's input clamp ``tanh(x / 3) * 3`` expects
unit-scale latents, which scaled latents are; its ``latent_magnitude``/``latent_shift`` only
concern storing latents as 8-bit images and are unused here. A decoder is distilled for one VAE
scaling factor; it is stored in ``fiffdepth_decoder.json`` and checked when the decoder is loaded.

    fiffdepth distill-decoder --model runs/fiffdepth-tiny --data outputs/data/synth --steps 1500

writes ``<model>/depth_decoder/`` (or ``--out DIR``), loadable with
``FiffDepthPipeline.from_pretrained(model, decoder="tiny")``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny

from .atomic import staged_dir
from .codecs import DepthCodec, ImageCodec, normalize_depth
from .hub import FiffDepthError
from .schedules import one_cycle

DECODER_DIR = "depth_decoder"
DECODER_META = "fiffdepth_decoder.json"

# TAESD as published (diffusers' AutoencoderTiny defaults): 64 channels, ×8 upsampling, for SD's VAE.
TAESD = dict(decoder_block_out_channels=(64, 64, 64, 64), num_decoder_blocks=(3, 3, 3, 1),
             encoder_block_out_channels=(64, 64, 64, 64), num_encoder_blocks=(1, 3, 3, 3))
# The tiny preset's student: 32 channels and fewer blocks; the (unused) encoder kept minimal.
TINY_TAESD_CHANNELS = 32


def tiny_decoder_config(vae) -> dict:
    """AutoencoderTiny kwargs matching ``vae``'s latent channels and spatial factor.

    SD-sized VAEs (≥ 256 channels) get TAESD's published architecture, smaller ones a 32-channel
    student with the same number of ×2 upsamplings as the VAE.
    """
    levels = len(vae.config.block_out_channels)
    if max(vae.config.block_out_channels) >= 256:
        arch = {k: tuple(v[-levels:]) for k, v in TAESD.items()}
        arch["num_encoder_blocks"] = (1,) + arch["num_encoder_blocks"][1:]
    else:
        c = TINY_TAESD_CHANNELS
        arch = dict(decoder_block_out_channels=(c,) * levels, num_decoder_blocks=(2,) * (levels - 1) + (1,),
                    encoder_block_out_channels=(c // 2,) * levels, num_encoder_blocks=(1,) * levels)
    return dict(in_channels=3, out_channels=3, latent_channels=vae.config.latent_channels,
                scaling_factor=1.0, shift_factor=0.0, **arch)


def make_tiny_decoder(vae, seed: int = 0) -> AutoencoderTiny:
    """A randomly initialised student for ``vae`` (seeded, without touching the global RNG)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return AutoencoderTiny(**tiny_decoder_config(vae))
    finally:
        torch.random.set_rng_state(state)


def upsampling_factor(decoder: AutoencoderTiny) -> int:
    cfg = decoder.config
    return cfg.upsampling_scaling_factor ** (len(cfg.decoder_block_out_channels) - 1)


def check_compatible(decoder: AutoencoderTiny, vae, meta: dict | None = None, where: str = "depth decoder") -> None:
    """Refuse a student that cannot stand in for ``vae``'s decoder (channels, ×f, scaling factor)."""
    f_vae = 2 ** (len(vae.config.block_out_channels) - 1)
    problems = []
    if decoder.config.latent_channels != vae.config.latent_channels:
        problems.append(f"{decoder.config.latent_channels} latent channels, the VAE has {vae.config.latent_channels}")
    if upsampling_factor(decoder) != f_vae:
        problems.append(f"upsamples ×{upsampling_factor(decoder)}, the VAE ×{f_vae}")
    if float(decoder.config.scaling_factor) != 1.0:
        problems.append(f"scaling_factor {decoder.config.scaling_factor} (must read scaled latents: 1.0)")
    if meta is not None and "vae_scaling_factor" in meta:
        if not np.isclose(float(meta["vae_scaling_factor"]), float(vae.config.scaling_factor), rtol=1e-6):
            problems.append(f"distilled for a VAE scaling factor {meta['vae_scaling_factor']}, "
                            f"this VAE's is {vae.config.scaling_factor}")
    if problems:
        raise FiffDepthError(f"{where}: does not fit this model's VAE: " + "; ".join(problems)
                             + " — run `fiffdepth distill-decoder` for this model")


# -- saving and loading ------------------------------------------------------------------------


def save_depth_decoder(decoder: AutoencoderTiny, directory: str | Path, vae, info: dict | None = None) -> Path:
    """``save_pretrained`` plus ``fiffdepth_decoder.json``, written to a temp dir and renamed into place."""
    directory = Path(directory)
    with staged_dir(directory) as tmp:
        decoder.save_pretrained(tmp, safe_serialization=True)
        meta = {"vae_scaling_factor": float(vae.config.scaling_factor),
                "latents": "scaled (the UNet's d0), decode(latents / 1.0)", **(info or {})}
        (tmp / DECODER_META).write_text(json.dumps(meta, indent=2))
    return directory


def load_depth_decoder(directory: str | Path, vae=None) -> AutoencoderTiny:
    """Load a distilled decoder; with ``vae``, check it fits (see ``check_compatible``)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FiffDepthError(
            f"no distilled depth decoder at {directory}: run `fiffdepth distill-decoder --model MODEL_DIR "
            f"--data DATA_DIR` first (it writes MODEL_DIR/{DECODER_DIR}/), or use the full decoder "
            "(decoder='full', --decoder full)"
        )
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # AutoencoderTiny re-reads its own `block_out_channels` alias and warns
    try:
        decoder = AutoencoderTiny.from_pretrained(directory).eval()
    finally:
        diffusers_logging.set_verbosity(level)
    meta_file = directory / DECODER_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if vae is not None:
        check_compatible(decoder, vae, meta, where=str(directory))
    return decoder


def tiny_depth(decoder: AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """Student depth before clipping: (B, C, h, w) scaled latents -> (B, 1, H, W), mean of 3 channels."""
    x = decoder.decode(latents.to(decoder.dtype) / decoder.config.scaling_factor, return_dict=False)[0]
    return x.float().mean(dim=1, keepdim=True)


# -- training ----------------------------------------------------------------------------------


@torch.no_grad()
def distillation_pairs(model, data_dir: str | Path, resolution: int, batch_size: int = 16, limit: int | None = None,
                       seed: int = 0, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (2N, C, h, w), full-decoder depth (2N, 1, H, W) in [-1, 1]) for N scenes of ``data_dir``.

    Each scene gives its GT depth latent (depth codec) and the model's predicted d0 (Eq. 1).
    """
    from tqdm.auto import tqdm

    from .data.base import usable_items
    from .data.synthetic import SyntheticDepthDataset

    if not (Path(data_dir) / "rgb").is_dir():
        raise FiffDepthError(f"{data_dir}: no rgb/ folder (write scenes with `fiffdepth data synth --out {data_dir}`)")
    ds = SyntheticDepthDataset(data_dir, resolution=resolution, seed=seed, on_bad="skip")
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise FiffDepthError(f"{data_dir}: no scenes (write some with `fiffdepth data synth --out {data_dir}`)")
    images, depth_codec = ImageCodec(model.vae), DepthCodec(model.vae)
    latents, targets = [], []
    usable = usable_items(ds, n)  # a bad scene is dropped and counted, never replaced
    for _ in tqdm(range(0, n, batch_size), desc="decoder targets", unit="batch", disable=not progress):
        items = list(itertools.islice(usable, batch_size))
        if not items:
            break
        image = torch.stack([it["image"] for it in items])
        depth = torch.stack([it["depth"] for it in items])
        valid = torch.stack([it["valid_mask"] for it in items])
        d_gt = depth_codec.encode(normalize_depth(depth, valid))
        d0 = model.predict_latent(images.encode(image))
        for lat in (d_gt, d0):
            latents.append(lat.float())
            targets.append(depth_codec.decode(lat).float())
    if not latents:
        raise FiffDepthError(f"{data_dir}: none of its {len(ds)} scenes is usable ({ds.skipped} bad)")
    return torch.cat(latents), torch.cat(targets)


def distill_decoder(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path | None = None, steps: int = 1500,
                    batch_size: int = 16, learning_rate: float = 1e-3, resolution: int | None = None,
                    limit: int | None = None, eval_dir: str | Path | None = None, seed: int = 0,
                    progress: bool = True) -> dict:
    """Train a student decoder for the model in ``model_dir``; save it; return a summary.

    out_dir: default ``<model_dir>/depth_decoder``. resolution: default the model's processing
    resolution. eval_dir: embedded evaluation scenes for ``compare_decoders`` (optional). The
    student trains on accelerate's device, in fp32 unless ``accelerate launch`` sets a precision.
    """
    from tqdm.auto import tqdm

    from .model import FiffDepthModel
    from .train import one_process_accelerator

    model = FiffDepthModel.from_pretrained(model_dir).eval()
    res = int(resolution or model.processing_resolution)
    t0 = time.time()
    latents, targets = distillation_pairs(model, data_dir, res, limit=limit, seed=seed, progress=progress)
    target_seconds = time.time() - t0
    n_held = max(1, len(latents) // 10)  # the last tenth held out (latents of the last scenes)
    train_lat, train_tgt = latents[:-n_held], targets[:-n_held]
    held_lat, held_tgt = latents[-n_held:], targets[-n_held:]

    decoder = make_tiny_decoder(model.vae, seed=seed).train()
    decoder.encoder.requires_grad_(False)  # only the decoder is distilled
    params = [p for p in decoder.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = one_cycle(opt, learning_rate, steps)
    accelerator = one_process_accelerator("decoder distillation")
    decoder, opt = accelerator.prepare(decoder, opt)
    dev = accelerator.device
    g = torch.Generator().manual_seed(seed)
    losses = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="distill decoder", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, len(train_lat), (min(batch_size, len(train_lat)),), generator=g)
        with accelerator.autocast():  # decode is not forward: prepare's autocast would miss it
            loss = F.l1_loss(tiny_depth(decoder, train_lat[idx].to(dev)), train_tgt[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    train_seconds = time.time() - t0
    decoder = accelerator.unwrap_model(decoder, keep_fp32_wrapper=False).to("cpu").eval()
    with torch.no_grad():
        held_l1 = float(F.l1_loss(tiny_depth(decoder, held_lat).clamp(-1, 1), held_tgt))
    summary = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "resolution": res,
               "pairs": len(latents), "heldout_pairs": n_held,
               "final_l1": float(np.mean(losses[-20:])) if losses else None,
               "heldout_l1": held_l1, "target_seconds": target_seconds, "train_seconds": train_seconds,
               "device": str(dev), "mixed_precision": accelerator.mixed_precision,
               "model": str(model_dir), "data": str(data_dir), "config": tiny_decoder_config(model.vae)}
    if eval_dir is not None:
        summary["eval"] = compare_decoders(model, decoder, eval_dir)
    out = Path(out_dir) if out_dir else Path(model_dir) / DECODER_DIR
    save_depth_decoder(decoder, out, model.vae, {"distill": summary})
    summary["output_dir"] = str(out)
    return summary


# -- evaluation: does the student change the depth? --------------------------------------------


def compare_decoders(model, decoder: AutoencoderTiny, eval_dir: str | Path, processing_resolution: int | None = None,
                     limit: int | None = None) -> dict:
    """Full vs distilled decoder on evaluation scenes (``fiffdepth data synth`` layout).

    Both depth maps are scored against GT with Marigold's protocol (least-squares scale and
    shift, then AbsRel / δ1); ``abs_rel_gap`` = |AbsRel(tiny) − AbsRel(full)|. ``mean_abs_diff``
    compares the two depth outputs directly (pipeline units, [0, 1]).
    """
    from .data.base import usable_items
    from .data.synthetic import FAR, NEAR, SyntheticDepthDataset
    from .metrics import aggregate, compute_depth_metrics
    from .pipeline import FiffDepthPipeline

    ds = SyntheticDepthDataset(eval_dir, on_bad="skip")
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise FiffDepthError(f"{eval_dir}: no evaluation scenes")
    full = FiffDepthPipeline.from_model(model, decoder="full")
    tiny = FiffDepthPipeline.from_model(model, decoder=decoder)
    per = {"full": [], "tiny": []}
    diffs = []
    for item in usable_items(ds, n):  # a bad scene is dropped and counted, never replaced
        gt, valid = item["depth"][0].numpy(), item["valid_mask"][0].numpy()
        preds = {}
        for name, pipe in (("full", full), ("tiny", tiny)):
            preds[name] = pipe(item["image"], processing_resolution=processing_resolution).prediction[0, ..., 0]
            per[name].append(compute_depth_metrics(preds[name], gt, valid, NEAR, FAR))
        diffs.append(float(np.abs(preds["full"] - preds["tiny"]).mean()))
    if not diffs:
        raise FiffDepthError(f"{eval_dir}: none of its {len(ds)} evaluation scenes is usable ({ds.skipped} bad)")
    full_m, tiny_m = aggregate(per["full"]), aggregate(per["tiny"])
    return {"scenes": len(diffs), "skipped": ds.skipped, "abs_rel_full": full_m["abs_rel"], "abs_rel_tiny": tiny_m["abs_rel"],
            "abs_rel_gap": abs(tiny_m["abs_rel"] - full_m["abs_rel"]),
            "delta1_full": full_m["delta1"], "delta1_tiny": tiny_m["delta1"],
            "mean_abs_diff": float(np.mean(diffs)), "eval_dir": str(eval_dir)}


# -- CLI: fiffdepth distill-decoder ------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="FiffDepth model directory (its VAE is the teacher)")
    parser.add_argument("--data", required=True, help="synthetic scenes (`fiffdepth data synth` layout)")
    parser.add_argument("--out", default=None, help=f"output directory (default: MODEL/{DECODER_DIR})")
    parser.add_argument("--steps", type=int, default=1500, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, default=16, help="scenes per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's processing resolution")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many scenes")
    parser.add_argument("--eval", default=None, help="evaluation scenes: report full vs tiny AbsRel")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        summary = distill_decoder(args.model, args.data, args.out, steps=args.steps, batch_size=args.batch_size,
                                  learning_rate=args.lr, resolution=args.resolution, limit=args.limit,
                                  eval_dir=args.eval, seed=args.seed, progress=not args.no_progress)
    except FiffDepthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    line = f"wrote {summary['output_dir']} (held-out L1 {summary['heldout_l1']:.4f}"
    if "eval" in summary:
        e = summary["eval"]
        line += f"; AbsRel full {e['abs_rel_full']:.4f} tiny {e['abs_rel_tiny']:.4f} gap {e['abs_rel_gap']:.4f}"
    print(line + ")")
    return 0
