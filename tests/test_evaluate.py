"""`fiffdepth evaluate`: end to end on tiny benchmarks in each format, an oracle that proves the
wiring (AbsRel 0, δ1 100, F1 1), Marigold's and our pipeline scored as they are, bad files and spec errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import (fixture_scene, save_tiny_model, make_am2k_fixture, make_da2k_fixture, make_scannet_fixture,
                      make_sintel_fixture)

from fiffdepth import evaluate as ev
from fiffdepth.cli import main


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """64 px images gain nothing from a second thread, and lose seconds per image to OpenMP
    spin-waits when another process holds the other core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_cfg):
    return save_tiny_model(tmp_path_factory.mktemp("evalmodel") / "tiny", tiny_cfg.model, 64)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from fiffdepth.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("bench")
    write_synthetic_dataset(root / "embedded", n=3, size=64, seed=1_000_003, progress=False)
    return {"scannet": make_scannet_fixture(root / "scannet"), "sintel": make_sintel_fixture(root / "sintel"),
            "am2k": make_am2k_fixture(root / "am2k"), "da2k": make_da2k_fixture(root / "da2k"),
            "embedded": root / "embedded"}


def _specs(bench, names=("scannet", "sintel", "am2k", "da2k", "embedded")):
    return [f"{n}:{bench[n]}" for n in names]


def _key(image: torch.Tensor) -> bytes:
    return image.numpy().tobytes()


def test_cli_end_to_end_every_format(model_dir, bench, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["evaluate", "--model", str(model_dir), "--out", str(out), "--no-progress", "--batch-size", "2"]
    for s in _specs(bench):
        argv += ["--dataset", s]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == str(model_dir) and res["label"] == "tiny" and res["versions"]["torch"] == torch.__version__
    d = res["datasets"]
    assert {k: d[k]["n_images"] for k in d} == {"scannet": 2, "sintel": 2, "am2k": 2, "da2k": 2, "embedded": 3}
    assert all(d[k]["skipped"] == 0 for k in d)
    sc = d["scannet"]
    assert sc["processing_resolution"] == 0 and sc["protocol"]["max_depth"] == 10.0  # Marigold: ScanNet native, ≤ 10 m
    assert set(sc["metrics"]) == {"abs_rel", "sq_rel", "rmse", "delta1", "delta2", "delta3"}
    assert 0 <= sc["metrics"]["abs_rel"] < 1 and 0 <= sc["metrics"]["delta1"] <= sc["metrics"]["delta3"] <= 1
    assert 0 <= d["sintel"]["metrics"]["boundary_f1"] <= 1 and 0 <= d["am2k"]["metrics"]["boundary_recall"] <= 1
    assert d["da2k"]["metrics"]["pairs"] == 8 and d["da2k"]["metrics"]["da2k_accuracy"] in {k / 8 for k in range(9)}
    assert {"abs_rel", "delta1", "boundary_f1"} <= set(d["embedded"]["metrics"])
    rows = [json.loads(line) for line in (out / "scannet" / "per_image.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["scene0000_00/color/000000.jpg", "scene0000_00/color/000001.jpg"]
    assert np.mean([r["abs_rel"] for r in rows]) == pytest.approx(sc["metrics"]["abs_rel"])  # mean over images
    md = (out / "results.md").read_text()
    for title in ("ScanNet AbsRel ↓", "ScanNet δ1 ↑", "Embedded AbsRel ↓", "DA-2K Acc (%) ↑", "Sintel F1 ↑",
                  "Embedded F1 ↑", "AM R ↑"):
        assert title in md
    printed = capsys.readouterr().out
    assert "| tiny |" in md and md in printed and "AbsRel / mean layout" not in md
    assert "no mean-layout baseline row" in printed and "--mean-layout DIR" in printed  # embedded without the baseline
    assert not list(out.rglob(".*tmp*"))  # atomic writes leave no temporaries


def test_cli_mean_layout_row_and_two_embedded_folders(model_dir, bench, tmp_path, capsys):
    from fiffdepth.baselines import MEAN_LAYOUT_LABEL
    from fiffdepth.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "synth", n=3, size=32, seed=0, progress=False)
    write_synthetic_dataset(tmp_path / "eval_real", n=1, size=64, seed=3_000_017, progress=False, style="real")
    out = tmp_path / "res"
    assert main(["evaluate", "--model", str(model_dir), "--dataset", f"embedded:{bench['embedded']}",
                 "--dataset", f"embedded:{tmp_path / 'eval_real'}", "--mean-layout", str(tmp_path / "synth"),
                 "--max-images", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    both = ev.read_results(out / "results.json")
    assert [r["label"] for r in both] == [MEAN_LAYOUT_LABEL, "tiny"] and ev.is_mean_layout(both[0])
    assert list(both[1]["datasets"]) == ["embedded", "embedded_eval_real"]
    md = (out / "results.md").read_text()
    assert md in printed and "no mean-layout baseline row" not in printed
    details = md[md.index("### All metrics"):].splitlines()
    assert details[2].endswith("| AbsRel / mean layout ↓ |")
    rows = [line for line in details if line.startswith("| ") and "Embedded" in line]
    assert rows[0].startswith(f"| {MEAN_LAYOUT_LABEL} | Embedded |") and rows[0].endswith("| 1.00 |")
    assert rows[1].startswith(f"| {MEAN_LAYOUT_LABEL} | Embedded (eval_real) |") and rows[1].endswith("| 1.00 |")
    ratio = both[1]["datasets"]["embedded"]["metrics"]["abs_rel"] / both[0]["datasets"]["embedded"]["metrics"]["abs_rel"]
    assert rows[2].startswith("| tiny | Embedded |") and rows[2].endswith(f"| {ratio:.2f} |")
    assert ev.abs_rel_ratios(both)[1]["embedded"] == pytest.approx(ratio)
    assert main(["evaluate", "--model", str(model_dir), "--dataset", f"embedded:{bench['embedded']}", "--dataset",
                 f"embedded:{bench['embedded']}", "--out", str(out)]) == 2  # the same folder twice
    assert "given twice" in capsys.readouterr().err


def _oracle(lookup, space="depth"):
    """Returns 2·GT + 3 (or 3 / GT + 0.1 as disparity): exact up to the affine map each metric removes."""

    def predict(images, res):
        gts = [lookup[_key(im)] for im in images]
        if space == "disparity":
            return [3.0 / np.where(g > 0, g, 1.0) + 0.1 for g in gts]
        return [2.0 * np.nan_to_num(g, nan=7.0) + 3.0 for g in gts]

    return ev.Predictor(predict, space, {"kind": "oracle"})


def test_oracle_scores_perfectly(bench):
    from fiffdepth.data import SyntheticDepthDataset

    lookup = {}
    for name in ("embedded", "sintel"):
        ds = ev.open_dataset(f"{name}:{bench[name]}")
        for i in range(len(ds)):
            lookup[_key(ds[i]["image"])] = ds[i]["depth"][0].numpy()
    for name, seed0 in (("am2k", 20), ("da2k", 30)):
        ds = ev.open_dataset(f"{name}:{bench[name]}")
        for i in range(len(ds)):
            lookup[_key(ds[i]["image"])] = fixture_scene(48, 64, seed0 + i)[1]
    assert len(SyntheticDepthDataset(bench["embedded"])) == 3
    res = ev.evaluate_model(_oracle(lookup), _specs(bench, ("embedded", "sintel", "am2k", "da2k")), progress=False)
    m = {k: v["metrics"] for k, v in res["datasets"].items()}
    assert m["embedded"]["abs_rel"] < 1e-6 and m["embedded"]["delta1"] == 1.0 and m["embedded"]["rmse"] < 1e-5
    assert m["embedded"]["boundary_f1"] == pytest.approx(1.0)
    assert m["sintel"]["boundary_f1"] == pytest.approx(1.0)
    assert m["am2k"]["boundary_recall"] == pytest.approx(1.0) and m["da2k"]["da2k_accuracy"] == 1.0
    disp = ev.evaluate_model(_oracle(lookup, "disparity"), _specs(bench, ("embedded", "da2k")), progress=False)
    assert disp["config"]["predictor"]["output_space"] == "disparity"
    assert disp["datasets"]["embedded"]["metrics"]["abs_rel"] < 1e-6 and disp["datasets"]["embedded"]["alignment"] == "disparity"
    assert disp["datasets"]["embedded"]["metrics"]["boundary_f1"] == pytest.approx(1.0)
    assert disp["datasets"]["da2k"]["metrics"]["da2k_accuracy"] == 1.0  # larger disparity = closer
    # a constant prediction finds no edge and orders no pair
    flat = ev.Predictor(lambda ims, res: [np.ones(im.shape[-2:]) for im in ims])
    f = ev.evaluate_model(flat, _specs(bench, ("sintel", "da2k")), progress=False)["datasets"]
    assert f["sintel"]["metrics"]["boundary_f1"] == 0.0 and f["da2k"]["metrics"]["da2k_accuracy"] == 0.0


def test_bad_file_is_skipped_and_two_models_share_the_table(model_dir, bench, tmp_path):
    from fiffdepth.teacher import default_processor, tiny_teacher_config
    from transformers import DepthAnythingForDepthEstimation

    da_dir = tmp_path / "tiny_da"
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(tiny_teacher_config(image_size=56)).save_pretrained(da_dir)
    default_processor(56).save_pretrained(da_dir)
    scannet = tmp_path / "scannet"
    shutil.copytree(bench["scannet"], scannet)
    (scannet / "scene0000_00/color/000001.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "res"
    with pytest.warns(UserWarning, match="000001.jpg"):
        code = main(["evaluate", "--model", str(model_dir), "--model", str(da_dir), "--label", "FiffDepth",
                     "--label", "DA tiny", "--dataset", f"scannet:{scannet}", "--dataset", f"embedded:{bench['embedded']}",
                     "--max-images", "2", "--processing-resolution", "56", "--out", str(out), "--no-progress"])
    assert code == 0
    both = ev.read_results(out / "results.json")
    assert [r["label"] for r in both] == ["FiffDepth", "DA tiny"]
    assert both[1]["config"]["predictor"]["kind"] == "depth-anything"
    assert both[1]["datasets"]["scannet"]["alignment"] == "disparity"
    for r in both:
        s = r["datasets"]["scannet"]
        assert (s["n_images"], s["skipped"]) == (1, 1) and "000001.jpg" in s["skipped_files"][0]
        assert r["datasets"]["embedded"]["n_images"] == 2  # --max-images
    assert (out / "DA_tiny" / "embedded" / "per_image.jsonl").read_text().count("\n") == 2
    md = (out / "results.md").read_text()
    assert "| FiffDepth |" in md and "| DA tiny |" in md and "**" in md  # best of two marked bold
    assert ev.results_table(both) == md


def test_one_evaluation_function_scores_marigold_and_fiffdepth_pipelines_as_they_are(tiny_model, model_dir, bench):
    """No adapter: diffusers' MarigoldDepthPipeline (tiny random components, no download) and our
    pipeline go into the same functions, which read `.prediction` (Marigold's (N, H, W, 1))."""
    from diffusers import MarigoldDepthPipeline

    from fiffdepth.marigold import marigold_pipeline, widen_unet
    from fiffdepth.pipeline import FiffDepthPipeline

    torch.manual_seed(0)
    marigold = marigold_pipeline(widen_unet(tiny_model.unet).eval(), tiny_model, inference_steps=2)
    marigold.set_progress_bar_config(disable=True)
    ours = FiffDepthPipeline.from_pretrained(model_dir)
    assert isinstance(marigold, MarigoldDepthPipeline) and not isinstance(marigold, FiffDepthPipeline)
    dataset = ev.open_dataset(f"embedded:{bench['embedded']}")
    images = [dataset[i]["image"] for i in range(2)] + [torch.rand(3, 40, 56)]  # two sizes: two calls
    call = ev.marigold_call(steps=2, ensemble=2)
    for pipe, kwargs in ((marigold, call), (ours, None)):
        a = ev.predict_raw(pipe, images, 64, pipeline_kwargs=kwargs)
        assert [m.shape for m in a] == [(64, 64), (64, 64), (40, 56)]
        assert all(np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1 for m in a)
        alone = ev.predict_raw(pipe, images[1:2], 64, pipeline_kwargs=kwargs)[0]
        np.testing.assert_array_equal(a[1], alone)  # seeded per image: the neighbours do not matter
        res = ev.evaluate_model(pipe, _specs(bench, ("embedded", "da2k")), max_images=2, progress=False,
                                batch_size=2, pipeline_kwargs=kwargs)
        assert {d: r["n_images"] for d, r in res["datasets"].items()} == {"embedded": 2, "da2k": 2}
        assert np.isfinite(res["datasets"]["embedded"]["metrics"]["abs_rel"])
    direct = ours(images[:2], processing_resolution=64).prediction  # what evaluation read: .prediction
    np.testing.assert_array_equal(ev.predict_raw(ours, images[:2], 64), list(direct[..., 0]))
    info = ev.describe_predictor(marigold, call)
    assert info["kind"] == "marigold" and info["num_inference_steps"] == 2 and info["seed"] == 0
    assert ev.describe_predictor(ours)["kind"] == "fiffdepth" and "seed" not in ev.describe_predictor(ours)


def test_dataset_spec_errors(tmp_path, capsys, bench, monkeypatch):
    with pytest.raises(ev.EvaluationError, match="unknown dataset 'nyuv2'.*nyu, kitti.*embedded"):
        ev.parse_dataset_spec("nyuv2:/data")
    with pytest.raises(ev.EvaluationError, match=f"{tmp_path / 'absent'}: no such file"):
        ev.parse_dataset_spec(f"sintel:{tmp_path / 'absent'}")
    with pytest.raises(ev.EvaluationError, match="no split file eth3d_filename_list.txt"):
        ev.open_dataset(f"eth3d:{bench['scannet']}")
    spec = ev.parse_dataset_spec(f"scannet:{bench['scannet']}:{bench['scannet'] / 'scannet_val_sampled_list_800_1.txt'}")
    assert len(ev.open_dataset(spec)) == 2
    monkeypatch.chdir(tmp_path)  # no outputs/data/eval here: the default held-out scenes are missing
    with pytest.raises(ev.EvaluationError, match="held-out embedded scenes not found.*fiffdepth data synth"):
        ev.parse_dataset_spec("embedded")
    assert main(["evaluate", "--model", str(tmp_path), "--dataset", "foo:bar", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'foo'" in err


def test_embedded_scores_per_scene_kind(bench, tmp_path):
    """Rows carry meta.jsonl's scene kind, the summary averages each kind, the tables list them
    (with AbsRel over the mean layout's on the same kind), and a broken meta line is named."""
    root = tmp_path / "embedded"
    shutil.copytree(bench["embedded"], root)
    metas = [json.loads(line) for line in (root / "meta.jsonl").read_text().splitlines()]
    for meta, kind in zip(metas, ("indoor", "outdoor", "outdoor")):
        meta["kind"] = kind
    (root / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metas))
    assert ev.scene_kinds(root) == {m["id"]: m["kind"] for m in metas}
    tilt = ev.Predictor(lambda ims, res: [np.linspace(1.0, 2.0, im.shape[-2])[:, None].repeat(im.shape[-1], 1)
                                          for im in ims])
    flat = ev.Predictor(lambda ims, res: [np.ones(im.shape[-2:]) + np.linspace(0, 1e-3, im.shape[-1]) for im in ims],
                        info={"kind": "mean_layout"})
    out = tmp_path / "res"
    res = ev.evaluate_model(tilt, [f"embedded:{root}"], out_dir=out, progress=False, label="tilt")
    rows = [json.loads(line) for line in (out / "embedded" / "per_image.jsonl").read_text().splitlines()]
    assert [r["scene"] for r in rows] == ["indoor", "outdoor", "outdoor"]
    summary = res["datasets"]["embedded"]
    assert list(summary["by_scene"]) == ["indoor", "outdoor"]
    assert summary["by_scene"]["outdoor"]["n_images"] == 2
    assert summary["by_scene"]["outdoor"]["metrics"]["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in rows[1:]]))
    assert summary["by_scene"]["indoor"]["metrics"]["delta1"] == pytest.approx(rows[0]["delta1"])
    assert summary["metrics"]["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in rows]))  # the kind is no metric
    base = ev.evaluate_model(flat, [f"embedded:{root}"], progress=False, label="layout")
    md = ev.results_table([base, res])
    assert "### By scene kind" in md
    ratio = summary["by_scene"]["outdoor"]["metrics"]["abs_rel"] / base["datasets"]["embedded"]["by_scene"]["outdoor"]["metrics"]["abs_rel"]
    line = next(x for x in md.splitlines() if x.startswith("| tilt | Embedded | outdoor |"))
    assert line.split("|")[4].strip() == "2" and line.split("|")[-2].strip() == f"{ratio:.2f}"
    # without meta.jsonl there is nothing per kind, and no section
    (root / "meta.jsonl").unlink()
    plain = ev.evaluate_model(tilt, [f"embedded:{root}"], progress=False)
    assert "by_scene" not in plain["datasets"]["embedded"] and "By scene kind" not in ev.results_table(plain)
    (root / "meta.jsonl").write_text(json.dumps(metas[0]) + "\n{not json\n")
    with pytest.raises(ev.EvaluationError, match=r"meta\.jsonl:2: not a scene record"):
        ev.evaluate_model(tilt, [f"embedded:{root}"], progress=False)
