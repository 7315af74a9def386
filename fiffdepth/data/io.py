"""Robust reading shared by every dataset: images, depth files, split files, folders and tars.

Policy for bad input (the same in every loader of ``fiffdepth.data``):

- A file that cannot be decoded (missing, corrupt, truncated, wrong bit depth for a depth
  PNG, wrong size for a raw binary) raises :class:`DataError` whose message starts with the
  file's path. ``DataError`` subclasses ``ValueError``.
- Images are read by one function for the whole package (``read_image``: ``open_image`` +
  ``pil_to_array``): EXIF orientation applied, grayscale replicated, alpha dropped, palettes
  expanded, 16-bit kept as ``uint16``, PIL's decompression-bomb guard. Datasets get ``uint8
  (H, W, 3)`` from it (``read_rgb``: 16-bit scaled by 255 / 65535, float must lie in [0, 1]).
- Depth values that are NaN, +-inf, zero or negative are invalid: depth 0 and mask False.
- ``dataset[i]`` is item ``i`` or a ``DataError`` naming its file (also for an item with no
  valid depth); it is never silently replaced by another item.
- Datasets are read through ``data.base.usable_items`` (caches, splits, figures). Training
  datasets (synthetic, Hypersim, Virtual KITTI, real folders/tars) *drop and count* a bad
  item there: ``warnings.warn`` names the file and ``dataset.skipped`` is incremented once, so
  a cache build never stops on one bad file and no sample appears twice. Evaluation datasets
  *raise* instead (``on_bad="raise"``), because silently dropping a test image changes the
  benchmark; pass ``on_bad="skip"`` to override.
- A folder with no matching file raises ``DataError`` naming the folder.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..hub import FiffDepthError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """A data file or folder that cannot be used; the message starts with its path."""


# ----------------------------------------------------------------------------- sources


# what reading a tar archive, or a member of one, can raise (corrupt, truncated or unreadable)
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


class Root:
    """A dataset root that is either a directory or a tar archive (Marigold ships tars).

    ``read(rel)`` returns the bytes of ``rel``; tar members may be stored as ``rel`` or
    ``./rel`` (Marigold's archives use the latter).
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root)
        if not self.path.exists():
            raise DataError(f"{self.path}: dataset root does not exist")
        self.is_tar = self.path.is_file() and tarfile.is_tarfile(self.path)
        if self.path.is_file() and not self.is_tar:
            raise DataError(f"{self.path}: not a directory or a tar archive")
        self._tar = None
        self._members: dict[str, tarfile.TarInfo] | None = None

    def describe(self, rel: str) -> str:
        return f"{self.path}:{rel}" if self.is_tar else str(self.path / rel)

    def _tar_index(self) -> dict[str, tarfile.TarInfo]:
        if self._tar is None:
            try:
                self._tar = tarfile.open(self.path)
                self._members = {m.name.removeprefix("./"): m for m in self._tar.getmembers() if m.isfile()}
            except TAR_ERRORS as err:
                raise DataError(f"{self.path}: cannot read tar archive ({err})") from err
        return self._members

    def exists(self, rel: str) -> bool:
        return rel in self._tar_index() if self.is_tar else (self.path / rel).is_file()

    def read(self, rel: str) -> bytes:
        if not self.is_tar:
            return read_bytes(self.path / rel)
        member = self._tar_index().get(rel.removeprefix("./"))
        if member is None:
            raise DataError(f"{self.describe(rel)}: no such member")
        try:
            return self._tar.extractfile(member).read()
        except TAR_ERRORS as err:
            raise DataError(f"{self.describe(rel)}: cannot read member ({err})") from err

    def __getstate__(self):  # DataLoader workers re-open the tar lazily
        state = self.__dict__.copy()
        state["_tar"], state["_members"] = None, None
        return state


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror or err})") from err


def list_files(directory: str | os.PathLike, extensions=IMAGE_EXTENSIONS, recursive: bool = True) -> list[Path]:
    """Sorted files under ``directory`` whose suffix (lower-case) is in ``extensions``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in directory.glob(pattern) if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataError(f"{directory}: no files with extension {'/'.join(extensions)}")
    return files


def read_split_file(path: str | os.PathLike) -> list[list[str]]:
    """Marigold split file: one sample per line, whitespace-separated relative paths."""
    text = read_bytes(path).decode("utf-8", errors="replace")
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise DataError(f"{path}: split file lists no samples")
    return lines


# ----------------------------------------------------------------------------- images


def open_image(src: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Decode an image file (path or bytes) now, so corruption and truncation raise here.

    PIL's decompression-bomb guard applies (``Image.MAX_IMAGE_PIXELS``: an image of more than
    twice that many pixels is refused). Any failure is a ``DataError`` naming the file.
    """
    name = name or str(src)
    data = src if isinstance(src, (bytes, bytearray)) else read_bytes(src)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now so truncation is caught here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{name}: cannot decode image ({err})") from err
    return img


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def pil_to_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image as the camera meant it -> ``(H, W, 3)`` array; the one conversion of the package.

    - EXIF orientation applied (a phone photo stored sideways comes out upright);
    - 8-bit modes -> ``uint8``: grayscale replicated, palettes expanded, alpha dropped;
    - 16-bit grayscale (``I;16*``) and 32-bit integer (``I``) -> ``uint16`` (``I`` clipped to
      0..65535), replicated: integer data is always scaled by its dtype's range downstream;
    - float (``F``) -> ``float32`` as stored (``to_unit_range`` checks it lies in [0, 1]).
    """
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{name}: unreadable EXIF orientation ({err})") from err
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        arr = np.asarray(img).astype(np.int64).clip(0, 65535).astype(np.uint16)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    else:
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA") else img.convert("RGB")
        arr = np.array(img)  # a writable copy (torch.from_numpy warns on read-only arrays)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: unexpected image shape {arr.shape}")
    return np.ascontiguousarray(arr)


def read_image(src: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Any image file -> ``(H, W, 3)`` ``uint8``, ``uint16`` (16-bit files) or ``float32``
    (``open_image`` + ``pil_to_array``): what ``fiffdepth predict`` reads, at full bit depth."""
    name = name or str(src)
    return pil_to_array(open_image(src, name), name)


def to_uint8(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """``read_image``'s array -> ``uint8``: 16-bit values scaled by 255 / 65535 (rounded), float
    in [0, 1] by 255 (rounded); float outside [0, 1] or not finite is a ``DataError``."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x / 257) = round(x / 65535 * 255)
    x = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(x).all() or (x.size and (x.min() < 0.0 or x.max() > 1.0)):
        raise DataError(f"{name}: float image values must be finite and lie in [0, 1]")
    return (x * 255.0 + 0.5).astype(np.uint8)


def read_rgb(src: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Any image file -> ``uint8 (H, W, 3)`` (``read_image``, then ``to_uint8``): every dataset's reader."""
    name = name or str(src)
    return to_uint8(read_image(src, name), name)


def read_depth_png(src: str | os.PathLike | bytes, name: str | None = None, scale: float = 1.0) -> np.ndarray:
    """A 16-bit single-channel depth PNG -> ``float32 (H, W)`` raw value ``* scale``.

    8-bit or colour PNGs are rejected: depth stored in 8 bits is almost always a
    visualisation saved by mistake.
    """
    name = name or str(src)
    img = open_image(src, name)
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.uint32, np.int16):
        raise DataError(f"{name}: expected a 16-bit single-channel depth PNG, got mode {img.mode} shape {arr.shape}")
    return arr.astype(np.float32) * np.float32(scale)


def read_gray(src: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """A mask/matte image -> ``float32 (H, W)`` in [0, 1] (8- or 16-bit, first channel of colour)."""
    name = name or str(src)
    img = open_image(src, name)
    arr = np.asarray(img)
    if img.mode == "P":
        arr = np.asarray(img.convert("L"))
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        return np.clip(np.nan_to_num(arr, nan=0.0), 0, 1).astype(np.float32)
    peak = 255.0 if arr.dtype == np.uint8 else 65535.0
    return (arr.astype(np.float32) / peak).clip(0, 1)


def read_npy(src: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    name = name or str(src)
    data = src if isinstance(src, (bytes, bytearray)) else read_bytes(src)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{name}: cannot read .npy ({err})") from err


def read_raw_float32(src: str | os.PathLike | bytes, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """Headerless little-endian float32 raster (ETH3D ground truth)."""
    name = name or str(src)
    data = src if isinstance(src, (bytes, bytearray)) else read_bytes(src)
    n = shape[0] * shape[1]
    if len(data) != 4 * n:
        raise DataError(f"{name}: expected {4 * n} bytes for a {shape[0]}x{shape[1]} float32 raster, got {len(data)}")
    return np.frombuffer(data, dtype="<f4").reshape(shape).copy()


# ----------------------------------------------------------------------------- depth


def clean_depth(depth: np.ndarray, min_depth: float = 0.0, max_depth: float = np.inf,
                valid: np.ndarray | None = None, name: str = "depth") -> tuple[np.ndarray, np.ndarray]:
    """Depth -> (depth float32 with 0 where invalid, valid bool).

    Valid means finite and ``min_depth < depth < max_depth`` (strict, as Marigold's
    ``_get_valid_mask``), and ``valid`` where a mask is given. ``min_depth`` is never below 0.
    A mask of another shape is a ``DataError`` naming ``name`` (the depth file).
    """
    depth = np.asarray(depth, dtype=np.float32)
    if valid is not None and np.shape(valid) != depth.shape:
        raise DataError(f"{name}: depth {depth.shape} and mask {np.shape(valid)} differ in shape")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > max(min_depth, 0.0)) & (depth < max_depth)
    if valid is not None:
        ok &= valid.astype(bool)
    return np.where(ok, depth, np.float32(0.0)).astype(np.float32), ok


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` -> ``float32 (3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def depth_item(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, name: str) -> dict:
    """The item dict of every depth dataset (see ``fiffdepth.data``)."""
    if rgb.shape[:2] != depth.shape:
        raise DataError(f"{name}: image {rgb.shape[:2]} and depth {depth.shape} sizes differ")
    return {
        "image": image_tensor(rgb),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
        "valid_mask": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None],
        "name": name,
    }


# ----------------------------------------------------------------------------- image inputs as tensors
# The package's one conversion of user images (files, PIL, arrays, tensors) to (3, H, W) float in
# [0, 1]: the pipeline, the teacher and the evaluation all read pixels through it.

MIN_SIDE = 8


class BadImageError(FiffDepthError, ValueError):
    pass


def image_to_tensor(image) -> torch.Tensor:
    """PIL image, numpy array (H, W[, C]) or tensor ([C,] H, W) -> float32 (3, H, W) in [0, 1].

    Grayscale is replicated to RGB, alpha dropped. Integer data is scaled by its dtype's range
    (uint8 / 255, uint16 / 65535); float data must already lie in [0, 1] (no clamp: a 0–255
    float image would otherwise become all white).
    """
    if isinstance(image, Image.Image):
        try:
            return image_to_tensor(pil_to_array(image))
        except DataError as err:
            raise BadImageError(str(err)) from None
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


def load_image(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """Read an image file with the package's one loader (``fiffdepth.data.io.read_image``: EXIF
    orientation, mode conversion, 16-bit kept, decompression-bomb guard) -> ((3, H, W) float in
    [0, 1], notes on conversions). Raises BadImageError naming the file."""
    path = Path(path)
    notes = []
    try:
        img = open_image(path)
        mode = img.mode
        arr = pil_to_array(img, str(path))
    except DataError as err:
        raise BadImageError(str(err)) from None
    if mode in ("L", "LA", "1", "I;16", "I", "F", "I;16B", "I;16L", "I;16N"):
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
