"""Patient-level train/val/test split and k-fold assignment, stratified and seeded.

A patient is positive when any of their records is AS (label 1).  Patients are sorted by id, then
shuffled inside each stratum (positives, negatives) with ``numpy.random.default_rng(seed)``, so the
result depends only on the set of (patient, label) pairs and the seed, never on row order.

* Split: each stratum is cut by the largest-remainder method so that every stratum matches the
  fractions as closely as whole patients allow (a stratum of 3 patients at 70/15/15 -> 2/1/0 ...).
* Folds: shuffled patients of each stratum are dealt round-robin, the deal continuing from one
  stratum to the next, so folds differ by at most one patient overall and per stratum.

All records of a patient share the patient's split and fold: no patient is ever in two sets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from ..errors import ConfigError
from .config import SPLIT_NAMES


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of n items to the fractions (ties -> earlier set)."""
    exact = [n * f for f in fractions]
    counts = [int(np.floor(x + 1e-9)) for x in exact]
    left = n - sum(counts)
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def patient_table(records: pl.DataFrame, label_col: str = "label") -> pl.DataFrame:
    """One row per patient: ``patient_id``, ``positive`` (any record labelled 1), ``n_records``."""
    if "patient_id" not in records.columns:
        raise ConfigError("records need a patient_id column to be split")
    lab = pl.col(label_col) if label_col in records.columns else pl.lit(0)
    return (
        records.group_by("patient_id")
        .agg((lab == 1).any().fill_null(False).alias("positive"), pl.len().alias("n_records"))
        .sort("patient_id")
    )


def _strata(patients: pl.DataFrame, stratify: bool, rng: np.random.Generator) -> list[np.ndarray]:
    ids = patients["patient_id"].to_numpy()
    if stratify:
        pos = patients["positive"].to_numpy()
        groups = [ids[pos], ids[~pos]]
    else:
        groups = [ids]
    return [g[rng.permutation(len(g))] for g in groups]


def assign_splits(
    patients: pl.DataFrame,
    fractions: Sequence[float] = (0.70, 0.15, 0.15),
    *,
    seed: int = 0,
    stratify: bool = True,
    names: Sequence[str] = SPLIT_NAMES,
) -> pl.DataFrame:
    """``patient_id -> split`` for a :func:`patient_table`; deterministic for a given seed."""
    if len(fractions) != len(names):
        raise ConfigError(f"{len(names)} split fractions expected, got {len(fractions)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be non-negative and sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    out_ids: list[np.ndarray] = []
    out_split: list[np.ndarray] = []
    for group in _strata(patients, stratify, rng):
        counts = _allocate(len(group), fractions)
        out_ids.append(group)
        out_split.append(np.repeat(np.asarray(names, dtype=object), counts))
    ids = np.concatenate(out_ids) if out_ids else np.array([], dtype=object)
    split = np.concatenate(out_split) if out_split else np.array([], dtype=object)
    return pl.DataFrame({"patient_id": ids.astype(str).tolist(), "split": split.astype(str).tolist()},
                        schema={"patient_id": pl.String, "split": pl.String})


def assign_folds(patients: pl.DataFrame, n_folds: int, *, seed: int = 0, stratify: bool = True) -> pl.DataFrame:
    """``patient_id -> fold`` (0..n_folds-1), grouped by patient, stratified, deterministic."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    # a seed stream apart from the split's, so asking for folds never changes the split
    rng = np.random.default_rng([seed, 1])
    ids, folds = [], []
    start = 0
    for group in _strata(patients, stratify, rng):
        ids.append(group)
        folds.append((start + np.arange(len(group))) % n_folds)
        start = (start + len(group)) % n_folds
    ids_a = np.concatenate(ids) if ids else np.array([], dtype=object)
    folds_a = np.concatenate(folds) if folds else np.array([], dtype=np.int64)
    return pl.DataFrame({"patient_id": ids_a.astype(str).tolist(), "fold": folds_a.astype(np.int64)},
                        schema={"patient_id": pl.String, "fold": pl.Int64})


def split_records(
    records: pl.DataFrame,
    fractions: Sequence[float] = (0.70, 0.15, 0.15),
    *,
    seed: int = 0,
    stratify: bool = True,
    n_folds: int | None = None,
    fold_scope: str = "all",
    label_col: str = "label",
) -> pl.DataFrame:
    """Add ``split`` and ``fold`` (null unless ``n_folds``) to every record, by patient.

    Args:
        records: a frame with ``patient_id`` and ``label``.
        fractions: train / val / test fractions of patients.
        seed: seed of the shuffles.
        stratify: stratify by patient label.
        n_folds: number of folds; ``None`` leaves ``fold`` null.
        fold_scope: ``"all"`` patients get a fold, or ``"train_val"`` only (test patients: null).
    """
    patients = patient_table(records, label_col)
    splits = assign_splits(patients, fractions, seed=seed, stratify=stratify)
    out = records.join(splits, on="patient_id", how="left", maintain_order="left")
    if n_folds is None:
        return out.with_columns(pl.lit(None, pl.Int64).alias("fold"))
    if fold_scope not in ("all", "train_val"):
        raise ConfigError(f"fold_scope must be 'all' or 'train_val', got {fold_scope!r}")
    if fold_scope == "train_val":
        keep = splits.filter(pl.col("split") != "test")["patient_id"].implode()
        patients = patients.filter(pl.col("patient_id").is_in(keep))
    folds = assign_folds(patients, n_folds, seed=seed, stratify=stratify)
    return out.join(folds, on="patient_id", how="left", maintain_order="left")


__all__ = ["assign_folds", "assign_splits", "patient_table", "split_records"]
