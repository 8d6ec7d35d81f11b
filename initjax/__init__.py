"""initjax: PyTorch's parameter initialization, exactly, for JAX and Flax.

``import initjax as ij`` gives the ``torch.nn.init`` family (``ij.kaiming_uniform``
...), the gain table (``ij.calculate_gain``) and fan rule (``ij.compute_fans``).
"""

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

__all__ = [
    "calculate_gain",
    "compute_fans",
    "constant",
    "dirac",
    "eye",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "ones",
    "orthogonal",
    "sparse",
    "trunc_normal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
