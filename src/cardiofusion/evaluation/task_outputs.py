"""Files of a non-binary evaluation: metrics.json, metrics.csv, comparisons.csv, predictions.csv,
confusion.csv (multiclass) and the figures (:mod:`.figures_tasks`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..configfile import jsonable
from ..tasks import Task
from .metrics import roc_points
from .multiclass import MulticlassMetrics
from .multilabel import MultilabelMetrics
from .results import EvaluationResult
from .taskmetrics import MetricFamily


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2))
    os.replace(tmp, path)
    return path


def write_task_outputs(result: EvaluationResult, task: Task, base: pd.DataFrame, aligned: dict[str, pd.DataFrame],
                       families: dict[str, MetricFamily]) -> None:
    out = result.out_dir
    result.paths["metrics_json"] = _write_json(out / "metrics.json", result.metrics_json())
    rows = []
    for name, m in result.models.items():
        for key, iv in m.metrics.items():
            info = m.infos[key]
            rows.append({"model": name, "metric": key, "label": info.label, "average": info.average,
                         "target": info.target, "unit": info.unit, "value": iv.value, "ci_low": iv.ci_low,
                         "ci_high": iv.ci_high, "median": iv.median, "n_valid": iv.n_valid})
    result.paths["metrics_csv"] = out / "metrics.csv"
    pd.DataFrame(rows).to_csv(result.paths["metrics_csv"], index=False)
    infos = next(iter(result.models.values())).infos
    crow = []
    for c in result.comparisons.values():
        for key, d in c.differences.items():
            crow.append({"model_a": c.model_a, "model_b": c.model_b, "metric": key, "average": infos[key].average,
                         "target": infos[key].target, "difference": d.difference, "ci_low": d.ci_low,
                         "ci_high": d.ci_high, "median": d.median, "p_value": d.p_value, "test": "paired bootstrap"})
    result.paths["comparisons_csv"] = out / "comparisons.csv"
    pd.DataFrame(crow, columns=["model_a", "model_b", "metric", "average", "target", "difference", "ci_low",
                                "ci_high", "median", "p_value", "test"]).to_csv(result.paths["comparisons_csv"],
                                                                               index=False)
    result.paths["subgroups_csv"] = out / "subgroups.csv"
    result.subgroups.to_csv(result.paths["subgroups_csv"], index=False)
    pred = base[["record_id", "patient_id", *task.label_columns()]].copy()
    for name, t in aligned.items():
        for col in task.prediction_columns():
            pred[f"{name}:{col}"] = t[col].to_numpy()
        fam = families[name]
        if isinstance(fam, MulticlassMetrics):
            pred[f"{name}:predicted"] = [task.classes[i] for i in fam.pred]
        elif isinstance(fam, MultilabelMetrics):
            for j, col in enumerate(task.target_names):
                pred[f"{name}:positive_{col}"] = fam.d[:, j].astype(int)
    result.paths["predictions_csv"] = out / "predictions.csv"
    pred.to_csv(result.paths["predictions_csv"], index=False)
    if task.kind == "multiclass":
        crows = []
        for name, m in result.models.items():
            cm = np.asarray(m.confusion, dtype=float)
            row = cm.sum(axis=1, keepdims=True)
            frac = np.divide(cm, row, out=np.full_like(cm, np.nan), where=row > 0)
            for i, true in enumerate(task.classes):
                for j, predicted in enumerate(task.classes):
                    crows.append({"model": name, "true": true, "predicted": predicted, "count": int(cm[i, j]),
                                  "fraction_of_true": frac[i, j]})
        result.paths["confusion_csv"] = out / "confusion.csv"
        pd.DataFrame(crows).to_csv(result.paths["confusion_csv"], index=False)


def write_task_figures(result: EvaluationResult, task: Task, aligned: dict[str, pd.DataFrame],
                       families: dict[str, MetricFamily]) -> dict[str, Path]:
    from . import figures_tasks as fg

    out = result.out_dir / "figures"
    paths: dict[str, Path] = {}
    if task.kind == "multiclass":
        paths["confusion_matrix"] = fg.confusion_matrix_figure(
            {n: m.confusion for n, m in result.models.items()}, task.classes, out / "confusion_matrix.png")
    if task.kind in ("multiclass", "multilabel"):
        curves: dict[str, dict[str, dict[str, Any]]] = {}
        for name, fam in families.items():
            per = {}
            for j, cls in enumerate(task.classes):
                if isinstance(fam, MulticlassMetrics):
                    y, s = (fam.y == j).astype(float), fam.p[:, j]
                else:
                    k = fam.known[:, j]
                    y, s = fam.y[k, j], fam.p[k, j]
                if 0 < y.sum() < y.size:
                    fpr, tpr = roc_points(y, s)
                    iv = result.models[name].metrics[f"auroc:{cls}"]
                    per[cls] = {"fpr": fpr, "tpr": tpr, "value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}
            curves[name] = per
        if any(curves.values()):
            paths["roc"] = fg.class_roc_figure(curves, out / "roc.png",
                                               what="class" if task.kind == "multiclass" else "label")
    if task.kind == "multilabel":
        cal: dict[str, dict[str, dict[str, Any]]] = {}
        for name, fam in families.items():
            m = result.models[name].metrics
            cal[name] = {}
            for j, label in enumerate(task.classes):
                k = fam.known[:, j]
                if k.any():
                    cal[name][label] = {"labels": fam.y[k, j], "probabilities": fam.p[k, j],
                                        "ece": m[f"ece:{label}"].value, "brier": m[f"brier:{label}"].value}
        paths["calibration"] = fg.label_calibration_figure(cal, out / "calibration.png")
    if task.kind == "regression":
        data: dict[str, dict[str, dict[str, Any]]] = {}
        for name, fam in families.items():
            m = result.models[name].metrics
            data[name] = {}
            for j, target in enumerate(task.classes):
                k = fam.known[:, j]
                data[name][target] = {"truth": fam.y[k, j], "pred": fam.p[k, j], "unit": task.unit(task.columns[j]),
                                      **{key: m[f"{key}:{target}"].value
                                         for key in ("mae", "r2", "bias", "loa_low", "loa_high")}}
        paths["scatter"] = fg.scatter_figure(data, out / "scatter.png")
        paths["bland_altman"] = fg.bland_altman_figure(data, out / "bland_altman.png")
    return paths


__all__ = ["write_task_figures", "write_task_outputs"]
