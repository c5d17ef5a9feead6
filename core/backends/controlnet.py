"""ControlNet on SD 2.1, fine-tuned by the user on xBD pre/post pairs: the pre-event tile
is the condition image, the post-event tile the target.

No such ControlNet is published: the user trains one (core.training: the Train tab or
`python -m core train controlnet`, whose output folder loads here unchanged; or diffusers'
example script `examples/controlnet/train_controlnet.py` on the pairs `python -m core train
export` writes) and points this backbone at the output folder.

Folder layouts accepted by `load` (first match wins):
1. the folder itself holds the ControlNet (`config.json` + weights), which is what
   train_controlnet.py writes at the end of training;
2. `<folder>/controlnet/` (a saved StableDiffusionControlNetPipeline, or a copy);
3. the newest `<folder>/checkpoint-<step>/controlnet/` (a training run stopped early).

The base model the ControlNet was trained on (first match wins):
1. `request.options["base"]` (a hub id or a folder), passed to `load(..., base=...)` by
   `load_kwargs(request)`, so a model manager keys its cache by it;
2. a `base_model.txt` file in the folder (else in the ControlNet's own folder): its first
   line that is neither empty nor a `#` comment, a hub id or a folder (relative paths are
   relative to the folder holding the file);
3. the folder itself when it is a whole pipeline folder (has `model_index.json`);
4. `stabilityai/stable-diffusion-2-1` (the attribute `default_base` of the backend, which
   the application may change from its settings).
Hub ids are read from the local Hugging Face cache only (use `sources.download` first).

Generation: with strength 1 (the default) the image starts from noise and is guided by the
condition image only, as the ControlNet was trained (StableDiffusionControlNetPipeline).
With strength < 1 it starts from the pre-event tile noised to that strength (SDEdit) and
is also guided by it (StableDiffusionControlNetImg2ImgPipeline). The condition image is
fed in [0, 1] (diffusers' ControlNet image processor, no normalisation), matching the xBD
training recipe. Prompts past 75 CLIP tokens are encoded by 75-token windows.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from core.backends.common import (CONTROL_SCALE, GUIDANCE, NEGATIVE_PROMPT, SD21_HUB_ID, STEPS, STRENGTH,
                                  UNET_SCHEDULERS, BackendSpec, ClipWindowPrompts, DiffusersBackend, LoadedPipeline, hub_kwargs,
                                  image_at_size, pipeline_for, register, scheduler_control, set_scheduler,
                                  step_callback_kwargs, torch_dtype, validate_common)
from core.errors import ModelLoadError, ModelNotAvailable, RequestError

DEFAULT_BASE = SD21_HUB_ID
BASE_HINT_FILE = "base_model.txt"
SDEDIT = "sdedit"  # key of the img2img (SDEdit + ControlNet) pipeline in LoadedPipeline.pipes

HOW_TO_GET_ONE = (
    "No xBD ControlNet is published: train one in the Train tab or with python -m core train controlnet "
    "(or with diffusers' examples/controlnet/train_controlnet.py on the pairs python -m core train export "
    f"writes, --pretrained_model_name_or_path {DEFAULT_BASE}) and give its output folder (the folder holding "
    "config.json and diffusion_pytorch_model.safetensors, or controlnet/, or checkpoint-<step>/controlnet/)."
)

NOTES = (
    "A ControlNet you trained on xBD pairs (pre-event tile as condition, post-event tile as target) on top of "
    "SD 2.1. Give its folder; the base model comes from options['base'], else a base_model.txt in the folder, "
    f"else {DEFAULT_BASE}. Strength 1 generates from noise guided by the pre-event tile (as trained); strength "
    "< 1 also starts from the noised tile (SDEdit). The condition image is fed in [0, 1]. " + HOW_TO_GET_ONE
)


# -- finding the ControlNet and its base ---------------------------------------------------
def _read_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _is_controlnet_folder(folder: Path) -> bool:
    config = _read_config(folder)
    if config is None or "ControlNet" not in str(config.get("_class_name", "")):
        return False
    if config.get("use_metadata"):
        raise ModelNotAvailable(
            f"{folder} holds a DiffusionSat ControlNet (metadata-conditioned): use the diffusionsat-controlnet "
            "backbone for it.")
    return any(p.is_file() and p.name.endswith((".safetensors", ".bin")) for p in folder.iterdir())


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def find_controlnet(folder: str | Path) -> Path:
    """The folder holding the ControlNet's config and weights inside `folder` (layouts in
    the module docstring); ModelNotAvailable saying how to get one otherwise."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNotAvailable(f"The ControlNet folder {folder} does not exist. {HOW_TO_GET_ONE}")
    candidates = [folder, folder / "controlnet"]
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if _checkpoint_step(p) >= 0),
                         key=_checkpoint_step, reverse=True)
    candidates += [c / "controlnet" for c in checkpoints]
    for candidate in candidates:
        if candidate.is_dir() and _is_controlnet_folder(candidate):
            return candidate
    raise ModelNotAvailable(
        f"{folder} holds no ControlNet (looked for a config.json of a ControlNet with its weights in the folder, "
        f"in controlnet/ and in checkpoint-<step>/controlnet/). {HOW_TO_GET_ONE}")


def base_hint(folder: str | Path) -> str | None:
    """The base model named by `base_model.txt` in `folder`: a hub id (`org/name`, when no
    such folder exists) or an absolute folder path (relative ones resolved against
    `folder`); None when there is no such file or it names nothing."""
    folder = Path(folder).expanduser()
    hint = folder / BASE_HINT_FILE
    if not hint.is_file():
        return None
    lines = [ln.strip() for ln in hint.read_text(encoding="utf-8").splitlines()]
    value = next((ln for ln in lines if ln and not ln.startswith("#")), None)
    if value is None:
        return None
    local = folder / Path(value).expanduser()  # an absolute value stays as it is
    if local.is_dir() or not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+(@\S+)?", value):
        return str(local.resolve())  # a folder (a missing one is reported where it was looked for)
    return value  # a hub id, org/name[@revision]


def resolve_base(folder: str | Path | None, base: str | Path | None = None,
                 default: str | None = DEFAULT_BASE) -> str | None:
    """The base model for the ControlNet in `folder` (order in the module docstring);
    `default` when nothing names one."""
    if base is not None and str(base).strip():
        return str(base).strip()
    if folder is not None:
        folder = Path(folder).expanduser()
        hinted = base_hint(folder)
        if hinted:
            return hinted
        if (folder / "model_index.json").is_file():
            return str(folder)
    return default


# -- the backend --------------------------------------------------------------------------
class ControlNetBackend(ClipWindowPrompts, DiffusersBackend):
    """A user-trained ControlNet on an SD 2.1 base, conditioned on the pre-event tile."""

    default_scheduler_class = "DDIMScheduler"
    has_safety_checker_slot = True
    schedulers = UNET_SCHEDULERS
    options = ("base",)

    def __init__(self, spec: BackendSpec | None = None, *, default_base: str = DEFAULT_BASE) -> None:
        super().__init__(spec)
        self.default_base = default_base

    def with_models_dir(self, models_dir) -> "ControlNetBackend":
        """A copy whose default base is `models_dir/sd21/` when that folder exists."""
        if models_dir is None or not (Path(models_dir).expanduser() / "sd21").is_dir():
            return self
        clone = copy.copy(self)
        clone.default_base = str(Path(models_dir).expanduser() / "sd21")
        return clone

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="controlnet",
            label="ControlNet (fine-tuned, on SD 2.1)",
            hub_id=None,
            modes=("img2img",),
            dtype="fp16",
            vram_gb=5.0,
            needs_control_image=True,
            attention="unet",
            defaults={"mode": "img2img", "steps": 20, "guidance": 7.5, "strength": 1.0, "size": 512,
                      "control_scale": 1.0, "scheduler": "ddim"},
            controls=(STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT, CONTROL_SCALE, scheduler_control()),
            tokenizers=("clip",),
            notes=NOTES,
        )

    # -- validation ---------------------------------------------------------------------
    def validate(self, request, *, init_image=None, control_image=None) -> None:
        """RequestError when this backbone cannot run `request`: the checks every diffusers
        backbone makes, plus a condition image (the control image, else the pre-event
        tile), a control scale of 0 or more, and a text `base` option."""
        validate_common(self.spec, request, init_image=init_image, control_image=None,
                        size_multiple=self.size_multiple, schedulers=self.schedulers, options=self.options)
        if control_image is None and init_image is None:
            raise RequestError(f"{self.spec.label} needs the pre-event tile as its condition image: pick a scene.")
        scale = float(request.control_scale)
        if not scale >= 0:
            raise RequestError(f"The ControlNet scale must be 0 or more (got {scale:g}); 1 is the trained strength.")
        base = (request.options or {}).get("base")
        if base is not None and not isinstance(base, (str, Path)):
            raise RequestError(f"options['base'] must be a hub id or a folder (got {type(base).__name__}).")

    # -- loading ------------------------------------------------------------------------
    def readiness(self, source):
        """Ready when the folder holds a ControlNet in one of the accepted layouts and its
        base model is on disk (the generic check would want a whole pipeline folder)."""
        from core.backends.sources import Readiness, as_source, readiness

        src = as_source(source)
        if src.kind != "folder":
            return readiness(self.spec, src)
        try:
            controlnet_dir = find_controlnet(src.path_or_id)
            base = resolve_base(src.path_or_id, None, None) or resolve_base(controlnet_dir, None, self.default_base)
            _base_ready(self.spec, as_source(base))
        except ModelNotAvailable as err:
            return Readiness(False, str(src), None, str(err))
        return Readiness(True, str(controlnet_dir), None)

    def load_kwargs(self, request) -> dict:
        base = (request.options or {}).get("base")
        return {"base": str(base)} if base else {}

    def load(self, source: Any, *, device: str = "cpu", dtype: Any = None, base: str | None = None,
             **load_options) -> LoadedPipeline:
        """The ControlNet from `source` (a local folder, or a hub id already in the cache)
        on its base SD 2.1 pipeline, on `device` in `dtype` (fp32 on CPU).

        Raises ModelNotAvailable when the ControlNet or the base is not on disk (saying how
        to get it), ModelLoadError when they cannot be loaded or do not fit each other."""
        from core.backends.sources import as_source, require_ready

        if source is None or not str(source).strip():
            raise ModelNotAvailable(f"{self.spec.label} needs the folder of your trained ControlNet. {HOW_TO_GET_ONE}")
        src = as_source(source)
        dt = torch_dtype(dtype, device)
        if src.kind == "folder":
            controlnet_dir = find_controlnet(src.path_or_id)
            base_id = resolve_base(src.path_or_id, base, None) or resolve_base(controlnet_dir, None, self.default_base)
            cn_args: tuple = (str(controlnet_dir),)
            cn_kwargs: dict[str, Any] = {}
        else:
            state = require_ready(self.spec, src)
            sub = Path(state.where) / "controlnet"
            controlnet_dir = Path(state.where)
            cn_args = (src.path_or_id,)
            cn_kwargs = hub_kwargs(src)
            if not _is_controlnet_folder(controlnet_dir) and _is_controlnet_folder(sub):
                cn_kwargs["subfolder"] = "controlnet"
                controlnet_dir = sub
            base_id = resolve_base(state.where, base, self.default_base)

        base_src = as_source(base_id)
        base_state = _base_ready(self.spec, base_src)
        from diffusers import (ControlNetModel, StableDiffusionControlNetImg2ImgPipeline,
                               StableDiffusionControlNetPipeline)

        try:
            controlnet = ControlNetModel.from_pretrained(*cn_args, torch_dtype=dt, **cn_kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ModelLoadError(f"Could not load the ControlNet from {controlnet_dir}: {err}") from err
        kwargs: dict[str, Any] = {"torch_dtype": dt, "controlnet": controlnet, **self.from_pretrained_kwargs(),
                                  **hub_kwargs(base_src)}
        try:
            pipe = StableDiffusionControlNetPipeline.from_pretrained(base_src.path_or_id, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ModelLoadError(f"Could not load the base model {base_src} of {self.spec.label}: {err}") from err
        check_fit(controlnet, pipe.unet, base_src)
        self.configure(pipe)
        pipe.to(device)
        sdedit = StableDiffusionControlNetImg2ImgPipeline.from_pipe(pipe)
        for p in (pipe, sdedit):
            p.set_progress_bar_config(disable=True)
        return LoadedPipeline(
            backbone=self.spec.id, source=src, pipes={"img2img": pipe, SDEDIT: sdedit},
            device_name=str(device), dtype_name=str(dt).replace("torch.", ""),
            load_options={"base": str(base_src)},
            snapshot=str(controlnet_dir), default_scheduler=pipe.scheduler,
        )

    # -- running ------------------------------------------------------------------------
    def pipeline_used(self, pipe, request):
        """The ControlNet pipeline at strength 1; below 1, its img2img (SDEdit) sibling."""
        p = pipeline_for(pipe, request.mode)
        if float(request.strength) >= 1.0:
            return p
        if isinstance(pipe, LoadedPipeline):
            return pipe.pipes[SDEDIT]
        from diffusers import StableDiffusionControlNetImg2ImgPipeline

        return StableDiffusionControlNetImg2ImgPipeline.from_pipe(p)

    def run(self, pipe, request, *, init_image=None, control_image=None, generators: list,
            callback=None) -> list:
        """PIL images for `request`, one per generator. The condition image is
        `control_image`, else `init_image` (the pre-event tile)."""
        self.validate(request, init_image=init_image, control_image=control_image)
        if not generators:
            raise RequestError("No generators given: one per image is needed.")
        size = int(request.size)
        condition = image_at_size(control_image if control_image is not None else init_image, size)
        sdedit = float(request.strength) < 1.0
        p = self.pipeline_used(pipe, request)
        set_scheduler(pipe, p, request.scheduler)
        kwargs: dict[str, Any] = dict(
            num_inference_steps=int(request.steps),
            guidance_scale=float(request.guidance),
            controlnet_conditioning_scale=float(request.control_scale),
            generator=list(generators),
            num_images_per_prompt=len(generators),
            height=size, width=size,
            output_type="pil",
            **self.prompt_kwargs(p, request, p._execution_device),
        )
        if sdedit:
            kwargs.update(image=image_at_size(init_image, size), control_image=condition,
                          strength=float(request.strength))
        else:
            kwargs.update(image=condition)
        kwargs.update(step_callback_kwargs(callback))
        import torch

        with torch.inference_mode():
            return list(p(**kwargs).images)


def check_fit(controlnet, unet, base) -> None:
    """ModelLoadError when the ControlNet was not made for the base UNet (different text
    embedding size or block widths), which would otherwise fail at the first step."""
    cn, un = controlnet.config, unet.config
    for key in ("cross_attention_dim", "block_out_channels"):
        a, b = getattr(cn, key, None), getattr(un, key, None)
        if a is not None and b is not None and list(_as_list(a)) != list(_as_list(b)):
            raise ModelLoadError(
                f"The ControlNet does not fit the base model {base}: its {key} is {a}, the base UNet's is {b}. "
                f"Name the base it was trained on in {BASE_HINT_FILE} in the ControlNet folder, or in "
                "options['base'].")


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def _base_ready(spec: BackendSpec, base_src):
    from core.backends.sources import readiness

    state = readiness(spec, base_src)
    if not state.ready:
        raise ModelNotAvailable(f"{spec.label}: the base model is not available. {state.missing}")
    return state


CONTROLNET = register(ControlNetBackend())
