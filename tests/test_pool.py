"""Runs trained side by side (``stages.train_variants``, ``fiffdepth.pool``): one-thread processes,
so a run's bytes do not depend on how many train at once or on the run its process trained
before, and equal those of a one-thread run in a process that built its latent caches with one
thread (the pool's parent builds them with two one-thread lanes: the cache is thread-independent);
the live plot follows the children's logs; a failing run is named. Methods scored side by side
(``evaluate_methods``) score as in one process. The scenes are rendered at the training resolution, as in ``make reproduce``: a bilinear
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
def test_side_by_side_runs_match_one_at_a_time_and_one_thread_in_process(data_root, tmp_path, monkeypatch):
    variants = ["fiffdepth", stages.MARIGOLD]
    two, solo = (stages.link_inputs(tmp_path / n, data_root) for n in ("two", "solo"))
    seen = []
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent encodes the caches in two one-thread lanes (pool.one_thread_lanes)
    try:
        # one worker: the second run trains in the process the first ran in
        runs = stages.train_variants(two, variants, steps=2, overrides={"train.heldout": 4}, workers=1,
                                     progress=False, on_log={"fiffdepth": seen.append})
    finally:
        torch.set_num_threads(before)
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
    # scored side by side (one one-thread process per method) == scored in this process on 2 threads;
    # score_methods keeps the scores (pseudo-label agreement for the methods named), and the table reads them
    methods = ["fiffdepth", "teacher", stages.MARIGOLD]
    kw = dict(marigold_steps=2, marigold_ensemble=1, name=None, pseudo_agreement=True, progress=False)
    scored = stages.score_methods(two, methods, workers=2, **{**kw, "pseudo_agreement": ["fiffdepth", stages.MARIGOLD]})
    assert scored == [stages.MEAN_LAYOUT, *methods]
    with monkeypatch.context() as m:
        m.setattr(stages, "predictor_for", lambda *a, **k: pytest.fail("scored again"))
        pooled = stages.evaluate_methods(two, methods, workers=2, **kw)["rows"]
        assert stages.score_methods(two, methods, workers=2, **kw) == []
    for p in (stages.layout(two).results / ".scores").glob("*.json"):
        p.unlink()
    inline = stages.evaluate_methods(two, methods, workers=1, **kw)["rows"]
    assert list(pooled) == list(inline) and len(pooled) == 4  # the mean layout first
    for label in pooled:
        if label in (stages.MARIGOLD_LABEL, stages.label_of("teacher")):  # their sums depend on the thread count
            assert pooled[label] == pytest.approx(inline[label], rel=1e-5, nan_ok=True), label
        else:  # FiffDepth's pipeline is thread-independent (and the mean layout has no model)
            assert json.dumps(pooled[label]) == json.dumps(inline[label]), label


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


def test_in_processes_keeps_order_and_names_a_failure():
    import operator

    assert pool.in_processes(operator.pow, [(2, 3), (3, 2), (5, 0)], workers=2, progress=False) == [8, 9, 1]
    with pytest.raises(RuntimeError, match="score 'broken' failed: division by zero"):
        pool.in_processes(operator.truediv, [(1, 2), (1, 0)], workers=2, names=["fine", "broken"], desc="score",
                          progress=False)


def test_one_thread_lanes_give_the_calls_results_in_order_and_their_errors():
    import torch

    before = torch.get_num_threads()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    for threads in (1, 2):  # 1: the calls run inline at submit
        torch.set_num_threads(threads)
        try:
            with pool.one_thread_lanes("cpu") as lanes:
                futures = [lanes.submit(torch.matrix_power, x, k) for k in range(4)]
                failed = lanes.submit(torch.matrix_power, x[:, :3], 2)  # not square
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == threads
            assert all(torch.allclose(f.result(), torch.matrix_power(x, k), rtol=1e-5) for k, f in enumerate(futures))
            with pytest.raises(RuntimeError):
                failed.result()
        finally:
            torch.set_num_threads(before)
