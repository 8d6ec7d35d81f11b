"""One Flax variable from its torch tensors, read and placed shard by shard.

For each distinct shard of the target's sharding held by this process's
devices, the host reads what that shard is made of, converts it, hands it to
the shard's devices and drops it, so the host holds one shard (plus a small
staging buffer) at a time, never the whole checkpoint. When the rule's
conversion is a :class:`~initjax.port.rules.Layout` (only moves elements) the
shard's box of the torch tensor is read from the file and nothing else; other
conversions (a flipped kernel, summed biases) read their tensors whole, once
per variable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from . import _tiled
from . import rules as R
from ._checkpoint import Box, Tensor

__all__ = ["place", "reader", "shard_boxes"]

_CHUNK = 1 << 22  # bytes of torch rows converted at a time


def _box(index: Any, shape: tuple[int, ...]) -> Box:
    out = []
    for s, d in zip(index, shape, strict=True):
        lo, hi, step = s.indices(d)
        if step != 1:
            raise ValueError(f"shard index {index} of {shape} has a step")
        out.append((lo, hi))
    return tuple(out)


def _read_layout(
    layout: R.Layout,
    tensor: Tensor,
    dtype: np.dtype,
    shape: tuple[int, ...],
    box: Box,
    staging: list[np.ndarray],
) -> np.ndarray | None:
    """``value[box]`` from just the box of ``tensor`` it is made of (``None``: not a box)."""
    if not tensor.shape or not shape:
        return None
    src = layout.source_box(tensor.shape, shape, box)
    if src is None:
        return None
    perm = layout.perm if layout.perm != tuple(range(len(tensor.shape))) else None
    lens = [hi - lo for lo, hi in src]
    moved = [lens[p] for p in perm] if perm is not None else lens
    out = np.empty(moved, dtype)
    if perm is None and dtype == tensor.dtype:
        tensor.read(src, out=out)
    else:
        axis = perm.index(0) if perm is not None else 0
        row = math.prod(lens[1:]) * tensor.dtype.itemsize
        m = max(1, _CHUNK // max(row, 1))
        size = min(m, lens[0]) * row
        if not staging or staging[0].size < size:  # one buffer for all shards of a variable
            staging[:] = [np.empty(size, np.uint8)]
        scratch = staging[0]
        (lo, hi), rest = src[0], src[1:]
        for r0 in range(lo, hi, m):
            r1 = min(r0 + m, hi)
            raw = scratch[: (r1 - r0) * row].view(tensor.dtype).reshape(r1 - r0, *lens[1:])
            tensor.read(((r0, r1), *rest), out=raw)
            dst = out[(slice(None),) * axis + (slice(r0 - lo, r1 - lo),)]
            _tiled.copy(dst, raw if perm is None else np.transpose(raw, perm))
    return out.reshape(tuple(hi - lo for lo, hi in box))


def _whole(spec: R.Spec, tensors: Sequence[Tensor], dtype: np.dtype, shape, where: str):
    arrays = [np.asarray(t.read(), dtype=dtype) for t in tensors]
    value = np.asarray(spec.convert(*arrays, shape=shape))
    if value.shape != shape:  # a rule bug, never user input
        raise AssertionError(f"rule produced {value.shape} for {where} {shape}")
    return value


def reader(
    spec: R.Spec, tensors: Sequence[Tensor], shape: tuple[int, ...], dtype: Any, where: str
) -> Callable[[Box], np.ndarray]:
    """``part(box)``: the box of the Flax variable ``spec`` computes from ``tensors``.

    A :class:`~initjax.port.rules.Layout` reads just the box of its tensor; other
    conversions read their tensors whole, once, on the first call.

    Raises:
      NotRepresentable: from the rule's conversion.
    """
    dtype = np.dtype(dtype)
    layout = spec.convert if isinstance(spec.convert, R.Layout) and len(tensors) == 1 else None
    whole: np.ndarray | None = None
    staging: list[np.ndarray] = []

    def part(box: Box) -> np.ndarray:
        nonlocal whole
        if layout is not None:
            value = _read_layout(layout, tensors[0], dtype, shape, box, staging)
            if value is not None:
                return value
        if whole is None:
            whole = _whole(spec, tensors, dtype, shape, where)
        return _tiled.contiguous(whole[tuple(slice(lo, hi) for lo, hi in box)])

    return part


def shard_boxes(sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> dict[Box, list[Any]]:
    """Each distinct box of ``shape`` that ``sharding`` puts on this process's devices."""
    groups: dict[Box, list[Any]] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        groups.setdefault(_box(index, shape), []).append(device)
    return groups


def place(
    spec: R.Spec,
    tensors: Sequence[Tensor],
    shape: tuple[int, ...],
    dtype: Any,
    sharding: jax.sharding.Sharding | None,
    where: str,
) -> jax.Array:
    """The Flax variable ``spec`` computes from ``tensors``, on ``sharding``'s devices.

    ``sharding=None``: one uncommitted array on the default device.

    Raises:
      NotRepresentable: from the rule's conversion.
    """
    part = reader(spec, tensors, shape, dtype, where)
    if sharding is None:
        placed = jax.device_put(part(tuple((0, d) for d in shape)))  # uncommitted, as jnp.asarray
    else:
        arrays = []
        for box, devices in shard_boxes(sharding, shape).items():
            host = part(box)
            arrays += [jax.device_put(host, d) for d in devices]
            del host
        placed = jax.make_array_from_single_device_arrays(shape, sharding, arrays)
    # device_put copies asynchronously and keeps its host buffer until the copy
    # is done: wait for it here, so that no host copy of this variable is alive
    # while the next one is read (the peak stays one tensor's worth).
    return placed.block_until_ready()
