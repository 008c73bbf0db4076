"""The self-contained HTML report: one file, inline CSS, figures embedded as base64 PNG, no links out, so it
opens offline and can be mailed to a clinician as it is."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from .formatting import format_ci, format_interval, format_p, format_value
from .metrics import METRIC_LABELS

if TYPE_CHECKING:  # pragma: no cover
    from .results import EvaluationResult

#: Table 2 columns (the paper's order) and the extra ones after them.
TABLE2_METRICS = ("auroc", "auprc", "accuracy", "precision", "recall", "specificity", "f1", "npv", "brier")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1d2329;max-width:1180px;margin:24px auto;
padding:0 18px;line-height:1.45;font-size:14px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:2px solid #dfe3e8;padding-bottom:4px;margin-top:34px}
h3{font-size:15px;margin-top:20px}.muted{color:#5c6670}.small{font-size:12px}
table{border-collapse:collapse;margin:8px 0 14px 0;font-size:13px}
th,td{border:1px solid #d5dae0;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f1f3f6;font-weight:600}td.l,th.l{text-align:left}
tr.p td{background:#fafbfc;color:#5c6670;font-style:italic}tr.ref td{font-weight:600}
.fig{margin:10px 0 18px 0}.fig img{max-width:100%;border:1px solid #e3e6ea}
.cap{font-size:12px;color:#5c6670;margin-top:2px}
.note{background:#fff8e5;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
.grid{display:flex;flex-wrap:wrap;gap:14px}.card{border:1px solid #dfe3e8;padding:8px;border-radius:4px}
.card img{max-height:260px;max-width:520px}
code{background:#f1f3f6;padding:0 3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, (int, np.integer)) else _e(x)


def _p(p: Any) -> str:
    return _e(format_p(p))


def _img(path: str | os.PathLike, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(figures: Mapping[str, Path], key: str, caption: str) -> str:
    if key not in figures:
        return ""
    return f'<div class="fig">{_img(figures[key], caption)}<div class="cap">{caption}</div></div>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, row_class: Sequence[str] | None = None
           ) -> str:
    out = ["<table><tr>" + "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
           + "</tr>"]
    for k, row in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
                   + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
def _flow_section(flow: Mapping[str, Any] | None) -> str:
    if not flow:
        return "<p class='muted'>No cohort flow table was given (<code>flow.json</code> beside the manifest).</p>"
    parts = []
    names = {"echo": "Echocardiography reports", "cxr": "Chest X-ray exams", "ecg": "12-lead ECG exams"}
    rows, classes = [], []
    for kind in ("echo", "cxr", "ecg"):
        t = (flow.get("tables") or {}).get(kind)
        if not t:
            continue
        rows.append([f"<b>{names[kind]}</b>", _n(t["raw_rows"]), ""])
        classes.append("")
        left = t["raw_rows"]
        for ex in t.get("exclusions", []):
            left -= ex["count"]
            rows.append([f"&nbsp;&nbsp;excluded: {_e(ex['reason'])}", f"&minus;{_n(ex['count'])}", _n(left)])
            classes.append("p")
        rows.append(["&nbsp;&nbsp;used in records", _n(t["used"]), ""])
        classes.append("")
    if rows:
        parts.append(_table(["step", "count", "remaining"], rows, row_class=classes))
    lk = flow.get("linkage")
    if lk:
        labels = [("echoes_eligible", "eligible echoes (valid, adult, label known)"),
                  ("echoes_linked_to_cxr", "echoes linked to an X-ray"),
                  ("cxr_linked_to_echo", "distinct X-rays linked to an echo"),
                  ("echoes_with_ecg", "echoes whose X-ray has an ECG in the window"),
                  ("candidate_links", "(ECG, X-ray, echo) links"),
                  ("duplicate_triples_removed", "duplicate links removed"), ("records", "records")]
        parts.append("<h3>Linkage</h3>" + _table(["step", "count"], [[t, _n(lk[k])] for k, t in labels if k in lk]))
    c = flow.get("cohort")
    if c:
        sev = ", ".join(f"{_e(k)} {_n(v)}" for k, v in (c.get("severity") or {}).items())
        parts.append(f"<p>Cohort: <b>{_n(c['records'])}</b> records from <b>{_n(c['patients'])}</b> patients; "
                     f"AS in {_n(c['as_records'])} records and {_n(c['as_patients'])} patients. Severity: {sev}.</p>")
    d = flow.get("decoding")
    if d:
        rows = [["records in", _n(d["records_in"]), ""]]
        left = d["records_in"]
        for ex in d.get("exclusions", []):
            left -= ex["count"]
            rows.append([f"&nbsp;&nbsp;excluded: {_e(ex['reason'])}", f"&minus;{_n(ex['count'])}", _n(left)])
        rows.append(["usable records", _n(d["records_usable"]), ""])
        parts.append("<h3>Decoding (preprocessing cache)</h3>" + _table(["step", "count", "remaining"], rows))
    return "\n".join(parts)


def _splits_section(splits: Sequence[Mapping[str, Any]], result: EvaluationResult) -> str:
    parts = []
    if splits:
        rows = []
        for s in splits:
            pct = f"{100 * s['positives'] / s['records']:.1f}%" if s["records"] else "n/a"
            rows.append([_e(s["split"]), _n(s["records"]), _n(s["patients"]), _n(s["positives"]),
                         _n(s.get("positive_patients", "")), pct])
        parts.append(_table(["split", "records", "patients", "AS records", "AS patients", "AS %"], rows))
        parts.append(f"<p class='small muted'>Counts: {_e(splits[0].get('source', ''))}. Every patient is in one "
                     "split only.</p>")
    split = result.settings["split"]
    rows = []
    for name, m in result.models.items():
        rows.append([_e(name), _n(m.val_counts["records"]), _n(m.val_counts["patients"]), _n(m.val_counts["positives"]),
                     _n(m.counts["records"]), _n(m.counts["patients"]), _n(m.counts["positives"])])
    parts.append("<h3>Records evaluated</h3>" + _table(
        ["model", "val records", "val patients", "val AS", f"{_e(split)} records", f"{_e(split)} patients",
         f"{_e(split)} AS"], rows))
    return "\n".join(parts)


def _table2(result: EvaluationResult) -> str:
    ref = result.settings["reference"]
    names = list(result.models)
    header = ["Model"] + [METRIC_LABELS[m] for m in TABLE2_METRICS]
    rows, classes = [], []
    for name in names:
        m = result.models[name]
        rows.append([_e(name)] + [_e(format_interval(m.metrics[k]))
                                  for k in TABLE2_METRICS])
        classes.append("ref" if name == ref else "")
        if name != ref:
            comp = result.comparisons.get(f"{ref} vs {name}")
            if comp:
                rows.append([f"p-value vs {_e(ref)}"] + [_p(comp.differences[k].p_value) for k in TABLE2_METRICS])
                classes.append("p")
    lvl = round(100 * result.settings["level"])
    caption = (f"Values are the estimate on all {result.settings['records']['records']:,} {_e(result.settings['split'])} "
               f"records with the {lvl}% percentile bootstrap confidence interval in parentheses "
               f"({result.settings['n_boot']:,} resamples of patients, seed {result.settings['seed']}). "
               f"P-values are two-sided paired bootstrap tests of each model against {_e(ref)} on the same resamples. "
               "Threshold metrics (accuracy to NPV) use each model's threshold chosen on the validation split. "
               "The bootstrap medians (the paper reports medians) are in the next table and in metrics.json.")
    medians = _table(["Model"] + [METRIC_LABELS[m] for m in TABLE2_METRICS],
                     [[_e(n)] + [format_value(result.models[n].metrics[k].median) for k in TABLE2_METRICS]
                      for n in names])
    return (_table(header, rows, row_class=classes) + f"<p class='small muted'>{caption}</p>"
            + "<h3>Bootstrap medians</h3>" + medians)


def _comparisons(result: EvaluationResult) -> str:
    rows = []
    for c in result.comparisons.values():
        d = c.differences
        dl = c.delong or {}
        diff = {k: _e(format_ci(d[k].difference, d[k].ci_low, d[k].ci_high)) for k in d}
        rows.append([f"{_e(c.model_a)} &minus; {_e(c.model_b)}",
                     diff["auroc"], _p(d["auroc"].p_value),
                     _e(format_ci(dl.get("difference"), dl.get("ci_low"), dl.get("ci_high"))) if dl else "n/a",
                     format_value(dl.get("z"), 2) if dl else "n/a", _p(dl.get("p_value")) if dl else "n/a",
                     diff["auprc"], _p(d["auprc"].p_value),
                     diff["recall"], _p(d["recall"].p_value),
                     diff["specificity"], _p(d["specificity"].p_value)])
    if not rows:
        return "<p class='muted'>One model only: nothing to compare.</p>"
    header = ["difference", "AUROC (bootstrap CI)", "p", "AUROC (DeLong CI)", "DeLong z", "DeLong p",
              "AUPRC", "p", "Sensitivity", "p", "Specificity", "p"]
    return (_table(header, rows) + "<p class='small muted'>Every metric's difference, CI and p-value is in "
            "metrics.json (<code>comparisons</code>) and comparisons.csv. Bootstrap p-values cannot go below "
            f"2/(B+1) = {2 / (result.settings['n_boot'] + 1):.4f}.</p>")


def _thresholds(result: EvaluationResult) -> str:
    rows = []
    for name, m in result.models.items():
        t = m.threshold
        rows.append([_e(name), _e(m.calibrator.method), _e(t.describe()), format_value(t.sensitivity),
                     format_value(t.specificity),
                     _e(format_interval(m.metrics["recall"])),
                     _e(format_interval(m.metrics["specificity"])),
                     _e(format_interval(m.brier_uncalibrated)),
                     _e(format_interval(m.metrics["brier"]))])
    split = _e(result.settings["split"])
    return _table(["model", "calibration", "decision rule (chosen on validation)", "val sensitivity",
                   "val specificity", f"{split} sensitivity", f"{split} specificity", "Brier before", "Brier after"],
                  rows)


def _subgroup_table(result: EvaluationResult) -> str:
    sub = result.subgroups
    if sub.empty:
        return "<p class='muted'>No subgroup analysis (no manifest or no subgroup column).</p>"
    names = list(result.models)
    header = ["subgroup", "level", "records", "AS"] + [f"{_e(n)}: {k}" for n in names
                                                      for k in ("AUROC", "sensitivity", "specificity")]
    rows = []
    for (column, level), part in sub.groupby(["column", "level"], sort=False):
        row = [_e(column), _e(level), _n(int(part["n"].iloc[0])), _n(int(part["positives"].iloc[0]))]
        for n in names:
            for k in ("auroc", "recall", "specificity"):
                r = part[(part["model"] == n) & (part["metric"] == k)]
                row.append(_e(format_ci(r["value"].iloc[0], r["ci_low"].iloc[0], r["ci_high"].iloc[0]))
                           if len(r) else "n/a")
        rows.append(row)
    return _table(header, rows, left=2)


def _explanations(explanations: Sequence[Mapping[str, Any]] | None) -> str:
    if not explanations:
        return "<p class='muted'>No explanations were given.</p>"
    cards = []
    for item in explanations:
        prob = item.get("probability")
        label = item.get("label")
        head = (f"<b>record {_e(item.get('record_id', '?'))}</b> &middot; "
                f"label: {'AS' if label == 1 else 'no AS' if label == 0 else _e(label)} &middot; "
                f"predicted probability: {format_value(prob) if isinstance(prob, (int, float)) else _e(prob)}")
        imgs = []
        for kind, path in (item.get("images") or {}).items():
            p = Path(path)
            if p.is_file():
                imgs.append(f"<div>{_img(p, f'{kind} explanation')}<div class='cap'>{_e(kind)}</div></div>")
            else:
                imgs.append(f"<div class='muted small'>{_e(kind)}: image missing</div>")
        cards.append(f"<div class='card'>{head}<div class='grid'>{''.join(imgs)}</div></div>")
    return "<div class='grid'>" + "".join(cards) + "</div>"


def _headline(result: EvaluationResult) -> str:
    """Plain-language reading of the reference model and a short glossary."""
    ref = result.settings["reference"]
    m = result.models[ref].metrics
    n = result.settings["records"]
    parts = [(f"<p><b>In plain words.</b> On {n['records']:,} {_e(result.settings['split'])} records "
              f"({n['positives']:,} with aortic stenosis), <b>{_e(ref)}</b> separates AS from non-AS records with "
              f"an AUROC of {_e(format_interval(m['auroc']))}.")]
    if all(np.isfinite(m[k].value) for k in ("recall", "specificity")):
        parts.append(f" At its threshold it flags {100 * m['recall'].value:.0f}% of the AS records (sensitivity) "
                     f"and clears {100 * m['specificity'].value:.0f}% of the others (specificity)")
        if np.isfinite(m["precision"].value):
            parts.append(f"; {100 * m['precision'].value:.0f}% of the flagged records have AS (PPV)")
        if np.isfinite(m["npv"].value):
            parts.append(f" and {100 * m['npv'].value:.0f}% of the cleared ones do not (NPV)")
        parts.append(".")
    parts.append("</p><p class='small muted'>AUROC: 0.5 is chance, 1 is perfect ranking. AUPRC: average precision, "
                 "to be compared with the prevalence. Sensitivity/specificity/PPV/NPV depend on the decision "
                 "threshold, which was chosen on the validation split. Brackets: 95% confidence intervals.</p>")
    return "".join(parts)


def write_report(result: EvaluationResult, path: str | os.PathLike, *, title: str,
                 flow: Mapping[str, Any] | None, splits: Sequence[Mapping[str, Any]],
                 figures: Mapping[str, Path], explanations: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write ``report.html`` (self-contained) and return its path."""
    s = result.settings
    lvl = round(100 * s["level"])
    rule = s["threshold_rule"] + (f" (target {s['target']:g})" if s.get("target") is not None else "")
    notes = "".join(f"<div class='note'>{_e(n)}</div>" for n in result.notes)
    split_warning = ("<div class='note'>The evaluated split is the validation split, where the thresholds and "
                     "calibrators were fitted: these numbers are optimistic.</div>" if s["split"] == "val" else "")
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">cardiofusion {_e(__version__)} &middot; {_e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}
&middot; split: <b>{_e(s['split'])}</b> &middot; {s['records']['records']:,} records, {s['records']['patients']:,}
patients, {s['records']['positives']:,} with AS &middot; {s['n_boot']:,} bootstrap resamples (seed {s['seed']})
&middot; threshold: {_e(rule)} on validation &middot; calibration: {_e(s['calibration'])}</div>
{split_warning}{notes}
{_headline(result)}
<h2>1. Performance (Table 2 layout)</h2>
{_table2(result)}
<h2>2. ROC and precision-recall curves</h2>
{_figure(figures, 'roc', f'ROC curves of all models on the {_e(s["split"])} split; legend: AUROC ({lvl}% bootstrap CI).')}
{_figure(figures, 'pr', 'Precision-recall curves; dashed line: prevalence (a random score). Legend: AUPRC (average precision).')}
<h2>3. Paired comparisons</h2>
{_comparisons(result)}
<h2>4. Decision thresholds and calibration</h2>
<p>Each model's scores are turned into probabilities by a calibrator fitted on its validation scores; the
decision threshold is chosen on those validation probabilities and applied unchanged to the {_e(s['split'])}
records. A record is called positive when its probability is at or above the threshold.</p>
{_thresholds(result)}
{_figure(figures, 'calibration', 'Reliability curves (deciles of predicted probability) before and after '
                  'calibration; legend: Brier score.')}
{_figure(figures, 'confusion', 'Confusion matrices at the validation-chosen thresholds.')}
<h2>5. Subgroups</h2>
{_subgroup_table(result)}
{_figure(figures, 'forest', f'AUROC with {lvl}% bootstrap CI per subgroup level; dotted lines: each model overall.')}
<h2>6. Cohort</h2>
<h3>Split summary</h3>
{_splits_section(splits, result)}
<h3>Flow of exams and records</h3>
{_flow_section(flow)}
<h2>7. Explanations</h2>
{_explanations(explanations)}
<h2>8. Methods</h2>
<ul class="small">
<li><b>Metrics.</b> AUROC: probability that a random AS record scores above a random non-AS record (ties count
half). AUPRC: average precision, the sum over score thresholds of (recall gain) &times; precision. Accuracy,
precision (PPV), recall (sensitivity), specificity, NPV and F1 at the chosen threshold. Brier score: mean squared
difference between calibrated probability and label. Undefined values (e.g. no AS record in a subgroup) are n/a.</li>
<li><b>Confidence intervals.</b> {s['n_boot']:,} bootstrap resamples: patients are drawn with replacement and all
records of each drawn patient are taken, so a patient's records stay together. The reported value is the
estimate on all records; the interval is the {lvl}% percentile interval of the resampled values; the median of
the resampled values is given separately.</li>
<li><b>Comparisons.</b> Both models are evaluated on the same resamples; the p-value is two-sided,
min(1, 2&middot;(min(#{{d&le;0}}, #{{d&ge;0}}) + 1)/(B + 1)) over the resampled differences d. AUROCs are also
compared with DeLong's test (fast midrank algorithm of Sun &amp; Xu, 2014), which treats records as independent.</li>
<li><b>Subgroups.</b> Levels of cohort columns (continuous ones in bands); the same patient resamples restricted
to the subgroup's records.</li>
</ul>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["TABLE2_METRICS", "write_report"]
