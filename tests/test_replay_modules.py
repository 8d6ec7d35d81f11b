"""Whole models: ``replay.torch_init``/``torch_variables`` vs ``torch.manual_seed(s); Model()``.

For every configuration the torch model is built after ``torch.manual_seed``,
its state_dict is ported to a second Flax model with ``initjax.port`` (the
expected values, in Flax's layout), and the replayed Flax model must hold the
same bits in every parameter; the generator must then stand where torch's
does (state bytes and the next ``torch.rand``). Replay draws and the port's
layout conversions are independent: the port receives torch's real tensors.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import linen, nnx

import initjax as ij
from initjax import port, replay

SEEDS = (0, -7, 2**32 + 3)


def torch_state(module: torch.nn.Module, drop=()) -> dict[str, np.ndarray]:
    return {
        k: v.detach().numpy()
        for k, v in module.state_dict().items()
        if k.split(".")[-1] not in drop
    }


def assert_same_params(ours: nnx.Module, expected: nnx.Module):
    a = jax.tree_util.tree_leaves_with_path(nnx.state(ours, nnx.Param))
    b = dict(jax.tree_util.tree_leaves_with_path(nnx.state(expected, nnx.Param)))
    assert len(a) == len(b) and a
    for path, x in a:
        x, y = np.asarray(x), np.asarray(b[path])
        assert x.dtype == y.dtype and x.shape == y.shape, path
        diff = x.view(np.uint32) != y.view(np.uint32)
        assert not diff.any(), f"{jax.tree_util.keystr(path)}: {diff.sum()} of {diff.size} differ"


def assert_torch_position(gen: replay.TorchGenerator):
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes()
    nxt = torch.rand(3).numpy()
    assert np.array_equal(replay.rand(gen, 3).view(np.uint32), nxt.view(np.uint32))


def check_nnx(seed, torch_factory, flax_factory, drop=(), **replay_kwargs):
    torch.manual_seed(seed)
    module = torch_factory()
    expected = flax_factory(nnx.Rngs(1))
    port.torch_to_nnx(torch_state(module, drop), expected)
    gen = replay.TorchGenerator(seed)
    ours = replay.torch_init(flax_factory(nnx.Rngs(2)), gen, **replay_kwargs)
    assert_same_params(ours, expected)
    assert_torch_position(gen)


# ------------------------------------------------------------ the models ---


class Wrap(nnx.Module):
    """One named layer, so the torch module's keys sit under ``m.``."""

    def __init__(self, layer):
        self.m = layer


class TorchWrap(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.m = layer


class EncoderLayer(nnx.Module):
    """Flax twin of ``nn.TransformerEncoderLayer(d, heads, ff)`` (its parameters)."""

    def __init__(self, d, heads, ff, rngs):
        self.self_attn = ij.nnx.MultiHeadAttention(heads, d, rngs=rngs)
        self.linear1 = ij.nnx.Linear(d, ff, rngs=rngs)
        self.linear2 = ij.nnx.Linear(ff, d, rngs=rngs)
        self.norm1 = ij.nnx.LayerNorm(d, rngs=rngs)
        self.norm2 = ij.nnx.LayerNorm(d, rngs=rngs)


class DecoderLayer(nnx.Module):
    def __init__(self, d, heads, ff, rngs):
        self.self_attn = ij.nnx.MultiHeadAttention(heads, d, rngs=rngs)
        self.multihead_attn = ij.nnx.MultiHeadAttention(heads, d, rngs=rngs)
        self.linear1 = ij.nnx.Linear(d, ff, rngs=rngs)
        self.linear2 = ij.nnx.Linear(ff, d, rngs=rngs)
        self.norm1 = ij.nnx.LayerNorm(d, rngs=rngs)
        self.norm2 = ij.nnx.LayerNorm(d, rngs=rngs)
        self.norm3 = ij.nnx.LayerNorm(d, rngs=rngs)


class Stack(nnx.Module):
    """``nn.TransformerEncoder``/``Decoder``: ``layers`` plus a final ``norm``."""

    def __init__(self, make, n, rngs, norm=None):
        self.layers = nnx.List([make(rngs) for _ in range(n)])
        if norm is not None:
            self.norm = ij.nnx.LayerNorm(norm, rngs=rngs)


class Transformer(nnx.Module):
    def __init__(self, d, heads, n_enc, n_dec, ff, rngs):
        self.encoder = Stack(lambda r: EncoderLayer(d, heads, ff, r), n_enc, rngs, norm=d)
        self.decoder = Stack(lambda r: DecoderLayer(d, heads, ff, r), n_dec, rngs, norm=d)


def bidirectional_lstm(in_features, hidden, layers, rngs):
    def cell(n_in):
        return nnx.RNN(ij.nnx.LSTMCell(n_in, hidden, rngs=rngs))

    return nnx.List(
        [
            nnx.Bidirectional(
                cell(in_features if i == 0 else 2 * hidden),
                cell(in_features if i == 0 else 2 * hidden),
            )
            for i in range(layers)
        ]
    )


CONFIGS = {
    "Linear": (
        lambda: TorchWrap(torch.nn.Linear(7, 5)),
        lambda r: Wrap(ij.nnx.Linear(7, 5, rngs=r)),
        {},
    ),
    "Linear no bias": (
        lambda: TorchWrap(torch.nn.Linear(20, 3, bias=False)),
        lambda r: Wrap(ij.nnx.Linear(20, 3, use_bias=False, rngs=r)),
        {},
    ),
    "Conv2d groups": (
        lambda: TorchWrap(torch.nn.Conv2d(4, 6, (3, 2), groups=2)),
        lambda r: Wrap(ij.nnx.Conv(4, 6, (3, 2), feature_group_count=2, rngs=r)),
        {},
    ),
    "ConvTranspose2d groups": (
        lambda: TorchWrap(torch.nn.ConvTranspose2d(6, 4, 3, groups=2)),
        lambda r: Wrap(ij.nnx.ConvTranspose(6, 4, (3, 3), feature_group_count=2, rngs=r)),
        {},
    ),
    "Embedding padding_idx": (
        lambda: TorchWrap(torch.nn.Embedding(9, 4, padding_idx=2)),
        lambda r: Wrap(ij.nnx.Embed(9, 4, padding_idx=2, rngs=r)),
        {},
    ),
    "LSTM 2-layer bidirectional": (
        lambda: TorchWrap(torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)),
        lambda r: Wrap(bidirectional_lstm(3, 5, 2, r)),
        {},
    ),
    "GRU": (
        lambda: TorchWrap(torch.nn.GRU(4, 6)),
        lambda r: Wrap(nnx.RNN(ij.nnx.GRUCell(4, 6, rngs=r))),
        {},
    ),
    "MultiheadAttention": (
        lambda: TorchWrap(torch.nn.MultiheadAttention(8, 2)),
        lambda r: Wrap(ij.nnx.MultiHeadAttention(2, 8, rngs=r)),
        {},
    ),
    "MultiheadAttention add_bias_kv kdim": (
        lambda: TorchWrap(torch.nn.MultiheadAttention(12, 3, add_bias_kv=True, kdim=5, vdim=5)),
        lambda r: Wrap(ij.nnx.MultiHeadAttention(3, 12, in_kv_features=5, rngs=r)),
        {"add_bias_kv": ["m"], "drop": ("bias_k", "bias_v")},
    ),
    "TransformerEncoderLayer": (
        lambda: TorchWrap(torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)),
        lambda r: Wrap(EncoderLayer(8, 2, 16, r)),
        {},
    ),
    "TransformerEncoder (deep copies)": (
        lambda: torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16),
            3,
            enable_nested_tensor=False,
        ),
        lambda r: Stack(lambda rr: EncoderLayer(8, 2, 16, rr), 3, r),
        {"copies": {"layers.1": "layers.0", "layers.2": "layers.0"}},
    ),
    "Transformer (xavier re-draw)": (
        lambda: torch.nn.Transformer(8, 2, 2, 1, dim_feedforward=16),
        lambda r: Transformer(8, 2, 2, 1, 16, r),
        {"copies": {"encoder.layers.1": "encoder.layers.0"}, "xavier_after": [""]},
    ),
    "Sequential across the normal cache": (
        lambda: torch.nn.Sequential(
            torch.nn.Embedding(3, 5),
            torch.nn.Embedding(2, 3),
            torch.nn.Linear(4, 4),
            torch.nn.Embedding(1, 7),
        ),
        lambda r: nnx.Sequential(
            ij.nnx.Embed(3, 5, rngs=r),
            ij.nnx.Embed(2, 3, rngs=r),
            ij.nnx.Linear(4, 4, rngs=r),
            ij.nnx.Embed(1, 7, rngs=r),
        ),
        {},
    ),
}


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("name", CONFIGS)
def test_nnx_model_bits(name):
    torch_factory, flax_factory, kwargs = CONFIGS[name]
    kwargs = dict(kwargs)
    drop = kwargs.pop("drop", ())
    seed = SEEDS[list(CONFIGS).index(name) % len(SEEDS)]
    check_nnx(seed, torch_factory, flax_factory, drop, **kwargs)


def test_stream_continues_across_models():
    """A generator passed on keeps torch's stream: two models in a row, then a tensor."""
    torch.manual_seed(11)
    t1, t2 = torch.nn.Linear(3, 2), torch.nn.Embedding(2, 3)
    t3 = torch.randn(5)
    gen = replay.TorchGenerator(11)
    m1 = replay.torch_init(Wrap(ij.nnx.Linear(3, 2, rngs=nnx.Rngs(0))), gen)
    m2 = replay.torch_init(Wrap(ij.nnx.Embed(2, 3, rngs=nnx.Rngs(0))), gen)
    assert np.array_equal(np.asarray(m1.m.kernel[...]), t1.weight.detach().numpy().T)
    assert np.array_equal(np.asarray(m2.m.embedding[...]), t2.weight.detach().numpy())
    assert np.array_equal(replay.randn(gen, 5), t3.numpy())


def test_nnx_errors():
    class Raw(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jax.numpy.zeros(3))

    with pytest.raises(ValueError, match="no port rule"):
        replay.torch_init(Raw(), 0)
    with pytest.raises(ValueError, match="no layer at or below 'nope'"):
        replay.torch_init(Wrap(ij.nnx.Linear(2, 2, rngs=nnx.Rngs(0))), 0, copies={"nope": "m"})
    with pytest.raises(ValueError, match="cannot hold torch's initial values"):
        # Flax's own GRUCell has no place for torch's b_hn.
        replay.torch_init(Wrap(nnx.RNN(nnx.GRUCell(2, 3, rngs=nnx.Rngs(0)))), 0)


# ------------------------------------------------------------------ linen ---


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x, kv):
        y = ij.linen.Dense(6)(x)
        y = ij.linen.MultiHeadDotProductAttention(num_heads=2)(y, kv, kv[..., :3])
        return ij.linen.Conv(4, (3,), padding="VALID")(y)


class TorchLinenTwin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.Dense_0 = torch.nn.Linear(5, 6)
        self.MultiHeadDotProductAttention_0 = torch.nn.MultiheadAttention(6, 2, kdim=4, vdim=3)
        self.Conv_0 = torch.nn.Conv1d(6, 4, 3)


def test_linen_variables_bits():
    x, kv = np.zeros((1, 7, 5), np.float32), np.zeros((1, 9, 4), np.float32)
    model = LinenNet()
    torch.manual_seed(-7)
    twin = TorchLinenTwin()
    layers = port.linen_layers(model, x, kv)
    abstract = jax.eval_shape(lambda k: model.init(k, x, kv), jax.random.key(0))
    expected, _ = port.torch_to_linen(torch_state(twin), abstract, layers)
    gen = replay.TorchGenerator(-7)
    ours = replay.torch_variables(model, gen, x, kv)
    a = jax.tree_util.tree_leaves_with_path(ours)
    b = dict(jax.tree_util.tree_leaves_with_path(expected))
    assert len(a) == len(b) == 12
    for path, leaf in a:
        assert np.array_equal(
            np.asarray(leaf).view(np.uint32), np.asarray(b[path]).view(np.uint32)
        ), path
    assert_torch_position(gen)
