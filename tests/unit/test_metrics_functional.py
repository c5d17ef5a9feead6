"""core.metrics.functional against independent references (integer arithmetic, skimage)."""

import math
import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from core.errors import MetricError
from core.metrics import functional as F

SIZES = [(7, 9), (32, 32), (64, 64)]
SSIM_SIZES = [(13, 17), (32, 32), (64, 64)]  # SSIM's Gaussian window needs >= 11 px
Y = np.array([0.299, 0.587, 0.114])


def rand_u8(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def pair_u8(hw, seed=0, channels=3):
    shape = (*hw, channels) if channels else hw
    a = rand_u8(shape, seed)
    # A target correlated with the prediction so SSIM is not ~0.
    noise = np.random.default_rng(seed + 1).integers(-40, 41, size=shape)
    b = np.clip(a.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return a, b


def mse_int_reference(a_u8, b_u8, mask=None):
    """MSE from exact int64 sums, scaled to [0, 1] at the end."""
    d = a_u8.astype(np.int64) - b_u8.astype(np.int64)
    if mask is not None:
        d = d[mask]
    return int(np.sum(d * d)) / (d.size * 255**2)


def skimage_ssim(a01, b01, channel_axis=-1):
    return structural_similarity(
        a01,
        b01,
        channel_axis=channel_axis,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )


# ------------------------------------------------------------------------- to_float
def test_to_float_dtypes():
    u8 = np.array([[0, 51, 255]], dtype=np.uint8)
    assert np.allclose(F.to_float(u8), [[0.0, 0.2, 1.0]])
    u16 = np.array([[0, 65535]], dtype=np.uint16)
    assert np.allclose(F.to_float(u16), [[0.0, 1.0]])
    assert F.to_float(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    f32 = np.array([[0.25, 1.0]], dtype=np.float32)
    out = F.to_float(f32)
    assert out.dtype == np.float64 and out.tolist() == [[0.25, 1.0]]


@pytest.mark.parametrize(
    "values, hint",
    [([[-0.5, 0.9]], "(x + 1) / 2"), ([[0.0, 200.0]], "divide by 255"), ([[2.0, 1e6]], "")],
)
def test_to_float_rejects_out_of_range_floats(values, hint):
    with pytest.raises(MetricError, match=r"\[0, 1\]") as err:
        F.to_float(np.array(values))
    assert hint in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_to_float_rejects_nan_and_inf(bad):
    with pytest.raises(MetricError, match="NaN or infinite"):
        F.to_float(np.array([[0.5, bad]]))


@pytest.mark.parametrize(
    "shape, hint",
    [((4, 4, 4), "alpha"), ((3, 8, 8), "channels-first"), ((4, 4, 1), "Squeeze"), ((8,), "")],
)
def test_to_float_rejects_bad_shapes(shape, hint):
    with pytest.raises(MetricError, match="H x W x 3") as err:
        F.to_float(np.zeros(shape, dtype=np.uint8))
    assert hint in str(err.value)


def test_to_float_rejects_other_integer_dtypes():
    with pytest.raises(MetricError, match="uint8"):
        F.to_float(np.zeros((4, 4, 3), dtype=np.int64))


def test_luma_weights():
    img = rand_u8((5, 6, 3), 3)
    expected = np.tensordot(img.astype(np.float64) / 255.0, Y, axes=([2], [0]))
    assert np.allclose(F.luma(img), expected, atol=1e-15)
    gray = F.to_float(rand_u8((5, 6), 4))
    assert np.array_equal(F.luma(gray), gray)


# ----------------------------------------------------------------------- MSE / PSNR
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("channels", [3, None])
def test_mse_psnr_match_integer_reference(hw, channels):
    a, b = pair_u8(hw, seed=hw[0], channels=channels)
    ref = mse_int_reference(a, b)
    assert F.mse(a, b) == pytest.approx(ref, rel=1e-12)
    # PSNR in the 8-bit form 20 log10(255) - 10 log10(MSE_255): same number, other route.
    sq_255 = np.square((a.astype(np.float32) - b.astype(np.float32))).astype(np.float64)
    psnr_ref = 20 * math.log10(255.0) - 10 * math.log10(sq_255.mean())
    assert F.psnr(a, b) == pytest.approx(psnr_ref, rel=1e-9)
    # float inputs give the same numbers as uint8 ones
    assert F.mse(a / 255.0, b / 255.0) == pytest.approx(ref, rel=1e-12)


def test_uint8_wraparound_trap():
    pred = np.full((4, 4, 3), 10, dtype=np.uint8)
    target = np.full((4, 4, 3), 250, dtype=np.uint8)
    wrapped = float(np.mean((pred - target) ** 2))  # what the course computed (wrong)
    assert F.mse(pred, target) == pytest.approx((240 / 255) ** 2, rel=1e-12)
    assert F.mse(pred, target) != pytest.approx(wrapped / 255**2)
    assert F.psnr(pred, target) == pytest.approx(-20 * math.log10(240 / 255), rel=1e-12)


@pytest.mark.parametrize("hw", SIZES)
def test_identical_images(hw):
    a = rand_u8((*hw, 3), 5)
    assert F.mse(a, a) == 0.0
    assert F.psnr(a, a) == math.inf
    assert F.psnr(a, a, luma=True) == math.inf
    mask = np.zeros(hw, bool)
    mask[0, 0] = True
    assert F.psnr(a, a, mask) == math.inf


@pytest.mark.parametrize("hw", SIZES)
def test_masked_mse_psnr_match_boolean_indexing(hw):
    a, b = pair_u8(hw, seed=7)
    mask = np.random.default_rng(8).random(hw) > 0.6
    a01, b01 = a / 255.0, b / 255.0
    ref = float(np.mean((a01[mask] - b01[mask]) ** 2))
    assert F.mse(a, b, mask) == pytest.approx(ref, rel=1e-12)
    assert F.mse(a, b, mask) == pytest.approx(mse_int_reference(a, b, mask), rel=1e-12)
    assert F.psnr(a, b, mask) == pytest.approx(10 * math.log10(1 / ref), rel=1e-12)
    # an all-True mask equals no mask; 0/1 integer masks are accepted
    assert F.mse(a, b, np.ones(hw, bool)) == pytest.approx(F.mse(a, b), rel=1e-12)
    assert F.mse(a, b, mask.astype(np.uint8)) == F.mse(a, b, mask)


@pytest.mark.parametrize("hw", SIZES)
def test_luma_psnr_matches_y_channel(hw):
    a, b = pair_u8(hw, seed=11)
    ya = (a.astype(np.float64) @ Y) / 255.0
    yb = (b.astype(np.float64) @ Y) / 255.0
    ref = 10 * math.log10(1.0 / np.mean((ya - yb) ** 2))
    assert F.psnr(a, b, luma=True) == pytest.approx(ref, rel=1e-12)
    assert F.psnr(a, b, luma=True) != pytest.approx(F.psnr(a, b), rel=1e-6)


# ------------------------------------------------------------------------------ SSIM
@pytest.mark.parametrize("hw", SSIM_SIZES)
def test_ssim_matches_skimage_rgb(hw):
    a, b = pair_u8(hw, seed=13)
    a01, b01 = a / 255.0, b / 255.0
    ref, _ = skimage_ssim(a01, b01)
    assert F.ssim(a, b) == pytest.approx(ref, abs=1e-12)
    assert F.ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("hw", SSIM_SIZES)
def test_ssim_luma_matches_skimage_on_y(hw):
    a, b = pair_u8(hw, seed=17)
    ya, yb = (a / 255.0) @ Y, (b / 255.0) @ Y
    ref, _ = skimage_ssim(ya, yb, channel_axis=None)
    assert F.ssim(a, b, luma=True) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("hw", SSIM_SIZES)
@pytest.mark.parametrize("luma", [False, True])
def test_masked_ssim_is_mean_of_full_map(hw, luma):
    a, b = pair_u8(hw, seed=19)
    a01, b01 = a / 255.0, b / 255.0
    mask = np.random.default_rng(20).random(hw) > 0.5
    if luma:
        _, smap = skimage_ssim(a01 @ Y, b01 @ Y, channel_axis=None)
    else:
        _, smap = skimage_ssim(a01, b01)
        smap = smap.mean(axis=-1)
    assert F.ssim(a, b, luma=luma, mask=mask) == pytest.approx(smap[mask].mean(), abs=1e-12)
    assert np.allclose(F.ssim_map(a, b, luma=luma), smap, atol=1e-12)
    value, smap2 = F.ssim_and_map(a, b, luma=luma)
    assert value == pytest.approx(F.ssim(a, b, luma=luma), abs=1e-15)
    assert np.array_equal(smap2, F.ssim_map(a, b, luma=luma))


def test_ssim_on_single_channel_images():
    a, b = pair_u8((20, 24), seed=23, channels=None)
    ref, _ = skimage_ssim(a / 255.0, b / 255.0, channel_axis=None)
    assert F.ssim(a, b) == pytest.approx(ref, abs=1e-12)


def test_ssim_too_small_image_says_why():
    a, b = pair_u8((7, 9), seed=1)
    with pytest.raises(MetricError, match="at least 11 x 11"):
        F.ssim(a, b)


# ------------------------------------------------------------------- masks and errors
@pytest.mark.parametrize("fn", [F.mse, F.psnr, F.ssim])
def test_empty_mask_gives_none(fn):
    a, b = pair_u8((16, 16), seed=29)
    empty = np.zeros((16, 16), bool)
    assert fn(a, b, mask=empty) is None


def test_shape_mismatch_message_names_both_shapes():
    a = rand_u8((8, 8, 3), 1)
    b = rand_u8((16, 16, 3), 2)
    for fn in (F.mse, F.psnr, F.ssim, F.error_map, F.ssim_map):
        with pytest.raises(MetricError) as err:
            fn(a, b)
        msg = str(err.value)
        assert "(8, 8, 3)" in msg and "(16, 16, 3)" in msg and "resizes" in msg


def test_mask_shape_and_values_are_checked():
    a, b = pair_u8((16, 16), seed=31)
    with pytest.raises(MetricError, match="mask has shape"):
        F.mse(a, b, mask=np.ones((8, 8), bool))
    with pytest.raises(MetricError, match="boolean"):
        F.mse(a, b, mask=np.full((16, 16), 3))


def test_float_out_of_range_in_a_metric():
    a = np.full((16, 16, 3), 0.5)
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        F.mse(a * 255, a)


def test_error_map():
    a, b = pair_u8((12, 10), seed=37)
    ref = np.abs(a.astype(np.int64) - b.astype(np.int64)).sum(axis=2) / (3 * 255.0)
    assert np.allclose(F.error_map(a, b), ref, atol=1e-12)
    assert F.error_map(a, b).shape == (12, 10)


def test_direction_and_order_are_declared():
    assert F.METRICS == ("mse", "psnr", "ssim", "lpips")
    assert F.HIGHER_IS_BETTER == {"mse": False, "psnr": True, "ssim": True, "lpips": False}
    for name in ("mse", "psnr", "ssim"):
        assert getattr(F, name).higher_is_better is F.HIGHER_IS_BETTER[name]


def test_importing_core_metrics_and_runs_pulls_no_torch():
    code = (
        "import sys, core, core.metrics, core.runs;"
        "heavy = [m for m in ('torch', 'lpips', 'torchvision', 'gradio') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
