"""Statistical assertions with tolerances derived from the sample size.

Every check is a hypothesis test at a fixed, tiny false-alarm rate ``ALPHA``:
with fixed seeds a correct sampler passes deterministically, and a wrong bound,
std or shape of distribution fails because the statistic scales with ``n``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 1e-6  # per-check false-alarm rate
Z = float(stats.norm.isf(ALPHA / 2))  # two-sided z bound (~4.9)


def _flat(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def assert_ks(x, cdf, what: str = "") -> None:
    """One-sample Kolmogorov-Smirnov test against ``cdf`` (a scipy distribution or callable)."""
    x = _flat(x)
    res = stats.kstest(x, cdf)
    assert res.pvalue > ALPHA, (
        f"{what}: KS statistic {res.statistic:.4g} (n={x.size}), p={res.pvalue:.3g}"
    )


def assert_same_distribution(x, y, what: str = "") -> None:
    """Two-sample KS test: ``x`` (initjax) and ``y`` (torch) come from one distribution."""
    x, y = _flat(x), _flat(y)
    res = stats.ks_2samp(x, y)
    assert res.pvalue > ALPHA, (
        f"{what}: two-sample KS {res.statistic:.4g} (n={x.size}, m={y.size}), p={res.pvalue:.3g}"
    )


def assert_mean_std(x, mean: float, std: float, what: str = "") -> None:
    """z-score bounds on the sample mean and the sample variance."""
    x = _flat(x)
    n = x.size
    assert abs(x.mean() - mean) <= Z * std / math.sqrt(n) + 1e-12, (
        f"{what}: mean {x.mean():.6g} vs {mean:.6g} (n={n})"
    )
    # Var of the sample variance ~ (mu4 - sigma^4)/n; use the empirical 4th moment.
    var = x.var()
    mu4 = np.mean((x - x.mean()) ** 4)
    tol = Z * math.sqrt(max(mu4 - var**2, 0.0) / n) + 1e-12
    assert abs(var - std**2) <= tol, f"{what}: std {math.sqrt(var):.6g} vs {std:.6g} (n={n})"


def assert_reaches_bound(x, bound: float, what: str = "") -> None:
    """max|x| <= bound, and max|x| comes as close to it as n uniform-like samples must.

    For n samples spread over [-b, b] with density at least that of a uniform,
    P(max|x| < b (1 - t)) <= (1 - t)^n, so ``t = -ln(ALPHA) / n`` bounds the gap.
    """
    x = _flat(x)
    top = np.abs(x).max()
    assert top <= bound, f"{what}: max|w| {top!r} exceeds bound {bound!r}"
    t = -math.log(ALPHA) / x.size
    assert top >= bound * (1 - t), (
        f"{what}: max|w| {top!r} never nears bound {bound!r} (n={x.size})"
    )


def assert_uniform(x, low: float, high: float, what: str = "") -> None:
    """Samples of U[low, high): within the bounds, reaching them, KS and moments."""
    x = _flat(x)
    assert x.min() >= low and x.max() <= high, f"{what}: samples leave [{low}, {high}]"
    if low == -high:
        assert_reaches_bound(x, high, what)
    assert_ks(x, stats.uniform(loc=low, scale=high - low).cdf, what)
    assert_mean_std(x, (low + high) / 2, (high - low) / math.sqrt(12), what)


def assert_normal(x, mean: float, std: float, what: str = "") -> None:
    """Samples of N(mean, std**2): KS and moments."""
    assert_ks(x, stats.norm(loc=mean, scale=std).cdf, what)
    assert_mean_std(x, mean, std, what)
