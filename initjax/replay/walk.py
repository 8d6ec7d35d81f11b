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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TorchModule", "Order", "WALKS"]

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


def _reordered(node: Any, path: Path, items: list[tuple[str, Any]], order: Order | None):
    """``items`` (a module's children) with the keys ``order`` lists for it first, in that order."""
    if not order:
        return items
    keys = order.get(_dotted(path))
    if keys is None:
        keys = next((order[c] for c in type(node).__mro__ if c in order), None)
    if keys is None:
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
        # a module rebuilt from its graph (``nnx.vmap``'s output: stacked layers) has its
        # attributes sorted by name; nnx keeps their assignment order in ``_pytree__nodes``
        assigned: dict[str, int] = {
            str(k): i for i, k in enumerate(getattr(node, "_pytree__nodes", ()))
        }
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
    ) -> None:
        self._node = node
        self._states = states
        self._buffers = buffers

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
        if isinstance(value, numbers.Real):
            if not math.isfinite(value):
                raise ValueError(f"{self.name}.{name}: fill value must be finite, got {value}")
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
