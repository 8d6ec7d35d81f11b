"""torch's embedding lookups in JAX: ``max_norm`` renormalization, ``scale_grad_by_freq``,
and ``EmbeddingBag``'s bag reductions.

Pure functions of the table and the indices, shared by the linen and nnx
layers (:class:`initjax.linen.Embed`, :class:`initjax.nnx.Embed` and both
``EmbeddingBag``\\ s). Everything is jittable: the number of bags is a static
shape, bags are reduced with segment ops.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "MODES",
    "check_padding_idx",
    "check_max_norm",
    "embedding_renorm",
    "lookup",
    "embedding_bag",
]

Array = jax.Array

#: EmbeddingBag's reductions, as torch names them.
MODES = ("sum", "mean", "max")

#: torch's ``embedding_renorm_`` divides by ``norm + 1e-7``.
_RENORM_EPS = 1e-7

EMBEDDING_BAG_DOC = """

    Each bag (a row of a 2-D ``inputs``, or the slice of a 1-D ``inputs``
    between consecutive ``offsets``) is reduced to one row: ``mode`` ``'sum'``,
    ``'mean'`` (torch's default) or ``'max'`` (per feature). As in torch:

    - ``offsets`` (1-D input only) are the bags' start positions, non-decreasing
      and starting at 0: concrete ``offsets`` with ``offsets[0] != 0`` raise
      ``ValueError`` with torch's message; traced ones (under ``jit``) cannot
      be checked, and there positions before ``offsets[0]`` belong to no bag;
      the last bag runs to the end of
      ``inputs``. With ``include_last_offset`` there is one more offset (the
      end), ignored as torch ignores it: ``len(offsets) - 1`` bags;
    - ``per_sample_weights`` (the shape of ``inputs``; ``'sum'`` only) scale
      each looked-up row before the sum;
    - entries equal to ``padding_idx`` are left out of their bag (and of the
      mean's count); an empty bag, or one of padding only, gives zeros; the
      padding row starts at zero and gets no gradient;
    - ``max_norm``: each looked-up row whose ``norm_type``-norm exceeds
      ``max_norm`` is first multiplied by ``max_norm / (norm + 1e-7)``
      (torch's ``embedding_renorm_``);
    - ``scale_grad_by_freq``: each row's gradient is divided by how often
      its index occurs in ``inputs`` (not with ``'max'``, as torch);
    - ``sparse`` is accepted and ignored: JAX's gradients are dense.

    The number of bags is static (``inputs.shape[0]`` or ``len(offsets)``),
    so the layer jits. Out-of-range indices are not checked (torch raises).
    Initialization: N(0, 1), padding row zero, as ``torch.nn.EmbeddingBag``
    (:func:`initjax.embedding`). From torch: ``embedding = weight``.
    """


def check_padding_idx(padding_idx: Any, num_embeddings: int) -> int | None:
    """``padding_idx`` in ``[0, num_embeddings)`` (a negative one counts from the end)."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
        raise ValueError(f"padding_idx must be an int or None, got {padding_idx!r}")
    padding_idx = int(padding_idx)
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"padding_idx={padding_idx} must be in [-{num_embeddings}, {num_embeddings})"
        )
    return padding_idx % num_embeddings


def check_max_norm(max_norm: Any, norm_type: Any) -> None:
    """torch's ``max_norm`` (None or a positive number) and ``norm_type`` (a positive p)."""
    if max_norm is not None and (
        isinstance(max_norm, bool)
        or not isinstance(max_norm, numbers.Real)
        or not float(max_norm) > 0
    ):
        raise ValueError(f"max_norm must be a positive number or None, got {max_norm!r}")
    if (
        isinstance(norm_type, bool)
        or not isinstance(norm_type, numbers.Real)
        or not float(norm_type) > 0
    ):
        raise ValueError(
            f"norm_type must be a positive number (p of the p-norm), got {norm_type!r}"
        )


def _renormed_rows(rows: Array, max_norm: float, norm_type: float) -> Array:
    """Rows rescaled as torch's ``embedding_renorm_``; the value, not differentiated."""
    rows = lax.stop_gradient(rows)
    comp = jnp.promote_types(rows.dtype, jnp.float32)
    norm = jnp.linalg.norm(rows.astype(comp), ord=norm_type, axis=-1, keepdims=True)
    scale = jnp.where(norm > max_norm, max_norm / (norm + _RENORM_EPS), 1.0)
    return (rows * scale.astype(comp)).astype(rows.dtype)


def embedding_renorm(
    table: Array, indices: Array, max_norm: float, norm_type: float = 2.0
) -> Array:
    """The table after torch's ``embedding_renorm_(table, indices, max_norm, norm_type)``.

    Every row that ``indices`` refers to and whose ``norm_type``-norm exceeds
    ``max_norm`` is multiplied by ``max_norm / (norm + 1e-7)``; other rows are
    unchanged. torch does this in place (under ``no_grad``) on every lookup
    of an ``Embedding``/``EmbeddingBag`` with ``max_norm``; this is its
    functional form, for linen parameters: store the result back yourself.
    """
    check_max_norm(max_norm, norm_type)
    table, flat = jnp.asarray(table), jnp.ravel(jnp.asarray(indices))
    return table.at[flat].set(_renormed_rows(table[flat], max_norm, norm_type))


def _scaled_by_freq(rows: Array, flat: Array, num_embeddings: int) -> Array:
    """``rows`` (one per index of ``flat``) whose gradient is divided by the index's count."""
    count = jnp.zeros((num_embeddings,), rows.dtype).at[flat].add(1)
    scale = (1 / count[flat])[:, None]
    fixed = lax.stop_gradient(rows)
    return fixed + scale * (rows - fixed)  # the value is exactly rows


def lookup(
    table: Array,
    indices: Array,
    *,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
) -> tuple[Array, Array]:
    """``(rows, table)``: the rows of ``indices`` (shape ``indices.shape + (dim,)``)
    as torch's lookup gives them, and the table after torch's in-place renorm.

    With ``max_norm`` the rows are the renormed ones; their gradient reaches
    the table unscaled, as in torch (which renorms the weight in place, then
    differentiates the plain lookup).
    """
    flat = jnp.ravel(indices)
    rows = table[flat]
    if max_norm is not None:
        new = _renormed_rows(rows, max_norm, norm_type)
        rows = new + (rows - lax.stop_gradient(rows))  # value: new; gradient: the lookup's
        table = table.at[flat].set(new)
    if scale_grad_by_freq:
        rows = _scaled_by_freq(rows, flat, table.shape[0])
    return rows.reshape(jnp.shape(indices) + table.shape[1:]), table


def _bags(
    inputs: Array, offsets: Array | None, include_last_offset: bool
) -> tuple[Array, Array, int]:
    """``(flat indices, bag of each, number of bags)``."""
    if jnp.ndim(inputs) == 2:
        if offsets is not None:
            raise ValueError("offsets must be None when inputs is 2-D (each row is one bag)")
        num_bags, per_bag = jnp.shape(inputs)
        bag = jnp.repeat(jnp.arange(num_bags), per_bag, total_repeat_length=num_bags * per_bag)
        return jnp.ravel(inputs), bag, num_bags
    if jnp.ndim(inputs) != 1:
        raise ValueError(f"inputs must be 1-D (with offsets) or 2-D, got shape {jnp.shape(inputs)}")
    if offsets is None or jnp.ndim(offsets) != 1:
        raise ValueError(
            "1-D inputs need 1-D offsets (the start of each bag), got "
            f"{None if offsets is None else jnp.shape(offsets)}"
        )
    num_bags = jnp.shape(offsets)[0] - bool(include_last_offset)
    if num_bags < 1:
        raise ValueError(
            f"offsets of shape {jnp.shape(offsets)} give no bag"
            + (
                " (include_last_offset counts the last one as the end)"
                if include_last_offset
                else ""
            )
        )
    try:
        first = int(offsets[0])
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        first = 0  # traced (under jit): cannot be checked
    if first != 0:  # torch's check and message
        raise ValueError(
            "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to "
            f"start from position 0. However, got {first}"
        )
    starts = jnp.asarray(offsets)[:num_bags]
    positions = jnp.arange(jnp.shape(inputs)[0])
    bag = jnp.searchsorted(starts, positions, side="right") - 1  # -1: before offsets[0]
    return inputs, bag, num_bags


def embedding_bag(
    table: Array,
    inputs: Array,
    offsets: Array | None = None,
    per_sample_weights: Array | None = None,
    *,
    mode: str = "mean",
    padding_idx: int | None = None,
    include_last_offset: bool = False,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
) -> tuple[Array, Array]:
    """``(bags, table)``: ``torch.nn.functional.embedding_bag`` and the table after its renorm.

    ``bags`` is ``(num_bags, dim)``; ``table`` is ``table`` unless ``max_norm``
    renormed some rows (torch's in-place update). ``padding_idx`` must be in
    ``[0, num_embeddings)``. See :class:`initjax.nnx.EmbeddingBag`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(
                f"per_sample_weights is only supported for mode='sum' (got mode={mode!r}), as torch"
            )
        if jnp.shape(per_sample_weights) != jnp.shape(inputs):
            raise ValueError(
                f"per_sample_weights has shape {jnp.shape(per_sample_weights)}, "
                f"inputs {jnp.shape(inputs)}: they must be equal"
            )
    if scale_grad_by_freq and mode == "max":
        raise ValueError("scale_grad_by_freq is not supported with mode='max', as torch")
    flat, bag, num_bags = _bags(inputs, offsets, include_last_offset)
    rows, table = lookup(
        table,
        flat,
        max_norm=max_norm,
        norm_type=norm_type,
        scale_grad_by_freq=scale_grad_by_freq,
    )
    keep = bag >= 0  # positions before offsets[0] belong to no bag
    if padding_idx is not None:
        keep &= flat != padding_idx
    bag = jnp.where(keep, bag, num_bags)  # dropped by the segment ops
    if mode == "max":
        top = jax.ops.segment_max(rows, bag, num_segments=num_bags)
        filled = jax.ops.segment_sum(keep.astype(jnp.int32), bag, num_segments=num_bags)
        return jnp.where(filled[:, None] > 0, top, jnp.zeros_like(top)), table
    if per_sample_weights is not None:
        weights = jnp.ravel(per_sample_weights)
        dtype = jnp.promote_types(rows.dtype, weights.dtype)
        rows = rows.astype(dtype) * weights.astype(dtype)[:, None]
    total = jax.ops.segment_sum(rows, bag, num_segments=num_bags)
    if mode == "sum":
        return total, table
    count = jax.ops.segment_sum(keep.astype(rows.dtype), bag, num_segments=num_bags)
    return total / jnp.maximum(count, 1)[:, None], table
