"""Aortic stenosis (AS) labels and severity grades from echocardiography measurements.

The label follows the reference paper: a study is AS when **at least one** of

* peak aortic jet velocity ``peak_velocity_m_s >= 2.5`` m/s,
* mean pressure gradient ``mean_gradient_mmhg >= 20`` mmHg,
* aortic valve area ``ava_cm2 <= 1.5`` cm2

holds (:class:`ASCriteria`; each threshold configurable, ``None`` switches a criterion off).

Missing-value policy (:func:`as_label`):

* ``1`` as soon as any *available* measurement meets its criterion (a missing value never blocks a
  positive).
* ``0`` only when no available measurement meets its criterion **and** at least one measurement is
  present.  With ``require_all_measurements=True`` a ``0`` needs every enabled measurement present;
  otherwise the study is undeterminable.
* undeterminable (all measurements missing, or the strict rule above) -> null: ``None`` in Polars,
  ``<NA>`` in pandas, ``NaN`` in NumPy arrays.  It is never treated as 0; the cohort builder
  excludes such echoes with a reason.

A measurement is *missing* here when empty/null, NaN, infinite, negative, or 0 for the velocity or
the valve area (a 0 m/s velocity or a 0 cm2 area is an export artefact, not a measurement; a 0 mmHg
mean gradient is a measurement).  These functions never turn such a value into a ``0`` by
themselves, but they cannot tell a missing value from a wrong one: the cohort builder checks every
value first (:mod:`cardiofusion.cohort.values`: strict parsing, units, plausibility ranges) and
*excludes* an echo with an unparseable or implausible measurement instead of labelling it from its
other measurements, so an AS echo whose only abnormal value was written ``"2.5 m/s"`` or ``265`` is
never relabelled "no AS".

Severity (:func:`as_severity`) uses the ACC/AHA cut-offs of :class:`SeverityGrades` on the **worst**
available measurement::

               Vmax (m/s)   mean gradient (mmHg)   AVA (cm2)
    moderate   >= 3.0       >= 20                  <= 1.5
    severe     >= 4.0       >= 40                  <  1.0

and is tied to the label so that ``label == 1`` always means severity >= ``mild``:

* label null -> severity null; label 0 -> ``"none"`` (even if a custom grade threshold is met);
* label 1 -> ``"severe"`` if any severe cut-off is met, else ``"moderate"`` if any moderate cut-off
  is met, else ``"mild"``.

So ``"mild"`` means *meets the AS rule but none of the moderate thresholds*; with the default rule
that is a peak velocity in [2.5, 3.0) m/s with gradient < 20 mmHg and AVA > 1.5 cm2.  ACC/AHA's
own mild band starts at 2.0 m/s: studies with 2.0 <= Vmax < 2.5 (and nothing else abnormal) are
label 0 / ``"none"`` here, because the AS rule, not the grading table, decides who is a case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import polars as pl

from ..errors import ConfigError

#: The three echo measurements, in the order used everywhere.
MEASUREMENTS: tuple[str, ...] = ("peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2")
#: Severity grades from mildest to worst.
SEVERITY_LEVELS: tuple[str, ...] = ("none", "mild", "moderate", "severe")

# ----------------------------------------------------------------------------- other targets
#: Coronary artery calcium (Agatston) CAC-DRS bin edges: 0 | 1-99 | 100-399 | >= 400 (a score in
#: ``[edge_k, edge_k+1)`` is class k + 1; ``numpy.searchsorted(CAC_BINS, score, side="right")``).
CAC_BINS: tuple[float, ...] = (1.0, 100.0, 400.0)
CAC_CLASSES: tuple[str, ...] = ("0", "1-99", "100-399", ">=400")
#: LV hypertrophy by echo LV mass (g), un-indexed ASE/EACVI 2015 upper limits: above this is LVH.
LVH_MASS_G: dict[str, float] = {"F": 162.0, "M": 224.0}
#: Heart failure with reduced ejection fraction: LVEF below this (%).
HF_LVEF_PCT: float = 40.0


def dx_lvh_expr(mass: str = "lv_mass_g", sex: str = "sex") -> pl.Expr:
    """LVH 0/1 (Int8) from LV mass and sex (:data:`LVH_MASS_G`); null when either is unknown."""
    limit = pl.col(sex).replace_strict(LVH_MASS_G, default=None, return_dtype=pl.Float64)
    m = pl.col(mass).cast(pl.Float64, strict=False)
    return pl.when(m.is_null() | limit.is_null()).then(pl.lit(None, pl.Int8)).otherwise((m > limit).cast(pl.Int8))


def dx_hf_expr(lvef: str = "lvef_pct") -> pl.Expr:
    """Reduced LVEF / heart failure 0/1 (Int8): LVEF < :data:`HF_LVEF_PCT`; null when LVEF is unknown."""
    x = pl.col(lvef).cast(pl.Float64, strict=False)
    return pl.when(x.is_null()).then(pl.lit(None, pl.Int8)).otherwise((x < HF_LVEF_PCT).cast(pl.Int8))


def _check_threshold(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number or None, got {value!r}")


@dataclass(frozen=True)
class ASCriteria:
    """The AS rule: any one enabled criterion suffices.

    Attributes:
        peak_velocity_m_s: AS when peak aortic velocity >= this (m/s); ``None`` disables it.
        mean_gradient_mmhg: AS when mean pressure gradient >= this (mmHg); ``None`` disables it.
        ava_cm2: AS when aortic valve area <= this (cm2); ``None`` disables it.
    """

    peak_velocity_m_s: float | None = 2.5
    mean_gradient_mmhg: float | None = 20.0
    ava_cm2: float | None = 1.5

    def __post_init__(self) -> None:
        for name in MEASUREMENTS:
            _check_threshold(f"ASCriteria.{name}", getattr(self, name))
        if all(getattr(self, name) is None for name in MEASUREMENTS):
            raise ConfigError("ASCriteria needs at least one enabled criterion")

    @property
    def enabled(self) -> tuple[str, ...]:
        """Measurements whose criterion is switched on."""
        return tuple(m for m in MEASUREMENTS if getattr(self, m) is not None)

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "ASCriteria":
        d = dict(d or {})
        unknown = set(d) - set(MEASUREMENTS)
        if unknown:
            raise ConfigError(f"unknown ASCriteria field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class SeverityGrades:
    """ACC/AHA cut-offs for grading a positive study (see the module docstring).

    Attributes:
        moderate_peak_velocity_m_s: moderate when Vmax >= this.
        severe_peak_velocity_m_s: severe when Vmax >= this.
        moderate_mean_gradient_mmhg: moderate when mean gradient >= this.
        severe_mean_gradient_mmhg: severe when mean gradient >= this.
        moderate_ava_cm2: moderate when AVA <= this.
        severe_ava_cm2: severe when AVA < this (strict, as in "AVA < 1.0 cm2").
    """

    moderate_peak_velocity_m_s: float = 3.0
    severe_peak_velocity_m_s: float = 4.0
    moderate_mean_gradient_mmhg: float = 20.0
    severe_mean_gradient_mmhg: float = 40.0
    moderate_ava_cm2: float = 1.5
    severe_ava_cm2: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            _check_threshold(f"SeverityGrades.{name}", value)
        if self.severe_peak_velocity_m_s < self.moderate_peak_velocity_m_s:
            raise ConfigError("severe_peak_velocity_m_s must be >= moderate_peak_velocity_m_s")
        if self.severe_mean_gradient_mmhg < self.moderate_mean_gradient_mmhg:
            raise ConfigError("severe_mean_gradient_mmhg must be >= moderate_mean_gradient_mmhg")
        if self.severe_ava_cm2 > self.moderate_ava_cm2:
            raise ConfigError("severe_ava_cm2 must be <= moderate_ava_cm2")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SeverityGrades":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in cls.__dataclass_fields__.values()}
        if unknown:
            raise ConfigError(f"unknown SeverityGrades field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


# ----------------------------------------------------------------------------- Polars expressions
#: Measurements for which 0 is a value (a mean gradient of 0 mmHg); for the others 0 is unusable.
_ZERO_IS_A_VALUE: frozenset[str] = frozenset({"mean_gradient_mmhg"})


def measurement_expr(name: str) -> pl.Expr:
    """Column ``name`` as Float64 with every unusable value (null, NaN, inf, < 0, and 0 except for the
    mean gradient) turned into null."""
    x = pl.col(name).cast(pl.Float64, strict=False)
    usable = (x >= 0) if name in _ZERO_IS_A_VALUE else (x > 0)
    return pl.when(x.is_finite() & usable).then(x).otherwise(None)


def label_expr(criteria: ASCriteria | None = None, *, require_all_measurements: bool = False) -> pl.Expr:
    """Polars expression of the AS label (Int8: 1, 0 or null) over the measurement columns."""
    criteria = criteria or ASCriteria()
    meets: list[pl.Expr] = []
    present: list[pl.Expr] = []
    for name in criteria.enabled:
        x = measurement_expr(name)
        thr = getattr(criteria, name)
        meets.append((x <= thr) if name == "ava_cm2" else (x >= thr))
        present.append(x.is_not_null())
    any_meets = pl.any_horizontal([m.fill_null(False) for m in meets])
    if require_all_measurements:
        can_be_negative = pl.all_horizontal(present)
    else:
        can_be_negative = pl.any_horizontal(present)
    return (
        pl.when(any_meets).then(pl.lit(1, pl.Int8))
        .when(can_be_negative).then(pl.lit(0, pl.Int8))
        .otherwise(pl.lit(None, pl.Int8))
    )


def severity_expr(
    criteria: ASCriteria | None = None,
    grades: SeverityGrades | None = None,
    *,
    require_all_measurements: bool = False,
) -> pl.Expr:
    """Polars expression of the severity grade (String: none/mild/moderate/severe or null)."""
    grades = grades or SeverityGrades()
    v = measurement_expr("peak_velocity_m_s")
    g = measurement_expr("mean_gradient_mmhg")
    a = measurement_expr("ava_cm2")
    severe = pl.any_horizontal(
        (v >= grades.severe_peak_velocity_m_s).fill_null(False),
        (g >= grades.severe_mean_gradient_mmhg).fill_null(False),
        (a < grades.severe_ava_cm2).fill_null(False),
    )
    moderate = pl.any_horizontal(
        (v >= grades.moderate_peak_velocity_m_s).fill_null(False),
        (g >= grades.moderate_mean_gradient_mmhg).fill_null(False),
        (a <= grades.moderate_ava_cm2).fill_null(False),
    )
    label = label_expr(criteria, require_all_measurements=require_all_measurements)
    return (
        pl.when(label.is_null()).then(pl.lit(None, pl.String))
        .when(label == 0).then(pl.lit("none"))
        .when(severe).then(pl.lit("severe"))
        .when(moderate).then(pl.lit("moderate"))
        .otherwise(pl.lit("mild"))
    )


# ----------------------------------------------------------------------------- array / frame API
def _as_frame(data: Any, kwargs: dict[str, Any]) -> tuple[pl.DataFrame, str, Any]:
    """Normalise the inputs of :func:`as_label` / :func:`as_severity` to a Polars frame.

    Returns the frame, the kind of input (``polars``, ``pandas`` or ``numpy``) and, for pandas, the
    index to put back.
    """
    given = {k: v for k, v in kwargs.items() if v is not None}
    if data is not None and given:
        raise TypeError("pass either a table or measurement arrays, not both")
    if isinstance(data, pl.DataFrame):
        frame = data.select([pl.col(m) if m in data.columns else pl.lit(None, pl.Float64).alias(m) for m in MEASUREMENTS])
        return frame, "polars", None
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        cols = {}
        for m in MEASUREMENTS:
            cols[m] = (pd.to_numeric(data[m], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                       if m in data.columns else np.full(len(data), np.nan))
        return pl.DataFrame(cols), "pandas", data.index
    if data is not None:
        if not isinstance(data, Mapping):
            raise TypeError(f"unsupported input {type(data).__name__}: use a DataFrame, a mapping or keyword arrays")
        given = {k: data[k] for k in MEASUREMENTS if k in data}
    if not given:
        raise TypeError(f"no measurement given (expected some of {', '.join(MEASUREMENTS)})")
    arrays = {k: np.asarray(v, dtype=float) if v is not None else None for k, v in given.items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    cols = {}
    for m in MEASUREMENTS:
        a = arrays.get(m)
        cols[m] = np.broadcast_to(a, shape).ravel() if a is not None else np.full(int(np.prod(shape)), np.nan)
    return pl.DataFrame(cols), "numpy", shape


def as_label(
    data: Any = None,
    *,
    peak_velocity_m_s: Any = None,
    mean_gradient_mmhg: Any = None,
    ava_cm2: Any = None,
    criteria: ASCriteria | None = None,
    require_all_measurements: bool = False,
) -> Any:
    """AS label (1 / 0 / undeterminable) per study; see the module docstring for the policy.

    Args:
        data: a Polars or pandas DataFrame (or a mapping) with some of the columns
            ``peak_velocity_m_s``, ``mean_gradient_mmhg``, ``ava_cm2``; or leave it out and pass
            the measurements as keyword arrays/scalars (broadcast together; NaN = missing).
        criteria: thresholds (default: the paper's rule).
        require_all_measurements: a 0 needs every enabled measurement present.

    Returns:
        Polars input -> ``pl.Series`` (Int8, null when undeterminable); pandas input ->
        ``pd.Series`` (``Int8``, ``<NA>``, same index); arrays -> float ``np.ndarray`` of 1.0 / 0.0 /
        NaN with the broadcast shape (a float for scalar inputs).
    """
    frame, kind, extra = _as_frame(
        data, dict(peak_velocity_m_s=peak_velocity_m_s, mean_gradient_mmhg=mean_gradient_mmhg, ava_cm2=ava_cm2)
    )
    out = frame.select(label_expr(criteria, require_all_measurements=require_all_measurements).alias("label"))["label"]
    if kind == "polars":
        return out
    if kind == "pandas":
        return out.to_pandas().astype("Int8").set_axis(extra)
    arr = out.cast(pl.Float64).fill_null(float("nan")).to_numpy().reshape(extra)
    return float(arr) if arr.ndim == 0 else arr


def as_severity(
    data: Any = None,
    *,
    peak_velocity_m_s: Any = None,
    mean_gradient_mmhg: Any = None,
    ava_cm2: Any = None,
    criteria: ASCriteria | None = None,
    grades: SeverityGrades | None = None,
    require_all_measurements: bool = False,
) -> Any:
    """Severity grade (``none``/``mild``/``moderate``/``severe``, null when undeterminable).

    Same inputs as :func:`as_label`.  Returns a ``pl.Series`` (String), a pandas ``Series`` (object,
    ``None`` when undeterminable) or an object ``np.ndarray`` (``None`` when undeterminable).
    """
    frame, kind, extra = _as_frame(
        data, dict(peak_velocity_m_s=peak_velocity_m_s, mean_gradient_mmhg=mean_gradient_mmhg, ava_cm2=ava_cm2)
    )
    out = frame.select(
        severity_expr(criteria, grades, require_all_measurements=require_all_measurements).alias("severity")
    )["severity"]
    if kind == "polars":
        return out
    if kind == "pandas":
        import pandas as pd

        return pd.Series(out.to_list(), index=extra, dtype=object, name="severity")
    arr = np.array(out.to_list(), dtype=object).reshape(extra)
    return arr.item() if arr.ndim == 0 else arr


__all__ = [
    "CAC_BINS",
    "CAC_CLASSES",
    "HF_LVEF_PCT",
    "LVH_MASS_G",
    "dx_hf_expr",
    "dx_lvh_expr",
    "MEASUREMENTS",
    "SEVERITY_LEVELS",
    "ASCriteria",
    "SeverityGrades",
    "as_label",
    "as_severity",
    "label_expr",
    "measurement_expr",
    "severity_expr",
]
