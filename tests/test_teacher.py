import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from fiffdepth.teacher import (MANIFEST, Teacher, disparity_to_depth, pseudolabel_folder, read_manifest,
                               teacher_loss, train_tiny_teacher)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def foreign_teacher_dir(tmp_path_factory):
    """A tiny DepthAnythingForDepthEstimation made with transformers alone (not fiffdepth code),
    saved without an image processor."""
    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 24, 32],
                              fusion_hidden_size=16, head_hidden_size=8)
    model = DepthAnythingForDepthEstimation(cfg)
    with torch.no_grad():
        model.head.conv3.bias.fill_(0.5)  # keep the ReLU output positive and varied
        model.head.conv3.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("foreign_teacher")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def foreign_teacher(foreign_teacher_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Teacher.from_pretrained(foreign_teacher_dir, device="cpu")


def _write_images(root, n=0):
    """rgb.png (30x40), sub/gray.png (grayscale), rgba.png, photo.jpg, bad.png (corrupt) [+ n more]."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (33, 21), dtype=np.uint8), mode="L").save(root / "sub" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (25, 25, 4), dtype=np.uint8), mode="RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (40, 28, 3), dtype=np.uint8)).save(root / "photo.jpg")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"extra_{i:03d}.png")
    return {"rgb.png": (30, 40), "sub/gray.png": (33, 21), "rgba.png": (25, 25), "photo.jpg": (40, 28)}


def _write_scenes(root, n=8, size=42, seed=0):
    """Embedded-layout scenes: a receding floor/wall plane with a nearer box, sky on top of some;
    the colour follows depth so there is something to learn."""
    rng = np.random.default_rng(seed)
    for sub in ("rgb", "depth", "mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        depth = (1.0 + rng.uniform(2, 6) * (1 - yy) + rng.uniform(-1, 1) * xx).astype(np.float32)
        x0, y0 = rng.uniform(0.1, 0.5, 2)
        box = (xx > x0) & (xx < x0 + 0.35) & (yy > y0) & (yy < y0 + 0.35)
        depth[box] = depth[box].min() * 0.6
        valid = np.ones_like(depth, bool)
        if i % 2:
            valid[: size // 6] = False
        depth[~valid] = 0
        shade = np.clip(1.0 / np.maximum(depth, 0.5), 0, 1)
        rgb = np.stack([shade, 0.5 * shade + 0.3 * xx, 0.2 + 0.6 * (~valid)], -1)
        rgb = (np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "rgb" / f"{i:06d}.png")
        np.save(root / "depth" / f"{i:06d}.npy", depth)
        Image.fromarray(valid.astype(np.uint8) * 255).save(root / "mask" / f"{i:06d}.png")
    return root


# ----------------------------------------------------------------------------- representation


def test_disparity_to_depth_hand_values():
    disp = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    # numpy's linear 98th percentile of [0, 1, 2, 4]: 2 + 0.94 * (4 - 2) = 3.88; disparity 0 is background
    expected = np.array([[0.0, 3.88], [3.88 / 2, 3.88 / 4]], np.float32)
    np.testing.assert_allclose(disparity_to_depth(disp), expected, rtol=1e-5)
    np.testing.assert_allclose(disparity_to_depth(7.5 * disp), expected, rtol=1e-5)  # scale-free
    np.testing.assert_allclose(disparity_to_depth(torch.from_numpy(disp)[None]).numpy()[0], expected, rtol=1e-5)
    assert np.all(disparity_to_depth(np.zeros((3, 3))) == 0.0)  # no positive disparity: all background
    assert disparity_to_depth(disp, eps=0.3)[0, 1] == 0.0  # 1 / 3.88 < 0.3: background
    assert disparity_to_depth(disp, background=50.0)[0, 0] == 50.0  # the far plane, for pictures
    assert disparity_to_depth(disp).dtype == np.float32


def test_sky_does_not_set_the_pseudo_label_range():
    """Issue 15: a teacher disparity with a known shift on the scene and 0 on a sky that covers
    a third of the image gives the scene the same normalised d_-1 target as the sky-free crop
    of the same scene: the sky is masked out of the percentiles, as synthetic sky is."""
    from fiffdepth.codecs import normalize_depth

    def target(label):
        t = torch.from_numpy(label)[None, None]
        return normalize_depth(t, t > 0)[0, 0].numpy()

    rows = np.arange(48, dtype=np.float32)[:, None].repeat(40, 1)
    depth = 2.0 * 32 / np.maximum(rows - 15, 1)  # ground plane below the horizon (row 16)
    depth[30:40, 10:20] = 2.5  # a box
    scene = rows >= 16
    for shift in (0.0, 0.05, 0.1):
        disp = np.where(scene, 1.0 / depth + shift, 0.0).astype(np.float32)
        label = disparity_to_depth(disp)
        assert (label[~scene] == 0).all() and (label[scene] > 0).all()
        np.testing.assert_allclose(target(label)[16:], target(disparity_to_depth(disp[16:])), atol=1e-6)
        assert target(label)[scene].max() == 1.0  # the scene spans the whole range
        # clipping the sky to a far plane instead lets it set the 98th percentile
        far = target(disparity_to_depth(disp, background=50.0))
        assert far[scene].max() < target(label)[scene].max()


def test_predict_disparity_batched_equals_single_and_input_types(foreign_teacher):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8),
              rng.integers(0, 255, (20, 50, 3), dtype=np.uint8)]
    batched = foreign_teacher.predict_disparity(arrays, batch_size=8)
    single = [foreign_teacher.predict_disparity([a])[0] for a in arrays]
    for b, s, a in zip(batched, single, arrays):
        assert b.shape == a.shape[:2] and b.dtype == np.float32
        assert np.isfinite(b).all() and (b >= 0).all() and b.std() > 0
        np.testing.assert_allclose(b, s, rtol=1e-4, atol=1e-6)
    as_tensor = foreign_teacher.predict_disparity(torch.from_numpy(arrays[0]).permute(2, 0, 1)[None] / 255.0)[0]
    np.testing.assert_allclose(as_tensor, batched[0], rtol=1e-4, atol=1e-6)
    as_pil = foreign_teacher.predict_disparity([Image.fromarray(arrays[2])])[0]
    np.testing.assert_array_equal(as_pil, batched[2])


def test_foreign_teacher_dir_pseudolabels_a_folder(foreign_teacher, tmp_path):
    shapes = _write_images(tmp_path / "images")
    out = tmp_path / "labels"
    result = pseudolabel_folder(foreign_teacher, tmp_path / "images", out, batch_size=2, progress=False)
    assert result["written"] == 4 and result["skipped"] == 0
    assert len(result["failed"]) == 1 and result["failed"][0][0] == "bad.png" and "bad.png" in result["failed"][0][1]
    for rel, shape in shapes.items():
        stem = rel.rsplit(".", 1)[0]
        depth, disp = np.load(out / f"{stem}.npy"), np.load(out / f"{stem}.disp.npy")
        assert depth.shape == disp.shape == shape and depth.dtype == np.float32
        assert np.isfinite(depth).all() and depth.min() > 0 and depth.max() <= 50.0 + 1e-4
        np.testing.assert_allclose(depth, disparity_to_depth(disp))
    entries = read_manifest(out)
    assert set(entries) == set(shapes)
    assert entries["sub/gray.png"]["outputs"] == ["sub/gray.npy", "sub/gray.disp.npy"]
    assert entries["rgb.png"]["eps"] == 0.02 and entries["rgb.png"]["shape"] == [30, 40]
    assert not list(out.rglob(".*tmp*"))  # no temporary files left
    again = pseudolabel_folder(foreign_teacher, tmp_path / "images", out, batch_size=2, progress=False)
    assert again["written"] == 0 and again["skipped"] == 4
    # a different eps is a different label: recomputed, not skipped
    other = pseudolabel_folder(foreign_teacher, tmp_path / "images", out, progress=False, eps=0.05)
    assert other["written"] == 4 and other["skipped"] == 0


def test_tar_shards_are_pseudolabelled_where_training_looks(foreign_teacher, tmp_path):
    """LAION-style webdataset shards: each member's label lands at the path the trainer reads."""
    import io
    import tarfile

    from fiffdepth.data.base import usable_items
    from fiffdepth.data.real import TarShards
    from fiffdepth.train import pseudo_label_path

    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "000000.tar", "w") as tar:
        for key in ("000000000", "000000001"):
            for ext, data in ((".jpg", None), (".txt", b"a caption")):
                if data is None:
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    data = buf.getvalue()
                info = tarfile.TarInfo(key + ext)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("../escape.jpg")  # a member whose label would land outside the folder
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "labels"
    result = pseudolabel_folder(foreign_teacher, tmp_path / "shards", out, progress=False)
    assert result["written"] == 2
    assert [name for name, _ in result["failed"]] == ["000000.tar:../escape.jpg"]
    assert "would leave" in result["failed"][0][1] and not list(tmp_path.glob("escape*"))
    shards = TarShards(tmp_path / "shards")
    with pytest.warns(UserWarning, match="escape.jpg"):  # not an image: dropped, not replaced by a neighbour
        names = [it["name"] for it in usable_items(shards)]
    assert names == ["000000.tar:000000000.jpg", "000000.tar:000000001.jpg"]
    for name in names:
        assert np.load(pseudo_label_path(out, name)).shape == (30, 40)
    assert pseudolabel_folder(foreign_teacher, tmp_path / "shards", out, progress=False)["skipped"] == 2


def test_cli_resumes_after_kill(foreign_teacher, foreign_teacher_dir, tmp_path):
    n_extra = 80
    _write_images(tmp_path / "images", n=n_extra)
    (tmp_path / "images" / "bad.png").unlink()
    total = 4 + n_extra
    out = tmp_path / "labels"
    cmd = [sys.executable, "-m", "fiffdepth.cli", "pseudolabel", "--teacher", str(foreign_teacher_dir),
           "--images", str(tmp_path / "images"), "--out", str(out), "--batch-size", "1", "--resolution", "168",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / MANIFEST).is_file() and (out / MANIFEST).stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    done = read_manifest(out)
    if len(done) in (0, total):  # too fast (or too slow) to kill mid-way: simulate a kill instead
        keep = sorted(done)[: total // 3]
        lines = [json.dumps(done[k]) for k in keep]
        (out / MANIFEST).write_text("\n".join(lines) + "\n")
        done = {k: done[k] for k in keep}
    assert 0 < len(done) < total
    mtimes = {k: (out / done[k]["outputs"][0]).stat().st_mtime_ns for k in done}
    time.sleep(0.02)
    result = pseudolabel_folder(foreign_teacher, tmp_path / "images", out, batch_size=16, resolution=168,
                                progress=False)
    assert result["skipped"] == len(done) and result["written"] == total - len(done) and not result["failed"]
    assert all((out / done[k]["outputs"][0]).stat().st_mtime_ns == t for k, t in mtimes.items())
    assert len(read_manifest(out)) == total
    assert len(list(out.rglob("*.disp.npy"))) == total


def test_cli_unreachable_hub_id_is_one_line(tmp_path):
    _write_images(tmp_path / "images")
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # the same loader, minus huggingface_hub's retries
    r = subprocess.run([sys.executable, "-m", "fiffdepth.cli", "pseudolabel", "--teacher",
                        "fiffdepth-test/no-such-teacher", "--images", str(tmp_path / "images"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "fiffdepth-test/no-such-teacher" in lines[0] and "local directory" in lines[0]


# ----------------------------------------------------------------------------- tiny teacher


def test_teacher_loss_is_affine_invariant_in_disparity():
    rng = np.random.default_rng(0)
    depth = torch.from_numpy(rng.uniform(1, 10, (2, 16, 16)).astype(np.float32))
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[:, :3] = False
    exact = 3.0 / depth + 0.7  # any positive affine map of the true disparity
    assert teacher_loss(exact, depth, mask)[0] < 1e-5
    assert teacher_loss(depth, depth, mask)[0] > 0.5  # depth is not disparity: sign matters


def test_training_tiny_teacher_lowers_loss_and_loads(tmp_path):
    data = _write_scenes(tmp_path / "scenes", n=8, size=42)
    out = train_tiny_teacher(data, tmp_path / "teacher", steps=30, resolution=42, batch_size=4, seed=0,
                             progress=False)
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["loss"]) == 30
    assert np.mean(log["loss"][-5:]) < 0.8 * np.mean(log["loss"][:5]), log["loss"]
    teacher = Teacher.from_pretrained(out, device="cpu")  # config + weights + preprocessor_config.json
    assert teacher.processor.size.height == 42 and teacher.processor.ensure_multiple_of == 14
    (label,) = teacher.pseudo_label([np.array(Image.open(data / "rgb" / "000000.png"))])
    assert label.shape == (42, 42) and np.isfinite(label).all() and label.min() >= 0 and label.max() > 0


@pytest.mark.slow
def test_pseudo_label_latent_decode_roundtrip(tmp_path, tiny_cfg):
    """pseudo-label -> normalised depth -> VAE latent -> decode reproduces the normalised label
    once the tiny VAE has seen depth maps (the depth codec is the one d_-1 is supervised through)."""
    from diffusers import AutoencoderKL

    from fiffdepth.codecs import DepthCodec, normalize_depth
    from fiffdepth.generator import train_vae

    data = _write_scenes(tmp_path / "scenes", n=72, size=32, seed=3)
    labels = []
    for i in range(72):  # teacher-like disparity (GT disparity, zero on sky) -> pseudo-label
        depth = np.load(data / "depth" / f"{i:06d}.npy")
        labels.append(disparity_to_depth(np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)))
    labels = torch.from_numpy(np.stack(labels))[:, None]
    train, held = labels[:64], labels[64:]
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_cfg.model.vae)
    codec = DepthCodec(vae)

    def roundtrip_error():
        with torch.no_grad():
            norm = normalize_depth(held)
            return float((codec.decode(codec.encode(norm)) - norm).abs().mean())

    before = roundtrip_error()
    train_vae(vae, None, train, None, steps=100, batch_size=8, lr=2e-3, progress=False)
    vae.eval()
    after = roundtrip_error()
    assert after < 0.1 and after < before / 2, (before, after)
