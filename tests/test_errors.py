"""Every error case of ``torch.nn.init`` (torch 2.13), run live, against initjax.

Each case records what torch does (an exception type, a warning, or nothing)
and asserts it, so a torch upgrade that changes behaviour shows up here, then
asserts what initjax does:

* where torch raises ``ValueError`` on purpose, initjax raises the same type;
* where torch fails by accident (``ZeroDivisionError``, ``AttributeError``,
  ``RuntimeError``) or silently does something odd, initjax raises a
  ``ValueError`` whose message names the bad value;
* integer dtypes, where torch raises ``NotImplementedError``, give ``TypeError``;
* zero-element tensors that torch leaves alone give an empty array.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _initializers import RANDOM

import initjax as ij

KEY = jax.random.key(0)
OK, WARNS, EMPTY = "ok", "warns", "empty"


def T(name: str, shape, *args, dtype=torch.float32, **kwargs) -> Callable[[], Any]:
    """torch.nn.init.<name>_ on a fresh torch tensor."""

    def run():
        t = torch.empty(shape, dtype=dtype)
        getattr(torch.nn.init, name + "_")(t, *args, **kwargs)
        return t.to(torch.float64).numpy() if t.dtype != torch.bool else t.numpy()

    return run


def O(name: str, shape, *args, dtype=None, **kwargs) -> Callable[[], Any]:  # noqa: E743
    """ij.<name>(*args, **kwargs) called on ``shape`` (factory and call both inside)."""
    return lambda: getattr(ij, name)(*args, **kwargs)(KEY, shape, dtype)


@dataclass
class Case:
    torch: Callable[[], Any]
    torch_does: Any  # an exception type, OK (no warning) or WARNS (UserWarning)
    ours: Callable[[], Any]
    ours_does: Any  # an exception type, OK or EMPTY
    match: str = ""  # what our message must contain (the bad value)
    same_values: bool = False  # OK on both: compare the values (layout-free fills)


CASES = {
    # -- xavier ---------------------------------------------------------------
    "xavier_uniform 0-D": Case(
        T("xavier_uniform", ()), ValueError, O("xavier_uniform", ()), ValueError, "fewer than 2"
    ),
    "xavier_normal 1-D": Case(
        T("xavier_normal", (5,)), ValueError, O("xavier_normal", (5,)), ValueError, "fewer than 2"
    ),
    "xavier_uniform empty 1-D": Case(
        T("xavier_uniform", (0,)), ValueError, O("xavier_uniform", (0,)), ValueError, "fewer than 2"
    ),
    "xavier_uniform (0,0)": Case(
        T("xavier_uniform", (0, 0)),
        ZeroDivisionError,
        O("xavier_uniform", (0, 0)),
        ValueError,
        r"\(0, 0\)",
    ),
    "xavier_normal (0,0)": Case(
        T("xavier_normal", (0, 0)),
        ZeroDivisionError,
        O("xavier_normal", (0, 0)),
        ValueError,
        r"\(0, 0\)",
    ),
    "xavier_uniform (0,5)": Case(
        T("xavier_uniform", (0, 5)), OK, O("xavier_uniform", (5, 0)), EMPTY
    ),
    "xavier_uniform (5,0)": Case(
        T("xavier_uniform", (5, 0)), OK, O("xavier_uniform", (0, 5)), EMPTY
    ),
    "xavier_normal (4,0,3)": Case(
        T("xavier_normal", (4, 0, 3)), OK, O("xavier_normal", (3, 0, 4)), EMPTY
    ),
    # -- kaiming --------------------------------------------------------------
    "kaiming_uniform empty 1-D": Case(
        T("kaiming_uniform", (0,)), WARNS, O("kaiming_uniform", (0,)), EMPTY
    ),
    "kaiming_normal (0,0)": Case(
        T("kaiming_normal", (0, 0)), WARNS, O("kaiming_normal", (0, 0)), EMPTY
    ),
    "kaiming_uniform (4,0,3)": Case(
        T("kaiming_uniform", (4, 0, 3)), WARNS, O("kaiming_uniform", (3, 0, 4)), EMPTY
    ),
    # torch checks for zero elements first, so it never sees the bad mode; we do.
    "kaiming_uniform empty, bad mode": Case(
        T("kaiming_uniform", (0, 5), mode="fan_avg"),
        WARNS,
        O("kaiming_uniform", (5, 0), mode="fan_avg"),
        ValueError,
        "fan_avg",
    ),
    "kaiming_uniform 0-D": Case(
        T("kaiming_uniform", ()), ValueError, O("kaiming_uniform", ()), ValueError, "fewer than 2"
    ),
    "kaiming_normal 1-D": Case(
        T("kaiming_normal", (5,)), ValueError, O("kaiming_normal", (5,)), ValueError, "fewer than 2"
    ),
    "kaiming_uniform mode=fan_avg": Case(
        T("kaiming_uniform", (3, 4), mode="fan_avg"),
        ValueError,
        O("kaiming_uniform", (4, 3), mode="fan_avg"),
        ValueError,
        "fan_avg",
    ),
    "kaiming_normal mode=None": Case(
        T("kaiming_normal", (3, 4), mode=None),
        AttributeError,
        O("kaiming_normal", (4, 3), mode=None),
        ValueError,
        "None",
    ),
    "kaiming_uniform nonlinearity=gelu": Case(
        T("kaiming_uniform", (3, 4), nonlinearity="gelu"),
        ValueError,
        O("kaiming_uniform", (4, 3), nonlinearity="gelu"),
        ValueError,
        "gelu",
    ),
    "kaiming_uniform a=True": Case(
        T("kaiming_uniform", (3, 4), a=True),
        ValueError,
        O("kaiming_uniform", (4, 3), a=True),
        ValueError,
        "True",
    ),
    "kaiming_normal a='0.1'": Case(
        T("kaiming_normal", (3, 4), a="0.1"),
        ValueError,
        O("kaiming_normal", (4, 3), a="0.1"),
        ValueError,
        "0.1",
    ),
    "kaiming_uniform a=None": Case(
        T("kaiming_uniform", (3, 4), a=None), OK, O("kaiming_uniform", (4, 3), a=None), OK
    ),
    "kaiming_uniform a=True, relu": Case(
        T("kaiming_uniform", (3, 4), a=True, nonlinearity="relu"),
        OK,
        O("kaiming_uniform", (4, 3), a=True, nonlinearity="relu"),
        OK,
    ),
    "kaiming_normal mode=FAN_OUT": Case(
        T("kaiming_normal", (3, 4), mode="FAN_OUT"),
        OK,
        O("kaiming_normal", (4, 3), mode="FAN_OUT"),
        OK,
    ),
    "kaiming_uniform mode=Fan_In": Case(
        T("kaiming_uniform", (3, 4), mode="Fan_In"),
        OK,
        O("kaiming_uniform", (4, 3), mode="Fan_In"),
        OK,
    ),
    # -- eye / dirac ----------------------------------------------------------
    "eye 3-D": Case(T("eye", (3, 4, 5)), ValueError, O("eye", (5, 4, 3)), ValueError, "2 dim"),
    "eye 1-D": Case(T("eye", (5,)), ValueError, O("eye", (5,)), ValueError, "2 dim"),
    "eye (0,3)": Case(T("eye", (0, 3)), OK, O("eye", (3, 0)), EMPTY),
    "dirac 2-D": Case(T("dirac", (3, 3)), ValueError, O("dirac", (3, 3)), ValueError, "3, 4, or 5"),
    "dirac 6-D": Case(
        T("dirac", (2,) * 6), ValueError, O("dirac", (2,) * 6), ValueError, "3, 4, or 5"
    ),
    "dirac groups=2, out=5": Case(
        T("dirac", (5, 3, 3), 2), ValueError, O("dirac", (3, 3, 5), 2), ValueError, "groups=2"
    ),
    "dirac groups=0": Case(
        T("dirac", (4, 3, 3), 0),
        ZeroDivisionError,
        O("dirac", (3, 3, 4), 0),
        ValueError,
        "groups.*0",
    ),
    "dirac groups=-2": Case(
        T("dirac", (4, 3, 3), -2),
        OK,  # torch: silently all zeros
        O("dirac", (3, 3, 4), -2),
        ValueError,
        "-2",
    ),
    "dirac empty": Case(T("dirac", (0, 4, 3)), OK, O("dirac", (3, 4, 0)), EMPTY),
    # -- orthogonal / sparse --------------------------------------------------
    "orthogonal 1-D": Case(
        T("orthogonal", (5,)), ValueError, O("orthogonal", (5,)), ValueError, "2 or more"
    ),
    "orthogonal 0-D": Case(
        T("orthogonal", ()), ValueError, O("orthogonal", ()), ValueError, "2 or more"
    ),
    "orthogonal empty": Case(T("orthogonal", (0, 5)), OK, O("orthogonal", (5, 0)), EMPTY),
    "sparse 3-D": Case(
        T("sparse", (3, 4, 5), 0.5), ValueError, O("sparse", (5, 4, 3), 0.5), ValueError, "2 dim"
    ),
    "sparse 1-D": Case(
        T("sparse", (5,), 0.5), ValueError, O("sparse", (5,), 0.5), ValueError, "2 dim"
    ),
    "sparse sparsity=1.5": Case(
        T("sparse", (4, 6), 1.5),
        OK,  # torch: all zeros
        O("sparse", (6, 4), 1.5),
        ValueError,
        "1.5",
    ),
    "sparse sparsity=-0.5": Case(
        T("sparse", (4, 6), -0.5),
        OK,  # torch: zeroes 2 of 4 rows
        O("sparse", (6, 4), -0.5),
        ValueError,
        "-0.5",
    ),
    "sparse empty": Case(T("sparse", (0, 5), 0.5), OK, O("sparse", (5, 0), 0.5), EMPTY),
    # -- trunc_normal ---------------------------------------------------------
    "trunc_normal mean 3 std from [a, b]": Case(
        T("trunc_normal", (64,), 0.0, 1.0, 3.0, 5.0),
        WARNS,
        O("trunc_normal", (64,), 0.0, 1.0, 3.0, 5.0),
        OK,
    ),
    "trunc_normal std=0": Case(
        T("trunc_normal", (4,), 0.0, 0.0),
        ZeroDivisionError,
        O("trunc_normal", (4,), 0.0, 0.0),
        ValueError,
        "std=0",
    ),
    "trunc_normal std=-1": Case(
        T("trunc_normal", (4,), 0.0, -1.0),
        OK,  # torch: as std=1
        O("trunc_normal", (4,), 0.0, -1.0),
        ValueError,
        "std=-1",
    ),
    "trunc_normal a=2 > b=-2": Case(
        T("trunc_normal", (4,), 0.0, 1.0, 2.0, -2.0),
        RuntimeError,
        O("trunc_normal", (4,), 0.0, 1.0, 2.0, -2.0),
        ValueError,
        "a=2.0 > b=-2.0",
    ),
    "trunc_normal a=b=1": Case(
        T("trunc_normal", (4,), 0.0, 1.0, 1.0, 1.0),
        OK,
        O("trunc_normal", (4,), 0.0, 1.0, 1.0, 1.0),
        OK,
        same_values=True,
    ),
    # torch samples this (slowly); float32 inversion cannot, so we refuse it.
    "trunc_normal 20 std out": Case(
        T("trunc_normal", (4,), 0.0, 1.0, 20.0, 30.0),
        WARNS,
        O("trunc_normal", (4,), 0.0, 1.0, 20.0, 30.0),
        ValueError,
        "20.0, 30.0",
    ),
    "trunc_normal empty": Case(T("trunc_normal", (0,)), OK, O("trunc_normal", (0,)), EMPTY),
    # -- uniform / normal / fills ---------------------------------------------
    "uniform a=1 > b=0": Case(
        T("uniform", (4,), 1.0, 0.0),
        RuntimeError,
        O("uniform", (4,), 1.0, 0.0),
        ValueError,
        "a=1.0 > b=0.0",
    ),
    "normal std=-1": Case(
        T("normal", (4,), 0.0, -1.0), RuntimeError, O("normal", (4,), 0.0, -1.0), ValueError, "-1"
    ),
    "normal std=0": Case(
        T("normal", (4,), 3.0, 0.0), OK, O("normal", (4,), 3.0, 0.0), OK, same_values=True
    ),
    "ones bool": Case(
        T("ones", (3, 3), dtype=torch.bool),
        OK,
        O("ones", (3, 3), dtype=jnp.bool_),
        OK,
        same_values=True,
    ),
    "constant 0.7 int": Case(
        T("constant", (3, 3), 0.7, dtype=torch.int32),
        OK,
        O("constant", (3, 3), 0.7, dtype=jnp.int32),
        OK,
        same_values=True,
    ),
    # -- integer dtypes -------------------------------------------------------
    "uniform int64": Case(
        T("uniform", (4,), dtype=torch.int64),
        NotImplementedError,
        O("uniform", (4,), dtype=jnp.int32),
        TypeError,
        "int32",
    ),
    "normal int64": Case(
        T("normal", (4,), dtype=torch.int64),
        NotImplementedError,
        O("normal", (4,), dtype=jnp.int32),
        TypeError,
        "int32",
    ),
    "xavier_uniform int64": Case(
        T("xavier_uniform", (3, 4), dtype=torch.int64),
        NotImplementedError,
        O("xavier_uniform", (4, 3), dtype=jnp.int32),
        TypeError,
        "int32",
    ),
    "kaiming_uniform int64": Case(
        T("kaiming_uniform", (3, 4), dtype=torch.int64),
        NotImplementedError,
        O("kaiming_uniform", (4, 3), dtype=jnp.int32),
        TypeError,
        "int32",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_torch_error_case(case: Case):
    # What torch does, asserted as recorded for torch 2.13.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if isinstance(case.torch_does, type):
            with pytest.raises(case.torch_does):
                case.torch()
        else:
            theirs = case.torch()
    user_warnings = [w for w in caught if issubclass(w.category, UserWarning)]
    if case.torch_does == WARNS:
        assert user_warnings, "torch no longer warns"
    elif case.torch_does == OK:
        assert not user_warnings, [str(w.message) for w in user_warnings]

    # What initjax does.
    if isinstance(case.ours_does, type):
        with pytest.raises(case.ours_does, match=case.match):
            case.ours()
        return
    ours = case.ours()
    if case.ours_does == EMPTY:
        assert ours.size == 0 and theirs.size == 0
        assert ours.shape == theirs.shape[::-1] or ours.shape == theirs.shape
    if case.same_values:
        np.testing.assert_array_equal(np.asarray(ours), theirs)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64], ids=str)
@pytest.mark.parametrize("name", list(RANDOM))
def test_random_initializers_refuse_non_float_dtypes(name, dtype):
    with pytest.raises(TypeError, match=jnp.dtype(dtype).name):
        RANDOM[name](KEY, (4, 3), dtype)


# Every public random factory, with the positional arguments it needs.
RANDOM_FACTORIES = {
    **{name: () for name in RANDOM if name != "sparse"},
    "sparse": (0.5,),
    "linear_kernel": (),
    "linear_bias": (4,),
    "conv_kernel": (),
    "conv_bias": (4,),
    "conv_transpose_kernel": (),
    "conv_transpose_bias": (4,),
    "embedding": (),
    "rnn_uniform": (4,),
    "rnn_bias": (4,),
    "bilinear": (4,),
    "mha_in_proj": (4,),
    "mha_bias_kv": (4,),
}


@pytest.mark.parametrize("name", list(RANDOM_FACTORIES))
def test_factories_check_their_dtype_when_made(name):
    factory = getattr(ij, name)
    with pytest.raises(TypeError, match="int32"):
        factory(*RANDOM_FACTORIES[name], dtype=jnp.int32)
    with pytest.raises(TypeError, match="not understood"):
        factory(*RANDOM_FACTORIES[name], dtype="notatype")
    init = factory(*RANDOM_FACTORIES[name], dtype=jnp.bfloat16)
    assert init(KEY, (4, 3)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", ["constant", "eye", "dirac"])
def test_deterministic_factories_check_their_dtype_when_made(name):
    args = (1.0,) if name == "constant" else ()
    with pytest.raises(TypeError, match="not understood"):
        getattr(ij, name)(*args, dtype="notatype")


@pytest.mark.parametrize("name", list(RANDOM))
def test_zero_element_shapes_give_empty_arrays(name):
    shapes = [(0, 5), (5, 0)] + ([] if name == "sparse" else [(3, 0, 4)])  # sparse is 2-D
    for shape in shapes:
        out = RANDOM[name](KEY, shape, jnp.bfloat16)
        assert out.shape == shape and out.dtype == jnp.bfloat16


BAD_ARGUMENTS = [
    (lambda: ij.uniform(float("nan"), 1.0), ValueError, "nan"),
    (lambda: ij.normal(0.0, float("inf")), ValueError, "inf"),
    (lambda: ij.normal(0.0, "1"), TypeError, "'1'"),
    (lambda: ij.xavier_uniform(gain=-1.0), ValueError, "-1"),
    (lambda: ij.xavier_normal(gain=None), TypeError, "None"),
    (lambda: ij.orthogonal(gain="2"), TypeError, "'2'"),
    (lambda: ij.sparse(0.5, std=-0.1), ValueError, "-0.1"),
    (lambda: ij.dirac(1.5), ValueError, "1.5"),
    (lambda: ij.dirac(True), ValueError, "True"),
    (lambda: ij.constant(np.ones(3)), ValueError, "scalar"),
    (lambda: ij.kaiming_uniform(mode=3), ValueError, "3"),
    (lambda: ij.xavier_uniform(in_axis=0, out_axis=0)(KEY, (3, 4)), ValueError, "distinct"),
    (lambda: ij.eye(in_axis=0, out_axis=0)(KEY, (3, 4)), ValueError, "distinct"),
    (lambda: ij.orthogonal(in_axis=2)(KEY, (3, 4)), ValueError, "in_axis=2"),
    (lambda: ij.uniform()(KEY, (3, -1)), ValueError, "negative"),
]


@pytest.mark.parametrize("make, error, match", BAD_ARGUMENTS, ids=range(len(BAD_ARGUMENTS)))
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_factories_fail_before_any_key_is_seen():
    """Argument errors come from the factory call, not the first init call."""
    for make in (
        lambda: ij.uniform(1.0, 0.0),
        lambda: ij.normal(std=-1.0),
        lambda: ij.trunc_normal(std=0.0),
        lambda: ij.kaiming_normal(mode="fan_avg"),
        lambda: ij.kaiming_uniform(nonlinearity="gelu"),
        lambda: ij.dirac(0),
        lambda: ij.sparse(2.0),
    ):
        with pytest.raises(ValueError):
            make()
