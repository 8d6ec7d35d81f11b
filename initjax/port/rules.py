"""Per-layer rules: how one Flax layer's variables hold one torch module's tensors.

Each rule is explicit about its layer type: the kernel permutation comes from
the layer kind and the torch weight's rank, never from matching shapes, and
never from a blanket transpose (a cubic Conv3d kernel has the same shape
after ``.T`` with its spatial axes reversed).

A rule has two halves that must agree, and tests check that they do:

- :meth:`Rule.specs`, torch -> Flax: for every Flax variable of the layer, the
  torch tensors it is computed from, the (numpy) computation, and the torch
  default initializer used to fill it in non-strict mode;
- :meth:`Rule.to_torch`, Flax -> torch (``jax.numpy``, so it also runs on
  abstract shapes): the torch tensors the layer corresponds to. Porting
  evaluates it abstractly to know which torch keys and shapes a layer expects.

Variables are named ``(collection, *path)``, e.g. ``("params", "kernel")`` or
``("batch_stats", "mean")``; torch tensors by their name inside the torch
module (``"weight"``, ``"out_proj.bias"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn.initializers import Initializer

from .. import defaults, init
from ..functional.recurrent import GRU_GATES, LSTM_GATES

__all__ = [
    "Spec",
    "Layout",
    "Rule",
    "Linear",
    "DenseGeneral",
    "Conv",
    "ConvTranspose",
    "Norm",
    "BatchNorm",
    "Embed",
    "PReLU",
    "Bilinear",
    "GatedCell",
    "MultiHeadAttention",
    "TorchMultiheadAttention",
    "AsIs",
    "NotRepresentable",
    "LSTM_GATES",
    "GRU_GATES",
]

Var = tuple[str, ...]
P, B = "params", "batch_stats"


@dataclass(frozen=True)
class Spec:
    """One Flax variable: ``convert(*torch arrays named by needs, shape=target shape)``.

    ``init`` is the torch-default initializer for this variable's Flax layout
    (``None`` when there is none to give). A ``convert`` that only moves
    elements is a :class:`Layout`, which sharded ports read slice by slice.
    """

    needs: tuple[str, ...]
    convert: Callable[..., np.ndarray]
    init: Initializer | None


class NotRepresentable(ValueError):
    """torch values, or a Flax layer, that the other side cannot hold exactly."""


class Rule:
    """Base class of the per-layer rules (frozen dataclasses, so hashable)."""

    #: torch tensors the layer consumes and deliberately drops.
    ignore: frozenset[str] = frozenset()
    #: False: the rule owns every variable below its layer (sublayers included);
    #: True: only the layer's own variables, sublayers keeping their own rules.
    own_only: bool = False
    #: True: torch's stacked recurrent keys of this layer (``weight_ih_l0``,
    #: ``bias_hh_l1_reverse``, ...) keep their names; False: they are read per
    #: cell (see :mod:`initjax.port.names`).
    stacked_keys: bool = False

    def specs(self, target: Mapping[Var, tuple[int, ...]]) -> dict[Var, Spec]:
        """A :class:`Spec` for each of the layer's Flax variables (given by shape)."""
        raise NotImplementedError

    def to_torch(self, leaves: Mapping[Var, jax.Array]) -> dict[str, jax.Array]:
        """The torch tensors of the layer, from its Flax variables (``jax.numpy``)."""
        raise NotImplementedError

    def hint(self, name: str, torch_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
        """The likely cause, for the error message, of torch's tensor ``name`` having
        ``torch_shape`` where the layer needs ``shape`` (``""``: none known)."""
        return ""


Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Layout:
    """A conversion that only moves elements: ``transpose(w[start:stop], perm).reshape(shape)``.

    ``start:stop`` slices torch's first axis (``None``: all of it); ``perm``
    ``None`` is no transpose. A :class:`Spec` whose ``convert`` is a Layout lets
    a sharded port read from the checkpoint only the part of ``w`` that each
    device's shard is made of (:meth:`source_box`).
    """

    perm: tuple[int, ...] | None = None
    start: int | None = None
    stop: int | None = None

    def __call__(self, w, *, shape):
        if self.start is not None or self.stop is not None:
            w = w[self.start : self.stop]
        if self.perm is not None:
            w = np.transpose(w, self.perm)
        return w.reshape(shape)

    def rows(self, n: int) -> tuple[int, int]:
        """The slice of torch's first axis (of length ``n``) that the value comes from."""
        return slice(self.start, self.stop).indices(n)[:2]

    def moved_shape(self, source: Sequence[int]) -> tuple[int, ...]:
        """The shape of ``transpose(w[start:stop], perm)``, before the reshape."""
        lo, hi = self.rows(source[0]) if source else (0, 0)
        sliced = (hi - lo, *source[1:]) if source else ()
        return tuple(sliced[p] for p in self.perm) if self.perm is not None else tuple(sliced)

    def source_box(self, source: Sequence[int], shape: Sequence[int], box: Box) -> Box | None:
        """The box of ``w`` (``(lo, hi)`` per torch axis) that ``value[box]`` is made of.

        ``box`` is a box of the value (``shape``); the result is ``None`` when
        the reshape scatters it over more than one box of ``w`` (read ``w`` whole
        then). ``value[box] == Layout(perm)(w[result], shape=...)``, with the
        shape of ``box``.
        """
        moved = self.moved_shape(source)
        inner = _regroup(tuple(shape), moved, tuple(box))
        if inner is None:
            return None
        back = list(inner)
        if self.perm is not None:
            for i, p in enumerate(self.perm):
                back[p] = inner[i]
        if back:
            lo = self.rows(source[0])[0]
            back[0] = (back[0][0] + lo, back[0][1] + lo)
        return tuple(back)


def _regroup(shape: tuple[int, ...], moved: tuple[int, ...], box: Box) -> Box | None:
    """``box`` of an array of ``shape``, as a box of the same elements reshaped to ``moved``."""
    if math.prod(shape) == 0 or math.prod(moved) == 0:
        return None
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(shape) or j < len(moved):
        gi, gj = [i], [j]
        a = shape[i] if i < len(shape) else 1
        b = moved[j] if j < len(moved) else 1
        while a != b:
            if a < b:
                i += 1
                gi.append(i)
                a *= shape[i]
            else:
                j += 1
                gj.append(j)
                b *= moved[j]
        i, j = i + 1, j + 1
        gi = [k for k in gi if k < len(shape)]
        gj = [k for k in gj if k < len(moved)]
        flat = _flat_range([shape[k] for k in gi], [box[k] for k in gi])
        if flat is None:
            return None
        part = _range_box([moved[k] for k in gj], *flat)
        if part is None:
            return None
        out += part
    return tuple(out)


def _flat_range(dims: list[int], box: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The flat index range ``box`` covers in a C-ordered array of ``dims``, if contiguous."""
    partial = [k for k, (lo, hi) in enumerate(box) if (lo, hi) != (0, dims[k])]
    if partial and any(hi - lo != 1 for lo, hi in box[: partial[-1]]):
        return None
    lo = 0
    for d, (start, _) in zip(dims, box, strict=True):
        lo = lo * d + start
    size = math.prod(hi - lo_ for lo_, hi in box)
    return lo, lo + size


def _range_box(dims: list[int], lo: int, hi: int) -> list[tuple[int, int]] | None:
    """The flat range ``lo:hi`` of a C-ordered array of ``dims`` as a box, if it is one."""
    if not dims:
        return []
    n = hi - lo
    for q in range(len(dims) - 1, -1, -1):
        stride = math.prod(dims[q + 1 :])
        if lo % stride or n % stride:
            continue
        start, count = (lo // stride) % dims[q], n // stride
        if start + count > dims[q]:
            continue
        box, rest = [], lo // stride // dims[q]
        for d in reversed(dims[:q]):
            rest, k = divmod(rest, d)
            box.append((k, k + 1))
        return [*reversed(box), (start, start + count), *((0, d) for d in dims[q + 1 :])]
    return None


_same = Layout()


def _perm(perm: Sequence[int]) -> Layout:
    return Layout(tuple(perm))


def _has(target, *var) -> bool:
    return tuple(var) in target


# ------------------------------------------------------------------ dense ---


@dataclass(frozen=True)
class Linear(Rule):
    """``torch.nn.Linear`` <-> Dense/Linear: ``kernel (in, out) = weight (out, in)`` transposed."""

    def specs(self, target):
        fan_in = target[(P, "kernel")][0]
        out = {(P, "kernel"): Spec(("weight",), _perm((1, 0)), defaults.linear_kernel())}
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, defaults.linear_bias(fan_in))
        return out

    def to_torch(self, leaves):
        out = {"weight": jnp.transpose(leaves[(P, "kernel")], (1, 0))}
        if (P, "bias") in leaves:
            out["bias"] = leaves[(P, "bias")]
        return out


@dataclass(frozen=True)
class DenseGeneral(Rule):
    """``torch.nn.Linear`` <-> DenseGeneral with ``n_in`` contracted axes (no batch dims):
    ``kernel (*in_shape, *out_shape) = weight.T`` reshaped; ``bias = bias`` reshaped."""

    n_in: int = 1

    def specs(self, target):
        shape = target[(P, "kernel")]
        fan_in = math.prod(shape[: self.n_in])
        in_axes, out_axes = tuple(range(self.n_in)), tuple(range(self.n_in, len(shape)))

        out = {
            (P, "kernel"): Spec(
                ("weight",),
                Layout((1, 0)),
                defaults.linear_kernel(in_axis=in_axes, out_axis=out_axes),
            )
        }
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, defaults.linear_bias(fan_in))
        return out

    def to_torch(self, leaves):
        k = leaves[(P, "kernel")]
        n_out = math.prod(k.shape[self.n_in :])
        out = {"weight": jnp.transpose(k.reshape(-1, n_out), (1, 0))}
        if (P, "bias") in leaves:
            out["bias"] = leaves[(P, "bias")].reshape(n_out)
        return out


@dataclass(frozen=True)
class Bilinear(Rule):
    """``torch.nn.Bilinear``: ``kernel (in1, in2, out) = weight (out, in1, in2)``
    permuted ``(1, 2, 0)``."""

    def specs(self, target):
        in1 = target[(P, "kernel")][0]
        out = {(P, "kernel"): Spec(("weight",), _perm((1, 2, 0)), defaults.bilinear(in1))}
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, defaults.bilinear(in1))
        return out

    def to_torch(self, leaves):
        out = {"weight": jnp.transpose(leaves[(P, "kernel")], (2, 0, 1))}
        if (P, "bias") in leaves:
            out["bias"] = leaves[(P, "bias")]
        return out


# ------------------------------------------------------------------- conv ---


def _spatial_first(n: int) -> tuple[int, ...]:
    # torch (out, in/g, *k) -> Flax (*k, in/g, out)
    return (*range(2, n), 1, 0)


def _conv_hint(
    name: str, torch_shape: tuple[int, ...], shape: tuple[int, ...], in_axis: int
) -> str:
    """Why a conv's torch ``weight`` (input channels on ``in_axis``) misfits the Flax kernel."""
    if name != "weight":
        return ""
    if len(torch_shape) != len(shape):
        k, t = len(shape) - 2, len(torch_shape) - 2
        int_size = " (an int kernel_size is a 1-D kernel in Flax)" if k == 1 else ""
        return (
            f"; the Flax kernel is {k}-D and torch's weight {t}-D{int_size}: "
            f"build the layer with kernel_size={tuple(torch_shape[2:])}"
        )
    if torch_shape[in_axis] != shape[in_axis]:
        return (
            f"; Flax convolutions are channels-last: the layer takes {shape[in_axis]} input "
            f"channels, torch's weight {torch_shape[in_axis]} (linen reads them from the last "
            "axis of the example input: give it as (N, ..., C), not torch's (N, C, ...); "
            "nnx: in_features)"
        )
    return ""


@dataclass(frozen=True)
class Conv(Rule):
    """``torch.nn.Conv1d/2d/3d`` <-> Conv: ``kernel (*k, in/g, out)`` = ``weight (out, in/g, *k)``
    with axes ``(2, ..., n-1, 1, 0)``: the spatial axes keep their order."""

    def specs(self, target):
        shape = target[(P, "kernel")]
        out = {
            (P, "kernel"): Spec(
                ("weight",), _perm(_spatial_first(len(shape))), defaults.conv_kernel()
            )
        }
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, defaults.conv_bias(math.prod(shape[:-1])))
        return out

    def hint(self, name, torch_shape, shape):
        return _conv_hint(name, torch_shape, shape, in_axis=1)

    def to_torch(self, leaves):
        k = leaves[(P, "kernel")]
        n = k.ndim
        out = {"weight": jnp.transpose(k, (n - 1, n - 2, *range(n - 2)))}
        if (P, "bias") in leaves:
            out["bias"] = leaves[(P, "bias")]
        return out


@dataclass(frozen=True)
class ConvTranspose(Rule):
    """``torch.nn.ConvTranspose1d/2d/3d`` <-> ConvTranspose.

    torch's weight is ``(in, out/g, *k)`` and applies the *flipped* kernel.
    ``transpose_kernel=False`` (Flax's default): ``kernel (*k, in/g, out)`` is
    the weight with its spatial axes flipped, group ``j``'s block
    ``weight[j*in/g:(j+1)*in/g]`` landing in output columns ``j*out/g:(j+1)*out/g``.
    ``transpose_kernel=True``: ``kernel (*k, out/g, in)`` (the forward
    convolution's kernel) is the weight permuted ``(2, ..., n-1, 1, 0)``, not flipped.
    """

    transpose_kernel: bool = False
    groups: int = 1

    def __post_init__(self):
        if self.groups < 1:
            raise ValueError(f"ConvTranspose rule needs groups >= 1, got {self.groups}")

    def hint(self, name, torch_shape, shape):
        return _conv_hint(name, torch_shape, shape, in_axis=0)

    def specs(self, target):
        shape = target[(P, "kernel")]
        nd, g = len(shape) - 2, self.groups
        if self.transpose_kernel:
            convert = _perm(_spatial_first(nd + 2))
            bias_fan = shape[-2] * math.prod(shape[:nd])
        else:

            def convert(w, *, shape):
                flipped = np.flip(w, tuple(range(2, nd + 2)))
                blocks = flipped.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
                return np.transpose(blocks, (*range(3, nd + 3), 1, 0, 2)).reshape(shape)

            bias_fan = shape[-1] // g * math.prod(shape[:nd])
        kernel_init = defaults.conv_transpose_kernel(g, transpose_kernel=self.transpose_kernel)
        out = {(P, "kernel"): Spec(("weight",), convert, kernel_init)}
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, defaults.conv_transpose_bias(bias_fan))
        return out

    def to_torch(self, leaves):
        k = leaves[(P, "kernel")]
        nd, g = k.ndim - 2, self.groups
        if self.transpose_kernel:
            w = jnp.transpose(k, (nd + 1, nd, *range(nd)))
        else:
            ipg, out = k.shape[-2], k.shape[-1]
            if out % g:
                raise ValueError(
                    f"kernel {k.shape} has {out} output channels, not divisible by groups={g}"
                )
            blocks = k.reshape(*k.shape[:nd], ipg, g, out // g)
            w = jnp.transpose(blocks, (nd + 1, nd, nd + 2, *range(nd)))
            w = jnp.flip(w.reshape(g * ipg, out // g, *k.shape[:nd]), tuple(range(2, nd + 2)))
        out = {"weight": w}
        if (P, "bias") in leaves:
            out["bias"] = leaves[(P, "bias")]
        return out


# ------------------------------------------------------------------ norms ---


@dataclass(frozen=True)
class Norm(Rule):
    """LayerNorm, GroupNorm, RMSNorm, InstanceNorm: ``scale = weight``, ``bias = bias``."""

    def specs(self, target):
        out = {}
        if _has(target, P, "scale"):
            out[(P, "scale")] = Spec(("weight",), _same, init.ones())
        if _has(target, P, "bias"):
            out[(P, "bias")] = Spec(("bias",), _same, init.zeros())
        return out

    def to_torch(self, leaves):
        names: dict[Var, str] = {(P, "scale"): "weight", (P, "bias"): "bias"}
        return {names[v]: x for v, x in leaves.items() if v in names}


@dataclass(frozen=True)
class BatchNorm(Norm):
    """``torch.nn.BatchNorm1d/2d/3d`` and ``InstanceNorm1d/2d/3d``: as :class:`Norm`, plus
    ``batch_stats/mean = running_mean``, ``batch_stats/var = running_var`` and, when the
    layer keeps one, ``batch_stats/num_batches_tracked = num_batches_tracked``. A layer
    without a counter skips torch's (Flax's fixed momentum does not use it)."""

    ignore: frozenset[str] = field(default=frozenset({"num_batches_tracked"}))

    def specs(self, target):
        out = super().specs(target)
        if _has(target, B, "mean"):
            out[(B, "mean")] = Spec(("running_mean",), _same, init.zeros())
        if _has(target, B, "var"):
            out[(B, "var")] = Spec(("running_var",), _same, init.ones())
        if _has(target, B, "num_batches_tracked"):
            out[(B, "num_batches_tracked")] = Spec(("num_batches_tracked",), _counter, init.zeros())
        return out

    def to_torch(self, leaves):
        out = super().to_torch(leaves)
        names = {
            (B, "mean"): "running_mean",
            (B, "var"): "running_var",
            (B, "num_batches_tracked"): "num_batches_tracked",
        }
        out.update({names[v]: x for v, x in leaves.items() if v in names})
        return out


def _counter(n, *, shape):
    return n.reshape(shape)


# ------------------------------------------------------------ embeddings ---


@dataclass(frozen=True)
class Embed(Rule):
    """``torch.nn.Embedding`` and ``EmbeddingBag``: ``embedding = weight`` (same layout; the
    padding row is copied)."""

    padding_idx: int | None = None

    def specs(self, target):
        return {(P, "embedding"): Spec(("weight",), _same, defaults.embedding(self.padding_idx))}

    def to_torch(self, leaves):
        return {"weight": leaves[(P, "embedding")]}


@dataclass(frozen=True)
class PReLU(Rule):
    """``torch.nn.PReLU(num_parameters)``: ``negative_slope = weight``; Flax's scalar slope
    holds a 1-element weight, a ``(n,)`` slope (initjax's per-channel PReLU) ``weight (n,)``."""

    def specs(self, target):
        return {(P, "negative_slope"): Spec(("weight",), _same, init.constant(defaults.PRELU_INIT))}

    def to_torch(self, leaves):
        return {"weight": jnp.reshape(leaves[(P, "negative_slope")], (-1,))}


# -------------------------------------------------------------- recurrent ---


@dataclass(frozen=True)
class Block:
    """One Flax Dense inside a recurrent cell.

    ``weight`` (``"weight_ih"``/``"weight_hh"``) rows for ``gates`` (indices
    into torch's gate order), concatenated, transposed, give ``kernel``;
    ``bias[j]`` lists the torch biases summed for the ``j``-th of those gates
    (``()``: the Dense has no bias).
    """

    name: str
    weight: str
    gates: tuple[int, ...]
    bias: tuple[tuple[str, ...], ...] = ()


def _gate_rows(w, gates: Sequence[int], h: int):
    return [w[g * h : (g + 1) * h] for g in gates]


@dataclass(frozen=True)
class GatedCell(Rule):
    """torch RNNCell/LSTMCell/GRUCell (and each layer/direction of RNN/LSTM/GRU)
    <-> a Flax cell made of Dense blocks (see :class:`Block`).

    Kernels are the torch weight's gate rows, transposed. A Flax bias that
    stands for ``bias_ih + bias_hh`` of a gate holds their sum; torch gets the
    sum back in ``bias_ih`` and zero in ``bias_hh`` (the same cell). A torch
    bias slice that no Flax variable holds must be zero, or porting refuses.
    """

    cell: str
    blocks: tuple[Block, ...]
    num_gates: int
    #: biases the cell holds as its own variables: ``(variable name, torch bias, gate)``.
    loose: tuple[tuple[str, str, int], ...] = ()

    def _hidden(self, target) -> int:
        first = self.blocks[0]
        return target[(P, first.name, "kernel")][-1] // len(first.gates)

    def _used(self) -> set[tuple[str, int]]:
        used = {
            (src, g)
            for b in self.blocks
            if b.bias
            for g, srcs in zip(b.gates, b.bias, strict=True)
            for src in srcs
        }
        return used | {(src, g) for _, src, g in self.loose}

    def specs(self, target):
        h = self._hidden(target)
        unused = [
            (name, g)
            for name in ("bias_ih", "bias_hh")
            for g in range(self.num_gates)
            if (name, g) not in self._used()
        ]
        out = {}
        for b in self.blocks:
            out[(P, b.name, "kernel")] = Spec(
                (b.weight,), _kernel_convert(b.gates, h), defaults.rnn_uniform(h)
            )
            if b.bias:
                needs = tuple(sorted({s for srcs in b.bias for s in srcs}))
                checks = tuple((n, g) for n, g in unused if n in needs)
                out[(P, b.name, "bias")] = Spec(
                    needs,
                    _bias_convert(self.cell, b, needs, h, checks),
                    _bias_init(h, [len(srcs) for srcs in b.bias]),
                )
        for name, src, g in self.loose:
            out[(P, name)] = Spec((src,), _slice(g * h, (g + 1) * h), defaults.rnn_uniform(h))
        return out

    def to_torch(self, leaves):
        kernel = leaves[(P, self.blocks[0].name, "kernel")]
        h = kernel.shape[-1] // len(self.blocks[0].gates)
        rows: dict[str, dict[int, jax.Array]] = {"weight_ih": {}, "weight_hh": {}}
        biases: dict[str, dict[int, jax.Array]] = {"bias_ih": {}, "bias_hh": {}}
        for b in self.blocks:
            k = jnp.transpose(leaves[(P, b.name, "kernel")], (1, 0))
            for j, g in enumerate(b.gates):
                rows[b.weight][g] = k[j * h : (j + 1) * h]
            if b.bias:
                bias = leaves[(P, b.name, "bias")]
                for j, (g, srcs) in enumerate(zip(b.gates, b.bias, strict=True)):
                    # the sum goes to bias_ih when both are folded in
                    biases[srcs[0]][g] = bias[j * h : (j + 1) * h]
        for name, src, g in self.loose:
            biases[src][g] = leaves[(P, name)]
        out = {n: jnp.concatenate([r[g] for g in range(self.num_gates)]) for n, r in rows.items()}
        if any(biases.values()):
            zero = jnp.zeros((h,), kernel.dtype)
            for name, parts in biases.items():
                out[name] = jnp.concatenate([parts.get(g, zero) for g in range(self.num_gates)])
        return out


def _kernel_convert(gates, h):
    if list(gates) == list(range(gates[0], gates[0] + len(gates))):  # one block of rows
        return Layout((1, 0), gates[0] * h, (gates[-1] + 1) * h)

    def convert(w, *, shape):
        return np.transpose(np.concatenate(_gate_rows(w, gates, h)), (1, 0))

    return convert


def _bias_convert(cell, block, needs, h, checks):
    def convert(*arrays, shape):
        named = dict(zip(needs, arrays, strict=True))
        for name, g in checks:
            part = named[name][g * h : (g + 1) * h]
            if np.any(part != 0):
                raise NotRepresentable(
                    f"{name}[{g * h}:{(g + 1) * h}] is non-zero, but {cell} has no variable for it"
                )
        parts = []
        for g, srcs in zip(block.gates, block.bias, strict=True):
            total = named[srcs[0]][g * h : (g + 1) * h]
            for src in srcs[1:]:
                total = total + named[src][g * h : (g + 1) * h]
            parts.append(total)
        return np.concatenate(parts)

    return convert


def _bias_init(h: int, counts: Sequence[int]) -> Initializer:
    """torch's default for a bias made of ``counts[j]`` summed U(+-1/sqrt(h)) per gate."""
    parts = [defaults.rnn_bias(h) if c == 2 else defaults.rnn_uniform(h) for c in counts]
    if len(set(counts)) == 1:
        return parts[0]

    def concat(key, shape, dtype=None, out_sharding=None):
        keys = jax.random.split(key, len(parts))
        return jnp.concatenate(
            [p(k, (*shape[:-1], h), dtype) for p, k in zip(parts, keys, strict=True)], axis=-1
        )

    return concat


# --------------------------------------------------------------- attention ---


def _mha_dims(target):
    _, heads, head_dim = target[(P, "query", "kernel")]
    return heads, head_dim, heads * head_dim


@dataclass(frozen=True)
class MultiHeadAttention(Rule):
    """``torch.nn.MultiheadAttention`` <-> MultiHeadDotProductAttention / MultiHeadAttention.

    ``query/key/value.kernel (in, heads, head_dim)`` = the projection's rows,
    transposed and split into heads: from ``in_proj_weight[0:E]``,
    ``[E:2E]``, ``[2E:3E]`` when torch fuses them (key and value inputs of
    width E), else from ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``;
    ``*.bias (heads, head_dim)`` from ``in_proj_bias``. ``out.kernel (heads,
    head_dim, E)`` = ``out_proj.weight`` transposed; ``out.bias = out_proj.bias``.
    torch's ``bias_k``/``bias_v`` (``add_bias_kv``) have no Flax counterpart.
    """

    def _fused(self, target) -> bool:
        e = _mha_dims(target)[2]
        return target[(P, "key", "kernel")][0] == e and target[(P, "value", "kernel")][0] == e

    def specs(self, target):
        e = _mha_dims(target)[2]
        fused = self._fused(target)
        inits = defaults.multihead_attention(e, fused=fused)
        out = {}
        for j, (name, sep) in enumerate(
            (("query", "q_proj_weight"), ("key", "k_proj_weight"), ("value", "v_proj_weight"))
        ):
            kernel = inits[(name, "kernel")]
            if fused:
                out[(P, name, "kernel")] = Spec(
                    ("in_proj_weight",), _rows_t(j * e, (j + 1) * e), kernel
                )
            else:
                out[(P, name, "kernel")] = Spec((sep,), _rows_t(0, e), kernel)
            if _has(target, P, name, "bias"):
                out[(P, name, "bias")] = Spec(
                    ("in_proj_bias",), _slice(j * e, (j + 1) * e), inits[(name, "bias")]
                )
        out[(P, "out", "kernel")] = Spec(
            ("out_proj.weight",), _rows_t(0, None), inits[("out", "kernel")]
        )
        if _has(target, P, "out", "bias"):
            out[(P, "out", "bias")] = Spec(("out_proj.bias",), _same, inits[("out", "bias")])
        return out

    def to_torch(self, leaves):
        q = leaves[(P, "query", "kernel")]
        in_q, heads, head_dim = q.shape
        e = heads * head_dim
        o = leaves[(P, "out", "kernel")]
        if in_q != e or o.shape[-1] != e:
            raise NotRepresentable(
                f"torch MultiheadAttention needs query input width = heads*head_dim = output "
                f"width; this layer has {in_q}, {e}, {o.shape[-1]}"
            )

        def t(name):
            k = leaves[(P, name, "kernel")]
            return jnp.transpose(k.reshape(k.shape[0], e), (1, 0))

        w = {n: t(n) for n in ("query", "key", "value")}
        if w["key"].shape[1] == e and w["value"].shape[1] == e:
            out = {"in_proj_weight": jnp.concatenate([w["query"], w["key"], w["value"]])}
        else:
            out = {
                "q_proj_weight": w["query"],
                "k_proj_weight": w["key"],
                "v_proj_weight": w["value"],
            }
        if (P, "query", "bias") in leaves:
            out["in_proj_bias"] = jnp.concatenate(
                [leaves[(P, n, "bias")].reshape(e) for n in ("query", "key", "value")]
            )
        out["out_proj.weight"] = jnp.transpose(o.reshape(e, o.shape[-1]), (1, 0))
        if (P, "out", "bias") in leaves:
            out["out_proj.bias"] = leaves[(P, "out", "bias")]
        return out


@dataclass(frozen=True)
class TorchMultiheadAttention(MultiHeadAttention):
    """``torch.nn.MultiheadAttention`` <-> ``initjax.linen/nnx.TorchMultiheadAttention``.

    As :class:`MultiHeadAttention` (same Flax names and layouts), plus torch's
    ``add_bias_kv`` parameters: ``bias_k/bias_v (heads, head_dim)`` = torch's
    ``(1, 1, E)`` reshaped.
    """

    def specs(self, target):
        out = super().specs(target)
        inits = defaults.multihead_attention(_mha_dims(target)[2])
        for name in ("bias_k", "bias_v"):
            if _has(target, P, name):
                out[(P, name)] = Spec((name,), _reshaped, inits[(name,)])
        return out

    def to_torch(self, leaves):
        out = super().to_torch(leaves)
        for name in ("bias_k", "bias_v"):
            if (P, name) in leaves:
                out[name] = jnp.reshape(leaves[(P, name)], (1, 1, -1))
        return out


def _reshaped(x, *, shape):
    return x.reshape(shape)


def _rows_t(start: int, stop: int | None) -> Layout:
    """Rows ``start:stop`` of a torch ``(out, in)`` weight, as a Flax kernel of ``shape``."""
    return Layout((1, 0), start, stop)


def _slice(start: int, stop: int) -> Layout:
    return Layout(None, start, stop)


# ------------------------------------------------------------------ as is ---


@dataclass(frozen=True)
class AsIs(Rule):
    """A module's own variables, copied unchanged: ``params/<a>/<b>`` <-> torch ``a.b``.

    For parameters that torch and Flax store in the same layout (a learned
    positional embedding, a scale). The default for a variable with no rule
    whose shape has one reading (:mod:`initjax.port.as_is`); opt in per module
    type for the others, since a square matrix stored transposed would pass
    unnoticed. Covers only the module's own variables: its sublayers keep
    their rules.
    """

    own_only: bool = True

    def specs(self, target):
        return {var: Spec((".".join(var[1:]),), _same, None) for var in target}

    def to_torch(self, leaves):
        return {".".join(var[1:]): x for var, x in leaves.items()}
