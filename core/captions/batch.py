"""Caption many scenes in one go, resumably (the course's run took a week).

`caption_scenes(index, scenes, captioner, store=...)` captions the pre and/or post image of
each scene and writes every result to the caption store as soon as it exists, so a stopped
or crashed run loses at most the image in progress. Running it again skips every image
whose record already holds a machine caption from the same captioner (same
`captioner.model_name`: id and source), which is how a run resumes.

Two passes, so that only one model is on the GPU at a time:

1. captions, inside `manager.use(captioner.model_key, captioner.loader)` (diffusion models
   move off the GPU first);
2. when a summariser is given, T5 summaries of every image of the list that has a machine
   caption but no summary yet, inside `manager.use(summariser.model_key, ...)`. With a
   `clip_tokenizer` (the target backbone's), each summary is shortened by `fit_clip` until it
   fits 77 CLIP tokens; the report counts how many needed it.

Cancelling (`cancel.cancelled` true, or `cancel.is_set()` for a threading.Event) stops
before the next image; everything finished so far is already stored.
`progress(done, total, message)` is called after each image of each pass.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from core.captions.captioners import CaptionContext, Captioner
from core.errors import OutOfMemory
from core.models.manager import is_out_of_memory

Progress = Callable[[int, int, str], Any]


@dataclass
class BatchReport:
    """What a batch run did. Image entries are image file names (the store's keys).

    captioned: captioned in this run. skipped: already had this captioner's caption.
    summarised: summaries written in this run. fitted: of those, how many `fit_clip`
    shortened. missing: (scene_id, phase) pairs without an image file. failed: (image,
    message) for images whose caption failed (the run goes on). cancelled: stopped early.
    seconds: wall time.
    """

    captioned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summarised: list[str] = field(default_factory=list)
    fitted: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the UI and the CLI."""
        parts = [f"{len(self.captioned)} captioned", f"{len(self.skipped)} already done"]
        if self.summarised:
            parts.append(f"{len(self.summarised)} summarised ({self.fitted} shortened to fit CLIP)")
        if self.missing:
            parts.append(f"{len(self.missing)} images missing")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        text = ", ".join(parts) + f" in {self.seconds:.1f} s"
        return text + (" — cancelled; run again to resume." if self.cancelled else ".")


def is_cancelled(cancel: Any) -> bool:
    """Whether `cancel` (None, an object with a `cancelled` attribute or method, or a
    threading.Event) asks to stop."""
    if cancel is None:
        return False
    flag = getattr(cancel, "cancelled", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set()) if callable(is_set) else False


@dataclass(frozen=True)
class _Item:
    scene: Any
    phase: str
    image: str  # file name, the store key
    context: CaptionContext


def _items(index, scenes: Iterable[Any], phases: tuple[str, ...], report: BatchReport) -> list[_Item]:
    items = []
    for scene in scenes:
        if isinstance(scene, str):
            scene = index.get(scene)
        info = index.scene_info(scene)
        for phase in phases:
            path = scene.image(phase)
            if path is None:
                report.missing.append((scene.scene_id, phase))
                continue
            context = CaptionContext(scene_id=scene.scene_id, phase=phase, disaster=scene.disaster,
                                     disaster_type=info.disaster_type, counts=info.counts)
            items.append(_Item(scene=scene, phase=phase, image=path.name, context=context))
    return items


def _has_caption(store, image: str, model_name: str) -> bool:
    record = store.get(image)
    return (record is not None and bool(getattr(record, "machine_caption", None))
            and getattr(record, "machine_model", None) == model_name)


class _Session:
    """Binds a model for the duration of a `with` block: through the manager when given,
    else loaded directly once."""

    def __init__(self, owner: Any, manager: Any) -> None:
        self.owner, self.manager, self._cm = owner, manager, None

    def __enter__(self):
        if self.manager is not None:
            self._cm = self.manager.use(self.owner.model_key, self.owner.loader,
                                        spec_dtype=self.owner.spec_dtype)
            bundle = self._cm.__enter__()
            self.owner.bundle = bundle
        elif self.owner.bundle is None:
            self.owner.load()
        return self.owner

    def __exit__(self, *exc):
        if self._cm is not None:
            self.owner.bundle = None  # the manager owns the model; do not keep a reference
            return self._cm.__exit__(*exc)
        return False


def caption_scenes(index, scenes: Iterable[Any], captioner: Captioner, *, store,
                   phases: tuple[str, ...] = ("pre", "post"), summariser: Any = None,
                   clip_tokenizer: Any = None, manager: Any = None,
                   progress: Progress | None = None, cancel: Any = None, shard: Any = None) -> BatchReport:
    """Caption `phases` of `scenes` (Scene objects or scene ids of `index`) with
    `captioner`, store each result with `store.put_machine`, and return a BatchReport.

    Images that already have a machine caption from this captioner are skipped (resume).
    A failing image is recorded in the report and the run goes on; a model that cannot be
    loaded raises (ModelLoadError / OutOfMemory from the manager) before any image.
    With `shard` (core.distributed.Shard), only this process's share of the tiles.
    """
    start = time.monotonic()
    report = BatchReport()
    items = _items(index, scenes, tuple(phases), report)
    if shard is not None:
        items = shard.take(items)
    todo = []
    for item in items:
        if _has_caption(store, item.image, captioner.model_name):
            report.skipped.append(item.image)
        else:
            todo.append(item)

    def finish() -> BatchReport:
        report.seconds = time.monotonic() - start
        return report

    if todo and not is_cancelled(cancel):
        # The session sees every exception, so the manager turns a GPU out-of-memory into
        # OutOfMemory (with what to change) and frees the model.
        if hasattr(captioner, "should_cancel"):  # a worker's captioner: a cancel also stops the tile in progress
            captioner.should_cancel = lambda: is_cancelled(cancel)
        with _Session(captioner, manager) if captioner.needs_model else nullcontext():
            for n, item in enumerate(todo, 1):
                if is_cancelled(cancel):
                    report.cancelled = True
                    break
                try:
                    image = index.load_image(item.scene, item.phase)
                    text = captioner.caption(image, item.context)
                except Exception as exc:  # one bad image must not end a week-long run
                    if is_cancelled(cancel):  # the tile in progress was stopped: not its fault
                        report.cancelled = True
                        break
                    if isinstance(exc, OutOfMemory) or is_out_of_memory(exc):
                        raise  # not this image's fault: stop, free the model, say what to change
                    report.failed.append((item.image, f"{type(exc).__name__}: {exc}"))
                else:
                    store.put_machine(item.image, scene_id=item.context.scene_id, phase=item.phase,
                                      disaster=item.context.disaster, caption=text,
                                      model=captioner.model_name,
                                      prompt=captioner.prompt(item.context))
                    report.captioned.append(item.image)
                if progress is not None:
                    progress(n, len(todo), f"captioned {item.image}")
    elif todo:
        report.cancelled = True

    if summariser is None or report.cancelled:
        return finish()

    to_summarise = []
    for item in items:
        record = store.get(item.image)
        if (record is not None and getattr(record, "machine_caption", None)
                and getattr(record, "machine_model", None) == captioner.model_name
                and not getattr(record, "summary", None)):
            to_summarise.append((item, record.machine_caption, record))
    if not to_summarise:
        return finish()
    from core.captions.t5 import fit_clip

    with _Session(summariser, manager):
        for n, (item, caption, record) in enumerate(to_summarise, 1):
            if is_cancelled(cancel):
                report.cancelled = True
                break
            summary = summariser.summarise(caption)
            if clip_tokenizer is not None:
                fitted, how = fit_clip(summary, clip_tokenizer)
                if how != "fits":
                    report.fitted += 1
                summary = fitted
            store.put_machine(item.image, scene_id=item.context.scene_id, phase=item.phase,
                              disaster=item.context.disaster, caption=caption,
                              model=captioner.model_name,
                              prompt=getattr(record, "machine_prompt", None) or captioner.prompt(item.context),
                              summary=summary, summary_model=summariser.model_name)
            report.summarised.append(item.image)
            if progress is not None:
                progress(n, len(to_summarise), f"summarised {item.image}")
    return finish()
