"""`make reproduce PRESET=paper DATA=ROOT`: the data root's conventional layout becomes notebook parameters."""

import pytest

from fiffdepth.reproduce import SMOKE, NOTEBOOKS, data_parameters, notebook_parameters


def test_data_root_layout_maps_to_overrides_and_eval_sets(tmp_path):
    for d in ("hypersim", "laion_art", "laion_art_pseudo", "nyu", "kitti"):
        (tmp_path / d).mkdir()
    params, datasets = data_parameters(tmp_path)
    o = params["overrides"]
    assert o["data.synthetic"] == [f"hypersim:{tmp_path / 'hypersim'}"]  # vkitti absent: not used
    assert o["data.real"] == [str(tmp_path / "laion_art")]
    assert o["data.pseudo_labels"] == str(tmp_path / "laion_art_pseudo")
    assert datasets == [f"nyu:{tmp_path / 'nyu'}", f"kitti:{tmp_path / 'kitti'}"]


def test_missing_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root not found"):
        data_parameters(tmp_path / "nope")


def test_smoke_parameters_cover_every_notebook_and_extra_wins():
    assert set(SMOKE) == set(NOTEBOOKS)
    p = notebook_parameters("03_train", "tiny", "o", "f", smoke=True, extra={"steps": 7})
    assert p == {"preset": "tiny", "out_dir": "o", "figures_dir": "f", "steps": 7, "n_show": 2}


def test_partial_run_keeps_the_other_notebooks_timings(tmp_path, monkeypatch):
    import json

    import papermill

    from fiffdepth.reproduce import run_notebooks

    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    for name in NOTEBOOKS:
        (nb_dir / f"{name}.ipynb").write_text("{}")
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: None)
    out = tmp_path / "out"
    out.mkdir()
    old = {name: 10.0 for name in NOTEBOOKS}
    (out / "timings.json").write_text(json.dumps({"preset": "tiny", "seconds": {**old, "total": 70.0}}))
    run_notebooks(out, "tiny", tmp_path / "fig", only=["03_train"], notebooks_dir=nb_dir, progress=False)
    seconds = json.loads((out / "timings.json").read_text())["seconds"]
    assert seconds["00_data"] == 10.0 and seconds["06_figures"] == 10.0
    assert seconds["03_train"] < 10.0
    assert seconds["total"] == sum(seconds[n] for n in NOTEBOOKS)
