"""torch's attention and Transformer blocks, described once for linen and nnx.

The thin classes in :mod:`initjax.linen.transformer` and
:mod:`initjax.nnx.transformer` hold the parameters; everything else lives
here as plain functions and frozen configs:

- :class:`AttentionConfig`: ``torch.nn.MultiheadAttention``'s constructor,
  checked, and the module's parameters (Flax layout, torch's default
  initializers from :func:`initjax.defaults.multihead_attention`, logical axis names);
- :func:`multihead_attention`: torch's ``F.multi_head_attention_forward`` in
  pure JAX, with torch's mask conventions (bool ``True`` = masked out, float
  masks added, ``key_padding_mask``, the ``is_causal`` hint, ``bias_k/bias_v``,
  ``add_zero_attn``, head-averaged weights, unbatched and sequence-first inputs);
- :func:`encoder_layer` / :func:`decoder_layer`: the residual blocks of
  ``TransformerEncoderLayer`` / ``TransformerDecoderLayer`` (post- or pre-norm),
  given their sublayers as callables.

Fully masked rows (every key of a query masked out) follow torch's training
path: with ``need_weights=True`` torch's softmax over all ``-inf`` gives NaN
(weights and output); with ``need_weights=False`` (what the Transformer layers
use) ``scaled_dot_product_attention`` gives zero attention, and so does this.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn.initializers import Initializer

from .. import defaults, init

Array = jax.Array
Path = tuple[str, ...]
Activation = str | Callable[[Array], Array]
Drop = Callable[[Array], Array]

#: Logical axis names of every parameter (``logical_axes=True``), by its last name(s).
EMBED, HEADS, HEAD_DIM, MLP = "embed", "heads", "head_dim", "mlp"
_MHA_AXES: dict[Path, tuple[str, ...]] = {
    ("query", "kernel"): (EMBED, HEADS, HEAD_DIM),
    ("key", "kernel"): (EMBED, HEADS, HEAD_DIM),
    ("value", "kernel"): (EMBED, HEADS, HEAD_DIM),
    ("query", "bias"): (HEADS, HEAD_DIM),
    ("key", "bias"): (HEADS, HEAD_DIM),
    ("value", "bias"): (HEADS, HEAD_DIM),
    ("out", "kernel"): (HEADS, HEAD_DIM, EMBED),
    ("out", "bias"): (EMBED,),
    ("bias_k",): (HEADS, HEAD_DIM),
    ("bias_v",): (HEADS, HEAD_DIM),
}
#: linear1/linear2 kernels and biases, norms' scale and bias.
FF_IN_AXES, FF_OUT_AXES, NORM_AXES = (EMBED, MLP), (MLP, EMBED), (EMBED,)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_rate(value: Any, name: str = "dropout") -> float:
    """A dropout probability in [0, 1] (torch raises ``ValueError`` too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name} probability has to be between 0 and 1, but got {value!r}")
    return float(value)


def check_ints(**values: Any) -> None:
    """Raise ``ValueError`` naming the first value that is not a positive int."""
    for name, value in values.items():
        _positive(value, name)


@dataclass(frozen=True)
class Param:
    """One parameter: Flax shape, torch's initializer for it, logical axis names."""

    shape: tuple[int, ...]
    init: Initializer
    axes: tuple[str, ...]


@dataclass(frozen=True)
class AttentionConfig:
    """``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, add_bias_kv,
    add_zero_attn, kdim, vdim, batch_first)``, checked."""

    embed_dim: int
    num_heads: int
    dropout: float = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    kdim: int | None = None
    vdim: int | None = None
    batch_first: bool = False

    def __post_init__(self):
        e = _positive(self.embed_dim, "embed_dim")
        h = _positive(self.num_heads, "num_heads")
        if e % h:
            raise ValueError(f"embed_dim={e} must be divisible by num_heads={h}")
        for name in ("kdim", "vdim"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name)
        check_rate(self.dropout)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def key_dim(self) -> int:
        return self.embed_dim if self.kdim is None else self.kdim

    @property
    def value_dim(self) -> int:
        return self.embed_dim if self.vdim is None else self.vdim

    def params(self, *, xavier: bool = False) -> dict[Path, Param]:
        """The module's parameters: Flax layout, torch's initializers, axis names.

        The initializers are :func:`initjax.defaults.multihead_attention`'s:
        fused q/k/v U(+-sqrt(6/(4E))) or separate xavier_uniform, out kernel the
        Linear default, biases 0, bias_k/bias_v N(0, 1/E). ``xavier``:
        ``nn.Transformer``'s re-draw of every parameter that has more than one
        dimension in torch (the out kernel and bias_k/bias_v change; q/k/v keep
        the same distribution).
        """
        h, d, e = self.num_heads, self.head_dim, self.embed_dim
        shapes: dict[Path, tuple[int, ...]] = {
            ("query", "kernel"): (e, h, d),
            ("key", "kernel"): (self.key_dim, h, d),
            ("value", "kernel"): (self.value_dim, h, d),
            ("out", "kernel"): (h, d, e),
        }
        if self.bias:
            shapes.update({(n, "bias"): (h, d) for n in ("query", "key", "value")})
            shapes[("out", "bias")] = (e,)
        if self.add_bias_kv:
            shapes[("bias_k",)] = shapes[("bias_v",)] = (h, d)
        fused = self.key_dim == e and self.value_dim == e
        table = defaults.multihead_attention(e, fused=fused)
        inits = {p: table[p] for p in shapes}
        if xavier:
            inits[("out", "kernel")] = init.xavier_uniform(in_axis=(0, 1), out_axis=2)
            bound = math.sqrt(3 / e)  # xavier_uniform_ on (1, 1, E): both fans E
            for p in (("bias_k",), ("bias_v",)):
                if p in inits:
                    inits[p] = init.uniform(-bound, bound)
        return {p: Param(s, inits[p], _MHA_AXES[p]) for p, s in shapes.items()}


# ------------------------------------------------------------------ masks ---


def generate_square_subsequent_mask(sz: int, dtype: Any = jnp.float32) -> Array:
    """``nn.Transformer.generate_square_subsequent_mask(sz)``: a float ``(sz, sz)`` mask,
    ``-inf`` above the diagonal (masked out) and 0 elsewhere."""
    n = int(sz)
    if n < 0:
        raise ValueError(f"sz must be >= 0, got {sz!r}")
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    return jnp.where(upper, -jnp.inf, 0.0).astype(dtype)


def additive(mask: Any, name: str, dtype: Any) -> Array | None:
    """torch's ``_canonical_mask``: a bool mask (``True`` = masked out) as ``-inf``/0, a float
    mask as is (cast to ``dtype``); ``None`` stays ``None``."""
    if mask is None:
        return None
    m = jnp.asarray(mask)
    if m.dtype == jnp.bool_:
        return jnp.where(m, -jnp.inf, 0.0).astype(dtype)
    if not jnp.issubdtype(m.dtype, jnp.floating):
        raise TypeError(f"only bool and floating types of {name} are supported, got {m.dtype}")
    return m.astype(dtype)


def _pad_last(x: Array | None) -> Array | None:
    if x is None:
        return None
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, 1)])


def _safe_softmax(x: Array) -> Array:
    """Softmax with zero weights (and finite gradients) for rows that are all ``-inf``:
    ``scaled_dot_product_attention``'s ``_safe_softmax``. One max, exp and sum, as a
    plain softmax: a dead row's max is ``-inf``, shifted by 0 instead, its sum is 0."""
    top = lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    e = jnp.exp(x - jnp.where(top == -jnp.inf, 0.0, top))
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total == 0, 1.0, total)


# -------------------------------------------------------------- attention ---


def _check_shapes(cfg: AttentionConfig, query, key, value, kpm, attn_mask) -> bool:
    """torch's ``_mha_shape_check``; returns whether the input is batched."""
    if query.ndim not in (2, 3):
        raise ValueError(f"query should be unbatched 2D or batched 3D, got {query.ndim}-D")
    batched = query.ndim == 3
    for name, x in (("key", key), ("value", value)):
        if x.ndim != query.ndim:
            raise ValueError(
                f"for {query.ndim}-D query, {name} should be {query.ndim}-D, got {x.ndim}-D"
            )
    if kpm is not None and kpm.ndim != query.ndim - 1:
        raise ValueError(
            f"for {query.ndim}-D query, key_padding_mask should be {query.ndim - 1}-D, "
            f"got {kpm.ndim}-D"
        )
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        raise ValueError(f"attn_mask should be 2D or 3D, got {attn_mask.ndim}-D")
    widths = {"query": (query, cfg.embed_dim), "key": (key, cfg.key_dim)}
    widths["value"] = (value, cfg.value_dim)
    for name, (x, want) in widths.items():
        if x.shape[-1] != want:
            raise ValueError(f"{name} has {x.shape[-1]} features, expected {want}")
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"key shape {key.shape} does not match value shape {value.shape}")
    return batched


def multihead_attention(
    params: Mapping[str, Any],
    cfg: AttentionConfig,
    query: Array,
    key: Array,
    value: Array,
    *,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    dropout: Drop | None = None,
    dtype: Any = None,
) -> tuple[Array, Array | None]:
    """``torch.nn.MultiheadAttention.forward`` on Flax-layout ``params``.

    ``params``: ``{"query": {"kernel", "bias"}, "key": ..., "value": ...,
    "out": ..., "bias_k", "bias_v"}`` as :meth:`AttentionConfig.params`
    describes. ``dropout`` is applied to the attention weights (and the
    returned weights are the dropped ones, as torch's). Returns
    ``(attn_output, attn_weights)``: ``(L, N, E)`` or ``(N, L, E)``
    (``batch_first``) or ``(L, E)`` unbatched; weights ``(N, L, S)`` averaged
    or ``(N, H, L, S)``, ``(L, S)``/``(H, L, S)`` unbatched, ``None`` unless
    ``need_weights``. ``S`` counts the ``bias_k`` and zero-attention columns.
    """
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    kpm = None if key_padding_mask is None else jnp.asarray(key_padding_mask)
    am = None if attn_mask is None else jnp.asarray(attn_mask)
    batched = _check_shapes(cfg, query, key, value, kpm, am)
    if dtype is None:
        dtype = jnp.result_type(query, key, value, *jax.tree.leaves(params))
    cast = partial(jax.tree.map, lambda x: jnp.asarray(x, dtype))
    query, key, value, params = cast((query, key, value, dict(params)))
    if not batched:
        query, key, value = query[:, None], key[:, None], value[:, None]
        kpm = None if kpm is None else kpm[None]  # a 3-D attn_mask is (H, L, S): N = 1
    # the inputs' layout, read by the einsums (no transposes): (N, L, E) or (L, N, E)
    io = "nle" if batched and cfg.batch_first else "lne"
    tgt_len, bsz = (query.shape[1], query.shape[0]) if io == "nle" else query.shape[:2]
    src_len = key.shape[io.index("l")]
    h, d = cfg.num_heads, cfg.head_dim

    def project(x, name):
        y = jnp.einsum(f"{io},ehd->nlhd", x, params[name]["kernel"])
        return y + params[name]["bias"] if "bias" in params[name] else y

    q, k, v = project(query, "query"), project(key, "key"), project(value, "value")

    if is_causal and am is None:
        raise ValueError(
            "need attn_mask if specifying the is_causal hint; "
            "generate_square_subsequent_mask(L) makes one"
        )
    causal = bool(is_causal) and kpm is None and not need_weights
    if causal:  # torch trusts the hint: scaled_dot_product_attention(is_causal=True)
        mask = None
    else:
        mask = additive(am, "attn_mask", dtype)
        if mask is not None:
            if mask.ndim == 2:
                if mask.shape != (tgt_len, src_len):
                    raise ValueError(
                        f"the shape of the 2D attn_mask is {mask.shape}, but should be "
                        f"{(tgt_len, src_len)}"
                    )
                mask = mask[None, None]
            else:
                if mask.shape != (bsz * h, tgt_len, src_len):
                    raise ValueError(
                        f"the shape of the 3D attn_mask is {mask.shape}, but should be "
                        f"{(bsz * h, tgt_len, src_len)}"
                    )
                mask = mask.reshape(bsz, h, tgt_len, src_len)
        pad = additive(kpm, "key_padding_mask", dtype)
        if pad is not None:
            if pad.shape != (bsz, src_len):
                raise ValueError(
                    f"expected key_padding_mask of shape {(bsz, src_len)}, got {pad.shape}"
                )
            pad = pad[:, None, None, :]
            mask = pad if mask is None else mask + pad

    if cfg.add_bias_kv:
        k = jnp.concatenate([k, jnp.broadcast_to(params["bias_k"], (bsz, 1, h, d))], axis=1)
        v = jnp.concatenate([v, jnp.broadcast_to(params["bias_v"], (bsz, 1, h, d))], axis=1)
        mask = _pad_last(mask)
    if cfg.add_zero_attn:
        k = jnp.concatenate([k, jnp.zeros((bsz, 1, h, d), dtype)], axis=1)
        v = jnp.concatenate([v, jnp.zeros((bsz, 1, h, d), dtype)], axis=1)
        mask = _pad_last(mask)
    total = k.shape[1]
    if causal:
        allowed = jnp.tril(jnp.ones((tgt_len, total), bool))
        mask = jnp.where(allowed, 0.0, -jnp.inf).astype(dtype)[None, None]

    scores = jnp.einsum("nlhd,nshd->nhls", q * math.sqrt(1.0 / d), k)
    if mask is not None:
        scores = scores + mask
    weights = jax.nn.softmax(scores, axis=-1) if need_weights else _safe_softmax(scores)
    if dropout is not None:
        weights = dropout(weights)
    attn = jnp.einsum("nhls,nshd->nlhd", weights, v)
    out = jnp.einsum(f"nlhd,hde->{io}", attn, params["out"]["kernel"])
    if "bias" in params["out"]:
        out = out + params["out"]["bias"]

    if not batched:
        out = out[:, 0]
    if not need_weights:
        return out, None
    if average_attn_weights:
        weights = jnp.mean(weights, axis=1)
    return out, (weights if batched else weights[0])


# ----------------------------------------------------------------- layers ---


def activation_fn(activation: Activation) -> Callable[[Array], Array]:
    """torch's ``activation``: ``"relu"``, ``"gelu"`` (exact, erf-based) or a callable."""
    if callable(activation):
        return activation
    if activation == "relu":
        return jax.nn.relu
    if activation == "gelu":
        return partial(jax.nn.gelu, approximate=False)
    raise ValueError(f"activation should be relu/gelu or a callable, not {activation!r}")


Attend = Callable[..., tuple[Array, Array | None]]
Layer = Callable[[Array], Array]


def _attend(attn: Attend, x: Array, mem: Array, mask, padding, is_causal, drop: Drop) -> Array:
    out = attn(
        x,
        mem,
        mem,
        attn_mask=mask,
        key_padding_mask=padding,
        is_causal=bool(is_causal),
        need_weights=False,
    )[0]
    return drop(out)


def _feed_forward(x, linear1: Layer, linear2: Layer, act, drop: Drop, drop_out: Drop) -> Array:
    return drop_out(linear2(drop(act(linear1(x)))))


def encoder_layer(
    x: Array,
    *,
    self_attn: Attend,
    linear1: Layer,
    linear2: Layer,
    norm1: Layer,
    norm2: Layer,
    activation: Callable[[Array], Array],
    dropout: Drop,
    dropout1: Drop,
    dropout2: Drop,
    norm_first: bool,
    src_mask: Any = None,
    src_key_padding_mask: Any = None,
    is_causal: bool = False,
) -> Array:
    """``TransformerEncoderLayer.forward`` (post-norm, or pre-norm with ``norm_first``)."""

    def sa(y):
        return _attend(self_attn, y, y, src_mask, src_key_padding_mask, is_causal, dropout1)

    def ff(y):
        return _feed_forward(y, linear1, linear2, activation, dropout, dropout2)

    if norm_first:
        x = x + sa(norm1(x))
        return x + ff(norm2(x))
    x = norm1(x + sa(x))
    return norm2(x + ff(x))


def decoder_layer(
    x: Array,
    memory: Array,
    *,
    self_attn: Attend,
    multihead_attn: Attend,
    linear1: Layer,
    linear2: Layer,
    norm1: Layer,
    norm2: Layer,
    norm3: Layer,
    activation: Callable[[Array], Array],
    dropout: Drop,
    dropout1: Drop,
    dropout2: Drop,
    dropout3: Drop,
    norm_first: bool,
    tgt_mask: Any = None,
    memory_mask: Any = None,
    tgt_key_padding_mask: Any = None,
    memory_key_padding_mask: Any = None,
    tgt_is_causal: bool = False,
    memory_is_causal: bool = False,
) -> Array:
    """``TransformerDecoderLayer.forward``: self-attention, cross-attention, feed-forward."""

    def sa(y):
        return _attend(self_attn, y, y, tgt_mask, tgt_key_padding_mask, tgt_is_causal, dropout1)

    def mha(y):
        return _attend(
            multihead_attn,
            y,
            memory,
            memory_mask,
            memory_key_padding_mask,
            memory_is_causal,
            dropout2,
        )

    def ff(y):
        return _feed_forward(y, linear1, linear2, activation, dropout, dropout3)

    if norm_first:
        x = x + sa(norm1(x))
        x = x + mha(norm2(x))
        return x + ff(norm3(x))
    x = norm1(x + sa(x))
    x = norm2(x + mha(x))
    return norm3(x + ff(x))


def causal_hint(is_causal: bool | None) -> bool:
    """The stacks' ``is_causal=None`` ("detect"): torch compares the mask with a causal one
    and, when equal, takes the causal kernel, which gives the same values as the mask; so
    ``None`` is ``False`` here (no data-dependent branch under ``jit``)."""
    return bool(is_causal)


def check_transformer_inputs(src: Array, tgt: Array, d_model: int, batch_first: bool) -> None:
    """``nn.Transformer.forward``'s checks of ``src`` and ``tgt``."""
    if src.ndim == 3 and tgt.ndim == 3:
        axis = 0 if batch_first else 1
        if src.shape[axis] != tgt.shape[axis]:
            raise ValueError(
                f"the batch number of src and tgt must be equal, got {src.shape[axis]} "
                f"and {tgt.shape[axis]}"
            )
    if src.shape[-1] != d_model or tgt.shape[-1] != d_model:
        raise ValueError(
            f"the feature number of src and tgt must be equal to d_model={d_model}, got "
            f"{src.shape[-1]} and {tgt.shape[-1]}"
        )


def ff_kernel_init(xavier: bool) -> Initializer | None:
    """linear1/linear2's kernel: torch's Linear default (``None``), or ``nn.Transformer``'s
    xavier_uniform re-draw (symmetric in the fans, so right on Flax's ``(in, out)``)."""
    return init.xavier_uniform() if xavier else None
