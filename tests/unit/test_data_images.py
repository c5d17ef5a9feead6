"""Images: RGB arrays from any PNG mode, header-only sizes, clear errors, cached thumbnails."""

import os

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.data.images import image_size, load_rgb, thumbnail
from core.errors import ImageError
from tests.xbd_trees import write_corrupt_png, write_png


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA"])
def test_load_rgb_gives_uint8_hxwx3_for_every_png_mode(tmp_path, mode):
    path = write_png(tmp_path / f"img_{mode}.png", (24, 16), mode=mode)
    arr = load_rgb(path)
    assert arr.shape == (16, 24, 3) and arr.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(arr, expected)


def test_grey_png_is_repeated_into_three_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    arr = load_rgb(path)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr[0, 5, 0] == 5


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(path)
    assert load_rgb(path).min() == 255


def test_truncated_png_raises_image_error_naming_the_file(tmp_path):
    path = write_corrupt_png(tmp_path / "socal-fire_00000003_post_disaster.png")
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    msg = str(err.value)
    assert str(path) in msg and "not a readable PNG" in msg and "Re-download or remove it" in msg


def test_missing_file_and_non_image_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_rgb(tmp_path / "nope.png")
    text = tmp_path / "fake.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="fake.png"):
        load_rgb(text)
    with pytest.raises(ImageError, match="fake.png"):
        image_size(text)


def test_image_size_reads_the_header_only(tmp_path):
    path = write_png(tmp_path / "wide.png", (40, 20))
    assert image_size(path) == (40, 20)
    cut = write_corrupt_png(tmp_path / "cut.png", size=48)
    assert image_size(cut) == (48, 48)  # the header survives truncation; decoding does not
    with pytest.raises(ImageError):
        load_rgb(cut)


def test_thumbnail_is_written_once_and_reused(tmp_path, monkeypatch):
    src = write_png(tmp_path / "big.png", (120, 60))
    cache = tmp_path / "cache"
    thumb = thumbnail(src, cache, size=32)
    assert thumb.is_file() and thumb.parent.is_relative_to(cache)
    with Image.open(thumb) as im:
        assert im.size == (32, 16) and im.format == "PNG"
    calls = []
    monkeypatch.setattr(images, "load_rgb", lambda p: calls.append(p) or load_rgb(p))
    assert thumbnail(src, cache, size=32) == thumb and calls == []  # reused, not recomputed
    assert thumbnail(src, cache, size=16) != thumb and len(calls) == 1  # another size
    write_png(src, (60, 60), seed=5)  # the source changes
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    fresh = thumbnail(src, cache, size=32)
    assert fresh != thumb and len(calls) == 2
    with Image.open(fresh) as im:
        assert im.size == (32, 32)


def test_thumbnail_of_a_corrupt_file_raises_and_leaves_no_file(tmp_path):
    src = write_corrupt_png(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="cut.png"):
        thumbnail(src, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.png"))
