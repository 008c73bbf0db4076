"""The typed settings of a cohort build (saved as ``config.json`` beside every manifest)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping

from ..configfile import read_mapping_file
from ..errors import ConfigError
from .labels import ASCriteria, SeverityGrades
from .values import DEFAULT_RANGES, ValueRules, check_decimal_comma, resolve_ranges

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
#: tables a config-named target column can come from (``ground_truth``: a per-patient table, e.g. the
#: synthetic export's ``ground_truth/patients.csv``, joined on ``patient_id``)
TARGET_TABLES: tuple[str, ...] = ("ecg", "cxr", "echo", "ground_truth")


@dataclass(frozen=True)
class TargetColumn:
    """An extra manifest column copied from a table (``CohortConfig.targets``; ``docs/data_layout.md``).

    Attributes:
        table: ``echo`` / ``ecg`` / ``cxr`` (the record's linked exam) or ``ground_truth`` (per patient).
        column: the column in that table (our name, after the column map).
        numeric: read the column as numbers by the strict value rules (:mod:`cardiofusion.cohort.values`:
            an unparseable or implausible cell excludes the row with the reason, a mostly invalid column is a
            read error); ``False`` copies the text as it is (e.g. class names).
        range: plausible inclusive ``[low, high]`` of a numeric column (``None``: no check; a built-in
            numeric column such as ``lvef_pct`` keeps its ``plausible_ranges`` entry).
    """

    table: str
    column: str
    numeric: bool = True
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.table not in TARGET_TABLES:
            raise ConfigError(f"targets: table must be one of {', '.join(TARGET_TABLES)}, got {self.table!r}")
        if not isinstance(self.column, str) or not self.column.strip():
            raise ConfigError(f"targets: column must be a non-empty column name, got {self.column!r}")
        if not isinstance(self.numeric, bool):
            raise ConfigError(f"targets: numeric must be true or false, got {self.numeric!r}")
        if self.range is not None:
            from .values import _check_range

            object.__setattr__(self, "range", _check_range(self.column, self.range))

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "column": self.column, "numeric": self.numeric,
                "range": list(self.range) if self.range is not None else None}

    @classmethod
    def from_dict(cls, name: str, d: Any) -> "TargetColumn":
        if isinstance(d, TargetColumn):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"targets.{name} must be a mapping {{table, column}}, got {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"targets.{name}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        if "table" not in d or "column" not in d:
            raise ConfigError(f"targets.{name} needs 'table' and 'column'")
        rng = d.get("range")
        return cls(table=d["table"], column=d["column"], numeric=d.get("numeric", True),
                   range=tuple(rng) if isinstance(rng, (list, tuple)) else rng)


@dataclass(frozen=True)
class CohortConfig:
    """Every choice that decides which (ECG, X-ray, echo) records end up in the manifest.

    Attributes:
        cxr_within_days: an echo is linked to the X-ray closest to it within +-this many days
            (paper: 90).  Ties: the earlier X-ray, then the smaller ``exam_id``.
        ecg_within_days: every ECG within +-this many days of the linked X-ray makes a record
            (paper: 7).
        window_basis: ``"date"`` compares calendar dates (time of day ignored; 2019-01-01 23:00 and
            2019-01-08 08:00 are 7 days apart), ``"datetime"`` compares exact times.  Distances in
            the manifest (``days_*``) use the same basis.
        cxr_requires_ecg: only X-rays with at least one ECG within ``ecg_within_days`` compete for
            an echo (off by default: the paper takes the closest X-ray, then looks for ECGs).
        min_age: adults only: age at the echo >= this (years).  Age comes from the echo ``age``,
            else ``birth_date``, else (``age_from_other_tables``) the age on the patient's X-ray/ECG
            closest in time, shifted by the time between the exams.  Unknown age -> excluded.
        age_from_other_tables: allow the last fallback above.
        criteria: the AS rule (label 1 when any criterion is met).
        grades: ACC/AHA severity cut-offs.
        require_all_measurements: a negative label needs all three measurements (else undeterminable).
        split_fractions: train / val / test fractions of *patients* (sum 1).
        stratify: stratify the split (and folds) by patient label (positive if any record is AS).
        seed: seed of the split and folds.
        n_folds: also assign ``fold`` 0..n_folds-1, grouped by patient and stratified; ``None``: no folds.
        fold_scope: ``"all"`` patients get a fold, or only ``"train_val"`` ones (test fold = null).
        duplicate_exam_ids: what to do with rows sharing an ``exam_id`` but differing in content:
            ``"drop"`` every such row (the id is ambiguous), or keep the ``"first"`` in file order.
            Rows that are exact copies are always reduced to one (the copies are excluded, counted).
        decimal_comma: numeric columns (our names, any table) written with a decimal comma
            (``"3,14"``); a dot is then refused in those columns.  Default: none (a comma is invalid).
        plausible_ranges: inclusive ``[low, high]`` per numeric column, in the column's unit; the
            given columns override :data:`~cardiofusion.cohort.values.DEFAULT_RANGES` (Vmax 0.5-7 m/s,
            mean gradient 0-150 mmHg, AVA 0.2-6 cm2, LVEF 5-90 %, age 0-120 years, ECG fs 50-20000 Hz,
            resolution 0.001-1000 uV); ``None`` switches a column's check off.  A row with an
            unparseable or implausible value is excluded with the reason (``docs/data_layout.md``).
        targets: extra manifest columns, ``{name: {table, column, numeric, range}}`` (:class:`TargetColumn`),
            copied from the record's linked exam or the per-patient ground truth, e.g.
            ``{"sts_score": {"table": "echo", "column": "STS"}}``.  A named column missing from its table is a
            :class:`ConfigError` naming the file and the column.
    """

    cxr_within_days: float = 90.0
    ecg_within_days: float = 7.0
    window_basis: Literal["date", "datetime"] = "date"
    cxr_requires_ecg: bool = False
    min_age: float = 18.0
    age_from_other_tables: bool = True
    criteria: ASCriteria = field(default_factory=ASCriteria)
    grades: SeverityGrades = field(default_factory=SeverityGrades)
    require_all_measurements: bool = False
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    stratify: bool = True
    seed: int = 0
    n_folds: int | None = None
    fold_scope: Literal["all", "train_val"] = "all"
    duplicate_exam_ids: Literal["drop", "first"] = "drop"
    decimal_comma: tuple[str, ...] = ()
    plausible_ranges: dict[str, tuple[float, float] | None] = field(default_factory=lambda: dict(DEFAULT_RANGES))
    targets: dict[str, TargetColumn] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.targets, Mapping):
            raise ConfigError(f"targets must be a mapping name -> {{table, column}}, got {type(self.targets).__name__}")
        targets = {}
        for name, spec in self.targets.items():
            if not isinstance(name, str) or not name.strip() or name.startswith("_"):
                raise ConfigError(f"targets: {name!r} is not a valid column name")
            targets[name] = TargetColumn.from_dict(name, spec)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "decimal_comma", check_decimal_comma(self.decimal_comma, extra=self._extra_numeric()))
        object.__setattr__(self, "plausible_ranges", resolve_ranges(self.plausible_ranges))
        for name in ("cxr_within_days", "ecg_within_days"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a non-negative number of days, got {v!r}")
        if self.window_basis not in ("date", "datetime"):
            raise ConfigError(f"window_basis must be 'date' or 'datetime', got {self.window_basis!r}")
        age = self.min_age
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age < 0:
            raise ConfigError(f"min_age must be a non-negative number, got {self.min_age!r}")
        if not isinstance(self.criteria, ASCriteria):
            raise ConfigError("criteria must be an ASCriteria")
        if not isinstance(self.grades, SeverityGrades):
            raise ConfigError("grades must be a SeverityGrades")
        fr = tuple(self.split_fractions)
        if len(fr) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0 for f in fr):
            raise ConfigError(f"split_fractions must be three non-negative numbers (train, val, test), got {self.split_fractions!r}")
        if abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"split_fractions must sum to 1, got {sum(fr):g}")
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in fr))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.n_folds is not None and (isinstance(self.n_folds, bool) or not isinstance(self.n_folds, int) or self.n_folds < 2):
            raise ConfigError(f"n_folds must be an integer >= 2 or None, got {self.n_folds!r}")
        if self.fold_scope not in ("all", "train_val"):
            raise ConfigError(f"fold_scope must be 'all' or 'train_val', got {self.fold_scope!r}")
        if self.duplicate_exam_ids not in ("drop", "first"):
            raise ConfigError(f"duplicate_exam_ids must be 'drop' or 'first', got {self.duplicate_exam_ids!r}")

    @property
    def value_rules(self) -> ValueRules:
        """How the index tables' numbers are read (decimal comma, plausibility ranges)."""
        return ValueRules(decimal_comma=self.decimal_comma, ranges=self.plausible_ranges,
                          extra_numeric={t.column: t.range for t in self.targets.values()
                                         if t.numeric and t.column not in self.plausible_ranges})

    def _extra_numeric(self) -> tuple[str, ...]:
        return tuple(t.column for t in self.targets.values() if t.numeric)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (criteria and grades nested)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (ASCriteria, SeverityGrades)):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name == "targets":
                v = {k: t.to_dict() for k, t in v.items()}
            elif isinstance(v, dict):
                v = {k: (list(r) if r is not None else None) for k, r in v.items()}
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CohortConfig":
        """Inverse of :meth:`to_dict`; also accepts a whole ``config.json`` (``{"config": {...}}``)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a cohort config must be a mapping, got {type(d).__name__}")
        if "config" in d and isinstance(d["config"], Mapping):
            d = d["config"]
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown cohort config field(s): {', '.join(sorted(unknown))}")
        if "criteria" in d and not isinstance(d["criteria"], ASCriteria):
            d["criteria"] = ASCriteria.from_dict(d["criteria"])
        if "grades" in d and not isinstance(d["grades"], SeverityGrades):
            d["grades"] = SeverityGrades.from_dict(d["grades"])
        if "split_fractions" in d and d["split_fractions"] is not None:
            d["split_fractions"] = tuple(d["split_fractions"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "CohortConfig":
        """Read a JSON or YAML file (e.g. a previous build's ``config.json``)."""
        return cls.from_dict(read_mapping_file(path, "cohort config"))

    def replace(self, **changes: Any) -> "CohortConfig":
        """A copy with some fields changed (validated again)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(changes)
        return type(self)(**d)


__all__ = ["SPLIT_NAMES", "TARGET_TABLES", "CohortConfig", "TargetColumn"]
