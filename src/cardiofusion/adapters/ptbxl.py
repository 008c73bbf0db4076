"""PTB-XL (Wagner et al., Scientific Data 2020) in its original PhysioNet layout -> ECG index + labels.

Expected layout (the PhysioNet release; any subset of records)::

    ROOT/ptbxl_database.csv     ecg_id, patient_id, age, sex, recording_date, scp_codes, pacemaker,
                                strat_fold, filename_lr, filename_hr, ...
    ROOT/scp_statements.csv     SCP code (first column), diagnostic, diagnostic_class, ...
    ROOT/records100/NNNNN/NNNNN_lr.{hea,dat}    100 Hz WFDB records
    ROOT/records500/NNNNN/NNNNN_hr.{hea,dat}    500 Hz WFDB records

Labels (one row per indexed record), from ``scp_codes`` (``{code: likelihood %}``):

* ``lvh``: code ``LVH`` with likelihood >= ``min_likelihood``;
* ``hyp``: any code whose ``scp_statements.csv`` ``diagnostic_class`` is ``HYP`` (LVH, RVH, LAO/LAE,
  RAO/RAE, SEHYP) with likelihood >= ``min_likelihood``;
* ``norm``: code ``NORM`` with likelihood >= ``min_likelihood``;
* ``hyp_mentioned``: any HYP-class code at any likelihood (a strict negative has none);
* ``lvh_likelihood`` / ``norm_likelihood``: the raw likelihoods (empty when the code is absent);
* ``superclasses``: the diagnostic classes (``|``-joined, sorted) of the codes >= ``min_likelihood``.

PTB-XL's likelihoods are 0, 15, 35, 50, 80 or 100; ``min_likelihood=0`` counts every mention (the
convention of the PTB-XL benchmarks), the default 50 keeps statements at least "likely".

Split: ``strat_fold`` (1-10, patient-disjoint, label-stratified) is kept and mapped to a split by
``fold_map`` (recommended ``train=1-8,val=9,test=10``; the shared 353-record copy holds folds 1-8 only,
so it needs e.g. ``train=1-6,val=7,test=8``). Records of folds outside the map are excluded with
the reason.

Index: ``patient_id`` (PTB-XL's, as an integer string), ``exam_id`` = ``ecg_id``, ``exam_datetime`` =
``recording_date``, ``path`` = the absolute ``.hea`` of the chosen rate, ``age`` (PTB-XL codes ages
above 89 as 300: those become empty), ``sex`` (PTB-XL: 0 = male, 1 = female), ``pacemaker`` (the
``pacemaker`` column non-empty), ``atrial_fibrillation`` (``AFIB`` or ``AFLT`` in ``scp_codes``),
``fs`` (100 or 500 Hz) and ``units`` = ``mV`` (WFDB headers carry gain and units; the reader applies them).
"""

from __future__ import annotations

import ast
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ._common import (
    ECG_INDEX_COLUMNS,
    AdapterResult,
    check_root,
    exclusion,
    exclusions_frame,
    id_string,
    parse_fold_map,
    read_csv_table,
)

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
#: PTB-XL's recommended use of its stratified folds.
RECOMMENDED_FOLD_MAP: dict[int, str] = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}
RATES: dict[int, str] = {100: "filename_lr", 500: "filename_hr"}
#: PTB-XL stores ages above 89 as this value.
AGE_CENSORED = 300
LABEL_COLUMNS: tuple[str, ...] = ("lvh", "hyp", "norm", "hyp_mentioned")
_AF_CODES = ("AFIB", "AFLT")


@dataclass(frozen=True)
class PTBXLConfig:
    """How PTB-XL is read.

    Attributes:
        sampling_rate: 500 (``records500``, ``filename_hr``) or 100 Hz (``records100``, ``filename_lr``).
        min_likelihood: smallest SCP likelihood (%) that makes a statement count for the 0/1 labels.
        fold_map: ``strat_fold`` -> split, as ``"train=1-8,val=9,test=10"`` or a dict; ``None`` = that.
        check_files: exclude records whose ``.hea``/``.dat`` is not on disk (cheap; on by default).
        verify_read: also read every record with :func:`cardiofusion.io.ecg.read_ecg` and exclude the
            ones that fail, with the reader's reason (slow on the full data set).
    """

    sampling_rate: int = 500
    min_likelihood: float = 50.0
    fold_map: str | dict[Any, Any] | None = None
    check_files: bool = True
    verify_read: bool = False

    def __post_init__(self) -> None:
        if int(self.sampling_rate) not in RATES:
            raise ConfigError(f"PTB-XL sampling_rate must be 100 or 500 Hz, got {self.sampling_rate}")
        if not (0 <= float(self.min_likelihood) <= 100):
            raise ConfigError(f"min_likelihood must be within 0-100 %, got {self.min_likelihood}")
        parse_fold_map(self.fold_map, RECOMMENDED_FOLD_MAP)  # validate early

    def folds(self) -> dict[int, str]:
        return parse_fold_map(self.fold_map, RECOMMENDED_FOLD_MAP)


def parse_scp_codes(value: Any, *, source: str | os.PathLike, ecg_id: Any) -> dict[str, float]:
    """The ``scp_codes`` cell (a Python dict literal) as ``{code: likelihood}``; ReadError if malformed."""
    try:
        codes = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        raise ReadError(source, f"ecg_id {ecg_id}: scp_codes {str(value)[:60]!r} is not a dict literal") from None
    if not isinstance(codes, dict):
        raise ReadError(source, f"ecg_id {ecg_id}: scp_codes is a {type(codes).__name__}, not a dict")
    try:
        return {str(k): float(v) for k, v in codes.items()}
    except (TypeError, ValueError):
        raise ReadError(source, f"ecg_id {ecg_id}: scp_codes likelihoods must be numbers") from None


def load_statements(root: Path) -> pd.DataFrame:
    """``scp_statements.csv`` indexed by SCP code, with ``diagnostic`` and ``diagnostic_class``."""
    path = root / STATEMENTS_CSV
    df = read_csv_table(path, ("diagnostic", "diagnostic_class"), what="PTB-XL SCP statement table", index_col=0)
    df.index = df.index.astype(str)
    return df


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    ts = pd.to_datetime(str(value), errors="coerce")
    return None if pd.isna(ts) else ts.isoformat()


def _age(value: Any) -> float | None:
    try:
        a = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(a) or a >= AGE_CENSORED or a < 0:
        return None
    return a


def adapt_ptbxl(root: str | os.PathLike, config: PTBXLConfig | None = None) -> AdapterResult:
    """Read PTB-XL at ``root`` into an ECG index, a label table and exclusions.

    Raises:
        ReadError: ``ptbxl_database.csv`` / ``scp_statements.csv`` missing, unreadable, lacking columns,
            or with a malformed ``scp_codes`` cell (the message names the file and the ``ecg_id``).
    """
    config = config or PTBXLConfig()
    root = check_root(root, "PTB-XL folder")
    db_path = root / DATABASE_CSV
    file_col = RATES[int(config.sampling_rate)]
    db = read_csv_table(db_path, ("ecg_id", "patient_id", "age", "sex", "recording_date", "scp_codes",
                                  "strat_fold", file_col), what="PTB-XL database table")
    statements = load_statements(root)
    diag = statements[pd.to_numeric(statements["diagnostic"], errors="coerce") == 1]
    diag_class = diag["diagnostic_class"].astype(str).to_dict()
    hyp_codes = sorted(code for code, cls in diag_class.items() if cls == "HYP")
    folds = config.folds()
    thr = float(config.min_likelihood)

    index_rows, label_rows, excluded = [], [], []
    for row in db.itertuples(index=False):
        rec = row._asdict()
        ecg_id = id_string(rec["ecg_id"])
        pid = id_string(rec["patient_id"])
        rel = rec.get(file_col)
        path = None if rel is None or (isinstance(rel, float) and np.isnan(rel)) else root / f"{rel}.hea"
        codes = parse_scp_codes(rec["scp_codes"], source=db_path, ecg_id=ecg_id)
        if pid is None:
            excluded.append(exclusion("ecg", ecg_id, None, path, "missing patient_id"))
            continue
        if path is None:
            excluded.append(exclusion("ecg", ecg_id, pid, None, f"no {file_col} (no {config.sampling_rate} Hz record)"))
            continue
        try:
            fold = int(rec["strat_fold"])
        except (TypeError, ValueError):
            excluded.append(exclusion("ecg", ecg_id, pid, path, f"strat_fold {rec['strat_fold']!r} is not a fold number"))
            continue
        if fold not in folds:
            excluded.append(exclusion("ecg", ecg_id, pid, path, f"strat_fold {fold} is not in the fold map"))
            continue
        if config.check_files:
            dat = path.with_suffix(".dat")
            if not path.is_file() or not dat.is_file():
                which = ".hea" if not path.is_file() else ".dat"
                excluded.append(exclusion("ecg", ecg_id, pid, path, f"WFDB {which} file not found"))
                continue
        if config.verify_read:
            from ..io.ecg import read_ecg

            try:
                read_ecg(path)
            except ReadError as e:
                excluded.append(exclusion("ecg", ecg_id, pid, path, f"unreadable: {e.reason}"))
                continue
        sex = {0: "M", 1: "F"}.get(int(rec["sex"])) if pd.notna(rec["sex"]) else None
        pacer = rec.get("pacemaker")
        has_pacer = int(pacer is not None and not (isinstance(pacer, float) and np.isnan(pacer)) and str(pacer).strip() != "")
        index_rows.append({
            "patient_id": pid, "exam_id": ecg_id, "exam_datetime": _iso(rec["recording_date"]), "path": str(path),
            "age": _age(rec["age"]), "sex": sex, "pacemaker": has_pacer,
            "atrial_fibrillation": int(any(c in codes for c in _AF_CODES)),
            "fs": float(config.sampling_rate), "units": "mV", "resolution_uv": None,
        })
        strong = {c for c, v in codes.items() if v >= thr}
        label_rows.append({
            "modality": "ecg", "exam_id": ecg_id, "patient_id": pid,
            "lvh": int("LVH" in strong),
            "hyp": int(any(c in strong for c in hyp_codes)),
            "norm": int("NORM" in strong),
            "hyp_mentioned": int(any(c in codes for c in hyp_codes)),
            "lvh_likelihood": codes.get("LVH"), "norm_likelihood": codes.get("NORM"),
            "superclasses": "|".join(sorted({diag_class[c] for c in strong if c in diag_class})),
            "scp_codes": str(rec["scp_codes"]),
            "strat_fold": fold, "split": folds[fold],
        })

    ecg_index = pd.DataFrame(index_rows, columns=list(ECG_INDEX_COLUMNS))
    labels = pd.DataFrame(label_rows)
    info = {
        "source": str(root),
        "files": {"database": str(db_path), "statements": str(root / STATEMENTS_CSV)},
        "config": asdict(config),
        "fold_map": {str(k): v for k, v in sorted(folds.items())},
        "sampling_rate_hz": int(config.sampling_rate),
        "units": "mV (WFDB gain and units from each .hea)",
        "label_columns": list(LABEL_COLUMNS),
        "label_definitions": {
            "lvh": f"scp_codes LVH likelihood >= {thr:g}",
            "hyp": f"any diagnostic_class HYP code ({', '.join(hyp_codes)}) with likelihood >= {thr:g}",
            "norm": f"scp_codes NORM likelihood >= {thr:g}",
            "hyp_mentioned": "any HYP-class code at any likelihood",
        },
        "split": "strat_fold mapped by fold_map (PTB-XL folds are patient-disjoint)",
        "licence": "CC BY 4.0; cite Wagner et al., PTB-XL, Scientific Data 2020",
    }
    return AdapterResult("ptbxl", ecg_index, None, labels, exclusions_frame(excluded), info)


__all__ = [
    "LABEL_COLUMNS",
    "RECOMMENDED_FOLD_MAP",
    "PTBXLConfig",
    "adapt_ptbxl",
    "load_statements",
    "parse_scp_codes",
]
