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


def test_a_rotated_jpeg_has_one_shape_everywhere(tmp_path, tiny_cfg, capsys):
    """A phone photo stored 60 wide × 40 high with EXIF orientation 6 (rotate 90°) is 40 wide × 60
    high in predict, pseudo-labelling, the training loaders and evaluation: one loader (issue 16)."""
    import torch
    from conftest import save_tiny_model

    from fiffdepth.cli import main
    from fiffdepth.data.io import read_image
    from fiffdepth.data.real import ImageFolder
    from fiffdepth.pipeline import image_to_tensor, load_image
    from fiffdepth.teacher import _to_rgb_uint8, unlabelled_images

    photos = tmp_path / "photos"
    photos.mkdir()
    stored = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(stored).save(photos / "phone.jpg", quality=95, exif=exif)
    assert Image.open(photos / "phone.jpg").size == (60, 40)  # as stored
    upright = (60, 40)

    rgb = read_rgb(photos / "phone.jpg")  # every dataset reader (training and evaluation sets)
    assert rgb.shape == (*upright, 3)
    assert read_rgb((photos / "phone.jpg").read_bytes(), "phone.jpg").shape == (*upright, 3)  # tar members, eval roots
    assert read_image(photos / "phone.jpg").shape == (*upright, 3)
    assert ImageFolder(photos).read(0)[0].shape == (*upright, 3)  # training's real images
    [(name, pixels)] = unlabelled_images(photos)  # what `fiffdepth pseudolabel` labels
    assert name == "phone.jpg" and pixels().shape == (*upright, 3)
    with Image.open(photos / "phone.jpg") as img:
        assert _to_rgb_uint8(img).shape == (*upright, 3)  # the teacher given a PIL image
        assert tuple(image_to_tensor(img).shape) == (3, *upright)  # the pipeline given a PIL image
    image, _ = load_image(photos / "phone.jpg")  # fiffdepth predict
    assert tuple(image.shape) == (3, *upright)
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)  # and the same pixels

    model = save_tiny_model(tmp_path / "model", tiny_cfg.model, 32)
    assert main(["predict", str(photos / "phone.jpg"), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "phone.npy").shape == upright
    capsys.readouterr()


def test_sixteen_bit_and_float_images_follow_one_rule(tmp_path):
    """16-bit: scaled by its range (uint16 kept for predict, rounded to 8 bits for datasets);
    32-bit integer likewise, whatever its values; float must lie in [0, 1]."""
    from fiffdepth.data.io import read_image

    Image.fromarray(np.array([[0, 65535], [32896, 128]], np.uint16)).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png").dtype == np.uint16
    assert read_rgb(tmp_path / "g16.png")[..., 0].tolist() == [[0, 255], [128, 0]]
    Image.fromarray(np.array([[0, 200]], np.int32), mode="I").save(tmp_path / "i32.tif")
    assert read_rgb(tmp_path / "i32.tif")[..., 0].tolist() == [[0, 1]]  # 200 / 65535, not 200 / 255
    Image.fromarray(np.array([[0.0, 0.5]], np.float32), mode="F").save(tmp_path / "f.tif")
    assert read_rgb(tmp_path / "f.tif")[..., 0].tolist() == [[0, 128]]
    Image.fromarray(np.array([[0.0, 7.5]], np.float32), mode="F").save(tmp_path / "f_big.tif")
    with pytest.raises(DataError, match=r"f_big.tif.*\[0, 1\]"):
        read_rgb(tmp_path / "f_big.tif")
