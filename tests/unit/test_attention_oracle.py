"""Our DAAM maps (core.attention) against the DAAM authors' reference package `daam` 0.2.0
(installed by the Makefile with --no-deps; see the "Attention hooks" section of the
environment spec), on the tiny random SD 2.1 pipeline, txt2img and img2img.

The same seeded generation runs twice, once under `daam.trace` and once under our
`record_attention`; the images agree, so both saw the same denoising trajectory. The
acceptance criterion is a per-word Pearson correlation >= 0.99 between daam's word heat
map and ours.

What daam 0.2.0 aggregates, and the options chosen so that it aggregates what we do:
- Per cross-attention layer (`attn2` of the down and up blocks' transformer blocks) it keeps
  the softmax probabilities of the conditional half of the batch, per head, summed over
  the steps; `compute_global_heat_map` upsamples every (layer, head) map BICUBICALLY to
  sqrt(latent_hw)² (latent_hw is 4096 at 512/1024 px and 9216 otherwise: 96×96 here),
  clamps it at 0 and takes the MEAN over (layer, head). Ours sums the same per-head maps,
  which is the same up to one constant, so a Pearson correlation does not see it.
- It leaves out the mid block's cross-attention unless `save_heads`/`load_heads` is set;
  ours records every cross-attention layer, so the test traces with `save_heads=True`
  (into tmp_path) which makes daam locate the mid block too.
- It keeps only layers whose factor sqrt(latent_hw // positions) is in `factors` (default
  {0, 1, 2, 4, 8, 16, 32, 64}) and always drops factor 8; at 64 px the tiny UNet's layers
  have factors 12 (8×8) and 24 (4×4), so `factors=[12, 24]` is passed: every layer.
- A word's map is the MEAN of its tokens' maps (ours: the sum; same after normalising).
  Ours is divided by its maximum; Pearson is scale-free, so daam's map is compared as is.
- Both upsample bicubically. daam clamps every (layer, head) map at 0 before averaging;
  ours sums each resolution first (bicubic upsampling is linear) and clamps the total, so
  a second check compares the unclamped raw maps exactly: daam's per-(layer, head)
  collection, upsampled bicubically and summed, equals our recorder's running total.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import daam  # the reference; installed by the Makefile (pip install --no-deps daam==0.2.0)

from core.attention import record_attention, word_maps

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # daam's torch.cuda.amp.autocast

PROMPT = "flooded streets near damaged houses"
WORDS = ["flooded", "streets", "near", "damaged", "houses"]
SEED = 7
STEPS = 4
GUIDANCE = 4.0
SIZE = 64
FACTORS = [12, 24]  # sqrt(9216 // positions) of the tiny UNet's 8×8 and 4×4 layers at 64 px



def tiny():
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe("tiny-sd21")


def generate_once(pipe, mode):
    from PIL import Image

    kwargs = dict(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                  generator=torch.Generator().manual_seed(SEED))
    if mode == "img2img":
        tile = (np.random.default_rng(1).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
        kwargs.update(image=Image.fromarray(tile), strength=0.75)
    else:
        kwargs.update(height=SIZE, width=SIZE)
    return pipe(**kwargs).images[0]


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_word_maps_match_the_daam_reference(mode, tmp_path):
    torch.set_num_threads(1)
    _, loaded = tiny()
    pipe = loaded.for_mode(mode)
    before = {name: id(p) for name, p in pipe.unet.attn_processors.items()}

    with daam.trace(pipe, save_heads=True, data_dir=tmp_path / "heads") as tracer:
        image_daam = generate_once(pipe, mode)
        reference = tracer.compute_global_heat_map(factors=FACTORS)
        collected = {key: value.clone() for key, value in tracer.all_heat_maps}
        grid = int(np.sqrt(tracer.latent_hw))
    assert {name: id(p) for name, p in pipe.unet.attn_processors.items()} == before

    with record_attention(pipe.unet, cfg=GUIDANCE > 1, map_size=grid) as rec:
        image_ours = generate_once(pipe, mode)
    assert np.abs(image_daam - image_ours).max() < 1e-4  # the same trajectory

    # Every cross-attention layer (down, up and mid) under both.
    assert len({layer for _, layer, _ in collected}) == rec.n_layers
    assert {factor for factor, _, _ in collected} == set(FACTORS)

    # Raw maps before clamping: daam's per-(layer, head) sums, upsampled bicubically and summed.
    raw = rec.maps.numpy()
    summed = sum(F.interpolate(m.unsqueeze(1).float(), size=(grid, grid), mode="bicubic")[:, 0]
                 for m in collected.values()).numpy()
    np.testing.assert_allclose(raw[: summed.shape[0]], summed, rtol=1e-4, atol=1e-5 * float(raw.max()))

    # Word maps: the acceptance criterion.
    ours = word_maps(rec, PROMPT, loaded.tokenizer)
    assert list(ours) == WORDS
    correlations = {}
    for word, wm in ours.items():
        theirs = reference.compute_word_heat_map(word)
        assert theirs.heatmap.shape == wm.map.shape == (grid, grid)
        correlations[word] = pearson(theirs.heatmap.cpu().numpy(), wm.map)
    assert all(r >= 0.99 for r in correlations.values()), correlations
