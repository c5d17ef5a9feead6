"""Cost of recording DAAM word maps: the same generation with and without the recorder,
and, when the `daam` reference package is installed, against daam's own tracer.

Run:  python bench/bench_attention.py [--size 64] [--steps 10] [--repeats 9]
Same tiny random SD 2.1-style pipeline (core/backends/tiny_models/sd.py), same request and seed on both
sides; calls alternate after a warm-up and medians are compared (target: ≤ 1.15×). The
images must be identical within 1/255. Writes bench/results/attention.json.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

from common import alternate, arg_parser, machine_info, medians, write_result

import numpy as np


def main() -> int:
    ap = arg_parser(__doc__, "attention.json")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import core.backends.tiny  # noqa: F401 - registers the tiny backbones
    from core.attention.record import record_attention
    from core.backends import get
    from core.generation import generate
    from core.types import GenerationRequest
    from core.backends.tiny_models.sd import tiny_random_sd21_folder

    backend = get("tiny-sd21")
    pipe = backend.load(tiny_random_sd21_folder(), device="cpu")
    request = GenerationRequest(backbone="tiny-sd21", prompt="flooded streets near damaged houses",
                                mode="txt2img", steps=args.steps, guidance=7.5, size=args.size, seed=0)

    def plain():
        return generate(request, backend=backend, pipe=pipe).images[0]

    def recorded():
        with record_attention(pipe, cfg=True):
            return generate(request, backend=backend, pipe=pipe).images[0]

    # Word maps straight from the diffusers pipeline: ours vs daam's tracer (same call).
    from core.attention.analysis import word_maps

    direct = pipe.for_mode("txt2img")
    words = request.prompt.split()
    factors = [12, 24] if args.size == 64 else None  # daam keeps only listed factors below 512 px

    def call():
        return direct(request.prompt, num_inference_steps=args.steps, guidance_scale=7.5, height=args.size,
                      width=args.size, generator=torch.Generator().manual_seed(0))

    def ours_maps():
        with record_attention(direct.unet, cfg=True) as rec:
            call()
        return word_maps(rec, request.prompt, direct.tokenizer)

    def daam_maps():
        import daam

        with daam.trace(direct) as tracer:
            call()
            global_map = tracer.compute_global_heat_map(factors=factors) if factors else \
                tracer.compute_global_heat_map()
            return {w: global_map.compute_word_heat_map(w) for w in words}

    paths = [("plain", plain), ("recorded", recorded), ("ours_direct", ours_maps)]
    try:
        import daam  # noqa: F401

        paths.append(("daam_direct", daam_maps))
    except ImportError:
        print("daam is not installed: skipping the comparison with its tracer")
    same = int(np.abs(plain().astype(int) - recorded().astype(int)).max()) <= 1  # warm-up too
    for _, fn in paths[2:]:
        fn()  # warm-up
    med = medians(alternate(paths, args.repeats))
    result = {
        "model": "tiny random SD 2.1-style pipeline (core/backends/tiny_models/sd.py), txt2img, guidance 7.5",
        "size": args.size, "steps": args.steps, "repeats": args.repeats,
        "median_s": med, "ratio_recorded_over_plain": round(med["recorded"] / med["plain"], 4),
        "ratio_daam_over_ours": round(med["daam_direct"] / med["ours_direct"], 4) if "daam_direct" in med else None,
        "target_ratio": 1.15, "identical_images_within_1": same,
        "machine": machine_info(torch_threads=1),
    }
    print(f"plain {med['plain']:.4f} s  recorded {med['recorded']:.4f} s  "
          f"ratio {result['ratio_recorded_over_plain']:.3f} (target <= 1.15); same image: {same}")
    if result["ratio_daam_over_ours"] is not None:
        print(f"word maps, pipeline called directly: ours {med['ours_direct']:.4f} s, "
              f"daam {med['daam_direct']:.4f} s (daam / ours = {result['ratio_daam_over_ours']:.2f})")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
