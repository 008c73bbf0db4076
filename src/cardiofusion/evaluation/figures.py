"""Evaluation figures (matplotlib, Agg backend, PNG): ROC and precision-recall curves of all models on one
plot (the paper's Figure 3), calibration before/after, confusion matrices and the subgroup forest plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .formatting import format_ci

DPI = 150


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    _plt().close(fig)
    return path


def roc_figure(curves: Mapping[str, dict[str, Any]], path: str | os.PathLike, *, title: str = "ROC curves") -> Path:
    """All models' ROC curves on one plot; legend ``name: AUROC value (CI)``.

    Args:
        curves: ``{name: {"fpr", "tpr", "value", "ci_low", "ci_high"}}``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for color, (name, c) in zip(_colors(len(curves)), curves.items()):
        ax.plot(c["fpr"], c["tpr"], color=color, lw=2,
                label=f"{name}: AUROC {format_ci(c['value'], c.get('ci_low'), c.get('ci_high'))}")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="False positive rate (1 - specificity)",
           ylabel="True positive rate (sensitivity)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def pr_figure(curves: Mapping[str, dict[str, Any]], prevalence: float, path: str | os.PathLike,
              *, title: str = "Precision-recall curves") -> Path:
    """All models' precision-recall curves; legend ``name: AUPRC value (CI)``; prevalence as the chance line.

    Args:
        curves: ``{name: {"recall", "precision", "value", "ci_low", "ci_high"}}``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for color, (name, c) in zip(_colors(len(curves)), curves.items()):
        ax.step(c["recall"], c["precision"], where="post", color=color, lw=2,
                label=f"{name}: AUPRC {format_ci(c['value'], c.get('ci_low'), c.get('ci_high'))}")
    ax.axhline(prevalence, color="0.6", lw=1, ls="--", label=f"prevalence {prevalence:.3f}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)",
           title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def reliability(labels: Any, probabilities: Any, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantile-binned reliability curve: mean predicted probability, observed fraction, count per bin."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    keep = np.isfinite(p) & np.isfinite(y)
    y, p = y[keep], p[keep]
    if p.size == 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    mean_p, frac, count = [], [], []
    for b in np.unique(idx):
        m = idx == b
        mean_p.append(p[m].mean())
        frac.append(y[m].mean())
        count.append(int(m.sum()))
    return np.asarray(mean_p), np.asarray(frac), np.asarray(count)


def calibration_figure(models: Mapping[str, dict[str, Any]], path: str | os.PathLike, *, n_bins: int = 10) -> Path:
    """Reliability curves before (the model's own probability) and after calibration, side by side.

    Args:
        models: ``{name: {"labels", "before", "after", "brier_before", "brier_after", "method"}}``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.0), sharey=True)
    colors = _colors(len(models))
    for ax, key, title in ((axes[0], "before", "Before calibration (model probability)"),
                           (axes[1], "after", "After calibration (fitted on validation)")):
        for color, (name, m) in zip(colors, models.items()):
            x, f, _ = reliability(m["labels"], m[key], n_bins)
            brier = m.get(f"brier_{key}")
            extra = f" ({m['method']})" if key == "after" and m.get("method") else ""
            label = f"{name}{extra}: Brier {brier:.3f}" if brier is not None and np.isfinite(brier) else name
            ax.plot(x, f, marker="o", ms=4, lw=1.5, color=color, label=label)
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="Mean predicted probability", title=title)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    axes[0].set_ylabel("Observed fraction with AS")
    fig.tight_layout()
    return _save(fig, path)


def confusion_figure(matrices: Mapping[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """One confusion matrix per model at its validation-chosen threshold.

    Args:
        matrices: ``{name: {"tn", "fp", "fn", "tp", "threshold"}}``.
    """
    plt = _plt()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.7), squeeze=False)
    for ax, (name, c) in zip(axes[0], matrices.items()):
        cm = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
        row = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, row, out=np.zeros_like(cm), where=row > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j]):,}\n({100 * frac[i, j]:.0f}% of row)", ha="center", va="center",
                        fontsize=9, color="white" if frac[i, j] > 0.6 else "black")
        ax.set_xticks([0, 1], ["no AS", "AS"])
        ax.set_yticks([0, 1], ["no AS", "AS"])
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Actual")
        thr = c.get("threshold")
        ax.set_title(f"{name}\n(threshold {thr:.3g})" if thr is not None else name, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def forest_figure(rows: Sequence[dict[str, Any]], models: Sequence[str], path: str | os.PathLike, *,
                  metric_label: str = "AUROC", overall: Mapping[str, dict[str, float]] | None = None) -> Path:
    """Forest plot of a metric per subgroup level, one marker per model.

    Args:
        rows: ``{"column", "level", "n", "positives", "model", "value", "ci_low", "ci_high"}`` records.
        models: model names in legend order.
        overall: ``{model: {"value", ...}}``: dotted vertical line per model at its overall value.
    """
    plt = _plt()
    groups: list[tuple[str, str, int, int]] = []
    for r in rows:
        key = (r["column"], r["level"], int(r["n"]), int(r["positives"]))
        if key not in groups:
            groups.append(key)
    n_models = max(len(models), 1)
    height = max(2.5, 0.38 * len(groups) * max(1.0, n_models / 2.5) + 1.4)
    fig, ax = plt.subplots(figsize=(8.0, height))
    colors = dict(zip(models, _colors(len(models))))
    offsets = (np.arange(n_models) - (n_models - 1) / 2) * (0.6 / n_models)
    ypos = {g: len(groups) - 1 - i for i, g in enumerate(groups)}
    for r in rows:
        g = (r["column"], r["level"], int(r["n"]), int(r["positives"]))
        k = list(models).index(r["model"])
        y = ypos[g] - offsets[k]  # first model on top
        v, lo, hi = r["value"], r.get("ci_low"), r.get("ci_high")
        if v is None or not np.isfinite(v):
            continue
        if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color=colors[r["model"]], lw=1.5)
        ax.plot([v], [y], marker="s", ms=5, color=colors[r["model"]], ls="none")
    drawn = {(r["column"], r["level"]) for r in rows if r["value"] is not None and np.isfinite(r["value"])}
    for g in groups:
        if (g[0], g[1]) not in drawn:
            ax.text(0.02, ypos[g], "not estimable (one class only)", va="center", fontsize=7, color="0.4")
    for name, o in (overall or {}).items():
        if name in colors and o.get("value") is not None and np.isfinite(o["value"]):
            ax.axvline(o["value"], color=colors[name], lw=1, ls=":", alpha=0.8)
    ax.axvline(0.5, color="0.6", lw=1, ls="--")
    ax.set_yticks([ypos[g] for g in groups],
                  [f"{c}: {lvl}  (n={n:,}, AS={p:,})" for c, lvl, n, p in groups], fontsize=8)
    # separate the columns with light rules
    prev = None
    for g in groups:
        if prev is not None and g[0] != prev:
            ax.axhline(ypos[g] + 0.5, color="0.85", lw=0.8)
        prev = g[0]
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(f"{metric_label} (95% CI)")
    ax.set_title(f"Subgroups: {metric_label} per level (dotted: overall)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="s", lw=1.5, label=m) for m in models]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08 if len(groups) > 6 else -0.15),
              ncol=min(len(models), 4), fontsize=8, frameon=False)
    return _save(fig, path)


def cv_figure(summary_rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Per-fold values of each metric with mean +- sd (cross-validation summary).

    Args:
        summary_rows: ``{"metric", "label", "values": [...], "mean", "sd"}`` records.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(summary_rows) + 1.2))
    for i, r in enumerate(summary_rows):
        y = len(summary_rows) - 1 - i
        vals = np.asarray(r["values"], dtype=float)
        ax.plot(vals, np.full_like(vals, y), "o", color="0.55", ms=4)
        if np.isfinite(r["mean"]):
            ax.errorbar([r["mean"]], [y], xerr=[[r["sd"] if np.isfinite(r["sd"]) else 0]], fmt="s", color="C0",
                        ms=6, capsize=3)
    ax.set_yticks(range(len(summary_rows)), [r["label"] for r in reversed(summary_rows)], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("value (grey: folds; blue: mean +- sd)")
    ax.set_title("Cross-validation")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def bar_figure(categories: Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               path: str | os.PathLike, *, title: str, ylabel: str, ylim: tuple[float, float] = (0.0, 1.0),
               reference: Mapping[str, float] | None = None) -> Path:
    """Grouped bar chart with error bars: one group per category, one bar per series.

    Args:
        categories: the groups along the x axis (e.g. backbones).
        series: ``{name: (means, error half-widths)}``, one value per category (NaN: no bar).
        reference: horizontal dotted lines ``{label: value}`` (e.g. an oracle ceiling).
    """
    plt = _plt()
    n_cat, n_ser = len(categories), max(len(series), 1)
    width = 0.8 / n_ser
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * n_cat * max(1.0, n_ser / 3) + 2), 3.8))
    x = np.arange(n_cat)
    for j, (name, (means, errs)) in enumerate(series.items()):
        m = np.asarray(means, dtype=float)
        e = np.nan_to_num(np.asarray(errs, dtype=float), nan=0.0)
        ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(m, nan=0.0), width, yerr=e, capsize=3, label=name,
               color=f"C{j}", alpha=0.9)
    for k, (label, value) in enumerate((reference or {}).items()):
        if value is not None and np.isfinite(value):
            ax.axhline(value, ls=":", color=f"C{n_ser + k}", label=label)
    ax.set_xticks(x, list(categories), rotation=20 if n_cat > 4 else 0, ha="right" if n_cat > 4 else "center")
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


__all__ = ["bar_figure", "calibration_figure", "confusion_figure", "cv_figure", "forest_figure", "pr_figure", "reliability",
           "roc_figure"]
