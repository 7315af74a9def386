"""Baseline: a Marigold-style multi-step fine-tune of the same generator UNet.

Marigold (Ke et al., CVPR 2024) keeps the diffusion process: the UNet's input is widened to
8 channels (image latent ‖ noisy depth latent; the first convolution's weights are duplicated
and halved so the pretrained response is kept), it is trained with the generator's own DDPM
v-prediction objective on synthetic depth latents, and inference runs a multi-step DDIM
sampler, optionally ensembling several noise draws. Inference uses diffusers'
``MarigoldDepthPipeline`` as is; this module only makes the weights.

It is the ablation the FiffDepth paper argues against, trained on the same synthetic latents,
for the same number of steps, from the same pretrained generator as our FiffDepth runs.
Left out at this scale: Marigold's multi-resolution noise and its annealing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel

from .config import FiffDepthConfig
from .model import FiffDepthModel


def widen_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of ``unet`` taking 8 input channels: conv_in weights duplicated and halved (Marigold)."""
    cfg = dict(unet.config)
    cfg["in_channels"] = 2 * unet.config.in_channels
    wide = UNet2DConditionModel.from_config(cfg)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w], dim=1) * 0.5
    wide.load_state_dict(state)
    return wide


def marigold_loss(unet, scheduler, x0: torch.Tensor, d: torch.Tensor, empty: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """‖v − ε̂θ([x0, d_t], t)‖² with t uniform over 0..T−1 (DDPM, v-prediction)."""
    b = len(x0)
    t = torch.randint(0, len(scheduler.alphas_cumprod), (b,), generator=generator).to(x0.device)
    noise = torch.randn(d.shape, generator=generator).to(d.device)  # drawn on the CPU: the same on every device
    dt = scheduler.add_noise(d, noise, t)
    target = scheduler.get_velocity(d, noise, t)
    pred = unet(torch.cat([x0, dt], 1), t, encoder_hidden_states=empty.expand(b, -1, -1)).sample
    return F.mse_loss(pred.float(), target.float())


def train_marigold(cfg: FiffDepthConfig, out_dir: str | Path, steps: int | None = None, cache_root: str | Path | None = None,
                   inference_steps: int = 50, progress: bool = True) -> dict:
    """Fine-tune the 8-channel UNet on the config's synthetic latents; save a MarigoldDepthPipeline.

    Uses the same data, batch size (synthetic half only doubled, as Marigold has no real term),
    learning rate, warm-up and number of steps as ``fiffdepth.train.train``, and its
    ``Accelerator`` (device and precision: ``accelerate launch``'s, else ``train.mixed_precision``).
    """
    from diffusers.optimization import get_scheduler
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .train import _load_model, build_caches, heldout_split, one_process_accelerator, synthetic_indices

    tc = cfg.train
    accelerator = one_process_accelerator("the Marigold baseline", tc.mixed_precision)
    steps = tc.iterations if steps is None else steps
    out = Path(out_dir)
    torch.manual_seed(tc.seed)
    model = _load_model(cfg)
    cache_root = Path(cache_root) if cache_root else out.parent / ".latent_cache"
    no_real = cfg.override({"loss.teacher_supervision": "none"})
    syn, _ = build_caches(no_real, model.vae, cache_root, progress=progress)
    n_train, _ = heldout_split(len(syn), cfg.data.augmentations, tc.heldout)
    buckets = syn.shape_buckets(range(n_train))  # a batch holds one frame shape
    unet = widen_unet(model.unet).train()
    scheduler = model.scheduler
    empty = model.empty_text_embedding.detach()
    opt = torch.optim.AdamW(unet.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lr_sched = get_scheduler(tc.lr_schedule, opt, num_warmup_steps=tc.lr_warmup_steps, num_training_steps=steps)
    unet, opt = accelerator.prepare(unet, opt)
    dev = accelerator.device
    g = torch.Generator().manual_seed(tc.seed)
    losses = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="train marigold", disable=not progress)
    for step in bar:
        idx = synthetic_indices(buckets, step, tc.batch_size, tc.seed)
        x0, d, _ = syn.tensors(idx)  # mirror images and crops are cached versions (data.augmentations)
        loss = marigold_loss(unet, scheduler, x0.to(dev), d.to(dev), empty.to(dev), g)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if tc.max_grad_norm > 0:
            accelerator.clip_grad_norm_(unet.parameters(), tc.max_grad_norm)
        opt.step()
        lr_sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.time() - t0
    unet = accelerator.unwrap_model(unet, keep_fp32_wrapper=False).to("cpu").eval()
    pipe = marigold_pipeline(unet, model, inference_steps)
    pipe.save_pretrained(out, safe_serialization=True)
    save_file({"empty_text_embedding": empty.clone().contiguous()}, str(out / "empty_text_embedding.safetensors"))
    summary = {"steps": steps, "seconds": seconds, "it_per_s": steps / max(seconds, 1e-9),
               "final_loss": float(np.mean(losses[-20:])) if losses else None, "output_dir": str(out),
               "device": str(dev), "mixed_precision": accelerator.mixed_precision}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(out / "losses.jsonl", "w") as f:
        for i, v in enumerate(losses, 1):
            f.write(json.dumps({"step": i, "loss": v}) + "\n")
    return summary


def marigold_pipeline(unet: UNet2DConditionModel, model: FiffDepthModel, inference_steps: int = 50):
    """diffusers' MarigoldDepthPipeline around an 8-channel UNet and the model's VAE / empty prompt."""
    from diffusers import MarigoldDepthPipeline

    ddim = DDIMScheduler.from_config(model.scheduler.config, prediction_type="v_prediction", clip_sample=False,
                                     set_alpha_to_one=False, timestep_spacing="trailing")
    pipe = MarigoldDepthPipeline(unet=unet, vae=model.vae, scheduler=ddim, text_encoder=None, tokenizer=None,
                                 prediction_type="depth", scale_invariant=True, shift_invariant=True,
                                 default_denoising_steps=inference_steps,
                                 default_processing_resolution=model.processing_resolution)
    pipe.empty_text_embedding = model.empty_text_embedding.detach().clone()
    return pipe


def load_marigold(directory: str | Path, device: str | torch.device = "cpu"):
    """Load a baseline written by ``train_marigold`` (no text encoder needed: the embedding is stored)."""
    from diffusers import MarigoldDepthPipeline
    from safetensors.torch import load_file

    directory = Path(directory)
    pipe = MarigoldDepthPipeline.from_pretrained(directory, text_encoder=None, tokenizer=None)
    pipe.empty_text_embedding = load_file(str(directory / "empty_text_embedding.safetensors"))["empty_text_embedding"]
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
