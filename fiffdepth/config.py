"""Typed configuration with two named presets: ``paper`` (Section 4.1) and ``tiny`` (laptop CPU).

Defaults equal the paper's values. A config round-trips through YAML/JSON, and any field can
be overridden with a dotted key, e.g. ``loss.gamma=0.7`` on the command line
(``--set loss.gamma=0.7``) or as a papermill parameter (``overrides={"loss.gamma": 0.7}``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_text
from .hub import FiffDepthError

SD2_HUB_ID = "stabilityai/stable-diffusion-2"
DA2_LARGE_HUB_ID = "depth-anything/Depth-Anything-V2-Large-hf"


@dataclass
class ModelConfig:
    """The denoiser ε̂θ and its frozen VAE.

    ``pretrained`` is a hub id or a local directory in the Stable Diffusion layout
    (``unet/``, ``vae/``, ``scheduler/``, optionally ``text_encoder/`` + ``tokenizer/``).
    When it is empty, the UNet and VAE are built from ``unet``/``vae`` (diffusers config
    kwargs) with random weights — the tiny preset's starting point before ``fiffdepth pretrain``.
    """

    pretrained: str = SD2_HUB_ID
    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    # DDPM schedule of the generator (SD2: 1000 steps, scaled-linear betas, v-prediction).
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "v_prediction"
    processing_resolution: int = 768
    gradient_checkpointing: bool = False
    # "random": keep the pretrained VAE, scheduler and prompt embedding, but start the UNet from
    # random weights (the "no generator prior" baseline; the latent space stays the same).
    unet_init: str = "pretrained"


@dataclass
class LossConfig:
    """Eq. 7 weights and the Fig. 7 ablation switches."""

    gamma: float = 0.5  # Eq. 2 blend of image and depth latents
    lambda_mae: float = 1.0
    lambda_gm: float = 0.5
    lambda_k: float = 0.2
    # Ablations (Fig. 7): keep the diffusion trajectory (L_k)?
    trajectory: bool = True
    # "blend" = Eq. 2 target; "image" = pure image latent (γ = 1)
    trajectory_target: str = "blend"
    # where the teacher's pseudo-labels supervise real images: "d_minus1" (Eq. 4), "d0", "none"
    teacher_supervision: str = "d_minus1"
    # Marigold-style latent valid mask for synthetic GT (sky / invalid pixels excluded)
    use_valid_mask: bool = True


@dataclass
class DataConfig:
    synthetic: list = field(default_factory=list)  # "kind:path" entries (embedded, hypersim, vkitti)
    real: list = field(default_factory=list)  # folders or tar shards of unlabeled images
    pseudo_labels: str = ""  # folder written by `fiffdepth pseudolabel`
    resolution: int = 768  # square training frames; Virtual KITTI keeps its shape, never upsampled
    num_workers: int = 4  # DataLoader workers reading files for the latent cache (same cache for any count)
    # cached versions of each training image, augmented in pixel space before encoding:
    # 0 = the frame, 1 = its mirror image, 2+ = a random zoomed crop (60–100 % of the side), mirrored at random
    augmentations: int = 2


@dataclass
class TeacherConfig:
    pretrained: str = DA2_LARGE_HUB_ID
    batch_size: int = 8


@dataclass
class TrainConfig:
    batch_size: int = 32  # total per optimisation step, half synthetic and half real
    iterations: int = 10_000
    learning_rate: float = 3e-5
    lr_warmup_steps: int = 100
    lr_schedule: str = "constant_with_warmup"
    weight_decay: float = 0.0
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"
    ema: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 1000
    heldout: int = 0  # synthetic samples kept out of training for the held-out d0 loss
    seed: int = 0
    output_dir: str = "runs/fiffdepth-paper"
    # accelerate's tracker: "tensorboard", "wandb", "none", or "auto" (TensorBoard where installed)
    report_to: str = "auto"


@dataclass
class FiffDepthConfig:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FiffDepthConfig":
        return _from_dict(cls, d, "config")

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text(path, text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def load(cls, path: str | Path) -> "FiffDepthConfig":
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read config ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def override(self, overrides: dict[str, Any] | list[str] | None) -> "FiffDepthConfig":
        """Return a copy with dotted-key overrides applied (``{"loss.gamma": 0.7}`` or ``["loss.gamma=0.7"]``)."""
        return apply_overrides(self, overrides)


# -- presets -------------------------------------------------------------------------------

TINY_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=[32, 64, 128],
    # attention only at the coarsest level (8×8 latents at 128 px): the finer levels are
    # convolutional, which is where a CPU step's time goes
    down_block_types=["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    cross_attention_dim=32,
    attention_head_dim=[2, 4, 8],
    use_linear_projection=True,
    norm_num_groups=16,
)

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=128,
    scaling_factor=1.0,
)


def paper_config() -> FiffDepthConfig:
    """Section 4.1: SD2, DDPM 1000 steps, γ=0.5, λ_MAE=1, λ_GM=0.5, λ_k=0.2, batch 32, 10k iterations."""
    return FiffDepthConfig(
        preset="paper",
        data=DataConfig(
            synthetic=["hypersim:data/hypersim", "vkitti:data/vkitti"],
            real=["data/laion_art"],
            pseudo_labels="data/laion_art_pseudo",
            resolution=768,
        ),
    )


def tiny_config() -> FiffDepthConfig:
    """Same classes, small configs: a training step takes well under a second on 2 CPU cores.

    The priors are the ones shipped in ``weights/`` (``fiffdepth.weights``), made by
    ``fiffdepth pretrain``; ``model.pretrained=""`` gives the same UNet/VAE with random weights.
    """
    from .weights import WEIGHTS_DIR

    return FiffDepthConfig(
        preset="tiny",
        model=ModelConfig(
            pretrained=str(WEIGHTS_DIR / "generator"),
            unet=copy.deepcopy(TINY_UNET),
            vae=copy.deepcopy(TINY_VAE),
            processing_resolution=128,
        ),
        data=DataConfig(
            synthetic=["embedded:outputs/data/synth"],
            real=["outputs/data/real"],
            pseudo_labels="outputs/data/pseudo",
            resolution=128,
            num_workers=0,
            augmentations=2,
        ),
        teacher=TeacherConfig(pretrained=str(WEIGHTS_DIR / "teacher"), batch_size=16),
        train=TrainConfig(
            batch_size=8,
            iterations=250,
            learning_rate=1e-3,
            lr_warmup_steps=20,
            lr_schedule="cosine",
            mixed_precision="no",
            checkpoint_every=200,
            keep_checkpoints=2,
            log_every=10,
            eval_every=200,
            heldout=32,
            output_dir="runs/fiffdepth-tiny",
        ),
    )


PRESETS = {"paper": paper_config, "tiny": tiny_config}


def get_config(preset: str = "tiny", overrides: dict[str, Any] | list[str] | None = None) -> FiffDepthConfig:
    """A preset by name (or a YAML/JSON file path), with dotted-key overrides applied."""
    if preset in PRESETS:
        cfg = PRESETS[preset]()
    elif Path(preset).is_file():
        cfg = FiffDepthConfig.load(preset)
    else:
        raise ValueError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)} or pass a .yaml/.json file")
    return apply_overrides(cfg, overrides)


# -- overrides -----------------------------------------------------------------------------


def apply_overrides(cfg: FiffDepthConfig, overrides: dict[str, Any] | list[str] | None) -> FiffDepthConfig:
    if not overrides:
        return copy.deepcopy(cfg)
    if isinstance(overrides, (list, tuple)):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like section.field=value")
            key, value = item.split("=", 1)
            pairs[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        overrides = pairs
    data = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"unknown config key {key!r}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return FiffDepthConfig.from_dict(data)


def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _coerce(tp, value, where: str):
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        if isinstance(value, (bool, int)):
            return bool(value)
    elif tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    elif tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise ValueError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


# -- CLI: `fiffdepth config` ---------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    """The two options every command that takes a config shares."""
    parser.add_argument("--preset", default=default_preset, help="preset name (tiny | paper) or a YAML/JSON config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set loss.gamma=0.7 (repeatable)",
    )


class ConfigError(FiffDepthError, ValueError):
    """A preset, config file or ``--set`` override that does not make a config (one CLI line)."""


def config_from_args(args: argparse.Namespace) -> FiffDepthConfig:
    try:
        return get_config(args.preset, args.overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format")
    parser.add_argument("--out", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    text = cfg.to_yaml(args.out) if args.format == "yaml" else cfg.to_json(args.out)
    if not args.out:
        sys.stdout.write(text)
    return 0
