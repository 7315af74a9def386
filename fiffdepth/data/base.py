"""What every depth dataset shares: the skip-or-raise policy and the training augmentation.

A subclass implements ``__len__`` and ``load(i) -> dict`` (an item from ``io.depth_item``
before augmentation) and may raise ``DataError``. ``dataset[i]`` is item ``i`` or that
``DataError``, never another item; ``usable_items`` applies the skip-or-raise policy
documented in ``fiffdepth.data.io``. When ``resolution`` is set, an item is a square random
crop, resize and horizontal flip drawn from ``numpy.random.default_rng([seed, index])``, so
item ``i`` under the same seed is bit-identical across runs and worker counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .io import DataError


# the per-pixel entries of an item (cropped, resized and flipped together)
SPATIAL_KEYS = ("image", "depth", "valid_mask", "mask")


def crop_resize(item: dict, size: tuple[int, int], rng: np.random.Generator, flip: bool = True) -> dict:
    """Random maximal crop of ``size``'s aspect ratio, resize to ``size`` (h, w), random
    horizontal flip.

    The image is resized bilinearly (antialiased when shrunk); depth and mask with nearest, so
    an invalid pixel is never blended into a valid one.
    """
    _, h, w = item["image"].shape
    scale = min(h / size[0], w / size[1])
    ch, cw = min(h, round(size[0] * scale)), min(w, round(size[1] * scale))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    do_flip = flip and bool(rng.random() < 0.5)
    out = dict(item)
    for key in SPATIAL_KEYS:
        if key not in item:
            continue
        x = item[key][:, top:top + ch, left:left + cw]
        if (ch, cw) != tuple(size):
            if key == "image":
                x = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False,
                                  antialias=ch > size[0] or cw > size[1])[0].clamp_(0, 1)
            else:
                x = F.interpolate(x[None].float(), size=tuple(size), mode="nearest-exact")[0].to(x.dtype)
        if do_flip:
            x = x.flip(-1)
        out[key] = x.contiguous()
    return out


def square_crop_resize(item: dict, resolution: int, rng: np.random.Generator, flip: bool = True) -> dict:
    """Random maximal square crop, resize to ``resolution``, random horizontal flip (``crop_resize``)."""
    return crop_resize(item, (resolution, resolution), rng, flip)


def native_frame(item: dict, resolution: int, multiple: int, rng: np.random.Generator) -> dict:
    """The whole frame at its own aspect ratio, never upsampled: shrunk (antialiased) so its short
    side is ``resolution`` when longer, then a random crop of the few rows and columns that make
    both sides multiples of ``multiple`` (the VAE's downsampling factor)."""
    _, h, w = item["image"].shape
    scale = min(1.0, resolution / min(h, w))
    if scale < 1:
        item = crop_resize(item, (max(multiple, round(h * scale)), max(multiple, round(w * scale))), rng, flip=False)
        _, h, w = item["image"].shape
    ch, cw = h // multiple * multiple, w // multiple * multiple
    if not (ch and cw):
        raise DataError(f"{item['name']}: a {h}x{w} frame is smaller than the VAE's factor {multiple}")
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return {k: (v[:, top:top + ch, left:left + cw].contiguous() if k in SPATIAL_KEYS else v) for k, v in item.items()}


class DepthDataset(Dataset):
    """Base of the depth datasets: ``image (3,H,W)``, ``depth (1,H,W)`` m, ``valid_mask``, ``name``."""

    on_bad_default = "skip"

    def __init__(self, resolution: int | None = None, seed: int = 0, on_bad: str | None = None):
        self.resolution = resolution
        self.seed = seed
        self.on_bad = on_bad or self.on_bad_default
        if self.on_bad not in ("skip", "raise"):
            raise ValueError(f"on_bad must be 'skip' or 'raise', got {self.on_bad!r}")
        self.skipped = 0

    def load(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        """Item ``index``; a bad one raises ``DataError`` naming its file (``on_bad`` applies to
        ``usable_items``, which drops or raises)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        item = self.load(index)
        if self.resolution is not None:
            rng = np.random.default_rng([self.seed, index])
            item = square_crop_resize(item, self.resolution, rng)
        if "valid_mask" in item and not bool(item["valid_mask"].any()):
            raise DataError(f"{item['name']}: no valid depth pixel")
        return item


@dataclass(frozen=True)
class BadSample:
    """What a loader worker hands back in place of a bad item: the ``DataError`` message."""

    message: str


class _ItemOrBadSample(Dataset):
    """``dataset[i]``, or a ``BadSample`` in its place, so a bad file never stops a worker."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except DataError as err:
            return BadSample(str(err))


def _as_is(sample):
    return sample


def usable_items(dataset, limit: int | None = None, num_workers: int = 0):
    """Each usable item of ``dataset`` once, in order (the first ``limit`` of them), read by a
    ``torch.utils.data.DataLoader`` with ``num_workers`` worker processes (0: this process);
    the items and their order are the same for any ``num_workers``. A bad one (``DataError``)
    is dropped, counted once in ``dataset.skipped`` and named in a warning; or, under
    ``on_bad="raise"``, raised. This is how a cache, a split or a figure's scenes are read, so
    no sample appears twice and none is silently replaced."""
    if limit is not None and limit <= 0:
        return
    loader = DataLoader(_ItemOrBadSample(dataset), batch_size=None, shuffle=False, num_workers=num_workers,
                        collate_fn=_as_is)
    found = 0
    for item in loader:
        if isinstance(item, BadSample):
            if getattr(dataset, "on_bad", "skip") == "raise":
                raise DataError(item.message)
            dataset.skipped = getattr(dataset, "skipped", 0) + 1
            warnings.warn(f"dropping bad sample ({dataset.skipped} so far): {item.message}", stacklevel=2)
            continue
        yield item
        found += 1
        if found == limit:
            return
