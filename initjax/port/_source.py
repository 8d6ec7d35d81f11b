"""Reading a PyTorch state_dict into numpy, safely.

safetensors files are read without torch; a file is one when its name ends
in ``.safetensors`` or its first bytes are a safetensors header, whatever its
name. Other files (``.pt``/``.pth``/``.bin``/...) go through
``torch.load(weights_only=True)`` only: torch's restricted unpickler, which
builds tensors and plain containers and refuses every other global, so a
malicious file executes nothing.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from ._safetensors import MAX_HEADER_BYTES, load_safetensors

__all__ = ["to_torch_tensors", "UnsafeCheckpointError", "StateDict", "Source", "load_one"]

StateDict = dict[str, np.ndarray]
"""A state_dict as initjax holds it: torch key -> numpy array."""
Source = str | os.PathLike[str] | Mapping[str, Any]
"""What the porting functions accept: a file path or an in-memory state_dict."""


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


def _from_torch(name: str, tensor: Any, origin: str) -> np.ndarray:
    import torch

    if tensor.is_meta:
        raise ValueError(
            f"{origin}: tensor {name!r} is on the meta device and holds no values; "
            "materialize the model first (e.g. model.to_empty(device='cpu') and then "
            "initialize or load its weights) and pass that state_dict"
        )
    if tensor.layout != torch.strided:
        raise ValueError(
            f"{origin}: tensor {name!r} has layout {tensor.layout}, not a dense tensor; "
            f"convert it with .to_dense() (e.g. state[{name!r}] = state[{name!r}].to_dense())"
        )
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
            out[name] = _from_torch(name, value, origin)
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


def _load_pickle(path: str | os.PathLike[str]) -> StateDict:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {os.fspath(path)!r} needs torch (it is a pickle-based checkpoint); "
            "install torch, or convert the checkpoint to .safetensors"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise  # missing or unreadable: the OS's error names the file
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable torch checkpoint; it is truncated or "
            f"corrupt (torch.load: {type(e).__name__}: {_first_line(str(e))})"
        ) from e
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{os.fspath(path)!r} was not loaded: it is not a weights-only checkpoint "
            f"({_refusal(str(e))}). initjax loads pickle files only with "
            "torch.load(weights_only=True) and never runs code from them. If you trust the "
            "file, load it with torch and save just the weights: "
            "torch.save(model.state_dict(), path), or as safetensors with "
            "safetensors.torch.save_file(model.state_dict(), path) or "
            "initjax.port.save_safetensors."
        ) from e
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"{os.fspath(path)!r} holds a {type(obj).__name__}, not a state_dict mapping"
        )
    return _from_mapping(obj, os.fspath(path))


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or ["?"])[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def _refusal(message: str) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one plain sentence."""
    message = _ANSI.sub("", message)
    found = _GLOBAL.search(message)
    if found:
        return (
            f"it holds a pickled {found.group(1)} object, e.g. a whole model saved with "
            "torch.save(model), where a state_dict of tensors was expected"
        )
    found = _REASON.search(message)
    reason = found.group(1) if found else _first_line(message)
    return f"torch.load(weights_only=True) refused it: {reason.strip().rstrip('.')}"


_LEN = struct.Struct("<Q")


def _is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named or starts like a safetensors file (its length, then '{')."""
    if os.fspath(path).endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(_LEN.size + 1)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False  # torch.load reports a missing or unreadable file
    if len(head) <= _LEN.size or head[_LEN.size :] != b"{":
        return False
    (n,) = _LEN.unpack(head[: _LEN.size])
    return n <= min(MAX_HEADER_BYTES, size - _LEN.size)


def load_one(source: Source) -> StateDict:
    """:func:`~initjax.port.load_state_dict` for a mapping or one file (not a directory
    or an index: :mod:`._checkpoint` reads those through here, a file at a time)."""
    if isinstance(source, Mapping):
        return _from_mapping(source, "state_dict")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path or a state_dict mapping, got {type(source).__name__}"
        )
    if _is_safetensors(source):
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
