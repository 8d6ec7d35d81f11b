"""The fast threefry path draws exactly ``jax.random``'s numbers.

``initjax._threefry.fast_key`` re-types a key so that ``jax.random`` takes its
bits from an unrolled threefry on CPU. These tests compare, bit for bit, every
draw through ``fast_key(k)`` with the same draw through ``k`` itself: odd, 0-d,
empty and large shapes, 8/16/32-bit draws and float32/bfloat16/float16
samplers, typed and raw keys, vmapped keys, float64 under x64, every initjax
initializer with the fast path on and off, and (in a subprocess with 8 CPU
devices) sharded outputs and sharded model inits. Speed is measured by
``benchmarks/``, not here; the memory claim (no temporaries) is checked on the
compiled program, which is deterministic.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import initjax as ij
import initjax._sampling as S
from initjax._threefry import fast_key

FLOATS = (jnp.float32, jnp.bfloat16, jnp.float16)


def _draws(key, shape, full: bool = True) -> dict[str, jax.Array]:
    out = {f"bits{w}": jax.random.bits(key, shape, f"uint{w}") for w in (8, 16, 32)}
    for dt in FLOATS if full else FLOATS[:1]:
        name = jnp.dtype(dt).name
        out[f"uniform_{name}"] = jax.random.uniform(key, shape, dt, -2.0, 3.0)
        out[f"normal_{name}"] = jax.random.normal(key, shape, dt)
    return out


def _assert_same(fast: dict, plain: dict, what: str) -> None:
    assert fast.keys() == plain.keys()
    for name in fast:
        a, b = np.asarray(fast[name]), np.asarray(plain[name])
        assert a.dtype == b.dtype and a.shape == b.shape, (what, name)
        bad = a.view(f"u{a.itemsize}") != b.view(f"u{b.itemsize}") if a.size else np.zeros(0)
        assert not bad.any(), f"{what} {name}: {bad.sum()} of {a.size} values differ"


@functools.cache
def _both(shape, full: bool):
    return jax.jit(lambda k: (_draws(fast_key(k), shape, full), _draws(k, shape, full)))


def _compare(key, shape, full: bool = True) -> None:
    fast, plain = _both(shape, full)(key)
    _assert_same(fast, plain, f"shape {shape}")


# Odd sizes, 0-d, empty, unit axes, rank 4, non-power-of-two strides, and one
# large draw (4.2M elements, a 2048-row stride pattern).
SHAPES = [
    (),
    (0,),
    (3, 0),
    (1,),
    (7,),
    (5, 3),
    (1, 1, 1, 1),
    (3, 5, 7, 11),
    (257, 1023),
    (2048, 2049),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_typed_key_every_width_and_dtype(shape):
    _compare(jax.random.key(20240607), shape)


@pytest.mark.parametrize("shape", [(), (9,), (64, 33)], ids=str)
def test_raw_uint32_key(shape):
    key = jax.random.PRNGKey(7)
    assert key.dtype == jnp.uint32
    _compare(key, shape, full=False)


def test_many_seeds():
    # Keys whose words exercise carries in the key schedule (0, all ones, high bits).
    seeds = [0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, -1]
    for seed in seeds:
        _compare(jax.random.key(seed), (13, 17), full=False)


def test_vmapped_keys():
    keys = jax.random.split(jax.random.key(3), 5)
    f = jax.vmap(lambda k: (_draws(fast_key(k), (4, 6)), _draws(k, (4, 6))))
    fast, plain = jax.jit(f)(keys)
    _assert_same(fast, plain, "vmapped keys")
    raw = jax.random.key_data(keys)
    fast, plain = jax.jit(
        jax.vmap(lambda k: (_draws(fast_key(k), (3,), False), _draws(k, (3,), False)))
    )(raw)
    _assert_same(fast, plain, "vmapped raw keys")
    # Nested: a (2, 3) grid of keys, the outer vmap batching the batched-key rule.
    grid = jax.random.split(jax.random.key(4), (2, 3))
    nested = jax.vmap(
        jax.vmap(lambda k: (_draws(fast_key(k), (5,), False), _draws(k, (5,), False)))
    )
    fast, plain = jax.jit(nested)(grid)
    _assert_same(fast, plain, "nested vmap")
    # Raw keys batched along axis 1, and a vmap whose key is not batched at all.
    columns = jax.random.key_data(jax.random.split(jax.random.key(6), 3)).T
    f = jax.vmap(lambda k: (_draws(fast_key(k), (5,), False), _draws(k, (5,), False)), in_axes=1)
    _assert_same(*f(columns), "keys along axis 1")
    key = jax.random.key(8)
    fast, plain = jax.vmap(
        lambda x: (_draws(fast_key(key), (5,), False), _draws(key, (5,), False))
    )(jnp.arange(3.0))
    _assert_same(fast, plain, "unbatched key under vmap")


def test_eager_matches_jit():
    key = jax.random.key(5)
    eager = _draws(fast_key(key), (6, 10), full=False)
    _assert_same(eager, jax.jit(lambda k: _draws(k, (6, 10), False))(key), "eager")


def test_float64_under_x64():
    with jax.enable_x64(True):
        key = jax.random.key(11)
        f = jax.jit(
            lambda k: [
                g(k)
                for g in (
                    lambda k: jax.random.bits(k, (7, 9), jnp.uint64),
                    lambda k: jax.random.uniform(k, (7, 9), jnp.float64, -1.0, 4.0),
                    lambda k: jax.random.normal(k, (7, 9), jnp.float64),
                )
            ]
        )
        fast, plain = jax.jit(lambda k: (f(fast_key(k)), f(k)))(key)
    for a, b in zip(fast, plain, strict=True):
        assert a.dtype in (jnp.uint64, jnp.float64)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_implementations_pass_through(impl):
    key = jax.random.key(1, impl=impl)
    assert fast_key(key) is key
    np.testing.assert_array_equal(
        ij.uniform(-0.5, 0.5)(key, (8, 4)), jax.random.uniform(key, (8, 4), minval=-0.5, maxval=0.5)
    )


def test_non_keys_pass_through():
    # Not keys: left for jax.random to reject with its own error.
    for x in (3, np.zeros(2, np.int32), jnp.zeros(3, jnp.uint32)):
        assert fast_key(x) is x


# ------------------------------------------------------------ initializers ---

INITIALIZERS = {
    "uniform": ij.uniform(-0.5, 2.0),
    "normal": ij.normal(0.1, 0.02),
    "trunc_normal": ij.trunc_normal(0.0, 1.0, -0.5, 2.0),
    "trunc_normal_tail": ij.trunc_normal(0.0, 1.0, 3.0, 5.0),
    "xavier_uniform": ij.xavier_uniform(),
    "xavier_normal": ij.xavier_normal(),
    "kaiming_uniform": ij.kaiming_uniform(math.sqrt(5)),
    "kaiming_normal": ij.kaiming_normal(),
    "orthogonal": ij.orthogonal(),
    "sparse": ij.sparse(0.3),
}


def _all_inits(key) -> dict:
    out = {}
    for name, init in INITIALIZERS.items():
        for dt in (jnp.float32, jnp.bfloat16, jnp.float16):
            if name == "orthogonal" and dt != jnp.float32:
                continue
            out[f"{name}_{jnp.dtype(dt).name}"] = init(key, (24, 40), dt)
    return out


def test_initializers_same_with_fast_path_off():
    key = jax.random.key(42)
    fast = jax.jit(_all_inits)(key)
    fast_hlo = _hlo(_all_inits, key)
    with S.plain_jax_random():
        plain = jax.jit(_all_inits)(key)
        assert _hlo(_all_inits, key) != fast_hlo  # the two paths really ran
    _assert_same(fast, plain, "initializer")


# ----------------------------------------------------------------- lowering ---


def _hlo(fn, key) -> str:
    return jax.jit(fn).lower(key).as_text()


def test_cpu_lowering_is_straight_line_and_temporary_free():
    """On CPU the fast path has no loop and XLA allocates no temporaries."""
    key = jax.random.key(0)
    init = ij.kaiming_uniform(math.sqrt(5))
    assert "stablehlo.while" not in _hlo(lambda k: init(k, (512, 256)), key)
    mem = jax.jit(lambda k: init(k, (512, 256))).lower(key).compile().memory_analysis()
    assert mem.temp_size_in_bytes < 1024, mem  # JAX's own path: 3x the output
    plain = jax.jit(lambda k: jax.random.uniform(k, (512, 256)))
    assert plain.lower(key).compile().memory_analysis().temp_size_in_bytes >= 512 * 256 * 8


def test_huge_arrays_fall_back_to_jax():
    """2**32 elements or more: the 64-bit counter needs JAX's own threefry."""
    key = jax.random.key(0)
    big = (1 << 16, 1 << 16)
    assert "stablehlo.while" in _hlo(lambda k: jax.random.bits(fast_key(k), big), key)
    assert "stablehlo.while" not in _hlo(lambda k: jax.random.bits(fast_key(k), (3, 5)), key)


def test_partitionable_off_falls_back_to_jax():
    key = jax.random.key(9)
    with jax.threefry_partitionable(False):
        fast, plain = jax.jit(
            lambda k: (_draws(fast_key(k), (5, 7), False), _draws(k, (5, 7), False))
        )(key)
        assert "stablehlo.while" in _hlo(lambda k: jax.random.bits(fast_key(k), (5, 7)), key)
    _assert_same(fast, plain, "jax_threefry_partitionable=False")


# ----------------------------------------------------------------- sharding ---


@pytest.fixture(scope="module")
def sharded():
    """Facts from a subprocess with 8 CPU devices (tests/_sharded_init.py)."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
    }
    script = Path(__file__).with_name("_sharded_init.py")
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_draws_equal_unsharded(sharded):
    assert sharded["devices"] == 8
    assert sharded["draw_cases"] >= 10
    assert sharded["draw_mismatches"] == []


def test_out_sharding_initializers_equal_unsharded(sharded):
    assert sharded["out_sharding_cases"] >= 8
    assert sharded["out_sharding_mismatches"] == []


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_sharded_model_init(sharded, api):
    r = sharded[api]
    assert r["values_equal"], f"{api}: sharded init differs from the unsharded one"
    assert r["sharded_params"] >= 5
    # Each device holds exactly its shard of every parameter ...
    assert r["per_device_bytes"] == [r["expected_device_bytes"]] * 8
    assert r["expected_device_bytes"] < r["total_bytes"] / 4
    # ... and its compiled program writes only that, with no full-size scratch.
    assert r["xla_output_bytes"] <= r["expected_device_bytes"] + 4096
    assert r["xla_temp_bytes"] < r["total_bytes"] / 64
