"""Manifest -> the unique exam tables of each modality (the rows of the cache arrays)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ReadError
from ..transforms.decode import clean_option

if TYPE_CHECKING:
    import polars as pl

_READER_OPTION_COLUMNS = ("fs", "units", "resolution_uv")


def load_manifest(manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> tuple[pd.DataFrame, Path | None]:
    """Read a manifest (Parquet or CSV path, or a pandas/Polars DataFrame) as pandas, with its path (or None)."""
    if isinstance(manifest, pd.DataFrame):
        return manifest, None
    if hasattr(manifest, "to_pandas") and not isinstance(manifest, (str, os.PathLike)):  # Polars
        return manifest.to_pandas(), None
    path = Path(manifest)
    if not path.is_file():
        raise ReadError(path, "no such manifest file")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype={"ecg_exam_id": str, "cxr_exam_id": str, "record_id": str, "patient_id": str})
        else:
            df = pd.read_parquet(path)
    except Exception as e:  # pyarrow / pandas raise many types
        raise ReadError(path, f"not a readable manifest ({type(e).__name__}: {e})") from None
    return df, path


def _exam_table(manifest: pd.DataFrame, modality: str, base: Path | None, source: str) -> pd.DataFrame:
    """Unique exams of one modality, sorted by exam id (row order of the cache arrays)."""
    id_col, path_col = f"{modality}_exam_id", f"{modality}_path"
    missing = [c for c in (id_col, path_col) if c not in manifest.columns]
    if missing:
        raise ReadError(source, f"manifest lacks column(s) {', '.join(missing)}")
    cols = [id_col, path_col]
    if modality == "ecg":
        cols += [c for c in _READER_OPTION_COLUMNS if c in manifest.columns]
    df = manifest[cols].copy()
    df = df[df[id_col].notna()]
    df[id_col] = df[id_col].astype(str)

    def _resolve(p: Any) -> str | None:
        if p is None or (isinstance(p, float) and np.isnan(p)):
            return None
        p = Path(str(p))
        if not p.is_absolute() and base is not None:
            p = base / p
        return str(p)

    df[path_col] = [_resolve(p) for p in df[path_col]]
    df = df.drop_duplicates()
    dup = df[id_col].duplicated(keep=False)
    if dup.any():
        exam = df.loc[dup, id_col].iloc[0]
        raise ReadError(source, f"{id_col} {exam!r} appears with different paths or reader options")
    out = pd.DataFrame({"exam_id": df[id_col].to_numpy(dtype=object), "path": df[path_col].to_numpy(dtype=object)})
    if modality == "ecg":
        for c in _READER_OPTION_COLUMNS:
            out[c] = [clean_option(v) for v in df[c]] if c in df.columns else None
    return out.sort_values("exam_id", kind="stable").reset_index(drop=True)


def _source_hash(ecg_exams: pd.DataFrame, cxr_exams: pd.DataFrame) -> str:
    """Hash of what the cache content depends on: exam ids, resolved paths and reader options.

    Re-splitting or re-labelling the cohort does not change it; adding, removing or moving an exam does.
    """
    h = hashlib.sha256()
    for name, table in (("ecg", ecg_exams), ("cxr", cxr_exams)):
        h.update(name.encode())
        h.update(json.dumps(table.astype(object).where(table.notna(), None).values.tolist(), default=str).encode())
    return h.hexdigest()
