"""torch's nn.RNN/LSTM/GRU stacks and torch-signature cells, linen and nnx, against live torch.

Weights reach the Flax modules only through ``initjax.port`` (torch's own
state_dict keys, no rename) and gradients go back through it, so every parity
case also checks the port rule. Forward <= 1e-5, gradients (input, initial
states and every parameter) <= 1e-4, float32.

Configuration grid (a covering subset, not the full product, to keep compile
time down): LSTM covers num_layers 1/2/3, uni- and bidirectional, batch_first
both, unbatched input, proj_size 0 and 2, bias on and off, initial states given
and omitted; GRU and RNN cover num_layers 1/2, both directions, batch_first
both, initial states both ways, and GRU unbatched and bias=False; RNN tanh and
relu. Each case runs in linen or nnx (both share one forward).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _stats import assert_reaches_bound, assert_same_distribution
from flax import nnx

import initjax as ij
from initjax import port, replay

T, B, IN, H, P = 4, 3, 3, 4, 2
TORCH = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "SimpleRNN": torch.nn.RNN}
CELLS = {
    "TorchLSTMCell": torch.nn.LSTMCell,
    "TorchGRUCell": torch.nn.GRUCell,
    "TorchRNNCell": torch.nn.RNNCell,
}

# (class, torch kwargs, input layout, initial state given, flavor)
CASES = [
    ("LSTM", dict(num_layers=3, bidirectional=True, proj_size=P), "time", True, "nnx"),
    ("LSTM", dict(num_layers=1, batch_first=True, bias=False), "batch", False, "linen"),
    ("LSTM", dict(num_layers=2, proj_size=P), "unbatched", True, "linen"),
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), "batch", True, "linen"),
    ("GRU", dict(num_layers=1, bias=False), "unbatched", False, "nnx"),
    ("SimpleRNN", dict(num_layers=1, bidirectional=True), "time", False, "nnx"),
    (
        "SimpleRNN",
        dict(num_layers=2, nonlinearity="relu", batch_first=True),
        "batch",
        True,
        "linen",
    ),
]


def _ids(case):
    name, kw, layout, given, flavor = case
    parts = [name, flavor, layout, "hx" if given else "nohx"]
    parts += [f"{k}={v}" for k, v in kw.items()]
    return "-".join(parts)


# ------------------------------------------------------------ both flavors ---


def _flax_module(flavor: str, name: str, *args, **kw):
    if flavor == "nnx":
        return getattr(ij.nnx, name)(*args, **kw, rngs=nnx.Rngs(0))
    return getattr(ij.linen, name)(*args, **kw)


class Ported:
    """A Flax module holding a torch module's weights (ported with torch's own keys),
    as a pure function of ``(params, *args)``; gradients go back to torch names."""

    def __init__(self, flavor: str, module, tm: torch.nn.Module, example, **call_kw):
        self.flavor, self.keys = flavor, list(tm.state_dict())
        sd = tm.state_dict()
        if flavor == "nnx":
            assert port.torch_to_nnx(sd, module).ok
            self.graphdef, self.params = nnx.split(module)
            self.module = module
        else:
            self.layers = port.linen_layers(module, *example, **call_kw)
            abstract = jax.eval_shape(
                lambda k: module.init(k, *example, **call_kw), jax.random.key(0)
            )
            variables, report = port.torch_to_linen(sd, abstract, self.layers)
            assert report.ok
            self.params, self.module = variables["params"], module

    def __call__(self, params, *args, **kw):
        if self.flavor == "nnx":
            return nnx.merge(self.graphdef, params)(*args, **kw)
        return self.module.apply({"params": params}, *args, **kw)

    def to_torch(self, grads) -> dict[str, np.ndarray]:
        if self.flavor == "nnx":
            model = nnx.merge(self.graphdef, grads)
            return port.nnx_to_torch(model, torch_keys=self.keys)
        return port.linen_to_torch({"params": grads}, self.layers, torch_keys=self.keys)


def _weights(rng, tree):
    return jax.tree.map(lambda a: rng.standard_normal(np.shape(a)).astype(np.float32), tree)


def _close(ours, theirs, tol, what):
    ours, theirs = np.asarray(ours), theirs.detach().numpy() if torch.is_tensor(theirs) else theirs
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    err = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol}"


def _parity(name, tm, module, flavor, x, hx, **call_kw):
    """Forward and all gradients of ``sum(W * outputs)`` equal torch's."""
    rng = np.random.default_rng(1)
    ported = Ported(flavor, module, tm, (jnp.asarray(x), hx), **call_kw)
    tx = torch.tensor(x, requires_grad=True)
    thx = None
    if hx is not None:
        thx = jax.tree.map(lambda a: torch.tensor(np.asarray(a), requires_grad=True), hx)
    t_out = tm(tx, thx) if thx is not None else tm(tx)
    weights = _weights(rng, jax.tree.map(lambda t: t.detach().numpy(), t_out))
    loss = sum(
        (t * torch.from_numpy(w)).sum()
        for t, w in zip(jax.tree.leaves(t_out), jax.tree.leaves(weights), strict=True)
    )
    loss.backward()

    def f(params, x, hx):
        out = ported(params, x, hx, **call_kw)
        total = sum(
            jnp.sum(o * w)
            for o, w in zip(jax.tree.leaves(out), jax.tree.leaves(weights), strict=True)
        )
        return total, out

    argnums = (0, 1, 2) if hx is not None else (0, 1)
    grad = jax.jit(jax.grad(f, argnums=argnums, has_aux=True))  # one compilation per case
    grads, out = grad(ported.params, jnp.asarray(x), hx)
    for o, t in zip(jax.tree.leaves(out), jax.tree.leaves(t_out), strict=True):
        _close(o, t, 1e-5, f"{name} forward")
    _close(grads[1], tx.grad, 1e-4, f"{name} d/d input")
    if hx is not None:
        for g, t in zip(jax.tree.leaves(grads[2]), jax.tree.leaves(thx), strict=True):
            _close(g, t.grad, 1e-4, f"{name} d/d initial state")
    torch_grads = ported.to_torch(grads[0])
    for key, p in tm.named_parameters():
        _close(torch_grads[key], p.grad, 1e-4, f"{name} d/d {key}")
    return out


def _input(layout, rng):
    shape = {"time": (T, B, IN), "batch": (B, T, IN), "unbatched": (T, IN)}[layout]
    return rng.standard_normal(shape).astype(np.float32)


def _state(name, kw, layout, rng):
    n = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    batch = () if layout == "unbatched" else (B,)
    h = rng.standard_normal((n, *batch, kw.get("proj_size") or H)).astype(np.float32)
    if name != "LSTM":
        return jnp.asarray(h)
    c = rng.standard_normal((n, *batch, H)).astype(np.float32)
    return (jnp.asarray(h), jnp.asarray(c))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_stack_matches_torch(case):
    name, kw, layout, given, flavor = case
    torch.manual_seed(0)
    tm = TORCH[name](IN, H, **kw)
    module = _flax_module(flavor, name, IN, H, **kw)
    rng = np.random.default_rng(0)
    x = _input(layout, rng)
    hx = _state(name, kw, layout, rng) if given else None
    _parity(name, tm, module, flavor, x, hx)


@pytest.mark.parametrize(
    "name, kw, batched, given, flavor",
    [
        ("TorchLSTMCell", {}, True, True, "linen"),
        ("TorchLSTMCell", {}, False, False, "nnx"),
        ("TorchGRUCell", {}, True, False, "nnx"),
        ("TorchGRUCell", {"bias": False}, False, True, "linen"),
        ("TorchRNNCell", {"nonlinearity": "relu"}, True, True, "linen"),
        ("TorchRNNCell", {}, False, False, "nnx"),
    ],
)
def test_cell_matches_torch(name, kw, batched, flavor, given):
    torch.manual_seed(0)
    tm = CELLS[name](IN, H, **kw)
    module = _flax_module(flavor, name, IN, H, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, IN) if batched else (IN,)).astype(np.float32)
    hx = None
    if given:
        state = lambda: jnp.asarray(rng.standard_normal((B, H) if batched else (H,)), jnp.float32)  # noqa: E731
        hx = (state(), state()) if name == "TorchLSTMCell" else state()
    _parity(name, tm, module, flavor, x, hx)


# --------------------------------------------------------- packed sequences ---


@pytest.mark.parametrize(
    "name, kw, flavor",
    [
        ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True), "nnx"),
        ("GRU", dict(num_layers=2, bidirectional=True), "linen"),
    ],
)
def test_lengths_match_packed_sequences(name, kw, flavor):
    """``lengths=`` is torch's pack_padded_sequence (unsorted) -> module -> pad_packed_sequence."""
    torch.manual_seed(0)
    tm = TORCH[name](IN, H, **kw)
    module = _flax_module(flavor, name, IN, H, **kw)
    rng = np.random.default_rng(0)
    bf = kw.get("batch_first", False)
    x = _input("batch" if bf else "time", rng)
    lengths = np.array([T, 1, T - 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths), batch_first=bf, enforce_sorted=False
    )
    out, state = tm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=bf, total_length=T)
    ported = Ported(flavor, module, tm, (jnp.asarray(x), None), lengths=jnp.asarray(lengths))
    ours = jax.jit(lambda p, x, n: ported(p, x, lengths=n))(ported.params, x, lengths)
    for o, t in zip(jax.tree.leaves(ours), jax.tree.leaves((out, state)), strict=True):
        _close(o, t, 1e-5, f"{name} packed")


# ------------------------------------------------------------------ dropout ---


@pytest.mark.parametrize("flavor, rate", [("nnx", 1.0), ("linen", 0.5)])
def test_dropout_between_layers_training_only(flavor, rate):
    """torch's ``dropout`` acts on every layer's output but the last, in training only.

    Rate 1 is deterministic in both libraries (zeros), so training mode is
    compared with live torch exactly: the second layer sees zeros, the first
    layer's final state is intact, the last layer's output is not dropped.
    Eval equals torch's eval; rate 0.5 in training changes the output.
    """
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True)
    x = _input("time", np.random.default_rng(0))
    tm = torch.nn.LSTM(IN, H, dropout=rate, **kw)
    module = _flax_module(flavor, "LSTM", IN, H, dropout=rate, **kw)
    ported = Ported(flavor, module, tm, (jnp.asarray(x),), deterministic=True)
    rngs = {} if flavor == "nnx" else {"rngs": {"dropout": jax.random.key(1)}}
    run = jax.jit(
        lambda p, x, det: ported(p, x, deterministic=det, **(rngs if not det else {})),
        static_argnums=2,
    )
    tm.eval()
    ours = run(ported.params, x, True)
    for o, t in zip(jax.tree.leaves(ours), jax.tree.leaves(tm(torch.from_numpy(x))), strict=True):
        _close(o, t, 1e-5, f"{flavor} eval, dropout={rate}")
    tm.train()
    trained = run(ported.params, x, False)
    if rate == 1.0:
        torch_out = tm(torch.from_numpy(x))
        for o, t in zip(jax.tree.leaves(trained), jax.tree.leaves(torch_out), strict=True):
            _close(o, t, 1e-5, f"{flavor} train, dropout=1")
        assert np.abs(np.asarray(trained[0])).min() > 0
    else:
        assert not np.allclose(np.asarray(trained[0]), np.asarray(ours[0]))
        for state in (0, 1):  # h_n and c_n of layer 0 (both directions): before any dropout
            np.testing.assert_array_equal(trained[1][state][:2], ours[1][state][:2])


def test_nnx_eval_mode_turns_dropout_off():
    m = ij.nnx.SimpleRNN(IN, H, 2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.asarray(_input("time", np.random.default_rng(0)))
    run = nnx.jit(lambda m, x: m(x)[0])
    a, b = run(m, x), run(m, x)
    assert not np.allclose(a, b)  # training: fresh masks
    m.eval()
    np.testing.assert_array_equal(run(m, x), run(m, x))


# --------------------------------------------------------------------- port ---


class _Torch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(IN, H, 2, bidirectional=True, proj_size=P)
        self.gru = torch.nn.GRU(2 * P, H, 3)
        self.rnn = torch.nn.RNN(H, H, nonlinearity="relu", bias=False)
        self.cell = torch.nn.LSTMCell(H, H)
        self.gcell = torch.nn.GRUCell(H, H)
        self.rcell = torch.nn.RNNCell(H, H)
        self.head = torch.nn.Linear(H, 2)


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        y, _ = ij.linen.LSTM(IN, H, 2, bidirectional=True, proj_size=P, name="lstm")(x)
        y, _ = ij.linen.GRU(2 * P, H, 3, name="gru")(y)
        y, _ = ij.linen.SimpleRNN(H, H, nonlinearity="relu", bias=False, name="rnn")(y)
        h, _ = ij.linen.TorchLSTMCell(H, H, name="cell")(y[0])
        h = ij.linen.TorchGRUCell(H, H, name="gcell")(h)
        h = ij.linen.TorchRNNCell(H, H, name="rcell")(h)
        return ij.linen.Dense(2, name="head")(h)


class _Nnx(nnx.Module):
    def __init__(self, rngs):
        self.lstm = ij.nnx.LSTM(IN, H, 2, bidirectional=True, proj_size=P, rngs=rngs)
        self.gru = ij.nnx.GRU(2 * P, H, 3, rngs=rngs)
        self.rnn = ij.nnx.SimpleRNN(H, H, nonlinearity="relu", bias=False, rngs=rngs)
        self.cell = ij.nnx.TorchLSTMCell(H, H, rngs=rngs)
        self.gcell = ij.nnx.TorchGRUCell(H, H, rngs=rngs)
        self.rcell = ij.nnx.TorchRNNCell(H, H, rngs=rngs)
        self.head = ij.nnx.Linear(H, 2, rngs=rngs)


def _exact(ours: dict, sd: dict):
    assert sorted(ours) == sorted(sd)
    for k, t in sd.items():
        np.testing.assert_array_equal(ours[k], t.numpy(), err_msg=k)


def _linen_model():
    model, x = _Linen(), jnp.zeros((T, B, IN))
    return model, x, port.linen_layers(model, x)


@pytest.mark.parametrize("flavor", ["linen", "nnx"])
def test_port_round_trip_is_exact_with_torch_keys(flavor):
    """torch -> Flax -> torch, every tensor bit-exact, both biases kept, no rename;
    without torch_keys the reverse port's keys are torch's own."""
    torch.manual_seed(0)
    tm = _Torch()
    sd = tm.state_dict()
    if flavor == "nnx":
        model = nnx.eval_shape(lambda: _Nnx(nnx.Rngs(0)))
        assert port.torch_to_nnx(sd, model).ok
        _exact(port.nnx_to_torch(model, torch_keys=sd.keys()), sd)
        _exact(port.nnx_to_torch(model), sd)
    else:
        model, x, layers = _linen_model()
        abstract = jax.eval_shape(model.init, jax.random.key(0), x)
        variables, report = port.torch_to_linen(sd, abstract, layers)
        assert report.ok
        _exact(port.linen_to_torch(variables, layers, torch_keys=sd.keys()), sd)
        _exact(port.linen_to_torch(variables, layers), sd)


def test_port_root_module_and_strictness():
    """A stack as the whole model ports from a bare ``nn.LSTM`` state_dict; a missing or
    extra stacked key is reported under torch's name."""
    torch.manual_seed(0)
    tm = torch.nn.LSTM(IN, H, 2, bidirectional=True)
    model = ij.nnx.LSTM(IN, H, 2, bidirectional=True, rngs=nnx.Rngs(0))
    sd = tm.state_dict()
    assert port.torch_to_nnx(sd, model).ok
    _exact(port.nnx_to_torch(model), sd)
    partial = {k: v for k, v in sd.items() if k != "bias_hh_l1_reverse"}
    partial["weight_hr_l0"] = torch.zeros(2, H)
    with pytest.raises(port.PortError) as e:
        port.torch_to_nnx(partial, model)
    assert "bias_hh_l1_reverse" in str(e.value) and "weight_hr_l0" in str(e.value)


# ------------------------------------------------------------------- replay ---


def test_replay_matches_torch_seed():
    """``torch.manual_seed(s); Model()`` bit-exact, in torch's construction order."""
    torch.manual_seed(5)
    sd = _Torch().state_dict()
    model = replay.torch_init(_Nnx(nnx.Rngs(0)), 5)  # concrete: attributes in build order
    _exact(port.nnx_to_torch(model), sd)
    linen, x, layers = _linen_model()
    variables = replay.torch_variables(linen, 5, x)
    _exact(port.linen_to_torch(variables, layers), sd)


# ------------------------------------------------------------ initialization ---


@pytest.mark.parametrize(
    "flavor, name, torch_cls, kw",
    [
        ("nnx", "LSTM", torch.nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=16)),
        ("linen", "GRU", torch.nn.GRU, {}),
        ("nnx", "SimpleRNN", torch.nn.RNN, dict(nonlinearity="relu")),
        ("linen", "TorchLSTMCell", torch.nn.LSTMCell, {}),
    ],
)
def test_default_init_is_torchs_per_tensor(flavor, name, torch_cls, kw):
    """Every tensor against the same tensor of live torch modules: two-sample KS, and
    max|w| <= 1/sqrt(hidden) while reaching it."""
    hidden, width = 64, 48
    bound = 1 / math.sqrt(hidden)
    torch.manual_seed(0)
    theirs: dict[str, list] = {}
    for _ in range(2):
        for k, v in torch_cls(width, hidden, **kw).state_dict().items():
            theirs.setdefault(k, []).append(v.numpy().ravel())
    if flavor == "nnx":
        model = getattr(ij.nnx, name)(width, hidden, **kw, rngs=nnx.Rngs(3))
        ours = port.nnx_to_torch(model)
    else:
        model = getattr(ij.linen, name)(width, hidden, **kw)
        example = jnp.zeros((2, width)) if "Cell" in name else jnp.zeros((1, 2, width))
        variables = jax.jit(model.init)(jax.random.key(3), example)
        ours = port.linen_to_torch(variables, port.linen_layers(model, example))
    assert sorted(ours) == sorted(theirs)
    for k, w in ours.items():
        assert_reaches_bound(w, bound, k)
        assert_same_distribution(w, np.concatenate(theirs[k]), k)


# -------------------------------------------------------------- jit, sharding ---


def test_scan_over_time():
    """One ``scan`` per layer whatever the length: no Python loop over time steps (the
    parity tests run the modules under ``jax.jit``)."""
    m = ij.linen.LSTM(IN, H, 3, bidirectional=True)
    x = jax.ShapeDtypeStruct((50, B, IN), jnp.float32)
    v = jax.eval_shape(m.init, jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(m.apply)(v, x)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 3


def test_partitioning_metadata():
    part = nn.with_partitioning(ij.rnn_uniform(H), (None, "model"))
    m = ij.linen.LSTM(IN, H, 2, kernel_init=part, recurrent_kernel_init=part)
    v = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((T, B, IN)))
    spec = nn.get_partition_spec(v)["params"]
    assert spec["kernel_ih_l1"] == jax.sharding.PartitionSpec(None, "model")
    assert spec["kernel_hh_l0"] == jax.sharding.PartitionSpec(None, "model")
    mesh = jax.make_mesh(
        (1, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    with jax.set_mesh(mesh):
        g = ij.nnx.GRU(
            IN,
            H,
            2,
            bias_metadata={"out_sharding": ("model",)},
            kernel_metadata={"out_sharding": (None, "model")},
            rngs=nnx.Rngs(0),
        )
    assert g.bias_hh_l1.get_metadata()["out_sharding"] == ("model",)
    assert g.kernel_ih_l1.get_metadata()["out_sharding"] == (None, "model")
    assert g.kernel_ih_l0[...].sharding.spec == jax.P(None, "model")


# ------------------------------------------------------------------- errors ---


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ij.nnx.LSTM(3, 4, proj_size=4, rngs=nnx.Rngs(0)), "proj_size has to be smaller"),
        (lambda: ij.nnx.SimpleRNN(3, 4, nonlinearity="gelu", rngs=nnx.Rngs(0)), "'gelu'"),
        (lambda: ij.nnx.GRU(3, 0, rngs=nnx.Rngs(0)), "hidden_size must be"),
        (lambda: ij.nnx.GRU(3, 4, 0, rngs=nnx.Rngs(0)), "num_layers must be"),
        (lambda: ij.nnx.LSTM(3, 4, 2, dropout=1.5, rngs=nnx.Rngs(0)), "dropout must be"),
        (lambda: ij.nnx.LSTM(3, 4, rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 5))), "input_size=3"),
        (
            lambda: ij.nnx.GRU(3, 4, rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 3)), jnp.zeros((1, 2, 4))),
            r"h_0 of shape \(1, 1, 4\)",
        ),
        (
            lambda: ij.nnx.LSTM(3, 4, rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 3)), jnp.zeros((1, 1, 4))),
            "tuple",
        ),
    ],
)
def test_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_public_names_do_not_collide_by_case():
    for mod in (ij.linen, ij.nnx):
        lowered = [n.lower() for n in mod.__all__]
        assert len(set(lowered)) == len(lowered)
