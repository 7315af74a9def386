"""Issue 17: the reproduction is byte-reproducible. A reduced pipeline (data → pseudo-labels →
train → evaluate, the stage functions make reproduce's notebooks call) runs in two fresh
processes into two fresh folders; their results tables must be identical bytes."""

import json
import os
import subprocess
import sys

import pytest

PIPELINE = r"""
import sys, torch
from fiffdepth import stages
out = sys.argv[1]
stages.make_data(out, n_synth=12, n_eval=4, size=64, n_real=2, n_styled=4, n_styled_real=4, workers=1, progress=False)
stages.make_pseudo_labels(out, progress=False)
stages.train_variant(out, "fiffdepth", steps=2, overrides={"train.heldout": 4}, progress=False)
stages.evaluate_methods(out, ["fiffdepth", "teacher"], progress=False, name="results")
"""


@pytest.mark.slow
def test_two_fresh_reduced_reproductions_give_identical_tables(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"run{i}" for i in (1, 2)]
    procs = [subprocess.Popen([sys.executable, "-c", PIPELINE, str(o)], env=env, stderr=subprocess.PIPE, text=True)
             for o in outs]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    tables = [(o / "results" / "results.md").read_bytes() for o in outs]
    assert tables[0] == tables[1]
    rows = [json.loads((o / "results" / "results.json").read_text())["rows"] for o in outs]
    assert rows[0] == rows[1] and set(rows[0]) >= {"FiffDepth (ours)", "teacher (tiny Depth Anything V2)"}
    weights = [(o / "runs" / "fiffdepth" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() for o in outs]
    assert weights[0] == weights[1]
