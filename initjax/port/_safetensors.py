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
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import ml_dtypes
import numpy as np

from ._atomic import atomic_write

__all__ = [
    "DTYPES",
    "Header",
    "SafetensorsError",
    "TensorInfo",
    "load_safetensors",
    "read_header",
    "save_safetensors",
]

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
#: The largest header accepted, in bytes: the reference implementation's limit.
MAX_HEADER_BYTES = 100_000_000
#: The deepest JSON nesting a valid header has: object > tensor entry > shape list.
_MAX_DEPTH = 3
#: numpy's limit on array dimensions.
_MAX_NDIM = 64
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file.

    Raised for every malformed file: a truncated file, a header that is not
    UTF-8 JSON or breaks the schema (unknown dtype, a shape that is not a list
    of non-negative ints, offsets that are not two ints tiling the data
    section exactly, ``__metadata__`` that is not str -> str), a header larger
    than 100 MB or nested deeper than the format allows. The message names
    the file and the bad field. A subclass of ``ValueError``.
    """


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a validated header: its dtype, shape and byte range."""

    dtype: np.dtype
    shape: tuple[int, ...]
    #: Byte range relative to the start of the data section, ``[begin, end)``.
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A validated safetensors header: tensors by name (file order), metadata, data location."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    #: Offset of the data section from the start of the file.
    data_offset: int
    #: Length of the data section in bytes (the tensors tile it exactly).
    data_size: int


class _Number(str):
    """A JSON number no header field may hold (negative, not an integer, or wider than the
    reference's 64-bit sizes), kept as written; shown shortened when long."""

    def __repr__(self) -> str:
        return str(self) if len(self) <= 40 else f"{self[:20]}...({len(self)} digits)"


def _bad(path, why: str) -> SafetensorsError:
    return SafetensorsError(f"{os.fspath(path)!r} is not a valid safetensors file: {why}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(Exception):
    pass


#: Digits of the largest 64-bit size (2**64 - 1); a longer integer is no size, and Python's
#: ``int`` refuses one of over 4300 digits with its own ValueError.
_MAX_DIGITS = 20


def _parse_int(text: str) -> int | _Number:
    return _Number(text) if text.startswith("-") or len(text) > _MAX_DIGITS else int(text)


def _count(value: Any) -> bool:
    """A JSON integer >= 0 (not a bool, a float or a negative number)."""
    return type(value) is int and value >= 0


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate the header of a ``.safetensors`` file; read no tensor data.

    Checks everything the reference implementation checks, and a few more
    things it lets through: the header is a UTF-8 JSON object no larger than
    ``MAX_HEADER_BYTES``, no deeper than the schema, without duplicate keys;
    each tensor has exactly ``dtype`` (a name in ``DTYPES``), ``shape`` (a list
    of ints >= 0) and ``data_offsets`` (two ints ``begin <= end`` whose span is
    ``prod(shape) * itemsize``); the tensors tile the data section exactly,
    with no gap, overlap or trailing byte; ``__metadata__`` maps strings to
    strings (or is ``null``). Sizes the header claims are compared with the
    file's size before anything is allocated.

    Raises:
      SafetensorsError: the first problem found, naming the file and field.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_LEN.size)
        if len(head) < _LEN.size:
            raise _bad(path, f"{size} bytes is too short for the 8-byte header length")
        (n,) = _LEN.unpack(head)
        if n > size - _LEN.size:
            raise _bad(path, f"header length {n} exceeds the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise _bad(path, f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
        raw = f.read(n)
    if not raw.startswith(b"{"):
        raise _bad(path, "header must be a JSON object starting with '{'")
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", raw)):
        depth += 1 if bracket in b"[{" else -1
        if depth > _MAX_DEPTH:
            raise _bad(path, f"header nests deeper than {_MAX_DEPTH} levels")
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_int=_parse_int,
            parse_float=_Number,
            parse_constant=_Number,
        )
    except _Duplicate as e:
        raise _bad(path, f"header repeats the key {e.args[0]!r}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _bad(path, f"__metadata__ must be an object, got {metadata!r}")
    for key, value in metadata.items():
        if not isinstance(value, str) or isinstance(value, _Number):
            raise _bad(path, f"__metadata__[{key!r}] must be a string, got {value!r}")

    data_offset = _LEN.size + n
    data_size = size - data_offset
    tensors = {name: _tensor_info(path, name, entry) for name, entry in header.items()}
    covered = 0
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if info.begin != covered:
            raise _bad(
                path,
                f"tensor {name!r}: data_offsets start at byte {info.begin}, expected {covered} "
                "(tensors must tile the data section without gaps or overlaps)",
            )
        covered = info.end
    if covered != data_size:
        raise _bad(path, f"tensors cover {covered} bytes of a {data_size}-byte data section")
    return Header(tensors, dict(metadata), data_offset, data_size)


def _tensor_info(path, name: str, entry: Any) -> TensorInfo:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise _bad(path, f"{where} must be an object, got {entry!r}")
    if set(entry) != _ENTRY_KEYS:
        missing, extra = sorted(_ENTRY_KEYS - set(entry)), sorted(set(entry) - _ENTRY_KEYS)
        raise _bad(
            path,
            f"{where} must have exactly the keys {sorted(_ENTRY_KEYS)} "
            f"(missing {missing}, unexpected {extra})",
        )
    kind, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if type(kind) is not str or kind not in DTYPES:
        raise _bad(path, f"{where}: dtype {kind!r} is not one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise _bad(path, f"{where}: shape must be a list of ints >= 0, got {shape!r}")
    if len(shape) > _MAX_NDIM:
        raise _bad(path, f"{where}: shape has {len(shape)} dimensions, more than {_MAX_NDIM}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))):
        raise _bad(path, f"{where}: data_offsets must be two ints >= 0, got {offsets!r}")
    begin, end = offsets
    dtype = DTYPES[kind]
    nbytes = math.prod(shape) * dtype.itemsize
    if end < begin or end - begin != nbytes:
        raise _bad(
            path,
            f"{where}: data_offsets {offsets} span {end - begin} bytes, but shape {shape} "
            f"of {kind} needs {nbytes}",
        )
    return TensorInfo(dtype, tuple(shape), begin, end)


@overload
def load_safetensors(
    path: str | os.PathLike[str], *, with_metadata: Literal[False] = False
) -> dict[str, np.ndarray]: ...


@overload
def load_safetensors(
    path: str | os.PathLike[str], *, with_metadata: Literal[True]
) -> tuple[dict[str, np.ndarray], dict[str, str]]: ...


def load_safetensors(
    path: str | os.PathLike[str], *, with_metadata: bool = False
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a ``.safetensors`` file as read-only numpy arrays.

    The arrays are views of a read-only memory map of the file, so they stay
    valid (and unchanged) when the file is later overwritten by
    :func:`save_safetensors`, which replaces the file instead of rewriting it.
    bfloat16 and float8 tensors come back as ``ml_dtypes`` arrays. With
    ``with_metadata=True`` returns ``(tensors, metadata)``.

    Raises:
      SafetensorsError: (a ``ValueError``) for every malformed file; see
        :func:`read_header` for what is checked.
    """
    header = read_header(path)
    data = np.zeros(0, np.uint8)
    if header.data_size:
        data = np.memmap(path, np.uint8, "r", offset=header.data_offset, shape=(header.data_size,))
    tensors = {}
    for name, info in header.tensors.items():
        if info.begin == info.end:
            tensors[name] = np.zeros(info.shape, info.dtype)
        else:
            arr = np.frombuffer(data, info.dtype, math.prod(info.shape), offset=info.begin)
            tensors[name] = arr.reshape(info.shape)
    return (tensors, header.metadata) if with_metadata else tensors


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (numpy or JAX arrays, by name) as a ``.safetensors`` file.

    Tensors are laid out widest dtype first, then by name, after a header padded
    to 8 bytes, so every tensor is aligned as the reference implementation does.
    JAX arrays are copied to the host one at a time, as they are written.

    The write is atomic: the bytes go to a temporary file beside ``path`` that
    replaces it only once complete and flushed to disk. A write that fails
    leaves an existing file byte-identical, and arrays loaded from the old
    file (memory maps) stay valid; saving back over the file the tensors were
    loaded from works.

    Raises:
      TypeError: a name or metadata entry that is not a string, or a dtype
        safetensors cannot store (see ``DTYPES``).
    """
    layouts: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        layouts[name] = _layout(name, value)
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("safetensors metadata must map strings to strings")

    write_safetensors(path, layouts, lambda name: tensors[name], metadata)


def write_safetensors(
    path: str | os.PathLike[str],
    layouts: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
    produce: Callable[[str], Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a ``.safetensors`` file whose tensors are made one at a time, as they are written.

    ``layouts`` gives each tensor's (little-endian, storable) dtype and shape,
    so the header is written first; ``produce(name)`` then returns each tensor
    in file order (widest dtype first, then by name: every tensor aligned, as
    the reference implementation lays them out), and it is dropped once
    written. The write is atomic (:func:`initjax.port._atomic.atomic_write`).

    Raises:
      ValueError: a produced tensor whose shape or dtype is not its layout's.
    """
    order = sorted(layouts, key=lambda k: (-layouts[k][0].itemsize, k))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        dtype, shape = layouts[name]
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_write(path) as f:
        f.write(_LEN.pack(len(text)))
        f.write(text)
        for name in order:
            dtype, shape = layouts[name]
            value = produce(name)
            arr = np.asarray(value, order="C")  # 0-d stays 0-d
            if arr.shape != shape or arr.dtype.newbyteorder("<") != dtype:
                raise ValueError(
                    f"tensor {name!r} came out {arr.shape} {arr.dtype}, laid out as {shape} {dtype}"
                )
            f.write(np.asarray(arr, dtype).reshape(-1).view(np.uint8).data)
            del value, arr


def _layout(name: str, value: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """The (little-endian) dtype and shape ``value`` is saved with, read without a copy."""
    try:
        dtype, shape = np.dtype(value.dtype), tuple(int(d) for d in value.shape)
    except (AttributeError, TypeError):  # a list, a scalar, a torch tensor, ...
        arr = np.asarray(value)
        dtype, shape = arr.dtype, arr.shape
    return storable(name, dtype), shape


def storable(name: str, dtype: Any) -> np.dtype:
    """``dtype`` as tensor ``name`` is stored: little-endian, one of ``DTYPES``.

    Raises:
      TypeError: a dtype safetensors cannot store.
    """
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype not in _NAMES:
        raise TypeError(
            f"tensor {name!r} has dtype {dtype}, which safetensors cannot store; "
            f"allowed: {sorted(str(d) for d in _NAMES)}"
        )
    return dtype
