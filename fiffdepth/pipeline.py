"""FiffDepthPipeline: image(s) in, affine-invariant depth out, one UNet pass per image.

Behaves like a diffusers pipeline (components in, ``__call__`` with ``processing_resolution``,
``batch_size`` and ``match_input_resolution``, an output dataclass) and is deterministic: the
VAE posterior mean is used and no noise is drawn anywhere.

The fast path (issue 9) is the pipeline's own: ``torch_dtype=torch.bfloat16`` runs under
``torch.autocast`` (cpu or cuda) with bf16 weights, ``channels_last`` stores convolution inputs
and weights NHWC, attention runs through PyTorch's SDPA (diffusers' ``AttnProcessor2_0``),
``compile=True`` wraps the UNet and the VAE encoder/decoder with ``torch.compile``, and
``decoder="tiny"`` swaps the VAE decoder for the distilled one (``fiffdepth.distill``).

Also the ``fiffdepth predict`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .codecs import DepthCodec, ImageCodec
from .hub import FiffDepthError
from .model import FiffDepthModel

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 8


class BadImageError(FiffDepthError, ValueError):
    pass


@dataclass
class FiffDepthOutput:
    """depth: (N, H, W) float32 in [0, 1] (0 = near, 1 = far, affine-invariant), or a list of
    (H, W) arrays when the inputs differ in size. depth_extended: the same for d₋₁ (Eq. 4) when
    asked for. latent: the d0 latents when ``output_latent=True``."""

    depth: np.ndarray | list
    depth_extended: np.ndarray | list | None = None
    latent: list | None = None


# -- inputs ------------------------------------------------------------------------------------

def image_to_tensor(image) -> torch.Tensor:
    """PIL image, numpy array (H, W[, C]) or tensor (3, H, W) -> float32 (3, H, W) in [0, 1].

    Grayscale is replicated to RGB, alpha dropped, 16-bit and float inputs scaled to [0, 1].
    """
    if isinstance(image, Image.Image):
        return image_to_tensor(pil_to_array(image))
    if torch.is_tensor(image):
        t = image.detach().float().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise BadImageError(f"tensor image must be (3, H, W) in [0, 1], got shape {tuple(t.shape)}")
        t = t[:3] if t.shape[0] >= 3 else t.repeat(3, 1, 1)
        return _check_size(t.clamp(0.0, 1.0))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise BadImageError(f"array image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        x = arr.astype(np.float32) / max(1.0, float(arr.max()))
    elif arr.dtype == bool:
        x = arr.astype(np.float32)
    else:
        x = arr.astype(np.float32)
        if not np.isfinite(x).all():
            raise BadImageError("image holds NaN or inf values")
        if x.max() > 1.0 + 1e-6:  # float in 0..255
            x = x / 255.0
    return _check_size(torch.from_numpy(np.ascontiguousarray(x.clip(0.0, 1.0))).permute(2, 0, 1))


def pil_to_array(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode == "I":
        a = np.asarray(img, dtype=np.int64)
        return (a.clip(0, 65535)).astype(np.uint16)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        rng = float(a.max() - a.min()) if a.size else 0.0
        return (a - a.min()) / rng if rng > 0 else np.zeros_like(a)
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if "A" in img.mode or img.mode == "P" else img.convert("RGB")
    return np.asarray(img)


def load_image(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """Read an image file -> ((3, H, W) float in [0, 1], notes on conversions). Raises BadImageError."""
    path = Path(path)
    notes = []
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = pil_to_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadImageError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    if mode in ("L", "LA", "1", "I;16", "I", "F", "I;16B", "I;16L"):
        notes.append(f"grayscale ({mode}) replicated to RGB")
    if "A" in mode:
        notes.append("alpha channel dropped")
    if arr.dtype == np.uint16:
        notes.append("16-bit image scaled to [0, 1]")
    try:
        return image_to_tensor(arr), notes
    except BadImageError as err:
        raise BadImageError(f"{path}: {err}") from None


def _check_size(t: torch.Tensor) -> torch.Tensor:
    h, w = t.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise BadImageError(f"image is {w}×{h} px; need at least {MIN_SIDE} px per side")
    return t


# -- the pipeline -------------------------------------------------------------------------------

class FiffDepthPipeline:
    """Feed-forward depth: x0 = E(image), d0 = ε̂θ(x0, 0), depth = D(d0) (Eq. 1).

    decoder: "full" (the VAE's decoder), "tiny" (the distilled decoder in the model directory's
    ``depth_decoder/``) or an ``AutoencoderTiny``. torch_dtype: float32, or bfloat16/float16 for
    autocast with weights in that dtype. channels_last: default on for CUDA and for bf16/fp16
    (oneDNN's fast reduced-precision kernels are NHWC), off for fp32 on CPU.
    compile: ``torch.compile`` the UNet and the VAE encoder and depth decoder (in place).
    ``stage_hook``: a callable ``name -> context manager`` entered around each stage ("encode",
    "unet", "decode"); ``fiffdepth.bench`` times and counts FLOPs with it.
    """

    def __init__(self, model: FiffDepthModel, device: str | torch.device | None = None,
                 torch_dtype: torch.dtype | None = None, decoder="full", compile: bool = False,
                 channels_last: bool | None = None):
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = torch_dtype or torch.float32
        self.autocast = self.dtype in (torch.bfloat16, torch.float16)
        # NHWC: faster convolutions on GPUs, and the only fast bf16 path on CPUs (oneDNN)
        default_cl = self.device.type == "cuda" or self.autocast
        self.channels_last = default_cl if channels_last is None else bool(channels_last)
        self.decoder = _resolve_decoder(decoder, model)
        self.decoder_name = "full" if self.decoder is None else "tiny"
        self.model.to(device=self.device, dtype=self.dtype)
        modules = [model.unet, model.vae] + ([self.decoder] if self.decoder is not None else [])
        for m in modules:
            m.eval()
        if self.decoder is not None:  # nn.Module.to: diffusers' own .to warns about an empty fp32-module list
            torch.nn.Module.to(self.decoder, device=self.device, dtype=self.dtype)
        use_sdpa(model.unet, model.vae)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for m in modules:
            m.to(memory_format=memory_format)
        if compile:
            model.unet.compile()
            model.vae.encoder.compile()
            (model.vae.decoder if self.decoder is None else self.decoder.decoder).compile()
        self.compiled = bool(compile)
        self.image_codec = ImageCodec(model.vae)
        self.depth_codec = DepthCodec(model.vae, decoder=self.decoder)
        self.stage_hook = None  # callable(name) -> context manager, e.g. a timer (fiffdepth.bench)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, device: str | torch.device | None = None,
                        torch_dtype: torch.dtype | None = None, decoder="full", compile: bool = False,
                        channels_last: bool | None = None) -> "FiffDepthPipeline":
        model = FiffDepthModel.from_pretrained(id_or_path)
        if isinstance(decoder, str) and decoder == "tiny":
            decoder = _load_tiny_decoder(str(id_or_path), model)
        return cls(model, device=device, torch_dtype=torch_dtype, decoder=decoder, compile=compile,
                   channels_last=channels_last)

    def save_pretrained(self, directory: str | Path) -> Path:
        """The model; with a distilled decoder also ``depth_decoder/`` (``decoder="tiny"`` then loads it)."""
        out = self.model.save_pretrained(directory)
        if self.decoder is not None:
            from .distill import DECODER_DIR, save_depth_decoder

            save_depth_decoder(self.decoder, Path(directory) / DECODER_DIR, self.model.vae)
        return out

    def _stage(self, name: str):
        """``stage_hook(name)`` around a stage ("encode", "unet", "decode") when a hook is set."""
        return self.stage_hook(name) if self.stage_hook is not None else contextlib.nullcontext()

    @property
    def size_multiple(self) -> int:
        return self.model.vae_scale_factor * self.model.unet_downsample

    @torch.no_grad()
    def __call__(self, images, processing_resolution: int | None = None, match_input_resolution: bool = True,
                 batch_size: int = 1, return_extended: bool = False, output_latent: bool = False,
                 show_progress_bar: bool = False) -> FiffDepthOutput:
        """images: a PIL image, numpy array, (3, H, W)/(B, 3, H, W) tensor in [0, 1], or a list of them.

        processing_resolution: longest side the image is resized to before encoding (0 = native,
        None = the model's default). Outputs are resized back when ``match_input_resolution``.
        """
        tensors = self._as_tensor_list(images)
        res = self.model.processing_resolution if processing_resolution is None else int(processing_resolution)
        depths, extended, latents = [], [], []
        order = range(0, len(tensors), max(1, batch_size))
        if show_progress_bar:
            from tqdm.auto import tqdm
            order = tqdm(order, desc="FiffDepth", unit="batch")
        for start in order:
            chunk = tensors[start:start + max(1, batch_size)]
            groups: dict[tuple, list[int]] = {}
            for i, t in enumerate(chunk):
                groups.setdefault(tuple(t.shape), []).append(i)
            out_chunk: list = [None] * len(chunk)
            for idx in groups.values():
                result = self._predict_same_size(torch.stack([chunk[i] for i in idx]), res, match_input_resolution,
                                                 return_extended)
                for j, i in enumerate(idx):
                    out_chunk[i] = tuple(r[j] if r is not None else None for r in result)
            for d, e, lat in out_chunk:
                depths.append(d)
                extended.append(e)
                latents.append(lat)
        return FiffDepthOutput(
            depth=_stack_if_same(depths),
            depth_extended=_stack_if_same(extended) if return_extended else None,
            latent=latents if output_latent else None,
        )

    def _predict_same_size(self, batch: torch.Tensor, res: int, match_input: bool, extended: bool):
        h, w = batch.shape[-2:]
        x = batch.to(self.device, torch.float32)
        if res and max(h, w) != res:
            scale = res / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        ph, pw = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (math.ceil(ph / m) * m - ph), (math.ceil(pw / m) * m - pw)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            with self._stage("encode"):
                x0 = self.image_codec.encode(x.to(self.dtype))
            with self._stage("unet"):
                d0 = self.model.predict_latent(x0)
                d_ext = self.model.extend(d0) if extended else None
            with self._stage("decode"):
                decoded = [None if lat is None else self.depth_codec.decode(lat) for lat in (d0, d_ext)]
        results = []
        for depth in decoded:
            if depth is None:
                results.append(None)
                continue
            depth = depth[..., :ph, :pw].float()
            if match_input and (ph, pw) != (h, w):
                depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
            results.append(((depth[:, 0] + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy())
        results.append(d0.float().cpu())
        return results

    @staticmethod
    def _as_tensor_list(images) -> list[torch.Tensor]:
        if torch.is_tensor(images) and images.ndim == 4:
            return [image_to_tensor(t) for t in images]
        if isinstance(images, (list, tuple)):
            if not images:
                raise BadImageError("no images given")
            return [image_to_tensor(im) for im in images]
        return [image_to_tensor(images)]


def use_sdpa(*modules) -> None:
    """Route every attention layer through ``F.scaled_dot_product_attention`` (diffusers' AttnProcessor2_0).

    It is diffusers' default under PyTorch 2; set explicitly so a model loaded with another
    processor still takes the fused kernels.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in modules:
        procs = getattr(m, "attn_processors", {})
        if procs and not all(isinstance(p, AttnProcessor2_0) for p in procs.values()):
            m.set_attn_processor(AttnProcessor2_0())


def _resolve_decoder(decoder, model: FiffDepthModel):
    """"full" -> None (the VAE decodes); "tiny" -> the distilled decoder next to the model's weights."""
    if decoder is None or (isinstance(decoder, str) and decoder == "full"):
        return None
    if isinstance(decoder, str) and decoder == "tiny":
        src = getattr(model.unet.config, "_name_or_path", None)
        if not src:
            raise FiffDepthError(
                "decoder='tiny' needs the model's directory: load with FiffDepthPipeline.from_pretrained(DIR, "
                "decoder='tiny') or pass the decoder (fiffdepth.distill.load_depth_decoder(DIR))"
            )
        return _load_tiny_decoder(str(src), model)
    if isinstance(decoder, str):
        raise ValueError(f"decoder must be 'full', 'tiny' or an AutoencoderTiny, got {decoder!r}")
    from .distill import check_compatible

    check_compatible(decoder, model.vae)
    return decoder


def _load_tiny_decoder(src: str, model: FiffDepthModel):
    from .distill import DECODER_DIR, load_depth_decoder
    from .hub import load_or_explain, looks_like_local_path

    if looks_like_local_path(src):
        return load_depth_decoder(Path(src).expanduser() / DECODER_DIR, vae=model.vae)
    from diffusers import AutoencoderTiny

    from .distill import check_compatible

    dec = load_or_explain(lambda s: AutoencoderTiny.from_pretrained(s, subfolder=DECODER_DIR), src, "depth decoder")
    check_compatible(dec, model.vae)
    return dec.eval()


def _stack_if_same(arrays: list):
    if arrays and all(a is not None and a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return arrays


# -- outputs ------------------------------------------------------------------------------------

def colorize_depth(depth: np.ndarray, cmap: str = "Spectral") -> np.ndarray:
    """(H, W) depth in [0, 1] -> (H, W, 3) uint8 with a matplotlib colormap (near = first colour)."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.clip(depth, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def write_depth_outputs(depth: np.ndarray, out_dir: Path, stem: str, cmap: str = "Spectral") -> list[Path]:
    """Write ``<stem>.png`` (16-bit, depth × 65535), ``<stem>.npy`` (float32) and ``<stem>_colored.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png16, npy, colored = out_dir / f"{stem}.png", out_dir / f"{stem}.npy", out_dir / f"{stem}_colored.png"
    d = np.asarray(depth, dtype=np.float32)
    atomic_write(png16, lambda p: Image.fromarray((np.clip(d, 0, 1) * 65535.0 + 0.5).astype(np.uint16)).save(p, format="PNG"))
    atomic_write(npy, lambda p: np.save(p, d))
    atomic_write(colored, lambda p: Image.fromarray(colorize_depth(d, cmap)).save(p, format="PNG"))
    return [png16, npy, colored]


def find_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and directories (recursively) into image files; returns (files, problems)."""
    files, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{p}: directory holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or directory")
    return files, problems


# -- CLI: fiffdepth predict -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    parser.add_argument("--model", default=None,
                        help="FiffDepth model directory (or hub id); default: the embedded model shipped in weights/fiffdepth")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--processing-resolution", type=int, default=None,
                        help="longest side for processing (0 = native; default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--cmap", default="Spectral")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--decoder", choices=["full", "tiny"], default="full",
                        help="tiny: the distilled decoder written by `fiffdepth distill-decoder`")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (fast on GPUs; slow on CPUs without bf16 units)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and the VAE")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    files, problems = find_images(args.images)
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    if not files:
        print("error: no images to process", file=sys.stderr)
        return 1
    if args.model is None:
        from .weights import shipped

        try:
            args.model = str(shipped("fiffdepth"))
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        pipe = FiffDepthPipeline.from_pretrained(args.model, device=args.device, decoder=args.decoder,
                                                 torch_dtype=torch.bfloat16 if args.bf16 else None,
                                                 compile=args.compile)
    except FiffDepthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    used_stems: set[str] = set()
    failed = len(problems)
    written = 0
    for path in tqdm(files, desc="predict", unit="img"):
        try:
            image, notes = load_image(path)
            for note in notes:
                tqdm.write(f"note: {path}: {note}", file=sys.stderr)
            depth = pipe(image, processing_resolution=args.processing_resolution).depth[0]
        except BadImageError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        stem = path.stem
        k = 1
        while stem in used_stems:
            stem = f"{path.stem}_{k}"
            k += 1
        used_stems.add(stem)
        write_depth_outputs(depth, out_dir, stem, args.cmap)
        written += 1
    print(f"wrote {written} depth map(s) to {out_dir}" + (f"; {failed} input(s) failed" if failed else ""))
    return 0 if failed == 0 else 1
