"""PyTorch module defaults as initializers for Flax's parameter layouts.

Each factory is named after the ``torch.nn`` module whose default it
reproduces and returns a plain :class:`jax.nn.initializers.Initializer` for the
Flax layout of that parameter. A Flax bias initializer sees only the bias
shape, so bias factories take the ``fan_in`` torch would use.

The numeric constants at the bottom are torch's non-initialization defaults
(norm epsilons, BatchNorm momentum, PReLU slope) that the drop-in layers share.

=====================  =====================================  ===================================
torch module           torch default                          initjax (Flax layout)
=====================  =====================================  ===================================
Linear, Conv1d/2d/3d   kaiming_uniform_(a=sqrt(5)),           ``linear_kernel``/``conv_kernel``,
                       bias U(+-k), k = 1/sqrt(fan_in)        ``linear_bias``/``conv_bias``
ConvTranspose1d/2d/3d  the same on weight (in, out/g, *k):    ``conv_transpose_kernel(groups)``,
                       fan_in = out/g * prod(k)               ``conv_transpose_bias(fan_in)``
Embedding              N(0, 1), padding row 0                 ``embedding(padding_idx)``
RNN/LSTM/GRU (+Cell)   every parameter U(+-1/sqrt(hidden))    ``rnn_uniform``, ``rnn_bias``
Bilinear               weight and bias U(+-1/sqrt(in1))       ``bilinear(in1_features)``
MultiheadAttention     xavier_uniform_ on fused (3E, E),      ``mha_in_proj(embed_dim)``,
                       out_proj Linear default, biases 0      ``linear_kernel``, ``zeros``
=====================  =====================================  ===================================
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
from jax.nn.initializers import Initializer

from . import _limits as L
from . import _sampling as S
from .fans import Axes, canonical_shape, compute_fans
from .gain import calculate_gain
from .init import (
    SQRT3,
    kaiming_std,
    kaiming_uniform,
    normal,
    uniform,
    xavier_std,
    xavier_uniform,
    zeros,
)

__all__ = [
    "linear_kernel",
    "linear_bias",
    "conv_kernel",
    "conv_bias",
    "conv_transpose_kernel",
    "conv_transpose_bias",
    "embedding",
    "rnn_uniform",
    "rnn_bias",
    "bilinear",
    "mha_in_proj",
    "mha_bias_kv",
    "multihead_attention",
    "LAYER_NORM_EPS",
    "GROUP_NORM_EPS",
    "BATCH_NORM_EPS",
    "BATCH_NORM_MOMENTUM",
    "RMS_NORM_EPS",
    "PRELU_INIT",
]

DTypeLike = Any

#: The slope torch's Linear/Conv pass to kaiming_uniform_: gain sqrt(1/3).
LINEAR_SLOPE = math.sqrt(5)

#: torch.nn.LayerNorm's eps (Flax: 1e-6).
LAYER_NORM_EPS = 1e-5
#: torch.nn.GroupNorm's eps (Flax: 1e-6).
GROUP_NORM_EPS = 1e-5
#: torch.nn.BatchNorm*'s eps (Flax: 1e-5 too).
BATCH_NORM_EPS = 1e-5
#: torch.nn.BatchNorm*'s momentum: the weight of the *new* batch statistic.
#: Flax's momentum is the weight of the old value: ``1 - BATCH_NORM_MOMENTUM``.
BATCH_NORM_MOMENTUM = 0.1
#: torch.nn.RMSNorm's eps=None for float32, float16 and bfloat16 inputs: float32's epsilon
#: (float64 inputs use float64's). Flax: 1e-6.
RMS_NORM_EPS = 1.1920928955078125e-07  # numpy.finfo(numpy.float32).eps, exactly 2**-23
#: torch.nn.PReLU's initial slope (Flax: 0.01).
PRELU_INIT = 0.25


def _count(value: Any, name: str, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < positive:
        allowed = "a positive int" if positive else "an int >= 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def linear_kernel(
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: DTypeLike | None = None,
) -> Initializer:
    """``torch.nn.Linear``'s weight on Flax's ``(in, out)`` kernel: U(+-1/sqrt(fan_in)).

    torch: ``kaiming_uniform_(weight, a=math.sqrt(5))``; the gain sqrt(1/3)
    cancels the uniform's sqrt(3). Also right for DenseGeneral kernels given
    their ``in_axis``/``out_axis``; ``batch_axis`` names axes that index
    independent Linears (they count in no fan).
    """
    return kaiming_uniform(
        LINEAR_SLOPE, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis, dtype=dtype
    )


def linear_bias(fan_in: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.Linear``'s bias: U(+-1/sqrt(fan_in)), all zeros when ``fan_in`` is 0.

    torch: ``init.uniform_(bias, -bound, bound)``, ``bound = 1 / math.sqrt(fan_in)``.
    """
    fan_in = _count(fan_in, "fan_in")
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound, dtype=dtype)


def conv_kernel(*, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.Conv1d/2d/3d``'s weight on Flax's ``(*k, in/groups, out)`` kernel.

    U(+-1/sqrt(fan_in)) with ``fan_in = in/groups * prod(k)``: torch's weight
    ``(out, in/groups, *k)`` holds the same fan. torch:
    ``kaiming_uniform_(weight, a=math.sqrt(5))``.
    """
    return linear_kernel(dtype=dtype)


def conv_bias(fan_in: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.Conv*``'s bias: U(+-1/sqrt(fan_in)), ``fan_in = in/groups * prod(k)``."""
    return linear_bias(fan_in, dtype=dtype)


def conv_transpose_kernel(
    groups: int = 1, *, transpose_kernel: bool = False, dtype: DTypeLike | None = None
) -> Initializer:
    """``torch.nn.ConvTranspose1d/2d/3d``'s weight on Flax's ConvTranspose kernel.

    torch's weight is ``(in, out/groups, *k)`` and torch reads its fan_in from
    axis 1, so the bound is ``1/sqrt(out/groups * prod(k))``: set by the
    *output* channels (the "ConvTranspose quirk").

    Layouts (Flax's, plus groups, which Flax lacks):

    - ``transpose_kernel=False`` (Flax's default): ``(*k, in/groups, out)``;
      the bound uses ``out * prod(k) / groups``.
    - ``transpose_kernel=True``: ``(*k, out/groups, in)``, the forward-conv
      kernel whose transpose is applied; the bound uses ``out/groups * prod(k)``,
      its fan_in.
    """
    groups = _count(groups, "groups", positive=True)
    if transpose_kernel:
        return kaiming_uniform(LINEAR_SLOPE, "fan_in", dtype=dtype)
    gain = calculate_gain("leaky_relu", LINEAR_SLOPE)
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape = canonical_shape(shape)
        dtype = S.call_dtype(dtype, default, "conv_transpose_kernel", floating=True)
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)
        _, fan_out = compute_fans(shape)
        if fan_out % groups:
            raise ValueError(f"out_axis size of {shape} must be divisible by groups={groups}")
        bound = SQRT3 * kaiming_std(fan_out // groups, gain)
        L.check_uniform(
            dtype, "conv_transpose_kernel", -bound, bound, S.compute_dtype(dtype), bound=True
        )
        return S.uniform(key, shape, dtype, -bound, bound, out_sharding)

    return init


def conv_transpose_bias(fan_in: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.ConvTranspose*``'s bias: U(+-1/sqrt(fan_in)).

    ``fan_in = out/groups * prod(k)``.
    """
    return linear_bias(fan_in, dtype=dtype)


def embedding(padding_idx: int | None = None, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.Embedding``'s weight on ``(num_embeddings, features)``: N(0, 1).

    Row ``padding_idx`` is zero (negative indices count from the end, as in
    torch). Flax's ``Embed`` default is N(0, 1/features) instead. Raises
    ``ValueError`` for a ``padding_idx`` outside ``[-num, num)`` (torch:
    ``AssertionError``).
    """
    if padding_idx is not None and (
        isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral)
    ):
        raise ValueError(f"padding_idx must be an int or None, got {padding_idx!r}")
    standard = normal(0.0, 1.0, dtype=dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape = canonical_shape(shape)
        w = standard(key, shape, dtype, out_sharding)
        if padding_idx is None:
            return w
        if len(shape) != 2 or not -shape[0] <= padding_idx < shape[0]:
            raise ValueError(
                f"padding_idx={padding_idx} must be within num_embeddings for shape {shape}"
            )
        return w.at[padding_idx].set(0)

    return init


def _rnn_bound(hidden_size: int) -> float:
    hidden_size = _count(hidden_size, "hidden_size")
    return 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0


def rnn_uniform(hidden_size: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """Every ``torch.nn.RNN/LSTM/GRU`` (and ``*Cell``) parameter: U(+-1/sqrt(hidden_size)).

    Not fan-based: input kernels use the hidden size too. torch:
    ``init.uniform_(w, -stdv, stdv)`` with ``stdv = 1.0 / math.sqrt(hidden_size)``.
    """
    bound = _rnn_bound(hidden_size)
    return uniform(-bound, bound, dtype=dtype)


def rnn_bias(hidden_size: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """One Flax cell bias standing for torch's ``bias_ih + bias_hh``.

    torch keeps two biases per gate, each U(+-k), ``k = 1/sqrt(hidden_size)``;
    a Flax cell adds one, so its faithful initial value is their sum: a
    triangular distribution on [-2k, 2k] with std ``k * sqrt(2/3)``. Summed at
    float32/float64 precision, then rounded once.
    """
    one = rnn_uniform(hidden_size)
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        dtype = S.call_dtype(dtype, default, "rnn_bias", floating=True)
        comp = S.compute_dtype(dtype)
        k_ih, k_hh = jax.random.split(key)
        total = one(k_ih, shape, comp, out_sharding) + one(k_hh, shape, comp, out_sharding)
        return total.astype(dtype)

    return init


def bilinear(in1_features: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.Bilinear``'s weight and bias: U(+-1/sqrt(in1_features)).

    torch: ``bound = 1 / math.sqrt(weight.size(1))`` for both. Raises
    ``ValueError`` for ``in1_features <= 0``, as torch.
    """
    in1_features = _count(in1_features, "in1_features", positive=True)
    bound = 1 / math.sqrt(in1_features)
    return uniform(-bound, bound, dtype=dtype)


def mha_in_proj(embed_dim: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``torch.nn.MultiheadAttention``'s fused q/k/v projection, per projection.

    torch draws ``xavier_uniform_`` on the fused ``(3E, E)`` in_proj_weight, so
    each of the query, key and value kernels is U(+-sqrt(6 / (4E))), not the
    sqrt(6 / (2E)) of xavier on one ``(E, E)`` block. Use it for Flax's
    ``(E, heads, head_dim)`` q/k/v kernels. When kdim/vdim differ from E, torch
    uses separate matrices: use :func:`initjax.xavier_uniform` there.
    """
    embed_dim = _count(embed_dim, "embed_dim", positive=True)
    bound = SQRT3 * xavier_std(embed_dim, 3 * embed_dim)
    return uniform(-bound, bound, dtype=dtype)


def mha_bias_kv(embed_dim: int, *, dtype: DTypeLike | None = None) -> Initializer:
    """``MultiheadAttention(add_bias_kv=True)``'s ``bias_k``/``bias_v``: N(0, 1/E).

    torch: ``xavier_normal_`` on ``(1, 1, E)``, whose fans are both E.
    """
    embed_dim = _count(embed_dim, "embed_dim", positive=True)
    return normal(0.0, xavier_std(embed_dim, embed_dim), dtype=dtype)


def multihead_attention(
    embed_dim: int, *, fused: bool = True, dtype: DTypeLike | None = None
) -> dict[tuple[str, ...], Initializer]:
    """Every ``torch.nn.MultiheadAttention`` parameter's initializer, by Flax path.

    On Flax's attention layout (``query/key/value`` kernels ``(in, heads,
    head_dim)``, biases ``(heads, head_dim)``, ``out`` kernel ``(heads,
    head_dim, E)``):

    - ``query/key/value`` kernels: :func:`mha_in_proj` when torch fuses them
      (``fused``: kdim = vdim = E, one ``(3E, E)`` in_proj_weight), else
      ``xavier_uniform_`` on each separate ``q/k/v_proj_weight``;
    - ``out`` kernel: the Linear default (:func:`linear_kernel`, fan_in
      heads * head_dim);
    - every bias: 0 (torch's ``constant_(in_proj_bias, 0)`` and
      ``constant_(out_proj.bias, 0)``);
    - ``bias_k``/``bias_v`` (``add_bias_kv=True``): :func:`mha_bias_kv`.

    Both the attention layers and the checkpoint port read this table.
    """
    e = _count(embed_dim, "embed_dim", positive=True)
    qkv = (
        mha_in_proj(e, dtype=dtype)
        if fused
        else xavier_uniform(in_axis=0, out_axis=(1, 2), dtype=dtype)
    )
    out: dict[tuple[str, ...], Initializer] = {}
    for name in ("query", "key", "value"):
        out[(name, "kernel")] = qkv
        out[(name, "bias")] = zeros(dtype=dtype)
    out[("out", "kernel")] = linear_kernel(in_axis=(0, 1), out_axis=-1, dtype=dtype)
    out[("out", "bias")] = zeros(dtype=dtype)
    out[("bias_k",)] = out[("bias_v",)] = mha_bias_kv(e, dtype=dtype)
    return out
