"""The flax.linen layers initjax replaces: linear, convolution, embedding,
recurrent cells, attention and norms, with torch's defaults (see the package
docstring, :mod:`initjax.linen`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import PromoteDtypeFn, canonicalize_padding
from flax.typing import Array, Dtype, Initializer, PrecisionLike
from jax import lax

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
from ..functional.batch_norm import batch_count, running_average, unbiased_running_var
from ..functional.embedding import check_max_norm, embedding_renorm, lookup
from ..functional.padding import wrap_circular
from ..init import xavier_uniform

__all__ = [
    "Dense",
    "DenseGeneral",
    "Conv",
    "ConvTranspose",
    "Embed",
    "Bilinear",
    "SimpleCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "GRUCell",
    "MultiHeadDotProductAttention",
    "MultiHeadAttention",
    "LayerNorm",
    "GroupNorm",
    "BatchNorm",
    "RMSNorm",
    "PReLU",
]


def _stock(module: nn.Module, base: type[nn.Module], **overrides: Any) -> nn.Module:
    """The Flax layer ``base``, configured like ``module``, living in ``module``'s scope.

    Call it inside ``module``'s compact method: every field of ``base`` is
    copied from ``module`` (then ``overrides`` applied) and the two share one
    scope, so its parameters are ``module``'s own, under Flax's names.
    """
    fields = {
        f.name: getattr(module, f.name)
        for f in dataclasses.fields(base)
        if f.init and f.name not in ("parent", "name")
    }
    layer = base(**{**fields, **overrides})
    nn.share_scope(module, layer)
    return layer


def _given(init: Initializer | None, default: Initializer) -> Initializer:
    return default if init is None else init


def _tuple(value: int | tuple[int, ...] | Any) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


# ------------------------------------------------------------------- linear ---


class Dense(nn.Dense):
    """``flax.linen.Dense`` initialized as ``torch.nn.Linear``.

    kernel ``(in, out)`` and bias ``(out,)`` are both U(+-1/sqrt(in)): torch's
    ``kaiming_uniform_(weight, a=sqrt(5))`` and ``uniform_(bias, -1/sqrt(in),
    1/sqrt(in))``, with ``in`` read from the input at init (bias all zero when
    ``in`` is 0, as torch). Flax's defaults are lecun_normal and zeros.

    ``bias_init=None`` means torch's bias default.

    torch -> Flax: ``kernel = W.T``, ``bias = b``.
    """

    kernel_init: Initializer = linear_kernel()
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        bias_init = _given(self.bias_init, linear_bias(jnp.shape(inputs)[-1]))
        return _stock(self, nn.Dense, bias_init=bias_init)(inputs)


class DenseGeneral(nn.DenseGeneral):
    """``flax.linen.DenseGeneral`` initialized as ``torch.nn.Linear``.

    kernel and bias are U(+-1/sqrt(fan_in)), ``fan_in`` the product of the
    contracted input dims (``axis``); each ``batch_dims`` entry is its own
    Linear, so batch dims do not count. torch has no DenseGeneral: it equals a
    Linear on the flattened contracted dims.

    ``kernel_init=None``/``bias_init=None`` mean torch's defaults.

    torch -> Flax (no batch dims): ``kernel = W.T.reshape(kernel.shape)``,
    ``bias = b.reshape(bias.shape)``.
    """

    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        ndim = jnp.ndim(inputs)
        axes = {ax % ndim for ax in _tuple(self.axis)}
        fan_in = math.prod(jnp.shape(inputs)[ax] for ax in axes)
        # torch's Linear weight and bias share the bound 1/sqrt(fan_in); Flax
        # hands the kernel initializer a flattened (batch*in, out) shape, so the
        # kernel cannot read its fan from the shape when batch_dims are used.
        default = linear_bias(fan_in)
        return _stock(
            self,
            nn.DenseGeneral,
            kernel_init=_given(self.kernel_init, default),
            bias_init=_given(self.bias_init, default),
        )(inputs)


class Bilinear(nn.Module):
    """``torch.nn.Bilinear`` for Flax (Flax has none).

    ``y[..., o] = sum_ij x1[..., i] kernel[i, j, o] x2[..., j] + bias[o]``.
    kernel ``(in1, in2, out)`` and bias ``(out,)`` are both U(+-1/sqrt(in1)),
    torch's default (:func:`initjax.bilinear`); ``None`` means that default.
    The leading dims of the two inputs broadcast.

    torch -> Flax: ``kernel = W.permute(1, 2, 0)``, ``bias = b``.
    """

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    promote_dtype: PromoteDtypeFn = promote_dtype

    @nn.compact
    def __call__(self, inputs1: Array, inputs2: Array) -> Array:
        in1, in2 = jnp.shape(inputs1)[-1], jnp.shape(inputs2)[-1]
        default = bilinear(in1)
        kernel = self.param(
            "kernel", _given(self.kernel_init, default), (in1, in2, self.features), self.param_dtype
        )
        bias = None
        if self.use_bias:
            bias_init = _given(self.bias_init, default)
            bias = self.param("bias", bias_init, (self.features,), self.param_dtype)
        inputs1, inputs2, kernel, bias = self.promote_dtype(
            inputs1, inputs2, kernel, bias, dtype=self.dtype
        )
        y = jnp.einsum("...i,ijo,...j->...o", inputs1, kernel, inputs2, precision=self.precision)
        return y if bias is None else y + bias


# --------------------------------------------------------------- convolution ---


class Conv(nn.Conv):
    """``flax.linen.Conv`` initialized as ``torch.nn.Conv1d/2d/3d``.

    kernel ``(*k, in/groups, out)`` and bias ``(out,)`` are U(+-1/sqrt(fan_in)),
    ``fan_in = in/groups * prod(k)``: torch's ``kaiming_uniform_(weight,
    a=sqrt(5))`` and bias default. ``bias_init=None`` means torch's bias default.

    torch -> Flax: ``kernel = W.permute(2, ..., nd+1, 1, 0)``, ``bias = b``,
    ``feature_group_count = groups``, ``strides = stride``,
    ``kernel_dilation = dilation``, ``padding = [(p, p)] * nd`` (torch's
    default is 0, i.e. ``'VALID'``; Flax's is ``'SAME'``); inputs NC* -> N*C.
    Pass ``kernel_size`` as a tuple: an int means a 1-D kernel.
    """

    kernel_init: Initializer = conv_kernel()
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        groups = self.feature_group_count
        fan_in = jnp.shape(inputs)[-1] // groups * math.prod(_tuple(self.kernel_size))
        bias_init = _given(self.bias_init, conv_bias(fan_in))
        return _stock(self, nn.Conv, bias_init=bias_init)(inputs)


def _transpose_padding(extent: int, stride: int, padding: str) -> tuple[int, int]:
    """Zero padding of the stride-dilated input that gives a transposed conv the
    output length ``n * stride`` ('SAME') or ``n * stride + max(extent - stride, 0)``
    ('VALID'), as ``jax.lax.conv_transpose``; ``extent`` is the dilated kernel size."""
    if padding == "SAME":
        total = extent + stride - 2
        low = extent - 1 if stride > extent - 1 else -(-total // 2)
    else:
        total = extent + stride - 2 + max(extent - stride, 0)
        low = extent - 1
    return low, total - low


def _regroup_transposed(kernel: Array, groups: int) -> Array:
    """A forward-conv kernel ``(*k, out/g, in)`` as the grouped kernel
    ``(*k, in/g, out)`` of its transpose: spatially flipped, each group's
    ``(out/g, in/g)`` block transposed."""
    nd = kernel.ndim - 2
    *k, out_g, n_in = kernel.shape
    kernel = jnp.flip(kernel, axis=tuple(range(nd)))
    kernel = kernel.reshape((*k, out_g, groups, n_in // groups))
    kernel = jnp.swapaxes(kernel, nd, nd + 2)
    return kernel.reshape((*k, n_in // groups, out_g * groups))


class ConvTranspose(nn.ConvTranspose):
    """``flax.linen.ConvTranspose`` with groups, initialized as ``torch.nn.ConvTranspose1d/2d/3d``.

    Adds ``feature_group_count`` (torch's ``groups``; Flax's ConvTranspose has
    none). Kernel layouts, ``g = feature_group_count``:

    - ``transpose_kernel=False`` (Flax's default): ``(*k, in/g, out)``, applied
      as a convolution of the stride-dilated input, unflipped (as Flax);
    - ``transpose_kernel=True``: ``(*k, out/g, in)``, the kernel of the forward
      grouped convolution whose transpose is applied.

    Initialization (torch's ConvTranspose quirk): torch's weight is
    ``(in, out/g, *k)`` and torch reads fan_in from axis 1, so kernel and bias
    are U(+-1/sqrt(out/g * prod(k))): set by the *output* channels
    (:func:`initjax.conv_transpose_kernel`). ``None`` means torch's defaults.

    torch -> Flax, ``W`` of shape ``(in, out/g, *k)``:

    - ``transpose_kernel=True``: ``kernel = W.permute(2, ..., nd+1, 1, 0)``;
    - ``transpose_kernel=False``: ``kernel = W.reshape(g, in/g, out/g, *k)
      .permute(3, ..., nd+2, 1, 0, 2).reshape(*k, in/g, out)`` flipped on every
      spatial axis (for g=1: ``W.flip(spatial).permute(2, ..., nd+1, 0, 1)``);
    - both: ``bias = b``, ``strides = stride``, ``kernel_dilation = dilation``,
      ``padding = [(d*(k-1) - p, d*(k-1) - p + output_padding)] * nd``.

    With ``feature_group_count=1`` this computes exactly what Flax's
    ConvTranspose computes (every padding mode, ``mask``, batch dims).
    """

    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    feature_group_count: int = 1

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        kernel_size = _tuple(self.kernel_size)
        nd = len(kernel_size)

        def per_dim(value) -> tuple[int, ...]:
            value = 1 if value is None else value
            return (value,) * nd if isinstance(value, int) else tuple(value)

        strides, dilation = per_dim(self.strides), per_dim(self.kernel_dilation)
        groups = self.feature_group_count
        in_features = jnp.shape(inputs)[-1]
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"feature_group_count must be a positive int, got {groups!r}")
        if in_features % groups or self.features % groups:
            raise ValueError(
                f"feature_group_count={groups} must divide both the input features "
                f"({in_features}) and features ({self.features})"
            )

        batch_shape = jnp.shape(inputs)[: jnp.ndim(inputs) - nd - 1]
        if len(batch_shape) != 1:
            inputs = jnp.reshape(inputs, (-1,) + jnp.shape(inputs)[len(batch_shape) :])

        if self.transpose_kernel:
            kernel_shape = kernel_size + (self.features // groups, in_features)
        else:
            kernel_shape = kernel_size + (in_features // groups, self.features)
        if self.mask is not None and self.mask.shape != kernel_shape:
            raise ValueError(
                f"Mask needs to have the same shape as weights. Shapes are: {self.mask.shape}, "
                f"{kernel_shape}"
            )
        kernel_init = _given(
            self.kernel_init, conv_transpose_kernel(groups, transpose_kernel=self.transpose_kernel)
        )
        kernel = self.param("kernel", kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = None
        if self.use_bias:
            fan_in = self.features // groups * math.prod(kernel_size)
            bias_init = _given(self.bias_init, conv_transpose_bias(fan_in))
            bias = self.param("bias", bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        assert kernel is not None  # promote_dtype passes only None through as None
        if self.transpose_kernel:
            kernel = _regroup_transposed(kernel, groups)

        padding = canonicalize_padding(self.padding, nd)
        if isinstance(padding, str):
            mode = "VALID" if padding == "CIRCULAR" else padding
            extents = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True)]
            padding = [
                _transpose_padding(e, s, mode) for e, s in zip(extents, strides, strict=True)
            ]
        ndim = nd + 2
        spec = (0, ndim - 1) + tuple(range(1, ndim - 1))
        y = lax.conv_general_dilated(
            inputs,
            kernel,
            window_strides=(1,) * nd,
            padding=padding,
            lhs_dilation=strides,
            rhs_dilation=dilation,
            dimension_numbers=lax.ConvDimensionNumbers(
                spec, (ndim - 1, ndim - 2) + tuple(range(nd)), spec
            ),
            feature_group_count=groups,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )

        if self.padding == "CIRCULAR":
            y = wrap_circular(y, inputs.shape[1 : nd + 1], strides, self.transpose_kernel)

        if bias is not None:
            y += bias
        if len(batch_shape) != 1:
            y = jnp.reshape(y, batch_shape + y.shape[1:])
        return y


# ----------------------------------------------------------------- embedding ---


class Embed(nn.Embed):
    """``flax.linen.Embed`` initialized as ``torch.nn.Embedding``, with its lookup options.

    ``embedding (num_embeddings, features)`` is N(0, 1) (Flax's default has std
    1/sqrt(features)); row ``padding_idx`` starts at zero and, as in torch,
    receives no gradient: lookups of that index pass through
    ``lax.stop_gradient``. Negative ``padding_idx`` counts from the end, as torch.
    ``embedding_init=None`` means torch's default (:func:`initjax.embedding`).

    ``max_norm``/``norm_type``: looked-up rows whose ``norm_type``-norm exceeds
    ``max_norm`` come out rescaled by ``max_norm / (norm + 1e-7)``, as torch's.
    torch also writes them back into its weight (in place); a linen parameter
    cannot change inside ``apply``, so the updated table is
    ``layer.apply(variables, inputs, method="renormed")`` (or
    :func:`initjax.linen.embedding_renorm`), to store back yourself; the
    gradient reaches the table as torch's reaches its renormed weight.
    ``scale_grad_by_freq``: each row's gradient is divided by how often its
    index occurs in ``inputs``, as torch.

    torch -> Flax: ``embedding = W``. Not reproduced: ``sparse``; an
    out-of-range index gives a NaN row (Flax) where torch raises.
    """

    embedding_init: Initializer | None = None
    padding_idx: int | None = None
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False

    def setup(self):
        check_max_norm(self.max_norm, self.norm_type)
        init = _given(self.embedding_init, embedding(self.padding_idx))
        self.embedding = self.param(
            "embedding", init, (self.num_embeddings, self.features), self.param_dtype
        )

    def __call__(self, inputs: Array) -> Array:
        if self.max_norm is None and not self.scale_grad_by_freq:
            out = super().__call__(inputs)
        else:
            if not jnp.issubdtype(jnp.asarray(inputs).dtype, jnp.integer):
                raise ValueError("Input type must be an integer or unsigned integer.")
            (table,) = promote_dtype(self.embedding, dtype=self.dtype, inexact=False)
            out, _ = lookup(
                table,
                inputs,
                max_norm=self.max_norm,
                norm_type=self.norm_type,
                scale_grad_by_freq=self.scale_grad_by_freq,
            )
        if self.padding_idx is None:
            return out
        row = self.padding_idx % self.num_embeddings
        padded = (inputs == row) | (inputs == row - self.num_embeddings)
        return jnp.where(padded[..., None], lax.stop_gradient(out), out)

    def renormed(self, inputs: Array) -> Array:
        """The embedding table after torch's in-place ``max_norm`` renorm for ``inputs``."""
        if self.max_norm is None:
            return self.embedding
        return embedding_renorm(self.embedding, inputs, self.max_norm, self.norm_type)


# ----------------------------------------------------------------- recurrent ---


def _rnn_inits(cell, hidden_size: int) -> dict[str, Initializer]:
    return {
        "kernel_init": _given(cell.kernel_init, rnn_uniform(hidden_size)),
        "recurrent_kernel_init": _given(cell.recurrent_kernel_init, rnn_uniform(hidden_size)),
    }


def _torch_cell(cell, base: type[nn.Module]) -> nn.Module:
    """``base`` in ``cell``'s scope with torch's ``None`` initializers.

    Those are U(+-k) kernels and the summed bias.
    """
    bias_init = _given(cell.bias_init, rnn_bias(cell.features))
    return _stock(cell, base, bias_init=bias_init, **_rnn_inits(cell, cell.features))


class SimpleCell(nn.SimpleCell):
    """``flax.linen.SimpleCell`` initialized as ``torch.nn.RNNCell`` (one step of ``nn.RNN``).

    torch draws every parameter from U(+-k), ``k = 1/sqrt(features)``, and
    keeps two biases, ``b_ih`` and ``b_hh``; the cell adds one bias, so it
    starts as their sum: triangular on [-2k, 2k] (:func:`initjax.rnn_bias`).
    Kernels are U(+-k) (:func:`initjax.rnn_uniform`; not fan-based). ``None``
    means torch's default. torch's ``nonlinearity='relu'`` is
    ``activation_fn=nn.relu``.

    torch -> Flax: ``i.kernel = W_ih.T``, ``h.kernel = W_hh.T``,
    ``i.bias = b_ih + b_hh``.
    """

    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, carry, inputs):
        return _torch_cell(self, nn.SimpleCell)(carry, inputs)


_LSTM_DOC = """

    Gates: Flax's ``(i, f, g, o)`` are torch's, in torch's order: gate ``j``
    is rows ``[j*H:(j+1)*H]`` of torch's stacked ``(4H, .)`` tensors, with
    ``j = 0, 1, 2, 3`` for ``i, f, g, o``. torch draws every parameter from
    U(+-k), ``k = 1/sqrt(features)``, with two biases per gate; the cell has
    one (on the hidden side), so it starts as ``b_ih + b_hh``: triangular on
    [-2k, 2k] (:func:`initjax.rnn_bias`). Kernels are U(+-k)
    (:func:`initjax.rnn_uniform`). ``None`` means torch's default.

    torch -> Flax, for gate ``j`` and ``s = slice(j*H, (j+1)*H)``:
    ``i{j}.kernel = W_ih[s].T``, ``h{j}.kernel = W_hh[s].T``,
    ``h{j}.bias = b_ih[s] + b_hh[s]``. The carry is ``(c, h)`` (torch:
    ``(h, c)``). ``proj_size`` has no equivalent. A torch ``nn.LSTM`` layer is
    ``nn.RNN(cell)`` (``batch_first=True`` layout); bidirectional is
    ``nn.Bidirectional`` with ``_reverse`` weights in the backward cell.
    """


class LSTMCell(nn.LSTMCell):
    __doc__ = "``flax.linen.LSTMCell`` initialized as ``torch.nn.LSTMCell``." + _LSTM_DOC

    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, carry, inputs):
        return _torch_cell(self, nn.LSTMCell)(carry, inputs)


class OptimizedLSTMCell(nn.OptimizedLSTMCell):
    __doc__ = (
        "``flax.linen.OptimizedLSTMCell`` initialized as ``torch.nn.LSTMCell``; "
        "same parameters as :class:`LSTMCell`." + _LSTM_DOC
    )

    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, carry, inputs):
        return _torch_cell(self, nn.OptimizedLSTMCell)(carry, inputs)


class GRUCell(nn.GRUCell):
    """``flax.linen.GRUCell`` initialized as ``torch.nn.GRUCell``.

    Same parameters and equations as Flax's (and torch's):
    ``r = sigmoid(ir(x) + hr(h))``, ``z = sigmoid(iz(x) + hz(h))``,
    ``n = tanh(in(x) + r * hn(h))``, ``h' = (1 - z) * n + z * h``. Gates are
    torch's ``(r, z, n)``: gate ``j`` is rows ``[j*H:(j+1)*H]`` of torch's
    ``(3H, .)`` tensors, ``j = 0, 1, 2`` for ``r, z, n``.

    torch draws every parameter from U(+-k), ``k = 1/sqrt(features)``. The r
    and z gates add torch's two biases, so ``ir.bias``/``iz.bias`` start as
    ``b_ih + b_hh`` (triangular on [-2k, 2k], :func:`initjax.rnn_bias`); the n
    gate keeps both biases apart (``b_hn`` sits inside ``r * (.)``), so
    ``in.bias`` and ``hn.bias`` are each U(+-k). Kernels are U(+-k).
    ``None`` means torch's default; a ``bias_init`` you pass goes to all four
    biases, as in Flax.

    torch -> Flax, ``s_r, s_z, s_n`` the row slices of r, z, n:
    ``ir.kernel = W_ih[s_r].T``, ``iz.kernel = W_ih[s_z].T``,
    ``in.kernel = W_ih[s_n].T``, ``hr/hz/hn.kernel = W_hh[s_r/s_z/s_n].T``,
    ``ir.bias = b_ih[s_r] + b_hh[s_r]``, ``iz.bias = b_ih[s_z] + b_hh[s_z]``,
    ``in.bias = b_ih[s_n]``, ``hn.bias = b_hh[s_n]``. Exact.
    """

    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, carry, inputs):
        h = carry
        inits = _rnn_inits(self, self.features)
        summed = _given(self.bias_init, rnn_bias(self.features))
        single = _given(self.bias_init, rnn_uniform(self.features))

        def dense(name: str, kernel_init: Initializer, bias_init: Initializer | None = None):
            return nn.Dense(
                h.shape[-1],
                use_bias=bias_init is not None,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=kernel_init,
                bias_init=_given(bias_init, nn.initializers.zeros_init()),
                name=name,
            )

        k_in, k_rec = inits["kernel_init"], inits["recurrent_kernel_init"]
        r = self.gate_fn(dense("ir", k_in, summed)(inputs) + dense("hr", k_rec)(h))
        z = self.gate_fn(dense("iz", k_in, summed)(inputs) + dense("hz", k_rec)(h))
        n = self.activation_fn(
            dense("in", k_in, single)(inputs) + r * dense("hn", k_rec, single)(h)
        )
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h


# ----------------------------------------------------------------- attention ---


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
    """``flax.linen.MultiHeadDotProductAttention`` initialized as ``torch.nn.MultiheadAttention``.

    torch's default, with ``E = qkv_features`` (torch's embed_dim):

    - query/key/value kernels ``(in, heads, head_dim)``: when the query, key
      and value inputs all have E features, torch draws ``xavier_uniform_`` on
      its fused ``(3E, E)`` in_proj, so each is U(+-sqrt(6/(4E)))
      (:func:`initjax.mha_in_proj`); otherwise (kdim/vdim) torch uses separate
      matrices, each ``xavier_uniform`` on its flattened ``(in, E)``:
      U(+-sqrt(6/(in + E)));
    - out kernel ``(heads, head_dim, out)``: Linear default U(+-1/sqrt(E));
    - all biases zero (Flax's default already).

    ``kernel_init=None`` means that default for q/k/v and, when
    ``out_kernel_init`` is also None, for the out kernel. As in Flax, a given
    ``kernel_init`` also serves the out kernel unless ``out_kernel_init`` is set.

    torch -> Flax (``h`` heads, ``d`` head_dim): fused
    ``query.kernel = in_proj_weight[:E].T.reshape(E, h, d)``, key ``[E:2E]``,
    value ``[2E:]``, ``query/key/value.bias = in_proj_bias[slice].reshape(h, d)``;
    separate ``key.kernel = k_proj_weight.T.reshape(kdim, h, d)`` (likewise q, v);
    ``out.kernel = out_proj.weight.T.reshape(h, d, E)``, ``out.bias = out_proj.bias``.
    A torch bool ``attn_mask`` (True = blocked) is ``mask = ~attn_mask``.
    Not reproduced: ``add_bias_kv`` (:func:`initjax.mha_bias_kv` has its
    init), ``add_zero_attn``.
    """

    kernel_init: Initializer | None = None

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        inputs_kv: Array | None = None,
        mask: Array | None = None,
        deterministic: bool | None = None,
        dropout_rng: Any = None,
        sow_weights: bool = False,
    ):
        kernel_init, out_kernel_init = self.kernel_init, self.out_kernel_init
        if kernel_init is None:
            keys = inputs_kv if inputs_kv is not None else inputs_k
            keys = inputs_q if keys is None else keys
            values = inputs_kv if inputs_kv is not None else inputs_v
            values = keys if values is None else values
            embed = self.qkv_features or jnp.shape(inputs_q)[-1]
            dims = {jnp.shape(x)[-1] for x in (inputs_q, keys, values)}
            kernel_init = mha_in_proj(embed) if dims == {embed} else xavier_uniform()
            out_kernel_init = _given(out_kernel_init, linear_kernel())
        layer = _stock(
            self,
            nn.MultiHeadDotProductAttention,
            kernel_init=kernel_init,
            out_kernel_init=out_kernel_init,
        )
        return layer(
            inputs_q,
            inputs_k,
            inputs_v,
            inputs_kv=inputs_kv,
            mask=mask,
            deterministic=deterministic,
            dropout_rng=dropout_rng,
            sow_weights=sow_weights,
        )


class MultiHeadAttention(MultiHeadDotProductAttention):
    """Alias of :class:`MultiHeadDotProductAttention`, as in ``flax.linen``."""


# ------------------------------------------------------------ normalization ---


class LayerNorm(nn.LayerNorm):
    """``flax.linen.LayerNorm`` with ``torch.nn.LayerNorm``'s numerics.

    ``epsilon=1e-5`` (Flax: 1e-6) and a two-pass variance
    (``use_fast_variance=False``; Flax's E[x^2]-E[x]^2 loses the variance of
    inputs with a large mean). Scale 1, bias 0, as both.

    torch -> Flax: ``scale = weight``, ``bias = b``;
    ``normalized_shape`` of rank r -> ``reduction_axes = feature_axes =
    (-r, ..., -1)``; ``elementwise_affine=False`` -> ``use_scale=False,
    use_bias=False``; ``bias=False`` -> ``use_bias=False``.
    """

    epsilon: float = LAYER_NORM_EPS
    use_fast_variance: bool = False


class GroupNorm(nn.GroupNorm):
    """``flax.linen.GroupNorm`` with ``torch.nn.GroupNorm``'s numerics.

    ``epsilon=1e-5`` (Flax: 1e-6), two-pass variance. ``num_groups`` keeps
    Flax's default of 32 (torch requires it). Channels last; groups are
    contiguous channels, as torch's.

    torch -> Flax: ``scale = weight``, ``bias = b``, ``num_groups = num_groups``;
    ``affine=False`` -> ``use_scale=False, use_bias=False``.
    """

    epsilon: float = GROUP_NORM_EPS
    use_fast_variance: bool = False


class RMSNorm(nn.RMSNorm):
    """``flax.linen.RMSNorm`` with ``torch.nn.RMSNorm``'s epsilon.

    torch's ``eps=None`` is the float32 machine epsilon, 1.19e-7 (Flax: 1e-6);
    for float64 inputs torch uses float64's epsilon, which this fixed default
    does not follow. torch -> Flax: ``scale = weight``;
    ``elementwise_affine=False`` -> ``use_scale=False``.
    """

    epsilon: float = RMS_NORM_EPS
    use_fast_variance: bool = False


class BatchNorm(nn.BatchNorm):
    """``flax.linen.BatchNorm`` with ``torch.nn.BatchNorm1d/2d/3d``'s numerics.

    - ``momentum=0.9``: Flax's momentum weighs the old running value, torch's
      the new batch, so this is torch's 0.1 (``1 - BATCH_NORM_MOMENTUM``).
      ``momentum=None`` is torch's ``momentum=None``: the cumulative average,
      each training step weighing the new batch ``1 / num_batches_tracked``;
    - the running variance is updated with the *unbiased* batch variance
      (times n/(n-1), n the count reduced per feature, across ``axis_name``
      devices and ``mask`` too), as torch; normalization uses the biased one,
      as both. Flax updates with the biased variance;
    - ``epsilon=1e-5`` (as both), two-pass variance;
    - ``track_num_batches``: keep torch's ``num_batches_tracked`` counter as
      ``batch_stats/num_batches_tracked`` (int32, +1 per training step, as
      torch). ``None`` (default): kept when ``momentum is None``, which needs it.

    ``use_running_average`` must still be given (torch: ``.train()``/``.eval()``).

    torch -> Flax: ``scale = weight``, ``bias = b``, ``batch_stats.mean =
    running_mean``, ``batch_stats.var = running_var``, ``num_batches_tracked``
    when kept (otherwise the port skips it); ``track_running_stats=False`` is
    ``use_running_average=False`` always.
    """

    momentum: float | None = 1.0 - BATCH_NORM_MOMENTUM  # pyright: ignore[reportIncompatibleVariableOverride]
    epsilon: float = BATCH_NORM_EPS
    use_fast_variance: bool = False
    track_num_batches: bool | None = None

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        cumulative = self.momentum is None
        if cumulative and self.track_num_batches is False:
            raise ValueError("momentum=None (torch's cumulative average) needs the batch counter")
        # cumulative: Flax's momentum 0 leaves the batch statistics as the new values
        layer = _stock(self, nn.BatchNorm, momentum=0.0 if cumulative else self.momentum)
        counter = None
        if self.track_num_batches or (self.track_num_batches is None and cumulative):
            counter = self.variable(
                "batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32)
            )
        frozen = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        if frozen or self.is_initializing() or not self.has_variable("batch_stats", "var"):
            return layer(x, use_running_average, mask=mask)
        count = batch_count(
            x,
            self.axis,
            mask=mask,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
        )
        old_mean = self.get_variable("batch_stats", "mean")
        old = self.get_variable("batch_stats", "var")
        y = layer(x, use_running_average, mask=mask)
        new = self.get_variable("batch_stats", "var")
        if counter is not None:
            counter.value = counter.value + 1
        if self.momentum is not None:
            corrected = unbiased_running_var(old, new, count, self.momentum)
            self.put_variable("batch_stats", "var", corrected)
            return y
        factor = 1 / counter.value.astype(old.dtype)  # pyright: ignore[reportOptionalMemberAccess]
        batch_var = unbiased_running_var(old, new, count, 0.0)
        batch_mean = self.get_variable("batch_stats", "mean")
        self.put_variable("batch_stats", "mean", running_average(old_mean, batch_mean, factor))
        self.put_variable("batch_stats", "var", running_average(old, batch_var, factor))
        return y


# ---------------------------------------------------------------- activation ---


class PReLU(nn.PReLU):
    """``flax.linen.PReLU`` with ``torch.nn.PReLU``'s initial slope, 0.25 (Flax: 0.01).

    ``num_parameters=n > 1`` (torch's per-channel slopes): ``negative_slope``
    is ``(n,)``, one slope per channel on the last axis (Flax's channels-last
    layout; torch: axis 1), which must have ``n`` entries. With ``n = 1`` the
    slope is Flax's scalar.

    torch -> Flax: ``negative_slope = weight`` (``weight[0]`` for n = 1).
    """

    negative_slope_init: float = PRELU_INIT
    num_parameters: int = 1

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        n = self.num_parameters
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_parameters must be a positive int, got {n!r}")
        if n == 1:
            return _stock(self, nn.PReLU)(inputs)
        if jnp.ndim(inputs) == 0 or jnp.shape(inputs)[-1] != n:
            raise ValueError(
                f"PReLU(num_parameters={n}) needs {n} channels on the last axis, "
                f"got input shape {jnp.shape(inputs)}"
            )
        slope = self.param(
            "negative_slope",
            lambda _, shape, dtype: jnp.full(shape, self.negative_slope_init, dtype),
            (n,),
            self.param_dtype,
        )
        return jnp.where(inputs >= 0, inputs, jnp.asarray(slope, inputs.dtype) * inputs)
