"""Every initializer against live ``torch.nn.init`` on the same logical tensor.

torch draws on its layout ``(out, in, *k)``; initjax draws on Flax's
``(*k, in, out)`` with its defaults, and on torch's layout with
``in_axis=1, out_axis=0``. Random initializers are compared in distribution
(bounds, moments, one- and two-sample KS with tolerances from the sample size,
see ``tests/_stats.py``); deterministic ones element for element.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _initializers import RANDOM
from _stats import (
    ALPHA,
    assert_ks,
    assert_normal,
    assert_reaches_bound,
    assert_same_distribution,
    assert_uniform,
)
from scipy import stats

import initjax as ij

KEY = jax.random.key(0)
TORCH_LAYOUT = {"in_axis": 1, "out_axis": 0}


def torch_init(fn, shape, *args, dtype=torch.float32, seed=0, **kwargs) -> np.ndarray:
    """``fn`` (a ``torch.nn.init`` function) applied to a fresh tensor, as float64."""
    t = torch.empty(shape, dtype=dtype)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. trunc_normal_'s "mean is more than 2 std"
        fn(t, *args, **kwargs)
    return t.to(torch.float64).numpy()


def flax_shape(torch_shape) -> tuple[int, ...]:
    """Torch ``(out, in, *k)`` as Flax ``(*k, in, out)``."""
    out, in_, *k = torch_shape
    return (*k, in_, out)


def to_torch_layout(w) -> np.ndarray:
    """A Flax-layout ``(*k, in, out)`` array as torch's ``(out, in, *k)``."""
    w = np.asarray(w, np.float64)
    n = w.ndim
    return np.transpose(w, (n - 1, n - 2, *range(n - 2)))


def jitted(init):
    """``init`` compiled once per (shape, dtype): cheaper than many small eager ops."""
    return jax.jit(init, static_argnums=(1, 2))


def rounded(value: float, dtype) -> float:
    """``value`` rounded to ``dtype`` (round to nearest), as a Python float."""
    return float(np.asarray(value, dtype=np.float64).astype(dtype))


# --------------------------------------------------------------- plain ---

N = 1 << 19


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-3.0, 0.5), (-0.25, 0.25)])
def test_uniform(a, b):
    ours = ij.uniform(a, b)(KEY, (N,))
    theirs = torch_init(torch.nn.init.uniform_, (N,), a, b)
    assert ours.dtype == jnp.float32
    assert_uniform(ours, a, b, "ours")
    assert_uniform(theirs, a, b, "torch")
    assert_same_distribution(ours, theirs, "uniform vs torch")


def test_uniform_defaults_are_torchs():
    assert_same_distribution(
        ij.uniform()(KEY, (N,)), torch_init(torch.nn.init.uniform_, (N,)), "defaults"
    )


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (2.0, 0.5)])
def test_normal(mean, std):
    ours = ij.normal(mean, std)(KEY, (N,))
    theirs = torch_init(torch.nn.init.normal_, (N,), mean, std)
    assert_normal(ours, mean, std, "ours")
    assert_normal(theirs, mean, std, "torch")
    assert_same_distribution(ours, theirs, "normal vs torch")


def test_normal_defaults_are_torchs():
    # std 1, not jax.nn.initializers.normal's 0.01.
    assert_same_distribution(
        ij.normal()(KEY, (N,)), torch_init(torch.nn.init.normal_, (N,)), "defaults"
    )


TRUNC = [
    (0.0, 1.0, -2.0, 2.0),  # torch's defaults
    (0.0, 1.0, 3.0, 5.0),  # far right tail (torch warns)
    (0.0, 1.0, -5.0, -3.0),  # far left tail
    (1.0, 2.0, -1.0, 0.0),
    (0.0, 1.0, 0.5, 0.6),  # narrow
    (0.0, 0.02, -2.0, 2.0),  # bounds are absolute: barely truncates
]


@pytest.mark.parametrize("mean, std, a, b", TRUNC, ids=str)
def test_trunc_normal(mean, std, a, b):
    n = 1 << 17
    ours = np.asarray(ij.trunc_normal(mean, std, a, b)(KEY, (n,)), np.float64)
    # torch's rejection sampler is slow in far tails: fewer torch samples there.
    m = n if abs(mean - (a + b) / 2) < 2 * std else n // 8
    theirs = torch_init(torch.nn.init.trunc_normal_, (m,), mean, std, a, b)
    assert a <= ours.min() and ours.max() <= b
    exact = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert_ks(ours, exact.cdf, "ours vs truncnorm")
    assert_ks(theirs, exact.cdf, "torch vs truncnorm")
    assert_same_distribution(ours, theirs, "trunc_normal vs torch")


def test_trunc_normal_defaults_are_torchs():
    n = 1 << 18
    ours = ij.trunc_normal()(KEY, (n,))
    theirs = torch_init(torch.nn.init.trunc_normal_, (n,))
    assert_same_distribution(ours, theirs, "defaults")


# ------------------------------------------------------------ fan-based ---

FAN_SHAPES = [(256, 384), (128, 64, 3, 3), (96, 48, 5), (24, 16, 3, 3, 3)]  # torch layout

FAN_CASES = [
    ("xavier_uniform", {}),
    ("xavier_uniform", {"gain": 5 / 3}),
    ("xavier_normal", {}),
    ("xavier_normal", {"gain": 2.0}),
    ("kaiming_uniform", {}),  # a=0, leaky_relu: gain sqrt(2)
    ("kaiming_uniform", {"a": math.sqrt(5)}),  # torch.nn.Linear / Conv: 1/sqrt(fan_in)
    ("kaiming_uniform", {"a": None}),  # slope 0.01
    ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal", {}),
    ("kaiming_normal", {"a": 0.2, "mode": "FAN_OUT"}),
    ("kaiming_normal", {"nonlinearity": "tanh"}),
]


def torch_spread(name: str, torch_shape, kwargs) -> float:
    """torch's bound (uniform) or std (normal), by torch's own formula and helpers."""
    t = torch.empty(torch_shape)
    if name.startswith("xavier"):
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(t)
        std = kwargs.get("gain", 1.0) * math.sqrt(2.0 / float(fan_in + fan_out))
    else:
        fan = torch.nn.init._calculate_correct_fan(t, kwargs.get("mode", "fan_in"))
        gain = torch.nn.init.calculate_gain(
            kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0)
        )
        std = gain / math.sqrt(fan)
    return math.sqrt(3.0) * std if name.endswith("uniform") else std


# Every case on a Linear and a Conv2d weight; two cases on every shape.
FAN_PARAMS = [(*case, shape) for case in FAN_CASES for shape in FAN_SHAPES[:2]] + [
    (*FAN_CASES[i], shape) for i in (1, 9) for shape in FAN_SHAPES[2:]
]


@pytest.mark.parametrize("name, kwargs, torch_shape", FAN_PARAMS, ids=str)
def test_fan_based(name, kwargs, torch_shape):
    theirs = torch_init(getattr(torch.nn.init, name + "_"), torch_shape, **kwargs)
    flax = getattr(ij, name)(**kwargs)(KEY, flax_shape(torch_shape))
    torch_layout = getattr(ij, name)(**kwargs, **TORCH_LAYOUT)(KEY, torch_shape)
    assert flax.shape == flax_shape(torch_shape) and torch_layout.shape == torch_shape
    spread = torch_spread(name, torch_shape, kwargs)
    if name.endswith("uniform"):
        bound = rounded(spread, np.float32)
        assert_reaches_bound(theirs, bound, "torch")  # the bound is torch's, tightly
        assert_uniform(flax, -bound, bound, "flax layout")
        assert_uniform(torch_layout, -bound, bound, "torch layout")
        same_law = ij.uniform(-spread, spread)
    else:
        assert_normal(theirs, 0.0, spread, "torch")
        assert_normal(flax, 0.0, spread, "flax layout")
        assert_normal(torch_layout, 0.0, spread, "torch layout")
        same_law = ij.normal(0.0, spread)
    assert_same_distribution(flax, theirs, "flax layout vs torch")
    assert_same_distribution(torch_layout, theirs, "torch layout vs torch")
    # The bound/std equals torch's to float precision: same key, same law, same numbers.
    np.testing.assert_allclose(flax, same_law(KEY, flax.shape), rtol=1e-6, atol=1e-6 * spread)


def test_fan_based_batch_axis():
    # A stack of 4 Dense kernels (4, in, out): each has the fans of one (out, in) Linear.
    kwargs = {"a": math.sqrt(5)}
    bound = rounded(torch_spread("kaiming_uniform", (200, 300), kwargs), np.float32)
    ours = ij.kaiming_uniform(**kwargs, batch_axis=0)(KEY, (4, 300, 200))
    assert_uniform(ours, -bound, bound, "stacked")
    ours = ij.xavier_normal(batch_axis=0)(KEY, (4, 300, 200))
    assert_normal(ours, 0.0, torch_spread("xavier_normal", (200, 300), {}), "stacked")


# ----------------------------------------------------------- orthogonal ---

ORTHO = [((64, 256), 1.0), ((256, 64), 1.0), ((32, 16, 3, 3), 2.5), ((200, 4, 5), 1.0)]


def torch_view(w_torch_layout) -> np.ndarray:
    """torch's ``(rows, cols)`` view: rows = dim 0, the rest flattened."""
    return w_torch_layout.reshape(w_torch_layout.shape[0], -1)


def assert_semi_orthogonal(m, gain, what, atol=2e-5):
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(
        gram, gain**2 * np.eye(min(rows, cols)), atol=atol * gain**2, err_msg=what
    )


@pytest.mark.parametrize("torch_shape, gain", ORTHO, ids=str)
def test_orthogonal(torch_shape, gain):
    theirs = torch_init(torch.nn.init.orthogonal_, torch_shape, gain)
    flax = jitted(ij.orthogonal(gain))(KEY, flax_shape(torch_shape))
    torch_layout = jitted(ij.orthogonal(gain, **TORCH_LAYOUT))(KEY, torch_shape)
    torch_layout = np.asarray(torch_layout, np.float64)
    assert_semi_orthogonal(torch_view(theirs), gain, "torch")
    assert_semi_orthogonal(torch_view(to_torch_layout(flax)), gain, "flax layout")
    assert_semi_orthogonal(torch_view(torch_layout), gain, "torch layout")
    # The entries of a Haar-random (semi-)orthogonal matrix: compare with torch's.
    assert_same_distribution(flax, theirs, "flax layout vs torch")
    assert_same_distribution(torch_layout, theirs, "torch layout vs torch")


# --------------------------------------------------------------- sparse ---

SPARSE = [((100, 1000), 0.1, 0.01), ((37, 300), 0.37, 0.5), ((20, 50), 1.0, 1.0)]


@pytest.mark.parametrize("torch_shape, sparsity, std", SPARSE, ids=str)
def test_sparse(torch_shape, sparsity, std):
    rows, cols = torch_shape
    theirs = torch_init(torch.nn.init.sparse_, torch_shape, sparsity, std)
    zeros_per_column = (theirs == 0).sum(axis=0)
    assert np.all(zeros_per_column == zeros_per_column[0])
    n_zeros = int(zeros_per_column[0])  # torch's ceil(sparsity * rows)
    flax = np.asarray(jitted(ij.sparse(sparsity, std))(KEY, (cols, rows)), np.float64)
    torch_layout = jitted(ij.sparse(sparsity, std, **TORCH_LAYOUT))(KEY, torch_shape)
    torch_layout = np.asarray(torch_layout, np.float64)
    for w in (flax.T, torch_layout):  # both on torch's (rows, cols)
        np.testing.assert_array_equal((w == 0).sum(axis=0), n_zeros)
        if n_zeros < rows:
            assert_normal(w[w != 0], 0.0, std, "non-zeros")
            assert_same_distribution(w[w != 0], theirs[theirs != 0], "non-zeros vs torch")
            assert_zeros_spread_evenly(w, n_zeros)


def assert_zeros_spread_evenly(w, n_zeros):
    """Every row is equally likely to hold a column's zeros: chi-square over rows.

    Each column picks ``n_zeros`` of ``rows`` positions without replacement, so a
    row's zero count has variance ``cols p (1 - p)`` (p = n_zeros / rows) and
    the rows' counts, which sum to ``cols n_zeros``, covary by ``-1/(rows - 1)``
    of that: the statistic below is chi-square with ``rows - 1`` dof.
    """
    rows, cols = w.shape
    hits = (w == 0).sum(axis=1)
    p = n_zeros / rows
    chi2 = ((hits - cols * p) ** 2).sum() / (cols * p * (1 - p) * rows / (rows - 1))
    assert stats.chi2.sf(chi2, rows - 1) > ALPHA, f"zero positions uneven: chi2={chi2:.1f}"


# -------------------------------------------------------- deterministic ---

EYE_SHAPES = [(3, 5), (5, 3), (4, 4), (1, 1), (0, 3)]  # torch layout


@pytest.mark.parametrize("torch_shape", EYE_SHAPES, ids=str)
def test_eye(torch_shape):
    theirs = torch_init(torch.nn.init.eye_, torch_shape)
    flax = ij.eye()(KEY, flax_shape(torch_shape))
    np.testing.assert_array_equal(to_torch_layout(flax), theirs)
    np.testing.assert_array_equal(ij.eye(**TORCH_LAYOUT)(KEY, torch_shape), theirs)


DIRAC = [
    ((6, 4, 3), 1),
    ((4, 6, 3), 1),
    ((8, 8, 3, 3), 1),
    ((6, 4, 2, 4), 1),  # even kernels: the 1 sits at k // 2
    ((4, 6, 3, 3, 3), 1),
    ((8, 4, 3, 3), 2),
    ((6, 2, 3), 3),
    ((12, 3, 5, 5), 4),
    ((12, 5, 2, 2, 2), 3),
    ((12, 1, 3, 3), 12),  # depthwise
]


@pytest.mark.parametrize("torch_shape, groups", DIRAC, ids=str)
def test_dirac(torch_shape, groups):
    theirs = torch_init(torch.nn.init.dirac_, torch_shape, groups)
    flax = jitted(ij.dirac(groups))(KEY, flax_shape(torch_shape))
    np.testing.assert_array_equal(to_torch_layout(flax), theirs)
    torch_layout = jitted(ij.dirac(groups, **TORCH_LAYOUT))(KEY, torch_shape)
    np.testing.assert_array_equal(torch_layout, theirs)


CONSTANTS = [
    (torch.nn.init.constant_, (0.7,), ij.constant(0.7)),
    (torch.nn.init.constant_, (-3.25,), ij.constant(-3.25)),
    (torch.nn.init.ones_, (), ij.ones()),
    (torch.nn.init.zeros_, (), ij.zeros()),
]
CONSTANT_DTYPES = [
    (jnp.float32, torch.float32),
    (jnp.bfloat16, torch.bfloat16),
    (jnp.float16, torch.float16),
    (jnp.int32, torch.int32),  # constant(0.7) truncates to 0, as torch's fill_
    (jnp.bool_, torch.bool),
]


@pytest.mark.parametrize("jdt, tdt", CONSTANT_DTYPES, ids=str)
@pytest.mark.parametrize("fn, args, ours", CONSTANTS, ids=["0.7", "-3.25", "ones", "zeros"])
def test_constants(fn, args, ours, jdt, tdt):
    theirs = torch_init(fn, (3, 4), *args, dtype=tdt)
    got = ours(KEY, (4, 3), jdt)
    assert got.dtype == jdt
    np.testing.assert_array_equal(to_torch_layout(got), theirs)


# --------------------------------------------------------------- dtypes ---

HALF = [(jnp.bfloat16, torch.bfloat16), (jnp.float16, torch.float16)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
@pytest.mark.parametrize("name", list(RANDOM))
def test_output_dtype(name, dtype):
    init = RANDOM[name]
    assert init(KEY, (8, 6), dtype).dtype == dtype
    assert init(KEY, (8, 6)).dtype == jnp.float32
    # The factory's dtype is the default; the call's wins.
    factory = getattr(ij, name)
    made = factory(0.5, dtype=dtype) if name == "sparse" else factory(dtype=dtype)
    assert made(KEY, (8, 6)).dtype == dtype
    assert made(KEY, (8, 6), jnp.float32).dtype == jnp.float32


UNIFORM_HALF = [
    ("kaiming_uniform", {"a": math.sqrt(5)}, (256, 300)),  # fp16 rounds this bound *up*
    ("xavier_uniform", {"gain": 1.0}, (96, 48, 5)),
    ("uniform", {"a": -0.3, "b": 0.3}, (256, 300)),
]


@pytest.mark.parametrize("jdt, tdt", HALF, ids=str)
@pytest.mark.parametrize("name, kwargs, torch_shape", UNIFORM_HALF, ids=str)
def test_half_uniform_bounds(name, kwargs, torch_shape, jdt, tdt):
    """Samples reach, and never pass, the bound as rounded to the dtype, like torch's."""
    theirs = torch_init(getattr(torch.nn.init, name + "_"), torch_shape, dtype=tdt, **kwargs)
    ours = getattr(ij, name)(**kwargs)(KEY, flax_shape(torch_shape), jdt)
    assert ours.dtype == jdt
    if name == "uniform":
        exact = kwargs["b"]
    else:
        exact = torch_spread(name, torch_shape, kwargs)
    bound = rounded(exact, jdt)
    assert bound == torch.tensor(exact, dtype=tdt).item()
    assert_reaches_bound(theirs, bound, "torch")
    assert_reaches_bound(ours, bound, "ours")
    assert_same_distribution(ours, theirs, "vs torch")


@pytest.mark.parametrize("jdt, tdt", HALF, ids=str)
def test_half_normal_matches_torch(jdt, tdt):
    n = 1 << 18
    ours = ij.normal(0.0, 0.02)(KEY, (n,), jdt)
    theirs = torch_init(torch.nn.init.normal_, (n,), 0.0, 0.02, dtype=tdt)
    assert_same_distribution(ours, theirs, "normal in half vs torch")
    ours = ij.kaiming_normal()(KEY, flax_shape((256, 300)), jdt)
    theirs = torch_init(torch.nn.init.kaiming_normal_, (256, 300), dtype=tdt)
    assert_same_distribution(ours, theirs, "kaiming_normal in half vs torch")


@pytest.mark.parametrize("jdt, tdt", HALF, ids=str)
def test_half_trunc_normal_stays_in_rounded_interval(jdt, tdt):
    n = 1 << 18
    a, b = -0.3, 0.7  # neither is representable in bf16/fp16
    ours = np.asarray(ij.trunc_normal(0.1, 0.5, a, b)(KEY, (n,), jdt), np.float64)
    theirs = torch_init(torch.nn.init.trunc_normal_, (n,), 0.1, 0.5, a, b, dtype=tdt)
    lo, hi = rounded(a, jdt), rounded(b, jdt)
    for w in (ours, theirs):
        assert lo <= w.min() and w.max() <= hi
    assert_same_distribution(ours, theirs, "trunc_normal in half vs torch")


@pytest.mark.parametrize("jdt, tdt", HALF, ids=str)
def test_half_uniform_granularity_like_torch(jdt, tdt):
    """float32-then-round keeps torch's resolution (JAX's native bf16 uniform: 128 levels)."""
    n = 1 << 20
    ours = np.unique(np.asarray(ij.uniform()(KEY, (n,), jdt), np.float64)).size
    theirs = np.unique(torch_init(torch.nn.init.uniform_, (n,), dtype=tdt)).size
    assert theirs / 1.25 <= ours <= theirs * 1.25, (ours, theirs)
    native = np.unique(np.asarray(jax.random.uniform(KEY, (n,), jdt), np.float64)).size
    assert ours > 8 * native or jdt == jnp.float16, (ours, native)


def test_half_orthogonal_computed_in_float32():
    # torch refuses half types here (geqrf); we factor in float32 and round once.
    w = ij.orthogonal()(KEY, (64, 32), jnp.bfloat16)
    assert w.dtype == jnp.bfloat16
    m = np.asarray(w, np.float64).T
    np.testing.assert_allclose(m @ m.T, np.eye(32), atol=0.03)


def test_float64():
    """float64 (with x64 enabled) samples at float64 precision, like torch's float64."""
    with jax.enable_x64(True):
        key = jax.random.key(1)
        shape = (256, 300)
        ours = ij.kaiming_uniform(math.sqrt(5))(key, flax_shape(shape), jnp.float64)
        assert ours.dtype == jnp.float64
        theirs = torch_init(
            torch.nn.init.kaiming_uniform_, shape, dtype=torch.float64, a=math.sqrt(5)
        )
        bound = torch_spread("kaiming_uniform", shape, {"a": math.sqrt(5)})
        assert_uniform(ours, -bound, bound, "f64")
        assert_reaches_bound(theirs, bound, "torch f64")
        # Sampled at float64 resolution, not float32 widened.
        assert np.mean(np.asarray(ours) != np.asarray(ours).astype(np.float32)) > 0.99

        ours = ij.xavier_normal()(key, (300, 256), jnp.float64)
        assert ours.dtype == jnp.float64
        theirs = torch_init(torch.nn.init.xavier_normal_, (256, 300), dtype=torch.float64)
        assert_same_distribution(ours, theirs, "xavier_normal f64")

        ours = ij.trunc_normal(0.0, 1.0, 3.0, 5.0)(key, (1 << 17,), jnp.float64)
        assert ours.dtype == jnp.float64
        assert_ks(ours, stats.truncnorm(3.0, 5.0).cdf, "trunc_normal f64")

        ours = ij.orthogonal()(key, (96, 64), jnp.float64)
        assert ours.dtype == jnp.float64
        assert_semi_orthogonal(np.asarray(ours).T, 1.0, "orthogonal f64", atol=1e-12)
