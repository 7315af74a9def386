"""Trainer: exact resume after a real kill, two-process DDP, corrupt checkpoints, ablation logging."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from fiffdepth.config import get_config
from fiffdepth.losses import LOSS_TERMS
from fiffdepth.train import ResumeError, find_resume_checkpoint, read_log, train, verify_checkpoint


def _overrides(data, out, **extra):
    o = {"data.synthetic": [f"embedded:{data / 'synth'}"], "data.real": [str(data / "real")],
         "data.pseudo_labels": str(data / "pseudo"), "data.resolution": 64, "train.heldout": 8,
         "train.log_every": 1, "train.output_dir": str(out),
         "model.pretrained": ""}
    o.update(extra)
    return o


def _cli(o):
    args = []
    for k, v in o.items():
        v = ",".join(v) if isinstance(v, list) else v
        args += ["--set", f"{k}={v}"]
    return args


def _weights(run):
    return load_file(str(run / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(train_data, tmp_path):
    N = 6
    cache = tmp_path / "cache"
    base = dict(**{"train.iterations": 2 * N, "train.checkpoint_every": N, "train.eval_every": 1000})
    full = tmp_path / "full"
    train(get_config("tiny", _overrides(train_data, full, **base)), progress=False, cache_root=cache)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fiffdepth.cli", "train", "--preset", "tiny", "--no-progress",
           "--cache-dir", str(cache), *_cli(_overrides(train_data, killed, **base))]
    # the killed run's first half must use this process's thread count (conftest pins it; an
    # OMP_NUM_THREADS=1 in the environment would otherwise give the child 1 thread and other sums)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = killed / "checkpoints" / f"checkpoint-{N:06d}"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "summary.json").exists()

    train(get_config("tiny", _overrides(train_data, killed, **base)), resume="latest", progress=False,
          cache_root=cache)
    a = {r["step"]: r for r in read_log(full / "losses.jsonl") if "loss" in r}
    b = {r["step"]: r for r in read_log(killed / "losses.jsonl") if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 2 * N + 1))
    for s in range(1, 2 * N + 1):
        for k in ["loss", *LOSS_TERMS]:
            assert b[s][k] == pytest.approx(a[s][k], rel=1e-4, abs=1e-6), (s, k)
    wa, wb = _weights(full), _weights(killed)
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(train_data, tmp_path):
    out = tmp_path / "ddp"
    o = _overrides(train_data, out, **{"train.iterations": 3, "train.checkpoint_every": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           "-m", "fiffdepth.cli", "train", "--preset", "tiny", "--no-progress", "--cache-dir",
           str(tmp_path / "cache"), *_cli(o)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # and training moved the weights away from the initialisation
    assert summary["final"]["loss"] > 0
    # every rank saved its part of the checkpoint (save_state: each rank's RNG states)
    ckpt = out / "checkpoints" / "checkpoint-000002"
    assert verify_checkpoint(ckpt) is None
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()


def test_corrupt_or_half_written_checkpoint_falls_back(train_data, tmp_path):
    out = tmp_path / "run"
    train(get_config("tiny", _overrides(train_data, out, **{"train.iterations": 3, "train.checkpoint_every": 1,
                                                            "train.keep_checkpoints": 3})),
          progress=False, cache_root=tmp_path / "cache")
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["checkpoint-000001", "checkpoint-000002"]
    assert all(verify_checkpoint(c) is None for c in ckpts)
    # flip bytes in the newest checkpoint's weights
    w = ckpts[-1] / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-100:] = bytes(100)
    w.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="diffusion_pytorch_model.safetensors"):
        assert find_resume_checkpoint(out / "checkpoints", "latest") == ckpts[0]
    # a half-written one (no manifest) is skipped as well; with none intact, resuming is an error, not a restart
    (ckpts[0] / "manifest.json").unlink()
    log = (out / "losses.jsonl").read_text()
    with pytest.warns(UserWarning, match="manifest.json"), pytest.raises(ResumeError, match="no intact checkpoint"):
        train(get_config("tiny", _overrides(train_data, out, **{"train.iterations": 3})), resume="latest",
              progress=False, cache_root=tmp_path / "cache")
    assert (out / "losses.jsonl").read_text() == log


@pytest.mark.parametrize("ablation,nonzero", [
    ({}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm", "traj"}),
    ({"loss.trajectory": False}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm"}),
    ({"loss.trajectory_target": "image"}, {"d0_mae", "d0_gm", "dm1_mae", "dm1_gm", "traj"}),
    ({"loss.teacher_supervision": "none"}, {"d0_mae", "d0_gm", "traj"}),
    ({"loss.teacher_supervision": "d0"}, {"d0_mae", "d0_gm", "real_d0_mae", "real_d0_gm", "traj"}),
])
def test_ablation_switches_change_logged_terms(train_data, tmp_path, ablation, nonzero):
    out = tmp_path / "abl"
    train(get_config("tiny", _overrides(train_data, out, **{"train.iterations": 2, **ablation})), progress=False,
          cache_root=tmp_path.parent / "shared-cache")
    rec = [r for r in read_log(out / "losses.jsonl") if "loss" in r][-1]
    assert {k for k in LOSS_TERMS if rec[k] != 0.0} == nonzero


def test_final_run_dir_loads_in_pipeline(train_data, tmp_path):
    from fiffdepth.pipeline import FiffDepthPipeline

    out = tmp_path / "run"
    train(get_config("tiny", _overrides(train_data, out, **{"train.iterations": 1})), progress=False,
          cache_root=tmp_path / "cache")
    pipe = FiffDepthPipeline.from_pretrained(out)
    depth = pipe(torch.rand(3, 40, 40)).prediction
    assert depth.shape == (1, 40, 40, 1)
    assert (out / "config.yaml").is_file() and (out / "losses.jsonl").is_file()
    assert json.loads((out / "summary.json").read_text())["total_steps"] == 1

    # a second stage from the first one's directory counts both stages' steps
    again = tmp_path / "again"
    summary = train(get_config("tiny", _overrides(train_data, again, **{"train.iterations": 2, "model.pretrained": str(out)})),
                    progress=False, cache_root=tmp_path / "cache")
    assert summary["steps"] == 2 and summary["total_steps"] == 3
    assert summary["fine_tuned_from"] == {"path": str(out), "total_steps": 1}
    assert json.loads((again / "summary.json").read_text())["total_steps"] == 3


def test_prior_fine_tune_steps_reads_summaries_and_names_a_bad_one(tmp_path):
    from fiffdepth.train import prior_fine_tune_steps

    assert prior_fine_tune_steps(None) == prior_fine_tune_steps("") == 0
    assert prior_fine_tune_steps(tmp_path) == 0  # a generator prior: no summary.json
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 12000}))  # written before total_steps existed
    assert prior_fine_tune_steps(tmp_path) == 12000
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 12000, "total_steps": 24000}))
    assert prior_fine_tune_steps(tmp_path) == 24000
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json: not a training summary"):
        prior_fine_tune_steps(tmp_path)


def test_cached_versions_are_pixel_space_mirrors_and_crops():
    import torch

    from fiffdepth.train import _augment, heldout_split

    img = torch.rand(3, 40, 40)
    depth = torch.rand(1, 40, 40) + 1
    item = {"image": img, "depth": depth, "valid_mask": depth > 0, "name": "x"}
    v0, v1 = _augment(item, 32, 0, 3, 0), _augment(item, 32, 0, 3, 1)
    assert torch.equal(v1["image"], v0["image"].flip(-1)) and torch.equal(v1["depth"], v0["depth"].flip(-1))
    v2, again = _augment(item, 32, 0, 3, 2), _augment(item, 32, 0, 3, 2)
    assert v2["image"].shape == (3, 32, 32) and torch.equal(v2["image"], again["image"])
    assert not torch.equal(v2["image"], v0["image"])
    n_train, held = heldout_split(40, 4, 2)  # 10 scenes × 4 versions, 2 scenes held out
    assert n_train == 32 and list(held) == [32, 36]


@pytest.mark.parametrize("teacher,n_syn,n_real", [("d_minus1", 4, 4), ("none", 8, 0)])
def test_no_teacher_ablation_refills_the_batch_with_synthetic_samples(train_data, tmp_path, monkeypatch,
                                                                      teacher, n_syn, n_real):
    """Issue 15: dropping the teacher must not halve the batch (tiny: 8 samples a step)."""
    import fiffdepth.losses as losses

    seen = []
    real_objective = losses.fiffdepth_objective

    def spy(model, batch, cfg, **kw):
        seen.append((batch.x0_syn.shape[0], 0 if batch.x0_real is None else batch.x0_real.shape[0]))
        return real_objective(model, batch, cfg, **kw)

    monkeypatch.setattr("fiffdepth.train.fiffdepth_objective", spy)
    out = tmp_path / "run"
    cfg = get_config("tiny", _overrides(train_data, out, **{"train.iterations": 2, "loss.teacher_supervision": teacher}))
    assert cfg.train.batch_size == 8
    train(cfg, progress=False, cache_root=tmp_path.parent / "shared-cache")
    assert seen == [(n_syn, n_real)] * 2


# -- resume that belongs to the run; a finite loss (issue 17) ---------------------------------------------


def test_resume_refuses_another_runs_checkpoints(train_data, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    base = {"train.iterations": 2, "train.checkpoint_every": 1, "loss.gamma": 0.5}
    train(get_config("tiny", _overrides(train_data, out, **base)), progress=False, cache_root=cache)
    ckpt = out / "checkpoints" / "checkpoint-000001"
    other = get_config("tiny", _overrides(train_data, out, **{**base, "loss.gamma": 0.9, "train.iterations": 3}))
    with pytest.raises(ResumeError, match="other method settings"):
        train(other, resume="latest", progress=False, cache_root=cache)
    with pytest.raises(ResumeError, match="--overwrite"):  # a fresh run does not mix with the old checkpoints
        train(other, progress=False, cache_root=cache)
    assert verify_checkpoint(ckpt) is None  # nothing was touched
    # more iterations is the same run: it resumes
    longer = get_config("tiny", _overrides(train_data, out, **{**base, "train.iterations": 3}))
    assert train(longer, resume="latest", progress=False, cache_root=cache)["steps"] == 3
    train(other, resume="latest", force_resume=True, progress=False, cache_root=cache)  # forced
    summary = train(other, overwrite=True, progress=False, cache_root=cache)  # started over
    steps = [r["step"] for r in read_log(out / "losses.jsonl")]
    assert summary["steps"] == 3 and steps == [0, 1, 2, 3]  # no log line twice
    with pytest.warns(UserWarning, match="starting over"):  # latest + overwrite: another run's checkpoints replaced
        train(get_config("tiny", _overrides(train_data, out, **base)), resume="latest", overwrite=True,
              progress=False, cache_root=cache)
    assert [r["step"] for r in read_log(out / "losses.jsonl")] == [0, 1, 2]


def test_non_finite_loss_stops_with_step_and_batch(train_data, tmp_path):
    from fiffdepth.train import NonFiniteLossError

    out = tmp_path / "run"
    cfg = get_config("tiny", _overrides(train_data, out, **{"train.iterations": 6, "train.checkpoint_every": 1,
                                                            "train.learning_rate": 1e35, "train.lr_warmup_steps": 0,
                                                            "train.max_grad_norm": 0.0}))
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, progress=False, cache_root=tmp_path / "cache")
    msg = str(info.value)
    step = int(msg.split(" at step ")[1].split(",")[0])
    assert 1 < step <= 6 and "checkpoint-" in msg and "r0" in msg  # a real image's name in the batch
    assert not (out / "summary.json").exists()
    last = sorted((out / "checkpoints").iterdir())[-1]
    assert last.name in msg and verify_checkpoint(last) is None


# -- training data: a skip is a skip (issue 17) -------------------------------------------------------------


def _cache_cfg(data, real=None, pseudo=None, **extra):
    o = {"data.synthetic": [f"embedded:{data}"], "data.real": [str(real)] if real else [],
         "data.pseudo_labels": str(pseudo or ""), "data.resolution": 32, "data.augmentations": 2,
         "model.pretrained": "", **extra}
    if not real:
        o["loss.teacher_supervision"] = "none"
    return get_config("tiny", o)


@pytest.fixture(scope="module")
def tiny_vae(tiny_cfg):
    from fiffdepth.model import FiffDepthModel

    return FiffDepthModel.from_config(tiny_cfg.model, seed=0).vae


def test_bad_scenes_are_dropped_counted_once_and_kept_out_of_heldout(tmp_path, tiny_vae):
    import warnings

    import numpy as np

    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.train import build_caches, heldout_split

    synth = tmp_path / "synth"
    write_synthetic_dataset(synth, n=8, size=32, seed=0, progress=False)
    (synth / "rgb" / "000002.png").write_bytes(b"not a png")
    np.save(synth / "depth" / "000005.npy", np.ones((10, 10), np.float32))  # wrong shape: a counted skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        syn, _ = build_caches(_cache_cfg(synth), tiny_vae, tmp_path / "cache", progress=False)
    dropped = [str(w.message) for w in caught if "dropping bad sample" in str(w.message)]
    assert len(dropped) == 2 and "000002.png" in dropped[0] and "000005.npy" in dropped[1]
    assert syn.names == [sid for sid in ["000000", "000001", "000003", "000004", "000006", "000007"] for _ in range(2)]
    n_train, held = heldout_split(len(syn), 2, heldout=1)
    train_names, held_names = set(syn.names[:n_train]), {syn.names[i] for i in held}
    assert held_names == {"000007"} and not train_names & held_names



def test_cache_is_the_same_bytes_for_any_number_of_loader_workers(tmp_path, tiny_vae):
    """Issue 15: data.num_workers reads files in DataLoader workers; order, drops and bytes are unchanged."""
    import warnings

    import numpy as np

    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.train import build_caches, config_hash

    synth = tmp_path / "synth"
    write_synthetic_dataset(synth, n=6, size=32, seed=0, progress=False)
    (synth / "rgb" / "000003.png").write_bytes(b"not a png")
    real, pseudo = _real_folder(tmp_path, n=4), tmp_path / "pseudo"
    (real / "r2.png").write_bytes(b"\x89PNG truncated")
    pseudo.mkdir()
    for i in range(4):
        np.save(pseudo / f"r{i}.npy", np.linspace(1, 2, 32 * 32, dtype=np.float32).reshape(32, 32))
    built = {}
    for workers in (0, 2):
        cfg = _cache_cfg(synth, real, pseudo, **{"data.num_workers": workers})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            syn, rl = build_caches(cfg, tiny_vae, tmp_path / f"cache{workers}", progress=False)
        dropped = [str(w.message) for w in caught if "dropping bad sample" in str(w.message)]
        assert len(dropped) == 2 and "000003.png" in dropped[0] and "r2.png" in dropped[1]  # each once
        assert syn.names == [s for s in ["000000", "000001", "000002", "000004", "000005"] for _ in range(2)]
        assert rl.names == [r for r in ["r0.png", "r1.png", "r3.png"] for _ in range(2)]
        built[workers] = ({f.relative_to(tmp_path / f"cache{workers}"): f.read_bytes()
                           for f in sorted((tmp_path / f"cache{workers}").rglob("*")) if f.is_file()},
                          config_hash(cfg))
    files0, hash0 = built[0]
    files2, hash2 = built[2]
    assert len(files0) == 4 and files0 == files2  # same cache keys, shards and indexes, byte for byte
    assert hash0 == hash2  # data.num_workers is a run setting, not a method setting

def _real_folder(tmp_path, n=3, size=32):
    import numpy as np
    from PIL import Image

    real = tmp_path / "real"
    real.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(real / f"r{i}.png")
    return real


def test_all_invalid_pseudo_labels_are_an_error_not_a_silent_zero(tmp_path, tiny_vae):
    import numpy as np

    from fiffdepth.data.io import DataError
    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.train import build_caches

    write_synthetic_dataset(tmp_path / "synth", n=4, size=32, seed=0, progress=False)
    real, pseudo = _real_folder(tmp_path), tmp_path / "pseudo"
    pseudo.mkdir()
    np.save(pseudo / "r0.npy", np.zeros((32, 32), np.float32))
    np.save(pseudo / "r1.npy", np.full((32, 32), np.nan, np.float32))
    checker = np.where(np.indices((32, 32)).sum(0) % 2 == 0, 2.0, np.nan).astype(np.float32)
    np.save(pseudo / "r2.npy", checker)  # valid pixels, but no whole latent patch of them
    with pytest.warns(UserWarning, match="no valid pixel"), pytest.raises(DataError, match="no valid pseudo-label pixel"):
        build_caches(_cache_cfg(tmp_path / "synth", real, pseudo), tiny_vae, tmp_path / "cache", progress=False)
    np.save(pseudo / "r2.npy", np.full((32, 32), np.nan, np.float32))  # none usable at all
    with pytest.warns(UserWarning, match="no valid pixel"), pytest.raises(DataError, match="no usable samples"):
        build_caches(_cache_cfg(tmp_path / "synth", real, pseudo), tiny_vae, tmp_path / "cache", progress=False)


def test_tar_shard_pseudo_labels_keyed_by_shard_and_member_and_confined(tmp_path, tiny_vae, monkeypatch):
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from fiffdepth.data.io import DataError
    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.train import build_caches, pseudo_label_path

    write_synthetic_dataset(tmp_path / "synth", n=4, size=32, seed=0, progress=False)
    shards, pseudo = tmp_path / "shards", tmp_path / "pseudo"
    shards.mkdir()
    (tmp_path / "evil.npy").write_bytes(b"")  # where a '../' member would look
    for shard in ("000", "001"):
        with tarfile.open(shards / f"{shard}.tar", "w") as tar:
            for member in ("a.jpg", "sub/b.jpg", "../evil.jpg"):
                buf = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(buf, format="JPEG")
                info = tarfile.TarInfo(member)
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
        for member in ("a", "sub/b"):
            (pseudo / shard / member).parent.mkdir(parents=True, exist_ok=True)
            np.save(pseudo / shard / f"{member}.npy", np.linspace(1, 2, 32 * 32, dtype=np.float32).reshape(32, 32))
    assert pseudo_label_path(pseudo, f"{shards}/001.tar:sub/b.jpg") == pseudo / "001" / "sub" / "b.npy"
    for bad in (f"{shards}/000.tar:../evil.jpg", f"{shards}/000.tar:/etc/x.jpg", "../x.png"):
        with pytest.raises(DataError, match="would leave"):
            pseudo_label_path(pseudo, bad)
    with pytest.warns(UserWarning, match="would leave"):
        _, real = build_caches(_cache_cfg(tmp_path / "synth", shards, pseudo), tiny_vae, tmp_path / "cache",
                               progress=False)
    assert sorted(set(real.names)) == ["000.tar:a.jpg", "000.tar:sub/b.jpg", "001.tar:a.jpg", "001.tar:sub/b.jpg"]
    # a run that finds the cache built opens no shard (issue 15: listing LAION shards reads every header)
    def no_open(*args, **kwargs):
        raise AssertionError("a tar shard was opened")

    monkeypatch.setattr(tarfile, "open", no_open)
    _, again = build_caches(_cache_cfg(tmp_path / "synth", shards, pseudo), tiny_vae, tmp_path / "cache", progress=False)
    assert again.dir == real.dir and again.names == real.names



def test_virtual_kitti_keeps_its_aspect_ratio_and_is_not_upsampled(tmp_path, tiny_vae, tiny_cfg):
    """Issue 15: a Virtual KITTI frame is cached whole at its own aspect ratio, at native scale when
    data.resolution exceeds its short side (768 > 352: no 2.2x upsampling), shrunk when it does not;
    a micro-step draws frames of one shape, and the objective takes them beside square real images."""
    from conftest import write_vkitti2

    from fiffdepth.codecs import ImageCodec
    from fiffdepth.data import VirtualKITTI2Dataset
    from fiffdepth.data.synthetic import write_synthetic_dataset
    from fiffdepth.losses import ObjectiveBatch, fiffdepth_objective
    from fiffdepth.model import FiffDepthModel
    from fiffdepth.train import _augment, build_caches, synthetic_indices

    item = VirtualKITTI2Dataset(write_vkitti2(tmp_path / "vkitti", n=2))[0]
    assert item["image"].shape == (3, 352, 1216)  # the KITTI-benchmark crop of a 375x1242 frame
    v0, v1, v2 = (_augment(item, 768, 0, 0, v, keep_aspect=8) for v in (0, 1, 2))
    for k in ("image", "depth", "valid_mask"):  # its own pixels, not resampled
        assert torch.equal(v0[k], item[k]) and torch.equal(v1[k], item[k].flip(-1))
    assert v2["image"].shape == (3, 352, 1216) and not torch.equal(v2["image"], v0["image"])  # a zoomed crop
    assert _augment(item, 768, 0, 0, 0)["image"].shape == (3, 768, 768)  # the square crop it no longer gets
    assert _augment(item, 128, 0, 0, 0, keep_aspect=8)["image"].shape == (3, 128, 440)  # shrunk; 3.44 vs 3.45

    write_synthetic_dataset(tmp_path / "synth", n=4, size=32, seed=0, progress=False)
    cfg = _cache_cfg(tmp_path / "synth", **{"data.resolution": 64, "data.synthetic": [
        f"embedded:{tmp_path / 'synth'}", f"vkitti:{tmp_path / 'vkitti'}"]})
    syn, _ = build_caches(cfg, tiny_vae, tmp_path / "cache", progress=False)
    f = ImageCodec(tiny_vae).scale_factor
    buckets = syn.shape_buckets(range(len(syn)))
    assert [len(b) for b in buckets] == [8, 4]  # 4 square scenes and 2 Virtual KITTI frames, 2 versions each
    wide = syn.tensors(buckets[1])
    assert wide[0].shape[-2:] == (64 // f, 220 // f) and syn.names[buckets[1][0]].endswith("rgb_00000.jpg")
    drawn = {tuple(syn.tensors(synthetic_indices(buckets, m, 4, 0))[0].shape) for m in range(30)}
    assert drawn == {(4, 4, 64 // f, 64 // f), (4, 4, 64 // f, 220 // f)}  # both shapes, never mixed in a step

    square = syn.tensors(buckets[0][:2])
    model = FiffDepthModel.from_config(tiny_cfg.model, seed=0)
    batch = ObjectiveBatch(wide[0][:2], wide[1][:2], square[0], square[1], wide[2][:2], square[2])
    total, terms = fiffdepth_objective(model, batch, tiny_cfg.loss, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(total) and terms["d0_mae"] > 0 and terms["dm1_mae"] > 0 and terms["traj"] > 0

class _RecordingCache:
    """Stands in for a LatentCache: records which cached versions a step draws."""

    def __init__(self, n):
        self.n, self.drawn = n, []

    def __len__(self):
        return self.n

    def tensors(self, idx):
        self.drawn.append(list(idx))
        z = torch.zeros(len(idx), 4, 2, 2)
        return z, z, torch.ones(len(idx), 1, 2, 2, dtype=torch.bool)


def test_pixel_space_augmentation_differs_from_step_to_step():
    """Issue 15: K cached pixel-space versions per scene (scene-major, as build_caches writes
    them); successive steps draw different versions (mirror, crops) of the same scene."""
    from fiffdepth.train import _augment, _micro_batch

    scenes, k, half = 5, 4, 4
    syn = _RecordingCache(scenes * k)
    for m in range(20):
        _micro_batch(syn, None, [range(len(syn))], m, half, 0, half, seed=0, acp_len=1000, device="cpu")
    versions: dict[int, set] = {}
    for step in syn.drawn:
        for i in step:
            versions.setdefault(i // k, set()).add(i % k)
    assert all(len(v) > 1 for v in versions.values()), versions
    g = torch.Generator().manual_seed(0)
    item = {"image": torch.rand(3, 40, 56, generator=g), "depth": torch.rand(1, 40, 56, generator=g) + 1}
    item["valid_mask"] = item["depth"] > 0
    pixels = [_augment(item, 32, 0, 0, v)["image"] for v in range(k)]
    assert all(not torch.equal(pixels[a], pixels[b]) for a in range(k) for b in range(a + 1, k))


@pytest.mark.parametrize("preset", ["paper", "tiny"])
def test_no_teacher_batch_is_the_presets_batch_size(preset):
    """Issue 15: without a real half the synthetic side fills the whole batch (paper 32, tiny 8)."""
    from fiffdepth.train import _micro_batch

    half = get_config(preset).train.batch_size // 2
    syn = _RecordingCache(100)
    batch = _micro_batch(syn, None, [range(100)], 0, half, 0, half, seed=0, acp_len=1000, device="cpu", syn_share=2)
    assert batch[0].shape[0] == get_config(preset).train.batch_size == {"paper": 32, "tiny": 8}[preset]


def test_accelerator_follows_config_then_launcher_and_allows_a_second_precision(monkeypatch):
    """Two runs in one process (a notebook: tiny, then paper) may differ in precision, and
    ``accelerate launch --mixed_precision`` (ACCELERATE_MIXED_PRECISION) overrides the config."""
    from fiffdepth.train import make_accelerator

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert make_accelerator("no", 1).mixed_precision == "no"
    assert make_accelerator("bf16", 2).mixed_precision == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    acc = make_accelerator("bf16", 1)
    assert acc.mixed_precision == "no" and acc.gradient_accumulation_steps == 1


# -- accelerate's own parts: save_state/load_state, EMA, trackers, the launcher's precision (issue 16) ------


class _Interrupt(Exception):
    pass


def test_resume_with_ema_is_bit_exact(train_data, tmp_path):
    """A run stopped after its step-2 checkpoint and resumed ends with the same bytes as an
    uninterrupted one: trained weights, EMA weights (what is saved) and every logged loss."""
    cache = tmp_path.parent / "shared-cache"
    base = {"train.iterations": 4, "train.checkpoint_every": 2, "train.ema": True, "train.ema_decay": 0.5}
    full = train(get_config("tiny", _overrides(train_data, tmp_path / "full", **base)), progress=False,
                 cache_root=cache)

    def stop_at_3(record):
        if record["step"] == 3:
            raise _Interrupt

    cfg = get_config("tiny", _overrides(train_data, tmp_path / "resumed", **base))
    with pytest.raises(_Interrupt):
        train(cfg, progress=False, cache_root=cache, on_log=stop_at_3)
    ckpt = tmp_path / "resumed" / "checkpoints" / "checkpoint-000002"
    assert verify_checkpoint(ckpt) is None
    # accelerate's save_state: optimiser, RNG states, registered objects (counters, LR schedule, EMA)
    assert {"optimizer.bin", "random_states_0.pkl", "custom_checkpoint_2.pkl", "trainer_state.json",
            "unet"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2
    resumed = train(cfg, resume="latest", progress=False, cache_root=cache)

    assert resumed["trained_weight_digest"] == full["trained_weight_digest"]
    assert resumed["rank_weight_digests"] == full["rank_weight_digests"]
    assert full["trained_weight_digest"] != full["rank_weight_digests"][0]  # the EMA is not the trained weights
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "resumed" / weights).read_bytes() == (tmp_path / "full" / weights).read_bytes()
    a, b = read_log(tmp_path / "full" / "losses.jsonl"), read_log(tmp_path / "resumed" / "losses.jsonl")
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert a == b


def test_checkpoint_of_the_earlier_format_is_refused_or_overwritten(tmp_path):
    from fiffdepth.atomic import write_manifest
    from fiffdepth.train import check_run_directory

    old = tmp_path / "checkpoints" / "checkpoint-000002"  # optimizer.pt, rng_state.json: no save_state
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text(json.dumps({"step": 2, "config_hash": "abc"}))
    (old / "optimizer.pt").write_bytes(b"")
    write_manifest(old, {"step": 2})
    with pytest.raises(ResumeError, match="earlier fiffdepth's checkpoint format"):
        check_run_directory(old.parent, "latest", "abc")
    with pytest.warns(UserWarning, match="starting over"):
        assert check_run_directory(old.parent, "latest", "abc", overwrite=True) is None


def test_report_to_picks_the_tracker_and_refuses_unknown_ones(train_data, tmp_path):
    from accelerate.utils import is_wandb_available

    from fiffdepth.config import ConfigError
    from fiffdepth.train import trackers

    assert trackers("none") is None and trackers("tensorboard") == ["tensorboard"]
    assert trackers("auto") == ["tensorboard"]  # installed here (a core dependency)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.report_to='mlflow': choose one of auto, tensorboard, wandb, none"):
        train(get_config("tiny", _overrides(train_data, out, **{"train.report_to": "mlflow"})), progress=False)
    if not is_wandb_available():
        with pytest.raises(ConfigError, match="wandb is not installed"):
            trackers("wandb")
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_accelerate_launch_mixed_precision_no_wins_over_the_config(train_data, tmp_path):
    """Issue 16: ``accelerate launch --mixed_precision no`` is honoured over ``train.mixed_precision=bf16``."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env.update(OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")  # no user accelerate config
    if subprocess.run([*launcher, "--help"], capture_output=True, env=env).returncode != 0:
        pytest.skip("the accelerate launcher is not available")
    out = tmp_path / "run"
    o = _overrides(train_data, out, **{"train.iterations": 1, "train.mixed_precision": "bf16",
                                       "train.report_to": "none"})
    cmd = [*launcher, "--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no",
           "--mixed_precision", "no", "-m", "fiffdepth.cli", "train", "--preset", "tiny", "--no-progress",
           "--cache-dir", str(tmp_path.parent / "shared-cache"), *_cli(o)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert get_config("tiny", o).train.mixed_precision == "bf16"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixed_precision"] == "no" and summary["steps"] == 1
    assert summary["report_to"] == [] and not (out / "logs").exists()
