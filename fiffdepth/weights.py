"""The embedded weights shipped in the repository (``weights/``), and how they get there.

At paper scale the generator (Stable Diffusion 2) and the teacher (Depth Anything V2-Large)
arrive pretrained from the hub. The embedded default mirrors that with three small models
made here and committed under ``weights/``, each a directory in its library's own layout,
loaded by the libraries' real ``from_pretrained`` code:

- ``weights/generator``: ``AutoencoderKL`` + ``UNet2DConditionModel`` + DDPM scheduler + a tiny
  CLIP text encoder and tokenizer (the Stable Diffusion layout), from ``fiffdepth pretrain``;
- ``weights/teacher``: ``DepthAnythingForDepthEstimation`` + its image processor (the
  transformers layout), from ``fiffdepth pretrain``;
- ``weights/fiffdepth``: the fine-tuned embedded FiffDepth model (``FiffDepthPipeline``
  layout), from ``fiffdepth train``.

``export`` copies a trained directory there, storing the diffusers models' float32 tensors as
float16 (diffusers loads them back as float32), writes the model card ``README.md`` and a fresh
sha256 ``manifest.json`` of what it wrote.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = ("generator", "teacher", "fiffdepth")
FP16_SUBFOLDERS = ("unet", "vae")
SKIPPED = ("logs", "checkpoints")  # a run directory's TensorBoard logs and resume checkpoints stay behind


def shipped(name: str) -> Path:
    """``weights/<name>`` (one of ``SHIPPED``); a clear error when the folder is absent."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped model {name!r}: choose one of {SHIPPED}")
    path = WEIGHTS_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: shipped weights missing (re-create them with `fiffdepth pretrain` / "
                                f"`fiffdepth train`, see {WEIGHTS_DIR / 'README.md'})")
    return path


def export(src: str | Path, dst: str | Path, card: str, fp16: bool = True) -> Path:
    """Copy the model directory ``src`` to ``dst`` (atomically), float32 → float16 in the
    ``unet/`` and ``vae/`` safetensors when ``fp16``, and write ``card`` as ``dst/README.md``."""
    import torch
    from safetensors.torch import load_file, save_file

    from .atomic import MANIFEST, staged_dir, write_manifest

    src, dst = Path(src), Path(dst)
    with staged_dir(dst) as tmp:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if not f.is_file() or f.name.startswith(".") or rel.parts[0] in SKIPPED or rel.as_posix() == MANIFEST:
                continue
            out = tmp / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            top = f.relative_to(src).parts[0]
            if fp16 and f.suffix == ".safetensors" and top in FP16_SUBFOLDERS:
                tensors = {k: (v.half() if v.dtype == torch.float32 else v).contiguous() for k, v in load_file(str(f)).items()}
                save_file(tensors, str(out), metadata={"format": "pt"})
            else:
                shutil.copy2(f, out)
        (tmp / "README.md").write_text(card)
        write_manifest(tmp)  # the float16 files' checksums, verified on load
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fiffdepth.weights", description="copy a trained model into weights/")
    p.add_argument("src")
    p.add_argument("name", choices=SHIPPED)
    p.add_argument("--card", required=True, help="model card (markdown file) to write as README.md")
    p.add_argument("--fp32", action="store_true", help="keep float32 tensors")
    args = p.parse_args(argv)
    out = export(args.src, WEIGHTS_DIR / args.name, Path(args.card).read_text(), fp16=not args.fp32)
    print(json.dumps({"exported": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
