"""initjax.optim.lr_scheduler against live torch: the lr (and momentum) of every step."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as T

from initjax.optim import lr_scheduler as S

LR = 0.1
STEPS = 80
# float64 (torch) vs float32 (here): a few float32 ulps relative (2**-24 = 6e-8
# per rounding), and an absolute floor at the float32 resolution of the base lr
# for values that reach ~0 (the bottom of a cosine, the end of a polynomial).
RTOL, ATOL = 1e-6, 1e-7 * LR


def torch_lrs(make, steps: int = STEPS, optimizer=torch.optim.SGD, **opt_kwargs):
    """torch's ``get_last_lr()`` and momentum/beta1 before each of ``steps`` optimizer steps."""
    opt = optimizer([torch.zeros(1, requires_grad=True)], lr=LR, **opt_kwargs)
    sched = make(opt)
    lrs, moms = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
        for _ in range(steps):
            group = opt.param_groups[0]
            lrs.append(sched.get_last_lr()[0])
            moms.append(group["betas"][0] if "betas" in group else group.get("momentum", 0.0))
            opt.step()
            sched.step()
    return np.array(lrs), np.array(moms)


def ours(schedule, steps: int = STEPS) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(steps, dtype=jnp.int32)))


CASES = {
    "StepLR": (S.StepLR(LR, 7), lambda o: T.StepLR(o, 7)),
    "StepLR-gamma0.5": (S.StepLR(LR, 3, gamma=0.5), lambda o: T.StepLR(o, 3, gamma=0.5)),
    "MultiStepLR": (
        S.MultiStepLR(LR, [12, 5, 30, 30], gamma=0.3),
        lambda o: T.MultiStepLR(o, [12, 5, 30, 30], gamma=0.3),
    ),
    "ExponentialLR": (S.ExponentialLR(LR, 0.95), lambda o: T.ExponentialLR(o, 0.95)),
    "CosineAnnealingLR": (S.CosineAnnealingLR(LR, 20), lambda o: T.CosineAnnealingLR(o, 20)),
    "CosineAnnealingLR-eta_min": (
        S.CosineAnnealingLR(LR, 13, eta_min=1e-3),
        lambda o: T.CosineAnnealingLR(o, 13, eta_min=1e-3),
    ),
    "CosineAnnealingWarmRestarts": (
        S.CosineAnnealingWarmRestarts(LR, 7),
        lambda o: T.CosineAnnealingWarmRestarts(o, 7),
    ),
    "CosineAnnealingWarmRestarts-T_mult": (
        S.CosineAnnealingWarmRestarts(LR, 3, T_mult=2, eta_min=0.01),
        lambda o: T.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=0.01),
    ),
    "LinearLR": (S.LinearLR(LR), lambda o: T.LinearLR(o)),
    "LinearLR-down": (
        S.LinearLR(LR, start_factor=1.0, end_factor=0.25, total_iters=30),
        lambda o: T.LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=30),
    ),
    "ConstantLR": (S.ConstantLR(LR, 0.5, 7), lambda o: T.ConstantLR(o, 0.5, 7)),
    "PolynomialLR": (S.PolynomialLR(LR, 30, 2.0), lambda o: T.PolynomialLR(o, 30, 2.0)),
    "PolynomialLR-sqrt": (S.PolynomialLR(LR, 41, 0.5), lambda o: T.PolynomialLR(o, 41, 0.5)),
    "LambdaLR": (
        S.LambdaLR(LR, lambda n: 1.0 / (1.0 + 0.1 * n)),
        lambda o: T.LambdaLR(o, lambda n: 1.0 / (1.0 + 0.1 * n)),
    ),
    "SequentialLR": (
        S.SequentialLR([S.LinearLR(LR, 0.1, total_iters=10), S.CosineAnnealingLR(LR, 40)], [10]),
        lambda o: T.SequentialLR(
            o, [T.LinearLR(o, 0.1, total_iters=10), T.CosineAnnealingLR(o, 40)], [10]
        ),
    ),
    "SequentialLR-3": (
        S.SequentialLR(
            [S.ConstantLR(LR, 0.25, 4), S.ExponentialLR(LR, 0.9), S.StepLR(LR, 5, 0.5)], [6, 30]
        ),
        lambda o: T.SequentialLR(
            o, [T.ConstantLR(o, 0.25, 4), T.ExponentialLR(o, 0.9), T.StepLR(o, 5, 0.5)], [6, 30]
        ),
    ),
    "OneCycleLR": (
        S.OneCycleLR(LR, total_steps=STEPS),
        lambda o: T.OneCycleLR(o, LR, total_steps=STEPS),
    ),
    "OneCycleLR-linear-three_phase": (
        S.OneCycleLR(LR, epochs=8, steps_per_epoch=10, anneal_strategy="linear", three_phase=True),
        lambda o: T.OneCycleLR(
            o, LR, epochs=8, steps_per_epoch=10, anneal_strategy="linear", three_phase=True
        ),
    ),
    "OneCycleLR-no-momentum": (
        S.OneCycleLR(LR, total_steps=STEPS, pct_start=0.25, cycle_momentum=False, div_factor=10.0),
        lambda o: T.OneCycleLR(
            o, LR, total_steps=STEPS, pct_start=0.25, cycle_momentum=False, div_factor=10.0
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_matches_torch_get_last_lr(name):
    schedule, make = CASES[name]
    want, _ = torch_lrs(make)
    got = ours(schedule)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    print(f"\n{name}: max rel diff {np.max(np.abs(got - want) / (np.abs(want) + ATOL / RTOL)):.1e}")


@pytest.mark.parametrize(
    ("optimizer", "kwargs"), [(torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {})]
)
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_momentum_matches_torch(optimizer, kwargs, three_phase):
    schedule = S.OneCycleLR(LR, total_steps=STEPS, base_momentum=0.8, three_phase=three_phase)
    _, want = torch_lrs(
        lambda o: T.OneCycleLR(
            o, LR, total_steps=STEPS, base_momentum=0.8, three_phase=three_phase
        ),
        optimizer=optimizer,
        **kwargs,
    )
    assert isinstance(schedule, S.CycledSchedule)
    np.testing.assert_allclose(ours(schedule.momentum), want, rtol=RTOL, atol=0)


def test_per_epoch_stepping_wraps_the_count():
    steps_per_epoch = 4
    sched = S.StepLR(LR, step_size=2)
    want, _ = torch_lrs(lambda o: T.StepLR(o, step_size=2), steps=STEPS // steps_per_epoch)
    got = ours(lambda step: sched(step // steps_per_epoch))
    np.testing.assert_allclose(got, np.repeat(want, steps_per_epoch), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: S.CosineAnnealingWarmRestarts(LR, 0), "Expected positive integer T_0, but got 0"),
        (
            lambda: S.CosineAnnealingWarmRestarts(LR, 5, T_mult=0),
            "Expected integer T_mult >= 1, but got 0",
        ),
        (lambda: S.LinearLR(LR, start_factor=0.0), "Starting multiplicative factor"),
        (lambda: S.LinearLR(LR, end_factor=1.5), "Ending multiplicative factor"),
        (lambda: S.ConstantLR(LR, factor=2.0), "Constant multiplicative factor"),
        (lambda: S.SequentialLR([S.StepLR(LR, 2)], [3]), "one more than the number of milestone"),
        (lambda: S.OneCycleLR(LR), "You must define either total_steps OR"),
        (lambda: S.OneCycleLR(LR, total_steps=0), "Expected positive integer total_steps"),
        (lambda: S.OneCycleLR(LR, 10, pct_start=1.5), "Expected float between 0 and 1 pct_start"),
        (lambda: S.OneCycleLR(LR, 10, anneal_strategy="exp"), "anneal_strategy must be one of"),  # type: ignore[arg-type]
        (lambda: S.ReduceLROnPlateau(LR, factor=1.0), "Factor should be < 1.0"),
        (lambda: S.ReduceLROnPlateau(LR, mode="up"), "mode up is unknown!"),  # type: ignore[arg-type]
        (
            lambda: S.ReduceLROnPlateau(LR, threshold_mode="x"),  # type: ignore[arg-type]
            "threshold mode x is unknown!",
        ),
    ],
)
def test_bad_arguments_raise_like_torch(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make()


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_reduce_lr_on_plateau_lrs_match_torch(mode, threshold_mode):
    rng = np.random.default_rng(3)
    # plateaus with small wiggles around the threshold, then real progress
    metrics = np.concatenate([1.0 + 0.02 * rng.standard_normal(40), np.linspace(0.9, 0.2, 20)])
    if mode == "max":
        metrics = -metrics
    metrics = metrics.astype(np.float32)
    kw = {"mode": mode, "threshold_mode": threshold_mode, "patience": 2, "cooldown": 1}
    kw |= {"factor": 0.5, "min_lr": 1e-3, "threshold": 0.01}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    sched = T.ReduceLROnPlateau(opt, **kw)
    want = []
    for m in metrics:
        sched.step(float(m))
        want.append(opt.param_groups[0]["lr"])
    tx = S.ReduceLROnPlateau(LR, **kw)
    params = {"p": jnp.zeros(1)}

    @jax.jit
    def run(metrics):
        def step(state, value):
            _, state = tx.update(params, state, value=value)
            return state, state.lr

        return jax.lax.scan(step, tx.init(params), metrics)[1]

    np.testing.assert_allclose(np.asarray(run(jnp.asarray(metrics))), want, rtol=RTOL, atol=0)
