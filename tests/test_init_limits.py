"""No silent inf or NaN from the initializers, nor from replay's draws and fills.

A bound, mean, std or constant the requested dtype cannot hold finitely raises
``ValueError`` naming the value and the dtype, where torch raises too (compared
live); every non-finite argument raises when the factory is called; float64
without x64 warns as ``jax.random`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx

import initjax as ij
from initjax import replay

KEY = jax.random.key(0)
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    torch: Callable[[], object]  # the same request in torch
    ours: Callable[[], object]  # must raise ValueError matching `match`
    match: str
    torch_raises: bool = True


def _t(dtype, shape=(4, 3)):
    return torch.empty(shape, dtype=dtype)


CASES = {
    "uniform(-3e38, 3e38)": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float32), -3e38, 3e38),
        lambda: ij.uniform(-3e38, 3e38)(KEY, (4, 3)),
        r"\[-3e\+38, 3e\+38\].*float32",
    ),
    "uniform(0, 7e4) float16": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float16), 0, 7e4),
        lambda: ij.uniform(0, 7e4)(KEY, (4, 3), jnp.float16),
        r"b=70000\.0 .*float16",
    ),
    "uniform(0, 7e4, dtype=float16)": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float16), 0, 7e4),
        lambda: ij.uniform(0, 7e4, dtype=jnp.float16),  # the factory knows the dtype
        r"b=70000\.0 .*float16",
    ),
    "uniform(0, 1000) float8_e4m3fn": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float8_e4m3fn), 0, 1000),
        lambda: ij.uniform(0, 1000)(KEY, (4, 3), ml_dtypes.float8_e4m3fn),
        r"b=1000\.0 .*float8_e4m3fn.*NaN",
    ),
    "constant(1e39)": Case(
        lambda: torch.nn.init.constant_(_t(torch.float32), 1e39),
        lambda: ij.constant(1e39)(KEY, (4, 3)),
        r"val=1e\+39 .*float32",
    ),
    "constant(7e4) float16 factory": Case(
        lambda: torch.nn.init.constant_(_t(torch.float16), 7e4),
        lambda: ij.constant(7e4, dtype=jnp.float16),
        r"val=70000\.0 .*float16",
    ),
    "constant(300) uint8": Case(
        lambda: torch.nn.init.constant_(_t(torch.uint8), 300),
        lambda: ij.constant(300)(KEY, (4, 3), jnp.uint8),
        r"val=300\.0 .*uint8",
    ),
    "xavier_uniform(gain=1e6) float16": Case(
        lambda: torch.nn.init.xavier_uniform_(_t(torch.float16), gain=1e6),
        lambda: ij.xavier_uniform(gain=1e6)(KEY, (3, 4), jnp.float16),
        r"bound=9\d+\.\d+ .*float16",
    ),
    "kaiming_uniform(a=nan)": Case(
        lambda: torch.nn.init.kaiming_uniform_(_t(torch.float32), a=NAN),
        lambda: ij.kaiming_uniform(a=NAN),
        "nan",
    ),
    "normal(0, 1e5) float16": Case(  # torch: silent infs; initjax refuses
        lambda: torch.nn.init.normal_(_t(torch.float16), 0.0, 1e5),
        lambda: ij.normal(0.0, 1e5)(KEY, (4, 3), jnp.float16),
        r"std=100000\.0 .*float16",
        torch_raises=False,
    ),
    # replay draws as torch: the same checks as the initializers (they returned inf/NaN)
    "replay.uniform_(-3e38, 3e38)": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float32), -3e38, 3e38),
        lambda: replay.uniform_(replay.TorchGenerator(0), (4, 3), -3e38, 3e38),
        r"\[-3e\+38, 3e\+38\].*float32",
    ),
    "replay.uniform_(0, 7e4) float16": Case(
        lambda: torch.nn.init.uniform_(_t(torch.float16), 0, 7e4),
        lambda: replay.uniform_(replay.TorchGenerator(0), (4, 3), 0, 7e4, dtype=np.float16),
        r"b=70000\.0 .*float16",
    ),
    "replay.xavier_uniform_(gain=1e6) float16": Case(
        lambda: torch.nn.init.xavier_uniform_(_t(torch.float16), gain=1e6),
        lambda: replay.xavier_uniform_(replay.TorchGenerator(0), (3, 4), 1e6, dtype=np.float16),
        r"=-?9\d+\.\d+ .*float16",
    ),
    "replay.normal_(0, 1e5) float16": Case(
        lambda: torch.nn.init.normal_(_t(torch.float16), 0.0, 1e5),
        lambda: replay.normal_(replay.TorchGenerator(0), (4, 3), 0.0, 1e5, dtype=np.float16),
        r"std=100000\.0 .*float16",
        torch_raises=False,
    ),
    "replay post_init constant_ 7e4 float16": Case(
        lambda: torch.nn.init.constant_(_t(torch.float16), 7e4),
        lambda: replay.torch_init(
            nnx.Linear(3, 4, param_dtype=jnp.float16, rngs=nnx.Rngs(0)),
            0,
            post_init=lambda m, gen: m.__setitem__("bias", 7e4),
        ),
        r"bias \(constant_\): val=70000\.0 .*float16",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_unrepresentable_values_raise(case):
    if case.torch_raises:
        with pytest.raises((RuntimeError, ValueError, NotImplementedError)):
            case.torch()
    else:
        case.torch()
    with pytest.raises(ValueError, match=case.match):
        case.ours()


def test_checks_run_under_eval_shape_and_jit():
    init = ij.uniform(0, 7e4)
    with pytest.raises(ValueError, match="float16"):
        jax.eval_shape(lambda k: init(k, (4, 3), jnp.float16), KEY)
    with pytest.raises(ValueError, match="float16"):
        jax.jit(lambda k: ij.xavier_uniform(gain=1e6)(k, (3, 4), jnp.float16))(KEY)


def test_edges_of_the_range_are_fine():
    # float16's max is 65504: samples may reach it (rounded), never inf, and none folded.
    w = ij.uniform(6e4, 65504.0)(KEY, (20_000,), jnp.float16)
    assert bool(jnp.isfinite(w).all()) and float(w.max()) >= 65000
    assert float(w.min()) >= 6e4
    with pytest.raises(ValueError, match="65504.5"):
        ij.uniform(0, 65504.5)(KEY, (2,), jnp.float16)  # torch: out of bounds, too
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.nn.init.uniform_(_t(torch.float16), 0, 65504.5)
    big = ij.constant(3e38)(KEY, (2,))
    assert big.dtype == jnp.float32 and bool(jnp.isfinite(big).all())


def test_explicit_infinite_constants_are_kept_as_torch_keeps_them():
    theirs = torch.nn.init.constant_(_t(torch.float32, (2,)), -INF)
    ours = ij.constant(-INF)(KEY, (2,))
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


NON_FINITE = [
    lambda v: ij.uniform(a=v),
    lambda v: ij.uniform(b=v),
    lambda v: ij.normal(mean=v),
    lambda v: ij.normal(std=v),
    lambda v: ij.trunc_normal(mean=v),
    lambda v: ij.trunc_normal(std=v),
    lambda v: ij.xavier_uniform(gain=v),
    lambda v: ij.xavier_normal(gain=v),
    lambda v: ij.kaiming_uniform(a=v),
    lambda v: ij.kaiming_normal(a=v),
    lambda v: ij.kaiming_uniform(a=v, nonlinearity="relu"),
    lambda v: ij.orthogonal(gain=v),
    lambda v: ij.sparse(0.5, std=v),
    lambda v: ij.sparse(v),
    lambda v: ij.calculate_gain("leaky_relu", v),
    lambda v: ij.calculate_gain("tanh", v),
]


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("make", NON_FINITE, ids=range(len(NON_FINITE)))
def test_non_finite_arguments_raise_at_the_factory(make, value):
    with pytest.raises(ValueError, match="nan|inf"):
        make(value)


def test_calculate_gain_names_what_it_supports():
    with pytest.raises(ValueError) as theirs:
        torch.nn.init.calculate_gain("gelu")
    with pytest.raises(ValueError) as ours:
        ij.calculate_gain("gelu")
    assert str(ours.value).startswith(str(theirs.value))
    assert "leaky_relu" in str(ours.value) and "selu" in str(ours.value)
    with pytest.raises(ValueError, match=r"Unsupported nonlinearity gelu.*tanh"):
        ij.kaiming_uniform(nonlinearity="gelu")


def test_float64_without_x64_warns_like_jax_random():
    assert not jax.config.read("jax_enable_x64")
    with pytest.warns(UserWarning, match="float64"):
        jax.random.normal(KEY, (2,), jnp.float64)  # the behaviour matched
    for init in (ij.normal(), ij.uniform(), ij.xavier_uniform(), ij.constant(1.0)):
        with pytest.warns(UserWarning, match="float64.*jax_enable_x64"):
            out = init(KEY, (3, 2), jnp.float64)
        assert out.dtype == jnp.float32
    with pytest.warns(UserWarning, match="float64"):
        ij.normal(dtype="float64")(KEY, (2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX's default float types do not warn
        ij.normal()(KEY, (2,), float)
        ij.normal()(KEY, (2,), jnp.float32)
        ij.normal()(KEY, (2,))


def test_normal_std_limits_are_values_not_samples():
    # mean and std must be representable; samples within ~5 std of the mean then are.
    w = ij.normal(0.0, 1e4)(KEY, (10_000,), jnp.float16)
    assert bool(jnp.isfinite(w).all())
    assert math.isclose(float(jnp.std(w.astype(jnp.float32))), 1e4, rel_tol=0.05)
