"""The one table of dtype names, and the torch dtype a name stands for on a device.

Names a user, a spec or a request may give: "fp16"/"float16"/"half", "bf16"/"bfloat16",
"fp32"/"float32"/"float". The CPU always runs float32 (half precision there is slow or
unsupported); bf16 becomes fp16 on GPUs older than compute capability 8 and on other
accelerators. Nothing here imports torch at import time.
"""

from __future__ import annotations

from typing import Any

DTYPE_NAMES: dict[str, str] = {
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


def dtype_name(dtype: Any) -> str:
    """The long name ("float16", "bfloat16", "float32") of a dtype name or a torch dtype;
    ValueError for anything else."""
    name = DTYPE_NAMES.get(str(dtype).replace("torch.", "").lower())
    if name is None:
        raise ValueError(f"Unknown dtype {dtype!r}; use fp16, bf16 or fp32.")
    return name


def bf16_supported(device) -> bool:
    """Whether `device` (a torch device or its name) computes in bfloat16 natively: a CUDA
    GPU of compute capability 8 or more."""
    import torch

    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def torch_dtype(dtype: Any, device: Any = "cpu"):
    """The torch dtype to run in on `device`: float32 on the CPU or for None; a torch dtype
    is kept; a name is looked up in DTYPE_NAMES, bf16 falling back to fp16 where the
    device lacks it."""
    import torch

    name = None if dtype is None or isinstance(dtype, torch.dtype) else dtype_name(dtype)  # validates
    if dtype is None or torch.device(device).type == "cpu":
        return torch.float32
    if name is None:
        return dtype
    if name == "bfloat16" and not bf16_supported(device):
        return torch.float16
    return getattr(torch, name)


__all__ = ["DTYPE_NAMES", "bf16_supported", "dtype_name", "torch_dtype"]
