import numpy as np

from fiffdepth.cli import main


def test_data_synth_stats_real(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--n", "4", "--size", "64", "--seed", "3", "--out", str(out), "--workers", "1"]) == 0
    assert sorted(p.name for p in (out / "rgb").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    d = np.load(out / "depth" / "000003.npy")
    assert d.dtype == np.float32 and d.shape == (64, 64)
    assert main(["data", "stats", str(out)]) == 0
    assert "scenes: 4" in capsys.readouterr().out
    assert main(["data", "real", "--n", "3", "--size", "32", "--out", str(tmp_path / "real")]) == 0
    assert len(list((tmp_path / "real").iterdir())) == 3
