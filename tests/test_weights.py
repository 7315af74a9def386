"""The shipped embedded weights (weights/): loaded by the libraries' own ``from_pretrained``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiffdepth.weights import WEIGHTS_DIR, export, shipped


def test_shipped_generator_loads_with_diffusers_and_our_loader():
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from fiffdepth.model import FiffDepthModel

    root = shipped("generator")
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
    assert next(unet.parameters()).dtype == torch.float32  # stored float16, loaded float32
    assert DDPMScheduler.from_pretrained(root, subfolder="scheduler").config.prediction_type == "v_prediction"
    CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    CLIPTextModel.from_pretrained(root, subfolder="text_encoder")
    model = FiffDepthModel.from_pretrained(root)
    assert model.vae_scale_factor == 4 and vae.config.latent_channels == unet.config.in_channels == 4
    assert (root / "README.md").read_text().startswith("# ")


@pytest.mark.parametrize("name", ["generator", "teacher", "fiffdepth"])
def test_shipped_manifest_matches_the_files(name):
    """A shipped folder's sha256 manifest (written by ``export``) still matches every file in it:
    editing a model card without rewriting the manifest makes the loaders refuse the folder."""
    from fiffdepth.atomic import MANIFEST, verify_manifest

    root = shipped(name)
    if not (root / MANIFEST).is_file():
        pytest.skip(f"{root} has no {MANIFEST}")
    assert verify_manifest(root) is None


def test_shipped_teacher_predicts_disparity():
    from fiffdepth.teacher import Teacher

    t = Teacher.from_pretrained(shipped("teacher"), device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    disp = t.predict_disparity([img])[0]
    assert disp.shape == (40, 56) and np.isfinite(disp).all()


def test_shipped_fiffdepth_model_predicts_with_the_pipeline():
    from fiffdepth.pipeline import FiffDepthPipeline

    pipe = FiffDepthPipeline.from_pretrained(shipped("fiffdepth"))
    assert pipe.config.processing_resolution == 128
    depth = pipe(torch.rand(3, 48, 64)).prediction
    assert depth.shape == (1, 48, 64, 1) and np.isfinite(depth).all()


def test_export_stores_float16_and_loads_back_as_float32(tmp_path, tiny_cfg):
    from diffusers import UNet2DConditionModel

    from fiffdepth.model import FiffDepthModel

    src = tmp_path / "src"
    model = FiffDepthModel.from_config(tiny_cfg.model, seed=0)
    model.save_pretrained(src)
    (src / "logs").mkdir()
    (src / "logs" / "events").write_text("x")
    dst = export(src, tmp_path / "dst", "# card\n")
    assert (dst / "README.md").read_text() == "# card\n" and not (dst / "logs").exists()
    back = UNet2DConditionModel.from_pretrained(dst, subfolder="unet")
    for (name, a), b in zip(model.unet.state_dict().items(), back.state_dict().values()):
        assert b.dtype == torch.float32
        assert torch.equal(a.half().float(), b), name


def test_unknown_shipped_name_is_an_error():
    with pytest.raises(ValueError):
        shipped("nope")
    assert WEIGHTS_DIR.name == "weights"


def test_shipped_model_is_labelled_with_all_its_fine_tuning_stages():
    import json

    from fiffdepth import stages

    summary = json.loads((shipped("fiffdepth") / "summary.json").read_text())
    # each stage's summary adds its own steps to those of the model it started from
    assert summary["total_steps"] == summary["steps"] + summary.get("fine_tuned_from", {}).get("total_steps", 0)
    assert stages.label_of(stages.SHIPPED) == f"FiffDepth, shipped weights ({summary['total_steps']} steps)"
