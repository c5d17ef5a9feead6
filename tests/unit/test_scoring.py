"""core.metrics.scoring: resizing, masks, LPIPS reuse, JSON round trip, summaries."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from core.errors import LpipsUnavailable, MetricError
from core.metrics import functional as F
from core.metrics.lpips_model import LpipsScorer
from core.metrics.scoring import (
    NO_LPIPS_SCORER,
    Scorer,
    prepare_masks,
    prepare_pair,
    score_pair,
    scores_from_dict,
    scores_to_dict,
    summarise,
)
from core.types import MASK_REGIONS, MetricSettings, Scores

pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


def rand_u8(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def smooth_u8(hw, seed):
    """A smooth image (plus a little noise) so resizing keeps it close to itself."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]] / max(hw)
    base = np.stack([np.sin(3 * x + seed), np.cos(2 * y), np.sin(x + y)], axis=-1) * 0.4 + 0.5
    return np.clip((base + rng.normal(0, 0.03, base.shape)) * 255, 0, 255).astype(np.uint8)


def region_masks(hw, seed, empty=("destroyed",)):
    rng = np.random.default_rng(seed)
    masks = {name: rng.random(hw) > 0.7 for name in MASK_REGIONS}
    for name in empty:
        masks[name] = np.zeros(hw, bool)
    return masks


@pytest.fixture(scope="module")
def lpips_scorer():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    s = LpipsScorer(random_backbone=True)
    s.check()
    return s


# ------------------------------------------------------------------------ prepare_pair
def test_target_resized_to_prediction_with_note():
    pred, target = smooth_u8((32, 32), 1), smooth_u8((64, 64), 2)
    p, t, notes = prepare_pair(pred, target, size=None)
    assert p.shape == t.shape == (32, 32, 3)
    assert notes == ["target resized from 64×64 to 32×32 (LANCZOS)"]
    expected = np.asarray(Image.fromarray(target).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(t, expected / 255.0)
    assert np.array_equal(p, pred / 255.0)


def test_same_size_is_left_alone():
    pred, target = smooth_u8((24, 40), 1), smooth_u8((24, 40), 2)
    p, t, notes = prepare_pair(pred, target, size=None)
    assert notes == [] and np.array_equal(t, target / 255.0)


def test_explicit_size_resizes_both():
    pred, target = smooth_u8((48, 48), 3), smooth_u8((64, 64), 4)
    p, t, notes = prepare_pair(pred, target, size=32)
    assert p.shape == t.shape == (32, 32, 3)
    assert notes == [
        "prediction resized from 48×48 to 32×32 (LANCZOS)",
        "target resized from 64×64 to 32×32 (LANCZOS)",
    ]
    _, _, notes = prepare_pair(pred, target, size=48)
    assert notes == ["target resized from 64×64 to 48×48 (LANCZOS)"]
    with pytest.raises(MetricError, match="positive"):
        prepare_pair(pred, target, size=0)


def test_float_and_pil_inputs():
    pred, target = smooth_u8((32, 32), 5), smooth_u8((64, 64), 6)
    p_f, t_f, _ = prepare_pair(pred / 255.0, target / 255.0, size=None)
    _, t_u8, _ = prepare_pair(pred, target, size=None)
    assert t_f.min() >= 0 and t_f.max() <= 1
    assert np.abs(t_f - t_u8).max() < 2.5 / 255  # float path vs 8-bit path
    p_pil, t_pil, notes = prepare_pair(Image.fromarray(pred), Image.fromarray(target), size=None)
    assert np.array_equal(p_pil, pred / 255.0) and np.array_equal(t_pil, t_u8)
    gray = Image.fromarray(pred[..., 0])
    _, _, notes = prepare_pair(gray, np.dstack([target, target[..., :1]]), size=None)
    assert "prediction converted from PIL mode L to RGB" in notes
    assert "target alpha channel dropped" in notes


def test_prepare_masks_resizes_nearest():
    small = np.zeros((8, 8), bool)
    small[2:5, 3:7] = True
    masks, notes = prepare_masks({"destroyed": small, "building": small}, (32, 32))
    assert list(masks) == ["building", "destroyed"]  # MASK_REGIONS order
    expected = np.kron(small, np.ones((4, 4), bool))
    assert np.array_equal(masks["building"], expected)
    assert notes == ["masks resized from 8×8 to 32×32 (nearest)"]


# -------------------------------------------------------------------------- score_pair
@pytest.mark.parametrize("luma", [False, True])
@pytest.mark.parametrize("hw", [(32, 32), (40, 56)])
def test_score_pair_matches_functional(hw, luma):
    pred, target = smooth_u8(hw, 7), smooth_u8(hw, 8)
    masks = region_masks(hw, 9)
    s = score_pair(pred, target, settings=MetricSettings(luma=luma), masks=masks)
    assert s.mse == pytest.approx(F.mse(pred, target), rel=1e-12)
    assert s.psnr == pytest.approx(F.psnr(pred, target, luma=luma), rel=1e-12)
    assert s.ssim == pytest.approx(F.ssim(pred, target, luma=luma), abs=1e-12)
    assert s.lpips is None and s.lpips_error == NO_LPIPS_SCORER
    assert s.settings == MetricSettings(luma=luma).to_dict()
    assert list(s.masked) == list(MASK_REGIONS)
    assert s.masked["destroyed"] is None
    for region in ("building", "no-damage"):
        m = masks[region]
        got = s.masked[region]
        assert got["pixels"] == int(m.sum())
        assert got["mse"] == pytest.approx(F.mse(pred, target, m), rel=1e-12)
        assert got["psnr"] == pytest.approx(F.psnr(pred, target, m, luma=luma), rel=1e-12)
        assert got["ssim"] == pytest.approx(F.ssim(pred, target, luma=luma, mask=m), abs=1e-12)
        assert got["lpips"] is None


def test_masks_of_another_size_are_resized():
    pred, target = smooth_u8((32, 32), 10), smooth_u8((32, 32), 11)
    small = np.zeros((16, 16), bool)
    small[4:10, 4:12] = True
    s = score_pair(pred, target, settings=MetricSettings(), masks={"building": small})
    big = np.kron(small, np.ones((2, 2), bool))
    assert s.masked["building"]["pixels"] == int(big.sum())
    assert s.masked["building"]["mse"] == pytest.approx(F.mse(pred, target, big))
    assert "masks resized from 16×16 to 32×32 (nearest)" in s.notes


def test_score_pair_with_lpips_and_masks(lpips_scorer):
    pred, target = smooth_u8((32, 48), 12), smooth_u8((64, 96), 13)
    masks = region_masks((32, 48), 14)
    s = score_pair(pred, target, settings=MetricSettings(), masks=masks, lpips=lpips_scorer)
    p, t, _ = prepare_pair(pred, target, size=None)
    assert s.lpips == pytest.approx(lpips_scorer.score([p], [t])[0], rel=1e-6)
    lmap = lpips_scorer.score([p], [t], spatial=True)[0]
    for region, m in masks.items():
        if s.masked[region] is not None:
            assert s.masked[region]["lpips"] == pytest.approx(lmap[m].mean(), rel=1e-6)
    assert s.settings["lpips"]["pnet_rand"] is True
    assert any("RANDOM" in n for n in s.notes)
    assert s.lpips_error is None


def test_score_many_builds_lpips_once_and_batches(monkeypatch):
    torch = pytest.importorskip("torch")
    import lpips

    torch.set_num_threads(1)
    real = lpips.LPIPS
    built = []

    def counting(*args, **kwargs):
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(lpips, "LPIPS", counting)
    scorer = LpipsScorer(random_backbone=True)
    calls = []
    real_run = scorer._run
    monkeypatch.setattr(
        scorer, "_run", lambda p, t, **k: calls.append(len(p)) or real_run(p, t, **k)
    )
    items = [
        (smooth_u8((32, 32), i), smooth_u8((32, 32), 100 + i), region_masks((32, 32), i))
        if i % 2
        else (smooth_u8((32, 32), i), smooth_u8((32, 32), 100 + i), None)
        for i in range(7)
    ]
    many = Scorer(MetricSettings(), lpips=scorer, batch_size=4).score_many(iter(items))
    assert len(built) == 1
    assert sum(calls) == 7 and len(calls) <= 4  # per chunk: one call with masks, one without
    for (pred, target, masks), s in zip(items, many):
        single = score_pair(pred, target, settings=MetricSettings(), masks=masks, lpips=scorer)
        assert s.lpips == pytest.approx(single.lpips, rel=1e-5)
        assert s.mse == single.mse and s.ssim == single.ssim
        assert (s.masked is None) == (masks is None)
    assert len(built) == 1


@pytest.mark.parametrize("settings", [MetricSettings(), MetricSettings(luma=True, size=24)])
def test_score_many_on_the_cpu_equals_scoring_pair_by_pair(settings):
    """On the CPU path (`device="cpu"`) batching changes nothing: the same numbers, masks,
    notes and settings as one `score` per pair, whatever the mix of sizes."""
    items = [
        (smooth_u8((32, 32), 30), smooth_u8((64, 64), 31), region_masks((32, 32), 32)),
        (smooth_u8((24, 40), 33), smooth_u8((24, 40), 34), None),
        (smooth_u8((32, 32), 35), smooth_u8((32, 32), 36), region_masks((16, 16), 37)),
    ]
    scorer = Scorer(settings, lpips=None, device="cpu", batch_size=2)
    assert scorer.uses_torch is False
    many = scorer.score_many(iter(items))
    assert many == [Scorer(settings, lpips=None, device="cpu").score(*item) for item in items]
    assert many[0].settings == settings.to_dict()  # the path taken is not part of the settings


def test_lpips_unavailable_keeps_other_metrics():
    class Unavailable:
        random_backbone = False

        def score(self, *a, **k):
            raise LpipsUnavailable("weights missing: put alexnet-owt-7be5be79.pth in /x")

        score_with_maps = score

    items = [(smooth_u8((32, 32), i), smooth_u8((32, 32), i + 1), None) for i in range(3)]
    out = Scorer(MetricSettings(), lpips=Unavailable()).score_many(items)
    for s in out:
        assert s.lpips is None and "alexnet-owt-7be5be79.pth" in s.lpips_error
        assert s.mse > 0 and math.isfinite(s.psnr)


# --------------------------------------------------------------------- dict round trip
def test_dict_round_trip_with_inf():
    img = smooth_u8((32, 32), 20)
    masks = {"building": np.ones((32, 32), bool), "destroyed": np.zeros((32, 32), bool)}
    s = score_pair(img, img, settings=MetricSettings(size=32), masks=masks)
    assert s.psnr == math.inf and s.masked["building"]["psnr"] == math.inf
    d = scores_to_dict(s)
    text = json.dumps(d, allow_nan=False)  # strict JSON: no Infinity/NaN tokens
    assert d["psnr"] == "inf" and d["masked"]["building"]["psnr"] == "inf"
    back = scores_from_dict(json.loads(text))
    assert back == s


def test_nan_is_never_written():
    s = Scores(mse=float("nan"), psnr=20.0, ssim=0.5, lpips=None, settings={"luma": False})
    d = scores_to_dict(s)
    assert d["mse"] is None
    json.dumps(d, allow_nan=False)
    with pytest.raises(MetricError, match="missing"):
        scores_from_dict({"mse": 0.1})


# -------------------------------------------------------------------------- summarise
def test_summarise_counts_infinite_and_missing():
    settings = MetricSettings().to_dict()
    items = [
        Scores(mse=0.0, psnr=math.inf, ssim=1.0, lpips=0.0, settings=settings),
        Scores(mse=0.01, psnr=20.0, ssim=0.8, lpips=None, settings=settings),
        Scores(mse=0.001, psnr=30.0, ssim=0.6, lpips=0.2, settings=settings),
    ]
    items[1].masked = {"building": {"pixels": 5, "mse": 0.02, "psnr": 17.0, "ssim": 0.5,
                                    "lpips": None}, "destroyed": None}
    summary = summarise(items)
    assert summary["n"] == 3
    assert summary["psnr"] == {"mean": 25.0, "std": 5.0, "count": 2, "n_missing": 0,
                               "n_infinite": 1}
    assert summary["mse"]["mean"] == pytest.approx(0.011 / 3)
    assert summary["lpips"]["count"] == 2 and summary["lpips"]["n_missing"] == 1
    assert summary["masked"]["building"]["psnr"]["mean"] == 17.0
    assert summary["masked"]["destroyed"]["n_no_pixels"] == 1
    # dicts (as stored in runs) summarise the same way
    assert summarise([scores_to_dict(s) for s in items]) == summary
    assert summarise([])["psnr"]["mean"] is None
