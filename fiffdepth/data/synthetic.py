"""The embedded synthetic RGB-D world: procedural indoor and outdoor scenes with exact z-depth.

A scene is a list of analytic primitives (a room's interior box, a ground plane, oriented
boxes, vertical cylinders, spheres) ray-cast per pixel with numpy. The camera is a pinhole
with random pose and focal length; each ray direction is ``R @ (u, v, 1)`` so the ray
parameter of a hit *is* its z-depth. Shading is Lambertian with a sun/key light, shadows
from a shadow map (an orthographic ray-cast from the light), screen-space ambient occlusion,
and aerial-perspective fog outdoors. Surfaces are textured with procedural patterns and with
crops of the photos that ship with scikit-image. Sky and anything beyond ``FAR`` is invalid
(depth 0, mask False). Thin structures (chair/table legs, lamp poles, street poles, railings,
fence posts, shelf boards) come out 1-3 px wide at typical distances; ``thin_structure_mask``
measures them from the depth map alone.

On disk (``fiffdepth data synth``): ``DIR/rgb/<id>.png``, ``DIR/depth/<id>.npy`` (float32
metres, 0 invalid), ``DIR/mask/<id>.png`` (0/255), ``DIR/meta.jsonl``; ids ``000000``...
Scene ``i`` is rendered from ``scene_seed(seed, i)``, so output does not depend on workers.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

from .base import DepthDataset, usable_items
from .io import DataError, clean_depth, depth_item, list_files, read_npy, read_gray, read_rgb

NEAR = 0.05  # m; hits closer than this are ignored
FAR = 150.0  # m; hits beyond this count as sky (invalid)
TEX = 128  # texture side in texels
THIN_MIN_PX = 24  # a scene "has thin structures" when at least this many pixels are thin


def scene_seed(seed: int, index: int) -> int:
    """Per-scene seed, a function of (dataset seed, scene index) only."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ============================================================================ primitives


def _safe(q):
    return np.where(np.abs(q) < 1e-9, np.float32(1e-9), q)


class Prim:
    """A shape with three material slots: facing up, sideways, down (by normal y)."""

    cast_shadow = True

    def __init__(self, mat, thin: bool = False):
        self.mats = mat if isinstance(mat, tuple) else (mat, mat, mat)
        self.thin = thin

    def corners(self):  # (8, 3) world bounding-box corners, or None when unbounded
        return None


class Room(Prim):
    """Interior of an axis-aligned box: floor, walls and ceiling seen from inside."""

    cast_shadow = False

    def __init__(self, lo, hi, mat):
        super().__init__(mat)
        self.lo, self.hi = [float(v) for v in lo], [float(v) for v in hi]

    def intersect(self, o, d):
        best = None
        for a in range(3):
            q = _safe(d[a])
            t = np.where(q > 0, (self.hi[a] - o[a]) / q, (self.lo[a] - o[a]) / q)
            if best is None:
                best, axis = t, np.zeros(t.shape, np.int8)
            else:
                axis = np.where(t < best, np.int8(a), axis)
                best = np.minimum(best, t)
        n = [np.where(axis == a, -np.sign(d[a]), 0).astype(np.float32) for a in range(3)]
        return np.where(best > NEAR, best, np.inf), n


class Ground(Prim):
    """The plane y = 0 seen from above."""

    cast_shadow = False

    def intersect(self, o, d):
        dy = d[1]
        t = np.where(dy < -1e-6, -o[1] / _safe(dy), np.inf)
        t = np.where((t > NEAR) & (t < FAR), t, np.inf)
        return t, (0.0, 1.0, 0.0)


class Box(Prim):
    """Box with centre ``c``, half sizes ``h``, rotated by ``yaw`` about the vertical."""

    def __init__(self, c, h, yaw, mat, thin=False):
        super().__init__(mat, thin)
        self.c, self.h = [float(v) for v in c], [float(v) for v in h]
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)

    def corners(self):
        s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float32) * self.h
        x = self.cos * s[:, 0] + self.sin * s[:, 2]
        z = -self.sin * s[:, 0] + self.cos * s[:, 2]
        return np.stack([x, s[:, 1], z], 1) + self.c

    def intersect(self, o, d):
        c, s = self.cos, self.sin
        px, py, pz = o[0] - self.c[0], o[1] - self.c[1], o[2] - self.c[2]
        lp = (c * px - s * pz, py, s * px + c * pz)
        ld = (c * d[0] - s * d[2], d[1], s * d[0] + c * d[2])
        lo_ = []
        tfar = None
        for a in range(3):
            inv = 1.0 / _safe(ld[a])
            t1, t2 = (-self.h[a] - lp[a]) * inv, (self.h[a] - lp[a]) * inv
            lo_.append(np.minimum(t1, t2))
            hi = np.maximum(t1, t2)
            tfar = hi if tfar is None else np.minimum(tfar, hi)
        tnear = np.maximum(np.maximum(lo_[0], lo_[1]), lo_[2])
        t = np.where((tfar >= tnear) & (tnear > NEAR), tnear, np.inf)
        ax = np.where((lo_[0] >= lo_[1]) & (lo_[0] >= lo_[2]), 0, np.where(lo_[1] >= lo_[2], 1, 2))
        nl = [np.where(ax == a, -np.sign(ld[a]), 0).astype(np.float32) for a in range(3)]
        return t, (c * nl[0] + s * nl[2], nl[1], -s * nl[0] + c * nl[2])


class Cylinder(Prim):
    """Vertical cylinder (axis along y) with caps."""

    def __init__(self, x, z, y0, y1, r, mat, thin=False):
        super().__init__(mat, thin)
        self.x, self.z, self.y0, self.y1, self.r = float(x), float(z), float(y0), float(y1), float(r)

    def corners(self):
        return Box([self.x, (self.y0 + self.y1) / 2, self.z], [self.r, (self.y1 - self.y0) / 2, self.r], 0.0, 0).corners()

    def intersect(self, o, d):
        px, pz = o[0] - self.x, o[2] - self.z
        a = _safe(d[0] * d[0] + d[2] * d[2])
        b = px * d[0] + pz * d[2]
        disc = b * b - a * (px * px + pz * pz - self.r * self.r)
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
        y = o[1] + ts * d[1]
        ts = np.where((disc > 0) & (ts > NEAR) & (y >= self.y0) & (y <= self.y1), ts, np.inf)
        t, ny = ts, np.zeros(ts.shape, np.float32)
        for yc, sign in ((self.y1, 1.0), (self.y0, -1.0)):
            tc = (yc - o[1]) / _safe(d[1])
            xc, zc = px + tc * d[0], pz + tc * d[2]
            ok = (tc > NEAR) & (xc * xc + zc * zc <= self.r * self.r) & (tc < t)
            t, ny = np.where(ok, tc, t), np.where(ok, np.float32(sign), ny)
        side = ny == 0
        nx = np.where(side, (px + t * d[0]) / self.r, 0)
        nz = np.where(side, (pz + t * d[2]) / self.r, 0)
        return t, (np.nan_to_num(nx), ny, np.nan_to_num(nz))


class Sphere(Prim):
    def __init__(self, c, r, mat):
        super().__init__(mat)
        self.c, self.r = [float(v) for v in c], float(r)

    def corners(self):
        return Box(self.c, [self.r] * 3, 0.0, 0).corners()

    def intersect(self, o, d):
        p = [o[a] - self.c[a] for a in range(3)]
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = p[0] * d[0] + p[1] * d[1] + p[2] * d[2]
        disc = b * b - a * (p[0] * p[0] + p[1] * p[1] + p[2] * p[2] - self.r * self.r)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        t = np.where((disc > 0) & (t > NEAR), t, np.inf)
        return t, tuple(np.nan_to_num((p[k] + t * d[k]) / self.r) for k in range(3))


# ============================================================================ cameras


@dataclass
class Camera:
    """Pinhole (``scale`` None) or orthographic camera; ``R`` columns: right, down, forward."""

    origin: np.ndarray
    R: np.ndarray
    size: int
    focal: float = 1.0
    scale: float | None = None  # metres per pixel for an orthographic camera

    @staticmethod
    def look(origin, yaw, pitch, roll, size, focal=1.0, scale=None) -> "Camera":
        fwd = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        right = np.cross([0.0, 1.0, 0.0], fwd)
        right /= np.linalg.norm(right)
        down = np.cross(right, fwd)
        cr, sr = math.cos(roll), math.sin(roll)
        right, down = cr * right + sr * down, -sr * right + cr * down
        return Camera(np.asarray(origin, np.float64), np.stack([right, down, fwd], 1), size, focal, scale)

    def rays(self):
        n, c = self.size, self.size / 2
        g = (np.arange(n, dtype=np.float32) + 0.5 - c)
        R = self.R.astype(np.float32)
        if self.scale is None:
            u, v = g[None, :] / self.focal, g[:, None] / self.focal
            d = tuple(R[k, 0] * u + R[k, 1] * v + R[k, 2] for k in range(3))
            return tuple(float(x) for x in self.origin), d
        u, v = g[None, :] * self.scale, g[:, None] * self.scale
        o = tuple(np.float32(self.origin[k]) + R[k, 0] * u + R[k, 1] * v for k in range(3))
        d = tuple(np.full((n, n), R[k, 2], np.float32) for k in range(3))
        return o, d

    def project(self, pts):
        """World points (K,3) -> rows, cols, z."""
        pc = ((np.asarray(pts, np.float64) - self.origin)[:, :, None] * self.R[None]).sum(1)  # no BLAS
        z = pc[:, 2]
        if self.scale is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                return pc[:, 1] / z * self.focal + self.size / 2, pc[:, 0] / z * self.focal + self.size / 2, z
        return pc[:, 1] / self.scale + self.size / 2, pc[:, 0] / self.scale + self.size / 2, z

    def rects(self, corners: list) -> np.ndarray:
        """Pixel rectangles (K, 4: r0, r1, c0, c1) covering each primitive's bounding box."""
        n = self.size
        out = np.tile(np.array([0, n, 0, n]), (len(corners), 1))
        bounded = [k for k, c in enumerate(corners) if c is not None]
        if not bounded:
            return out
        pts = np.stack([corners[k] for k in bounded])  # (B, 8, 3)
        rows, cols, z = (a.reshape(-1, 8) for a in self.project(pts.reshape(-1, 3)))
        with np.errstate(invalid="ignore"):
            rect = np.stack([np.floor(rows.min(1)) - 1, np.ceil(rows.max(1)) + 1,
                             np.floor(cols.min(1)) - 1, np.ceil(cols.max(1)) + 1], 1)
        if self.scale is None:
            behind = z < NEAR
            rect[behind.all(1)] = 0
            for i in np.nonzero(behind.any(1) & ~behind.all(1))[0]:
                # clip the box at the near plane: front corners plus the edge crossings
                c, zi = pts[i], z[i]
                za, zb = zi[_EDGES[:, 0]], zi[_EDGES[:, 1]]
                cross = (za < NEAR) != (zb < NEAR)
                f = ((NEAR * 1.01 - za) / np.where(cross, zb - za, 1.0))[cross]
                pa, pb = c[_EDGES[cross, 0]], c[_EDGES[cross, 1]]
                r, cc, _ = self.project(np.concatenate([c[zi >= NEAR], pa + f[:, None] * (pb - pa)]))
                rect[i] = [math.floor(r.min()) - 1, math.ceil(r.max()) + 1, math.floor(cc.min()) - 1, math.ceil(cc.max()) + 1]
        out[bounded] = np.clip(np.nan_to_num(rect), 0, n).astype(int)
        return out


_EDGES = np.array([(a, a ^ b) for a in range(8) for b in (1, 2, 4) if a < a ^ b])  # 12 box edges


def raycast(cam: Camera, prims: list[Prim]):
    """Z-buffered ray-cast -> t (n,n) float32 (inf = miss), ids (n,n) int16, normals 3x(n,n)."""
    n = cam.size
    o, d = cam.rays()
    tbuf = np.full((n, n), np.inf, np.float32)
    ids = np.full((n, n), -1, np.int16)
    nbuf = [np.zeros((n, n), np.float32) for _ in range(3)]
    rects = cam.rects([p.corners() for p in prims])
    for k, p in enumerate(prims):
        r0, r1, c0, c1 = (int(v) for v in rects[k])
        if r1 <= r0 or c1 <= c0:
            continue
        sl = (slice(r0, r1), slice(c0, c1))
        os_ = tuple(x[sl] if np.ndim(x) else x for x in o)
        t, nrm = p.intersect(os_, tuple(x[sl] for x in d))
        tb = tbuf[sl]
        hit = t < tb
        if not hit.any():
            continue
        tb[hit] = t[hit]
        ids[sl][hit] = k
        for a in range(3):
            nbuf[a][sl][hit] = np.broadcast_to(nrm[a], t.shape)[hit]
    return tbuf, ids, nbuf


# ============================================================================ textures


def _value_noise(rng, cells: int, octaves: int = 3) -> np.ndarray:
    """Tileable value noise in [0, 1], (TEX, TEX); gathers and lerps only (no BLAS)."""
    out = np.zeros((TEX, TEX), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = cells * 2 ** o
        pos = np.arange(TEX) * c / TEX
        i0 = np.floor(pos).astype(int)
        f = (pos - i0).astype(np.float32)
        f = f * f * (3 - 2 * f)
        g = rng.random((c, c), dtype=np.float32)
        a, b = i0 % c, (i0 + 1) % c
        top = g[a][:, a] * (1 - f) + g[a][:, b] * f
        bot = g[b][:, a] * (1 - f) + g[b][:, b] * f
        out += amp * (top * (1 - f[:, None]) + bot * f[:, None])
        total += amp
        amp *= 0.5
    return out / total


@functools.lru_cache(maxsize=1)
def _noise_bank() -> tuple[np.ndarray, ...]:
    """A fixed bank of noise fields (same in every process), so textures cost no noise synthesis."""
    rng = np.random.default_rng(20240611)
    return tuple(_value_noise(rng, cells) for cells in (3, 4, 5, 6, 8, 10) for _ in range(4))


def _noise(rng) -> np.ndarray:
    bank = _noise_bank()
    n = bank[int(rng.integers(len(bank)))]
    n = np.roll(n, (int(rng.integers(TEX)), int(rng.integers(TEX))), axis=(0, 1))
    return n.T if rng.random() < 0.5 else n


def _photo_texture(rng, names) -> np.ndarray:
    from .real import skimage_images

    photos = skimage_images(names)
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.integers(min(48, h, w), min(h, w, 320) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    idx = (np.arange(TEX) * side / TEX).astype(int)
    return img[top + idx[:, None], left + idx[None, :]].astype(np.float32) / 255.0


@functools.lru_cache(maxsize=1)
def _grid():
    y, x = np.mgrid[0:TEX, 0:TEX].astype(np.float32) / TEX
    return y, x


def make_texture(rng, kind: str, color=None) -> np.ndarray:
    """Albedo texture (TEX, TEX, 3) in [0, 1]."""
    from .real import SKIMAGE_PHOTOS, SKIMAGE_TEXTURES

    color = np.asarray(color if color is not None else rng.uniform(0.15, 0.9, 3), np.float32)
    y, x = _grid()
    if kind == "photo":
        tex = _photo_texture(rng, SKIMAGE_PHOTOS)
        return np.clip(tex * (0.6 + 0.6 * color), 0, 1)
    if kind == "photo_texture":  # brick / grass / gravel, tinted
        return np.clip(_photo_texture(rng, SKIMAGE_TEXTURES) * (0.4 + 1.0 * color), 0, 1)
    n = _noise(rng)
    if kind == "plain":
        pattern = 0.85 + 0.15 * n
    elif kind == "wood":
        k = int(rng.integers(3, 9))
        pattern = 0.7 + 0.3 * np.sin(2 * np.pi * (k * x + 2.0 * n)) ** 2
    elif kind == "tiles":
        k = int(rng.choice([2, 4, 8]))
        fx, fy = (x * k) % 1, (y * k) % 1
        grout = (np.minimum(fx, 1 - fx) < 0.04) | (np.minimum(fy, 1 - fy) < 0.04)
        checker = ((np.floor(x * k) + np.floor(y * k)) % 2) * rng.uniform(0, 0.3)
        pattern = np.where(grout, 0.35, 0.8 + 0.2 * n - checker)
    elif kind == "bricks":
        rows = int(rng.choice([4, 8]))
        ry = np.floor(y * rows)
        fx = (x * rows / 2 + 0.5 * (ry % 2)) % 1
        fy = (y * rows) % 1
        mortar = (fx < 0.05) | (fy < 0.08)
        pattern = np.where(mortar, 1.4, 0.7 + 0.3 * n)
    elif kind == "stripes":
        k = int(rng.integers(2, 8))
        pattern = np.where(((x * k) % 1) < 0.5, 1.0, 0.6) * (0.85 + 0.15 * n)
    elif kind == "windows":  # building facade
        kx, ky = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        fx, fy = (x * kx) % 1, (y * ky) % 1
        win = (fx > 0.25) & (fx < 0.75) & (fy > 0.25) & (fy < 0.75)
        glass = np.stack([np.full_like(x, v) for v in rng.uniform(0.05, 0.35, 3)], -1)
        wall = color * (0.8 + 0.2 * n)[..., None]
        return np.clip(np.where(win[..., None], glass + 0.2 * n[..., None], wall), 0, 1)
    else:  # noise
        pattern = 0.5 + 0.5 * n
    return np.clip(color * pattern[..., None], 0, 1).astype(np.float32)


# ============================================================================ scenes


class _Scene:
    def __init__(self, rng, photo_rng=None):
        self.rng = rng
        self.photo_rng = photo_rng  # real-styled look: albedo modulated by photo crops
        self.prims: list[Prim] = []
        self.textures: list[np.ndarray] = []
        self.scales: list[float] = []
        self.by_kind: dict[str, list[int]] = {}

    def material(self, kind, scale=1.0, color=None) -> int:
        """A new texture, or (past a few per kind) a reused one at a new scale: keeps scenes cheap."""
        same = self.by_kind.setdefault(kind, [])
        if len(same) >= 2 and self.rng.random() < 0.7:
            self.textures.append(self.textures[same[int(self.rng.integers(len(same)))]])
        else:
            same.append(len(self.textures))
            tex = make_texture(self.rng, kind, color)
            if self.photo_rng is not None and kind not in ("photo", "photo_texture") and self.photo_rng.random() < 0.8:
                from .real import SKIMAGE_PHOTOS, SKIMAGE_TEXTURES

                names = SKIMAGE_TEXTURES if self.photo_rng.random() < 0.5 else SKIMAGE_PHOTOS
                lum = _photo_texture(self.photo_rng, names).mean(-1, keepdims=True)
                tex = np.clip(tex * (0.35 + 1.3 * lum / max(float(lum.mean()), 1e-3) * 0.5), 0, 1).astype(np.float32)
            self.textures.append(tex)
        self.scales.append(float(scale))
        return len(self.textures) - 1

    def add(self, p: Prim) -> Prim:
        self.prims.append(p)
        return p

    def place(self, px, pz, yaw, lx, ly, lz):
        """Object-local offset -> world point for an object at (px, pz) rotated by yaw."""
        c, s = math.cos(yaw), math.sin(yaw)
        return [px + c * lx + s * lz, ly, pz - s * lx + c * lz]


def _table(sc: _Scene, x, z, yaw, mat_top, mat_leg):
    r = sc.rng
    w, d, h = r.uniform(0.8, 1.8), r.uniform(0.6, 1.0), r.uniform(0.68, 0.78)
    top = r.uniform(0.025, 0.05)
    sc.add(Box(sc.place(x, z, yaw, 0, h - top / 2, 0), [w / 2, top / 2, d / 2], yaw, mat_top))
    leg = r.uniform(0.012, 0.03)
    round_legs = r.random() < 0.5
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, _, cz = sc.place(x, z, yaw, sx * (w / 2 - 0.06), 0, sz * (d / 2 - 0.06))
            if round_legs:
                sc.add(Cylinder(cx, cz, 0, h - top, leg, mat_leg, thin=True))
            else:
                sc.add(Box([cx, (h - top) / 2, cz], [leg, (h - top) / 2, leg], yaw, mat_leg, thin=True))
    if r.random() < 0.5:  # something on the table
        sc.add(Sphere(sc.place(x, z, yaw, r.uniform(-w / 3, w / 3), h + 0.1, r.uniform(-d / 4, d / 4)), 0.1,
                      sc.material("plain", 0.3)))
    return w, d


def _chair(sc: _Scene, x, z, yaw, mat_seat, mat_leg):
    r = sc.rng
    s, h = r.uniform(0.38, 0.5), r.uniform(0.42, 0.48)
    leg = r.uniform(0.01, 0.022)
    sc.add(Box(sc.place(x, z, yaw, 0, h, 0), [s / 2, 0.02, s / 2], yaw, mat_seat))
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, _, cz = sc.place(x, z, yaw, sx * (s / 2 - 0.03), 0, sz * (s / 2 - 0.03))
            sc.add(Box([cx, (h - 0.02) / 2, cz], [leg, (h - 0.02) / 2, leg], yaw, mat_leg, thin=True))
    back = r.uniform(0.35, 0.5)
    if r.random() < 0.5:  # solid back
        sc.add(Box(sc.place(x, z, yaw, 0, h + back / 2, -s / 2 + 0.02), [s / 2, back / 2, 0.015], yaw, mat_seat))
    else:  # two posts and slats
        for sx in (-1, 1):
            cx, _, cz = sc.place(x, z, yaw, sx * (s / 2 - 0.03), 0, -s / 2 + 0.03)
            sc.add(Box([cx, h + back / 2, cz], [leg, back / 2, leg], yaw, mat_leg, thin=True))
        for k in range(int(r.integers(1, 4))):
            sc.add(Box(sc.place(x, z, yaw, 0, h + back * (0.4 + 0.55 * k / 3), -s / 2 + 0.03),
                       [s / 2 - 0.03, 0.012, 0.01], yaw, mat_leg, thin=True))


def _lamp(sc: _Scene, x, z):
    r = sc.rng
    h = r.uniform(1.3, 1.8)
    metal = sc.material("plain", 1.0, color=r.uniform(0.1, 0.7, 3))
    sc.add(Cylinder(x, z, 0, 0.03, r.uniform(0.12, 0.2), metal))
    sc.add(Cylinder(x, z, 0.03, h, r.uniform(0.008, 0.016), metal, thin=True))
    rs = r.uniform(0.13, 0.25)
    sc.add(Cylinder(x, z, h, h + r.uniform(0.2, 0.35), rs, sc.material("noise", 0.5, color=r.uniform(0.6, 1.0, 3))))


def _shelf(sc: _Scene, x, z, yaw):
    r = sc.rng
    w, d, h = r.uniform(0.6, 1.6), r.uniform(0.25, 0.45), r.uniform(0.9, 2.1)
    mat = sc.material(r.choice(["wood", "plain"]), 0.8)
    board = r.uniform(0.015, 0.03)
    for sx in (-1, 1):
        sc.add(Box(sc.place(x, z, yaw, sx * w / 2, h / 2, 0), [board, h / 2, d / 2], yaw, mat))
    n = int(r.integers(3, 6))
    for k in range(n):
        y = board + (h - 2 * board) * k / (n - 1)
        sc.add(Box(sc.place(x, z, yaw, 0, y, 0), [w / 2, board, d / 2], yaw, mat, thin=True))
        if k < n - 1 and r.random() < 0.6:  # books / boxes on the shelf
            bw = r.uniform(0.1, w * 0.8)
            bh = min(r.uniform(0.1, 0.3), (h - 2 * board) / (n - 1) - 2 * board)
            sc.add(Box(sc.place(x, z, yaw, r.uniform(-w / 2 + bw / 2, w / 2 - bw / 2), y + board + bh / 2, 0),
                       [bw / 2, bh / 2, d / 2 - 0.03], yaw, sc.material("photo", 0.3)))


def _indoor(sc: _Scene):
    r = sc.rng
    W, D, H = r.uniform(4, 8), r.uniform(4.5, 9), r.uniform(2.4, 3.2)
    sc.add(Room([-W / 2, 0, -D / 2], [W / 2, H, D / 2], (
        sc.material(r.choice(["wood", "tiles", "photo_texture", "plain"]), r.uniform(0.5, 2.0)),
        sc.material(r.choice(["plain", "stripes", "bricks", "photo", "noise"]), r.uniform(0.8, 3.0)),
        sc.material("plain", 2.0, color=r.uniform(0.7, 0.95, 3)))))
    cam = np.array([r.uniform(-W / 2 + 0.5, W / 2 - 0.5), r.uniform(0.9, 1.9), -D / 2 + r.uniform(0.3, 0.35 * D)])
    occupied = [(cam[0], cam[2], 1.0)]

    def free_spot(radius, margin=0.3):
        for _ in range(30):
            x, z = r.uniform(-W / 2 + margin + radius, W / 2 - margin - radius), r.uniform(cam[2] + 0.5, D / 2 - margin - radius)
            if all((x - ox) ** 2 + (z - oz) ** 2 > (radius + orad) ** 2 for ox, oz, orad in occupied):
                occupied.append((x, z, radius))
                return x, z
        return None

    leg_mat = sc.material("plain", 1.0, color=r.uniform(0.05, 0.8, 3))
    for _ in range(int(r.integers(1, 3))):
        spot = free_spot(1.1)
        if spot is None:
            continue
        yaw = r.uniform(0, np.pi)
        w, d = _table(sc, *spot, yaw, sc.material(r.choice(["wood", "plain", "photo"]), 1.0), leg_mat)
        seat = sc.material(r.choice(["wood", "plain", "noise"]), 0.6)
        for k in range(int(r.integers(1, 5))):
            side = k % 4
            lx, lz = [(0, d / 2 + 0.35), (0, -d / 2 - 0.35), (w / 2 + 0.35, 0), (-w / 2 - 0.35, 0)][side]
            cx, _, cz = sc.place(*spot, yaw, lx + r.uniform(-0.1, 0.1), 0, lz)
            face = math.atan2(spot[0] - cx, spot[1] - cz)  # back of the chair away from the table
            _chair(sc, cx, cz, face + r.uniform(-0.3, 0.3), seat, leg_mat)
    for _ in range(int(r.integers(0, 3))):
        spot = free_spot(0.4)
        if spot is not None:
            _chair(sc, *spot, r.uniform(0, 2 * np.pi), sc.material(r.choice(["plain", "photo"]), 0.6), leg_mat)
    for _ in range(int(r.integers(0, 3))):
        spot = free_spot(0.3)
        if spot is not None:
            _lamp(sc, *spot)
    for _ in range(int(r.integers(0, 3))):  # shelves against the side or back walls
        w = r.choice([0, 1, 2])
        if w == 0:
            _shelf(sc, -W / 2 + 0.25, r.uniform(cam[2] + 0.5, D / 2 - 1), np.pi / 2)
        elif w == 1:
            _shelf(sc, W / 2 - 0.25, r.uniform(cam[2] + 0.5, D / 2 - 1), -np.pi / 2)
        else:
            _shelf(sc, r.uniform(-W / 2 + 1, W / 2 - 1), D / 2 - 0.25, np.pi)
    for _ in range(int(r.integers(0, 4))):  # boxes and balls
        spot = free_spot(0.4)
        if spot is None:
            continue
        if r.random() < 0.5:
            hb = r.uniform(0.15, 0.6)
            sc.add(Box([spot[0], hb, spot[1]], [r.uniform(0.15, 0.4), hb, r.uniform(0.15, 0.4)], r.uniform(0, np.pi),
                       sc.material(r.choice(["photo", "plain", "stripes"]), 0.5)))
        else:
            rad = r.uniform(0.1, 0.35)
            sc.add(Sphere([spot[0], rad, spot[1]], rad, sc.material("noise", 0.5)))
    target = np.array([r.uniform(-W / 4, W / 4), r.uniform(0.3, 1.0), D / 4])
    yaw = math.atan2(target[0] - cam[0], target[2] - cam[2]) + r.normal(0, 0.25)
    pitch = math.atan2(target[1] - cam[1], np.hypot(target[0] - cam[0], target[2] - cam[2])) + r.normal(0, 0.1)
    light = np.array([r.uniform(-0.6, 0.6), 1.0, r.uniform(-0.6, 0.6)])
    return cam, yaw, pitch, light, np.array([0.0, H / 2, 0.0]), max(W, D, H) * 1.2


def _outdoor(sc: _Scene):
    r = sc.rng
    rw = r.uniform(3, 7)  # road half width
    walk = r.uniform(1.5, 4)
    sc.add(Ground(sc.material(r.choice(["photo_texture", "noise"]), r.uniform(1, 4), color=r.uniform([0.2, 0.3, 0.1], [0.5, 0.6, 0.3]))))
    sc.add(Box([0, 0.005, 60], [rw, 0.005, 90], 0, sc.material("noise", 3.0, color=np.full(3, r.uniform(0.2, 0.45)))))
    curb = r.uniform(0.08, 0.2)
    walk_mat = sc.material(r.choice(["tiles", "photo_texture"]), r.uniform(1, 3), color=np.full(3, r.uniform(0.4, 0.8)))
    for side in (-1, 1):
        sc.add(Box([side * (rw + walk / 2), curb / 2, 60], [walk / 2, curb / 2, 90], 0, walk_mat))
        z = r.uniform(-15, 5)
        while z < 110:  # buildings
            L, Dp, Hb = r.uniform(8, 25), r.uniform(8, 20), r.uniform(5, 35)
            if r.random() < 0.8:
                x = side * (rw + walk + r.uniform(0.5, 8) + Dp / 2)
                facade = sc.material(r.choice(["windows", "windows", "bricks", "photo"]), r.uniform(3, 8))
                sc.add(Box([x, Hb / 2, z + L / 2], [Dp / 2, Hb / 2, L / 2], r.normal(0, 0.05), (sc.material("plain", 5), facade, facade)))
            z += L + r.uniform(0, 8)
        pole_mat = sc.material("plain", 1.0, color=np.full(3, r.uniform(0.15, 0.6)))
        z = r.uniform(2, 10)
        spacing = r.uniform(10, 25)
        while z < 90:  # street lamps and sign poles
            x = side * (rw + 0.4)
            hp = r.uniform(3.5, 9)
            rad = r.uniform(0.04, 0.12)
            sc.add(Cylinder(x, z, 0, hp, rad, pole_mat, thin=True))
            if r.random() < 0.6:
                arm = r.uniform(0.8, 2.5)
                sc.add(Box([x - side * arm / 2, hp - 0.05, z], [arm / 2, 0.04, 0.04], 0, pole_mat, thin=True))
                sc.add(Box([x - side * arm, hp - 0.12, z], [0.25, 0.08, 0.12], 0, pole_mat))
            else:
                sc.add(Box([x, hp - 0.3, z], [0.02, 0.3, 0.3], 0, sc.material("plain", 1.0)))
            z += spacing * r.uniform(0.8, 1.2)
    for _ in range(int(r.integers(1, 3))):  # railings and fences along a sidewalk edge
        side = r.choice([-1, 1])
        x = side * (rw + walk - r.uniform(0.1, 0.5))
        z0, length = r.uniform(1, 15), r.uniform(8, 40)
        hf = r.uniform(0.8, 1.4)
        mat = sc.material("plain", 1.0, color=r.uniform(0.05, 0.9, 3))
        gap = max(r.uniform(0.8, 2.5), length / 28)
        post = r.uniform(0.02, 0.05)
        for z in np.arange(z0, z0 + length, gap):
            sc.add(Box([x, hf / 2 + curb, z], [post, hf / 2, post], 0, mat, thin=True))
        for k in range(int(r.integers(1, 4))):
            y = curb + hf * (1 - 0.35 * k)
            sc.add(Box([x, y, z0 + length / 2], [0.02, r.uniform(0.015, 0.03), length / 2], 0, mat, thin=True))
    for _ in range(int(r.integers(0, 5))):  # trees
        side = r.choice([-1, 1])
        x, z = side * (rw + r.uniform(0.5, walk + 3)), r.uniform(3, 70)
        ht = r.uniform(2, 4)
        sc.add(Cylinder(x, z, 0, ht, r.uniform(0.08, 0.25), sc.material("noise", 1.0, color=[0.35, 0.25, 0.15])))
        sc.add(Sphere([x, ht + 1.2, z], r.uniform(1.2, 2.8), sc.material("photo_texture", 1.5, color=[0.2, 0.6, 0.15])))
    for _ in range(int(r.integers(0, 4))):  # cars
        x, z = r.uniform(-rw + 1, rw - 1), r.uniform(4, 60)
        body = sc.material("plain", 2.0)
        sc.add(Box([x, 0.55, z], [0.9, 0.35, 2.2], r.normal(0, 0.1), body))
        sc.add(Box([x, 1.15, z - 0.2], [0.8, 0.3, 1.1], 0, sc.material("plain", 2.0, color=np.full(3, 0.15))))
    elevated = r.random() < 0.2
    cam = np.array([r.uniform(-rw + 1, rw - 1), r.uniform(3, 8) if elevated else r.uniform(1.3, 2.2), r.uniform(-8, 0)])
    yaw = r.normal(0, 0.45)
    pitch = r.uniform(-0.35, -0.1) if elevated else r.uniform(-0.2, 0.06)
    light = np.array([r.uniform(-1, 1), r.uniform(0.5, 1.5), r.uniform(-1, 1)])
    focus = cam + 18 * np.array([math.sin(yaw), 0, math.cos(yaw)])
    return cam, yaw, pitch, light, focus * [1, 0, 1], 60.0


# ============================================================================ rendering


def _sky(d, rng, fog_color):
    norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    elev = np.clip(d[1] / norm, -1, 1)  # world y is up
    zenith = rng.uniform([0.2, 0.35, 0.6], [0.45, 0.6, 0.95]).astype(np.float32)
    a = np.clip(elev * 2.5, 0, 1)[..., None]
    return (1 - a) * fog_color + a * zenith


STYLES = ("synthetic", "real")


def render_scene(seed: int, size: int = 256, kind: str | None = None, style: str = "synthetic") -> dict:
    """One scene -> ``rgb`` uint8 (S,S,3), ``depth`` float32 (S,S) z-depth in metres (0 invalid),
    ``mask`` bool (S,S), ``meta`` dict(kind, style, thin_px, focal, ...).

    ``style="synthetic"`` is the clean render (the d0 / L_k domain). ``style="real"`` renders
    the same kind of scene with a camera-like look (``real_look``): photo-modulated albedo,
    colour temperature, haze, lens blur, vignetting, chromatic aberration, signal-dependent
    noise, a film tone curve and JPEG compression. Geometry and depth come from the same
    generator; only the appearance differs.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    rng = np.random.default_rng(seed)
    look_rng = np.random.default_rng([seed, 7]) if style == "real" else None
    kind = kind or ("indoor" if rng.random() < 0.5 else "outdoor")
    sc = _Scene(rng, photo_rng=look_rng)
    cam_pos, yaw, pitch, light, focus, extent = _indoor(sc) if kind == "indoor" else _outdoor(sc)
    fov = math.radians(rng.uniform(45, 85) if kind == "indoor" else rng.uniform(40, 80))
    focal = size / 2 / math.tan(fov / 2)
    cam = Camera.look(cam_pos, yaw, pitch, rng.normal(0, 0.03), size, focal)

    t, ids, nrm = raycast(cam, sc.prims)
    valid = (ids >= 0) & (t < FAR)
    o, d = cam.rays()
    P = [o[k] + np.where(valid, t, 0) * d[k] for k in range(3)]

    # albedo: per-pixel material from (primitive, facing slot), textures looked up with
    # world-space planar coordinates (x-z on horizontal faces, x-y or z-y on vertical ones)
    mats = np.array([p.mats for p in sc.prims] + [(0, 0, 0)], np.int64)  # last row: misses
    ny = nrm[1]
    slot = np.where(ny > 0.7, 0, np.where(ny < -0.7, 2, 1))
    mat = mats[ids.astype(np.int64), slot]
    horiz = np.abs(ny) > 0.7
    xside = np.abs(nrm[0]) > np.abs(nrm[2])
    u = np.where(horiz | ~xside, P[0], P[2])
    v = np.where(horiz, P[2], -P[1])
    inv_scale = (TEX / np.array(sc.scales, np.float32))[mat]
    iu = np.floor(u * inv_scale).astype(np.int64) % TEX
    iv = np.floor(v * inv_scale).astype(np.int64) % TEX
    albedo = np.stack(sc.textures)[mat, iv, iu]

    # lighting: key light with shadow map, ambient with screen-space occlusion
    L = light / np.linalg.norm(light)
    lyaw, lpitch = math.atan2(-L[0], -L[2]), math.asin(-L[1])
    smap_n = max(64, size // 3)
    lcam = Camera.look(np.asarray(focus) + L * extent * 2, lyaw, lpitch, 0.0, smap_n, scale=extent * 1.4 / smap_n)
    def casts(p):  # legs, poles and rails thinner than a shadow texel would only alias
        if not p.cast_shadow:
            return False
        c = p.corners()
        return c is None or np.sort(np.ptp(c, 0))[1] > lcam.scale

    st, _, _ = raycast(lcam, [p for p in sc.prims if casts(p)])
    pts = np.stack([p[valid] for p in P], 1)
    rows, cols, z = lcam.project(pts)
    ri, ci = np.floor(rows).astype(int), np.floor(cols).astype(int)
    inside = (ri >= 0) & (ri < smap_n) & (ci >= 0) & (ci < smap_n)
    lit = np.ones(len(pts), np.float32)
    occ = st[ri[inside], ci[inside]]
    lit[inside] = np.where(z[inside] > occ + 2.5 * lcam.scale, 0.0, 1.0)
    shadow = np.ones((size, size), np.float32)
    shadow[valid] = lit
    lambert = np.clip(nrm[0] * L[0] + nrm[1] * L[1] + nrm[2] * L[2], 0, 1)
    zf = np.where(valid, t, FAR).astype(np.float32)
    blur = uniform_filter(zf, size=max(5, size // 24), mode="nearest")
    ao = np.clip(1 - 2.5 * (zf - blur) / zf, 0.55, 1.0)
    ambient = rng.uniform(0.25, 0.45)
    key = rng.uniform(0.7, 1.1) * rng.uniform(0.85, 1.0, 3).astype(np.float32)
    shade = ambient * ao[..., None] + (key * (lambert * shadow)[..., None]) * ao[..., None] ** 0.5
    rgb = albedo * shade

    fog_color = rng.uniform([0.6, 0.65, 0.7], [0.85, 0.9, 1.0]).astype(np.float32)
    if kind == "outdoor":
        fog = 1 - np.exp(-zf / rng.uniform(80, 400))
        rgb = rgb * (1 - fog[..., None]) + fog_color * fog[..., None]
        rgb = np.where(valid[..., None], rgb, _sky(d, rng, fog_color))
    rgb = rgb + (rng.random(rgb.shape, dtype=np.float32) - 0.5) * 0.03  # sensor noise
    if look_rng is not None:
        rgb8 = real_look(np.clip(rgb, 0, 1).astype(np.float32), zf, valid, look_rng)
    else:
        rgb8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    depth = np.where(valid, t, 0).astype(np.float32)
    thin = thin_structure_mask(depth, valid)
    meta = {"kind": kind, "style": style, "thin_px": int(thin.sum()), "focal": float(focal), "fov_deg": math.degrees(fov),
            "n_prims": len(sc.prims), "valid_frac": float(valid.mean())}
    return {"rgb": rgb8, "depth": depth, "mask": valid, "meta": meta}


def real_look(rgb: np.ndarray, zf: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The "real-styled" camera look applied to a clean render (H, W, 3) in [0, 1] -> uint8.

    Each effect is one a real photo has and the clean renders lack, with random strength:
    colour temperature / white-balance cast, depth-dependent haze (indoors too), defocus blur,
    chromatic aberration, vignetting, signal-dependent sensor noise, an S-shaped film tone
    curve with lifted blacks, and JPEG compression. ``zf``: z-depth with FAR where invalid.
    """
    import io

    from PIL import Image
    from scipy.ndimage import gaussian_filter, shift

    h, w, _ = rgb.shape
    x = rgb.copy()
    # white balance: warm (tungsten) or cool (shade) cast
    temp = rng.uniform(-1, 1)
    x = x * np.array([1 + 0.22 * temp, 1.0 + 0.03 * rng.uniform(-1, 1), 1 - 0.22 * temp], np.float32)
    # haze towards a tinted airlight, growing with depth
    air = np.clip(rng.uniform(0.55, 0.95) * np.array([1 + 0.1 * temp, 1.0, 1 - 0.1 * temp]), 0, 1).astype(np.float32)
    zr = np.clip(zf / max(float(np.percentile(zf[valid], 90)) if valid.any() else 1.0, 1e-3), 0, 3)
    haze = 1 - np.exp(-rng.uniform(0.1, 0.45) * zr)
    x = x * (1 - haze[..., None]) + air * haze[..., None]
    # lens: defocus blur and lateral chromatic aberration
    sigma = rng.uniform(0.5, 1.0) * h / 128
    x = np.stack([gaussian_filter(x[..., c], sigma, mode="nearest") for c in range(3)], -1)
    ca = rng.uniform(0.3, 1.0) * h / 128
    x[..., 0] = shift(x[..., 0], (0, ca), order=1, mode="nearest")
    x[..., 2] = shift(x[..., 2], (0, -ca), order=1, mode="nearest")
    # vignetting
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.5 * (h * h + w * w) / 2)
    x = x * (1 - rng.uniform(0.2, 0.45) * r2)[..., None]
    # film tone curve with lifted blacks, then exposure
    x = np.clip(x * rng.uniform(0.9, 1.25), 0, 1)
    x = x * x * (3 - 2 * x) * 0.75 + 0.25 * x
    x = 0.06 + 0.9 * x
    # signal-dependent noise (shot + read), slightly correlated across channels
    lum_noise = rng.standard_normal((h, w, 1)).astype(np.float32)
    col_noise = rng.standard_normal((h, w, 3)).astype(np.float32)
    x = x + (0.6 * lum_noise + 0.4 * col_noise) * np.sqrt(rng.uniform(2e-4, 1.5e-3) * x + 1e-4)
    x8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x8).save(buf, format="JPEG", quality=int(rng.integers(35, 75)))
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def thin_structure_mask(depth: np.ndarray, valid: np.ndarray, max_width: int = 3, ratio: float = 1.05) -> np.ndarray:
    """Pixels of foreground strips 1..``max_width`` px wide (horizontally or vertically) whose
    both flanks are farther by ``ratio`` or invalid (sky): legs, poles, rails seen from the side."""
    z = np.where(valid, depth, np.inf).astype(np.float32)
    out = np.zeros(z.shape, bool)
    for zz, oo in ((z, out), (z.T, out.T)):
        n = zz.shape[1]
        for w in range(1, max_width + 1):
            m = n - w - 1
            if m <= 0:
                continue
            strip = zz[:, 1:1 + m]
            for j in range(1, w):
                strip = np.maximum(strip, zz[:, 1 + j:1 + j + m])
            near = np.isfinite(strip) & (strip * ratio < zz[:, :m]) & (strip * ratio < zz[:, w + 1:w + 1 + m])
            for j in range(w):
                oo[:, 1 + j:1 + j + m] |= near
    return out


# ============================================================================ files


def _write_one(args) -> dict:
    out_dir, index, size, seed, style = args
    scene = render_scene(scene_seed(seed, index), size, style=style)
    sid = f"{index:06d}"
    out = Path(out_dir)
    Image.fromarray(scene["rgb"]).save(out / "rgb" / f"{sid}.png", compress_level=1)
    np.save(out / "depth" / f"{sid}.npy", scene["depth"])
    Image.fromarray(scene["mask"].astype(np.uint8) * 255).save(out / "mask" / f"{sid}.png", compress_level=1)
    v = scene["depth"][scene["mask"]]
    q = np.percentile(v, [2, 50, 98]).tolist() if v.size else [0.0, 0.0, 0.0]
    return {"id": sid, **scene["meta"], "depth_p2": q[0], "depth_p50": q[1], "depth_p98": q[2]}


def write_synthetic_dataset(out_dir, n: int, size: int = 256, seed: int = 0, workers: int = 1,
                            progress: bool = True, style: str = "synthetic") -> list[dict]:
    """Render ``n`` scenes into ``out_dir`` (layout in the module docstring); returns their meta.
    ``style="real"`` writes the real-styled domain (``render_scene``) in the same layout."""
    from tqdm import tqdm

    out = Path(out_dir)
    for sub in ("rgb", "depth", "mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), i, size, seed, style) for i in range(n)]
    bar = dict(total=n, desc="synth" if style == "synthetic" else f"synth ({style})", unit="scene", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            metas = list(tqdm(pool.imap(_write_one, jobs, chunksize=8), **bar))
    else:
        metas = [_write_one(j) for j in tqdm(jobs, **bar)]
    with open(out / "meta.jsonl", "w") as f:
        for m in metas:
            f.write(json.dumps(m) + "\n")
    return metas


class SyntheticDepthDataset(DepthDataset):
    """Reads the ``DIR/{rgb,depth,mask}`` layout written by ``fiffdepth data synth``."""

    def __init__(self, root, resolution: int | None = None, seed: int = 0, on_bad: str | None = None):
        super().__init__(resolution, seed, on_bad)
        self.root = Path(root)
        self.ids = [p.stem for p in list_files(self.root / "rgb", (".png",), recursive=False)]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict:
        sid = self.ids[index]
        rgb = read_rgb(self.root / "rgb" / f"{sid}.png")
        depth = read_npy(self.root / "depth" / f"{sid}.npy")
        if depth.ndim != 2:
            raise DataError(f"{self.root / 'depth' / (sid + '.npy')}: expected a 2-D depth map, got {depth.shape}")
        mask_path = self.root / "mask" / f"{sid}.png"
        mask = read_gray(mask_path) > 0.5 if mask_path.exists() else None
        depth, valid = clean_depth(depth, valid=mask, name=str(self.root / "depth" / f"{sid}.npy"))
        return depth_item(rgb, depth, valid, sid)


def load_scene_tensors(dirs, resolution: int, seed: int = 0, max_scenes: int | None = None):
    """The scenes of one or more embedded-layout folders as tensors at ``resolution`` (each
    folder read as ``SyntheticDepthDataset(dir, resolution, seed)``, its first ``max_scenes`` usable
    ones; a bad scene is dropped, never repeated, see ``data.base.usable_items``): images
    (N, 3, R, R) in [0, 1], depth (N, 1, R, R) metres, valid masks (N, 1, R, R)."""
    import torch

    items = []
    for d in dirs if isinstance(dirs, (list, tuple)) else [dirs]:
        ds = SyntheticDepthDataset(d, resolution=resolution, seed=seed)
        items += list(usable_items(ds, max_scenes))
    return tuple(torch.stack([it[k] for it in items]) for k in ("image", "depth", "valid_mask"))


# ============================================================================ figure


def colorize_depth(depth: np.ndarray, valid: np.ndarray, cmap: str = "Spectral") -> np.ndarray:
    """Depth -> uint8 RGB, near red / far blue, scaled by the 2nd-98th percentiles; invalid black."""
    import matplotlib

    v = depth[valid]
    lo, hi = (np.percentile(v, [2, 98]) if v.size else (0.0, 1.0))
    x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = matplotlib.colormaps[cmap](x)[..., :3]
    rgb[~valid] = 0
    return (rgb * 255).astype(np.uint8)


def plot_scene_grid(out_path, n: int = 8, size: int = 256, seed: int = 0) -> list[dict]:
    """Figure: rows of RGB | colourised depth | valid mask, alternating indoor and outdoor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 3 * cols, figsize=(3 * cols * 2.0, rows * 2.1))
    axes = np.atleast_2d(axes)
    metas = []
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        cells = axes[r, 3 * c:3 * c + 3]
        for ax in cells:
            ax.set_xticks([])
            ax.set_yticks([])
        if i >= n:
            for ax in cells:
                ax.axis("off")
            continue
        kind = "indoor" if i % 2 == 0 else "outdoor"
        s = render_scene(scene_seed(seed, i), size, kind=kind)
        metas.append(s["meta"])
        v = s["depth"][s["mask"]]
        cells[0].imshow(s["rgb"])
        cells[0].set_title(f"{kind}, f={s['meta']['focal']:.0f}px", fontsize=7)
        cells[1].imshow(colorize_depth(s["depth"], s["mask"]))
        cells[1].set_title(f"depth {v.min():.1f}-{v.max():.1f} m", fontsize=7)
        cells[2].imshow(s["mask"], cmap="gray", vmin=0, vmax=1)
        cells[2].set_title(f"mask, thin px={s['meta']['thin_px']}", fontsize=7)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return metas


def plot_domains(out_path, n: int = 6, size: int = 128, seed: int = 0) -> None:
    """Figure: the same scenes in the two embedded domains. Rows: synthetic render, real-styled
    render (``real_look``), exact depth (identical for both: only the appearance differs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, n, figsize=(n * 1.9, 3 * 2.0), squeeze=False)
    for i in range(n):
        kind = "indoor" if i % 2 == 0 else "outdoor"
        s = scene_seed(seed, i)
        a, b = render_scene(s, size, kind=kind), render_scene(s, size, kind=kind, style="real")
        for r, img in enumerate((a["rgb"], b["rgb"], colorize_depth(a["depth"], a["mask"]))):
            axes[r, i].imshow(img)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
    for r, title in enumerate(("synthetic\n(d0, L_k)", "real-styled\n(teacher, d₋₁)", "exact depth")):
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.suptitle("one scene generator, two looks", fontsize=9)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
