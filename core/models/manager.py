"""The one owner of GPU memory.

`ModelManager` keeps at most one model on the GPU (the *resident*). When another key is asked
for, the resident moves to CPU RAM, where an LRU cache keeps recently used models within a
byte budget, so switching back costs a host-to-device copy instead of a reload from disk.
A failed switch puts the previous model back; a CUDA out-of-memory error is turned into an
`OutOfMemory` whose message says what to change.

Every GPU job runs inside `with manager.use(key, loader) as model:`; a lock is held for the
whole block, so jobs from different threads run one after another.

Importing this module imports no torch: torch is imported inside the methods that need it,
and the device (when not given) is only chosen on first use.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import traceback
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from core.errors import LabError, ModelLoadError, OutOfMemory
from core.models.dtypes import dtype_name, torch_dtype

GIB = 1024**3
"""Bytes in one unit of `ram_budget_gb` (a GiB)."""

OFFLOAD_MODES = ("none", "model", "sequential")


Loader = Callable[[str, Any], Any]


@dataclass
class _Entry:
    """One loaded model and what the manager knows about it."""

    key: str
    model: Any
    nbytes: int
    dtype: Any
    offloaded: bool = False  # accelerate hooks place it; the manager never calls .to() on it
    applied: list[str] = field(default_factory=list)  # options switched on at first load


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA out-of-memory error and for RuntimeErrors that report running
    out of device memory (older torch, MPS, cuDNN/cuBLAS allocation failures)."""
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_cuda_cache() -> None:
    """Return the CUDA caching allocator's unused blocks to the driver (after an
    out-of-memory error, or a model dropped). Never imports torch or initialises CUDA."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def model_nbytes(model: Any) -> int:
    """Bytes taken by the parameters and buffers of every torch module in `model`.

    `model` may be a torch module, a diffusers-style pipeline (its `components` dict) or
    any object whose attributes are torch modules (one level deep). Tensors shared between
    components are counted once. Returns 0 for objects without torch modules.
    """
    import torch

    modules = _modules_of(model, torch.nn.Module)
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def _modules_of(model: Any, module_type: type) -> list:
    if isinstance(model, module_type):
        return [model]
    components = getattr(model, "components", None)
    if isinstance(components, dict):
        values = components.values()
    else:
        values = getattr(model, "__dict__", {}).values()
    return [v for v in values if isinstance(v, module_type)]


class ModelManager:
    """Keeps one model on the GPU and recently used ones in CPU RAM.

    device: "cuda", "cuda:1", "cpu", ...; None picks "cuda" when torch sees a GPU, else
        "cpu" (decided on first use, so building a manager imports no torch).
    ram_budget_gb: CPU RAM (GiB) for models moved off the GPU; the least recently used ones
        are dropped beyond it. 0 keeps none.
    offload: "none", "model" (diffusers' enable_model_cpu_offload) or "sequential"
        (enable_sequential_cpu_offload). Only on CUDA; ignored on other devices.
    attention_slicing / vae_tiling: switched on for each model that supports them, once,
        when it is first loaded.

    Nesting: inside a `use(key)` block the same thread may call `use(key)` again (it gets
    the same model); asking for a *different* key there raises RuntimeError, because that
    would move the outer block's model off the GPU while it is still in use.
    """

    def __init__(self, *, device: str | None = None, ram_budget_gb: float = 16.0,
                 offload: str = "none", attention_slicing: bool = False,
                 vae_tiling: bool = False) -> None:
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}; got {offload!r}.")
        if ram_budget_gb < 0:
            raise ValueError(f"ram_budget_gb must be 0 or more; got {ram_budget_gb}.")
        self._device: str | None = None if device is None else str(device)
        self.ram_budget_gb = float(ram_budget_gb)
        self.offload = offload
        self.attention_slicing = bool(attention_slicing)
        self.vae_tiling = bool(vae_tiling)

        self._lock = threading.RLock()    # held for a whole use() block, evict and unload_all
        self._state = threading.Lock()    # short: guards the bookkeeping that status() reads
        self._resident: _Entry | None = None
        self._cache: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._active_key: str | None = None  # key of the open use() block (lock holder's)
        self._depth = 0
        self._loading: str | None = None

    # ---------------------------------------------------------------- device and dtype
    @property
    def device(self) -> str:
        """The compute device; chosen on first access when none was given."""
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @property
    def budget_bytes(self) -> int:
        """The CPU cache budget in bytes."""
        return int(self.ram_budget_gb * GIB)

    @property
    def offload_active(self) -> bool:
        """Whether CPU offload is asked for and can apply (a CUDA device)."""
        return self.offload != "none" and self.device.startswith("cuda")

    def dtype_for(self, wanted: str):
        """The torch dtype to load a model in on this device.

        wanted: "fp16", "bf16" or "fp32" (long names like "float16" work too). The CPU
        always gets float32; bf16 becomes fp16 on GPUs older than compute capability 8
        (and on non-CUDA accelerators).
        """
        return torch_dtype(wanted, self.device)

    # ---------------------------------------------------------------------------- use
    @contextmanager
    def use(self, key: str, loader: Loader, *, spec_dtype: str = "fp16") -> Iterator[Any]:
        """Yield the model for `key` on the device, loading it with `loader(device, dtype)`
        when it is neither resident nor cached.

        The loader gets the device to load on ("cpu" when CPU offload is active, since
        accelerate then places the weights) and the dtype from `dtype_for(spec_dtype)`.
        The lock is held until the block exits.

        Raises ModelLoadError when the loader (or moving a cached model) fails; the previous
        model is then back in place. Raises OutOfMemory when the GPU runs out of memory
        while loading or inside the block; memory is freed first and the manager stays
        usable. Other exceptions from the block pass through unchanged.
        """
        with self._lock:
            if self._loading is not None:
                raise RuntimeError(
                    f"A loader called manager.use({key!r}) while loading {self._loading!r}. "
                    "Loaders must only build and return their model.")
            if self._depth:
                if key != self._active_key:
                    raise RuntimeError(
                        f"manager.use({key!r}) was called inside manager.use({self._active_key!r}) "
                        "on the same thread. Only one model is on the GPU at a time: finish the "
                        f"{self._active_key!r} block before using {key!r}.")
                self._depth += 1
                try:
                    yield self._resident.model
                finally:
                    self._depth -= 1
                return

            model = self._activate(key, loader, spec_dtype)
            self._active_key, self._depth = key, 1
            oom: BaseException | None = None
            try:
                yield model
            except BaseException as exc:
                if not is_out_of_memory(exc):
                    raise
                oom = exc
            finally:
                self._active_key, self._depth = None, 0
            if oom is not None:
                del model
                self._recover_from_oom(oom)
                raise OutOfMemory(self._oom_message(key, "while running")) from oom

    # ---------------------------------------------------------------------- queries
    def resident(self) -> str | None:
        """The key of the model on the device, or None."""
        entry = self._resident
        return None if entry is None else entry.key

    def cached(self) -> list[str]:
        """Keys of the models held in CPU RAM, most recently used first."""
        with self._state:
            return list(reversed(self._cache.keys()))

    def status(self) -> dict:
        """A snapshot for the UI and logs; never waits for a running job.

        Sizes are bytes of parameters and buffers. "device" is None until the device is
        chosen (first use) when none was given and torch is not imported yet.
        """
        with self._state:
            resident = self._resident
            cached = list(reversed(self._cache.values()))
            busy = self._active_key or self._loading
        device = self._device
        if device is None and "torch" in sys.modules:
            device = self.device
        notes = []
        if self.offload != "none" and device is not None and not device.startswith("cuda"):
            notes.append(f"CPU offload ({self.offload}) is ignored on {device}: it needs a CUDA GPU.")
        if device is None:
            notes.append("The device is chosen on first use.")
        offload_active = None if device is None else self.offload_active
        cached_bytes = sum(e.nbytes for e in cached)

        def describe(entry: _Entry) -> dict:
            return {"key": entry.key, "bytes": entry.nbytes, "dtype": dtype_name(entry.dtype),
                    "offloaded": entry.offloaded, "options": list(entry.applied)}

        return {
            "device": device,
            "resident": None if resident is None else describe(resident),
            "busy": busy,
            "cached": [describe(e) for e in cached],
            "cached_bytes": cached_bytes,
            "ram_budget_gb": self.ram_budget_gb,
            "ram_budget_bytes": self.budget_bytes,
            "options": {"offload": self.offload, "offload_active": offload_active,
                        "attention_slicing": self.attention_slicing, "vae_tiling": self.vae_tiling},
            "notes": notes,
        }

    # ----------------------------------------------------------------- freeing memory
    def evict(self, key: str) -> None:
        """Drop `key` from the device and the CPU cache (no-op for unknown keys). Waits for a
        running job of another thread; raises RuntimeError inside this thread's own
        `use(key)` block."""
        with self._lock:
            if self._depth and key == self._active_key:
                raise RuntimeError(f"Cannot evict {key!r} inside its own manager.use block.")
            with self._state:
                entry = self._cache.pop(key, None)
                if entry is None and self._resident is not None and self._resident.key == key:
                    entry, self._resident = self._resident, None
            if entry is not None:
                self._drop(entry)
                self._free_memory(collect=True)

    def unload_all(self) -> None:
        """Drop every model, resident and cached, and free the memory they held."""
        with self._lock:
            if self._depth:
                raise RuntimeError(
                    f"Cannot unload all models inside the manager.use({self._active_key!r}) block.")
            with self._state:
                entries = list(self._cache.values())
                if self._resident is not None:
                    entries.append(self._resident)
                self._cache.clear()
                self._resident = None
            for entry in entries:
                self._drop(entry)
            if entries:
                self._free_memory(collect=True)

    # -------------------------------------------------------------------- switching
    def _activate(self, key: str, loader: Loader, spec_dtype: str) -> Any:
        """Make `key` the resident model and return it (lock held)."""
        dtype = self.dtype_for(spec_dtype)
        previous = self._resident
        if previous is not None and previous.key == key and previous.dtype == dtype:
            return previous.model
        with self._state:
            candidate = self._cache.pop(key, None)
        if candidate is not None and candidate.dtype != dtype:  # cached in another dtype
            self._drop(candidate)
            candidate = None

        try:
            if previous is not None:
                self._to_cpu(previous)
                with self._state:
                    self._resident = None
                self._free_memory(collect=False)
            if candidate is not None:
                self._to_device(candidate)
                entry = candidate
            else:
                entry = self._load(key, loader, dtype)
        except BaseException as exc:
            _release_frames(exc)
            if candidate is not None:
                self._park(candidate)
            self._free_memory(collect=True)
            restored = self._restore(previous)
            if not isinstance(exc, Exception):
                raise
            if is_out_of_memory(exc):
                raise OutOfMemory(self._oom_message(key, "while loading", previous, restored)) from exc
            raise ModelLoadError(self._load_error_message(key, exc, previous, restored)) from exc

        with self._state:
            self._resident = entry
        if previous is not None:
            if previous.key == key:  # the same model in another dtype: replaced, not kept
                self._drop(previous)
                self._free_memory(collect=True)
            else:
                self._park(previous, move=False)  # already moved to the CPU above
        return entry.model

    def _load(self, key: str, loader: Loader, dtype: Any) -> _Entry:
        load_device = "cpu" if self.offload_active else self.device
        self._loading = key
        try:
            model = loader(load_device, dtype)
        finally:
            self._loading = None
        if model is None:
            raise TypeError("the loader returned None instead of a model")
        entry = _Entry(key=key, model=model, nbytes=model_nbytes(model), dtype=dtype)
        self._apply_options(entry)
        if not entry.offloaded:  # a no-op when the loader already put it there
            entry.model = _move(entry.model, self.device)
        return entry

    def _apply_options(self, entry: _Entry) -> None:
        model = entry.model
        if self.attention_slicing and callable(getattr(model, "enable_attention_slicing", None)):
            model.enable_attention_slicing()
            entry.applied.append("attention_slicing")
        vae = getattr(model, "vae", None)
        if self.vae_tiling and callable(getattr(vae, "enable_tiling", None)):
            vae.enable_tiling()
            entry.applied.append("vae_tiling")
        if self.offload_active:
            method = ("enable_model_cpu_offload" if self.offload == "model"
                      else "enable_sequential_cpu_offload")
            if callable(getattr(model, method, None)):
                getattr(model, method)(device=self.device)
                entry.offloaded = True
                entry.applied.append(f"{self.offload}_cpu_offload")

    def _restore(self, previous: _Entry | None) -> bool:
        """Put `previous` back on the device after a failed switch. Returns False when it
        could not go back (it is then kept in the CPU cache)."""
        if previous is None:
            return False
        try:
            self._to_device(previous)
        except Exception:
            self._park(previous)
            return False
        with self._state:
            self._resident = previous
        return True

    def _recover_from_oom(self, exc: BaseException) -> None:
        """After an OOM in a use() block: free what the failed job held and move the
        resident model to the CPU cache."""
        _release_frames(exc)
        with self._state:
            entry, self._resident = self._resident, None
        if entry is not None:
            self._park(entry)
        self._free_memory(collect=True)

    # ---------------------------------------------------------------- moving models
    # On a CPU device the device and the cache are the same memory: nothing to move (and
    # nn.Module.to walks every submodule even when it moves nothing: ~10 ms for a UNet).
    def _to_device(self, entry: _Entry) -> None:
        if not entry.offloaded and not self._device_is_cpu():
            entry.model = _move(entry.model, self.device)

    def _to_cpu(self, entry: _Entry) -> None:
        release = getattr(entry.model, "release_device", None)
        if callable(release):  # a model living in another process (a captioning worker): stop it,
            release()          # which frees its GPU memory; it starts again on its next use
            return
        if self._device_is_cpu():
            return
        if entry.offloaded:
            free_hooks = getattr(entry.model, "maybe_free_model_hooks", None)
            if callable(free_hooks):
                free_hooks()  # model offload: every component back to CPU, hooks kept
        else:
            entry.model = _move(entry.model, "cpu")

    def _device_is_cpu(self) -> bool:
        return self.device == "cpu" or self.device.startswith("cpu:")

    def _park(self, entry: _Entry, *, move: bool = True) -> None:
        """Move `entry` to CPU RAM (unless `move` is False: it is there already) and keep it
        as the most recent cache entry, dropping the oldest entries beyond the budget
        (possibly `entry` itself). A model that cannot be moved to the CPU is dropped."""
        if move:
            try:
                self._to_cpu(entry)
            except Exception:
                self._drop(entry)
                return
        dropped = []
        with self._state:
            self._cache[entry.key] = entry
            self._cache.move_to_end(entry.key)
            total = sum(e.nbytes for e in self._cache.values())
            while self._cache and total > self.budget_bytes:
                _, oldest = self._cache.popitem(last=False)
                total -= oldest.nbytes
                dropped.append(oldest)
        for old in dropped:
            self._drop(old)
        if dropped:
            self._free_memory(collect=True)

    @staticmethod
    def _drop(entry: _Entry) -> None:
        close = getattr(entry.model, "release_device", None)
        if callable(close):  # a worker process: end it rather than wait for the garbage collector
            close()
        entry.model = None

    def _free_memory(self, *, collect: bool) -> None:
        """gc (when `collect`) and return cached CUDA blocks to the driver. Never imports
        torch or initialises CUDA."""
        if collect:
            gc.collect()
        free_cuda_cache()

    # --------------------------------------------------------------------- messages
    def _oom_message(self, key: str, when: str, previous: _Entry | None = None,
                     restored: bool | None = None) -> str:
        ideas = ["use a smaller image size or fewer images per run"]
        switches = []
        if self.offload == "none":
            switches.append("CPU offload")
        if not self.attention_slicing:
            switches.append("attention slicing")
        if not self.vae_tiling:
            switches.append("VAE tiling")
        if switches:
            ideas.append("turn on " + _join(switches))
        ideas.append(f"pick a smaller backbone than {key!r}")
        text = (f"The GPU ran out of memory {when} model {key!r}; the memory it held was freed. "
                f"To make it fit: {'; '.join(ideas)}.")
        if when == "while loading":
            text += " " + self._previous_sentence(previous, restored)
        return text

    def _load_error_message(self, key: str, exc: BaseException, previous: _Entry | None,
                            restored: bool) -> str:
        cause = str(exc) if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
        return f"Could not load model {key!r}: {cause}. {self._previous_sentence(previous, restored)}"

    @staticmethod
    def _previous_sentence(previous: _Entry | None, restored: bool | None) -> str:
        if previous is None:
            return "No model was loaded before, so none is loaded now."
        if restored:
            return f"The previous model {previous.key!r} is still loaded."
        return (f"The previous model {previous.key!r} could not go back on the GPU; it is kept "
                "in CPU memory and returns on its next use.")


def _move(model: Any, device: str) -> Any:
    """`model.to(device)`; the returned object (or `model` when `.to` returns None or is
    missing). diffusers' warning that fp16 pipelines cannot run on the CPU is muted during
    the move: a model parked in CPU RAM is not meant to run there."""
    to = getattr(model, "to", None)
    if not callable(to):
        return model
    pipeline_log = logging.getLogger("diffusers.pipelines.pipeline_utils")
    mute = _MuteFp16OnCpuWarning()
    pipeline_log.addFilter(mute)
    try:
        moved = to(device)
    finally:
        pipeline_log.removeFilter(mute)
    return model if moved is None else moved


class _MuteFp16OnCpuWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "cannot run with `cpu` device" not in record.getMessage()


def _release_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in `exc`'s traceback, so tensors
    they hold (activations, half-loaded weights) can be freed while the exception lives on
    as the cause of the error we raise."""
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
