"""Real torch models, saved as safetensors, ported into the matching Flax models:
forward outputs equal torch's (float32, 1e-5) in train and eval mode, and the
round trips torch -> Flax -> torch and Flax -> torch -> Flax are exact."""

from __future__ import annotations

import copy

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

import initjax.linen as ijl
import initjax.nnx as ijx
from initjax import port

TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(0)


def _save(tmp_path, module: torch.nn.Module) -> str:
    path = str(tmp_path / "model.safetensors")
    safetensors.torch.save_file(module.state_dict(), path)
    return path


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _linen(model, torch_module, tmp_path, *args, **kwargs):
    layers = port.linen_layers(model, *args, **kwargs)
    abstract = jax.eval_shape(lambda k: model.init(k, *args, **kwargs), jax.random.key(0))
    variables, report = port.torch_to_linen(_save(tmp_path, torch_module), abstract, layers)
    assert report.ok and not report.missing
    return variables, layers


def _assert_round_trip(torch_module, exported, summed=()):
    """torch -> Flax -> torch: every tensor bit-exact, except bias pairs that Flax
    holds as one sum (``summed``: (bias_ih key, bias_hh key)), whose sum is."""
    ref = {k: _np(v) for k, v in torch_module.state_dict().items()}
    assert set(exported) == {k for k in ref if not k.endswith("num_batches_tracked")}
    pairs = dict(summed)
    for k, v in exported.items():
        if k in pairs:
            ih, hh = pairs[k], k.replace("bias_ih", "bias_hh")
            np.testing.assert_array_equal(v + exported[hh], ref[ih] + ref[hh])
            assert not np.any(exported[hh][: len(v)] != 0) or k == ih
        elif k.replace("bias_hh", "bias_ih") in pairs:
            continue
        else:
            assert v.dtype == ref[k].dtype and v.tobytes() == ref[k].tobytes(), k


def _bias_pairs(torch_module) -> list[tuple[str, str]]:
    return [(k, k) for k in torch_module.state_dict() if "bias_ih" in k]


# ----------------------------------------------------------------------- MLP ---


def _torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 3),
    )


def test_mlp_linen(tmp_path):
    tm = _torch_mlp()
    fm = nn.Sequential([ijl.Dense(32), nn.relu, ijl.Dense(32), nn.relu, ijl.Dense(3)])
    x = RNG.standard_normal((5, 6), np.float32)
    variables, layers = _linen(fm, tm, tmp_path, x)
    np.testing.assert_allclose(fm.apply(variables, x), _np(tm(torch.from_numpy(x))), **TOL)

    exported = port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    _assert_round_trip(tm, exported)
    again, _ = port.torch_to_linen(exported, variables, layers)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, variables)


def test_mlp_nnx(tmp_path):
    tm = _torch_mlp()
    rngs = nnx.Rngs(0)
    fm = nnx.Sequential(
        ijx.Linear(6, 32, rngs=rngs),
        nnx.relu,
        ijx.Linear(32, 32, rngs=rngs),
        nnx.relu,
        ijx.Linear(32, 3, rngs=rngs),
    )
    report = port.torch_to_nnx(_save(tmp_path, tm), fm)
    assert report.ok
    x = RNG.standard_normal((5, 6), np.float32)
    np.testing.assert_allclose(fm(x), _np(tm(torch.from_numpy(x))), **TOL)
    _assert_round_trip(tm, port.nnx_to_torch(fm, torch_keys=tm.state_dict().keys()))


# ----------------------------------------------------------------------- CNN ---


class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.up = torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.up_grouped = torch.nn.ConvTranspose2d(4, 6, 3, padding=1, groups=2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.up_grouped(self.up(self.grouped(x)))


class LinenCNN(nn.Module):
    transpose_kernel: bool = False

    def setup(self):
        self.conv = ijl.Conv(8, (3, 3), padding=1)
        self.bn = ijl.BatchNorm()
        self.grouped = ijl.Conv(8, (3, 3), padding=1, feature_group_count=4)
        # torch padding p -> k - 1 - p on each side
        self.up = ijl.ConvTranspose(
            4, (4, 4), strides=(2, 2), padding=2, transpose_kernel=self.transpose_kernel
        )
        self.up_grouped = ijl.ConvTranspose(
            6, (3, 3), padding=1, feature_group_count=2, transpose_kernel=self.transpose_kernel
        )

    def __call__(self, x, train: bool):
        x = nn.relu(self.bn(self.conv(x), use_running_average=not train))
        return self.up_grouped(self.up(self.grouped(x)))


def _trained_cnn() -> TorchCNN:
    torch.manual_seed(0)
    tm = TorchCNN()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(2):
            tm(torch.randn(4, 3, 8, 8) * 2 + 1)
    return tm


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return _np(t).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_cnn_linen_train_and_eval(tmp_path, transpose_kernel):
    tm = _trained_cnn()
    fm = LinenCNN(transpose_kernel)
    x = RNG.standard_normal((2, 8, 8, 3), np.float32)
    variables, layers = _linen(fm, tm, tmp_path, x, train=False)

    tm.eval()
    np.testing.assert_allclose(fm.apply(variables, x, train=False), _nhwc(tm(_nchw(x))), **TOL)

    tm.train()
    stepped = copy.deepcopy(tm)
    y_t = _nhwc(stepped(_nchw(x)))
    y, updates = fm.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_t, **TOL)
    np.testing.assert_allclose(
        updates["batch_stats"]["bn"]["mean"], _np(stepped.bn.running_mean), **TOL
    )
    np.testing.assert_allclose(
        updates["batch_stats"]["bn"]["var"], _np(stepped.bn.running_var), **TOL
    )

    exported = port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    _assert_round_trip(tm, exported)
    again, _ = port.torch_to_linen(exported, variables, layers)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, variables)


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = ijx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
        self.bn = ijx.BatchNorm(8, rngs=rngs)
        self.grouped = ijx.Conv(8, 8, (3, 3), padding=1, feature_group_count=4, rngs=rngs)
        self.up = ijx.ConvTranspose(8, 4, (4, 4), strides=(2, 2), padding=2, rngs=rngs)
        self.up_grouped = ijx.ConvTranspose(
            4, 6, (3, 3), padding=1, feature_group_count=2, rngs=rngs
        )

    def __call__(self, x):
        return self.up_grouped(self.up(self.grouped(nnx.relu(self.bn(self.conv(x))))))


def test_cnn_nnx_train_and_eval(tmp_path):
    tm = _trained_cnn()
    fm = NnxCNN(nnx.Rngs(0))
    assert port.torch_to_nnx(_save(tmp_path, tm), fm).ok
    x = RNG.standard_normal((2, 8, 8, 3), np.float32)
    tm.eval()
    fm.eval()
    np.testing.assert_allclose(fm(x), _nhwc(tm(_nchw(x))), **TOL)
    tm.train()
    fm.train()
    np.testing.assert_allclose(fm(x), _nhwc(tm(_nchw(x))), **TOL)
    np.testing.assert_allclose(fm.bn.mean[...], _np(tm.bn.running_mean), **TOL)
    np.testing.assert_allclose(fm.bn.var[...], _np(tm.bn.running_var), **TOL)


# --------------------------------------------------------------- LSTM / GRU ---

H = 12


class LinenStack(nn.Module):
    """Two bidirectional layers, named as torch's ``rnn`` module: ``rnn_0``, ``rnn_1``."""

    cell: type

    def setup(self):
        self.rnn = [nn.Bidirectional(nn.RNN(self.cell(H)), nn.RNN(self.cell(H))) for _ in range(2)]

    def __call__(self, x):
        for layer in self.rnn:
            x = layer(x)
        return x


class TorchStack(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = kind(5, H, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    "kind, cell", [(torch.nn.LSTM, ijl.LSTMCell), (torch.nn.GRU, ijl.GRUCell)], ids=["lstm", "gru"]
)
def test_recurrent_linen(tmp_path, kind, cell):
    tm = TorchStack(kind)
    fm = LinenStack(cell)
    x = RNG.standard_normal((3, 6, 5), np.float32)
    variables, layers = _linen(fm, tm, tmp_path, x)
    apply = jax.jit(fm.apply)  # compile the scans once, run twice
    np.testing.assert_allclose(apply(variables, x), _np(tm(torch.from_numpy(x))), **TOL)

    exported = port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    summed = [(k, k) for k in exported if "bias_ih" in k] if kind is torch.nn.LSTM else []
    if kind is torch.nn.GRU:  # r and z gates are summed; n keeps both biases apart
        for k in [k for k in exported if "bias_ih" in k]:
            hh = k.replace("bias_ih", "bias_hh")
            ref_ih, ref_hh = _np(tm.state_dict()[k]), _np(tm.state_dict()[hh])
            np.testing.assert_array_equal(exported[k][: 2 * H], ref_ih[: 2 * H] + ref_hh[: 2 * H])
            np.testing.assert_array_equal(exported[k][2 * H :], ref_ih[2 * H :])
            np.testing.assert_array_equal(exported[hh][2 * H :], ref_hh[2 * H :])
            assert not exported[hh][: 2 * H].any()
        summed = [(k, k) for k in exported if "bias_ih" in k]
    _assert_round_trip(tm, exported, summed)
    # torch runs the re-exported weights to the same outputs
    tm.load_state_dict(port.to_torch_tensors(exported))
    np.testing.assert_allclose(apply(variables, x), _np(tm(torch.from_numpy(x))), **TOL)
    again, _ = port.torch_to_linen(exported, variables, layers)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, variables)


def test_gru_nnx(tmp_path):
    tm = TorchStack(torch.nn.GRU)
    rngs = nnx.Rngs(0)

    class Stack(nnx.Module):
        def __init__(self):
            self.rnn = nnx.List(
                nnx.Bidirectional(
                    nnx.RNN(ijx.GRUCell(n, H, rngs=rngs)),
                    nnx.RNN(ijx.GRUCell(n, H, rngs=rngs)),
                    rngs=rngs,
                )
                for n in (5, 2 * H)
            )

        def __call__(self, x):
            for layer in self.rnn:
                x = layer(x)
            return x

    fm = Stack()
    assert port.torch_to_nnx(_save(tmp_path, tm), fm).ok
    x = RNG.standard_normal((3, 6, 5), np.float32)
    run = nnx.jit(lambda m, x: m(x))  # compile the scans once, run twice
    np.testing.assert_allclose(run(fm, x), _np(tm(torch.from_numpy(x))), **TOL)
    exported = port.nnx_to_torch(fm, torch_keys=tm.state_dict().keys())
    tm.load_state_dict(port.to_torch_tensors(exported))
    np.testing.assert_allclose(run(fm, x), _np(tm(torch.from_numpy(x))), **TOL)


# --------------------------------------------------------------- transformer ---

D, HEADS, FF = 16, 4, 32


class LinenEncoderLayer(nn.Module):
    """torch's TransformerEncoderLayer (post-norm, ReLU, no dropout), same names."""

    def setup(self):
        self.self_attn = ijl.MultiHeadDotProductAttention(num_heads=HEADS)
        self.linear1 = ijl.Dense(FF)
        self.linear2 = ijl.Dense(D)
        self.norm1 = ijl.LayerNorm()
        self.norm2 = ijl.LayerNorm()

    def __call__(self, x, mask):
        x = self.norm1(x + self.self_attn(x, mask=mask, deterministic=True))
        return self.norm2(x + self.linear2(nn.relu(self.linear1(x))))


class LinenEncoder(nn.Module):
    def setup(self):
        self.layers = [LinenEncoderLayer() for _ in range(2)]

    def __call__(self, x, keep):
        mask = nn.make_attention_mask(np.ones(x.shape[:2], bool), keep)  # True attends
        for layer in self.layers:
            x = layer(x, mask)
        return x


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_transformer_encoder_linen(tmp_path, train):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
    tm = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    for p in tm.parameters():  # the layers start as copies; make them differ
        torch.nn.init.normal_(p, std=0.3)
    fm = LinenEncoder()
    x = RNG.standard_normal((2, 5, D), np.float32)
    keep = np.ones((2, 5), bool)
    keep[1, 3:] = False  # torch: src_key_padding_mask=True blocks
    variables, layers = _linen(fm, tm, tmp_path, x, keep)
    tm.train(train)
    with torch.set_grad_enabled(train):  # eval + no_grad takes torch's fused fast path
        y_t = _np(tm(torch.from_numpy(x), src_key_padding_mask=torch.from_numpy(~keep)))
    np.testing.assert_allclose(fm.apply(variables, x, keep), y_t, **TOL)
    _assert_round_trip(
        tm, port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    )


# ----------------------------------------------------------------- embedding ---


def test_embedding_with_padding_idx(tmp_path):
    torch.manual_seed(0)
    tm = torch.nn.Embedding(10, 8, padding_idx=3)
    fm = ijl.Embed(10, 8, padding_idx=3)
    ids = np.array([[1, 3, 9], [3, 0, 2]])
    variables, layers = _linen(fm, tm, tmp_path, ids)
    np.testing.assert_array_equal(fm.apply(variables, ids), _np(tm(torch.from_numpy(ids))))
    assert not np.asarray(variables["params"]["embedding"][3]).any()
    _assert_round_trip(
        tm, port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    )
