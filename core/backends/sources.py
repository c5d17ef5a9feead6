"""Where a backbone's weights come from: a Hugging Face hub id or a local folder.

Nothing here downloads unless `download()` is called. `readiness()` only looks at disk:
a local folder must hold a diffusers pipeline (`model_index.json` and its component
folders with weights) or a single model (`config.json` + weights); a hub id must be in the
local Hugging Face cache, which lives where huggingface_hub puts it: `HF_HUB_CACHE`, else
`HF_HOME/hub`, else `~/.cache/huggingface/hub` (read at call time, so a change of the
environment after start-up is honoured).

Mirrors: `download()` goes through `huggingface_hub.snapshot_download`, which sends every
request to `huggingface_hub.constants.ENDPOINT`, i.e. the `HF_ENDPOINT` environment
variable when it is set (e.g. `HF_ENDPOINT=https://hf-mirror.example.org`). That variable
is read when huggingface_hub is first imported, so set it before starting the app.
`HF_HUB_OFFLINE=1` forbids downloads; cached models and local folders still load.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelNotAvailable

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SKIPPED_WEIGHTS = ("*.ckpt", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.pb", "*.pt", "*.xml", "*.mlpackage*")


@dataclass(frozen=True)
class Source:
    """Where to load a backbone from.

    kind: "folder" (path_or_id is a local folder) or "hub" (a Hugging Face repo id).
    revision: a branch, tag or commit for hub sources (None = "main"); None for folders.
    """

    kind: str
    path_or_id: str
    revision: str | None = None

    def __str__(self) -> str:
        if self.kind == "hub" and self.revision:
            return f"{self.path_or_id}@{self.revision}"
        return self.path_or_id

    def to_dict(self) -> dict:
        """JSON-ready description (for run records)."""
        return {"kind": self.kind, "path_or_id": self.path_or_id, "revision": self.revision}


@dataclass(frozen=True)
class Readiness:
    """Whether a source can be loaded without the network.

    ready: everything needed is on disk.
    where: the folder that holds (or would hold) the files: the local folder, the cached
        snapshot, or the cache folder the hub id would be stored in.
    size_bytes: bytes on disk of what was found (None when nothing was found).
    missing: what is missing and how to get it ("" when ready).
    """

    ready: bool
    where: str
    size_bytes: int | None
    missing: str = ""


# -- environment --------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved from the environment the way
    huggingface_hub does (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(env[name])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hub_endpoint() -> str:
    """The hub address downloads go to: huggingface_hub's ENDPOINT (HF_ENDPOINT when set)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of diffusers
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network access."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_folder_for(repo_id: str) -> Path:
    """Where the hub cache stores `repo_id` (models--org--name)."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


# -- resolving ----------------------------------------------------------------------------
def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", "\\")) or (len(text) > 1 and text[1] == ":")
            or text.count("/") > 1 or Path(text).expanduser().exists())


def as_source(value) -> Source:
    """A Source from a Source, a Path (folder) or a string: an existing or path-like
    string is a folder, anything else a hub id, optionally `org/name@revision`."""
    if isinstance(value, Source):
        return value
    if isinstance(value, Path):
        return Source("folder", str(value.expanduser()))
    text = str(value).strip()
    if not text:
        raise ModelNotAvailable("No model source given: pass a Hugging Face id or a local folder.")
    if _looks_like_path(text):
        return Source("folder", str(Path(text).expanduser()))
    repo, _, revision = text.partition("@")
    return Source("hub", repo, revision or None)


def resolve_source(spec, override: str | Path | None = None, *, models_dir: Path | None = None) -> Source:
    """Where to load `spec`'s backbone from, first match wins:

    1. `override` (a folder or a hub id, `org/name@revision` allowed);
    2. a folder under `models_dir` named after the backbone id (`models_dir/sd21`), the hub
       id (`models_dir/stabilityai/stable-diffusion-2-1`) or the hub id with `--`
       (`models_dir/stabilityai--stable-diffusion-2-1`);
    3. the spec's hub id.
    Raises ModelNotAvailable when none applies (a backbone without a hub id needs a folder)."""
    if override is not None and str(override).strip():
        return as_source(override)
    if models_dir is not None:
        root = Path(models_dir).expanduser()
        names = [spec.id]
        if spec.hub_id:
            names += [spec.hub_id, spec.hub_id.replace("/", "--")]
        for name in names:
            folder = root / name
            if folder.is_dir():
                return Source("folder", str(folder))
    if spec.hub_id:
        return Source("hub", spec.hub_id)
    where = f" (looked in {Path(models_dir).expanduser() / spec.id})" if models_dir is not None else ""
    raise ModelNotAvailable(
        f"{spec.label} has no Hugging Face id: point it at a local folder holding the model{where}."
    )


# -- readiness ----------------------------------------------------------------------------
def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size  # follows cache symlinks
            except OSError:
                pass
    return total


def _has_weights(folder: Path) -> bool:
    return any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir())


def pipeline_components(model_index: dict) -> list[str]:
    """Component folders a diffusers `model_index.json` names (entries set to null skipped)."""
    return [k for k, v in model_index.items()
            if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] and v[1]]


def _missing_parts(folder: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """What a pipeline or model folder lacks ([] when complete)."""
    index = folder / "model_index.json"
    if not index.is_file():
        if (folder / "config.json").is_file():  # a single model (e.g. a ControlNet)
            return [] if _has_weights(folder) else ["weights (*.safetensors or *.bin)"]
        return ["model_index.json"]
    try:
        components = pipeline_components(json.loads(index.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return ["a readable model_index.json"]
    missing = []
    for name in components:
        if name in skip:
            continue
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/")
        elif (sub / "config.json").is_file() and not _has_weights(sub):
            missing.append(f"{name}/ weights")
    return missing


_PIPELINE_FOLDER = "point the backbone at a local folder holding the pipeline (with model_index.json)"


def fixes(repo_id: str, local: str = _PIPELINE_FOLDER) -> str:
    """What to do when `repo_id` is not on disk: download it (here or elsewhere, then copy
    its cache folder), `local` (the local-folder way, as a clause), or use a mirror. The
    diffusion backbones' wording; other models pass their own `local` clause."""
    return (
        "Fix it in one of three ways: (1) download it, here (the download action, or "
        f"`hf download {repo_id}`) or on a connected machine, then copy its cache folder "
        f"`models--{repo_id.replace('/', '--')}` into {hub_cache_dir()}; (2) {local}; (3) set HF_ENDPOINT to a "
        "reachable hub mirror and download."
    )


def _fixes(repo_id: str) -> str:
    return fixes(repo_id)


def readiness(spec, source: Source, *, skip: tuple[str, ...] = ()) -> Readiness:
    """Whether `source` can be loaded from disk now, without downloading anything.

    `skip`: pipeline components that will not be loaded (e.g. SD3 without T5:
    ("text_encoder_3", "tokenizer_3")), so their absence does not count."""
    source = as_source(source)
    if source.kind == "folder":
        folder = Path(source.path_or_id).expanduser()
        if not folder.is_dir():
            return Readiness(False, str(folder), None, f"The folder {folder} does not exist.")
        missing = _missing_parts(folder, skip)
        size = _folder_size(folder)
        if missing:
            return Readiness(False, str(folder), size,
                             f"The folder {folder} is not a complete diffusers model: missing "
                             + ", ".join(missing) + ".")
        return Readiness(True, str(folder), size)

    from huggingface_hub import try_to_load_from_cache

    repo, cache = source.path_or_id, hub_cache_dir()
    hit = try_to_load_from_cache(repo, "model_index.json", cache_dir=str(cache), revision=source.revision)
    if not isinstance(hit, str):
        hit = try_to_load_from_cache(repo, "config.json", cache_dir=str(cache), revision=source.revision)
    if not isinstance(hit, str):
        rev = f" at revision {source.revision}" if source.revision else ""
        return Readiness(False, str(cache_folder_for(repo)), None,
                         f"{repo}{rev} is not in the Hugging Face cache ({cache_folder_for(repo)}). " + _fixes(repo))
    snapshot = Path(hit).parent
    missing = _missing_parts(snapshot, skip)
    size = _folder_size(snapshot)
    if missing:
        return Readiness(False, str(snapshot), size,
                         f"The cached copy of {repo} ({snapshot}) is incomplete: missing "
                         + ", ".join(missing) + ". " + _fixes(repo))
    return Readiness(True, str(snapshot), size)


def require_ready(spec, source: Source, *, skip: tuple[str, ...] = ()) -> Readiness:
    """`readiness(...)`, raising ModelNotAvailable with what to do when not ready."""
    state = readiness(spec, source, skip=skip)
    if not state.ready:
        raise ModelNotAvailable(f"{spec.label}: {state.missing}")
    return state


# -- downloading --------------------------------------------------------------------------
def _is_variant_file(name: str, variant: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return f".{variant}." in base or f".{variant}-" in base


def choose_files(files: list[str], model_index: dict | None, *, variant: str | None = None,
                 skip: tuple[str, ...] = ()) -> list[str]:
    """The repo files a diffusers pipeline needs: model_index.json, and in every component
    folder its configs/tokenizer files plus one set of weights (safetensors over bin; the
    `variant` files when the component has them, else the plain ones). Single-file
    checkpoints at the top level, ONNX/Flax/TF exports and skipped components are left out."""
    components = set(pipeline_components(model_index)) if model_index else None
    chosen: list[str] = []
    by_folder: dict[str, list[str]] = {}
    for name in files:
        if any(fnmatch.fnmatch(name, pat) for pat in _SKIPPED_WEIGHTS):
            continue
        folder, sep, _ = name.partition("/")
        if not sep:
            if name in ("model_index.json",) or (model_index is None and (name.endswith(".json")
                                                                         or name.endswith(WEIGHT_SUFFIXES))):
                chosen.append(name)
            continue
        if folder in skip or (components is not None and folder not in components):
            continue
        by_folder.setdefault(folder, []).append(name)
    if model_index is None:  # a single model: keep only one set of top-level weights
        chosen = _one_weight_set(chosen, variant)
    for names in by_folder.values():
        chosen += _one_weight_set(names, variant)
    return sorted(chosen)


def _one_weight_set(names: list[str], variant: str | None) -> list[str]:
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
    others = [n for n in names if not n.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        return others
    if any(n.endswith(".safetensors") for n in weights):
        weights = [n for n in weights if n.endswith(".safetensors")]
    if variant and any(_is_variant_file(n, variant) for n in weights):
        weights = [n for n in weights if _is_variant_file(n, variant)]
    else:
        weights = [n for n in weights if not any(_is_variant_file(n, v) for v in ("fp16", "bf16", "fp32", "ema", "non_ema"))] or weights
    return others + weights


def download(spec, source: Source, progress: Callable[[int, int], None] | None = None, *,
             variant: str | None = None, skip: tuple[str, ...] = ()) -> Readiness:
    """Download what `source` needs into the hub cache (only when called) and return its
    readiness. `progress(done_bytes, total_bytes)` is called at the start, as bytes arrive
    (as far as huggingface_hub reports them) and at the end.

    Uses `huggingface_hub.snapshot_download`, so HF_ENDPOINT mirrors apply. Folder sources
    download nothing. Raises ModelNotAvailable when offline or when the hub cannot be reached."""
    source = as_source(source)
    if source.kind == "folder":
        return require_ready(spec, source, skip=skip)
    repo = source.path_or_id
    if hub_offline():
        raise ModelNotAvailable(
            f"Cannot download {repo}: HF_HUB_OFFLINE is set, so the hub is not contacted. "
            "Unset it on a machine that can reach the hub (or a mirror given by HF_ENDPOINT), "
            "or point the backbone at a local folder."
        )
    import huggingface_hub as hub

    cache = str(hub_cache_dir())
    try:
        index_path = hub.hf_hub_download(repo, "model_index.json", revision=source.revision, cache_dir=cache)
        model_index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    except hub.errors.EntryNotFoundError:
        model_index = None
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise ModelNotAvailable(f"Could not reach {repo} at {hub_endpoint()}: {err}. " + _fixes(repo)) from err
    try:
        plan = hub.snapshot_download(repo, revision=source.revision, cache_dir=cache, dry_run=True)
        infos = {p.filename: p for p in plan}
        wanted = choose_files(list(infos), model_index, variant=variant, skip=skip)
        total = sum(int(getattr(infos[f], "file_size", 0) or 0) for f in wanted)
        if progress:
            progress(0, total)
        hub.snapshot_download(repo, revision=source.revision, cache_dir=cache, allow_patterns=wanted,
                              tqdm_class=_progress_bar_class(progress, total) if progress else None)
    except Exception as err:
        raise ModelNotAvailable(f"Downloading {repo} from {hub_endpoint()} failed: {err}. " + _fixes(repo)) from err
    if progress:
        progress(total, total)
    return require_ready(spec, source, skip=skip)


def _progress_bar_class(progress: Callable[[int, int], None], total: int):
    """A tqdm class forwarding huggingface_hub's "bytes downloaded" bar to `progress`."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = io.StringIO()  # drawn nowhere: the caller shows progress
            super().__init__(*args, **kwargs)
            self._forward = self.unit == "B" and "download" in str(self.desc).lower()

        def update(self, n=1):
            out = super().update(n)
            if self._forward:
                progress(min(int(self.n), total), total)
            return out

    return _Forward
