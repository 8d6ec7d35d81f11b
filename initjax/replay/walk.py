"""A Flax model seen as its torch twin's module tree, for code written like torch's.

Real models run their own initialization after construction: torchvision's
ResNet loops over ``self.modules()``, transformers' ``post_init`` applies
``_init_weights`` children first. :func:`initjax.replay.torch_init`'s
``post_init=`` runs such a function over :class:`TorchModule` views: one per
module of the twin, with torch's dotted name and the replayed parameters in
torch's layout by torch's names, which the function reads and overwrites with
draws from replay's initializers. The views hold the replay's state, never
the Flax variables: the values are converted to Flax's layouts once, after
the pass.

Torch's names are the Flax twin's attribute paths (list members by index),
as in :mod:`initjax.port`; ``order=`` gives torch's registration order of a
module's children where the twin declares them in another order.

A module that nnx rebuilt (``nnx.eval_shape``, ``nnx.clone``,
``nnx.split``/``merge``, ``nnx.vmap``) has its attributes sorted by name; the
order its ``__init__`` assigned them is read from nnx's own record of it
(:func:`recorded_order`). Where a module has no such record and its order is
gone (:func:`order_lost`), :func:`unknown_orders` names the places where that
order would decide draws, and :func:`attribute_order` records the order from a
model as ``__init__`` built it, for ``order=``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _limits

__all__ = [
    "TorchModule",
    "Order",
    "WALKS",
    "attribute_order",
    "order_lost",
    "recorded_order",
    "unknown_orders",
]

Path = tuple[str, ...]
State = dict[str, np.ndarray]

#: ``{Flax module type or dotted path: child attribute names in torch's order}``.
Order = Mapping[Any, Sequence[str]]

#: ``"modules"``: parents before children, as ``for m in model.modules()``;
#: ``"apply"``: children before parents, as ``model.apply(fn)`` and transformers'
#: ``post_init``.
WALKS = ("modules", "apply")


def _torch_rank(keys: list[str]) -> Callable[[str], tuple[int, int]]:
    """Sort key for a layer's tensors: ``weight`` and ``bias`` first, as torch registers
    them (port rules may list them alphabetically); the rest keep their order."""
    first = {"weight": 0, "bias": 1}
    return lambda k: (first.get(k, 2), keys.index(k))


def _dotted(path: Path) -> str:
    return ".".join(path)


def _order_keys(node: Any, path: Path, order: Order | None) -> Sequence[str]:
    """The child names ``order`` gives for ``node`` (by dotted path, then by type): ``()``."""
    if not order:
        return ()
    keys = order.get(_dotted(path))
    if keys is None:
        keys = next((order[c] for c in type(node).__mro__ if c in order), None)
    return () if keys is None else keys


def _reordered(node: Any, path: Path, items: list[tuple[str, Any]], order: Order | None):
    """``items`` (a module's children) with the keys ``order`` lists for it first, in that order."""
    keys = _order_keys(node, path, order)
    if not keys:
        return items
    present = dict(items)
    # a name the twin sets to None (torch's nn.Identity) is no submodule here: skipped
    missing = [k for k in keys if k not in present and not hasattr(node, k)]
    if missing:
        where = _dotted(path) or "<root>"
        raise ValueError(
            f"order names {missing} for {where} ({type(node).__name__}), which has no such "
            f"submodules; it has {sorted(present)}"
        )
    first = [(k, present[k]) for k in keys if k in present]
    return first + [(k, v) for k, v in items if k not in keys]


def children(node: Any, path: Path, order: Order | None) -> list[tuple[str, Any]]:
    """A node's submodules and module containers, in torch's order (see :data:`Order`)."""
    from flax import nnx

    if isinstance(node, nnx.Module):
        items = [(k, v) for k, v in vars(node).items() if not k.startswith("_")]
        assigned = {k: i for i, k in enumerate(recorded_order(node) or ())}
        items.sort(key=lambda item: assigned.get(item[0], len(assigned)))
    elif isinstance(node, (list, tuple, nnx.List)):
        items = [(str(i), v) for i, v in enumerate(node)]
    elif isinstance(node, (dict, nnx.Dict)):
        items = [(str(k), v) for k, v in node.items()]
    else:
        return []
    kinds = (nnx.Module, list, tuple, dict, nnx.List, nnx.Dict)
    items = [(k, v) for k, v in items if isinstance(v, kinds)]
    if isinstance(node, nnx.Module):
        items = _reordered(node, path, items, order)
    return items


def recorded_order(node: Any) -> list[str] | None:
    """The order ``__init__`` assigned an nnx module's attributes, as nnx records it.

    nnx rebuilds a module (``nnx.eval_shape``, ``nnx.clone``,
    ``nnx.split``/``merge``, ``nnx.vmap``'s output) by setting its attributes in
    sorted order, but keeps the assignment order, torch's construction and
    registration order, in the module's ``_pytree__nodes``. ``None`` where a
    module carries no such record.
    """
    nodes = vars(node).get("_pytree__nodes")
    return None if nodes is None else [str(k) for k in nodes]


def order_lost(node: Any) -> bool:
    """Whether ``node`` is an nnx module (not a list) whose assignment order is gone.

    That is a module with no :func:`recorded_order` whose attributes are
    sorted, as nnx sets them when it rebuilds one. (A module built directly in
    sorted order counts too: at worst a refusal where none was needed, never a
    wrong draw.)
    """
    from flax import nnx

    if not isinstance(node, nnx.Module) or isinstance(node, nnx.List):
        return False
    if recorded_order(node) is not None:
        return False
    keys = list(vars(node))
    return keys == sorted(keys)


def unknown_orders(model: Any, order: Order | None, drew: Callable[[Path], bool]) -> list[str]:
    """Rebuilt modules where the lost order decides draws: two or more children that
    ``order`` does not name drew (``drew(child path)``), so torch's order between
    them is unknown. One line per such module."""
    found = []

    def visit(node: Any, path: Path) -> None:
        items = children(node, path, order)
        if order_lost(node):
            named = set(_order_keys(node, path, order))
            open_ = [k for k, _ in items if k not in named and drew((*path, k))]
            if len(open_) > 1:
                found.append(f"{_dotted(path) or '<root>'} ({type(node).__name__}): {open_}")
        for key, child in items:
            visit(child, (*path, key))

    visit(model, ())
    return found


def attribute_order(model: Any) -> dict[str, list[str]]:
    """``{dotted path: child names}`` of every module of ``model``, in its attribute order.

    Call it on the model as its ``__init__`` built it (also inside the function
    given to ``nnx.eval_shape``) and pass the result as ``order=`` to
    :func:`initjax.replay.torch_init` for a copy that nnx rebuilt without a
    record of its order (:func:`order_lost`; nnx normally keeps one, and replay
    reads it)::

        orders = {}

        def build():
            model = Model(rngs=nnx.Rngs(0))
            orders.update(replay.attribute_order(model))
            return model

        model = nnx.eval_shape(build)
        replay.torch_init(model, seed, order=orders)

    Raises:
      ValueError: ``model`` (or a module in it) was itself rebuilt by nnx and its
        order is gone (:func:`order_lost`).
    """
    from flax import nnx

    out: dict[str, list[str]] = {}

    def visit(node: Any, path: Path) -> None:
        items = children(node, path, None)
        if order_lost(node) and len(items) > 1:
            raise ValueError(
                f"attribute_order: {_dotted(path) or '<root>'} ({type(node).__name__}) was "
                "rebuilt by nnx (its attributes are sorted by name) and records no "
                "assignment order; call it on the model as __init__ built it, e.g. inside "
                "the function given to nnx.eval_shape"
            )
        if items and isinstance(node, nnx.Module) and not isinstance(node, nnx.List):
            out[_dotted(path)] = [k for k, _ in items]
        for key, child in items:
            visit(child, (*path, key))

    visit(model, ())
    return out


def module_paths(node: Any, order: Order | None = None, path: Path = ()) -> Iterator[Path]:
    """Module paths in torch's order, parents first; containers (lists) included."""
    yield path
    for key, child in children(node, path, order):
        yield from module_paths(child, order, (*path, key))


@dataclass
class _Node:
    path: Path
    obj: Any
    kids: list[_Node] = field(default_factory=list)


def tree(model: Any, order: Order | None, stop: Callable[[Path], bool]) -> _Node:
    """The module tree in torch's order; below a path where ``stop`` holds, nothing."""

    def build(obj: Any, path: Path) -> _Node:
        node = _Node(path, obj)
        if not stop(path):
            node.kids = [build(c, (*path, k)) for k, c in children(obj, path, order)]
        return node

    return build(model, ())


def walk(root: _Node, how: str) -> Iterator[_Node]:
    if how not in WALKS:
        raise ValueError(f"walk must be one of {WALKS}, got {how!r}")
    if how == "modules":
        yield root
    for kid in root.kids:
        yield from walk(kid, how)
    if how == "apply":
        yield root


class TorchModule:
    """One module of the twin as torch's ``_init_weights(module)`` sees it.

    ``name`` is torch's dotted name (``""`` for the model itself), ``module``
    the Flax module (for ``isinstance`` tests; a plain list for torch's
    ``ModuleList``/``Sequential``). Parameters and buffers are read and
    written by torch's name relative to this module, in torch's layout:
    ``m["weight"]``, ``m["c_proj.weight"] = replay.normal_(gen, shape, 0, s)``.
    A written value must have the parameter's shape and dtype; a number fills
    it (``m["bias"] = 0``, like ``bias.zero_()``).
    """

    def __init__(
        self,
        node: _Node,
        states: dict[Path, State],
        buffers: dict[Path, frozenset[str]],
        written: set[Path] | None = None,
    ) -> None:
        self._node = node
        self._states = states
        self._buffers = buffers
        self._written = set() if written is None else written  # layer paths assigned to

    @property
    def name(self) -> str:
        return _dotted(self._node.path)

    @property
    def module(self) -> Any:
        return self._node.obj

    def _entries(self, buffers: bool) -> Iterator[tuple[str, Path, str]]:
        """(relative torch name, layer path, state key), own tensors first, as torch orders them."""

        def visit(node: _Node, prefix: Path) -> Iterator[tuple[str, Path, str]]:
            state = self._states.get(node.path, {})
            for key in sorted(state, key=_torch_rank(list(state))):
                if (key in self._buffers.get(node.path, ())) == buffers:
                    yield _dotted((*prefix, key)), node.path, key
            for kid in node.kids:
                yield from visit(kid, (*prefix, kid.path[-1]))

        yield from visit(self._node, ())

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``(name, value)`` of every parameter at or below this module, torch's order."""
        return [(n, self._states[p][k]) for n, p, k in self._entries(False)]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        """``(name, value)`` of every buffer (BatchNorm's running statistics) at or below."""
        return [(n, self._states[p][k]) for n, p, k in self._entries(True)]

    def _find(self, name: str) -> tuple[Path, str]:
        for entries in (self._entries(False), self._entries(True)):
            for n, p, k in entries:
                if n == name:
                    return p, k
        have = [n for n, _, _ in self._entries(False)] + [n for n, _, _ in self._entries(True)]
        raise KeyError(f"{self.name or '<root>'} has no parameter {name!r}; it has {have}")

    def __contains__(self, name: object) -> bool:
        try:
            self._find(str(name))
        except KeyError:
            return False
        return True

    def __getitem__(self, name: str) -> np.ndarray:
        path, key = self._find(name)
        return self._states[path][key]

    def __setitem__(self, name: str, value: Any) -> None:
        path, key = self._find(name)
        old = self._states[path][key]
        self._written.add(path)
        if isinstance(value, numbers.Real):
            if not math.isfinite(value):
                raise ValueError(f"{self.name}.{name}: fill value must be finite, got {value}")
            _limits.check_in_range(old.dtype, f"{self.name}.{name} (constant_)", val=float(value))
            self._states[path][key] = np.full(old.shape, value, old.dtype)
            return
        new = np.asarray(value)
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ValueError(
                f"{_dotted((*self._node.path, name))}: torch's tensor is {old.shape} "
                f"{old.dtype}, got {new.shape} {new.dtype} (draw with dtype={old.dtype})"
            )
        self._states[path][key] = new

    def __repr__(self) -> str:
        return f"TorchModule({self.name!r}, {type(self.module).__name__})"
