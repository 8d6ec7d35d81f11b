"""PyTorch's gain table: ``torch.nn.init.calculate_gain``."""

from __future__ import annotations

import math

__all__ = ["calculate_gain", "NONLINEARITIES"]

_UNIT_GAIN = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)

#: Every nonlinearity name ``calculate_gain`` accepts (case-sensitive, as in torch).
NONLINEARITIES: tuple[str, ...] = _UNIT_GAIN + ("tanh", "relu", "leaky_relu", "selu")


def _negative_slope(param: object) -> float:
    if param is None:
        return 0.01
    # torch accepts Python ints (not bools) and floats only.
    if isinstance(param, bool) or not isinstance(param, (int, float)):
        raise ValueError(f"negative_slope {param} not a valid number")
    return param


def calculate_gain(nonlinearity: str, param: int | float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    ============================  ==========================
    nonlinearity                  gain
    ============================  ==========================
    linear, conv*, sigmoid        1
    tanh                          5/3
    relu                          sqrt(2)
    leaky_relu                    sqrt(2 / (1 + slope**2))
    selu                          3/4
    ============================  ==========================

    ``param`` is the negative slope of ``leaky_relu`` (0.01 when ``None``) and is
    ignored for every other nonlinearity, as in torch.

    Raises:
      ValueError: for an unknown nonlinearity (names are case-sensitive; torch's
        message plus the supported names), a leaky_relu slope that is not an
        ``int`` or ``float`` (``bool`` included; torch's message), or a ``param``
        that is not finite, whatever the nonlinearity (torch returns a NaN or
        zero gain for leaky_relu and ignores it otherwise).

    PyTorch: ``torch.nn.init.calculate_gain(nonlinearity, param)``.
    """
    if isinstance(param, float) and not math.isfinite(param):  # torch: a NaN or zero gain
        raise ValueError(f"param (the negative slope) must be finite, got {param}")
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = _negative_slope(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"Unsupported nonlinearity {nonlinearity}; supported: {', '.join(NONLINEARITIES)}"
    )
