"""fiffdepth.stages: the pure pieces (the stages themselves run in the notebook smoke test)."""

import math

import pytest

from fiffdepth.stages import spread_over_seeds


def test_spread_over_seeds_mean_sample_std_and_counts():
    rows = {0: {"A": {"abs_rel": 10.0, "delta1": 60.0}, "B": {"abs_rel": 5.0}},
            1: {"A": {"abs_rel": 14.0, "delta1": float("nan")}},
            2: {"A": {"abs_rel": 12.0, "delta1": None}}}
    s = spread_over_seeds(rows)
    assert list(s) == ["A", "B"]
    mean, std, n = s["A"]["abs_rel"]
    assert (mean, n) == (12.0, 3) and std == pytest.approx(2.0)      # sample std of 10, 14, 12
    assert s["A"]["delta1"][0] == 60.0 and s["A"]["delta1"][2] == 1  # NaN and None are left out
    assert math.isnan(s["A"]["delta1"][1]) and math.isnan(s["B"]["abs_rel"][1])


def test_link_inputs_shares_data_cache_and_pretrained_priors(tmp_path):
    from fiffdepth.stages import layout, link_inputs
    from fiffdepth.weights import WEIGHTS_DIR

    L = layout(tmp_path / "out")
    for d in (L.synth, L.eval, L.eval_real, L.real, L.pseudo):
        d.mkdir(parents=True)
    S = layout(link_inputs(tmp_path / "out" / "lab", L.root))
    assert S.synth.resolve() == L.synth.resolve() and S.pseudo.resolve() == L.pseudo.resolve()
    assert S.cache.resolve() == L.cache.resolve() and L.cache.is_dir()  # made, so runs share it
    assert S.generator == WEIGHTS_DIR / "generator"  # no priors in OUT: both use the shipped ones
    (L.root / "priors" / "generator").mkdir(parents=True)
    (L.root / "priors" / "generator" / "pretrain_report.json").write_text("{}")
    S = layout(link_inputs(tmp_path / "out" / "seeds" / "seed1", L.root))
    assert S.generator.resolve() == L.generator.resolve() == (L.root / "priors" / "generator").resolve()
