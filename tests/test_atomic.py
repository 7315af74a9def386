"""fiffdepth.atomic: a failed write leaves the old file or directory as it was, and no debris."""

import json

import numpy as np
import pytest

from fiffdepth.atomic import atomic_write, replace_dir, staged_dir, write_json, write_text


def test_write_replaces_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def half_then_crash(p):
        p.write_text('{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]
    write_text(path, "new")
    assert path.read_text() == "new"


def test_temporary_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    atomic_write(tmp_path / "d.npy", lambda p: np.save(p, np.arange(3)))  # np.save adds .npy otherwise
    assert np.load(tmp_path / "d.npy").tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["d.npy"]


def test_staged_dir_commits_on_success_and_leaves_old_on_failure(tmp_path):
    target = tmp_path / "model"
    with staged_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with staged_dir(target) as tmp:
            (tmp / "weights").write_text("v2-partial")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with staged_dir(target) as tmp:
        (tmp / "other").write_text("v3")
    assert [p.name for p in target.iterdir()] == ["other"]   # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_replace_dir_into_a_new_place(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    (tmp_path / "a").mkdir()
    replace_dir(src, tmp_path / "a" / "dst")
    assert (tmp_path / "a" / "dst" / "f").read_text() == "x" and not src.exists()
