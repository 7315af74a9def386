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
