"""The `fiffdepth` command line: one line per project error, exit code 2, --debug shows the traceback."""

import numpy as np
import pytest
from PIL import Image

from fiffdepth.cli import main
from fiffdepth.data.io import DataError
from fiffdepth.hub import FiffDepthError


def test_data_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "missing" in err and "Traceback" not in err
    with pytest.raises(DataError):
        main(["data", "stats", str(tmp_path / "missing"), "--debug"])


def test_model_error_is_one_line_exit_2(tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "model" / "unet").mkdir(parents=True)  # a model folder with nothing in it
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: UNet") and str(tmp_path / "model") in err[0]
    with pytest.raises(FiffDepthError):
        main(["--debug", *argv])


def test_train_config_and_data_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--set", "loss.gama=0.7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss.gama" in err
    synth = tmp_path / "synth"
    from fiffdepth.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(synth, n=2, size=16, seed=0, progress=False)
    argv = ["train", "--no-progress", "--set", f"data.synthetic=embedded:{synth}", "--set", f"data.real={tmp_path}",
            "--set", f"data.pseudo_labels={tmp_path / 'no-labels'}", "--set", "model.pretrained=",
            "--set", "data.resolution=16", "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-labels: pseudo-label folder not found" in err[0]


def test_version_and_every_option_has_help(capsys):
    import argparse
    import importlib

    from fiffdepth import __version__
    from fiffdepth.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"fiffdepth {__version__}"
    for name, (module, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module).add_arguments(parser)
        bare = [a.dest for a in parser._actions if not a.help]
        assert not bare, f"fiffdepth {name}: options without help text: {bare}"
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "(default: 1)" in text and "(default: None)" not in text and "``" not in text


@pytest.mark.parametrize("batch,calls", [(1, 4), (4, 1)])
def test_predict_batch_size_batches_unet_calls(tmp_path, monkeypatch, batch, calls):
    """issue 16: --batch-size is honoured (same-size images share one UNet call), outputs unchanged."""
    from diffusers import UNet2DConditionModel

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    seen = []
    forward = UNet2DConditionModel.forward

    def counting(self, sample, *a, **kw):
        seen.append(sample.shape[0])
        return forward(self, sample, *a, **kw)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    out = tmp_path / f"out{batch}"
    assert main(["predict", str(images), "--out", str(out), "--batch-size", str(batch)]) == 0
    assert len(seen) == calls and sum(seen) == 4
    assert sorted(p.name for p in out.glob("*.npy")) == [f"im{i}.npy" for i in range(4)]
