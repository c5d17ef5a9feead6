"""One frozen Settings object, built once at an entry point and passed down.

Values come from keyword overrides (command-line flags), then `XBDLAB_*` environment
variables, then defaults. No module reads a global configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

ENV_PREFIX = "XBDLAB_"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SCENES = REPO_ROOT / "assets" / "demo-scenes"


@dataclass(frozen=True)
class Settings:
    """Everything the app and the CLI need to know about where things live.

    data_dir: the xBD folder to browse (the bundled synthetic scenes by default).
    work_dir: where the app keeps its caches (thumbnails, label summaries).
    runs_dir: where generated, uploaded and baseline images and their scores live.
    host/port/auth: how the web app listens; auth is "user:password" or None.
    lpips_random_backbone: build LPIPS on a random AlexNet. For plumbing tests only:
        the numbers it gives mean nothing, and the UI says so.
    models_dir: a folder of local model folders, one per backbone id (e.g. models/sd21/);
        a backbone found there is loaded from it instead of its hub id.
    test_backbones: also offer the tiny random test backbones (tests and demos of the
        plumbing only; their pictures are noise).
    offload: "none", "model" or "sequential" CPU offload of the loaded pipeline (GPU only).
    attention_slicing / vae_tiling: trade speed for GPU memory.
    ram_budget_gb: CPU memory for models moved off the GPU, kept for fast switching back.
    any_folder: let the Browse folder box open any folder even when the app is reachable
        from other machines (see `folder_roots`).
    """

    data_dir: Path = DEMO_SCENES
    work_dir: Path = Path("lab-work")
    runs_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = None
    lpips_random_backbone: bool = False
    models_dir: Path | None = None
    test_backbones: bool = False
    offload: str = "none"
    attention_slicing: bool = False
    vae_tiling: bool = False
    ram_budget_gb: float = 16.0
    any_folder: bool = False

    @property
    def runs(self) -> Path:
        """The runs folder: `runs_dir` if given, else `<work_dir>/runs`."""
        return self.runs_dir if self.runs_dir is not None else self.work_dir / "runs"

    @property
    def trained_dir(self) -> Path:
        """ControlNets trained from the app: `<work_dir>/trained`, one folder per run."""
        return self.work_dir / "trained"

    @property
    def cache_dir(self) -> Path:
        """Thumbnails and label summaries: `<work_dir>/cache`."""
        return self.work_dir / "cache"

    @property
    def local_only(self) -> bool:
        """True when the app listens on a loopback address: only this machine reaches it."""
        import ipaddress

        host = self.host.strip().strip("[]")
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name: it may resolve to any interface
            return False

    @property
    def folder_roots(self) -> tuple[Path, ...] | None:
        """The folders (with everything under them) the Browse folder box may open, or None
        for any folder: an app reachable from other machines opens only `data_dir` unless
        `any_folder` is set."""
        return None if self.any_folder or self.local_only else (Path(self.data_dir),)

    def auth_pair(self) -> tuple[str, str] | None:
        """`auth` split into (user, password), or None when the app is open."""
        if not self.auth:
            return None
        user, sep, password = self.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("auth must look like USER:PASSWORD")
        return user, password

    CHILD_FIELDS = ("models_dir", "runs_dir", "test_backbones", "lpips_random_backbone", "offload",
                    "attention_slicing", "vae_tiling", "ram_budget_gb")

    def child_env(self) -> dict[str, str]:
        """XBDLAB_* variables that give a process this app starts (a background batch, a
        training run) the same models, runs and model settings as the app."""
        out = {}
        for name in self.CHILD_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[ENV_PREFIX + name.upper()] = str(value)
        return out

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        """Settings from overrides (None values ignored), then XBDLAB_* variables, then defaults."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("data_dir", "work_dir", "runs_dir", "models_dir"):
            if values.get(name) is not None:
                values[name] = Path(values[name]).expanduser()
        return replace(cls(), **values)


def _convert(name: str, raw: str):
    if name == "port":
        return int(raw)
    if name == "ram_budget_gb":
        return float(raw)
    if name in ("lpips_random_backbone", "test_backbones", "attention_slicing", "vae_tiling", "any_folder"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw
