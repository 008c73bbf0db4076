"""Figures of the non-binary task kinds (matplotlib, Agg, PNG): the multiclass confusion matrix heat map,
per-class / per-label ROC curves, multi-label reliability curves, and per regression target the
prediction-vs-truth scatter (identity line) and the Bland-Altman plot.  One panel per model (and per target),
so models are read side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .figures import _colors, _plt, _save
from .formatting import format_ci


def confusion_matrix_figure(matrices: Mapping[str, Any], classes: Sequence[str], path: str | os.PathLike) -> Path:
    """Heat map of the row-normalised confusion matrix per model, cells annotated with count and row %.

    Args:
        matrices: ``{name: (K, K) counts}``, rows true class, columns predicted class.
    """
    plt = _plt()
    k = len(classes)
    n = len(matrices)
    side = max(3.6, 0.75 * k + 1.6)
    fig, axes = plt.subplots(1, n, figsize=(side * n, side), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm, dtype=float)
        row = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, row, out=np.zeros_like(cm), where=row > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j]):,}\n{100 * frac[i, j]:.0f}%", ha="center", va="center",
                        fontsize=8 if k <= 5 else 6, color="white" if frac[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), classes, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(f"{name}\n(count, % of true class)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def class_roc_figure(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                     what: str = "class") -> Path:
    """One panel per model, one ROC curve per class (one vs rest) or label; legend AUROC (CI).

    Args:
        curves: ``{model: {class: {"fpr", "tpr", "value", "ci_low", "ci_high"}}}``.
    """
    plt = _plt()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 5.0), squeeze=False)
    for ax, (name, per) in zip(axes[0], curves.items()):
        for color, (cls, c) in zip(_colors(len(per)), per.items()):
            ax.plot(c["fpr"], c["tpr"], color=color, lw=1.8,
                    label=f"{cls}: {format_ci(c['value'], c.get('ci_low'), c.get('ci_high'))}")
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="False positive rate", ylabel="True positive rate",
               title=f"{name}: ROC per {what}" + (" (one vs rest)" if what == "class" else ""))
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9, title="AUROC (95% CI)", title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def label_calibration_figure(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                             n_bins: int = 10) -> Path:
    """Reliability curves (the ECE's 10 equal-width probability bins) per label, one panel per model.

    Args:
        curves: ``{model: {label: {"labels", "probabilities", "ece", "brier"}}}`` (known labels only).
    """
    plt = _plt()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 5.0), squeeze=False)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for ax, (name, per) in zip(axes[0], curves.items()):
        for color, (label, c) in zip(_colors(len(per)), per.items()):
            y, p = np.asarray(c["labels"], float), np.asarray(c["probabilities"], float)
            bins = np.searchsorted(edges[1:-1], p)
            used = np.unique(bins)
            mean_p = [p[bins == b].mean() for b in used]
            frac = [y[bins == b].mean() for b in used]
            ax.plot(mean_p, frac, marker="o", ms=4, lw=1.5, color=color,
                    label=f"{label}: ECE {c['ece']:.3f}, Brier {c['brier']:.3f}")
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="Mean predicted probability",
               ylabel="Observed fraction positive", title=f"{name}: calibration per label")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def _grid(n_rows: int, n_cols: int, size: float = 3.6):
    plt = _plt()
    return plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)


def scatter_figure(data: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike) -> Path:
    """Prediction against measurement per model (rows) and target (columns), with the identity line.

    Args:
        data: ``{model: {target: {"truth", "pred", "unit", "mae", "r2"}}}``.
    """
    models = list(data)
    targets = list(next(iter(data.values())))
    fig, axes = _grid(len(models), len(targets))
    for r, name in enumerate(models):
        for c, target in enumerate(targets):
            ax = axes[r][c]
            d = data[name][target]
            y, p = np.asarray(d["truth"], float), np.asarray(d["pred"], float)
            unit = f" ({d['unit']})" if d.get("unit") else ""
            ax.scatter(y, p, s=8, alpha=0.5, color="C0", edgecolors="none")
            if y.size:
                lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
                pad = 0.03 * (hi - lo or 1.0)
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--", label="identity")
                ax.set_xlim(lo - pad, hi + pad)
                ax.set_ylim(lo - pad, hi + pad)
            ax.set_xlabel(f"Measured {target}{unit}", fontsize=8)
            ax.set_ylabel(f"Predicted{unit}", fontsize=8)
            ax.set_title(f"{name}: {target}\nMAE {d['mae']:.3g}, R^2 {d['r2']:.3f}, n={y.size:,}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def bland_altman_figure(data: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike) -> Path:
    """Bland-Altman plot per model (rows) and target (columns): difference (prediction - measurement) against
    their mean, with the bias and the 95% limits of agreement.

    Args:
        data: ``{model: {target: {"truth", "pred", "unit", "bias", "loa_low", "loa_high"}}}``.
    """
    models = list(data)
    targets = list(next(iter(data.values())))
    fig, axes = _grid(len(models), len(targets))
    for r, name in enumerate(models):
        for c, target in enumerate(targets):
            ax = axes[r][c]
            d = data[name][target]
            y, p = np.asarray(d["truth"], float), np.asarray(d["pred"], float)
            unit = f" ({d['unit']})" if d.get("unit") else ""
            ax.scatter((y + p) / 2, p - y, s=8, alpha=0.5, color="C0", edgecolors="none")
            for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
                v = d.get(key)
                if v is not None and np.isfinite(v):
                    ax.axhline(v, color="C3" if key == "bias" else "0.4", lw=1.2, ls=style)
                    ax.annotate(f"{'bias' if key == 'bias' else 'LoA'} {v:.3g}", (1.0, v), xycoords=("axes fraction",
                                "data"), ha="right", va="bottom", fontsize=7)
            ax.axhline(0, color="0.75", lw=0.8)
            ax.set_xlabel(f"Mean of measured and predicted{unit}", fontsize=8)
            ax.set_ylabel(f"Predicted - measured{unit}", fontsize=8)
            ax.set_title(f"{name}: {target}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["bland_altman_figure", "class_roc_figure", "confusion_matrix_figure", "label_calibration_figure",
           "scatter_figure"]
