"""Model memory management: `ModelManager` owns the GPU (one resident model, an LRU cache
in CPU RAM, lock-scoped use, rollback on failed switches, clear out-of-memory errors).

Importing this package imports no torch.
"""

from core.models.manager import OFFLOAD_MODES, ModelManager, is_out_of_memory, model_nbytes

__all__ = ["OFFLOAD_MODES", "ModelManager", "is_out_of_memory", "model_nbytes"]
