"""Sharded draws and model inits on 8 CPU devices; run by tests/test_fastpath.py.

Needs ``--xla_force_host_platform_device_count=8`` in ``XLA_FLAGS`` (set by the
test). Computes facts and prints them as one JSON line; the test asserts.
Every reference value is computed unsharded with initjax's fast path off
(plain ``jax.random``), so "equal" means the fast, sharded path changed nothing.
"""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import initjax as ij
from initjax import linen as ijl
from initjax import nnx as ijn
from initjax._sampling import plain_jax_random
from initjax._threefry import fast_key
from initjax.defaults import embedding, linear_kernel

KEY = jax.random.key(1234)
AUTO = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
AUTO_2D = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
EXPLICIT = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and bool((a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")).all())
    )


def draws(key, shape):
    return {
        "bits32": jax.random.bits(key, shape, jnp.uint32),
        "bits16": jax.random.bits(key, shape, jnp.uint16),
        "uniform_float32": jax.random.uniform(key, shape, jnp.float32, -1.0, 2.0),
        "normal_float32": jax.random.normal(key, shape, jnp.float32),
        "normal_bfloat16": jax.random.normal(key, shape, jnp.bfloat16),
    }


def check_draws() -> tuple[int, list[str]]:
    """jax.random draws through fast_key, sharded by jit's out_shardings."""
    cases = [
        ((16, 24), AUTO, P("x", None)),
        ((16, 24), AUTO, P(None, "x")),
        ((16, 24), AUTO_2D, P("x", "y")),
        ((40, 7), AUTO, P("x", None)),  # odd row length: shards start mid-counter-word
        ((12, 9), AUTO_2D, P("x", None)),
        ((3, 5, 8), AUTO, P(None, None, "x")),
        ((8,), AUTO, P("x")),
        ((2048, 520), AUTO_2D, P("y", "x")),
    ]
    mismatches, n = [], 0
    for shape, mesh, spec in cases:
        plain = jax.jit(lambda k, shape=shape: draws(k, shape))(KEY)
        fast = jax.jit(
            lambda k, shape=shape: draws(fast_key(k), shape),
            out_shardings=NamedSharding(mesh, spec),
        )(KEY)
        for name in plain:
            n += 1
            assert fast[name].sharding.spec == spec, fast[name].sharding
            if not same_bits(fast[name], plain[name]):
                mismatches.append(f"{name} {shape} {spec}")
    return n, mismatches


def check_out_sharding() -> tuple[int, list[str]]:
    """initjax initializers given ``out_sharding`` on an explicit mesh, eagerly."""
    inits = {
        "uniform": ij.uniform(-1.0, 2.0),
        "normal": ij.normal(0.5, 2.0),
        "trunc_normal": ij.trunc_normal(0.0, 1.0, -0.5, 2.0),
        "xavier_uniform": ij.xavier_uniform(),
        "xavier_normal": ij.xavier_normal(),
        "kaiming_uniform": ij.kaiming_uniform(math.sqrt(5)),
        "kaiming_normal": ij.kaiming_normal(),
        "embedding": embedding(),
    }
    shape = (32, 48)
    mismatches, n = [], 0
    for name, init in inits.items():
        for dt in (jnp.float32, jnp.bfloat16):
            with plain_jax_random():
                ref = init(KEY, shape, dt)
            with jax.set_mesh(EXPLICIT):
                got = init(KEY, shape, dt, out_sharding=P("x", "y"))
            n += 1
            assert got.sharding.spec == P("x", "y"), got.sharding
            if not same_bits(got, ref):
                mismatches.append(f"{name} {jnp.dtype(dt).name}")
    return n, mismatches


# ------------------------------------------------------------------- models ---

VOCAB, WIDTH = 4096, 128


class LinenTiny(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        def dense(features, spec):
            return ijl.Dense(features, kernel_init=nn.with_partitioning(linear_kernel(), spec))

        x = ijl.Embed(VOCAB, WIDTH, embedding_init=nn.with_partitioning(embedding(), (None, "x")))(
            tokens
        )
        for _ in range(2):
            h = dense(4 * WIDTH, (None, "x"))(ijl.LayerNorm()(x))
            x = x + dense(WIDTH, ("x", None))(h)
        return x


class NnxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        def linear(i, o, spec):
            return ijn.Linear(i, o, kernel_metadata={"out_sharding": spec}, rngs=rngs)

        self.norm = ijn.LayerNorm(WIDTH, rngs=rngs)
        self.up = linear(WIDTH, 4 * WIDTH, (None, "x"))
        self.down = linear(4 * WIDTH, WIDTH, ("x", None))


class NnxTiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = ijn.Embed(
            VOCAB, WIDTH, embedding_metadata={"out_sharding": (None, "x")}, rngs=rngs
        )
        self.blocks = nnx.List([NnxBlock(rngs) for _ in range(2)])


def device_facts(values, specs, mesh, compiled) -> dict:
    leaves = jax.tree.leaves(values)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P))
    assert len(leaves) == len(spec_leaves), (len(leaves), len(spec_leaves))
    expected, sharded, total = 0, 0, 0
    for leaf, spec in zip(leaves, spec_leaves, strict=True):
        split = math.prod(mesh.shape[a] for a in spec if a is not None)
        expected += leaf.nbytes // split
        sharded += split > 1
        total += leaf.nbytes
    per_device = {d: 0 for d in mesh.devices.flat}
    for leaf in leaves:
        for shard in leaf.addressable_shards:
            per_device[shard.device] += shard.data.nbytes
    mem = compiled.memory_analysis()
    return dict(
        per_device_bytes=list(per_device.values()),
        expected_device_bytes=expected,
        total_bytes=total,
        sharded_params=sharded,
        xla_output_bytes=mem.output_size_in_bytes,
        xla_temp_bytes=mem.temp_size_in_bytes,
    )


def check_linen() -> dict:
    model, tokens = LinenTiny(), jnp.zeros((1, 3), jnp.int32)
    with plain_jax_random():
        ref = jax.jit(model.init)(KEY, tokens)
    specs = nn.get_partition_spec(jax.eval_shape(model.init, KEY, tokens))
    init = jax.jit(model.init, out_shardings=jax.tree.map(lambda s: NamedSharding(AUTO, s), specs))
    compiled = init.lower(KEY, tokens).compile()
    got = compiled(KEY, tokens)
    equal = all(map(same_bits, jax.tree.leaves(nn.unbox(got)), jax.tree.leaves(nn.unbox(ref))))
    return dict(values_equal=equal, **device_facts(nn.unbox(got), specs, AUTO, compiled))


def check_nnx() -> dict:
    def create(key):
        return nnx.state(NnxTiny(nnx.Rngs(key)))

    with plain_jax_random(), nnx.use_eager_sharding(False):
        ref = jax.jit(create)(KEY)
    with jax.set_mesh(AUTO):
        compiled = jax.jit(create).lower(KEY).compile()
        got = compiled(KEY)
    equal = all(map(same_bits, jax.tree.leaves(got), jax.tree.leaves(ref)))
    return dict(
        values_equal=equal, **device_facts(got, nnx.get_partition_spec(got), AUTO, compiled)
    )


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    draw_cases, draw_mismatches = check_draws()
    os_cases, os_mismatches = check_out_sharding()
    print(
        json.dumps(
            dict(
                devices=jax.device_count(),
                draw_cases=draw_cases,
                draw_mismatches=draw_mismatches,
                out_sharding_cases=os_cases,
                out_sharding_mismatches=os_mismatches,
                linen=check_linen(),
                nnx=check_nnx(),
            )
        )
    )


if __name__ == "__main__":
    main()
