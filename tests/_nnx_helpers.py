"""Shared machinery for tests/test_nnx.py: parameter trees, laws, torch comparisons.

torch weights reach an nnx layer only through :func:`ported`, i.e. through
``initjax.port`` (the library's one copy of the torch <-> Flax mappings). The
same port drives both checks: the distribution check compares fresh initjax
parameters with fresh torch parameters ported into the same layer, and the
layout check loads torch's weights and compares forward passes. So every
layout test is also a test of the port rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import torch
from _stats import ALPHA, assert_mean_std, assert_reaches_bound, assert_same_distribution
from flax import nnx

from initjax import port

Params = dict[str, np.ndarray]
Law = Callable[[np.ndarray, str], None]


def t2n(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def params(model: nnx.Module) -> Params:
    """The model's ``nnx.Param`` leaves as ``{"a/b": numpy array}``."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    return {"/".join(map(str, path)): np.asarray(var[...]) for path, var in flat}


def ported(model: nnx.Module, t: torch.nn.Module) -> nnx.Module:
    """``model`` holding torch module ``t``'s weights, loaded by ``initjax.port`` (strict)."""
    report = port.torch_to_nnx(t.state_dict(), model)
    assert report.ok, report.describe()
    return model


def to_channels_last(x: torch.Tensor) -> jnp.ndarray:
    return jnp.asarray(np.moveaxis(t2n(x), 1, -1))


def to_channels_first(y) -> np.ndarray:
    return np.moveaxis(np.asarray(y), -1, 1)


# -------------------------------------------------------------------- laws ---
# Bounds are torch's formulas, rounded to float32 as torch rounds them before
# sampling; every law is checked on torch's samples as well as on ours.


def _f32(x: float) -> float:
    return float(np.float32(x))


def uniform(bound: float) -> Law:
    """U(+-bound): within the bound and reaching it."""
    b = _f32(bound)
    return lambda x, what: assert_reaches_bound(x, b, what)


def triangular(k: float) -> Law:
    """The sum of two independent U(+-k): within 2k and reaching it.

    P(|x| > 2k(1 - t)) = t**2, so n samples all stay below 2k(1 - t) with
    probability (1 - t**2)**n <= ALPHA for t = sqrt(-ln(ALPHA) / n).
    """
    top = 2 * _f32(k)

    def law(x: np.ndarray, what: str) -> None:
        m = float(np.abs(x).max())
        assert m <= top * (1 + 1e-6), f"{what}: max|w| {m} exceeds 2k={top}"
        t = math.sqrt(-math.log(ALPHA) / x.size)
        assert m >= top * (1 - t), f"{what}: max|w| {m} never nears 2k={top} (n={x.size})"

    return law


def normal(std: float) -> Law:
    return lambda x, what: assert_mean_std(x, 0.0, std, what)


def const(value: float) -> Law:
    def law(x: np.ndarray, what: str) -> None:
        assert np.all(x == value), f"{what}: not all {value}"

    return law


def split(sizes: tuple[int, ...], laws: tuple[Law, ...]) -> Law:
    """Different laws on consecutive blocks of the last axis."""

    def law(x: np.ndarray, what: str) -> None:
        start = 0
        for size, part in zip(sizes, laws, strict=True):
            part(x[..., start : start + size], f"{what}[{start}:{start + size}]")
            start += size
        assert start == x.shape[-1]

    return law


def zero_row(row: int, rest: Law) -> Law:
    """Row ``row`` of an embedding table is zero; the other rows follow ``rest``."""

    def law(x: np.ndarray, what: str) -> None:
        assert np.all(x[:, row] == 0), f"{what}: padding row {row} is not zero"
        rest(np.delete(x, row, axis=1), what)

    return law


def check_distribution(
    build: Callable[[nnx.Rngs], nnx.Module],
    build_torch: Callable[[], torch.nn.Module],
    laws: dict[str, Law],
    inits: int,
) -> None:
    """Pool ``inits`` fresh inits of each side (torch's ported into the layer);
    every parameter obeys its law and initjax's samples pass a two-sample KS
    test against torch's."""
    ours = [params(build(nnx.Rngs(seed))) for seed in range(inits)]
    target = build(nnx.Rngs(0))
    theirs = []
    for seed in range(inits):
        torch.manual_seed(1000 + seed)
        theirs.append(params(ported(target, build_torch())))
    assert set(ours[0]) == set(theirs[0]) == set(laws), (sorted(ours[0]), sorted(laws))
    for name, law in laws.items():
        x = np.stack([p[name] for p in ours])
        y = np.stack([p[name] for p in theirs]).astype(x.dtype)
        assert x.shape == y.shape, (name, x.shape, y.shape)
        law(y, f"torch {name}")
        law(x, f"initjax {name}")
        assert_same_distribution(x, y, name)
