"""Threefry-2x32 random bits as straight-line code, for JAX's CPU backend.

JAX lowers its threefry hash on CPU as a rolled loop of five steps; each step
reads and writes two ``uint32`` arrays of the output's size, so a draw of ``n``
values moves about 40n bytes through memory and holds 8n bytes of temporaries
(3x a float32 output, 8x a bfloat16 one). Written out as twenty rounds of
``jax.numpy`` integer ops, the same hash fuses into one elementwise loop that
computes every output element from its position in registers: no temporaries,
and a several times faster draw.

:func:`fast_key` re-types a key so that ``jax.random`` samplers draw its bits
through that straight-line hash on CPU, and through JAX's own threefry on every
other backend (GPU and TPU already lower it unrolled). The bits are JAX's,
bit for bit: ``jax.random.uniform(fast_key(k), ...)`` equals
``jax.random.uniform(k, ...)`` for every shape, dtype and sharding, so results
never depend on which path ran. Only public JAX API is used: the re-typed key
is a PRNG implementation defined with :func:`jax.extend.random.define_prng_impl`
whose ``split`` and ``fold_in`` are threefry's own.

Under ``vmap`` (stacked layers: one draw per key of a batch) the hash runs
once on the broadcast batch through a ``jax.custom_batching.custom_vmap``
rule, instead of being traced through every op's batching rule: the same
integer ops on the same elements, lowered in about a third of the time.

The fast path covers what ``jax.random.bits`` does with
``jax_threefry_partitionable`` on (JAX's default): the output element at flat
index ``i`` is ``threefry2x32(key, (hi32(i), lo32(i)))`` with the two output
words xor-ed (8- and 16-bit draws keep the low bits; 64-bit draws concatenate
the words). JAX's own bits are used when that flag is off, for arrays of 2**32
elements or more, and for keys of other implementations (``rbg``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

__all__ = ["fast_key", "threefry_bits"]

Array = jax.Array

_THREEFRY = "threefry2x32"
_PARITY = np.uint32(0x1BD11BDA)  # Threefish key-schedule parity constant
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_UINT = {
    8: np.dtype(np.uint8),
    16: np.dtype(np.uint16),
    32: np.dtype(np.uint32),
    64: np.dtype(np.uint64),
}


# The hash is written in lax primitives, not jax.numpy operators: the same ops,
# but tracing them skips jax.numpy's argument checks and promotion, which made
# up most of the time to trace and lower one sampler (it runs once per shape).
_add, _xor = lax.add, lax.bitwise_xor


def _rotl(x: Array, d: int) -> Array:
    return lax.bitwise_or(
        lax.shift_left(x, np.uint32(d)), lax.shift_right_logical(x, np.uint32(32 - d))
    )


def _threefry2x32(
    k0: ArrayLike, k1: ArrayLike, x0: ArrayLike, x1: ArrayLike
) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher, 20 rounds, on counter words ``(x0, x1)``."""
    ks = (k0, k1, _xor(_xor(k0, k1), _PARITY))
    x0, x1 = _add(x0, ks[0]), _add(x1, ks[1])
    for step in range(5):
        for r in _ROTATIONS[step % 2]:
            x0 = _add(x0, x1)
            x1 = _xor(x0, _rotl(x1, r))
        x0 = _add(x0, ks[(step + 1) % 3])
        x1 = _add(x1, _add(ks[(step + 2) % 3], np.uint32(step + 1)))
    return x0, x1


def _flat_index(shape: tuple[int, ...]) -> Array:
    """The row-major index of every element, mod 2**32, built from per-axis iotas.

    A sum of broadcast iotas (not a reshaped 1-D iota) lets the SPMD partitioner
    give each device only its own block of indices.
    """
    if not shape:
        return jnp.zeros((), np.uint32)
    index, stride = None, 1
    for axis in reversed(range(len(shape))):
        term = lax.broadcasted_iota(np.uint32, shape, axis)
        if stride != 1:
            term = lax.mul(term, np.uint32(stride))
        index = term if index is None else _add(index, term)
        stride *= shape[axis]
    assert index is not None  # shape is not empty
    return index


def threefry_bits(key_data: Array, bit_width: int, shape: tuple[int, ...]) -> Array:
    """``jax.random.bits`` of a threefry key, computed by the straight-line hash.

    ``key_data`` is one raw key, shape ``(2,)`` uint32, or a batch of them,
    shape ``(n, 2)``, giving ``(n, *shape)``: each key's bits. Valid for arrays
    of fewer than 2**32 elements under ``jax_threefry_partitionable`` (the
    high counter word is then zero); callers check both (:func:`_random_bits`
    does).
    """
    lo = _flat_index(shape)
    k0, k1 = (lax.index_in_dim(key_data, i, axis=-1, keepdims=False) for i in (0, 1))
    if key_data.ndim == 2:  # a batch: every key's words broadcast over its own draw
        full = (key_data.shape[0], *shape)
        lo = lax.broadcast_in_dim(lo, full, tuple(range(1, len(full))))
        k0, k1 = (lax.broadcast_in_dim(k, full, (0,)) for k in (k0, k1))
    w0, w1 = _threefry2x32(k0, k1, np.uint32(0), lo)
    if bit_width == 64:
        u64 = _UINT[64]
        return lax.shift_left(w0.astype(u64), u64.type(32)) | w1.astype(u64)
    bits = _xor(w0, w1)
    return bits if bit_width == 32 else bits.astype(_UINT[bit_width])


def _jax_bits(key_data: Array, bit_width: int, shape: tuple[int, ...]) -> Array:
    key = jax.random.wrap_key_data(key_data, impl=_THREEFRY)
    return jax.random.bits(key, shape, _UINT[bit_width])


def _random_bits(key_data: Array, bit_width: int, shape: tuple[int, ...]) -> Array:
    shape = tuple(shape)
    static = all(isinstance(d, (int, np.integer)) for d in shape)
    if not (static and math.prod(shape) < 2**32 and jax.config.jax_threefry_partitionable):  # pyright: ignore[reportAttributeAccessIssue]
        return _jax_bits(key_data, bit_width, shape)

    def bits(keys: Array, batched: bool) -> Array:
        jax_bits = functools.partial(_jax_bits, bit_width=bit_width, shape=shape)
        return lax.platform_dependent(
            keys,
            cpu=lambda k: threefry_bits(k, bit_width, shape),
            default=jax.vmap(jax_bits) if batched else jax_bits,
        )

    # A batch of keys (vmap: stacked layers) is hashed as one broadcast array,
    # not traced through every op's batching rule: the same ops, lowered once.
    draw = jax.custom_batching.custom_vmap(lambda k: bits(k, False))
    draw.def_vmap(lambda size, batched, k: (bits(k, batched[0]), batched[0]))
    return draw(key_data)


def _split(key_data: Array, shape: tuple[int, ...]) -> Array:
    keys = jax.random.split(jax.random.wrap_key_data(key_data, impl=_THREEFRY), shape)
    return jax.random.key_data(keys)


def _fold_in(key_data: Array, data: Any) -> Array:
    key = jax.random.wrap_key_data(key_data, impl=_THREEFRY)
    return jax.random.key_data(jax.random.fold_in(key, data))


def _seed(seed: Any) -> Array:
    return jax.random.key_data(jax.random.key(seed, impl=_THREEFRY))


_FAST_THREEFRY = jex.random.define_prng_impl(
    key_shape=(2,),
    seed=_seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="initjax_threefry2x32",
    tag="ijfry",
)


def _is_threefry(key: Any) -> bool:
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == _THREEFRY
    # A raw uint32 key means the default implementation; leave it to jax.random
    # when jax would warn about or refuse raw keys, so that it still does.
    return (
        dtype == np.uint32
        and np.shape(key)[-1:] == (2,)
        and jax.config.jax_default_prng_impl == _THREEFRY  # pyright: ignore[reportAttributeAccessIssue]
        and jax.config.jax_legacy_prng_key == "allow"  # pyright: ignore[reportAttributeAccessIssue]
    )


def fast_key(key: Any) -> Any:
    """``key``, re-typed to draw its bits through the straight-line threefry on CPU.

    Accepts what ``jax.random`` samplers accept: a typed key
    (``jax.random.key``) or a raw ``uint32`` key (``jax.random.PRNGKey``), also
    under ``jit`` and ``vmap``. ``jax.random.uniform(fast_key(k), ...)`` gives
    exactly ``jax.random.uniform(k, ...)``; so do ``normal``, ``bits`` and every
    sampler built on ``bits``. Keys of other implementations (``rbg``,
    ``unsafe_rbg``) and anything else come back unchanged.
    """
    if not _is_threefry(key):
        return key
    data = key if key.dtype == np.uint32 else jax.random.key_data(key)
    return jax.random.wrap_key_data(data, impl=_FAST_THREEFRY)
