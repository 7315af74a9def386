"""Unlabeled real images: the embedded scikit-image photos, a folder tree, webdataset tar shards.

These feed the real-image branch of training (the paper's t = -1 step on LAION-Art, supervised
by the teacher) and the qualitative figures. Items are ``{"image": (3,H,W) float32 in [0,1],
"name": str}``. ``dataset[i]`` of an unreadable file raises ``DataError`` naming it;
``data.base.usable_items`` skips it with a warning and counts it in ``dataset.skipped`` (see
``fiffdepth.data.io``).

Webdataset shards are plain tar files whose members share a key (the path up to the first dot
of the basename): ``000123.jpg``, ``000123.txt``, ``000123.json``. Only the image member is
read here; no ``webdataset`` dependency.
"""

from __future__ import annotations

import bisect
import functools
import glob
import os
import tarfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .io import IMAGE_EXTENSIONS, TAR_ERRORS, DataError, image_tensor, list_files, read_rgb

# Natural photos that ship inside the scikit-image wheel (no pooch download needed).
# camera, coins and moon are grayscale and get replicated to RGB by ``read_rgb``.
SKIMAGE_PHOTOS = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "rocket.jpg",
    "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg", "moon.png",
    "retina.jpg", "ihc.png",
)
# Texture-like images, also shipped: used by the synthetic generator as surface textures.
SKIMAGE_TEXTURES = ("brick.png", "grass.png", "gravel.png")


def _skimage_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


@functools.lru_cache(maxsize=4)
def skimage_images(names: tuple[str, ...] = SKIMAGE_PHOTOS) -> tuple[np.ndarray, ...]:
    """The named scikit-image files that exist locally, as ``uint8 (H, W, 3)``."""
    root = _skimage_dir()
    images = []
    for name in names:
        if (root / name).is_file():
            try:
                images.append(read_rgb(root / name))
            except DataError as err:
                warnings.warn(f"skipping embedded photo: {err}")
    if not images:
        raise DataError(f"{root}: none of the embedded scikit-image photos is present")
    return tuple(images)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = image.shape
    if (h, w) == (size, size):
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=min(h, w) > size)[0].clamp_(0, 1)


def augment_photo(rgb: np.ndarray, rng: np.random.Generator, size: int | None, plain: bool = False) -> torch.Tensor:
    """Random crop (30-100 % of the short side, square if ``size``), flip, resize -> (3,H,W)."""
    image = image_tensor(rgb)
    _, h, w = image.shape
    if plain:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        ch, cw = (side, side) if size else (h, w)
        if not size:
            top = left = 0
    else:
        side = int(round(min(h, w) * rng.uniform(0.3, 1.0)))
        ch, cw = (side, side) if size else (side, int(min(w, round(side * rng.uniform(0.75, 1.33)))))
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
    image = image[:, top:top + ch, left:left + cw]
    if not plain and rng.random() < 0.5:
        image = image.flip(-1)
    return _resize(image, size) if size else image.contiguous()


class EmbeddedRealImages(Dataset):
    """Augmented scikit-image photos: item i < #photos is photo i (centre square), later items
    are random crops/flips drawn from ``default_rng([seed, i])``."""

    def __init__(self, n: int | None = None, size: int | None = None, seed: int = 0):
        self.photos = skimage_images()
        self.n = 8 * len(self.photos) if n is None else n
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        k = index % len(self.photos)
        rng = np.random.default_rng([self.seed, index])
        image = augment_photo(self.photos[k], rng, self.size, plain=index < len(self.photos))
        return {"image": image, "name": f"skimage_{SKIMAGE_PHOTOS[k].split('.')[0]}_{index:05d}"}


def embedded_real_images(n: int | None = None, size: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """The embedded real set as ``uint8 (H, W, 3)`` arrays (see ``EmbeddedRealImages``)."""
    ds = EmbeddedRealImages(n, size, seed)
    return [(ds[i]["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for i in range(len(ds))]


class _RealBase(Dataset):
    """Optional ``resolution`` crop for unlabeled images; ``skipped`` counts the bad ones
    ``usable_items`` dropped (and unreadable tar shards)."""

    on_bad = "skip"

    def __init__(self, resolution: int | None, seed: int):
        self.resolution, self.seed, self.skipped = resolution, seed, 0

    def read(self, index: int) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        """Item ``index``, or ``DataError`` naming the file (``data.base.usable_items`` drops those)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        rgb, name = self.read(index)
        if self.resolution is None:
            return {"image": image_tensor(rgb), "name": name}
        rng = np.random.default_rng([self.seed, index])
        image = image_tensor(rgb)
        _, h, w = image.shape
        side = min(h, w)
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        image = image[:, top:top + side, left:left + side]
        if rng.random() < 0.5:
            image = image.flip(-1)
        return {"image": _resize(image, self.resolution).contiguous(), "name": name}


class ImageFolder(_RealBase):
    """Every image under ``root`` (recursively), sorted by path."""

    def __init__(self, root: str | os.PathLike, resolution: int | None = None, seed: int = 0):
        super().__init__(resolution, seed)
        self.root = Path(root)
        self.files = list_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[np.ndarray, str]:
        path = self.files[index]
        return read_rgb(path), str(path.relative_to(self.root))


class TarShards(_RealBase):
    """Images inside webdataset-style tar shards (LAION-Art style); ``shards`` is a glob,
    a directory, or a list of paths. Items in shard order (sorted), then member order.

    Streamed: the constructor opens no shard; ``len`` reads the headers once and keeps one
    count per shard; item ``i`` opens only its own shard and keeps that one shard's member
    index, so memory does not grow with the number of images. A shard that cannot be read
    when counting is skipped with a warning and counted in ``skipped``."""

    def __init__(self, shards, resolution: int | None = None, seed: int = 0):
        super().__init__(resolution, seed)
        if isinstance(shards, (str, os.PathLike)):
            p = Path(shards)
            paths = sorted(p.glob("*.tar")) if p.is_dir() else sorted(Path(s) for s in glob.glob(str(shards)))
        else:
            paths = [Path(s) for s in shards]
        if not paths:
            raise DataError(f"{shards}: no tar shards found")
        self.source, self.paths = shards, paths
        self._starts: list[int] | None = None  # first item of each shard, then the total
        self._open: tuple[int, list[tuple[str, int, int]]] | None = None  # (shard, its image members)

    @staticmethod
    def _members(path: Path) -> list[tuple[str, int, int]]:
        """(name, data offset, size) of each image member of one shard, in tar order."""
        with tarfile.open(path) as tar:
            return [(m.name, m.offset_data, m.size) for m in tar
                    if m.isfile() and os.path.splitext(m.name)[1].lower() in IMAGE_EXTENSIONS]

    def _shard_starts(self) -> list[int]:
        if self._starts is None:
            starts = [0]
            for path in self.paths:
                try:
                    n = len(self._members(path))
                except TAR_ERRORS as err:
                    self.skipped += 1
                    warnings.warn(f"skipping unreadable shard {path}: {err}")
                    n = 0
                starts.append(starts[-1] + n)
            if starts[-1] == 0:
                raise DataError(f"{self.source}: the tar shards hold no image")
            self._starts = starts
        return self._starts

    def __len__(self) -> int:
        return self._shard_starts()[-1]

    def _member(self, index: int) -> tuple[Path, str, int, int]:
        """(shard, member name, data offset, size) of item ``index``; indexes only its shard."""
        starts = self._shard_starts()
        if not 0 <= index < starts[-1]:
            raise IndexError(index)
        k = bisect.bisect_right(starts, index) - 1
        path = self.paths[k]
        if self._open is None or self._open[0] != k:
            try:
                members = self._members(path)
            except TAR_ERRORS as err:
                raise DataError(f"{path}: cannot read tar shard ({err})") from err
            if len(members) != starts[k + 1] - starts[k]:
                raise DataError(f"{path}: tar shard changed since it was listed "
                                f"({len(members)} images, {starts[k + 1] - starts[k]} before)")
            self._open = (k, members)
        return (path, *self._open[1][index - starts[k]])

    def name(self, index: int) -> str:
        """The member's name, relative like ImageFolder's: ``<shard file>:<member>`` (its
        pseudo-label is ``pseudo_label_path(pseudo_dir, name)``)."""
        path, member = self._member(index)[:2]
        return f"{path.name}:{member}"

    def read(self, index: int) -> tuple[np.ndarray, str]:
        path, member, offset, size = self._member(index)
        where = f"{path}:{member}"
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as err:
            raise DataError(f"{where}: cannot read ({err})") from err
        if len(data) != size:
            raise DataError(f"{where}: truncated member ({len(data)} of {size} bytes)")
        return read_rgb(data, where), self.name(index)


def pseudo_label_path(pseudo_dir, name: str) -> Path:
    """Where the pseudo-label of the real image called ``name`` lives, for both the writer
    (``fiffdepth pseudolabel``) and the reader (training): ``<relative path>.npy`` for a folder
    image, ``<shard stem>/<member path>.npy`` for a tar-shard member (name ``shard.tar:member``,
    as ``TarShards`` gives it). A name that would leave ``pseudo_dir`` is a ``DataError``."""
    shard, sep, member = name.rpartition(".tar:")
    rel = PurePosixPath(PurePosixPath(shard).name, member) if sep else PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or (sep and not member) or not rel.parts:
        raise DataError(f"{name}: its pseudo-label path would leave {pseudo_dir}")
    return Path(pseudo_dir) / Path(rel.with_suffix(".npy"))
