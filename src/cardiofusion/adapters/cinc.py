"""PhysioNet/CinC Challenge 2020-2021 12-lead ECGs (and the SPH HDF5 release) -> ECG index + labels.

Expected layout: any folder tree holding Challenge records, e.g. the 2021 training set::

    ROOT/<source folder>/A0001.hea + A0001.mat     WFDB header + MATLAB ``val`` array
    ROOT/SPH/SPH00001.h5 ... + metadata.csv          Shandong Provincial Hospital (HDF5 ``ecg``, mV)

Each ``.hea`` names the rate and gain (first line ``NAME NSIG FS NSAMP [DATE TIME]``) and carries
``#Age:``, ``#Sex:`` and ``#Dx:`` (comma-separated SNOMED CT codes) comment lines.  SPH files have no
header: their rate, patient, age, sex, date and SNOMED codes come from ``metadata.csv`` (``ECG_ID``,
``Patient_ID``, ``Age``, ``Sex``, ``Date``, ``fs``, ``SNOMEDCTCode``); an ``.h5`` without a
metadata row is excluded (no label, no rate).

Source database from the record-name prefix: A = CPSC 2018, Q = CPSC-Extra, S = PTB, HR = PTB-XL,
E = Georgia (G12EC), I = St Petersburg INCART, JS = Chapman-Shaoxing/Ningbo, SPH = SPH.

Labels (one row per record): ``dx_codes`` (comma-joined SNOMED codes as given), ``lvh``
(164873001 present), ``sinus_rhythm`` (426783006 present), ``normal`` (the codes are exactly
{426783006}: sinus rhythm and nothing else), ``atrial_fibrillation`` (164889003 or atrial flutter
164890007), ``paced`` (10370003).

Patients: the Challenge headers carry no patient id, so each record is its own ``patient_id``
(``cinc-<record>``); records of one person (PTB, PTB-XL parts) may then fall in two splits.  SPH has
real ``Patient_ID``s.  ``exam_datetime``: the header's date/time (or SPH ``Date``), as given; in
several sources it is not the acquisition date, so do not link CinC ECGs to other exams by time.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ReadError
from ._common import (
    ECG_INDEX_COLUMNS,
    AdapterResult,
    check_root,
    exclusion,
    exclusions_frame,
    id_string,
    read_csv_table,
)

LVH_SNOMED = "164873001"
SINUS_RHYTHM_SNOMED = "426783006"
AF_SNOMED = ("164889003", "164890007")
PACED_SNOMED = "10370003"
LABEL_COLUMNS: tuple[str, ...] = ("lvh", "sinus_rhythm", "normal", "atrial_fibrillation", "paced")
#: record-name prefix -> source database.
DATABASES: dict[str, str] = {
    "A": "CPSC 2018", "Q": "CPSC-Extra", "S": "PTB", "HR": "PTB-XL", "E": "Georgia (G12EC)",
    "I": "St Petersburg INCART", "JS": "Chapman-Shaoxing/Ningbo", "SPH": "SPH",
}
SPH_METADATA = "metadata.csv"
_SPH_COLUMNS = ("ECG_ID", "Patient_ID", "Age", "Sex", "Date", "fs", "SNOMEDCTCode")


@dataclass(frozen=True)
class CinCConfig:
    """How a CinC tree is read.

    Attributes:
        strict: raise :class:`ReadError` on the first malformed header instead of excluding the record.
        verify_read: read every record with :func:`cardiofusion.io.ecg.read_ecg` and exclude failures.
    """

    strict: bool = False
    verify_read: bool = False


@dataclass
class CinCHeader:
    """What an adapter needs from a Challenge ``.hea``."""

    record: str
    n_signals: int
    fs: float
    n_samples: int
    datetime: str | None
    age: float | None
    sex: str | None
    dx: tuple[str, ...] | None
    leads: tuple[str, ...]


def database_of(record: str) -> str:
    """Source database of a Challenge record name (``"unknown"`` for an unknown prefix)."""
    m = re.match(r"[A-Za-z]+", record)
    return DATABASES.get(m.group(0).upper(), "unknown") if m else "unknown"


def _age(v: Any) -> float | None:
    try:
        a = float(str(v).strip())
    except (TypeError, ValueError):
        return None
    return a if np.isfinite(a) and 0 <= a < 150 else None


def _sex(v: Any) -> str | None:
    s = str(v).strip().lower()
    return {"male": "M", "m": "M", "female": "F", "f": "F"}.get(s)


def _dx(v: Any) -> tuple[str, ...]:
    return tuple(c for c in (p.strip() for p in str(v).replace(";", ",").split(",")) if c)


def parse_header(path: str | os.PathLike) -> CinCHeader:
    """Parse a Challenge ``.hea``; :class:`ReadError` naming the file when it is malformed."""
    p = Path(path)
    try:
        lines = [ln.rstrip("\r\n") for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as e:
        raise ReadError(p, f"cannot read header ({e.strerror or e})") from None
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise ReadError(p, "empty header (no record line)")
    first = body[0].split()
    if len(first) < 4:
        raise ReadError(p, f"record line {body[0]!r} lacks NAME NSIG FS NSAMP")
    try:
        n_sig = int(first[1])
        fs = float(first[2].split("/")[0])
        n_samp = int(first[3])
    except ValueError:
        raise ReadError(p, f"record line {body[0]!r}: NSIG, FS and NSAMP must be numbers") from None
    if fs <= 0 or n_sig <= 0:
        raise ReadError(p, f"record line {body[0]!r}: non-positive rate or signal count")
    if len(body) - 1 < n_sig:
        raise ReadError(p, f"header announces {n_sig} signals but describes {len(body) - 1}")
    leads = tuple(ln.split()[-1] for ln in body[1:1 + n_sig])
    dt = None
    if len(first) > 4:
        ts = pd.to_datetime(" ".join(first[4:]), errors="coerce", dayfirst=True)
        dt = None if pd.isna(ts) else ts.isoformat()
    meta: dict[str, str] = {}
    for ln in lines:
        m = re.match(r"\s*#\s*([A-Za-z]+)\s*:\s*(.*)$", ln)
        if m:
            meta[m.group(1).lower()] = m.group(2).strip()
    dx = _dx(meta["dx"]) if "dx" in meta else None
    return CinCHeader(record=first[0], n_signals=n_sig, fs=fs, n_samples=n_samp, datetime=dt,
                      age=_age(meta.get("age")), sex=_sex(meta.get("sex")), dx=dx, leads=leads)


def _labels(dx: tuple[str, ...]) -> dict[str, int]:
    s = set(dx)
    return {
        "lvh": int(LVH_SNOMED in s),
        "sinus_rhythm": int(SINUS_RHYTHM_SNOMED in s),
        "normal": int(s == {SINUS_RHYTHM_SNOMED}),
        "atrial_fibrillation": int(bool(s & set(AF_SNOMED))),
        "paced": int(PACED_SNOMED in s),
    }


def adapt_cinc(root: str | os.PathLike, config: CinCConfig | None = None) -> AdapterResult:
    """Index every Challenge record (``.hea`` + ``.mat``) and SPH ``.h5`` under ``root``.

    Raises:
        ReadError: a ``metadata.csv`` that is unreadable or lacks columns; with ``strict``, a malformed header.
    """
    config = config or CinCConfig()
    root = check_root(root, "CinC Challenge folder")
    index_rows: list[dict[str, Any]] = []
    label_rows: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []

    def verify(path: Path, rid: str, pid: str) -> bool:
        if not config.verify_read:
            return True
        from ..io.ecg import read_ecg

        try:
            read_ecg(path)
            return True
        except ReadError as e:
            excluded.append(exclusion("ecg", rid, pid, path, f"unreadable: {e.reason}"))
            return False

    def add(rid: str, pid: str, path: Path, dt: str | None, age: float | None, sex: str | None,
            fs: float, dx: tuple[str, ...], source_folder: str, database: str, n_samples: int | None,
            af: int, paced: int) -> None:
        index_rows.append({"patient_id": pid, "exam_id": rid, "exam_datetime": dt, "path": str(path), "age": age,
                           "sex": sex, "pacemaker": paced, "atrial_fibrillation": af, "fs": fs, "units": "mV",
                           "resolution_uv": None})
        label_rows.append({"modality": "ecg", "exam_id": rid, "patient_id": pid, **_labels(dx),
                           "dx_codes": ",".join(dx), "database": database, "source_folder": source_folder,
                           "fs": fs, "n_samples": n_samples,
                           "duration_s": None if n_samples is None else n_samples / fs})

    # --- Challenge WFDB/MAT records -------------------------------------------------------------
    headers = sorted(root.rglob("*.hea"))
    mats = {p.with_suffix("") for p in root.rglob("*.mat")}
    for hea in headers:
        rid = hea.stem
        pid = f"cinc-{rid}"
        try:
            h = parse_header(hea)
        except ReadError as e:
            if config.strict:
                raise
            excluded.append(exclusion("ecg", rid, pid, hea, f"malformed header: {e.reason}"))
            continue
        mat = hea.with_suffix(".mat")
        if not mat.is_file():
            excluded.append(exclusion("ecg", rid, pid, hea, ".mat signal file not found beside the header"))
            continue
        if h.dx is None or not h.dx:
            excluded.append(exclusion("ecg", rid, pid, hea, "no SNOMED codes (#Dx: line missing or empty)"))
            continue
        if not verify(hea, rid, pid):
            continue
        lab = _labels(h.dx)
        add(rid, pid, hea, h.datetime, h.age, h.sex, h.fs, h.dx, str(hea.parent.relative_to(root)),
            database_of(rid), h.n_samples, lab["atrial_fibrillation"], lab["paced"])
    for stem in sorted(mats - {h.with_suffix("") for h in headers}):
        excluded.append(exclusion("ecg", stem.name, f"cinc-{stem.name}", stem.with_suffix(".mat"),
                                  "no .hea header beside the .mat (rate and gain unknown)"))

    # --- SPH: HDF5 + metadata.csv ---------------------------------------------------------------
    for h5_dir in sorted({p.parent for p in root.rglob("*.h5")}):
        meta_path = h5_dir / SPH_METADATA
        files = {p.name: p for p in h5_dir.glob("*.h5")}
        if not meta_path.is_file():
            for name, p in sorted(files.items()):
                excluded.append(exclusion("ecg", Path(name).stem, None, p,
                                          f"no {SPH_METADATA} beside the .h5 files (no label, rate or patient)"))
            continue
        meta = read_csv_table(meta_path, _SPH_COLUMNS, what="SPH metadata table", dtype={"SNOMEDCTCode": str})
        seen = set()
        for rec in meta.to_dict("records"):
            name = str(rec["ECG_ID"]).strip()
            rid = Path(name).stem
            pid = id_string(rec["Patient_ID"])
            seen.add(name)
            path = files.get(name)
            if path is None:
                excluded.append(exclusion("ecg", rid, pid, h5_dir / name, f"listed in {SPH_METADATA} but file not found"))
                continue
            dx = _dx(rec["SNOMEDCTCode"]) if pd.notna(rec["SNOMEDCTCode"]) else ()
            if not dx:
                excluded.append(exclusion("ecg", rid, pid, path, f"no SNOMED codes in {SPH_METADATA}"))
                continue
            try:
                fs = float(rec["fs"])
            except (TypeError, ValueError):
                fs = float("nan")
            if not np.isfinite(fs) or fs <= 0:
                excluded.append(exclusion("ecg", rid, pid, path, f"no valid fs in {SPH_METADATA}"))
                continue
            if pid is None:
                excluded.append(exclusion("ecg", rid, None, path, f"no Patient_ID in {SPH_METADATA}"))
                continue
            if not verify(path, rid, pid):
                continue
            ts = pd.to_datetime(str(rec["Date"]), errors="coerce")
            n = rec.get("N")
            lab = _labels(dx)
            add(rid, pid, path, None if pd.isna(ts) else ts.isoformat(), _age(rec["Age"]), _sex(rec["Sex"]), fs,
                dx, str(h5_dir.relative_to(root)), "SPH", None if pd.isna(n) else int(n), lab["atrial_fibrillation"],
                lab["paced"])
        for name in sorted(set(files) - seen):
            excluded.append(exclusion("ecg", Path(name).stem, None, files[name],
                                      f"no row in {SPH_METADATA} (no SNOMED codes, rate or patient id)"))

    ecg_index = pd.DataFrame(index_rows, columns=list(ECG_INDEX_COLUMNS))
    labels = pd.DataFrame(label_rows)
    info = {
        "source": str(root),
        "config": asdict(config),
        "units": "mV (gain from each .hea; SPH .h5 stored in mV)",
        "sampling_rate_hz": "per record (column fs); SPH from metadata.csv",
        "label_columns": list(LABEL_COLUMNS),
        "label_definitions": {
            "lvh": f"SNOMED CT {LVH_SNOMED} (left ventricular hypertrophy) in #Dx",
            "sinus_rhythm": f"SNOMED CT {SINUS_RHYTHM_SNOMED} in #Dx",
            "normal": f"#Dx is exactly {SINUS_RHYTHM_SNOMED} (sinus rhythm, nothing else)",
            "atrial_fibrillation": f"SNOMED CT {' or '.join(AF_SNOMED)}",
            "paced": f"SNOMED CT {PACED_SNOMED}",
        },
        "patient_ids": "Challenge records: none in the data, one patient per record (cinc-<record>); SPH: Patient_ID",
        "split": "none defined by the data set",
    }
    return AdapterResult("cinc", ecg_index, None, labels, exclusions_frame(excluded), info)


__all__ = [
    "DATABASES",
    "LABEL_COLUMNS",
    "LVH_SNOMED",
    "CinCConfig",
    "CinCHeader",
    "adapt_cinc",
    "database_of",
    "parse_header",
]
