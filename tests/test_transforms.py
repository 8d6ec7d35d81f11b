"""Initializers are pure functions of (key, shape, dtype): jit, vmap, eval_shape, Flax."""

from __future__ import annotations

import math

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import count_compiles
from _stats import assert_reaches_bound
from absl.testing import parameterized
from flax import nnx

import initjax as ij

KEY = jax.random.key(0)

# name -> (initializer, a shape it accepts)
CASES = {
    "uniform": (ij.uniform(-2.0, 3.0), (16, 24)),
    "normal": (ij.normal(0.5, 2.0), (16, 24)),
    "trunc_normal": (ij.trunc_normal(0.0, 1.0, -0.5, 2.0), (16, 24)),
    "trunc_normal_far": (ij.trunc_normal(0.0, 1.0, 3.0, 5.0), (16, 24)),
    "constant": (ij.constant(0.25), (16, 24)),
    "ones": (ij.ones(), (16, 24)),
    "zeros": (ij.zeros(), (16, 24)),
    "eye": (ij.eye(), (16, 24)),
    "dirac": (ij.dirac(2), (3, 3, 8, 16)),
    "xavier_uniform": (ij.xavier_uniform(), (3, 3, 8, 16)),
    "xavier_normal": (ij.xavier_normal(), (3, 3, 8, 16)),
    "kaiming_uniform": (ij.kaiming_uniform(math.sqrt(5)), (3, 3, 8, 16)),
    "kaiming_normal": (ij.kaiming_normal(mode="fan_out"), (3, 3, 8, 16)),
    "orthogonal": (ij.orthogonal(), (3, 3, 8, 16)),
    "sparse": (ij.sparse(0.3), (16, 24)),
}
RANDOM = [n for n in CASES if n not in ("constant", "ones", "zeros", "eye", "dirac")]
NAMED = [(name, name) for name in CASES]


def assert_close(got, ref):
    """Equal up to a few ulps: a batched program may fuse ``z * std + mean`` into an FMA."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    scale = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)


class TransformsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*NAMED)
    def test_jit_matches_eager(self, name):
        init, shape = CASES[name]
        ref = init(KEY, shape)
        got = self.variant(lambda k: init(k, shape))(KEY)
        chex.assert_shape(got, shape)
        chex.assert_type(got, ref.dtype)
        # Each sampler runs as one compiled program, eagerly too: the same bits.
        np.testing.assert_array_equal(got, ref)

    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_eager_half(self):
        for name in ("uniform", "trunc_normal", "kaiming_normal", "sparse"):
            init, shape = CASES[name]
            ref = init(KEY, shape, jnp.bfloat16)
            got = self.variant(lambda k: init(k, shape, jnp.bfloat16))(KEY)  # noqa: B023
            chex.assert_type(got, jnp.bfloat16)
            np.testing.assert_array_equal(got, ref)

    @parameterized.named_parameters(*NAMED)
    def test_vmap_over_keys_matches_loop(self, name):
        init, shape = CASES[name]
        keys = jax.random.split(KEY, 3)
        batched = jax.vmap(lambda k: init(k, shape))(keys)
        chex.assert_shape(batched, (3, *shape))
        for k, row in zip(keys, batched, strict=True):
            assert_close(row, init(k, shape))

    @parameterized.named_parameters(*NAMED)
    def test_eval_shape(self, name):
        init, shape = CASES[name]
        for dtype in (jnp.float32, jnp.bfloat16):
            out = jax.eval_shape(lambda k: init(k, shape, dtype), KEY)  # noqa: B023
            self.assertEqual(out, jax.ShapeDtypeStruct(shape, dtype))

    @parameterized.named_parameters(*NAMED)
    def test_deterministic(self, name):
        init, shape = CASES[name]
        np.testing.assert_array_equal(init(KEY, shape), init(KEY, shape))
        # Legacy uint32 keys work too, and give the typed key's numbers.
        np.testing.assert_array_equal(init(jax.random.PRNGKey(0), shape), init(KEY, shape))
        if name in RANDOM:
            self.assertFalse(np.array_equal(init(KEY, shape), init(jax.random.key(1), shape)))


def test_linen_dense_like_torch_linear():
    dense = linen.Dense(200, kernel_init=ij.kaiming_uniform(math.sqrt(5)))
    params = dense.init(KEY, jnp.ones((1, 300)))["params"]
    chex.assert_shape(params["kernel"], (300, 200))
    assert_reaches_bound(params["kernel"], 1 / math.sqrt(300), "Dense kernel")


def test_nnx_linear_param_dtype():
    layer = nnx.Linear(
        300, 200, kernel_init=ij.xavier_uniform(), param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
    )
    kernel = layer.kernel[...]
    chex.assert_type(kernel, jnp.bfloat16)
    bound = float(jnp.asarray(math.sqrt(6 / 500), jnp.bfloat16))
    assert_reaches_bound(kernel, bound, "nnx kernel")


def test_linen_conv_dirac_is_identity():
    conv = linen.Conv(4, (3, 3), padding="SAME", use_bias=False, kernel_init=ij.dirac())
    x = jax.random.normal(KEY, (2, 8, 8, 4))
    y, _ = conv.init_with_output(KEY, x)
    np.testing.assert_array_equal(y, x)


def _nnx_stack(width: int, depth: int, seed: int):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.norm = ij.nnx.LayerNorm(width, rngs=rngs)
            self.up = ij.nnx.Linear(width, 3 * width, rngs=rngs)
            self.down = ij.nnx.Linear(3 * width, width, rngs=rngs)

    return nnx.List([Block(nnx.Rngs(seed + i)) for i in range(depth)])


def _linen_stack(width: int, depth: int, seed: int):
    class Stack(linen.Module):
        @linen.compact
        def __call__(self, x):
            for _ in range(depth):
                x = ij.linen.Dense(width)(ij.linen.Dense(3 * width)(ij.linen.LayerNorm()(x)))
            return x

    return Stack().init(jax.random.key(seed), jnp.ones((1, width)))


@pytest.mark.parametrize("build", [_nnx_stack, _linen_stack], ids=["nnx", "linen"])
def test_eager_init_compiles_per_shape_not_per_layer(build):
    """Eager init reuses one small program per (initializer, shape) across layers.

    This is what keeps a first init in a fresh process lean: the compiled code
    does not grow with depth, unlike one program for the whole model. Fresh
    widths (odd sizes no other test uses) keep earlier tests' caches out; a
    first build compiles what does not depend on the width (key derivation).
    """
    build(width=41, depth=1, seed=0)
    with count_compiles() as shallow:
        build(width=43, depth=1, seed=0)
    with count_compiles() as deep:
        build(width=47, depth=6, seed=0)
    with count_compiles() as again:
        build(width=47, depth=6, seed=10)
    assert len(shallow) > 0
    assert len(deep) == len(shallow)
    assert len(again) == 0
