"""Evaluate multiclass, multi-label and regression models from their score tables (the binary task keeps the
path of :mod:`.evaluate`, unchanged).

Score tables follow the task's column contract (:meth:`cardiofusion.tasks.Task.score_columns`): ``record_id``,
``patient_id``, the label columns and the probability / value columns.  Per model, on the records every model
scored: the metric family of the task kind (:mod:`.multiclass`, :mod:`.multilabel`, :mod:`.regression`) gives
every metric on all records and on the same patient-bootstrap resamples
(:func:`~cardiofusion.evaluation.bootstrap.bootstrap_weights`), hence percentile CIs and paired comparisons of
every metric between every pair of models (difference, CI and bootstrap p-value).

Nothing is fitted on the validation split here: multiclass decisions are the most probable class, multi-label
decisions use the task's thresholds (default 0.5), regression predictions are used as they are.  The validation
tables are optional and only counted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ..tasks import Task
from .bootstrap import Interval, bootstrap_weights, paired_differences, percentile_summary
from .multiclass import MulticlassMetrics
from .multilabel import MultilabelMetrics
from .regression import RegressionMetrics
from .results import Comparison, EvaluationResult, model_pairs
from .subgroups import level_order, parse_subgroups, subgroup_levels
from .taskmetrics import MetricFamily, MetricInfo


@dataclass
class TaskModelEvaluation:
    """One model's evaluation on a non-binary task.

    Attributes:
        name: display name.
        metrics: ``{key: Interval}`` (keys of the task's metric family, :mod:`.taskmetrics`).
        infos: ``{key: MetricInfo}`` (display name, averaging, target, unit).
        counts / val_counts: records, patients and per-class / per-label / per-target counts.
        confusion: multiclass confusion matrix (rows true, columns predicted), else None.
        run: the run folder, when the model is a run.
    """

    name: str
    metrics: dict[str, Interval]
    infos: dict[str, MetricInfo]
    counts: dict[str, Any]
    val_counts: dict[str, Any]
    confusion: list[list[int]] | None = None
    run: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, iv in self.metrics.items():
            info = self.infos[key]
            out[key] = {**iv.to_dict(), "average": info.average, "target": info.target, "unit": info.unit}
        return out


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------
def _read(table: pd.DataFrame | str | Any) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table.copy()
    path = Path(table)
    try:
        return pd.read_csv(path, dtype={"record_id": str, "patient_id": str})
    except (OSError, ValueError) as e:
        raise ReadError(path, f"unreadable score table ({e})") from None


def _numeric(df: pd.DataFrame, columns: Sequence[str], what: str) -> np.ndarray:
    out = []
    for c in columns:
        col = df[c]
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        text = col.astype("string").str.strip()
        bad = np.isnan(values) & ~(col.isna() | text.isin(["", "nan", "NaN", "NA"])).to_numpy()
        if bad.any():
            raise ConfigError(f"{what}: column {c!r} holds non-numeric values ({col[bad].iloc[0]!r})")
        out.append(values)
    return np.stack(out, axis=1) if out else np.zeros((len(df), 0))


def prepare_task_table(table: pd.DataFrame | str | Any, task: Task, what: str) -> tuple[pd.DataFrame, int]:
    """A score table with string ids and usable rows only (``label_*`` / ``prob_*`` / ``pred_*`` float).

    Rows left out (returned count): multiclass without a label or with a missing probability; multi-label with
    a missing probability or no known label; regression with no target whose measurement and prediction are
    both known.  Labels outside the task's classes / 0-1 are errors naming the column.
    """
    df = _read(table)
    label_cols, pred_cols = task.label_columns(), task.prediction_columns()
    missing = [c for c in ("record_id", "patient_id", *label_cols, *pred_cols) if c not in df.columns]
    if missing:
        needed = ", ".join(["record_id", "patient_id", *label_cols, *pred_cols])
        raise ConfigError(f"{what}: score table lacks column(s) {', '.join(missing)} (task {task.name!r} is "
                          f"{task.kind}: columns {needed})")
    df["record_id"] = df["record_id"].astype(str)
    df["patient_id"] = df["patient_id"].astype(str)
    y = _numeric(df, label_cols, what)
    p = _numeric(df, pred_cols, what)
    if task.kind == "multiclass":
        known = np.isfinite(y[:, 0])
        bad = known & ~np.isin(y[:, 0], np.arange(task.n_classes))
        if bad.any():
            raise ConfigError(f"{what}: column 'label' holds {y[bad, 0][0]:g}, not a class index of task "
                              f"{task.name!r} (0-{task.n_classes - 1}: {', '.join(task.classes)})")
        keep = known & np.isfinite(p).all(axis=1)
    elif task.kind == "multilabel":
        bad = np.isfinite(y) & ~np.isin(y, (0.0, 1.0))
        if bad.any():
            col = label_cols[int(np.nonzero(bad.any(axis=0))[0][0])]
            raise ConfigError(f"{what}: column {col!r} holds values other than 0, 1 or empty (unknown)")
        keep = np.isfinite(p).all(axis=1) & np.isfinite(y).any(axis=1)
    else:
        keep = (np.isfinite(y) & np.isfinite(p)).any(axis=1)
    df[label_cols] = y
    df[pred_cols] = p
    out = df[keep].reset_index(drop=True)
    if out["record_id"].duplicated().any():
        raise ConfigError(f"{what}: duplicated record_id values")
    return out, int((~keep).sum())


def task_counts(df: pd.DataFrame, task: Task) -> dict[str, Any]:
    """Records, patients and per-class (multiclass) / positives per label / known values per target."""
    out: dict[str, Any] = {"records": len(df), "patients": int(df["patient_id"].nunique())}
    if task.kind == "multiclass":
        y = df["label"].to_numpy()
        out["per_class"] = {c: int((y == j).sum()) for j, c in enumerate(task.classes)}
    elif task.kind == "multilabel":
        out["positives"] = {c: int((df[col] == 1).sum()) for c, col in zip(task.classes, task.label_columns())}
        out["known"] = {c: int(df[col].notna().sum()) for c, col in zip(task.classes, task.label_columns())}
    else:
        out["known"] = {c: int((df[lc].notna() & df[pc].notna()).sum())
                        for c, lc, pc in zip(task.classes, task.label_columns(), task.prediction_columns())}
    return out


def metric_family(task: Task, table: pd.DataFrame) -> MetricFamily:
    """The metric family of ``task`` on a prepared score table."""
    y = task.labels_from_table(table)
    p = task.predictions_from_table(table)
    if task.kind == "multiclass":
        return MulticlassMetrics(y, p, task.classes)
    if task.kind == "multilabel":
        return MultilabelMetrics(y, p, task.classes, task.decide(p))
    if task.kind == "regression":
        return RegressionMetrics(y, p, task.classes, {c: task.unit(col) for c, col in zip(task.classes, task.columns)})
    raise ConfigError(f"task {task.name!r}: the binary task is evaluated by evaluate_tables' binary path")


def key_metrics(task: Task) -> list[str]:
    """The metrics the report compares models on, the task's primary metric first."""
    if task.kind == "multiclass":
        keys = ["macro_auroc", "quadratic_kappa", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"]
        if task.ordinal:
            keys.remove("quadratic_kappa")
            keys.insert(0, "quadratic_kappa")
        return keys
    if task.kind == "multilabel":
        return ["macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "macro_brier", "macro_recall",
                "macro_specificity"]
    return ["mae"] + [f"{m}:{c}" for c in task.classes for m in ("mae", "rmse", "r2", "pearson_r")]


SUBGROUP_COLUMNS = ["column", "level", "model", "metric", "average", "target", "n", "patients", "value", "ci_low",
                    "ci_high", "median", "n_valid"]


def task_subgroups(task: Task, base: pd.DataFrame, aligned: Mapping[str, pd.DataFrame], weights: np.ndarray,
                   manifest_df: pd.DataFrame | None, subgroups: Any, level: float, notes: list[str]) -> pd.DataFrame:
    """The key metrics (:func:`key_metrics`) per level of each subgroup column, with CIs from the same patient
    resamples restricted to the level's records (as the binary path does)."""
    columns, bins = parse_subgroups(subgroups)
    rows: list[dict[str, Any]] = []
    if columns and manifest_df is None:
        notes.append("No manifest given: subgroup analysis skipped.")
    if not columns or manifest_df is None:
        return pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)
    mf = manifest_df.copy()
    mf["record_id"] = mf["record_id"].astype(str)
    mf = mf.drop_duplicates("record_id").set_index("record_id")
    absent = [c for c in columns if c not in mf.columns]
    if absent:
        notes.append(f"Subgroup column(s) not in the manifest, skipped: {', '.join(absent)}.")
    keys = key_metrics(task)
    for column in (c for c in columns if c in mf.columns):
        levels = subgroup_levels(mf[column].reindex(base["record_id"]).reset_index(drop=True), column, bins)
        for level_name in level_order(levels):
            mask = (levels == level_name).to_numpy()
            for name, table in aligned.items():
                fam = metric_family(task, table[mask].reset_index(drop=True))
                idx = [fam.keys.index(k) for k in keys]
                point = fam.matrix(None)[0][idx]
                boot = fam.matrix(weights[:, mask])[:, idx]
                infos = {i.key: i for i in fam.infos}
                for key, iv in zip(keys, percentile_summary(point, boot, level)):
                    rows.append({"column": column, "level": level_name, "model": name, "metric": key,
                                 "average": infos[key].average, "target": infos[key].target, "n": int(mask.sum()),
                                 "patients": int(base.loc[mask, "patient_id"].nunique()), "value": iv.value,
                                 "ci_low": iv.ci_low, "ci_high": iv.ci_high, "median": iv.median,
                                 "n_valid": iv.n_valid})
    return pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)


# ---------------------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------------------
def evaluate_task_tables(
    tables: Mapping[str, tuple[Any, Any]],
    out_dir: Path,
    task: Task,
    *,
    names: list[str],
    reference: str,
    split: str,
    n_boot: int,
    seed: int,
    level: float,
    manifest_df: pd.DataFrame | None,
    subgroups: Any,
    runs: Mapping[str, Any],
    title: str,
    notes: list[str],
    progress: bool = False,
) -> EvaluationResult:
    """The non-binary branch of :func:`cardiofusion.evaluation.evaluate_tables` (arguments checked there)."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    val: dict[str, pd.DataFrame | None] = {}
    test: dict[str, pd.DataFrame] = {}
    for name in names:
        val_table, test_table = tables[name]
        test[name], dropped = prepare_task_table(test_table, task, f"{name} ({split})")
        dropped_val = 0
        val[name] = None
        if val_table is not None:
            val[name], dropped_val = prepare_task_table(val_table, task, f"{name} (validation)")
        if dropped or dropped_val:
            notes.append(f"{name}: {dropped_val} validation and {dropped} {split} records without a usable label or "
                         "prediction were left out.")

    common = set(test[names[0]]["record_id"])
    for name in names[1:]:
        common &= set(test[name]["record_id"])
    base = test[names[0]][test[names[0]]["record_id"].isin(common)].reset_index(drop=True)
    if base.empty:
        raise ConfigError(f"no {split} record was scored by every model")
    label_cols = task.label_columns()
    if task.kind == "multiclass":
        sums = {n: test[n][task.prediction_columns()].to_numpy().sum(axis=1) for n in names}
        off = [n for n, v in sums.items() if v.size and np.max(np.abs(v - 1.0)) > 1e-3]
        if off:
            notes.append(f"{', '.join(off)}: class probabilities that do not sum to 1 (max deviation "
                         f"{max(np.max(np.abs(sums[n] - 1.0)) for n in off):.3g}); check the prob_* columns.")
    aligned: dict[str, pd.DataFrame] = {}
    for name in names:
        left_out = len(test[name]) - len(common)
        if left_out:
            notes.append(f"{name}: {left_out} {split} records not scored by every model were left out "
                         "(models are compared on the same records).")
        t = test[name].set_index("record_id").loc[base["record_id"]].reset_index()
        if not np.array_equal(t[label_cols].to_numpy(), base[label_cols].to_numpy(), equal_nan=True):
            raise ConfigError(f"{name}: labels differ from {names[0]}'s on the same records")
        if not np.array_equal(t["patient_id"].to_numpy(), base["patient_id"].to_numpy()):
            raise ConfigError(f"{name}: patient ids differ from {names[0]}'s on the same records")
        aligned[name] = t

    t0 = time.perf_counter()
    weights = bootstrap_weights(base["patient_id"].to_numpy(), n_boot, seed)  # (B, n)
    points: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    models: dict[str, TaskModelEvaluation] = {}
    families: dict[str, MetricFamily] = {}
    for name in tqdm(names, desc="bootstrap", disable=not progress, leave=False):
        fam = metric_family(task, aligned[name])
        families[name] = fam
        points[name] = fam.matrix(None)[0]
        boot[name] = fam.matrix(weights)
        intervals = percentile_summary(points[name], boot[name], level)
        confusion = fam.confusion()[0].astype(int).tolist() if isinstance(fam, MulticlassMetrics) else None
        models[name] = TaskModelEvaluation(
            name=name, metrics=dict(zip(fam.keys, intervals)), infos={i.key: i for i in fam.infos},
            counts=task_counts(aligned[name], task),
            val_counts=task_counts(val[name], task) if val[name] is not None else {},
            confusion=confusion, run=str(runs[name]) if runs.get(name) is not None else None)
    boot_s = time.perf_counter() - t0

    comparisons: dict[str, Comparison] = {}
    keys = families[names[0]].keys
    for a, b in model_pairs(names, reference):
        comp = Comparison(a, b, paired_differences(points[a], points[b], boot[a], boot[b], level, tuple(keys)), {})
        comparisons[comp.key] = comp

    primary = task.primary_metric[0]
    settings = {
        "split": split, "n_boot": int(n_boot), "seed": int(seed), "level": float(level),
        "resampling": "patients with replacement, all records of each drawn patient",
        "ci": "percentile interval of the bootstrap distribution", "value": "estimate on all evaluated records",
        "median": "median of the bootstrap distribution", "reference": reference,
        "records": task_counts(base, task), "task": task.to_dict(),
        "primary_metric": primary,
        "key_metrics": key_metrics(task),
        "decisions": {"multiclass": "most probable class", "multilabel": "probability >= the task's threshold "
                      "per label (default 0.5)", "regression": "predictions as they are"}[task.kind],
        "p_value": "two-sided bootstrap: min(1, 2 (min(#{d*<=0}, #{d*>=0}) + 1) / (B + 1))",
    }
    sub = task_subgroups(task, base, aligned, weights, manifest_df, subgroups, level, notes)
    settings["subgroups"] = list(dict.fromkeys(sub["column"]))
    result = EvaluationResult(out_dir=out_dir, models=models, comparisons=comparisons,  # type: ignore[arg-type]
                              subgroups=sub, settings=settings, notes=notes)
    result.seconds["bootstrap"] = round(boot_s, 3)

    t0 = time.perf_counter()
    from .task_outputs import write_task_figures, write_task_outputs

    write_task_outputs(result, task, base, aligned, families)
    figures = write_task_figures(result, task, aligned, families)
    result.paths.update(figures)
    from .report_tasks import write_task_report

    result.paths["report"] = write_task_report(result, task, out_dir / "report.html", title=title, figures=figures)
    result.seconds["files"] = round(time.perf_counter() - t0, 3)
    result.seconds["total"] = round(time.perf_counter() - t_start, 3)
    return result


__all__ = ["TaskModelEvaluation", "evaluate_task_tables", "key_metrics", "metric_family", "prepare_task_table",
           "task_counts", "task_subgroups"]
