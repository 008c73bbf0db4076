"""Loading the three index tables (ECG, X-ray, echo exams) into one normalised layout.

Default layout (``docs/data_layout.md``)::

    ecg   required: patient_id, exam_id, exam_datetime, path
          optional: age, sex, pacemaker, atrial_fibrillation, fs, units, resolution_uv
    cxr   required: patient_id, exam_id, exam_datetime, path
          optional: age, sex, view_position
    echo  required: patient_id, exam_id, exam_datetime, peak_velocity_m_s, mean_gradient_mmhg, ava_cm2
          optional: path, age, sex, birth_date, lvef_pct, lv_mass_g

Any other column is kept and passed through to the manifest.  A real export with other names is
mapped with a :class:`ColumnMap` (ours -> theirs), e.g. in YAML::

    ecg:  {patient_id: PID, exam_id: ECG_ID, exam_datetime: ACQ_TIME, path: FILE}
    cxr:  {patient_id: PID, exam_id: StudyUID, exam_datetime: StudyDate, path: png}
    echo: {patient_id: PID, exam_id: EchoID, exam_datetime: Date, peak_velocity_m_s: AV_Vmax}
    datetime_format: "%d/%m/%Y %H:%M"        # optional; or {ecg: "...", echo: "..."}

Normalisation done by :func:`load_index`:

* ids (``patient_id``, ``exam_id``) become stripped strings (leading zeros kept: CSV cells are read
  as text); empty -> null.
* ``exam_datetime`` (and ``birth_date``) become ``Datetime[us]``: ISO 8601 date or date-time, or the
  mapped ``datetime_format``.  A non-empty value that does not parse becomes null and is flagged
  (``_exam_datetime_unparseable``, ``_invalid_*`` below) so that linkage excludes the row with the
  reason; when more than half of a column's non-empty values do not parse (``13/01/2020`` without
  ``datetime_format``) the table is a :class:`ReadError` naming the file and the column.
* ``path`` is made absolute against the folder holding the table (absolute paths and URLs such as
  ``s3://...`` are left alone).
* ``sex`` becomes ``F`` / ``M`` (``female``, ``woman``, ``w`` -> F; ``male``, ``man`` -> M; anything
  else -> null); ``pacemaker`` / ``atrial_fibrillation`` become Int8 0/1 (``1/0``, ``true/false``,
  ``yes/no``, ``y/n``); numbers (``age``, measurements, ``fs``, ``resolution_uv``, ``lvef_pct``)
  become Float64, read strictly by :mod:`cardiofusion.cohort.values` (decimal-comma columns, unit
  suffixes such as ``2.5 m/s`` or ``250 cm/s``, plausibility ranges): an unparseable or implausible
  value becomes null *and* is recorded in the hidden ``_invalid_column`` / ``_invalid_raw`` /
  ``_invalid_reason`` (the row's first invalid cell), which linkage turns into an exclusion.  A
  column that is mostly invalid is a :class:`ReadError`.
* a hidden ``_row`` column keeps the 0-based row number in the file, for the exclusion report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from ..configfile import read_mapping_file
from ..errors import ConfigError, ReadError
from .values import MAJORITY, NUMERIC_COLUMNS, NUMERIC_UNITS, ValueRules, number_exprs

TABLE_KINDS: tuple[str, ...] = ("ecg", "cxr", "echo")
TABLE_NAMES: dict[str, str] = {"ecg": "ECG index", "cxr": "X-ray index", "echo": "echo index"}
#: Default file names inside an export folder (``cohort build --export DIR``).
DEFAULT_FILENAMES: dict[str, str] = {"ecg": "ecg_index.csv", "cxr": "cxr_index.csv", "echo": "echo_index.csv"}

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "ecg": ("patient_id", "exam_id", "exam_datetime", "path"),
    "cxr": ("patient_id", "exam_id", "exam_datetime", "path"),
    "echo": ("patient_id", "exam_id", "exam_datetime", "peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ecg": ("age", "sex", "pacemaker", "atrial_fibrillation", "fs", "units", "resolution_uv"),
    "cxr": ("age", "sex", "view_position"),
    "echo": ("path", "age", "sex", "birth_date", "lvef_pct", "lv_mass_g"),
}

_ID_COLUMNS = ("patient_id", "exam_id")
_FLOAT_COLUMNS = NUMERIC_COLUMNS
#: Hidden columns added by :func:`normalise_index` (kept when an already normalised table is normalised again).
INTERNAL_COLUMNS: tuple[str, ...] = ("_row", "_exam_datetime_unparseable", "_invalid_column", "_invalid_raw", "_invalid_reason")
_FLAG_COLUMNS = ("pacemaker", "atrial_fibrillation")
_DATETIME_COLUMNS = ("exam_datetime", "birth_date")
_SEX_MAP = {
    "F": "F", "FEMALE": "F", "W": "F", "WOMAN": "F",
    "M": "M", "MALE": "M", "MAN": "M",
}
_FLAG_MAP = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "TRUE": 1, "FALSE": 0, "YES": 1, "NO": 0, "Y": 1, "N": 0, "T": 1}


@dataclass
class ColumnMap:
    """How an export's column names map onto ours, per table (``ours -> theirs``).

    Attributes:
        ecg: mapping for the ECG index, e.g. ``{"patient_id": "PID"}``; unmapped columns keep their name.
        cxr: mapping for the X-ray index.
        echo: mapping for the echo index.
        datetime_format: strftime-style format of ``exam_datetime`` / ``birth_date`` (Polars/chrono
            syntax, e.g. ``"%d/%m/%Y %H:%M"``) for every table, or a dict per table; ``None`` = ISO 8601.
    """

    ecg: dict[str, str] = field(default_factory=dict)
    cxr: dict[str, str] = field(default_factory=dict)
    echo: dict[str, str] = field(default_factory=dict)
    datetime_format: str | dict[str, str] | None = None

    def __post_init__(self) -> None:
        for kind in TABLE_KINDS:
            mapping = getattr(self, kind)
            if mapping is None:
                mapping = {}
                setattr(self, kind, mapping)
            if not isinstance(mapping, Mapping):
                raise ConfigError(f"column map for '{kind}' must be a mapping ours -> theirs, got {type(mapping).__name__}")
            for ours, theirs in mapping.items():
                if not isinstance(ours, str) or not isinstance(theirs, str) or not theirs:
                    raise ConfigError(f"column map for '{kind}': {ours!r} -> {theirs!r} is not a pair of column names")
            theirs_seen = list(mapping.values())
            dups = sorted({t for t in theirs_seen if theirs_seen.count(t) > 1})
            if dups:
                raise ConfigError(f"column map for '{kind}' maps several columns onto {', '.join(dups)}")
            setattr(self, kind, dict(mapping))
        fmt = self.datetime_format
        if isinstance(fmt, Mapping):
            unknown = set(fmt) - set(TABLE_KINDS)
            if unknown:
                raise ConfigError(f"datetime_format: unknown table(s) {', '.join(sorted(unknown))}")
            self.datetime_format = dict(fmt)
        elif fmt is not None and not isinstance(fmt, str):
            raise ConfigError("datetime_format must be a string, a mapping per table, or absent")

    def for_table(self, kind: str) -> dict[str, str]:
        """The ours -> theirs mapping of one table."""
        return dict(getattr(self, kind))

    def datetime_format_for(self, kind: str) -> str | None:
        fmt = self.datetime_format
        if isinstance(fmt, dict):
            return fmt.get(kind)
        return fmt

    def to_dict(self) -> dict[str, Any]:
        return {"ecg": dict(self.ecg), "cxr": dict(self.cxr), "echo": dict(self.echo), "datetime_format": self.datetime_format}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ColumnMap":
        if not isinstance(d, Mapping):
            raise ConfigError(f"a column map must be a mapping, got {type(d).__name__}")
        unknown = set(d) - set(TABLE_KINDS) - {"datetime_format"}
        if unknown:
            raise ConfigError(
                f"column map: unknown key(s) {', '.join(sorted(map(str, unknown)))} (expected ecg, cxr, echo, datetime_format)"
            )
        return cls(**{k: d[k] for k in d})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ColumnMap":
        """Read a YAML (``.yaml``/``.yml``) or JSON file."""
        d = read_mapping_file(path, "column map")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ReadError(path, str(e)) from None

    @classmethod
    def load(cls, spec: "ColumnMap | Mapping[str, Any] | str | os.PathLike | None") -> "ColumnMap":
        """Accept a :class:`ColumnMap`, a dict, a file path or ``None`` (identity map)."""
        if spec is None:
            return cls()
        if isinstance(spec, ColumnMap):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        return cls.from_file(spec)


def _read_raw(path: Path) -> pl.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() in {".gz", ".zst"} else path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(path)
        if suffix in {".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz"} or suffix == "":
            sep = "\t" if suffix.startswith(".tsv") else ","
            # every cell as text: ids keep leading zeros, types are decided below
            return pl.read_csv(path, infer_schema=False, separator=sep, truncate_ragged_lines=False)
    except FileNotFoundError:
        raise ReadError(path, "file not found") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReadError(path, f"cannot read table: {msg}") from None
    raise ReadError(path, f"unsupported table format '{path.suffix}' (use CSV or Parquet)")


def _id_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype.is_float():
        # ids written by pandas as 123.0 -> "123"
        col = pl.when(col == col.floor()).then(col.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(col.cast(pl.String))
    s = col.cast(pl.String).str.strip_chars()
    return pl.when(s.str.len_chars() > 0).then(s).otherwise(None).alias(name)


def _parse_datetimes(col: pl.Series, fmt: str | None) -> pl.Series:
    """Parse a column to ``Datetime[us]``; unparseable values become null.

    Without ``fmt``: ISO 8601 date or date-time (``T`` or space, optional fractional seconds, a
    trailing ``Z`` or UTC offset is ignored: times are kept as written).  The common layout is parsed
    for the whole column, then only the rows still unparsed are retried with the other layouts.
    """
    name = col.name
    if col.dtype == pl.Date or isinstance(col.dtype, pl.Datetime):
        if isinstance(col.dtype, pl.Datetime) and col.dtype.time_zone is not None:
            col = col.dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us")).alias(name)
    s = col.cast(pl.String).str.strip_chars()
    if fmt:
        return s.str.to_datetime(fmt, strict=False, time_unit="us").alias(name)
    s = s.str.strip_suffix("Z").str.replace("T", " ", literal=True, n=1)
    out = s.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
    attempts = (
        lambda x: x.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        lambda x: x.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"),
        lambda x: x.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        lambda x: x.str.slice(0, 19).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"),
    )
    for attempt in attempts:
        todo = out.is_null() & s.is_not_null() & (s.str.len_chars() > 0)
        if not todo.any():
            break
        idx = todo.arg_true()
        out = out.scatter(idx, attempt(s.gather(idx)))
    return out.alias(name)


def _path_expr(base: str) -> pl.Expr:
    s = pl.col("path").cast(pl.String).str.strip_chars()
    s = pl.when(s.str.len_chars() > 0).then(s).otherwise(None)
    is_abs = s.str.contains(r"^(/|\\\\|[A-Za-z]:[\\/]|[A-Za-z][A-Za-z0-9+.-]*://)")
    rel = s.str.replace(r"^(\./)+", "")
    return pl.when(is_abs).then(s).otherwise(pl.lit(base.rstrip("/") + "/") + rel).alias("path")


def normalise_index(
    df: pl.DataFrame,
    kind: str,
    *,
    source: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
    column_map: ColumnMap | Mapping[str, Any] | str | os.PathLike | None = None,
    rules: ValueRules | None = None,
) -> pl.DataFrame:
    """Rename, validate and normalise an already-read index table (see the module docstring).

    Args:
        df: the raw table (Polars or pandas).
        kind: ``"ecg"``, ``"cxr"`` or ``"echo"``.
        source: name used in error messages (the file, usually).
        base_dir: folder that relative ``path`` values are relative to (default: the current folder).
        column_map: ours -> theirs names.
        rules: decimal-comma columns and plausibility ranges (default: no decimal comma, the
            default ranges of :mod:`cardiofusion.cohort.values`).

    Raises:
        ReadError: a required column is missing, or most non-empty values of a date or number column
            are invalid (the message names the table or file and the column).
    """
    if kind not in TABLE_KINDS:
        raise ConfigError(f"unknown index table kind '{kind}' (expected one of {', '.join(TABLE_KINDS)})")
    cmap = ColumnMap.load(column_map)
    if not isinstance(df, pl.DataFrame):
        try:
            df = pl.from_pandas(df)
        except Exception as e:
            raise ReadError(source or f"<{kind} index>", f"not a table: {e}") from None
    rules = rules or ValueRules()
    where = str(source) if source is not None else f"<{TABLE_NAMES[kind]}>"
    internal = [c for c in INTERNAL_COLUMNS if c in df.columns]
    previous: pl.DataFrame | None = None
    if internal:  # an already normalised table: normalise again from its visible columns, keep its flags
        previous = df.select([c for c in internal if c != "_row"])
        df = df.drop(internal)
    mapping = cmap.for_table(kind)
    rename: dict[str, str] = {}
    for ours, theirs in mapping.items():
        if theirs in df.columns:
            rename[theirs] = ours
    # a mapped-away column of ours that also exists under our name would collide: drop the latter
    clashing = [ours for theirs, ours in rename.items() if ours in df.columns and ours not in rename]
    if clashing:
        df = df.drop(clashing)
    df = df.rename(rename)
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        hint = []
        for c in missing:
            if c in mapping:
                hint.append(f"{c} (mapped to '{mapping[c]}', not in the table)")
            else:
                hint.append(c)
        raise ReadError(
            where,
            f"{TABLE_NAMES[kind]} is missing required column(s): {', '.join(hint)}; "
            f"found: {', '.join(df.columns) if df.columns else 'no columns'}",
        )
    base = str(Path(base_dir if base_dir is not None else os.getcwd()).resolve())
    fmt = cmap.datetime_format_for(kind)
    schema = df.schema
    exprs: list[pl.Expr] = [pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")]
    checked: list[str] = []  # columns with a _bad_<name> / _raw_<name> pair, exam_datetime first
    for name in df.columns:
        dtype = schema[name]
        if name in _ID_COLUMNS:
            exprs.append(_id_expr(name, dtype))
        elif name in _DATETIME_COLUMNS:
            parsed = _parse_datetimes(df[name], fmt)
            exprs.append(pl.lit(parsed).alias(name))
            raw = pl.col(name).cast(pl.String).str.strip_chars()
            present = raw.is_not_null() & (raw.str.len_chars() > 0)
            bad = present & pl.lit(parsed).is_null()
            if name == "exam_datetime":
                exprs.append(bad.alias("_exam_datetime_unparseable"))
            exprs.append(pl.when(bad).then(pl.lit(f"unparseable {name}")).otherwise(None).alias(f"_bad_{name}"))
            exprs.append(raw.alias(f"_raw_{name}"))
            if name == "exam_datetime":
                checked.insert(0, name)
            else:
                checked.append(name)
        elif name == "path":
            exprs.append(_path_expr(base))
        elif name == "sex":
            s = pl.col(name).cast(pl.String).str.strip_chars().str.to_uppercase()
            exprs.append(s.replace_strict(_SEX_MAP, default=None, return_dtype=pl.String).alias(name))
        elif name in _FLAG_COLUMNS:
            s = pl.col(name).cast(pl.String).str.strip_chars().str.to_uppercase()
            exprs.append(s.replace_strict(_FLAG_MAP, default=None, return_dtype=pl.Int8).alias(name))
        elif name in rules.numeric_columns:
            exprs.extend(number_exprs(name, dtype, rules))
            checked.append(name)
        elif name == "units":
            s = pl.col(name).cast(pl.String).str.strip_chars()
            exprs.append(pl.when(s.str.len_chars() > 0).then(s).otherwise(None).alias(name))
        else:
            exprs.append(pl.col(name))
    out = df.select(exprs)
    _check_majority(out, checked, where, mapping, fmt, rules)
    return _record_invalid(out, checked, previous)


def _check_majority(
    df: pl.DataFrame, checked: list[str], where: str, mapping: dict[str, str], fmt: str | None, rules: ValueRules
) -> None:
    """A column where most non-empty values are invalid is a layout mistake: raise, naming it."""
    for name in checked:
        bad = df[f"_bad_{name}"]
        n_bad = bad.len() - bad.null_count()
        if n_bad == 0:
            continue
        if name in _DATETIME_COLUMNS:
            n = int(df[f"_raw_{name}"].str.len_chars().fill_null(0).gt(0).sum())
        else:
            n = n_bad + df[name].len() - df[name].null_count()
        if n_bad <= MAJORITY * n:
            continue
        first = int(bad.is_not_null().arg_true()[0])
        example, reason = df[f"_raw_{name}"][first], bad[first]
        label = f"column '{name}'" + (f" (export column '{mapping[name]}')" if name in mapping else "")
        if name in _DATETIME_COLUMNS:
            hint = (f"they do not match datetime_format {fmt!r}" if fmt else
                    "they are not ISO 8601 dates (YYYY-MM-DD[ HH:MM[:SS]]); give the export's layout as "
                    "datetime_format in the column map, e.g. '%d/%m/%Y %H:%M'")
        elif reason.startswith("implausible"):
            hint = f"the column must hold {NUMERIC_UNITS.get(name, 'numbers')}; check its unit or plausible_ranges in the cohort config"
        elif "," in str(example) and name not in rules.decimal_comma:
            hint = f"for a decimal comma, list '{name}' under decimal_comma in the cohort config"
        else:
            hint = ""
        raise ReadError(
            where,
            f"{label}: {n_bad} of {n} non-empty values are invalid (first: {example!r} in row {first}: {reason})"
            + (f"; {hint}" if hint else ""),
        )


def _record_invalid(df: pl.DataFrame, checked: list[str], previous: pl.DataFrame | None) -> pl.DataFrame:
    """Replace the per-column ``_bad_*`` / ``_raw_*`` helpers by the row's first invalid cell."""
    bad = [pl.col(f"_bad_{n}") for n in checked]
    column = pl.coalesce([pl.when(pl.col(f"_bad_{n}").is_not_null()).then(pl.lit(n)) for n in checked] + [pl.lit(None, pl.String)])
    raw = pl.coalesce([pl.when(pl.col(f"_bad_{n}").is_not_null()).then(pl.col(f"_raw_{n}")) for n in checked]
                      + [pl.lit(None, pl.String)])
    reason = pl.coalesce(bad + [pl.lit(None, pl.String)])
    out = df.with_columns(column.alias("_invalid_column"), raw.alias("_invalid_raw"), reason.alias("_invalid_reason"))
    out = out.drop([c for n in checked for c in (f"_bad_{n}", f"_raw_{n}")])
    if "_exam_datetime_unparseable" not in out.columns:
        out = out.with_columns(pl.lit(False).alias("_exam_datetime_unparseable"))
    if previous is not None and previous.height == out.height:  # flags of an earlier normalisation win
        keep = []
        if "_exam_datetime_unparseable" in previous.columns:
            keep.append((pl.col("_exam_datetime_unparseable") | previous["_exam_datetime_unparseable"].fill_null(False))
                        .alias("_exam_datetime_unparseable"))
        if "_invalid_reason" in previous.columns:
            had = previous["_invalid_reason"].is_not_null()
            for c in ("_invalid_column", "_invalid_raw", "_invalid_reason"):
                if c in previous.columns:
                    keep.append(pl.when(pl.lit(had)).then(pl.lit(previous[c].cast(pl.String))).otherwise(pl.col(c)).alias(c))
        out = out.with_columns(keep)
    return out


def load_index(
    path: str | os.PathLike,
    kind: str,
    column_map: ColumnMap | Mapping[str, Any] | str | os.PathLike | None = None,
    rules: ValueRules | None = None,
) -> pl.DataFrame:
    """Read one index table (CSV, TSV or Parquet) and normalise it (see the module docstring).

    Relative ``path`` values are resolved against the folder that holds the table.

    Raises:
        ReadError: unreadable file, missing required columns, or a date / number column whose
            non-empty values are mostly invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ReadError(p, f"{TABLE_NAMES.get(kind, kind)} not found" if not p.exists() else "not a file")
    raw = _read_raw(p)
    return normalise_index(raw, kind, source=p, base_dir=p.resolve().parent, column_map=column_map, rules=rules)


__all__ = [
    "DEFAULT_FILENAMES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "TABLE_KINDS",
    "TABLE_NAMES",
    "ColumnMap",
    "load_index",
    "normalise_index",
]
