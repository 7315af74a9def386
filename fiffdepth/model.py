"""FiffDepthModel: a diffusion UNet used as a deterministic feed-forward depth network.

Paper, Section 3.1–3.3:

    d0  = ε̂θ(x0, t = 0)      (Eq. 1)  image latent  -> depth latent
    d₋₁ = ε̂θ(d0, t = −1)     (Eq. 4)  one step further, supervised by the teacher on real images

The UNet keeps its original 4-channel input: the image latent alone is the input (no channel
concatenation as in Marigold). Text conditioning is the empty prompt, computed once from the
text encoder (as Marigold: tokenizer output of "" is BOS+EOS, no padding) and stored with the
model, so inference never needs the text encoder or tokenizer.

Timesteps: diffusers' sinusoidal embedding takes t = −1 and t = 0 as they are. The feed-forward
timesteps are *embedding inputs only*; they are never used to index ``alphas_cumprod`` (Python
would wrap −1 to step 999). Trajectory steps (Eq. 2–3) use diffusers indices 1..T−1, see
``fiffdepth.losses.sample_trajectory_timesteps``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn

from .atomic import verify_manifest
from .config import ModelConfig
from .hub import FiffDepthError, load_or_explain, looks_like_local_path

FEED_FORWARD_T = 0  # Eq. 1
EXTEND_T = -1  # Eq. 4
INDEX_FILE = "model_index.json"  # diffusers' pipeline index: components and the pipeline's config
PIPELINE_MODULE = "fiffdepth_pipeline"  # <this>.py in a model directory names the pipeline class for diffusers
EMPTY_EMBEDDING_FILE = "empty_text_embedding.safetensors"  # where directories before issue 16 kept the embedding


def empty_prompt_embedding(tokenizer, text_encoder) -> torch.Tensor:
    """Embedding of the empty prompt: (1, 2, D) for CLIP (BOS + EOS only, no padding)."""
    tokens = tokenizer("", padding="do_not_pad", truncation=True, return_tensors="pt")
    ids = tokens.input_ids.to(text_encoder.device)
    with torch.no_grad():
        return text_encoder(ids)[0].detach().float().cpu()


def make_scheduler(cfg: ModelConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
    )


class FiffDepthModel(nn.Module):
    """ε̂θ with its frozen VAE, DDPM schedule and stored empty-prompt embedding.

    unet: diffusers ``UNet2DConditionModel`` (4 → 4 channels)
    vae: diffusers ``AutoencoderKL`` (frozen; used by the codecs)
    scheduler: diffusers ``DDPMScheduler`` (training schedule of the generator)
    empty_text_embedding: (1, L, D) tensor
    """

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDPMScheduler,
                 empty_text_embedding: torch.Tensor, processing_resolution: int = 768):
        super().__init__()
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"UNet takes {unet.config.in_channels} channels but the VAE latent has "
                f"{vae.config.latent_channels}: FiffDepth feeds the image latent alone (Eq. 1)"
            )
        if empty_text_embedding.ndim != 3 or empty_text_embedding.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(
                f"empty text embedding of shape {tuple(empty_text_embedding.shape)} does not match the "
                f"UNet's cross_attention_dim {unet.config.cross_attention_dim}"
            )
        self.unet = unet
        self.vae = vae
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.scheduler = scheduler
        self.register_buffer("empty_text_embedding", empty_text_embedding.float(), persistent=False)
        self.processing_resolution = int(processing_resolution)

    # -- the two feed-forward steps --------------------------------------------------------
    def denoise(self, sample: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """ε̂θ(sample, t): one UNet pass. timesteps: int or (B,) tensor of embedding inputs."""
        b = sample.shape[0]
        if not torch.is_tensor(timesteps):
            timesteps = torch.full((b,), int(timesteps), dtype=torch.long, device=sample.device)
        cond = self.empty_text_embedding.to(device=sample.device, dtype=sample.dtype).expand(b, -1, -1)
        return self.unet(sample, timesteps.to(sample.device), encoder_hidden_states=cond, return_dict=False)[0]

    def predict_latent(self, x0: torch.Tensor) -> torch.Tensor:
        """Eq. 1: d0 = ε̂θ(x0, t = 0).  x0: (B, 4, h, w) image latent -> (B, 4, h, w) depth latent."""
        return self.denoise(x0, FEED_FORWARD_T)

    def extend(self, d0: torch.Tensor) -> torch.Tensor:
        """Eq. 4: d₋₁ = ε̂θ(d0, t = −1).  d0: (B, 4, h, w) -> (B, 4, h, w)."""
        return self.denoise(d0, EXTEND_T)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.predict_latent(x0)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: ModelConfig, seed: int = 0) -> "FiffDepthModel":
        """Random-initialised UNet and VAE from diffusers config kwargs (tiny preset, or timing runs)."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            unet = UNet2DConditionModel(**cfg.unet)
            vae = AutoencoderKL(**cfg.vae)
            # No text encoder exists for a model built here: a fixed, seeded stand-in for the
            # empty-prompt embedding (BOS + EOS tokens), stored with the model like SD2's.
            emb = torch.randn(1, 2, unet.config.cross_attention_dim) * 0.5
        finally:
            torch.random.set_rng_state(gen_state)
        return cls(unet, vae, make_scheduler(cfg), emb, cfg.processing_resolution)

    def reinit_unet(self, seed: int = 0) -> "FiffDepthModel":
        """Replace the UNet by a randomly initialised one of the same config (seeded; the global RNG
        is left as it was). The VAE, scheduler and prompt embedding stay."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.unet = UNet2DConditionModel.from_config(self.unet.config).to(self.unet.dtype)
        finally:
            torch.random.set_rng_state(gen_state)
        return self

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, cfg: ModelConfig | None = None,
                        torch_dtype: torch.dtype | None = None) -> "FiffDepthModel":
        """Load from a FiffDepth directory, a Stable Diffusion directory, or a hub id.

        Both layouts have ``unet/``, ``vae/`` and ``scheduler/`` subfolders. A FiffDepth directory
        (``FiffDepthPipeline.save_pretrained``) holds the empty-prompt embedding and the processing
        resolution in its ``model_index.json`` (the pipeline's config); an SD directory has
        ``text_encoder/`` + ``tokenizer/``, from which the embedding is computed once. Directories
        written before issue 16 (``empty_text_embedding.safetensors``, the resolution under the
        index's ``fiffdepth`` key) load too.

        A local FiffDepth directory must hold ``model_index.json``; when it has a ``manifest.json``
        (written by ``save_pretrained``) every file it lists is checked against its sha256 first. The
        processing resolution is the index's, else ``cfg``'s when a config is given, else the
        UNet's ``sample_size`` × the VAE's scale factor.
        """
        cfg_given = cfg is not None
        cfg = cfg or ModelConfig()
        src = str(id_or_path)
        local = looks_like_local_path(src)
        index = _check_model_dir(Path(src).expanduser()) if local else None
        kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        unet = load_or_explain(lambda s: UNet2DConditionModel.from_pretrained(s, subfolder="unet", **kw), src, "UNet")
        vae = load_or_explain(lambda s: AutoencoderKL.from_pretrained(s, subfolder="vae", **kw), src, "VAE")
        if not local:  # the hub answered for the UNet: its index now (the processing resolution, the embedding)
            index = _hub_index(src)
        index = index or {}
        scheduler = _load_scheduler(src, cfg)
        if index.get("empty_text_embedding") is not None:
            emb = torch.tensor(index["empty_text_embedding"], dtype=torch.float32)
        else:
            emb = _load_empty_embedding(src)
        res = index.get("processing_resolution", index.get("fiffdepth", {}).get("processing_resolution"))
        if res is None and cfg_given:
            res = cfg.processing_resolution
        if res is None:
            if not unet.config.get("sample_size"):
                raise FiffDepthError(f"{src}: no processing resolution: {INDEX_FILE} has no processing_resolution "
                                     "and the UNet config no sample_size")
            sample = unet.config.sample_size
            res = (max(sample) if isinstance(sample, (list, tuple)) else int(sample)) * 2 ** (len(vae.config.block_out_channels) - 1)
        return cls(unet, vae, scheduler, emb, int(res))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model as a ``FiffDepthPipeline`` directory (diffusers' layout, atomically;
        ``FiffDepthPipeline.save_pretrained``). Nothing about the model is changed."""
        from .pipeline import FiffDepthPipeline  # the directory layout is the pipeline's

        return FiffDepthPipeline.from_model(self, prepare=False).save_pretrained(directory)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_downsample(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)


def _check_model_dir(path: Path) -> dict | None:
    """The index of the local model directory ``path``, after checking the files its manifest
    lists; one line naming the file when something is wrong. A FiffDepth directory must have its
    index; a Stable Diffusion one may lack it (None). None too when ``path`` is not a directory
    (the loaders say why)."""
    if not path.is_dir():
        return None
    problem = verify_manifest(path, required=False)
    if problem is not None:
        raise FiffDepthError(problem)
    index = _read_index(str(path))
    if index is None and any((path / f).is_file() for f in (f"{PIPELINE_MODULE}.py", EMPTY_EMBEDDING_FILE)):
        raise FiffDepthError(f"{path / INDEX_FILE}: missing from a FiffDepth model directory (it holds the processing "
                             "resolution; write the directory with save_pretrained)")
    return index


def _read_index(src: str) -> dict | None:
    p = Path(src) / INDEX_FILE
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except ValueError as err:
            raise FiffDepthError(f"{p}: not valid JSON ({err})") from None
    return None


def _hub_index(src: str) -> dict | None:
    """The ``model_index.json`` of a hub repo (None when it has none or cannot be fetched: the
    component loaders then say why)."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(src, INDEX_FILE)).read_text())
    except Exception:  # network errors come in many types; the UNet loader reports them in one line
        return None


def _load_scheduler(src: str, cfg: ModelConfig) -> DDPMScheduler:
    local = Path(src)
    if looks_like_local_path(src) and not (local / "scheduler").is_dir():
        return make_scheduler(cfg)
    sched = load_or_explain(lambda s: DDPMScheduler.from_pretrained(s, subfolder="scheduler"), src, "scheduler")
    # SD2 ships a DDIM config; the training schedule we keep is DDPM with the same betas (Sec. 4.1).
    if sched.config.prediction_type != cfg.prediction_type:
        sched = DDPMScheduler.from_config(sched.config, prediction_type=cfg.prediction_type)
    return sched


def _load_empty_embedding(src: str) -> torch.Tensor:
    local = Path(src)
    if looks_like_local_path(src):
        f = local / EMPTY_EMBEDDING_FILE
        if f.is_file():
            try:
                return load_file(str(f))["empty_text_embedding"]
            except Exception as err:
                raise FiffDepthError(f"{f}: unreadable embedding file ({err})") from None
        if not ((local / "text_encoder").is_dir() and (local / "tokenizer").is_dir()):
            raise FiffDepthError(
                f"{local}: neither {EMPTY_EMBEDDING_FILE} nor text_encoder/ + tokenizer/ found; "
                "cannot build the empty-prompt conditioning"
            )
    else:
        try:  # a FiffDepth checkpoint published on the hub before issue 16
            from huggingface_hub import hf_hub_download

            return load_file(hf_hub_download(src, EMPTY_EMBEDDING_FILE))["empty_text_embedding"]
        except Exception:
            pass
    from transformers import AutoTokenizer, CLIPTextModel

    tokenizer = load_or_explain(lambda s: AutoTokenizer.from_pretrained(s, subfolder="tokenizer"), src, "tokenizer")
    text_encoder = load_or_explain(lambda s: CLIPTextModel.from_pretrained(s, subfolder="text_encoder"), src, "text encoder")
    return empty_prompt_embedding(tokenizer, text_encoder)
