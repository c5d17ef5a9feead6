"""core.metrics.batched (torch, float64, on the CPU here) against the numpy/skimage functions
of core.metrics.functional, to 1e-6; the scorer's torch path against its numpy path; and the
evaluation service scoring runs in batches of one size."""

import math

import numpy as np
import pytest

from core.errors import DataError, MetricError
from core.metrics import functional as F
from core.types import MASK_REGIONS, MetricSettings

torch = pytest.importorskip("torch")
from core.metrics import batched as B  # noqa: E402
from core.metrics.scoring import Scorer, scores_to_dict  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")

TOL = 1e-6
SIZES = [(11, 11), (37, 53), (64, 64)]  # SSIM's minimum, odd and non-square, square


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lpips_scorer():
    """One LPIPS network (random backbone: plumbing only) for every test that needs one."""
    from core.metrics.lpips_model import LpipsScorer

    lp = LpipsScorer(random_backbone=True)
    lp.check()
    return lp


def batch_u8(hw, n=3, seed=0, channels=3):
    """n (pred, target) uint8 pairs, the target correlated with the prediction."""
    rng = np.random.default_rng(seed)
    shape = (*hw, channels) if channels else hw
    preds, targets = [], []
    for _ in range(n):
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        b = np.clip(a.astype(np.int64) + rng.integers(-40, 41, size=shape), 0, 255).astype(np.uint8)
        preds.append(a)
        targets.append(b)
    return preds, targets


def border_mask(hw):
    """True on the whole first row and last column: where the SSIM map's border lives."""
    m = np.zeros(hw, bool)
    m[0, :] = True
    m[:, -1] = True
    return m


def random_mask(hw, seed):
    return np.random.default_rng(seed).random(hw) > 0.6


def close(got, want):
    if want is None or got is None:
        return got is want
    if math.isinf(want):
        return got == want
    return abs(got - want) <= TOL


# ------------------------------------------------------------------- whole-image values
@pytest.mark.parametrize("luma", [False, True])
@pytest.mark.parametrize("hw", SIZES)
def test_whole_image_metrics_equal_the_numpy_ones(hw, luma):
    preds, targets = batch_u8(hw, seed=hw[0])
    got_mse = B.mse(preds, targets)
    got_psnr = B.psnr(preds, targets, luma=luma)
    got_ssim = B.ssim(preds, targets, luma=luma)
    values, maps = B.ssim_and_map(preds, targets, luma=luma)
    assert maps.shape == (len(preds), *hw) and maps.dtype == torch.float64
    for i, (p, t) in enumerate(zip(preds, targets)):
        want_ssim, want_map = F.ssim_and_map(p, t, luma=luma)
        assert abs(got_mse[i] - F.mse(p, t)) <= TOL
        assert abs(got_psnr[i] - F.psnr(p, t, luma=luma)) <= TOL
        assert abs(got_ssim[i] - want_ssim) <= TOL and abs(values[i] - want_ssim) <= TOL
        assert np.abs(maps[i].numpy() - want_map).max() <= TOL  # border included


@pytest.mark.parametrize("hw", SIZES)
def test_one_channel_batches_equal_the_numpy_ones(hw):
    preds, targets = batch_u8(hw, seed=5, channels=None)
    x, y = np.stack(preds), np.stack(targets)  # N x H x W
    for i, (p, t) in enumerate(zip(preds, targets)):
        assert abs(B.mse(x, y)[i] - F.mse(p, t)) <= TOL
        assert abs(B.ssim(x, y)[i] - F.ssim(p, t)) <= TOL


def test_float_and_tensor_inputs_give_the_same_values():
    preds, targets = batch_u8((24, 20), seed=7)
    as_float = [p / 255.0 for p in preds]
    tensor = torch.from_numpy(np.stack(preds))  # N x H x W x 3 uint8
    want = B.ssim(preds, targets)
    assert B.ssim(as_float, targets) == pytest.approx(want, abs=1e-15)
    assert B.ssim(tensor, np.stack(targets)) == pytest.approx(want, abs=1e-15)
    assert B.as_batch(preds).shape == (3, 3, 24, 20)
    assert torch.equal(B.as_batch(preds)[0].permute(1, 2, 0), torch.from_numpy(preds[0] / 255.0))


def test_identical_images_give_infinite_psnr_and_ssim_one():
    preds, _ = batch_u8((16, 16), n=2)
    assert B.psnr(preds, preds) == [math.inf, math.inf]
    assert B.psnr(preds, preds, luma=True) == [math.inf, math.inf]
    assert B.mse(preds, preds) == [0.0, 0.0]
    assert B.ssim(preds, preds) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_gaussian_filter_is_scipys_with_reflect_boundary():
    from scipy.ndimage import gaussian_filter

    plane = np.random.default_rng(3).random((13, 29))
    got = B.gaussian_filter(torch.from_numpy(plane)[None])[0].numpy()
    want = gaussian_filter(plane, sigma=1.5, mode="reflect", truncate=3.5)
    assert np.abs(got - want).max() < 1e-14


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("luma", [False, True])
@pytest.mark.parametrize("hw", SIZES)
def test_masked_values_equal_the_numpy_ones(hw, luma):
    preds, targets = batch_u8(hw, seed=11)
    masks = [random_mask(hw, 1), np.zeros(hw, bool), border_mask(hw)]  # the middle one is empty
    got = {"mse": B.mse(preds, targets, masks),
           "psnr": B.psnr(preds, targets, masks, luma=luma),
           "ssim": B.ssim(preds, targets, masks, luma=luma)}
    for i, (p, t, m) in enumerate(zip(preds, targets, masks)):
        want = {"mse": F.mse(p, t, m), "psnr": F.psnr(p, t, m, luma=luma),
                "ssim": F.ssim(p, t, luma=luma, mask=m)}
        for key in want:
            assert close(got[key][i], want[key]), (key, i, got[key][i], want[key])
    assert got["mse"][1] is None and got["psnr"][1] is None and got["ssim"][1] is None


@pytest.mark.parametrize("luma", [False, True])
@pytest.mark.parametrize("hw", SIZES)
def test_score_batch_whole_and_per_region(hw, luma):
    preds, targets = batch_u8(hw, seed=13)
    per_pair = [
        {"building": random_mask(hw, 2), "destroyed": np.zeros(hw, bool), "edge": border_mask(hw)},
        None,  # a pair without masks
        {"building": np.ones(hw, np.uint8)},  # 0/1 integers are accepted
    ]
    got = B.score_batch(preds, targets, per_pair, luma=luma)
    for (p, t, masks), entry in zip(zip(preds, targets, per_pair), got):
        want_ssim, smap = F.ssim_and_map(p, t, luma=luma)
        assert abs(entry["mse"] - F.mse(p, t)) <= TOL
        assert abs(entry["psnr"] - F.psnr(p, t, luma=luma)) <= TOL
        assert abs(entry["ssim"] - want_ssim) <= TOL
        if masks is None:
            assert entry["masked"] is None
            continue
        assert list(entry["masked"]) == list(masks)
        for region, m in masks.items():
            m = m.astype(bool)
            if not m.any():
                assert entry["masked"][region] is None
                continue
            e = entry["masked"][region]
            assert e["pixels"] == int(m.sum())
            assert abs(e["mse"] - F.mse(p, t, m)) <= TOL
            assert close(e["psnr"], F.psnr(p, t, m, luma=luma))
            assert abs(e["ssim"] - float(smap[m].mean())) <= TOL


def test_a_full_mask_is_the_full_map_mean_not_the_whole_image_value():
    preds, targets = batch_u8((20, 20), n=1, seed=17)
    (entry,) = B.score_batch(preds, targets, [{"all": np.ones((20, 20), bool)}])
    _, smap = F.ssim_and_map(preds[0], targets[0])
    assert abs(entry["masked"]["all"]["ssim"] - smap.mean()) <= TOL
    assert abs(entry["masked"]["all"]["ssim"] - entry["ssim"]) > 1e-6  # the border counts


# ---------------------------------------------------------------------- validation
def test_inputs_are_refused_as_the_numpy_functions_refuse_them():
    preds, targets = batch_u8((16, 16), n=2)
    with pytest.raises(MetricError, match="equal shapes"):
        B.mse(preds, batch_u8((16, 18), n=2)[1])
    with pytest.raises(MetricError, match=r"\[-1, 1\]"):
        B.mse([p / 127.5 - 1 for p in preds], targets)
    with pytest.raises(MetricError, match=r"\[-1, 1\]"):
        B.mse(torch.from_numpy(np.stack(preds) / 127.5 - 1), np.stack(targets))
    with pytest.raises(MetricError, match="NaN"):
        B.mse(torch.full((1, 16, 16, 3), float("nan"), dtype=torch.float64), preds[:1])
    with pytest.raises(MetricError, match="at least 11"):
        B.ssim(*batch_u8((10, 40), n=1))
    with pytest.raises(MetricError, match="one size"):
        B.mse([preds[0], preds[0][:8]], targets)
    with pytest.raises(MetricError, match="single images|list"):
        B.mse(preds[0], targets[0])  # one H x W x 3 image, not a batch
    with pytest.raises(MetricError, match="alpha"):
        B.mse([np.dstack([preds[0], preds[0][..., :1]])], targets[:1])
    with pytest.raises(MetricError, match="Unsupported"):
        B.mse(torch.zeros((1, 16, 16, 3), dtype=torch.int32), preds[:1])
    with pytest.raises(MetricError, match="empty"):
        B.mse([], [])
    with pytest.raises(MetricError, match="mask has shape"):
        B.mse(preds, targets, [np.ones((8, 8), bool)] * 2)
    with pytest.raises(MetricError, match="one mask per pair"):
        B.mse(preds, targets, [np.ones((16, 16), bool)])
    with pytest.raises(MetricError, match="boolean"):
        B.mse(preds, targets, [np.full((16, 16), 2)] * 2)
    with pytest.raises(MetricError, match="one per pair"):
        B.score_batch(preds, targets, [None])
    with pytest.raises(MetricError, match="Not a torch device"):
        B.mse(preds, targets, device="abacus")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_says_so():
    assert B.default_device() == "cpu"
    preds, targets = batch_u8((16, 16), n=1)
    with pytest.raises(MetricError, match="cuda.is_available"):
        B.mse(preds, targets, device="cuda")


def test_importing_the_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, core.metrics.batched, core.metrics.scoring; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -------------------------------------------------------------- the scorer's two paths
def items_of_two_sizes():
    """Pairs of two sizes, a target to resize, masks (one empty, one on the border), None."""
    items = []
    for i, hw in enumerate([(32, 32), (24, 40), (32, 32), (24, 40), (32, 32)]):
        (p,), (t,) = batch_u8(hw, n=1, seed=20 + i)
        masks = None
        if i % 2 == 0:
            masks = {name: random_mask(hw, i + k) for k, name in enumerate(MASK_REGIONS)}
            masks["destroyed"] = np.zeros(hw, bool)
            masks["minor-damage"] = border_mask(hw)
        if i == 4:
            t = np.repeat(np.repeat(t, 2, axis=0), 2, axis=1)  # resized back to the prediction's size
            p = p / 255.0  # a float prediction
        items.append((p, t, masks))
    return items


def assert_same_scores(a, b):
    assert a.settings == b.settings and a.notes == b.notes and a.lpips_error == b.lpips_error
    for key in ("mse", "psnr", "ssim"):
        assert close(getattr(a, key), getattr(b, key)), key
    assert (a.lpips is None) == (b.lpips is None)
    if a.lpips is not None:
        assert a.lpips == pytest.approx(b.lpips, rel=1e-5)
    assert (a.masked is None) == (b.masked is None)
    if a.masked is not None:
        assert list(a.masked) == list(b.masked)
        for region, va in a.masked.items():
            vb = b.masked[region]
            assert (va is None) == (vb is None), region
            if va is not None:
                assert list(va) == list(vb) and va["pixels"] == vb["pixels"]
                for key in ("mse", "psnr", "ssim"):
                    assert close(va[key], vb[key]), (region, key)


@pytest.mark.parametrize("settings", [MetricSettings(), MetricSettings(luma=True), MetricSettings(size=28)])
def test_the_torch_path_scores_like_the_numpy_path(settings):
    items = items_of_two_sizes()
    numpy_path = Scorer(settings, lpips=None, device="cpu")
    torch_path = Scorer(settings, lpips=None, device="cpu", use_torch=True, batch_size=4)
    assert not numpy_path.uses_torch and torch_path.uses_torch
    got, want = torch_path.score_many(items), numpy_path.score_many(items)
    assert len(got) == len(want) == len(items)
    for a, b in zip(got, want):
        assert_same_scores(a, b)
    assert any("resized" in n for n in got[4].notes)
    assert got[1].masked is None and got[0].masked["destroyed"] is None


def test_the_torch_path_with_lpips_keeps_notes_and_region_lpips(lpips_scorer):
    lp = lpips_scorer
    items = [item for item in items_of_two_sizes() if min(item[0].shape[:2]) >= 31]
    got = Scorer(MetricSettings(), lpips=lp, device="cpu", use_torch=True).score_many(items)
    want = Scorer(MetricSettings(), lpips=lp, device="cpu").score_many(items)
    for a, b in zip(got, want):
        assert_same_scores(a, b)
        assert a.lpips is not None and any("RANDOM" in n for n in a.notes)
        if a.masked:
            for region, va in a.masked.items():
                if va is not None:
                    assert va["lpips"] == pytest.approx(b.masked[region]["lpips"], rel=1e-5)


def test_a_batch_too_big_for_the_gpu_is_scored_on_the_numpy_path(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")

    monkeypatch.setattr(B, "score_batch", out_of_memory)
    items = items_of_two_sizes()
    got = Scorer(MetricSettings(), lpips=None, device="cpu", use_torch=True).score_many(items)
    want = Scorer(MetricSettings(), lpips=None, device="cpu").score_many(items)
    assert got == want


def test_the_device_is_chosen_at_first_use(monkeypatch):
    calls = []
    monkeypatch.setattr(B, "default_device", lambda: calls.append(1) or "cpu")
    scorer = Scorer(MetricSettings(), lpips=None)
    assert calls == []
    assert scorer.uses_torch is False and scorer.device == "cpu" and calls == [1]
    assert Scorer(MetricSettings(), lpips=None, use_torch=False).uses_torch is False
    assert Scorer(MetricSettings(), lpips=None, device="cuda").uses_torch is True
    assert calls == [1]

    from core.evaluation.service import EvaluationService

    told = EvaluationService(runs=None, metrics_device="cpu")
    monkeypatch.setattr(told, "lpips", lambda: None)
    assert told.scorer(MetricSettings()).uses_torch is False and calls == [1]


# ------------------------------------------------- the evaluation service, in batches
@pytest.fixture()
def service_and_runs(tmp_path, lpips_scorer, monkeypatch):
    from core.config import DEMO_SCENES
    from core.data.index import index_dataset
    from core.evaluation.service import EvaluationService
    from core.runs.store import RunStore

    index = index_dataset(DEMO_SCENES)
    store = RunStore(tmp_path / "runs")
    sizes = [(48, 48), (40, 56), (48, 48), (48, 48), (40, 56)]
    runs = []
    for i, (hw, scene) in enumerate(zip(sizes, index.scenes)):
        (img,), _ = batch_u8(hw, n=1, seed=40 + i)
        runs.append(store.create(img, kind="upload", backbone=f"b{i % 2}", scene_id=scene.scene_id,
                                 params={}))
    svc = EvaluationService(runs=store, lpips_random_backbone=True)
    monkeypatch.setattr(svc, "lpips", lambda: lpips_scorer)  # built once for the module
    return svc, index, runs


def spy_on_batches(monkeypatch):
    shapes = []
    real = Scorer.score_many

    def spy(self, items):
        items = list(items)
        shapes.append([np.asarray(p).shape[:2] for p, _, _ in items])
        return real(self, items)

    monkeypatch.setattr(Scorer, "score_many", spy)
    return shapes


def test_score_runs_batches_by_size_and_saves_what_score_run_gives(service_and_runs, monkeypatch):
    svc, index, runs = service_and_runs
    settings = MetricSettings()
    shapes = spy_on_batches(monkeypatch)
    progress = []
    got = svc.score_runs(runs, index, settings, batch_size=2, progress=lambda i, n: progress.append((i, n)))
    # runs 0, 2 (48 px) fill a batch, then 1, 4 (40 x 56), then 3 alone
    assert shapes == [[(48, 48)] * 2, [(40, 56)] * 2, [(48, 48)]]
    assert progress == [(2, 5), (4, 5), (5, 5)]
    for run, scores in zip(runs, got):
        scene, truth = svc.truth_of(run, index)
        single = svc.score_images(run.image(), truth, metric_settings=settings,
                                  label_path=scene.post_label, part=scene.part)
        assert_same_scores(scores, single)
        assert scores.mse == single.mse and scores.ssim == single.ssim  # the CPU path: the same numbers
        assert scores.masked is not None and scores.notes == single.notes
        stored = run.latest_scores(svc.scorer(settings).settings_dict())
        assert {k: v for k, v in stored.items() if k != "scored"} == scores_to_dict(scores)


def test_score_runs_on_the_torch_path_equals_the_cpu_path(service_and_runs, monkeypatch):
    svc, index, runs = service_and_runs
    settings = MetricSettings(luma=True)
    want = svc.score_runs(runs, index, settings)
    monkeypatch.setattr(Scorer, "uses_torch", property(lambda self: True))
    got = svc.score_runs(runs, index, settings)
    for a, b in zip(got, want):
        assert_same_scores(a, b)


def test_an_error_comes_after_the_runs_before_it_are_saved(service_and_runs):
    svc, index, runs = service_and_runs
    stray = svc.runs.create(batch_u8((48, 48), n=1)[0][0], kind="upload", backbone="b0",
                            scene_id="no-such_00000000", params={})
    settings = MetricSettings(size=32)
    with pytest.raises(DataError):
        svc.score_runs([runs[0], stray, runs[1]], index, settings)
    wanted = svc.scorer(settings).settings_dict()
    assert runs[0].latest_scores(wanted) is not None and runs[1].latest_scores(wanted) is None


def test_the_leaderboard_scores_only_what_is_missing_in_batches(service_and_runs, monkeypatch):
    svc, index, runs = service_and_runs
    settings = MetricSettings(size=32)
    svc.score_run(runs[3], index, settings)
    shapes = spy_on_batches(monkeypatch)
    progress = []
    rows = svc.leaderboard(index, settings, progress=lambda i, n: progress.append((i, n)))
    # one batch (everything is scored at 32 px), without run 3, which was scored already
    assert [len(batch) for batch in shapes] == [4]
    assert progress == [(1, 5), (5, 5)]
    assert [r.backbone for r in rows] == ["b0", "b1"] and [r.runs for r in rows] == [3, 2]
    shapes.clear()
    again = svc.leaderboard(index, settings)
    assert shapes == [] and again == rows
