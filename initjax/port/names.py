"""Where a torch state_dict key lands in a Flax variable tree, and back.

A torch key is turned into a Flax-style path (a tuple of names) in three steps:

1. The user's ``rename`` (regex pairs or a function) rewrites the key.
2. Stacked recurrent keys (``rnn.weight_ih_l1_reverse``) become per-cell keys:
   ``<m>.weight_ih_l<k>[_reverse]`` goes to
   ``<m>[.<k>][.forward_rnn|.backward_rnn].cell.weight_ih``; the layer index
   appears only when ``<m>`` has more than one layer, the direction only when
   it is bidirectional. That is the natural Flax port:
   a (list of) ``nn.RNN(cell)`` or ``nn.Bidirectional(forward_rnn, backward_rnn)``
   stored under the torch module's name.
3. Dots become path separators, with the container convention of the Flax
   flavour: linen names list/Sequential members ``layers_0`` (so torch
   ``layers.0.weight`` -> ``layers_0/weight``), nnx ``layers/0``. A leading
   index (a top-level ``nn.Sequential``) gets the name ``layers``, as in
   ``flax.linen.Sequential`` and ``flax.nnx.Sequential``; so does an index
   below a Sequential anywhere in the tree (``sequentials``): torch
   ``mlp.0.weight`` -> linen ``mlp/layers_0/weight``, nnx ``mlp/layers/0/weight``.
4. torch's weight-norm parametrization names become the old ones, which are
   Flax's: ``conv.parametrizations.weight.original0`` -> ``conv/weight_g``,
   ``original1`` -> ``conv/weight_v``.


A renamed key that contains ``/`` is taken literally as a Flax path instead,
its last component(s) being the torch-side names the layer rule expects.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Literal

__all__ = [
    "Rename",
    "Ignore",
    "Flavor",
    "make_rename",
    "make_ignore",
    "torch_paths",
    "default_torch_key",
]

Rename = Callable[[str], str] | Sequence[tuple[str, str]] | None
"""A user rename: ``[(pattern, replacement), ...]`` applied in order with
:func:`re.sub`, or a function from key to key."""
Ignore = Sequence[str] | None
"""torch keys with no Flax home on purpose: regex patterns, each matched with
:func:`re.search` (``r"\\.position_ids$"``, ``r"embed_positions\\.weight$"``)."""
Flavor = Literal["linen", "nnx"]
Path = tuple[str, ...]

_STACKED = re.compile(
    r"^(?:(?P<mod>.*)\.)?(?P<w>weight|bias)_(?P<kind>ih|hh|hr)_l(?P<k>\d+)(?P<rev>_reverse)?$"
)
_INDEX = re.compile(r"^(?P<name>.+)_(?P<k>\d+)$")
_PARAMETRIZED = {"original0": "g", "original1": "v"}


def make_rename(rename: Rename) -> Callable[[str], str]:
    """``rename`` as a function; regex pairs are validated (compiled) here."""
    if rename is None:
        return lambda key: key
    if callable(rename):

        def call(key: str) -> str:
            out = rename(key)
            if not isinstance(out, str):
                raise TypeError(f"rename({key!r}) returned {out!r}; it must return a str")
            return out

        return call
    pairs = []
    for pair in rename:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"rename pairs must be (pattern, replacement), got {pair!r}")
        try:
            pairs.append((re.compile(pair[0]), pair[1]))
        except re.error as e:
            raise ValueError(f"rename pattern {pair[0]!r} is not a valid regex: {e}") from None

    def subs(key: str) -> str:
        for pattern, repl in pairs:
            key = pattern.sub(repl, key)
        return key

    return subs


def make_ignore(ignore: Ignore) -> Callable[[str], bool]:
    """``ignore`` as a predicate on torch keys; patterns are validated (compiled) here."""
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a list of regex patterns, got the string {ignore!r}")
    patterns = []
    for pattern in ignore or ():
        if not isinstance(pattern, str):
            raise TypeError(f"ignore patterns must be str, got {pattern!r}")
        try:
            patterns.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"ignore pattern {pattern!r} is not a valid regex: {e}") from None
    return lambda key: any(p.search(key) for p in patterns)


def _weight_norm(path: Path) -> Path:
    """``(*m, "parametrizations", name, "original0" | "original1")`` -> ``(*m, name_g | name_v)``:
    torch's ``weight_norm`` parametrization under the names of ``torch.nn.utils.weight_norm``
    (``g`` the norm, ``v`` the direction), which Flax weight-normed layers use."""
    if len(path) >= 3 and path[-3] == "parametrizations" and path[-1] in _PARAMETRIZED:
        return (*path[:-3], f"{path[-2]}_{_PARAMETRIZED[path[-1]]}")
    return path


def _unstack(
    keys: Iterable[str], flavor: Flavor, stacks: Collection[Path], sequentials: Collection[Path]
) -> dict[str, str]:
    """Per-cell names for stacked recurrent keys (others map to themselves); keys of a
    module whose Flax path is in ``stacks`` keep their names."""
    keys = list(keys)
    stacks = set(stacks)

    def kept(m: re.Match[str]) -> bool:
        mod = () if m["mod"] is None else _dotted_to_path(m["mod"], flavor, sequentials)
        return mod in stacks

    layers: dict[str | None, set[int]] = defaultdict(set)
    bidirectional: set[str | None] = set()
    for key in keys:
        m = _STACKED.match(key)
        if m and not kept(m):
            layers[m["mod"]].add(int(m["k"]))
            if m["rev"]:
                bidirectional.add(m["mod"])
    out = {}
    for key in keys:
        m = _STACKED.match(key)
        if m is None or kept(m):
            out[key] = key
            continue
        parts = [] if m["mod"] is None else [m["mod"]]
        if len(layers[m["mod"]]) > 1:
            parts.append(m["k"])
        if m["mod"] in bidirectional:
            parts.append("backward_rnn" if m["rev"] else "forward_rnn")
        parts += ["cell", f"{m['w']}_{m['kind']}"]
        out[key] = ".".join(parts)
    return out


def _dotted_to_path(key: str, flavor: Flavor, sequentials: Collection[Path] = ()) -> Path:
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit():
            if not out or tuple(out) in sequentials:
                out.append("layers")
            if flavor == "linen":
                out[-1] = f"{out[-1]}_{part}"
                continue
        out.append(part)
    return tuple(out)


def torch_paths(
    keys: Iterable[str],
    flavor: Flavor,
    rename: Rename = None,
    *,
    stacks: Collection[Path] = (),
    sequentials: Collection[Path] = (),
) -> dict[str, Path]:
    """The Flax-style path of every torch key (see the module docstring).

    ``stacks``: Flax paths of modules that hold a torch recurrent stack under
    torch's own names (initjax's ``LSTM``/``GRU``/``SimpleRNN``); their
    stacked keys are not split into cells: ``rnn.weight_ih_l1_reverse`` ->
    ``rnn/weight_ih_l1_reverse``. ``sequentials``: Flax paths of the
    Sequential modules below the root, whose members are ``layers``.

    Raises:
      ValueError: two keys that land on the same path.
    """
    fn = make_rename(rename)
    keys = list(keys)
    renamed = {key: fn(key) for key in keys}
    sequentials = set(sequentials)
    cells = _unstack((v for v in renamed.values() if "/" not in v), flavor, stacks, sequentials)
    paths, seen = {}, {}
    for key, new in renamed.items():
        if "/" in new:
            path = tuple(new.split("/"))
        else:
            path = _dotted_to_path(cells[new], flavor, sequentials)
        path = _weight_norm(path)
        if path in seen:
            raise ValueError(
                f"torch keys {seen[path]!r} and {key!r} both map to Flax path "
                f"{'/'.join(path)!r}; disambiguate them with rename="
            )
        seen[path] = key
        paths[key] = path
    return paths


def default_torch_key(
    path: Sequence[str], flavor: Flavor, sequentials: Collection[Path] = ()
) -> str:
    """The torch key for a Flax module ``path`` under the default convention, inverted.

    linen's ``name_<k>`` components become ``name.<k>``; nnx's numeric
    components stay as they are. Ambiguous inversions (a top-level
    ``layers_0`` may have been torch's ``0``; recurrent cells may have been
    stacked ``weight_ih_l<k>`` keys) take the plain reading; pass the real
    torch keys to the reverse port to get them exactly. The members of a
    Sequential in ``sequentials`` (below the root) lose their ``layers`` name:
    linen ``mlp/layers_0``, nnx ``mlp/layers/0`` -> ``mlp.0``.
    """
    parts: list[str] = []
    for i, part in enumerate(path):
        m = _INDEX.match(part) if flavor == "linen" else None
        member = i > 0 and tuple(path[:i]) in sequentials
        if member and m and m["name"] == "layers":
            parts.append(m["k"])
        elif not (member and part == "layers" and flavor == "nnx"):
            parts += [m["name"], m["k"]] if m else [str(part)]
    return ".".join(parts)
