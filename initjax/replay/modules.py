"""torch.nn modules' initial parameters, replayed in torch's drawing order.

Each function draws from a :class:`~initjax.replay.TorchGenerator` what
constructing the torch module draws, in the same order, and returns the
module's ``state_dict`` as numpy arrays in torch's layout, keys in torch's
``named_parameters`` order. They are the per-layer recipes behind
:func:`initjax.replay.torch_init`, usable on their own with
:func:`initjax.port.torch_to_nnx` / ``torch_to_linen``.

Modules that draw nothing (norms, PReLU, Dropout, activations) still occupy
their place in a model: skipping them changes nothing in the stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..functional.recurrent import MODES
from .generator import TorchGenerator
from .init import kaiming_uniform_, normal_, uniform_, xavier_normal_, xavier_uniform_
from .ops import DTypeLike, as_dtype

__all__ = [
    "linear",
    "conv",
    "embedding",
    "bilinear",
    "recurrent",
    "multihead_attention",
    "RECURRENT_GATES",
]

State = dict[str, np.ndarray]

#: Gate rows per hidden unit in torch's weight_ih/weight_hh, by mode.
#: Gates per recurrent mode (one description, in :mod:`initjax.functional.recurrent`).
RECURRENT_GATES = MODES

_LINEAR_SLOPE = math.sqrt(5)  # torch.nn.Linear/Conv's kaiming_uniform_(a=sqrt(5))


def _fan_in_bound(weight_shape: Sequence[int]) -> float:
    """``1/sqrt(fan_in)`` of a weight, 0 for an empty fan (torch's bias bound)."""
    fan_in = weight_shape[1] * math.prod(weight_shape[2:])
    return 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def _weight_and_bias(gen: TorchGenerator, weight_shape, bias_size: int | None, dtype) -> State:
    """``_ConvNd``/``Linear.reset_parameters``: kaiming_uniform_(a=sqrt(5)) on the
    weight, then the bias U(+-1/sqrt(fan_in)) with the weight's fan_in."""
    out = {"weight": kaiming_uniform_(gen, weight_shape, a=_LINEAR_SLOPE, dtype=dtype)}
    if bias_size is not None:
        bound = _fan_in_bound(weight_shape)
        out["bias"] = uniform_(gen, (bias_size,), -bound, bound, dtype=dtype)
    return out


def linear(
    gen: TorchGenerator,
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.Linear(in_features, out_features, bias)``: weight ``(out, in)``, then bias."""
    return _weight_and_bias(gen, (out_features, in_features), out_features if bias else None, dtype)


def conv(
    gen: TorchGenerator,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    groups: int = 1,
    bias: bool = True,
    *,
    transposed: bool = False,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.Conv{1,2,3}d`` (weight ``(out, in/groups, *k)``) or, with
    ``transposed``, ``ConvTranspose{1,2,3}d`` (weight ``(in, out/groups, *k)``).

    Both draw ``kaiming_uniform_(a=sqrt(5))`` on the weight and the bias from
    the weight's fan_in (for ConvTranspose ``out/groups * prod(k)``).
    """
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels={in_channels} and out_channels={out_channels} must be divisible "
            f"by groups={groups}"
        )
    k = tuple(kernel_size)
    if transposed:
        shape = (in_channels, out_channels // groups, *k)
    else:
        shape = (out_channels, in_channels // groups, *k)
    return _weight_and_bias(gen, shape, out_channels if bias else None, dtype)


def embedding(
    gen: TorchGenerator,
    num_embeddings: int,
    embedding_dim: int,
    padding_idx: int | None = None,
    *,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.Embedding``: N(0, 1) on ``(num, dim)``; the padding row's draws
    are made, then the row is zeroed."""
    weight = normal_(gen, (num_embeddings, embedding_dim), dtype=dtype)
    if padding_idx is not None:
        weight[padding_idx] = 0
    return {"weight": weight}


def bilinear(
    gen: TorchGenerator,
    in1_features: int,
    in2_features: int,
    out_features: int,
    bias: bool = True,
    *,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.Bilinear``: weight ``(out, in1, in2)`` and bias, both U(+-1/sqrt(in1))."""
    bound = 1 / math.sqrt(in1_features)
    out = {
        "weight": uniform_(
            gen, (out_features, in1_features, in2_features), -bound, bound, dtype=dtype
        )
    }
    if bias:
        out["bias"] = uniform_(gen, (out_features,), -bound, bound, dtype=dtype)
    return out


def recurrent(
    gen: TorchGenerator,
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    *,
    cell: bool = False,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.RNN/LSTM/GRU`` (or, with ``cell``, ``RNNCell/LSTMCell/GRUCell``).

    ``mode`` is "RNN_TANH", "RNN_RELU", "LSTM" or "GRU". Every parameter is
    U(+-1/sqrt(hidden_size)), drawn in registration order: for each layer,
    for each direction, ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``
    and ``weight_hr`` (LSTM with ``proj_size``). Keys as torch's:
    ``weight_ih_l0``, ``weight_hh_l1_reverse``, ... (cells: ``weight_ih``, ...).
    """
    if mode not in RECURRENT_GATES:
        raise ValueError(f"mode must be one of {tuple(RECURRENT_GATES)}, got {mode!r}")
    if proj_size and mode != "LSTM":
        raise ValueError("proj_size is only supported by LSTM")
    gates = RECURRENT_GATES[mode]
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    real_hidden = proj_size or hidden_size
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for layer in range(1 if cell else num_layers):
        for direction in range(1 if cell else 1 + bidirectional):
            suffix = "" if cell else f"_l{layer}" + ("_reverse" if direction else "")
            layer_in = input_size if layer == 0 else real_hidden * (1 + bidirectional)
            shapes.append((f"weight_ih{suffix}", (gates * hidden_size, layer_in)))
            shapes.append((f"weight_hh{suffix}", (gates * hidden_size, real_hidden)))
            if bias:
                shapes.append((f"bias_ih{suffix}", (gates * hidden_size,)))
                shapes.append((f"bias_hh{suffix}", (gates * hidden_size,)))
            if proj_size:
                shapes.append((f"weight_hr{suffix}", (proj_size, hidden_size)))
    return {name: uniform_(gen, shape, -bound, bound, dtype=dtype) for name, shape in shapes}


def multihead_attention(
    gen: TorchGenerator,
    embed_dim: int,
    num_heads: int,
    bias: bool = True,
    add_bias_kv: bool = False,
    kdim: int | None = None,
    vdim: int | None = None,
    *,
    dtype: DTypeLike = np.float32,
) -> State:
    """``torch.nn.MultiheadAttention``.

    Draw order: ``out_proj`` is a Linear built in ``__init__``, so its weight
    and bias (later zeroed) come first; then ``xavier_uniform_`` on the fused
    ``in_proj_weight (3E, E)``, or on ``q/k/v_proj_weight`` in turn when kdim
    or vdim differ from E; then, with ``add_bias_kv``, ``xavier_normal_`` on
    ``bias_k`` and ``bias_v`` ``(1, 1, E)``. The in/out biases are zero.
    """
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    dt = as_dtype(dtype)
    kdim = embed_dim if kdim is None else kdim
    vdim = embed_dim if vdim is None else vdim
    out_proj = linear(gen, embed_dim, embed_dim, bias, dtype=dt)
    state: State = {}
    if kdim == embed_dim and vdim == embed_dim:
        state["in_proj_weight"] = xavier_uniform_(gen, (3 * embed_dim, embed_dim), dtype=dt)
    else:
        for name, width in (("q", embed_dim), ("k", kdim), ("v", vdim)):
            state[f"{name}_proj_weight"] = xavier_uniform_(gen, (embed_dim, width), dtype=dt)
    if bias:
        state["in_proj_bias"] = np.zeros(3 * embed_dim, dt)
    if add_bias_kv:
        state["bias_k"] = xavier_normal_(gen, (1, 1, embed_dim), dtype=dt)
        state["bias_v"] = xavier_normal_(gen, (1, 1, embed_dim), dtype=dt)
    state["out_proj.weight"] = out_proj["weight"]
    if bias:
        state["out_proj.bias"] = np.zeros(embed_dim, dt)
    return state
