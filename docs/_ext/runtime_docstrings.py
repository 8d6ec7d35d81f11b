"""A griffe extension: docstrings that are built by an expression, read from the class.

A class body may compose its docstring, ``__doc__ = "..." + _SHARED_ARGS``, so that
several layers share one text. griffe reads the sources without running them and
sees an attribute named ``__doc__`` instead of a docstring, so mkdocstrings would
skip the class. This imports such a class and gives griffe its runtime ``__doc__``.
"""

from __future__ import annotations

import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.docstring is not None or "__doc__" not in cls.members:
            return
        doc = griffe.dynamic_import(cls.path).__doc__
        if not doc:
            raise ValueError(f"{cls.path}: its __doc__ expression gave no docstring")
        cls.docstring = griffe.Docstring(inspect.cleandoc(doc), parent=cls)
        del cls.members["__doc__"]
