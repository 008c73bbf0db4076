"""How numbers with confidence intervals and p-values are printed: one rule for every table, report,
figure and command.

``format_ci(0.894, 0.851, 0.93)`` -> ``"0.894 (0.851-0.930)"``; when a bound is negative (a difference) the
separator is ``" to "`` so that a minus sign is never read as a range dash (and always with ``signed=True``):
``format_ci(-0.075, -0.141, -0.007)`` -> ``"-0.075 (-0.141 to -0.007)"``.  A missing or non-finite value
prints ``n/a``; missing bounds print the value alone.  ``format_p`` gives 3 decimals and ``<0.001``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NA = "n/a"


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_value(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` sign when ``signed``), ``n/a`` when missing or non-finite."""
    if not _finite(value):
        return NA
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def format_ci(value: Any, low: Any = None, high: Any = None, digits: int = 3, *, signed: bool = False) -> str:
    """``value (low-high)``, or ``value (low to high)`` when a bound is negative; see the module docstring."""
    if not _finite(value):
        return NA
    v = format_value(value, digits, signed=signed)
    if not (_finite(low) and _finite(high)):
        return v
    sep = " to " if signed or min(float(low), float(high)) < 0 else "-"
    return f"{v} ({format_value(low, digits, signed=signed)}{sep}{format_value(high, digits, signed=signed)})"


def format_interval(interval: Any, digits: int = 3, *, signed: bool = False) -> str:
    """:func:`format_ci` of an object with ``value`` / ``ci_low`` / ``ci_high`` attributes or keys
    (:class:`~cardiofusion.evaluation.bootstrap.Interval`, a JSON dict), or ``(value, (low, high))``."""
    if interval is None:
        return NA
    if isinstance(interval, Mapping):
        return format_ci(interval.get("value"), interval.get("ci_low"), interval.get("ci_high"), digits,
                         signed=signed)
    if isinstance(interval, tuple) and len(interval) == 2:
        low, high = interval[1] if interval[1] is not None else (None, None)
        return format_ci(interval[0], low, high, digits, signed=signed)
    return format_ci(getattr(interval, "value", None), getattr(interval, "ci_low", None),
                     getattr(interval, "ci_high", None), digits, signed=signed)


def format_p(p: float | None) -> str:
    """A p-value as printed in tables: 3 decimals, ``<0.001`` below."""
    if not _finite(p):
        return NA
    return "<0.001" if float(p) < 0.001 else f"{float(p):.3f}"


__all__ = ["NA", "format_ci", "format_interval", "format_p", "format_value"]
