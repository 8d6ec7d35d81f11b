"""Layout tables: torch keys <-> the Flax layout JAX code trains with, both ways, bit-exact.

A model written the way JAX code writes it (stacked layers run with a scan,
einsum kernels ``(E, H, D)``, a fused ``gate_up`` kernel, interleaved rotary
pairs) has no per-layer rule to port through: a short table says where each
torch tensor goes and which element moves take it there::

    D = 64  # head size
    table = port.Table(
        ("model.embed_tokens.weight", "embed"),
        ("model.layers.{i}.self_attn.q_proj.weight", "layers/q",
         Rotary(0, D), Unflatten(0, (-1, D)), Transpose((2, 0, 1))),
        (("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
         "layers/gate_up", Transpose((1, 0)), Concat(1)),
        ...
    )
    table.torch_to_nnx("checkpoint_dir", abstract_model)
    table.nnx_to_checkpoint("out_dir", model)

A row is ``(torch, flax, *ops)``: one torch key pattern (or several) and one
Flax path (or several), ``/``-separated inside the parameters (nnx: the
``Param`` variables; linen: ``variables["params"]``). ``{i}`` in a torch
pattern is the layer index: the Flax array is the layers stacked along
:class:`Stack`'s axis (0 unless a ``Stack`` says otherwise), layer ``i`` in
slice ``i``; a Flax path with ``{i}`` too keeps one array per layer. The ops
run in the order written, torch -> Flax: an optional :class:`Split` first (one
torch tensor into several Flax arrays), then the per-tensor moves
(:class:`Transpose`, :class:`Unflatten`, :class:`Rotary`), then an optional
:class:`Concat` (several torch tensors into one Flax array), then an optional
:class:`Stack`. Flax -> torch runs the inverses backwards.

Strict: every torch key and every Flax parameter must be claimed by exactly
one row, every shape is checked from the checkpoint's headers before a byte of
data is read, and all problems are raised together in one :class:`PortError`
naming the torch key, the Flax path, both shapes and the fix. Each torch
tensor is then read once, in file order, its pieces written into their slices
of the (possibly sharded) target on each device; the host holds one tensor.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from . import rules as R
from ._assemble import Assembler, Lazy, check_sharding
from ._checkpoint import Box, Checkpoint, Tensor, open_checkpoint
from ._save import write_checkpoint
from ._source import Source, StateDict
from ._stream import _read_layout, place
from ._tiled import contiguous
from .convert import PortError, PortReport, _in, _safe_cast, _sharding
from .moves import PER_TENSOR, Concat, Op, Shape, Split, Stack, Transpose, Unflatten

__all__ = ["Row", "Table"]

# --------------------------------------------------------------- rows ---


def _names(x: str | Sequence[str]) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else tuple(x)


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(0|[1-9][0-9]*)") + r"\Z")


@dataclass(frozen=True)
class Row:
    """One table line: torch key pattern(s) <-> Flax path(s), and the ops between them."""

    torch: tuple[str, ...]
    flax: tuple[str, ...]
    ops: tuple[Op, ...] = ()
    join: Concat | Split | None = None
    stack: Stack | None = None

    @classmethod
    def of(cls, line: Row | Sequence[Any]) -> Row:
        """A row from ``(torch, flax, *ops)``, the ops in torch -> Flax order."""
        if isinstance(line, Row):
            return line
        if isinstance(line, str) or len(line) < 2:
            raise ValueError(f"a table row is (torch, flax, *ops), got {line!r}")
        torch, flax, *rest = line
        ops, join, stack, seen = [], None, None, []
        for op in rest:
            late = [type(s).__name__ for s in seen if isinstance(s, (Concat, Stack))]
            if isinstance(op, Split):
                if seen:
                    raise ValueError(f"row {torch!r}: Split must be the first op")
                join = op
            elif isinstance(op, Concat):
                if join is not None or stack is not None:
                    raise ValueError(f"row {torch!r}: Concat must come once, before Stack")
                join = op
            elif isinstance(op, Stack):
                if stack is not None:
                    raise ValueError(f"row {torch!r}: one Stack at most")
                stack = op
            elif isinstance(op, PER_TENSOR):
                if late:
                    raise ValueError(f"row {torch!r}: {op} after {late[0]}; it must come before")
                ops.append(op)
            else:
                raise TypeError(f"row {torch!r}: {op!r} is not a layout op")
            seen.append(op)
        return cls(_names(torch), _names(flax), tuple(ops), join, stack)

    def __post_init__(self):
        where = f"row {self.torch}"
        if not self.torch or not self.flax:
            raise ValueError(f"{where}: needs a torch key and a Flax path")
        if len(self.torch) > 1 and len(self.flax) > 1:
            raise ValueError(f"{where}: several torch keys and several Flax paths")
        if len(self.torch) > 1 and not isinstance(self.join, Concat):
            raise ValueError(
                f"{where}: several torch tensors into one Flax array need Concat(axis)"
            )
        if len(self.flax) > 1 and not isinstance(self.join, Split):
            raise ValueError(
                f"{where}: one torch tensor into several Flax arrays needs Split(axis)"
            )
        if len(self.torch) == len(self.flax) == 1 and self.join is not None:
            raise ValueError(f"{where}: {self.join} needs several keys on one side")
        for name in (*self.torch, *self.flax):
            if re.sub(r"\{i\}", "", name).count("{") or name.count("{i}") > 1:
                raise ValueError(f"{where}: {name!r}: the only placeholder is one {{i}}")
        indexed = {"{i}" in t for t in self.torch}
        if len(indexed) > 1:
            raise ValueError(f"{where}: either every torch pattern has {{i}} or none does")
        flax_indexed = {"{i}" in f for f in self.flax}
        if len(flax_indexed) > 1 or (True in flax_indexed and False in indexed):
            raise ValueError(f"{where}: {{i}} in a Flax path needs {{i}} in every torch pattern")
        if self.stack is not None and not self.stacked:
            raise ValueError(f"{where}: Stack needs {{i}} in the torch patterns, not in Flax's")

    @property
    def indexed(self) -> bool:
        return "{i}" in self.torch[0]

    @property
    def stacked(self) -> bool:
        return self.indexed and "{i}" not in self.flax[0]

    @property
    def layer_axis(self) -> int:
        return (self.stack or Stack()).axis

    # the per-tensor ops, as shapes and arrays (torch tensor <-> one Flax piece)
    def piece_shape(self, shape: Shape) -> Shape:
        for op in self.ops:
            shape = op.forward_shape(shape)
        return shape

    def torch_shape(self, shape: Shape) -> Shape:
        for op in reversed(self.ops):
            shape = op.inverse_shape(shape)
        return shape

    def piece(self, x: np.ndarray) -> np.ndarray:
        for op in self.ops:
            x = op.forward(x)
        return x

    def unpiece(self, y: np.ndarray) -> np.ndarray:
        for op in reversed(self.ops):
            y = op.inverse(y)
        return y

    def layer_axis_shape(self, shape: Shape) -> tuple[Shape, int]:
        """One layer's shape and the number of layers, from the stacked Flax shape."""
        return (self.stack or Stack()).inverse_shape(shape)

    def stack_shape(self, shape: Shape, layers: int) -> Shape:
        """The Flax shape of ``layers`` layers of ``shape`` (unchanged when not stacked)."""
        return (self.stack or Stack()).forward_shape(shape, layers) if self.stacked else shape

    def describe(self) -> str:
        ops = [*([self.join] if isinstance(self.join, Split) else []), *self.ops]
        ops += [*([self.join] if isinstance(self.join, Concat) else [])]
        ops += [self.stack or Stack()] if self.stacked else []
        return " -> ".join(map(repr, ops)) or "as is"


# -------------------------------------------------------------- plans ---

#: layer ``i`` of a stack, on the stack's devices (any mesh context, explicit axes too)
_layer = jax.jit(
    lambda stack, i, axis: jax.lax.dynamic_index_in_dim(stack, i, axis, keepdims=False),
    static_argnums=2,
)


def _piece_layout(row: Row) -> R.Layout | None:
    """The row's per-tensor ops as one :class:`~initjax.port.rules.Layout` (transposes,
    then a reshape), if they are: each shard's part of the piece is then read from its
    box of the torch tensor alone (:mod:`initjax.port._stream`)."""
    perm: tuple[int, ...] | None = None
    reshaped = False
    for op in row.ops:
        if isinstance(op, Transpose) and not reshaped:
            perm = op.perm if perm is None else tuple(perm[q] for q in op.perm)
        elif isinstance(op, Unflatten):
            reshaped = True
        else:
            return None
    return R.Layout(perm)


def _as_layout(row: Row) -> R.Layout | None:
    """:func:`_piece_layout` of a row that maps one tensor to one unstacked array."""
    return None if row.join is not None or row.stacked else _piece_layout(row)


def _lazy(row: Row, layout: R.Layout, tensor: Tensor, dtype: np.dtype) -> Lazy:
    """The piece ``row`` makes of ``tensor`` (a layer axis added when stacked), unread."""
    shape = row.piece_shape(tuple(tensor.shape))
    full = (*shape[: row.layer_axis], 1, *shape[row.layer_axis :]) if row.stacked else shape
    staging: list[np.ndarray] = []
    whole: list[np.ndarray] = []

    def read(box: Box) -> np.ndarray:
        inner = tuple(b for k, b in enumerate(box) if not (row.stacked and k == row.layer_axis))
        value = _read_layout(layout, tensor, dtype, shape, inner, staging)
        if value is None:  # the box is not a box of the tensor: read it whole, once
            if not whole:
                whole.append(layout(np.asarray(tensor.read(), dtype), shape=shape))
            value = contiguous(whole[0][tuple(slice(lo, hi) for lo, hi in inner)])
        return value.reshape(tuple(hi - lo for lo, hi in box))

    return Lazy(full, read)


@dataclass
class _Leaf:
    """One Flax array of the target: its shape, dtype, sharding and what writes it."""

    path: str
    shape: Shape
    dtype: np.dtype
    sharding: Any
    value: Any  # the target's leaf (an array, or abstract)


@dataclass
class _Bound:
    """A row bound to concrete names: per layer, its torch keys; its Flax leaves."""

    row: Row
    layers: list[tuple[int | None, tuple[str, ...]]]  # (layer index or None, torch keys)
    leaves: tuple[str, ...]


@dataclass
class _Problems:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    lossy: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def report(self) -> PortReport:
        return PortReport(**{k: tuple(v) for k, v in vars(self).items()})


def _fix(got: Shape, want: Shape, row: Row) -> str:
    if math.prod(got) == math.prod(want):
        return "the same elements, arranged differently: fix the row's Transpose/Unflatten"
    if row.stacked and len(want) == len(got) + 1:
        return "check the Stack axis and the number of layers"
    if len(got) == len(want) + 1:
        return "a stacked Flax array? give the torch pattern a layer index {i}"
    return "a different number of elements: another tensor, or another model size"


class Table:
    """A layout table: rows ``(torch, flax, *ops)`` (see the module docs), used both ways.

    Args:
      rows: the rows, as tuples or :class:`Row`.
      ignore: regexes of torch keys dropped by design (fully matched): they are
        neither ported nor reported as unexpected.
    """

    def __init__(self, *rows: Row | Sequence[Any], ignore: Iterable[str] = ()):
        self.rows = tuple(Row.of(r) for r in rows)
        self.ignore = tuple(re.compile(p) for p in ignore)
        seen: dict[str, Row] = {}
        for row in self.rows:
            for name in (*row.torch, *row.flax):
                if name in seen:
                    raise ValueError(f"{name!r} is in two rows: {seen[name].torch}, {row.torch}")
                seen[name] = row

    def __len__(self) -> int:
        return len(self.rows)

    # ---------------------------------------------------------- binding ---

    def _bind(
        self, keys: Iterable[str], leaves: Mapping[str, _Leaf], problems: _Problems
    ) -> tuple[list[_Bound], dict[str, str]]:
        """Every row bound to the checkpoint's keys and the target's leaves."""
        keys = list(keys)
        bound, claimed = [], {}
        for row in self.rows:
            patterns = [_pattern(t) for t in row.torch]
            found: dict[int | None, dict[int, str]] = {}
            for k in keys:
                for p, pattern in enumerate(patterns):
                    m = pattern.match(k)
                    if m:
                        found.setdefault(int(m.group(1)) if row.indexed else None, {})[p] = k
                        if k in claimed and claimed[k] != row.torch[p]:
                            problems.unsupported.append(
                                f"{k}: matched by two rows, {claimed[k]!r} and {row.torch[p]!r}"
                            )
                        claimed[k] = row.torch[p]
            if row.stacked:
                missing_leaf = [f for f in row.flax if f not in leaves]
                if missing_leaf:
                    problems.missing += [
                        f"{f}: table row {row.torch[0]!r} names a Flax path the model lacks"
                        for f in missing_leaf
                    ]
                    continue
                first = leaves[row.flax[0]]
                try:
                    _, n = row.layer_axis_shape(first.shape)
                except ValueError as e:
                    problems.mismatched.append(f"{first.path}: shape {first.shape}: {e}")
                    continue
                extra = sorted(i for i in found if i is not None and i >= n)
                if extra:
                    problems.unexpected += [
                        f"{k}: layer {i}, but the Flax stack {first.path} {first.shape} has {n} "
                        f"layers along axis {row.layer_axis} and the checkpoint {max(extra) + 1}: "
                        f"build the model with {max(extra) + 1} layers"
                        for i in extra
                        for k in found[i].values()
                    ]
                layers: list[int | None] = list(range(n))
                flax_of: dict[int | None, tuple[str, ...]] = {i: row.flax for i in layers}
            elif row.indexed:
                layers = sorted(found, key=lambda i: -1 if i is None else i)
                for f in row.flax:  # Flax paths of layers the checkpoint lacks
                    fp = _pattern(f)
                    for path in leaves:
                        m = fp.match(path)
                        if m and int(m.group(1)) not in found:
                            layers.append(int(m.group(1)))
                layers = sorted(set(layers), key=lambda i: -1 if i is None else i)
                flax_of = {i: tuple(f.replace("{i}", str(i)) for f in row.flax) for i in layers}
            else:
                layers = [None]
                flax_of = {None: row.flax}
            per_layer = []
            for i in layers:
                names = tuple(t.replace("{i}", str(i)) for t in row.torch)
                absent = [n for p, n in enumerate(names) if p not in found.get(i, {})]
                if absent:
                    problems.missing += [
                        f"{n}: no such torch key, for {', '.join(flax_of[i])}" for n in absent
                    ]
                per_layer.append((i, names))
            if row.stacked:
                bound.append(_Bound(row, per_layer, row.flax))
            else:
                for i, names in per_layer:
                    unknown = [f for f in flax_of[i] if f not in leaves]
                    problems.missing += [
                        f"{f}: table row {row.torch[0]!r} names a Flax path the model lacks"
                        for f in unknown
                    ]
                    if not unknown:
                        bound.append(_Bound(row, [(i, names)], flax_of[i]))
        return bound, claimed

    # ---------------------------------------------------------- shapes ---

    def _pieces(self, b: _Bound, leaves: Mapping[str, _Leaf]) -> dict[str, Shape] | str:
        """The torch shape of each torch key of one layer of ``b``, from the Flax side.

        A string: why the Flax shapes do not fit the row's ops.
        """
        row = b.row
        try:
            shapes = [leaves[f].shape for f in b.leaves]
            if row.stacked:
                shapes = [row.layer_axis_shape(s)[0] for s in shapes]
            if isinstance(row.join, Concat):
                pieces = row.join.inverse_shape(shapes[0], len(row.torch))
                return dict(zip(row.torch, (row.torch_shape(p) for p in pieces), strict=True))
            if isinstance(row.join, Split):
                whole = row.join.inverse_shape([row.torch_shape(s) for s in shapes])
                return {row.torch[0]: whole}
            return {row.torch[0]: row.torch_shape(shapes[0])}
        except ValueError as e:
            return str(e)

    def _check(
        self, b: _Bound, state: Checkpoint, leaves: Mapping[str, _Leaf], problems: _Problems
    ) -> bool:
        """Whether every torch tensor of ``b`` makes its Flax leaves' shapes and dtypes."""
        row, ok = b.row, True
        for _, names in b.layers:
            if not all(n in state for n in names):
                ok = False
                continue
            try:
                got = self._flax_shapes(row, [tuple(state[n].shape) for n in names], len(b.layers))
            except ValueError as e:
                ok = False
                have = ", ".join(f"{n} {tuple(state[n].shape)}" for n in names)
                problems.mismatched.append(
                    f"{have} -> {', '.join(b.leaves)} "
                    f"{[leaves[f].shape for f in b.leaves]}: {e} (row: {row.describe()})"
                )
                continue
            for f, shape in zip(b.leaves, got, strict=True):
                want = leaves[f].shape
                if shape is not None and shape != want:
                    ok = False
                    have = ", ".join(f"{n} {tuple(state[n].shape)}" for n in names)
                    problems.mismatched.append(
                        f"{have} -> {f}: the row ({row.describe()}) makes {shape}, but the "
                        f"Flax array is {want}; {_fix(shape, want, row)}"
                    )
            for n in names:
                for f in b.leaves:
                    dst = leaves[f].dtype
                    if not _safe_cast(state[n].dtype, dst):
                        ok = False
                        problems.lossy.append(
                            f"{n}: {state[n].dtype} -> {dst} for {f} would round; give the "
                            "Flax model the checkpoint's dtype"
                        )
        return ok

    @staticmethod
    def _flax_shapes(row: Row, shapes: list[Shape], layers: int) -> list[Shape | None]:
        """The Flax shapes one layer's torch shapes make (``None``: a Split's piece, checked
        against the Flax side by :meth:`_pieces`)."""
        if isinstance(row.join, Split):
            return [None] * len(row.flax)
        pieces = [row.piece_shape(s) for s in shapes]
        shape = row.join.forward_shape(pieces) if isinstance(row.join, Concat) else pieces[0]
        return [row.stack_shape(shape, layers)]

    # --------------------------------------------------------- forward ---

    def _port(
        self, source: Source, leaves: dict[str, _Leaf], strict: bool
    ) -> tuple[dict[str, Any], PortReport]:
        state = open_checkpoint(source)
        problems = _Problems()
        bound, claimed = self._bind(state.keys(), leaves, problems)
        written: set[str] = set()
        work = []
        for b in bound:
            written.update(b.leaves)
            if isinstance(b.row.join, Split):  # the torch side, checked from the Flax side
                expect = self._pieces(b, leaves)
                if isinstance(expect, str):
                    have = ", ".join(f"{f} {leaves[f].shape}" for f in b.leaves)
                    problems.mismatched.append(f"{have}: {expect} (row: {b.row.describe()})")
                    continue
                bad = [
                    (n, tuple(state[n].shape))
                    for _, names in b.layers
                    for n in names
                    if n in state and tuple(state[n].shape) != expect[b.row.torch[0]]
                ]
                for n, shape in bad:
                    problems.mismatched.append(
                        f"{n} {shape} -> {', '.join(b.leaves)} "
                        f"{[leaves[f].shape for f in b.leaves]}: the Flax arrays need torch "
                        f"shape {expect[b.row.torch[0]]} (row: {b.row.describe()}); "
                        f"{_fix(shape, expect[b.row.torch[0]], b.row)}"
                    )
                if bad:
                    continue
            if self._check(b, state, leaves, problems):
                work.append(b)
        for k in state:
            if k not in claimed and not any(p.fullmatch(k) for p in self.ignore):
                problems.unexpected.append(f"{k}: no table row matches it{_in(state, k)}")
        for path, leaf in leaves.items():
            if path not in written:
                problems.missing.append(f"{path} {leaf.shape}: no table row makes it")
            else:
                layer_axis = next(
                    (b.row.layer_axis for b in bound if path in b.leaves and b.row.stacked), None
                )
                why = check_sharding(leaf.shape, leaf.sharding, layer_axis)
                if why:
                    problems.unsupported.append(f"{path} {leaf.shape}: {why}")
        report = problems.report()
        if report.fatal or (strict and not report.ok):
            raise PortError(report, strict)
        placed = {f for b in work for f in b.leaves}
        keep = [p for p in leaves if p not in placed]
        abstract = [p for p in keep if not isinstance(leaves[p].value, jax.Array)]
        if abstract:
            raise PortError(
                PortReport(unsupported=tuple(f"{p}: missing, and abstract" for p in abstract)),
                strict,
            )
        return self._place(state, work, leaves) | {p: leaves[p].value for p in keep}, report

    def _place(self, state: Checkpoint, work: list[_Bound], leaves: Mapping[str, _Leaf]):
        writers = {}
        for b in work:
            axis = b.row.layer_axis if b.row.stacked else None
            for f in b.leaves:
                leaf = leaves[f]
                writers[f] = Assembler(leaf.shape, leaf.dtype, leaf.sharding, axis)
        jobs = []  # (torch key, bound row, layer position, piece index)
        for b in work:
            for pos, (_, names) in enumerate(b.layers):
                jobs += [(n, b, pos, p) for p, n in enumerate(names)]
        jobs.sort(key=lambda job: state[job[0]].position)
        done: dict[str, jax.Array] = {}
        for name, b, pos, p in jobs:
            row = b.row
            layout = _as_layout(row)
            if layout is not None:  # one tensor -> one array by moves only: read box by box
                leaf = leaves[b.leaves[0]]
                spec = R.Spec((name,), layout, None)
                done[leaf.path] = place(
                    spec, [state[name]], leaf.shape, leaf.dtype, leaf.sharding, leaf.path
                )
                continue
            layout = _piece_layout(row)
            if layout is not None and not isinstance(row.join, Split):
                f = b.leaves[0]
                offset = self._offset(state, b, pos, p)
                lazy = _lazy(row, layout, state[name], leaves[f].dtype)
                writers[f].write(lazy, self._start(row, lazy.shape, pos, offset), pos)
                continue
            x = state[name].read()
            if isinstance(row.join, Split):
                sizes = [
                    row.torch_shape(self._unstack(row, leaves[f].shape))[row.join.axis]
                    for f in b.leaves
                ]
                for f, part in zip(b.leaves, row.join.forward(x, sizes), strict=True):
                    self._write(writers[f], row, pos, row.piece(part), 0)
                continue
            offset = self._offset(state, b, pos, p)
            self._write(writers[b.leaves[0]], row, pos, row.piece(x), offset)
            del x
        return {f: done[f] if f in done else w.result() for f, w in writers.items()}

    @staticmethod
    def _offset(state: Checkpoint, b: _Bound, pos: int, p: int) -> int:
        """Where piece ``p`` of layer ``pos`` starts along the row's Concat axis."""
        row = b.row
        if not isinstance(row.join, Concat):
            return 0
        names = b.layers[pos][1][:p]
        return sum(row.piece_shape(tuple(state[n].shape))[row.join.axis] for n in names)

    @staticmethod
    def _start(row: Row, shape: Shape, layer: int, offset: int) -> tuple[int, ...]:
        """Where a piece of ``shape`` (a layer axis included when stacked) starts."""
        start = [0] * (len(shape) - row.stacked)
        if isinstance(row.join, Concat):
            start[row.join.axis] = offset
        if row.stacked:
            start.insert(row.layer_axis, layer)
        return tuple(start)

    def _write(self, writer: Assembler, row: Row, layer: int, piece: np.ndarray, offset: int):
        if row.stacked:
            piece = np.expand_dims(piece, row.layer_axis)
        writer.write(piece, self._start(row, piece.shape, layer, offset), layer)

    @staticmethod
    def _unstack(row: Row, shape: Shape) -> Shape:
        return row.layer_axis_shape(shape)[0] if row.stacked else shape

    def torch_to_nnx(self, source: Source, model: Any, *, strict: bool = True) -> PortReport:
        """Port ``source`` into the ``Param`` variables of an nnx ``model``, in place.

        ``model`` may be abstract (``nnx.eval_shape``); each value is placed with
        its target's sharding (an abstract mesh needs ``jax.set_mesh``).
        ``strict=False`` leaves out unexpected keys and keeps the value of Flax
        arrays no row makes (when the model holds one). Nothing is written
        unless the whole port succeeds.

        Raises:
          PortError: every missing, unexpected, mis-shaped and lossy tensor.
        """
        variables = _nnx_params(model)
        leaves = {p: _leaf(p, v.get_value()) for p, v in variables.items()}
        values, report = self._port(source, leaves, strict)
        for p, var in variables.items():
            var.set_value(values[p])
        return report

    def torch_to_linen(
        self, source: Source, variables: Mapping[str, Any], *, strict: bool = True
    ) -> tuple[dict[str, Any], PortReport]:
        """Port ``source`` into ``variables["params"]`` (arrays or ``ShapeDtypeStruct``);
        returns new variables (other collections passed through) and the report.
        As :meth:`torch_to_nnx`."""
        from flax import traverse_util

        values, report = self._port(source, _linen_leaves(variables), strict)
        params = traverse_util.unflatten_dict({tuple(p.split("/")): v for p, v in values.items()})
        return {**variables, "params": params}, report

    # --------------------------------------------------------- reverse ---

    def _plan_export(self, leaves: Mapping[str, _Leaf]) -> list[tuple[str, Shape, np.dtype, Any]]:
        """Every torch tensor: (key, shape, dtype, how to make it), none computed."""
        problems = _Problems()
        bound: list[_Bound] = []
        used: set[str] = set()
        for row in self.rows:
            if row.stacked:
                if not all(f in leaves for f in row.flax):
                    problems.missing += [
                        f"{f}: table row {row.torch[0]!r} names a Flax path the model lacks"
                        for f in row.flax
                        if f not in leaves
                    ]
                    continue
                _, n = row.layer_axis_shape(leaves[row.flax[0]].shape)
                names = [(i, tuple(t.replace("{i}", str(i)) for t in row.torch)) for i in range(n)]
                bound.append(_Bound(row, list(names), row.flax))
                continue
            if row.indexed:
                fp = _pattern(row.flax[0])
                found = sorted(int(m.group(1)) for p in leaves if (m := fp.match(p)))
            else:
                found = [None]
            for i in found:
                flax = tuple(f if i is None else f.replace("{i}", str(i)) for f in row.flax)
                names = tuple(t if i is None else t.replace("{i}", str(i)) for t in row.torch)
                if all(f in leaves for f in flax):
                    bound.append(_Bound(row, [(i, names)], flax))
                else:
                    problems.missing += [
                        f"{f}: no Flax array for {names}" for f in flax if f not in leaves
                    ]
        plan = []
        for b in bound:
            used.update(b.leaves)
            shapes = self._pieces(b, leaves)
            if isinstance(shapes, str):
                problems.mismatched.append(f"{', '.join(b.leaves)}: {shapes}")
                continue
            dtype = leaves[b.leaves[0]].dtype
            for pos, (_, names) in enumerate(b.layers):
                for p, (n, t) in enumerate(zip(names, b.row.torch, strict=True)):
                    plan.append((n, shapes[t], dtype, (b, pos, p)))
        problems.unsupported += [
            f"{p} {leaf.shape}: no table row takes it to torch"
            for p, leaf in leaves.items()
            if p not in used
        ]
        report = problems.report()
        if not report.ok:
            raise PortError(report, True)
        return plan

    def _produce(self, how: Any, leaves: Mapping[str, _Leaf], shapes: Mapping[str, Shape]):
        b, pos, p = how
        row = b.row

        def host(f: str, extra: tuple[tuple[int, slice], ...] = ()) -> np.ndarray:
            value = leaves[f].value
            if row.stacked:  # only layer ``pos`` comes to the host
                value = _layer(value, pos, row.layer_axis)
            out = np.asarray(jax.device_get(value))
            for axis, s in extra:
                out = out[(slice(None),) * axis + (s,)]
            return out

        if isinstance(row.join, Split):
            pieces = [row.unpiece(host(f)) for f in b.leaves]
            return contiguous(row.join.inverse(pieces))
        if isinstance(row.join, Concat):
            names = b.layers[pos][1]
            sizes = [row.piece_shape(shapes[n])[row.join.axis] for n in names]
            lo = sum(sizes[:p])
            value = host(b.leaves[0], ((row.join.axis, slice(lo, lo + sizes[p])),))
            return contiguous(row.unpiece(value))
        return contiguous(row.unpiece(host(b.leaves[0])))

    def _export_plan(self, leaves: Mapping[str, _Leaf]):
        plan = self._plan_export(leaves)
        shapes = {n: s for n, s, _, _ in plan}
        entries = [(n, s, d) for n, s, d, _ in plan]
        how = {n: h for n, _, _, h in plan}
        return entries, lambda n: self._produce(how[n], leaves, shapes)

    def nnx_to_torch(self, model: Any) -> StateDict:
        """The torch state_dict (numpy arrays, Flax dtypes) the table makes from ``model``."""
        entries, produce = self._export_plan(_nnx_leaves(model))
        return {n: produce(n) for n, _, _ in entries}

    def linen_to_torch(self, variables: Mapping[str, Any]) -> StateDict:
        """The torch state_dict the table makes from linen ``variables["params"]``."""
        entries, produce = self._export_plan(_linen_leaves(variables))
        return {n: produce(n) for n, _, _ in entries}

    def nnx_to_checkpoint(
        self,
        directory: str | os.PathLike[str],
        model: Any,
        *,
        max_shard_size: int | str = "5GB",
        metadata: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Write ``model`` as a torch checkpoint (the Hub's layout, as
        :func:`~initjax.port.nnx_to_checkpoint`), one tensor on the host at a time."""
        entries, produce = self._export_plan(_nnx_leaves(model))
        return write_checkpoint(
            directory, entries, produce, max_shard_size=max_shard_size, metadata=metadata
        )

    def linen_to_checkpoint(
        self,
        directory: str | os.PathLike[str],
        variables: Mapping[str, Any],
        *,
        max_shard_size: int | str = "5GB",
        metadata: Mapping[str, str] | None = None,
    ) -> list[str]:
        """:meth:`nnx_to_checkpoint` for linen ``variables``."""
        entries, produce = self._export_plan(_linen_leaves(variables))
        return write_checkpoint(
            directory, entries, produce, max_shard_size=max_shard_size, metadata=metadata
        )


# ------------------------------------------------------------- targets ---


def _leaf(path: str, value: Any) -> _Leaf:
    return _Leaf(path, tuple(value.shape), np.dtype(value.dtype), _sharding(value), value)


def _nnx_params(model: Any) -> dict[str, Any]:
    """``path -> nnx.Param`` of an nnx model, paths ``/``-joined."""
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    return {
        "/".join(map(str, path)): node
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Param)
    }


def _nnx_leaves(model: Any) -> dict[str, _Leaf]:
    return {p: _leaf(p, v.get_value()) for p, v in _nnx_params(model).items()}


def _linen_leaves(variables: Mapping[str, Any]) -> dict[str, _Leaf]:
    from flax import traverse_util

    if "params" not in variables:
        raise TypeError("variables must be what model.init returns: {'params': ...}")
    flat = traverse_util.flatten_dict(dict(variables["params"]))
    return {"/".join(map(str, k)): _leaf("/".join(map(str, k)), v) for k, v in flat.items()}
