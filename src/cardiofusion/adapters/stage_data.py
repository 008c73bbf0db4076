"""Stage-1 data of the two-stage reference recipe: one single-modality cohort per branch, disjoint from the
paired cohort's test split, and the ceilings that put its results in context.

A fusion model is only as good as its branches, and a paired (or pseudo-paired) cohort holds few records of
each modality.  The two-stage recipe (:mod:`cardiofusion.recipes.two_stage`) therefore trains each branch first
on **every labelled record of its modality** and fuses afterwards.  :func:`branch_cohort` writes that branch's
cohort (``manifest.parquet`` with a ``label`` column, one modality, plus ``stage_data.json``) from one of:

* ``pool`` -- the pseudo-paired cohort's own pool (``ecg_pool.csv`` / ``cxr_pool.csv`` of
  ``cardiofusion pairing build``): every labelled record of the source with the split the pairing used
  (PTB-XL ``strat_fold``; NIH images by file), label = the pool label;
* ``cohort`` -- the paired cohort's own records of that modality, label = the cohort ``label``;
* a path -- a single-modality cohort folder or manifest (``cardiofusion cohort from-adapter``), label =
  ``label_column``.

Whatever the source, **no file of the paired cohort's test split enters the branch's training or validation
rows**, and no file of its validation split the branch's training rows: such rows are dropped (counted in
``stage_data.json``).  :func:`check_disjoint` proves it on the written manifests (the recipe calls it before
training).  Files are compared by resolved path and by exam id (``<dataset>:<exam_id>`` in a pseudo-paired
manifest).

Ceilings (:func:`ideal_combiner_auroc`): in a pseudo-paired cohort each modality shows the latent state ``D``
through its pool label with sensitivity / specificity ``(se, sp)``; a branch separates its own pool labels
with AUROC ``a``.  Under the binormal model (branch score ``N(0, 1)`` for label 0 and ``N(d, 1)`` for label 1,
``d = sqrt(2) Phi^-1(a)``) the best any combiner of the two branch scores can do is the AUROC of the exact
posterior of ``D``; with ``a = 1`` for both it is the pool-label ceiling of ``pairing.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ConfigError, ReadError

STAGE_DATA_JSON = "stage_data.json"
MODALITIES = ("ecg", "cxr")
_ECG_OPTIONS = ("fs", "units", "resolution_uv", "pacemaker")


@dataclass
class BranchCohort:
    """A branch's stage-1 cohort (:func:`branch_cohort`)."""

    manifest_path: Path
    manifest: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def _resolved(paths: pd.Series) -> pd.Series:
    return paths.astype(str).map(lambda p: os.path.realpath(p) if p and p not in ("nan", "None") else "")


def paired_files(paired: pd.DataFrame, modality: str, splits: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(resolved paths, exam ids) of ``modality`` in the paired cohort's ``splits``."""
    part = paired[paired["split"].isin(splits)]
    paths = _resolved(part[f"{modality}_path"].dropna())
    ids = part[f"{modality}_exam_id"].dropna().astype(str)
    return set(paths) - {""}, set(ids)


def _read_manifest(path: str | os.PathLike) -> tuple[Path, pd.DataFrame]:
    p = Path(path)
    manifest = p / "manifest.parquet" if p.is_dir() else p
    if not manifest.is_file():
        raise ReadError(manifest, "no cohort manifest (give a cohort folder with manifest.parquet or the file)")
    try:
        return manifest, pd.read_parquet(manifest)
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types
        raise ReadError(manifest, f"not a readable manifest ({type(e).__name__}: {e})") from None


def _from_pool(paired_dir: Path, modality: str) -> tuple[pd.DataFrame, str]:
    pool_csv = paired_dir / f"{modality}_pool.csv"
    if not pool_csv.is_file():
        raise ReadError(pool_csv, f"no {modality} pool (source 'pool' needs a pseudo-paired cohort from "
                                  "cardiofusion pairing build)")
    pool = pd.read_csv(pool_csv, dtype={"exam_id": str, "patient_id": str})
    for col in ("exam_id", "patient_id", "path", "pool_label", "split"):
        if col not in pool.columns:
            raise ReadError(pool_csv, f"no {col!r} column")
    info_path = paired_dir / "pairing.json"
    try:
        pools = json.loads(info_path.read_text(encoding="utf-8"))["pools"][modality]
        dataset, definition = str(pools["dataset"]), str(pools["definition"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ReadError(info_path, f"no pools.{modality}.dataset / definition (not a pairing build folder?)") from None
    frame = pd.DataFrame({"record_id": f"{dataset}:" + pool["exam_id"].astype(str),
                          "patient_id": f"{dataset}:" + pool["patient_id"].astype(str),
                          "split": pool["split"].astype(str),
                          f"{modality}_exam_id": f"{dataset}:" + pool["exam_id"].astype(str),
                          f"{modality}_path": pool["path"].astype(str),
                          "label": pd.to_numeric(pool["pool_label"], errors="coerce")})
    for col in ("age", "sex", *(_ECG_OPTIONS if modality == "ecg" else ())):
        if col in pool.columns:
            frame[col] = pool[col].to_numpy()
    return frame, f"{dataset} pool of the pseudo-paired cohort ({definition})"


def _from_cohort(manifest: pd.DataFrame, modality: str, label_column: str, where: str) -> pd.DataFrame:
    for col in ("record_id", "patient_id", "split", f"{modality}_exam_id", f"{modality}_path", label_column):
        if col not in manifest.columns:
            raise ConfigError(f"{where}: the manifest has no {col!r} column")
    part = manifest[manifest[f"{modality}_path"].notna() & (manifest[f"{modality}_path"].astype(str) != "")]
    frame = pd.DataFrame({"record_id": part["record_id"].astype(str), "patient_id": part["patient_id"].astype(str),
                          "split": part["split"].astype(str),
                          f"{modality}_exam_id": part[f"{modality}_exam_id"].astype(str),
                          f"{modality}_path": part[f"{modality}_path"].astype(str),
                          "label": pd.to_numeric(part[label_column], errors="coerce")})
    for col in ("age", "sex", *(_ECG_OPTIONS if modality == "ecg" else ())):
        if col in part.columns:
            frame[col] = part[col].to_numpy()
    return frame.reset_index(drop=True)


def branch_cohort(paired_manifest: str | os.PathLike, modality: str, out_dir: str | os.PathLike, *,
                  source: str = "pool", label_column: str = "label") -> BranchCohort:
    """Write the stage-1 cohort of one branch (see the module docstring).

    Args:
        paired_manifest: the paired / pseudo-paired cohort (folder or ``manifest.parquet``) that stage 2 uses.
        modality: ``ecg`` or ``cxr``.
        out_dir: where ``manifest.parquet`` and ``stage_data.json`` go.
        source: ``pool``, ``cohort`` or a single-modality cohort folder / manifest.
        label_column: the 0/1 label column of a path source (``cohort``: the paired cohort's column).

    Raises:
        ConfigError: unknown modality or source, a missing column, or a split left without both classes.
        ReadError: a missing or unreadable file.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be 'ecg' or 'cxr', got {modality!r}")
    paired_path, paired = _read_manifest(paired_manifest)
    if source == "pool":
        frame, what = _from_pool(paired_path.parent, modality)
    elif source == "cohort":
        frame = _from_cohort(paired, modality, label_column, str(paired_path))
        what = f"the paired cohort's own {modality} records ({paired_path}), label {label_column!r}"
    else:
        src_path, src = _read_manifest(source)
        frame = _from_cohort(src, modality, label_column, str(src_path))
        what = f"single-modality cohort {src_path}, label {label_column!r}"
    frame = frame[frame["label"].isin([0, 1]) & frame["split"].isin(["train", "val", "test"])].copy()
    frame = frame.drop_duplicates(subset=[f"{modality}_exam_id"]).reset_index(drop=True)
    frame["_path"] = _resolved(frame[f"{modality}_path"])
    test_paths, test_ids = paired_files(paired, modality, ("test",))
    val_paths, val_ids = paired_files(paired, modality, ("val",))
    in_test = frame["_path"].isin(test_paths) | frame[f"{modality}_exam_id"].isin(test_ids)
    in_val = frame["_path"].isin(val_paths) | frame[f"{modality}_exam_id"].isin(val_ids)
    drop_train = (frame["split"] == "train") & (in_test | in_val)
    drop_val = (frame["split"] == "val") & in_test
    dropped = {"train": int(drop_train.sum()), "val": int(drop_val.sum())}
    frame = frame[~(drop_train | drop_val)].drop(columns="_path").reset_index(drop=True)
    other = "cxr" if modality == "ecg" else "ecg"
    frame["modality"] = modality
    frame[f"{other}_exam_id"] = pd.Series([None] * len(frame), dtype=object)
    frame[f"{other}_path"] = pd.Series([None] * len(frame), dtype=object)
    frame["label"] = frame["label"].astype(int)
    for s in ("train", "val"):
        labels = frame.loc[frame["split"] == s, "label"]
        if labels.nunique() < 2:
            raise ConfigError(f"the {modality} branch cohort ({what}) has {int((labels == 1).sum())} positive / "
                              f"{int((labels == 0).sum())} negative {s} records; both classes are needed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.parquet"
    frame.to_parquet(manifest_path, index=False)
    counts = {s: {"records": int((frame["split"] == s).sum()),
                  "positives": int(frame.loc[frame["split"] == s, "label"].sum()),
                  "files": int(frame.loc[frame["split"] == s, f"{modality}_path"].nunique())}
              for s in ("train", "val", "test")}
    info = {"modality": modality, "source": what, "paired_cohort": str(paired_path.resolve()),
            "records": counts, "dropped_as_in_paired_val_or_test": dropped,
            "rule": ("rows whose file is in the paired cohort's test split are dropped from train and val, rows "
                     "whose file is in its validation split from train; the test split is never trained on"),
            "cardiofusion_version": __version__}
    (out / STAGE_DATA_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return BranchCohort(manifest_path, frame, info)


def check_disjoint(paired_manifest: str | os.PathLike, trained_on: dict[str, str | os.PathLike]) -> dict[str, Any]:
    """Prove that no file of the paired cohort's test split is in the train or validation rows of the
    manifests a model was trained on.

    Args:
        paired_manifest: the paired cohort (folder or manifest).
        trained_on: ``{name: manifest}`` of every stage (the branch cohorts and the paired cohort itself).

    Returns:
        ``{name: {modality: {"train_val_files": n, "test_files": n, "overlap": 0}}}``.

    Raises:
        ConfigError: naming the manifest and the first shared file.
    """
    paired_path, paired = _read_manifest(paired_manifest)
    out: dict[str, Any] = {}
    for name, manifest in trained_on.items():
        path, frame = _read_manifest(manifest)
        fit_rows = frame[frame["split"].isin(["train", "val"])]
        out[name] = {}
        for m in MODALITIES:
            if f"{m}_path" not in frame.columns or fit_rows[f"{m}_path"].isna().all():
                continue
            test_paths, test_ids = paired_files(paired, m, ("test",))
            paths = set(_resolved(fit_rows[f"{m}_path"].dropna())) - {""}
            ids = set(fit_rows[f"{m}_exam_id"].dropna().astype(str))
            shared = sorted((paths & test_paths) | (ids & test_ids))
            if shared:
                raise ConfigError(f"{path}: {len(shared)} {m} file(s) of the test split of {paired_path} are in its "
                                  f"train/val rows (first: {shared[0]})")
            out[name][m] = {"train_val_files": len(paths), "test_files": len(test_paths), "overlap": 0}
    return out


def binormal_d(auroc: float) -> float:
    """The binormal separation ``d = sqrt(2) Phi^-1(AUROC)`` (equal variances)."""
    from scipy.stats import norm

    a = float(np.clip(auroc, 1e-9, 1 - 1e-9))
    return float(np.sqrt(2.0) * norm.ppf(a))


def ideal_combiner_auroc(auroc_ecg: float | None, auroc_cxr: float | None, *, sens_ecg: float, spec_ecg: float,
                         sens_cxr: float, spec_cxr: float, n: int = 400_000, seed: int = 0) -> float:
    """AUROC of the Bayes-optimal combiner of two branch scores in a pseudo-paired cohort (module docstring).

    ``auroc_*``: each branch's AUROC for its own pool label (None: the branch is left out, i.e. AUROC 0.5).
    Computed by simulation (``n`` synthetic patients per class, seeded): scores are drawn from the binormal
    model and ranked by the exact posterior odds of ``D``.
    """
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    d_true = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    log_lr = np.zeros(2 * n)
    for auc, se, sp in ((auroc_ecg, sens_ecg, spec_ecg), (auroc_cxr, sens_cxr, spec_cxr)):
        if auc is None or not np.isfinite(auc):
            continue
        d = binormal_d(auc)
        p_pos = np.where(d_true, se, 1 - sp)  # P(pool label 1 | D)
        lab = rng.random(2 * n) < p_pos
        s = rng.standard_normal(2 * n) + d * lab
        f1, f0 = norm.pdf(s - d), norm.pdf(s)
        log_lr += np.log(se * f1 + (1 - se) * f0) - np.log((1 - sp) * f1 + sp * f0)
    if not np.any(log_lr):
        return 0.5
    return float(roc_auc_score(d_true.astype(int), log_lr))


__all__ = ["STAGE_DATA_JSON", "BranchCohort", "binormal_d", "branch_cohort", "check_disjoint",
           "ideal_combiner_auroc", "paired_files"]
