"""Screen many patients from a table: ``cardiofusion predict BUNDLE --batch TABLE --out FILE``.

The table (CSV, or Parquet) has one row per patient: ``patient_id`` (optional; default the row
number), ``ecg`` and/or ``cxr`` file paths (``ecg_path`` / ``cxr_path`` accepted too; relative paths are
relative to the table's folder), and optionally ``ecg_fs``, ``ecg_units``, ``ecg_resolution_uv`` for
headerless ECG files.  A row whose files cannot be read is reported (``status = failed`` and the
reason) and every other row is still predicted.

The output is CSV (``.csv``), JSON Lines (``.jsonl`` / ``.json``) or an Excel workbook (``.xlsx``, needs
``openpyxl``: ``pip install cardiofusion[xlsx]``); any other extension is refused.  CSV and JSON Lines rows
are written, in table order, as soon as they and every row before them are done (appended and flushed),
so an interrupted batch keeps what it predicted; a workbook is written once at the end (or on interruption).
An output that is one of the inputs (the table, the bundle, a file the table names) is refused.
In CSV and workbook output a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return gets a leading ``'`` (OWASP's CSV-injection advice), so that a spreadsheet shows it as text and
never runs it as a formula; the numeric columns (probability, threshold, scores) are written as numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import CardiofusionError, ConfigError, ReadError
from ..io._files import check_input_file
from .screener import PreparedPatient, Screener

OUTPUT_COLUMNS = ("patient_id", "status", "probability", "decision", "threshold", "modalities", "score",
                  "score_ecg", "score_cxr", "warnings", "error")
_ALIASES = {"ecg": ("ecg", "ecg_path", "ecg_file"), "cxr": ("cxr", "cxr_path", "cxr_file", "xray"),
            "patient_id": ("patient_id", "patient", "id"), "ecg_fs": ("ecg_fs", "fs"),
            "ecg_units": ("ecg_units", "units"), "ecg_resolution_uv": ("ecg_resolution_uv", "resolution_uv")}


@dataclass
class BatchReport:
    """What :func:`predict_batch` did: the output file, counts and the failed rows."""

    out: Path
    n_rows: int
    n_ok: int
    failures: pd.DataFrame  # row, patient_id, error


def _cell(row: pd.Series, key: str) -> Any:
    for name in _ALIASES[key]:
        if name in row.index:
            v = row[name]
            if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
                return None
            return v.strip() if isinstance(v, str) else v
    return None


def read_table(table: str | os.PathLike | pd.DataFrame) -> tuple[pd.DataFrame, Path | None]:
    """The patient table as strings, and its folder (for relative paths)."""
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True), None
    path = Path(table)
    check_input_file(path, what="table")
    try:
        df = (pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq")
              else pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], sep=None, engine="python"))
    except Exception as e:  # noqa: BLE001 - pandas raises many types
        raise ReadError(path, f"not a readable table ({type(e).__name__}: {e})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if not any(a in df.columns for key in ("ecg", "cxr") for a in _ALIASES[key]):
        raise ReadError(path, "the table needs an 'ecg' and/or a 'cxr' column of file paths "
                              "(and optionally patient_id, ecg_fs, ecg_units, ecg_resolution_uv)")
    return df.reset_index(drop=True), path.parent


def _resolve(value: Any, base: Path | None) -> str | None:
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


#: Output extensions -> format.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".xlsx": "xlsx"}
#: Columns written as numbers (never escaped); every other column is text.
NUMERIC_COLUMNS = ("probability", "threshold", "score", "score_ecg", "score_cxr")
#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'``; anything else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def output_format(out: str | os.PathLike) -> str:
    """``csv``, ``jsonl`` or ``xlsx`` for an output path, else :class:`ConfigError`."""
    ext = Path(out).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise ConfigError(f"{out}: unknown output extension {ext or '(none)'!r}; use .csv, .jsonl (or .json) or .xlsx")
    if OUTPUT_FORMATS[ext] == "xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ConfigError(f"{out}: .xlsx output needs openpyxl (pip install 'cardiofusion[xlsx]'); "
                              f"or write .csv") from None
    return OUTPUT_FORMATS[ext]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError, ValueError):
        return False


def check_output(out: str | os.PathLike, inputs: list[str | os.PathLike | None],
                 bundle: str | os.PathLike | None = None) -> str:
    """Refuse a batch output that would destroy an input; return its format (:func:`output_format`).

    Refused: an unknown extension, a directory or other non-regular file, the bundle folder or a file in it,
    and any of ``inputs`` (the table, each row's files) -- compared after resolving symlinks and with
    :func:`os.path.samefile` (hard links).
    """
    out = Path(out)
    fmt = output_format(out)
    if out.is_dir():
        raise ConfigError(f"{out}: --out is a directory; give an output file (.csv, .jsonl or .xlsx)")
    if out.exists() and not out.is_file():
        raise ConfigError(f"{out}: --out is not a regular file; give an output file (.csv, .jsonl or .xlsx)")
    if bundle is not None:
        root = Path(bundle)
        try:
            inside = root.resolve() == out.resolve() or root.resolve() in out.resolve().parents
        except (OSError, RuntimeError, ValueError):
            inside = False
        if inside:
            raise ConfigError(f"{out}: --out lies inside the model bundle {root}; write the output elsewhere")
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise ConfigError(f"{out}: --out is an input of the batch ({source}); refusing to overwrite it, "
                              f"choose another output file")
    return fmt


class _RowWriter:
    """Writes output rows in table order as soon as they and all rows before them are done."""

    def __init__(self, out: Path, fmt: str, columns: list[str], n_rows: int):
        self.out, self.fmt, self.columns = out, fmt, columns
        self.rows: list[dict[str, Any] | None] = [None] * n_rows
        self.next = 0
        self.file = None
        self.csv = None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if fmt in ("csv", "jsonl"):
                self.file = open(out, "w", encoding="utf-8", newline="")
                if fmt == "csv":
                    self.csv = csv.writer(self.file)
                    self.csv.writerow(columns)
                    self.file.flush()
        except OSError as e:
            raise ReadError(out, f"cannot write the output ({e.strerror or e})") from None

    def cells(self, row: dict[str, Any]) -> list[Any]:
        values = []
        for c in self.columns:
            v = row.get(c, "")
            values.append(("" if v is None else v) if c in NUMERIC_COLUMNS else escape_formula("" if v is None else v))
        return values

    def done(self, i: int, row: dict[str, Any]) -> None:
        self.rows[i] = row
        try:
            while self.next < len(self.rows) and self.rows[self.next] is not None:
                r = self.rows[self.next]
                if self.fmt == "csv":
                    self.csv.writerow(self.cells(r))
                elif self.fmt == "jsonl":
                    self.file.write(json.dumps(r, allow_nan=False, default=str) + "\n")
                self.next += 1
            if self.file is not None:
                self.file.flush()
        except OSError as e:
            raise ReadError(self.out, f"cannot write the output ({e.strerror or e})") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            return
        done = [r for r in self.rows if r is not None]
        frame = pd.DataFrame([self.cells(r) for r in done], columns=self.columns)
        for c in NUMERIC_COLUMNS:
            frame[c] = pd.to_numeric(frame[c].replace("", None), errors="coerce")
        try:
            with pd.ExcelWriter(self.out, engine="openpyxl") as xl:
                frame.to_excel(xl, index=False, sheet_name="predictions")
        except OSError as e:
            raise ReadError(self.out, f"cannot write the output ({e.strerror or e})") from None


def _float_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def result_row(d: dict[str, Any]) -> dict[str, Any]:
    """The output row (:data:`OUTPUT_COLUMNS`) of one prediction's ``to_dict()``."""
    return {"patient_id": d.get("patient_id"), "status": "ok", "probability": d["probability"],
            "decision": d["decision"], "threshold": d["threshold"], "modalities": "+".join(d["modalities"]),
            "score": d["scores"]["fused"], "score_ecg": d["scores"]["ecg"], "score_cxr": d["scores"]["cxr"],
            "warnings": "; ".join(d["warnings"]), "error": ""}


def predict_batch(screener: Screener, table: str | os.PathLike | pd.DataFrame, out: str | os.PathLike, *,
                  chunk: int = 8, progress: bool = True, explain: str | os.PathLike | None = None,
                  on_row: Callable[[int, dict[str, Any]], None] | None = None, cxr_layer: Any = None) -> BatchReport:
    """Predict every row of a patient table and write one output row per input row.

    Args:
        screener: a loaded bundle (:func:`cardiofusion.load`).
        table: CSV / Parquet path or DataFrame (see the module docstring).
        out: output file (``.csv``, ``.jsonl`` / ``.json`` for JSON Lines, or ``.xlsx``); never one of the
            inputs (see :func:`check_output`).  CSV / JSON Lines rows are appended as they finish.
        chunk: patients per model call.
        progress: show a progress bar.
        explain: also write each patient's heat maps into this folder (``<patient_id>_cxr.png`` ...).
        on_row: called with ``(row_number, output_row)`` as rows finish (for callers that stream).
        cxr_layer: X-ray Grad-CAM layer(s) of the explanations (see :meth:`Screener.explain`).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    output_format(out)  # an unknown extension is refused before the table is read
    df, base = read_table(table)
    files = [_resolve(_cell(row, key), base) for _, row in df.iterrows() for key in ("ecg", "cxr")]
    fmt = check_output(out, [None if isinstance(table, pd.DataFrame) else table, *files],
                       bundle=getattr(screener, "path", None))
    rows: list[dict[str, Any] | None] = [None] * len(df)
    pending: list[tuple[int, PreparedPatient]] = []
    columns = list(OUTPUT_COLUMNS) + (["heat_map_cxr", "heat_map_ecg"] if explain is not None else [])
    writer = _RowWriter(out, fmt, columns, len(df))

    def finished(i: int) -> None:
        r = rows[i]
        if explain is not None:
            maps = r.get("explanations") or {}
            r.update({"heat_map_cxr": maps.get("cxr", ""), "heat_map_ecg": maps.get("ecg", "")})
        writer.done(i, r)
        if on_row is not None:
            on_row(i, r)

    def fail(i: int, pid: str, error: str) -> None:
        rows[i] = {"patient_id": pid, "status": "failed", "error": error}

    def flush() -> None:
        if not pending:
            return
        try:
            results = screener.predict_prepared_each([p for _, p in pending])
        except CardiofusionError as e:  # a whole chunk failing is unexpected: report it per row
            for i, p in pending:
                fail(i, p.patient_id or str(i), str(e))
        else:
            for (i, p), r in zip(pending, results):
                if isinstance(r, CardiofusionError):  # a non-finite score: this row fails, the others go on
                    fail(i, p.patient_id or str(i), str(r))
                    continue
                d = r.to_dict()
                if explain is not None:
                    try:
                        d["explanations"] = screener.explain(p, explain, r, cxr_layer=cxr_layer)
                    except CardiofusionError as e:
                        d["warnings"] = [*d["warnings"], f"no explanation: {e}"]
                rows[i] = {**result_row(d), **({"explanations": d["explanations"]} if "explanations" in d else {})}
        for i, _ in pending:
            finished(i)
        pending.clear()

    bar = tqdm(total=len(df), desc="predict", unit="patient", disable=not progress, leave=False)
    try:
        for i, row in df.iterrows():
            pid = _cell(row, "patient_id")
            pid = str(pid) if pid is not None else str(i + 1)
            try:
                ecg, cxr = _resolve(_cell(row, "ecg"), base), _resolve(_cell(row, "cxr"), base)
                patient = screener.prepare(ecg, cxr, patient_id=pid,
                                           ecg_fs=_float_or_none(_cell(row, "ecg_fs"), "ecg_fs"),
                                           ecg_units=_cell(row, "ecg_units"),
                                           ecg_resolution_uv=_float_or_none(_cell(row, "ecg_resolution_uv"),
                                                                            "ecg_resolution_uv"))
            except CardiofusionError as e:
                fail(int(i), pid, str(e))
                finished(int(i))
            else:
                pending.append((int(i), patient))
                if len(pending) >= chunk:
                    flush()
            bar.update(1)
        flush()
    finally:
        bar.close()
        writer.close()

    table_out = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=columns)
    failed = table_out[table_out["status"] == "failed"]
    failures = pd.DataFrame({"row": (failed.index + 1).astype(int), "patient_id": failed["patient_id"],
                             "error": failed["error"]}).reset_index(drop=True)
    return BatchReport(out=out, n_rows=len(df), n_ok=int((table_out["status"] == "ok").sum()), failures=failures)


__all__ = ["OUTPUT_COLUMNS", "OUTPUT_FORMATS", "BatchReport", "check_output", "escape_formula", "output_format",
           "predict_batch", "read_table", "result_row"]
