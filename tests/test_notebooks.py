"""Notebooks: the committed files equal their source, papermill runs 00→06 with smoke
parameters, and nbval re-executes the executed notebooks and checks them."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "notebooks"))


def test_committed_notebooks_match_their_source(tmp_path):
    import make_notebooks

    for built in make_notebooks.build(tmp_path):
        committed = REPO / "notebooks" / built.name
        assert committed.is_file(), f"{committed} missing: run python notebooks/make_notebooks.py"
        a, b = nbformat.read(built, 4), nbformat.read(committed, 4)
        assert [c.source for c in a.cells] == [c.source for c in b.cells], \
            f"{committed.name} differs from notebooks/make_notebooks.py: regenerate it"
        assert any("parameters" in c.metadata.get("tags", []) for c in b.cells), f"{built.name}: no parameters cell"
        assert b.cells[0].cell_type == "markdown"
        assert all(not c.get("outputs") for c in b.cells if c.cell_type == "code"), f"{built.name} has outputs"


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
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                        "--nbval-current-env", *map(str, executed)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
