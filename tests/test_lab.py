"""fiffdepth.lab: settings checked and spelt one way, runs cached by settings, the comparison,
and the widget (bad values refused in it, training in a background thread)."""

import json
import math

import pytest

from conftest import make_lab_outputs
from fiffdepth import stages
from fiffdepth.config import LossConfig, get_config
from fiffdepth.lab import FULL, MEAN_LAYOUT, Lab, LabSettings, LabWidget


def test_defaults_are_the_papers_and_the_presets():
    s, paper = LabSettings(), LossConfig()
    assert (s.gamma, s.lambda_mae, s.lambda_gm, s.lambda_k) == (paper.gamma, paper.lambda_mae, paper.lambda_gm,
                                                                  paper.lambda_k)
    assert (s.trajectory, s.trajectory_target, s.teacher_supervision) == (True, "blend", "d_minus1")
    assert s.steps == get_config("tiny").train.iterations and s.problems() == []


@pytest.mark.parametrize("bad, words", [
    ({"gamma": 1.5}, "γ = 1.5 is outside [0, 1]"), ({"gamma": -0.1}, "outside [0, 1]"),
    ({"gamma": math.nan}, "outside [0, 1]"), ({"steps": 0}, "steps = 0"), ({"steps": -3}, "steps = -3"),
    ({"steps": 2.5}, "whole number"), ({"lambda_gm": -1.0}, "λ_GM = -1.0 must be"), ({"seed": -1}, "seed"),
    ({"lambda_mae": 0.0, "lambda_gm": 0.0, "trajectory": False}, "nothing to train"),
    ({"trajectory_target": "noise"}, "trajectory target"), ({"teacher_supervision": "d1"}, "teacher supervision"),
])
def test_bad_values_are_named(bad, words):
    problems = LabSettings(**bad).problems()
    assert len(problems) == 1 and words in problems[0]


def test_equal_runs_share_a_slug_and_the_slug_holds_every_setting():
    base = LabSettings(steps=10)
    assert LabSettings(gamma=0.30000000000000004, steps=10).slug == LabSettings(gamma=0.3, steps=10).slug
    # knobs the objective ignores do not split the cache
    assert LabSettings(trajectory=False, gamma=0.1, lambda_k=0.7, steps=10).slug == \
        LabSettings(trajectory=False, steps=10).slug == LabSettings(lambda_k=0.0, steps=10).slug
    assert LabSettings(trajectory_target="image", gamma=0.9, steps=10).slug == \
        LabSettings(trajectory_target="image", steps=10).slug
    others = [LabSettings(**{k: v, "steps": 10}) for k, v in (("gamma", 0.7), ("lambda_mae", 2.0), ("lambda_gm", 0.1),
              ("lambda_k", 0.4), ("trajectory", False), ("trajectory_target", "image"),
              ("teacher_supervision", "d0"), ("teacher_supervision", "none"), ("seed", 3))] + [LabSettings(steps=11)]
    assert len({base.slug, *(o.slug for o in others)}) == len(others) + 1


def test_overrides_make_the_settings_config(tmp_path):
    s = LabSettings(gamma=0.7, lambda_k=0.4, teacher_supervision="d0", steps=12, seed=3)
    cfg = stages.stage_config(tmp_path, overrides=s.overrides(), variant=s.slug, steps=s.steps)
    assert (cfg.loss.gamma, cfg.loss.lambda_k, cfg.loss.teacher_supervision) == (0.7, 0.4, "d0")
    assert (cfg.train.iterations, cfg.train.seed, cfg.model.pretrained) == (12, 3, str(stages.layout(tmp_path).generator))
    assert cfg.train.output_dir == str(tmp_path / "runs" / s.slug)


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory):
    return make_lab_outputs(tmp_path_factory.mktemp("lab") / "outputs")


@pytest.mark.slow
def test_lab_trains_once_and_compares_with_the_full_method_and_the_mean_layout(lab_out):
    lab = Lab(lab_out)
    s = LabSettings(steps=2)
    summary = lab.train(s)
    done = lab.run_dir(s) / "summary.json"
    assert summary["steps"] == 2 and done.is_file()
    stamp = done.stat().st_mtime_ns
    assert lab.train(LabSettings(steps=2, gamma=0.5000001))["steps"] == 2 and done.stat().st_mtime_ns == stamp
    assert json.loads((lab.run_dir(s) / "lab_settings.json").read_text())["steps"] == 2
    with pytest.raises(ValueError, match="outside"):
        lab.train(LabSettings(gamma=2.0, steps=2))
    table = lab.compare(highlight=s.slug)
    labels = list(table["rows"])
    assert labels == [stages.label_of(MEAN_LAYOUT), lab.label(FULL), s.label]
    assert "weights/fiffdepth" in labels[1] and "steps" in labels[1]
    for row in table["rows"].values():  # both held-out domains
        assert row["abs_rel"] > 0 and row["real_abs_rel"] > 0
    assert table["html"].count("<tr") == 4 and 'class="new"' in table["html"]
    d0, dm1 = lab.predictions(s.slug)
    assert len(d0) == len(dm1) == len(lab.images()) == 2 * lab.n_show and d0[0].shape == (64, 64)
    assert lab.predictions(MEAN_LAYOUT)[1] is None


@pytest.mark.slow
def test_widget_refuses_bad_values_and_trains_in_the_background(lab_out):
    w = LabWidget(Lab(lab_out), LabSettings(steps=2, seed=5), redraw_every=0.0)
    assert w.wait(300)
    before = w.table.value.count("<tr")
    assert before >= 3  # header, mean layout, full method
    w.controls["gamma"].value = 1.5
    assert w.sliders["gamma"].value == 1.0 and w.controls["gamma"].value == 1.5  # the box keeps what was typed
    assert not w.train() and "Refused" in w.message.value and "γ = 1.5" in w.message.value
    w.controls["gamma"].value, w.controls["steps"].value = 0.5, 0
    assert not w.train() and "steps = 0" in w.message.value and not w._jobs.unfinished_tasks
    w.sliders["gamma"].value = 0.25
    assert w.controls["gamma"].value == 0.25

    w.controls["steps"].value = 2
    assert w.train()  # returns at once: training runs in the widget's thread
    assert w._jobs.unfinished_tasks and w._training is not None
    assert not w.train() and "Busy" in w.message.value  # one run at a time
    view = w.view.value
    w.split.value = 0.1  # the notebook side answers while the thread trains
    assert w.view.value != view
    assert w.wait(300), w.status.value
    assert "Done" in w.message.value, (w.message.value, w.status.value)
    new = w.settings()
    assert w.table.value.count("<tr") == before + 1 and 'class="new"' in w.table.value
    assert new.label in w.table.value
    assert w.progress.value == 2 and w.losses.value and w.maps.value and w.right.value == new.slug
    stamp = (w.lab.run_dir(new) / "summary.json").stat().st_mtime_ns
    assert w.train() and "Cached" in w.message.value
    assert w.wait(300) and "cached, not retrained" in w.message.value
    assert (w.lab.run_dir(new) / "summary.json").stat().st_mtime_ns == stamp
    assert w.table.value.count("<tr") == before + 1
