"""torch's ``MultiheadAttention`` and Transformer modules as ``flax.linen`` modules.

Re-exported by :mod:`initjax.linen`; the computation and the parameter
description live in :mod:`initjax.functional.attention`, shared with nnx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Array, Dtype

from ..defaults import LAYER_NORM_EPS, linear_bias, linear_kernel
from ..functional import attention as T
from ..functional.attention import generate_square_subsequent_mask
from ..init import ones, zeros
from .layers import Dense, LayerNorm

__all__ = [
    "TorchMultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
    "generate_square_subsequent_mask",
]


def _boxed(init, axes: tuple[str, ...], logical: bool):
    return nn.with_logical_partitioning(init, axes) if logical else init


def _dropout(module: nn.Module, layer: nn.Dropout, deterministic: bool | None) -> T.Drop:
    """``layer`` as a function, or the identity when its rate is 0 (no rng, no flag needed)."""
    if layer.rate == 0:
        return lambda x: x
    det = nn.merge_param("deterministic", module.deterministic, deterministic)  # type: ignore[attr-defined]
    return lambda x: layer(x, deterministic=det)


class TorchMultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` with torch's constructor, call and initialization.

    ``__call__(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(attn_output, attn_weights)`` with torch's shapes: inputs ``(L, N, E)``
    (``(N, L, E)`` with ``batch_first``, ``(L, E)`` unbatched); bool masks
    ``True`` = masked out, float masks added; ``attn_mask`` ``(L, S)`` or
    ``(N*num_heads, L, S)``. Fully masked rows give NaN with
    ``need_weights=True`` and zero attention without, as torch's training path.

    Parameters (Flax layout, as ``MultiHeadDotProductAttention``):
    ``query/key/value: {kernel (in, h, d), bias (h, d)}``, ``out: {kernel
    (h, d, E), bias (E,)}``, ``bias_k/bias_v (h, d)``; ported to and from
    torch's ``in_proj_weight`` (or ``q/k/v_proj_weight``), ``in_proj_bias``,
    ``out_proj.*``, ``bias_k/bias_v`` by :mod:`initjax.port` without ``rename``.
    Initialized as torch (``xavier_weights``: as ``nn.Transformer`` re-draws
    them). ``logical_axes``: every parameter boxed with logical axis names
    (``embed``, ``heads``, ``head_dim``) for ``nn.logical_to_mesh_sharding``.
    ``deterministic`` (field or call): turns off attention dropout.
    """

    embed_dim: int
    num_heads: int
    dropout: float = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: int | None = None
    vdim: int | None = None
    batch_first: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    deterministic: bool | None = None
    xavier_weights: bool = False
    logical_axes: bool = False

    @property
    def config(self) -> T.AttentionConfig:
        return T.AttentionConfig(
            self.embed_dim,
            self.num_heads,
            self.dropout,
            self.bias,
            self.add_bias_kv,
            self.add_zero_attn,
            self.kdim,
            self.vdim,
            self.batch_first,
        )

    @nn.compact
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
        *,
        deterministic: bool | None = None,
    ) -> tuple[Array, Array | None]:
        cfg = self.config
        groups: dict[str, dict[str, T.Param]] = {}
        params: dict[str, Any] = {}
        for path, spec in cfg.params(xavier=self.xavier_weights).items():
            if len(path) == 1:  # bias_k, bias_v
                init = _boxed(spec.init, spec.axes, self.logical_axes)
                params[path[0]] = self.param(path[0], init, spec.shape, self.param_dtype)
            else:
                groups.setdefault(path[0], {})[path[1]] = spec
        for name, specs in groups.items():  # query, key, value, out: {kernel, bias}
            params[name] = self.param(name, self._group_init(specs))
        drop = _dropout(self, nn.Dropout(cfg.dropout, name="attn_dropout"), deterministic)
        return T.multihead_attention(
            params,
            cfg,
            query,
            key,
            value,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            dropout=drop,
            dtype=self.dtype,
        )

    def _group_init(self, specs: Mapping[str, T.Param]) -> Callable[[jax.Array], dict]:
        def init(key):
            keys = jax.random.split(key, len(specs))
            return {
                name: _boxed(s.init, s.axes, self.logical_axes)(k, s.shape, self.param_dtype)
                for (name, s), k in zip(specs.items(), keys, strict=True)
            }

        return init


class _Block(nn.Module):
    """What the two Transformer layers share: fields and their sublayers."""

    d_model: int
    nhead: int
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: T.Activation = "relu"
    layer_norm_eps: float = LAYER_NORM_EPS
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    deterministic: bool | None = None
    xavier_weights: bool = False
    logical_axes: bool = False

    def _attention(self, name: str) -> TorchMultiheadAttention:
        return TorchMultiheadAttention(
            self.d_model,
            self.nhead,
            dropout=self.dropout,
            bias=self.bias,
            batch_first=self.batch_first,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            deterministic=self.deterministic,
            xavier_weights=self.xavier_weights,
            logical_axes=self.logical_axes,
            name=name,
        )

    def _linear(self, features: int, fan_in: int, axes: tuple[str, str], name: str) -> Dense:
        kernel = T.ff_kernel_init(self.xavier_weights) or linear_kernel()
        return Dense(
            features,
            use_bias=self.bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_boxed(kernel, axes, self.logical_axes),
            bias_init=_boxed(linear_bias(fan_in), axes[1:], self.logical_axes),
            name=name,
        )

    def _norm(self, name: str) -> LayerNorm:
        return _layer_norm(self, name)

    def _sublayers(self) -> None:
        T.check_ints(d_model=self.d_model, nhead=self.nhead, dim_feedforward=self.dim_feedforward)
        T.check_rate(self.dropout)
        self.linear1 = self._linear(self.dim_feedforward, self.d_model, T.FF_IN_AXES, "linear1")
        self.linear2 = self._linear(self.d_model, self.dim_feedforward, T.FF_OUT_AXES, "linear2")

    def _common(self, deterministic: bool | None) -> dict[str, Any]:
        return {
            "linear1": self.linear1,
            "linear2": self.linear2,
            "activation": T.activation_fn(self.activation),
            "dropout": _dropout(self, self.ff_dropout, deterministic),
            "norm_first": self.norm_first,
        }


def _layer_norm(m: Any, name: str | None, *, parent: Any = None) -> LayerNorm:
    extra = {} if parent is None else {"parent": parent}
    return LayerNorm(
        epsilon=m.layer_norm_eps,
        use_bias=m.bias,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        scale_init=_boxed(ones(), T.NORM_AXES, m.logical_axes),
        bias_init=_boxed(zeros(), T.NORM_AXES, m.logical_axes),
        name=name,
        **extra,
    )


class TransformerEncoderLayer(_Block):
    """``torch.nn.TransformerEncoderLayer`` with torch's constructor, call and initialization.

    ``__call__(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``.
    Sublayers under torch's names (``self_attn``, ``linear1``, ``linear2``,
    ``norm1``, ``norm2``), so a torch state_dict ports without ``rename``.
    ``activation``: ``"relu"``, ``"gelu"`` (exact) or a callable; ``norm_first``:
    pre-norm. ``deterministic`` (field or call) turns dropout off (torch's
    ``eval()``); with ``dropout=0`` it is not needed. ``xavier_weights``:
    weight matrices drawn as ``nn.Transformer`` re-draws them.
    """

    def setup(self):
        self.self_attn = self._attention("self_attn")
        self._sublayers()
        self.norm1, self.norm2 = self._norm("norm1"), self._norm("norm2")
        self.ff_dropout = nn.Dropout(self.dropout)
        self.dropout1, self.dropout2 = nn.Dropout(self.dropout), nn.Dropout(self.dropout)

    def __call__(
        self,
        src: Array,
        src_mask: Array | None = None,
        src_key_padding_mask: Array | None = None,
        is_causal: bool = False,
        *,
        deterministic: bool | None = None,
    ) -> Array:
        return T.encoder_layer(
            src,
            self_attn=lambda *a, **k: self.self_attn(*a, **k, deterministic=deterministic),
            norm1=self.norm1,
            norm2=self.norm2,
            dropout1=_dropout(self, self.dropout1, deterministic),
            dropout2=_dropout(self, self.dropout2, deterministic),
            src_mask=src_mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=is_causal,
            **self._common(deterministic),
        )


class TransformerDecoderLayer(_Block):
    """``torch.nn.TransformerDecoderLayer`` with torch's constructor, call and initialization.

    ``__call__(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None,
    tgt_is_causal=False, memory_is_causal=False)``. Sublayers ``self_attn``,
    ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``..``norm3``; other
    fields as :class:`TransformerEncoderLayer`.
    """

    def setup(self):
        self.self_attn = self._attention("self_attn")
        self.multihead_attn = self._attention("multihead_attn")
        self._sublayers()
        self.norm1, self.norm2, self.norm3 = (self._norm(f"norm{i}") for i in (1, 2, 3))
        self.ff_dropout = nn.Dropout(self.dropout)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(self.dropout) for _ in "123")

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
        *,
        deterministic: bool | None = None,
    ) -> Array:
        return T.decoder_layer(
            tgt,
            memory,
            self_attn=lambda *a, **k: self.self_attn(*a, **k, deterministic=deterministic),
            multihead_attn=lambda *a, **k: self.multihead_attn(
                *a, **k, deterministic=deterministic
            ),
            norm1=self.norm1,
            norm2=self.norm2,
            norm3=self.norm3,
            dropout1=_dropout(self, self.dropout1, deterministic),
            dropout2=_dropout(self, self.dropout2, deterministic),
            dropout3=_dropout(self, self.dropout3, deterministic),
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
            **self._common(deterministic),
        )


def _seed_copy(module: nn.Module, tree: Mapping[str, Any], redrawn: bool) -> None:
    """Put ``tree`` (another layer's params) into ``module`` before its first call, so its
    ``self.param`` calls find them: a deep copy. ``redrawn``: leave the weight matrices
    (``kernel``) to their own draw, as ``nn.Transformer``'s xavier re-draw does; an
    attention projection's ``{kernel, bias}`` is drawn whole then (its bias is 0 either way).
    """
    for name, value in tree.items():
        child = getattr(module, name, None) if isinstance(module, _Block) else None
        if isinstance(child, nn.Module):
            _seed_copy(child, value, redrawn)
        elif not (redrawn and (name == "kernel" or "kernel" in getattr(value, "keys", list)())):
            module.put_variable("params", name, value)


class _Stack(nn.Module):
    """``layer`` cloned ``num_layers`` times (``layers_0``...), then the optional ``norm``."""

    def _layers(self, layer: _Block, num_layers: int) -> list[Any]:
        T.check_ints(num_layers=num_layers)
        return [layer.clone(parent=None, name=None) for _ in range(num_layers)]

    def _run(self, x: Array, call: Callable[[Any, Array], Array]) -> Array:
        layers = self.layers  # type: ignore[attr-defined]
        for i, layer in enumerate(layers):
            if i and self.is_initializing():
                _seed_copy(layer, layers[0].variables["params"], layer.xavier_weights)
            x = call(layer, x)
        norm = self.norm  # type: ignore[attr-defined]
        return x if norm is None else norm(x)


class TransformerEncoder(_Stack):
    """``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm=None)``.

    The layers start as copies of one another (torch deep-copies
    ``encoder_layer``); with ``xavier_weights`` layers their weight matrices
    are drawn per layer, as after ``nn.Transformer``'s re-draw. Parameters
    under ``layers_0``.. and ``norm``: torch's ``layers.0``.., ``norm``.
    ``__call__(src, mask=None, src_key_padding_mask=None, is_causal=None)``;
    ``is_causal=None`` uses ``mask`` as given (torch's detection picks a
    kernel that gives the same values). Positions of ``src_key_padding_mask``
    are computed (torch's eval-mode nested-tensor path writes 0 there).
    """

    encoder_layer: TransformerEncoderLayer
    num_layers: int
    norm: nn.Module | None = None

    def setup(self):
        self.layers = self._layers(self.encoder_layer, self.num_layers)

    def __call__(
        self,
        src: Array,
        mask: Array | None = None,
        src_key_padding_mask: Array | None = None,
        is_causal: bool | None = None,
        *,
        deterministic: bool | None = None,
    ) -> Array:
        causal = T.causal_hint(is_causal)
        return self._run(
            src,
            lambda layer, x: layer(
                x, mask, src_key_padding_mask, causal, deterministic=deterministic
            ),
        )


class TransformerDecoder(_Stack):
    """``torch.nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``; see
    :class:`TransformerEncoder`. ``__call__(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
    memory_is_causal=False)``."""

    decoder_layer: TransformerDecoderLayer
    num_layers: int
    norm: nn.Module | None = None

    def setup(self):
        self.layers = self._layers(self.decoder_layer, self.num_layers)

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
        *,
        deterministic: bool | None = None,
    ) -> Array:
        causal = T.causal_hint(tgt_is_causal)
        return self._run(
            tgt,
            lambda layer, x: layer(
                x,
                memory,
                tgt_mask,
                memory_mask,
                tgt_key_padding_mask,
                memory_key_padding_mask,
                causal,
                memory_is_causal,
                deterministic=deterministic,
            ),
        )


class Transformer(nn.Module):
    """``torch.nn.Transformer`` with torch's constructor, call and initialization.

    ``encoder`` (``num_encoder_layers`` encoder layers and a final
    ``LayerNorm``) and ``decoder`` (likewise), as torch's. Initialization as
    torch's: layers are copies of one layer, then every weight matrix is
    re-drawn with ``xavier_uniform_`` (Linear biases therefore stay equal
    across layers). ``__call__(src, tgt, src_mask=None, tgt_mask=None,
    memory_mask=None, src_key_padding_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
    memory_is_causal=False)``. ``custom_encoder``/``custom_decoder`` are not
    supported: compose :class:`TransformerEncoder`/:class:`TransformerDecoder`.
    """

    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: T.Activation = "relu"
    layer_norm_eps: float = LAYER_NORM_EPS
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    deterministic: bool | None = None
    logical_axes: bool = False

    generate_square_subsequent_mask = staticmethod(T.generate_square_subsequent_mask)

    def setup(self):
        fields = {
            name: getattr(self, name)
            for name in (
                "d_model",
                "nhead",
                "dim_feedforward",
                "dropout",
                "activation",
                "layer_norm_eps",
                "batch_first",
                "norm_first",
                "bias",
                "dtype",
                "param_dtype",
                "deterministic",
                "logical_axes",
            )
        }
        enc = TransformerEncoderLayer(**fields, xavier_weights=True, parent=None)
        dec = TransformerDecoderLayer(**fields, xavier_weights=True, parent=None)
        self.encoder = TransformerEncoder(
            enc, self.num_encoder_layers, _layer_norm(self, None, parent=None)
        )
        self.decoder = TransformerDecoder(
            dec, self.num_decoder_layers, _layer_norm(self, None, parent=None)
        )

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
        *,
        deterministic: bool | None = None,
    ) -> Array:
        T.check_transformer_inputs(
            jnp.asarray(src), jnp.asarray(tgt), self.d_model, self.batch_first
        )
        memory = self.encoder(
            src, src_mask, src_key_padding_mask, src_is_causal, deterministic=deterministic
        )
        return self.decoder(
            tgt,
            memory,
            tgt_mask,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal,
            memory_is_causal,
            deterministic=deterministic,
        )
