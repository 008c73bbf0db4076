"""Tables, figures and the report of a cross-validated backbone comparison with a modality ablation (paper 001:
X-ray backbones fused early with the ECG, each also without ECG, and one ECG-only model).

The models are named by :func:`model_name` (``<backbone>``, ``<backbone> without ECG``, ``ECG only``); their
out-of-fold test tables per fold go into :func:`evaluate_ablation`, which writes

* the per-fold metrics (mean +- sd over folds, :func:`.crossval_tasks.task_fold_metrics`) and one pooled
  evaluation of every model on the same out-of-fold records (patient-bootstrap CIs, paired comparisons of the best
  backbone against each other one and of each fusion model against each of its single-modality models,
  :func:`cardiofusion.evaluation.evaluate_tables`; ``OUT/evaluation``);
* ``table4.{csv,md}`` (accuracy, recall, precision, F1 per backbone, macro and weighted; quadratic kappa, recall
  per class, ">=400 called 0"), ``table5.{csv,md}`` (accuracy full / without ECG / without X-ray and the paired
  differences), ``per_fold_metrics.csv``, ``figure4.png``, ``figure5.png`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .crossval_tasks import html_figure, html_table, pool_folds, summarize_task_folds, task_fold_metrics, write_html
from .figures import bar_figure
from .formatting import format_value

#: Ablation variants: key -> display suffix.
VARIANTS: dict[str, str] = {"full": "ECG + X-ray", "no_ecg": "without ECG", "no_xray": "without X-ray"}

#: Table 4 metrics (the paper's columns) per averaging.
TABLE4 = ("accuracy", "recall", "precision", "f1")

ECG_ONLY = "ECG only"


def model_name(backbone: str | None, variant: str) -> str:
    """Display name of a model: the backbone (full), ``<backbone> without ECG`` or ``ECG only``."""
    if variant == "no_xray":
        return ECG_ONLY
    return str(backbone) if variant == "full" else f"{backbone} {VARIANTS[variant]}"


@dataclass(frozen=True)
class AblationSettings:
    """What the tables describe.

    Attributes:
        backbones: the X-ray backbones, in table order.
        variants: the variants trained (keys of :data:`VARIANTS`).
        n_folds: folds of the cross-validation; n_boot / seed: patient-bootstrap resamples and their seed.
        average: the averaging of Table 4's first block and the figures (``macro`` or ``weighted``).
        rank_by: the Table 4 metric (mean over folds) that names the best backbone.
        details: a sentence on the models for the report's summary (image size, initial weights).
        title: the report's title.
    """

    backbones: Sequence[str]
    variants: Sequence[str] = tuple(VARIANTS)
    n_folds: int = 5
    n_boot: int = 1000
    seed: int = 0
    average: str = "macro"
    rank_by: str = "accuracy"
    details: str = ""
    title: str = "Coronary calcium severity: backbones and ablation (paper 001)"


@dataclass
class AblationReport:
    """What :func:`evaluate_ablation` measured and wrote."""

    out_dir: Path
    table4: pd.DataFrame | None = None
    table5: pd.DataFrame | None = None
    best: str | None = None
    oracle: dict[str, Any] | None = None
    majority_accuracy: float | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    evaluation: Any = None


def evaluate_ablation(fold_tables: Mapping[int, Mapping[str, pd.DataFrame]], out_dir: str | Path, task: Any,
                      s: AblationSettings, *, manifest: pd.DataFrame | None = None,
                      oracle: Mapping[str, Any] | None = None,
                      log: Callable[[str], None] = print) -> AblationReport:
    """Evaluate the models' out-of-fold test tables (``{fold: {model name: table}}``) and write the tables,
    figures and report into ``out_dir`` (see the module docstring); ``oracle``: ``{"both"|"cxr"|"ecg":
    {"accuracy", "quadratic_kappa"}}`` of a synthetic export, shown beside the models."""
    from .evaluate import evaluate_tables

    out = Path(out_dir)
    r = AblationReport(out_dir=out, oracle=dict(oracle) if oracle else None)
    per_fold = task_fold_metrics(task, fold_tables)
    summary = summarize_task_folds(per_fold)
    pooled = pool_folds(fold_tables)
    full = [model_name(b, "full") for b in s.backbones if "full" in s.variants]
    avg = s.average
    labels = next(iter(pooled.values()))["label"].to_numpy(dtype=float)
    r.majority_accuracy = float(np.bincount(labels.astype(int)).max() / labels.size) if labels.size else None
    log(f"[5/5] evaluate: {len(per_fold)} folds, out-of-fold predictions pooled ({len(next(iter(pooled.values())))} "
        f"records), {s.n_boot} patient-bootstrap resamples")

    def key(metric: str, average: str = avg) -> str:
        return metric if metric == "accuracy" else f"{average}_{metric}"

    r.best = max(full, key=lambda n: _nan_low(summary[n][key(s.rank_by)]["mean"])) if full else None
    # one evaluation of every model on the same pooled records: paired comparisons of the best backbone against
    # every other model and, per backbone, of the fusion model against each single modality (model_pairs: the
    # reference first, then every pair in this order, so a fusion model always comes before its ablations)
    order = [model_name(b, v) for b in s.backbones for v in ("full", "no_ecg") if v in s.variants]
    order += [ECG_ONLY] if "no_xray" in s.variants else []
    evaluation = evaluate_tables({n: (None, pooled[n]) for n in order}, out / "evaluation", task=task,
                                 reference=r.best or order[0], subgroups=[], n_boot=s.n_boot, seed=s.seed,
                                 split="out-of-fold test records (all folds)", manifest=manifest,
                                 title=f"{s.title}: pooled out-of-fold predictions")
    r.evaluation = evaluation
    r.table4 = _table4(full, summary, evaluation, task) if full else pd.DataFrame()
    r.table5 = _table5(s, summary, evaluation)
    paths = r.paths
    paths["table4_csv"], paths["table5_csv"] = out / "table4.csv", out / "table5.csv"
    r.table4.to_csv(paths["table4_csv"], index=False)
    r.table5.to_csv(paths["table5_csv"], index=False)
    per_fold_rows = [{"fold": f, "model": m, **vals} for f, models in per_fold.items() for m, vals in models.items()]
    paths["per_fold_csv"] = out / "per_fold_metrics.csv"
    pd.DataFrame(per_fold_rows).to_csv(paths["per_fold_csv"], index=False)
    paths["table4_md"] = out / "table4.md"
    paths["table4_md"].write_text(_table4_md(s, r, evaluation), encoding="utf-8")
    paths["table5_md"] = out / "table5.md"
    paths["table5_md"].write_text(_table5_md(s, r.table5), encoding="utf-8")
    _figures(s, r, full, summary)
    paths["report"] = _html(s, r, full, summary, evaluation, task)
    for line in paths["table4_md"].read_text().splitlines() + [""] + paths["table5_md"].read_text().splitlines():
        log("  " + line)
    log(f"  report: {paths['report']}")
    return r


def _nan_low(v: float) -> float:
    return v if np.isfinite(v) else -math.inf


def _table4(full: list[str], summary: Mapping[str, Any], evaluation: Any,
            task: Any) -> pd.DataFrame:
    """One row per backbone: mean, sd over folds and the pooled value with its CI of every Table 4 metric
    (macro and weighted), quadratic kappa, per-class recall and the >=400-called-0 count."""
    rows = []
    for name in full:
        row: dict[str, Any] = {"backbone": name}
        metrics = ["accuracy"] + [f"{a}_{m}" for a in ("macro", "weighted") for m in TABLE4[1:]]
        metrics += ["quadratic_kappa", "balanced_accuracy", "macro_auroc"] + [f"recall:{c}" for c in task.classes]
        ev = evaluation.models[name]
        for m in metrics:
            row[f"{m}_mean"] = summary[name][m]["mean"]
            row[f"{m}_sd"] = summary[name][m]["sd"]
            iv = ev.metrics[m]
            row[f"{m}_pooled"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = iv.value, iv.ci_low, iv.ci_high
        cm = np.asarray(ev.confusion)
        row["n_records"] = int(cm.sum())
        row["ge400_called_0"] = int(cm[-1, 0])
        row["ge400_records"] = int(cm[-1].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _table5(s: AblationSettings, summary: Mapping[str, Any], ev: Any) -> pd.DataFrame:
    """One row per backbone: accuracy (mean +- sd over folds, pooled with CI) of each variant and the paired
    pooled differences full - without ECG / full - without X-ray."""
    rows = []
    for backbone in s.backbones:
        row: dict[str, Any] = {"backbone": backbone}
        for variant in VARIANTS:
            name = model_name(backbone, variant)
            if variant not in s.variants or name not in summary:
                continue
            row[f"{variant}_mean"] = summary[name]["accuracy"]["mean"]
            row[f"{variant}_sd"] = summary[name]["accuracy"]["sd"]
            if name in ev.models:
                iv = ev.models[name].metrics["accuracy"]
                row[f"{variant}_pooled"], row[f"{variant}_ci_low"], row[f"{variant}_ci_high"] = (
                    iv.value, iv.ci_low, iv.ci_high)
        if "full" in s.variants:
            for variant in ("no_ecg", "no_xray"):
                comp = ev.comparisons.get(f"{model_name(backbone, 'full')} vs {model_name(backbone, variant)}")
                if comp is not None:
                    for m in ("accuracy", "quadratic_kappa", f"{s.average}_f1"):
                        d = comp.differences[m]
                        row[f"full_minus_{variant}_{m}"] = d.difference
                        row[f"full_minus_{variant}_{m}_ci_low"] = d.ci_low
                        row[f"full_minus_{variant}_{m}_ci_high"] = d.ci_high
                        row[f"full_minus_{variant}_{m}_p"] = d.p_value
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(row: Mapping[str, Any], prefix: str) -> str:
    mean, sd = row.get(f"{prefix}_mean"), row.get(f"{prefix}_sd")
    if mean is None:
        return "-"
    text = f"{format_value(mean)} +- {format_value(sd)}"
    if f"{prefix}_pooled" in row:
        text += (f" ({format_value(row[f'{prefix}_pooled'])} [{format_value(row[f'{prefix}_ci_low'])}, "
                 f"{format_value(row[f'{prefix}_ci_high'])}])")
    return text


def _diff_cell(row: Mapping[str, Any], prefix: str) -> str:
    if f"{prefix}" not in row or row.get(prefix) is None or (isinstance(row[prefix], float) and math.isnan(row[prefix])):
        return "-"
    return (f"{row[prefix]:+.3f} [{row[prefix + '_ci_low']:+.3f}, {row[prefix + '_ci_high']:+.3f}], "
            f"p {row[prefix + '_p']:.3g}")


def _table4_md(s: AblationSettings, r: AblationReport, evaluation: Any) -> str:
    t = r.table4
    lines = ["# Table 4: X-ray backbones, early fusion with the ECG (4-class CAC severity)", "",
             f"Mean +- sd over {s.n_folds} patient-grouped folds; in brackets the value on all out-of-fold "
             f"predictions pooled with its 95% patient-bootstrap CI ({s.n_boot} resamples). Recall, precision "
             "and F1 are averaged over the four classes as named (macro: unweighted mean; weighted: by class "
             "support); F1 is the harmonic mean of precision and recall per class, then averaged.", ""]
    for average in (s.average, "weighted" if s.average == "macro" else "macro"):
        lines += [f"## {average} averaging", "",
                  "| Backbone | Accuracy | Recall | Precision | F1 |", "|---|---|---|---|---|"]
        for _, row in t.iterrows():
            mark = " (best)" if row["backbone"] == r.best else ""
            lines.append(f"| {row['backbone']}{mark} | " + " | ".join(
                _cell(row, m if m == "accuracy" else f"{average}_{m}") for m in TABLE4) + " |")
        lines.append("")
    lines += ["## Ordinal agreement and the clinically important error", "",
              "| Backbone | Quadratic kappa | Recall 0 | Recall 1-99 | Recall 100-399 | Recall >=400 | >=400 called 0 |",
              "|---|---|---|---|---|---|---|"]
    for _, row in t.iterrows():
        rec = " | ".join(_cell(row, f"recall:{c}") for c in ("0", "1-99", "100-399", ">=400"))
        lines.append(f"| {row['backbone']} | {_cell(row, 'quadratic_kappa')} | {rec} | "
                     f"{row['ge400_called_0']} of {row['ge400_records']} |")
    lines.append("")
    if evaluation is not None and r.best is not None and len(t) > 1:
        lines += [f"## Paired comparison: {r.best} (best by mean {s.rank_by}) minus each other backbone", "",
                  "Same out-of-fold records and the same patient resamples; 95% CI and bootstrap p.", "",
                  "| Other backbone | Accuracy | Quadratic kappa | F1 (" + s.average + ") |", "|---|---|---|---|"]
        for comp in evaluation.comparisons.values():
            if comp.model_a != r.best or comp.model_b not in set(r.table4["backbone"]):
                continue
            cells = [_diff_text(comp.differences[m]) for m in ("accuracy", "quadratic_kappa", f"{s.average}_f1")]
            lines.append(f"| {comp.model_b} | " + " | ".join(cells) + " |")
        lines.append("")
    if r.majority_accuracy is not None:
        lines += [f"Always the most frequent class: accuracy {format_value(r.majority_accuracy)}, quadratic "
                  "kappa 0.", ""]
    if r.oracle:
        lines += ["## Oracle (planted signs of the synthetic export, logistic regression, 5-fold CV)", "",
                  "| Evidence | Accuracy | Quadratic kappa |", "|---|---|---|"]
        for k, label in (("both", "ECG + X-ray signs"), ("cxr", "X-ray signs"), ("ecg", "ECG signs")):
            o = r.oracle.get(k) or {}
            lines.append(f"| {label} | {format_value(o.get('accuracy'))} | {format_value(o.get('quadratic_kappa'))} |")
        lines.append("")
    return "\n".join(lines)


def _diff_text(d: Any) -> str:
    return f"{d.difference:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}], p {d.p_value:.3g}"


def _table5_md(s: AblationSettings, t: pd.DataFrame) -> str:
    lines = ["# Table 5: ablation, accuracy with and without each modality", "",
             f"Mean +- sd over {s.n_folds} folds (pooled out-of-fold accuracy [95% patient-bootstrap CI]). "
             "The ECG-only model has no X-ray backbone: it is the same model in every row.", "",
             "| Backbone | Full (ECG + X-ray) | Without ECG | Without X-ray | Full - without ECG | Full - without X-ray |",
             "|---|---|---|---|---|---|"]
    for _, row in t.iterrows():
        r = row.to_dict()
        lines.append(f"| {r['backbone']} | {_cell(r, 'full')} | {_cell(r, 'no_ecg')} | {_cell(r, 'no_xray')} | "
                     f"{_diff_cell(r, 'full_minus_no_ecg_accuracy')} | {_diff_cell(r, 'full_minus_no_xray_accuracy')} |")
    lines.append("")
    return "\n".join(lines)


def _figures(s: AblationSettings, r: AblationReport, full: list[str], summary: Mapping[str, Any]) -> None:

    out, avg = r.out_dir, s.average
    oracle = {"oracle accuracy (ECG + X-ray signs)": (r.oracle or {}).get("both", {}).get("accuracy"),
              "most frequent class": r.majority_accuracy}
    if full:
        series = {}
        for m in TABLE4:
            k = m if m == "accuracy" else f"{avg}_{m}"
            series[m if m == "accuracy" else f"{m} ({avg})"] = (
                [summary[n][k]["mean"] for n in full], [summary[n][k]["sd"] for n in full])
        r.paths["figure4"] = bar_figure(full, series, out / "figure4.png", ylabel="mean +- sd over folds",
                                             title="Figure 4: X-ray backbones (early fusion with the ECG)",
                                             reference=oracle)
    series = {}
    for variant in VARIANTS:
        names = [model_name(b, variant) for b in s.backbones]
        if variant in s.variants:
            series[VARIANTS[variant]] = ([summary[n]["accuracy"]["mean"] for n in names],
                                            [summary[n]["accuracy"]["sd"] for n in names])
    if s.backbones:
        r.paths["figure5"] = bar_figure(s.backbones, series, out / "figure5.png", ylabel="accuracy, mean +- sd",
                                             title="Figure 5: ablation (accuracy)", reference=oracle)


def _md_to_html(text: str) -> str:
    """The recipe's own markdown tables (``# title``, ``## heading``, paragraphs, ``| a | b |`` rows) as HTML."""
    html_parts: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            html_parts.append(html_table(rows[0], rows[1:]))
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("## "):
            html_parts.append(f"<h3>{_esc(line[3:])}</h3>")
        elif line.startswith("# ") or not line.strip():
            continue
        else:
            html_parts.append(f"<p>{_esc(line)}</p>")
    flush()
    return "\n".join(html_parts)


def _esc(text: str) -> str:
    return html.escape(text)


def _html(s: AblationSettings, r: AblationReport, full: list[str], summary: Mapping[str, Any],
          evaluation: Any, task: Any) -> Path:
    """``OUT/report.html``: Tables 4-5, Figures 4-5, confusion matrices, comparisons, oracle, methods."""
    paths = r.paths
    sections: list[tuple[str, str]] = []
    counts = evaluation.settings["records"]
    intro = (f"<p>Task <code>{_esc(task.name)}</code>: {_esc(task.description)}; classes "
             f"{_esc(' | '.join(task.classes))} (ordinal, CORAL cumulative head). {s.n_folds} patient-grouped "
             f"folds stratified by class; {counts.get('records', '?')} out-of-fold records of "
             f"{counts.get('patients', '?')} patients (per class: "
             f"{_esc(', '.join(f'{c} {n}' for c, n in counts.get('per_class', {}).items()))}). "
             f"{_esc(s.details)} Best backbone by mean "
             f"{_esc(s.rank_by)}: <b>{_esc(r.best or '-')}</b>.</p>")
    sections.append(("Summary", intro))
    t4 = paths["table4_md"].read_text(encoding="utf-8")
    fig4 = html_figure(paths["figure4"], "Figure 4: mean +- sd over folds per backbone; dotted: oracle and most-frequent-class accuracy."
                       ) if "figure4" in paths else ""
    sections.append(("Table 4 and Figure 4: backbones", _md_to_html(t4) + fig4))
    if evaluation is not None:
        cms = []
        for name in full:
            cm = evaluation.models[name].confusion
            cms.append(f"<h3>{_esc(name)}</h3>" + html_table(["true \\ predicted", *task.classes],
                                                             [[c, *row] for c, row in zip(task.classes, cm)]))
        sections.append(("Confusion matrices (pooled out-of-fold predictions)", "".join(cms)))
    t5 = paths["table5_md"].read_text(encoding="utf-8")
    fig5 = html_figure(paths["figure5"], "Figure 5: accuracy with and without each modality, mean +- sd over folds."
                       ) if "figure5" in paths else ""
    sections.append(("Table 5 and Figure 5: ablation", _md_to_html(t5) + fig5))
    sections.append(("Methods", "<ul class='small'>"
                     "<li>Early fusion: X-ray backbone (timm, 1 input channel, pooled features) and ECG encoder "
                     "features concatenated, MLP, 3 cumulative logits (CORAL), class probabilities from their "
                     "differences; the predicted class is the most probable one.</li>"
                     "<li>Folds: patient-grouped, stratified by CAC class (scikit-learn StratifiedGroupKFold); "
                     "fold i tests, fold i+1 validates (early stopping on the validation loss), the rest trains.</li>"
                     "<li>Fold spread: mean and sample sd (ddof 1) of each fold's test metrics. Pooled: every "
                     "record's out-of-fold prediction; 95% percentile CIs from patient-bootstrap resamples "
                     "(all records of a drawn patient); paired differences on the same resamples, two-sided "
                     "bootstrap p.</li>"
                     "<li>Averaging: macro = unweighted mean over the four classes; weighted = by class support; "
                     "F1 = harmonic mean of precision and recall (per class, then averaged). Quadratic-weighted "
                     "kappa over the class order.</li>"
                     "<li>Every metric of every model with its CI and every paired comparison: "
                     "<code>evaluation/report.html</code> and <code>evaluation/</code>.</li></ul>"))
    return write_html(r.out_dir / "report.html", s.title,
                      sections, subtitle=f"{s.n_folds}-fold cross-validation, {s.n_boot} bootstrap resamples")


__all__ = ["ECG_ONLY", "TABLE4", "VARIANTS", "AblationReport", "AblationSettings", "evaluate_ablation", "model_name"]
