"""``report.html`` of a non-binary evaluation (multiclass, multi-label, regression): the same self-contained
page as the binary report (:mod:`.report`: inline CSS, base64 figures, the one CI formatter), with the task's
tables and figures."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..tasks import Task
from .formatting import format_ci, format_interval
from .multiclass import PER_CLASS
from .multilabel import LABEL_METRICS
from .multilabel import LABELS as ML_LABELS
from .regression import LABELS as REG_LABELS
from .regression import TARGET_METRICS
from .report import CSS, _e, _figure, _n, _p, _table

if TYPE_CHECKING:  # pragma: no cover
    from .results import EvaluationResult

KIND_WORDS = {"multiclass": "multiclass", "multilabel": "multi-label", "regression": "regression"}


def _summary_table(result: EvaluationResult, keys: Sequence[str]) -> str:
    ref = result.settings["reference"]
    first = next(iter(result.models.values()))
    header = ["Model"] + [_e(first.infos[k].label) + (f" ({_e(first.infos[k].unit)})" if first.infos[k].unit else "")
                          for k in keys]
    rows, classes = [], []
    for name, m in result.models.items():
        rows.append([_e(name)] + [_e(format_interval(m.metrics[k])) for k in keys])
        classes.append("ref" if name == ref else "")
        comp = result.comparisons.get(f"{ref} vs {name}")
        if name != ref and comp:
            rows.append([f"p-value vs {_e(ref)}"] + [_p(comp.differences[k].p_value) for k in keys])
            classes.append("p")
    return _table(header, rows, row_class=classes)


def _per_target_tables(result: EvaluationResult, task: Task) -> str:
    """Per model: rows classes / labels / targets, columns the per-item metrics."""
    if task.kind == "multiclass":
        metrics, words = PER_CLASS, {"auroc": "AUROC (one vs rest)", "precision": "Precision", "recall": "Recall",
                                     "f1": "F1"}
    elif task.kind == "multilabel":
        metrics, words = LABEL_METRICS, ML_LABELS
    else:
        metrics, words = TARGET_METRICS, REG_LABELS
    parts = []
    for name, m in result.models.items():
        rows = []
        for j, item in enumerate(task.classes):
            unit = task.unit(task.columns[j]) if task.kind == "regression" else ""
            count = ""
            if task.kind == "multiclass":
                count = _n(m.counts["per_class"][item])
            elif task.kind == "multilabel":
                count = f"{_n(m.counts['positives'][item])} / {_n(m.counts['known'][item])}"
            else:
                count = _n(m.counts["known"][item])
            rows.append([_e(item) + (f" ({_e(unit)})" if unit else ""), count]
                        + [_e(format_interval(m.metrics[f"{k}:{item}"])) for k in metrics])
        what = {"multiclass": ("class", "records"), "multilabel": ("label", "positives / known"),
                "regression": ("target", "records with a value")}[task.kind]
        parts.append(f"<h3>{_e(name)}</h3>" + _table([what[0], what[1]] + [_e(words[k]) for k in metrics], rows))
    return "\n".join(parts)


def _comparisons(result: EvaluationResult, keys: Sequence[str]) -> str:
    if not result.comparisons:
        return "<p class='muted'>One model only: nothing to compare.</p>"
    first = next(iter(result.models.values()))
    header = ["difference"]
    for k in keys:
        header += [_e(first.infos[k].label), "p"]
    rows = []
    for c in result.comparisons.values():
        row = [f"{_e(c.model_a)} &minus; {_e(c.model_b)}"]
        for k in keys:
            d = c.differences[k]
            row += [_e(format_ci(d.difference, d.ci_low, d.ci_high, signed=True)), _p(d.p_value)]
        rows.append(row)
    return (_table(header, rows) + "<p class='small muted'>Every metric's paired difference, CI and p-value is in "
            "metrics.json (<code>comparisons</code>) and comparisons.csv. Bootstrap p-values cannot go below "
            f"2/(B+1) = {2 / (result.settings['n_boot'] + 1):.4f}.</p>")


def _subgroups(result: EvaluationResult, keys: Sequence[str]) -> str:
    sub = result.subgroups
    if sub.empty:
        return "<p class='muted'>No subgroup analysis (no manifest or no subgroup column).</p>"
    first = next(iter(result.models.values()))
    keys = [k for k in keys if k in set(sub["metric"])][:2]
    header = ["subgroup", "level", "records"] + [f"{_e(n)}: {_e(first.infos[k].label)}" for n in result.models
                                                 for k in keys]
    rows = []
    for (column, level), part in sub.groupby(["column", "level"], sort=False):
        row = [_e(column), _e(level), _n(int(part["n"].iloc[0]))]
        for n in result.models:
            for k in keys:
                r = part[(part["model"] == n) & (part["metric"] == k)]
                row.append(_e(format_ci(r["value"].iloc[0], r["ci_low"].iloc[0], r["ci_high"].iloc[0]))
                           if len(r) else "n/a")
        rows.append(row)
    return (_table(header, rows, left=2) + "<p class='small muted'>Every key metric per level, with CIs from the "
            "same patient resamples restricted to the level's records, is in subgroups.csv.</p>")


def _records(result: EvaluationResult, task: Task) -> str:
    split = _e(result.settings["split"])
    rows = []
    for name, m in result.models.items():
        v = m.val_counts or {}
        rows.append([_e(name), _n(v.get("records", "n/a")), _n(v.get("patients", "n/a")), _n(m.counts["records"]),
                     _n(m.counts["patients"])])
    out = _table(["model", "val records", "val patients", f"{split} records", f"{split} patients"], rows)
    c = result.settings["records"]
    if task.kind == "multiclass":
        out += "<p>Records per class: " + ", ".join(f"{_e(k)} {_n(v)}" for k, v in c["per_class"].items()) + ".</p>"
    elif task.kind == "multilabel":
        out += "<p>Positives / known per label: " + ", ".join(
            f"{_e(k)} {_n(c['positives'][k])} / {_n(c['known'][k])}" for k in c["known"]) + ".</p>"
    return out


def _headline(result: EvaluationResult, task: Task) -> str:
    ref = result.settings["reference"]
    key = result.settings["primary_metric"]
    m = result.models[ref]
    n = result.settings["records"]
    return (f"<p><b>In plain words.</b> On {n['records']:,} {_e(result.settings['split'])} records from "
            f"{n['patients']:,} patients, <b>{_e(ref)}</b> reaches a {_e(m.infos[key].label)} of "
            f"{_e(format_interval(m.metrics[key]))} (the task's primary metric; brackets: "
            f"{round(100 * result.settings['level'])}% confidence interval).</p>")


def _methods(result: EvaluationResult, task: Task) -> str:
    s = result.settings
    items = {
        "multiclass": "Predicted class: the most probable class. Accuracy; balanced accuracy (mean recall over the "
                      "classes with records); precision, recall and F1 per class with their <b>macro</b> "
                      "(unweighted mean over classes) and <b>weighted</b> (by the number of true records per class) "
                      "averages; AUROC of each class against the rest from its probability and their macro mean; "
                      "quadratic-weighted Cohen's kappa with weights (i - j)^2 over the declared class order "
                      "(reported for nominal classes too, where the order is only the listing order). Undefined "
                      "values (a class without records or predictions) are n/a and left out of the averages.",
        "multilabel": "Per label, on the records where that label is known (an unknown label leaves the record out "
                      "of that label only): AUROC, AUPRC (average precision), Brier score, ECE (10 equal-width "
                      "probability bins, record-weighted mean |mean probability - observed fraction|) and "
                      "sensitivity, specificity, PPV, NPV, F1, accuracy at the task's threshold for the label. "
                      "<b>Macro</b>: unweighted mean over the labels; <b>micro</b>: all known (record, label) pairs "
                      "pooled.",
        "regression": "Per target, in its units, on the records where both the measurement and the prediction are "
                      "known: MAE, RMSE, R^2 (1 - SS_res/SS_tot), Pearson and Spearman r, Bland-Altman bias (mean of "
                      "prediction - measurement) and 95% limits of agreement (bias &plusmn; 1.96 SD of the "
                      "differences), and the calibration slope and intercept of the measurement regressed on the "
                      "prediction (ordinary least squares; 1 and 0 when calibrated).",
    }[task.kind]
    return f"""<ul class="small">
<li><b>Metrics.</b> {items}</li>
<li><b>Confidence intervals.</b> {s['n_boot']:,} bootstrap resamples (seed {s['seed']}): patients are drawn with
replacement and all records of each drawn patient are taken. The value is the estimate on all records; the interval
the {round(100 * s['level'])}% percentile interval of the resampled values (medians in metrics.json).</li>
<li><b>Comparisons.</b> Every pair of models on the same records and resamples; the p-value is two-sided,
min(1, 2&middot;(min(#{{d&le;0}}, #{{d&ge;0}}) + 1)/(B + 1)) over the resampled differences d.</li>
</ul>"""


def write_task_report(result: EvaluationResult, task: Task, path: str | os.PathLike, *, title: str,
                      figures: Mapping[str, Path]) -> Path:
    """Write the self-contained ``report.html`` of a non-binary evaluation and return its path."""
    s = result.settings
    keys = list(s["key_metrics"])
    notes = "".join(f"<div class='note'>{_e(n)}</div>" for n in result.notes)
    classes = ", ".join(_e(c) for c in task.classes)
    task_line = (f"task <b>{_e(task.name)}</b> ({KIND_WORDS[task.kind]}{', ordinal' if task.ordinal else ''}: "
                 f"{classes})")
    if task.kind == "regression":
        summary = _summary_table(result, ["mae"]) + "".join(
            f"<h3>{_e(t)}</h3>" + _summary_table(result, [f"{m}:{t}" for m in TARGET_METRICS]) for t in task.classes)
        figure_html = (_figure(figures, "scatter", "Predicted against measured value per model and target; dashed: "
                                                   "identity line.")
                       + _figure(figures, "bland_altman", "Bland-Altman plots: prediction - measurement against their "
                                                          "mean; red: bias, dashed: 95% limits of agreement."))
    else:
        summary = _summary_table(result, keys)
        figure_html = (_figure(figures, "confusion_matrix", "Confusion matrices: counts and % of each true class "
                                                            "(rows); predicted class = most probable class.")
                       + _figure(figures, "roc", "ROC curve per " + ("class (one vs rest)" if task.kind == "multiclass"
                                                                     else "label") + "; legend: AUROC (95% CI).")
                       + _figure(figures, "calibration", "Reliability curves per label (10 equal-width probability "
                                                         "bins, as the ECE); dashed: perfect calibration."))
    lvl = round(100 * s["level"])
    caption = (f"Values: estimate on all {s['records']['records']:,} {_e(s['split'])} records with the {lvl}% "
               f"percentile bootstrap CI ({s['n_boot']:,} resamples of patients). P-values: paired bootstrap against "
               f"{_e(s['reference'])}. Decisions: {_e(s['decisions'])}.")
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">cardiofusion {_e(__version__)} &middot; {_e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}
&middot; {task_line} &middot; split: <b>{_e(s['split'])}</b> &middot; {s['records']['records']:,} records,
{s['records']['patients']:,} patients &middot; {s['n_boot']:,} bootstrap resamples (seed {s['seed']})</div>
{notes}
{_headline(result, task)}
<h2>1. Performance</h2>
{summary}
<p class='small muted'>{caption}</p>
<h2>2. Per {'class' if task.kind == 'multiclass' else 'label' if task.kind == 'multilabel' else 'target'}</h2>
{_per_target_tables(result, task)}
<h2>3. Figures</h2>
{figure_html}
<h2>4. Paired comparisons</h2>
{_comparisons(result, keys)}
<h2>5. Subgroups</h2>
{_subgroups(result, keys)}
<h2>6. Records evaluated</h2>
{_records(result, task)}
<h2>7. Methods</h2>
{_methods(result, task)}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["write_task_report"]
