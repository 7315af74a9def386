"""The ``paper`` preset end to end at toy size (issue 15): a Stable-Diffusion-2-layout generator,
a Depth-Anything-V2 teacher, Hypersim (raw HDF5), Virtual KITTI 2 and LAION-style tar shards
on disk in their own formats, through the stage functions the notebooks call:
pseudolabel → latent cache → train → save → reload → predict → evaluate."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import (make_scannet_fixture, write_depth_anything_layout, write_hypersim_raw, write_sd2_layout,
                      write_vkitti2, write_webdataset_shards)
from fiffdepth import stages
from fiffdepth.data.real import TarShards
from fiffdepth.evaluate import evaluate_model
from fiffdepth.model import FiffDepthModel
from fiffdepth.pipeline import FiffDepthPipeline
from fiffdepth.train import read_log

STEPS = 3


@pytest.mark.slow
def test_paper_preset_runs_end_to_end_on_sd2_layout(tmp_path):
    data = tmp_path / "data"
    overrides = {
        "model.pretrained": str(write_sd2_layout(tmp_path / "sd2")),
        "teacher.pretrained": str(write_depth_anything_layout(tmp_path / "da2")),
        "data.synthetic": [f"hypersim_raw:{write_hypersim_raw(data / 'hypersim')}",
                           f"vkitti:{write_vkitti2(data / 'vkitti')}"],
        "data.real": [str(write_webdataset_shards(data / "laion_art"))],
        "data.pseudo_labels": str(data / "laion_art_pseudo"),
        # toy sizes; everything else is the paper preset (bf16 autocast, γ, λs, warm-up, ...)
        "data.resolution": 128, "model.processing_resolution": 128, "train.batch_size": 4,
        "train.checkpoint_every": 2, "train.log_every": 1,
    }
    out = tmp_path / "out"
    cfg = stages.stage_config(out, "paper", overrides)
    assert cfg.preset == "paper" and cfg.model.prediction_type == "v_prediction" and cfg.train.mixed_precision == "bf16"

    labels = stages.make_pseudo_labels(out, preset="paper", overrides=overrides, progress=False)
    assert labels["written"] == 6 and not labels["failed"]

    summary = stages.train_variant(out, "fiffdepth", steps=STEPS, preset="paper", overrides=overrides, progress=False)
    assert summary["steps"] == STEPS
    log = [r for r in read_log(out / "runs" / "fiffdepth" / "losses.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert all(math.isfinite(v) for r in log for k, v in r.items() if k != "step")
    assert all(r["dm1_mae"] > 0 and r["d0_mae"] > 0 and r["traj"] > 0 for r in log)  # every Eq. 7 term is active
    assert (out / "runs" / "fiffdepth" / "checkpoints" / "checkpoint-000002" / "manifest.json").is_file()

    # the saved run reloads: same UNet as the SD2 layout's, conditioning from its CLIP text encoder
    model = FiffDepthModel.from_pretrained(out / "runs" / "fiffdepth")
    sd2 = FiffDepthModel.from_pretrained(overrides["model.pretrained"])
    assert model.unet.config.down_block_types == sd2.unet.config.down_block_types
    torch.testing.assert_close(model.empty_text_embedding, sd2.empty_text_embedding)
    assert model.vae.config.scaling_factor == 0.18215

    pipe = FiffDepthPipeline.from_pretrained(out / "runs" / "fiffdepth")
    photo = torch.from_numpy(TarShards(data / "laion_art").read(0)[0]).permute(2, 0, 1).float() / 255.0
    depth = pipe(photo).prediction[0, ..., 0]
    assert depth.shape == photo.shape[-2:] and np.isfinite(np.asarray(depth)).all()

    res = evaluate_model(pipe, [f"scannet:{make_scannet_fixture(tmp_path / 'scannet')}"], progress=False,
                         processing_resolution=128)
    metrics = res["datasets"]["scannet"]["metrics"]
    assert math.isfinite(metrics["abs_rel"]) and 0 <= metrics["delta1"] <= 1
    assert json.loads(json.dumps(res))  # the results are plain JSON

