"""A griffe extension: the reST in initjax's docstrings, as Markdown for mkdocstrings.

The docstrings are written for ``help()`` and read as reST in two places:
Sphinx-style roles (``:func:`name```) and simple tables (rows between ``===``
rules). This turns the roles into code spans and the tables into Markdown
tables when the API reference is built; the sources stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|exc|obj|const):`~?([^`]+)`")
RULE = re.compile(r"^\s*=+(?:\s+=+)+\s*$")


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    starts = [a for a, _ in spans] + [None]
    return [line[starts[i] : starts[i + 1]].strip() for i in range(len(spans))]


def _table(rule: str, rows: list[str]) -> list[str]:
    """A simple table's lines (header, rule, body) as Markdown lines."""
    spans = [m.span() for m in re.finditer(r"=+", rule)]
    header, body = _cells(rows[0], spans), []
    for line in rows[2:]:
        cells = _cells(line, spans)
        if body and not cells[0]:  # a continuation line of the row above
            body[-1] = [f"{a} {b}".strip() for a, b in zip(body[-1], cells, strict=True)]
        else:
            body.append(cells)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return md + ["| " + " | ".join(row) + " |" for row in body] + [""]


def markdown(text: str) -> str:
    """``text`` with reST roles as code spans and simple tables as Markdown tables."""
    text = ROLE.sub(r"`\1`", text)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rules = [j for j in range(i, min(i + 200, len(lines))) if RULE.match(lines[j])]
        if RULE.match(lines[i]) and len(rules) >= 3 and rules[1] == i + 2:
            end = rules[2]
            out += ["", *_table(lines[i], lines[i + 1 : end])]
            i = end + 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[str] = set()
        todo: list[griffe.Object | griffe.Alias] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.is_alias or obj.path in seen:
                continue
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
            todo.extend(obj.members.values())
