"""fiffdepth.bench at toy size: JSON keys, positive times, FLOPs consistent with what each method runs."""

import json

import pytest
import torch

from fiffdepth.bench import (Components, bench_tiny, count_flops, count_samples, flop_counter, format_report,
                             marigold_flops_from_samples)

RES = 32


@pytest.fixture(scope="module")
def result():
    return bench_tiny(images=2, resolution=RES, marigold_50x10_images=1, batch=2, bf16_resolution=RES // 2, threads=2,
                      warmup=0, progress=False)


def test_result_has_the_issue_keys_and_positive_times(result):
    assert result["device"] == "cpu" and result["resolution"] == RES
    spi = result["seconds_per_image"]
    assert spi["full"] > 0 and spi["tiny"] > 0 and spi["full"] == spi["fiffdepth"]
    assert set(result["ratios"]) == set(result["flop_ratios"]) == {"marigold_50x10", "marigold_1x1", "depth_anything"}
    assert all(v > 0 for v in result["ratios"].values())
    assert 0 <= result["bf16_rel_err"] < 1
    assert result["images"]["marigold_50x10"] == 1 and result["images"]["fiffdepth"] == 2
    assert {"torch", "diffusers", "transformers"} <= set(result["versions"])
    rows = {(r["dtype"], r["decoder"], r["batch"]) for r in result["stages"]}
    assert rows == {("float32", "full", 1), ("float32", "tiny", 1), ("float32", "full", 2), ("float32", "tiny", 2),
                    ("bfloat16", "full", 1), ("bfloat16", "tiny", 1)}
    for r in result["stages"]:
        assert all(r["seconds_per_image"][s] > 0 for s in ("encode", "unet", "decode", "total"))
    json.dumps(result)  # JSON-able
    assert "acceptance" in result and "FLOP ratio" in format_report(result)


def test_flops_follow_the_call_counts(result):
    fl, samples = result["flops_per_image"], result["module_samples_per_image"]
    stages = result["stage_flops_per_image"]
    # FiffDepth: one encode, one UNet pass, one decode; the stages add up to the counted total
    assert samples["fiffdepth"] == {s: {"calls": 1, "samples": 1} for s in ("encode", "unet", "decode")}
    assert sum(stages["full"].values()) == fl["fiffdepth"]
    assert stages["tiny"]["encode"] == stages["full"]["encode"] and stages["tiny"]["decode"] < stages["full"]["decode"]
    # Marigold 50×10 in diffusers: one encode (latent repeated), 500 UNet samples, 10 decodes
    m = samples["marigold_50x10"]
    assert (m["encode"]["samples"], m["unet"]["samples"], m["decode"]["samples"]) == (1, 500, 10)
    # its UNet is FiffDepth's with conv_in widened from 4 to 8 input channels
    cfg = Components("tiny", RES, torch.device("cpu")).model.unet.config
    h = RES // 4
    extra_conv_in = 2 * 4 * cfg.block_out_channels[0] * 9 * h * h
    unet8 = stages["full"]["unet"] + extra_conv_in
    assert fl["marigold_1x1"] == fl["fiffdepth"] + extra_conv_in
    assert fl["marigold_50x10"] == fl["marigold_1x1"] + 499 * unet8 + 9 * stages["full"]["decode"]
    assert result["flop_ratios"]["marigold_50x10"] == pytest.approx(fl["marigold_50x10"] / fl["fiffdepth"])


def test_cpu_sdpa_is_counted():
    q = torch.randn(1, 2, 16, 8)
    _, f = count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    assert f == 2 * (2 * 16 * 16 * 8) * 2  # QKᵀ and AV, 2 FLOPs per multiply-add, 2 heads


def test_derived_marigold_flops_equal_a_direct_count():
    """The 50×10 FLOPs are derived, not counted; check the derivation on a 3-step × 2 run."""
    comp = Components("tiny", RES, torch.device("cpu"))
    mp = comp.marigold
    x = torch.rand(1, 3, RES, RES)
    mods = {"encode": mp.vae.encoder, "unet": mp.unet, "decode": mp.vae.decoder}

    def run(steps, ens):
        with count_samples(mods) as calls:
            _, f = count_flops(lambda: mp(x, num_inference_steps=steps, ensemble_size=ens, batch_size=ens,
                                          processing_resolution=RES, output_type="np",
                                          generator=torch.Generator().manual_seed(0)))
        return f, calls

    f11, s11 = run(1, 1)
    f32, s32 = run(3, 2)
    per_sample = {}
    h = RES // 4
    with flop_counter() as c, torch.inference_mode():
        mp.unet(torch.zeros(1, 8, h, h), torch.tensor([999]), encoder_hidden_states=comp.model.empty_text_embedding)
    per_sample["unet"] = int(c.get_total_flops())
    _, per_sample["decode"] = count_flops(lambda: mp.vae.decode(torch.zeros(1, 4, h, h)))
    _, per_sample["encode"] = count_flops(lambda: mp.vae.encode(torch.zeros(1, 3, RES, RES)))
    assert marigold_flops_from_samples(f11, s11, s32, per_sample) == f32


def test_cli_writes_json(tmp_path):
    from fiffdepth.cli import main

    out = tmp_path / "b.json"
    assert main(["bench", "--preset", "tiny", "--resolution", str(RES), "--images", "1", "--quiet",
                 "--skip", "marigold_50x10,depth_anything,bf16,batched", "--warmup", "0", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["ratios"]) == {"marigold_1x1"} and r["seconds_per_image"]["tiny"] > 0
    assert r["command"].startswith("fiffdepth bench")
    assert main(["bench", "--skip", "everything"]) == 2


def test_meta_count_agrees_with_the_counted_runs(result):
    meta = result["flops_per_image_meta"]
    for m, f in result["flops_per_image"].items():
        assert meta[m] == f, m
