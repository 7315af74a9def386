"""Runs trained side by side (``stages.train_variants``, ``fiffdepth.pool``): one-thread processes,
so a run's bytes do not depend on how many train at once, and equal those of a one-thread run in
a process that built its latent caches with one thread (the pool's parent builds them with two:
the cache is thread-independent); the live plot follows the children's logs; a failing run is
named. The scenes are rendered at the training resolution, as in ``make reproduce``: a bilinear
resize on the CPU can differ in the last bits between thread counts."""

import json
import os
import subprocess
import sys

import pytest

from fiffdepth import pool, stages

DATA = r"""
import sys
from fiffdepth import stages
out = sys.argv[1]
stages.make_data(out, n_synth=12, n_eval=4, size=128, n_real=2, n_styled=4, n_styled_real=4, workers=1, progress=False)
stages.make_pseudo_labels(out, progress=False)
"""

ONE_THREAD = r"""
import sys, torch
torch.set_num_threads(1)
from fiffdepth import stages
stages.train_variant(sys.argv[1], sys.argv[2], steps=2, overrides={"train.heldout": 4}, progress=False)
"""

UNET = "diffusion_pytorch_model.safetensors"


def _weights(out, variant):
    return (stages.layout(out).runs / variant / "unet" / UNET).read_bytes()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool") / "base"
    subprocess.run([sys.executable, "-c", DATA, str(root)], check=True, timeout=600)
    return root


@pytest.mark.slow
def test_side_by_side_runs_match_one_at_a_time_and_one_thread_in_process(data_root, tmp_path):
    variants = ["fiffdepth", stages.MARIGOLD]
    two, solo = (stages.link_inputs(tmp_path / n, data_root) for n in ("two", "solo"))
    seen = []
    runs = stages.train_variants(two, variants, steps=2, overrides={"train.heldout": 4}, workers=2, progress=False,
                                 on_log={"fiffdepth": seen.append})
    assert list(runs) == variants and all(runs[v]["threads"] == 1 for v in variants)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # the script sets 1 thread itself
    for v in variants:  # one after another, each alone in a one-thread process
        subprocess.run([sys.executable, "-c", ONE_THREAD, str(solo), v], check=True, timeout=600, env=env)
        assert _weights(two, v) == _weights(solo, v), v
    # the live-plot callback got the run's log records, as in losses.jsonl
    logged = [json.loads(x) for x in (stages.layout(two).runs / "fiffdepth" / "losses.jsonl").read_text().splitlines()]
    assert seen == logged and seen[-1]["step"] == 2
    # finished runs are reused without a new process: the summaries come back unchanged
    again = stages.train_variants(two, variants, steps=2, overrides={"train.heldout": 4}, workers=2, progress=False)
    assert again == {v: json.loads((stages.layout(two).runs / v / "summary.json").read_text()) for v in variants}


def test_a_failing_run_is_named_after_the_others_end(tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "accelerator_present", lambda: False)
    jobs = [pool.Job(str(tmp_path / "nowhere"), "no_such_variant", 1)]
    with pytest.raises(RuntimeError, match="training run 'no_such_variant' failed"):
        pool.run_jobs(jobs, workers=1, progress=False)


def test_default_workers_fit_the_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert pool.default_workers(100) == cores
    assert pool.default_workers(1) == 1
    assert pool.default_workers(100, threads=cores * 2) == 1
