"""torch's MultiheadAttention and Transformer modules against live torch.

Every case builds the torch module, ports its state_dict into the Flax module
(no ``rename``; the reverse port must give the state_dict back bit for bit),
then compares under ``jax.jit``, float32:

- forward in torch's training mode with dropout 0 (``F.multi_head_attention_forward``,
  python layers) and in ``eval()`` under ``no_grad`` (the fused fast path where
  torch's conditions hold: batch_first, self-attention, even heads), <= 1e-5;
- gradients of ``sum(out * cotangent)`` w.r.t. every parameter and input, <= 1e-4.

The grid is a covering subset of the issue's product (each row names what it
covers; linen and nnx alternate, sharing one implementation): batch_first
both, norm_first both, relu/gelu/callable, bool and float masks (2-D and 3-D
per head), key padding with fully padded rows, causal hints, kdim/vdim != E,
add_bias_kv, add_zero_attn, need_weights with and without averaging,
unbatched input, encoder/decoder stacks with a final norm, nn.Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import initjax.linen as L
import initjax.nnx as X
from initjax import port, replay

FWD, GRAD = 1e-5, 1e-4
QUICK = {"xla_backend_optimization_level": 0}
E, H, FF = 8, 2, 16
N, T, S = 2, 5, 4  # batch, target length, source length


def _close(got, want, tol, what, equal_nan=False):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if equal_nan:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        got, want = np.nan_to_num(got), np.nan_to_num(want)
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= tol, f"{what}: max |diff| {err:.2e} > {tol:.0e}"


def _t(x):
    return None if x is None else torch.from_numpy(np.asarray(x))


# --------------------------------------------------------------- harness ---


@dataclass
class Built:
    """A Flax module with the torch module's parameters, as one pure function."""

    apply: Any  # (params, *args) -> output
    params: Any
    from_torch: Any  # {torch key: array} -> a tree shaped like params (e.g. torch's grads)
    to_torch: Any  # params-shaped tree -> {torch key: array} (the reverse port)


def _linen(module, sd, args, kwargs, deterministic):
    init_kw = {**kwargs, "deterministic": True}  # initializing draws no dropout
    layers = port.linen_layers(module, *args, **init_kw)
    abstract = jax.eval_shape(lambda k: module.init(k, *args, **init_kw), jax.random.key(0))

    def from_torch(tensors):
        variables, report = port.torch_to_linen(tensors, abstract, layers)
        assert report.ok, report.describe()
        return variables["params"]

    def to_torch(tree):
        return port.linen_to_torch({"params": tree}, layers, torch_keys=sd.keys())

    def apply(params, *a):
        return module.apply({"params": params}, *a, **kwargs, deterministic=deterministic)

    return Built(apply, from_torch(sd), from_torch, to_torch)


def _nnx(model, sd, kwargs, deterministic):
    def from_torch(tensors):
        report = port.torch_to_nnx(tensors, model)
        assert report.ok, report.describe()
        return nnx.state(model, nnx.Param)

    params = from_torch(sd)
    if deterministic:
        model.eval()
    graph, _, rest = nnx.split(model, nnx.Param, ...)

    def apply(p, *a):
        return nnx.merge(graph, p, rest)(*a, **kwargs)

    def to_torch(tree):
        copy = nnx.merge(graph, params, rest)
        nnx.update(copy, tree)
        return port.nnx_to_torch(copy, torch_keys=sd.keys())

    return Built(apply, params, from_torch, to_torch)


def _state(torch_module):
    return {k: v.detach().numpy().copy() for k, v in torch_module.state_dict().items()}


def _check(built: Built, torch_module, args, kwargs, *, grads=True, rows=None, nan=False):
    """Forward and gradients of the Flax module against ``torch_module(*args, **kwargs)``,
    in one compiled function (``jax.vjp`` under ``jax.jit``).

    ``rows``: a boolean index of the output positions to compare (torch's eval
    path writes 0 at padded positions); ``nan``: NaN where torch has NaN (no
    gradients then); ``grads=False``: torch runs under ``no_grad`` (its eval fast path).
    """
    targs = [_t(a).requires_grad_(grads) if isinstance(a, np.ndarray) else a for a in args]
    tkw = {k: _t(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with torch.set_grad_enabled(grads):
        out = torch_module(*targs, **tkw)
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    rng = np.random.default_rng(1)
    cots = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    jargs = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    floats = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]

    backward = grads and not nan

    def run(params, fl, cots):
        def f(params, fl):
            a = list(jargs)
            for i, x in zip(floats, fl, strict=True):
                a[i] = x
            res = built.apply(params, *a)
            return [o for o in (res if isinstance(res, tuple) else (res,)) if o is not None]

        if not backward:
            return f(params, fl), (None, None)
        res, vjp = jax.vjp(f, params, fl)
        return res, vjp(cots)

    inputs = [jargs[i] for i in floats]
    # XLA's backend optimizations off: a third less compile time, same numbers to ~1 ulp
    compiled = jax.jit(run).lower(built.params, inputs, cots).compile(QUICK)
    got, (gparams, ginputs) = compiled(built.params, inputs, cots)
    assert len(got) == len(outs)
    for i, (g, w) in enumerate(zip(got, outs, strict=True)):
        g, w = np.asarray(g), w.detach().numpy()
        if rows is not None and i == 0:
            g, w = g[rows], w[rows]
        _close(g, w, FWD, f"output {i}", equal_nan=nan)
    if not backward:
        return
    loss = sum((o * _t(c)).sum() for o, c in zip(outs, cots, strict=True))
    loss.backward()
    want = built.from_torch({k: p.grad.numpy() for k, p in torch_module.named_parameters()})
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(gparams), jax.tree.leaves(want), strict=True
    ):
        _close(g, w, GRAD, f"grad {jax.tree_util.keystr(path)}")
    for i, g in zip(floats, ginputs, strict=True):
        _close(g, targs[i].grad.numpy(), GRAD, f"grad of input {i}")


def _round_trip(built: Built, torch_module):
    """The reverse port gives torch's state_dict back, bit for bit, under torch's keys."""
    sd = _state(torch_module)
    back = built.to_torch(built.params)
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


# ----------------------------------------------------------------- masks ---

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _bool(*shape, p=0.3):
    m = RNG.random(shape) < p
    m[..., 0] = False  # every row keeps a key unless asked otherwise
    return m


def _float(*shape):
    return np.where(_bool(*shape), -1e4, RNG.standard_normal(shape)).astype(np.float32)


def _causal(n, m=None):
    return np.asarray(L.generate_square_subsequent_mask(n))[:, : m or n]


# ------------------------------------------------------------ attention ---


@dataclass
class MHA:
    ctor: dict = field(default_factory=dict)
    call: dict = field(default_factory=dict)
    unbatched: bool = False
    nan: bool = False


def _kpm_full_row():
    m = _bool(N, S)
    m[1] = True  # batch entry 1: every key padded
    return m


MHA_CASES = {
    "seq-first, bool 2-D attn_mask + bool kpm, averaged weights": MHA(
        call=dict(attn_mask=_bool(T, S), key_padding_mask=_bool(N, S))
    ),
    "batch-first, float 3-D per-head mask, per-head weights": MHA(
        ctor=dict(batch_first=True),
        call=dict(attn_mask=_float(N * H, T, S), average_attn_weights=False),
    ),
    "kdim/vdim != E, add_bias_kv, add_zero_attn, fully padded row": MHA(
        ctor=dict(kdim=5, vdim=3, add_bias_kv=True, add_zero_attn=True),
        call=dict(key_padding_mask=_kpm_full_row()),
    ),
    "unbatched, bias=False, 3-D (H, L, S) bool mask, 1-D float kpm": MHA(
        ctor=dict(bias=False),
        call=dict(attn_mask=_bool(H, T, S), key_padding_mask=_float(S)),
        unbatched=True,
    ),
    "is_causal hint, need_weights=False": MHA(
        ctor=dict(batch_first=True),
        call=dict(attn_mask=_causal(T, S), is_causal=True, need_weights=False),
    ),
    "fully padded row, need_weights=True: NaN as torch": MHA(
        call=dict(key_padding_mask=_kpm_full_row()), nan=True
    ),
    "fully padded row, need_weights=False; causal hint with kpm (mask used)": MHA(
        call=dict(
            key_padding_mask=_kpm_full_row(),
            attn_mask=_bool(T, S),
            is_causal=True,
            need_weights=False,
        )
    ),
}


@pytest.mark.parametrize("name", list(MHA_CASES))
def test_multihead_attention_matches_torch(name):
    case = MHA_CASES[name]
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(E, H, **case.ctor)
    bf = case.ctor.get("batch_first", False)
    lead = () if case.unbatched else ((N,) if bf else ())
    trail = () if case.unbatched else (() if bf else (N,))
    kd, vd = case.ctor.get("kdim", E), case.ctor.get("vdim", E)
    args = [_x(*lead, T, *trail, E), _x(*lead, S, *trail, kd), _x(*lead, S, *trail, vd)]
    sd = _state(tm)
    kwargs = case.call
    if list(MHA_CASES).index(name) % 2:
        model = X.TorchMultiheadAttention(E, H, **case.ctor, rngs=nnx.Rngs(0))
        built = _nnx(model, sd, kwargs, False)
    else:
        model = L.TorchMultiheadAttention(E, H, **case.ctor)
        built = _linen(model, sd, [jnp.asarray(a) for a in args], kwargs, None)
    _check(built, tm, args, kwargs, grads=not case.nan, nan=case.nan)


@pytest.mark.parametrize("flavor", ["nnx"])
def test_multihead_attention_eval_fast_path(flavor):
    """torch's eval fast path (``_native_multi_head_attention``): self-attention,
    batch_first, even heads, no grad; bool key padding, averaged weights."""
    torch.manual_seed(1)
    tm = torch.nn.MultiheadAttention(E, H, dropout=0.25, batch_first=True).eval()
    x = _x(N, T, E)
    kwargs = dict(key_padding_mask=_bool(N, T))
    sd = _state(tm)
    if flavor == "nnx":
        built = _nnx(
            X.TorchMultiheadAttention(E, H, 0.25, batch_first=True, rngs=nnx.Rngs(0)),
            sd,
            kwargs,
            True,
        )
    else:
        model = L.TorchMultiheadAttention(E, H, 0.25, batch_first=True)
        built = _linen(model, sd, [jnp.asarray(x)] * 3, kwargs, True)
    with torch.no_grad():
        tx = _t(x)
        want = tm(tx, tx, tx, **{k: _t(v) for k, v in kwargs.items()})
    got = jax.jit(built.apply)(built.params, x, x, x)
    for g, w in zip(got, want, strict=True):
        _close(g, w.numpy(), FWD, "eval output")


# ------------------------------------------------------- layers and stacks ---

TORCH_ACT = {"relu": "relu", "gelu": "gelu", "tanh": torch.tanh}
JAX_ACT = {"relu": "relu", "gelu": "gelu", "tanh": jnp.tanh}  # "tanh": a callable


def _build(kind: str, flavor: str, ctor: dict, dropout: float):
    """The torch module and its Flax twin (same constructor arguments)."""
    act = ctor.get("activation", "relu")
    tk, jk = {**ctor, "activation": TORCH_ACT[act]}, {**ctor, "activation": JAX_ACT[act]}
    bias = ctor.get("bias", True)
    r = nnx.Rngs(0)
    F = L if flavor == "linen" else X
    extra = {} if flavor == "linen" else {"rngs": r}
    torch.manual_seed(0)
    if kind == "transformer":
        tm = torch.nn.Transformer(E, H, 1, 1, FF, dropout, **tk)
        return tm, F.Transformer(E, H, 1, 1, FF, dropout, **jk, **extra)
    layer_t = (
        torch.nn.TransformerEncoderLayer if "enc" in kind else torch.nn.TransformerDecoderLayer
    )
    layer_j = F.TransformerEncoderLayer if "enc" in kind else F.TransformerDecoderLayer
    tl, jl = layer_t(E, H, FF, dropout, **tk), layer_j(E, H, FF, dropout, **jk, **extra)
    if kind.endswith("layer"):
        return tl, jl
    stack_t = torch.nn.TransformerEncoder if "enc" in kind else torch.nn.TransformerDecoder
    stack_j = F.TransformerEncoder if "enc" in kind else F.TransformerDecoder
    norm_j = (
        L.LayerNorm(use_bias=bias) if flavor == "linen" else X.LayerNorm(E, use_bias=bias, rngs=r)
    )
    return stack_t(tl, 2, torch.nn.LayerNorm(E, bias=bias)), stack_j(jl, 2, norm_j)


def _inputs(kind: str, ctor: dict, unbatched: bool):
    bf = ctor.get("batch_first", False)

    def seq(length):
        if unbatched:
            return _x(length, E)
        return _x(N, length, E) if bf else _x(length, N, E)

    if kind.startswith("enc"):
        return [seq(T)]
    return [seq(S), seq(T)] if kind == "transformer" else [seq(T), seq(S)]


@dataclass
class Layer:
    kind: str
    flavor: str
    ctor: dict = field(default_factory=dict)
    call: dict = field(default_factory=dict)
    unbatched: bool = False
    #: also compare with torch's eval() (where its fast path applies)
    eval: bool = False
    #: compare gradients too (train mode)
    grads: bool = True
    #: eval: compare only positions that are not padded (torch's nested-tensor path)
    eval_rows: Any = None


_FULL_ROW_T = _bool(N, T)
_FULL_ROW_T[1] = True
_SRC_PAD = _bool(N, S)

LAYER_CASES = {
    "encoder layer: batch-first, post-norm, relu, bool masks": Layer(
        "enc_layer",
        "linen",
        dict(batch_first=True),
        dict(src_mask=_bool(T, T), src_key_padding_mask=_bool(N, T)),
        eval=True,
    ),
    "encoder layer: seq-first, pre-norm, gelu, float mask": Layer(
        "enc_layer", "nnx", dict(norm_first=True, activation="gelu"), dict(src_mask=_float(T, T))
    ),
    "encoder layer: callable activation, causal hint, unbatched": Layer(
        "enc_layer",
        "linen",
        dict(activation="tanh"),
        dict(src_mask=_causal(T), is_causal=True),
        unbatched=True,
    ),
    "decoder layer: batch-first, causal tgt, tgt and memory kpm": Layer(
        "dec_layer",
        "nnx",
        dict(batch_first=True),
        dict(
            tgt_mask=_causal(T),
            tgt_is_causal=True,
            tgt_key_padding_mask=_bool(N, T),
            memory_key_padding_mask=_bool(N, S),
        ),
    ),
    "decoder layer: pre-norm, gelu, float memory mask, unbatched": Layer(
        "dec_layer",
        "linen",
        dict(norm_first=True, activation="gelu"),
        dict(memory_mask=_float(T, S)),
        unbatched=True,
    ),
    "encoder x2 + norm: fully padded row (torch eval: nested tensors)": Layer(
        "encoder",
        "nnx",
        dict(batch_first=True),
        dict(src_key_padding_mask=_FULL_ROW_T),
        eval=True,
        eval_rows=~_FULL_ROW_T,
    ),
    "decoder x2 + norm: bias=False, pre-norm, masks": Layer(
        "decoder",
        "linen",
        dict(bias=False, norm_first=True),
        dict(tgt_mask=_causal(T), memory_key_padding_mask=_bool(N, S)),
    ),
    "nn.Transformer: batch-first, src/tgt/memory masks": Layer(
        "transformer",
        "nnx",
        dict(batch_first=True),
        dict(
            src_key_padding_mask=_SRC_PAD,
            tgt_mask=_causal(T),
            memory_key_padding_mask=_SRC_PAD,  # as usual: torch's eval zeroes padded memory
        ),
        eval=True,
    ),
    "nn.Transformer: seq-first, pre-norm, gelu": Layer(
        "transformer",
        "linen",
        dict(norm_first=True, activation="gelu"),
        dict(src_mask=_bool(S, S), tgt_key_padding_mask=_bool(N, T)),
        grads=False,  # linen's gradients: the layer and stack rows
    ),
}


def _flax(case: Layer, jm, sd, args, deterministic):
    if case.flavor == "linen":
        return _linen(jm, sd, [jnp.asarray(a) for a in args], case.call, deterministic)
    return _nnx(jm, sd, case.call, deterministic)


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_layers_match_torch(name):
    """Train mode (dropout 0): forward and gradients; where torch's eval() takes its
    fast path (batch-first encoders), also eval (dropout 0.1, ``no_grad``): forward."""
    case = LAYER_CASES[name]
    args = _inputs(case.kind, case.ctor, case.unbatched)
    tm, jm = _build(case.kind, case.flavor, case.ctor, 0.0)
    built = _flax(case, jm, _state(tm), args, None)
    _check(built, tm.train(), args, case.call, grads=case.grads)

    if not case.eval:
        return
    tm, jm = _build(case.kind, case.flavor, case.ctor, 0.1)
    built = _flax(case, jm, _state(tm), args, True)
    _check(built, tm.eval(), args, case.call, grads=False, rows=case.eval_rows)
    if case.eval_rows is not None:  # the documented difference: torch's eval writes 0 there
        with torch.no_grad():
            out = tm(*[_t(a) for a in args], **{k: _t(v) for k, v in case.call.items()})
        assert np.all(out.numpy()[~case.eval_rows] == 0)


# ------------------------------------------------------------ port, init ---


@pytest.mark.parametrize(
    "flavor, make",
    [
        ("nnx", lambda: torch.nn.MultiheadAttention(E, H, add_bias_kv=True, kdim=5, vdim=3)),
        ("linen", lambda: torch.nn.Transformer(E, H, 2, 1, FF, 0.0)),
    ],
)
def test_port_round_trip_is_bit_exact(flavor, make):
    """torch's own keys, no rename, both ways; torch -> Flax -> torch is the identity."""
    torch.manual_seed(0)
    tm = make()
    if isinstance(tm, torch.nn.Transformer):
        case = Layer("transformer", flavor)
        jm = L.Transformer(E, H, 2, 1, FF, 0.0)
        args = _inputs("transformer", {}, False)
        built = _flax(case, jm, _state(tm), args, None)
    else:
        jm = X.TorchMultiheadAttention(E, H, add_bias_kv=True, kdim=5, vdim=3, rngs=nnx.Rngs(0))
        built = _nnx(jm, _state(tm), {}, False)
    _round_trip(built, tm)


def _torch_keys_equal(sd, out):
    assert sorted(out) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(out[k], sd[k], err_msg=k)


@pytest.mark.parametrize("flavor", ["linen", "nnx"])
def test_replay_is_bit_exact(flavor):
    """``torch.manual_seed(s); nn.Transformer(...)`` (copies, then the xavier re-draw),
    ``nn.TransformerEncoder`` (copies) and MultiheadAttention(add_bias_kv, kdim, vdim),
    replayed with no hints: every tensor equal bit for bit."""
    x = jnp.zeros((T, N, E))
    torch.manual_seed(3)
    tt = torch.nn.Transformer(E, H, 2, 2, FF, 0.0)
    torch.manual_seed(4)
    te = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(E, H, FF), 3)
    torch.manual_seed(5)
    ta = torch.nn.MultiheadAttention(12, 3, add_bias_kv=True, kdim=5, vdim=7)
    if flavor == "nnx":
        r = nnx.Rngs(0)
        pairs = [
            (tt, X.Transformer(E, H, 2, 2, FF, 0.0, rngs=r), 3),
            (te, X.TransformerEncoder(X.TransformerEncoderLayer(E, H, FF, rngs=r), 3), 4),
            (ta, X.TorchMultiheadAttention(12, 3, add_bias_kv=True, kdim=5, vdim=7, rngs=r), 5),
        ]
        for tm, jm, seed in pairs:
            replay.torch_init(jm, seed)
            _torch_keys_equal(_state(tm), port.nnx_to_torch(jm, torch_keys=tm.state_dict()))
        return
    y = jnp.zeros((S, N, 12))
    pairs = [
        (tt, L.Transformer(E, H, 2, 2, FF, 0.0), 3, (x, x)),
        (te, L.TransformerEncoder(L.TransformerEncoderLayer(E, H, FF, 0.0), 3), 4, (x,)),
        (
            ta,
            L.TorchMultiheadAttention(12, 3, add_bias_kv=True, kdim=5, vdim=7),
            5,
            (y, y[..., :5], y[..., :7]),
        ),
    ]
    for tm, jm, seed, args in pairs:
        v = replay.torch_variables(jm, seed, *args)
        layers = port.linen_layers(jm, *args)
        _torch_keys_equal(_state(tm), port.linen_to_torch(v, layers, torch_keys=tm.state_dict()))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_init_copies_and_xavier_redraw():
    """Stacks start as copies of one layer; nn.Transformer re-draws every weight
    matrix per layer with xavier_uniform (U(+-sqrt(6/(in+out)))), biases stay copies."""
    from tests._stats import assert_uniform

    d, f = 32, 128
    x = jnp.zeros((3, 2, d))
    enc = L.TransformerEncoder(L.TransformerEncoderLayer(d, 4, f, 0.0), 3)
    p = enc.init(jax.random.key(0), x)["params"]
    xenc = X.TransformerEncoder(X.TransformerEncoderLayer(d, 4, f, rngs=nnx.Rngs(0)), 3)
    xp = nnx.to_pure_dict(nnx.state(xenc, nnx.Param))
    for first, other in [(p["layers_0"], p["layers_2"]), (xp["layers"][0], xp["layers"][2])]:
        for a, b in zip(_leaves(first), _leaves(other), strict=True):
            np.testing.assert_array_equal(a, b)

    lt = L.Transformer(d, 4, 2, 1, f, 0.0).init(jax.random.key(1), x, x)["params"]
    xt = X.Transformer(d, 4, 2, 1, f, 0.0, rngs=nnx.Rngs(1))
    xtp = nnx.to_pure_dict(nnx.state(xt.encoder, nnx.Param))
    bound = float(np.sqrt(6 / (d + f)))
    for l0, l1 in [(lt["encoder"]["layers_0"], lt["encoder"]["layers_1"]), xtp["layers"].values()]:
        assert not np.array_equal(l0["linear1"]["kernel"], l1["linear1"]["kernel"])
        np.testing.assert_array_equal(l0["linear1"]["bias"], l1["linear1"]["bias"])
        w = np.concatenate([np.ravel(x["linear1"]["kernel"]) for x in (l0, l1)])
        assert_uniform(w, -bound, bound, "xavier linear1")
        out = np.ravel(l0["self_attn"]["out"]["kernel"])
        assert_uniform(out, -np.sqrt(3 / d), np.sqrt(3 / d), "xavier out_proj")
        qkv = np.ravel(l0["self_attn"]["query"]["kernel"])
        assert_uniform(qkv, -np.sqrt(6 / (4 * d)), np.sqrt(6 / (4 * d)), "fused in_proj")


# ------------------------------------------------- jit, metadata, errors ---


def test_logical_axes_on_every_parameter():
    x = jnp.zeros((T, N, E))
    model = L.TransformerEncoderLayer(E, H, FF, 0.0, logical_axes=True)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    specs = jax.tree.leaves(
        nn.get_partition_spec(variables),
        is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec),
    )
    assert specs and all(len(s) > 0 for s in specs)
    assert set(n for s in specs for n in s) == {"embed", "heads", "head_dim", "mlp"}
    rules = [("embed", None), ("heads", None), ("head_dim", None), ("mlp", None)]
    mesh = jax.make_mesh((1,), ("model",))
    with nn.logical_axis_rules(rules):
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh)
    params = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), x)
    assert jax.jit(model.apply)(params, x).shape == x.shape

    xm = X.TransformerEncoderLayer(E, H, FF, 0.0, logical_axes=True, rngs=nnx.Rngs(0))
    xspecs = jax.tree.leaves(
        nnx.get_partition_spec(nnx.state(xm, nnx.Param)),
        is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec),
    )
    assert len(xspecs) == len(specs) and all(len(s) > 0 for s in xspecs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: X.TorchMultiheadAttention(10, 3, rngs=nnx.Rngs(0)), "divisible"),
        (lambda: X.TransformerEncoderLayer(8, 2, activation="swish", rngs=nnx.Rngs(0)), "swish"),
        (lambda: X.TransformerEncoderLayer(8, 2, dropout=1.5, rngs=nnx.Rngs(0)), "1.5"),
        (
            lambda: L.TransformerEncoder(L.TransformerEncoderLayer(8, 2), 0).init(
                jax.random.key(0), jnp.zeros((2, 8))
            ),
            "num_layers",
        ),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls_raise():
    m = X.TorchMultiheadAttention(E, H, rngs=nnx.Rngs(0))
    x = jnp.zeros((T, N, E))
    with pytest.raises(ValueError, match="is_causal"):
        m(x, x, x, is_causal=True)
    with pytest.raises(TypeError, match="int32"):
        m(x, x, x, key_padding_mask=jnp.zeros((N, T), jnp.int32))
    with pytest.raises(ValueError, match="2D attn_mask"):
        m(x, x, x, attn_mask=jnp.zeros((T, T + 1), bool))
    with pytest.raises(ValueError, match="batch number"):
        X.Transformer(E, H, 1, 1, FF, rngs=nnx.Rngs(0))(x, jnp.zeros((T, N + 1, E)))
