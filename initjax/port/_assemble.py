"""One Flax array assembled on its devices from pieces written into it, layer by layer.

A piece (a torch tensor after its layout ops, or part of one) lands in a box of
the array. The array is built one *slab* at a time: the whole array, or, for a
stacked array, one layer of it (the layer axis must not be sharded). Each
piece's part in each shard of the slab is copied to the host tile by tile
(:mod:`._tiled`), sent to that shard's devices and dropped; when a slab is
complete, it becomes one array with the slab's sharding, and a stacked array
takes it in place (a donated ``dynamic_update_slice``, one compile per array
shape). The host holds at most one shard of one slab at a time, plus the
shards of a slab that several pieces share (a fused kernel's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._tiled import contiguous
from ._tiled import copy as tiled_copy

__all__ = ["Assembler", "Lazy", "check_sharding"]

Box = tuple[tuple[int, int], ...]

_update = jax.jit(
    lambda buf, x, *start: jax.lax.dynamic_update_slice(buf, x, start), donate_argnums=0
)


def _slab_sharding(sharding: Any, layer_axis: int | None) -> Any:
    """The sharding of one slab (the array, or one layer of it), or ``None`` if none fits."""
    if sharding is None or layer_axis is None:
        return sharding
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * max(0, layer_axis + 1 - len(sharding.spec))
        return sharding if spec[layer_axis] is None else None
    return None


def check_sharding(shape: tuple[int, ...], sharding: Any, layer_axis: int | None) -> str | None:
    """Why an array of ``shape`` cannot be assembled with ``sharding`` (``None``: it can)."""
    if sharding is None:
        return None
    try:
        sharding.addressable_devices_indices_map(shape)
    except ValueError as e:
        return (
            f"its sharding does not fit its shape ({e}); a stacked axis missing from the spec? "
            "nnx.vmap(..., transform_metadata={nnx.PARTITION_NAME: None}) adds it"
        )
    if layer_axis is not None and _slab_sharding(sharding, layer_axis) is None:
        return (
            f"its sharding {sharding} splits the layer axis {layer_axis}; port into the "
            "stack unsharded along its layers (or a NamedSharding), then reshard"
        )
    return None


def _groups(shape: tuple[int, ...], sharding: Any) -> dict[Box, list[Any]]:
    """Each distinct box of ``shape`` held on this process, with the devices holding it."""
    if sharding is None:
        return {tuple((0, d) for d in shape): [None]}
    groups: dict[Box, list[Any]] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        box = tuple(s.indices(d)[:2] for s, d in zip(index, shape, strict=True))
        groups.setdefault(box, []).append(device)
    return groups


def _put(host: np.ndarray, device: Any) -> jax.Array:
    """``host`` on ``device`` (``None``: uncommitted on the default one), copied before return."""
    out = jax.device_put(host) if device is None else jax.device_put(host, device)
    return out.block_until_ready()  # the host buffer may be reused or freed after this


class Lazy:
    """A piece not read yet: its ``shape``, and ``read(box)``: ``piece[box]`` as a
    C-ordered host array, read from the checkpoint alone (``box``: ``(lo, hi)`` per axis)."""

    def __init__(self, shape: tuple[int, ...], read: Callable[[Box], np.ndarray]):
        self.shape, self.read = shape, read


class Assembler:
    """An array of ``shape``/``dtype`` on ``sharding`` (``None``: uncommitted), from pieces.

    ``layer_axis``: the array stacks layers along it, written one layer at a time.
    """

    def __init__(self, shape, dtype, sharding, layer_axis: int | None):
        self.shape, self.dtype, self.sharding = tuple(shape), np.dtype(dtype), sharding
        self.layer_axis = layer_axis
        self.slab = list(self.shape)
        if layer_axis is not None:
            self.slab[layer_axis] = 1
        self.slab_sharding = _slab_sharding(sharding, layer_axis)
        self.groups = _groups(tuple(self.slab), self.slab_sharding)
        self.value: jax.Array | None = None
        # the slab in progress, per layer: the sent shards and the staged partial ones
        self.sent: dict[int, dict[Box, list[jax.Array]]] = {}
        self.staged: dict[int, dict[Box, tuple[np.ndarray, int]]] = {}

    def write(self, piece: np.ndarray | Lazy, start: tuple[int, ...], layer: int) -> None:
        """``piece`` (the array's rank, one layer thick when stacked) at ``start``; a slab
        (the array, or layer ``layer`` of it) is committed once every shard of it is."""
        at = list(start)
        if self.layer_axis is not None:
            at[self.layer_axis] = 0
        sent = self.sent.setdefault(layer, {})
        staged = self.staged.setdefault(layer, {})
        for box, devices in self.groups.items():
            inter = [
                (max(lo, s), min(hi, s + n))
                for (lo, hi), s, n in zip(box, at, piece.shape, strict=True)
            ]
            if any(lo >= hi for lo, hi in inter):
                continue
            own = tuple((lo - s, hi - s) for (lo, hi), s in zip(inter, at, strict=True))
            if isinstance(piece, Lazy):
                part = piece.read(own)
            else:
                part = piece[tuple(slice(lo, hi) for lo, hi in own)]
            if tuple(inter) == box:  # this piece makes the whole shard
                host = part if isinstance(piece, Lazy) else contiguous(part)
                host = host if host.dtype == self.dtype else host.astype(self.dtype)
                sent[box] = [_put(host, d) for d in devices]
                del host
                continue
            buffer, filled = staged.get(box) or (
                np.empty(tuple(hi - lo for lo, hi in box), self.dtype),
                0,
            )
            inside = tuple(
                slice(lo - b, hi - b) for (lo, hi), (b, _) in zip(inter, box, strict=True)
            )
            tiled_copy(buffer[inside], part)
            filled += math.prod(hi - lo for lo, hi in inter)
            if filled == buffer.size:
                sent[box] = [_put(buffer, d) for d in devices]
                del staged[box]
            else:
                staged[box] = (buffer, filled)
        if len(sent) == len(self.groups):
            self._commit(layer, start)

    def _commit(self, layer: int, start: tuple[int, ...]) -> None:
        shards = self.sent.pop(layer)
        self.staged.pop(layer, None)
        if self.slab_sharding is None:
            slab = next(iter(shards.values()))[0]
        else:
            arrays = [a for box in self.groups for a in shards[box]]
            slab = jax.make_array_from_single_device_arrays(
                tuple(self.slab), self.slab_sharding, arrays
            )
        if self.layer_axis is None:
            self.value = slab
            return
        if self.value is None:
            self.value = self._zeros()
        at = [0] * len(self.shape)
        at[self.layer_axis] = start[self.layer_axis]
        self.value = _update(self.value, slab, *at).block_until_ready()

    def _zeros(self) -> jax.Array:
        """The stack's zeros, made on its devices (no host copy)."""
        return jnp.zeros(self.shape, self.dtype, device=self.sharding)

    def result(self) -> jax.Array:
        if self.value is None or self.sent or any(self.staged.values()):
            raise AssertionError("an array was not completely written")  # a table bug
        return self.value
