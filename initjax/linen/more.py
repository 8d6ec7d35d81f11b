"""torch's EmbeddingBag and InstanceNorm1d/2d/3d as ``flax.linen`` modules.

Re-exported from :mod:`initjax.linen`; the computations live in
:mod:`initjax.functional.embedding` and :mod:`initjax.functional.instance_norm`, shared with the
nnx layers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp
from flax.typing import Array, Dtype, Initializer

from ..defaults import BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, embedding
from ..functional import embedding as E
from ..functional import instance_norm as IN
from ..init import ones, zeros

__all__ = ["EmbeddingBag", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class EmbeddingBag(nn.Module):
    __doc__ = (
        "``torch.nn.EmbeddingBag(num_embeddings, embedding_dim, ...)`` for ``flax.linen``; "
        "Flax has none.\n\n    Called as ``layer.apply(variables, inputs, offsets=None, "
        "per_sample_weights=None)``; torch's arguments and defaults."
        + E.EMBEDDING_BAG_DOC
        + """
    ``max_norm`` in linen: the output is torch's (rows renormed before the
    reduction), but linen cannot change a parameter inside ``apply``; torch's
    updated table is ``layer.apply(variables, inputs, method="renormed")``
    (or :func:`initjax.linen.embedding_renorm`), to store back yourself.
    """
    )

    num_embeddings: int
    embedding_dim: int
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    mode: str = "mean"
    sparse: bool = False
    include_last_offset: bool = False
    padding_idx: int | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer | None = None
    embedding: Array = dataclasses.field(init=False)

    def setup(self):
        if self.mode not in E.MODES:
            raise ValueError(f"mode must be one of {E.MODES}, got {self.mode!r}")
        E.check_max_norm(self.max_norm, self.norm_type)
        pad = E.check_padding_idx(self.padding_idx, self.num_embeddings)
        init = embedding(pad) if self.embedding_init is None else self.embedding_init
        self.embedding = self.param(
            "embedding", init, (self.num_embeddings, self.embedding_dim), self.param_dtype
        )

    def __call__(
        self, inputs: Array, offsets: Array | None = None, per_sample_weights: Array | None = None
    ) -> Array:
        """The ``(num_bags, embedding_dim)`` bag reductions."""
        table = self.embedding if self.dtype is None else self.embedding.astype(self.dtype)
        out, _ = E.embedding_bag(
            table,
            inputs,
            offsets,
            per_sample_weights,
            mode=self.mode,
            padding_idx=E.check_padding_idx(self.padding_idx, self.num_embeddings),
            include_last_offset=self.include_last_offset,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
        )
        return out

    def renormed(self, inputs: Array) -> Array:
        """The embedding table after torch's in-place ``max_norm`` renorm for ``inputs``."""
        if self.max_norm is None:
            return self.embedding
        return E.embedding_renorm(self.embedding, inputs, self.max_norm, self.norm_type)


class _InstanceNorm(nn.Module):
    nd: ClassVar[int]

    num_features: int
    eps: float = BATCH_NORM_EPS
    momentum: float | None = BATCH_NORM_MOMENTUM
    affine: bool = False
    track_running_stats: bool = False
    use_running_average: bool | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = ones()
    bias_init: Initializer = zeros()

    @nn.compact
    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        """Normalizes ``x``; in training with running stats, updates them as torch."""
        name = type(self).__name__
        IN.check_config(self.num_features, self.eps, self.momentum)
        x, unbatched = IN.batched(jnp.asarray(x), self.nd, name)
        c = self.num_features
        if (self.affine or self.track_running_stats) and x.shape[-1] != c:
            raise ValueError(f"{name}: expected {c} channels (last axis), got shape {x.shape}")
        scale = bias = None
        if self.affine:
            scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
            bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, *(p for p in (scale, bias) if p is not None))
        if not self.track_running_stats:
            mean, var, _ = IN.instance_stats(x, jnp.promote_types(dtype, jnp.float32))
        else:
            running_mean = self.variable(
                "batch_stats", "mean", zeros(), None, (c,), self.param_dtype
            )
            running_var = self.variable("batch_stats", "var", ones(), None, (c,), self.param_dtype)
            frozen = nn.merge_param(
                "use_running_average", self.use_running_average, use_running_average
            )
            if frozen:
                mean, var = running_mean.value, running_var.value
            else:
                mean, var, n = IN.instance_stats(x, jnp.promote_types(dtype, jnp.float32))
                if not self.is_initializing():
                    running_mean.value, running_var.value = IN.running_update(
                        running_mean.value, running_var.value, mean, var, n, self.momentum
                    )
        comp = jnp.promote_types(dtype, mean.dtype)
        y = IN.normalize(x.astype(comp), mean, var, scale, bias, self.eps).astype(dtype)
        return y[0] if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    __doc__ = "``torch.nn.InstanceNorm1d(num_features, ...)`` for ``flax.linen``." + IN.DOC
    nd = 1


class InstanceNorm2d(_InstanceNorm):
    __doc__ = "``torch.nn.InstanceNorm2d(num_features, ...)`` for ``flax.linen``." + IN.DOC
    nd = 2


class InstanceNorm3d(_InstanceNorm):
    __doc__ = "``torch.nn.InstanceNorm3d(num_features, ...)`` for ``flax.linen``." + IN.DOC
    nd = 3
