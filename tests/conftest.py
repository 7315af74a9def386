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
