"""torch's EmbeddingBag and InstanceNorm1d/2d/3d as ``flax.nnx`` modules.

Re-exported from :mod:`initjax.nnx`; the computations live in
:mod:`initjax.functional.embedding` and :mod:`initjax.functional.instance_norm`, shared with the
linen layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype
from jax import lax
from jax.nn.initializers import Initializer

from ..defaults import BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, embedding
from ..functional import embedding as E
from ..functional import instance_norm as IN
from ..init import ones, zeros

__all__ = ["EmbeddingBag", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]

Array = jax.Array
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class EmbeddingBag(nnx.Module):
    __doc__ = (
        "``torch.nn.EmbeddingBag(num_embeddings, embedding_dim, ...)`` for ``flax.nnx``; "
        "Flax has none.\n\n    Called as ``layer(inputs, offsets=None, "
        "per_sample_weights=None)``; torch's arguments and defaults."
        + E.EMBEDDING_BAG_DOC
        + """
    With ``max_norm`` the renormed rows are written back into ``embedding``
    on each call, as torch's in-place update.
    """
    )

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        embedding_init: Initializer | None = None,
        embedding_metadata: Mapping[str, Any] = _NO_METADATA,
        rngs: nnx.Rngs,
    ):
        if mode not in E.MODES:
            raise ValueError(f"mode must be one of {E.MODES}, got {mode!r}")
        E.check_max_norm(max_norm, norm_type)
        padding_idx = E.check_padding_idx(padding_idx, num_embeddings)
        init = embedding(padding_idx) if embedding_init is None else embedding_init
        self.embedding = nnx.Param(
            init(rngs.params(), (num_embeddings, embedding_dim), param_dtype),
            **embedding_metadata,
        )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.mode = mode
        self.sparse = sparse
        self.include_last_offset = include_last_offset
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(
        self, inputs: Array, offsets: Array | None = None, per_sample_weights: Array | None = None
    ) -> Array:
        """The ``(num_bags, embedding_dim)`` bag reductions."""
        table = self.embedding[...]
        out, renormed = E.embedding_bag(
            table if self.dtype is None else table.astype(self.dtype),
            inputs,
            offsets,
            per_sample_weights,
            mode=self.mode,
            padding_idx=self.padding_idx,
            include_last_offset=self.include_last_offset,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
        )
        if self.max_norm is not None:
            self.embedding[...] = lax.stop_gradient(renormed).astype(table.dtype)
        return out


class _InstanceNorm(nnx.Module):
    nd: ClassVar[int]

    def __init__(
        self,
        num_features: int,
        eps: float = BATCH_NORM_EPS,
        momentum: float | None = BATCH_NORM_MOMENTUM,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        use_running_average: bool = False,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        scale_metadata: Mapping[str, Any] = _NO_METADATA,
        bias_metadata: Mapping[str, Any] = _NO_METADATA,
        rngs: nnx.Rngs | None = None,
    ):
        IN.check_config(num_features, eps, momentum)
        shape = (num_features,)
        self.scale: nnx.Param[Array] | None = nnx.data(None)
        self.bias: nnx.Param[Array] | None = nnx.data(None)
        if affine:
            if rngs is None and (scale_init is not None or bias_init is not None):
                raise ValueError("pass rngs= to draw a given scale_init/bias_init")
            key = jax.random.key(0) if rngs is None else rngs.params()  # ones/zeros ignore it
            self.scale = nnx.Param(
                (scale_init or ones())(key, shape, param_dtype), **scale_metadata
            )
            self.bias = nnx.Param((bias_init or zeros())(key, shape, param_dtype), **bias_metadata)
        self.mean: nnx.BatchStat[Array] | None = nnx.data(None)
        self.var: nnx.BatchStat[Array] | None = nnx.data(None)
        if track_running_stats:
            self.mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
            self.var = nnx.BatchStat(jnp.ones(shape, param_dtype))
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.use_running_average = use_running_average
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        """Normalizes ``x``; in training with running stats, updates them as torch."""
        name = type(self).__name__
        x, unbatched = IN.batched(jnp.asarray(x), self.nd, name)
        c = self.num_features
        if (self.affine or self.track_running_stats) and x.shape[-1] != c:
            raise ValueError(f"{name}: expected {c} channels (last axis), got shape {x.shape}")
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        dtype = self.dtype or jnp.result_type(x, *(p for p in (scale, bias) if p is not None))
        frozen = self.use_running_average if use_running_average is None else use_running_average
        if self.mean is not None and self.var is not None and frozen:
            mean, var = self.mean[...], self.var[...]
        else:
            mean, var, n = IN.instance_stats(x, jnp.promote_types(dtype, jnp.float32))
            if self.mean is not None and self.var is not None:
                self.mean[...], self.var[...] = IN.running_update(
                    self.mean[...], self.var[...], mean, var, n, self.momentum
                )
        comp = jnp.promote_types(dtype, mean.dtype)
        y = IN.normalize(x.astype(comp), mean, var, scale, bias, self.eps).astype(dtype)
        return y[0] if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    __doc__ = (
        "``torch.nn.InstanceNorm1d(num_features, eps, momentum, affine, track_running_stats)`` "
        "for ``flax.nnx``; training mode is ``use_running_average=False``." + IN.DOC
    )
    nd = 1


class InstanceNorm2d(_InstanceNorm):
    __doc__ = (
        "``torch.nn.InstanceNorm2d(num_features, eps, momentum, affine, track_running_stats)`` "
        "for ``flax.nnx``; training mode is ``use_running_average=False``." + IN.DOC
    )
    nd = 2


class InstanceNorm3d(_InstanceNorm):
    __doc__ = (
        "``torch.nn.InstanceNorm3d(num_features, eps, momentum, affine, track_running_stats)`` "
        "for ``flax.nnx``; training mode is ``use_running_average=False``." + IN.DOC
    )
    nd = 3
