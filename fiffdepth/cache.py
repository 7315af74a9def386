"""Latent cache: encode images, GT depth and pseudo-labels with the frozen VAE once.

Layout: ``<root>/<key>/shard_00000.safetensors`` … plus ``index.json`` (written last, so a
cache without it is incomplete and rebuilt). The key hashes everything that changes a latent:
the VAE weights and config, the codec settings, the resolution and the source files (paths,
sizes, mtimes). Training reads latents when the key matches and rebuilds when it does not.

Each shard holds ``x0`` (N, C, h, w) image latents, ``d`` (N, C, h, w) depth latents and
``mask`` (N, 1, h, w) latent valid masks (Marigold's whole-patch rule), in float32. A shard
holds one frame shape; a cache may hold several (Virtual KITTI keeps its own, see
``shape_buckets``).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import staged_dir
from .codecs import DepthCodec, ImageCodec, latent_valid_mask, normalize_depth
from .data.io import DataError
from .pool import one_thread_lanes

LOOKAHEAD = 4  # batches of items queued for the encoders beyond the one being read

# version 3: encoded channels-last on CPU (``_thread_independent``); older caches are rebuilt
CODEC_SETTINGS = {"depth_percentiles": [0.02, 0.98], "invalid_fill": 1.0, "posterior": "mean", "version": 3}


def vae_fingerprint(vae) -> str:
    h = hashlib.sha256()
    # diffusers' private config entries (``_use_default_values``, a set-ordered list, and the
    # like) change from process to process; only the public fields describe the model
    public = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h.update(json.dumps(public, sort_keys=True, default=str).encode())
    for name, p in sorted(vae.state_dict().items()):
        h.update(name.encode())
        t = p.detach().float().cpu().contiguous()
        h.update(t.numpy().tobytes()[:: max(1, t.numel() // 4096)])  # a strided sample: fast at SD2 size
        h.update(str(tuple(t.shape)).encode())
        h.update(f"{float(t.double().sum()):.10e}".encode())
    return h.hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{p}:missing".encode())
    return h.hexdigest()


def cache_key(vae, resolution: int, sources: dict) -> str:
    blob = json.dumps({"vae": vae_fingerprint(vae), "resolution": resolution, "codec": CODEC_SETTINGS,
                       "sources": sources}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class LatentCache(torch.utils.data.Dataset):
    """Read-only view of a built cache; ``__getitem__`` gives ``(x0, d, mask)``."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        index_path = self.dir / "index.json"
        try:
            self.index = json.loads(index_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{index_path}: latent cache index unreadable ({err})") from None
        self.shards = [self.dir / s["file"] for s in self.index["shards"]]
        self.counts = [s["count"] for s in self.index["shards"]]
        self.offsets = [0]
        for c in self.counts:
            self.offsets.append(self.offsets[-1] + c)
        self.names = self.index["names"]
        self._open: dict[int, dict] = {}
        self._shapes: list[tuple[int, ...]] | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def _shard(self, k: int) -> dict:
        if k not in self._open:
            if len(self._open) > 4:
                self._open.clear()
            with safe_open(str(self.shards[k]), framework="pt") as f:
                self._open[k] = {name: f.get_tensor(name) for name in f.keys()}
        return self._open[k]

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = next(j for j in range(len(self.counts)) if i < self.offsets[j + 1])
        s = self._shard(k)
        j = i - self.offsets[k]
        return s["x0"][j], s["d"][j], s["mask"][j]

    def shape_buckets(self, indices: Iterable[int]) -> list[list[int]]:
        """``indices`` grouped by latent shape, in order of first appearance (a single group when
        every latent has the same shape); read from the shard headers."""
        if self._shapes is None:
            self._shapes = []
            for shard in self.shards:
                with safe_open(str(shard), framework="pt") as f:
                    self._shapes.append(tuple(f.get_slice("x0").get_shape()[1:]))
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            groups.setdefault(self._shapes[bisect.bisect_right(self.offsets, i) - 1], []).append(i)
        return list(groups.values())

    def valid_pixels(self) -> int:
        """Valid latent pixels over the whole cache (reads only the masks)."""
        total = 0
        for shard in self.shards:
            with safe_open(str(shard), framework="pt") as f:
                total += int(f.get_tensor("mask").sum())
        return total

    def tensors(self, indices: Iterable[int] | None = None):
        """Stacked (x0, d, mask) for the given indices (all by default)."""
        idx = range(len(self)) if indices is None else list(indices)
        items = [self[i] for i in idx]
        return tuple(torch.stack(t) for t in zip(*items))


def build_latent_cache(root: str | Path, key: str, items: Callable[[], Iterable[dict]],
                       n_items: int | Callable[[], int], vae, shard_size: int = 256, batch_size: int = 16, progress: bool = True,
                       description: str = "cache") -> LatentCache:
    """Encode ``items()`` (dicts with image (3,H,W) [0,1], depth (1,H,W), valid_mask (1,H,W)) once;
    a new frame shape starts a new shard.

    Reuses ``root/key`` when complete; otherwise builds it in a temp dir and renames it in place.
    Streams: at most a few batches of items (``LOOKAHEAD``) and one shard of latents are held in memory.
    ``n_items`` (the progress bar's total) may be a function, called only when building.
    On CPU the bytes are the same at any thread count (``_thread_independent``), and batches are
    encoded side by side on one thread each (``pool.one_thread_lanes``).
    """
    root = Path(root)
    target = root / key
    if (target / "index.json").is_file():
        try:
            return LatentCache(target)
        except ValueError as err:
            warnings.warn(f"rebuilding latent cache: {err}")
    total = n_items() if callable(n_items) else n_items
    with _thread_independent(vae):
        return _build(target, key, items, total, vae, shard_size, batch_size, progress, description)


@contextlib.contextmanager
def _thread_independent(vae):
    """On CPU in fp32, while the cache is encoded: the VAE's 1×1 convolutions as ``MatmulConv1x1``
    (as ``FiffDepthPipeline`` does for inference), so the cache's bytes do not depend on the thread
    count, and its weights channels-last (NHWC): oneDNN's fp32 convolutions of the tiny VAE's few
    channels run about 25 % faster so (``benchmarks/cache_lanes.py``). Every CPU batch is encoded on
    one thread (``pool.one_thread_lanes``), where NHWC's bytes do not depend on the thread count
    either. The modules get their own class and layout back afterwards."""
    from .pipeline import MatmulConv1x1, thread_independent_1x1_convs

    if vae.device.type != "cpu" or vae.dtype != torch.float32:
        yield
        return
    plain = [m for m in vae.modules() if type(m) is torch.nn.Conv2d]
    thread_independent_1x1_convs(vae)
    vae.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        vae.to(memory_format=torch.contiguous_format)
        for m in plain:
            if type(m) is MatmulConv1x1:
                m.__class__ = torch.nn.Conv2d


def _build(target: Path, key: str, items, total, vae, shard_size: int, batch_size: int, progress: bool,
           description: str) -> LatentCache:
    from tqdm.auto import tqdm

    images, depths = ImageCodec(vae), DepthCodec(vae)
    dev, dt = vae.device, vae.dtype
    shards, names = [], []
    buf: list = []  # one shard's batches: futures of (x0, d, mask)
    pending: list[dict] = []

    def encode(batch: list[dict]):
        img = torch.stack([p["image"] for p in batch]).to(dev, dt)
        dep = torch.stack([p["depth"] for p in batch]).to(dev)
        val = torch.stack([p["valid_mask"] for p in batch]).to(dev)
        with torch.no_grad():
            x0 = images.encode(img).float().cpu()
            d = depths.encode(normalize_depth(dep, val).to(dt)).float().cpu()
        return x0, d, latent_valid_mask(val, images.scale_factor).cpu()

    def flush_batch():
        if not pending:
            return
        buf.append(pool.submit(encode, list(pending)))
        names.extend(p["name"] for p in pending)
        pending.clear()
        if len(buf) > LOOKAHEAD:  # at most LOOKAHEAD + 1 batches of items waiting or being encoded
            buf[-LOOKAHEAD - 1].result()

    def flush_shard(tmp: Path):
        flush_batch()
        if not buf:
            return
        parts = [f.result() for f in buf]
        tensors = {k: torch.cat([p[i] for p in parts]).contiguous() for i, k in enumerate(("x0", "d", "mask"))}
        fname = f"shard_{len(shards):05d}.safetensors"
        save_file(tensors, str(tmp / fname))
        shards.append({"file": fname, "count": int(tensors["x0"].shape[0])})
        buf.clear()

    with staged_dir(target, prefix=f".{key}.") as tmp, one_thread_lanes(dev) as pool:
        count, shape = 0, None
        for item in tqdm(items(), total=total, desc=f"encode {description}", disable=not progress):
            if shape is not None and item["image"].shape != shape:
                flush_shard(tmp)
            shape = item["image"].shape
            pending.append(item)
            count += 1
            if len(pending) == batch_size:
                flush_batch()
            if count % shard_size == 0:
                flush_shard(tmp)
        flush_shard(tmp)
        if not shards:
            raise DataError(f"{description}: no usable samples to cache")
        (tmp / "index.json").write_text(json.dumps({"key": key, "shards": shards, "names": names,
                                                    "codec": CODEC_SETTINGS}))
    return LatentCache(target)
