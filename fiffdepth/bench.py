"""``fiffdepth bench``: seconds, FLOPs and memory per image, in one run.

Two tables:

- **methods** (the paper's Table 3; issue 7): FiffDepth against diffusers' ``MarigoldDepthPipeline``
  built from the same UNet (widened to 8 input channels: image latent ‖ noisy depth latent) and
  VAE, at Marigold's paper setting (50 DDIM steps × ensemble 10) and at 1 step × 1, and against
  transformers' ``DepthAnythingForDepthEstimation`` of matched size (tiny: the tiny teacher's
  config; paper: ViT-L). ``ratios[m]`` = m's seconds per image / FiffDepth's, ``flop_ratios[m]``
  the same in FLOPs.
- **fast path** (issue 9): FiffDepthPipeline's stages (VAE encode, UNet, depth decode) for fp32
  and bf16, the full and the distilled (TAESD) decoder, batch 1 and batched: seconds, FLOPs,
  achieved TFLOP/s and peak memory per stage; ``bf16_rel_err`` of the depth against fp32.

All weights are random (``--preset paper`` is SD2's UNet/VAE architecture; speed does not depend
on the weights). Every timed call runs under ``torch.inference_mode`` with fixed threads after a
warm-up; methods at batch 1 are interleaved image by image so that a busy machine slows them
alike, and the median over images is reported. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls and SDPA; PyTorch's CPU
flash-attention op, which it does not know, is added here) on one image per method — that run is
also the warm-up. Marigold 50×10's FLOPs are Marigold 1×1's plus the extra samples its run
pushes through the UNet, encoder and decoder (counted with forward hooks), each at its counted
per-sample cost; ``tests/test_bench.py`` checks this against a direct count.

    fiffdepth bench --preset tiny --out bench_tiny.json
    fiffdepth bench --preset paper --images 2 --out bench_paper.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .atomic import write_json

# stabilityai/stable-diffusion-2 unet/config.json and vae/config.json (768-v), written out so the
# paper-size benchmark needs no download.
SD2_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True,
    upcast_attention=True, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
    block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, sample_size=768, scaling_factor=0.18215,
)
# Issue 9's reference FLOPs for SD2 at 512×512 (FLOPs = 2 × multiply-adds).
SD2_REFERENCE_TFLOP_512 = {"encode": 1.12, "unet": 0.80, "decode": 2.51}

METHODS = ("fiffdepth", "fiffdepth_tiny", "marigold_50x10", "marigold_1x1", "depth_anything")
COMPARED = ("marigold_50x10", "marigold_1x1", "depth_anything")
SKIPPABLE = ("marigold_50x10", "marigold_1x1", "depth_anything", "tiny_decoder", "bf16", "batched")
MARIGOLD_SETTINGS = {"marigold_50x10": (50, 10), "marigold_1x1": (1, 1)}
STAGES = ("encode", "unet", "decode")


# ============================================================================ FLOPs


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts SDPA on CPU (``aten._scaled_dot_product_flash_attention_for_cpu``)."""
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _cpu_sdpa_flop
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn's result, FLOPs it ran)."""
    with flop_counter() as counter, torch.inference_mode():
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


@contextlib.contextmanager
def count_samples(modules: dict):
    """Count calls and samples (leading dim of the first input) through named modules."""
    counts = {name: {"calls": 0, "samples": 0} for name in modules}
    handles = []
    for name, module in modules.items():
        def hook(mod, args, kwargs, name=name):
            x = args[0] if args else next(iter(kwargs.values()))
            counts[name]["calls"] += 1
            counts[name]["samples"] += int(x.shape[0])
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


# ============================================================================ device helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux: "5" resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_gb(device: torch.device) -> float | None:
    """CUDA: peak allocated by tensors. CPU: peak resident set of the whole process (all loaded models)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return None


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 3) -> float:
    """Achieved TFLOP/s of an n×n matmul: the ceiling the stages are compared with."""
    n = n or (8192 if device.type == "cuda" else (1024 if dtype == torch.float32 else 256))
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        a @ b
        synchronize(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e12


def versions() -> dict:
    import diffusers
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["cpu_count"] = os.cpu_count()
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ============================================================================ components


def depth_anything_config(preset: str):
    """Depth Anything of matched size: the tiny teacher's config, or V2-Large (ViT-L/14 + DPT)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    from .teacher import tiny_teacher_config

    if preset == "tiny":
        return tiny_teacher_config()
    backbone = Dinov2Config(image_size=518, patch_size=14, hidden_size=1024, num_hidden_layers=24,
                            num_attention_heads=16, mlp_ratio=4, out_indices=[5, 12, 18, 24],
                            reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=1024,
                               reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[256, 512, 1024, 1024],
                               fusion_hidden_size=256, head_hidden_size=32, depth_estimation_type="relative")


def model_config(preset: str, resolution: int):
    from .config import ModelConfig, get_config

    if preset == "paper":
        return ModelConfig(pretrained="", unet=copy.deepcopy(SD2_UNET), vae=copy.deepcopy(SD2_VAE),
                           processing_resolution=resolution)
    if preset == "tiny":
        cfg = get_config("tiny").model
        cfg.pretrained, cfg.processing_resolution = "", resolution
        return cfg
    raise ValueError(f"unknown preset {preset!r}: tiny or paper")


class Components:
    """Random-weight models of one preset, built on first use (seeded)."""

    def __init__(self, preset: str, resolution: int, device: torch.device, seed: int = 0):
        self.preset, self.resolution, self.device, self.seed = preset, resolution, device, seed
        self._cache = {}

    def _get(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def model(self):
        from .model import FiffDepthModel

        cfg = model_config(self.preset, self.resolution)
        return self._get("model", lambda: FiffDepthModel.from_config(cfg, seed=self.seed))

    @property
    def tiny_decoder(self):
        from .distill import make_tiny_decoder

        return self._get("tiny_decoder", lambda: make_tiny_decoder(self.model.vae, seed=self.seed))

    def pipeline(self, decoder: str = "full", dtype: torch.dtype = torch.float32, compile: bool = False):
        from .pipeline import FiffDepthPipeline

        def build():
            if dtype == torch.float32:
                model, tiny = self.model, self.tiny_decoder
            else:  # the fp32 models stay as they are: one copy per dtype, shared by both decoders
                model = self._get(("model", dtype), lambda: copy.deepcopy(self.model))
                tiny = self._get(("tiny_decoder", dtype), lambda: copy.deepcopy(self.tiny_decoder))
            return FiffDepthPipeline.from_model(model, device=self.device, torch_dtype=dtype,
                                                decoder="full" if decoder == "full" else tiny, compile=compile)

        return self._get(("pipeline", decoder, dtype, compile), build)

    @property
    def marigold(self):
        from .marigold import marigold_pipeline, widen_unet

        def build():
            torch.manual_seed(self.seed)
            pipe = marigold_pipeline(widen_unet(self.model.unet), self.model, inference_steps=50)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(self.device)

        return self._get("marigold", build)

    @property
    def depth_anything(self):
        from transformers import DepthAnythingForDepthEstimation

        def build():
            torch.manual_seed(self.seed)
            return DepthAnythingForDepthEstimation(depth_anything_config(self.preset)).eval().to(self.device)

        return self._get("depth_anything", build)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def depth_anything_infer(model, image: torch.Tensor, resolution: int) -> np.ndarray:
    """Depth Anything's inference on a (B, 3, H, W) [0, 1] tensor: resize to a multiple of the 14 px
    patch, ImageNet-normalise, predict disparity, resize back (its processor's steps, in torch)."""
    device = next(model.parameters()).device
    side = max(14, 14 * round(resolution / 14))
    x = F.interpolate(image.to(device), size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    disp = model(pixel_values=(x - mean) / std).predicted_depth
    disp = F.interpolate(disp[:, None], size=image.shape[-2:], mode="bilinear", align_corners=False)
    return disp[:, 0].float().cpu().numpy()


def bench_images(n: int, resolution: int, seed: int = 0) -> list[torch.Tensor]:
    """n (1, 3, R, R) images in [0, 1]: the embedded real photos at R×R, cycled."""
    from .data.real import embedded_real_images

    photos = embedded_real_images(n=min(n, 8), size=resolution, seed=seed)
    out = []
    for i in range(n):
        a = photos[i % len(photos)]
        t = torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255.0
        if t.shape[-2:] != (resolution, resolution):  # photos come at `size` on their short side
            t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        out.append(t.clamp(0, 1).contiguous())
    return out


# ============================================================================ timing


class StageMeter:
    """Pipeline ``stage_hook``: per-stage seconds (device-synchronised), or FLOPs while ``counter`` is set."""

    def __init__(self, device: torch.device):
        self.device = device
        self.counter: FlopCounterMode | None = None
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)

    def reset(self):
        self.seconds.clear()
        self.flops.clear()

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.counter is not None:
            f0 = self.counter.get_total_flops()
            yield
            self.flops[name] += int(self.counter.get_total_flops() - f0)
            return
        synchronize(self.device)
        t0 = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - t0


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn()
    synchronize(device)
    return time.perf_counter() - t0


def _median(xs):
    return float(statistics.median(xs)) if xs else None


def rel_err(a, b) -> float:
    """‖a − b‖₂ / ‖b‖₂ in float64 (arrays or CPU tensors): how far a (bf16) result is from b (fp32)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# ============================================================================ the benchmark


def default_settings(preset: str, device: torch.device) -> dict:
    """Image counts etc. that keep a CPU run to minutes; on CUDA, issue 7's 100 images."""
    if device.type == "cuda":
        return dict(images=100, marigold_50x10_images=10, batch=8, bf16_resolution=None, bf16_images=None,
                    skip=(), warmup=2)
    if preset == "paper":  # SD2 at 512² is ~4.4 TFLOP per image: ~1 min on 2 cores
        return dict(images=2, marigold_50x10_images=0, batch=2, bf16_resolution=128, bf16_images=1,
                    skip=("marigold_50x10", "marigold_1x1", "depth_anything"), warmup=0)
    return dict(images=10, marigold_50x10_images=1, batch=4, bf16_resolution=128, bf16_images=1, skip=(), warmup=1)


def bench(preset: str = "tiny", images: int | None = None, resolution: int = 512, device: str | None = None,
          skip=None, threads: int | None = None, marigold_50x10_images: int | None = None, batch: int | None = None,
          bf16_resolution: int | None = None, bf16_images: int | None = None, warmup: int | None = None,
          compile: bool = False, seed: int = 0, progress: bool = True, log=print) -> dict:
    """Run both tables; return the JSON-able result (see the module docstring).

    ``None`` arguments take ``default_settings(preset, device)``. ``skip``: names from ``SKIPPABLE``.
    On CPU the bf16 rows run at ``bf16_resolution`` (a CPU without bf16 units runs bf16 100× slower
    than fp32); the fp32 reference for ``bf16_rel_err`` is computed at the same resolution.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    d = default_settings(preset, dev)
    images = d["images"] if images is None else int(images)
    skip = set(d["skip"] if skip is None else skip)
    unknown = skip - set(SKIPPABLE)
    if unknown:
        raise ValueError(f"cannot skip {sorted(unknown)}: choose from {', '.join(SKIPPABLE)}")
    n50 = d["marigold_50x10_images"] if marigold_50x10_images is None else int(marigold_50x10_images)
    if n50 <= 0:
        skip.add("marigold_50x10")
    n50 = min(max(n50, 0), images)
    batch = max(1, min(d["batch"] if batch is None else int(batch), images))
    bf16_res = (d["bf16_resolution"] or resolution) if bf16_resolution is None else int(bf16_resolution)
    bf16_n = (d["bf16_images"] or images) if bf16_images is None else int(bf16_images)
    bf16_n = max(1, min(bf16_n, images))
    warmup = d["warmup"] if warmup is None else int(warmup)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    say = log if progress else (lambda *a, **k: None)

    comp = Components(preset, resolution, dev, seed)
    t_build = time.perf_counter()
    full = comp.pipeline("full", compile=compile)
    active = ["fiffdepth"] + ([] if "tiny_decoder" in skip else ["fiffdepth_tiny"])
    active += [m for m in COMPARED if m not in skip]
    tiny = comp.pipeline("tiny", compile=compile) if "fiffdepth_tiny" in active else None
    if any(m.startswith("marigold") for m in active):
        comp.marigold
    if "depth_anything" in active:
        comp.depth_anything
    say(f"[bench] {preset} preset on {dev} ({torch.get_num_threads()} threads): built in "
        f"{time.perf_counter() - t_build:.1f} s; {images} image(s) at {resolution}²")
    pics = bench_images(images, resolution, seed)

    meters = {"fiffdepth": StageMeter(dev), "fiffdepth_tiny": StageMeter(dev)}

    def runner(name: str):
        if name in ("fiffdepth", "fiffdepth_tiny"):
            pipe = full if name == "fiffdepth" else tiny
            pipe.stage_hook = meters[name]
            return lambda x: pipe(x, processing_resolution=resolution, output_latent=True)
        if name in MARIGOLD_SETTINGS:
            steps, ens = MARIGOLD_SETTINGS[name]
            mp = comp.marigold
            return lambda x: mp(x, num_inference_steps=steps, ensemble_size=ens, processing_resolution=resolution,
                                batch_size=ens, generator=torch.Generator(dev).manual_seed(seed), output_type="np",
                                match_input_resolution=True).prediction
        if name == "depth_anything":
            return lambda x: depth_anything_infer(comp.depth_anything, x, resolution)
        raise KeyError(name)

    runners = {m: runner(m) for m in active}

    # 1. one counted run per method (also the first warm-up), then plain warm-up calls
    flops, stage_flops, samples = _count_methods(active, runners, meters, comp, pics[0], say)
    for _ in range(warmup):
        for m in active:
            if m != "marigold_50x10":
                timed(lambda: runners[m](pics[0]), dev)
        for meter in meters.values():
            meter.reset()
    # 2. timed runs, interleaved image by image
    n_images = {m: (n50 if m == "marigold_50x10" else images) for m in active}
    seconds, stage_seconds, peak, outputs = _time_methods(active, runners, meters, comp, pics, n_images, samples, say)
    if "marigold_50x10" in active:
        flops["marigold_50x10"] = _marigold_flops(flops, samples, stage_flops, comp)

    sec = {m: _median(seconds[m]) for m in active}
    env = versions()
    result = {
        "preset": preset, "device": str(dev), "device_name": env.get("gpu", env.get("cpu", "cpu")),
        "resolution": resolution, "threads": torch.get_num_threads(), "images": n_images,
        "warmup_runs": 1 + warmup,
        "timing": "median over images of wall seconds per call (batch 1, torch.inference_mode); methods interleaved "
                  "image by image, order reversed on every other image",
        "versions": env, "skipped": sorted(skip),
        "seconds_per_image": {"full": sec["fiffdepth"], "tiny": sec.get("fiffdepth_tiny"), **sec},
        "seconds_all": {m: seconds[m] for m in active},
        "flops_per_image": flops,
        "module_samples_per_image": samples,
        "ratios": {m: sec[m] / sec["fiffdepth"] for m in COMPARED if m in active},
        "flop_ratios": {m: flops[m] / flops["fiffdepth"] for m in COMPARED if m in active},
        "peak_memory_gb": peak,
        "memory_kind": "torch.cuda.max_memory_allocated" if dev.type == "cuda"
        else "process peak RSS (VmHWM, reset before the first timed image; includes every loaded model)",
        "notes": [],
    }
    meta = meta_flops(preset, resolution)
    result["flops_per_image_meta"] = meta
    result["flop_ratio_sources"] = {m: "counted" for m in result["flop_ratios"]}
    for m in COMPARED:  # methods not run here still get their FLOP ratio, from the meta count
        if m not in active and meta is not None:
            result["flop_ratios"][m] = meta[m] / meta["fiffdepth"]
            result["flop_ratio_sources"][m] = "meta (shapes only; not run)"
    if "marigold_50x10" in active:
        result["notes"].append(
            f"marigold_50x10 timed on {n50} image(s) (500 UNet evaluations per image), the others on {images}; "
            "its FLOPs = marigold_1x1's + the extra samples counted through each module × their counted "
            "per-sample FLOPs")
    result["notes"].append("diffusers' MarigoldDepthPipeline encodes each image once and repeats the latent over the "
                           "ensemble (the original Marigold code encodes it per member); FLOPs count what it runs")

    # -- 3. fast path: stages, batched, bf16 ----------------------------------------------------
    rows = []
    for m in ("fiffdepth", "fiffdepth_tiny"):
        if m in active:
            rows.append(_stage_row("float32", "full" if m == "fiffdepth" else "tiny", 1, resolution, n_images[m],
                                   stage_seconds[m], sec[m], stage_flops[m], peak.get(m)))
    if "batched" not in skip and batch > 1:
        rows += _batched_rows(comp, active, pics, batch, resolution, stage_flops, dev, compile, warmup, say)
    if "bf16" not in skip:
        bf16_rows, bf16 = _bf16_rows(comp, active, pics[:bf16_n], bf16_res, resolution, outputs, stage_flops, dev,
                                     compile, warmup, say)
        rows += bf16_rows
        result.update(bf16)
    result["stages"] = rows
    result["tiny_decoder_speedup"] = (sec["fiffdepth"] / sec["fiffdepth_tiny"]) if "fiffdepth_tiny" in active else None
    result["stage_flops_per_image"] = {("full" if k == "fiffdepth" else "tiny"): v for k, v in stage_flops.items()}
    if preset == "paper" and resolution == 512:
        result["sd2_reference_tflop_512"] = SD2_REFERENCE_TFLOP_512
    result["matmul_tflops"] = {"float32": matmul_tflops(dev, torch.float32)}
    if "bf16" not in skip:
        result["matmul_tflops"]["bfloat16"] = matmul_tflops(dev, torch.bfloat16)
    result["acceptance"] = acceptance(result)
    return result


def bench_tiny(out=None, **kwargs) -> dict:
    """``bench(preset="tiny", ...)`` for notebooks; with ``out``, also written there as JSON (atomically)."""
    result = bench(preset="tiny", **kwargs)
    if out is not None:
        write_json(out, result)
    return result


def bench_paper(**kwargs) -> dict:
    """``bench(preset="paper", ...)``: SD2's UNet/VAE architecture with random weights."""
    return bench(preset="paper", **kwargs)


def _count_methods(active, runners, meters, comp, x, say) -> tuple[dict, dict, dict]:
    """FLOPs per image (total, and per stage for FiffDepth) and module samples, from one counted call each."""
    flops, stage_flops, samples = {}, {}, {}
    for m in active:
        if m == "marigold_50x10":
            continue  # 500 UNet calls: derived from the 1×1 count and its counted samples
        t0 = time.perf_counter()
        meter = meters.get(m)
        with flop_counter() as counter, torch.inference_mode():
            if meter is not None:
                meter.counter = counter
            with count_samples(_stage_modules(comp, m)) as calls:
                runners[m](x)
        if meter is not None:
            meter.counter = None
            stage_flops[m] = dict(meter.flops)
            meter.reset()
        flops[m] = int(counter.get_total_flops())
        samples[m] = calls
        say(f"[bench] counted {m}: {flops[m] / 1e9:.2f} GFLOP/image ({time.perf_counter() - t0:.1f} s)")
    return flops, stage_flops, samples


def _time_methods(active, runners, meters, comp, pics, n_images, samples, say):
    """Seconds per call, per-stage seconds (FiffDepth), peak memory and outputs; methods interleaved
    image by image in an order reversed every other image. Marigold 50×10's module samples are
    counted (into ``samples``) during its first timed call."""
    dev = comp.device
    seconds: dict[str, list[float]] = defaultdict(list)
    stage_seconds: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in meters}
    outputs: dict[str, list] = defaultdict(list)
    peak = {}
    for i, x in enumerate(pics):
        for m in (active if i % 2 == 0 else active[::-1]):
            if i >= n_images[m]:
                continue
            meter = meters.get(m)
            if meter is not None:
                meter.reset()
            if i == 0:
                reset_peak_memory(dev)
            hooks = count_samples(_stage_modules(comp, m)) if m == "marigold_50x10" and i == 0 else None
            with hooks or contextlib.nullcontext() as calls:
                dt = timed(lambda: outputs[m].append(runners[m](x)), dev)
            if hooks is not None:
                samples[m] = calls
            if i == 0:
                peak[m] = peak_memory_gb(dev)
            seconds[m].append(dt)
            if meter is not None:
                for s in STAGES:
                    stage_seconds[m][s].append(meter.seconds.get(s, 0.0))
        say(f"[bench] image {i + 1}/{len(pics)}: " + ", ".join(
            f"{m} {seconds[m][-1]:.3f}s" for m in active if i < n_images[m]))
    return seconds, stage_seconds, peak, outputs


def _stage_modules(comp: Components, method: str) -> dict:
    if method in ("fiffdepth", "fiffdepth_tiny"):
        m = comp.model
        dec = m.vae.decoder if method == "fiffdepth" else comp.tiny_decoder.decoder
        return {"encode": m.vae.encoder, "unet": m.unet, "decode": dec}
    if method in MARIGOLD_SETTINGS:
        mp = comp.marigold
        return {"encode": mp.vae.encoder, "unet": mp.unet, "decode": mp.vae.decoder}
    return {"model": comp.depth_anything}


def _marigold_flops(flops: dict, samples: dict, stage_flops: dict, comp: Components) -> int:
    """Marigold 50×10 = its 1×1 run + extra samples × per-sample FLOPs (UNet-8 from the 1×1 run)."""
    if "marigold_1x1" not in flops:  # count the 1×1 run now (it is cheap next to 50×10)
        x = bench_images(1, comp.resolution, comp.seed)[0]
        mp = comp.marigold
        with count_samples(_stage_modules(comp, "marigold_1x1")) as calls:
            _, flops["marigold_1x1"] = count_flops(
                lambda: mp(x, num_inference_steps=1, ensemble_size=1, processing_resolution=comp.resolution,
                           output_type="np"))
        samples["marigold_1x1"] = calls
    with flop_counter() as c, torch.inference_mode():  # one 8-channel UNet evaluation
        m = comp.model
        h = comp.resolution // m.vae_scale_factor
        z = torch.zeros(1, 2 * m.vae.config.latent_channels, h, h, device=comp.device)
        comp.marigold.unet(z, torch.tensor([999], device=comp.device),
                           encoder_hidden_states=m.empty_text_embedding.to(comp.device))
    per_sample = {"unet": int(c.get_total_flops()), "encode": stage_flops["fiffdepth"]["encode"],
                  "decode": stage_flops["fiffdepth"]["decode"]}
    return marigold_flops_from_samples(flops["marigold_1x1"], samples["marigold_1x1"], samples["marigold_50x10"],
                                       per_sample)


def meta_flops(preset: str, resolution: int) -> dict[str, int] | None:
    """FLOPs per image of every method counted on meta tensors: shapes only, no arithmetic, seconds
    even at paper size. Assumes diffusers' call structure (Marigold: 1 encode, steps × E UNet samples,
    E decodes) and an image side divisible by the pipelines' size multiple (else None: they pad).
    The counted runs of ``bench`` must agree (``tests/test_bench.py``)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import DepthAnythingForDepthEstimation

    from .distill import tiny_decoder_config

    cfg = model_config(preset, resolution)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg.unet)
        unet8 = UNet2DConditionModel(**{**cfg.unet, "in_channels": 2 * unet.config.in_channels})
        vae = AutoencoderKL(**cfg.vae)
        tiny = AutoencoderTiny(**tiny_decoder_config(vae))
        da = DepthAnythingForDepthEstimation(depth_anything_config(preset))
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % (f * 2 ** (len(unet.config.block_out_channels) - 1)):
        return None
    h, c = resolution // f, vae.config.latent_channels
    side = max(14, 14 * round(resolution / 14))

    def count(fn):
        with torch.device("meta"), flop_counter() as counter, torch.inference_mode():
            fn()
        return int(counter.get_total_flops())

    emb = lambda: torch.zeros(1, 2, unet.config.cross_attention_dim)  # noqa: E731
    enc = count(lambda: vae.encode(torch.zeros(1, 3, resolution, resolution)))
    u4 = count(lambda: unet(torch.zeros(1, c, h, h), torch.tensor([0]), encoder_hidden_states=emb()))
    u8 = count(lambda: unet8(torch.zeros(1, 2 * c, h, h), torch.tensor([999]), encoder_hidden_states=emb()))
    dec = count(lambda: vae.decode(torch.zeros(1, c, h, h)))
    tdec = count(lambda: tiny.decode(torch.zeros(1, c, h, h)))
    out = {"fiffdepth": enc + u4 + dec, "fiffdepth_tiny": enc + u4 + tdec,
           "depth_anything": count(lambda: da(pixel_values=torch.zeros(1, 3, side, side)))}
    for name, (steps, ens) in MARIGOLD_SETTINGS.items():
        out[name] = enc + steps * ens * u8 + ens * dec
    return out


def marigold_flops_from_samples(base_flops: int, base_samples: dict, samples: dict, per_sample: dict) -> int:
    """FLOPs of a Marigold run from a counted run of the same pipeline (``base_*``) and the samples
    each module saw: base + Σ_stage (samples − base samples) × per-sample FLOPs of the stage.
    Exact because every counted op is linear in the batch and nothing else depends on the settings."""
    total = base_flops
    for stage, f in per_sample.items():
        total += (samples[stage]["samples"] - base_samples[stage]["samples"]) * f
    return int(total)


def _stage_row(dtype: str, decoder: str, batch: int, resolution: int, images: int, stage_seconds: dict,
               total_seconds: float | None, stage_flops: dict, peak: float | None) -> dict:
    """One fast-path row: per image seconds, FLOPs and TFLOP/s of each stage."""
    sec = {s: _median([t / batch for t in stage_seconds.get(s, [])]) for s in STAGES}
    fl = {s: stage_flops.get(s) for s in STAGES}
    tf = {s: (fl[s] / sec[s] / 1e12 if fl[s] and sec[s] else None) for s in STAGES}
    total_flops = sum(v for v in fl.values() if v)
    return {"dtype": dtype, "decoder": decoder, "batch": batch, "resolution": resolution, "images": images,
            "seconds_per_image": {**sec, "total": total_seconds},
            "flops_per_image": {**fl, "total": total_flops},
            "tflops": {**tf, "total": (total_flops / total_seconds / 1e12) if total_seconds else None},
            "peak_memory_gb": peak}


def _batched_rows(comp, active, pics, batch, resolution, stage_flops, dev, compile, warmup, say) -> list[dict]:
    rows = []
    names = [m for m in ("fiffdepth", "fiffdepth_tiny") if m in active]
    pipes = {m: comp.pipeline("full" if m == "fiffdepth" else "tiny", compile=compile) for m in names}
    meters = {m: StageMeter(dev) for m in names}
    chunks = [torch.cat(pics[i:i + batch]) for i in range(0, len(pics) - batch + 1, batch)]
    times = defaultdict(list)
    stage_s = {m: defaultdict(list) for m in names}
    peak = {}
    for m in names if warmup else ():  # warm the batched shapes
        pipes[m].stage_hook = None
        timed(lambda: pipes[m](chunks[0], processing_resolution=resolution, batch_size=batch), dev)
    for j, x in enumerate(chunks):
        for m in names:
            pipes[m].stage_hook = meters[m]
            meters[m].reset()
            if j == 0:
                reset_peak_memory(dev)
            times[m].append(timed(lambda: pipes[m](x, processing_resolution=resolution, batch_size=batch), dev) / batch)
            if j == 0:
                peak[m] = peak_memory_gb(dev)
            for s in STAGES:
                stage_s[m][s].append(meters[m].seconds.get(s, 0.0))
        say(f"[bench] batch {j + 1}/{len(chunks)} of {batch}: "
            + ", ".join(f"{m} {times[m][-1]:.3f}s/img" for m in names))
    for m in names:
        rows.append(_stage_row("float32", "full" if m == "fiffdepth" else "tiny", batch, resolution,
                               len(chunks) * batch, stage_s[m], _median(times[m]), stage_flops[m], peak[m]))
    return rows


def _bf16_rows(comp, active, pics, bf16_res, resolution, outputs, stage_flops, dev, compile, warmup,
               say) -> tuple[list[dict], dict]:
    """bf16 autocast rows and the relative error of their depth (and d0) against fp32 at the same resolution.

    FLOPs do not depend on the dtype: they come from the fp32 count at the same resolution. The
    bf16 pipeline gets a warm-up call unless ``warmup`` is 0 and it runs at the full resolution
    (on a CPU without bf16 units one 512² SD2 call takes minutes).
    """
    names = [m for m in ("fiffdepth", "fiffdepth_tiny") if m in active]
    if bf16_res != resolution:
        pics = [F.interpolate(p, size=(bf16_res, bf16_res), mode="bilinear", antialias=True, align_corners=False)
                for p in pics]
    rows, info = [], {"bf16_resolution": bf16_res, "bf16_images": len(pics)}
    for m in names:
        decoder = "full" if m == "fiffdepth" else "tiny"
        if bf16_res == resolution:
            ref = outputs[m][:len(pics)]
            fl = stage_flops[m]
        else:
            p32 = comp.pipeline(decoder, compile=compile)
            meter = StageMeter(dev)
            with flop_counter() as counter, torch.inference_mode():
                p32.stage_hook, meter.counter = meter, counter
                ref = [p32(pics[0], processing_resolution=bf16_res, output_latent=True)]
            p32.stage_hook = None
            fl = dict(meter.flops)
            with torch.inference_mode():
                ref += [p32(x, processing_resolution=bf16_res, output_latent=True) for x in pics[1:]]
        pipe = comp.pipeline(decoder, dtype=torch.bfloat16, compile=compile)
        meter = StageMeter(dev)
        pipe.stage_hook = meter
        if warmup or bf16_res != resolution:
            timed(lambda: pipe(pics[0], processing_resolution=bf16_res), dev)
        times, stage_s, got = [], defaultdict(list), []
        reset_peak_memory(dev)
        for x in pics:
            meter.reset()
            times.append(timed(lambda: got.append(pipe(x, processing_resolution=bf16_res, output_latent=True)), dev))
            for s in STAGES:
                stage_s[s].append(meter.seconds.get(s, 0.0))
        rows.append(_stage_row("bfloat16", decoder, 1, bf16_res, len(pics), stage_s, _median(times), fl,
                               peak_memory_gb(dev)))
        key = "bf16_rel_err" if decoder == "full" else "bf16_rel_err_tiny"
        info[key] = rel_err(np.concatenate([o.prediction for o in got]), np.concatenate([o.prediction for o in ref]))
        info[key.replace("err", "err_latent")] = rel_err(torch.cat([o.latent[0] for o in got]).numpy(),
                                                          torch.cat([o.latent[0] for o in ref]).numpy())
        say(f"[bench] bf16 {decoder} at {bf16_res}²: {_median(times):.3f} s/image, rel. err. vs fp32: depth "
            f"{info[key]:.2e}, d0 latent {info[key.replace('err', 'err_latent')]:.2e}")
    return rows, info


def acceptance(r: dict) -> dict:
    """Issue 7 and 9 acceptance lines: value, bound, pass. Issue 7 states its lines for the tiny
    preset, issue 9 for the paper architecture at 512²; at the other preset a line is shown with
    ``pass: None``. GPU lines are ``None`` unless measured on CUDA."""
    acc = {}
    issue7 = r["preset"] == "tiny"
    issue9 = r["preset"] == "paper" and r["resolution"] == 512

    def line(name, value, bound, applies, scope, **extra):
        kind, limit = bound
        ok = None if value is None or not applies else (value >= limit if kind == "min" else value <= limit)
        acc[name] = {"value": value, kind: limit, "pass": ok, "scope": scope, **extra}

    if "marigold_50x10" in r["ratios"]:
        line("marigold_50x10_speedup_over_flop_ratio",
             r["ratios"]["marigold_50x10"] / r["flop_ratios"]["marigold_50x10"], ("min", 0.9), issue7, "issue 7, tiny")
    if "marigold_1x1" in r["ratios"]:
        line("marigold_1x1_ratio", r["ratios"]["marigold_1x1"], ("min", 0.95), issue7, "issue 7, tiny")
    if r.get("tiny_decoder_speedup") is not None:
        line("tiny_decoder_speedup", r["tiny_decoder_speedup"], ("min", 2.0), issue9, "issue 9, paper 512²")
    if "bf16_rel_err" in r:
        line("bf16_rel_err", r["bf16_rel_err"], ("max", 1e-2), issue9, "issue 9, paper 512²",
             resolution=r["bf16_resolution"])
    gpu = r["device"].startswith("cuda")
    note = None if gpu else "not measured: no GPU"
    tiny_s = r["seconds_per_image"].get("tiny")
    line("gpu_ms_per_image_tiny", tiny_s * 1e3 if gpu and tiny_s else None, ("max", 15.0), gpu and issue9,
         "issue 9, GPU, paper 512²", note=note)
    unet_bf16 = next((row["tflops"]["unet"] for row in r.get("stages", [])
                      if row["dtype"] == "bfloat16" and row["decoder"] == "full"), None)
    peak = r.get("matmul_tflops", {}).get("bfloat16")
    frac = unet_bf16 / peak if (gpu and unet_bf16 and peak) else None
    line("gpu_unet_fraction_of_bf16_matmul", frac, ("min", 0.4), gpu and issue9, "issue 9, GPU, paper 512²", note=note)
    return acc


# ============================================================================ report


def format_report(r: dict) -> str:
    lines = [f"fiffdepth bench: {r['preset']} preset, {r['resolution']}×{r['resolution']}, {r['device']} "
             f"({r['device_name']}, {r['threads']} threads), torch {r['versions']['torch']}, "
             f"diffusers {r['versions']['diffusers']}, transformers {r['versions']['transformers']}", ""]
    lines.append(f"{'method':<16}{'images':>7}{'s/image':>11}{'GFLOP/image':>14}{'time ratio':>12}{'FLOP ratio':>12}")
    for m, s in r["seconds_per_image"].items():
        if m in ("full", "tiny") or s is None:
            continue
        tr = r["ratios"].get(m, 1.0 if m == "fiffdepth" else None)
        fr = r["flop_ratios"].get(m, 1.0 if m == "fiffdepth" else None)
        fl = r["flops_per_image"].get(m)
        lines.append(f"{m:<16}{r['images'][m]:>7}{s:>11.4f}{(fl or 0) / 1e9:>14.2f}"
                     f"{(f'{tr:.2f}' if tr is not None else '-'):>12}{(f'{fr:.2f}' if fr is not None else '-'):>12}")
    for m, src in r.get("flop_ratio_sources", {}).items():
        if src != "counted":
            meta = r["flops_per_image_meta"][m]
            lines.append(f"{m:<16}{'-':>7}{'not run':>11}{meta / 1e9:>14.2f}{'-':>12}{r['flop_ratios'][m]:>12.2f}"
                         "   (FLOPs counted on meta tensors)")
    lines += ["", "fast path (seconds | GFLOP | TFLOP/s per image and stage):"]
    lines.append(f"{'dtype':<9}{'decoder':<8}{'batch':>6}{'res':>5}  " + "".join(f"{s:>26}" for s in STAGES + ("total",))
                 + f"{'peak GB':>9}")
    for row in r.get("stages", []):
        cells = []
        for s in STAGES + ("total",):
            t, f, tf = row["seconds_per_image"][s], row["flops_per_image"][s], row["tflops"][s]
            cells.append(f"{(t or 0):8.3f} |{(f or 0) / 1e9:8.1f} |{(tf or 0):6.3f}")
        pk = row["peak_memory_gb"]
        lines.append(f"{row['dtype']:<9}{row['decoder']:<8}{row['batch']:>6}{row['resolution']:>5}  "
                     + "".join(f"{c:>26}" for c in cells) + (f"{pk:>9.2f}" if pk is not None else f"{'-':>9}"))
    if "sd2_reference_tflop_512" in r:
        ours = r["stage_flops_per_image"].get("full", {})
        lines.append("FLOPs vs issue 9's SD2 reference at 512²: " + ", ".join(
            f"{s} {ours.get(s, 0) / 1e12:.3f} (ref {ref:.2f}) TFLOP" for s, ref in r["sd2_reference_tflop_512"].items()))
    lines.append("matmul ceiling: " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in r.get("matmul_tflops", {}).items()))
    if "bf16_rel_err" in r:
        lines.append(f"bf16 vs fp32 depth at {r['bf16_resolution']}²: rel. err. {r['bf16_rel_err']:.2e}"
                     + (f" (tiny decoder {r['bf16_rel_err_tiny']:.2e})" if "bf16_rel_err_tiny" in r else ""))
    lines += ["", "acceptance:"]
    for k, v in r["acceptance"].items():
        val = v["value"]
        bound = f"≥ {v['min']}" if "min" in v else f"≤ {v['max']}"
        verdict = {True: "PASS", False: "FAIL", None: v.get("note") or f"(stated for {v['scope']})"}[v["pass"]]
        lines.append(f"  {k:<40} {('-' if val is None else f'{val:.4g}'):>10}  ({bound})  {verdict}")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


# ============================================================================ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model sizes to time")
    parser.add_argument("--images", type=int, default=None, help="images per method (default: 100 on CUDA, few on CPU)")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--skip", default=None,
                        help=f"comma-separated subset of {','.join(SKIPPABLE)} ('none' to run all; default on CPU "
                             "with --preset paper: the Marigold and Depth Anything timings)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--marigold-50x10-images", type=int, default=None,
                        help="images for Marigold 50×10 (500 UNet calls each; default 1 on CPU, 10 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch size of the batched rows")
    parser.add_argument("--bf16-resolution", type=int, default=None,
                        help="resolution of the bf16 rows (default: --resolution on CUDA, smaller on CPU)")
    parser.add_argument("--bf16-images", type=int, default=None, help="images of the bf16 rows (default: --images)")
    parser.add_argument("--warmup", type=int, default=None, help="extra warm-up calls per method after the counted one")
    parser.add_argument("--compile", action="store_true", help="torch.compile the FiffDepth pipelines")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and images")
    parser.add_argument("--out", default=None, help="write the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="print only the result")


def run(args: argparse.Namespace) -> int:
    skip = None
    if args.skip is not None:
        skip = [] if args.skip.strip().lower() == "none" else [s.strip() for s in args.skip.split(",") if s.strip()]
    threads = args.threads or (os.cpu_count() if (args.device or "cpu").startswith("cpu")
                               and not torch.cuda.is_available() else None)
    try:
        result = bench(args.preset, images=args.images, resolution=args.resolution, device=args.device, skip=skip,
                       threads=threads, marigold_50x10_images=args.marigold_50x10_images, batch=args.batch,
                       bf16_resolution=args.bf16_resolution, bf16_images=args.bf16_images, warmup=args.warmup,
                       compile=args.compile, seed=args.seed, progress=not args.quiet)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = "fiffdepth bench " + " ".join(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench"
                                                       else sys.argv[1:])
    print(format_report(result))
    if args.out:
        print(f"wrote {write_json(args.out, result)}")
    return 0
