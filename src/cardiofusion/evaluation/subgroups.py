"""Subgroup levels from cohort columns: continuous columns binned into bands, flags as yes/no.

``subgroup_levels(values, "age")`` turns a column of the manifest into one label per record.  Bands of a
continuous column come from ``bins`` (edges; ``{"age": (50, 65, 75)}`` gives ``<50``, ``50-64``, ``65-74``,
``>=75``); without edges a continuous column is cut at its quartiles.  0/1 and boolean columns become
``no`` / ``yes``; anything else keeps its values.  Missing values are the level ``unknown``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

#: Default band edges of continuous cohort columns.
DEFAULT_BINS: dict[str, tuple[float, ...]] = {"age": (50.0, 65.0, 75.0), "lvef_pct": (40.0, 50.0)}

#: The default subgroup columns (spec section 5).
DEFAULT_SUBGROUPS: tuple[str, ...] = ("age", "sex", "pacemaker", "atrial_fibrillation")

UNKNOWN = "unknown"


def _fmt(x: float) -> str:
    return f"{x:g}"


def band_labels(edges: Sequence[float], integer: bool = True) -> list[str]:
    """Labels of the bands ``(-inf, e0), [e0, e1), ..., [ek, inf)``: ``<50``, ``50-64``, ..., ``>=75``."""
    labels = [f"<{_fmt(edges[0])}"]
    for lo, hi in itertools.pairwise(edges):
        top = _fmt(hi - 1) if integer and float(hi).is_integer() and float(lo).is_integer() else f"<{_fmt(hi)}"
        labels.append(f"{_fmt(lo)}-{top}" if integer else f"{_fmt(lo)} to {top}")
    labels.append(f">={_fmt(edges[-1])}")
    return labels


def subgroup_levels(values: Any, column: str, bins: Mapping[str, Sequence[float]] | None = None) -> pd.Series:
    """One level label per record for a cohort column (see the module docstring)."""
    s = pd.Series(values).reset_index(drop=True)
    bins = {**DEFAULT_BINS, **(bins or {})}
    missing = s.isna()
    if s.dtype == bool or (pd.api.types.is_numeric_dtype(s) and set(s.dropna().unique()) <= {0, 1}
                           and column not in bins):
        out = s.map(lambda v: "yes" if bool(v) else "no").astype(object)
    elif pd.api.types.is_numeric_dtype(s) and (column in bins or s.dropna().nunique() > 10):
        x = s.astype(float).to_numpy()
        if column in bins:
            edges = sorted(float(e) for e in bins[column])
        else:
            edges = sorted(set(np.round(np.nanquantile(x, [0.25, 0.5, 0.75]), 3).tolist()))
        if not edges:
            raise ConfigError(f"subgroup column {column!r}: no band edges")
        labels = band_labels(edges, integer=column in bins and all(float(e).is_integer() for e in edges))
        idx = np.searchsorted(np.asarray(edges), np.nan_to_num(x, nan=-np.inf), side="right")
        out = pd.Series(np.asarray(labels, dtype=object)[idx])
    else:
        out = s.astype(str).astype(object)
    out[missing.to_numpy()] = UNKNOWN
    return out


def level_order(levels: pd.Series) -> list[str]:
    """Levels in display order: bands from low to high, ``no`` before ``yes``, ``unknown`` last."""
    present = [str(v) for v in pd.unique(levels)]

    def key(v: str) -> tuple[int, float, str]:
        if v == UNKNOWN:
            return (3, 0.0, v)
        if v.startswith("<"):
            return (0, -np.inf, v)
        if v.startswith(">="):
            return (2, 0.0, v)
        head = v.split("-")[0].split(" ")[0]
        try:
            return (1, float(head), v)
        except ValueError:
            return (1, {"no": 0.0, "yes": 1.0}.get(v, 0.5), v)

    return sorted(present, key=key)


def parse_subgroups(spec: str | Sequence[str] | Mapping[str, Sequence[float] | None] | None
                    ) -> tuple[list[str], dict[str, tuple[float, ...]]]:
    """Columns and band edges from ``"age,sex"``, ``["age:40/60/80", "sex"]`` or ``{"age": (50, 65)}``."""
    if spec is None:
        return list(DEFAULT_SUBGROUPS), {}
    if isinstance(spec, Mapping):
        return list(spec), {k: tuple(float(e) for e in v) for k, v in spec.items() if v}
    items = [x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec) if x and x.strip()]
    columns, bins = [], {}
    for item in items:
        name, _, edges = item.partition(":")
        columns.append(name.strip())
        if edges:
            try:
                bins[name.strip()] = tuple(float(e) for e in edges.split("/") if e.strip())
            except ValueError:
                raise ConfigError(f"subgroup {item!r}: band edges must be numbers separated by '/'") from None
    return columns, bins


__all__ = ["DEFAULT_BINS", "DEFAULT_SUBGROUPS", "UNKNOWN", "band_labels", "level_order", "parse_subgroups",
           "subgroup_levels"]
