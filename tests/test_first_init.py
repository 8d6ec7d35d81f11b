"""A first init compiles one sampler per (shape, dtype), whatever its parameters.

Eager callers (nnx constructors, linen's ``init``) run each initializer as one
small compiled program. The distribution's parameters (bounds, mean, std) are
operands of that program, not constants baked into it, so tensors of one shape
share it however their parameters differ: the compile count of a first init
grows with the number of distinct shapes, not with the number of tensors. The
values stay those of the same code jitted (the parameters then constants).
Compile time itself is measured by ``benchmarks/bench_model.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import count_compiles
from flax import nnx

import initjax as ij
from initjax.defaults import linear_bias

KEY = jax.random.key(3)

# name -> factory of an initializer from one parameter; every value a distinct parameter set.
FAMILIES = {
    "uniform": lambda p: ij.uniform(-p, 2 * p),
    "normal": lambda p: ij.normal(p, 3 * p),
    "trunc_normal": lambda p: ij.trunc_normal(0.5, p, -p, 4 * p),
    "kaiming_uniform": lambda p: ij.kaiming_uniform(p),
    "linear_bias": lambda p: linear_bias(int(10 * p)),
}
PARAMS = (0.3, 0.7, 1.1, 2.9)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_same_shape_new_parameters_compile_nothing(family, dtype):
    """Four parameter sets on one fresh shape: the first compiles, the others reuse it."""
    shape = (5, 37) if family != "linear_bias" else (37,)
    inits = [FAMILIES[family](p) for p in PARAMS]
    jax.block_until_ready(inits[0](KEY, shape, dtype))
    with count_compiles() as more:
        outs = [init(KEY, shape, dtype) for init in inits[1:]]
    assert len(more) == 0
    # Each still draws with its own parameters: the same bits as the jitted draw.
    for init, out in zip(inits[1:], outs, strict=True):
        jitted = jax.jit(lambda k, init=init: init(k, shape, dtype))(KEY)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(jitted))
    assert len({np.asarray(o, np.float32).tobytes() for o in outs}) == len(outs)


def test_nnx_layers_of_one_shape_compile_once_whatever_their_fans():
    """Biases of one shape with different fan_in (different bounds) share one program."""

    def build(fans, seed):
        rngs = nnx.Rngs(seed)
        return [ij.nnx.Linear(fan, 29, rngs=rngs) for fan in fans]

    build((31,), 0)  # key derivation and the (31, 29) kernel
    with count_compiles() as one:
        build((33,), 0)  # a new kernel shape; the (29,) bias program is reused
    with count_compiles() as many:
        build((35, 35, 35), 1)
    assert len(one) == len(many) == 1


def test_zero_mean_keeps_the_sign_of_zero_like_jit():
    """A zero mean is left out, as XLA drops a constant ``+ 0.0``: -0.0 stays -0.0.

    With a denormal std the products underflow to signed zeros, which a runtime
    ``+ 0.0`` would turn positive; eager and jitted draws must agree bit for bit.
    """
    for init in (ij.normal(0.0, 1e-45), ij.trunc_normal(0.0, 1e-45, -1e-45, 1e-45)):
        eager = np.asarray(init(KEY, (64, 64)))
        jitted = np.asarray(jax.jit(lambda k, init=init: init(k, (64, 64)))(KEY))
        np.testing.assert_array_equal(eager.view(np.uint32), jitted.view(np.uint32))
    assert np.signbit(np.asarray(ij.normal(0.0, 1e-45)(KEY, (64, 64)))).any()


# --------------------------------------------------------------- stacked layers ---


def _stacked_linears(layers: int, rngs: nnx.Rngs):
    """``layers`` Linear(5, 7) stacked on a leading axis: the layout a jitted init scans."""

    @nnx.split_rngs(splits=layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs: nnx.Rngs):
        return ij.nnx.Linear(5, 7, rngs=rngs)

    return make(rngs)


def test_stacked_layers_draw_each_layer_as_built_alone():
    """Layer i of an ``nnx.vmap``-stacked Linear equals ``ij.nnx.Linear`` built alone
    from layer i's key (``split_rngs`` splits one key of the stream): the fans come
    from the per-layer shape, and the draws are the same bits."""
    stacked = _stacked_linears(3, nnx.Rngs(0))
    keys = jax.random.split(jax.random.fold_in(jax.random.key(0), 0), 3)
    for i, key in enumerate(keys):
        alone = ij.nnx.Linear(5, 7, rngs=nnx.Rngs(key))
        np.testing.assert_array_equal(
            np.asarray(stacked.kernel[...][i]), np.asarray(alone.kernel[...])
        )
        np.testing.assert_array_equal(np.asarray(stacked.bias[...][i]), np.asarray(alone.bias[...]))


def _jit_fusions(build) -> int:
    """Kernels (fusions) XLA compiles for ``jax.jit`` of an nnx constructor."""
    fn = jax.jit(lambda key: nnx.state(build(nnx.Rngs(key))))
    return fn.lower(KEY).compile().as_text().count(" fusion(")


def test_stacked_layers_compile_the_same_program_at_any_depth():
    """Jitted, a stacked model's kernels do not grow with depth; a list of layers' do.

    XLA's CPU compiler compiles every kernel of a program on its own, so the
    kernel count is what a jitted first init's compile time grows with.
    """
    stacked = [_jit_fusions(lambda r, n=n: _stacked_linears(n, r)) for n in (2, 6)]
    listed = [
        _jit_fusions(lambda r, n=n: nnx.List([ij.nnx.Linear(5, 7, rngs=r) for _ in range(n)]))
        for n in (2, 6)
    ]
    assert stacked[0] == stacked[1]
    assert listed[1] > listed[0]
