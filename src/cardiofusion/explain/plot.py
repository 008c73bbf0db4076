"""Figures of explanations (PNG files; matplotlib ``Figure`` objects, so pyplot's state and backend are
left alone).

* X-ray: the model's input image beside the same image with the heat map overlaid.
* ECG: the twelve traces in the standard 3 x 4 print layout (rows I/aVR/V1/V4, II/aVL/V2/V5,
  III/aVF/V3/V6; each column shows the next quarter of the recording) or 12 x 1 (every lead over the
  whole recording), the lead x time heat map shaded behind each trace, every panel labelled with its
  lead importance (the reference paper's Figure 5).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import ConfigError
from .attribution import CXRExplanation, ECGExplanation

__all__ = ["LAYOUTS", "STANDARD_3X4", "plot_cxr_explanation", "plot_ecg_explanation"]

LAYOUTS = ("3x4", "12x1")
#: Leads of the standard 3 x 4 print, row by row.
STANDARD_3X4 = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_CMAP = "jet"
_ECG_CMAP = "YlOrRd"


def _title(title: str | None, fig) -> None:
    if title:
        fig.suptitle(title, fontsize=10)


def plot_cxr_explanation(expl: CXRExplanation, path: str | os.PathLike, *, title: str | None = None,
                         boxes: Sequence[Sequence[float]] = (), alpha: float = 0.45, dpi: int = 110) -> Path:
    """Original X-ray beside the heat-map overlay; optional boxes (x0, y0, x1, y1 on the input grid)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8.4, 4.4))
    axes = fig.subplots(1, 2)
    axes[0].imshow(expl.image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("X-ray (model input)", fontsize=9)
    axes[1].imshow(expl.image, cmap="gray", vmin=0, vmax=255)
    im = axes[1].imshow(expl.heatmap, cmap=_CMAP, vmin=0, vmax=1, alpha=alpha)
    name = {"gradcam": "Grad-CAM", "ig": "integrated gradients"}.get(expl.method, expl.method)
    single = expl.coarse is not None and "+" not in (expl.layer or "")
    grid = f", {expl.coarse.shape[0]}x{expl.coarse.shape[1]} grid" if single else ""  # one layer: its grid
    where = f" [{expl.layer.replace('model.', '')}{grid}]" if expl.layer else ""
    axes[1].set_title(f"{name}{where} of {expl.target} ({expl.target_score:+.3f})", fontsize=9)
    for ax in axes:
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", lw=1.2))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03, label="importance")
    _title(title, fig)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _panel(ax, t: np.ndarray, y: np.ndarray, heat: np.ndarray, lead: str, importance: float, rank: int,
           present: bool, ylim: tuple[float, float], show_x: bool) -> None:
    lo, hi = ylim
    if heat.size:
        ax.imshow(heat[None, :], aspect="auto", cmap=_ECG_CMAP, vmin=0, vmax=1, alpha=0.85,
                  extent=(t[0], t[-1] if len(t) > 1 else t[0] + 1, lo, hi), interpolation="bilinear", zorder=0)
    ax.plot(t, y, color="black", lw=0.6, zorder=2)
    ax.set_xlim(t[0], t[-1] if len(t) > 1 else t[0] + 1)
    ax.set_ylim(lo, hi)
    label = f"{lead}  {importance:.3f}" + (f"  #{rank}" if present else "  (absent)")
    ax.text(0.01, 0.96, label, transform=ax.transAxes, va="top", ha="left", fontsize=8,
            fontweight="bold" if rank <= 3 and present else "normal",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.85}, zorder=3)
    ax.set_yticks([])
    if not show_x:
        ax.tick_params(labelbottom=False)  # not set_xticklabels([]): that would clear every shared axis
    ax.tick_params(labelsize=7)


def plot_ecg_explanation(expl: ECGExplanation, path: str | os.PathLike, *, layout: str = "3x4",
                         title: str | None = None, dpi: int = 110) -> Path:
    """Twelve traces with the shaded lead x time heat map and the lead importance of each panel.

    ``3x4`` needs the twelve standard leads (other lead sets are drawn ``12x1``-style, one row per lead).
    The heat map shading is the product map (lead importance x time importance), on one colour scale
    for all leads; each label gives the lead importance and its rank.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown ECG layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leads = list(expl.leads)
    n_leads, total = expl.signal.shape
    fs = float(expl.fs)
    order = np.argsort(-np.asarray(expl.lead_importance), kind="stable")
    rank = np.empty(n_leads, dtype=int)
    rank[order] = np.arange(1, n_leads + 1)
    present = np.asarray(expl.lead_mask, dtype=bool)
    shown = expl.signal[present] if present.any() else expl.signal
    amp = float(np.nanpercentile(np.abs(shown), 99.5)) if shown.size else 1.0
    amp = max(amp * 1.15, 0.3)
    ylim = (-amp, amp)
    use_grid = layout == "3x4" and set(leads) == {lead for row in STANDARD_3X4 for lead in row}
    if use_grid:
        n_rows, n_cols = 3, 4
        fig = Figure(figsize=(14, 6.2))
        axes = fig.subplots(n_rows, n_cols, sharey=True)
        seg = total // n_cols
        for r, row in enumerate(STANDARD_3X4):
            for c, lead in enumerate(row):
                i = leads.index(lead)
                a, b = c * seg, (c + 1) * seg if c < n_cols - 1 else total
                t = np.arange(a, b) / fs
                _panel(axes[r, c], t, expl.signal[i, a:b], expl.heatmap[i, a:b], lead,
                       float(expl.lead_importance[i]), int(rank[i]), bool(present[i]), ylim, r == n_rows - 1)
        for c in range(n_cols):
            axes[-1, c].set_xlabel("time (s)", fontsize=8)
    else:
        fig = Figure(figsize=(14, 1.05 * n_leads + 0.8))
        axes = fig.subplots(n_leads, 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        t = np.arange(total) / fs
        for i, lead in enumerate(leads):
            _panel(axes[i], t, expl.signal[i], expl.heatmap[i], lead, float(expl.lead_importance[i]),
                   int(rank[i]), bool(present[i]), ylim, i == n_leads - 1)
        axes[-1].set_xlabel("time (s)", fontsize=8)
    name = {"gradcam": "1D Grad-CAM", "ig": "integrated gradients"}.get(expl.method, expl.method)
    src = {"attention": "class-token attention", "attention-rollout": "attention rollout"}.get(
        expl.lead_importance_source, expl.lead_importance_source)
    sub = (f"lead importance ({src}) x {name} of {expl.target} ({expl.target_score:+.3f}); "
           f"scale +-{amp:.2f} mV")
    fig.text(0.5, 0.005, sub, ha="center", va="bottom", fontsize=8)
    _title(title, fig)
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(hspace=0.08, wspace=0.03, left=0.02, right=0.99, top=1 - 0.45 / height,
                        bottom=0.62 / height)
    fig.savefig(path, dpi=dpi)
    return path
