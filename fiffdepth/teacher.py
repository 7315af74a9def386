"""The Depth Anything V2 teacher: pseudo-labels that supervise d_-1 on real images (Sec. 3.3).

At paper scale the teacher is ``depth-anything/Depth-Anything-V2-Large-hf`` (Sec. 4.1), loaded with
transformers' ``DepthAnythingForDepthEstimation.from_pretrained``. The embedded default is a tiny
model of the same class (a small DINOv2 backbone + DPT head, ``tiny_teacher_config``) trained here
on the embedded synthetic scenes with Depth Anything's losses and written with
``save_pretrained`` (``train_tiny_teacher``), so both scales run through the same code.

Pseudo-label representation (what ``fiffdepth pseudolabel`` writes, one pair per image):

- ``OUT/<stem>.disp.npy``: the teacher's raw output, float32 (H, W) at the input resolution.
  Depth Anything predicts *relative inverse depth* (disparity), affine-invariant: the true
  disparity is ``a * disp + b`` with unknown ``a > 0`` and ``b``.
- ``OUT/<stem>.npy``: ``disparity_to_depth(disp, eps=0.02)``, float32 (H, W): a depth-like
  map with max/min ratio <= 1/eps = 50, and 0 (invalid) on background (sky) pixels, whose
  disparity is below eps × its 98th percentile. This is what d_-1 is supervised with: like
  synthetic ground truth, its valid pixels are affine-normalised by the depth codec
  (``fiffdepth.codecs.normalize_depth``) with their 2nd/98th percentiles to [-1, 1] and
  VAE-encoded; the invalid ones are masked out of the d_-1 loss.
- ``OUT/manifest.jsonl``: one JSON line per finished image (image path relative to the image
  folder, output files, shape, teacher, eps, resolution); a restarted job skips images whose
  manifest line and files exist and were made with the same teacher, eps, resolution and
  background convention.

``<stem>`` is the image's path relative to the image folder without its extension, so
``IMAGES/a/b.jpg`` gives ``OUT/a/b.npy`` and ``OUT/a/b.disp.npy``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from .atomic import atomic_write
from .data.io import IMAGE_EXTENSIONS, DataError, image_to_tensor, list_files, read_rgb, to_uint8
from .data.real import pseudo_label_path
from .hub import FiffDepthError, load_or_explain, looks_like_local_path
from .pool import one_thread_lanes
from .schedules import one_cycle

DEFAULT_TEACHER = "depth-anything/Depth-Anything-V2-Large-hf"
PSEUDO_LABEL_EPS = 0.02
MANIFEST = "manifest.jsonl"
# Depth Anything V2's preprocessing (its hub preprocessor_config.json): shorter side to 518
# keeping the aspect ratio, sides multiples of the 14 px patch, bicubic, ImageNet mean/std.
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ============================================================================ representation


def disparity_to_depth(disp: np.ndarray | torch.Tensor, eps: float = PSEUDO_LABEL_EPS, background: float = 0.0):
    """Teacher disparity -> the depth-like map that supervises d_-1; background (sky) -> ``background``.

    ``disp_n = disp / percentile(disp, 98)``; ``depth = 1 / disp_n`` where ``disp_n >= eps``,
    else ``background`` (default 0 = invalid).

    Depth Anything's disparity is affine-invariant: its shift is unknown, so no exact inverse
    exists. We take its own convention of a zero shift (sky and other background at disparity
    ≈ 0; DA-V2 learnt sky = 0 from its synthetic data), which never invents negative or
    infinite depth. Dividing by the 98th percentile fixes the (irrelevant) scale so the nearest
    2 % of pixels map to depth <= 1. Pixels below ``eps`` (farther than 1/eps = 50 × the near
    depth) are background: with the default ``background=0`` they are invalid, so the trainer's
    valid mask drops them and the depth codec's 2nd/98th percentiles are taken over the scene
    alone, exactly as synthetic ground truth is normalised without its sky. (Clipping them to a
    far plane instead lets a sky larger than 2 % of the image set the 98th percentile and squeeze
    the whole scene into the near end of [-1, 1].) ``background=1/eps`` gives that far plane,
    for pictures.

    disp: (H, W) or (..., H, W); the percentile is taken per map over its last two dims.
    Returns the same type, float32. A map with no positive disparity is all background.
    """
    if isinstance(disp, torch.Tensor):
        d = disp.float()
        flat = d.reshape(-1, d.shape[-2] * d.shape[-1]) if d.ndim >= 2 else d.reshape(1, -1)
        p98 = torch.quantile(flat, 0.98, dim=1).reshape(*d.shape[:-2], 1, 1)
        p98 = torch.where(p98 > 0, p98, torch.ones_like(p98))  # all-zero map: every pixel is background
        n = d / p98
        return torch.where(n >= eps, 1.0 / n.clamp_min(eps), torch.full_like(n, background))
    d = np.asarray(disp, dtype=np.float32)
    p98 = np.percentile(d, 98, axis=(-2, -1), keepdims=True).astype(np.float32)
    p98 = np.where(p98 > 0, p98, np.float32(1.0))
    n = d / p98
    return np.where(n >= eps, 1.0 / np.maximum(n, eps), np.float32(background)).astype(np.float32)


# ============================================================================ the teacher


def _to_rgb_uint8(image) -> np.ndarray:
    """PIL image, (H, W[, 1|3|4]) array or (3, H, W) tensor -> uint8 (H, W, 3), through the
    pipeline's input conversion (``fiffdepth.data.io.image_to_tensor``: the package's one image
    reading for PIL images, EXIF orientation included; integers scaled by their dtype's range,
    float in [0, 1]), so the teacher and FiffDepth see the same pixels."""
    return to_uint8(image_to_tensor(image).permute(1, 2, 0).numpy())


def default_processor(size: int = 518, patch_size: int = 14):
    """Depth Anything V2's image processor, for a checkpoint directory that ships none
    (sides kept multiples of the backbone's ``patch_size``)."""
    try:
        import torchvision  # noqa: F401
        from transformers import DPTImageProcessor as Processor
    except ImportError:  # transformers' PIL backend needs no torchvision and gives the same numbers
        from transformers import DPTImageProcessorPil as Processor
    return Processor(size={"height": size, "width": size}, keep_aspect_ratio=True, ensure_multiple_of=patch_size,
                     resample=Image.Resampling.BICUBIC, do_rescale=True, do_normalize=True,
                     image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


class Teacher:
    """A ``DepthAnythingForDepthEstimation`` and its image processor, in eval mode."""

    def __init__(self, model: DepthAnythingForDepthEstimation, processor, name: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.name = name or str(model.config.name_or_path or "depth-anything")

    @classmethod
    def from_pretrained(cls, id_or_dir: str | os.PathLike = DEFAULT_TEACHER, device=None, dtype=None) -> "Teacher":
        """Load a hub id or a local directory in the transformers layout (config.json + weights
        [+ preprocessor_config.json]); an unreachable id raises one line naming it."""
        src = str(id_or_dir)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_or_explain(lambda s: DepthAnythingForDepthEstimation.from_pretrained(s, dtype=dtype),
                                src, "Depth Anything teacher")
        local = looks_like_local_path(src)
        if local and not (Path(src).expanduser() / "preprocessor_config.json").is_file():
            bb = model.config.backbone_config
            patch = int(getattr(bb, "patch_size", 14))
            size = int(round(getattr(bb, "image_size", 518) / patch)) * patch
            warnings.warn(f"{src}: no preprocessor_config.json; using Depth Anything V2's preprocessing at "
                          f"{size} px (the backbone's image_size)", stacklevel=2)
            processor = default_processor(size, patch)
        else:
            processor = load_or_explain(AutoImageProcessor.from_pretrained, src, "Depth Anything image processor")
        return cls(model.to(device), processor, name=src)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict_disparity(self, images, resolution: int | None = None, batch_size: int = 8) -> list[np.ndarray]:
        """Relative inverse depth for each image, float32 (H, W) at the image's own resolution.

        images: a list of PIL images / arrays, or a (B, 3, H, W) tensor in [0, 1].
        resolution: overrides the processor's target size (a multiple of 14 is kept).
        Images are resized by the processor, run in batches of equal processed shape, and the
        prediction is upsampled bicubically to the input size (as transformers'
        ``post_process_depth_estimation``) and clipped at 0, the head's ReLU range.
        """
        if isinstance(images, torch.Tensor):
            images = list(images if images.ndim == 4 else images[None])
        arrays = [_to_rgb_uint8(im) for im in images]
        kw = {"size": {"height": resolution, "width": resolution}} if resolution else {}
        pixels = [self.processor(images=a, return_tensors="pt", input_data_format="channels_last", **kw)["pixel_values"][0]
                  for a in arrays]
        out: list[np.ndarray | None] = [None] * len(arrays)
        by_shape: dict[tuple, list[int]] = {}
        for i, p in enumerate(pixels):
            by_shape.setdefault(tuple(p.shape), []).append(i)
        dtype = next(self.model.parameters()).dtype
        for idx in by_shape.values():
            for k in range(0, len(idx), batch_size):
                chunk = idx[k:k + batch_size]
                x = torch.stack([pixels[i] for i in chunk]).to(self.device, dtype)
                outputs = self.model(pixel_values=x)
                sizes = [arrays[i].shape[:2] for i in chunk]
                post = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes)
                for i, r in zip(chunk, post):
                    out[i] = r["predicted_depth"].float().clamp_min(0).reshape(arrays[i].shape[:2]).cpu().numpy()
        return out

    def pseudo_label(self, images, eps: float = PSEUDO_LABEL_EPS, **kw) -> list[np.ndarray]:
        """``disparity_to_depth(predict_disparity(image))`` for each image: (H, W) float32."""
        return [disparity_to_depth(d, eps) for d in self.predict_disparity(images, **kw)]


# ============================================================================ pseudo-labelling job


def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict]:
    """image relative path -> its latest manifest entry (a torn last line from a kill is ignored)."""
    path = Path(out_dir) / MANIFEST
    entries: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                entries[e["image"]] = e
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


def unlabelled_images(images) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(relative name, reader of its ``uint8 (H, W, 3)`` pixels) for every image under ``images``:
    a folder (recursively: ``a/b.jpg``) or webdataset tar shards (a folder holding ``*.tar``, a
    ``.tar`` path or a glob: member ``k.jpg`` of ``000001.tar`` is ``000001.tar:k.jpg``, the name
    ``TarShards`` gives it and ``data.real.pseudo_label_path`` finds its label by)."""
    from .data.real import TarShards

    p = Path(images)
    if p.is_dir() and not any(p.glob("*.tar")):
        files = list_files(p, IMAGE_EXTENSIONS, recursive=True)
        return [(f.relative_to(p).as_posix(), functools.partial(read_rgb, f)) for f in files]
    shards = TarShards(images)
    return [(shards.name(i), functools.partial(_tar_pixels, shards, i))
            for i in range(len(shards))]


def _tar_pixels(shards, i: int) -> np.ndarray:
    return shards.read(i)[0]


def pseudolabel_folder(teacher: Teacher, images_dir, out_dir, batch_size: int = 8, resolution: int | None = None,
                       progress: bool = True, eps: float = PSEUDO_LABEL_EPS) -> dict:
    """Pseudo-label every image under ``images_dir`` (a folder, recursively, or webdataset tar
    shards: ``unlabelled_images``) into ``out_dir``.

    Resumable: an image is skipped when the manifest has an entry for it made with the same
    teacher, eps and resolution and its files exist. Each ``.npy`` is written to a temporary
    file and renamed, and the manifest line is appended after both files, so a killed job
    leaves no half-written label. Unreadable images are reported by name and skipped.
    Returns ``{"written": int, "skipped": int, "failed": [(relative path, message), ...]}``.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    sources = unlabelled_images(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = read_manifest(out_dir)
    # "background": labels written before background became invalid (issue 15) are redone
    setting = {"teacher": teacher.name, "eps": eps, "resolution": resolution, "background": "invalid"}
    failed: list[tuple[str, str]] = []
    todo: list[tuple[Path, str, str]] = []
    stems: dict[str, str] = {}
    skipped = 0
    for rel, read in sources:
        try:  # the one place labels live: where training looks them up
            stem = pseudo_label_path(out_dir, rel).relative_to(out_dir).with_suffix("").as_posix()
        except DataError as err:
            failed.append((rel, str(err)))
            continue
        if stem in stems:
            failed.append((rel, f"{rel}: same output name as {stems[stem]} ({stem}.npy); rename one of them"))
            continue
        stems[stem] = rel
        e = done.get(rel)
        if e and all(e.get(k) == v for k, v in setting.items()) and all((out_dir / o).is_file() for o in e["outputs"]):
            skipped += 1
        else:
            todo.append((read, rel, stem))
    written = 0
    bar = tqdm(total=len(todo), desc="pseudolabel", unit="img", disable=not progress)
    queued: list = []  # (batch, future of its disparities), in order

    def write_oldest():
        nonlocal written
        batch, future = queued.pop(0)
        for (rel, stem), disp in zip(batch, future.result()):
            outputs = [f"{stem}.npy", f"{stem}.disp.npy"]
            (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out_dir / outputs[0], lambda p: np.save(p, disparity_to_depth(disp, eps)))
            atomic_write(out_dir / outputs[1], lambda p: np.save(p, disp.astype(np.float32)))
            manifest.write(json.dumps({"image": rel, "outputs": outputs, "shape": list(disp.shape), **setting}) + "\n")
            manifest.flush()
            written += 1
            bar.update(1)

    # batches are predicted side by side on one thread each and written in order: the labels are
    # the one-thread labels whatever the core count (on two threads, make reproduce's last batch,
    # of 8 images, came out different in the last bits)
    with open(out_dir / MANIFEST, "a") as manifest, one_thread_lanes(teacher.device) as lanes:
        for k in range(0, len(todo), batch_size):
            batch, arrays = [], []
            for read, rel, stem in todo[k:k + batch_size]:
                try:
                    arrays.append(read())
                    batch.append((rel, stem))
                except DataError as err:
                    failed.append((rel, str(err)))
                    tqdm.write(f"error: {err}", file=sys.stderr)
                    bar.update(1)
            if not batch:
                continue
            queued.append((batch, lanes.submit(teacher.predict_disparity, arrays, resolution, batch_size)))
            if len(queued) > 2:
                write_oldest()
        while queued:
            write_oldest()
    bar.close()
    return {"written": written, "skipped": skipped, "failed": failed}


# ============================================================================ figure


def plot_pseudo_labels(teacher: Teacher, images, out_path, resolution: int | None = None, pairs_per_row: int = 3,
                       eps: float = PSEUDO_LABEL_EPS):
    """Figure: image | pseudo-label (``disparity_to_depth``, near red / far blue, background as invalid) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.synthetic import colorize_depth

    arrays = [_to_rgb_uint8(im) for im in images]
    labels = teacher.pseudo_label(arrays, eps=eps, resolution=resolution)
    rows = math.ceil(len(arrays) / pairs_per_row)
    fig, axes = plt.subplots(rows, 2 * pairs_per_row, figsize=(2 * pairs_per_row * 2.0, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (a, d) in enumerate(zip(arrays, labels)):
        r, c = divmod(i, pairs_per_row)
        axes[r, 2 * c].imshow(a)
        valid = d > 0  # background (sky) is invalid in a pseudo-label
        axes[r, 2 * c + 1].imshow(colorize_depth(d, valid))
        ratio = d[valid].max() / d[valid].min() if valid.any() else float("nan")
        axes[r, 2 * c + 1].set_title(f"depth ratio {ratio:.0f}", fontsize=7)
    fig.suptitle(f"pseudo-labels from {Path(teacher.name).name}", fontsize=9)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return fig


# ============================================================================ tiny teacher


def tiny_teacher_config(image_size: int = 98, hidden_size: int = 64, num_layers: int = 4, num_heads: int = 4,
                        fusion_hidden_size: int = 32, patch_size: int = 14) -> DepthAnythingConfig:
    """Depth Anything's architecture at toy size: a small DINOv2 + DPT head, relative depth.

    DA-V2 uses 14 px patches at 518 px (37×37 tokens); the embedded teacher
    (``EMBEDDED_TEACHER``) uses 8 px patches at 128 px (16×16 tokens), so it sees the scene
    layout and the larger objects but is coarser than the ground truth, like its big brother.
    """
    backbone = Dinov2Config(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=num_heads, mlp_ratio=2, out_indices=list(range(1, num_layers + 1))[-4:],
                            reshape_hidden_states=False)
    step = hidden_size // 4
    return DepthAnythingConfig(backbone_config=backbone, patch_size=patch_size, reassemble_hidden_size=hidden_size,
                               reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[step, 2 * step, 3 * step, 4 * step],
                               fusion_hidden_size=fusion_hidden_size, head_hidden_size=16,
                               depth_estimation_type="relative")


# The shipped embedded teacher (weights/teacher): 16×16 tokens at 128 px.
EMBEDDED_TEACHER = dict(image_size=128, patch_size=8, hidden_size=96, num_layers=4, num_heads=4, fusion_hidden_size=48)


def normalise_affine(disp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Depth Anything's (and MiDaS's) per-image affine normalisation over valid pixels:
    (d - t) / s with t = median(d), s = mean |d - t|. disp, mask: (B, H, W); invalid -> 0.

    Unlike a least-squares fit onto the target, s > 0 keeps the sign: the model must output
    disparity (near = large), not depth, which is what consumers of its output assume.
    """
    out = torch.zeros_like(disp)
    for i in range(disp.shape[0]):
        v = disp[i][mask[i]]
        if v.numel() < 2:
            continue
        t = v.median()
        s = (v - t).abs().mean().clamp_min(1e-6)
        out[i] = torch.where(mask[i], (disp[i] - t) / s, out[i])
    return out


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant loss (MiDaS L_ssi, Depth Anything V1 Eq. 1): mean |pred - target|
    over the batch's valid pixels, both already affine-normalised (``normalise_affine``)."""
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1)


def gradient_matching_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """MiDaS's multi-scale gradient matching L_gm: sum over scales k of
    sum (|grad_x R| + |grad_y R|) / M_k with R = pred - target, on every 2^k-th pixel."""
    total = pred.new_zeros(())
    for k in range(scales):
        step = 2**k
        r, m = (pred - target)[:, ::step, ::step], mask[:, ::step, ::step].float()
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (r[:, 1:] - r[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
        total = total + (gx.sum() + gy.sum()) / m.sum().clamp_min(1)
    return total


def teacher_loss(pred_disp: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor, gm_weight: float = 2.0):
    """Depth Anything's loss on labelled (synthetic) images: L_ssi + gm_weight * L_gm on disparity.

    pred_disp: (B, H, W) raw head output; gt_depth: (B, H, W) metres; mask: (B, H, W) bool.
    GT disparity is 1 / depth on valid pixels; prediction and GT are each affine-normalised
    (``normalise_affine``). gm_weight = 2 follows Depth Anything V2's 1:2 weighting of L_ssi
    and L_gm (MiDaS used 0.5). Returns (total, ssi, gm).
    """
    mask = mask & (gt_depth > 0)
    gt_disp = torch.where(mask, 1.0 / gt_depth.clamp_min(1e-6), torch.zeros_like(gt_depth))
    pred, target = normalise_affine(pred_disp, mask), normalise_affine(gt_disp, mask)
    ssi, gm = ssi_loss(pred, target, mask), gradient_matching_loss(pred, target, mask)
    return ssi + gm_weight * gm, ssi, gm


def _init_for_training(model: DepthAnythingForDepthEstimation) -> DepthAnythingForDepthEstimation:
    """Re-initialise the DPT neck and head convolutions with PyTorch's defaults and start the
    final ReLU at 1. transformers' N(0, 0.02) init makes the untrained output ~1e-6, so its
    affine normalisation divides by ~0 and the first steps push the ReLU head dead for good.
    (DA's pretrained checkpoints never see this: they start from DINOv2 + a trained head.)"""
    for mod in list(model.neck.modules()) + list(model.head.modules()):
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            mod.reset_parameters()
    torch.nn.init.constant_(model.head.conv3.bias, 1.0)
    return model


def train_tiny_teacher(data_dir, out_dir, steps: int = 1500, resolution: int = 98, batch_size: int = 8, seed: int = 0,
                       lr: float = 1e-3, gm_weight: float = 2.0, config: DepthAnythingConfig | None = None,
                       progress: bool = True) -> Path:
    """Train the embedded teacher on the scenes in ``data_dir`` (one embedded-layout folder
    ``DIR/{rgb,depth,mask}`` or a list of them: the embedded default passes the synthetic and
    the real-styled scenes, as DA-V2 learnt from real images) and write it with
    ``save_pretrained`` (+ its image processor) to ``out_dir``.

    Depth Anything's recipe at toy scale: random init (no DINOv2 weights offline), AdamW with
    one-cycle LR, random horizontal flips, ``teacher_loss`` (SSI + gradient matching on
    disparity). Writes ``train_log.json`` (losses, seconds, steps/s) next to the weights.
    Trains on accelerate's device (fp32 unless ``accelerate launch`` sets a precision); batches
    are drawn on the CPU, the same on every device.
    """
    from tqdm.auto import tqdm

    from .train import one_process_accelerator

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    from .data.synthetic import load_scene_tensors

    images, depths, masks = load_scene_tensors(data_dir, resolution)
    depths, masks = depths[:, 0], masks[:, 0]
    config = config or tiny_teacher_config(image_size=resolution)
    model = _init_for_training(DepthAnythingForDepthEstimation(config)).train()
    processor = default_processor(resolution, config.backbone_config.patch_size)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = one_cycle(opt, lr, steps)
    accelerator = one_process_accelerator("teacher pretraining")
    model, opt = accelerator.prepare(model, opt)
    dev = accelerator.device
    mean, std = mean.to(dev), std.to(dev)
    log = {"loss": [], "ssi": [], "gm": []}
    t0 = time.time()
    bar = tqdm(range(steps), desc="pretrain teacher", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        x, d, m = images[idx], depths[idx], masks[idx]
        flip = torch.rand(batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        d, m = torch.where(flip[:, None, None], d.flip(-1), d), torch.where(flip[:, None, None], m.flip(-1), m)
        x, d, m = x.to(dev), d.to(dev), m.to(dev)
        with accelerator.autocast():
            pred = model(pixel_values=(x - mean) / std).predicted_depth
        loss, ssi, gm = teacher_loss(pred.float(), d, m, gm_weight)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for k, v in (("loss", loss), ("ssi", ssi), ("gm", gm)):
            log[k].append(round(v.item(), 5))
        bar.set_postfix(loss=f"{log['loss'][-1]:.3f}")
    seconds = time.time() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False).to("cpu")
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    log.update(steps=steps, batch_size=batch_size, resolution=resolution, seconds=round(seconds, 1),
               steps_per_s=round(steps / max(seconds, 1e-9), 3), n_scenes=len(images), gm_weight=gm_weight,
               threads=torch.get_num_threads())
    (out / "train_log.json").write_text(json.dumps(log))
    return out


def evaluate_teacher(teacher: Teacher, data_dir, resolution: int | None = None, min_depth: float = 0.05,
                     max_depth: float = 150.0) -> dict[str, float]:
    """AbsRel and δ1 of the teacher on embedded-layout scenes at their own resolution, with
    Marigold's protocol for disparity models (least-squares fit in disparity, clip, metrics)."""
    from .data.base import usable_items
    from .data.synthetic import SyntheticDepthDataset
    from .metrics import aggregate, compute_depth_metrics

    ds = SyntheticDepthDataset(data_dir)
    per_image = []
    for it in usable_items(ds):
        disp = teacher.predict_disparity(it["image"][None], resolution)[0]
        gt, mask = it["depth"][0].numpy(), it["valid_mask"][0].numpy()
        per_image.append(compute_depth_metrics(disp, gt, mask, min_depth, max_depth, alignment="disparity"))
    return aggregate(per_image)


# ============================================================================ CLI: fiffdepth pseudolabel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default=DEFAULT_TEACHER,
                        help=f"hub id or local directory of a DepthAnythingForDepthEstimation (default {DEFAULT_TEACHER})")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder: <stem>.npy, <stem>.disp.npy, manifest.jsonl")
    parser.add_argument("--batch-size", type=int, default=8, help="images per teacher call")
    parser.add_argument("--resolution", type=int, default=None, help="processing size (default: the processor's)")
    parser.add_argument("--eps", type=float, default=PSEUDO_LABEL_EPS, help="disparity clip in disparity_to_depth")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        teacher = Teacher.from_pretrained(args.teacher, device=args.device)
        result = pseudolabel_folder(teacher, args.images, args.out, args.batch_size, args.resolution,
                                    progress=not args.no_progress, eps=args.eps)
    except (FiffDepthError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for _, msg in result["failed"]:
        print(f"error: {msg}", file=sys.stderr)
    print(f"pseudolabel: {result['written']} written, {result['skipped']} already done, "
          f"{len(result['failed'])} failed -> {args.out}")
    return 1 if result["failed"] else 0
