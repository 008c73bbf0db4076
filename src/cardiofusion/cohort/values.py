"""Strict parsing of the numbers in the index tables: decimal comma, unit suffixes, plausibility ranges.

Every numeric cell ends in one of three states (``docs/data_layout.md``, "Numbers and units"):

* **missing**: empty, or one of the missing-value markers :data:`MISSING_TOKENS` (case-insensitive);
  NaN in a numeric (Parquet / DataFrame) column.
* **a value**: a plain decimal number (``2.5``, ``.8``, ``1e2``, ``-1``), optionally followed by one of
  the column's units (:data:`UNITS`, case-insensitive, space optional: ``2.5 m/s``, ``2.59m/s``,
  ``250 cm/s`` -> 2.5, ``0.8 cm²``), converted to the column's unit, and inside the column's
  plausibility range (:data:`DEFAULT_RANGES`, inclusive, configurable per column).  A comma is a
  decimal separator only in the columns listed in ``CohortConfig.decimal_comma`` (then a dot is
  refused there); thousands separators are never accepted.
* **invalid**, with a reason: ``unparseable <column>`` (not a number, e.g. ``3,14`` without the
  decimal-comma option, ``2.5.1``, ``inf``), ``unknown unit in <column> (...)`` (``25 mph``), or
  ``implausible <column> (outside lo-hi unit)`` (0 m/s, a negative value, 265 m/s, age 200, infinity).

Invalid cells are nulled in the normalised table and recorded in hidden columns (``_invalid_column``,
``_invalid_raw``, ``_invalid_reason``: the first invalid cell of the row) so that the cohort builder
excludes the row and lists the raw value in ``exclusions.parquet``.  A column where more than
:data:`MAJORITY` of the non-empty values are invalid is a read error naming the file and the column
(a units or locale mistake, not a few bad cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from ..errors import ConfigError

#: Numeric columns (ours) and the unit their values are stored in.
NUMERIC_UNITS: dict[str, str] = {
    "peak_velocity_m_s": "m/s",
    "mean_gradient_mmhg": "mmHg",
    "ava_cm2": "cm2",
    "lvef_pct": "%",
    "lv_mass_g": "g",
    "cac_agatston": "AU",
    "age": "years",
    "fs": "Hz",
    "resolution_uv": "uV",
}
NUMERIC_COLUMNS: tuple[str, ...] = tuple(NUMERIC_UNITS)

#: Plausible (inclusive) range per column, in the column's unit.  Echo values follow the ACC/AHA and
#: EACVI/ASE valve guidelines' physiological limits (a Vmax below 0.5 m/s or above 7 m/s, an AVA below
#: 0.2 or above 6 cm2, a mean gradient above 150 mmHg or an LVEF outside 5-90 % is an export or unit
#: error, not a patient); ECG ``fs`` and ``resolution_uv`` bound the reader options.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "peak_velocity_m_s": (0.5, 7.0),
    "mean_gradient_mmhg": (0.0, 150.0),
    "ava_cm2": (0.2, 6.0),
    "lvef_pct": (5.0, 90.0),
    "lv_mass_g": (20.0, 1000.0),
    "cac_agatston": (0.0, 20000.0),
    "age": (0.0, 120.0),
    "fs": (50.0, 20000.0),
    "resolution_uv": (0.001, 1000.0),
}

#: Unit suffixes understood per column (lower case, inner spaces single) -> (multiply, divide).
UNITS: dict[str, dict[str, tuple[float, float]]] = {
    "peak_velocity_m_s": {"m/s": (1, 1), "cm/s": (1, 100)},
    "mean_gradient_mmhg": {"mmhg": (1, 1), "mm hg": (1, 1)},
    "ava_cm2": {"cm2": (1, 1), "cm²": (1, 1), "cm^2": (1, 1), "mm2": (1, 100), "mm²": (1, 100), "mm^2": (1, 100)},
    "lvef_pct": {"%": (1, 1)},
    "lv_mass_g": {"g": (1, 1), "kg": (1000, 1)},
    "cac_agatston": {"au": (1, 1)},
    "age": {"y": (1, 1), "yr": (1, 1), "yrs": (1, 1), "year": (1, 1), "years": (1, 1)},
    "fs": {"hz": (1, 1), "khz": (1000, 1)},
    "resolution_uv": {"uv": (1, 1), "µv": (1, 1), "μv": (1, 1), "mv": (1000, 1), "nv": (1, 1000)},
}

#: Cell texts that mean "no value" (compared case-insensitively after stripping).
MISSING_TOKENS: tuple[str, ...] = ("", "na", "n/a", "nan", "null", "none", "-")
#: A column with more than this fraction of its non-empty values invalid is a read error.
MAJORITY: float = 0.5

_NUMBER = {
    ".": r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?",
    ",": r"[+-]?(?:\d+(?:,\d*)?|,\d+)(?:[eE][+-]?\d+)?",
}
# the unit must start with something that cannot continue a number ("2.5.1", "3,14" do not match)
_UNIT = r"(?:\s*(?P<unit>[^\d\s.,+-].*))?"


def _check_range(name: str, rng: Any) -> tuple[float, float] | None:
    if rng is None:
        return None
    if isinstance(rng, (str, bytes)) or not hasattr(rng, "__len__") or len(rng) != 2:
        raise ConfigError(f"plausible_ranges.{name} must be [low, high] or null, got {rng!r}")
    lo, hi = rng
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"plausible_ranges.{name} must be two finite numbers, got {rng!r}")
    if lo > hi:
        raise ConfigError(f"plausible_ranges.{name}: low {lo:g} > high {hi:g}")
    return (float(lo), float(hi))


def resolve_ranges(overrides: Mapping[str, Any] | None) -> dict[str, tuple[float, float] | None]:
    """:data:`DEFAULT_RANGES` with ``overrides`` applied (``None`` switches a column's check off).

    Raises:
        ConfigError: an unknown column or a malformed range.
    """
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"plausible_ranges must be a mapping column -> [low, high], got {type(overrides).__name__}")
    unknown = set(overrides) - set(NUMERIC_COLUMNS)
    if unknown:
        raise ConfigError(
            f"plausible_ranges: unknown column(s) {', '.join(sorted(map(str, unknown)))} "
            f"(numeric columns: {', '.join(NUMERIC_COLUMNS)})"
        )
    out: dict[str, tuple[float, float] | None] = dict(DEFAULT_RANGES)
    for name, rng in overrides.items():
        out[name] = _check_range(name, rng)
    return out


def check_decimal_comma(columns: Any, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Validate the ``decimal_comma`` column list (our column names)."""
    if columns is None:
        return ()
    if isinstance(columns, str) or not hasattr(columns, "__iter__"):
        raise ConfigError(f"decimal_comma must be a list of column names, got {columns!r}")
    cols = tuple(columns)
    bad = [c for c in cols if c not in NUMERIC_COLUMNS and c not in extra]
    if bad:
        raise ConfigError(
            f"decimal_comma: {', '.join(map(repr, bad))} is not a numeric column (numeric columns: {', '.join(NUMERIC_COLUMNS)})"
        )
    return tuple(dict.fromkeys(cols))


@dataclass(frozen=True)
class ValueRules:
    """How numbers are read (see the module docstring); built from a ``CohortConfig``.

    Attributes:
        decimal_comma: columns (ours) whose decimal separator is a comma.
        ranges: plausible inclusive range per column (``None``: no range check).
    """

    decimal_comma: tuple[str, ...] = ()
    ranges: dict[str, tuple[float, float] | None] = field(default_factory=lambda: dict(DEFAULT_RANGES))
    extra_numeric: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = {str(k): _check_range(str(k), v) for k, v in dict(self.extra_numeric or {}).items()}
        object.__setattr__(self, "extra_numeric", extra)
        object.__setattr__(self, "decimal_comma", check_decimal_comma(self.decimal_comma, extra=tuple(extra)))
        ranges = resolve_ranges(self.ranges)
        for k, v in extra.items():  # a target column named in the cohort config (CohortConfig.targets)
            if k not in NUMERIC_COLUMNS:
                ranges[k] = v
        object.__setattr__(self, "ranges", ranges)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Columns read as numbers: the built-in ones and the config's numeric targets."""
        return NUMERIC_COLUMNS + tuple(k for k in self.extra_numeric if k not in NUMERIC_COLUMNS)


def range_text(name: str, rng: tuple[float, float]) -> str:
    return f"{rng[0]:g}-{rng[1]:g} {NUMERIC_UNITS.get(name, '')}".rstrip()


def number_exprs(name: str, dtype: pl.DataType, rules: ValueRules) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """``(value, reason, raw)`` expressions for the numeric column ``name``.

    ``value`` is Float64 in the column's unit (null when missing or invalid), ``reason`` the invalid
    reason (null when missing or valid), ``raw`` the cell as text.
    """
    col = pl.col(name)
    if dtype == pl.String or dtype == pl.Utf8 or dtype == pl.Categorical:
        raw = col.cast(pl.String)
        s = raw.str.strip_chars()
        missing = s.is_null() | s.str.to_lowercase().is_in(list(MISSING_TOKENS))
        sep = "," if name in rules.decimal_comma else "."
        groups = s.str.extract_groups(rf"^(?P<num>{_NUMBER[sep]}){_UNIT}$")
        num = groups.struct.field("num")
        unit = groups.struct.field("unit").str.strip_chars().str.to_lowercase().str.replace_all(r"\s+", " ")
        if sep == ",":
            num = num.str.replace(",", ".", literal=True)
        number = num.cast(pl.Float64, strict=False)
        units = UNITS.get(name, {})
        mul = unit.replace_strict({u: float(m) for u, (m, _) in units.items()}, default=None, return_dtype=pl.Float64)
        div = unit.replace_strict({u: float(d) for u, (_, d) in units.items()}, default=None, return_dtype=pl.Float64)
        value = pl.when(unit.is_null()).then(number).otherwise(number * mul / div)
        accepted = ", ".join(units) or "none"
        reason = (
            pl.when(missing).then(pl.lit(None, pl.String))
            .when(num.is_null()).then(pl.lit(f"unparseable {name}"))
            .when(unit.is_not_null() & mul.is_null()).then(pl.lit(f"unknown unit in {name} (accepted: {accepted})"))
        )
        value = pl.when(missing | num.is_null() | (unit.is_not_null() & mul.is_null())).then(None).otherwise(value)
    elif dtype.is_numeric() or dtype == pl.Boolean:
        x = col.cast(pl.Float64, strict=False)
        raw = col.cast(pl.String)
        value = pl.when(x.is_nan()).then(None).otherwise(x)
        reason = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    else:  # dates, lists, ...: never a number
        raw = col.cast(pl.String, strict=False)
        value = pl.lit(None, pl.Float64)
        reason = pl.when(col.is_not_null()).then(pl.lit(f"unparseable {name}"))
    reason = reason.when(value.is_infinite()).then(pl.lit(f"implausible {name} (not finite)"))
    rng = rules.ranges.get(name)
    if rng is not None:
        lo, hi = rng
        out_of_range = value.is_not_null() & ~((value >= lo) & (value <= hi))
        reason = reason.when(out_of_range).then(pl.lit(f"implausible {name} (outside {range_text(name, rng)})"))
    reason = reason.otherwise(pl.lit(None, pl.String))
    value = pl.when(reason.is_null()).then(value).otherwise(None)
    return value.cast(pl.Float64).alias(name), reason.alias(f"_bad_{name}"), raw.alias(f"_raw_{name}")


__all__ = [
    "DEFAULT_RANGES",
    "MAJORITY",
    "MISSING_TOKENS",
    "NUMERIC_COLUMNS",
    "NUMERIC_UNITS",
    "UNITS",
    "ValueRules",
    "check_decimal_comma",
    "number_exprs",
    "range_text",
    "resolve_ranges",
]
