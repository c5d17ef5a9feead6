"""Model switch time: ModelManager bringing back a CPU-cached model vs a fresh from_pretrained.

Run:  python bench/bench_switch.py [--repeats 5] [--device cpu] [--threads 2]
Builds a small random UNet2DConditionModel from a config (about 19.5 M parameters, 74 MiB in
fp32), saves it to a temporary folder, then in one process times
  fresh:   UNet2DConditionModel.from_pretrained(folder).to(device)
  manager: entering `manager.use(key)` for a model the manager moved to its CPU cache when
           another key was used (two keys load the same folder, used in turn).
Writes bench/results/switch.json and prints a table. Not collected by pytest (no test_ prefix).

On a CPU-only machine the device *is* the CPU, so the manager's switch moves no bytes: it
measures the manager's own overhead. On a GPU it includes the device-to-host move of the
previous model and the host-to-device move of the cached one.
"""

from __future__ import annotations

import gc
import platform
import statistics
import tempfile
from pathlib import Path

from common import arg_parser, machine_info, timed, write_result

from core.models import ModelManager

UNET_CONFIG = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(64, 128, 192, 256), cross_attention_dim=384,
                   attention_head_dim=8, norm_num_groups=32)


def main() -> int:
    ap = arg_parser(__doc__, "switch.json")
    ap.add_argument("--repeats", type=int, default=5, help="timed fresh loads and switches")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", help="fp16/bf16/fp32 (the CPU always uses fp32)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()

    import diffusers
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    manager = ModelManager(device=args.device, ram_budget_gb=4.0)
    dtype = manager.dtype_for(args.dtype)

    with tempfile.TemporaryDirectory(prefix="bench-switch-") as tmp:
        folder = Path(tmp) / "unet"
        model = UNet2DConditionModel(**UNET_CONFIG)
        n_params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder)
        del model
        disk_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

        def fresh_load(device=args.device, dtype=dtype):
            return UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtype).to(device)

        # Fresh loads (the files are in the page cache: this is the best case for reloading).
        fresh_load()  # warm-up: first-call imports and allocator growth
        fresh = []
        for _ in range(args.repeats):
            holder = {}
            fresh.append(timed(lambda: holder.update(m=fresh_load()), args.device))
            del holder
            gc.collect()

        # The manager: two keys, used in turn; every timed switch brings back a cached model.
        loads = {"a": 0, "b": 0}

        def loader_for(key):
            def load(device, dtype):
                loads[key] += 1
                return fresh_load(device, dtype)
            return load

        def enter(key):
            with manager.use(key, loader_for(key), spec_dtype=args.dtype):
                pass

        first_load = timed(lambda: enter("a"), args.device)
        enter("b")
        switches = []
        for _ in range(args.repeats):
            switches.append(timed(lambda: enter("a"), args.device))
            switches.append(timed(lambda: enter("b"), args.device))
        assert loads == {"a": 1, "b": 1}, f"the manager reloaded a cached model: {loads}"

        # The switched-back model still runs.
        sample = torch.randn(1, 4, 32, 32, device=args.device, dtype=dtype)
        text = torch.randn(1, 8, UNET_CONFIG["cross_attention_dim"], device=args.device, dtype=dtype)
        with manager.use("a", loader_for("a"), spec_dtype=args.dtype) as unet, torch.no_grad():
            out = unet(sample, 10, encoder_hidden_states=text).sample
        assert out.shape == sample.shape
        status = manager.status()
        manager.unload_all()

    fresh_median = statistics.median(fresh)
    switch_median = statistics.median(switches)
    result = {
        "model": {"class": "UNet2DConditionModel", "config": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in UNET_CONFIG.items()},
                  "parameters": n_params, "dtype": str(dtype).replace("torch.", ""),
                  "bytes_in_memory": status["resident"]["bytes"], "bytes_on_disk": disk_bytes},
        "fresh_from_pretrained_s": {"median": fresh_median, "runs": fresh},
        "manager_first_load_s": first_load,
        "manager_switch_to_cached_s": {"median": switch_median, "runs": switches},
        "speedup_fresh_over_switch": fresh_median / switch_median,
        "machine": machine_info(machine=platform.machine(), diffusers=diffusers.__version__,
                                torch_threads=torch.get_num_threads(), device=args.device),
        "note": ("On a CPU device the manager's switch moves no bytes (device and cache are both "
                 "CPU RAM); on a GPU it includes the moves between device and host."
                 if not args.device.startswith("cuda") else
                 "Switch includes moving the previous model to host RAM and the cached one to the GPU."),
    }

    mib = result["model"]["bytes_in_memory"] / 2**20
    print(f"UNet2DConditionModel, {n_params / 1e6:.1f} M parameters, {mib:.0f} MiB "
          f"({result['model']['dtype']}) on {args.device}; median of {args.repeats} "
          f"(switches: {len(switches)})")
    print(f"{'approach':<44}{'seconds':>12}")
    print(f"{'fresh from_pretrained + .to(device)':<44}{fresh_median:>12.4f}")
    print(f"{'manager: first load (through the loader)':<44}{first_load:>12.4f}")
    print(f"{'manager: switch back to a CPU-cached model':<44}{switch_median:>12.6f}")
    print(f"{'ratio fresh / switch':<44}{result['speedup_fresh_over_switch']:>11.0f}x")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
