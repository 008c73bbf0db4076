"""Evaluate models from their score tables: calibration and threshold on validation, metrics with
patient-level bootstrap CIs on test, paired comparisons (bootstrap + DeLong), subgroups, figures, report.

The core works on score TABLES (one row per record: ``record_id``, ``patient_id``, ``label``, ``score``;
optionally ``prob``), so anything that scores records -- a trained run, a voltage criterion, another
group's model -- is evaluated the same way::

    result = evaluate_tables({"ECG": (val_ecg, test_ecg), "Multimodal": (val_mm, test_mm)}, "eval/",
                             manifest="cohort/manifest.parquet")
    result = evaluate_runs({"ECG": "runs/ecg", "Multimodal": "runs/cooperative"}, "eval/")

Per model, in this order: a calibrator (Platt / isotonic / none) is fitted on the model's validation
scores; the decision threshold is chosen on the calibrated validation probabilities (Youden, or a target
sensitivity / specificity); both are then applied unchanged to the evaluated split.  Rank metrics
(AUROC, AUPRC) use the model's score (calibration does not reorder Platt-scaled scores; isotonic would add
ties); the threshold metrics use the decisions; the Brier score uses the calibrated probability.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..configfile import jsonable
from .calibration import Calibrator, Threshold, choose_threshold
from ..errors import ConfigError, ReadError
from ..tasks import Task, binary_task, load_task
from .bootstrap import (
    bootstrap_weights,
    paired_differences,
    percentile_summary,
)
from .delong import delong_ci, delong_test
from .results import Comparison, EvaluationResult, ModelEvaluation, model_pairs
from .metrics import (
    METRIC_LABELS,
    METRICS,
    RankedScores,
    metric_matrix,
    pr_points,
    roc_points,
)
from .subgroups import level_order, parse_subgroups, subgroup_levels

#: Keys of ``metrics.json`` that are not model names.
RESERVED_KEYS = ("comparisons", "settings")

REQUIRED_COLUMNS = ("record_id", "patient_id", "label", "score")

SPLIT_NAMES = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------
def prepare_table(table: pd.DataFrame | str | os.PathLike, what: str) -> tuple[pd.DataFrame, int]:
    """A score table with string ids, float labels/scores and usable rows only; returns (table, dropped)."""
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        try:
            table = pd.read_csv(path, dtype={"record_id": str, "patient_id": str})
        except (OSError, ValueError) as e:
            raise ReadError(path, f"unreadable score table ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"{what}: score table lacks column(s) {', '.join(missing)}")
    df = table.copy()
    df["record_id"] = df["record_id"].astype(str)
    df["patient_id"] = df["patient_id"].astype(str)
    df["label"] = pd.to_numeric(df["label"], errors="coerce").astype(float)
    df["score"] = pd.to_numeric(df["score"], errors="coerce").astype(float)
    keep = np.isfinite(df["label"].to_numpy()) & np.isfinite(df["score"].to_numpy())
    df = df[keep].reset_index(drop=True)
    if not df["label"].isin((0.0, 1.0)).all():
        raise ConfigError(f"{what}: labels must be 0 or 1")
    if df["record_id"].duplicated().any():
        raise ConfigError(f"{what}: duplicated record_id values")
    return df, int((~keep).sum())


def _counts(df: pd.DataFrame) -> dict[str, int]:
    return {"records": len(df), "patients": int(df["patient_id"].nunique()),
            "positives": int((df["label"] == 1).sum())}


def _uncalibrated_prob(df: pd.DataFrame) -> np.ndarray:
    if "prob" in df.columns and np.isfinite(pd.to_numeric(df["prob"], errors="coerce")).all():
        return pd.to_numeric(df["prob"]).to_numpy(dtype=float)
    return Calibrator("none")(df["score"].to_numpy())


def read_manifest(manifest: pd.DataFrame | str | os.PathLike | None) -> pd.DataFrame | None:
    if manifest is None or isinstance(manifest, pd.DataFrame):
        return manifest
    path = Path(manifest)
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ReadError(path, f"unreadable manifest ({e})") from None


def read_flow(flow: Mapping[str, Any] | str | os.PathLike | None, manifest_path: Any = None) -> dict[str, Any] | None:
    """The cohort flow dict (``flow.json``); default: beside the manifest, when it is a file."""
    if isinstance(flow, Mapping):
        return dict(flow)
    path = Path(flow) if flow is not None else None
    if path is None and isinstance(manifest_path, (str, os.PathLike)):
        candidate = Path(manifest_path).parent / "flow.json"
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReadError(path, f"unreadable flow table ({e})") from None


def split_summary(flow: Mapping[str, Any] | None, manifest: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Records / patients / positives per split: the decoded cohort when the flow has the decoding step,
    else the cohort flow, else the manifest."""
    rows: list[dict[str, Any]] = []
    source = None
    if flow:
        splits = (flow.get("decoding") or {}).get("splits") or flow.get("splits")
        if splits:
            source = "usable records (after decoding)" if (flow.get("decoding") or {}).get("splits") else "cohort"
            for name, s in splits.items():
                rows.append({"split": name, "records": s["records"], "patients": s["patients"],
                             "positives": s["as_records"], "positive_patients": s["as_patients"], "source": source})
    if not rows and manifest is not None and {"split", "patient_id", "label"} <= set(manifest.columns):
        for name, part in manifest.groupby(manifest["split"].astype(str), sort=False):
            rows.append({"split": name, "records": len(part), "patients": int(part["patient_id"].nunique()),
                         "positives": int((part["label"] == 1).sum()),
                         "positive_patients": int(part.loc[part["label"] == 1, "patient_id"].nunique()),
                         "source": "manifest"})
        order = {s: i for i, s in enumerate(SPLIT_NAMES)}
        rows.sort(key=lambda r: order.get(r["split"], 99))
    return rows


# ---------------------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------------------
_pairs = model_pairs


def evaluate_tables(
    tables: Mapping[str, tuple[pd.DataFrame | str | os.PathLike, pd.DataFrame | str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    manifest: pd.DataFrame | str | os.PathLike | None = None,
    flow: Mapping[str, Any] | str | os.PathLike | None = None,
    split: str = "test",
    threshold_rule: str = "youden",
    target: float | None = None,
    calibration: str = "platt",
    subgroups: str | Sequence[str] | Mapping[str, Sequence[float] | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    reference: str | None = None,
    explanations: Sequence[Mapping[str, Any]] | None = None,
    runs: Mapping[str, str | os.PathLike | None] | None = None,
    title: str | None = None,
    progress: bool = False,
    task: Any = None,
) -> EvaluationResult:
    """Evaluate models from ``{name: (val_table, eval_table)}`` and write the evaluation folder.

    Args:
        tables: per model, its validation score table (calibration and threshold are fitted there) and
            the table of the evaluated split (DataFrames or CSV paths with ``record_id, patient_id, label,
            score`` and optionally ``prob``).  Models are compared on the records all of them scored.
        out_dir: the evaluation folder (created).
        manifest: the cohort manifest (subgroup columns, split summary); a path or a DataFrame.
        flow: the cohort flow (``flow.json`` dict or path); default: ``flow.json`` beside the manifest.
        split: name of the evaluated split (for the report).
        threshold_rule: ``youden``, ``sensitivity``, ``specificity`` or ``fixed``
            (:func:`cardiofusion.evaluation.calibration.choose_threshold`).
        target: target sensitivity / specificity (or the fixed threshold).
        calibration: ``platt``, ``isotonic`` or ``none``.
        subgroups: cohort columns (``"age,sex"``, ``["age:40/60/80"]`` or ``{"age": (50, 65, 75)}``);
            None: age, sex, pacemaker, atrial fibrillation; ``[]``: none.
        n_boot: bootstrap resamples (patient-level).
        seed: bootstrap seed.
        level: confidence level of every interval.
        reference: the model the others are compared against in the Table-2 layout (default: the last).
        explanations: ``{"record_id", "label", "probability", "images": {kind: png_path}}`` items shown in
            the report's Explanations section.
        runs: ``{name: run_dir}`` recorded in ``models/<name>/calibration.json``.
        title: report title (default: the AS screening title for the binary task, else the task's name).
        progress: show a progress bar.
        task: a :class:`cardiofusion.tasks.Task`, a task mapping, a built-in task name or a task file; None: the
            binary AS task.  Multiclass, multi-label and regression tables (the task's score-table columns) are
            evaluated by :func:`cardiofusion.evaluation.task_evaluate.evaluate_task_tables`: no calibration or
            threshold is fitted (the task's decisions), the validation tables are optional (None) and counted only,
            subgroups report the task's key metrics.  The binary task takes the path below, unchanged.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    names = list(tables)
    if not names:
        raise ConfigError("nothing to evaluate: no models given")
    for name in names:
        if name in RESERVED_KEYS or not str(name).strip():
            raise ConfigError(f"model name {name!r} is reserved or empty")
        if "/" in name or "\\" in name:
            raise ConfigError(f"model name {name!r} may not contain a path separator")
    reference = reference if reference is not None else names[-1]
    if reference not in names:
        raise ConfigError(f"reference model {reference!r} is not among {names}")
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    runs = dict(runs or {})
    manifest_df = read_manifest(manifest)
    flow_dict = read_flow(flow, manifest if not isinstance(manifest, pd.DataFrame) else None)
    task_obj = load_task(task) if task is not None else None
    if task_obj is not None and not task_obj.is_binary:
        from .task_evaluate import evaluate_task_tables

        if (threshold_rule, target, calibration) != ("youden", None, "platt"):
            notes.append(f"Threshold rule and calibration apply to binary tasks; the {task_obj.kind} task uses its "
                         "own decisions.")
        return evaluate_task_tables(tables, out, task_obj, names=names, reference=reference, split=split,
                                    n_boot=n_boot, seed=seed, level=level, manifest_df=manifest_df,
                                    subgroups=subgroups, runs=runs, notes=notes, progress=progress,
                                    title=title or f"{task_obj.name}: model evaluation")
    title = title or "Aortic stenosis screening: model evaluation"

    # -- calibration and threshold on validation ---------------------------------------------------
    val: dict[str, pd.DataFrame] = {}
    test: dict[str, pd.DataFrame] = {}
    calibrators: dict[str, Calibrator] = {}
    thresholds: dict[str, Threshold] = {}
    for name in names:
        val_table, test_table = tables[name]
        val[name], dropped_val = prepare_table(val_table, f"{name} (validation)")
        test[name], dropped = prepare_table(test_table, f"{name} ({split})")
        if dropped or dropped_val:
            notes.append(f"{name}: {dropped_val} validation and {dropped} {split} records without a label or "
                         "score were left out.")
        v = val[name]
        if v["label"].nunique() < 2:
            raise ConfigError(f"{name}: the validation table needs positives and negatives to calibrate and "
                              "choose a threshold")
        calibrators[name] = Calibrator.fit(v["score"].to_numpy(), v["label"].to_numpy(), calibration)
        if calibrators[name].method == "platt" and calibrators[name].params["a"] < 0:
            notes.append(f"{name}: the Platt calibrator fitted on validation has a negative slope (on validation, "
                         "higher scores went with less AS), so its probabilities reverse the model's ranking; "
                         "check the model.")
        thresholds[name] = choose_threshold(v["label"].to_numpy(), calibrators[name](v["score"].to_numpy()),
                                            threshold_rule, target, chosen_on="val")

    # -- the records every model scored ------------------------------------------------------------
    common = set(test[names[0]]["record_id"])
    for name in names[1:]:
        common &= set(test[name]["record_id"])
    base = test[names[0]][test[names[0]]["record_id"].isin(common)].reset_index(drop=True)
    if base.empty:
        raise ConfigError(f"no {split} record was scored by every model")
    for name in names:
        left_out = len(test[name]) - len(common)
        if left_out:
            notes.append(f"{name}: {left_out} {split} records not scored by every model were left out "
                         "(models are compared on the same records).")
    aligned: dict[str, pd.DataFrame] = {}
    for name in names:
        t = test[name].set_index("record_id").loc[base["record_id"]].reset_index()
        if not np.array_equal(t["label"].to_numpy(), base["label"].to_numpy()):
            raise ConfigError(f"{name}: labels differ from {names[0]}'s on the same records")
        if not np.array_equal(t["patient_id"].to_numpy(), base["patient_id"].to_numpy()):
            raise ConfigError(f"{name}: patient ids differ from {names[0]}'s on the same records")
        aligned[name] = t
    y = base["label"].to_numpy(dtype=float)
    if y.sum() == 0 or y.sum() == y.size:
        notes.append(f"The {split} records have one class only: AUROC and several metrics are undefined.")

    # -- bootstrap -----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    weights = bootstrap_weights(base["patient_id"].to_numpy(), n_boot, seed)  # (B, n)
    boot: dict[str, np.ndarray] = {}
    points: dict[str, np.ndarray] = {}
    per_record: dict[str, dict[str, np.ndarray]] = {}
    models: dict[str, ModelEvaluation] = {}
    for name in tqdm(names, desc="bootstrap", disable=not progress, leave=False):
        t = aligned[name]
        s = t["score"].to_numpy(dtype=float)
        p_after = calibrators[name](s)
        p_before = _uncalibrated_prob(t)
        d = thresholds[name].apply(p_after)
        per_record[name] = {"score": s, "prob": p_after, "prob_uncalibrated": p_before, "decision": d}
        ranked = RankedScores(y, s)
        points[name] = metric_matrix(y, s, p_after, d, ranked=ranked)[0]
        boot[name] = metric_matrix(y, s, p_after, d, weights, ranked=ranked)
        intervals = percentile_summary(points[name], boot[name], level)
        sq = (p_before - y) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            brier_boot = (weights @ sq) / weights.sum(axis=1)
        brier_before = percentile_summary(np.array([sq.mean()]), brier_boot[:, None], level)[0]
        tp, fp = int(((y == 1) & d).sum()), int(((y == 0) & d).sum())
        fn, tn = int(((y == 1) & ~d).sum()), int(((y == 0) & ~d).sum())
        try:
            auc, se, lo, hi = delong_ci(y, s, level)
            dl = {"auroc": auc, "se": se, "ci_low": lo, "ci_high": hi}
        except ValueError:
            dl = {"auroc": None, "se": None, "ci_low": None, "ci_high": None}
        models[name] = ModelEvaluation(
            name=name, calibrator=calibrators[name], threshold=thresholds[name],
            metrics=dict(zip(METRICS, intervals)), brier_uncalibrated=brier_before, counts=_counts(t),
            val_counts=_counts(val[name]), confusion={"tn": tn, "fp": fp, "fn": fn, "tp": tp}, delong=dl,
            run=str(runs[name]) if runs.get(name) is not None else None)
    boot_s = time.perf_counter() - t0

    # -- paired comparisons ------------------------------------------------------------------------
    comparisons: dict[str, Comparison] = {}
    for a, b in _pairs(names, reference):
        diffs = paired_differences(points[a], points[b], boot[a], boot[b], level)
        try:
            dl = delong_test(y, per_record[a]["score"], per_record[b]["score"], level).to_dict()
        except ValueError:
            dl = {}
        comp = Comparison(a, b, diffs, dl)
        comparisons[comp.key] = comp

    # -- subgroups ---------------------------------------------------------------------------------
    columns, bins = parse_subgroups(subgroups)
    sub_rows: list[dict[str, Any]] = []
    if columns and manifest_df is None:
        notes.append("No manifest given: subgroup analysis skipped.")
    elif columns:
        mf = manifest_df.copy()
        mf["record_id"] = mf["record_id"].astype(str)
        mf = mf.drop_duplicates("record_id").set_index("record_id")
        absent = [c for c in columns if c not in mf.columns]
        if absent:
            notes.append(f"Subgroup column(s) not in the manifest, skipped: {', '.join(absent)}.")
        present = [c for c in columns if c in mf.columns]
        covered = base["record_id"].isin(mf.index).to_numpy()
        if present and not covered.all():
            notes.append(f"{int((~covered).sum())} evaluated records are not in the manifest (subgroup 'unknown').")
        for column in tqdm(present, desc="subgroups", disable=not progress, leave=False):
            values = mf[column].reindex(base["record_id"]).reset_index(drop=True)
            levels = subgroup_levels(values, column, bins)
            for level_name in level_order(levels):
                mask = (levels == level_name).to_numpy()
                part = base[mask]
                for name in names:
                    r = per_record[name]
                    args = (y[mask], r["score"][mask], r["prob"][mask], r["decision"][mask])
                    ranked = RankedScores(y[mask], r["score"][mask])
                    pt = metric_matrix(*args, ranked=ranked)[0]
                    bt = metric_matrix(*args, weights[:, mask], ranked=ranked)
                    for metric, iv in zip(METRICS, percentile_summary(pt, bt, level)):
                        sub_rows.append({"column": column, "level": level_name, "model": name, "metric": metric,
                                         "n": int(mask.sum()), "patients": int(part["patient_id"].nunique()),
                                         "positives": int(y[mask].sum()), "value": iv.value, "ci_low": iv.ci_low,
                                         "ci_high": iv.ci_high, "median": iv.median, "n_valid": iv.n_valid})
    sub_df = pd.DataFrame(sub_rows, columns=["column", "level", "model", "metric", "n", "patients", "positives",
                                             "value", "ci_low", "ci_high", "median", "n_valid"])

    settings = {
        "split": split, "n_boot": int(n_boot), "seed": int(seed), "level": float(level),
        "resampling": "patients with replacement, all records of each drawn patient",
        "ci": "percentile interval of the bootstrap distribution", "value": "estimate on all evaluated records",
        "median": "median of the bootstrap distribution", "threshold_rule": threshold_rule,
        "target": None if target is None else float(target), "calibration": calibration,
        "reference": reference, "records": _counts(base), "subgroups": columns, "subgroup_bins": bins,
        "p_value": "two-sided bootstrap: min(1, 2 (min(#{d*<=0}, #{d*>=0}) + 1) / (B + 1))",
    }
    result = EvaluationResult(out_dir=out, models=models, comparisons=comparisons, subgroups=sub_df,
                              settings=settings, notes=notes)
    result.seconds["bootstrap"] = round(boot_s, 3)

    # -- files -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    _write_outputs(result, base, per_record, y)
    figures = _write_figures(result, per_record, y, names)
    result.paths.update(figures)
    from .report import write_report

    result.paths["report"] = write_report(
        result, out / "report.html", title=title, flow=flow_dict, splits=split_summary(flow_dict, manifest_df),
        figures=figures, explanations=explanations)
    result.seconds["files"] = round(time.perf_counter() - t0, 3)
    result.seconds["total"] = round(time.perf_counter() - t_start, 3)
    return result


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2))
    os.replace(tmp, path)
    return path


def _write_outputs(result: EvaluationResult, base: pd.DataFrame, per_record: dict[str, dict[str, np.ndarray]],
                   y: np.ndarray) -> None:
    out = result.out_dir
    result.paths["metrics_json"] = _write_json(out / "metrics.json", result.metrics_json())
    rows = []
    for name, m in result.models.items():
        for metric in METRICS:
            iv = m.metrics[metric]
            rows.append({"model": name, "metric": metric, "label": METRIC_LABELS[metric], "value": iv.value,
                         "ci_low": iv.ci_low, "ci_high": iv.ci_high, "median": iv.median, "n_valid": iv.n_valid})
        iv = m.brier_uncalibrated
        rows.append({"model": name, "metric": "brier_uncalibrated", "label": "Brier score before calibration",
                     "value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "median": iv.median,
                     "n_valid": iv.n_valid})
    result.paths["metrics_csv"] = out / "metrics.csv"
    pd.DataFrame(rows).to_csv(result.paths["metrics_csv"], index=False)
    crow = []
    for c in result.comparisons.values():
        for metric, d in c.differences.items():
            crow.append({"model_a": c.model_a, "model_b": c.model_b, "metric": metric, "difference": d.difference,
                         "ci_low": d.ci_low, "ci_high": d.ci_high, "median": d.median, "p_value": d.p_value,
                         "test": "paired bootstrap"})
        if c.delong:
            crow.append({"model_a": c.model_a, "model_b": c.model_b, "metric": "auroc",
                         "difference": c.delong.get("difference"), "ci_low": c.delong.get("ci_low"),
                         "ci_high": c.delong.get("ci_high"), "median": None, "p_value": c.delong.get("p_value"),
                         "test": "DeLong"})
    result.paths["comparisons_csv"] = out / "comparisons.csv"
    pd.DataFrame(crow, columns=["model_a", "model_b", "metric", "difference", "ci_low", "ci_high", "median",
                                "p_value", "test"]).to_csv(result.paths["comparisons_csv"], index=False)
    result.paths["subgroups_csv"] = out / "subgroups.csv"
    result.subgroups.to_csv(result.paths["subgroups_csv"], index=False)
    pred = base[["record_id", "patient_id"]].copy()
    pred["label"] = y.astype(int)
    for name, r in per_record.items():
        pred[f"{name}:score"] = r["score"]
        pred[f"{name}:probability"] = r["prob"]
        pred[f"{name}:positive"] = r["decision"].astype(int)
    result.paths["predictions_csv"] = out / "predictions.csv"
    pred.to_csv(result.paths["predictions_csv"], index=False)
    for name, m in result.models.items():
        path = out / "models" / name / "calibration.json"
        _write_json(path, {"calibrator": m.calibrator.to_dict(), "threshold": m.threshold.to_dict(), "run": m.run})
        result.paths[f"calibration_{name}"] = path


def _write_figures(result: EvaluationResult, per_record: dict[str, dict[str, np.ndarray]], y: np.ndarray,
                   names: list[str]) -> dict[str, Path]:
    from . import figures as fg

    out = result.out_dir / "figures"
    paths: dict[str, Path] = {}
    two_classes = 0 < y.sum() < y.size
    if two_classes:
        roc, pr = {}, {}
        for name in names:
            fpr, tpr = roc_points(y, per_record[name]["score"])
            rec, prec = pr_points(y, per_record[name]["score"])
            a, p = result.models[name].metrics["auroc"], result.models[name].metrics["auprc"]
            roc[name] = {"fpr": fpr, "tpr": tpr, "value": a.value, "ci_low": a.ci_low, "ci_high": a.ci_high}
            pr[name] = {"recall": rec, "precision": prec, "value": p.value, "ci_low": p.ci_low, "ci_high": p.ci_high}
        paths["roc"] = fg.roc_figure(roc, out / "roc.png", title=f"ROC curves ({result.settings['split']} split)")
        paths["pr"] = fg.pr_figure(pr, float(y.mean()), out / "pr.png",
                                   title=f"Precision-recall curves ({result.settings['split']} split)")
    cal = {name: {"labels": y, "before": per_record[name]["prob_uncalibrated"], "after": per_record[name]["prob"],
                  "brier_before": result.models[name].brier_uncalibrated.value,
                  "brier_after": result.models[name].metrics["brier"].value,
                  "method": result.models[name].calibrator.method} for name in names}
    paths["calibration"] = fg.calibration_figure(cal, out / "calibration.png")
    paths["confusion"] = fg.confusion_figure(
        {name: {**result.models[name].confusion, "threshold": result.models[name].threshold.value} for name in names},
        out / "confusion.png")
    sub = result.subgroups
    if not sub.empty:
        auroc_rows = sub[sub["metric"] == "auroc"].to_dict("records")
        overall = {n: {"value": result.models[n].metrics["auroc"].value} for n in names}
        paths["forest"] = fg.forest_figure(auroc_rows, names, out / "forest.png", metric_label="AUROC",
                                           overall=overall)
    return paths


# ---------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------
def run_tables(run_dir: str | os.PathLike, split: str = "test") -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The validation and ``split`` score tables of a run folder (cached ``RUN/val_scores.csv`` /
    ``RUN/scores_<split>.csv`` when they are current, else the model is run).

    A folder without ``config.yaml`` holding only score tables (another group's model, an exported table) is read
    as it is: ``scores_<split>.csv`` is required, ``val_scores.csv`` optional (None; the binary task needs it).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ReadError(run, "no such run folder")
    saved_val = run / "val_scores.csv"
    saved_split = run / ("val_scores.csv" if split == "val" else f"scores_{split}.csv")
    if not (run / "config.yaml").is_file() and (saved_val.is_file() or saved_split.is_file()):
        if not saved_split.is_file():
            raise ReadError(saved_split, f"no {split} score table in this folder of score tables")
        val = pd.read_csv(saved_val, dtype={"record_id": str, "patient_id": str}) if saved_val.is_file() else None
        return val, pd.read_csv(saved_split, dtype={"record_id": str, "patient_id": str})
    from ..training import best_checkpoint, score_split

    if saved_val.is_file() and saved_val.stat().st_mtime >= best_checkpoint(run).stat().st_mtime:
        val = pd.read_csv(saved_val, dtype={"record_id": str, "patient_id": str})
    else:
        val = score_split(run, "val")
    return val, score_split(run, split)


def _run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN/config.yaml`` as a mapping ({} when absent)."""
    from ..configfile import read_mapping_file

    path = Path(run_dir) / "config.yaml"
    return read_mapping_file(path, "run config") if path.is_file() else {}


def run_manifest(run_dir: str | os.PathLike) -> str | None:
    """The manifest a run was trained on (from ``RUN/config.yaml``), when it still exists."""
    manifest = _run_config(run_dir).get("manifest")
    return str(manifest) if manifest and Path(str(manifest)).is_file() else None


def _same_task(a: Task, b: Task) -> bool:
    """Same targets and outputs (the fitted regression scaler may differ between runs)."""
    da, db = a.to_dict(), b.to_dict()
    return all(da[k] == db[k] for k in ("kind", "columns", "classes", "ordinal", "bins"))


def run_task(runs: Mapping[str, str | os.PathLike], task: Any = None) -> Task:
    """The task of run folders: ``RUN/config.yaml``'s ``task`` mapping (the ``TrainConfig.task`` field), else
    ``task`` (a Task, mapping, built-in name or file), else the binary AS task.  Every run must have the same
    targets, and a given ``task`` must agree with the runs' own."""
    given = load_task(task) if task is not None else None
    found: Task | None = None
    for name, run in runs.items():
        mapping = _run_config(run).get("task")
        if mapping is None:
            continue
        own = Task.from_dict(mapping, where=f"{Path(run) / 'config.yaml'}: task")
        if found is not None and not _same_task(found, own):
            raise ConfigError(f"run {name!r} ({run}) was trained for task {own.name!r} ({own.kind}), the others for "
                              f"{found.name!r} ({found.kind}); evaluate runs of one task together")
        found = found or own
    if found is not None and given is not None and not _same_task(found, given):
        raise ConfigError(f"--task {given.name!r} ({given.kind}) differs from the runs' own task {found.name!r} "
                          f"({found.kind}, from config.yaml)")
    return found or given or binary_task()


def evaluate_runs(runs: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  *, split: str = "test", manifest: pd.DataFrame | str | os.PathLike | None = None,
                  flow: Mapping[str, Any] | str | os.PathLike | None = None, progress: bool = False,
                  task: Any = None, **kwargs: Any) -> EvaluationResult:
    """Evaluate trained run folders: :func:`evaluate_tables` on their validation and ``split`` scores.

    Args:
        runs: ``{name: run_dir}`` (or a list of run folders, named after the folders).  A folder of score
            tables only (no ``config.yaml``) is read as it is (:func:`run_tables`).
        out_dir: the evaluation folder.
        split: the evaluated split (``test``; ``val`` gives optimistic numbers, the threshold being chosen there).
        manifest / flow: default: the first run's manifest and the ``flow.json`` beside it.
        progress: progress bars.
        task: the task when the runs' ``config.yaml`` has none (folders of score tables, runs trained before
            tasks existed); see :func:`run_task`.  Default: the runs' own, else the binary AS task.
        **kwargs: passed to :func:`evaluate_tables` (threshold_rule, target, calibration, subgroups, n_boot,
            seed, level, reference, explanations, title).
    """
    from tqdm.auto import tqdm

    if not isinstance(runs, Mapping):
        runs = {Path(r).name: r for r in runs}
    if not runs:
        raise ConfigError("no run folders given")
    for run in runs.values():
        if not Path(run).is_dir():
            raise ReadError(Path(run), "no such run folder")
    the_task = run_task(runs, task)
    tables = {}
    for name, run in tqdm(list(runs.items()), desc="scoring", disable=not progress, leave=False):
        tables[name] = run_tables(run, split)
        if tables[name][0] is None and the_task.is_binary:
            raise ReadError(Path(run) / "val_scores.csv", "the binary task needs the validation scores (calibration "
                            "and threshold are fitted there)")
    if manifest is None:
        manifest = run_manifest(next(iter(runs.values())))
    return evaluate_tables(tables, out_dir, manifest=manifest, flow=flow, split=split,
                           runs={n: str(Path(r).resolve()) for n, r in runs.items()}, progress=progress,
                           task=None if the_task.is_binary else the_task, **kwargs)


__all__ = [
    "RESERVED_KEYS",
    "Comparison",
    "EvaluationResult",
    "ModelEvaluation",
    "evaluate_runs",
    "evaluate_tables",
    "prepare_table",
    "read_flow",
    "read_manifest",
    "run_manifest",
    "run_tables",
    "run_task",
    "split_summary",
]
