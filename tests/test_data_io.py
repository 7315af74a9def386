import numpy as np
import pytest
from PIL import Image

from fiffdepth.data.io import DataError, Root, clean_depth, list_files, read_depth_png, read_gray, read_rgb


def test_read_rgb_converts_modes(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and (out[..., 1] == gray).all()

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]

    g16 = np.array([[0, 65535], [256 * 100, 257]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert read_rgb(tmp_path / "g16.png")[..., 0].tolist() == [[0, 255], [100, 1]]

    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert read_rgb(tmp_path / "p.png").shape == (3, 4, 3)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("trunc.png", "junk.jpg", "missing.png"):
        with pytest.raises(DataError, match=name):
            read_rgb(tmp_path / name)
    assert issubclass(DataError, ValueError)


def test_depth_png_must_be_16_bit(tmp_path):
    Image.fromarray(np.array([[1000, 2500]], np.uint16)).save(tmp_path / "d.png")
    assert read_depth_png(tmp_path / "d.png", scale=1e-3)[0].tolist() == pytest.approx([1.0, 2.5])
    Image.fromarray(np.array([[10, 25]], np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(DataError, match="d8.png.*16-bit"):
        read_depth_png(tmp_path / "d8.png")


def test_clean_depth_marks_bad_values_invalid():
    d = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 2.0, 12.0], np.float32)
    depth, valid = clean_depth(d, 1e-3, 10.0)
    assert valid.tolist() == [False] * 5 + [True, False]
    assert depth.tolist() == [0, 0, 0, 0, 0, 2.0, 0] and np.isfinite(depth).all()


def test_empty_directory_and_gray_mask(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        list_files(tmp_path / "empty")
    Image.fromarray(np.array([[0, 255, 51]], np.uint8)).save(tmp_path / "m.png")
    assert read_gray(tmp_path / "m.png")[0].tolist() == pytest.approx([0.0, 1.0, 0.2])


def test_tar_root_reads_dot_slash_members(tmp_path):
    import tarfile

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"abc")
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        tar.add(tmp_path / "a", arcname="./a")
    root = Root(tmp_path / "d.tar")
    assert root.is_tar and root.read("a/x.bin") == b"abc"
    with pytest.raises(DataError, match="nope"):
        root.read("a/nope")


def test_depth_and_mask_of_different_shapes_is_a_data_error():
    with pytest.raises(DataError, match="d.npy: depth .* and mask .* differ"):
        clean_depth(np.ones((4, 5), np.float32), valid=np.ones((8, 8), bool), name="d.npy")
