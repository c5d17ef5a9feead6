"""The services the app and the CLI share: the open dataset, the run store, the scorer,
the model manager and the generation path.

One `Lab` is built from `Settings` at an entry point. It caches the dataset index per
folder, builds LPIPS once on first use, and owns the one ModelManager of the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import Settings
from core.errors import DataError, LabError, RunError
from core.types import GenerationRequest, MetricSettings, Scene, Scores


@dataclass(frozen=True)
class LeaderboardRow:
    """Mean scores of one backbone over its runs (PSNR over finite values only)."""

    backbone: str
    runs: int
    scenes: int
    mse: float | None
    psnr: float | None
    psnr_infinite: int
    ssim: float | None
    lpips: float | None
    baseline_psnr: float | None  # persistence baseline on the same scenes
    baseline_ssim: float | None


class Lab:
    """Shared state of one app or CLI process. Safe to use from several threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._indexes: dict[Path, object] = {}
        self._lock = threading.Lock()
        self._lpips = None
        self._models = None
        self._tokenizer_cache: dict[str, dict] = {}
        self._captions = None

    # -- data ---------------------------------------------------------------------------
    def dataset(self, data_dir: Path | str | None = None, *, refresh: bool = False):
        """The index of `data_dir` (default: the configured data folder), cached per folder."""
        from core.data.index import index_dataset

        root = Path(data_dir or self.settings.data_dir).expanduser().resolve()
        with self._lock:
            if refresh or root not in self._indexes:
                self._indexes[root] = index_dataset(root, cache_dir=self.settings.cache_dir)
            return self._indexes[root]

    def allowed_roots(self) -> list[Path]:
        """Folders whose files the web app may serve: opened datasets and the work folder."""
        roots = {Path(self.settings.data_dir).resolve(), Path(self.settings.work_dir).resolve()}
        roots.add(Path(self.settings.runs).resolve())
        with self._lock:
            roots.update(self._indexes)
        return sorted(roots)

    # -- captions -------------------------------------------------------------------------
    @property
    def captions(self):
        """The caption store (`<work_dir>/captions.sqlite`), shared by every user of the app."""
        from core.captions.store import CaptionStore

        with self._lock:
            if self._captions is None:
                self._captions = CaptionStore(Path(self.settings.work_dir) / "captions.sqlite")
            return self._captions

    def caption_scenes(self, index, scenes, captioner_id: str, *, phases=("pre", "post"),
                       summarise_for: str | None = None, progress=None, cancel=None):
        """Machine-caption the scenes' tiles into the store (resuming: tiles this captioner
        already did are skipped). With `summarise_for` (a backbone id), T5 summaries are
        shortened until that backbone's CLIP tokenizer counts at most 77 tokens.
        Returns the batch report."""
        from core.captions.batch import caption_scenes
        from core.captions.captioners import get_captioner

        captioner = get_captioner(captioner_id)
        summariser = clip_tokenizer = None
        if summarise_for:
            from core.captions.t5 import T5Summariser

            tokenizers = self._tokenizers(summarise_for)
            if not tokenizers or "clip" not in tokenizers:
                raise LabError(f"To fit summaries to 77 CLIP tokens, {summarise_for}'s tokenizer must be on "
                               "disk: download that backbone first, or summarise for another one.")
            clip_tokenizer = tokenizers["clip"]
            t5_folder = Path(self.settings.models_dir or "") / "t5"
            summariser = T5Summariser(str(t5_folder) if self.settings.models_dir and t5_folder.is_dir()
                                      else "google-t5/t5-large", manager=self.models)
        return caption_scenes(index, scenes, captioner, store=self.captions, phases=tuple(phases),
                              summariser=summariser, clip_tokenizer=clip_tokenizer, manager=self.models,
                              progress=progress, cancel=cancel)

    def scene_caption(self, scene: Scene, phase: str = "post") -> str | None:
        """The current caption of one of the scene's images, or None."""
        path = scene.image(phase)
        record = self.captions.get(path.name) if path is not None else None
        return record.text if record is not None and record.text else None

    # -- runs ---------------------------------------------------------------------------
    @property
    def runs(self):
        """The run store under the configured runs folder."""
        from core.runs.store import RunStore

        return RunStore(Path(self.settings.runs))

    def write_baseline(self, index, scene: Scene):
        """A persistence-baseline run for `scene`: the prediction is the pre-event tile."""
        from core.data.images import load_rgb

        if scene.pre_image is None:
            raise DataError(f"Scene {scene.scene_id} has no pre-event image, so it has no baseline.")
        return self.runs.create(
            load_rgb(scene.pre_image),
            kind="baseline",
            backbone="baseline",
            scene_id=scene.scene_id,
            params={"method": "persistence (prediction := pre-event tile)"},
            data_root=str(index.root),
        )

    def write_baselines(self, index, scenes: Iterable[Scene] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> list:
        """Baseline runs for every scene (or `scenes`) that has a pre and a post image
        and no baseline run yet. Returns the runs written."""
        have = {r.record.get("scene_id") for r in self.runs.list(backbone="baseline")}
        todo = [s for s in (scenes if scenes is not None else index.scenes)
                if s.pre_image and s.post_image and s.scene_id not in have]
        written = []
        for i, scene in enumerate(todo):
            written.append(self.write_baseline(index, scene))
            if progress:
                progress(i + 1, len(todo))
        return written

    def write_upload(self, image: np.ndarray, scene_id: str | None, name: str, index=None):
        """A run holding an image the user uploaded, to score it like a generation."""
        return self.runs.create(
            image, kind="upload", backbone="upload", scene_id=scene_id,
            params={"file": name}, data_root=str(index.root) if index is not None else None,
        )

    # -- models and generation ----------------------------------------------------------
    @property
    def models(self):
        """The process's one ModelManager (built on first use; torch loads later still)."""
        from core.models.manager import ModelManager

        with self._lock:
            if self._models is None:
                s = self.settings
                self._models = ModelManager(ram_budget_gb=s.ram_budget_gb, offload=s.offload,
                                            attention_slicing=s.attention_slicing, vae_tiling=s.vae_tiling)
            return self._models

    def backbones(self) -> list:
        """Specs of the backbones the user may pick (tiny test ones only when enabled)."""
        from core import backends

        if self.settings.test_backbones:
            import core.backends.tiny  # noqa: F401  (registers the tiny test backbones)
        return backends.available(include_test_only=self.settings.test_backbones)

    def backend(self, backbone_id: str):
        """The registered backend `backbone_id` (tiny test ones only when enabled)."""
        from core import backends

        self.backbones()
        return backends.get(backbone_id)

    def source(self, backbone_id: str):
        """Where `backbone_id` loads from: a folder under models_dir, else its hub id."""
        from core.backends.sources import resolve_source

        return resolve_source(self.backend(backbone_id).spec, models_dir=self.settings.models_dir)

    def readiness(self, backbone_id: str):
        """Whether a backbone can load without the network, without downloading anything."""
        from core.backends.sources import readiness

        backend = self.backend(backbone_id)
        own = getattr(backend, "readiness", None)
        source = self.source(backbone_id)
        return own(source) if own is not None else readiness(backend.spec, source)

    def token_report(self, backbone_id: str, prompt: str, negative: str = "") -> dict | None:
        """Token counts per text encoder of `backbone_id` (see prompts.token_report), using
        only its tokenizers; None when its files are not on disk yet."""
        from types import SimpleNamespace

        from core.generation.prompts import TOKENIZER_ATTRIBUTES, token_report

        spec = self.backend(backbone_id).spec
        tokenizers = self._tokenizers(backbone_id)
        if tokenizers is None:
            return None
        holder = SimpleNamespace(**{TOKENIZER_ATTRIBUTES[n]: t for n, t in tokenizers.items()})
        return token_report(holder, spec.tokenizers, prompt, negative, chunked="t5" not in spec.tokenizers)

    def _tokenizers(self, backbone_id: str) -> dict | None:
        """The backbone's tokenizers by encoder name, loaded once from its folder or cache."""
        from core.generation.prompts import TOKENIZER_ATTRIBUTES

        cache = self._tokenizer_cache
        if backbone_id not in cache:
            state = self.readiness(backbone_id)
            if not state.ready:
                return None
            from transformers import AutoTokenizer

            root = Path(state.where)
            cache[backbone_id] = {
                name: AutoTokenizer.from_pretrained(root / TOKENIZER_ATTRIBUTES[name])
                for name in self.backend(backbone_id).spec.tokenizers
                if (root / TOKENIZER_ATTRIBUTES[name]).is_dir()}
        return cache[backbone_id]

    def complete_request(self, request: GenerationRequest, index) -> GenerationRequest:
        """Fill what the scene provides: DiffusionSat metadata from the labels when the
        request leaves it to the scene (None), and the condition tile's metadata."""
        from dataclasses import replace

        from core.data.metadata import scene_metadata

        spec = self.backend(request.backbone).spec
        if not spec.needs_metadata or request.scene_id is None:
            return request
        scene = index.get(request.scene_id)
        if request.metadata is None:
            request = replace(request, metadata=scene_metadata(index, scene, resolution=request.size))
        if spec.needs_control_image and "cond_metadata" not in request.options:
            cond = scene_metadata(index, scene, resolution=request.size, phase="pre")
            request = replace(request, options={**request.options, "cond_metadata": list(cond)})
        return request

    def default_prompt(self, index, scene_id: str | None) -> str:
        """The scene's post-event caption when one exists, else the course's img2img
        template from its disaster type."""
        kind = None
        if scene_id:
            scene = index.get(scene_id)
            caption = self.scene_caption(scene, "post")
            if caption:
                return caption
            kind = index.scene_info(scene).disaster_type
        return f"A satellite image after being affected by {kind or 'a natural disaster'}"

    def request_from(self, fields: dict, index) -> GenerationRequest:
        """A request from plain fields (a CLI line or a batch line): the backbone's defaults
        fill what is missing, and the prompt defaults to the scene's template."""
        from dataclasses import fields as dc_fields


        known = {f.name for f in dc_fields(GenerationRequest)}
        fields = {("scene_id" if k == "scene" else k): v for k, v in fields.items()}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise LabError(f"Unknown request field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        if "backbone" not in fields:
            raise LabError("Each request needs a backbone id.")
        spec = self.backend(fields["backbone"]).spec
        merged = {**{k: v for k, v in spec.defaults.items() if k in known}, **fields}
        if not merged.get("prompt"):
            merged["prompt"] = self.default_prompt(index, merged.get("scene_id"))
        if isinstance(merged.get("metadata"), list):
            merged["metadata"] = tuple(merged["metadata"])
        return GenerationRequest(**merged)

    def runs_with_request(self, key: str) -> list:
        """Runs made for the request with this key (see cli.request_key)."""
        return [r for r in self.runs.list() if r.record.get("params", {}).get("request_key") == key]

    def generate(self, request: GenerationRequest, index, *, on_step=None, preview_every: int = 0,
                 cancel=None, extra_params: dict | None = None, attention: bool = False,
                 attention_steps: bool = False) -> list:
        """Generate for `request` on its scene's pre-event tile and save every image as a
        run. Returns the runs, one per image.

        attention: record DAAM word maps (backbones whose spec.attention is "unet" or "joint",
        one image per request) and save them in the run folder under attention/.
        attention_steps: also keep each step's maps (more memory), for the time slider."""
        from core.data.images import load_rgb
        from core.generation.generate import generate

        backend = self.backend(request.backbone)
        request = self.complete_request(request, index)
        scene = index.get(request.scene_id) if request.scene_id else None
        pre = load_rgb(scene.pre_image) if scene is not None and scene.pre_image is not None else None
        needs_tile = request.mode == "img2img" or backend.spec.needs_control_image
        if needs_tile and pre is None:
            raise DataError("This generation starts from the pre-event tile: pick a scene that has one.")
        source = self.source(request.backbone)
        options = backend.load_kwargs(request) if hasattr(backend, "load_kwargs") else {}
        key = f"{request.backbone}@{source}" + "".join(f";{k}={v}" for k, v in sorted(options.items()))

        def load(device, dtype):
            return backend.load(source, device=device, dtype=dtype, **options)

        if attention and not self.can_record_attention(request):
            raise LabError("Attention maps are recorded for one image at a time "
                           f"({backend.spec.label} with {request.num_images} image(s) cannot): "
                           "set Images to 1 or turn recording off.")
        with self.models.use(key, load, spec_dtype=backend.spec.dtype) as pipe:
            recorder = _attention_recorder(pipe, backend.spec, backend.attention_cfg(request),
                                           keep_per_step=attention_steps) if attention else nullcontext()
            with recorder as rec:
                result = generate(request, backend=backend, pipe=pipe,
                                  init_image=pre if request.mode == "img2img" else None,
                                  control_image=pre if backend.spec.needs_control_image else None,
                                  on_step=on_step, preview_every=preview_every, cancel=cancel, source=source)
            maps = _word_maps(rec, request.prompt, pipe, backend.spec) if attention else None
            steps = [_word_maps(step, request.prompt, pipe, backend.spec, t5_dropped=getattr(rec, "t5_dropped", None))
                     for step in rec.step_maps() if step is not None] if attention and attention_steps else None
        runs = [self.runs.create(image, kind="generation", backbone=request.backbone,
                                 scene_id=request.scene_id,
                                 params={**result.record, "seed": seed, "attention": bool(maps),
                                         **(extra_params or {})},
                                 data_root=str(index.root))
                for image, seed in zip(result.images, result.seeds)]
        if maps:
            from core.attention.analysis import save_maps, save_step_maps

            save_maps(runs[0].path, maps)
            if steps:
                save_step_maps(runs[0].path, steps)
        return runs

    def can_record_attention(self, request: GenerationRequest) -> bool:
        """Whether word maps can be recorded for `request` (a backbone with cross- or joint
        attention, one image)."""
        return self.backend(request.backbone).spec.attention in ("unet", "joint") and request.num_images == 1

    # -- scoring ------------------------------------------------------------------------
    def lpips(self):
        """The shared LPIPS scorer, built on first use (never per image)."""
        from core.metrics.lpips_model import LpipsScorer

        with self._lock:
            if self._lpips is None:
                self._lpips = LpipsScorer(random_backbone=self.settings.lpips_random_backbone)
            return self._lpips

    def scorer(self, metric_settings: MetricSettings):
        """A scorer with `metric_settings` that shares this Lab's LPIPS network."""
        from core.metrics.scoring import Scorer

        return Scorer(metric_settings, lpips=self.lpips())

    def score_images(self, pred: np.ndarray, target: np.ndarray, *, metric_settings: MetricSettings,
                     label_path: Path | None = None, part: int | None = None) -> Scores:
        """Scores of `pred` against `target`; per damage class when a post label is given."""
        masks = None
        if label_path is not None:
            from core.data.labels import load_label
            from core.data.masks import class_masks

            size = metric_settings.size
            wh = (size, size) if size else (pred.shape[1], pred.shape[0])
            masks = class_masks(load_label(label_path), wh, part=part)
        return self.scorer(metric_settings).score(pred, target, masks)

    def score_run(self, run, index, metric_settings: MetricSettings) -> Scores:
        """Score a run against its scene's real post-event tile and save the scores in it."""
        from core.data.images import load_rgb

        scene = self.scene_of(run, index)
        if scene.post_image is None:
            raise DataError(f"Scene {scene.scene_id} has no post-event image to score against.")
        scores = self.score_images(run.image(), load_rgb(scene.post_image),
                                   metric_settings=metric_settings,
                                   label_path=scene.post_label, part=scene.part)
        run.save_scores(scores)
        return scores

    def scene_of(self, run, index) -> Scene:
        """The scene of `index` a run was made for; a clear error if the run has none."""
        scene_id = run.record.get("scene_id")
        if not scene_id:
            raise RunError(f"Run {run.run_id} is not tied to a scene; pick a scene to score it against.")
        return index.get(scene_id)

    def leaderboard(self, index, metric_settings: MetricSettings,
                    progress: Callable[[int, int], None] | None = None) -> list[LeaderboardRow]:
        """Mean scores per backbone over every run of `index`'s scenes, scoring runs that
        have no scores under `metric_settings` yet. The persistence baseline comes first."""
        from core.metrics.scoring import scores_to_dict

        known = {s.scene_id for s in index.scenes}
        runs = [r for r in self.runs.list() if r.record.get("scene_id") in known]
        per_backbone: dict[str, list[tuple[str, dict]]] = {}
        wanted = self.scorer(metric_settings).settings_dict()
        for i, run in enumerate(runs):
            entry = run.latest_scores(wanted)
            if entry is None:
                entry = scores_to_dict(self.score_run(run, index, metric_settings))
            per_backbone.setdefault(run.record["backbone"], []).append((run.record["scene_id"], entry))
            if progress:
                progress(i + 1, len(runs))
        baseline = dict(per_backbone.get("baseline", []))
        order = sorted(per_backbone, key=lambda b: (b != "baseline", b))
        return [_row(b, per_backbone[b], baseline) for b in order]


def _attention_recorder(pipe, spec, cfg, *, keep_per_step: bool = False):
    """A recorder for the backbone's kind of text attention: UNet cross-attention or SD3's
    joint attention."""
    if spec.attention == "joint":
        from core.attention.joint import record_joint_attention

        return record_joint_attention(pipe, cfg=cfg, keep_per_step=keep_per_step)
    from core.attention.record import record_attention

    return record_attention(pipe, cfg=cfg, keep_per_step=keep_per_step)


def _word_maps(raw, prompt: str, pipe, spec, *, t5_dropped: bool | None = None) -> dict:
    """{word: WordMap} from a recorder or one step's raw maps (`t5_dropped` for the latter)."""
    if spec.attention == "joint":
        from core.attention.joint import sd3_word_maps

        t5 = None if t5_dropped else getattr(pipe, "tokenizer_3", None)
        return sd3_word_maps(raw, prompt, pipe.tokenizer, t5)
    from core.attention.analysis import word_maps

    return word_maps(raw, prompt, pipe.tokenizer)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _psnr(entry: dict) -> float:
    value = entry.get("psnr")
    return float("inf") if value == "inf" else value


def _row(backbone: str, entries: list[tuple[str, dict]], baseline: dict[str, dict]) -> LeaderboardRow:
    scenes = {scene for scene, _ in entries}
    same = [baseline[s] for s in scenes if s in baseline]
    psnrs = [_psnr(e) for _, e in entries]
    return LeaderboardRow(
        backbone=backbone,
        runs=len(entries),
        scenes=len(scenes),
        mse=_mean([e["mse"] for _, e in entries]),
        psnr=_mean(psnrs),
        psnr_infinite=sum(1 for p in psnrs if p == float("inf")),
        ssim=_mean([e["ssim"] for _, e in entries]),
        lpips=_mean([e.get("lpips") for _, e in entries]),
        baseline_psnr=_mean([_psnr(e) for e in same]),
        baseline_ssim=_mean([e["ssim"] for e in same]),
    )

