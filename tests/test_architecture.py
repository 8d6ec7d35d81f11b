"""The package plan holds: imports run one way, down the layers, with no cycle.

Read from the source with ``ast`` (every ``import``, at module level or inside a
function), so a lazy import that would close a cycle or reach up a layer fails too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "initjax"

#: Each room of the package and its layer: a module may import its own room and the
#: rooms of lower layers only. Two rooms on one layer (linen and nnx, replay and
#: optim) never import each other.
LAYERS = {
    "initjax.gain": 0,
    "initjax.fans": 0,
    "initjax._limits": 0,
    "initjax._threefry": 0,
    "initjax._sampling": 1,
    "initjax.init": 2,
    "initjax.defaults": 3,
    "initjax": 3,  # the package itself re-exports the init family and the defaults
    "initjax.functional": 4,
    "initjax.linen": 5,
    "initjax.nnx": 5,
    "initjax.port": 6,
    "initjax.replay": 7,
    "initjax.optim": 7,
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """The initjax modules that ``name`` imports (``from pkg import mod`` names ``mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)]
            module = ".".join([*base, node.module] if node.module else base)
            module = module if node.level else node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name and target.startswith("initjax"):
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(name: str) -> str:
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_room(name):
    assert _room(name) in LAYERS, f"{name} belongs to no room of LAYERS; add it there"


def test_imports_run_down_the_layers():
    upward = [
        f"{m} (layer {LAYERS[_room(m)]}) imports {t} (layer {LAYERS[_room(t)]})"
        for m, targets in GRAPH.items()
        for t in targets
        if _room(t) != _room(m)
        and LAYERS[_room(t)] >= LAYERS[_room(m)]
        and not t.startswith(m + ".")  # a package re-exports its own modules
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_no_import_below_code():
    late = [str(p.relative_to(ROOT.parent)) for p in MODULES.values() if "E402" in p.read_text()]
    assert not late, f"imports below code (noqa: E402) in {late}"
