"""torch.nn modules -> Flax variables, through ``initjax.port``; torch-side facts for the tests.

:func:`porter` loads a torch module's ``state_dict`` into the variables of the
matching ``initjax.linen`` layer through ``initjax.port`` (the library's one
copy of the torch <-> Flax mappings), strictly. The tests use it both to pool
torch's initial values in Flax layout (distribution tests) and to load torch
weights into a Flax layer (forward-equality tests), so every layout test also
checks the port rules against live torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
import torch
from _stats import Z

from initjax import port


def np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_torch(x: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """numpy (Flax layout) -> torch; ``channels_last`` moves N*C to NC*."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.movedim(-1, 1) if channels_last else t


def fan_in(weight: torch.Tensor) -> int:
    """torch's own fan rule, on torch's own layout."""
    return torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]


def xavier_bound(weight: torch.Tensor) -> float:
    fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(6.0 / (fi + fo))


# ------------------------------------------------------------------- porting ---


def porter(module: nn.Module, *inputs) -> Callable[[torch.nn.Module], dict]:
    """A function that ports a torch module's weights into ``module``'s variables.

    ``inputs`` are what ``module.init`` takes after the key. The layer types and
    the abstract variables are found once; each call is one strict
    ``port.torch_to_linen``.
    """
    layers = port.linen_layers(module, *inputs)
    abstract = jax.eval_shape(lambda key: module.init(key, *inputs), jax.random.key(0))

    def load(m: torch.nn.Module) -> dict:
        variables, report = port.torch_to_linen(m.state_dict(), abstract, layers)
        assert report.ok, report.describe()
        return variables

    return load


def conv_transpose_padding(m) -> list[tuple[int, int]]:
    """Flax explicit padding reproducing torch's padding/output_padding."""
    return [
        (d * (k - 1) - p, d * (k - 1) - p + op)
        for k, d, p, op in zip(m.kernel_size, m.dilation, m.padding, m.output_padding, strict=True)
    ]


# ---------------------------------------------------------------- statistics ---


def assert_same_std(x, y, what: str = "") -> None:
    """Two-sample z-test on the variances, tolerance from both sample sizes."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()

    def var_and_se2(a):
        v = a.var()
        return v, max(np.mean((a - a.mean()) ** 4) - v**2, 0.0) / a.size

    vx, sx = var_and_se2(x)
    vy, sy = var_and_se2(y)
    tol = Z * math.sqrt(sx + sy) + 1e-12
    assert abs(vx - vy) <= tol, (
        f"{what}: std {math.sqrt(vx):.6g} (n={x.size}) vs torch {math.sqrt(vy):.6g} (n={y.size})"
    )
