"""Stacked (scanned) layers: one Flax module holding every layer of a torch ``ModuleList``.

JAX code builds ``N`` identical blocks as one module whose every variable has
a layer axis (``nnx.vmap`` + ``nnx.scan``, or linen's ``nn.scan`` with
``variable_axes={"params": 0}``); torch stores them as ``prefix.{i}.rest``.
:func:`unstack` turns each such stack of a :class:`~initjax.port.layers.Target`
into ``N`` per-layer views, ``prefix/{i}/rest`` (nnx) or ``prefix_{i}/rest``
(linen), whose variables are :class:`Slice` es of the stacked ones, so the layer
rules, names and checks of :mod:`initjax.port` apply to each layer as to a
list of layers; :func:`place` writes the ported layers into their slices of the
(possibly sharded) stacked arrays, one layer's piece at a time.

A stack is found

- from the torch keys: ``prefix.{i}.rest`` where the Flax model has a module
  at ``prefix`` and none at ``prefix/{i}``; its layer axis is the one whose
  removal gives every layer the shapes torch's layer 0 has (where several do,
  the user names it: no guess), or where none does, the one that leaves each
  layer variables its rule ports (the shapes that differ are
  then reported as mismatched, torch key, Flax path and both shapes);
- without torch keys (replay, a reverse port without ``torch_keys``): from a
  layer whose rule cannot hold its variables (a 3-D ``Linear`` kernel) but can
  without their leading axis: the stack is its outermost enclosing module
  whose every variable has that leading size;
- or as the user names it: ``stacked={"blocks": 0}`` (Flax path: layer axis).

A wrapper module between the stack and its layers that torch does not have
(the ``block`` of an ``nn.scan`` body ``_ScanBlock(name="block")``) is skipped
when the torch keys say so.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _stream
from . import layers as L
from . import rules as R
from ._checkpoint import Box
from .names import _INDEX

__all__ = [
    "Slice",
    "Stacked",
    "Stack",
    "unstack",
    "value",
    "place",
    "place_layers",
    "gather",
    "expand_order",
    "misfit",
    "model_paths",
]

Path = tuple[str, ...]
#: ``{Flax path of a stacked module ("blocks", "stages/blocks"): its layer axis}``.
Stacked = Mapping[str, int] | None


@dataclass(frozen=True, eq=False)
class Slice:
    """Layer ``index`` of a stacked variable ``stacked`` along ``axis`` (a per-layer view).

    ``shape``/``dtype`` are the layer's; :meth:`value` is ``stacked[..., index, ...]``.
    ``stacked`` may itself be a :class:`Slice` (nested stacks).
    """

    stacked: Any
    axis: int
    index: int

    @property
    def shape(self) -> tuple[int, ...]:
        shape = tuple(self.stacked.shape)
        return shape[: self.axis] + shape[self.axis + 1 :]

    @property
    def dtype(self) -> Any:
        return self.stacked.dtype

    def value(self) -> jax.Array:
        """The layer's array: ``jax.lax.index_in_dim`` of the stacked one, or for a stack
        on several devices, the layer's piece of each shard, gathered on the host (an
        explicitly sharded layer axis cannot be sliced by index)."""
        stacked = value(self.stacked)
        if len(stacked.sharding.device_set) == 1:
            return jax.lax.index_in_dim(stacked, self.index, self.axis, keepdims=False)
        out = np.empty(self.shape, stacked.dtype)
        seen = set()
        for shard in stacked.addressable_shards:
            box = tuple(s.indices(d)[:2] for s, d in zip(shard.index, stacked.shape, strict=True))
            lo, hi = box[self.axis]
            if not lo <= self.index < hi or box in seen:
                continue
            seen.add(box)
            piece = jax.lax.index_in_dim(shard.data, self.index - lo, self.axis, keepdims=False)
            rest = box[: self.axis] + box[self.axis + 1 :]
            out[tuple(slice(a, b) for a, b in rest)] = np.asarray(piece)
        return jnp.asarray(out)

    def root(self) -> tuple[Any, tuple[tuple[int, int], ...]]:
        """The outermost stacked leaf, and ``(axis, index)`` per level in its coordinates."""
        if not isinstance(self.stacked, Slice):
            return self.stacked, ((self.axis, self.index),)
        leaf, outer = self.stacked.root()
        axis = self.axis
        for a, _ in sorted(outer):  # an axis of the view counts the removed ones before it
            axis += a <= axis
        return leaf, (*outer, (axis, self.index))


def value(leaf: Any) -> jax.Array:
    """``leaf`` as an array: a :class:`Slice` 's layer, anything else through ``jnp.asarray``."""
    return leaf.value() if isinstance(leaf, Slice) else jnp.asarray(leaf)


@dataclass(frozen=True)
class Stack:
    """A stack found in a target: its Flax path (in the target it was found in), its
    layer axis and count, and how many wrapper components torch's keys skip."""

    path: Path
    axis: int
    count: int
    strip: int


def _indexed(path: Path, i: int, flavor: L.Flavor) -> Path:
    if flavor == "nnx":
        return (*path, str(i))
    return (*path[:-1], f"{path[-1]}_{i}") if path else (f"layers_{i}",)


def _torch_of(rule: R.Rule, variables: Mapping[Any, Any]) -> dict[str, tuple[int, ...]] | None:
    """The torch tensors (name -> shape) ``rule`` makes of variables of these shapes;
    ``None`` where it cannot (a 3-D ``Linear`` kernel)."""
    abstract = {v: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype) for v, x in variables.items()}
    try:
        rule.specs({v: tuple(x.shape) for v, x in variables.items()})
        out = jax.eval_shape(rule.to_torch, abstract)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return {n: tuple(s.shape) for n, s in out.items()}


def _fits(rule: R.Rule, variables: Mapping[Any, Any]) -> bool:
    return _torch_of(rule, variables) is not None


def _fits_within(rule: R.Rule, variables: Mapping[Any, Any]) -> bool:
    """Whether ``rule`` fits the variables, or their layers (a stack nested inside)."""
    if _fits(rule, variables):
        return True
    if not all(len(x.shape) for x in variables.values()):
        return False
    return _fits_within(rule, _views(variables, 0, 0))


def _views(variables: Mapping[Any, Any], axis: int, i: int) -> dict[Any, Slice]:
    return {v: Slice(x, axis, i) for v, x in variables.items()}


def _within(path: Path, root: Path) -> bool:
    return path[: len(root)] == root


def _shapes(layers: Iterable[L.Layer]) -> str:
    return ", ".join(
        f"{'/'.join((*layer.path, *v[1:]))} {tuple(x.shape)}"
        for layer in layers
        for v, x in sorted(layer.variables.items())
    )


@dataclass
class _Found:
    """Evidence for a stack at one path: torch's layer indices and layer-0 names."""

    indices: set[int] = field(default_factory=set)
    rests: set[Path] = field(default_factory=set)
    axis: int | None = None
    explicit: bool = False


def _from_keys(paths: Iterable[Path], modules: set[Path], flavor: L.Flavor) -> dict[Path, _Found]:
    found: dict[Path, _Found] = {}
    for tp in paths:
        for j in range(len(tp)):
            if flavor == "nnx":
                stack, k = tp[:j], tp[j] if tp[j].isdigit() else None
            else:
                m = _INDEX.match(tp[j])
                stack, k = (*tp[:j], m["name"]) if m else (), m["k"] if m else None
            if k is None or not stack or stack not in modules or tp[: j + 1] in modules:
                continue
            entry = found.setdefault(stack, _Found())
            entry.indices.add(int(k))
            if int(k) == 0:
                entry.rests.add(tp[j + 1 :])
            break
    return found


def _from_rules(target: L.Target, below: Callable[[Path], Path]) -> dict[Path, _Found]:
    """Stacks implied by layers whose rule fits them only without their leading axis."""
    found: dict[Path, _Found] = {}
    for layer in target.layers:
        if _fits(layer.rule, layer.variables) or not all(
            len(x.shape) for x in layer.variables.values()
        ):
            continue
        if not _fits_within(layer.rule, _views(layer.variables, 0, 0)):
            continue
        n = next(iter(layer.variables.values())).shape[0]
        top = below(layer.path)
        for depth in range(len(top) + 1, len(layer.path) + 1):
            root = layer.path[:depth]
            inside = [
                x for ly in target.layers if _within(ly.path, root) for x in ly.variables.values()
            ]
            if all(len(x.shape) and x.shape[0] == n for x in inside):
                found.setdefault(root, _Found(axis=0))
                break
    return found


def _axis(stack: Path, members: list[L.Layer], evidence: _Found, torch_shapes) -> int | str:
    """The stack's layer axis, or a message saying why none fits.

    The axes whose removal leaves every layer variables its rule ports; among them
    those that also give torch's layer-0 shapes, if any do (a shape that still differs
    is then reported as mismatched, naming both); where several remain, the user
    names it (guessing the ``vmap``/``scan`` default 0 could port a square stack
    transposed, silently).
    """
    leaves = [x for layer in members for x in layer.variables.values()]
    ndim = min(len(x.shape) for x in leaves)
    candidates = [a for a in range(ndim) if len({x.shape[a] for x in leaves}) == 1]
    if evidence.explicit:
        candidates = [a for a in candidates if a == evidence.axis]
    fitting, matching = [], []
    for a in candidates:
        views = [replace(layer, variables=_views(layer.variables, a, 0)) for layer in members]
        if all(_fits_within(v.rule, v.variables) for v in views):
            fitting.append(a)
            if torch_shapes(views):
                matching.append(a)
    found = matching or fitting
    if len(found) == 1:
        return found[0]
    name = "/".join(stack)
    if found:
        return (
            f"{name}: axes {found} of its variables ({_shapes(members)}) could each be "
            f"the layer axis; name it with stacked={{'{name}': axis}}"
        )
    return (
        f"{name}: torch holds it as a list of layers, but no axis of its Flax variables "
        f"({_shapes(members)}) is a layer axis that leaves each layer variables its rule "
        f"ports; name the axis with stacked={{'{name}': axis}}, or reshape the Flax variables"
    )


def unstack(
    target: L.Target,
    torch_paths: Mapping[str, Path] | None,
    torch_shapes: Mapping[str, tuple[int, ...]] | None = None,
    stacked: Stacked = None,
) -> tuple[L.Target, list[Stack]]:
    """``target`` with every stack replaced by per-layer views; the stacks, in order found.

    ``torch_paths``: torch key -> Flax-style path (:func:`~initjax.port.names.torch_paths`),
    or ``None`` (no torch keys: stacks found from the rules); ``torch_shapes``: the
    torch tensors' shapes, to find each stack's axis (``None``: any axis the rules fit).
    A stack that cannot be split adds a line to ``target.problems``.
    """
    for name, axis in (stacked or {}).items():
        if not isinstance(axis, int) or isinstance(axis, bool) or axis < 0:
            raise ValueError(f"stacked[{name!r}] must be a non-negative layer axis, got {axis!r}")
    explicit = {tuple(k.split("/")): a for k, a in (stacked or {}).items()}
    origin: dict[Path, Path] = {}  # path in the unstacked target -> the model's own path
    inserted: set[Path] = set()  # per-layer roots made here (``blocks/3``)
    unused = set(explicit)
    failed: set[Path] = set()  # stacks tried (split or refused): never tried again
    stacks: list[Stack] = []
    by_path = {p: k for k, p in (torch_paths or {}).items()}
    flavor = target.flavor

    def orig(path: Path) -> Path:
        for n in range(len(path), 0, -1):
            if path[:n] in origin:
                return origin[path[:n]] + path[n:]
        return path

    def below(path: Path) -> Path:  # the innermost per-layer root holding ``path``
        return max((p for p in inserted if _within(path, p)), key=len, default=())

    while True:
        modules = {layer.path[:n] for layer in target.layers for n in range(len(layer.path) + 1)}
        found = {
            p: _Found(axis=explicit[orig(p)], explicit=True)
            for p in modules
            if orig(p) in explicit and p not in origin
        }
        unused -= {orig(p) for p in found}
        if torch_paths is not None:
            for p, e in _from_keys(by_path, modules, target.flavor).items():
                found.setdefault(p, e).indices |= e.indices
                found[p].rests |= e.rests
        else:
            for p, e in _from_rules(target, below).items():
                found.setdefault(p, e)
        found = {p: e for p, e in found.items() if p not in failed}
        found = {
            p: e for p, e in found.items() if not any(_within(p, q) != (p == q) for q in found)
        }
        if not found:
            break
        problems = list(target.problems)
        views: dict[Path, list[L.Layer]] = {}  # stack path -> its per-layer views, layer-major
        for p, evidence in sorted(found.items()):
            members = [ly for ly in target.layers if _within(ly.path, p)]
            failed.add(p)
            if not members:
                continue
            strip = _strip(p, members, evidence)

            def shapes_fit(views, p=p, evidence=evidence, strip=strip) -> bool:
                if torch_shapes is None or not evidence.indices:
                    return True
                for view in views:
                    new = _indexed(p, 0, flavor) + view.path[len(p) + strip :]
                    for name, shape in (_torch_of(view.rule, view.variables) or {}).items():
                        k = by_path.get(new + tuple(name.split(".")))
                        if k is not None and tuple(torch_shapes[k]) != shape:
                            return False
                return True

            axis = _axis(p, members, evidence, shapes_fit)
            if isinstance(axis, str):
                first = _indexed(p, 0, flavor)
                torch0 = [
                    f"{k} {tuple((torch_shapes or {}).get(k, ()))}"
                    for path, k in sorted(by_path.items())
                    if _within(path, first)
                ]
                problems.append(
                    axis + (f" (torch's layer 0: {', '.join(torch0)})" if torch0 else "")
                )
                continue
            count = members[0].variables[min(members[0].variables)].shape[axis]
            if evidence.indices and evidence.indices != set(range(count)):
                problems.append(_count(p, members, evidence, count, axis))
            stacks.append(Stack(p, axis, count, strip))
            views[p] = []
            for i in range(count):
                root = _indexed(p, i, target.flavor)
                origin[root] = orig(p)
                inserted.add(root)
                views[p] += [
                    replace(
                        layer,
                        path=root + layer.path[len(p) + strip :],
                        variables=_views(layer.variables, axis, i),
                    )
                    for layer in members
                ]
        layers: list[L.Layer] = []
        for layer in target.layers:  # each stack's views where its first layer was
            p = next((q for q in views if _within(layer.path, q)), None)
            if p is None:
                layers.append(layer)
            elif views[p]:
                layers += views.pop(p)
                views[p] = []
        target = replace(target, layers=layers, problems=problems)
    if unused:
        raise ValueError(
            f"stacked: no module at {sorted('/'.join(p) for p in unused)} in this model"
        )
    return target, stacks


def _strip(p: Path, members: list[L.Layer], evidence: _Found) -> int:
    """How many wrapper components (below ``p``, common to every layer) torch's keys skip."""
    subs = [ly.path[len(p) :] for ly in members]
    common = 0
    while all(len(s) > common + 1 and s[common] == subs[0][common] for s in subs):
        common += 1
    for k in range(common + 1):
        if any(rest[: len(s) - k] == s[k:] for rest in evidence.rests for s in subs):
            return k
    return 0


def _count(p: Path, members: list[L.Layer], evidence: _Found, count: int, axis: int) -> str:
    first = members[0]
    var = min(first.variables)
    shape = tuple(first.variables[var].shape)
    return (
        f"{'/'.join(p)}: the torch checkpoint has {len(evidence.indices)} layers (indices "
        f"{min(evidence.indices)}..{max(evidence.indices)}), the Flax stack has {count} (axis "
        f"{axis} of {'/'.join((*first.path, *var[1:]))} {shape}); build the Flax model with "
        "as many layers as the checkpoint"
    )


def misfit(layer: L.Layer, error: Exception) -> str:
    """A readable line for a layer its rule cannot port (no raw JAX message)."""
    where = f"{'/'.join(layer.path) or '<root>'} ({layer.kind})"
    rule = type(layer.rule).__name__
    if isinstance(error, R.NotRepresentable):
        return f"{where}: {rule} cannot port it: {error}"
    return (
        f"{where}: variables {_shapes([layer])} do not have the shapes of one layer that "
        f"{rule} ports; if they are stacked (scanned) layers, name the layer axis with "
        f"stacked={{'<stack path>': axis}} (or pass the torch keys), else reshape them"
    )


# ---------------------------------------------------------------- placing ---


@functools.partial(jax.jit, static_argnums=(3,), donate_argnums=(0,))
def _put(buf: jax.Array, piece: jax.Array, starts: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    piece = jnp.expand_dims(piece, axes)
    return jax.lax.dynamic_update_slice(buf, piece.astype(buf.dtype), tuple(starts))


def place(
    parts: dict[tuple[int, ...], Callable[[Box], np.ndarray]],
    axes: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: Any,
    sharding: jax.sharding.Sharding | None,
) -> jax.Array:
    """A stacked variable from its layers: ``parts[(i, ...)](box)`` is layer ``(i, ...)`` 's
    piece (``box`` in the layer's shape) along stacked ``axes`` of ``shape``.

    Every shard of ``sharding`` starts as a zeroed buffer on its devices; layer by layer,
    each shard holding a part of the layer gets its piece (an in-place update), and the
    layer's reader is dropped (``parts`` is consumed), so the host holds one layer's
    piece and its transfer at a time, however many layers the stack has.
    """
    dtype = np.dtype(dtype)
    if sharding is None:
        boxes = {tuple((0, d) for d in shape): [None]}
    else:
        boxes = _stream.shard_boxes(sharding, shape)
    bufs = {
        box: [jnp.zeros(tuple(hi - lo for lo, hi in box), dtype, device=d) for d in devices]
        for box, devices in boxes.items()
    }
    for index in itertools.product(*(range(shape[a]) for a in axes)):
        part = parts.pop(index)
        for box in boxes:
            if not all(box[a][0] <= i < box[a][1] for a, i in zip(axes, index, strict=True)):
                continue
            try:
                piece = part(tuple(b for a, b in enumerate(box) if a not in axes))
            except R.NotRepresentable as e:
                raise R.NotRepresentable(f"layer {', '.join(map(str, index))}: {e}") from None
            starts = np.zeros(len(shape), np.int32)
            for a, i in zip(axes, index, strict=True):
                starts[a] = i - box[a][0]
            bufs[box] = [_put(b, piece, starts, axes) for b in bufs[box]]
            for b in bufs[box]:
                b.block_until_ready()
            del piece
        del part
    arrays = [b for box in boxes for b in bufs[box]]
    if sharding is None:
        return arrays[0]
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def _roots(target: L.Target) -> dict[int, tuple[str, ...]]:
    """The model's full variable path of each of ``target``'s own leaves, by identity."""
    return {id(leaf): full for full, leaf in target.leaves.items()}


def model_paths(target: L.Target) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Each layer variable's full path in ``target`` -> the model's variable it lives in
    (a stacked layer's: the stacked variable)."""
    roots = _roots(target)
    return {
        (var[0], *layer.path, *var[1:]): roots[id(leaf.root()[0])]
        if isinstance(leaf, Slice)
        else (var[0], *layer.path, *var[1:])
        for layer in target.layers
        for var, leaf in layer.variables.items()
    }


def place_layers(
    parts: dict[Slice, Callable[[Box], np.ndarray]],
    target: L.Target,
    sharding_of: Callable[[Any], jax.sharding.Sharding | None],
) -> dict[tuple[str, ...], jax.Array]:
    """Every stacked variable of ``target`` from its layers' readers (one per :class:`Slice`;
    ``parts`` is consumed, so that each reader is dropped once its layer is placed).

    Raises:
      NotRepresentable: a layer's conversion, naming the layer's index.
    """
    roots = _roots(target)
    by_root: dict[tuple[str, ...], tuple[Any, tuple[int, ...], dict]] = {}
    while parts:
        view, part = parts.popitem()
        root, levels = view.root()
        entry = by_root.setdefault(roots[id(root)], (root, tuple(a for a, _ in levels), {}))
        entry[2][tuple(i for _, i in levels)] = part
    out = {}
    for full, (root, axes, layer_parts) in sorted(by_root.items()):
        out[full] = place(layer_parts, axes, tuple(root.shape), root.dtype, sharding_of(root))
    return out


def gather(
    values: Mapping[tuple[str, ...], np.ndarray], target: L.Target
) -> dict[tuple[str, ...], np.ndarray]:
    """Host values keyed by per-layer variable paths -> stacked values by the model's paths."""
    out: dict[tuple[str, ...], np.ndarray] = {}
    roots = _roots(target)
    for layer in target.layers:
        for var, leaf in layer.variables.items():
            full = (var[0], *layer.path, *var[1:])
            if not isinstance(leaf, Slice):
                out[full] = values[full]
                continue
            root, levels = leaf.root()
            dest = roots[id(root)]
            if dest not in out:
                out[dest] = np.empty(tuple(root.shape), np.asarray(values[full]).dtype)
            index = [slice(None)] * len(root.shape)
            for a, i in levels:
                index[a] = i  # type: ignore[call-overload]
            out[dest][tuple(index)] = values[full]
    return out


def expand_order(order: Iterable[Path], stacks: Iterable[Stack], flavor: L.Flavor) -> list[Path]:
    """Module paths in draw order with each stack's paths repeated per layer:
    layer 0's modules, then layer 1's, ... (as torch builds a ``ModuleList``)."""
    out = list(order)
    for stack in stacks:
        inside = [p for p in out if _within(p, stack.path)]
        if not inside:
            continue
        rest = [p for p in out if not _within(p, stack.path)]
        at = sum(not _within(p, stack.path) for p in out[: out.index(inside[0])])
        subs = [
            p[len(stack.path) + stack.strip :]
            for p in inside
            if len(p) > len(stack.path) + stack.strip
        ]
        per_layer = [
            _indexed(stack.path, i, flavor) + sub for i in range(stack.count) for sub in [(), *subs]
        ]
        out = rest[:at] + per_layer + rest[at:]
    return out
