"""The generation capability: requests completed from a scene, generated on the one model
manager, saved as runs, with attention maps when asked; batches that skip what they made;
comparison grids. The app and the CLI both call this service."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass, replace

from core.errors import DataError, LabError
from core.types import GenerationRequest


def read_batch(path) -> list[dict]:
    """The requests of a JSONL batch file, one JSON object a line (blank lines skipped);
    LabError naming the first line that is not one."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabError(f"Cannot read the batch file {path}: {err}.") from err
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabError(f"{path}, line {number} is not JSON ({err.msg}): each line must be one request, "
                           'e.g. {"backbone": "sd21", "scene": "hurricane-matthew_00000066"}.') from None
        if not isinstance(fields, dict):
            raise LabError(f"{path}, line {number} is not a JSON object: each line must be one request.")
        lines.append(fields)
    return lines


def request_key(request: GenerationRequest) -> str:
    """A stable id of a request (16 hex digits), so a batch can skip what it already made."""
    text = json.dumps(dataclasses.asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class GenerationService:
    """Generates images for requests and keeps each as a run.

    backbones: a core.backends.catalog.Backbones; models: the process's ModelManager;
    runs: the RunStore; captions: the CaptionService (a scene's caption is its default
    prompt)."""

    def __init__(self, *, backbones, models, runs, captions) -> None:
        self.backbones = backbones
        self.models = models
        self.runs = runs
        self.captions = captions

    # -- requests -------------------------------------------------------------------------
    def default_prompt(self, index, scene_id: str | None) -> str:
        """The scene's post-event caption when one exists, else the course's img2img
        template from its disaster type."""
        kind = None
        if scene_id:
            scene = index.get(scene_id)
            caption = self.captions.scene_caption(scene, "post")
            if caption:
                return caption
            kind = index.scene_info(scene).disaster_type
        return f"A satellite image after being affected by {kind or 'a natural disaster'}"

    def request_from(self, fields: dict, index) -> GenerationRequest:
        """A request from plain fields (a CLI line or a batch line): the backbone's defaults
        fill what is missing, and the prompt defaults to the scene's caption or template."""
        known = {f.name for f in dataclasses.fields(GenerationRequest)}
        fields = {("scene_id" if k == "scene" else k): v for k, v in fields.items()}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise LabError(f"Unknown request field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        if "backbone" not in fields:
            raise LabError("Each request needs a backbone id.")
        spec = self.backbones.get(fields["backbone"]).spec
        merged = {**{k: v for k, v in spec.defaults.items() if k in known}, **fields}
        if not merged.get("prompt"):
            merged["prompt"] = self.default_prompt(index, merged.get("scene_id"))
        if isinstance(merged.get("metadata"), list):
            merged["metadata"] = tuple(merged["metadata"])
        return GenerationRequest(**merged)

    def complete_request(self, request: GenerationRequest, index) -> GenerationRequest:
        """Fill what the scene provides: DiffusionSat metadata from the labels when the
        request leaves it to the scene (None), and the condition tile's metadata."""
        from core.data.metadata import scene_metadata

        spec = self.backbones.get(request.backbone).spec
        if not spec.needs_metadata or request.scene_id is None:
            return request
        scene = index.get(request.scene_id)
        if request.metadata is None:
            request = replace(request, metadata=scene_metadata(index, scene, resolution=request.size))
        if spec.needs_control_image and "cond_metadata" not in request.options:
            cond = scene_metadata(index, scene, resolution=request.size, phase="pre")
            request = replace(request, options={**request.options, "cond_metadata": list(cond)})
        return request

    def metadata_info(self, request: GenerationRequest, index) -> dict:
        """What a DiffusionSat request was conditioned on, for its run record:
        {"metadata_info": {"normalised", "decoded", "source"}} and, for the ControlNet,
        "cond_metadata_info" likewise for the condition (pre-event) tile. `source` is
        "labels" (the scene's labels at the request size), "zeros" (no metadata) or
        "edited"."""
        from core.data.metadata import NO_METADATA, decode_metadata, scene_metadata

        scene = index.get(request.scene_id) if request.scene_id else None

        def info(vector, phase):
            vector = tuple(float(v) for v in vector)
            labels = scene_metadata(index, scene, resolution=request.size, phase=phase) if scene else None
            if vector == NO_METADATA:
                source = "zeros"
            elif labels is not None and all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(vector, labels)):
                source = "labels"
            else:
                source = "edited"
            decoded = decode_metadata(vector) if vector != NO_METADATA else None
            return {"normalised": list(vector), "decoded": decoded, "source": source}

        out = {"metadata_info": info(request.metadata, "post")}
        if "cond_metadata" in (request.options or {}):
            out["cond_metadata_info"] = info(request.options["cond_metadata"], "pre")
        return out

    def request_of_run(self, run) -> GenerationRequest:
        """The request that makes a generation run's image again: what was asked, with the
        run's own seed and one image."""
        asked = dict(run.record.get("params", {}).get("request") or {})
        if not asked:
            raise LabError(f"Run {run.run_id} has no request record (it was not made by a generation).")
        if asked.get("metadata") is not None:
            asked["metadata"] = tuple(asked["metadata"])
        return GenerationRequest(**{**asked, "seed": run.record["params"]["seed"], "num_images": 1})

    def _inputs(self, request: GenerationRequest, index):
        """(`request` completed from its scene, its pre-event tile or None); DataError when
        the backbone needs the tile and the scene has none."""
        from core.data.images import load_rgb

        backend = self.backbones.get(request.backbone)
        request = self.complete_request(request, index)
        scene = index.get(request.scene_id) if request.scene_id else None
        pre = load_rgb(scene.pre_image) if scene is not None and scene.pre_image is not None else None
        if (request.mode == "img2img" or backend.spec.needs_control_image) and pre is None:
            raise DataError("This generation starts from the pre-event tile: pick a scene that has one.")
        return request, pre

    def check(self, request: GenerationRequest, index) -> GenerationRequest:
        """`request` completed from its scene and checked by its backbone without loading a
        model: RequestError or DataError saying what to change. Returns the completed
        request."""
        backend = self.backbones.get(request.backbone)
        request, pre = self._inputs(request, index)
        backend.validate(request, init_image=pre if request.mode == "img2img" else None,
                         control_image=pre if backend.spec.needs_control_image else None)
        return request

    def can_record_attention(self, request: GenerationRequest) -> bool:
        """Whether word maps can be recorded for `request` (a backbone with cross- or joint
        attention, one image)."""
        return self.backbones.get(request.backbone).spec.attention in ("unet", "joint") and request.num_images == 1

    # -- generating -----------------------------------------------------------------------
    def generate(self, request: GenerationRequest, index, *, on_step=None, preview_every: int = 0,
                 cancel=None, extra_params: dict | None = None, attention: bool = False,
                 attention_steps: bool = False) -> list:
        """Generate for `request` on its scene's pre-event tile and save every image as a
        run. Returns the runs, one per image.

        attention: record DAAM word maps (backbones whose spec.attention is "unet" or "joint",
        one image per request) and save them in the run folder under attention/.
        attention_steps: also keep each step's maps (more memory), for the time slider."""
        from core.attention.recorders import recorder_for, word_maps_for
        from core.generation.generate import generate

        backend = self.backbones.get(request.backbone)
        request, pre = self._inputs(request, index)
        if attention and not self.can_record_attention(request):
            raise LabError("Attention maps are recorded for one image at a time "
                           f"({backend.spec.label} with {request.num_images} image(s) cannot): "
                           "set Images to 1 or turn recording off.")
        source = self.backbones.source(request.backbone)
        options = backend.load_kwargs(request)
        key = f"{request.backbone}@{source}" + "".join(f";{k}={v}" for k, v in sorted(options.items()))

        def load(device, dtype):
            return backend.load(source, device=device, dtype=dtype, **options)

        with self.models.use(key, load, spec_dtype=backend.spec.dtype) as pipe:
            recorder = recorder_for(pipe, backend.spec, backend.attention_cfg(request),
                                    keep_per_step=attention_steps) if attention else nullcontext()
            with recorder as rec:
                result = generate(request, backend=backend, pipe=pipe,
                                  init_image=pre if request.mode == "img2img" else None,
                                  control_image=pre if backend.spec.needs_control_image else None,
                                  on_step=on_step, preview_every=preview_every, cancel=cancel, source=source)
            maps = word_maps_for(rec, request.prompt, pipe, backend.spec) if attention else None
            steps = [word_maps_for(step, request.prompt, pipe, backend.spec, t5_dropped=rec.t5_dropped)
                     for step in rec.step_maps() if step is not None] if attention and attention_steps else None
        conditioning = self.metadata_info(request, index) if backend.spec.needs_metadata else {}
        runs = [self.runs.create(image, kind="generation", backbone=request.backbone, scene_id=request.scene_id,
                                 params={**result.record, "seed": seed, "attention": bool(maps), **conditioning,
                                         **(extra_params or {})},
                                 data_root=str(index.root))
                for image, seed in zip(result.images, result.seeds)]
        if maps:
            from core.attention.analysis import save_maps, save_scene_shares, save_step_maps

            save_maps(runs[0].path, maps)
            if steps:
                save_step_maps(runs[0].path, steps)
            # attention/shares.json: each word's share per damage class, when the scene has a post label
            save_scene_shares(runs[0].path, maps, index.get(request.scene_id) if request.scene_id else None)
        return runs

    def generate_batch(self, lines: list[dict], index, *, attention: bool = False, on_start=None,
                       on_step=None, shard=None) -> dict:
        """Generate every image of the requests in `lines` (plain fields, see
        `request_from`) that has no run yet, so a stopped batch resumes where it stopped:
        each image is saved as soon as it is made, and a rerun makes only the missing
        seeds of each request (image i keeps seed `seed + i`, as in one uninterrupted run;
        images are made one pipeline call each for that). `on_start(i, n, request)` is
        called before each image made. With `shard` (core.distributed.Shard), only this
        process's share of the batch's images is made (the shares of all processes cover
        every image once, whatever each finds done).

        Returns {"requests", "images", "written", "skipped", "resumed", "runs"}: images
        asked for (in this share), made now, already there; requests that were partly done
        before."""
        from core.generation.seeds import seeds_for

        requests = [self.request_from(line, index) for line in lines]  # every line checked before any work
        made: dict[str, set] = {}
        for run in self.runs.list():  # once, not once per request
            params = run.record.get("params", {})
            if params.get("request_key"):
                made.setdefault(params["request_key"], set()).add(params.get("seed"))
        plan = []
        for request in requests:
            key = request_key(request)
            plan.append((request, key, seeds_for(request), made.get(key, set())))
        images = [(request, key, seed) for request, key, seeds, _ in plan for seed in seeds]
        if shard is not None:
            images = shard.take(images)
        mine = {(key, seed) for _, key, seed in images}
        todo = [(request, key, seed) for request, key, seed in images if seed not in made.get(key, set())]
        written = []
        for i, (request, key, seed) in enumerate(todo, 1):
            if on_start is not None:
                on_start(i, len(todo), request)
            single = replace(request, seed=seed, num_images=1)
            runs = self.generate(single, index, on_step=on_step, extra_params={"request_key": key},
                                 attention=attention)
            written.extend(r.run_id for r in runs)
        partly = [(key, seeds, done) for _, key, seeds, done in plan
                  if 0 < len(done & set(seeds)) < len(seeds) and any((key, s) in mine for s in seeds)]
        return {"requests": len({key for _, key, _ in images}), "images": len(images), "written": len(written),
                "skipped": len(images) - len(todo), "resumed": len(partly), "runs": written}

    # -- comparing ------------------------------------------------------------------------
    def compare_cells(self, base: GenerationRequest, backbone_ids: list[str], sweep: str = "none",
                      values: str = "", index=None):
        """The cells of a comparison grid (core.generation.compare.plan_cells) for these
        backbones (rows) and swept values (columns). With `index`, every cell is checked
        first (`check`) and LabError lists those that cannot run, before any runs."""
        from core.generation.compare import plan_cells

        cells = plan_cells(base, [self.backbones.get(b).spec for b in backbone_ids], sweep, values)
        if index is not None:
            problems = []
            for cell in cells:
                try:
                    self.check(cell.request, index)
                except LabError as err:
                    problems.append(f"{cell.label}: {err}")
            if problems:
                raise LabError("Nothing was generated: these cells cannot run.\n" + "\n".join(problems))
        return cells

    def compare(self, cells, index, *, cancel=None, on_cell=None) -> list[CellResult]:
        """Generate every cell (each saved as a run tagged with its label), in order. A cell
        that fails (its model not on disk, out of memory) is kept as a failed cell and the
        others go on; `cancel` (a CancelToken) stops at the current step and leaves the
        remaining cells undone. `on_cell(i, n, cell)` is called before each."""
        from core.errors import GenerationCancelled

        results = []
        for i, cell in enumerate(cells):
            if cancel is not None and cancel.cancelled:
                results.append(CellResult(cell, None, "stopped"))
                continue
            if on_cell is not None:
                on_cell(i, len(cells), cell)
            try:
                run = self.generate(cell.request, index, cancel=cancel, extra_params={"compare": cell.label})[0]
            except GenerationCancelled:
                results.append(CellResult(cell, None, "stopped"))
            except LabError as err:
                results.append(CellResult(cell, None, str(err)))
            else:
                results.append(CellResult(cell, run, ""))
        return results


@dataclass(frozen=True)
class CellResult:
    """A generated grid cell: its run, or None and why ("stopped" or the error)."""

    cell: object
    run: object
    error: str


__all__ = ["CellResult", "GenerationService", "read_batch", "request_key"]
