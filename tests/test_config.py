"""Config: presets, YAML/JSON round trip, CLI and papermill overrides."""

import subprocess
import sys

import pytest
import yaml

from fiffdepth.config import FiffDepthConfig, get_config


def test_paper_preset_matches_section_4_1():
    c = get_config("paper")
    assert c.model.pretrained == "stabilityai/stable-diffusion-2"
    assert c.model.num_train_timesteps == 1000 and c.model.prediction_type == "v_prediction"
    assert (c.loss.gamma, c.loss.lambda_mae, c.loss.lambda_gm, c.loss.lambda_k) == (0.5, 1.0, 0.5, 0.2)
    assert c.train.batch_size == 32 and c.train.iterations == 10_000
    assert c.teacher.pretrained == "depth-anything/Depth-Anything-V2-Large-hf"


def test_tiny_preset_uses_same_classes():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    c = get_config("tiny")
    UNet2DConditionModel(**c.model.unet)
    AutoencoderKL(**c.model.vae)
    assert c.loss == get_config("paper").loss  # the method is the same; only sizes differ


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip(tmp_path, fmt):
    c = get_config("tiny", {"loss.gamma": 0.7, "train.iterations": 5})
    path = tmp_path / f"c.{fmt}"
    (c.to_yaml if fmt == "yaml" else c.to_json)(path)
    assert FiffDepthConfig.load(path) == c


def test_overrides_are_typed_and_checked():
    c = get_config("tiny", ["loss.gamma=0.25", "loss.trajectory=false", "train.iterations=7", "data.real=a,b"])
    assert c.loss.gamma == 0.25 and c.loss.trajectory is False and c.train.iterations == 7
    assert c.data.real == ["a", "b"]
    with pytest.raises(ValueError, match="unknown config key"):
        get_config("tiny", {"loss.gama": 1})
    with pytest.raises(ValueError, match="expected int"):
        get_config("tiny", {"train.iterations": "many"})


def test_bad_config_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        FiffDepthConfig.load(p)


def test_cli_prints_overridden_config():
    r = subprocess.run([sys.executable, "-m", "fiffdepth.cli", "config", "--preset", "paper", "--set", "loss.lambda_k=0.3"],
                       capture_output=True, text=True, check=True)
    assert yaml.safe_load(r.stdout)["loss"]["lambda_k"] == 0.3
