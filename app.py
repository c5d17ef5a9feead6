"""xBD Diffusion Lab: the web app. `python app.py --help` lists the options."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.config import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Browse, generate, explain and score post-disaster xBD tiles.")
    p.add_argument("--data", type=Path, help="xBD folder to open (default: the bundled demo scenes)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--auth", help="require a login, given as USER:PASSWORD")
    p.add_argument("--runs", type=Path, help="runs folder (default: <work>/runs)")
    p.add_argument("--work", type=Path, help="work folder for caches and runs (default: lab-work)")
    p.add_argument("--models", type=Path, help="folder of local model folders, one per backbone id")
    p.add_argument("--offload", choices=["none", "model", "sequential"],
                   help="CPU offload of the loaded model, to fit smaller GPUs (default: none)")
    p.add_argument("--attention-slicing", action="store_true", default=None, help="less GPU memory, slower")
    p.add_argument("--vae-tiling", action="store_true", default=None, help="decode large images in tiles")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings.load(data_dir=args.data, host=args.host, port=args.port, auth=args.auth,
                             runs_dir=args.runs, work_dir=args.work, models_dir=args.models,
                             offload=args.offload, attention_slicing=args.attention_slicing,
                             vae_tiling=args.vae_tiling)
    from core.lab import Lab
    from ui.app import build_ui, launch

    lab = Lab(settings)
    lab.runs.clean_leftovers()  # what a killed run left behind
    launch(build_ui(lab), lab)


if __name__ == "__main__":
    main()
