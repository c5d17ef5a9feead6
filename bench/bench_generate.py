"""Overhead of the app's generation path over calling the diffusers pipeline directly.

Run:  python bench/bench_generate.py [--size 64] [--steps 10] [--repeats 9] [--device cpu]
Writes bench/results/generate.json and prints a table. Both sides use the SAME tiny
random SD 2.1-style pipeline (core/backends/tiny_models/sd.py: saved, then loaded through the backend's
real `load`), the same prompt, steps, strength, guidance and seed:

- app: `core.generation.generate(request, backend=..., pipe=...)` from a uint8 tile
  (validation, LANCZOS resize, seeding, token counts, step callback, uint8 conversion,
  run record);
- direct: the img2img diffusers pipeline called with a PIL tile and a seeded generator,
  its PIL output turned into a uint8 array.

Calls alternate (app, direct, app, ...) after a warm-up and the medians are compared;
the target is app / direct ≤ 1.05. The images of both sides are checked to be identical.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

from common import alternate, arg_parser, machine_info, medians, write_result

import numpy as np


def main() -> int:
    ap = arg_parser(__doc__, "generate.json")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    from core.generation import generate
    from core.types import GenerationRequest
    from core.backends.tiny_models.sd import tiny_random_sd21_folder

    import core.backends.tiny  # noqa: F401 - registers the tiny backbones
    from core.backends import get

    backend = get("tiny-sd21")
    pipe = backend.load(tiny_random_sd21_folder(), device=args.device)
    i2i = pipe.for_mode("img2img")
    rng = np.random.default_rng(0)
    tile = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    prompt = "A satellite image after being affected by flooding"
    req = GenerationRequest(backbone="tiny-sd21", prompt=prompt, steps=args.steps, strength=0.8, guidance=7.5,
                            size=args.size, seed=0)

    def app() -> np.ndarray:
        return generate(req, backend=backend, pipe=pipe, init_image=tile).images[0]

    def direct() -> np.ndarray:
        out = i2i(prompt=prompt, image=Image.fromarray(tile), num_inference_steps=args.steps, strength=0.8,
                  guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(0), output_type="pil").images[0]
        return np.asarray(out)

    same = np.array_equal(app(), direct())  # warm-up, and the two sides must agree
    times = alternate({"app": app, "direct": direct}, args.repeats)
    med = medians(times)
    ratio = med["app"] / med["direct"]
    result = {
        "model": "tiny random SD 2.1-style pipeline (core/backends/tiny_models/sd.py), img2img",
        "size": args.size, "steps": args.steps, "denoising_steps": int(args.steps * 0.8), "repeats": args.repeats,
        "median_s": {k: round(v, 5) for k, v in med.items()},
        "min_s": {k: round(min(v), 5) for k, v in times.items()},
        "ratio_app_over_direct": round(ratio, 4),
        "target_ratio": 1.05,
        "identical_images": bool(same),
        "machine": machine_info(torch_threads=torch.get_num_threads(), device=args.device),
    }
    print(f"{'path':<8} {'median s':>10} {'min s':>10}")
    for name in ("app", "direct"):
        print(f"{name:<8} {med[name]:>10.4f} {min(times[name]):>10.4f}")
    print(f"ratio app/direct = {ratio:.3f} (target <= 1.05); identical images: {same}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
