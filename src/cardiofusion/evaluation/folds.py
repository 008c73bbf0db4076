"""Cross-validation grouped by patient: one model per fold, summary mean +- sd per metric.

Fold ``i`` is the test set, fold ``(i + 1) mod k`` the validation set (early stopping, calibration and the
threshold), the other folds train.  Folds come from the manifest's ``fold`` column (patient-grouped,
``cardiofusion.cohort.split``); when it is empty they are assigned here the same way
(:func:`cardiofusion.cohort.split.assign_folds`, stratified by patient label).  A patient is in one fold,
so never in two of train / val / test.

``evaluate_folds`` summarises any per-fold score tables (models that are not runs included);
``cardiofusion.recipes.crossval.cross_validate`` (a recipe step) trains the runs first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .metrics import METRIC_LABELS, METRICS

EXCLUDED = "excluded"


def fold_splits(manifest: pd.DataFrame, n_folds: int | None = None, *, seed: int = 0) -> tuple[pd.Series, int]:
    """Fold of every record ``(n,)`` (``-1``: no fold) and the number of folds.

    Uses the manifest's ``fold`` column when it has values (``n_folds`` must then match or be None), else
    assigns ``n_folds`` (default 5) patient-grouped, label-stratified folds with ``seed``.
    """
    if "patient_id" not in manifest.columns:
        raise ConfigError("the manifest has no patient_id column")
    if "fold" in manifest.columns and manifest["fold"].notna().any():
        folds = manifest["fold"].fillna(-1).astype(int).reset_index(drop=True)
        k = int(folds[folds >= 0].nunique())
        if n_folds is not None and int(n_folds) != k:
            raise ConfigError(f"the manifest has {k} folds but {n_folds} were asked for; rebuild the cohort with "
                              f"n_folds={n_folds} or leave the number out")
    else:
        import polars as pl

        from ..cohort.split import assign_folds, patient_table

        k = int(n_folds or 5)
        records = pl.from_pandas(manifest[["patient_id", "label"]].astype({"patient_id": str}))
        table = assign_folds(patient_table(records), k, seed=seed).to_pandas()
        mapping = dict(zip(table["patient_id"], table["fold"]))
        folds = manifest["patient_id"].astype(str).map(mapping).fillna(-1).astype(int).reset_index(drop=True)
    if k < 3:
        raise ConfigError(f"cross-validation needs at least 3 folds (test, validation, training), got {k}")
    per_patient = pd.DataFrame({"p": manifest["patient_id"].astype(str).to_numpy(), "f": folds.to_numpy()})
    if (per_patient.groupby("p")["f"].nunique() > 1).any():
        raise ConfigError("the manifest's folds split a patient's records across folds")
    return folds, k


def stratified_group_folds(groups: Any, strata: Any, n_folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold of every record ``(n,)``: grouped (a group -- a patient -- is in one fold) and stratified by
    ``strata`` (e.g. a multiclass label), by scikit-learn's ``StratifiedGroupKFold`` (shuffled with ``seed``).

    Records with an unknown stratum (NaN / None) get fold ``-1`` (left out of every fold).  Raises
    :class:`ConfigError` when there are fewer groups than folds or a group's records have different strata.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    g = pd.Series(np.asarray(groups)).astype(str).to_numpy()
    s = pd.Series(np.asarray(strata, dtype=object).ravel())
    known = s.notna().to_numpy()
    out = np.full(g.size, -1, dtype=np.int64)
    k = int(n_folds)
    if k < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    if not known.any():
        return out
    per_group = pd.DataFrame({"g": g[known], "s": s[known].astype(str).to_numpy()})
    if (per_group.groupby("g")["s"].nunique() > 1).any():
        raise ConfigError("a patient's records have different classes, so the folds cannot be stratified by patient")
    if per_group["g"].nunique() < k:
        raise ConfigError(f"{per_group['g'].nunique()} patients with a known class, fewer than the {k} folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    idx = np.nonzero(known)[0]
    for fold, (_, test) in enumerate(splitter.split(np.zeros(idx.size), per_group["s"], per_group["g"])):
        out[idx[test]] = fold
    return out


def fold_manifest(manifest: pd.DataFrame, folds: pd.Series, test_fold: int, n_folds: int) -> pd.DataFrame:
    """The manifest with ``split`` rewritten for one fold: test = fold ``i``, val = fold ``(i+1) mod k``,
    train = the rest, ``excluded`` = records without a fold."""
    out = manifest.reset_index(drop=True).copy()
    f = folds.to_numpy()
    val_fold = (test_fold + 1) % n_folds
    out["split"] = np.where(f < 0, EXCLUDED, np.where(f == test_fold, "test", np.where(f == val_fold, "val", "train")))
    return out


def summarize_folds(per_fold: Mapping[Any, Mapping[str, Mapping[str, float]]],
                    metrics: Sequence[str] = METRICS) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean and sample standard deviation (ddof 1) over folds of each model's metrics.

    Args:
        per_fold: ``{fold: {model: {metric: value}}}``.

    Returns:
        ``{model: {metric: {"mean", "sd", "n", "values"}}}``; NaN fold values are left out of mean and sd.
    """
    models: list[str] = []
    for fold in per_fold.values():
        for name in fold:
            if name not in models:
                models.append(name)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in models:
        out[name] = {}
        for metric in metrics:
            values = [float(per_fold[f][name].get(metric, np.nan)) if name in per_fold[f] else np.nan
                      for f in per_fold]
            arr = np.asarray(values, dtype=float)
            ok = arr[np.isfinite(arr)]
            out[name][metric] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                                 "sd": float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
                                 "n": int(ok.size), "values": values}
    return out


@dataclass
class CrossValResult:
    """Per-fold evaluations and their summary.

    Attributes:
        out_dir: the cross-validation folder.
        per_fold: ``{fold: {model: {metric: value}}}`` (point estimates on each test fold).
        summary: ``{model: {metric: {"mean", "sd", "n", "values"}}}``.
        runs: ``{fold: {model: run_dir}}`` (empty for table-only evaluations).
        paths: written files (``crossval.json``, ``crossval.csv``, ``crossval.png``, per-fold reports).
    """

    out_dir: Path
    per_fold: dict[int, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, dict[str, Any]]]
    runs: dict[int, dict[str, str]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = []
        for name, metrics in self.summary.items():
            lines.append(f"{name} ({len(self.per_fold)} folds):")
            for metric, s in metrics.items():
                lines.append(f"  {METRIC_LABELS[metric]:<22} {s['mean']:.3f} +- {s['sd']:.3f}")
        return lines


def evaluate_folds(fold_tables: Mapping[int, Mapping[str, tuple[Any, Any]]], out_dir: str | os.PathLike, *,
                   n_boot: int = 200, seed: int = 0, threshold_rule: str = "youden", target: float | None = None,
                   calibration: str = "platt", manifests: Mapping[int, pd.DataFrame] | None = None,
                   runs: Mapping[int, Mapping[str, str]] | None = None, progress: bool = False) -> CrossValResult:
    """Evaluate each fold's ``{model: (val_table, test_table)}`` (an evaluation folder per fold, with its
    own bootstrap CIs) and summarise the folds as mean +- sd; writes ``crossval.json`` / ``.csv`` / ``.png``."""
    from .evaluate import _write_json, evaluate_tables
    from .figures import cv_figure

    out = Path(out_dir)
    per_fold: dict[int, dict[str, dict[str, float]]] = {}
    paths: dict[str, Path] = {}
    for fold, tables in fold_tables.items():
        res = evaluate_tables(tables, out / f"fold_{fold}" / "evaluation", n_boot=n_boot, seed=seed,
                              threshold_rule=threshold_rule, target=target, calibration=calibration,
                              manifest=(manifests or {}).get(fold), subgroups=[], split=f"test (fold {fold})",
                              runs=(runs or {}).get(fold), progress=progress,
                              title=f"Cross-validation fold {fold}")
        per_fold[int(fold)] = {name: {m: m_eval.metrics[m].value for m in METRICS}
                               for name, m_eval in res.models.items()}
        paths[f"report_fold_{fold}"] = res.report
    summary = summarize_folds(per_fold)
    result = CrossValResult(out_dir=out, per_fold=per_fold, summary=summary,
                            runs={int(k): dict(v) for k, v in (runs or {}).items()}, paths=paths)
    result.paths["crossval_json"] = _write_json(out / "crossval.json", {
        "summary": summary, "per_fold": {str(k): v for k, v in per_fold.items()},
        "runs": {str(k): v for k, v in result.runs.items()},
        "design": "fold i = test, fold (i+1) mod k = validation (early stopping, calibration, threshold), "
                  "other folds = training; folds grouped by patient; sd with ddof 1"})
    rows = [{"model": name, "metric": metric, "label": METRIC_LABELS[metric], "mean": s["mean"], "sd": s["sd"],
             "n_folds": s["n"], **{f"fold_{f}": v for f, v in zip(per_fold, s["values"])}}
            for name, metrics in summary.items() for metric, s in metrics.items()]
    result.paths["crossval_csv"] = out / "crossval.csv"
    pd.DataFrame(rows).to_csv(result.paths["crossval_csv"], index=False)
    fig_rows = [{"metric": metric, "label": f"{name}: {METRIC_LABELS[metric]}", "values": s["values"],
                 "mean": s["mean"], "sd": s["sd"]} for name, metrics in summary.items()
                for metric, s in metrics.items()]
    result.paths["crossval_png"] = cv_figure(fig_rows, out / "crossval.png")
    return result


__all__ = ["CrossValResult", "evaluate_folds", "fold_manifest", "fold_splits", "stratified_group_folds",
           "summarize_folds"]
