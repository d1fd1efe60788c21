"""Argument checks shared by the ops: one integer-range rule, one message format."""

from __future__ import annotations

import math
from numbers import Integral


def check_int(
    name: str, value: object, low: int, high: int | None = None, high_name: str | None = None
) -> int:
    """``value`` as an int when it is an integer (not a bool) in ``[low, high]``.

    Args:
        high_name: how the bound is called in the message (``N - 1``, ``num_landmarks``);
            the message then gives its value too.

    Raises:
        ValueError: ``"<name> must be an int in [low, high]; found <value>"``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Integral)
        or value < low
        or (high is not None and value > high)
    ):
        if high is None:
            bound = f">= {low}"
        elif high_name is None:
            bound = f"in [{low}, {high}]"
        else:
            bound = f"in [{low}, {high_name}] = [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}; found {value!r}")
    return int(value)


def check_number(
    name: str, value: object, low: float | None = None, *, low_open: bool = False
) -> float:
    """``value`` as a float when it is a finite number (not a bool) >= ``low`` (> with
    ``low_open``).

    Raises:
        ValueError: ``"<name> must be a finite number [> or >= low]; found <value>"``.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = number and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}; found {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is a bool (``1`` or ``"yes"`` are refused: a YAML typo).

    Raises:
        ValueError: ``"<name> must be true or false; found <value>"``.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; found {value!r}")
    return value
