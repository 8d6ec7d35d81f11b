"""initjax.nnx against live torch.nn: distributions, layouts and Flax machinery.

1. Distribution: pooled fresh inits of each initjax layer and of the torch
   module (ported into the layer by ``initjax.port``) obey torch's bound/std
   and pass a two-sample KS test against each other.
2. Layout: torch's own weights, loaded through ``initjax.port``, give torch's
   forward pass (float32); this also checks the port rules against live torch.
3. Machinery: eval_shape, split/merge, jit'd construction, dtypes, sharding
   metadata, user initializers, argument checks, creation order.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _nnx_helpers import (
    check_distribution,
    const,
    normal,
    params,
    ported,
    split,
    t2n,
    to_channels_first,
    to_channels_last,
    triangular,
    uniform,
    zero_row,
)
from _stats import assert_same_distribution
from flax import nnx

import initjax as ij
from initjax import nnx as inn

ATOL = 2e-5

LSTM_GATES = (("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho"))  # torch's (i, f, g, o)


class EncoderLayer(nnx.Module):
    """torch.nn.TransformerEncoderLayer (post-norm, relu, eval) from initjax layers."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, *, rngs: nnx.Rngs):
        self.self_attn = inn.MultiHeadAttention(nhead, d_model, decode=False, rngs=rngs)
        self.linear1 = inn.Linear(d_model, dim_feedforward, rngs=rngs)
        self.linear2 = inn.Linear(dim_feedforward, d_model, rngs=rngs)
        self.norm1 = inn.LayerNorm(d_model, rngs=rngs)
        self.norm2 = inn.LayerNorm(d_model, rngs=rngs)

    def __call__(self, x):
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(nnx.relu(self.linear1(x))))


# ------------------------------------------------------------ distribution ---


def _k(n):
    return 1 / math.sqrt(n)


def _rnn_laws(names_uniform, names_sum, h):
    laws = {n: uniform(_k(h)) for n in names_uniform}
    return laws | {n: triangular(_k(h)) for n in names_sum}


H = 64  # hidden size of the RNN cases
XAVIER_FUSED = math.sqrt(6 / (4 * 64))
MHA_ZERO = {f"{p}/bias": const(0.0) for p in ("query", "key", "value", "out")}

DISTRIBUTION_CASES = {
    "Linear": (
        lambda r: inn.Linear(200, 512, rngs=r),
        lambda: torch.nn.Linear(200, 512),
        {"kernel": uniform(_k(200)), "bias": uniform(_k(200))},
        16,
    ),
    "Bilinear": (
        lambda r: inn.Bilinear(16, 12, 64, rngs=r),
        lambda: torch.nn.Bilinear(16, 12, 64),
        {"kernel": uniform(_k(16)), "bias": uniform(_k(16))},
        32,
    ),
    "Conv1d": (
        lambda r: inn.Conv(16, 64, 5, rngs=r),
        lambda: torch.nn.Conv1d(16, 64, 5),
        {"kernel": uniform(_k(16 * 5)), "bias": uniform(_k(16 * 5))},
        32,
    ),
    "Conv2d-groups": (
        lambda r: inn.Conv(16, 64, (3, 3), feature_group_count=4, rngs=r),
        lambda: torch.nn.Conv2d(16, 64, 3, groups=4),
        {"kernel": uniform(_k(4 * 9)), "bias": uniform(_k(4 * 9))},
        32,
    ),
    "Conv3d-nobias": (
        lambda r: inn.Conv(8, 16, (3, 3, 3), use_bias=False, rngs=r),
        lambda: torch.nn.Conv3d(8, 16, 3, bias=False),
        {"kernel": uniform(_k(8 * 27))},
        4,
    ),
    "ConvTranspose1d": (
        lambda r: inn.ConvTranspose(16, 64, 5, rngs=r),
        lambda: torch.nn.ConvTranspose1d(16, 64, 5),
        {"kernel": uniform(_k(64 * 5)), "bias": uniform(_k(64 * 5))},
        32,
    ),
    "ConvTranspose2d-groups": (
        lambda r: inn.ConvTranspose(16, 64, (3, 3), feature_group_count=4, rngs=r),
        lambda: torch.nn.ConvTranspose2d(16, 64, 3, groups=4),
        {"kernel": uniform(_k(16 * 9)), "bias": uniform(_k(16 * 9))},
        32,
    ),
    "ConvTranspose2d-groups-transpose_kernel": (
        lambda r: inn.ConvTranspose(
            16, 64, (3, 3), feature_group_count=4, transpose_kernel=True, rngs=r
        ),
        lambda: torch.nn.ConvTranspose2d(16, 64, 3, groups=4),
        {"kernel": uniform(_k(16 * 9)), "bias": uniform(_k(16 * 9))},
        32,
    ),
    "ConvTranspose3d": (
        lambda r: inn.ConvTranspose(8, 16, (3, 3, 3), rngs=r),
        lambda: torch.nn.ConvTranspose3d(8, 16, 3),
        {"kernel": uniform(_k(16 * 27)), "bias": uniform(_k(16 * 27))},
        64,
    ),
    "Embedding-padding_idx": (
        lambda r: inn.Embed(200, 64, padding_idx=-3, rngs=r),
        lambda: torch.nn.Embedding(200, 64, padding_idx=-3),
        {"embedding": zero_row(197, normal(1.0))},
        4,
    ),
    "RNNCell": (
        lambda r: inn.SimpleCell(10, H, rngs=r),
        lambda: torch.nn.RNNCell(10, H),
        _rnn_laws(["dense_i/kernel", "dense_h/kernel"], ["dense_i/bias"], H),
        32,
    ),
    "LSTMCell": (
        lambda r: inn.LSTMCell(10, H, rngs=r),
        lambda: torch.nn.LSTMCell(10, H),
        _rnn_laws(
            [f"{n}/kernel" for pair in LSTM_GATES for n in pair],
            [f"{h}/bias" for _, h in LSTM_GATES],
            H,
        ),
        32,
    ),
    "LSTMCell-optimized": (
        lambda r: inn.OptimizedLSTMCell(10, H, rngs=r),
        lambda: torch.nn.LSTMCell(10, H),
        _rnn_laws(["dense_i/kernel", "dense_h/kernel"], ["dense_h/bias"], H),
        16,
    ),
    "GRUCell": (
        lambda r: inn.GRUCell(10, H, rngs=r),
        lambda: torch.nn.GRUCell(10, H),
        {
            **_rnn_laws(["dense_i/kernel", "dense_h/kernel", "bias_hn"], [], H),
            "dense_i/bias": split((2 * H, H), (triangular(_k(H)), uniform(_k(H)))),
        },
        32,
    ),
    "GRU": (
        lambda r: nnx.RNN(inn.GRUCell(10, H, rngs=r)),
        lambda: torch.nn.GRU(10, H, batch_first=True),
        {
            **_rnn_laws(["cell/dense_i/kernel", "cell/dense_h/kernel", "cell/bias_hn"], [], H),
            "cell/dense_i/bias": split((2 * H, H), (triangular(_k(H)), uniform(_k(H)))),
        },
        32,
    ),
    "MultiheadAttention": (
        lambda r: inn.MultiHeadAttention(8, 64, rngs=r),
        lambda: torch.nn.MultiheadAttention(64, 8),
        {
            **{f"{p}/kernel": uniform(XAVIER_FUSED) for p in ("query", "key", "value")},
            "out/kernel": uniform(_k(64)),
            **MHA_ZERO,
        },
        16,
    ),
    "MultiheadAttention-kdim": (
        lambda r: inn.MultiHeadAttention(8, 64, in_kv_features=32, rngs=r),
        lambda: torch.nn.MultiheadAttention(64, 8, kdim=32, vdim=32),
        {
            "query/kernel": uniform(math.sqrt(6 / (64 + 64))),
            "key/kernel": uniform(math.sqrt(6 / (64 + 32))),
            "value/kernel": uniform(math.sqrt(6 / (64 + 32))),
            "out/kernel": uniform(_k(64)),
            **MHA_ZERO,
        },
        16,
    ),
    "TransformerEncoderLayer": (
        lambda r: EncoderLayer(64, 4, 128, rngs=r),
        lambda: torch.nn.TransformerEncoderLayer(64, 4, 128),
        {
            **{f"self_attn/{p}/kernel": uniform(XAVIER_FUSED) for p in ("query", "key", "value")},
            "self_attn/out/kernel": uniform(_k(64)),
            **{f"self_attn/{k}": v for k, v in MHA_ZERO.items()},
            "linear1/kernel": uniform(_k(64)),
            "linear1/bias": uniform(_k(64)),
            "linear2/kernel": uniform(_k(128)),
            "linear2/bias": uniform(_k(128)),
            **{f"norm{i}/scale": const(1.0) for i in (1, 2)},
            **{f"norm{i}/bias": const(0.0) for i in (1, 2)},
        },
        16,
    ),
    "LayerNorm": (
        lambda r: inn.LayerNorm(32, rngs=r),
        lambda: torch.nn.LayerNorm(32),
        {"scale": const(1.0), "bias": const(0.0)},
        1,
    ),
    "GroupNorm": (
        lambda r: inn.GroupNorm(32, num_groups=4, rngs=r),
        lambda: torch.nn.GroupNorm(4, 32),
        {"scale": const(1.0), "bias": const(0.0)},
        1,
    ),
    "BatchNorm2d": (
        lambda r: inn.BatchNorm(32, rngs=r),
        lambda: torch.nn.BatchNorm2d(32),
        {"scale": const(1.0), "bias": const(0.0)},
        1,
    ),
    "RMSNorm": (
        lambda r: inn.RMSNorm(32, rngs=r),
        lambda: torch.nn.RMSNorm(32),
        {"scale": const(1.0)},
        1,
    ),
    "PReLU": (
        lambda r: inn.PReLU(),
        lambda: torch.nn.PReLU(),
        {"negative_slope": const(0.25)},
        1,
    ),
}


@pytest.mark.parametrize("case", list(DISTRIBUTION_CASES))
def test_distribution_matches_torch(case):
    check_distribution(*DISTRIBUTION_CASES[case])


def test_batchnorm_stats_start_as_torch():
    m, t = inn.BatchNorm(8, rngs=nnx.Rngs(0)), torch.nn.BatchNorm2d(8)
    np.testing.assert_array_equal(m.mean[...], t2n(t.running_mean))
    np.testing.assert_array_equal(m.var[...], t2n(t.running_var))


# ------------------------------------------------------------------ layout ---


def _close(ours, theirs, atol=ATOL):
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=atol, rtol=1e-5)


def _ported(build, t):
    """A layer built with ``build`` holding torch module ``t``'s weights (through initjax.port)."""
    return ported(build(nnx.Rngs(0)), t)


def test_linear_and_bilinear_forward():
    t = torch.nn.Linear(20, 7)
    x = torch.randn(3, 5, 20)
    m = _ported(lambda r: inn.Linear(20, 7, rngs=r), t)
    _close(m(jnp.asarray(t2n(x))), t2n(t(x)))
    t = torch.nn.Bilinear(6, 5, 4)
    x1, x2 = torch.randn(3, 6), torch.randn(3, 5)
    m = _ported(lambda r: inn.Bilinear(6, 5, 4, rngs=r), t)
    _close(m(jnp.asarray(t2n(x1)), jnp.asarray(t2n(x2))), t2n(t(x1, x2)))


def test_linear_general_is_linear_over_axes():
    t = torch.nn.Linear(12, 10)
    m = _ported(lambda r: inn.LinearGeneral((3, 4), (2, 5), axis=(-2, -1), rngs=r), t)
    x = torch.randn(6, 3, 4)
    _close(m(jnp.asarray(t2n(x))).reshape(6, 10), t2n(t(x.reshape(6, 12))))


def test_linear_general_batch_axis_is_independent_linears():
    """Each batch entry is drawn as torch.nn.Linear(64, 32): the batch axis is in no fan."""

    def build(seed):
        return inn.LinearGeneral(64, 32, batch_axis={0: 8}, rngs=nnx.Rngs(seed))

    ours = np.stack([params(build(seed))["kernel"] for seed in range(2)])
    assert ours.shape == (2, 8, 64, 32)
    torch.manual_seed(0)
    theirs = np.stack([t2n(torch.nn.Linear(64, 32).weight).T for _ in range(16)])
    law = uniform(_k(64))
    law(theirs, "torch kernel")
    law(ours, "initjax kernel")
    assert_same_distribution(ours, theirs, "kernel")


CONV_CASES = [  # (n, in, out, k, stride, padding, dilation, groups, bias)
    (1, 6, 8, 3, 1, 0, 1, 1, True),
    (2, 8, 12, 3, 2, 1, 1, 4, True),
    (3, 4, 6, 3, 1, 1, 2, 2, False),
]


@pytest.mark.parametrize("n,cin,cout,k,s,p,d,g,bias", CONV_CASES)
def test_conv_forward(n, cin, cout, k, s, p, d, g, bias):
    t = getattr(torch.nn, f"Conv{n}d")(cin, cout, k, s, p, d, groups=g, bias=bias)
    m = _ported(
        lambda r: inn.Conv(
            cin,
            cout,
            (k,) * n,
            s,
            padding=[(p, p)] * n,
            kernel_dilation=d,
            feature_group_count=g,
            use_bias=bias,
            rngs=r,
        ),
        t,
    )
    x = torch.randn((2, cin) + (9,) * n)
    _close(to_channels_first(m(to_channels_last(x))), t2n(t(x)))


CONV_TRANSPOSE_CASES = [  # (n, in, out, k, stride, padding, output_padding, dilation, groups)
    (1, 6, 8, 3, 2, 1, 1, 1, 1),
    (2, 8, 12, 4, 2, 1, 0, 1, 4),
    (3, 4, 6, 3, 1, 0, 0, 2, 2),
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("n,cin,cout,k,s,p,op,d,g", CONV_TRANSPOSE_CASES)
def test_conv_transpose_forward(n, cin, cout, k, s, p, op, d, g, transpose_kernel):
    t = getattr(torch.nn, f"ConvTranspose{n}d")(cin, cout, k, s, p, op, groups=g, dilation=d)
    pad = d * (k - 1) - p
    m = _ported(
        lambda r: inn.ConvTranspose(
            cin,
            cout,
            (k,) * n,
            s,
            padding=[(pad, pad + op)] * n,
            kernel_dilation=d,
            feature_group_count=g,
            transpose_kernel=transpose_kernel,
            rngs=r,
        ),
        t,
    )
    x = torch.randn((2, cin) + (5,) * n)
    _close(to_channels_first(m(to_channels_last(x))), t2n(t(x)))
    # Extra batch dimensions are flattened and restored, as in Flax.
    y = m(jnp.stack([to_channels_last(x)] * 2))
    _close(to_channels_first(y[1]), t2n(t(x)))


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_grouped_conv_transpose_circular_is_flax_per_group(transpose_kernel):
    """Grouped 'CIRCULAR' (no torch counterpart): group j is flax.nnx.ConvTranspose on its
    channels; initjax.linen computes the same from the same kernel."""
    g, cin, cout = 2, 4, 6
    ci, co = cin // g, cout // g
    kw = {"padding": "CIRCULAR", "kernel_dilation": (1, 2), "transpose_kernel": transpose_kernel}
    m = inn.ConvTranspose(cin, cout, (3, 2), (2, 3), feature_group_count=g, rngs=nnx.Rngs(0), **kw)
    kernel, bias = m.kernel[...], m.bias[...]
    refs = []
    for j in range(g):
        zeros = nnx.initializers.zeros_init()  # overwritten below; cheaper than Flax's init
        ref = nnx.ConvTranspose(
            ci, co, (3, 2), (2, 3), kernel_init=zeros, bias_init=zeros, rngs=nnx.Rngs(0), **kw
        )
        cols = slice(j * ci, (j + 1) * ci) if transpose_kernel else slice(j * co, (j + 1) * co)
        ref.kernel[...] = kernel[..., cols]
        ref.bias[...] = bias[j * co : (j + 1) * co]
        refs.append(ref)
    linen = ij.linen.ConvTranspose(cout, (3, 2), (2, 3), feature_group_count=g, **kw)

    @jax.jit  # one compilation instead of many eager ops
    def outputs(x):
        per_group = [ref(x[..., j * ci : (j + 1) * ci]) for j, ref in enumerate(refs)]
        from_linen = linen.apply({"params": {"kernel": kernel, "bias": bias}}, x)
        return m(x), jnp.concatenate(per_group, axis=-1), from_linen

    x = np.random.default_rng(1).standard_normal((2, 5, 4, cin)).astype(np.float32)
    y, per_group, from_linen = outputs(x)
    _close(y, per_group)
    _close(from_linen, y)


def test_embedding_forward_and_padding_gradient():
    t = torch.nn.Embedding(50, 8, padding_idx=-3)
    m = _ported(lambda r: inn.Embed(50, 8, padding_idx=-3, rngs=r), t)
    idx = torch.tensor([[1, 47, 3], [47, 0, 49]])
    c = torch.randn(2, 3, 8)
    (t(idx) * c).sum().backward()
    ids, cj = jnp.asarray(t2n(idx)), jnp.asarray(t2n(c))
    _close(m(ids), t2n(t(idx)))
    grads = nnx.grad(lambda m: (m(ids) * cj).sum())(m)
    grad = np.asarray(grads["embedding"][...])
    assert np.all(grad[47] == 0)
    _close(grad, t2n(t.weight.grad))


def test_rnn_cells_one_step():
    x, h, c = torch.randn(4, 10), torch.randn(4, 16), torch.randn(4, 16)
    xj, hj, cj = (jnp.asarray(t2n(a)) for a in (x, h, c))
    for nonlinearity, act in (("tanh", nnx.tanh), ("relu", nnx.relu)):
        t = torch.nn.RNNCell(10, 16, nonlinearity=nonlinearity)
        m = _ported(lambda r, act=act: inn.SimpleCell(10, 16, activation_fn=act, rngs=r), t)
        _close(m(hj, xj)[1], t2n(t(x, h)))
    t = torch.nn.LSTMCell(10, 16)
    h_t, c_t = t(x, (h, c))
    for cls in (inn.LSTMCell, inn.OptimizedLSTMCell):
        m = _ported(lambda r, cls=cls: cls(10, 16, rngs=r), t)
        (c_new, h_new), out = m((cj, hj), xj)
        _close(c_new, t2n(c_t))
        _close(h_new, t2n(h_t))
    t = torch.nn.GRUCell(10, 16)
    m = _ported(lambda r: inn.GRUCell(10, 16, rngs=r), t)
    _close(m(hj, xj)[1], t2n(t(x, h)))


@pytest.mark.parametrize(
    "torch_cls,cell",
    [("RNN", inn.SimpleCell), ("LSTM", inn.OptimizedLSTMCell), ("GRU", inn.GRUCell)],
)
def test_sequence_modules_via_nnx_rnn(torch_cls, cell):
    t = getattr(torch.nn, torch_cls)(10, 16, batch_first=True)
    m = _ported(lambda r: nnx.RNN(cell(10, 16, rngs=r)), t)
    x = torch.randn(3, 7, 10)
    _close(m(jnp.asarray(t2n(x))), t2n(t(x)[0]))


@pytest.mark.parametrize("kdim", [None, 24])
def test_multihead_attention_forward(kdim):
    t = torch.nn.MultiheadAttention(32, 4, batch_first=True, kdim=kdim, vdim=kdim).eval()
    m = _ported(
        lambda r: inn.MultiHeadAttention(4, 32, in_kv_features=kdim, decode=False, rngs=r),
        t,
    )
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 6, kdim or 32)
    block = torch.rand(5, 6) < 0.3
    block[:, 0] = False  # every query attends somewhere
    want = t(q, kv, kv, attn_mask=block, need_weights=False)[0]
    qj, kvj = jnp.asarray(t2n(q)), jnp.asarray(t2n(kv))
    got = m(qj, kvj, kvj, mask=jnp.asarray(~t2n(block))[None, None])  # Flax: True attends
    _close(got, t2n(want))


def test_transformer_encoder_layer_forward():
    t = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    m = _ported(lambda r: EncoderLayer(32, 4, 64, rngs=r), t)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        want = t(x)
    _close(m(jnp.asarray(t2n(x))), t2n(want))


def test_transformer_encoder_identical_layers_recipe():
    """torch deep-copies the layer; nnx.clone reproduces that, fresh draws do not."""
    enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(16, 2, 32), 3, enable_nested_tensor=False
    )
    first, last = enc.layers[0].state_dict(), enc.layers[2].state_dict()
    assert all(torch.equal(first[k], last[k]) for k in first)
    rngs = nnx.Rngs(0)
    layer = EncoderLayer(16, 2, 32, rngs=rngs)
    clone, fresh = params(nnx.clone(layer)), params(EncoderLayer(16, 2, 32, rngs=rngs))
    assert all(np.array_equal(v, clone[k]) for k, v in params(layer).items())
    assert not np.array_equal(params(layer)["linear1/kernel"], fresh["linear1/kernel"])


def _affine(t):
    with torch.no_grad():
        t.weight.normal_()
        t.bias.normal_()
    return t


def test_layer_norm_group_norm_rms_norm_prelu_forward():
    t = _affine(torch.nn.LayerNorm(16))
    m = _ported(lambda r: inn.LayerNorm(16, rngs=r), t)
    x = torch.randn(3, 16) * 0.003  # eps 1e-5 vs Flax's 1e-6 matters here
    _close(m(jnp.asarray(t2n(x))), t2n(t(x)))

    t = _affine(torch.nn.GroupNorm(4, 16))
    m = _ported(lambda r: inn.GroupNorm(16, num_groups=4, rngs=r), t)
    x = torch.randn(2, 16, 5, 5) * 0.003
    _close(to_channels_first(m(to_channels_last(x))), t2n(t(x)))

    t = torch.nn.RMSNorm(16)
    m = _ported(lambda r: inn.RMSNorm(16, rngs=r), t)
    x = torch.randn(3, 16) * 1e-3
    _close(m(jnp.asarray(t2n(x))), t2n(t(x)))

    t = torch.nn.PReLU()
    x = torch.randn(20)
    _close(inn.PReLU()(jnp.asarray(t2n(x))), t2n(t(x)))


def test_layer_norm_variance_is_two_pass_as_torch():
    """Large-mean inputs: Flax's default E[x^2]-E[x]^2 is off by ~8; torch and initjax are not."""
    x = (300 + 0.01 * torch.randn(4, 256)).float()
    exact = (x.double() - x.double().mean(-1, keepdim=True)) / torch.sqrt(
        x.double().var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    theirs = torch.nn.LayerNorm(256, elementwise_affine=False)(x)
    err_torch = float((theirs.double() - exact).abs().max())
    m = inn.LayerNorm(256, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    ours = m(jnp.asarray(t2n(x)))
    err_ours = float(np.abs(np.asarray(ours, np.float64) - t2n(exact)).max())
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


def test_batch_norm_train_and_eval():
    """Train mode: batch statistics, momentum 0.1 and torch's unbiased running var; then eval."""
    t = _affine(torch.nn.BatchNorm2d(6))
    m = _ported(lambda r: inn.BatchNorm(6, rngs=r), t)
    for _ in range(2):
        x = torch.randn(2, 6, 3, 3) * 2 + 1  # n = 18 per channel: the n/(n-1) factor shows
        _close(to_channels_first(m(to_channels_last(x))), t2n(t(x)))  # batch stats
        _close(m.mean[...], t2n(t.running_mean))
        _close(m.var[...], t2n(t.running_var))
    t.eval()
    x = torch.randn(4, 6, 5, 5)
    y = m(to_channels_last(x), use_running_average=True)
    _close(to_channels_first(y), t2n(t(x)))
    t.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        t(torch.ones(1, 6, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(jnp.ones((1, 1, 1, 6)))
    _close(m.var[...], t2n(t.running_var))  # the refused step changed nothing


def test_batch_norm_counts_mask_and_axis_name_values():
    """n is the number of values the statistics use: torch on exactly those values."""
    x = torch.randn(8, 6) * 2 + 1
    t = torch.nn.BatchNorm1d(6)
    keep = torch.arange(8) % 3 != 0  # 5 of 8 rows
    want = t(x[keep])
    m = inn.BatchNorm(6, rngs=nnx.Rngs(0))
    y = m(jnp.asarray(t2n(x)), mask=jnp.asarray(t2n(keep))[:, None])
    _close(np.asarray(y)[t2n(keep)], t2n(want))
    _close(m.mean[...], t2n(t.running_mean))
    _close(m.var[...], t2n(t.running_var))

    t = torch.nn.BatchNorm1d(6)
    want = t(x)  # all 8 rows; initjax sees them as 4 devices of 2 rows each
    m = inn.BatchNorm(6, axis_name="devices", rngs=nnx.Rngs(0))

    @nnx.vmap(in_axes=(None, 0), out_axes=0, axis_name="devices")
    def step(m, x):
        return m(x)

    y = step(m, jnp.asarray(t2n(x)).reshape(4, 2, 6))
    _close(np.asarray(y).reshape(8, 6), t2n(want))
    _close(m.mean[...], t2n(t.running_mean))
    _close(m.var[...], t2n(t.running_var))


# --------------------------------------------------------------- machinery ---

BUILDERS = {
    "Linear": (lambda r, **kw: inn.Linear(6, 4, rngs=r, **kw), (5, 6)),
    "LinearGeneral": (lambda r, **kw: inn.LinearGeneral(6, (2, 2), rngs=r, **kw), (5, 6)),
    "Bilinear": (lambda r, **kw: inn.Bilinear(6, 6, 4, rngs=r, **kw), None),
    "Conv": (
        lambda r, **kw: inn.Conv(4, 6, (3, 3), feature_group_count=2, rngs=r, **kw),
        (2, 5, 5, 4),
    ),
    "ConvTranspose": (
        lambda r, **kw: inn.ConvTranspose(4, 6, (3, 3), 2, feature_group_count=2, rngs=r, **kw),
        (2, 5, 5, 4),
    ),
    "Embed": (lambda r, **kw: inn.Embed(10, 4, padding_idx=0, rngs=r, **kw), "int"),
    "SimpleCell": (lambda r, **kw: inn.SimpleCell(6, 4, rngs=r, **kw), "cell"),
    "LSTMCell": (lambda r, **kw: inn.LSTMCell(6, 4, rngs=r, **kw), "cell"),
    "OptimizedLSTMCell": (lambda r, **kw: inn.OptimizedLSTMCell(6, 4, rngs=r, **kw), "cell"),
    "GRUCell": (lambda r, **kw: inn.GRUCell(6, 4, rngs=r, **kw), "cell"),
    "MultiHeadAttention": (
        lambda r, **kw: inn.MultiHeadAttention(2, 6, decode=False, rngs=r, **kw),
        (2, 3, 6),
    ),
    "LayerNorm": (lambda r, **kw: inn.LayerNorm(6, rngs=r, **kw), (5, 6)),
    "GroupNorm": (lambda r, **kw: inn.GroupNorm(6, num_groups=3, rngs=r, **kw), (2, 3, 6)),
    "BatchNorm": (lambda r, **kw: inn.BatchNorm(6, rngs=r, **kw), (5, 6)),
    "RMSNorm": (lambda r, **kw: inn.RMSNorm(6, rngs=r, **kw), (5, 6)),
    "PReLU": (lambda r, **kw: inn.PReLU(**kw), (5, 6)),
}


def _run(m, kind, dtype=jnp.float32):
    """Call ``m`` on a small input of the right kind."""
    if kind == "int":
        return m(jnp.arange(6).reshape(2, 3))
    if kind == "cell":
        x = jnp.ones((2, 6), dtype)
        return m(m.initialize_carry(x.shape, nnx.Rngs(0)), x)[1]
    if kind is None:  # Bilinear
        x = jnp.ones((2, 6), dtype)
        return m(x, x)
    return m(jnp.linspace(-1, 1, math.prod(kind), dtype=dtype).reshape(kind))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_eval_shape_split_merge(name):
    build, kind = BUILDERS[name]
    concrete = build(nnx.Rngs(0))
    abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), nnx.state(concrete))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), nnx.state(abstract)) == shapes
    graphdef, state = nnx.split(concrete)
    merged = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(_run(merged, kind), _run(concrete, kind))


@pytest.mark.parametrize(
    "name", ["Linear", "ConvTranspose", "Embed", "GRUCell", "MultiHeadAttention"]
)
def test_jit_construction_matches_eager(name):
    build, _ = BUILDERS[name]
    jitted = nnx.jit(lambda: build(nnx.Rngs(3)))()
    eager = build(nnx.Rngs(3))
    for key, value in params(eager).items():
        np.testing.assert_allclose(params(jitted)[key], value, rtol=1e-6, atol=0)
    state = jax.jit(lambda key: nnx.state(build(nnx.Rngs(key)), nnx.Param))(jax.random.key(3))
    assert jax.tree.structure(state) == jax.tree.structure(nnx.state(eager, nnx.Param))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_param_dtype_and_dtype(name):
    build, kind = BUILDERS[name]
    m = build(nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.bfloat16 for v in params(m).values())
    if kind != "int":
        assert _run(m, kind, jnp.bfloat16).dtype == jnp.bfloat16


def test_half_precision_params_keep_torch_bound():
    m = inn.Linear(300, 400, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    w = np.asarray(m.kernel[...], np.float32)
    bound = float(jnp.asarray(1 / math.sqrt(300), jnp.bfloat16).astype(jnp.float32))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound


def _mesh():
    return jax.make_mesh((1, 1), ("a", "b"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)


def test_sharding_metadata_is_kept():
    with jax.set_mesh(_mesh()):
        m = inn.Linear(4, 6, kernel_metadata={"out_sharding": ("a", "b")}, rngs=nnx.Rngs(0))
        assert m.kernel.get_metadata()["out_sharding"] == ("a", "b")
        assert m.kernel[...].sharding.spec == jax.P("a", "b")
        # A partitioned initjax initializer through the grouped ConvTranspose path.
        kinit = nnx.with_partitioning(ij.conv_transpose_kernel(2), (None, None, "a", "b"))
        m = inn.ConvTranspose(
            4, 6, (3, 3), feature_group_count=2, kernel_init=kinit, rngs=nnx.Rngs(0)
        )
        assert m.kernel.shape == (3, 3, 2, 6)
        assert m.kernel.get_metadata()["out_sharding"] == (None, None, "a", "b")
        assert m.kernel[...].sharding.spec == jax.P(None, None, "a", "b")
        # GRUCell's added bias_hn takes bias_metadata like Flax's biases.
        m = inn.GRUCell(3, 4, bias_metadata={"out_sharding": ("a",)}, rngs=nnx.Rngs(0))
        assert m.bias_hn.get_metadata()["out_sharding"] == ("a",)
        assert m.dense_i.bias.get_metadata()["out_sharding"] == ("a",)
        # PReLU's per-channel slopes (n > 1) take the metadata, not its scalar default.
        m = inn.PReLU(num_parameters=4, negative_slope_metadata={"out_sharding": ("a",)})
        assert m.negative_slope[...].sharding.spec == jax.P("a")


def test_user_initializers_win():
    m = inn.Linear(5, 3, kernel_init=ij.zeros(), bias_init=ij.ones(), rngs=nnx.Rngs(0))
    assert np.all(m.kernel[...] == 0) and np.all(m.bias[...] == 1)
    m = inn.GRUCell(3, 4, bias_init=ij.constant(0.5), rngs=nnx.Rngs(0))
    assert np.all(m.dense_i.bias[...] == 0.5) and np.all(m.bias_hn[...] == 0.5)
    m = inn.MultiHeadAttention(2, 4, kernel_init=ij.ones(), rngs=nnx.Rngs(0))
    assert np.all(m.query.kernel[...] == 1) and np.all(m.out.kernel[...] == 1)  # Flax's rule
    m = inn.Embed(6, 2, padding_idx=1, embedding_init=ij.ones(), rngs=nnx.Rngs(0))
    assert np.all(m.embedding[...] == 1)


def test_torch_numeric_defaults():
    assert inn.LayerNorm(4, rngs=nnx.Rngs(0)).epsilon == 1e-5
    assert inn.GroupNorm(4, 2, rngs=nnx.Rngs(0)).epsilon == 1e-5
    bn = inn.BatchNorm(4, rngs=nnx.Rngs(0))
    assert (bn.epsilon, bn.momentum, bn.use_fast_variance) == (1e-5, 0.9, False)
    assert inn.RMSNorm(4, rngs=nnx.Rngs(0)).epsilon == float(jnp.finfo(jnp.float32).eps)
    assert float(inn.PReLU().negative_slope[...]) == 0.25


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: inn.Conv(6, 8, 3, feature_group_count=4, rngs=nnx.Rngs(0)), "in_features=6"),
        (lambda: inn.Conv(8, 6, 3, feature_group_count=4, rngs=nnx.Rngs(0)), "out_features=6"),
        (lambda: inn.ConvTranspose(4, 4, 3, feature_group_count=0, rngs=nnx.Rngs(0)), "positive"),
        (lambda: inn.Embed(5, 2, padding_idx=5, rngs=nnx.Rngs(0)), "padding_idx=5"),
        (lambda: inn.Embed(5, 2, padding_idx=-6, rngs=nnx.Rngs(0)), "padding_idx=-6"),
        (lambda: inn.Bilinear(0, 2, 3, rngs=nnx.Rngs(0)), "in1_features"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _recorder(log, name, init):
    def wrapped(key, shape, dtype=None):
        log.append(name)
        return init(key, shape, dtype)

    return wrapped


def test_creation_order():
    """Order of initializer calls: torch's where Flax's structure allows (see docstrings)."""
    log = []
    k, b = _recorder(log, "kernel", ij.zeros()), _recorder(log, "bias", ij.zeros())
    for make in (
        lambda: inn.Linear(2, 3, kernel_init=k, bias_init=b, rngs=nnx.Rngs(0)),
        lambda: inn.Bilinear(2, 2, 3, kernel_init=k, bias_init=b, rngs=nnx.Rngs(0)),
        lambda: inn.Conv(2, 4, 3, kernel_init=k, bias_init=b, rngs=nnx.Rngs(0)),
        lambda: inn.ConvTranspose(
            2, 4, 3, feature_group_count=2, kernel_init=k, bias_init=b, rngs=nnx.Rngs(0)
        ),
    ):
        log.clear()
        make()
        assert log == ["kernel", "bias"]
    log.clear()
    inn.OptimizedLSTMCell(
        2,
        3,
        kernel_init=_recorder(log, "weight_ih", ij.zeros()),
        recurrent_kernel_init=_recorder(log, "weight_hh", ij.zeros()),
        bias_init=_recorder(log, "bias", ij.zeros()),
        rngs=nnx.Rngs(0),
    )
    assert log == ["weight_ih", "weight_hh", "bias"]


DROP_INS = [  # (initjax class, Flax class, arguments initjax adds)
    (inn.Linear, nnx.Linear, ()),
    (inn.LinearGeneral, nnx.LinearGeneral, ()),
    (inn.Conv, nnx.Conv, ()),
    (inn.ConvTranspose, nnx.ConvTranspose, ("feature_group_count",)),
    (inn.Embed, nnx.Embed, ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq")),
    (inn.SimpleCell, nnx.SimpleCell, ()),
    (inn.LSTMCell, nnx.LSTMCell, ()),
    (inn.OptimizedLSTMCell, nnx.OptimizedLSTMCell, ()),
    (inn.GRUCell, nnx.GRUCell, ()),
    (inn.MultiHeadAttention, nnx.MultiHeadAttention, ()),
    (inn.LayerNorm, nnx.LayerNorm, ()),
    (inn.GroupNorm, nnx.GroupNorm, ()),
    (inn.BatchNorm, nnx.BatchNorm, ("track_num_batches",)),
    (inn.RMSNorm, nnx.RMSNorm, ()),
    (inn.PReLU, nnx.PReLU, ("num_parameters",)),
]


@pytest.mark.parametrize("ours,flax_cls,added", DROP_INS, ids=lambda v: getattr(v, "__name__", ""))
def test_constructor_is_a_drop_in(ours, flax_cls, added):
    """Flax's positional parameters in Flax's order; every other Flax argument accepted."""
    mine = inspect.signature(ours.__init__).parameters
    theirs = inspect.signature(flax_cls.__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in theirs if theirs[p].kind in kinds]
    assert [p for p in mine if mine[p].kind in kinds] == positional
    assert set(mine) - {"kwargs"} <= set(theirs) | set(added)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in mine.values())
    assert issubclass(ours, flax_cls)
