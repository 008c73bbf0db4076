"""Screen many patients from a table: ``cardiofusion predict BUNDLE --batch TABLE --out FILE``.

The table (CSV, or Parquet) has one row per patient: ``patient_id`` (optional; default the row
number), ``ecg`` and/or ``cxr`` file paths (``ecg_path`` / ``cxr_path`` accepted too; relative paths are
relative to the table's folder), and optionally ``ecg_fs``, ``ecg_units``, ``ecg_resolution_uv`` for
headerless ECG files.  A row whose files cannot be read is reported (``status = failed`` and the
reason) and every other row is still predicted.  The output is CSV, or JSON Lines when ``FILE`` ends in
``.jsonl`` / ``.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import CardiofusionError, ConfigError, ReadError
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
    if not path.is_file():
        raise ReadError(path, "no such table")
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


def _float_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def predict_batch(screener: Screener, table: str | os.PathLike | pd.DataFrame, out: str | os.PathLike, *,
                  chunk: int = 8, progress: bool = True, explain: str | os.PathLike | None = None,
                  on_row: Callable[[int, dict[str, Any]], None] | None = None, cxr_layer: Any = None) -> BatchReport:
    """Predict every row of a patient table and write one output row per input row.

    Args:
        screener: a loaded bundle (:func:`cardiofusion.load`).
        table: CSV / Parquet path or DataFrame (see the module docstring).
        out: output file (``.csv``, or ``.jsonl`` / ``.json`` for JSON Lines).
        chunk: patients per model call.
        progress: show a progress bar.
        explain: also write each patient's heat maps into this folder (``<patient_id>_cxr.png`` ...).
        on_row: called with ``(row_number, output_row)`` as rows finish (for callers that stream).
        cxr_layer: X-ray Grad-CAM layer(s) of the explanations (see :meth:`Screener.explain`).
    """
    from tqdm.auto import tqdm

    df, base = read_table(table)
    out = Path(out)
    rows: list[dict[str, Any] | None] = [None] * len(df)
    pending: list[tuple[int, PreparedPatient]] = []

    def fail(i: int, pid: str, error: str) -> None:
        rows[i] = {"patient_id": pid, "status": "failed", "error": error}

    def flush() -> None:
        if not pending:
            return
        try:
            results = screener.predict_prepared([p for _, p in pending])
        except CardiofusionError as e:  # a whole chunk failing is unexpected: report it per row
            for i, p in pending:
                fail(i, p.patient_id or str(i), str(e))
        else:
            for (i, p), r in zip(pending, results):
                d = r.to_dict()
                if explain is not None:
                    try:
                        d["explanations"] = screener.explain(p, explain, r, cxr_layer=cxr_layer)
                    except CardiofusionError as e:
                        d["warnings"] = [*d["warnings"], f"no explanation: {e}"]
                rows[i] = {"patient_id": d.get("patient_id"), "status": "ok", "probability": d["probability"],
                           "decision": d["decision"], "threshold": d["threshold"],
                           "modalities": "+".join(d["modalities"]), "score": d["scores"]["fused"],
                           "score_ecg": d["scores"]["ecg"], "score_cxr": d["scores"]["cxr"],
                           "warnings": "; ".join(d["warnings"]), "error": "",
                           **({"explanations": d["explanations"]} if "explanations" in d else {})}
        for i, _ in pending:
            if on_row is not None:
                on_row(i, rows[i])
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
                if on_row is not None:
                    on_row(int(i), rows[int(i)])
            else:
                pending.append((int(i), patient))
                if len(pending) >= chunk:
                    flush()
            bar.update(1)
        flush()
    finally:
        bar.close()

    columns = list(OUTPUT_COLUMNS)
    if explain is not None:
        columns += ["heat_map_cxr", "heat_map_ecg"]
        for r in rows:
            maps = r.get("explanations") or {}
            r_maps = {"heat_map_cxr": maps.get("cxr", ""), "heat_map_ecg": maps.get("ecg", "")}
            r.update(r_maps)
    table_out = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".jsonl", ".json"):
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False, default=str) + "\n" for r in rows)
    else:
        table_out.to_csv(out, index=False)
    failed = table_out[table_out["status"] == "failed"]
    failures = pd.DataFrame({"row": (failed.index + 1).astype(int), "patient_id": failed["patient_id"],
                             "error": failed["error"]}).reset_index(drop=True)
    return BatchReport(out=out, n_rows=len(df), n_ok=int((table_out["status"] == "ok").sum()), failures=failures)


__all__ = ["OUTPUT_COLUMNS", "BatchReport", "predict_batch", "read_table"]
