"""Environments of their own for captioners whose pins clash with the app's.

CogVLM2's remote code runs on transformers 4.40.2-4.43 only (see core.captions.cogvlm2);
the app runs transformers 5. `make cogvlm2` (this module's `create`) makes
`.venv-cogvlm2/` beside the app's `.venv/`:

- its own transformers, tokenizers and huggingface-hub (and numpy at the app's version),
  from `requirements-cogvlm2.txt`: about 230 MB;
- the app's PyTorch, Pillow and the rest of the app's packages, reused read-only through a
  `.pth` file that puts the app's site-packages *after* its own (so its transformers wins
  and no second multi-GB PyTorch is installed);
- a small stand-in for xformers' `memory_efficient_attention` (the only xformers call in
  CogVLM2's vision tower) on PyTorch's scaled-dot-product attention, when xformers is not
  importable: xformers wheels pin one exact PyTorch release each;
- with `--int4`, bitsandbytes (CUDA machines only) for the int4 model.

Never `pip install` into it by hand: pip sees the app's packages through the `.pth` file
and could change them. Run `make cogvlm2` again to rebuild it (it starts from scratch).
`XBDLAB_COGVLM2_ENV` points the app at an environment somewhere else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from core.errors import ModelNotAvailable

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "requirements-cogvlm2.txt"
ENV_VARIABLE = "XBDLAB_COGVLM2_ENV"
APP_STACK_PTH = "zz_xbdlab_app_stack.pth"  # "zz": read after the environment's own packages

XFORMERS_SHIM = '''"""Stand-in for xformers, written by xBD Diffusion Lab's `make cogvlm2`: only
`xformers.ops.memory_efficient_attention`, on PyTorch's scaled_dot_product_attention."""
__version__ = "0.0.0+sdpa"
'''
XFORMERS_OPS_SHIM = '''"""memory_efficient_attention with xformers' layout (batch, tokens, heads, dim), computed
by torch.nn.functional.scaled_dot_product_attention (same result up to rounding)."""
import torch.nn.functional as F


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, **kwargs):
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p, scale=scale)
    return out.transpose(1, 2)
'''


def env_dir() -> Path:
    """Where the CogVLM2 environment is (or would be)."""
    return Path(os.environ.get(ENV_VARIABLE) or REPO_ROOT / ".venv-cogvlm2").expanduser()


def env_python(folder: Path | None = None) -> Path:
    folder = folder or env_dir()
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def require_env(label: str = "CogVLM2") -> Path:
    """The environment's python; ModelNotAvailable saying how to make it when it is missing."""
    python = env_python()
    if not python.is_file() or not (env_dir() / "xbdlab-env.txt").is_file():
        raise ModelNotAvailable(
            f"{label} runs in an environment of its own (its remote code needs transformers 4.40-4.43; the app "
            f"runs transformers 5), and {env_dir()} does not exist yet. Create it once with `make cogvlm2` "
            "(about 230 MB: transformers 4.41 and its tokenizers; it reuses the app's PyTorch), or point "
            f"{ENV_VARIABLE} at one.")
    return python


def create(folder: Path | None = None, *, int4: bool = False, log=print) -> Path:
    """Build the environment from scratch (see the module notes); returns its python."""
    folder = Path(folder or env_dir())
    if folder.exists():
        shutil.rmtree(folder)
    log(f"creating {folder}")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = env_python(folder)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    if int4:  # --no-deps: its dependencies are torch (the app's, not visible to pip yet), numpy, packaging
        subprocess.run([*pip, "--no-deps", "bitsandbytes==0.50.2"], check=True)
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    if subprocess.run([str(python), "-c", "import xformers.ops"], capture_output=True).returncode != 0:
        (own / "xformers" / "ops").mkdir(parents=True, exist_ok=True)
        (own / "xformers" / "__init__.py").write_text(XFORMERS_SHIM, encoding="utf-8")
        (own / "xformers" / "ops" / "__init__.py").write_text(XFORMERS_OPS_SHIM, encoding="utf-8")
    app_site = sysconfig.get_paths()["purelib"]
    (own / APP_STACK_PTH).write_text(app_site + "\n", encoding="utf-8")
    check = subprocess.run([str(python), "-c", "import torch, transformers, PIL; "
                            "print(transformers.__version__, torch.__version__)"],
                           check=True, capture_output=True, text=True).stdout.strip()
    (folder / "xbdlab-env.txt").write_text(f"cogvlm2 environment: transformers, torch = {check}\n"
                                           f"app packages from {app_site}\n", encoding="utf-8")
    log(f"ready: transformers {check.split()[0]}, torch {check.split()[1]} (from the app)")
    return python


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.captions.envs",
                                     description="Create the CogVLM2 captioning environment.")
    parser.add_argument("command", choices=["create"])
    parser.add_argument("--path", type=Path, help=f"where (default: .venv-cogvlm2, or ${ENV_VARIABLE})")
    parser.add_argument("--int4", action="store_true", help="also install bitsandbytes for the int4 model (CUDA)")
    args = parser.parse_args(argv)
    create(args.path, int4=args.int4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
