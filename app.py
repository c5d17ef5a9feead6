"""xBD Diffusion Lab: the web app. `python app.py --help` lists the options."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from core.config import Settings
from core.errors import LabError, LaunchError


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
    p.add_argument("--any-folder", action="store_true", default=None,
                   help="let the folder box open any folder even when other machines can reach the app "
                        "(by default it then opens only folders under --data)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags and XBDLAB_* variables, checked before anything starts:
    LaunchError for a malformed --auth, a port that is not a number, or a port in use."""
    try:
        settings = Settings.load(data_dir=args.data, host=args.host, port=args.port, auth=args.auth,
                                 runs_dir=args.runs, work_dir=args.work, models_dir=args.models,
                                 offload=args.offload, attention_slicing=args.attention_slicing,
                                 vae_tiling=args.vae_tiling, any_folder=args.any_folder)
    except ValueError as err:  # XBDLAB_PORT=abc and the like
        raise LaunchError(f"A setting is malformed ({err}); check the XBDLAB_* variables.") from None
    try:
        settings.auth_pair()
    except ValueError:  # never echo the value: it holds a password
        raise LaunchError("--auth (or XBDLAB_AUTH) must look like USER:PASSWORD, e.g. --auth me:secret; "
                          "neither part may be empty.") from None
    check_port(settings.host, settings.port)
    return settings


def check_port(host: str, port: int) -> None:
    """LaunchError when nothing could listen on `host`:`port` now (in use, not this machine's)."""
    bare = host.strip("[]")
    try:
        with socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            s.bind((bare, port))
    except OSError as err:
        raise LaunchError.cannot_listen(host, port, err) from None


def main(argv: list[str] | None = None) -> None:
    """Start the app; a setting it cannot start with is one line on stderr and exit code 2."""
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        from core.lab import Lab
        from ui.app import build_ui, launch

        lab = Lab(settings)
        lab.runs.clean_leftovers()  # what a killed run left behind
        launch(build_ui(lab), lab)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
