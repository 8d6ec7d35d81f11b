"""``import initjax as ij`` shows the public API and nothing else."""

import importlib
import types

import pytest

import initjax as ij


def test_dir_lists_the_public_api_only():
    names = dir(ij)
    assert "importlib" not in names
    assert not [n for n in names if n.startswith("_") and n != "__version__"]
    modules = {n for n in names if isinstance(getattr(ij, n), types.ModuleType)}
    assert modules == {
        "defaults",
        "fans",
        "gain",
        "init",
        "linen",
        "nnx",
        "optim",
        "port",
        "replay",
    }
    assert set(names) - modules - {"__version__"} == set(ij.__all__)


def test_every_public_name_resolves():
    for name in ij.__all__:
        assert callable(getattr(ij, name)), name
    for name in ("linen", "nnx", "optim", "port", "replay"):
        assert getattr(ij, name) is importlib.import_module(f"initjax.{name}")


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="not_a_name"):
        ij.not_a_name  # noqa: B018
