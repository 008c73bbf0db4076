"""MIMIC-IV-ECG + MIMIC-CXR-JPG (PhysioNet, credentialed access) -> ECG and X-ray indexes, labels, pairs.

Both modules share MIMIC-IV's ``subject_id``, so ECGs and X-rays of the same person can be linked
(the real data needs a PhysioNet credentialed account; the adapter is tested on a tiny fake tree that
follows the real layout).

**MIMIC-IV-ECG** (v1.0) root::

    record_list.csv            subject_id, study_id, file_name, ecg_time, path
    machine_measurements.csv   subject_id, study_id, cart_id, ecg_time, report_0 .. report_17,
                               bandwidth, filtering, rr_interval, p_onset, ..., qrs_axis, t_axis  (optional)
    files/p1000/p10000032/s40689238/40689238.{hea,dat}    WFDB, 500 Hz, 10 s, 12 leads

``path`` in ``record_list.csv`` is the record path without extension, relative to the root.
ECG labels are the machine's (not a cardiologist's) statements in ``report_0..report_17``,
matched case-insensitively: ``lvh`` ("left ventricular hypertrophy" or "LVH"), ``normal_ecg``
("normal ecg"), ``atrial_fibrillation`` ("atrial fibrillation"/"atrial flutter"), ``paced``
("pacemaker"/"paced").  Without ``machine_measurements.csv`` they are empty (unknown).

**MIMIC-CXR-JPG** (v2.0.0 / 2.1.0) root (each CSV may also be ``.csv.gz``)::

    mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
                                   ViewPosition, Rows, Columns, StudyDate, StudyTime, ...
    mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, Atelectasis, Cardiomegaly, ..., No Finding, ...
    mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train/validate/test)
    files/p10/p10000032/s50414267/<dicom_id>.jpg

``StudyDate`` is ``YYYYMMDD`` and ``StudyTime`` ``HHMMSS.fff`` (a number: leading zeros lost).
CheXpert labels per study are 1 (positive), 0 (negative), -1 (uncertain) or empty (not mentioned);
``cardiomegaly`` follows ``uncertain`` (``exclude`` -> empty label, ``positive``, ``negative``) and
``not_mentioned`` (``no_finding``: negative only when ``No Finding`` is 1, else empty; ``negative``;
``unknown``).  Only ``views`` (default PA and AP) are indexed; other views are excluded with the reason.
The official split (``validate`` -> ``val``) is kept in the label table's ``split``.

Dates in MIMIC are shifted per patient (years 2100-2200) but consistently within a patient, so time
windows between one patient's ECGs and X-rays are meaningful.  :func:`link_ecg_cxr` pairs them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ._common import (
    CXR_INDEX_COLUMNS,
    ECG_INDEX_COLUMNS,
    AdapterResult,
    check_root,
    exclusion,
    exclusions_frame,
    id_string,
    read_csv_table,
)

RECORD_LIST = "record_list.csv"
MACHINE_MEASUREMENTS = "machine_measurements.csv"
CXR_METADATA = "mimic-cxr-2.0.0-metadata.csv"
CXR_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
CXR_SPLIT = "mimic-cxr-2.0.0-split.csv"
#: CheXpert's 14 observations, as the column names of ``mimic-cxr-2.0.0-chexpert.csv``.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
REPORT_COLUMNS: tuple[str, ...] = tuple(f"report_{i}" for i in range(18))
#: machine-statement patterns (case-insensitive) behind the ECG labels.
ECG_STATEMENTS: dict[str, str] = {
    "lvh": r"left ventricular hypertrophy|\blvh\b",
    "normal_ecg": r"\bnormal ecg\b",
    "atrial_fibrillation": r"atrial fibrillation|atrial flutter",
    "paced": r"pacemaker|\bpaced\b",
}
ECG_FS_HZ = 500.0
_SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}


@dataclass(frozen=True)
class MimicConfig:
    """How the MIMIC modules are read.

    Attributes:
        views: X-ray ``ViewPosition`` values indexed (others excluded).
        uncertain: CheXpert -1 for Cardiomegaly: ``exclude`` (label empty), ``positive`` or ``negative``.
        not_mentioned: empty Cardiomegaly cell: ``no_finding`` (0 when No Finding = 1, else empty),
            ``negative`` or ``unknown``.
        check_files: exclude records whose files are not on disk.
        pair_within_days: window of :func:`link_ecg_cxr` for the ``pairs`` table (the paper: 7 days).
    """

    views: tuple[str, ...] = ("PA", "AP")
    uncertain: str = "exclude"
    not_mentioned: str = "no_finding"
    check_files: bool = True
    pair_within_days: float = 7.0

    def __post_init__(self) -> None:
        if self.uncertain not in ("exclude", "positive", "negative"):
            raise ConfigError(f"uncertain must be exclude, positive or negative; got {self.uncertain!r}")
        if self.not_mentioned not in ("no_finding", "negative", "unknown"):
            raise ConfigError(f"not_mentioned must be no_finding, negative or unknown; got {self.not_mentioned!r}")
        object.__setattr__(self, "views", tuple(str(v).upper() for v in self.views))
        if not (self.pair_within_days >= 0):
            raise ConfigError(f"pair_within_days must be >= 0, got {self.pair_within_days}")


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return root / name


def _iso(v: Any) -> str | None:
    ts = pd.to_datetime(v, errors="coerce")
    return None if pd.isna(ts) else ts.isoformat()


def cxr_datetime(study_date: Any, study_time: Any) -> str | None:
    """ISO date-time from MIMIC-CXR ``StudyDate`` (``21800506``) and ``StudyTime`` (``213014.531`` or ``93014``)."""
    try:
        d = str(int(float(study_date)))
    except (TypeError, ValueError):
        return None
    if not re.fullmatch(r"\d{8}", d):
        return None
    t = "000000"
    try:
        if study_time is not None and not (isinstance(study_time, float) and np.isnan(study_time)):
            whole = str(study_time).split(".")[0]
            t = f"{int(whole):06d}" if whole.strip() else "000000"
    except ValueError:
        return None
    ts = pd.to_datetime(f"{d}{t}", format="%Y%m%d%H%M%S", errors="coerce")
    return None if pd.isna(ts) else ts.isoformat()


def adapt_mimic_ecg(root: str | os.PathLike, config: MimicConfig | None = None) -> AdapterResult:
    """Index MIMIC-IV-ECG at ``root`` (``record_list.csv`` + ``files/``) with machine-statement labels.

    Raises:
        ReadError: ``record_list.csv`` (or a present ``machine_measurements.csv``) missing columns or unreadable.
    """
    config = config or MimicConfig()
    root = check_root(root, "MIMIC-IV-ECG folder")
    rl_path = _find(root, RECORD_LIST)
    records = read_csv_table(rl_path, ("subject_id", "study_id", "ecg_time", "path"), what="MIMIC-IV-ECG record list",
                             dtype={"subject_id": str, "study_id": str, "path": str})
    mm_path = _find(root, MACHINE_MEASUREMENTS)
    reports: dict[str, str] = {}
    if mm_path.is_file():
        mm = read_csv_table(mm_path, ("subject_id", "study_id", "report_0"), what="MIMIC-IV-ECG machine measurements",
                            dtype={"subject_id": str, "study_id": str})
        cols = [c for c in REPORT_COLUMNS if c in mm.columns]
        text = mm[cols].fillna("").astype(str).agg(" | ".join, axis=1)
        reports = dict(zip(mm["study_id"].map(id_string), text))
    index_rows, label_rows, excluded = [], [], []
    for rec in records.to_dict("records"):
        pid, sid = id_string(rec["subject_id"]), id_string(rec["study_id"])
        rel = rec.get("path")
        path = None if not isinstance(rel, str) or not rel.strip() else root / f"{rel.strip()}.hea"
        if pid is None or sid is None:
            excluded.append(exclusion("ecg", sid, pid, path, "missing subject_id or study_id"))
            continue
        if path is None:
            excluded.append(exclusion("ecg", sid, pid, None, "missing path"))
            continue
        if config.check_files and not (path.is_file() and path.with_suffix(".dat").is_file()):
            which = ".hea" if not path.is_file() else ".dat"
            excluded.append(exclusion("ecg", sid, pid, path, f"WFDB {which} file not found"))
            continue
        report = reports.get(sid)
        flags = ({k: int(bool(re.search(p, report, flags=re.IGNORECASE))) for k, p in ECG_STATEMENTS.items()}
                 if report is not None else {k: None for k in ECG_STATEMENTS})
        index_rows.append({"patient_id": pid, "exam_id": sid, "exam_datetime": _iso(rec["ecg_time"]),
                           "path": str(path), "age": None, "sex": None, "pacemaker": flags["paced"],
                           "atrial_fibrillation": flags["atrial_fibrillation"], "fs": ECG_FS_HZ, "units": "mV",
                           "resolution_uv": None})
        label_rows.append({"modality": "ecg", "exam_id": sid, "patient_id": pid, **flags,
                           "machine_report": report})
    info = {"ecg_source": str(root), "record_list": str(rl_path),
            "machine_measurements": str(mm_path) if mm_path.is_file() else None,
            "ecg_label_definitions": {k: f"machine report matches /{p}/i" for k, p in ECG_STATEMENTS.items()},
            "ecg_sampling_rate_hz": ECG_FS_HZ, "ecg_units": "mV (WFDB gain from each .hea)"}
    return AdapterResult("mimic", pd.DataFrame(index_rows, columns=list(ECG_INDEX_COLUMNS)), None,
                         pd.DataFrame(label_rows), exclusions_frame(excluded),
                         {**info, "label_columns": list(ECG_STATEMENTS)})


def _cardiomegaly(value: Any, no_finding: Any, config: MimicConfig) -> int | None:
    v = pd.to_numeric(value, errors="coerce")
    if pd.isna(v):
        if config.not_mentioned == "negative":
            return 0
        if config.not_mentioned == "no_finding" and pd.to_numeric(no_finding, errors="coerce") == 1:
            return 0
        return None
    if v == 1:
        return 1
    if v == 0:
        return 0
    if v == -1:
        return {"exclude": None, "positive": 1, "negative": 0}[config.uncertain]
    return None


def adapt_mimic_cxr(root: str | os.PathLike, config: MimicConfig | None = None) -> AdapterResult:
    """Index MIMIC-CXR-JPG at ``root`` (metadata, CheXpert labels, official split, ``files/``).

    Raises:
        ReadError: a CSV missing, unreadable or without its columns; a CheXpert value outside {1, 0, -1, empty}.
    """
    config = config or MimicConfig()
    root = check_root(root, "MIMIC-CXR-JPG folder")
    meta_path, chex_path, split_path = (_find(root, n) for n in (CXR_METADATA, CXR_CHEXPERT, CXR_SPLIT))
    meta = read_csv_table(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"),
                          what="MIMIC-CXR-JPG metadata table", dtype={"dicom_id": str, "subject_id": str, "study_id": str})
    chex = read_csv_table(chex_path, ("subject_id", "study_id", "Cardiomegaly", "No Finding"),
                          what="MIMIC-CXR-JPG CheXpert label table", dtype={"subject_id": str, "study_id": str})
    bad = ~chex["Cardiomegaly"].isin([1.0, 0.0, -1.0]) & chex["Cardiomegaly"].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReadError(chex_path, f"study {chex['study_id'].iloc[i]}: Cardiomegaly {chex['Cardiomegaly'].iloc[i]!r} "
                                   "is not 1, 0, -1 or empty")
    chex_by_study = {id_string(r["study_id"]): r for r in chex.to_dict("records")}
    split_by_dicom: dict[str, str] = {}
    if split_path.is_file():
        sp = read_csv_table(split_path, ("dicom_id", "split"), what="MIMIC-CXR-JPG split table", dtype={"dicom_id": str})
        split_by_dicom = {str(d): _SPLIT_NAMES.get(str(s).strip().lower(), str(s)) for d, s in zip(sp["dicom_id"], sp["split"])}
    index_rows, label_rows, excluded = [], [], []
    for rec in meta.to_dict("records"):
        did, pid, sid = str(rec["dicom_id"]).strip(), id_string(rec["subject_id"]), id_string(rec["study_id"])
        path = root / "files" / f"p{pid[:2]}" / f"p{pid}" / f"s{sid}" / f"{did}.jpg" if pid and sid else None
        view = None if pd.isna(rec["ViewPosition"]) else str(rec["ViewPosition"]).strip().upper()
        if path is None:
            excluded.append(exclusion("cxr", did, pid, None, "missing subject_id or study_id"))
            continue
        if view not in config.views:
            excluded.append(exclusion("cxr", did, pid, path, f"view {view or 'unknown'} not in {'/'.join(config.views)}"))
            continue
        if config.check_files and not path.is_file():
            excluded.append(exclusion("cxr", did, pid, path, "JPEG file not found"))
            continue
        dt = cxr_datetime(rec["StudyDate"], rec["StudyTime"])
        lab = chex_by_study.get(sid)
        row = {"modality": "cxr", "exam_id": did, "patient_id": pid, "study_id": sid,
               "cardiomegaly": None if lab is None else _cardiomegaly(lab["Cardiomegaly"], lab["No Finding"], config),
               "cardiomegaly_chexpert": None if lab is None else lab["Cardiomegaly"],
               "no_finding": None if lab is None or pd.isna(lab["No Finding"]) else int(lab["No Finding"] == 1),
               "split": split_by_dicom.get(did)}
        index_rows.append({"patient_id": pid, "exam_id": did, "exam_datetime": dt, "path": str(path), "age": None,
                           "sex": None, "view_position": view})
        label_rows.append(row)
    info = {"cxr_source": str(root), "cxr_files": {"metadata": str(meta_path), "chexpert": str(chex_path),
                                                   "split": str(split_path) if split_path.is_file() else None},
            "cxr_label_definitions": {"cardiomegaly": f"CheXpert Cardiomegaly 1 -> 1, 0 -> 0, -1 -> {config.uncertain}, "
                                                      f"empty -> {config.not_mentioned}"},
            "views": list(config.views)}
    return AdapterResult("mimic", None, pd.DataFrame(index_rows, columns=list(CXR_INDEX_COLUMNS)),
                         pd.DataFrame(label_rows), exclusions_frame(excluded),
                         {**info, "label_columns": ["cardiomegaly", "no_finding"]})


def link_ecg_cxr(ecg_index: pd.DataFrame, cxr_index: pd.DataFrame, within_days: float = 7.0) -> pd.DataFrame:
    """Every (ECG, X-ray) of the same ``patient_id`` at most ``within_days`` apart.

    Returns ``patient_id``, ``ecg_exam_id``, ``cxr_exam_id``, ``ecg_datetime``, ``cxr_datetime`` and
    ``days_cxr_to_ecg`` (signed: ECG minus X-ray, as in the cohort manifest), sorted.
    """
    e = ecg_index[["patient_id", "exam_id", "exam_datetime"]].rename(
        columns={"exam_id": "ecg_exam_id", "exam_datetime": "ecg_datetime"})
    c = cxr_index[["patient_id", "exam_id", "exam_datetime"]].rename(
        columns={"exam_id": "cxr_exam_id", "exam_datetime": "cxr_datetime"})
    m = e.merge(c, on="patient_id", how="inner")
    days = (pd.to_datetime(m["ecg_datetime"]) - pd.to_datetime(m["cxr_datetime"])).dt.total_seconds() / 86400.0
    m["days_cxr_to_ecg"] = days
    m = m[days.abs() <= within_days]
    return m.sort_values(["patient_id", "cxr_exam_id", "ecg_exam_id"]).reset_index(drop=True)


def find_roots(src: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """The MIMIC-IV-ECG and MIMIC-CXR-JPG roots under ``src`` (itself or up to two levels down)."""
    src = Path(src)
    ecg = cxr = None
    candidates: Iterable[Path] = [src, *sorted(p for p in src.glob("*") if p.is_dir()),
                                  *sorted(p for p in src.glob("*/*") if p.is_dir())]
    for d in candidates:
        if ecg is None and _find(d, RECORD_LIST).is_file():
            ecg = d
        if cxr is None and _find(d, CXR_METADATA).is_file():
            cxr = d
    return ecg, cxr


def adapt_mimic(src: str | os.PathLike | None = None, *, ecg_root: str | os.PathLike | None = None,
                cxr_root: str | os.PathLike | None = None, config: MimicConfig | None = None) -> AdapterResult:
    """Both modules at once: ECG and X-ray indexes, their labels, and the same-subject ``pairs`` table.

    Args:
        src: a folder holding both module roots (found by their CSVs, up to two levels down).
        ecg_root, cxr_root: the module roots, overriding what is found under ``src``.

    Raises:
        ReadError: a module root cannot be found, or one of its tables is malformed.
    """
    config = config or MimicConfig()
    found_ecg, found_cxr = find_roots(src) if src is not None else (None, None)
    ecg_root = ecg_root or found_ecg
    cxr_root = cxr_root or found_cxr
    if ecg_root is None and cxr_root is None:
        raise ReadError(src, f"no MIMIC-IV-ECG ({RECORD_LIST}) nor MIMIC-CXR-JPG ({CXR_METADATA}) root found")
    parts = [adapt_mimic_ecg(ecg_root, config) if ecg_root is not None else None,
             adapt_mimic_cxr(cxr_root, config) if cxr_root is not None else None]
    ecg_res, cxr_res = parts
    labels = pd.concat([p.labels for p in parts if p is not None], ignore_index=True)
    exclusions = pd.concat([p.exclusions for p in parts if p is not None], ignore_index=True)
    info: dict[str, Any] = {"config": asdict(config), "label_columns": []}
    for p in parts:
        if p is not None:
            info.update({k: v for k, v in p.info.items() if k != "label_columns"})
            info["label_columns"] += p.info["label_columns"]
    extra = {}
    if ecg_res is not None and cxr_res is not None:
        extra["pairs"] = link_ecg_cxr(ecg_res.ecg_index, cxr_res.cxr_index, config.pair_within_days)
        info["pairs"] = f"ECG and X-ray of the same subject_id within +-{config.pair_within_days:g} days"
    info["access"] = "PhysioNet credentialed access (MIMIC-IV-ECG v1.0, MIMIC-CXR-JPG v2.x)"
    return AdapterResult("mimic", None if ecg_res is None else ecg_res.ecg_index,
                         None if cxr_res is None else cxr_res.cxr_index, labels, exclusions, info, extra)


__all__ = ["CHEXPERT_LABELS", "ECG_STATEMENTS", "MimicConfig", "adapt_mimic", "adapt_mimic_cxr", "adapt_mimic_ecg",
           "cxr_datetime", "find_roots", "link_ecg_cxr"]
