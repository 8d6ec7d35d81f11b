"""The flax.nnx layers initjax replaces: linear, convolution, embedding,
recurrent cells, attention and norms, with torch's defaults (see the package
docstring, :mod:`initjax.nnx`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes
from flax.nnx.nn.linear import canonicalize_padding
from flax.typing import Dtype, PrecisionLike, PromoteDtypeFn
from jax import lax
from jax.nn.initializers import Initializer

from .. import _sampling as S
from ..defaults import (
    BATCH_NORM_EPS,
    BATCH_NORM_MOMENTUM,
    GROUP_NORM_EPS,
    LAYER_NORM_EPS,
    PRELU_INIT,
    RMS_NORM_EPS,
    bilinear,
    conv_bias,
    conv_kernel,
    conv_transpose_bias,
    conv_transpose_kernel,
    embedding,
    linear_bias,
    linear_kernel,
    mha_in_proj,
    rnn_bias,
    rnn_uniform,
)
from ..fans import canonical_shape
from ..functional.batch_norm import batch_count, running_average, unbiased_running_var
from ..functional.embedding import check_max_norm, check_padding_idx, embedding_renorm, lookup
from ..functional.padding import wrap_circular
from ..init import xavier_uniform, zeros

__all__ = [
    "Linear",
    "LinearGeneral",
    "Conv",
    "ConvTranspose",
    "Embed",
    "SimpleCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "GRUCell",
    "MultiHeadAttention",
    "LayerNorm",
    "GroupNorm",
    "BatchNorm",
    "RMSNorm",
    "Bilinear",
    "PReLU",
]

Array = jax.Array
Metadata = Mapping[str, Any]
_NO_METADATA: Metadata = MappingProxyType({})


def _tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


def _per_dim(x: None | int | Sequence[int], n: int) -> tuple[int, ...]:
    """Flax's stride/dilation argument for ``n`` spatial dims (``None`` is 1)."""
    x = 1 if x is None else x
    return (x,) * n if isinstance(x, int) else tuple(x)


def _groups(in_features: int, out_features: int, groups: Any) -> int:
    """``feature_group_count``, checked as torch checks ``groups``."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"feature_group_count must be a positive int, got {groups!r}")
    for name, n in (("in_features", in_features), ("out_features", out_features)):
        if n % groups:
            raise ValueError(f"{name}={n} must be divisible by feature_group_count={groups}")
    return groups


# ------------------------------------------------------------------ linear ---


class Linear(nnx.Linear):
    """``torch.nn.Linear(in_features, out_features)`` as ``flax.nnx.Linear``.

    kernel and bias: U(+-1/sqrt(in_features)) (bias all zeros when
    ``in_features`` is 0, as torch). From torch: ``kernel = weight.T``
    ``(in, out)``, ``bias = bias``. Created in torch's order: kernel, bias.

    Other arguments as ``flax.nnx.Linear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(
            in_features,
            out_features,
            kernel_init=linear_kernel() if kernel_init is None else kernel_init,
            bias_init=linear_bias(in_features) if bias_init is None else bias_init,
            rngs=rngs,
            **kwargs,
        )


def _batched_linear_kernel(batch: int) -> Initializer:
    """``linear_kernel`` on LinearGeneral's flattened ``(batch * in, out)`` kernel.

    Each of the ``batch`` row blocks is drawn as its own Linear, so the batch
    axes count in no fan.
    """
    per_entry = linear_kernel(batch_axis=0)

    def init(key, shape, dtype=None, out_sharding=None) -> Array:
        rows, cols = canonical_shape(shape)
        w = per_entry(key, (batch, rows // batch, cols), dtype)
        return S.place(w.reshape(rows, cols), out_sharding)

    return init


class LinearGeneral(nnx.LinearGeneral):
    """``torch.nn.Linear(prod(in_features), prod(out_features))`` over several axes.

    kernel and bias: U(+-1/sqrt(prod(in_features))). With ``batch_axis`` each
    batch entry is an independent Linear (the batch axes do not enter the
    fan). From torch: ``kernel = weight.T.reshape(*in_features,
    *out_features)``, ``bias = bias.reshape(out_features)``. Created in
    torch's order: kernel, bias.

    Other arguments as ``flax.nnx.LinearGeneral``.
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        batch_axis: Mapping[int, int] = MappingProxyType({}),
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        if kernel_init is None:
            batch = math.prod(batch_axis.values())
            kernel_init = _batched_linear_kernel(batch) if batch_axis else linear_kernel()
        if bias_init is None:
            bias_init = linear_bias(math.prod(_tuple(in_features)))
        super().__init__(
            in_features,
            out_features,
            batch_axis=batch_axis,
            kernel_init=kernel_init,
            bias_init=bias_init,
            rngs=rngs,
            **kwargs,
        )


class Bilinear(nnx.Module):
    """``torch.nn.Bilinear(in1_features, in2_features, out_features)``; Flax has none.

    ``y[..., o] = sum_ij x1[..., i] kernel[i, j, o] x2[..., j] + bias[o]``.
    kernel ``(in1, in2, out)`` and bias ``(out,)``: U(+-1/sqrt(in1_features)).
    From torch: ``kernel = weight.permute(1, 2, 0)``, ``bias = bias``.
    Created in torch's order: kernel, bias. ``in1_features <= 0`` raises
    ``ValueError``, as torch.

    Args:
      in1_features, in2_features: sizes of the last axis of the two inputs.
      out_features: size of the output's last axis.
      use_bias: whether to add a bias.
      dtype: computation dtype (default: promoted from inputs and params).
      param_dtype: parameter dtype.
      precision: ``jax.lax.Precision`` of the contraction.
      kernel_init, bias_init: initializers (``None``: torch's default).
      promote_dtype: as in ``flax.nnx.Linear``, on ``(x1, x2, kernel, bias)``.
      rngs: the ``params`` stream draws the parameters.
      kernel_metadata, bias_metadata: metadata for the ``nnx.Param``\\ s.
    """

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        promote_dtype: PromoteDtypeFn = dtypes.promote_dtype,
        rngs: nnx.Rngs,
        kernel_metadata: Metadata = _NO_METADATA,
        bias_metadata: Metadata = _NO_METADATA,
    ):
        default = bilinear(in1_features)
        kernel_init = default if kernel_init is None else kernel_init
        bias_init = default if bias_init is None else bias_init
        shape = (in1_features, in2_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype), **kernel_metadata)
        self.bias: nnx.Param[Array] | None
        if use_bias:
            self.bias = nnx.Param(
                bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata
            )
        else:
            self.bias = nnx.data(None)
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype

    def __call__(self, inputs1: Array, inputs2: Array) -> Array:
        """Applies the bilinear form to ``(..., in1)`` and ``(..., in2)`` inputs."""
        bias = self.bias[...] if self.bias is not None else None
        x1, x2, kernel, bias = self.promote_dtype(
            (inputs1, inputs2, self.kernel[...], bias), dtype=self.dtype
        )
        y = jnp.einsum("...i,ijo,...j->...o", x1, kernel, x2, precision=self.precision)
        return y if bias is None else y + bias


# -------------------------------------------------------------------- conv ---


class Conv(nnx.Conv):
    """``torch.nn.Conv1d/2d/3d`` (with ``groups``) as ``flax.nnx.Conv``.

    kernel ``(*k, in/groups, out)`` and bias: U(+-1/sqrt(fan_in)),
    ``fan_in = in_features / feature_group_count * prod(kernel_size)``. From
    torch: ``kernel = weight.permute(2, ..., n+1, 1, 0)``, ``bias = bias``;
    torch ``padding=p`` is ``padding=[(p, p)] * n`` here (Flax's default is
    ``'SAME'``, torch's 0). Created in torch's order: kernel, bias.
    Divisibility by ``feature_group_count`` is checked here, as torch does.

    Other arguments as ``flax.nnx.Conv``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: None | int | Sequence[int] = 1,
        *,
        feature_group_count: int = 1,
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        groups = _groups(in_features, out_features, feature_group_count)
        fan_in = in_features // groups * math.prod(_tuple(kernel_size))
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            strides,
            feature_group_count=groups,
            kernel_init=conv_kernel() if kernel_init is None else kernel_init,
            bias_init=conv_bias(fan_in) if bias_init is None else bias_init,
            rngs=rngs,
            **kwargs,
        )


def _drawn_on(init: Initializer, shape: tuple[int, ...]) -> Initializer:
    """``init`` drawn on ``shape``, whatever shape the caller asks for."""

    drawn = shape

    def wrapped(key, shape, *args, **kwargs):
        del shape  # the caller's
        return init(key, drawn, *args, **kwargs)

    return wrapped


class ConvTranspose(nnx.ConvTranspose):
    """``torch.nn.ConvTranspose1d/2d/3d`` (with ``groups``) as ``flax.nnx.ConvTranspose``.

    Adds ``feature_group_count`` (Flax has no groups here). Kernel layouts:

    - ``transpose_kernel=False`` (Flax's default): ``(*k, in/groups, out)``,
      Flax's layout with grouped inputs; from torch's ``weight (in,
      out/groups, *k)``: ``w.reshape(g, in/g, out/g, *k)``, flip the spatial
      axes, permute to ``(*k, in/g, g, out/g)`` and reshape.
    - ``transpose_kernel=True``: ``(*k, out/groups, in)``, the kernel of the
      forward conv whose transpose is applied: ``weight.permute(2, ..., n+1,
      1, 0)``, no flip.

    kernel and bias: U(+-1/sqrt(out/groups * prod(k))), torch's fan_in of its
    ``(in, out/groups, *k)`` weight (the "ConvTranspose quirk"). torch's
    ``stride=s, padding=p, output_padding=op, dilation=d`` is ``strides=s,
    padding=[(d*(k-1)-p, d*(k-1)-p+op)] * n, kernel_dilation=d`` here.
    Created in torch's order: kernel, bias. Grouped layers run one grouped
    ``lax.conv_transpose`` (a ``vmap`` over groups); every Flax padding mode
    works, ``'CIRCULAR'`` included (an extension: torch's transposed
    convolutions pad with zeros only).

    Other arguments as ``flax.nnx.ConvTranspose``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: Any = "SAME",
        feature_group_count: int = 1,
        transpose_kernel: bool = False,
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        groups = _groups(in_features, out_features, feature_group_count)
        size = _tuple(kernel_size)
        if kernel_init is None:
            kernel_init = conv_transpose_kernel(groups, transpose_kernel=transpose_kernel)
        if bias_init is None:
            bias_init = conv_transpose_bias(out_features // groups * math.prod(size))
        if transpose_kernel:
            kernel_shape = size + (out_features // groups, in_features)
        else:
            kernel_shape = size + (in_features // groups, out_features)
        if groups > 1:  # Flax asks for the ungrouped shape.
            kernel_init = _drawn_on(kernel_init, kernel_shape)
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            strides,
            padding=padding,
            transpose_kernel=transpose_kernel,
            kernel_init=kernel_init,
            bias_init=bias_init,
            rngs=rngs,
            **kwargs,
        )
        self.kernel_shape = kernel_shape
        self.feature_group_count = groups

    def __call__(self, inputs: Array) -> Array:
        """Applies the transposed convolution to channels-last ``inputs``."""
        groups = self.feature_group_count
        if groups == 1:
            return super().__call__(inputs)
        n = len(self.kernel_size)
        batch_shape = inputs.shape[: inputs.ndim - n - 1]
        x = inputs.reshape((-1,) + inputs.shape[inputs.ndim - n - 1 :])
        kernel = self.kernel[...]
        if self.mask is not None:
            if self.mask.shape != self.kernel_shape:
                raise ValueError(
                    f"mask shape {self.mask.shape} must equal the kernel shape {self.kernel_shape}"
                )
            kernel = kernel * self.mask
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)

        def split(a):  # last axis (..., g * c) -> leading group axis (g, ..., c)
            return jnp.moveaxis(a.reshape(a.shape[:-1] + (groups, -1)), -2, 0)

        strides = _per_dim(self.strides, n)
        padding = canonicalize_padding(self.padding, n)
        conv = partial(
            lax.conv_transpose,
            strides=strides,
            padding="VALID" if padding == "CIRCULAR" else padding,
            rhs_dilation=_per_dim(self.kernel_dilation, n),
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        y = jax.vmap(conv)(split(x), split(kernel))  # (g, N, *spatial, out/g)
        y = jnp.moveaxis(y, 0, -2)
        y = y.reshape(y.shape[:-2] + (-1,))
        if padding == "CIRCULAR":
            y = wrap_circular(y, x.shape[1 : n + 1], strides, self.transpose_kernel)
        if bias is not None:
            y = y + bias
        return y.reshape(batch_shape + y.shape[1:])


# --------------------------------------------------------------- embedding ---


class Embed(nnx.Embed):
    """``torch.nn.Embedding(num_embeddings, features, padding_idx, max_norm)`` as ``nnx.Embed``.

    embedding ``(num_embeddings, features)``: N(0, 1) (Flax: N(0,
    1/features)); with ``padding_idx`` that row starts at zero and, as in
    torch, lookups of it pass no gradient, so it stays fixed under training.
    A negative ``padding_idx`` counts from the end. A user ``embedding_init``
    wins, padding row included (as torch's ``_weight``). From torch:
    ``embedding = weight``.

    ``max_norm``/``norm_type``: on each call, the looked-up rows whose
    ``norm_type``-norm exceeds ``max_norm`` are rescaled by ``max_norm /
    (norm + 1e-7)`` and written back into ``embedding``, in place, as torch
    does; the gradient reaches them as torch's reaches its renormed weight.
    ``scale_grad_by_freq``: each row's gradient is divided by how often its
    index occurs in ``inputs``, as torch.

    Other arguments as ``flax.nnx.Embed``.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        embedding_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        padding_idx = check_padding_idx(padding_idx, num_embeddings)
        check_max_norm(max_norm, norm_type)
        if embedding_init is None:
            embedding_init = embedding(padding_idx)
        super().__init__(
            num_embeddings, features, embedding_init=embedding_init, rngs=rngs, **kwargs
        )
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq

    def __call__(self, inputs: Array, out_sharding=None) -> Array:
        """Looks up ``inputs`` (renorming as torch with ``max_norm``); the padding row
        passes no gradient."""
        if self.max_norm is None and not self.scale_grad_by_freq:
            y = super().__call__(inputs, out_sharding=out_sharding)
        else:
            if not jnp.issubdtype(inputs.dtype, jnp.integer):
                raise ValueError("Input type must be an integer or unsigned integer.")
            table = self.embedding[...]

            def rows(table, inputs):
                return lookup(
                    table,
                    inputs,
                    max_norm=self.max_norm,
                    norm_type=self.norm_type,
                    scale_grad_by_freq=self.scale_grad_by_freq,
                )[0]

            (promoted,) = self.promote_dtype((table,), dtype=self.dtype, inexact=False)
            if out_sharding is None:
                y = rows(promoted, inputs)
            else:
                # auto_axes's stub types the wrapped function as taking one argument
                y = jax.sharding.auto_axes(rows, out_sharding=out_sharding)(promoted, inputs)  # pyright: ignore[reportCallIssue]
            if self.max_norm is not None:
                renormed = embedding_renorm(table, inputs, self.max_norm, self.norm_type)
                self.embedding[...] = lax.stop_gradient(renormed)
        if self.padding_idx is None:
            return y
        pad = self.padding_idx
        hit = (inputs == pad) | (inputs == pad - self.num_embeddings)
        return jnp.where(hit[..., None], lax.stop_gradient(y), y)


# --------------------------------------------------------------- recurrent ---


def _rnn_inits(hidden, kernel_init, recurrent_kernel_init, bias_init) -> dict[str, Initializer]:
    """torch's defaults for a cell whose one bias per gate stands for ``b_ih + b_hh``."""
    return dict(
        kernel_init=rnn_uniform(hidden) if kernel_init is None else kernel_init,
        recurrent_kernel_init=rnn_uniform(hidden)
        if recurrent_kernel_init is None
        else recurrent_kernel_init,
        bias_init=rnn_bias(hidden) if bias_init is None else bias_init,
    )


class _TorchRNNCell:
    """The cells' shared constructor: ``None`` initializers become torch's defaults."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        inits = _rnn_inits(hidden_features, kernel_init, recurrent_kernel_init, bias_init)
        # A mixin: super() is the Flax cell it is combined with, which pyright cannot see.
        super().__init__(in_features, hidden_features, **inits, rngs=rngs, **kwargs)  # pyright: ignore[reportCallIssue]


class SimpleCell(_TorchRNNCell, nnx.SimpleCell):
    """``torch.nn.RNNCell(in_features, hidden_features)`` as ``flax.nnx.SimpleCell``.

    torch's ``nonlinearity='tanh'``/``'relu'`` is ``activation_fn=nnx.tanh``/
    ``nnx.relu``. Kernels U(+-k), ``k = 1/sqrt(hidden_features)``. Flax has one
    bias where torch has two: ``dense_i.bias = bias_ih + bias_hh``, drawn as
    that sum (triangular on [-2k, 2k]). From torch: ``dense_i.kernel =
    weight_ih.T``, ``dense_h.kernel = weight_hh.T``.

    Creation order differs from torch's (weight_ih, weight_hh, bias_ih,
    bias_hh): Flax builds ``dense_h.kernel``, then ``dense_i.kernel``, then
    ``dense_i.bias``.

    Other arguments as ``flax.nnx.SimpleCell``.
    """


class LSTMCell(_TorchRNNCell, nnx.LSTMCell):
    """``torch.nn.LSTMCell(in_features, hidden_features)`` as ``flax.nnx.LSTMCell``.

    Kernels U(+-k), ``k = 1/sqrt(hidden_features)``; each gate's one Flax
    bias stands for torch's ``bias_ih + bias_hh`` and is drawn as that sum
    (triangular on [-2k, 2k]). torch stacks the gates (i, f, g, o) in rows
    ``[j*H:(j+1)*H]``; for gate ``j`` with Flax names ``(ii, hi)``, ``(if_,
    hf)``, ``(ig, hg)``, ``(io, ho)``: ``i{j}.kernel = weight_ih[rows].T``,
    ``h{j}.kernel = weight_hh[rows].T``, ``h{j}.bias = bias_ih[rows] +
    bias_hh[rows]``. The carry is ``(c, h)``; torch's is ``(h, c)``.

    Creation order differs from torch's (weight_ih, weight_hh, bias_ih,
    bias_hh, each stacked over gates): Flax builds the four input kernels,
    then per gate the recurrent kernel and its bias.
    :class:`OptimizedLSTMCell` keeps torch's order.

    Other arguments as ``flax.nnx.LSTMCell``.
    """


class OptimizedLSTMCell(_TorchRNNCell, nnx.OptimizedLSTMCell):
    """``torch.nn.LSTMCell`` as ``flax.nnx.OptimizedLSTMCell``: torch's own fused layout.

    Same distributions as :class:`LSTMCell`. From torch, gates (i, f, g, o)
    in torch's order: ``dense_i.kernel = weight_ih.T`` ``(in, 4H)``,
    ``dense_h.kernel = weight_hh.T``, ``dense_h.bias = bias_ih + bias_hh``.
    Created in torch's order: input kernel, recurrent kernel, bias (one
    draw standing for torch's two). The carry is ``(c, h)``.

    Other arguments as ``flax.nnx.OptimizedLSTMCell``.
    """


def _gru_input_bias(hidden: int) -> Initializer:
    """GRUCell's ``dense_i.bias`` over gates (r, z, n): ``[b_ir + b_hr, b_iz + b_hz, b_in]``."""
    summed, single = rnn_bias(hidden), rnn_uniform(hidden)

    def init(key, shape, dtype=None, out_sharding=None) -> Array:
        if canonical_shape(shape) != (3 * hidden,):
            raise ValueError(f"GRU input bias shape must be ({3 * hidden},), got {shape}")
        k_rz, k_n = jax.random.split(key)
        b = jnp.concatenate([summed(k_rz, (2 * hidden,), dtype), single(k_n, (hidden,), dtype)])
        return S.place(b, out_sharding)

    return init


class GRUCell(nnx.GRUCell):
    """``torch.nn.GRUCell(in_features, hidden_features)`` as ``flax.nnx.GRUCell``, plus ``b_hn``.

    Computes torch's cell, gates (r, z, n) in torch's order::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    ``flax.nnx.GRUCell`` has no ``b_hn``; this cell adds the parameter
    ``bias_hn`` ``(H,)`` (``bias_metadata`` applies to it too). Kernels and
    ``b_in``, ``b_hn``: U(+-k), ``k = 1/sqrt(hidden_features)``; the r and z
    biases stand for torch's two each and are drawn as their sum
    (triangular on [-2k, 2k]). A user ``bias_init`` initializes both
    ``dense_i.bias`` and ``bias_hn``. From torch (``H`` = hidden size):
    ``dense_i.kernel = weight_ih.T`` ``(in, 3H)``, ``dense_h.kernel =
    weight_hh.T``, ``dense_i.bias = [bias_ih[:2H] + bias_hh[:2H],
    bias_ih[2H:]]``, ``bias_hn = bias_hh[2H:]``.

    Creation order differs from torch's (weight_ih, weight_hh, bias_ih,
    bias_hh): ``dense_i.kernel``, ``dense_i.bias``, ``dense_h.kernel``,
    ``bias_hn``.

    Other arguments as ``flax.nnx.GRUCell``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        bias_metadata: Metadata = _NO_METADATA,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        h = hidden_features
        super().__init__(
            in_features,
            h,
            kernel_init=rnn_uniform(h) if kernel_init is None else kernel_init,
            recurrent_kernel_init=rnn_uniform(h)
            if recurrent_kernel_init is None
            else recurrent_kernel_init,
            bias_init=_gru_input_bias(h) if bias_init is None else bias_init,
            bias_metadata=bias_metadata,
            rngs=rngs,
            **kwargs,
        )
        hn_init = rnn_uniform(h) if bias_init is None else bias_init
        self.bias_hn = nnx.Param(hn_init(rngs.params(), (h,), self.param_dtype), **bias_metadata)

    def __call__(  # type: ignore[override]
        self, carry: Array, inputs: Array
    ) -> tuple[Array, Array]:
        """One step of torch's GRU cell: returns ``(h', h')``."""
        h = carry
        x_r, x_z, x_n = jnp.split(self.dense_i(inputs), 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.dense_h(h), 3, axis=-1)
        h_n, b_hn = self.promote_dtype((h_n, self.bias_hn[...]), dtype=self.dtype)
        r = self.gate_fn(x_r + h_r)
        z = self.gate_fn(x_z + h_z)
        n = self.activation_fn(x_n + r * (h_n + b_hn))
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h


# --------------------------------------------------------------- attention ---


class MultiHeadAttention(nnx.MultiHeadAttention):
    """``torch.nn.MultiheadAttention(E, num_heads, kdim, vdim)`` as ``flax.nnx.MultiHeadAttention``.

    ``E = in_features = qkv_features = out_features``; torch's ``kdim == vdim``
    is ``in_kv_features`` (nnx has one size for keys and values, so kdim !=
    vdim cannot be built). Initialization as torch:

    - query/key/value kernels: when the query and key/value inputs have
      ``qkv_features`` features (and ``num_kv_heads == num_heads``), torch's
      fused in_proj: xavier_uniform on ``(3E, E)``, i.e. U(+-sqrt(6/(4E)))
      each; otherwise xavier_uniform per projection, as torch's separate
      ``q/k/v_proj_weight``;
    - out kernel: the Linear default U(+-1/sqrt(qkv_features));
    - all biases zero.

    A user ``kernel_init``/``bias_init`` wins and, as in Flax, also covers the
    out projection unless ``out_kernel_init``/``out_bias_init`` are given.

    From torch (``h`` heads, ``d = E/h``): ``query.kernel =
    in_proj_weight[:E].T.reshape(E, h, d)``, ``key`` rows ``[E:2E]``,
    ``value`` rows ``[2E:]`` (or ``q/k/v_proj_weight.T.reshape(in, h, d)``),
    ``*.bias = in_proj_bias[rows].reshape(h, d)``, ``out.kernel =
    out_proj.weight.T.reshape(h, d, E)``, ``out.bias = out_proj.bias``.
    torch's ``add_bias_kv`` and ``add_zero_attn`` have no equivalent.

    Creation order differs from torch's: torch draws out_proj's weight and a
    bias it then zeroes before in_proj; Flax builds query, key, value, out.

    Flax's call conventions stay: batch-major ``(..., L, E)`` inputs, a
    boolean ``mask`` where ``True`` attends (torch's ``attn_mask`` uses
    ``True`` to block), ``broadcast_dropout=True`` (pass ``False`` for
    torch's per-element attention dropout), and only the output returned.

    Other arguments as ``flax.nnx.MultiHeadAttention``.
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        num_kv_heads: int | None = None,
        in_kv_features: int | None = None,
        *,
        kernel_init: Initializer | None = None,
        out_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        out_bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        if kernel_init is None:
            embed = in_features if qkv_features is None else qkv_features
            kv_in = in_features if in_kv_features is None else in_kv_features
            fused = in_features == kv_in == embed and num_kv_heads in (None, num_heads)
            kernel_init = mha_in_proj(embed) if fused else xavier_uniform()
            if out_kernel_init is None:
                out_kernel_init = linear_kernel()
        if bias_init is None:
            bias_init = zeros()
        super().__init__(
            num_heads,
            in_features,
            qkv_features,
            out_features,
            num_kv_heads,
            in_kv_features,
            kernel_init=kernel_init,
            out_kernel_init=out_kernel_init,
            bias_init=bias_init,
            out_bias_init=out_bias_init,
            rngs=rngs,
            **kwargs,
        )


# ------------------------------------------------------------------- norms ---


class LayerNorm(nnx.LayerNorm):
    """``torch.nn.LayerNorm(num_features)`` as ``flax.nnx.LayerNorm``.

    torch's ``eps=1e-5`` (Flax: 1e-6) and two-pass variance
    (``use_fast_variance=False``; Flax's E[x^2] - E[x]^2 loses precision on
    inputs with a large mean). scale 1, bias 0. From torch: ``scale =
    weight``, ``bias = bias``; ``elementwise_affine=False`` is
    ``use_scale=False, use_bias=False``; a multi-axis ``normalized_shape``
    uses ``reduction_axes``/``feature_axes``.

    Other arguments as ``flax.nnx.LayerNorm``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = LAYER_NORM_EPS,
        use_fast_variance: bool = False,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(
            num_features,
            epsilon=epsilon,
            use_fast_variance=use_fast_variance,
            rngs=rngs,
            **kwargs,
        )


class GroupNorm(nnx.GroupNorm):
    """``torch.nn.GroupNorm(num_groups, num_features)`` as ``flax.nnx.GroupNorm``.

    torch's ``eps=1e-5`` (Flax: 1e-6) and two-pass variance. Channels-last;
    groups are contiguous channels, as torch. scale 1, bias 0. From torch:
    ``scale = weight``, ``bias = bias``. Note the argument order: Flax's
    ``(num_features, num_groups)``, torch's ``(num_groups, num_channels)``;
    ``num_groups`` keeps Flax's default of 32 (torch has none).

    Other arguments as ``flax.nnx.GroupNorm``.
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: float = GROUP_NORM_EPS,
        use_fast_variance: bool = False,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(
            num_features,
            num_groups,
            group_size,
            epsilon=epsilon,
            use_fast_variance=use_fast_variance,
            rngs=rngs,
            **kwargs,
        )


class BatchNorm(nnx.BatchNorm):
    """``torch.nn.BatchNorm1d/2d/3d(num_features)`` as ``flax.nnx.BatchNorm``.

    ``momentum=0.9``: Flax weighs the old running value, torch (0.1) the new
    batch. ``momentum=None`` is torch's ``momentum=None``: the cumulative
    average, each training step weighing the new batch
    ``1 / num_batches_tracked``. ``eps=1e-5`` and two-pass batch variance.
    scale 1, bias 0, running mean 0 and var 1. From torch: ``scale =
    weight``, ``bias = bias``, ``mean = running_mean``, ``var = running_var``;
    training mode is ``use_running_average=False`` (nnx's default), eval mode
    ``True``.

    The running variance is updated with the *unbiased* batch variance (times
    n/(n-1), n the count reduced per feature, across ``axis_name`` devices and
    ``mask`` too), as torch; normalization uses the biased one, as both. Flax
    updates with the biased variance. Fewer than 2 values per feature in
    training (no mask, no ``axis_name``) raise ``ValueError``, as torch.

    ``track_num_batches``: keep torch's ``num_batches_tracked`` as the
    ``BatchStat`` ``num_batches_tracked`` (int32, +1 per training step, as
    torch; ported both ways). ``None`` (default): kept when ``momentum is
    None``, which needs it; otherwise the port skips torch's counter.

    Other arguments as ``flax.nnx.BatchNorm``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float | None = 1 - BATCH_NORM_MOMENTUM,
        epsilon: float = BATCH_NORM_EPS,
        use_fast_variance: bool = False,
        track_num_batches: bool | None = None,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        cumulative = momentum is None
        if cumulative and track_num_batches is False:
            raise ValueError("momentum=None (torch's cumulative average) needs the batch counter")
        super().__init__(
            num_features,
            momentum=0.0 if momentum is None else momentum,
            epsilon=epsilon,
            use_fast_variance=use_fast_variance,
            rngs=rngs,
            **kwargs,
        )
        self.momentum = momentum  # pyright: ignore[reportAttributeAccessIssue]
        self.num_batches_tracked: nnx.BatchStat[Array] | None = nnx.data(None)
        if track_num_batches or (track_num_batches is None and cumulative):
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(
        self, x: Array, use_running_average: bool | None = None, *, mask: Array | None = None
    ) -> Array:
        """Normalizes ``x``; in training mode, updates the running stats as torch does."""
        frozen = self.use_running_average if use_running_average is None else use_running_average
        if frozen is None or frozen:  # None: Flax raises its own error
            return self._flax_call(x, use_running_average, mask)
        count = batch_count(
            x,
            self.axis,
            mask=mask,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
        )
        old_mean, old = self.mean[...], self.var[...]
        y = self._flax_call(x, use_running_average, mask)
        counter = self.num_batches_tracked
        if counter is not None:
            counter[...] = counter[...] + 1
        if self.momentum is not None:
            self.var[...] = unbiased_running_var(old, self.var[...], count, self.momentum)
            return y
        assert counter is not None  # checked in __init__
        factor = 1 / counter[...].astype(old.dtype)
        batch_var = unbiased_running_var(old, self.var[...], count, 0.0)
        self.mean[...] = running_average(old_mean, self.mean[...], factor)
        self.var[...] = running_average(old, batch_var, factor)
        return y

    def _flax_call(self, x: Array, use_running_average: bool | None, mask: Array | None) -> Array:
        """Flax's BatchNorm; with ``momentum=None`` its momentum is 0 (the batch statistics)."""
        momentum = self.momentum
        if momentum is None:
            self.momentum = 0.0
        try:
            return super().__call__(x, use_running_average, mask=mask)
        finally:
            self.momentum = momentum


class RMSNorm(nnx.RMSNorm):
    """``torch.nn.RMSNorm(num_features)`` as ``flax.nnx.RMSNorm``.

    ``epsilon`` is torch's ``eps=None`` for float32, float16 and bfloat16
    inputs: float32's machine epsilon (Flax: 1e-6); for float64 inputs torch
    uses float64's, pass ``epsilon=float(jnp.finfo(jnp.float64).eps)``.
    scale 1. From torch: ``scale = weight``.

    Other arguments as ``flax.nnx.RMSNorm``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = RMS_NORM_EPS,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(num_features, epsilon=epsilon, rngs=rngs, **kwargs)


class PReLU(nnx.PReLU):
    """``torch.nn.PReLU(num_parameters)`` as ``flax.nnx.PReLU``: slope 0.25 (Flax: 0.01).

    ``num_parameters=1``: Flax's scalar slope, ``negative_slope = weight[0]``.
    ``num_parameters=n > 1`` (torch's per-channel slopes): ``negative_slope``
    is ``(n,)``, one slope per channel on the last axis (Flax's channels-last
    layout; torch: axis 1), which must have ``n`` entries;
    ``negative_slope = weight``.

    Other arguments as ``flax.nnx.PReLU``.
    """

    def __init__(
        self,
        negative_slope_init: float = PRELU_INIT,
        *,
        num_parameters: int = 1,
        param_dtype: Dtype = jnp.float32,
        negative_slope_metadata: Metadata = _NO_METADATA,
        **kwargs: Any,
    ):
        n = num_parameters
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_parameters must be a positive int, got {n!r}")
        super().__init__(  # the scalar slope; replaced below when n > 1
            negative_slope_init,
            param_dtype=param_dtype,
            negative_slope_metadata=negative_slope_metadata if n == 1 else _NO_METADATA,
            **kwargs,
        )
        if n > 1:
            self.negative_slope = nnx.Param(
                jnp.full((n,), negative_slope_init, param_dtype), **negative_slope_metadata
            )
        self.num_parameters = n

    def __call__(self, inputs: Array) -> Array:
        """``inputs`` where >= 0, else slope times ``inputs`` (per channel for n > 1)."""
        n = self.num_parameters
        if n > 1 and (inputs.ndim == 0 or inputs.shape[-1] != n):
            raise ValueError(
                f"PReLU(num_parameters={n}) needs {n} channels on the last axis, "
                f"got input shape {inputs.shape}"
            )
        return super().__call__(inputs)
