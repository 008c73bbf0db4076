"""What every adapter returns and writes: index tables, a label table, exclusions, provenance."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ConfigError, ReadError

#: Columns of every adapter's exclusion table.
EXCLUSION_COLUMNS: tuple[str, ...] = ("table", "exam_id", "patient_id", "path", "reason")
#: Index-table columns in ``docs/data_layout.md`` order (required first).
ECG_INDEX_COLUMNS: tuple[str, ...] = (
    "patient_id", "exam_id", "exam_datetime", "path",
    "age", "sex", "pacemaker", "atrial_fibrillation", "fs", "units", "resolution_uv",
)
CXR_INDEX_COLUMNS: tuple[str, ...] = ("patient_id", "exam_id", "exam_datetime", "path", "age", "sex", "view_position")
#: File names written by :meth:`AdapterResult.write`.
OUTPUT_FILES: dict[str, str] = {
    "ecg_index": "ecg_index.csv",
    "cxr_index": "cxr_index.csv",
    "labels": "labels.csv",
    "exclusions": "exclusions.csv",
    "info": "adapter.json",
}
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class AdapterResult:
    """A public data set turned into the library's tables.

    Attributes:
        dataset: adapter name (``ptbxl``, ``cinc``, ``nih``, ``mimic``).
        ecg_index: ECG index table (``docs/data_layout.md`` columns, paths absolute) or ``None``.
        cxr_index: X-ray index table or ``None``.
        labels: one row per indexed record: ``modality``, ``exam_id``, ``patient_id``, the data set's
            label columns (0/1, null = unknown) and, where the data set defines one, ``split``.
        exclusions: every source record left out, with ``table``, ``exam_id``, ``patient_id``,
            ``path`` and ``reason``.
        info: provenance and definitions (source folder, rates, units, label rules, counts).
        extra: further tables written as ``<name>.csv`` (e.g. MIMIC's ECG-X-ray ``pairs``).
    """

    dataset: str
    ecg_index: pd.DataFrame | None
    cxr_index: pd.DataFrame | None
    labels: pd.DataFrame
    exclusions: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        """Records indexed and excluded, per table, and positives per 0/1 label column."""
        out: dict[str, Any] = {
            "ecg": 0 if self.ecg_index is None else len(self.ecg_index),
            "cxr": 0 if self.cxr_index is None else len(self.cxr_index),
            "excluded": len(self.exclusions),
            **{name: len(t) for name, t in self.extra.items()},
        }
        for c in self.info.get("label_columns", []):
            if c in self.labels.columns:
                rows = self.labels
                if "modality" in rows.columns and rows["modality"].nunique() > 1:  # MIMIC: ECG and X-ray labels
                    owners = rows.loc[rows[c].notna(), "modality"].unique()
                    rows = rows[rows["modality"].isin(owners)]
                v = pd.to_numeric(rows[c], errors="coerce")
                out[f"{c}_positive"] = int((v == 1).sum())
                out[f"{c}_negative"] = int((v == 0).sum())
                out[f"{c}_unknown"] = int(v.isna().sum())
        if "split" in self.labels.columns:
            out["split"] = {str(k): int(v) for k, v in self.labels["split"].value_counts(dropna=False).items()}
        return out

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``ecg_index.csv`` / ``cxr_index.csv`` (those that apply), ``labels.csv``,
        ``exclusions.csv`` and ``adapter.json`` into ``out_dir``; returns name -> path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        for key, table in (("ecg_index", self.ecg_index), ("cxr_index", self.cxr_index),
                           ("labels", self.labels), ("exclusions", self.exclusions)):
            if table is None:
                stale = out / OUTPUT_FILES[key]
                if stale.exists():  # an older run of another adapter must not leave a table behind
                    stale.unlink()
                continue
            files[key] = out / OUTPUT_FILES[key]
            table.to_csv(files[key], index=False)
        for name, table in self.extra.items():
            files[name] = out / f"{name}.csv"
            table.to_csv(files[name], index=False)
        info = dict(self.info)
        info.update({"dataset": self.dataset, "counts": self.counts(), "cardiofusion_version": __version__})
        files["info"] = out / OUTPUT_FILES["info"]
        files["info"].write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        return files


def exclusions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Exclusion rows -> a frame with exactly :data:`EXCLUSION_COLUMNS` (string-typed)."""
    df = pd.DataFrame(rows, columns=list(EXCLUSION_COLUMNS))
    return df.astype({c: "string" for c in EXCLUSION_COLUMNS})


def exclusion(table: str, exam_id: Any, patient_id: Any, path: Any, reason: str) -> dict[str, Any]:
    return {"table": table, "exam_id": _str_or_none(exam_id), "patient_id": _str_or_none(patient_id),
            "path": _str_or_none(path), "reason": reason}


def _str_or_none(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return str(v)


def read_csv_table(path: str | os.PathLike, required: tuple[str, ...], *, what: str, **kwargs: Any) -> pd.DataFrame:
    """Read a data set's CSV; :class:`ReadError` naming the file when it is missing, unreadable or lacks columns."""
    p = Path(path)
    if not p.is_file():
        raise ReadError(p, f"no such file (expected the {what})")
    try:
        df = pd.read_csv(p, **kwargs)
    except Exception as e:  # pandas raises many types
        raise ReadError(p, f"not a readable CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReadError(p, f"the {what} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns[:20]))})")
    return df


def id_string(v: Any) -> str | None:
    """A numeric or text id as a clean string (``15709.0`` -> ``"15709"``); missing -> ``None``."""
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return None
        if float(v).is_integer():
            return str(int(v))
    s = str(v).strip()
    return s or None


def parse_fold_map(spec: str | Mapping[Any, Any] | None, default: Mapping[int, str]) -> dict[int, str]:
    """A fold -> split mapping from a dict or a spec string like ``"train=1-8,val=9,test=10"``.

    Raises:
        ConfigError: unknown split name, bad range, or a fold given twice.
    """
    if spec is None:
        return dict(default)
    out: dict[int, str] = {}
    if isinstance(spec, Mapping):
        items = []
        for k, v in spec.items():
            if str(k) in SPLITS:  # {"train": [1, 2], ...}
                folds = v if isinstance(v, (list, tuple, range)) else [v]
                items += [(int(f), str(k)) for f in folds]
            else:  # {1: "train", ...}
                items.append((int(k), str(v)))
    elif isinstance(spec, str):
        items = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ConfigError(f"fold map {spec!r}: expected SPLIT=FOLDS parts like 'train=1-8', got {part!r}")
            name, folds = (s.strip() for s in part.split("=", 1))
            for piece in folds.replace(" ", "").split("+"):
                m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
                if not m:
                    raise ConfigError(f"fold map {spec!r}: {piece!r} is not a fold or a range like 1-8")
                lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
                if hi < lo:
                    raise ConfigError(f"fold map {spec!r}: empty range {piece!r}")
                items += [(f, name) for f in range(lo, hi + 1)]
    else:
        raise ConfigError(f"fold map must be a string or a mapping, got {type(spec).__name__}")
    for fold, name in items:
        if name not in SPLITS:
            raise ConfigError(f"fold map: unknown split {name!r} (expected {', '.join(SPLITS)})")
        if fold in out and out[fold] != name:
            raise ConfigError(f"fold map: fold {fold} assigned to both {out[fold]} and {name}")
        out[fold] = name
    return out


def check_root(root: str | os.PathLike, what: str) -> Path:
    p = Path(root)
    if not p.is_dir():
        raise ReadError(p, f"no such folder (expected the {what})")
    return p.resolve()
