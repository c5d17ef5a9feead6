"""ModelManager on tiny fake pipelines.

Most tests build the manager with device="cuda" on this CPU-only machine: the fake pipelines
only *record* `.to(device)` calls (their tensors stay on the CPU), so the tests can see which
model the manager put "on the GPU" and which it moved back to the CPU, without a GPU.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from core.errors import ModelLoadError, OutOfMemory
from core.models import ModelManager, is_out_of_memory, model_nbytes
from core.models.manager import GIB

WIDTH = 16
PIPE_BYTES = 2 * (WIDTH * WIDTH + WIDTH) * 4  # two float32 nn.Linear(16, 16)


class FakeVae(nn.Linear):
    def __init__(self):
        super().__init__(WIDTH, WIDTH)
        self.tiled = 0

    def enable_tiling(self):
        self.tiled += 1


class FakePipe:
    """A diffusers-like pipeline: `components`, `.to()` and the option switches."""

    def __init__(self, name: str):
        self.name = name
        self.unet = nn.Linear(WIDTH, WIDTH)
        self.vae = FakeVae()
        self.components = {"unet": self.unet, "vae": self.vae, "tokenizer": object(),
                           "scheduler": None}
        self.device = "cpu"
        self.moves: list[str] = []
        self.calls: list[str] = []

    def to(self, device):
        self.device = str(device)
        self.moves.append(self.device)
        return self

    def enable_attention_slicing(self):
        self.calls.append("attention_slicing")

    def enable_model_cpu_offload(self, device=None):
        self.calls.append(f"model_offload:{device}")

    def maybe_free_model_hooks(self):
        self.calls.append("free_hooks")

    def __call__(self, x):
        return self.unet(x)


class Loaders:
    """Loader factory that counts calls per key and remembers what it built."""

    def __init__(self):
        self.count: dict[str, int] = {}
        self.built: dict[str, FakePipe] = {}
        self.args: list[tuple] = []

    def __call__(self, key: str):
        def load(device, dtype):
            self.count[key] = self.count.get(key, 0) + 1
            self.args.append((key, device, dtype))
            pipe = FakePipe(key)
            self.built[key] = pipe
            return pipe.to(device)

        return load


def failing(exc: BaseException):
    def load(device, dtype):
        raise exc

    return load


@pytest.fixture
def loaders():
    return Loaders()


def gpu_manager(**kwargs) -> ModelManager:
    return ModelManager(device="cuda", **kwargs)


def activate(manager: ModelManager, loaders: Loaders, *keys: str) -> None:
    for key in keys:
        with manager.use(key, loaders(key)):
            pass


def test_switching_moves_the_previous_model_to_the_cpu_cache(loaders):
    manager = gpu_manager()
    with manager.use("a", loaders("a")) as pipe_a:
        assert pipe_a.device == "cuda" and manager.resident() == "a"
    with manager.use("b", loaders("b")) as pipe_b:
        assert pipe_b.device == "cuda"
        assert pipe_a.device == "cpu"
    assert manager.resident() == "b"
    assert manager.cached() == ["a"]
    assert loaders.args[0][1:] == ("cuda", torch.float16)


def test_a_cached_model_comes_back_without_calling_the_loader(loaders):
    manager = gpu_manager()
    activate(manager, loaders, "a", "b")
    with manager.use("a", loaders("a")) as pipe:
        assert pipe is loaders.built["a"] and pipe.device == "cuda"
    assert loaders.count == {"a": 1, "b": 1}
    assert manager.resident() == "a" and manager.cached() == ["b"]
    with manager.use("a", loaders("a")) as again:  # already resident: no move at all
        assert again is pipe
    # loader's .to, the manager's (a no-op for a model already there), out to the CPU, back
    assert pipe.moves == ["cuda", "cuda", "cpu", "cuda"]


def test_cached_lists_most_recent_first(loaders):
    manager = gpu_manager()
    activate(manager, loaders, "a", "b", "c", "d")
    assert manager.cached() == ["c", "b", "a"]


def test_least_recently_used_models_are_dropped_beyond_the_budget(loaders):
    manager = gpu_manager(ram_budget_gb=1.5 * PIPE_BYTES / GIB)
    activate(manager, loaders, "a", "b")
    assert manager.cached() == ["a"]
    activate(manager, loaders, "c")  # a and b do not both fit: a, the oldest, goes
    assert manager.cached() == ["b"]
    activate(manager, loaders, "b")  # from the cache
    assert loaders.count["b"] == 1 and manager.cached() == ["c"]
    activate(manager, loaders, "a")  # was dropped: loaded again
    assert loaders.count["a"] == 2 and manager.cached() == ["b"]


def test_a_zero_budget_keeps_nothing_on_the_cpu(loaders):
    manager = gpu_manager(ram_budget_gb=0)
    activate(manager, loaders, "a", "b", "a")
    assert manager.cached() == [] and loaders.count["a"] == 2


def test_a_failing_load_puts_the_previous_model_back(loaders):
    manager = gpu_manager()
    activate(manager, loaders, "a")
    with pytest.raises(ModelLoadError) as info:
        with manager.use("b", failing(FileNotFoundError("no weights in /models/b"))):
            pytest.fail("the block must not run")
    message = str(info.value)
    assert "'b'" in message and "no weights in /models/b" in message
    assert "previous model 'a' is still loaded" in message
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert manager.resident() == "a" and loaders.built["a"].device == "cuda"
    with manager.use("a", loaders("a")) as pipe:
        assert pipe(torch.ones(1, WIDTH)).shape == (1, WIDTH)
    assert loaders.count == {"a": 1}


def test_a_failing_first_load_says_nothing_is_loaded():
    manager = gpu_manager()
    with pytest.raises(ModelLoadError, match="none is loaded now"):
        with manager.use("a", failing(ValueError("bad config"))):
            pass
    assert manager.resident() is None and manager.cached() == []


def test_a_loader_returning_none_is_a_load_error(loaders):
    manager = gpu_manager()
    activate(manager, loaders, "a")
    with pytest.raises(ModelLoadError, match="returned None"):
        with manager.use("b", lambda device, dtype: None):
            pass
    assert manager.resident() == "a"


def test_out_of_memory_inside_the_block_frees_the_gpu_and_gives_advice(loaders):
    manager = gpu_manager()
    with pytest.raises(OutOfMemory) as info:
        with manager.use("a", loaders("a")):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(info.value)
    for advice in ("smaller image size", "fewer images", "CPU offload", "attention slicing",
                   "VAE tiling", "smaller backbone than 'a'"):
        assert advice in message
    assert manager.resident() is None and manager.cached() == ["a"]
    assert loaders.built["a"].device == "cpu"
    with manager.use("a", loaders("a")) as pipe:  # still usable, from the cache
        assert pipe.device == "cuda"
    assert loaders.count == {"a": 1}


def test_out_of_memory_releases_the_tensors_held_by_the_failed_frames(loaders):
    import weakref

    manager = gpu_manager()
    refs = []

    def denoise():
        activations = torch.zeros(256)
        refs.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemory) as info:
        with manager.use("a", loaders("a")):
            denoise()
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)  # kept for logs
    assert refs[0]() is None  # ...but its frames no longer pin the activations


def test_out_of_memory_while_loading_keeps_the_previous_model(loaders):
    manager = gpu_manager(attention_slicing=True)
    activate(manager, loaders, "a")
    with pytest.raises(OutOfMemory) as info:
        with manager.use("big", failing(RuntimeError("CUDA error: out of memory"))):
            pass
    message = str(info.value)
    assert "while loading model 'big'" in message and "previous model 'a' is still loaded" in message
    assert "attention slicing" not in message  # already on: not suggested
    assert manager.resident() == "a" and loaders.built["a"].device == "cuda"
    activate(manager, loaders, "b")
    assert manager.resident() == "b"


def test_other_errors_in_the_block_pass_through_and_keep_the_model(loaders):
    manager = gpu_manager()
    with pytest.raises(KeyError):
        with manager.use("a", loaders("a")):
            raise KeyError("prompt")
    assert manager.resident() == "a"


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())


def test_the_lock_makes_a_second_thread_wait_for_the_first_block(loaders):
    manager = gpu_manager()
    order: list[str] = []
    first_inside, release_first, second_inside = (threading.Event() for _ in range(3))

    def first():
        with manager.use("a", loaders("a")):
            order.append("a in")
            first_inside.set()
            release_first.wait(5)
            order.append("a out")

    def second():
        with manager.use("b", loaders("b")):
            order.append("b in")
            second_inside.set()

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_inside.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    assert not second_inside.wait(0.2)  # blocked on the lock while a's block runs
    assert manager.status()["busy"] == "a"  # status does not wait for the lock
    release_first.set()
    t1.join(5)
    t2.join(5)
    assert order == ["a in", "a out", "b in"]
    assert manager.resident() == "b" and manager.cached() == ["a"]


def test_nesting_the_same_key_reuses_the_model_and_another_key_is_refused(loaders):
    manager = gpu_manager()
    with manager.use("a", loaders("a")) as outer:
        with manager.use("a", loaders("a")) as inner:
            assert inner is outer
        with pytest.raises(RuntimeError, match="finish the 'a' block"):
            with manager.use("b", loaders("b")):
                pass
        with pytest.raises(RuntimeError):
            manager.evict("a")
        assert manager.resident() == "a"
    activate(manager, loaders, "b")
    assert loaders.count == {"a": 1, "b": 1}


def test_dtype_for_on_cpu_is_always_float32():
    manager = ModelManager(device="cpu")
    assert {manager.dtype_for(w) for w in ("fp16", "bf16", "fp32")} == {torch.float32}
    with pytest.raises(ValueError, match="fp16, bf16 or fp32"):
        manager.dtype_for("int8")


def test_dtype_for_on_cuda_falls_back_to_fp16_before_compute_capability_8(monkeypatch):
    manager = gpu_manager()
    assert manager.dtype_for("fp16") is torch.float16
    assert manager.dtype_for("fp32") is torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert manager.dtype_for("bf16") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert manager.dtype_for("bf16") is torch.float16


def test_status_reports_sizes_budget_and_options(loaders):
    manager = ModelManager(device="cpu", ram_budget_gb=2, offload="model")
    activate(manager, loaders, "a", "b")
    status = manager.status()
    assert status["device"] == "cpu"
    assert status["resident"]["key"] == "b" and status["resident"]["bytes"] == PIPE_BYTES
    assert status["resident"]["dtype"] == "float32"
    assert [(c["key"], c["bytes"]) for c in status["cached"]] == [("a", PIPE_BYTES)]
    assert status["cached_bytes"] == PIPE_BYTES and status["ram_budget_bytes"] == 2 * GIB
    assert status["options"]["offload"] == "model" and status["options"]["offload_active"] is False
    assert any("ignored on cpu" in note for note in status["notes"])
    assert status["busy"] is None
    assert loaders.args[0][1] == "cpu"  # offload ignored: loaded straight on the device


def test_options_are_applied_once_at_first_load(loaders):
    manager = gpu_manager(attention_slicing=True, vae_tiling=True, offload="model")
    activate(manager, loaders, "a", "b", "a")
    pipe = loaders.built["a"]
    assert pipe.calls.count("attention_slicing") == 1 and pipe.vae.tiled == 1
    assert "model_offload:cuda" in pipe.calls
    assert "free_hooks" in pipe.calls  # switched out through accelerate, not .to()
    assert pipe.moves == ["cpu"]  # loaded on the CPU for offload, never moved by the manager
    assert loaders.args[0][1] == "cpu"
    assert manager.status()["resident"]["options"] == ["attention_slicing", "vae_tiling",
                                                       "model_cpu_offload"]


def test_evict_and_unload_all(loaders):
    manager = gpu_manager()
    activate(manager, loaders, "a", "b", "c")
    manager.evict("a")
    assert manager.cached() == ["b"]
    manager.evict("c")
    assert manager.resident() is None
    manager.evict("unknown")
    manager.unload_all()
    assert manager.resident() is None and manager.cached() == []
    activate(manager, loaders, "b")
    assert loaders.count["b"] == 2


def test_plain_torch_modules_work_on_the_cpu():
    manager = ModelManager(device="cpu")
    with manager.use("captioner", lambda device, dtype: nn.Linear(4, 2).to(device, dtype)) as m:
        assert m(torch.ones(1, 4)).shape == (1, 2)
    assert model_nbytes(m) == (4 * 2 + 2) * 4
    assert manager.status()["resident"]["bytes"] == (4 * 2 + 2) * 4


def test_on_a_cpu_device_switching_moves_nothing(loaders):
    manager = ModelManager(device="cpu")
    activate(manager, loaders, "a", "b", "a")
    assert loaders.built["a"].moves == ["cpu", "cpu"]  # the loader's and the one after loading
    assert manager.resident() == "a" and manager.cached() == ["b"]


def test_shared_modules_are_counted_once():
    shared = nn.Linear(WIDTH, WIDTH)
    pipe = FakePipe("x")
    pipe.components = {"unet": shared, "unet_again": shared}
    assert model_nbytes(pipe) == PIPE_BYTES // 2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="offload"):
        ModelManager(offload="disk")
    with pytest.raises(ValueError, match="ram_budget_gb"):
        ModelManager(ram_budget_gb=-1)
