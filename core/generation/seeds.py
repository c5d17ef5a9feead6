"""Seeds: every image has its own, so (backbone, request, seed) reproduces an image.

Image i of a request uses `request.seed + i`, drawn from its own CPU `torch.Generator`,
whatever the device the model runs on (diffusers draws the noise on the CPU and moves it),
so a seed gives the same starting noise on a laptop and on a GPU server.

A comparison grid must build fresh generators for every cell: reusing one generator
across a row (what the course's scripts did) makes each cell's noise depend on the cells
before it, so columns no longer share noise.
"""

from __future__ import annotations

from core.errors import RequestError

MAX_SEED = 2**63 - 1


def seeds_for(request) -> list[int]:
    """The seed of every image of `request`: `seed, seed + 1, ..., seed + num_images - 1`."""
    seed, n = int(request.seed), int(request.num_images)
    if n < 1:
        raise RequestError(f"num_images must be at least 1 (got {n}).")
    if seed < 0 or seed + n - 1 > MAX_SEED:
        raise RequestError(f"Seeds must lie in 0..{MAX_SEED} (got {seed} for {n} image(s)).")
    return [seed + i for i in range(n)]


def generators_for(seeds: list[int]) -> list:
    """One freshly seeded CPU `torch.Generator` per seed, in order."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
