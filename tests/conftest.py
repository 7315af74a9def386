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


def save_tiny_model(path, model_cfg, processing_resolution):
    """A randomly initialised tiny FiffDepth model saved with ``save_pretrained`` (seed 0)."""
    from fiffdepth.model import FiffDepthModel

    m = FiffDepthModel.from_config(model_cfg, seed=0)
    m.processing_resolution = processing_resolution
    m.save_pretrained(path)
    return path


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


# ---------------------------------------------------------------------------------------------
# Tiny benchmark folders in each evaluation format (used by tests/test_evaluate.py)


def fixture_scene(h, w, seed):
    """uint8 (h, w, 3) image and float32 depth (m): a near box in front of a tilted far plane."""
    import numpy as np

    rng = np.random.default_rng(seed)
    depth = np.linspace(3.0, 6.0, h, dtype=np.float32)[:, None].repeat(w, 1)
    top, left = int(rng.integers(h // 8, h // 3)), int(rng.integers(w // 8, w // 3))
    depth[top:top + h // 2, left:left + w // 2] = 1.5
    rgb = (255 * (1.5 / depth)[..., None] * rng.uniform(0.6, 1.0, 3)).astype(np.uint8)
    return rgb, depth


def _save_image(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_scannet_fixture(root, n=2, h=48, w=64):
    """ScanNet in Marigold's layout (depth PNG in mm) with its split file inside ``root``."""
    from pathlib import Path

    import numpy as np

    root = Path(root)
    lines = []
    for i in range(n):
        rgb, depth = fixture_scene(h, w, i)
        _save_image(root / f"scene0000_00/color/{i:06d}.jpg", rgb)
        _save_image(root / f"scene0000_00/depth/{i:06d}.png", (depth * 1000).astype(np.uint16))
        lines.append(f"scene0000_00/color/{i:06d}.jpg scene0000_00/depth/{i:06d}.png")
    (root / "scannet_val_sampled_list_800_1.txt").write_text("\n".join(lines) + "\n")
    return root


def make_sintel_fixture(root, n=2, h=48, w=64):
    """MPI-Sintel: training/final/<scene>/frame_NNNN.png and training/depth/<scene>/frame_NNNN.dpt."""
    import struct
    from pathlib import Path

    root = Path(root)
    for i in range(n):
        rgb, depth = fixture_scene(h, w, 10 + i)
        _save_image(root / f"training/final/alley_1/frame_{i + 1:04d}.png", rgb)
        p = root / f"training/depth/alley_1/frame_{i + 1:04d}.dpt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(struct.pack("<fii", 202021.25, w, h) + depth.astype("<f4").tobytes())
    return root


def make_am2k_fixture(root, n=2, h=48, w=64):
    """AM-2k: validation/original/*.jpg and validation/mask/<stem>.png (foreground = the near box)."""
    from pathlib import Path

    import numpy as np

    root = Path(root)
    for i in range(n):
        rgb, depth = fixture_scene(h, w, 20 + i)
        _save_image(root / f"validation/original/m_{i}.jpg", rgb)
        _save_image(root / f"validation/mask/m_{i}.png", np.where(depth < 2, 255, 0).astype(np.uint8))
    return root


def make_da2k_fixture(root, n=2, h=48, w=64):
    """DA-2K: images + annotations.json of (row, col) pairs, point1 the closer one (on the near box)."""
    import json
    from pathlib import Path

    import numpy as np

    root = Path(root)
    ann = {}
    for i in range(n):
        rgb, depth = fixture_scene(h, w, 30 + i)
        name = f"images/indoor/{i}.png"
        _save_image(root / name, rgb)
        near = np.argwhere(depth < 2)
        far = np.argwhere(depth > 2)
        ann[name] = [{"point1": near[k * 7 % len(near)].tolist(), "point2": far[k * 11 % len(far)].tolist(),
                      "closer_point": "point1"} for k in range(4)]
    (root / "annotations.json").write_text(json.dumps(ann))
    return root


def make_lab_outputs(out):
    """A tiny embedded OUT for the lab (fiffdepth.lab): 16 synthetic scenes, 4 held-out scenes per
    domain, 4 photos and 4 real-styled images with the shipped teacher's pseudo-labels, at 64 px."""
    from fiffdepth.lab import prepare_inputs

    prepare_inputs(out, progress=False, n_synth=16, n_eval=4, size=64, n_real=4, n_styled=4, n_styled_real=4,
                   workers=1)
    return out
