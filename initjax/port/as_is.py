"""Parameters with one possible reading port as they are, by default.

A variable that no layer rule owns (a Flax layer's own ``self.param``: an RMSNorm
scale, a class token, a relative position table) is copied unchanged, in both
directions, when its shape has only one reading: no other order of its axes gives
the same shape with the elements in another order. That is a 0-D or 1-D variable,
or one whose axes longer than 1 all have distinct sizes (axes of length 1 may trade
places without moving an element). Such a variable is ported with the
:class:`~initjax.port.rules.AsIs` rule, and a forward port lists it in
``PortReport.as_is``.

Refused, with the rule to pass and why:

- a shape with two axes of one size (a square matrix): torch may store it in either
  order and nothing in the shape tells which;
- a ``kernel``: Flax names its matmul weights ``kernel`` and stores them
  ``(in, out)``, where torch stores ``(out, in)`` (GPT-2's ``Conv1D`` is the
  exception that stores ``(in, out)``, which is Flax's ``kernel`` transposed:
  its rule is :class:`~initjax.port.rules.Linear`);
- a 2-D variable whose torch tensor is its transpose.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from . import rules as R
from .layers import Layer, Target

__all__ = ["unambiguous", "adopt"]

Path = tuple[str, ...]
#: The torch key and shape at a Flax path, or ``None`` (no torch state to look at).
Find = Callable[[Path], tuple[str, tuple[int, ...]] | None]


def unambiguous(shape: Sequence[int]) -> bool:
    """Whether ``shape`` has one reading: its axes longer than 1 have distinct sizes."""
    sizes = [d for d in shape if d != 1]
    return len(set(sizes)) == len(sizes)


def _rule_hint(kind: str, rule: str) -> str:
    return f"pass rules={{{kind}: initjax.port.rules.{rule}()}}"


def _refusal(path: Path, kind: str, shape: tuple[int, ...], find: Find | None) -> str | None:
    """Why the variable at ``path`` (``(collection, *module, name)``) is not copied as it is."""
    where = f"{'/'.join(path)} ({kind}, shape {shape}, no porting rule)"
    found = find(path[1:]) if find else None
    if path[-1] == "kernel":
        weight = find((*path[1:-1], "weight")) if find else None
        why = (
            f"{where}: a Flax kernel is stored (in, out) and torch's weight (out, in), so it "
            "is not copied as it is"
        )
        if weight is not None and len(shape) == 2 and weight[1] == shape[::-1]:
            return (
                f"{why}; torch's {weight[0]} {weight[1]} is its transpose (a weight stored "
                f"(in, out), as GPT-2's Conv1D does): {_rule_hint(kind, 'Linear')}"
            )
        return f"{why}; {_rule_hint(kind, 'Linear')} if torch stores its transpose as weight"
    if found is not None and len(shape) == 2 and found[1] == shape[::-1] != shape:
        return (
            f"{where}: torch's {found[0]} {found[1]} is its transpose, so it is not copied as "
            "it is; pass rules= with a Rule that transposes it (initjax.port.Rule)"
        )
    if not unambiguous(shape):
        repeated = "a square matrix" if len(shape) == 2 else "axes of equal sizes"
        return (
            f"{where}: {repeated}, which torch may store in another axis order with the "
            f"same shape; pass rules={{{kind}: initjax.port.AsIs()}} if torch stores it in "
            "this layout, or a Rule that permutes it"
        )
    return None


def adopt(target: Target, find: Find | None) -> tuple[Target, tuple[str, ...], tuple[str, ...]]:
    """``target`` with its unambiguous orphans ported by :class:`~initjax.port.rules.AsIs`.

    ``find``: the torch key and shape at a Flax path (a forward port), or ``None``
    (a reverse port, decided on the Flax shapes alone). Returns the new target,
    the ``as_is`` report lines (forward, for the variables torch has), and the
    refusals, each naming the rule to pass.
    """
    adopted: dict[tuple[Path, str], dict[Path, object]] = defaultdict(dict)
    lines, refused = [], []
    orphans = {}
    for full, kind in sorted(target.orphans.items()):
        leaf = target.leaves[full]
        shape = tuple(leaf.shape)
        why = _refusal(full, kind, shape, find)
        if why is not None:
            refused.append(why)
            orphans[full] = kind
            continue
        adopted[(full[1:-1], kind)][(full[0], full[-1])] = leaf
        found = find(full[1:]) if find else None
        if found is not None:
            lines.append(f"{'/'.join(full)} <- {found[0]} ({kind}, shape {shape})")
    rule = R.AsIs()
    layers = [
        Layer(path, kind, rule, dict(variables)) for (path, kind), variables in adopted.items()
    ]
    new = replace(target, layers=[*target.layers, *layers], orphans=orphans)
    return new, tuple(lines), tuple(refused)
