"""NIH ChestX-ray14 (Wang et al., CVPR 2017) -> X-ray index + labels, from either of two layouts.

**Original release** (``layout="csv"``)::

    ROOT/Data_Entry_2017.csv    Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age,
                                Patient Gender, View Position, ...
    ROOT/images*/.../00000001_000.png      (any sub-folders: images/, images_001/images/, ...)
    ROOT/test_list.txt, train_val_list.txt (optional: the official patient-wise split)

``Finding Labels`` is split on ``|``; every one of the 14 findings becomes a 0/1 column
(``cardiomegaly``, ``effusion``, ...), plus ``no_finding``.  ``Patient Age`` may be a number or the
older ``058Y`` form.  Rows whose image is not under ROOT are excluded with the reason.

**Labelled folders** (``layout="folders"``), e.g. ``nih-cardiomegaly-128/``::

    ROOT/cardiomegaly/*.png         label 1
    ROOT/no_cardiomegaly/*.png      label 0

(``folder_labels`` maps folder names to the ``cardiomegaly`` label.)  Such copies usually carry no
patient id: when a file name has the NIH form ``PPPPPPPP_FFF.png`` the patient id is its first part,
otherwise every file is its own patient (``file:<folder>/<name>``) and ``info["patient_ids"]`` says so.
A split of such a pool is a split by *file*: two images of one person may land in two splits.

NIH gives no exam dates: ``exam_datetime`` is empty, so these X-rays cannot be linked to other
exams by time (the pseudo-paired builder does not need to).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, ReadError
from ._common import (
    CXR_INDEX_COLUMNS,
    AdapterResult,
    check_root,
    exclusion,
    exclusions_frame,
    id_string,
    read_csv_table,
)

DATA_ENTRY_CSV = "Data_Entry_2017.csv"
#: The 14 ChestX-ray14 findings (``Finding Labels`` spelling).
FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
DEFAULT_FOLDER_LABELS: dict[str, int] = {"cardiomegaly": 1, "no_cardiomegaly": 0}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")


@dataclass(frozen=True)
class NIHConfig:
    """How an NIH copy is read.

    Attributes:
        layout: ``"auto"`` (``Data_Entry_2017.csv`` present -> ``csv``, else ``folders``), ``"csv"`` or ``"folders"``.
        labels_csv: the ``Data_Entry_2017.csv`` to use (default: ROOT's).
        folder_labels: folder name -> cardiomegaly label, for the folder layout.
        verify_read: read every image with :func:`cardiofusion.io.cxr.read_cxr` and exclude failures.
    """

    layout: str = "auto"
    labels_csv: str | None = None
    folder_labels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_FOLDER_LABELS))
    verify_read: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("auto", "csv", "folders"):
            raise ConfigError(f"NIH layout must be auto, csv or folders; got {self.layout!r}")
        bad = {k: v for k, v in self.folder_labels.items() if v not in (0, 1)}
        if bad:
            raise ConfigError(f"folder_labels values must be 0 or 1, got {bad}")


def finding_column(name: str) -> str:
    """``Pleural_Thickening`` -> ``pleural_thickening``."""
    return name.strip().lower().replace(" ", "_")


def _age(v: Any) -> float | None:
    s = str(v).strip().upper()
    m = re.fullmatch(r"0*(\d+)\s*([YMD]?)", s)
    if not m:
        return None
    n = float(m.group(1))
    return {"": n, "Y": n, "M": n / 12, "D": n / 365.25}[m.group(2)]


def _verify(path: Path) -> str | None:
    from ..io.cxr import read_cxr

    try:
        read_cxr(path)
        return None
    except ReadError as e:
        return e.reason


def _adapt_csv(root: Path, config: NIHConfig) -> AdapterResult:
    csv_path = Path(config.labels_csv) if config.labels_csv else root / DATA_ENTRY_CSV
    df = read_csv_table(csv_path, ("Image Index", "Finding Labels", "Patient ID", "View Position"),
                        what="NIH Data_Entry_2017 table", dtype={"Image Index": str, "Patient ID": str})
    images = {p.name: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    official: dict[str, str] = {}
    for fname, name in (("train_val_list.txt", "train_val"), ("test_list.txt", "test")):
        f = root / fname
        if f.is_file():
            official.update({ln.strip(): name for ln in f.read_text().splitlines() if ln.strip()})
    index_rows, label_rows, excluded = [], [], []
    for rec in df.to_dict("records"):
        name = str(rec["Image Index"]).strip()
        pid = id_string(rec["Patient ID"])
        exam = Path(name).stem
        findings = {f.strip() for f in str(rec["Finding Labels"]).split("|") if f.strip()}
        unknown = findings - set(FINDINGS) - {"No Finding"}
        if unknown:
            raise ReadError(csv_path, f"Image Index {name}: unknown finding(s) {', '.join(sorted(unknown))} "
                                      f"in Finding Labels {rec['Finding Labels']!r}")
        path = images.get(name)
        if path is None:
            excluded.append(exclusion("cxr", exam, pid, None, f"image {name} not found under {root}"))
            continue
        if pid is None:
            excluded.append(exclusion("cxr", exam, None, path, "missing Patient ID"))
            continue
        if config.verify_read and (why := _verify(path)) is not None:
            excluded.append(exclusion("cxr", exam, pid, path, f"unreadable: {why}"))
            continue
        view = rec.get("View Position")
        index_rows.append({"patient_id": pid, "exam_id": exam, "exam_datetime": None, "path": str(path),
                           "age": _age(rec.get("Patient Age")), "sex": {"M": "M", "F": "F"}.get(
                               str(rec.get("Patient Gender")).strip().upper()),
                           "view_position": None if pd.isna(view) else str(view).strip()})
        row = {"modality": "cxr", "exam_id": exam, "patient_id": pid,
               **{finding_column(f): int(f in findings) for f in FINDINGS},
               "no_finding": int("No Finding" in findings), "finding_labels": str(rec["Finding Labels"]),
               "follow_up": rec.get("Follow-up #")}
        if official:
            row["official_split"] = official.get(name)
        label_rows.append(row)
    info = {"layout": "csv", "labels_csv": str(csv_path),
            "patient_ids": "Patient ID from Data_Entry_2017.csv",
            "official_split": "test_list.txt / train_val_list.txt" if official else "not present"}
    label_columns = [finding_column(f) for f in FINDINGS] + ["no_finding"]
    return _result(root, config, index_rows, label_rows, excluded, info, label_columns)


def _adapt_folders(root: Path, config: NIHConfig) -> AdapterResult:
    index_rows, label_rows, excluded = [], [], []
    file_ids = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if folder.name not in config.folder_labels:
            for p in files:
                excluded.append(exclusion("cxr", f"{folder.name}/{p.stem}", None, p,
                                          f"folder {folder.name!r} is not in the folder label map"))
            continue
        label = int(config.folder_labels[folder.name])
        for p in files:
            exam = f"{folder.name}/{p.stem}"
            m = _NIH_NAME.match(p.stem)
            if m:
                pid = str(int(m.group(1)))
            else:
                pid = f"file:{folder.name}/{p.name}"
                file_ids += 1
            if config.verify_read and (why := _verify(p)) is not None:
                excluded.append(exclusion("cxr", exam, pid, p, f"unreadable: {why}"))
                continue
            index_rows.append({"patient_id": pid, "exam_id": exam, "exam_datetime": None, "path": str(p),
                               "age": None, "sex": None, "view_position": None})
            label_rows.append({"modality": "cxr", "exam_id": exam, "patient_id": pid, "cardiomegaly": label,
                               "source_folder": folder.name})
    for p in sorted(q for q in root.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES):
        excluded.append(exclusion("cxr", p.stem, None, p, "image outside a labelled folder"))
    if not index_rows and not excluded:
        raise ReadError(root, f"no labelled image folders ({', '.join(config.folder_labels)}) and no {DATA_ENTRY_CSV}")
    info = {"layout": "folders", "folder_labels": dict(config.folder_labels),
            "patient_ids": ("none in the file names: one patient per file (split by file, not by patient)"
                            if file_ids else "from NIH file names PPPPPPPP_FFF"),
            "files_without_patient_id": file_ids}
    return _result(root, config, index_rows, label_rows, excluded, info, ["cardiomegaly"])


def _result(root: Path, config: NIHConfig, index_rows: list, label_rows: list, excluded: list,
            info: dict[str, Any], label_columns: list[str]) -> AdapterResult:
    info = {"source": str(root), "config": asdict(config), **info, "label_columns": label_columns,
            "label_definitions": {"cardiomegaly": "'Cardiomegaly' in Finding Labels (csv layout) or the image's "
                                                  "folder (folder layout)",
                                  "no_finding": "Finding Labels is 'No Finding' (csv layout)"},
            "units": "8-bit greyscale images; no exam dates in NIH (exam_datetime empty)",
            "licence": "NIH Clinical Center ChestX-ray14; cite Wang et al., CVPR 2017"}
    return AdapterResult("nih", None, pd.DataFrame(index_rows, columns=list(CXR_INDEX_COLUMNS)),
                         pd.DataFrame(label_rows), exclusions_frame(excluded), info)


def adapt_nih(root: str | os.PathLike, config: NIHConfig | None = None) -> AdapterResult:
    """Read an NIH ChestX-ray14 copy at ``root`` (original CSV layout or labelled folders).

    Raises:
        ReadError: missing/unreadable/incomplete ``Data_Entry_2017.csv``, an unknown finding name, or
            a folder with neither the CSV nor labelled sub-folders.
    """
    config = config or NIHConfig()
    root = check_root(root, "NIH ChestX-ray14 folder")
    layout = config.layout
    if layout == "auto":
        layout = "csv" if (config.labels_csv or (root / DATA_ENTRY_CSV).is_file()) else "folders"
    return _adapt_csv(root, config) if layout == "csv" else _adapt_folders(root, config)


__all__ = ["DEFAULT_FOLDER_LABELS", "FINDINGS", "NIHConfig", "adapt_nih", "finding_column"]
