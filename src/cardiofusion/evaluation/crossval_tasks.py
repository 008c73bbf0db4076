"""Cross-validated comparison of several models on a multiclass / multi-label / regression task.

The models are scored on the test fold of each fold (out-of-fold score tables, one per fold and model):

* :func:`task_fold_metrics` -- every metric of the task's family (:func:`.task_evaluate.metric_family`)
  per fold and model, the fold spread the papers report (mean +- sd over folds, :func:`.folds.summarize_folds`);
* :func:`pool_folds` -- each model's out-of-fold tables stacked into one table (every record once), which
  :func:`cardiofusion.evaluation.evaluate_tables` (``task=``) evaluates with patient-bootstrap CIs and paired
  comparisons on the same records;
* :func:`write_html` -- a self-contained page (inline CSS, figures embedded) from ready-made sections.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import ConfigError
from .folds import summarize_folds
from .report import CSS, _e, _img, _table
from .task_evaluate import metric_family, prepare_task_table


def task_fold_metrics(task: Any, fold_tables: Mapping[int, Mapping[str, Any]]) -> dict[int, dict[str, dict[str, float]]]:
    """``{fold: {model: {metric: value}}}``: the task's metrics on each fold's test table of each model."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for fold, tables in fold_tables.items():
        out[int(fold)] = {}
        for name, table in tables.items():
            prepared, _ = prepare_task_table(table, task, f"{name} (fold {fold})")
            out[int(fold)][name] = metric_family(task, prepared).point()
    return out


def summarize_task_folds(per_fold: Mapping[int, Mapping[str, Mapping[str, float]]],
                         metrics: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean and sd (ddof 1) over folds of every metric (default: all metrics of the first model)."""
    if metrics is None:
        first = next((m for fold in per_fold.values() for m in fold.values()), {})
        metrics = list(first)
    return summarize_folds(per_fold, metrics)


def pool_folds(fold_tables: Mapping[int, Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    """Each model's out-of-fold tables stacked (a ``fold`` column added); a record in two folds is an error."""
    models: dict[str, list[pd.DataFrame]] = {}
    for fold, tables in fold_tables.items():
        for name, table in tables.items():
            t = table if isinstance(table, pd.DataFrame) else pd.read_csv(table, dtype={"record_id": str,
                                                                                        "patient_id": str})
            models.setdefault(name, []).append(t.assign(fold=int(fold)))
    out = {}
    for name, parts in models.items():
        pooled = pd.concat(parts, ignore_index=True)
        pooled["record_id"] = pooled["record_id"].astype(str)
        pooled["patient_id"] = pooled["patient_id"].astype(str)
        dup = pooled["record_id"].duplicated()
        if dup.any():
            raise ConfigError(f"{name}: record {pooled.loc[dup, 'record_id'].iloc[0]!r} is in the test set of two "
                              "folds")
        split = pooled.groupby("patient_id")["fold"].nunique()
        if (split > 1).any():
            raise ConfigError(f"{name}: patient {split[split > 1].index[0]!r} is in the test set of two folds")
        out[name] = pooled
    return out


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """An HTML table of already formatted cells (escaped here)."""
    return _table([_e(h) for h in header], [[_e(c) for c in r] for r in rows], left=left)


def html_figure(path: str | os.PathLike, caption: str) -> str:
    """A figure embedded as base64 PNG with its caption."""
    return f'<div class="fig">{_img(path, caption)}<div class="cap">{_e(caption)}</div></div>'


def write_html(path: str | os.PathLike, title: str, sections: Sequence[tuple[str, str]], *, subtitle: str = "") -> Path:
    """A self-contained report page: ``sections`` are ``(heading, html)`` pairs (html already escaped)."""
    body = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
            f'<div class="muted">cardiofusion {_e(__version__)} &middot; '
            f"{_e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}{' &middot; ' + _e(subtitle) if subtitle else ''}"
            "</div>"]
    for heading, content in sections:
        body.append(f"<h2>{_e(heading)}</h2>\n{content}")
    body.append("</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(body), encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["html_figure", "html_table", "pool_folds", "summarize_task_folds", "task_fold_metrics", "write_html"]
