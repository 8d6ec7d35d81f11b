"""The safetensors file format, read and written with numpy alone.

A file is: an 8-byte little-endian header length ``n``; ``n`` bytes of UTF-8
JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets"}`` (offsets
relative to the end of the header) plus an optional ``"__metadata__"`` of
string pairs; then the raw little-endian, C-ordered tensor bytes. Reading
memory-maps the file, so a tensor's bytes are paged in only when it is used.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Literal, overload

import ml_dtypes
import numpy as np

__all__ = ["load_safetensors", "save_safetensors", "DTYPES"]

#: safetensors dtype names and the numpy dtypes they read as.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

_LEN = struct.Struct("<Q")
_MAX_HEADER = 100_000_000  # bytes; the reference implementation's limit


def _bad(path, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!r} is not a valid safetensors file: {why}")


@overload
def load_safetensors(
    path: str | os.PathLike, *, with_metadata: Literal[False] = False
) -> dict[str, np.ndarray]: ...
@overload
def load_safetensors(
    path: str | os.PathLike, *, with_metadata: Literal[True]
) -> tuple[dict[str, np.ndarray], dict[str, str]]: ...
@overload
def load_safetensors(
    path: str | os.PathLike, *, with_metadata: bool
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, str]]: ...
def load_safetensors(
    path: str | os.PathLike, *, with_metadata: bool = False
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a ``.safetensors`` file as read-only numpy arrays.

    The arrays are views of a read-only memory map of the file. bfloat16 and
    float8 tensors come back as ``ml_dtypes`` arrays. With
    ``with_metadata=True`` returns ``(tensors, metadata)``.

    Raises:
      ValueError: a malformed header, an unknown dtype, or tensor byte ranges
        that do not tile the data section exactly.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_LEN.size)
        if len(head) < _LEN.size:
            raise _bad(path, f"{size} bytes is too short for the header length")
        (n,) = _LEN.unpack(head)
        if n > min(_MAX_HEADER, size - _LEN.size):
            raise _bad(path, f"header length {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad(path, f"header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _bad(path, "__metadata__ must map strings to strings")

    start = _LEN.size + n
    data_len = size - start
    spans, layout = [], {}
    for name, info in header.items():
        try:
            kind = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"tensor {name!r} has a malformed entry {info!r}") from None
        if kind not in DTYPES:
            raise _bad(path, f"tensor {name!r} has unknown dtype {kind!r}")
        dtype = DTYPES[kind]
        if min(shape, default=0) < 0 or end - begin != math.prod(shape) * dtype.itemsize:
            raise _bad(path, f"tensor {name!r}: {end - begin} bytes for {shape} {kind}")
        spans.append((begin, end, name))
        layout[name] = (dtype, shape, begin)
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise _bad(path, f"tensor {name!r} starts at byte {begin}, expected {covered}")
        covered = end
    if covered != data_len:
        raise _bad(path, f"tensors cover {covered} bytes of a {data_len}-byte data section")

    data = np.memmap(path, np.uint8, "r", offset=start, shape=(data_len,)) if data_len else b""
    tensors = {}
    for name, (dtype, shape, begin) in layout.items():
        count = math.prod(shape)
        if count == 0:
            tensors[name] = np.zeros(shape, dtype)
        else:
            arr = np.frombuffer(data, dtype, count, offset=begin).reshape(shape)
            tensors[name] = arr
    return (tensors, dict(metadata)) if with_metadata else tensors


def save_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (numpy or JAX arrays, by name) as a ``.safetensors`` file.

    Tensors are laid out widest dtype first, then by name, after a header padded
    to 8 bytes, so every tensor is aligned as the reference implementation does.
    JAX arrays are copied to the host here.

    Raises:
      TypeError: a name or metadata entry that is not a string, or a dtype
        safetensors cannot store (see ``DTYPES``).
    """
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        arr = np.asarray(value)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype not in _NAMES:
            raise TypeError(
                f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store; "
                f"allowed: {sorted(str(d) for d in _NAMES)}"
            )
        arrays[name] = np.asarray(arr, dtype, order="C")
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("safetensors metadata must map strings to strings")

    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        arr = arrays[name]
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(_LEN.pack(len(text)))
        f.write(text)
        for name in order:
            f.write(arrays[name].reshape(-1).view(np.uint8))
