"""initjax.linen vs live torch.nn: distributions, layouts (forward equality), Flax machinery."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Callable
from typing import Any

import _torch_modules as TM
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _stats import assert_reaches_bound, assert_same_distribution
from flax.traverse_util import flatten_dict

import initjax as ij

L = ij.linen
RNG = np.random.default_rng(0)


def randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@dataclasses.dataclass
class Case:
    """One torch module and its initjax.linen counterpart."""

    name: str
    torch_module: Callable[[], torch.nn.Module]
    flax_module: nn.Module
    inputs: tuple  # Flax-layout inputs (numpy), also used for init
    torch_forward: Callable[[Any, tuple], np.ndarray]  # -> output in Flax layout
    bounds: Callable[[Any], dict[str, float]]  # param path pattern -> torch's uniform bound
    pool: int = 16  # inits pooled for the distribution test
    flax_output: Callable[[Any], Any] = lambda y: y  # -> comparable with torch_forward
    constant_init: bool = False  # torch's init is constant: perturb it for the layout test

    @functools.cached_property
    def to_flax(self) -> Callable[[torch.nn.Module], dict]:
        """torch module -> Flax variables, through initjax.port."""
        return TM.porter(self.flax_module, *self.inputs)


def _linear_bounds(m):
    b = 1 / math.sqrt(TM.fan_in(m.weight))
    return {"kernel": b} if m.bias is None else {"kernel": b, "bias": b}


def _conv_case(name, nd, groups, bias=True) -> Case:
    torch_cls = getattr(torch.nn, f"Conv{nd}d")
    x = randn(2, *(7,) * nd, 4)
    return Case(
        name,
        lambda: torch_cls(4, 6, 3, groups=groups, bias=bias),
        L.Conv(6, (3,) * nd, padding="VALID", feature_group_count=groups, use_bias=bias),
        (x,),
        lambda m, xs: TM.np32(m(TM.to_torch(xs[0], True)).movedim(1, -1)),
        _linear_bounds,
    )


def _conv_transpose_case(
    name, nd, groups, transpose_kernel, stride=2, padding=1, out_pad=1
) -> Case:
    torch_cls = getattr(torch.nn, f"ConvTranspose{nd}d")

    def make():
        return torch_cls(
            4, 6, 3, stride=stride, padding=padding, output_padding=out_pad, groups=groups
        )

    x = randn(2, *(5,) * nd, 4)
    return Case(
        name,
        make,
        L.ConvTranspose(
            6,
            (3,) * nd,
            strides=(stride,) * nd,
            padding=TM.conv_transpose_padding(make()),
            feature_group_count=groups,
            transpose_kernel=transpose_kernel,
        ),
        (x,),
        lambda m, xs: TM.np32(m(TM.to_torch(xs[0], True)).movedim(1, -1)),
        _linear_bounds,
    )


def _cell_case(name, torch_cls, flax_cell, single_biases=()) -> Case:
    """An RNN cell; Flax's carry (c, h) and torch's (h, c) are both compared for LSTM."""
    hidden, n_in = 32, 10
    lstm = torch_cls is torch.nn.LSTMCell
    carry = (randn(3, hidden), randn(3, hidden)) if lstm else randn(3, hidden)

    def torch_forward(m, xs):
        carry, x = (jax.tree.map(torch.from_numpy, a) for a in xs)
        if lstm:
            h, c = m(x, carry[::-1])
            return np.stack([TM.np32(c), TM.np32(h)])
        return TM.np32(m(x, carry))

    def bounds(m):
        b = 1 / math.sqrt(m.hidden_size)
        return {path: b for path in ("i*/kernel", "h*/kernel", *single_biases)}

    return Case(
        name,
        lambda: torch_cls(n_in, hidden),
        flax_cell(hidden),
        (carry, randn(3, n_in)),
        torch_forward,
        bounds,
        flax_output=lambda y: np.stack(y[0]) if lstm else y[1],
    )


def _mha_bounds(m):
    if m._qkv_same_embed_dim:
        qkv = {n: TM.xavier_bound(m.in_proj_weight) for n in ("query", "key", "value")}
    else:
        ws = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
        qkv = {n: TM.xavier_bound(w) for n, w in zip(("query", "key", "value"), ws, strict=True)}
    out = {f"{n}/kernel": b for n, b in qkv.items()}
    out["out/kernel"] = 1 / math.sqrt(TM.fan_in(m.out_proj.weight))
    return out


def _mha_case(name, kdim=None, vdim=None) -> Case:
    e, heads = 32, 4
    q = randn(2, 5, e)
    k = randn(2, 6, kdim or e)
    v = randn(2, 6, vdim or e)

    def forward(m, xs):
        out, _ = m(*(torch.from_numpy(a) for a in xs), need_weights=False)
        return TM.np32(out)

    return Case(
        name,
        lambda: torch.nn.MultiheadAttention(e, heads, kdim=kdim, vdim=vdim, batch_first=True),
        L.MultiHeadDotProductAttention(heads),
        (q, k, v),
        forward,
        _mha_bounds,
    )


class EncoderLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer (post-norm, ReLU, eval mode) from initjax.linen layers."""

    d_model: int
    nhead: int
    dim_feedforward: int

    @nn.compact
    def __call__(self, x):
        x = L.LayerNorm(name="norm1")(
            x + L.MultiHeadDotProductAttention(self.nhead, name="self_attn")(x)
        )
        h = L.Dense(self.d_model, name="linear2")(
            nn.relu(L.Dense(self.dim_feedforward, name="linear1")(x))
        )
        return L.LayerNorm(name="norm2")(x + h)


def _encoder_bounds(m):
    return {
        **{f"self_attn/{k}": b for k, b in _mha_bounds(m.self_attn).items()},
        **{f"linear1/{k}": b for k, b in _linear_bounds(m.linear1).items()},
        **{f"linear2/{k}": b for k, b in _linear_bounds(m.linear2).items()},
    }


def _plain_forward(m, xs):
    return TM.np32(m(*(torch.from_numpy(a) for a in xs)))


CASES = [
    Case(
        "Linear",
        lambda: torch.nn.Linear(48, 40),
        L.Dense(40),
        (randn(3, 48),),
        _plain_forward,
        _linear_bounds,
        pool=32,
    ),
    Case(
        "Bilinear",
        lambda: torch.nn.Bilinear(12, 10, 16),
        L.Bilinear(16),
        (randn(3, 12), randn(3, 10)),
        _plain_forward,
        lambda m: {
            "kernel": 1 / math.sqrt(m.weight.size(1)),
            "bias": 1 / math.sqrt(m.weight.size(1)),
        },
        pool=64,
    ),
    Case(
        "Linear-as-DenseGeneral",
        lambda: torch.nn.Linear(42, 12),
        L.DenseGeneral((3, 4), axis=(-2, -1)),
        (randn(3, 6, 7),),
        lambda m, xs: TM.np32(m(torch.from_numpy(xs[0].reshape(3, 42)))).reshape(3, 3, 4),
        _linear_bounds,
        pool=32,
    ),
    _conv_case("Conv1d", 1, 1),
    _conv_case("Conv2d-groups", 2, 2),
    _conv_case("Conv3d-nobias", 3, 1, bias=False),
    _conv_transpose_case("ConvTranspose1d", 1, 1, False),
    _conv_transpose_case("ConvTranspose2d-groups", 2, 2, False),
    _conv_transpose_case("ConvTranspose2d-groups-tk", 2, 2, True),
    _conv_transpose_case("ConvTranspose3d", 3, 2, False, stride=1, padding=0, out_pad=0),
    Case(
        "Embedding",
        lambda: torch.nn.Embedding(500, 64, padding_idx=-3),
        L.Embed(500, 64, padding_idx=-3),
        (np.array([[0, 497, 5], [499, 497, 3]], np.int32),),
        lambda m, xs: TM.np32(m(torch.from_numpy(xs[0]).long())),
        lambda m: {},
        pool=4,
    ),
    _cell_case("RNNCell", torch.nn.RNNCell, L.SimpleCell),
    _cell_case("LSTMCell", torch.nn.LSTMCell, L.LSTMCell),
    _cell_case(
        "GRUCell",
        torch.nn.GRUCell,
        L.GRUCell,
        single_biases=("in/bias", "hn/bias"),  # torch's b_in, b_hn stay apart
    ),
    _mha_case("MultiheadAttention"),
    _mha_case("MultiheadAttention-kdim-vdim", kdim=16, vdim=24),
    Case(
        "TransformerEncoderLayer",
        lambda: torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval(),
        EncoderLayer(32, 4, 64),
        (randn(2, 5, 32),),
        _plain_forward,
        _encoder_bounds,
        pool=8,
    ),
    Case(
        "LayerNorm",
        lambda: torch.nn.LayerNorm(24),
        L.LayerNorm(),
        (0.003 * randn(3, 24),),  # small variance: eps matters
        _plain_forward,
        lambda m: {},
        pool=1,
        constant_init=True,
    ),
    Case(
        "GroupNorm",
        lambda: torch.nn.GroupNorm(4, 24),
        L.GroupNorm(4),
        (0.003 * randn(3, 5, 5, 24),),
        lambda m, xs: TM.np32(m(TM.to_torch(xs[0], True)).movedim(1, -1)),
        lambda m: {},
        pool=1,
        constant_init=True,
    ),
    Case(
        "RMSNorm",
        lambda: torch.nn.RMSNorm(24),
        L.RMSNorm(),
        (1e-3 * randn(3, 24),),
        _plain_forward,
        lambda m: {},
        pool=1,
        constant_init=True,
    ),
    Case(
        "BatchNorm2d",
        lambda: torch.nn.BatchNorm2d(6).eval(),
        L.BatchNorm(use_running_average=True),
        (randn(4, 5, 5, 6),),
        lambda m, xs: TM.np32(m(TM.to_torch(xs[0], True)).movedim(1, -1)),
        lambda m: {},
        pool=1,
        constant_init=True,
    ),
    Case(
        "PReLU",
        torch.nn.PReLU,
        L.PReLU(),
        (randn(3, 8),),
        _plain_forward,
        lambda m: {},
        pool=1,
        constant_init=True,
    ),
]

IDS = [c.name for c in CASES]


def _flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()}


def _torch_pool(case: Case) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    samples, bounds = [], None
    for seed in range(case.pool):
        torch.manual_seed(seed)
        m = case.torch_module()
        samples.append(_flat(case.to_flax(m)))
        bounds = bounds or case.bounds(m)
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}, bounds


def _flax_pool(case: Case) -> dict[str, np.ndarray]:
    keys = jax.random.split(jax.random.key(1), case.pool)
    init = jax.jit(jax.vmap(lambda k: case.flax_module.init(k, *case.inputs)))
    return _flat(jax.device_get(init(keys)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_distribution_matches_torch(case: Case):
    """Every parameter: same tree as torch's mapped state; same distribution and bound."""
    theirs, bounds = _torch_pool(case)
    ours = _flax_pool(case)
    assert sorted(ours) == sorted(theirs)
    unused = set(bounds)
    for path, t in theirs.items():
        o = ours[path]
        assert o.shape == t.shape, path
        if np.all(t == t.flat[0]):  # a constant init (zeros, ones, 0.25)
            np.testing.assert_array_equal(o, t, err_msg=path)
            continue
        what = f"{case.name} {path}"
        assert_same_distribution(o, t, what)
        TM.assert_same_std(o, t, what)
        name = path.split("/", 1)[1]  # drop the collection
        bound = next((b for p, b in bounds.items() if fnmatch.fnmatchcase(name, p)), None)
        unused.discard(next((p for p in bounds if fnmatch.fnmatchcase(name, p)), None))
        if bound is not None:
            edge = float(np.float32(bound))  # both sample in float32 up to the rounded bound
            assert_reaches_bound(o, edge, what)
            assert_reaches_bound(t, edge, what + " (torch)")
    assert not unused, f"bounds never checked: {unused}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_weights_give_torch_forward(case: Case):
    """Layout: torch's own weights through the documented mapping give torch's output."""
    torch.manual_seed(0)
    m = case.torch_module()
    with torch.no_grad():
        if case.constant_init:  # move off ones/zeros so the mapping is tested
            for p in m.parameters():
                p.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
        expected = case.torch_forward(m, case.inputs)
    got = case.flax_module.apply(case.to_flax(m), *case.inputs)
    got = np.asarray(case.flax_output(got))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------- sequence layers ---


@pytest.mark.parametrize(
    "torch_cls, cell",
    [(torch.nn.RNN, L.SimpleCell), (torch.nn.LSTM, L.LSTMCell), (torch.nn.GRU, L.GRUCell)],
    ids=["RNN", "LSTM", "GRU"],
)
def test_sequence_layer_is_rnn_over_cell(torch_cls, cell):
    torch.manual_seed(0)
    m = torch_cls(10, 16, batch_first=True)
    x = randn(2, 7, 10)
    with torch.no_grad():
        expected = TM.np32(m(torch.from_numpy(x))[0])
    rnn = nn.RNN(cell(16))
    variables = TM.porter(rnn, x)(m)  # torch's *_l0 tensors land under params/cell
    ref = jax.eval_shape(rnn.init, jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ref) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_allclose(np.asarray(rnn.apply(variables, x)), expected, atol=1e-5, rtol=1e-5)


def test_optimized_lstm_cell_matches_lstm_cell():
    carry = (randn(3, 16), randn(3, 16))
    x = randn(3, 10)
    torch.manual_seed(0)
    variables = TM.porter(L.LSTMCell(16), carry, x)(torch.nn.LSTMCell(10, 16))
    a = L.LSTMCell(16).apply(variables, carry, x)
    b = L.OptimizedLSTMCell(16).apply(variables, carry, x)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), a, b)
    ours = jax.eval_shape(L.OptimizedLSTMCell(16).init, jax.random.key(0), carry, x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, variables)


# -------------------------------------------------------------- behaviours ---


def test_embedding_padding_row_gets_no_gradient_as_torch():
    idx = np.array([[0, 7, 2], [7, 7, 1]], np.int64)
    torch.manual_seed(0)
    m = torch.nn.Embedding(8, 4, padding_idx=-1)
    with torch.no_grad():
        m.weight[7] = 1.0  # a loaded, non-zero padding row still gets no gradient
    (m(torch.from_numpy(idx)) ** 2).sum().backward()
    layer = L.Embed(8, 4, padding_idx=-1)
    variables = TM.porter(layer, idx)(m)
    grad = jax.grad(lambda v: (layer.apply(v, idx) ** 2).sum())(variables)
    np.testing.assert_allclose(grad["params"]["embedding"], TM.np32(m.weight.grad), atol=1e-6)
    np.testing.assert_allclose(
        layer.apply(variables, idx), TM.np32(m(torch.from_numpy(idx))), atol=1e-6
    )


def test_batch_norm_train_updates_running_stats_as_torch():
    """Train mode: batch statistics, momentum 0.1 and torch's unbiased running var; then eval."""
    torch.manual_seed(0)
    m = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    layer = L.BatchNorm()
    variables = TM.porter(layer, np.zeros((2, 3, 3, 6), np.float32), False)(m)
    for _ in range(2):
        x = 3 + 2 * randn(2, 3, 3, 6)  # n = 18 per channel: the n/(n-1) factor shows
        expected = TM.np32(m(TM.to_torch(x, True)).movedim(1, -1))
        y, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        variables = {**variables, **updates}
        np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)
        stats = variables["batch_stats"]
        np.testing.assert_allclose(stats["mean"], TM.np32(m.running_mean), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats["var"], TM.np32(m.running_var), rtol=1e-6)
    m.eval()
    x = randn(2, 3, 3, 6)
    expected = TM.np32(m(TM.to_torch(x, True)).movedim(1, -1))
    got = layer.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.apply(variables, x[:1, :1, :1], use_running_average=False, mutable=["batch_stats"])


def test_batch_norm_counts_mask_and_axis_name_values():
    """n is the number of values the statistics use: torch on exactly those values."""
    x = 1 + 2 * randn(8, 6)
    keep = np.arange(8) % 3 != 0  # 5 of 8 rows
    layer = L.BatchNorm(use_running_average=False)
    variables = layer.init(jax.random.key(0), x)
    t = torch.nn.BatchNorm1d(6)
    expected = TM.np32(t(torch.from_numpy(x[keep])))
    apply = jax.jit(functools.partial(layer.apply, mutable=["batch_stats"]))
    y, updates = apply(variables, x, mask=keep[:, None])
    np.testing.assert_allclose(np.asarray(y)[keep], expected, atol=1e-5, rtol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], TM.np32(t.running_mean), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats["var"], TM.np32(t.running_var), rtol=1e-6)

    t = torch.nn.BatchNorm1d(6)
    expected = TM.np32(t(torch.from_numpy(x)))  # all 8 rows; initjax: 4 devices of 2 rows
    layer = L.BatchNorm(use_running_average=False, axis_name="devices")
    apply = functools.partial(layer.apply, variables, mutable=["batch_stats"])
    step = jax.jit(jax.vmap(apply, axis_name="devices"))
    y, updates = step(x.reshape(4, 2, 6))
    np.testing.assert_allclose(np.asarray(y).reshape(8, 6), expected, atol=1e-5, rtol=1e-5)
    stats = updates["batch_stats"]  # one copy per device, all equal to torch's
    want = {"mean": TM.np32(t.running_mean), "var": TM.np32(t.running_var)}
    np.testing.assert_allclose(stats["mean"], np.stack([want["mean"]] * 4), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats["var"], np.stack([want["var"]] * 4), rtol=1e-6)


@pytest.mark.parametrize(
    "torch_norm, layer, stock",
    [
        (lambda: torch.nn.LayerNorm(16), L.LayerNorm(), nn.LayerNorm(epsilon=1e-5)),
        (lambda: torch.nn.GroupNorm(2, 16), L.GroupNorm(2), nn.GroupNorm(2, epsilon=1e-5)),
    ],
    ids=["LayerNorm", "GroupNorm"],
)
def test_norm_variance_keeps_precision_on_large_means(torch_norm, layer, stock):
    """Input N(300, 0.01^2): initjax's error (vs torch in float64) is torch's float32 error."""
    x = (300 + 0.01 * randn(4, 16)).astype(np.float32)
    m = torch_norm()
    exact = m.double()(torch.from_numpy(x).double()).detach().numpy()
    torch_err = np.abs(TM.np32(m.float()(torch.from_numpy(x))) - exact).max()
    variables = layer.init(jax.random.key(0), x)
    ours_err = np.abs(np.asarray(layer.apply(variables, x)) - exact).max()
    flax_err = np.abs(np.asarray(stock.apply(variables, x)) - exact).max()
    assert ours_err <= 2 * torch_err + 1e-6, (ours_err, torch_err)
    assert flax_err > 100 * torch_err  # what use_fast_variance=True would have cost


def test_norm_defaults_are_torch_numerics():
    assert L.LayerNorm().epsilon == torch.nn.LayerNorm(4).eps
    assert L.GroupNorm().epsilon == torch.nn.GroupNorm(2, 4).eps
    assert L.BatchNorm().epsilon == torch.nn.BatchNorm2d(4).eps
    assert L.BatchNorm().momentum == pytest.approx(1 - torch.nn.BatchNorm2d(4).momentum)
    assert L.RMSNorm().epsilon == torch.finfo(torch.float32).eps
    assert not any(
        c().use_fast_variance for c in (L.LayerNorm, L.GroupNorm, L.BatchNorm, L.RMSNorm)
    )


# ------------------------------------------------------ ConvTranspose vs Flax ---


@pytest.mark.parametrize(
    "padding, strides, dilation, transpose_kernel",
    [
        ("SAME", (2, 3), None, False),
        ("VALID", (3, 2), (1, 2), True),
        ("CIRCULAR", (2, 2), None, False),
        ("CIRCULAR", (3, 2), (2, 1), True),
        ([(1, 2), (0, 3)], (2, 1), (2, 1), True),
    ],
    ids=["same", "valid-tk", "circular", "circular-tk", "explicit-tk"],
)
def test_conv_transpose_groups1_equals_flax(padding, strides, dilation, transpose_kernel):
    kw = dict(
        features=5,
        kernel_size=(3, 4),
        strides=strides,
        padding=padding,
        kernel_dilation=dilation,
        transpose_kernel=transpose_kernel,
    )
    x = randn(2, 3, 6, 5, 3)  # two batch dims
    ref = nn.ConvTranspose(**kw)
    variables = ref.init(jax.random.key(0), x)
    ours = L.ConvTranspose(**kw)
    assert jax.tree.map(jnp.shape, jax.eval_shape(ours.init, jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables
    )
    np.testing.assert_allclose(
        ours.apply(variables, x), ref.apply(variables, x), atol=1e-5, rtol=1e-5
    )


def test_conv_transpose_mask_and_unbatched_input_as_flax():
    mask = np.tril(np.ones((3, 4, 4), np.float32))
    kw = dict(features=4, kernel_size=(3,), padding="VALID", mask=mask)
    x = randn(8, 4)  # no batch dim
    variables = nn.ConvTranspose(**kw).init(jax.random.key(0), x)
    np.testing.assert_allclose(
        L.ConvTranspose(**kw).apply(variables, x),
        nn.ConvTranspose(**kw).apply(variables, x),
        atol=1e-6,
    )


def test_conv_transpose_rejects_bad_groups():
    x = jnp.ones((1, 4, 6))
    with pytest.raises(ValueError, match="feature_group_count=4 must divide"):
        L.ConvTranspose(6, (3,), feature_group_count=4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="positive int, got 0"):
        L.ConvTranspose(6, (3,), feature_group_count=0).init(jax.random.key(0), x)


# ------------------------------------------------------------ Flax machinery ---

SAME_TREE = [
    (L.Dense(5), nn.Dense(5), (jnp.ones((2, 7)),)),
    (
        L.DenseGeneral((3, 4), axis=(-2, -1)),
        nn.DenseGeneral((3, 4), axis=(-2, -1)),
        (jnp.ones((2, 6, 7)),),
    ),
    (
        L.Conv(6, (3, 3), feature_group_count=2),
        nn.Conv(6, (3, 3), feature_group_count=2),
        (jnp.ones((1, 8, 8, 4)),),
    ),
    (L.Embed(10, 4, padding_idx=0), nn.Embed(10, 4), (jnp.array([1, 2]),)),
    (L.SimpleCell(8), nn.SimpleCell(8), (jnp.ones((2, 8)), jnp.ones((2, 5)))),
    (L.LSTMCell(8), nn.LSTMCell(8), ((jnp.ones((2, 8)),) * 2, jnp.ones((2, 5)))),
    (L.GRUCell(8), nn.GRUCell(8), (jnp.ones((2, 8)), jnp.ones((2, 5)))),
    (L.MultiHeadDotProductAttention(2), nn.MultiHeadDotProductAttention(2), (jnp.ones((2, 3, 8)),)),
    (L.GroupNorm(2), nn.GroupNorm(2), (jnp.ones((2, 8)),)),
    (L.RMSNorm(), nn.RMSNorm(), (jnp.ones((2, 8)),)),
    (
        L.BatchNorm(use_running_average=False),
        nn.BatchNorm(use_running_average=False),
        (jnp.ones((2, 8)),),
    ),
    (L.PReLU(), nn.PReLU(), (jnp.ones((2, 8)),)),
]


@pytest.mark.parametrize(
    "ours, stock, args", SAME_TREE, ids=[type(o).__name__ for o, _, _ in SAME_TREE]
)
def test_same_variables_as_flax_layer(ours, stock, args):
    """Collections, names, shapes and dtypes equal the Flax layer's (eval_shape: nothing runs)."""
    assert isinstance(ours, type(stock))
    spec = lambda m: jax.tree.map(  # noqa: E731
        lambda a: (a.shape, a.dtype), jax.eval_shape(m.init, jax.random.key(0), *args)
    )
    assert spec(ours) == spec(stock)


PART = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
PARTITIONED = [
    (L.Dense(6, kernel_init=PART), (jnp.ones((2, 4)),), ("kernel",)),
    (
        L.Conv(6, (3,), kernel_init=nn.with_partitioning(ij.conv_kernel(), (None, None, "model"))),
        (jnp.ones((1, 5, 4)),),
        ("kernel",),
    ),
    (
        L.ConvTranspose(
            6,
            (3,),
            feature_group_count=2,
            bias_init=nn.with_partitioning(ij.conv_transpose_bias(9), ("model",)),
        ),
        (jnp.ones((1, 5, 4)),),
        ("bias",),
    ),
    (
        L.Bilinear(6, kernel_init=nn.with_partitioning(ij.bilinear(4), (None, None, "model"))),
        (jnp.ones((2, 4)), jnp.ones((2, 3))),
        ("kernel",),
    ),
    (
        L.Embed(10, 6, embedding_init=nn.with_partitioning(ij.embedding(0), ("model", None))),
        (jnp.array([1]),),
        ("embedding",),
    ),
    (
        L.GRUCell(6, recurrent_kernel_init=PART),
        (jnp.ones((2, 6)), jnp.ones((2, 4))),
        ("hn", "kernel"),
    ),
    (
        L.MultiHeadDotProductAttention(2, kernel_init=PART),
        (jnp.ones((2, 3, 6)),),
        ("query", "kernel"),
    ),
]


@pytest.mark.parametrize(
    "layer, args, path", PARTITIONED, ids=[type(p[0]).__name__ for p in PARTITIONED]
)
def test_partitioning_metadata_kept_under_jit(layer, args, path):
    variables = jax.jit(layer.init)(jax.random.key(0), *args)
    leaf = variables["params"]
    for p in path:
        leaf = leaf[p]
    assert isinstance(leaf, nn.Partitioned) and "model" in leaf.names
    abstract = jax.eval_shape(layer.init, jax.random.key(0), *args)["params"]
    for p in path:
        abstract = abstract[p]
    assert isinstance(abstract, nn.Partitioned) and abstract.names == leaf.names
    layer.apply(nn.unbox(variables), *args)


@pytest.mark.parametrize(
    "layer, args",
    [
        (L.Dense(6, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16), (jnp.ones((2, 4)),)),
        (
            L.ConvTranspose(
                6,
                (3, 3),
                feature_group_count=2,
                transpose_kernel=True,
                param_dtype=jnp.bfloat16,
                dtype=jnp.bfloat16,
            ),
            (jnp.ones((1, 4, 4, 4)),),
        ),
        (
            L.Bilinear(6, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16),
            (jnp.ones((2, 4)), jnp.ones((2, 3))),
        ),
        (
            L.GRUCell(6, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16),
            (jnp.ones((2, 6), jnp.bfloat16), jnp.ones((2, 4))),
        ),
        (
            L.MultiHeadDotProductAttention(2, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16),
            (jnp.ones((2, 3, 6)),),
        ),
    ],
    ids=["Dense", "ConvTranspose", "Bilinear", "GRUCell", "MHA"],
)
def test_param_dtype_and_dtype(layer, args):
    variables = jax.jit(layer.init)(jax.random.key(0), *args)
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.bfloat16)}
    out = layer.apply(variables, *args)
    assert {a.dtype for a in jax.tree.leaves(out)} == {jnp.dtype(jnp.bfloat16)}


def test_given_initializers_win():
    ones, zeros = nn.initializers.ones_init(), nn.initializers.zeros_init()
    x = jnp.ones((1, 5, 4))
    for layer in (
        L.Dense(3, kernel_init=ones, bias_init=ones),
        L.Conv(3, (3,), kernel_init=ones, bias_init=ones),
        L.ConvTranspose(4, (3,), feature_group_count=2, kernel_init=ones, bias_init=ones),
        L.DenseGeneral(3, kernel_init=ones, bias_init=ones),
    ):
        assert all(jnp.all(a == 1) for a in jax.tree.leaves(layer.init(jax.random.key(0), x)))
    cell = L.GRUCell(4, kernel_init=zeros, recurrent_kernel_init=zeros, bias_init=ones)
    params = cell.init(jax.random.key(0), jnp.ones((1, 4)), jnp.ones((1, 3)))["params"]
    assert all(jnp.all(params[g]["bias"] == 1) for g in ("ir", "iz", "in", "hn"))
    mha = L.MultiHeadDotProductAttention(2, kernel_init=ones)
    params = mha.init(jax.random.key(0), jnp.ones((1, 3, 4)))["params"]
    assert jnp.all(params["out"]["kernel"] == 1)  # as Flax: kernel_init also serves the out kernel


def test_bias_bound_follows_actual_fan_in():
    """flax issues 3019/1386: the bias bound comes from the input the layer sees at init."""
    for n_in in (3, 300):
        bias = L.Dense(4096).init(jax.random.key(0), jnp.ones((1, n_in)))["params"]["bias"]
        assert_reaches_bound(bias, float(np.float32(1 / math.sqrt(n_in))), f"fan_in={n_in}")
    empty = L.Dense(8).init(jax.random.key(0), jnp.ones((1, 0)))["params"]["bias"]
    with pytest.warns(UserWarning, match="zero-element"):
        torch_empty = torch.nn.Linear(0, 8).bias  # torch: bound 0
    np.testing.assert_array_equal(np.asarray(empty), TM.np32(torch_empty))
