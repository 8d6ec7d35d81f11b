"""initjax.optim against live torch.optim: same start, same gradients, every step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from _optim_parity import assert_close, gradients, jax_run, start_params, torch_run

import initjax as ij
from initjax.optim import lr_scheduler as S

# (torch.optim / initjax.optim class name, keyword arguments shared by both)
CONFIGS = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "maximize": True}),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 1e-2, "betas": (0.5, 0.9), "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.9, "centered": True}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.5, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.01}),
    ("Adagrad", {"initial_accumulator_value": 0.1, "eps": 1e-6, "maximize": True}),
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.01, "maximize": True}),
    ("Adamax", {}),
    ("Adamax", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01, "maximize": True}),
    ("NAdam", {}),
    ("NAdam", {"lr": 1e-2, "momentum_decay": 0.01, "weight_decay": 0.01}),
    ("NAdam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {}),
    ("RAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}),
    ("RAdam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
]


def _label(name: str, kwargs: dict) -> str:
    return name + "(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=[_label(n, k) for n, k in CONFIGS])
def test_optimizer_matches_torch_every_step(name, kwargs):
    params, grads = start_params(), gradients()
    want = torch_run(lambda p: getattr(torch.optim, name)(p, **kwargs), params, grads)
    got = jax_run(getattr(ij.optim, name)(**kwargs), params, grads)
    assert_close(got, want, _label(name, kwargs))


def test_bias_correction_is_float64_accurate():
    # a float32 1 - 0.999**t is ~1.3e-5 relative off at t = 1; ours is within ulps
    from initjax.optim._common import one_minus_pow

    t = jnp.arange(1, 2001, dtype=jnp.int32)
    got = np.asarray(jax.jit(lambda t: one_minus_pow(0.999, t))(t), np.float64)
    want = 1 - 0.999 ** np.arange(1, 2001, dtype=np.float64)
    assert np.max(np.abs(got / want - 1)) < 4e-7  # a few float32 ulps (2**-24 = 6e-8)


# ------------------------------------------------------ schedules as lr ---


SCHEDULED = [
    (
        "SGD",
        {"momentum": 0.9, "nesterov": True},
        lambda lr: S.StepLR(lr, step_size=7, gamma=0.5),
        lambda o, lr: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    ),
    (
        "SGD",
        {"momentum": 0.9},
        lambda lr: S.OneCycleLR(lr, total_steps=50),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=50),
    ),
    (  # torch's OneCycleLR cycles even a zero momentum (it overwrites the group's)
        "SGD",
        {},
        lambda lr: S.OneCycleLR(lr, total_steps=50, three_phase=True),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=lr, total_steps=50, three_phase=True
        ),
    ),
    (
        "Adam",
        {"amsgrad": True},
        lambda lr: S.OneCycleLR(lr, total_steps=50, anneal_strategy="linear"),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=lr, total_steps=50, anneal_strategy="linear"
        ),
    ),
    (
        "AdamW",
        {"weight_decay": 0.1},
        lambda lr: S.OneCycleLR(lr, total_steps=50, base_momentum=0.7, max_momentum=0.9),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=lr, total_steps=50, base_momentum=0.7, max_momentum=0.9
        ),
    ),
    (
        "RMSprop",
        {"momentum": 0.5, "lr": 1e-3},
        lambda lr: S.OneCycleLR(lr, total_steps=50),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=50),
    ),
    (
        "NAdam",
        {},
        lambda lr: S.OneCycleLR(lr, total_steps=50),
        lambda o, lr: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=50),
    ),
    (
        "Adagrad",
        {"lr_decay": 0.01},
        lambda lr: S.CosineAnnealingLR(lr, T_max=20, eta_min=1e-3),
        lambda o, lr: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3),
    ),
    (
        "AdamW",
        {},
        lambda lr: S.SequentialLR(
            [S.LinearLR(lr, start_factor=0.1, total_iters=10), S.ExponentialLR(lr, gamma=0.95)],
            milestones=[10],
        ),
        lambda o, lr: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=10),
                torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.95),
            ],
            milestones=[10],
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "sched", "torch_sched"),
    SCHEDULED,
    ids=[
        "SGD-StepLR",
        "SGD-OneCycleLR",
        "SGD-no-momentum-OneCycleLR-three_phase",
        "Adam-amsgrad-OneCycleLR-linear",
        "AdamW-OneCycleLR-momentum-0.7-0.9",
        "RMSprop-OneCycleLR",
        "NAdam-OneCycleLR",
        "Adagrad-CosineAnnealingLR",
        "AdamW-SequentialLR",
    ],
)
def test_scheduled_optimizer_matches_torch(name, kwargs, sched, torch_sched, request):
    params, grads = start_params(), gradients()
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr", 0.05)  # RMSprop's steps are ~lr * 10 at first: a smaller lr
    want = torch_run(
        lambda p: getattr(torch.optim, name)(p, lr=lr, **kwargs),
        params,
        grads,
        lambda o: torch_sched(o, lr),
    )
    got = jax_run(getattr(ij.optim, name)(lr=sched(lr), **kwargs), params, grads)
    assert_close(got, want, request.node.callspec.id)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("SGD", {"lr": 0.05, "momentum": 0.9}), ("AdamW", {"lr": 0.01, "weight_decay": 0.1})],
)
def test_reduce_lr_on_plateau_matches_torch(name, kwargs):
    """Scaling the whole update by lr_now / lr is torch's step (decoupled decay included)."""
    params, grads = start_params(), gradients()
    # a metric that improves, stalls (ties and threshold-close values), then improves again
    rng = np.random.default_rng(2)
    metrics = np.concatenate(
        [np.linspace(2.0, 1.0, 10), 1.0 + 0.01 * rng.random(25), np.linspace(0.9, 0.5, 15)]
    ).astype(np.float32)
    kw = {"factor": 0.5, "patience": 3, "cooldown": 2, "min_lr": kwargs["lr"] / 12}
    want = torch_run(
        lambda p: getattr(torch.optim, name)(p, **kwargs),
        params,
        grads,
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kw),
        metrics,
    )
    tx = optax.chain(getattr(ij.optim, name)(**kwargs), S.ReduceLROnPlateau(kwargs["lr"], **kw))
    got = jax_run(tx, params, grads, metrics)
    assert_close(got, want, f"{name} + ReduceLROnPlateau")


# ------------------------------------------------------ parameter groups ---


def test_param_groups_through_multi_transform():
    """torch param_groups (no decay, 10x lr for biases) = optax.multi_transform over labels."""
    params, grads = start_params(), gradients()
    names = list(params)

    def torch_opt(tensors):
        weights = [t for n, t in zip(names, tensors, strict=True) if n.startswith("w")]
        biases = [t for n, t in zip(names, tensors, strict=True) if n.startswith("b")]
        return torch.optim.AdamW(
            [{"params": weights}, {"params": biases, "lr": 1e-2, "weight_decay": 0.0}],
            lr=1e-3,
            weight_decay=0.1,
        )

    # torch_run orders tensors as `names`; the groups only regroup them
    want = torch_run(torch_opt, params, grads)
    labels = {n: "weights" if n.startswith("w") else "biases" for n in names}
    tx = optax.multi_transform(
        {
            "weights": ij.optim.AdamW(1e-3, weight_decay=0.1),
            "biases": ij.optim.AdamW(1e-2, weight_decay=0.0),
        },
        labels,
    )
    got = jax_run(tx, params, grads)
    assert_close(got, want, "AdamW param groups")


# ------------------------------------------------------------- clipping ---


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    grads = {k: v[0] for k, v in gradients().items()}
    tensors = {k: torch.tensor(v) for k, v in grads.items()}
    for t in tensors.values():
        t.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm, norm_type)
    tx = ij.optim.clip_grad_norm(max_norm, norm_type)
    got, _ = tx.update(grads, tx.init(grads))
    for k, t in tensors.items():
        assert t.grad is not None
        # float32: the norm's sum runs in a different order (a few ulps)
        np.testing.assert_allclose(got[k], t.grad.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("clip_value", [0.3, 2.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads = {k: v[0] for k, v in gradients().items()}
    tensors = {k: torch.tensor(v) for k, v in grads.items()}
    for t in tensors.values():
        t.grad = t.clone()
    torch.nn.utils.clip_grad_value_(list(tensors.values()), clip_value)
    tx = ij.optim.clip_grad_value(clip_value)
    got, _ = tx.update(grads, tx.init(grads))
    for k, t in tensors.items():
        assert t.grad is not None
        np.testing.assert_array_equal(got[k], t.grad.numpy())


def test_clip_then_sgd_matches_torch():
    params, grads = start_params(), gradients(scale=3.0)

    def torch_opt(tensors):
        opt = torch.optim.SGD(tensors, lr=0.05, momentum=0.9, nesterov=True)
        step = opt.step

        def clipped_step():
            torch.nn.utils.clip_grad_norm_(tensors, 1.0)
            return step()

        opt.step = clipped_step  # type: ignore[method-assign]
        return opt

    want = torch_run(torch_opt, params, grads)
    tx = optax.chain(ij.optim.clip_grad_norm(1.0), ij.optim.SGD(0.05, momentum=0.9, nesterov=True))
    got = jax_run(tx, params, grads)
    assert_close(got, want, "clip_grad_norm + SGD nesterov")


# --------------------------------------------------------------- errors ---


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ij.optim.SGD(-1.0), "Invalid learning rate: -1.0"),
        (lambda: ij.optim.SGD(0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        (lambda: ij.optim.SGD(0.1, weight_decay=-1), "Invalid weight_decay value: -1"),
        (lambda: ij.optim.SGD(0.1, nesterov=True), "Nesterov momentum requires a momentum"),
        (
            lambda: ij.optim.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True),
            "zero dampening",
        ),
        (lambda: ij.optim.Adam(eps=-1.0), "Invalid epsilon value: -1.0"),
        (lambda: ij.optim.Adam(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (lambda: ij.optim.AdamW(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (lambda: ij.optim.RMSprop(alpha=-0.1), "Invalid alpha value: -0.1"),
        (lambda: ij.optim.Adagrad(lr_decay=-1.0), "Invalid lr_decay value: -1.0"),
        (
            lambda: ij.optim.Adagrad(initial_accumulator_value=-1.0),
            "Invalid initial_accumulator_value value: -1.0",
        ),
        (lambda: ij.optim.Adadelta(rho=1.5), "Invalid rho value: 1.5"),
        (lambda: ij.optim.NAdam(momentum_decay=-1.0), "Invalid momentum_decay value: -1.0"),
        (
            lambda: ij.optim.Adagrad(S.OneCycleLR(0.1, total_steps=10)),
            "optimizer must support momentum or beta1",
        ),
        (
            lambda: ij.optim.Adadelta(S.OneCycleLR(0.1, total_steps=10)),
            "optimizer must support momentum or beta1",
        ),
    ],
)
def test_bad_arguments_raise_like_torch(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make()


def test_weight_decay_without_params_raises():
    tx = ij.optim.SGD(0.1, weight_decay=0.1)
    grads = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="weight_decay needs the params"):
        tx.update(grads, tx.init(grads))


@pytest.mark.parametrize(
    "tx",
    [ij.optim.Adam(amsgrad=True), ij.optim.RMSprop(momentum=0.9, centered=True), ij.optim.NAdam()],
)
def test_state_fields_own_their_buffers(tx):
    """A step that donates the state (``donate_argnums``) must not receive a buffer twice."""
    params = {"w": jnp.ones(3)}
    moments = [x for x in jax.tree.leaves(tx.init(params)) if x.ndim]
    assert len({x.unsafe_buffer_pointer() for x in moments}) == len(moments)


@pytest.mark.parametrize(
    "name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam"]
)
def test_bfloat16_params_keep_bfloat16_updates_and_state(name):
    """float32 scalars (a schedule's lr, OneCycleLR's beta1) do not promote the state."""
    lr = S.StepLR(0.01, 3) if name == "Adagrad" else S.OneCycleLR(0.01, total_steps=10)
    tx = getattr(ij.optim, name)(lr)
    params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(params, state, params)
        assert updates["w"].dtype == jnp.bfloat16
        moments = [x for x in jax.tree.leaves(state) if x.ndim]
        assert moments and all(x.dtype == jnp.bfloat16 for x in moments)
