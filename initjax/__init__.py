"""initjax: PyTorch's parameter initialization, exactly, for JAX and Flax.

``import initjax as ij`` gives, flat:

- the ``torch.nn.init`` family (``ij.kaiming_uniform``, ``ij.trunc_normal``, ...),
- torch's gain table and fan rule (``ij.calculate_gain``, ``ij.compute_fans``),
- torch module defaults for Flax layouts (``ij.linear_kernel``, ``ij.linear_bias``, ...).

Submodules load on first use: ``ij.linen`` and ``ij.nnx`` (drop-in Flax layers),
``ij.port`` (PyTorch checkpoints), ``ij.replay`` (torch seed replay),
``ij.optim`` (torch.optim, its lr schedulers and clipping, as optax transformations).
"""

from .defaults import (
    bilinear,
    conv_bias,
    conv_kernel,
    conv_transpose_bias,
    conv_transpose_kernel,
    embedding,
    linear_bias,
    linear_kernel,
    mha_bias_kv,
    mha_in_proj,
    rnn_bias,
    rnn_uniform,
)
from .fans import compute_fans
from .gain import calculate_gain
from .init import (
    constant,
    dirac,
    eye,
    kaiming_normal,
    kaiming_uniform,
    normal,
    ones,
    orthogonal,
    sparse,
    trunc_normal,
    uniform,
    xavier_normal,
    xavier_uniform,
    zeros,
)

__version__ = "0.1.0"

_MODULES = ("defaults", "fans", "gain", "init")  # imported above
_SUBMODULES = ("linen", "nnx", "optim", "port", "replay")  # imported on first use


def __getattr__(name: str):
    if name in _SUBMODULES:
        from importlib import import_module

        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'initjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_MODULES, *_SUBMODULES, "__version__"])


__all__ = [
    "bilinear",
    "calculate_gain",
    "compute_fans",
    "constant",
    "conv_bias",
    "conv_kernel",
    "conv_transpose_bias",
    "conv_transpose_kernel",
    "dirac",
    "embedding",
    "eye",
    "kaiming_normal",
    "kaiming_uniform",
    "linear_bias",
    "linear_kernel",
    "mha_bias_kv",
    "mha_in_proj",
    "normal",
    "ones",
    "orthogonal",
    "rnn_bias",
    "rnn_uniform",
    "sparse",
    "trunc_normal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
