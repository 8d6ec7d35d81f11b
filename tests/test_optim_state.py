"""torch optimizer state <-> initjax.optim's optax state: resume training across frameworks."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import initjax as ij
from initjax import port
from initjax.optim import state as ostate

# torch's Sequential keys 0.* and 2.* (the ReLU holds nothing) are layers/0 and layers/1 here
RENAME = [(r"^2\.", "1.")]
# Resumed runs agree with an uninterrupted torch run to float32 rounding: the
# Flax forward and backward round differently from torch's (~1e-7 relative per
# operation), and the optimizers carry that through 10 steps.
RTOL, ATOL = 1e-5, 1e-6

# (torch.optim / initjax.optim name, shared keyword arguments)
CONFIGS = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "amsgrad": True}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.5, "centered": True}),
    # a zero accumulator makes the first step lr * sign(g): the sign of a ~1e-9 gradient
    # entry differs between torch's and JAX's backward, so start the accumulator above 0
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("NAdam", {"lr": 1e-2}),
]


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List([ij.nnx.Linear(6, 8, rngs=rngs), ij.nnx.Linear(8, 3, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](nnx.relu(self.layers[0](x)))


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 6)).astype(np.float32), rng.standard_normal((16, 3)).astype(
        np.float32
    )


def _torch_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _torch_train(model, opt, steps: int) -> None:
    x, y = (torch.from_numpy(a) for a in _data())
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _flax_model(state_dict) -> Net:
    model = Net(nnx.Rngs(0))
    port.torch_to_nnx(state_dict, model, rename=RENAME)
    return model


def _trainer(tx):
    """``train(model, opt_state, steps)``: full-batch steps in JAX, compiled once per ``tx``."""
    x, y = (jnp.asarray(a) for a in _data())

    @jax.jit
    def step(graphdef, params, opt_state):
        def loss(p):
            return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def train(model: Net, opt_state, steps: int):
        graphdef, params = nnx.split(model, nnx.Param)
        for _ in range(steps):
            params, opt_state = step(graphdef, params, opt_state)
        return nnx.merge(graphdef, params), opt_state

    return train


def _assert_params_close(flax_model: Net, torch_model, label: str) -> None:
    got = port.nnx_to_torch(flax_model, torch_keys=torch_model.state_dict().keys(), rename=RENAME)
    for k, v in torch_model.state_dict().items():
        np.testing.assert_allclose(got[k], v.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{label} {k}")


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=[n for n, _ in CONFIGS])
def test_resume_across_frameworks(name, kwargs, tmp_path):
    make_torch = getattr(torch.optim, name)
    tx = getattr(ij.optim, name)(**kwargs)
    train = _trainer(tx)
    reference = _torch_model()
    half = copy.deepcopy(reference)
    _torch_train(reference, make_torch(reference.parameters(), **kwargs), 20)
    opt = make_torch(half.parameters(), **kwargs)
    _torch_train(half, opt, 10)
    names = [n for n, _ in half.named_parameters()]
    torch.save({"model": half.state_dict(), "optim": opt.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)

    # torch -> JAX: the parameters and the optimizer state, then 10 more steps in JAX
    model = _flax_model(ckpt["model"])
    keys = ckpt["model"].keys()
    opt_state = ostate.torch_to_nnx_state(
        ckpt["optim"], tx, model, names, step=10, torch_keys=keys, rename=RENAME
    )
    resumed, _ = train(model, opt_state, 10)
    _assert_params_close(resumed, reference, f"{name} torch 10 + jax 10")

    # exact round trip of the state itself
    back = ostate.nnx_to_torch_state(
        opt_state, model, names, ckpt["optim"]["param_groups"], torch_keys=keys, rename=RENAME
    )
    for i, entry in ckpt["optim"]["state"].items():
        assert set(back["state"][i]) == set(entry)
        for k, v in entry.items():
            np.testing.assert_array_equal(back["state"][i][k].numpy(), v.numpy(), err_msg=k)

    # JAX -> torch: 10 steps in JAX from torch's start, then 10 more in torch
    start = _torch_model()
    model = _flax_model(start.state_dict())
    trained, opt_state = train(model, tx.init(nnx.state(model, nnx.Param)), 10)
    torch_opt = make_torch(start.parameters(), **kwargs)
    groups = torch_opt.state_dict()["param_groups"]
    torch_opt.load_state_dict(
        ostate.nnx_to_torch_state(opt_state, trained, names, groups, torch_keys=keys, rename=RENAME)
    )
    weights = port.nnx_to_torch(trained, torch_keys=keys, rename=RENAME)
    start.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    _torch_train(start, torch_opt, 10)
    for k, v in reference.state_dict().items():
        np.testing.assert_allclose(
            start.state_dict()[k].numpy(), v.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{name} {k}"
        )


def test_param_groups_state_round_trip():
    """Two torch param groups (weights / biases) <-> optax.multi_transform of AdamW."""
    torch_model = _torch_model()
    weights = [p for n, p in torch_model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in torch_model.named_parameters() if n.endswith("bias")]
    names = [n for n, _ in torch_model.named_parameters() if n.endswith("weight")]
    names += [n for n, _ in torch_model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=1e-2)
    _torch_train(torch_model, opt, 3)
    model = _flax_model(torch_model.state_dict())
    params = nnx.state(model, nnx.Param)
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "decay" if "kernel" in jax.tree_util.keystr(path) else "none", params
    )
    tx = optax.multi_transform(
        {"decay": ij.optim.AdamW(1e-2), "none": ij.optim.AdamW(1e-2, weight_decay=0.0)}, labels
    )
    keys = torch_model.state_dict().keys()
    sd = opt.state_dict()
    opt_state = ostate.torch_to_nnx_state(sd, tx, model, names, torch_keys=keys, rename=RENAME)
    back = ostate.nnx_to_torch_state(
        opt_state, model, names, sd["param_groups"], torch_keys=keys, rename=RENAME
    )
    for i, entry in sd["state"].items():
        for k, v in entry.items():
            np.testing.assert_array_equal(back["state"][i][k].numpy(), v.numpy(), err_msg=k)
    opt.load_state_dict(back)


def test_linen_round_trip():
    import flax.linen as nn

    class LinenNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(ij.linen.Dense(8, name="layers_0")(x))
            return ij.linen.Dense(3, name="layers_1")(x)

    torch_model = _torch_model()
    opt = torch.optim.Adam(torch_model.parameters(), lr=1e-2)
    _torch_train(torch_model, opt, 2)
    x = np.zeros((1, 6), np.float32)
    flax_model = LinenNet()
    layers = port.linen_layers(flax_model, x)
    keys = torch_model.state_dict().keys()
    abstract = jax.eval_shape(flax_model.init, jax.random.key(0), x)
    variables, _ = port.torch_to_linen(torch_model.state_dict(), abstract, layers, rename=RENAME)
    names = [n for n, _ in torch_model.named_parameters()]
    tx = ij.optim.Adam(1e-2)
    sd = opt.state_dict()
    opt_state = ostate.torch_to_linen_state(
        sd, tx, variables, layers, names, torch_keys=keys, rename=RENAME
    )
    assert int(opt_state.count) == 2
    # a Linear's moments take its weight's layout: transposed into the kernel
    np.testing.assert_array_equal(
        opt_state.exp_avg["layers_0"]["kernel"], sd["state"][0]["exp_avg"].numpy().T
    )
    back = ostate.linen_to_torch_state(
        opt_state, variables, layers, names, sd["param_groups"], torch_keys=keys, rename=RENAME
    )
    for i, entry in sd["state"].items():
        for k, v in entry.items():
            np.testing.assert_array_equal(back["state"][i][k].numpy(), v.numpy(), err_msg=k)


# --------------------------------------------------------------- errors ---


def _adam_checkpoint():
    torch_model = _torch_model()
    opt = torch.optim.Adam(torch_model.parameters(), lr=1e-2)
    _torch_train(torch_model, opt, 1)
    names = [n for n, _ in torch_model.named_parameters()]
    return _flax_model(torch_model.state_dict()), opt.state_dict(), names, torch_model


def _port(sd, tx, model, names, torch_model, **kw):
    keys = torch_model.state_dict().keys()
    return ostate.torch_to_nnx_state(sd, tx, model, names, torch_keys=keys, rename=RENAME, **kw)


def test_missing_and_unexpected_entries_are_listed_together():
    model, sd, names, torch_model = _adam_checkpoint()
    del sd["state"][1]["exp_avg_sq"]
    sd["state"][2]["momentum_buffer"] = sd["state"][2]["exp_avg"]
    del sd["state"][3]
    with pytest.raises(port.PortError) as err:
        _port(sd, ij.optim.Adam(1e-2), model, names, torch_model)
    text = str(err.value)
    assert "0.bias (index 1): no 'exp_avg_sq'" in text
    assert "0.weight" not in text
    assert "2.weight (index 2): 'momentum_buffer'" in text
    assert "2.bias (index 3): no optimizer state" in text


def test_amsgrad_mismatch_is_reported():
    model, sd, names, torch_model = _adam_checkpoint()
    with pytest.raises(port.PortError, match="no 'max_exp_avg_sq'"):
        _port(sd, ij.optim.Adam(1e-2, amsgrad=True), model, names, torch_model)


def test_param_names_must_match_the_model():
    model, sd, names, torch_model = _adam_checkpoint()
    wrong = ["0.weight", "0.bias", "2.weight", "3.bias"]
    with pytest.raises(port.PortError) as err:
        _port(sd, ij.optim.Adam(1e-2), model, wrong, torch_model)
    assert "3.bias: no Flax parameter makes it" in str(err.value)
    assert "2.bias: a Flax parameter not among param_names" in str(err.value)
    with pytest.raises(ValueError, match="param_groups hold 4 parameters"):
        _port(sd, ij.optim.Adam(1e-2), model, names[:3], torch_model)


def test_sgd_needs_the_step_and_unsupported_optimizers_are_refused():
    torch_model = _torch_model()
    opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    _torch_train(torch_model, opt, 1)
    model = _flax_model(torch_model.state_dict())
    names = [n for n, _ in torch_model.named_parameters()]
    with pytest.raises(port.PortError, match="pass step="):
        _port(opt.state_dict(), ij.optim.SGD(0.1, momentum=0.9), model, names, torch_model)
    with pytest.raises(ValueError, match="holds no optimizer state this port supports"):
        _port(opt.state_dict(), ij.optim.Adadelta(), model, names, torch_model)


def test_state_from_a_pt_file(tmp_path):
    model, sd, names, torch_model = _adam_checkpoint()
    torch.save(sd, tmp_path / "optim.pt")
    tx = ij.optim.Adam(1e-2)
    from_file = _port(str(tmp_path / "optim.pt"), tx, model, names, torch_model)
    in_memory = _port(sd, tx, model, names, torch_model)
    for a, b in zip(jax.tree.leaves(from_file), jax.tree.leaves(in_memory), strict=True):
        np.testing.assert_array_equal(a, b)


def test_summed_recurrent_biases_are_refused():
    """Flax's cell holds bias_ih + bias_hh as one bias: no faithful moment, so no port."""
    import flax.linen as nn

    class RNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.RNN(nn.OptimizedLSTMCell(5, parent=None), name="rnn")(x)

    torch_lstm = torch.nn.LSTM(3, 5, batch_first=True)
    opt = torch.optim.Adam(torch_lstm.parameters())
    torch_lstm(torch.ones(2, 4, 3))[0].sum().backward()
    opt.step()
    x = np.zeros((2, 4, 3), np.float32)
    flax_model = RNN()
    layers = port.linen_layers(flax_model, x)
    sd = {f"rnn.{k}": v for k, v in torch_lstm.state_dict().items()}
    abstract = jax.eval_shape(flax_model.init, jax.random.key(0), x)
    variables, _ = port.torch_to_linen(sd, abstract, layers)
    names = [f"rnn.{n}" for n, _ in torch_lstm.named_parameters()]
    with pytest.raises(port.PortError, match="rnn.bias_hh_l0: no Flax parameter makes it"):
        ostate.torch_to_linen_state(
            opt.state_dict(), ij.optim.Adam(), variables, layers, names, torch_keys=sd.keys()
        )
