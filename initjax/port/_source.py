"""Reading a PyTorch state_dict into numpy, safely.

``.safetensors`` files are read without torch. Pickle-based files
(``.pt``/``.pth``/``.bin``/...) go through ``torch.load(weights_only=True)``
only: torch's restricted unpickler, which builds tensors and plain containers
and refuses every other global, so a malicious file executes nothing.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from ._safetensors import load_safetensors

__all__ = ["load_state_dict", "to_torch_tensors", "UnsafeCheckpointError", "StateDict", "Source"]

#: A state_dict as initjax holds it: torch key -> numpy array.
StateDict = dict[str, np.ndarray]
#: What the porting functions accept: a file path or an in-memory state_dict.
Source = str | os.PathLike | Mapping[str, Any]


class UnsafeCheckpointError(ValueError):
    """A pickle checkpoint that ``torch.load(weights_only=True)`` refuses to load."""


# torch dtypes numpy lacks, viewed through a same-width integer type.
_VIA_BITS = {
    "torch.bfloat16": ("int16", ml_dtypes.bfloat16),
    "torch.float8_e4m3fn": ("uint8", ml_dtypes.float8_e4m3fn),
    "torch.float8_e5m2": ("uint8", ml_dtypes.float8_e5m2),
}


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _from_torch(name: str, tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
    via = _VIA_BITS.get(str(t.dtype))
    if via is not None:
        return t.view(getattr(torch, via[0])).numpy().view(via[1])
    try:
        return t.numpy()
    except TypeError as e:
        raise TypeError(
            f"tensor {name!r} has dtype {t.dtype}, which numpy cannot hold ({e})"
        ) from None


def _from_mapping(items: Mapping[str, Any], origin: str) -> StateDict:
    out: StateDict = {}
    for name, value in items.items():
        if not isinstance(name, str):
            raise TypeError(f"{origin}: state_dict keys must be strings, got {name!r}")
        if _is_torch_tensor(value):
            out[name] = _from_torch(name, value)
        elif isinstance(value, Mapping):
            raise TypeError(
                f"{origin}: {name!r} holds a nested mapping, not a tensor; pass that "
                f"mapping itself if it is the state_dict (e.g. checkpoint[{name!r}])"
            )
        elif hasattr(value, "__array__") or isinstance(value, np.ndarray):
            out[name] = np.asarray(value)
        else:
            raise TypeError(
                f"{origin}: {name!r} is a {type(value).__name__}, not a tensor or array"
            )
    return out


def _load_pickle(path: str | os.PathLike) -> StateDict:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {os.fspath(path)!r} needs torch (it is a pickle-based checkpoint); "
            "install torch, or convert the checkpoint to .safetensors"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{os.fspath(path)!r} is not a weights-only checkpoint, so it was not loaded: "
            f"torch.load(weights_only=True) refused it ({reason}). initjax never unpickles "
            "arbitrary objects; re-save the state_dict from trusted code "
            "(e.g. with initjax.port.save_safetensors or safetensors.torch.save_file)."
        ) from e
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"{os.fspath(path)!r} holds a {type(obj).__name__}, not a state_dict mapping"
        )
    return _from_mapping(obj, os.fspath(path))


def load_state_dict(source: Source) -> StateDict:
    """A PyTorch state_dict, from a file or from memory, as numpy arrays.

    ``source`` may be:

    - a path ending in ``.safetensors``: read with initjax's own reader (no
      torch needed), memory-mapped;
    - any other path (``.pt``, ``.pth``, ``.bin``, ...): loaded with
      ``torch.load(path, map_location="cpu", weights_only=True)``; anything that
      restricted unpickler refuses raises :class:`UnsafeCheckpointError` and is
      never executed;
    - a mapping of names to torch tensors, numpy arrays or JAX arrays (e.g.
      ``torch_model.state_dict()``).

    bfloat16 and float8 tensors become ``ml_dtypes`` arrays; values are not
    cast. The result shares memory with the source where it can.
    """
    if isinstance(source, Mapping):
        return _from_mapping(source, "state_dict")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path or a state_dict mapping, got {type(source).__name__}"
        )
    if os.fspath(source).endswith(".safetensors"):
        return load_safetensors(source)
    return _load_pickle(source)


def to_torch_tensors(state: Mapping[str, Any]) -> dict[str, Any]:
    """numpy (or JAX) arrays as torch tensors, for ``torch_model.load_state_dict``.

    bfloat16 and float8 arrays keep their dtype (``torch.from_numpy`` cannot
    take them). Copies nothing it does not have to. Needs torch.
    """
    import torch

    out = {}
    for name, value in state.items():
        arr = np.asarray(value, order="C")
        if not arr.flags.writeable:  # torch tensors must own writable memory
            arr = arr.copy()
        for torch_dtype, (bits, np_dtype) in _VIA_BITS.items():
            if arr.dtype == np_dtype:
                t = torch.from_numpy(arr.view(bits)).view(getattr(torch, torch_dtype[6:]))
                break
        else:
            t = torch.from_numpy(arr)
        out[name] = t
    return out
