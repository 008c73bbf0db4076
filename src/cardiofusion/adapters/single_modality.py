"""Single-modality cohorts from an adapter's output (``cardiofusion cohort from-adapter DIR --task TASK``).

An adapter (``cardiofusion adapt {ptbxl,cinc,nih,mimic}``) writes ``ecg_index.csv`` and / or
``cxr_index.csv``, ``labels.csv`` and ``adapter.json``.  :func:`single_modality_cohort` turns that into a
manifest with **one** modality (``modality`` column and ``config.json`` ``modalities``): the modality's
``<m>_exam_id`` / ``<m>_path`` / ``<m>_datetime`` columns are filled, the other modality's are empty, and
the task's target columns are added.

Target columns derived from the labels (besides every label column of ``labels.csv``, kept as is):

* PTB-XL superclasses ``NORM``, ``MI``, ``STTC``, ``CD``, ``HYP``: 1 when a diagnostic SCP statement of that
  ``scp_statements.csv`` ``diagnostic_class`` has a likelihood >= the adapter's ``min_likelihood`` (the
  adapter's ``superclasses`` column; ``adapt ptbxl --min-likelihood 0`` counts every mention, as the PTB-XL
  benchmarks do), else 0; a record with no diagnostic statement at that likelihood has all five unknown
  (empty), as the benchmarks drop such records.
* ``lvh`` (PTB-XL, CinC), ``cardiomegaly`` (NIH), ``atrial_fibrillation`` (CinC) come from the labels.

Split, always grouped by patient (no patient in two splits):

* ``val_folds`` / ``test_folds`` given: the data set's own folds (PTB-XL ``strat_fold``): those folds are
  val / test, every other fold train (PTB-XL's standard is 1-8 / 9 / 10; the shared 353-record copy holds
  folds 1-8, so ``--val-folds 7 --test-folds 8``);
* else the adapter's ``split`` column when every record has one (PTB-XL's fold map, MIMIC's official split);
* else a seeded random split of patients (``fractions``, stratified by the first 0/1 target column).
  Data sets without patient ids (CinC Challenge records, the 128-px NIH folders) have one "patient" per
  record: the split is then by record / image, and ``config.json`` says so (``split_unit``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from .. import __version__
from ..cohort.split import assign_splits, patient_table
from ..errors import ConfigError, ReadError
from ._common import OUTPUT_FILES

MODALITIES: tuple[str, ...] = ("ecg", "cxr")
#: PTB-XL diagnostic superclasses, in the benchmark's order.
PTBXL_SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
#: columns of a single-modality manifest before the targets
BASE_COLUMNS: tuple[str, ...] = (
    "record_id", "patient_id", "split", "fold", "modality",
    "ecg_exam_id", "ecg_path", "ecg_datetime", "cxr_exam_id", "cxr_path", "cxr_datetime",
    "age", "sex",
)
_ECG_OPTIONS = ("fs", "units", "resolution_uv", "pacemaker")


@dataclass
class SingleModalityResult:
    """What :func:`single_modality_cohort` returns (``manifest`` as written to ``manifest.parquet``)."""

    manifest: pd.DataFrame
    info: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _read(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise ReadError(path, f"no such file (expected the adapter's {what}; run cardiofusion adapt first)")
    try:
        return pd.read_csv(path, dtype={"exam_id": str, "patient_id": str}, keep_default_na=True)
    except Exception as e:  # pandas raises many types
        raise ReadError(path, f"not a readable CSV ({type(e).__name__}: {e})") from None


def _superclass_columns(labels: pd.DataFrame) -> pd.DataFrame:
    sc = labels["superclasses"].fillna("").astype(str)
    sets = [set(filter(None, s.split("|"))) for s in sc]
    out = {}
    for name in PTBXL_SUPERCLASSES:
        out[name] = [np.nan if not s else float(name in s) for s in sets]
    return pd.DataFrame(out, index=labels.index)


def _parse_folds(spec: Sequence[int] | int | None) -> list[int]:
    if spec is None:
        return []
    if isinstance(spec, (int, np.integer)):
        return [int(spec)]
    return [int(f) for f in spec]


def single_modality_cohort(
    adapter_dir: str | os.PathLike,
    columns: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    *,
    modality: str | None = None,
    val_folds: Sequence[int] | int | None = None,
    test_folds: Sequence[int] | int | None = None,
    fractions: Sequence[float] = (0.70, 0.15, 0.15),
    seed: int = 0,
    task: dict[str, Any] | None = None,
) -> SingleModalityResult:
    """Build a one-modality manifest from an adapter's output folder (see the module docstring).

    Args:
        adapter_dir: the folder ``cardiofusion adapt ...`` wrote.
        columns: the task's target columns (each must exist after derivation).
        out_dir: where to write ``manifest.parquet`` and ``config.json`` (``None``: nothing written).
        modality: ``ecg`` or ``cxr``; default: the only index the adapter wrote (MIMIC writes both: say which).
        val_folds, test_folds: the data set's folds (``strat_fold``) for val / test; the rest is train.
        fractions: train / val / test patient fractions of a random split (no folds, no adapter split).
        seed: seed of a random split.
        task: the task definition, recorded in ``config.json``.

    Raises:
        ReadError: a missing or unreadable adapter file.
        ConfigError: no or two modalities, a target column the data set does not have, folds asked of a data
            set without ``strat_fold``, a fold in both val and test, an empty split, or a patient in two splits.
    """
    root = Path(adapter_dir)
    if not root.is_dir():
        raise ReadError(root, "no such folder (expected the output of cardiofusion adapt)")
    info_path = root / OUTPUT_FILES["info"]
    if not info_path.is_file():
        raise ReadError(info_path, "no such file (expected the adapter's adapter.json; run cardiofusion adapt first)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ReadError(info_path, f"not valid JSON ({e})") from None
    dataset = str(info.get("dataset", "unknown"))
    present = [m for m in MODALITIES if (root / OUTPUT_FILES[f"{m}_index"]).is_file()]
    if modality is None:
        if len(present) != 1:
            raise ConfigError(f"{root}: the adapter wrote {' and '.join(present) or 'no'} index tables; "
                              "choose one with --modality ecg|cxr")
        modality = present[0]
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be 'ecg' or 'cxr', got {modality!r}")
    if modality not in present:
        raise ConfigError(f"{root}: the adapter wrote no {OUTPUT_FILES[f'{modality}_index']}")
    index_path = root / OUTPUT_FILES[f"{modality}_index"]
    labels_path = root / OUTPUT_FILES["labels"]
    index = _read(index_path, f"{modality} index")
    labels = _read(labels_path, "label table")
    if "modality" in labels.columns:
        labels = labels[labels["modality"] == modality]
    labels = labels.drop(columns=[c for c in ("modality", "patient_id") if c in labels.columns])
    if labels["exam_id"].duplicated().any():
        raise ReadError(labels_path, f"exam_id {labels.loc[labels['exam_id'].duplicated(), 'exam_id'].iloc[0]!r} "
                                     "appears twice")
    derived = pd.DataFrame(index=labels.index)
    if "superclasses" in labels.columns:
        derived = _superclass_columns(labels)
    labels = pd.concat([labels, derived.drop(columns=[c for c in derived.columns if c in labels.columns])], axis=1)
    df = index.merge(labels, on="exam_id", how="inner", suffixes=("", "_label"))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = [c for c in labels.columns if c not in ("exam_id", "split", "strat_fold")]
        raise ConfigError(f"{labels_path}: the task's column(s) {', '.join(missing)} are not in the {dataset} "
                          f"labels (have: {', '.join(have)})")
    if df.empty:
        raise ConfigError(f"{root}: no indexed {modality} record has labels")

    # ---- split ------------------------------------------------------------------------------------
    vf, tf = _parse_folds(val_folds), _parse_folds(test_folds)
    pseudo = df["patient_id"].astype(str).str.startswith(("file:", "cinc-"))  # adapters' one-record "patients"
    split_unit = ("record" if modality == "ecg" else "image") if pseudo.all() else "patient"
    if pseudo.any() and not pseudo.all():
        split_unit = f"patient ({int(pseudo.sum())} records without a patient id are their own group)"
    if vf or tf:
        if "strat_fold" not in df.columns:
            raise ConfigError(f"{labels_path}: --val-folds / --test-folds need the data set's strat_fold column "
                              f"({dataset} has none)")
        both = set(vf) & set(tf)
        if both:
            raise ConfigError(f"fold(s) {sorted(both)} are in both --val-folds and --test-folds")
        fold = pd.to_numeric(df["strat_fold"], errors="coerce").astype("Int64")
        df["split"] = np.where(fold.isin(tf), "test", np.where(fold.isin(vf), "val", "train"))
        df["fold"] = fold
        rule = f"strat_fold: val {vf}, test {tf}, train the other folds"
    elif "split" in df.columns and df["split"].notna().all():
        df["fold"] = pd.to_numeric(df["strat_fold"], errors="coerce").astype("Int64") if "strat_fold" in df.columns \
            else pd.array([pd.NA] * len(df), dtype="Int64")
        rule = f"the adapter's split ({info.get('split', 'as written in labels.csv')})"
    else:
        strat = next((c for c in columns if set(pd.to_numeric(df[c], errors="coerce").dropna().unique()) <= {0, 1}),
                     None)
        recs = pl.DataFrame({"patient_id": df["patient_id"].astype(str).tolist(),
                             "_y": pd.to_numeric(df[strat], errors="coerce").tolist() if strat else [0] * len(df)})
        splits = assign_splits(patient_table(recs, "_y"), tuple(fractions), seed=seed, stratify=strat is not None)
        df = df.drop(columns=[c for c in ("split",) if c in df.columns]).merge(
            splits.to_pandas(), on="patient_id", how="left")
        df["fold"] = pd.array([pd.NA] * len(df), dtype="Int64")
        rule = (f"random {split_unit.split(' ')[0]}-grouped split {list(fractions)} (seed {seed}"
                + (f", stratified by {strat})" if strat else ")"))
    per_patient = df.groupby("patient_id")["split"].nunique()
    if (per_patient > 1).any():
        raise ConfigError(f"{labels_path}: patient {per_patient[per_patient > 1].index[0]!r} is in two splits")
    counts = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise ConfigError(f"{root}: the {', '.join(empty)} split(s) would be empty ({rule})")

    # ---- manifest ---------------------------------------------------------------------------------
    other = "cxr" if modality == "ecg" else "ecg"
    out = pd.DataFrame({
        "record_id": df["exam_id"].astype(str),
        "patient_id": df["patient_id"].astype(str),
        "split": df["split"].astype(str),
        "fold": df["fold"],
        "modality": modality,
        f"{modality}_exam_id": df["exam_id"].astype(str),
        f"{modality}_path": df["path"].astype(str),
        f"{modality}_datetime": pd.to_datetime(df.get("exam_datetime"), errors="coerce"),
        f"{other}_exam_id": pd.Series([None] * len(df), dtype=object),
        f"{other}_path": pd.Series([None] * len(df), dtype=object),
        f"{other}_datetime": pd.Series([pd.NaT] * len(df), dtype="datetime64[ns]"),
        "age": pd.to_numeric(df.get("age"), errors="coerce"),
        "sex": df.get("sex"),
    }, index=df.index)
    out = out[list(BASE_COLUMNS)]
    if modality == "ecg":
        for c in _ECG_OPTIONS:
            if c in df.columns:
                out[c] = df[c]
    targets = list(dict.fromkeys(columns))
    label_cols = [c for c in labels.columns if c not in ("exam_id", "split", "strat_fold") and c not in out.columns]
    for c in dict.fromkeys(targets + label_cols):
        if c in out.columns:
            continue
        v = df[c]
        num = pd.to_numeric(v, errors="coerce")
        out[c] = num if (num.notna() | v.isna()).all() else v
    out = out.sort_values(["split", "patient_id", "record_id"], kind="stable").reset_index(drop=True)

    n_patients = {s: int(out.loc[out["split"] == s, "patient_id"].nunique()) for s in counts}
    cfg = {
        "kind": "single_modality",
        "dataset": dataset,
        "modalities": [modality],
        "adapter_dir": str(root.resolve()),
        "task": task,
        "target_columns": targets,
        "split_rule": rule,
        "split_unit": split_unit,
        "records": counts,
        "patients": n_patients,
        "label_definitions": info.get("label_definitions", {}),
        "superclass_rule": (f"PTB-XL superclasses: diagnostic_class of scp_statements.csv, likelihood >= "
                            f"{info.get('config', {}).get('min_likelihood')}; no diagnostic statement -> unknown")
        if "superclasses" in labels.columns else None,
        "cardiofusion_version": __version__,
    }
    result = SingleModalityResult(manifest=out, info=cfg)
    if out_dir is not None:
        o = Path(out_dir)
        o.mkdir(parents=True, exist_ok=True)
        files = {"manifest": o / "manifest.parquet", "config": o / "config.json"}
        out.to_parquet(files["manifest"], index=False)
        files["config"].write_text(json.dumps(cfg, indent=2, default=str) + "\n", encoding="utf-8")
        result.files = files
    return result


__all__ = ["BASE_COLUMNS", "PTBXL_SUPERCLASSES", "SingleModalityResult", "single_modality_cohort"]
