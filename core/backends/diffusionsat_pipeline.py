"""DiffusionSat pipelines on current diffusers, and where their weights are found.

Pipelines (built on first use, like the models; import them from this module):
`DiffusionSatPipeline` (txt2img), `DiffusionSatImg2ImgPipeline`,
`DiffusionSatControlNetPipeline` and `DiffusionSatControlNetImg2ImgPipeline` are the stock
Stable Diffusion pipelines with two extra keyword arguments, `metadata` and (ControlNet)
`cond_metadata`: 7 normalised values (core.data.metadata), one row for all images, one per
prompt, or one per image. None means "no metadata" (all zeros). Nothing of the stock
denoising loop is copied: for the length of one call, forward pre-hooks on the UNet (and the
ControlNet) add the metadata for the batch they see:
- with classifier-free guidance the batch is [unconditional, conditional] and the
  unconditional half gets all-zero metadata (and all-zero condition metadata), the
  conditional half the given values;
- rows are repeated per image for `num_images_per_prompt > 1`;
- ControlNet guess mode runs the ControlNet on the conditional half only: it gets the values.
The txt2img pipelines default to 512 px (DiffusionSat's training size) instead of the
UNet's sample size (768 for SD 2.1).

Folder layouts `load_pipeline` accepts (`.bin` or safetensors weights; see resolve_source):
1. pipeline folder: `unet/` + `text_encoder/`, `tokenizer/`, `vae/`, `scheduler/`
   (e.g. a Hugging Face re-upload, or a training output folder after its final save);
2. training output folder: `checkpoint-<step>/unet/` (the highest step is used) with the
   other components at its top, or without them (then from the SD 2.1 base);
3. a `checkpoint-<step>/` folder itself: `unet/` inside, components from its parent or
   the SD 2.1 base;
4. a UNet folder itself (`config.json` + weights): components from its parent (or the
   grandparent when the parent is `checkpoint-<step>/`), else the SD 2.1 base;
   any of 1-4 may also sit in the one subfolder of the folder given (a zip that kept its
   top folder);
5. a Hugging Face id (not an existing path): a pipeline repository laid out as in 1.
ControlNet (`controlnet=True`): a folder holding `controlnet/` (or
`checkpoint-<step>/controlnet/`, or the ControlNet folder itself) beside a DiffusionSat base
in the same folder (layouts 1-3), or on top of one: inside a base folder (the parent is
searched next), or else the base named by a `base_model.txt` in the folder (what the
trainer writes), or else the `diffusionsat_base` source given (a folder or hub id).

The SD 2.1 base (text encoder, tokenizer, VAE, scheduler: DiffusionSat did not retrain
them) is `stabilityai/stable-diffusion-2-1` by default, or a local folder passed as
`components_base`. Hub ids are handed to `from_pretrained` as they are, unless a `locate`
function maps them to local folders: the backends (core.backends.diffusionsat) map them to
the local Hugging Face cache and never download (core.backends.sources.download does, through
`HF_ENDPOINT` when set).
"""

from __future__ import annotations

import inspect
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from core.backends.common import SD21_HUB_ID, torch_dtype
from core.errors import ModelLoadError, ModelNotAvailable
COMPONENTS = ("text_encoder", "tokenizer", "vae", "scheduler")
DEFAULT_SIZE = 512
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EXPORTS = ("DiffusionSatPipeline", "DiffusionSatImg2ImgPipeline", "DiffusionSatControlNetPipeline",
            "DiffusionSatControlNetImg2ImgPipeline")
_classes: dict = {}
_lock = threading.Lock()

LAYOUTS_HELP = (
    "Accepted DiffusionSat folders: a pipeline folder with unet/ (+ text_encoder/, tokenizer/, vae/, "
    "scheduler/); a training output folder with checkpoint-<step>/unet/; a checkpoint-<step>/ folder; "
    "or a UNet folder (config.json + diffusion_pytorch_model.bin or .safetensors). The official weights "
    "are zips of such folders on Zenodo (record 13751498 for the 512 px model): unzip and give the folder."
)
CONTROLNET_HELP = (
    "Accepted DiffusionSat ControlNet folders: a folder holding controlnet/ (or "
    "checkpoint-<step>/controlnet/) next to a DiffusionSat base (unet/ or checkpoint-<step>/unet/ and "
    "the other components) or placed inside a DiffusionSat base folder; or the controlnet/ folder "
    "itself inside such a base; or a folder whose base_model.txt names its base. No xBD ControlNet was "
    "published: train one (python -m core train controlnet --base diffusionsat, or the Train tab)."
)


# -- where the weights are ----------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each part of a DiffusionSat pipeline comes from (folders or hub ids)."""

    kind: str  # which accepted layout matched, in words
    unet: str
    components: str  # holds text_encoder/, tokenizer/, vae/, scheduler/
    unet_subfolder: str | None = None
    controlnet: str | None = None

    def as_record(self) -> dict:
        return asdict(self)


def _is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file()


def _has_components(p: Path) -> bool:
    return all((p / name).is_dir() for name in COMPONENTS)


def _latest_checkpoint(folder: Path, sub: str) -> Path | None:
    found = []
    for child in folder.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir() and _is_model_dir(child / sub):
            found.append((int(m.group(1)), child / sub))
    return max(found)[1] if found else None


def _config_keys(p: Path) -> set:
    import json

    try:
        return set(json.loads((p / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def _find_unet(folder: Path) -> tuple[Path, str] | None:
    if _is_model_dir(folder / "unet"):
        kind = "checkpoint folder" if _CHECKPOINT.match(folder.name) else "pipeline folder"
        return folder / "unet", kind
    latest = _latest_checkpoint(folder, "unet")
    if latest is not None:
        return latest, f"training output folder ({latest.parent.name})"
    if _is_model_dir(folder) and "up_block_types" in _config_keys(folder):
        return folder, "UNet folder"
    return None


def _only_subfolder(folder: Path) -> Path:
    """The one visible subfolder of `folder` (an unzipped archive that kept its top folder,
    e.g. finetune_sd21_…/checkpoint-150000/unet/), else `folder` itself."""
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    return subs[0] if len(subs) == 1 else folder


def _components_near(unet_dir: Path) -> Path | None:
    parent = unet_dir.parent
    if _has_components(parent):
        return parent
    if _CHECKPOINT.match(parent.name) and _has_components(parent.parent):
        return parent.parent
    return None


def resolve_source(source, *, controlnet: bool = False, components_base: str | None = SD21_HUB_ID,
                   diffusionsat_base: str | None = None, locate=None) -> Layout:
    """Which folders (or hub ids) hold the UNet, the other components and the ControlNet.

    `components_base`: SD 2.1's text encoder, tokenizer, VAE and scheduler when the folder
    has none; `diffusionsat_base`: the base of a ControlNet folder that is neither beside nor
    inside one. `locate(hub_id) -> folder` turns hub ids into local folders (e.g. the
    Hugging Face cache); without it hub ids are kept for `from_pretrained`.
    Raises ModelNotAvailable, saying which layouts are accepted, when nothing matches.
    """
    text = str(source).strip()
    if not text:
        raise ModelNotAvailable(f"No DiffusionSat model given. {LAYOUTS_HELP}")
    folder = Path(text).expanduser()
    if not folder.exists() and locate is not None and _is_hub_id(text):
        folder = Path(locate(text))
    if controlnet:
        return _resolve_controlnet(text, folder, components_base, diffusionsat_base, locate)
    if not folder.exists():
        if not _is_hub_id(text):
            raise ModelNotAvailable(f"The DiffusionSat folder {text!r} does not exist. {LAYOUTS_HELP}")
        return Layout(kind="Hugging Face repository", unet=text, unet_subfolder="unet", components=text)
    if not folder.is_dir():
        raise ModelNotAvailable(f"{folder} is a file, not a folder. {LAYOUTS_HELP}")
    found = _find_unet(folder) or _find_unet(_only_subfolder(folder))
    if found is None:
        raise ModelNotAvailable(f"No DiffusionSat UNet found in {folder}. {LAYOUTS_HELP}")
    unet_dir, kind = found
    near = _components_near(unet_dir)
    if near is not None:
        return Layout(kind=kind, unet=str(unet_dir), components=str(near))
    if components_base is None:
        raise ModelNotAvailable(f"{folder} holds a UNet but no text_encoder/, tokenizer/, vae/, scheduler/, "
                                "and no SD 2.1 base was given for them.")
    base = str(components_base)
    if locate is not None and _is_hub_id(base) and not Path(base).expanduser().exists():
        base = str(locate(base))
    return Layout(kind=kind + " + SD 2.1 base components", unet=str(unet_dir), components=base)


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text.partition("@")[0])) and not text.startswith((".", "/", "~"))


def _resolve_controlnet(text: str, folder: Path, components_base, diffusionsat_base, locate) -> Layout:
    if not folder.is_dir():
        raise ModelNotAvailable(f"The DiffusionSat ControlNet needs a local folder; {text!r} is not one. "
                                f"{CONTROLNET_HELP}")
    latest = _latest_checkpoint(folder, "controlnet")
    if _is_model_dir(folder / "controlnet"):
        cn_dir, home = folder / "controlnet", folder
    elif latest is not None:
        cn_dir, home = latest, folder
    elif _is_model_dir(folder) and "conditioning_embedding_out_channels" in _config_keys(folder):
        cn_dir, home = folder, folder.parent
    else:
        raise ModelNotAvailable(f"No controlnet/ folder found in {folder}. {CONTROLNET_HELP}")
    for candidate in (home, home.parent):
        if _find_unet(candidate) is not None:
            base = resolve_source(candidate, components_base=components_base, locate=locate)
            break
    else:
        from core.backends.controlnet import base_hint

        named = base_hint(home)  # base_model.txt, as the trainer writes it
        if named is None and diffusionsat_base is None:
            raise ModelNotAvailable(f"{cn_dir} has no DiffusionSat base beside it or around it. {CONTROLNET_HELP}")
        base = resolve_source(named or diffusionsat_base, components_base=components_base, locate=locate)
    return Layout(kind=f"ControlNet {cn_dir.relative_to(home)}/ on {base.kind}",
                  unet=base.unet, unet_subfolder=base.unet_subfolder, components=base.components,
                  controlnet=str(cn_dir))


# -- the pipelines -------------------------------------------------------------------------
def pipeline_classes() -> dict:
    """The four pipeline classes by name (built on first use)."""
    if not _classes:
        with _lock:
            if not _classes:
                _classes.update(_define())
    return _classes


def __getattr__(name: str):
    if name in _EXPORTS:
        return pipeline_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metadata_rows(values, *, prompts: int, per_prompt: int, num_metadata: int = 7, what: str = "metadata"):
    """A float32 tensor with one row per generated image from `values`: None (zeros), one
    row (or a flat vector) for all, one row per prompt (repeated per image), or one per image."""
    import torch

    total = prompts * per_prompt
    t = torch.zeros(1, num_metadata) if values is None else torch.as_tensor(values).to(torch.float32)
    if t.dim() == 1:
        t = t[None]
    if t.dim() not in (2, 3) or t.shape[1] != num_metadata:
        raise ValueError(f"{what} must hold {num_metadata} values per row, got shape {tuple(t.shape)}")
    if t.shape[0] == total:
        return t.clone()
    if t.shape[0] == 1:
        return t.expand(total, *t.shape[1:]).clone()
    if t.shape[0] == prompts:
        return t.repeat_interleave(per_prompt, dim=0)
    raise ValueError(f"{what} has {t.shape[0]} rows: give 1, one per prompt ({prompts}) or one per image ({total})")


def _for_batch(rows, batch: int):
    """Rows for a model batch: the rows, or [zeros, rows] under classifier-free guidance."""
    import torch

    if batch == rows.shape[0]:
        return rows
    if batch == 2 * rows.shape[0]:
        return torch.cat([torch.zeros_like(rows), rows])
    raise RuntimeError(f"model batch {batch} does not match {rows.shape[0]} metadata rows")


def _uses_metadata(model) -> bool:
    return getattr(model, "metadata_embedding", None) is not None


def _define() -> dict:
    import torch
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline,
                           StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)

    class _MetadataCall:
        """`__call__` with `metadata` / `cond_metadata`, injected by forward pre-hooks."""

        default_size: int | None = None  # px when height/width are not given (txt2img only)

        def __call__(self, *args, metadata=None, cond_metadata=None, **kwargs):
            stock_call = super().__call__
            signature = inspect.signature(stock_call)
            arguments = dict(signature.bind_partial(*args, **kwargs).arguments)
            var_kw = next((n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD), None)
            extra = arguments.pop(var_kw, {}) if var_kw else {}

            prompt = arguments.get("prompt")
            if isinstance(prompt, str) or (prompt is None and arguments.get("prompt_embeds") is None):
                prompts = 1
            elif prompt is not None:
                prompts = len(prompt)
            else:
                prompts = arguments["prompt_embeds"].shape[0]
            per_prompt = arguments.get("num_images_per_prompt") or 1
            if self.default_size:
                for key in ("height", "width"):
                    if key in signature.parameters and arguments.get(key) is None:
                        arguments[key] = self.default_size

            hooks = []
            try:
                hooks += self._metadata_hooks(metadata, cond_metadata, prompts, per_prompt)
                return stock_call(**arguments, **extra)
            finally:
                for handle in hooks:
                    handle.remove()

        def _metadata_hooks(self, metadata, cond_metadata, prompts, per_prompt) -> list:
            controlnet = getattr(self, "controlnet", None)
            handles = []
            if not _uses_metadata(self.unet):
                if metadata is not None and bool(torch.as_tensor(metadata).abs().sum() > 0):
                    raise ValueError("this pipeline's UNet has no metadata embedding: it cannot take metadata")
            else:
                n = self.unet.config.num_metadata
                rows = metadata_rows(metadata, prompts=prompts, per_prompt=per_prompt, num_metadata=n)
                handles.append(self.unet.register_forward_pre_hook(_injector({"metadata": rows}), with_kwargs=True,
                                                                    prepend=True))
            if controlnet is not None and _uses_metadata(controlnet):
                n = controlnet.config.num_metadata
                rows = metadata_rows(metadata, prompts=prompts, per_prompt=per_prompt, num_metadata=n)
                cond = metadata_rows(cond_metadata, prompts=prompts, per_prompt=per_prompt, num_metadata=n,
                                     what="cond_metadata")
                handles.append(controlnet.register_forward_pre_hook(
                    _injector({"metadata": rows, "cond_metadata": cond}), with_kwargs=True, prepend=True))
            elif cond_metadata is not None:
                raise ValueError("cond_metadata needs a ControlNet with a metadata embedding")
            return handles

    def _injector(values: dict):
        def hook(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            kwargs = dict(kwargs)
            for name, rows in values.items():
                if kwargs.get(name) is None:
                    kwargs[name] = _for_batch(rows, sample.shape[0]).to(sample.device)
            return args, kwargs
        return hook

    class DiffusionSatPipeline(_MetadataCall, StableDiffusionPipeline):
        """Text-to-image with DiffusionSat metadata; 512 px unless height/width are given."""

        default_size = DEFAULT_SIZE

    class DiffusionSatImg2ImgPipeline(_MetadataCall, StableDiffusionImg2ImgPipeline):
        """Image-to-image (SDEdit) with DiffusionSat metadata."""

    class DiffusionSatControlNetPipeline(_MetadataCall, StableDiffusionControlNetPipeline):
        """ControlNet generation from noise with the target's and the condition's metadata;
        the size defaults to the condition image's."""

    class DiffusionSatControlNetImg2ImgPipeline(_MetadataCall, StableDiffusionControlNetImg2ImgPipeline):
        """ControlNet image-to-image with the target's and the condition's metadata."""

    out = {}
    for cls in (DiffusionSatPipeline, DiffusionSatImg2ImgPipeline, DiffusionSatControlNetPipeline,
                DiffusionSatControlNetImg2ImgPipeline):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
        out[cls.__name__] = cls
    return out


# -- loading -------------------------------------------------------------------------------
def load_model_strict(cls, source: str, subfolder: str | None, dtype, what: str):
    """`cls.from_pretrained` that refuses any missing, unexpected or mis-shaped weight
    (nothing may be randomly initialised)."""
    where = f"{source!r}" + (f" (subfolder {subfolder})" if subfolder else "")
    folder = Path(source) / (subfolder or "")
    extra = {}
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        extra["use_safetensors"] = False  # DiffusionSat's zips hold .bin files: read them without a detour
    try:
        model, info = cls.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype,
                                          output_loading_info=True, **extra)
    except OSError as err:
        raise ModelNotAvailable(f"The {what} could not be read from {where}: {err}") from err
    except (ValueError, RuntimeError) as err:
        raise ModelLoadError(f"The {what} in {where} does not match DiffusionSat's layout: {err}") from err
    problems = {k: list(v) for k, v in info.items() if v}
    if problems:
        detail = "; ".join(f"{k}: {', '.join(map(str, v[:4]))}{' ...' if len(v) > 4 else ''}"
                           for k, v in problems.items())
        raise ModelLoadError(f"The {what} in {where} does not match DiffusionSat's weights ({detail}).")
    return model.eval()


def load_components(source: str, dtype) -> dict:
    """Text encoder, tokenizer, VAE and scheduler from a folder or hub id (SD 2.1 layout)."""
    import diffusers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
        config = diffusers.DDIMScheduler.load_config(source, subfolder="scheduler")
    except OSError as err:
        raise ModelNotAvailable(
            f"The text encoder, tokenizer, VAE and scheduler could not be read from {source!r}: {err}. "
            "Give a folder holding text_encoder/, tokenizer/, vae/, scheduler/ (SD 2.1's), or put the SD 2.1 "
            "base in the Hugging Face cache.") from err
    scheduler_cls = getattr(diffusers, str(config.get("_class_name", "DDIMScheduler")), None)
    if not isinstance(scheduler_cls, type) or not issubclass(scheduler_cls, diffusers.SchedulerMixin):
        raise ModelLoadError(f"Unknown scheduler {config.get('_class_name')!r} in {source!r}.")
    return {"tokenizer": tokenizer, "text_encoder": text_encoder.eval(), "vae": vae.eval(),
            "scheduler": scheduler_cls.from_config(config)}


def load_pipeline(source, *, device: str = "cpu", dtype=None, controlnet: bool = False,
                  components_base: str | None = SD21_HUB_ID, diffusionsat_base: str | None = None):
    """A DiffusionSatPipeline (DiffusionSatControlNetPipeline when the source has a
    ControlNet) from `source` (a folder, hub id or Layout) on `device` in `dtype` (a torch
    dtype or "fp16"/"bf16"/"fp32"; fp32 on CPU). `pipe.lab_sources` says where each part
    came from. ModelNotAvailable when files are missing, ModelLoadError when the weights do
    not match DiffusionSat's."""
    from core.backends.diffusionsat_models import sat_controlnet_class, sat_unet_class

    layout = source if isinstance(source, Layout) else resolve_source(
        source, controlnet=controlnet, components_base=components_base, diffusionsat_base=diffusionsat_base)
    dtype = torch_dtype(dtype, device)
    unet = load_model_strict(sat_unet_class(), layout.unet, layout.unet_subfolder, dtype, "DiffusionSat UNet")
    if not unet.config.use_metadata:
        raise ModelLoadError(f"The UNet in {layout.unet!r} has use_metadata=false: not a DiffusionSat UNet.")
    parts = load_components(layout.components, dtype)
    common = dict(unet=unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **parts)
    classes = pipeline_classes()
    if layout.controlnet:
        cn = load_model_strict(sat_controlnet_class(), layout.controlnet, None, dtype, "DiffusionSat ControlNet")
        pipe = classes["DiffusionSatControlNetPipeline"](controlnet=cn, **common)
    else:
        pipe = classes["DiffusionSatPipeline"](**common)
    pipe = pipe.to(device)
    pipe.lab_sources = layout.as_record()
    return pipe


def sibling_pipeline(pipe, mode: str):
    """The pipeline for `mode` ("txt2img" or "img2img") sharing every model of `pipe`."""
    has_controlnet = getattr(pipe, "controlnet", None) is not None
    name = {("txt2img", False): "DiffusionSatPipeline", ("img2img", False): "DiffusionSatImg2ImgPipeline",
            ("txt2img", True): "DiffusionSatControlNetPipeline",
            ("img2img", True): "DiffusionSatControlNetImg2ImgPipeline"}[(mode, has_controlnet)]
    cls = pipeline_classes()[name]
    if isinstance(pipe, cls):
        return pipe
    other = cls(**pipe.components, requires_safety_checker=False)
    other.lab_sources = getattr(pipe, "lab_sources", None)
    return other
