"""``fiffdepth evaluate``: score models on the paper's benchmarks and write Table 1 / Table 2.

A dataset is named ``NAME:PATH[:OPTION]`` (``DATASETS`` lists the names, ``OPTIONS`` what the
option means for each). What each kind of dataset is scored with:

- ``nyu kitti eth3d scannet diode`` (Table 1): Marigold's protocol (``fiffdepth.metrics``) with
  the dataset's range, crop, processing resolution and alignment resolution from
  ``fiffdepth.data.PROTOCOLS``: least squares in depth space (disparity space for disparity
  models), clip to [min, max], AbsRel / δ1-3 / RMSE per image, then the mean over images.
- ``da2k`` (Table 1's last column): share of annotated pairs ordered correctly, over all pairs.
- ``sintel spring ibims`` (Table 2): Depth Pro's boundary F1 against the GT depth.
- ``am2k p3m dis5k`` (Table 2): Depth Pro's boundary recall against the matte / mask.
- ``embedded`` (held-out embedded scenes, exact GT): the Table 1 metrics and the boundary F1.
  Several ``embedded`` folders may be given (the synthetic and the real-styled held-out scenes):
  results name the first ``embedded`` and the others ``embedded_<folder>`` (``dataset_keys``).

Boundary F1 compares inverse-depth *ratios*, which are invariant to scale but not to shift, and
our models' depth is affine-invariant; where GT depth exists the prediction is therefore first
aligned to it exactly as for Table 1, and it is scored only where the GT is valid (NaN
elsewhere), so sky or masked-out pixels make no edges on either side. Without GT depth (masks,
DA-2K) the prediction is used as is (disparity ``p`` as depth ``1 / p``).

A predictor is a diffusers depth pipeline with Marigold's call and output (our
``FiffDepthPipeline`` or diffusers' ``MarigoldDepthPipeline``, passed as they are: its
``prediction`` is read, extra call arguments such as Marigold's ``num_inference_steps`` and
``ensemble_size`` go in ``pipeline_kwargs``, a pipeline that draws noise gets generators seeded
per image), or any callable ``f(images, processing_resolution) -> [HxW array]`` taking a list of
(3, H, W) float tensors in [0, 1]; ``processing_resolution`` None means the model's default, 0
native. A predictor whose attribute ``output_space`` is "disparity" (``depth_anything_predictor``)
or whose config's ``prediction_type`` is (a Marigold disparity model) is aligned in disparity space.

The mean-layout baseline (``fiffdepth.baselines``, ``--mean-layout DIR``) is such a callable:
it returns the training scenes' mean normalised depth whatever the image, and is scored the
same way; with it, the details table gets each method's AbsRel over the baseline's.

Embedded folders written by ``fiffdepth data synth`` say each scene's kind (indoor or outdoor) in
``meta.jsonl``: each per-image row then carries it as ``scene``, and the summary has the metrics
per kind (``by_scene``): street scenes reach about ten times as far as rooms (98th depth
percentile 66 m against 6 m, median of the held-out scenes), so one model can fare very
differently on the two.

Outputs under ``out_dir``: ``<dataset>/per_image.jsonl``, ``results.json`` (per dataset:
aggregate metrics, image and skipped counts, the protocol, the metrics per scene kind for
embedded folders; plus model, settings and versions)
and ``results.md`` (``results_table``). Files are written to a temporary name, then renamed.
A bad file inside a dataset is reported with ``warnings.warn`` naming it, skipped and counted.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .atomic import write_json, write_text
from . import metrics, tables
from .baselines import MEAN_LAYOUT, MEAN_LAYOUT_LABEL
from .data.eval_sets import PROTOCOLS, EvalProtocol
from .data.io import DataError
from .data.synthetic import FAR, NEAR
from .hub import FiffDepthError, load_or_explain
from .pipeline import BadImageError, FiffDepthPipeline, batch_or_one_by_one, depth_maps

# dataset name -> what it is scored with
DEPTH, BOUNDARY_F1, BOUNDARY_RECALL = "depth", "boundary_f1", "boundary_recall"
DA2K_PAIRS, EMBEDDED = "da2k", "embedded"
DATASETS: dict[str, str] = {
    "nyu": DEPTH, "kitti": DEPTH, "eth3d": DEPTH, "scannet": DEPTH, "diode": DEPTH,
    "sintel": BOUNDARY_F1, "spring": BOUNDARY_F1, "ibims": BOUNDARY_F1,
    "am2k": BOUNDARY_RECALL, "p3m": BOUNDARY_RECALL, "dis5k": BOUNDARY_RECALL,
    "da2k": DA2K_PAIRS, "embedded": EMBEDDED,
}
OPTIONS = {
    **{name: "Marigold split file (default: its file name inside or next to PATH)" for name in PROTOCOLS},
    "sintel": "pass (default final)", "spring": "split (default train)", "p3m": "subset (default P3M-500-NP)",
    "dis5k": "Depth Pro's sample list file (default: all of DIS-TE1..4)",
    "da2k": "annotations file (default annotations.json)",
}
# The embedded scenes: depth is exact and valid in [NEAR, FAR] (``fiffdepth.data.synthetic``).
EMBEDDED_PROTOCOL = EvalProtocol("embedded", NEAR, FAR)
EMBEDDED_TITLE = "Embedded"  # column title of the held-out scenes in the tables


class EvaluationError(FiffDepthError):
    pass


# ============================================================================ datasets


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: Path
    option: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.path}" + (f":{self.option}" if self.option else "")


def default_embedded_dir() -> Path:
    """The held-out embedded scenes of the reproduction (``OUT/data/eval``, notebook 00)."""
    from .stages import layout

    return layout().eval


def parse_dataset_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """``NAME:PATH[:OPTION]`` (``embedded`` alone: the default held-out scenes) -> DatasetSpec.

    Raises EvaluationError (one line) for an unknown name or a path that does not exist.
    """
    if isinstance(spec, DatasetSpec):
        return spec
    name, _, rest = str(spec).partition(":")
    name = name.strip().lower()
    path, _, option = rest.partition(":")
    if name not in DATASETS:
        raise EvaluationError(f"unknown dataset {name!r} in {spec!r}; choose one of {', '.join(DATASETS)}")
    if not path:
        if name != "embedded":
            raise EvaluationError(f"dataset {spec!r} needs a path: {name}:PATH")
        path = default_embedded_dir()
        if not path.is_dir():
            raise EvaluationError(f"{path}: held-out embedded scenes not found; render them with `fiffdepth data synth "
                                  f"--n 64 --size 128 --seed 1000003 --out {path}` or pass embedded:PATH")
    path = Path(path).expanduser()
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or directory (dataset {name})")
    if option and name not in OPTIONS:
        raise EvaluationError(f"dataset {name} takes no option (got {option!r})")
    return DatasetSpec(name, path, option or None)


def dataset_keys(specs: Sequence[DatasetSpec]) -> list[str]:
    """The keys of ``results["datasets"]`` (and output folders): the dataset name, and for a
    second ``embedded`` folder ``embedded_<folder name>`` (e.g. ``embedded_eval_real``).
    Raises EvaluationError for any other dataset given twice, or the same folder twice."""
    keys, seen = [], set()
    for s in specs:
        key = s.name
        if key in keys and s.name == "embedded" and s.path.resolve() not in seen:
            key = f"embedded_{_slug(s.path.resolve().name)}"
        if key in keys:
            raise EvaluationError(f"a dataset is given twice: {[str(x) for x in specs]}")
        keys.append(key)
        seen.add(s.path.resolve())
    return keys


def dataset_title(key: str) -> str:
    """Column title of a dataset key: the paper's name, ``Embedded`` or ``Embedded (<folder>)``."""
    if key == "embedded":
        return EMBEDDED_TITLE
    if key.startswith("embedded_"):
        return f"{EMBEDDED_TITLE} ({key[len('embedded_'):]})"
    return tables.DISPLAY_NAMES.get(key, key)


def _marigold_split_file(spec: DatasetSpec) -> Path:
    if spec.option:
        split = Path(spec.option).expanduser()
        if not split.is_file():
            raise EvaluationError(f"{split}: split file not found (dataset {spec.name})")
        return split
    base = Path(PROTOCOLS[spec.name].split_file).name
    for candidate in (spec.path / base, spec.path.parent / base):
        if candidate.is_file():
            return candidate
    raise EvaluationError(f"{spec.name}: no split file {base} in or next to {spec.path}; pass "
                          f"{spec.name}:PATH:SPLIT_FILE (Marigold's {PROTOCOLS[spec.name].split_file})")


def open_dataset(spec: str | DatasetSpec):
    """The loader of ``fiffdepth.data`` for a spec, raising on bad files (we skip and count them here)."""
    from . import data

    spec = parse_dataset_spec(spec)
    name, path, option = spec.name, spec.path, spec.option
    if DATASETS[name] == DEPTH:
        return data.EVAL_DATASETS[name](path, _marigold_split_file(spec), on_bad="raise")
    if name == "embedded":
        return data.SyntheticDepthDataset(path, on_bad="raise")
    if name == "sintel":
        return data.Sintel(path, option or "final", on_bad="raise")
    if name == "spring":
        return data.Spring(path, option or "train", on_bad="raise")
    if name == "ibims":
        return data.IBims1(path, on_bad="raise")
    if name == "am2k":
        return data.AM2k(path)
    if name == "p3m":
        return data.P3M10k(path, option or "P3M-500-NP")
    if name == "dis5k":
        return data.DIS5k(path, option)
    return data.DA2K(path, option or "annotations.json")


def protocol_of(name: str) -> EvalProtocol | None:
    return PROTOCOLS.get(name) or (EMBEDDED_PROTOCOL if name == "embedded" else None)


# ============================================================================ predictors


class Predictor:
    """A callable ``f(images, processing_resolution) -> [HxW array]`` with what it outputs.

    output_space: "depth" (larger = farther) or "disparity" (larger = closer); info: what it is
    (recorded in results.json)."""

    def __init__(self, fn: Callable, output_space: str = "depth", info: dict | None = None):
        if output_space not in ("depth", "disparity"):
            raise ValueError(f"output_space must be 'depth' or 'disparity', got {output_space!r}")
        self.fn, self.output_space, self.info = fn, output_space, dict(info or {})

    def __call__(self, images, processing_resolution: int | None = None) -> list[np.ndarray]:
        return self.fn(images, processing_resolution)


def depth_anything_predictor(model_dir_or_id: str, device=None, batch_size: int = 8) -> Predictor:
    """transformers' DepthAnythingForDepthEstimation + its processor (``fiffdepth.teacher.Teacher``);
    outputs disparity, so evaluation aligns it in disparity space. A processing resolution of 0
    (native) falls back to the processor's size: the ViT needs sides that are multiples of 14."""
    from .teacher import Teacher

    teacher = Teacher.from_pretrained(model_dir_or_id, device=device)
    return Predictor(lambda images, res: teacher.predict_disparity(list(images), resolution=res or None,
                                                                   batch_size=batch_size),
                     "disparity", {"kind": "depth-anything", "model": str(model_dir_or_id)})


def marigold_call(steps: int | None = None, ensemble: int = 1) -> dict:
    """``pipeline_kwargs`` for a ``MarigoldDepthPipeline``: its denoising steps (None: the
    pipeline's default) and ensemble size."""
    return {"num_inference_steps": steps, "ensemble_size": ensemble}


MODEL_KINDS = ("fiffdepth", "marigold", "depth-anything")


def split_model_kind(model: str) -> tuple[str | None, str]:
    """``"marigold:DIR"`` -> ("marigold", "DIR"); no known prefix -> (None, model)."""
    kind, _, rest = str(model).partition(":")
    return (kind, rest) if kind in MODEL_KINDS and rest else (None, str(model))


def load_predictor(model: str, device=None):
    """A FiffDepth or Marigold pipeline, or a Depth Anything predictor, from a directory or hub id.

    The kind is read from the directory (``model_index.json`` naming a Marigold pipeline, a
    transformers ``config.json`` of model type depth_anything; otherwise FiffDepth) or forced
    with a prefix: ``fiffdepth:``, ``marigold:``, ``depth-anything:``.
    """
    kind, src = split_model_kind(model)
    path = Path(src).expanduser()
    if kind is None:
        kind = "fiffdepth"
        if (path / "model_index.json").is_file():
            if "Marigold" in str(json.loads((path / "model_index.json").read_text()).get("_class_name", "")):
                kind = "marigold"
        elif (path / "config.json").is_file():
            if json.loads((path / "config.json").read_text()).get("model_type") == "depth_anything":
                kind = "depth-anything"
    if kind == "depth-anything":
        return depth_anything_predictor(src, device=device)
    if kind == "marigold":
        if (path / "empty_text_embedding.safetensors").is_file():  # a baseline of fiffdepth.marigold
            from .marigold import load_marigold

            pipe = load_marigold(path, device=device or "cpu")
        else:
            from diffusers import MarigoldDepthPipeline

            pipe = load_or_explain(MarigoldDepthPipeline.from_pretrained, src, "Marigold pipeline").to(device or "cpu")
            pipe.set_progress_bar_config(disable=True)
        return pipe
    return FiffDepthPipeline.from_pretrained(src, device=device)


PIPELINE_KINDS = {"FiffDepthPipeline": "fiffdepth", "MarigoldDepthPipeline": "marigold"}


def is_pipeline(predictor) -> bool:
    """A diffusers pipeline (called with Marigold's arguments, read through ``.prediction``)."""
    from diffusers import DiffusionPipeline

    return isinstance(predictor, DiffusionPipeline)


def output_space(predictor) -> str:
    if is_pipeline(predictor):
        return "disparity" if predictor.config.get("prediction_type") == "disparity" else "depth"
    return getattr(predictor, "output_space", "depth")


def describe_predictor(predictor, pipeline_kwargs: dict | None = None, seed: int = 0) -> dict:
    """What is scored (recorded in results.json): a pipeline's class, device, dtype and default
    processing resolution plus the call arguments, or a callable's ``info``."""
    if is_pipeline(predictor):
        name = type(predictor).__name__
        cfg = predictor.config
        info = {"kind": PIPELINE_KINDS.get(name, name), "pipeline": name, "output_space": output_space(predictor),
                "device": str(predictor.device), "dtype": str(predictor.dtype),
                "processing_resolution": cfg.get("processing_resolution", cfg.get("default_processing_resolution")),
                **(pipeline_kwargs or {})}
        if hasattr(predictor, "decoder_name"):
            info["decoder"] = predictor.decoder_name
        if _draws_noise(predictor):
            info["seed"] = seed
        return info
    return {"kind": type(predictor).__name__, **getattr(predictor, "info", {}), "output_space": output_space(predictor)}


def _is_marigold(predictor) -> bool:
    from diffusers import MarigoldDepthPipeline

    return isinstance(predictor, MarigoldDepthPipeline)


def _draws_noise(pipe) -> bool:
    return "generator" in inspect.signature(pipe.__call__).parameters


def pipeline_depths(pipe, images: Sequence[torch.Tensor], processing_resolution: int | None = None,
                    batch_size: int = 1, pipeline_kwargs: dict | None = None, seed: int = 0) -> list[np.ndarray]:
    """A diffusers depth pipeline's ``prediction`` for (3, H, W) images -> one (H, W) map per
    image. Same-size images share a call (Marigold takes one size per call). A pipeline that
    draws noise gets one generator per image and ensemble member, seeded ``seed + member``, so
    an image's prediction does not depend on its neighbours."""
    kwargs = dict(pipeline_kwargs or {})
    out: list = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    for idx in groups.values():
        if _draws_noise(pipe):
            members = int(kwargs.get("ensemble_size") or 1)
            device = pipe.device if pipe.device.type != "mps" else "cpu"
            kwargs["generator"] = [torch.Generator(device=device).manual_seed(seed + j) for _ in idx for j in range(members)]
        pred = pipe([images[i] for i in idx], processing_resolution=processing_resolution, match_input_resolution=True,
                    batch_size=batch_size, output_type="np", **kwargs).prediction
        for i, m in zip(idx, depth_maps(pred)):
            out[i] = m
    return out


def predict_raw(predictor, images: Sequence[torch.Tensor], processing_resolution: int | None = None,
                batch_size: int = 1, pipeline_kwargs: dict | None = None, seed: int = 0) -> list[np.ndarray]:
    """The predictor's own output (depth or disparity, see ``output_space``), one (H, W) float32
    array per (3, H, W) image, at the image's resolution: a pipeline's ``prediction``
    (``pipeline_depths``), or a callable's maps."""
    images = list(images)
    if is_pipeline(predictor):
        maps = pipeline_depths(predictor, images, processing_resolution, batch_size, pipeline_kwargs, seed)
    else:
        maps = list(predictor(images, processing_resolution))
    if len(maps) != len(images):
        raise ValueError(f"predictor returned {len(maps)} maps for {len(images)} images")
    out = []
    for m, im in zip(maps, images):
        m = np.asarray(m.detach().cpu() if torch.is_tensor(m) else m, dtype=np.float32).squeeze()
        if m.shape != tuple(im.shape[-2:]):
            raise ValueError(f"predictor returned a {m.shape} map for a {tuple(im.shape[-2:])} image")
        out.append(m)
    return out


def predict_depths(predictor, images: Sequence[torch.Tensor], processing_resolution: int | None = None,
                   batch_size: int = 1, pipeline_kwargs: dict | None = None, seed: int = 0) -> list[np.ndarray]:
    """Depth-like maps (larger = farther) for figures and comparisons: a disparity predictor's
    output goes through ``fiffdepth.teacher.disparity_to_depth``, the pseudo-label convention,
    with its background (sky) drawn as the far plane 1/eps instead of left invalid."""
    return depth_like(predict_raw(predictor, images, processing_resolution, batch_size, pipeline_kwargs, seed),
                      output_space(predictor))


def depth_like(maps: Sequence[np.ndarray], space: str) -> list[np.ndarray]:
    """``predict_raw``'s maps as ``predict_depths`` returns them (disparity through
    ``disparity_to_depth``, depth as is)."""
    if space == "disparity":
        from .teacher import PSEUDO_LABEL_EPS, disparity_to_depth

        return [disparity_to_depth(m, background=1.0 / PSEUDO_LABEL_EPS) for m in maps]
    return list(maps)


# ============================================================================ scoring one image


def aligned_depth(pred, gt, valid, space: str, protocol: EvalProtocol | None = None) -> np.ndarray:
    """A prediction (``space``: "depth" or "disparity", the predictor's own output) aligned to GT
    depth by least squares in that space on the valid pixels, as it is scored, as depth > 0 on
    every pixel."""
    max_res = protocol.alignment_max_res if protocol else None
    if space == "disparity":
        aligned = metrics.align_scale_shift_disparity(pred, gt, valid, max_res)
    else:
        aligned, _, _ = metrics.align_scale_shift(pred, gt, valid, max_res)
    return np.maximum(aligned, metrics.MIN_EVAL_DEPTH)


def _unaligned_depth(pred, space: str) -> np.ndarray:
    """Without GT depth: depth as is, disparity p as depth 1 / p (Depth Pro inverts depth back)."""
    return 1.0 / np.maximum(pred, metrics.BOUNDARY_DEPTH_EPS) if space == "disparity" else pred


def _boundary_f1_on_valid(pred, gt, valid, space, protocol) -> float:
    aligned = np.where(valid, aligned_depth(pred, gt, valid, space, protocol), np.nan)
    return metrics.boundary_f1(aligned, np.where(valid, gt, np.nan))


def score_item(kind: str, item: dict, pred: np.ndarray, space: str, protocol: EvalProtocol | None) -> dict:
    """Per-image metrics (fractions) of one dataset item against the prediction."""
    if kind == DA2K_PAIRS:
        ordering = -pred if space == "disparity" else pred  # smaller = closer
        n = len(item["pairs"])
        correct = int(round(metrics.da2k_accuracy(ordering, item["pairs"]) * n))
        return {"da2k_accuracy": correct / n, "pairs": n, "correct": correct}
    if kind == BOUNDARY_RECALL:
        return {"boundary_recall": metrics.boundary_recall(_unaligned_depth(pred, space), item["mask"][0].numpy())}
    gt, valid = item["depth"][0].numpy().astype(np.float64), item["valid_mask"][0].numpy().astype(bool)
    if not valid.any():
        raise DataError(f"{item['name']}: no valid depth pixel")
    out = {}
    if kind in (DEPTH, EMBEDDED):
        out.update(metrics.compute_depth_metrics(pred, gt, valid, protocol.min_depth, protocol.max_depth,
                                                 alignment=space, alignment_max_res=protocol.alignment_max_res))
    if kind in (BOUNDARY_F1, EMBEDDED):
        out["boundary_f1"] = _boundary_f1_on_valid(pred, gt, valid, space, protocol)
    return out


def aggregate_rows(kind: str, rows: list[dict]) -> dict:
    """Dataset-level metrics: the mean over images (Marigold, Depth Pro); DA-2K over all pairs."""
    if not rows:
        return {}
    if kind == DA2K_PAIRS:
        pairs = sum(r["pairs"] for r in rows)
        return {"da2k_accuracy": sum(r["correct"] for r in rows) / pairs, "pairs": pairs}
    keys = [k for k in rows[0] if k not in ("name", "index", "height", "width", "scene")]
    return metrics.aggregate([{k: r[k] for k in keys} for r in rows])


def scene_kinds(root) -> dict[str, str]:
    """Scene id -> kind ("indoor", "outdoor") from an embedded folder's ``meta.jsonl``; {} when the
    folder has none. A line that is not a JSON object with ``id`` and ``kind`` is an error naming
    the file and the line."""
    path = Path(root) / "meta.jsonl"
    if not path.is_file():
        return {}
    kinds = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
            kinds[str(meta["id"])] = str(meta["kind"])
        except (ValueError, KeyError, TypeError) as err:
            raise EvaluationError(f"{path}:{n}: not a scene record with 'id' and 'kind' ({err})") from None
    return kinds


def by_scene_kind(kind: str, rows: list[dict]) -> dict[str, dict]:
    """``{scene kind: {"n_images", "metrics"}}`` over the rows that carry ``scene``, kinds sorted;
    {} when no row does."""
    kinds = sorted({r["scene"] for r in rows if r.get("scene")})
    return {k: {"n_images": len(sub), "metrics": aggregate_rows(kind, sub)}
            for k in kinds for sub in [[r for r in rows if r.get("scene") == k]]}


# ============================================================================ evaluation


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = {"fiffdepth": __version__, "python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def evaluate_dataset(predictor, spec: str | DatasetSpec, processing_resolution: int | None = None,
                     batch_size: int = 1, max_images: int | None = None, progress: bool = True,
                     desc: str | None = None, pipeline_kwargs: dict | None = None,
                     seed: int = 0) -> tuple[dict, list[dict]]:
    """Score one dataset -> (summary, per-image rows). Bad files are warned about, skipped, counted.
    predictor, pipeline_kwargs, seed: see ``predict_raw``."""
    from tqdm.auto import tqdm

    spec = parse_dataset_spec(spec)
    kind, protocol = DATASETS[spec.name], protocol_of(spec.name)
    dataset = open_dataset(spec)
    if processing_resolution is None and protocol is not None and spec.name != "embedded":
        processing_resolution = protocol.processing_resolution  # Marigold's per-dataset setting (0 = native)
    space = output_space(predictor)
    kinds = scene_kinds(spec.path) if kind == EMBEDDED else {}
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    rows, skipped = [], []
    t0 = time.perf_counter()

    def skip(where: str, err: Exception) -> None:
        skipped.append(f"{where}: {err}")
        warnings.warn(f"{spec.name}: skipping {where} ({err})", stacklevel=3)

    bar = tqdm(total=n, desc=desc or spec.name, unit="img", disable=not progress)
    for start in range(0, n, max(1, batch_size)):
        batch = []
        for i in range(start, min(n, start + max(1, batch_size))):
            try:
                batch.append((i, dataset[i]))
            except DataError as err:
                skip(f"image {i}", err)
                bar.update(1)
        if not batch:
            continue
        preds = batch_or_one_by_one(
            lambda ims: predict_raw(predictor, ims, processing_resolution, batch_size, pipeline_kwargs, seed),
            [it["image"] for _, it in batch])
        for (i, item), pred in zip(batch, preds):
            bar.update(1)
            try:
                if isinstance(pred, Exception):
                    raise pred
                row = score_item(kind, item, pred, space, protocol)
            except (DataError, BadImageError) as err:
                skip(str(item["name"]), err)
                continue
            rows.append({"name": str(item["name"]), "index": i, **row,
                         **({"scene": kinds[str(item["name"])]} if str(item["name"]) in kinds else {})})
        if rows and kind != DA2K_PAIRS:
            main = "abs_rel" if "abs_rel" in rows[0] else next(k for k in rows[0] if k not in ("name", "index", "scene"))
            bar.set_postfix({main: f"{np.mean([r[main] for r in rows]):.3f}"}, refresh=False)
    bar.close()
    if not rows:
        warnings.warn(f"{spec.name}: no image could be scored ({len(skipped)} skipped)", stacklevel=2)
    summary = {
        "dataset": spec.name, "path": str(spec.path), "option": spec.option, "kind": kind,
        "metrics": aggregate_rows(kind, rows), "n_images": len(rows), "skipped": len(skipped),
        **({"by_scene": by_scene_kind(kind, rows)} if kinds else {}),
        "skipped_files": skipped, "processing_resolution": processing_resolution,
        "protocol": None if protocol is None else {  # max_depth None = unbounded (ETH3D), valid JSON
            "min_depth": protocol.min_depth, "max_depth": protocol.max_depth if np.isfinite(protocol.max_depth) else None,
            "eval_crop": protocol.eval_crop, "alignment_max_res": protocol.alignment_max_res},
        "alignment": space if kind in (DEPTH, EMBEDDED, BOUNDARY_F1) else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return summary, rows


def evaluate_model(predictor, dataset_specs: Sequence[str | DatasetSpec] = ("embedded",), out_dir=None,
                   progress: bool = True, max_images: int | None = None, processing_resolution: int | None = None,
                   batch_size: int = 1, label: str | None = None, model: str | None = None,
                   pipeline_kwargs: dict | None = None, seed: int = 0) -> dict:
    """Evaluate one predictor on every dataset; write per-image rows and tables when ``out_dir`` is set.

    predictor: a diffusers depth pipeline (``FiffDepthPipeline``, ``MarigoldDepthPipeline``, with
    ``pipeline_kwargs`` for its call and ``seed`` for its noise) or a callable (see the module
    docstring). dataset_specs:
    ``NAME:PATH[:OPTION]`` strings. processing_resolution: overrides every dataset's (None: the
    dataset protocol's for Table 1 sets, else the model's default). Returns the results.json dict:
    ``{"label", "model", "config", "versions", "datasets": {key: summary}}`` (key: ``dataset_keys``).
    """
    specs = [parse_dataset_spec(s) for s in dataset_specs]  # fail on a bad name/path before any work
    keys = dataset_keys(specs)
    if label is None:
        label = "FiffDepth" if isinstance(predictor, FiffDepthPipeline) else describe_predictor(predictor)["kind"]
    info = describe_predictor(predictor, pipeline_kwargs, seed)
    results = {
        "label": label, "model": model,
        "config": {"processing_resolution": processing_resolution, "batch_size": batch_size, "max_images": max_images,
                   "predictor": info},
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "datasets": {},
    }
    out_dir = None if out_dir is None else Path(out_dir)
    for spec, key in zip(specs, keys):
        summary, rows = evaluate_dataset(predictor, spec, processing_resolution, batch_size, max_images, progress,
                                         desc=f"{label}: {key}", pipeline_kwargs=pipeline_kwargs, seed=seed)
        results["datasets"][key] = summary
        if out_dir is not None:
            write_text(out_dir / key / "per_image.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if out_dir is not None:
        write_json(out_dir / "results.json", results)
        write_text(out_dir / "results.md", results_table([results]))
    return results


# ============================================================================ tables


def read_results(path) -> list[dict]:
    """The per-model result dicts of a results.json (one model, or ``{"models": [...]}``)."""
    data = json.loads(Path(path).read_text())
    return list(data["models"]) if "models" in data else [data]


def by_method(results_list: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """``{label: {dataset: metrics}}`` (the input of ``fiffdepth.tables``); repeated labels get " (2)"."""
    out: dict[str, dict[str, dict]] = {}
    for r in results_list:
        label, k = r["label"], 2
        while label in out:
            label, k = f"{r['label']} ({k})", k + 1
        out[label] = {(dataset_title(d) if d.startswith("embedded") else d): s["metrics"]
                      for d, s in r["datasets"].items()}
    return out


def is_mean_layout(result: dict) -> bool:
    """Whether a result dict is the mean-layout baseline's (``fiffdepth.baselines``)."""
    return result.get("config", {}).get("predictor", {}).get("kind") == MEAN_LAYOUT


def abs_rel_ratios(results_list: Sequence[dict]) -> list[dict[str, float | None]]:
    """Per result, ``{dataset key: its AbsRel / the mean-layout baseline's}`` (None where either
    is missing); all None when no result is the baseline's."""
    base = next((r["datasets"] for r in results_list if is_mean_layout(r)), {})
    out = []
    for r in results_list:
        ratios = {}
        for d, s in r["datasets"].items():
            mine, ref = s["metrics"].get("abs_rel"), base.get(d, {}).get("metrics", {}).get("abs_rel")
            ratios[d] = None if mine is None or not ref else mine / ref
        out.append(ratios)
    return out


def _fmt(value, scale: float, decimals: int) -> str:
    return "–" if value is None else f"{value * scale:.{decimals}f}"


def results_table(results_list: Sequence[dict] | dict) -> str:
    """Markdown: Table 1 (AbsRel ↓, δ1 ↑ ×100 per dataset, DA-2K Acc), Table 2 (boundary F1 / R),
    and a details table (all metrics, image and skipped counts, and AbsRel / the mean-layout
    baseline's when the baseline is among the results), each only when it has data."""
    if isinstance(results_list, dict):
        results_list = [results_list]
    table = by_method(results_list)
    present = list(dict.fromkeys(d for per in table.values() for d in per))
    sections = []
    embedded = [d for d in present if d.startswith(EMBEDDED_TITLE)]
    t1 = [d for d in tables.TABLE1_DATASETS if d in present] + embedded
    if t1 or "da2k" in present:
        sections.append("### Table 1 · affine-invariant depth (AbsRel, δ1 ×100; DA-2K accuracy %)\n\n"
                        + tables.table1_markdown(table, t1))
    f1 = [d for d in tables.TABLE2_F1_DATASETS if d in present] + embedded
    recall = [d for d in tables.TABLE2_RECALL_DATASETS if d in present]
    if f1 or recall:
        sections.append("### Table 2 · boundaries (F1 with depth GT, recall R with masks)\n\n"
                        + tables.table2_markdown(table, f1, recall))
    ratio = any(map(is_mean_layout, results_list))  # the baseline is there: AbsRel / its AbsRel
    lines = ["| Method | Dataset | images | skipped | AbsRel | δ1 | δ2 | δ3 | RMSE | F1 | R | Acc (%) |"
             + (" AbsRel / mean layout ↓ |" if ratio else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if ratio else "")]
    for (label, _), r, ratios in zip(table.items(), results_list, abs_rel_ratios(results_list)):
        for d, s in r["datasets"].items():
            m = s["metrics"]
            cells = [_fmt(m.get("abs_rel"), 100, 1), _fmt(m.get("delta1"), 100, 1), _fmt(m.get("delta2"), 100, 1),
                     _fmt(m.get("delta3"), 100, 1), _fmt(m.get("rmse"), 1, 3), _fmt(m.get("boundary_f1"), 1, 3),
                     _fmt(m.get("boundary_recall"), 1, 3), _fmt(m.get("da2k_accuracy"), 100, 1)]
            cells += [_fmt(ratios[d], 1, 2)] if ratio else []
            title = dataset_title(d)
            lines.append(f"| {label} | {title} | {s['n_images']} | {s['skipped']} | "
                         + " | ".join(cells) + " |")
    sections.append("### All metrics (AbsRel, δ ×100; RMSE in GT units"
                    + ("; AbsRel / mean layout: AbsRel over the no-model baseline's" if ratio else "") + ")\n\n" + "\n".join(lines) + "\n")
    scenes = scene_kind_table(results_list)
    if scenes:
        sections.append("### By scene kind (AbsRel, δ1 ×100" + ("; AbsRel / the mean layout's on the same scenes"
                                                               if ratio else "") + ")\n\n" + scenes)
    return "\n".join(sections)


def scene_kind_table(results_list: Sequence[dict]) -> str:
    """Markdown rows per method, embedded dataset and scene kind (the summaries' ``by_scene``):
    images, AbsRel, δ1, boundary F1, and AbsRel over the mean-layout baseline's on the same kind
    when the baseline is among the results. "" when no summary has scene kinds."""
    base = next((r["datasets"] for r in results_list if is_mean_layout(r)), None)
    lines = []
    for label, r in zip(by_method(results_list), results_list):
        for d, s in r["datasets"].items():
            for kind, part in s.get("by_scene", {}).items():
                m = part["metrics"]
                ref = (base or {}).get(d, {}).get("by_scene", {}).get(kind, {}).get("metrics", {}).get("abs_rel")
                cells = [_fmt(m.get("abs_rel"), 100, 1), _fmt(m.get("delta1"), 100, 1), _fmt(m.get("boundary_f1"), 1, 3)]
                cells += [_fmt(m["abs_rel"] / ref if ref and m.get("abs_rel") is not None else None, 1, 2)] if base else []
                lines.append(f"| {label} | {dataset_title(d)} | {kind} | {part['n_images']} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = "| Method | Dataset | Scenes | images | AbsRel ↓ | δ1 ↑ | F1 ↑ |" + (" AbsRel / mean layout ↓ |" if base else "")
    return "\n".join([head, "|---|---|---|---:|---:|---:|---:|" + ("---:|" if base else ""), *lines]) + "\n"


# ============================================================================ CLI: fiffdepth evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(DATASETS)
    parser.add_argument("--model", action="append", required=True,
                        help="model directory or hub id, repeatable (FiffDepth, Marigold or Depth Anything; force the "
                             "kind with a fiffdepth:/marigold:/depth-anything: prefix)")
    parser.add_argument("--label", action="append", default=None, help="table row name per --model (repeatable)")
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME:PATH[:OPTION]",
                        help=f"repeatable; NAME in {names} (default: embedded = the held-out scenes in "
                             f"outputs/data/eval); OPTION: the split file (Table 1 sets), pass (sintel), split "
                             f"(spring), subset (p3m), sample list (dis5k), annotations file (da2k)")
    parser.add_argument("--mean-layout", default=None, metavar="DIR",
                        help="training scenes (DIR/depth/*.npy, DIR/mask/*.png, e.g. outputs/data/synth): add the "
                             "mean-layout baseline row (no model, no image: the scenes' mean normalised depth, "
                             "scored like the models) and each method's AbsRel / the baseline's")
    parser.add_argument("--out", default="outputs/results/evaluate",
                        help="output directory: results.json, results.md, <dataset>/per_image.jsonl")
    parser.add_argument("--processing-resolution", type=int, default=None,
                        help="longest side for every dataset (0 = native; default: each dataset's protocol, "
                             "else the model's)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per model call")
    parser.add_argument("--max-images", type=int, default=None, help="first N images per dataset (smoke tests)")
    parser.add_argument("--marigold-steps", type=int, default=None, help="denoising steps of a Marigold model")
    parser.add_argument("--marigold-ensemble", type=int, default=1, help="ensemble size of a Marigold model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def run(args: argparse.Namespace) -> int:
    models = list(args.model)
    labels = list(args.label or [])
    if labels and len(labels) != len(models):
        print(f"error: {len(labels)} --label for {len(models)} --model", file=sys.stderr)
        return 2
    labels = labels or [Path(split_model_kind(m)[1]).name or m for m in models]
    out = Path(args.out)
    results = []
    jobs = [(False, m, label) for m, label in zip(models, labels)]  # (is the mean-layout baseline, model, label)
    if args.mean_layout:
        jobs.insert(0, (True, str(args.mean_layout), MEAN_LAYOUT_LABEL))
    try:
        specs = [parse_dataset_spec(s) for s in (args.dataset or ["embedded"])]
        for baseline, model, label in jobs:
            if baseline:
                from .baselines import mean_layout_predictor

                if not Path(model).is_dir():
                    raise EvaluationError(f"{model}: no such directory (--mean-layout)")
                predictor = mean_layout_predictor(model)
            else:
                predictor = load_predictor(model, args.device)
            kwargs = marigold_call(args.marigold_steps, args.marigold_ensemble) if _is_marigold(predictor) else None
            target = out if len(jobs) == 1 else out / _slug(label)
            results.append(evaluate_model(predictor, specs, target, progress=not args.no_progress,
                                          max_images=args.max_images, processing_resolution=args.processing_resolution,
                                          batch_size=args.batch_size, label=label, model=model, pipeline_kwargs=kwargs))
    except (FiffDepthError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(results) > 1:
        write_json(out / "results.json", {"models": results, "versions": _versions()})
        write_text(out / "results.md", results_table(results))
    print(results_table(results))
    if not args.mean_layout and any(s.name == "embedded" for s in specs):
        print("note: no mean-layout baseline row (no model, no image); add it with --mean-layout DIR, the training "
              "scenes (e.g. outputs/data/synth)")
    skipped = sum(s["skipped"] for r in results for s in r["datasets"].values())
    empty = [f"{r['label']}: {d}" for r in results for d, s in r["datasets"].items() if s["n_images"] == 0]
    note = f"; {skipped} image(s) skipped" if skipped else ""
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}{note}")
    if empty:
        print(f"error: no image scored for {', '.join(empty)}", file=sys.stderr)
        return 1
    return 0
