"""Writing a checkpoint as the Hugging Face Hub lays it out: safetensors files and an index.

Up to ``max_shard_size`` bytes of tensors go in each file, in the order given
(a tensor larger than that gets a file of its own). One file is named
``model.safetensors``; several are ``model-00001-of-0000N.safetensors`` with a
``model.safetensors.index.json`` whose ``weight_map`` names each tensor's
file, the layout ``transformers``' ``from_pretrained`` loads. Every file
carries the metadata ``{"format": "pt"}`` that ``transformers`` requires.

Each file is written through :func:`initjax.port._atomic.atomic_write`, its tensors
produced one at a time (so the host holds one tensor, not the checkpoint), and
the index last: a reader never finds an index naming a file not yet complete.
Shards never overwrite a file already in the directory: where an earlier save
left files of the Hub's names, the new shards are named
``model-0000i-of-0000N-<tag>.safetensors`` (a fresh random tag; the index
names them, which is all ``from_pretrained`` reads), so until the new index
replaces the old one a reader sees the old checkpoint whole, and a save that
fails leaves it intact (and removes the new shards it wrote). Files of the
earlier save that the new one does not use (shards, a single file or an
index) are removed after it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ._atomic import atomic_write
from ._safetensors import storable, write_safetensors

__all__ = ["save_checkpoint", "write_checkpoint", "parse_size", "Entry"]

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}(-[0-9a-f]{8})?\.safetensors$")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}

#: One tensor to write: ``(name, shape, dtype)``.
Entry = tuple[str, tuple[int, ...], np.dtype]


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``"5GB"`` (10**9) or ``"500MiB"`` (2**20)."""
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, re.IGNORECASE)
        if m is None:
            raise ValueError(
                f"max_shard_size {size!r} is not a size such as '5GB', '500MB' or '2GiB'"
            )
        size = int(float(m[1]) * _UNITS[(m[2] or "").upper()])
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"max_shard_size must be a positive number of bytes, got {size!r}")
    return size


def _write_file(
    path: str,
    entries: Sequence[Entry],
    produce: Callable[[str], np.ndarray],
    metadata: Mapping[str, str],
) -> None:
    layouts = {name: (storable(name, dtype), tuple(shape)) for name, shape, dtype in entries}
    write_safetensors(path, layouts, produce, metadata)


def _shard_names(directory: str, n: int) -> list[str]:
    """The Hub's shard names, or with a fresh tag where one of them is taken (see above)."""
    names = [f"model-{i:05d}-of-{n:05d}" for i in range(1, n + 1)]
    tag = ""
    while any(os.path.lexists(os.path.join(directory, f"{m}{tag}.safetensors")) for m in names):
        tag = f"-{secrets.token_hex(4)}"
    return [f"{m}{tag}.safetensors" for m in names]


def write_checkpoint(
    directory: str | os.PathLike[str],
    entries: Sequence[Entry],
    produce: Callable[[str], np.ndarray],
    *,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``entries``, each produced by ``produce(name)`` when its turn comes."""
    limit = parse_size(max_shard_size)
    meta = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("safetensors metadata must map strings to strings")
    names = [e[0] for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or not all(isinstance(n, str) and n != "__metadata__" for n in names):
        raise ValueError(f"tensor names must be distinct strings; repeated: {twice}")
    for name, _, dtype in entries:
        storable(name, dtype)
    files: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        nbytes = math.prod(entry[1]) * np.dtype(entry[2]).itemsize
        if files[-1] and size + nbytes > limit:
            files.append([])
            size = 0
        files[-1].append(entry)
        size += nbytes
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    n = len(files)
    file_names = [SINGLE] if n == 1 else _shard_names(directory, n)
    written = []
    try:
        for name, group in zip(file_names, files, strict=True):
            path = os.path.join(directory, name)
            _write_file(path, group, produce, meta)
            written.append(path)
        if n > 1:
            weight_map = {
                e[0]: name for name, group in zip(file_names, files, strict=True) for e in group
            }
            index = {
                "metadata": {
                    "total_size": sum(math.prod(s) * np.dtype(d).itemsize for _, s, d in entries)
                },
                "weight_map": dict(sorted(weight_map.items())),
            }
            path = os.path.join(directory, INDEX)
            with atomic_write(path) as f:
                f.write(json.dumps(index, indent=2).encode("utf-8") + b"\n")
            written.append(path)
    except BaseException:
        if n > 1:  # new shards, under names no earlier file had: the old index never names them
            for path in written:
                os.remove(path)
        raise
    keep = set(file_names) | ({INDEX} if n > 1 else set())
    for stale in os.listdir(directory):
        if stale not in keep and (_SHARD.match(stale) or stale in (SINGLE, INDEX)):
            os.remove(os.path.join(directory, stale))
    return written


def save_checkpoint(
    directory: str | os.PathLike[str],
    tensors: Mapping[str, object],
    *,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write a state_dict (numpy or JAX arrays by torch key) as safetensors files with an index.

    The layout of ``transformers``' ``save_pretrained(directory,
    max_shard_size=...)``: ``model.safetensors`` when everything fits in
    ``max_shard_size`` (bytes, or a string such as ``"5GB"`` or ``"2GiB"``),
    else ``model-0000i-of-0000N.safetensors`` files and
    ``model.safetensors.index.json``. Tensors are filled into files in the
    mapping's order. JAX arrays are copied to the host one at a time, as they
    are written. Every file is written atomically.

    Returns:
      The paths written, the index last.
    """
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if shape is None or dtype is None:
            value = np.asarray(value)
            shape, dtype = value.shape, value.dtype
        entries.append((name, tuple(shape), np.dtype(dtype)))

    def produce(name: str) -> np.ndarray:
        return np.asarray(tensors[name])

    return write_checkpoint(
        directory, entries, produce, max_shard_size=max_shard_size, metadata=metadata
    )
