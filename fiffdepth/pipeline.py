"""FiffDepthPipeline: image(s) in, affine-invariant depth out, one UNet pass per image.

A ``diffusers.DiffusionPipeline`` (issue 16): components ``unet``, ``vae``, ``scheduler``; the
processing resolution and the stored empty-prompt embedding in its config (``model_index.json``);
``save_pretrained`` / ``from_pretrained``, ``.to()``, ``components``, progress bars as diffusers
has them; ``DiffusionPipeline.from_pretrained(dir, trust_remote_code=True)`` returns this class.
``__call__`` takes ``MarigoldDepthPipeline``'s arguments where they apply and returns Marigold's
``prediction`` layout, so code written for Marigold runs on it; resizing, padding and colour maps
are diffusers' ``MarigoldImageProcessor``. It is deterministic: the VAE posterior mean is used
and no noise is drawn anywhere.

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
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.marigold import MarigoldImageProcessor
from diffusers.utils import BaseOutput
from PIL import Image

from .atomic import MANIFEST, atomic_write, replace_dir, staged_dir, write_manifest
from .codecs import DepthCodec, ImageCodec
from .data.io import IMAGE_EXTENSIONS
from .data.io import (  # noqa: F401  (image inputs live in data.io; re-exported here, where users look)
    INTEGER_RANGES, MIN_SIDE, BadImageError, image_to_tensor, load_image, to_unit_range,
)
from .hub import FiffDepthError, UsageError
from .model import EMPTY_EMBEDDING_FILE, INDEX_FILE, PIPELINE_MODULE, FiffDepthModel


# -- the pipeline -------------------------------------------------------------------------------

PIPELINE_SHIM = f'''"""Names FiffDepth's pipeline class for diffusers (issue 16).

``DiffusionPipeline.from_pretrained(this_directory, trust_remote_code=True)`` reads
``model_index.json``'s ``_class_name`` ["{PIPELINE_MODULE}", "FiffDepthPipeline"] and imports this file; the
class itself comes from the installed ``fiffdepth`` package (``pip install fiffdepth``).
"""

from fiffdepth.pipeline import FiffDepthPipeline  # noqa: F401
'''
MODEL_ENTRIES = ("unet", "vae", "scheduler", "depth_decoder", INDEX_FILE, f"{PIPELINE_MODULE}.py", MANIFEST,
                 EMPTY_EMBEDDING_FILE)  # what save_pretrained owns in a folder (depth_decoder: fiffdepth.distill.DECODER_DIR)
RESAMPLE_METHODS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")  # Marigold's


@dataclass
class FiffDepthOutput(BaseOutput):
    """What ``FiffDepthPipeline`` returns; the fields of diffusers' ``MarigoldDepthOutput``.

    prediction: depth in [0, 1] (0 = near, 1 = far, affine-invariant): (N, H, W, 1) float32
        numpy for ``output_type="np"``, (N, 1, H, W) tensor for "pt"; when the inputs differ in
        size, a list with one (H, W, 1) array or (1, H, W) tensor per image.
    uncertainty: always None (one deterministic pass, no ensemble); kept for Marigold's code.
    latent: the d0 latents (N, 4, h, w) when ``output_latent`` (a list of (4, h, w) when sizes differ).
    prediction_extended: the same as ``prediction`` for d₋₁ (Eq. 4) when ``return_extended``.
    """

    prediction: np.ndarray | torch.Tensor | list
    uncertainty: None = None
    latent: torch.Tensor | list | None = None
    prediction_extended: np.ndarray | torch.Tensor | list | None = None

    @property
    def depth(self):
        """Deprecated (before issue 16): ``prediction`` as (N, H, W) numpy (a list of (H, W) when sizes differ)."""
        warnings.warn("FiffDepthOutput.depth is deprecated: use .prediction (Marigold's (N, H, W, 1) layout)",
                      DeprecationWarning, stacklevel=2)
        return depth_maps(self.prediction)

    @property
    def depth_extended(self):
        """Deprecated: ``prediction_extended`` as (N, H, W) numpy."""
        warnings.warn("FiffDepthOutput.depth_extended is deprecated: use .prediction_extended",
                      DeprecationWarning, stacklevel=2)
        return None if self.prediction_extended is None else depth_maps(self.prediction_extended)


def depth_maps(prediction) -> np.ndarray | list:
    """A pipeline's ``prediction`` (ours or Marigold's, "np" or "pt") -> (N, H, W) float32 numpy,
    or a list of (H, W) arrays when it is a list."""
    def one(p):
        p = p.detach().cpu().float().numpy() if torch.is_tensor(p) else np.asarray(p, dtype=np.float32)
        return p.reshape(p.shape[-3:-1] if p.shape[-1] == 1 else p.shape[-2:])

    if isinstance(prediction, (list, tuple)):
        return [one(p) for p in prediction]
    if torch.is_tensor(prediction):  # (N, 1, H, W)
        return prediction.detach().cpu().float().numpy()[:, 0]
    return np.asarray(prediction, dtype=np.float32)[..., 0]  # (N, H, W, 1)


class FiffDepthPipeline(DiffusionPipeline):
    """Feed-forward depth: x0 = E(image), d0 = ε̂θ(x0, 0), depth = D(d0) (Eq. 1), as a diffusers pipeline.

    Components: ``unet`` (ε̂θ), ``vae`` (frozen), ``scheduler`` (the generator's DDPM schedule;
    unused at inference). Config: ``processing_resolution`` (the default longest side) and
    ``empty_text_embedding`` (the stored empty-prompt conditioning, (1, L, D) as nested lists),
    both saved in ``model_index.json``.

    decoder: "full" (the VAE's decoder), "tiny" (the distilled decoder in the model directory's
    ``depth_decoder/``) or an ``AutoencoderTiny``. Device and dtype: ``.to(...)`` as any diffusers
    pipeline (or ``from_pretrained(..., device=, torch_dtype=)``); bf16/fp16 weights run under
    autocast. channels_last: default on for CUDA and for bf16/fp16 (oneDNN's fast
    reduced-precision kernels are NHWC), off for fp32 on CPU. compile: ``torch.compile`` the UNet
    and the VAE encoder and depth decoder (in place).
    ``stage_hook``: a callable ``name -> context manager`` entered around each stage ("encode",
    "unet", "decode"); ``fiffdepth.bench`` times and counts FLOPs with it.
    """

    model_cpu_offload_seq = "vae->unet->vae"

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDPMScheduler,
                 empty_text_embedding: list | torch.Tensor | None = None, processing_resolution: int = 768,
                 decoder="full", compile: bool = False, channels_last: bool | None = None):
        super().__init__()
        if empty_text_embedding is None:
            raise FiffDepthError("FiffDepthPipeline needs the empty-prompt embedding (empty_text_embedding, (1, L, D)); "
                                 "load a model directory with from_pretrained")
        emb = torch.as_tensor(empty_text_embedding, dtype=torch.float32).detach().cpu()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)
        self.register_to_config(processing_resolution=int(processing_resolution), empty_text_embedding=emb.tolist())
        self.model = FiffDepthModel(unet, vae, scheduler, emb, int(processing_resolution)).eval()
        self.image_processor = MarigoldImageProcessor(vae_scale_factor=self.size_multiple, do_normalize=False)
        self.decoder = _resolve_decoder(decoder, self.model)
        self.decoder_name = "full" if self.decoder is None else "tiny"
        self._channels_last_arg = channels_last
        self.channels_last = bool(channels_last)
        self.compiled = bool(compile)
        self._prepared_for = None  # (device, dtype) that ``prepare`` last set the modules up for
        self.stage_hook = None  # callable(name) -> context manager, e.g. a timer (fiffdepth.bench)
        self.set_progress_bar_config(disable=True)  # the CLI and evaluation draw their own bars
        if compile:
            unet.compile()
            vae.encoder.compile()
            (vae.decoder if self.decoder is None else self.decoder.decoder).compile()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: FiffDepthModel, device: str | torch.device | None = None,
                   torch_dtype: torch.dtype | None = None, decoder="full", compile: bool = False,
                   channels_last: bool | None = None, prepare: bool = True) -> "FiffDepthPipeline":
        """A pipeline over ``model``'s components (shared, not copied), on ``device`` in
        ``torch_dtype`` and set up for inference (``prepare``); ``prepare=False`` leaves the
        modules as they are (``FiffDepthModel.save_pretrained``)."""
        pipe = cls(model.unet, model.vae, model.scheduler, model.empty_text_embedding, model.processing_resolution,
                   decoder=decoder, compile=compile, channels_last=channels_last)
        pipe.model = model
        if prepare:  # dtype None: the weights keep theirs (diffusers warns on a cast to the same dtype)
            pipe.to(device=torch.device(device) if device is not None else torch.device("cpu"),
                    dtype=torch_dtype if torch_dtype not in (None, model.unet.dtype) else None)
        return pipe

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, device: str | torch.device | None = None,
                        torch_dtype: torch.dtype | None = None, decoder="full", compile: bool = False,
                        channels_last: bool | None = None) -> "FiffDepthPipeline":
        """Load a FiffDepth directory or hub id (also a Stable Diffusion one: its prior, untrained).

        The components are loaded by diffusers' own ``from_pretrained`` (``FiffDepthModel.from_pretrained``:
        manifest check, one-line errors, older layouts), and no code from the directory runs.
        ``DiffusionPipeline.from_pretrained(dir, trust_remote_code=True)`` gives the same
        pipeline through the directory's ``fiffdepth_pipeline.py``.
        """
        model = FiffDepthModel.from_pretrained(id_or_path, torch_dtype=torch_dtype)
        if isinstance(decoder, str) and decoder == "tiny":
            decoder = _load_tiny_decoder(str(id_or_path), model)
        return cls.from_model(model, device=device, torch_dtype=torch_dtype, decoder=decoder, compile=compile,
                              channels_last=channels_last)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> Path:
        """diffusers' ``save_pretrained`` (``unet/``, ``vae/``, ``scheduler/``, ``model_index.json``)
        plus ``fiffdepth_pipeline.py``, which lets ``DiffusionPipeline.from_pretrained`` find this
        class, and a sha256 ``manifest.json``; with a distilled decoder also ``depth_decoder/``
        (``decoder="tiny"`` loads it). Written to a temporary folder, then moved into place; a
        folder holding other things too (a training run) keeps them."""
        directory = Path(save_directory)
        with staged_dir(directory, commit=_replace_model_entries) as tmp:
            super().save_pretrained(tmp, **kwargs)
            if self.decoder is not None:
                from .distill import DECODER_DIR, save_depth_decoder

                save_depth_decoder(self.decoder, tmp / DECODER_DIR, self.vae)
            write_manifest(tmp)
        return directory

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """diffusers' index, with ``_class_name`` [module, class] and that module beside it (see ``PIPELINE_SHIM``)."""
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
        index_path = Path(save_directory) / INDEX_FILE
        index = json.loads(index_path.read_text())
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (Path(save_directory) / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_SHIM)

    # -- device, dtype and the fast path -------------------------------------------------------
    def to(self, *args, **kwargs) -> "FiffDepthPipeline":
        """diffusers' ``.to`` (device and/or dtype), then the distilled decoder follows and ``prepare`` runs."""
        super().to(*args, **kwargs)
        self.prepare()
        return self

    @property
    def autocast(self) -> bool:
        return self.dtype in (torch.bfloat16, torch.float16)

    def prepare(self) -> None:
        """Set the modules up for inference on their device and dtype: the distilled decoder
        moved along, attention through SDPA, NHWC where it pays, and on CPU in fp32 the 1×1
        convolutions made thread-independent (``MatmulConv1x1``) so outputs are the same bytes
        at any thread count. Runs again after ``.to``; ``__call__`` runs it when it never ran."""
        device, dtype = self.device, self.dtype
        modules = [self.unet, self.vae] + ([self.decoder] if self.decoder is not None else [])
        for m in modules:
            m.eval()
        if self.decoder is not None:  # nn.Module.to: diffusers' own .to warns about an empty fp32-module list
            torch.nn.Module.to(self.decoder, device=device, dtype=dtype)
        use_sdpa(self.unet, self.vae)
        if device.type == "cpu" and not self.autocast:
            thread_independent_1x1_convs(*modules)
        # NHWC: faster convolutions on GPUs, and the only fast bf16 path on CPUs (oneDNN)
        default_cl = device.type == "cuda" or self.autocast
        self.channels_last = default_cl if self._channels_last_arg is None else bool(self._channels_last_arg)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for m in modules:
            m.to(memory_format=memory_format)
        self.image_codec = ImageCodec(self.vae)
        self.depth_codec = DepthCodec(self.vae, decoder=self.decoder)
        self._prepared_for = (device, dtype)

    def _stage(self, name: str):
        """``stage_hook(name)`` around a stage ("encode", "unet", "decode") when a hook is set."""
        return self.stage_hook(name) if self.stage_hook is not None else contextlib.nullcontext()

    @property
    def size_multiple(self) -> int:
        """Input sides are padded to this: one latent pixel per UNet level."""
        return self.model.vae_scale_factor * self.model.unet_downsample

    def check_processing_resolution(self, processing_resolution: int | None) -> int:
        """The longest side to process at: None -> the config's default, 0 -> native (as in
        Marigold), otherwise at least ``size_multiple`` (one latent pixel per UNet level)."""
        res = self.config.processing_resolution if processing_resolution is None else processing_resolution
        if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or (res != 0 and res < self.size_multiple):
            raise UsageError(f"processing_resolution={res!r}: use 0 (native) or an integer ≥ {self.size_multiple} "
                             f"(the model's latent multiple)")
        return int(res)

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, image, processing_resolution: int | None = None, match_input_resolution: bool = True,
                 resample_method_input: str = "bilinear", resample_method_output: str = "bilinear",
                 batch_size: int = 1, output_type: str = "np", output_latent: bool = False,
                 return_dict: bool = True, return_extended: bool = False) -> FiffDepthOutput | tuple:
        """Depth for one image or a batch, with ``MarigoldDepthPipeline.__call__``'s arguments
        where they apply (no noise, steps or ensemble: one deterministic UNet pass per image).

        image: a PIL image, numpy array, (3, H, W)/(B, 3, H, W) tensor, or a list of them, sizes
        may differ (uint8/uint16 scaled by their range, float in [0, 1]; see ``image_to_tensor``).
        processing_resolution: longest side the image is resized to before encoding (0 = native,
        None = the config's). match_input_resolution: resize the prediction back to the input's
        size. resample_method_input/output: ``F.interpolate`` modes of those two resizes.
        batch_size: images per UNet call (same-size images share a call). output_type: "np" or
        "pt" (see ``FiffDepthOutput``). output_latent: also return the d0 latents.
        return_extended: also d₋₁ (Eq. 4). return_dict: False gives the tuple
        ``(prediction, None, latent)``, plus ``prediction_extended`` when asked for.
        """
        res = self.check_processing_resolution(processing_resolution)
        for name, method in (("resample_method_input", resample_method_input),
                             ("resample_method_output", resample_method_output)):
            if method not in RESAMPLE_METHODS:
                raise UsageError(f"{name}={method!r}: use one of {', '.join(RESAMPLE_METHODS)}")
        if output_type not in ("np", "pt"):
            raise UsageError(f"output_type={output_type!r}: use 'np' or 'pt'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise UsageError(f"batch_size={batch_size!r}: use an integer ≥ 1")
        if self._prepared_for != (self.device, self.dtype):
            self.prepare()
        tensors = self._as_tensor_list(image)
        depths, extended, latents = [None] * len(tensors), [None] * len(tensors), [None] * len(tensors)
        for start in self.progress_bar(range(0, len(tensors), batch_size)):
            chunk = range(start, min(len(tensors), start + batch_size))
            groups: dict[tuple, list[int]] = {}
            for i in chunk:
                groups.setdefault(tuple(tensors[i].shape), []).append(i)
            for idx in groups.values():
                d0, d_ext, lat = self._predict_same_size(torch.stack([tensors[i] for i in idx]), res,
                                                         match_input_resolution, return_extended,
                                                         resample_method_input, resample_method_output)
                for j, i in enumerate(idx):
                    depths[i], latents[i] = d0[j:j + 1], lat[j]
                    extended[i] = None if d_ext is None else d_ext[j:j + 1]
        prediction = _finish(depths, output_type)
        prediction_extended = _finish(extended, output_type) if return_extended else None
        latent = (torch.stack(latents) if len({t.shape for t in latents}) == 1 else latents) if output_latent else None
        self.maybe_free_model_hooks()
        if not return_dict:
            return (prediction, None, latent) + ((prediction_extended,) if return_extended else ())
        return FiffDepthOutput(prediction=prediction, uncertainty=None, latent=latent,
                               prediction_extended=prediction_extended)

    def _predict_same_size(self, batch: torch.Tensor, res: int, match_input: bool, extended: bool,
                           resample_in: str, resample_out: str):
        """batch: (B, 3, H, W) in [0, 1] -> depth d0 (B, 1, H', W') in [0, 1], the same for d₋₁ or
        None, and the d0 latents (B, 4, h, w) on the CPU."""
        device, dtype = self._prepared_for  # checked by __call__; the properties cost ms per read (codecs.placement)
        x, padding, size = self.image_processor.preprocess(batch, res if res else None, resample_in,
                                                           device=device, dtype=torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16)):
            with self._stage("encode"):
                x0 = self.image_codec.encode(x.to(dtype))
            with self._stage("unet"):
                d0 = self.model.predict_latent(x0)
                d_ext = self.model.extend(d0) if extended else None
            with self._stage("decode"):
                decoded = [None if lat is None else self.depth_codec.decode(lat) for lat in (d0, d_ext)]
        results = []
        for depth in decoded:
            if depth is not None:
                depth = self.image_processor.unpad_image(depth.float(), padding)
                if match_input and tuple(depth.shape[-2:]) != tuple(size):
                    depth = self.image_processor.resize_antialias(depth, size, resample_out, is_aa=False)
                depth = ((depth + 1.0) / 2.0).clamp(0.0, 1.0).cpu()
            results.append(depth)
        return results[0], results[1], d0.float().cpu()

    @staticmethod
    def _as_tensor_list(images) -> list[torch.Tensor]:
        if torch.is_tensor(images) and images.ndim == 4:
            return [image_to_tensor(t) for t in images]
        if isinstance(images, (list, tuple)):
            if not images:
                raise BadImageError("no images given")
            return [image_to_tensor(im) for im in images]
        return [image_to_tensor(images)]


def _finish(depths: list[torch.Tensor], output_type: str):
    """Per-image (1, 1, H, W) tensors -> Marigold's layout: one (N, ...) batch when the sizes
    agree, else a list of per-image (H, W, 1) arrays / (1, H, W) tensors."""
    if len({tuple(d.shape) for d in depths}) == 1:
        batch = torch.cat(depths)
        return MarigoldImageProcessor.pt_to_numpy(batch) if output_type == "np" else batch
    if output_type == "np":
        return [MarigoldImageProcessor.pt_to_numpy(d)[0] for d in depths]
    return [d[0] for d in depths]


def _replace_model_entries(tmp: Path, directory: Path) -> None:
    """Move ``tmp`` into place. A directory holding other things too (a training run's
    checkpoints and logs) keeps them: only the model's own entries are swapped, each by rename,
    the index last so a reader never sees a new index over old weights (an entry the new model
    lacks, such as an older layout's embedding file, is removed)."""
    if directory.exists() and any(p.name not in MODEL_ENTRIES for p in directory.iterdir()):
        for name in sorted(MODEL_ENTRIES, key=lambda n: n == INDEX_FILE):
            new, cur, old = tmp / name, directory / name, directory / f".{name}.old"
            _remove(old)
            if cur.exists():
                cur.rename(old)
            if new.exists():
                new.rename(cur)
            _remove(old)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    replace_dir(tmp, directory)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


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


# -- outputs ------------------------------------------------------------------------------------

OUTPUT_MARKER = ".fiffdepth-predict.json"  # in every --out folder: what predict wrote there


def output_names(stem: str) -> list[str]:
    """The files ``write_depth_outputs`` writes for ``stem``."""
    return [f"{stem}.png", f"{stem}.npy", f"{stem}_colored.png"]


def write_depth_outputs(depth: np.ndarray, out_dir: Path, stem: str, cmap: str = "Spectral") -> list[Path]:
    """Write ``<stem>.png`` (16-bit, depth × 65535), ``<stem>.npy`` (float32) and ``<stem>_colored.png``
    (diffusers' ``MarigoldImageProcessor.visualize_depth``). depth: (H, W) in [0, 1]."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png16, npy, colored = (out_dir / name for name in output_names(stem))
    d = np.asarray(depth, dtype=np.float32)
    atomic_write(png16, lambda p: Image.fromarray((np.clip(d, 0, 1) * 65535.0 + 0.5).astype(np.uint16)).save(p, format="PNG"))
    atomic_write(npy, lambda p: np.save(p, d))
    # the 16-bit PNG is ours: diffusers' export_depth_to_16bit_png raises on Pillow ≥ 12 (fromarray's mode="I;16")
    atomic_write(colored, lambda p: MarigoldImageProcessor.visualize_depth(d, color_map=cmap)[0].save(p, format="PNG"))
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
            lambda ims: depth_maps(pipe(ims, processing_resolution=res, batch_size=batch).prediction),
            [im for _, im in loaded])
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
