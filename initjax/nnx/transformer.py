"""torch's ``MultiheadAttention`` and Transformer modules as ``flax.nnx`` modules.

Re-exported by :mod:`initjax.nnx`; the computation and the parameter
description live in :mod:`initjax.functional.attention`, shared with linen.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype

from ..defaults import LAYER_NORM_EPS
from ..functional import attention as T
from ..functional.attention import generate_square_subsequent_mask
from .layers import LayerNorm, Linear

__all__ = [
    "TorchMultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
    "generate_square_subsequent_mask",
]

Array = jax.Array


def _meta(axes: tuple[str, ...], logical: bool) -> dict[str, Any]:
    """Logical axis names as nnx sharding metadata (applied by ``nnx.get_partition_spec``
    under ``nn.logical_axis_rules``, not at creation: no mesh is needed to build)."""
    return {"out_sharding": axes, "eager_sharding": False} if logical else {}


class TorchMultiheadAttention(nnx.Module):
    """``torch.nn.MultiheadAttention`` with torch's constructor, call and initialization.

    ``TorchMultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True,
    add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None,
    batch_first=False, *, rngs)``; ``__call__(query, key, value,
    key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output,
    attn_weights)`` with torch's shapes and mask conventions (bool ``True`` =
    masked out, float masks added); see :class:`initjax.linen.TorchMultiheadAttention`.

    Parameters (Flax layout): ``query/key/value: {kernel (in, h, d), bias (h, d)}``,
    ``out: {kernel (h, d, E), bias (E,)}``, ``bias_k/bias_v (h, d)``; ported to and
    from torch's keys by :mod:`initjax.port` without ``rename``. Attention
    dropout follows ``.train()``/``.eval()``. ``logical_axes``: every parameter
    carries logical axis names (``embed``, ``heads``, ``head_dim``) as sharding metadata.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        xavier_weights: bool = False,
        logical_axes: bool = False,
        rngs: nnx.Rngs,
    ):
        cfg = T.AttentionConfig(
            embed_dim,
            num_heads,
            dropout,
            bias,
            add_bias_kv,
            add_zero_attn,
            kdim,
            vdim,
            batch_first,
        )
        self.config = cfg
        self.dtype, self.param_dtype = dtype, param_dtype
        groups: dict[str, dict[str, nnx.Param[Array]]] = {}
        for path, spec in cfg.params(xavier=xavier_weights).items():
            value = spec.init(rngs.params(), spec.shape, param_dtype)
            param = nnx.Param(value, **_meta(spec.axes, logical_axes))
            if len(path) == 1:
                setattr(self, path[0], param)
            else:
                groups.setdefault(path[0], {})[path[1]] = param
        for name, group in groups.items():
            setattr(self, name, nnx.Dict(group))
        self.attn_dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def _params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in self.config.params():
            if len(path) == 1:
                out[path[0]] = getattr(self, path[0])[...]
            else:
                out.setdefault(path[0], {})[path[1]] = getattr(self, path[0])[path[1]][...]
        return out

    def _redraw_weights(self, rngs: nnx.Rngs) -> None:
        """``nn.Transformer``'s xavier re-draw of this module's weight matrices."""
        for path, spec in self.config.params(xavier=True).items():
            if path[-1] == "kernel":
                param = getattr(self, path[0])[path[1]]
                param.set_value(spec.init(rngs.params(), spec.shape, param.dtype))

    def __call__(
        self,
        query: Array,
        key: Array,
        value: Array,
        key_padding_mask: Array | None = None,
        need_weights: bool = True,
        attn_mask: Array | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Array, Array | None]:
        return T.multihead_attention(
            self._params(),
            self.config,
            query,
            key,
            value,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            dropout=self.attn_dropout,
            dtype=self.dtype,
        )


@dataclass(frozen=True)
class _Parts:
    """Builds a Transformer layer's sublayers from its constructor arguments."""

    d_model: int
    nhead: int
    dim_feedforward: int
    dropout: float
    layer_norm_eps: float
    batch_first: bool
    bias: bool
    dtype: Dtype | None
    param_dtype: Dtype
    xavier_weights: bool
    logical_axes: bool
    rngs: nnx.Rngs

    def __post_init__(self):
        T.check_ints(d_model=self.d_model, nhead=self.nhead, dim_feedforward=self.dim_feedforward)
        T.check_rate(self.dropout)

    def attention(self) -> TorchMultiheadAttention:
        return TorchMultiheadAttention(
            self.d_model,
            self.nhead,
            self.dropout,
            self.bias,
            batch_first=self.batch_first,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            xavier_weights=self.xavier_weights,
            logical_axes=self.logical_axes,
            rngs=self.rngs,
        )

    def linear(self, first: bool) -> Linear:
        d, f = self.d_model, self.dim_feedforward
        (fan_in, out), axes = ((d, f), T.FF_IN_AXES) if first else ((f, d), T.FF_OUT_AXES)
        return Linear(
            fan_in,
            out,
            use_bias=self.bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=T.ff_kernel_init(self.xavier_weights),
            kernel_metadata=_meta(axes, self.logical_axes),
            bias_metadata=_meta(axes[1:], self.logical_axes),
            rngs=self.rngs,
        )

    def norm(self) -> LayerNorm:
        return _layer_norm(
            self.d_model,
            self.layer_norm_eps,
            self.bias,
            self.dtype,
            self.param_dtype,
            self.logical_axes,
            self.rngs,
        )

    def drop(self) -> nnx.Dropout:
        return nnx.Dropout(self.dropout, rngs=self.rngs)


class _Block(nnx.Module):
    """What the two Transformer layers share."""

    linear1: Linear
    linear2: Linear
    dropout: nnx.Dropout
    activation: T.Activation
    norm_first: bool
    xavier_weights: bool

    def _common(self) -> dict[str, Any]:
        return {
            "linear1": self.linear1,
            "linear2": self.linear2,
            "activation": T.activation_fn(self.activation),
            "dropout": self.dropout,
            "norm_first": self.norm_first,
        }

    def _redraw_weights(self, rngs: nnx.Rngs) -> None:
        """``nn.Transformer``'s xavier re-draw of this layer's weight matrices."""
        for _, node in nnx.iter_graph(self):
            if isinstance(node, TorchMultiheadAttention):
                node._redraw_weights(rngs)
        kernel = T.ff_kernel_init(True)
        assert kernel is not None
        for linear in (self.linear1, self.linear2):
            k = linear.kernel
            k.set_value(kernel(rngs.params(), k.shape, k.dtype))


def _layer_norm(d_model, eps, bias, dtype, param_dtype, logical_axes, rngs) -> LayerNorm:
    return LayerNorm(
        d_model,
        epsilon=eps,
        use_bias=bias,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_metadata=_meta(T.NORM_AXES, logical_axes),
        bias_metadata=_meta(T.NORM_AXES, logical_axes),
        rngs=rngs,
    )


class TransformerEncoderLayer(_Block):
    """``torch.nn.TransformerEncoderLayer`` with torch's constructor, call and initialization.

    ``TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, batch_first=False, norm_first=False,
    bias=True, *, rngs)``; ``__call__(src, src_mask=None, src_key_padding_mask=None,
    is_causal=False)``. Sublayers under torch's names and in torch's
    construction order (``self_attn``, ``linear1``, ``dropout``, ``linear2``,
    ``norm1``, ``norm2``, ``dropout1``, ``dropout2``). ``activation``: "relu",
    "gelu" (exact) or a callable. Dropout follows ``.train()``/``.eval()``.
    ``xavier_weights``: weight matrices drawn as ``nn.Transformer`` re-draws them.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: T.Activation = "relu",
        layer_norm_eps: float = LAYER_NORM_EPS,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        xavier_weights: bool = False,
        logical_axes: bool = False,
        rngs: nnx.Rngs,
    ):
        T.activation_fn(activation)  # checked now, as torch does
        p = _Parts(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            layer_norm_eps,
            batch_first,
            bias,
            dtype,
            param_dtype,
            xavier_weights,
            logical_axes,
            rngs,
        )
        self.xavier_weights = xavier_weights  # then torch's construction order:
        self.self_attn = p.attention()
        self.linear1, self.dropout, self.linear2 = p.linear(True), p.drop(), p.linear(False)
        self.norm_first = norm_first
        self.norm1, self.norm2 = p.norm(), p.norm()
        self.dropout1, self.dropout2 = p.drop(), p.drop()
        self.activation = activation

    def __call__(
        self,
        src: Array,
        src_mask: Array | None = None,
        src_key_padding_mask: Array | None = None,
        is_causal: bool = False,
    ) -> Array:
        return T.encoder_layer(
            src,
            self_attn=self.self_attn,
            norm1=self.norm1,
            norm2=self.norm2,
            dropout1=self.dropout1,
            dropout2=self.dropout2,
            src_mask=src_mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=is_causal,
            **self._common(),
        )


class TransformerDecoderLayer(_Block):
    """``torch.nn.TransformerDecoderLayer`` with torch's constructor, call and initialization.

    Arguments as :class:`TransformerEncoderLayer`; ``__call__(tgt, memory,
    tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    Sublayers ``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
    ``norm1``..``norm3``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: T.Activation = "relu",
        layer_norm_eps: float = LAYER_NORM_EPS,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        xavier_weights: bool = False,
        logical_axes: bool = False,
        rngs: nnx.Rngs,
    ):
        T.activation_fn(activation)  # checked now, as torch does
        p = _Parts(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            layer_norm_eps,
            batch_first,
            bias,
            dtype,
            param_dtype,
            xavier_weights,
            logical_axes,
            rngs,
        )
        self.xavier_weights = xavier_weights  # then torch's construction order:
        self.self_attn, self.multihead_attn = p.attention(), p.attention()
        self.linear1, self.dropout, self.linear2 = p.linear(True), p.drop(), p.linear(False)
        self.norm_first = norm_first
        self.norm1, self.norm2, self.norm3 = p.norm(), p.norm(), p.norm()
        self.dropout1, self.dropout2, self.dropout3 = p.drop(), p.drop(), p.drop()
        self.activation = activation

    def __call__(
        self,
        tgt: Array,
        memory: Array,
        tgt_mask: Array | None = None,
        memory_mask: Array | None = None,
        tgt_key_padding_mask: Array | None = None,
        memory_key_padding_mask: Array | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Array:
        return T.decoder_layer(
            tgt,
            memory,
            self_attn=self.self_attn,
            multihead_attn=self.multihead_attn,
            norm1=self.norm1,
            norm2=self.norm2,
            norm3=self.norm3,
            dropout1=self.dropout1,
            dropout2=self.dropout2,
            dropout3=self.dropout3,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
            **self._common(),
        )


def _construction_order(copy: nnx.Module, original: nnx.Module) -> None:
    """Put a deep copy's attributes back in ``original``'s order (nnx copies sort them):
    the construction order, which :mod:`initjax.replay` reads as torch's drawing order."""
    attrs, first = vars(copy), list(vars(original))
    items = [(k, attrs[k]) for k in first if k in attrs]
    items += [(k, v) for k, v in attrs.items() if k not in vars(original)]
    attrs.clear()
    attrs.update(items)
    for name, value in items:
        twin = vars(original).get(name)
        if isinstance(value, nnx.Module) and isinstance(twin, nnx.Module):
            _construction_order(value, twin)


def _clones(layer: _Block, num_layers: int, rngs: nnx.Rngs | None) -> nnx.List[Any]:
    """torch's ``_get_clones``: ``num_layers`` deep copies of ``layer``.

    Each copy's dropout streams are folded with its index (torch's layers draw
    different masks from one generator). A layer built with ``xavier_weights``
    has its weight matrices re-drawn per copy from ``rngs``, as ``nn.Transformer``.
    """
    T.check_ints(num_layers=num_layers)
    if layer.xavier_weights and rngs is None:
        raise ValueError("a layer with xavier_weights=True is re-drawn per copy: pass rngs=")
    copies = []
    for i in range(num_layers):
        copy = deepcopy(layer)
        _construction_order(copy, layer)
        for _, node in nnx.iter_graph(copy):
            if isinstance(node, nnx.RngStream):
                node.key.set_value(jax.random.fold_in(node.key.get_value(), i))
        if layer.xavier_weights:
            assert rngs is not None
            copy._redraw_weights(rngs)
        copies.append(copy)
    return nnx.List(copies)


class TransformerEncoder(nnx.Module):
    """``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm=None)``.

    ``layers`` are deep copies of ``encoder_layer`` (identical parameters, as
    torch's); ``norm`` the optional final norm. ``rngs`` is needed only for a
    layer built with ``xavier_weights`` (its weight matrices are re-drawn per
    copy, as ``nn.Transformer`` does). ``__call__(src, mask=None,
    src_key_padding_mask=None, is_causal=None)``; ``is_causal=None`` uses
    ``mask`` as given (torch's detection picks a kernel with the same values).
    Positions of ``src_key_padding_mask`` are computed (torch's eval-mode
    nested-tensor path writes 0 there).
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: nnx.Module | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.layers = _clones(encoder_layer, num_layers, rngs)
        self.num_layers = num_layers
        self.norm = norm

    def __call__(
        self,
        src: Array,
        mask: Array | None = None,
        src_key_padding_mask: Array | None = None,
        is_causal: bool | None = None,
    ) -> Array:
        x, causal = src, T.causal_hint(is_causal)
        for layer in self.layers:
            x = layer(x, mask, src_key_padding_mask, causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nnx.Module):
    """``torch.nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``; see
    :class:`TransformerEncoder`. ``__call__(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
    memory_is_causal=False)``."""

    def __init__(
        self,
        decoder_layer: TransformerDecoderLayer,
        num_layers: int,
        norm: nnx.Module | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.layers = _clones(decoder_layer, num_layers, rngs)
        self.num_layers = num_layers
        self.norm = norm

    def __call__(
        self,
        tgt: Array,
        memory: Array,
        tgt_mask: Array | None = None,
        memory_mask: Array | None = None,
        tgt_key_padding_mask: Array | None = None,
        memory_key_padding_mask: Array | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Array:
        x, causal = tgt, T.causal_hint(tgt_is_causal)
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask,
                memory_mask,
                tgt_key_padding_mask,
                memory_key_padding_mask,
                causal,
                memory_is_causal,
            )
        return x if self.norm is None else self.norm(x)


class Transformer(nnx.Module):
    """``torch.nn.Transformer`` with torch's constructor, call and initialization.

    ``Transformer(d_model=512, nhead=8, num_encoder_layers=6,
    num_decoder_layers=6, dim_feedforward=2048, dropout=0.1, activation="relu",
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, *, rngs)``:
    ``encoder`` and ``decoder`` stacks with final norms. Layers are copies of
    one layer whose weight matrices are then re-drawn with xavier_uniform, as
    torch's ``_reset_parameters`` (Linear biases stay equal across layers).
    ``__call__(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
    memory_is_causal=False)``. ``custom_encoder``/``custom_decoder``: compose
    :class:`TransformerEncoder`/:class:`TransformerDecoder` instead.
    """

    generate_square_subsequent_mask = staticmethod(T.generate_square_subsequent_mask)

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: T.Activation = "relu",
        layer_norm_eps: float = LAYER_NORM_EPS,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        logical_axes: bool = False,
        rngs: nnx.Rngs,
    ):
        args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps)
        kw: Mapping[str, Any] = {
            "dtype": dtype,
            "param_dtype": param_dtype,
            "xavier_weights": True,
            "logical_axes": logical_axes,
            "rngs": rngs,
        }
        norm = (d_model, layer_norm_eps, bias, dtype, param_dtype, logical_axes, rngs)
        enc = TransformerEncoderLayer(*args, batch_first, norm_first, bias, **kw)
        self.encoder = TransformerEncoder(enc, num_encoder_layers, _layer_norm(*norm), rngs=rngs)
        dec = TransformerDecoderLayer(*args, batch_first, norm_first, bias, **kw)
        self.decoder = TransformerDecoder(dec, num_decoder_layers, _layer_norm(*norm), rngs=rngs)
        self.d_model, self.batch_first = d_model, batch_first

    def __call__(
        self,
        src: Array,
        tgt: Array,
        src_mask: Array | None = None,
        tgt_mask: Array | None = None,
        memory_mask: Array | None = None,
        src_key_padding_mask: Array | None = None,
        tgt_key_padding_mask: Array | None = None,
        memory_key_padding_mask: Array | None = None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Array:
        T.check_transformer_inputs(
            jnp.asarray(src), jnp.asarray(tgt), self.d_model, self.batch_first
        )
        memory = self.encoder(src, src_mask, src_key_padding_mask, src_is_causal)
        return self.decoder(
            tgt,
            memory,
            tgt_mask,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            memory_is_causal,
        )
