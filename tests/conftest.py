import os

import pytest
import torch

# One pytest process (`pytest`): 2 torch threads. Several (`make test` runs pytest-xdist, one
# worker per core): 1 thread each, also for the processes tests start, so the workers do not
# oversubscribe the cores. Tests that compare thread counts set them themselves.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
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


# ---------------------------------------------------------------------------------------------
# Paper-scale layouts at toy size (tests/test_paper_smoke.py): a Stable-Diffusion-2 directory, a
# Depth-Anything-V2 directory, and training data in the real on-disk formats


def write_sd2_layout(root, seed=0):
    """SD2's directory (unet/, vae/, scheduler/, text_encoder/, tokenizer/, model_index.json) with
    SD2's block types, attention layout (linear projections, upcast attention, heads doubling
    with width), 4-channel latents, ×8 VAE with scaling factor 0.18215 and v-prediction
    scheduler config, at small widths and random weights; the text encoder and tokenizer are
    transformers' CLIP classes with a 4-token vocabulary."""
    import json
    from pathlib import Path

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from fiffdepth.bench import SD2_UNET, SD2_VAE
    from fiffdepth.generator import build_tiny_text_encoder, save_generator

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**SD2_UNET, "block_out_channels": [32, 64, 128, 128],
                                   "attention_head_dim": [1, 2, 4, 4], "cross_attention_dim": 32})
    vae = AutoencoderKL(**{**SD2_VAE, "block_out_channels": [32, 32, 64, 64]})
    # stabilityai/stable-diffusion-2 scheduler/scheduler_config.json
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="v_prediction")
    tokenizer, text_encoder = build_tiny_text_encoder(hidden_size=32, seed=seed)
    root = save_generator(Path(root), unet, vae, scheduler, tokenizer, text_encoder)
    index = json.loads((root / "model_index.json").read_text())
    index.pop("fiffdepth_pretrain", None)
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def write_depth_anything_layout(root, image_size=56, seed=0):
    """A DepthAnythingForDepthEstimation directory (config.json, weights, preprocessor_config.json)."""
    from pathlib import Path

    from transformers import DepthAnythingForDepthEstimation

    from fiffdepth.teacher import _init_for_training, default_processor, tiny_teacher_config

    torch.manual_seed(seed)
    cfg = tiny_teacher_config(image_size=image_size, hidden_size=32, num_layers=4, num_heads=2, fusion_hidden_size=16)
    model = _init_for_training(DepthAnythingForDepthEstimation(cfg)).eval()
    root = Path(root)
    model.save_pretrained(root)
    default_processor(image_size, cfg.backbone_config.patch_size).save_pretrained(root)
    return root


def write_hypersim_raw(root, n=3, h=96, w=128):
    """Raw Hypersim: linear-HDR colour and ray *distance* in HDF5 (key "dataset"), render entity
    ids with -1 where no surface; the planar depth is ``fixture_scene``'s."""
    from pathlib import Path

    import h5py
    import numpy as np

    from fiffdepth.data.hypersim import FOCAL, WIDTH

    root = Path(root)
    focal = FOCAL * w / WIDTH
    x = np.linspace(-0.5 * w + 0.5, 0.5 * w - 0.5, w)[None, :]
    y = np.linspace(-0.5 * h + 0.5, 0.5 * h - 0.5, h)[:, None]
    for i in range(n):
        rgb, planar = fixture_scene(h, w, 40 + i)
        images = root / f"ai_001_{i + 1:03d}" / "images"
        (images / "scene_cam_00_final_hdf5").mkdir(parents=True, exist_ok=True)
        (images / "scene_cam_00_geometry_hdf5").mkdir(exist_ok=True)
        distance = planar * np.sqrt(x * x + y * y + focal * focal) / focal
        entity = np.ones((h, w), np.int32)
        entity[: h // 8] = -1  # a window with nothing behind it
        files = {"scene_cam_00_final_hdf5/frame.0000.color.hdf5": ((rgb / 255.0) ** 2.2).astype(np.float16),
                 "scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5": distance.astype(np.float16),
                 "scene_cam_00_geometry_hdf5/frame.0000.render_entity_id.hdf5": entity}
        for rel, arr in files.items():
            with h5py.File(images / rel, "w") as f:
                f["dataset"] = arr
    return root


def write_vkitti2(root, n=3, h=375, w=1242):
    """Virtual KITTI 2 at its own frame size: RGB JPEG and 16-bit depth PNG in cm, 65535 = sky."""
    from pathlib import Path

    import numpy as np

    root = Path(root)
    for i in range(n):
        rgb, depth = fixture_scene(h, w, 50 + i)
        cm = np.clip(depth * 100 * 2, 0, 65534).astype(np.uint16)  # 3-12 m
        cm[: h // 4] = 65535  # sky
        _save_image(root / f"rgb/Scene01/clone/frames/rgb/Camera_0/rgb_{i:05d}.jpg", rgb)
        _save_image(root / f"depth/Scene01/clone/frames/depth/Camera_0/depth_{i:05d}.png", cm)
    return root


def write_webdataset_shards(root, n_shards=2, per_shard=3):
    """LAION-style webdataset tar shards of real photos (the scikit-image ones): per sample
    ``<key>.jpg``, ``<key>.txt`` (caption) and ``<key>.json``."""
    import io
    import json
    import tarfile
    from pathlib import Path

    from PIL import Image

    from fiffdepth.data.real import embedded_real_images

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    photos = embedded_real_images(n=n_shards * per_shard, size=None)
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for k in range(per_shard):
                key = f"{s:05d}{k:04d}"
                buf = io.BytesIO()
                Image.fromarray(photos[s * per_shard + k]).save(buf, format="JPEG", quality=90)
                members = {".jpg": buf.getvalue(), ".txt": b"a photo",
                           ".json": json.dumps({"key": key, "aesthetic": 7.0}).encode()}
                for ext, data in members.items():
                    info = tarfile.TarInfo(key + ext)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def make_lab_outputs(out):
    """A tiny embedded OUT for the lab (fiffdepth.lab): 16 synthetic scenes, 4 held-out scenes per
    domain, 4 photos and 4 real-styled images with the shipped teacher's pseudo-labels, at 64 px."""
    from fiffdepth.lab import prepare_inputs

    prepare_inputs(out, progress=False, n_synth=16, n_eval=4, size=64, n_real=4, n_styled=4, n_styled_real=4,
                   workers=1)
    return out


# The longest files first (minutes each on the project's 2-core CPU: the notebooks' smoke run and
# nbval, the compiled pipeline, the paper-scale smoke run): under pytest-xdist (`--dist loadfile`,
# as `make test` runs it) each starts on a free worker at once instead of last, while the other
# workers take the short files.
LONGEST_FIRST = ("test_notebooks.py", "test_pipeline.py", "test_paper_smoke.py", "test_pool.py", "test_generator.py",
                 "test_determinism.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept
