"""Checkpoints as lazy tensors: one file, a directory, or an index over several files.

A Hugging Face-style checkpoint of a large model is several files plus an
index (``model.safetensors.index.json`` or ``pytorch_model.bin.index.json``)
whose ``weight_map`` names the file of every tensor. :func:`open_checkpoint`
opens any of these (or a single file, or an in-memory state_dict) as one
mapping from torch key to :class:`Tensor`, reading no tensor data: a tensor's
bytes are read when asked for, and only the part asked for (:meth:`Tensor.read`
takes a box). safetensors files are parsed by :func:`load_safetensors` and then
read with ``pread`` into fresh buffers, so no page of the file stays mapped in
the process; ``.bin`` shards are opened with ``torch.load(weights_only=True,
mmap=True)``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ._safetensors import load_safetensors
from ._source import Source, StateDict, load_one

__all__ = ["Checkpoint", "Tensor", "load_state_dict", "open_checkpoint", "INDEX_NAMES"]

#: Index files a directory is searched for, in this order (safetensors first, as transformers).
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin")

Box = tuple[tuple[int, int], ...]
_CHUNK = 1 << 22  # bytes a strided read stages at a time
_RUN = 1 << 16  # runs at least this long are read one by one, not staged
#: Runs closer than this are read together with the bytes between them, staged: copying
#: under 512 bytes costs less than the system call that skipping them takes. Farther
#: apart (a column shard of a kernel), each run is read alone: a box reads its bytes only.
_GAP = 512


class Tensor:
    """One torch tensor of a checkpoint, not yet read: ``shape``, ``dtype``, ``file``.

    ``np.asarray(tensor)`` reads it whole; :meth:`read` reads a box of it.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype, file: str | None):
        self.name, self.shape, self.dtype, self.file = name, shape, np.dtype(dtype), file

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def position(self) -> tuple[str, int]:
        """Where the bytes are (file, offset): reading in this order reads files in order."""
        return (self.file or "", 0)

    def read(self, box: Box | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """``tensor[box]`` (``(lo, hi)`` per axis; ``None``: all) as a host array.

        With ``out`` (C-contiguous, the box's shape and the tensor's dtype) the
        values are written there and ``out`` is returned; without it the result
        may be a read-only view that is valid until the checkpoint is closed.
        """
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        value = self.read()
        return value if dtype is None else value.astype(dtype, copy=False)

    def __repr__(self) -> str:
        where = f" in {os.path.basename(self.file)}" if self.file else ""
        return f"Tensor({self.name!r}, {self.shape}, {self.dtype}{where})"


def _slices(box: Box) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


def _full(shape: tuple[int, ...]) -> Box:
    return tuple((0, d) for d in shape)


class _ArrayTensor(Tensor):
    """A numpy array; when it is a view of a memory-mapped file, read with ``pread``."""

    def __init__(self, name: str, array: np.ndarray, file: str | None):
        super().__init__(name, tuple(array.shape), array.dtype, file)
        self._array = array
        self._span = _file_span(array)

    @property
    def position(self) -> tuple[str, int]:
        return (self._span or (self.file or "", 0))[0], (self._span or ("", 0))[1]

    def read(self, box=None, out=None):
        box = _full(self.shape) if box is None else tuple(box)
        if self._span is None or math.prod(hi - lo for lo, hi in box) == 0:
            part = self._array[_slices(box)]
            if out is None:
                return part
            np.copyto(out, part)
            return out
        if out is None:
            out = np.empty(tuple(hi - lo for lo, hi in box), self.dtype)
        path, offset = self._span
        fd = os.open(path, os.O_RDONLY)
        try:
            _read_box(fd, offset, self.shape, self.dtype.itemsize, box, out)
        finally:
            os.close(fd)
        return out


def _file_span(array: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset) of a C-contiguous view of an ``np.memmap``, else ``None``."""
    base: Any = array
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    filename = getattr(base, "filename", None)
    if not isinstance(base, np.memmap) or filename is None or not array.flags.c_contiguous:
        return None
    return os.fspath(filename), int(base.offset) + (array.ctypes.data - base.ctypes.data)


def _pread(fd: int, offset: int, buf: memoryview) -> None:
    while len(buf):
        n = os.preadv(fd, [buf], offset)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        buf, offset = buf[n:], offset + n


def _read_box(
    fd: int, base: int, shape: tuple[int, ...], itemsize: int, box: Box, out: np.ndarray
) -> None:
    """Read ``box`` of a C-ordered array stored at byte ``base`` of ``fd`` into ``out``.

    Reads each contiguous run of the box directly into ``out``; short runs less
    than ``_GAP`` bytes apart are staged through a bounded buffer, from the
    first run of a block of rows to its last, gaps included, instead of one
    system call per run.
    """
    k = len(shape) - 1
    while k >= 0 and box[k] == (0, shape[k]):
        k -= 1
    data = memoryview(out.reshape(-1).view(np.uint8).data)
    if k < 0:  # the whole tensor: one run
        _pread(fd, base, data)
        return
    lens = [hi - lo for lo, hi in box]
    inner = math.prod(shape[k + 1 :]) * itemsize  # bytes per index of axis k
    run = lens[k] * inner
    strides = [math.prod(shape[a + 1 :]) * itemsize for a in range(len(shape))]
    row = shape[k] * inner
    if run >= _RUN or k == 0 or row > _CHUNK or row - run >= _GAP:
        starts = np.full((), base + box[k][0] * inner, np.int64)  # each run's first byte
        for (lo, hi), stride in zip(box[:k], strides, strict=False):
            starts = starts[..., None] + np.arange(lo, hi, dtype=np.int64) * stride
        for pos, offset in zip(range(0, len(data), run), starts.ravel().tolist(), strict=True):
            piece = data[pos : pos + run]
            if os.preadv(fd, [piece], offset) != run:  # a short read: finish it
                _pread(fd, offset, piece)
        return
    staged = out.reshape(-1).view(np.uint8).reshape(*lens[:k], run)
    m = max(1, _CHUNK // row)
    scratch = np.empty(m * row, np.uint8)
    lo_k1, hi_k1 = box[k - 1]
    first, last = box[k][0] * inner, box[k][1] * inner  # the run's bytes within a row
    for idx in itertools.product(*(range(lo, hi) for lo, hi in box[: k - 1])):
        offset = base + sum(i * s for i, s in zip(idx, strides, strict=False))
        dst = staged[tuple(i - lo for i, (lo, _) in zip(idx, box, strict=False))]
        for r0 in range(lo_k1, hi_k1, m):
            r1 = min(r0 + m, hi_k1)
            buf = scratch[: (r1 - r0) * row]
            span = buf[first : len(buf) - (row - last)]  # first run's start to last run's end
            _pread(fd, offset + r0 * row + first, memoryview(span.data))
            rows = buf.reshape(r1 - r0, row)
            dst[r0 - lo_k1 : r1 - lo_k1] = rows[:, first:last]


class _TorchTensor(Tensor):
    """A tensor of a ``.bin`` shard opened with ``torch.load(..., mmap=True)``."""

    def __init__(self, name: str, tensor: Any, file: str):
        dtype = load_one({name: tensor.new_empty((0,))})[name].dtype
        super().__init__(name, tuple(tensor.shape), dtype, file)
        self._tensor = tensor

    def read(self, box=None, out=None):
        part = self._tensor if box is None else self._tensor[_slices(tuple(box))]
        value = load_one({self.name: part})[self.name]
        if out is None:
            return value
        np.copyto(out, value)
        return out


class Checkpoint(Mapping[str, Tensor]):
    """A torch state_dict of :class:`Tensor`, read lazily, possibly over several files.

    ``files`` lists the files it is read from (empty for an in-memory
    state_dict); ``file_of(key)`` names the file that holds a key.
    """

    def __init__(self, tensors: Mapping[str, Tensor], files: tuple[str, ...] = ()):
        self._tensors = dict(tensors)
        self.files = files

    def __getitem__(self, key: str) -> Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def file_of(self, key: str) -> str | None:
        return self._tensors[key].file

    def __repr__(self) -> str:
        return f"Checkpoint({len(self)} tensors in {len(self.files)} files)"


def open_checkpoint(source: Source | Checkpoint) -> Checkpoint:
    """A checkpoint's tensors by torch key, with shapes and dtypes, none of them read yet.

    ``source`` may be:

    - a directory holding ``model.safetensors.index.json`` or
      ``pytorch_model.bin.index.json`` (as ``save_pretrained`` writes them), or
      one ``model.safetensors`` / ``pytorch_model.bin``, or ``.safetensors``
      files without an index (taken together);
    - an index file (``*.index.json``): its ``weight_map`` gives every
      tensor's file, in the index's directory;
    - a single checkpoint file or an in-memory state_dict, as
      :func:`load_state_dict` reads them.

    Raises:
      FileNotFoundError: no checkpoint in the directory, or a file the index
        names is missing (the message names it and keys it should hold).
      ValueError: an index that is not a ``weight_map`` of names to file names
        in its directory; a key the index places in a file that does not hold
        it; a key held by two files, or by a file the index does not place it in.
    """
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, Mapping):
        return Checkpoint({k: _ArrayTensor(k, v, None) for k, v in load_one(source).items()})
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path or a state_dict mapping, got {type(source).__name__}"
        )
    path = os.fspath(source)
    if os.path.isdir(path):
        return _open_directory(path)
    if path.endswith(".index.json"):
        return _open_index(path)
    return _open_files([path])


def _open_directory(directory: str) -> Checkpoint:
    names = sorted(os.listdir(directory))
    for index in INDEX_NAMES:
        if index in names:
            return _open_index(os.path.join(directory, index))
    for kind in (".safetensors.index.json", ".bin.index.json"):
        found = [n for n in names if n.endswith(kind)]
        if len(found) > 1:
            raise ValueError(f"{directory!r} holds several indexes {found}; pass one of them")
        if found:
            return _open_index(os.path.join(directory, found[0]))
    for single in _SINGLE_NAMES:
        if single in names:
            return _open_files([os.path.join(directory, single)])
    shards = [n for n in names if n.endswith(".safetensors")]
    if shards:
        return _open_files([os.path.join(directory, n) for n in shards])
    raise FileNotFoundError(
        f"{directory!r} holds no checkpoint: expected {' or '.join(INDEX_NAMES)}, "
        f"{' or '.join(_SINGLE_NAMES)}, or .safetensors files"
    )


def _open_index(index: str) -> Checkpoint:
    try:
        with open(index, encoding="utf-8") as f:
            doc = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"index {index!r} is not UTF-8 JSON ({e})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(f"index {index!r} has no 'weight_map' of tensor names to file names")
    directory = os.path.dirname(os.path.abspath(index))
    per_file: dict[str, list[str]] = {}
    for key, name in weight_map.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(
                f"index {index!r} places {key!r} in {name!r}; files must be plain names "
                "in the index's directory"
            )
        per_file.setdefault(name, []).append(key)
    absent = [n for n in per_file if not os.path.isfile(os.path.join(directory, n))]
    if absent:
        lines = [
            f"  - {n} (holds {len(per_file[n])} keys, e.g. {per_file[n][0]!r})" for n in absent
        ]
        raise FileNotFoundError(
            f"index {index!r} names files missing from {directory!r}:\n" + "\n".join(lines)
        )
    files = [os.path.join(directory, n) for n in per_file]
    checkpoint = _open_files(files)
    wrong = []
    for key, name in weight_map.items():
        if key not in checkpoint:
            wrong.append(f"  - {key!r}: the index places it in {name}, which does not hold it")
        elif os.path.basename(checkpoint.file_of(key) or "") != name:
            held = os.path.basename(checkpoint.file_of(key) or "")
            wrong.append(f"  - {key!r}: the index places it in {name}, but {held} holds it")
    wrong += [
        f"  - {key!r}: held by {os.path.basename(checkpoint.file_of(key) or '')}, "
        "but not in the index"
        for key in checkpoint
        if key not in weight_map
    ]
    if wrong:
        raise ValueError(f"index {index!r} and its files disagree:\n" + "\n".join(wrong))
    return checkpoint


def _open_files(paths: list[str]) -> Checkpoint:
    tensors: dict[str, Tensor] = {}
    twice = []
    for path in paths:
        for key, tensor in _open_file(path).items():
            if key in tensors:
                held = os.path.basename(tensors[key].file or "")
                twice.append(f"  - {key!r}: in {held} and {os.path.basename(path)}")
                continue
            tensors[key] = tensor
    if twice:
        raise ValueError("two checkpoint files hold the same key:\n" + "\n".join(twice))
    return Checkpoint(tensors, tuple(paths))


def _open_file(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        arrays = load_safetensors(path)
        assert isinstance(arrays, dict)
        return {k: _ArrayTensor(k, v, path) for k, v in arrays.items()}
    lazy = _load_bin_lazily(path)
    if lazy is not None:
        return {k: _TorchTensor(k, v, path) for k, v in lazy.items()}
    return {k: _ArrayTensor(k, v, path) for k, v in load_one(path).items()}


def _load_bin_lazily(path: str) -> dict[str, Any] | None:
    """A ``.bin`` state_dict as memory-mapped torch tensors, or ``None`` to load it whole.

    Anything but a plain state_dict of tensors in torch's zip format (a legacy
    file, a refused pickle, a nested object) returns ``None``, and
    :func:`load_state_dict` then loads the file, or refuses it, with its messages.
    """
    try:
        import torch
    except ImportError:
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # load_state_dict re-reads it and says what is wrong
        return None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and not v.is_sparse
        for k, v in obj.items()
    ):
        return None
    return dict(obj)


def load_state_dict(source: Source) -> StateDict:
    """A PyTorch state_dict, from a file or from memory, as numpy arrays.

    ``source`` may be:

    - a safetensors file (named ``*.safetensors``, or any name when its
      content is safetensors): read with initjax's own reader (no torch
      needed), memory-mapped; a malformed one raises
      :class:`~initjax.port.SafetensorsError`;
    - any other file (``.pt``, ``.pth``, ``.bin``, ...): loaded with
      ``torch.load(path, map_location="cpu", weights_only=True)``; anything that
      restricted unpickler refuses raises :class:`UnsafeCheckpointError` and is
      never executed;
    - a mapping of names to torch tensors, numpy arrays or JAX arrays (e.g.
      ``torch_model.state_dict()``);
    - a checkpoint of several files: a directory or an index file
      (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``), as
      :func:`~initjax.port.open_checkpoint` reads them; every tensor is read.

    bfloat16 and float8 tensors become ``ml_dtypes`` arrays; values are not
    cast. The result shares memory with the source where it can. A sparse or
    meta tensor raises ``ValueError`` naming its key.
    """
    if isinstance(source, (str, os.PathLike)) and (
        os.path.isdir(source) or os.fspath(source).endswith(".index.json")
    ):
        return {key: np.asarray(t.read()) for key, t in open_checkpoint(source).items()}
    return load_one(source)
