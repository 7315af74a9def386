import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_cfg():
    from fiffdepth.config import get_config

    return get_config("tiny")


@pytest.fixture()
def tiny_model(tiny_cfg):
    from fiffdepth.model import FiffDepthModel

    return FiffDepthModel.from_config(tiny_cfg.model, seed=0)


def make_train_fixture(out, n_synth=40, n_real=12, size=64):
    """A small embedded dataset: synthetic scenes + real photos + stand-in pseudo-labels."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from fiffdepth.data.real import embedded_real_images
    from fiffdepth.data.synthetic import write_synthetic_dataset

    out = Path(out)
    write_synthetic_dataset(out / "synth", n=n_synth, size=size, seed=0, progress=False)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "pseudo").mkdir(exist_ok=True)
    ramp = np.linspace(1, 3, size, dtype=np.float32)[:, None].repeat(size, 1)
    for i, im in enumerate(embedded_real_images(n=n_real, size=size)):
        Image.fromarray(im).save(out / "real" / f"r{i:02d}.png")
        np.save(out / "pseudo" / f"r{i:02d}.npy", ramp * (1 + 0.1 * i))
    return out


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    return make_train_fixture(tmp_path_factory.mktemp("traindata"))
