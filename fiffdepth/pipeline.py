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
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .codecs import DepthCodec, ImageCodec
from .hub import FiffDepthError, UsageError
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
    """PIL image, numpy array (H, W[, C]) or tensor ([C,] H, W) -> float32 (3, H, W) in [0, 1].

    Grayscale is replicated to RGB, alpha dropped. Integer data is scaled by its dtype's range
    (uint8 / 255, uint16 / 65535); float data must already lie in [0, 1] (no clamp: a 0–255
    float image would otherwise become all white).
    """
    if isinstance(image, Image.Image):
        return image_to_tensor(pil_to_array(image))
    if torch.is_tensor(image):
        t = image.detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise BadImageError(f"tensor image must be (3, H, W), got shape {tuple(t.shape)}")
        t = t[:3] if t.shape[0] >= 3 else t.repeat(3, 1, 1)
        x = (t.float() if t.is_floating_point() else t).numpy()
        return _check_size(torch.from_numpy(np.ascontiguousarray(to_unit_range(x))))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise BadImageError(f"array image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    x = to_unit_range(arr[..., :3])
    return _check_size(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1))


INTEGER_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def to_unit_range(x: np.ndarray) -> np.ndarray:
    """Pixel values -> float32 in [0, 1]: uint8 and uint16 divided by their dtype's maximum, bool
    as 0/1, float checked (finite, within [0, 1]). Other dtypes raise ``BadImageError``."""
    if x.dtype == bool:
        return x.astype(np.float32)
    if x.dtype in INTEGER_RANGES:
        return x.astype(np.float32) / np.float32(INTEGER_RANGES[x.dtype])
    if not np.issubdtype(x.dtype, np.floating):
        raise BadImageError(f"image of dtype {x.dtype}: pass uint8 (0–255), uint16 (0–65535) or float in [0, 1]")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise BadImageError("image holds NaN or inf values")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise BadImageError(f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                            "(divide 0–255 data by 255, or pass it as uint8)")
    return x


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
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
        if self.device.type == "cpu" and not self.autocast:
            thread_independent_1x1_convs(*modules)
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

    def check_processing_resolution(self, processing_resolution: int | None) -> int:
        """The longest side to process at: None -> the model's default, 0 -> native (as in
        Marigold), otherwise at least ``size_multiple`` (one latent pixel per UNet level)."""
        res = self.model.processing_resolution if processing_resolution is None else processing_resolution
        if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or (res != 0 and res < self.size_multiple):
            raise UsageError(f"processing_resolution={res!r}: use 0 (native) or an integer ≥ {self.size_multiple} "
                             f"(the model's latent multiple)")
        return int(res)

    @torch.no_grad()
    def __call__(self, images, processing_resolution: int | None = None, match_input_resolution: bool = True,
                 batch_size: int = 1, return_extended: bool = False, output_latent: bool = False,
                 show_progress_bar: bool = False) -> FiffDepthOutput:
        """images: a PIL image, numpy array, (3, H, W)/(B, 3, H, W) tensor, or a list of them
        (uint8/uint16 scaled by their range, float in [0, 1]; see ``image_to_tensor``).

        processing_resolution: longest side the image is resized to before encoding (0 = native,
        None = the model's default; see ``check_processing_resolution``). Outputs are resized back when ``match_input_resolution``.
        """
        res = self.check_processing_resolution(processing_resolution)
        tensors = self._as_tensor_list(images)
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


def thread_independent_1x1_convs(*modules) -> None:
    """Make each plain 1×1 ``Conv2d`` (stride 1, no padding, one group) a ``MatmulConv1x1``, in
    place, so its output does not depend on the thread count.

    oneDNN's fp32 1×1 convolution kernel on CPU (the VAE's and the UNet's ``conv_shortcut``)
    splits its sums differently for 1 and 2 threads (last-bit differences, up to ~5e-7; its
    ``deterministic`` flag does not change that); the same product through ``torch.matmul`` (MKL
    GEMM) gives the same bytes at 1 to 4 threads. The 3×3 convolutions keep oneDNN: their output
    is already the same at 1, 2 and 4 threads.
    """
    for root in modules:
        for conv in root.modules():
            if (type(conv) is torch.nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                    and conv.padding in ((0, 0), "valid") and conv.groups == 1):
                conv.__class__ = MatmulConv1x1  # same parameters and state dict; survives deepcopy


class MatmulConv1x1(torch.nn.Conv2d):
    """A 1×1 convolution computed as W (C_out, C_in) @ x (B, C_in, H·W) + b."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = torch.matmul(self.weight.flatten(1), x.reshape(b, c, h * w)).view(b, -1, h, w)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


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


def batch_or_one_by_one(predict, inputs: list) -> list:
    """``predict(inputs)`` as a list; if the batch raises ``BadImageError``, each input alone, so one
    bad image does not fail its neighbours: a result or that input's ``BadImageError`` per input."""
    if not inputs:
        return []
    try:
        return list(predict(inputs))
    except BadImageError:
        out = []
        for x in inputs:
            try:
                out.append(predict([x])[0])
            except BadImageError as err:
                out.append(err)
        return out


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


OUTPUT_MARKER = ".fiffdepth-predict.json"  # in every --out folder: what predict wrote there


def output_names(stem: str) -> list[str]:
    """The files ``write_depth_outputs`` writes for ``stem``."""
    return [f"{stem}.png", f"{stem}.npy", f"{stem}_colored.png"]


def write_depth_outputs(depth: np.ndarray, out_dir: Path, stem: str, cmap: str = "Spectral") -> list[Path]:
    """Write ``<stem>.png`` (16-bit, depth × 65535), ``<stem>.npy`` (float32) and ``<stem>_colored.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png16, npy, colored = (out_dir / name for name in output_names(stem))
    d = np.asarray(depth, dtype=np.float32)
    atomic_write(png16, lambda p: Image.fromarray((np.clip(d, 0, 1) * 65535.0 + 0.5).astype(np.uint16)).save(p, format="PNG"))
    atomic_write(npy, lambda p: np.save(p, d))
    atomic_write(colored, lambda p: Image.fromarray(colorize_depth(d, cmap)).save(p, format="PNG"))
    return [png16, npy, colored]


def find_images(inputs: Sequence[str | Path], exclude: Sequence[str | Path] = ()) -> tuple[list[Path], list[str]]:
    """Expand files and directories (recursively) into image files; returns (files, problems).

    Inside a directory, the folders in ``exclude`` and every folder predict has written to (one
    holding ``OUTPUT_MARKER``) are skipped, so depth maps are never read back as images.
    """
    excluded = {Path(e).resolve() for e in exclude}
    files, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p):
                root = Path(root)
                dirs[:] = [d for d in dirs if (root / d).resolve() not in excluded and not (root / d / OUTPUT_MARKER).exists()]
                found += [root / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and (root / n).is_file()]
            if not found:
                problems.append(f"{p}: directory holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files.extend(sorted(found))
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or directory")
    return files, problems


def prepare_out_dir(out_dir: Path, inputs: Sequence[str | Path]) -> set[str]:
    """Check ``--out`` before anything is loaded: not an input folder, writable. Creates it and
    returns the names in it that predict must not overwrite (files it did not write there)."""
    out_r = out_dir.resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir() and p.resolve() == out_r:
            raise UsageError(f"--out {out_dir} is the input folder {p}: the depth maps would overwrite or mix with "
                             "the images; choose another folder (a subfolder of the input is fine, it is skipped)")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"--out {out_dir}: not writable ({err.strerror or err})") from None
    ours = set(read_output_record(out_dir))
    return {q.name for q in out_dir.iterdir() if q.is_file() and q.name not in ours and q.name != OUTPUT_MARKER}


def read_output_record(out_dir: Path) -> list[str]:
    """The file names earlier predict runs wrote into ``out_dir`` (from its ``OUTPUT_MARKER``)."""
    try:
        return list(json.loads((out_dir / OUTPUT_MARKER).read_text())["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def plan_stems(files: Sequence[Path], out_dir: Path, taken: set[str]) -> list[str]:
    """An output stem per input file such that no output name is used twice, none is the path of
    an input, and none is in ``taken``: ``x.png`` and ``x.jpg`` give ``x`` and ``x_1``, an input
    ``x_colored.png`` next to ``x.png`` gets ``x_colored_1`` if ``x``'s colour map took its name."""
    out_r = out_dir.resolve()
    used = set(taken) | {f.name for f in files if f.resolve().parent == out_r}
    stems = []
    for f in files:
        stem, k = f.stem, 1
        while any(name in used for name in output_names(stem)):
            stem, k = f"{f.stem}_{k}", k + 1
        used.update(output_names(stem))
        stems.append(stem)
    return stems


# -- CLI: fiffdepth predict -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    parser.add_argument("--model", default=None,
                        help="FiffDepth model directory (or hub id); default: the embedded model shipped in weights/fiffdepth")
    parser.add_argument("--out", required=True,
                        help="output directory (not an input folder; a subfolder of one is skipped when listing)")
    parser.add_argument("--processing-resolution", type=int, default=None,
                        help="longest side for processing (0 = native; default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per UNet call")
    parser.add_argument("--cmap", default="Spectral", help="matplotlib colormap of the coloured PNG")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--decoder", choices=["full", "tiny"], default="full",
                        help="tiny: the distilled decoder written by `fiffdepth distill-decoder`")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (fast on GPUs; slow on CPUs without bf16 units)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and the VAE")


def run(args: argparse.Namespace) -> int:
    """Exit code 0: every input written; 1: some inputs failed; 2 (``FiffDepthError``, raised to
    ``fiffdepth.cli``): a usage or model problem, before any image is processed."""
    from tqdm.auto import tqdm

    from .atomic import write_json

    out_dir = Path(args.out)
    taken = prepare_out_dir(out_dir, args.images)
    files, problems = find_images(args.images, exclude=[out_dir])
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    if not files:
        print("error: no images to process", file=sys.stderr)
        return 1
    stems = plan_stems(files, out_dir, taken)
    record = read_output_record(out_dir)
    write_json(out_dir / OUTPUT_MARKER, {"outputs": record})  # marks the folder as output at once (listing skips it)
    if args.model is None:
        from .weights import shipped

        try:
            args.model = str(shipped("fiffdepth"))
        except FileNotFoundError as err:
            raise FiffDepthError(str(err)) from None
    pipe = FiffDepthPipeline.from_pretrained(args.model, device=args.device, decoder=args.decoder,
                                             torch_dtype=torch.bfloat16 if args.bf16 else None,
                                             compile=args.compile)
    res = pipe.check_processing_resolution(args.processing_resolution)
    failed = len(problems)
    written = 0
    batch = max(1, args.batch_size)
    pairs = list(zip(files, stems))
    bar = tqdm(total=len(pairs), desc="predict", unit="img")
    for start in range(0, len(pairs), batch):
        loaded = []  # (stem, image) of this chunk's readable images; same-size ones share a UNet call
        for path, stem in pairs[start:start + batch]:
            try:
                image, notes = load_image(path)
            except (BadImageError, OSError) as err:
                tqdm.write(f"error: {err}", file=sys.stderr)
                failed += 1
                bar.update(1)
                continue
            for note in notes:
                tqdm.write(f"note: {path}: {note}", file=sys.stderr)
            loaded.append((stem, image))
        depths = batch_or_one_by_one(
            lambda ims: list(pipe(ims, processing_resolution=res, batch_size=batch).depth), [im for _, im in loaded])
        for (stem, _), depth in zip(loaded, depths):
            bar.update(1)
            try:
                if isinstance(depth, Exception):
                    raise depth
                write_depth_outputs(depth, out_dir, stem, args.cmap)
            except (BadImageError, OSError) as err:
                tqdm.write(f"error: {err}", file=sys.stderr)
                failed += 1
                continue
            record += [n for n in output_names(stem) if n not in record]
            written += 1
    bar.close()
    write_json(out_dir / OUTPUT_MARKER, {"outputs": record})
    print(f"wrote {written} depth map(s) to {out_dir}" + (f"; {failed} input(s) failed" if failed else ""))
    return 0 if failed == 0 else 1
