"""Notebooks: each .ipynb equals its jupytext .py pair, papermill runs 00→06 with smoke
parameters, and nbval (strict) re-executes the executed notebooks and compares their outputs."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_committed_notebooks_match_their_source():
    """Each notebook is a jupytext pair: ``NN_name.py`` (py:percent, the source reviewed in
    diffs) and ``NN_name.ipynb`` (what Jupyter and papermill open), equal cell by cell, tags
    included, and committed without outputs (``make notebooks`` syncs them)."""
    import jupytext

    sources = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in sources] == [p.stem for p in notebooks] and len(sources) == 8
    for py, ipynb in zip(sources, notebooks):
        a, b = jupytext.read(py), nbformat.read(ipynb, 4)
        assert b.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", f"{ipynb.name}: not paired"
        assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells], \
            f"{ipynb.name} differs from {py.name}: run `make notebooks`"
        assert [c.metadata.get("tags", []) for c in a.cells] == [c.metadata.get("tags", []) for c in b.cells], \
            f"{ipynb.name}: cell tags differ from {py.name}: run `make notebooks`"
        assert any("parameters" in c.metadata.get("tags", []) for c in b.cells), f"{ipynb.name}: no parameters cell"
        assert b.cells[0].cell_type == "markdown"
        assert all(not c.get("outputs") for c in b.cells if c.cell_type == "code"), f"{ipynb.name} has outputs"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from fiffdepth.reproduce import NOTEBOOKS, run_notebooks

    out = tmp_path_factory.mktemp("smoke")
    timings = run_notebooks(out / "outputs", "tiny", out / "figures", smoke=True, progress=False)
    assert set(NOTEBOOKS) <= set(timings)
    return out


@pytest.mark.slow
def test_smoke_reproduction_writes_figures_and_results(smoke_run):
    figs = smoke_run / "figures"
    for name in ("embedded_scenes.png", "generator_samples.png", "vae_roundtrip.png", "teacher_pseudo_labels.png",
                 "loss_curves.png", "d0_vs_dminus1.png", "ablations.png", "fig1_real_photos.png",
                 "fig5_heldout_scenes.png", "fig6_boundaries.png", "fig7_ablations.png", "tables.md"):
        assert (figs / name).is_file() and (figs / name).stat().st_size > 0, name
    results = json.loads((smoke_run / "outputs" / "results" / "ablations.json").read_text())
    rows = results["rows"]
    assert {"FiffDepth (ours)", "Marigold-style multi-step fine-tune"} <= set(rows)
    for row in rows.values():
        assert 0 <= row["abs_rel"] and 0 <= row["delta1"] <= 100


@pytest.mark.slow
def test_nbval_checks_executed_notebooks(smoke_run):
    executed = sorted((smoke_run / "outputs" / "notebooks").glob("*.ipynb"))
    assert len(executed) == 7
    for path in executed:  # each notebook has a text output that nbval compares (not only figure reprs)
        checked = [o for c in nbformat.read(path, 4).cells if c.cell_type == "code"
                   and "nbval-ignore-output" not in c.metadata.get("tags", []) for o in c.get("outputs", [])
                   if (o.get("text") or o.get("data", {}).get("text/markdown", "")).strip()]
        assert checked, f"{path.name}: no deterministic text output for nbval to check"
    # strict nbval: every code cell's text output must come out the same on re-execution, except
    # cells tagged nbval-ignore-output (timings, progress, random draws); images are not compared
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                        "--nbval-current-env", "--nbval-sanitize-with", str(REPO / "notebooks" / "nbval_sanitize.cfg"),
                        *map(str, executed)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
