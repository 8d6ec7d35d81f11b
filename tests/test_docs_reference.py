"""The docs against the code: the API reference, the lists that drift, the figures.

- Every name in the ``__all__`` of initjax's public packages has an entry in the
  built API reference (the site's object inventory, its anchor on the page).
- Every script in ``examples/`` is listed in the README and in ``docs/index.md``.
- The packages the docs list for an extra are that extra's in ``pyproject.toml``.
- A page that sends the reader to a README section names one that exists.
- ``docs/figures.py`` draws its figures (a small setting, into a temporary folder).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PUBLIC = [
    "initjax",
    "initjax.linen",
    "initjax.nnx",
    "initjax.port",
    "initjax.replay",
    "initjax.optim",
]


def _inventory(path: Path) -> dict[str, str]:
    """A Sphinx ``objects.inv`` (version 2): each object's name -> its page and anchor."""
    *header, body = path.read_bytes().split(b"\n", 4)  # 4 header lines, then zlib
    assert header[0] == b"# Sphinx inventory version 2", header
    entries = {}
    for line in zlib.decompress(body).decode().splitlines():
        name, _domain, _priority, uri, *_ = line.split(" ")
        entries[name] = uri.replace("$", name)
    return entries


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra builds the site: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_in_the_api_reference(site: Path, module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist on this branch")
    inventory = _inventory(site / "objects.inv")
    names = importlib.import_module(module).__all__
    missing = [n for n in names if f"{module}.{n}" not in inventory]
    assert not missing, (
        f"{module}.__all__ names {missing}, which the API reference (docs/api.md) does not "
        "render: add their module to docs/api.md, give each a docstring griffe can read "
        "(a string literal, or __doc__ = ... in a class body), and import re-exported names"
    )
    pages: dict[str, str] = {}
    for name in names:  # each entry's anchor exists on its page
        page, _, anchor = inventory[f"{module}.{name}"].partition("#")
        if page not in pages:
            pages[page] = (site / page / "index.html").read_text(encoding="utf-8")
        assert f'id="{anchor}"' in pages[page], f"{module}.{name}: no anchor {anchor!r} on {page}"


def test_every_example_is_listed():
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert len(scripts) >= 7, scripts
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not [s for s in sorted(scripts) if f"`{s}`" not in readme], "not in the README"
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(\w+\.py)` \|", index, flags=re.M))
    assert table == scripts, f"docs/index.md's examples table: {sorted(table ^ scripts)}"


def _extras() -> dict[str, set[str]]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        extra: {re.match(r"[\w.-]+", req).group() for req in reqs}  # type: ignore[union-attr]
        for extra, reqs in project["optional-dependencies"].items()
    }


INSTALL = re.compile(r'pip install -e "\.\[(\w+)\]"\s+# \+ (.*)$')


def test_listed_extras_are_pyprojects():
    extras, listed = _extras(), []
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if m := INSTALL.search(line):
                extra, names = m.group(1), set(m.group(2).split(", "))
                listed.append(extra)
                where = f"{path.relative_to(ROOT)}:{n}"
                assert names == extras[extra], f"{where}: the {extra} extra lists {names}"
    assert set(listed) == set(extras), f"extras the docs list: {listed}"


def test_readme_sections_named_by_pages_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (.+)$", readme, flags=re.M))
    for path in DOCS[1:]:
        for section in re.findall(r"README's [*\"]([^*\"]+)[*\"]", path.read_text()):
            assert section in headings, f"{path.name} names a README section {section!r}"


def test_figures_script_draws_every_figure(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("figures", ROOT / "docs" / "figures.py")
    assert spec is not None and spec.loader is not None
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    monkeypatch.chdir(tmp_path)
    figures.main(["--small", "--out", str(tmp_path / "img")])
    drawn = {p.name: p.stat().st_size for p in (tmp_path / "img").iterdir()}
    committed = {p.name for p in (ROOT / "docs" / "img").glob("*.png")}
    assert set(drawn) == committed, drawn
    assert all(size > 10_000 for size in drawn.values()), drawn


def test_every_figure_is_on_a_page():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    shown = set(re.findall(r"\]\((?:docs/)?img/([\w-]+\.png)\)", text))
    committed = {p.name for p in (ROOT / "docs" / "img").glob("*.png")}
    assert shown == committed, (
        f"figures not shown: {committed - shown}, absent: {shown - committed}"
    )
