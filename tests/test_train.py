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
from fiffdepth.train import find_resume_checkpoint, read_log, train, verify_checkpoint


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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    o = _overrides(train_data, out, **{"train.iterations": 3, "train.checkpoint_every": 100})
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
    # a half-written one (no manifest) is skipped as well
    (ckpts[0] / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="manifest.json"):
        assert find_resume_checkpoint(out / "checkpoints", "latest") is None


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
    depth = pipe(torch.rand(3, 40, 40)).depth
    assert depth.shape == (1, 40, 40)
    assert (out / "config.yaml").is_file() and (out / "losses.jsonl").is_file()


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
        _micro_batch(syn, None, len(syn), m, half, 0, half, seed=0, acp_len=1000, device="cpu")
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
    batch = _micro_batch(syn, None, 100, 0, half, 0, half, seed=0, acp_len=1000, device="cpu", syn_share=2)
    assert batch[0].shape[0] == get_config(preset).train.batch_size == {"paper": 32, "tiny": 8}[preset]
