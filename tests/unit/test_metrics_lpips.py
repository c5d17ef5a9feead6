"""LpipsScorer against lpips.LPIPS called directly, offline (random AlexNet backbone).

The random backbone makes the numbers meaningless as perceptual distances, but both sides
use the very same weights (the reference model loads the scorer's state dict), so the
plumbing (range, layout, batching, spatial maps) is tested exactly.
"""

import socket
import urllib.request

import numpy as np
import pytest

from core.errors import LpipsUnavailable, MetricError
from core.metrics import lpips_model
from core.metrics.lpips_model import ALEXNET_FILE, ALEXNET_URL, LpipsScorer
from core.metrics.scoring import score_pair
from core.types import MetricSettings

torch = pytest.importorskip("torch")
lpips = pytest.importorskip("lpips")

# lpips 0.1.4 passes torchvision's deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


@pytest.fixture(scope="module")
def scorer():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    s = LpipsScorer(random_backbone=True)
    s.check()
    return s


_REFERENCES = {}


def reference_model(scorer, *, spatial=False):
    """lpips.LPIPS built directly (once per module), carrying exactly the scorer's weights."""
    if spatial not in _REFERENCES:
        ref = lpips.LPIPS(
            net="alex", version="0.1", pnet_rand=True, spatial=spatial, verbose=False
        )
        ref.load_state_dict(scorer.model.state_dict())
        _REFERENCES[spatial] = ref.eval()
    return _REFERENCES[spatial]


def images(n, hw, seed):
    rng = np.random.default_rng(seed)
    base = rng.random((n, *hw, 3))
    other = np.clip(base + rng.normal(0, 0.15, base.shape), 0, 1)
    return list(base), list(other)


def to_minus1_1(batch01):
    """A reference conversion written independently of the scorer's."""
    t = torch.tensor(np.array(batch01), dtype=torch.float32)
    return torch.einsum("nhwc->nchw", t) * 2 - 1


@pytest.mark.parametrize("hw", [(32, 32), (40, 56), (64, 64)])
def test_scalar_matches_direct_lpips(scorer, hw):
    preds, targets = images(3, hw, seed=hw[1])
    ref = reference_model(scorer)
    with torch.no_grad():
        direct = ref(to_minus1_1(preds), to_minus1_1(targets)).flatten().numpy()
        normalized = ref(
            torch.einsum("nhwc->nchw", torch.tensor(np.array(preds), dtype=torch.float32)),
            torch.einsum("nhwc->nchw", torch.tensor(np.array(targets), dtype=torch.float32)),
            normalize=True,
        ).flatten().numpy()
    got = scorer.score(preds, targets)
    assert np.allclose(got, direct, rtol=1e-5, atol=1e-7)
    assert np.allclose(got, normalized, rtol=1e-5, atol=1e-7)
    # the one-pass (scalar, map) path gives the same scalar
    both = scorer.score_with_maps(preds, targets)
    assert np.allclose([v for v, _ in both], direct, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hw", [(32, 32), (48, 40)])
def test_spatial_maps_match_direct_lpips(scorer, hw):
    preds, targets = images(2, hw, seed=3)
    ref = reference_model(scorer, spatial=True)
    with torch.no_grad():
        direct = ref(to_minus1_1(preds), to_minus1_1(targets))[:, 0].numpy()
    maps = scorer.score(preds, targets, spatial=True)
    assert [m.shape for m in maps] == [hw, hw]
    assert np.allclose(np.stack(maps), direct, rtol=1e-5, atol=1e-6)
    both = scorer.score_with_maps(preds, targets)
    assert np.allclose(np.stack([m for _, m in both]), direct, rtol=1e-5, atol=1e-6)
    # the spatial mean is the scalar up to bilinear upsampling at the borders
    scalars = scorer.score(preds, targets)
    for m, v in zip(maps, scalars):
        assert m.mean() == pytest.approx(v, rel=2e-2)


def test_batched_equals_one_at_a_time(scorer):
    preds, targets = images(5, (32, 32), seed=5)
    # mix in two pairs of another size: order must be kept
    p2, t2 = images(2, (36, 44), seed=6)
    preds = preds[:2] + p2[:1] + preds[2:] + p2[1:]
    targets = targets[:2] + t2[:1] + targets[2:] + t2[1:]
    batched = scorer.score(preds, targets, batch_size=3)
    single = [scorer.score([p], [t], batch_size=1)[0] for p, t in zip(preds, targets)]
    assert np.allclose(batched, single, rtol=1e-5, atol=1e-7)


def test_accepts_uint8_and_nhwc_arrays(scorer):
    preds, targets = images(2, (32, 32), seed=9)
    p8 = (np.array(preds) * 255).round().astype(np.uint8)
    t8 = (np.array(targets) * 255).round().astype(np.uint8)
    from_u8 = scorer.score(p8, t8)
    from_float = scorer.score(list(p8 / 255.0), list(t8 / 255.0))
    assert np.allclose(from_u8, from_float, rtol=1e-6)
    assert scorer.score(p8, p8) == pytest.approx([0.0, 0.0], abs=1e-7)
    assert scorer.score([], []) == []


def test_input_errors(scorer):
    preds, targets = images(1, (32, 32), seed=1)
    with pytest.raises(MetricError, match="2 predictions but 1 targets"):
        scorer.score(preds * 2, targets)
    with pytest.raises(MetricError, match="resize the target"):
        scorer.score(preds, [np.zeros((40, 40, 3))])
    with pytest.raises(MetricError, match="at least 31 px"):
        scorer.score([np.zeros((16, 16, 3))], [np.zeros((16, 16, 3))])
    with pytest.raises(MetricError, match=r"\[0, 1\]"):
        scorer.score([preds[0] * 2 - 1], targets)
    with pytest.raises(MetricError, match="batch_size"):
        scorer.score(preds, targets, batch_size=0)


def test_model_is_built_once_and_in_eval_mode(scorer):
    model = scorer.model
    scorer.score(*images(2, (32, 32), seed=2))
    assert scorer.model is model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


# --------------------------------------------------------------- missing AlexNet weights
@pytest.fixture
def offline_empty_torch_home(tmp_path, monkeypatch):
    """TORCH_HOME -> empty folder; any network access or lpips build fails loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("tried the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path, attempts


def test_missing_weights_raise_before_lpips_is_called(offline_empty_torch_home, monkeypatch):
    home, attempts = offline_empty_torch_home
    built = []
    monkeypatch.setattr(lpips, "LPIPS", lambda *a, **k: built.append(k))
    folder = home / "hub" / "checkpoints"
    assert lpips_model.lpips_weights_path() == folder / ALEXNET_FILE

    scorer = LpipsScorer()
    with pytest.raises(LpipsUnavailable) as err:
        scorer.score(*images(1, (32, 32), seed=0))
    msg = str(err.value)
    assert ALEXNET_FILE in msg and str(folder) in msg and ALEXNET_URL in msg
    assert "still computed" in msg
    assert built == [] and attempts == [] and not scorer.built


def test_missing_weights_still_give_other_scores(offline_empty_torch_home):
    home, attempts = offline_empty_torch_home
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    masks = {"building": rng.random((32, 32)) > 0.5}
    s = score_pair(pred, target, settings=MetricSettings(), masks=masks, lpips=LpipsScorer())
    assert s.lpips is None
    assert ALEXNET_FILE in s.lpips_error and str(home) in s.lpips_error
    assert s.mse > 0 and np.isfinite(s.psnr) and -1 <= s.ssim <= 1
    assert s.masked["building"]["mse"] > 0 and s.masked["building"]["lpips"] is None
    assert attempts == []


def test_unusable_weights_file_is_reported(offline_empty_torch_home):
    home, attempts = offline_empty_torch_home
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ALEXNET_FILE).write_bytes(b"a truncated download")
    with pytest.raises(LpipsUnavailable) as err:
        LpipsScorer().check()
    msg = str(err.value)
    assert ALEXNET_FILE in msg and str(folder) in msg and "building it failed" in msg
    assert attempts == []


def test_a_batch_that_runs_out_of_gpu_memory_is_scored_in_halves(scorer, monkeypatch):
    """A busy GPU (simulated: the network runs out of memory on more than `limit` pairs)
    still gives every pair the value one big batch gives; one pair that does not fit says
    what to do."""
    preds, targets = images(5, (48, 48), seed=3)
    want = scorer.score(preds, targets, batch_size=8)
    network, sizes = scorer.model, []

    def small_gpu(limit):
        def forward(in0, in1):
            if in0.shape[0] > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            sizes.append(in0.shape[0])
            return network(in0, in1)
        return forward

    monkeypatch.setattr(scorer, "_model", small_gpu(2))
    got = scorer.score(preds, targets, batch_size=8)
    assert got == pytest.approx(want, abs=1e-6) and sorted(sizes) == [1, 2, 2]  # 5 → 2 + 3, then 3 → 1 + 2
    monkeypatch.setattr(scorer, "_model", small_gpu(0))
    with pytest.raises(MetricError, match="ran out of GPU memory on one 48×48 px pair: score at a smaller"):
        scorer.score(preds[:1], targets[:1])


def test_the_service_runs_lpips_where_the_other_metrics_run():
    from core.evaluation.service import EvaluationService

    assert EvaluationService(runs=None, lpips_random_backbone=True, metrics_device="cpu").lpips().device == "cpu"
    chosen = EvaluationService(runs=None, lpips_random_backbone=True).lpips().device
    assert chosen == ("cuda" if torch.cuda.is_available() else "cpu")
