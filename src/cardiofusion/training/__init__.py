"""Training (PyTorch Lightning): the paper's recipe, run folders, resumption.

``fit(TrainConfig(...), "runs/x")`` trains a ``cardiofusion.models`` model on a preprocessing cache and
writes a self-describing, resumable run folder (see :mod:`cardiofusion.training.fit`).  Multi-GPU and
multi-node training go through Lightning's own ``accelerator`` / ``devices`` / ``strategy`` settings.

Importing this package first makes torchvision importable on CPU-only machines
(:func:`cardiofusion._compat.ensure_torchvision`), since Lightning imports it through torchmetrics.
"""

from __future__ import annotations

from .._compat import ensure_torchvision

ensure_torchvision()

from .config import PRECISIONS, RESUME_OVERRIDABLE, TrainConfig
from .evaluate import aggregate_windows, auroc, evaluate_scores
from .inference import LoadedRun, best_checkpoint, load_run, score_split
from .fit import EpochMetricsCSV, FitResult, fit, resolve_pos_weight, resolve_precision
from .module import CardioFusionModule

__all__ = [
    "PRECISIONS",
    "RESUME_OVERRIDABLE",
    "CardioFusionModule",
    "EpochMetricsCSV",
    "FitResult",
    "LoadedRun",
    "TrainConfig",
    "aggregate_windows",
    "auroc",
    "best_checkpoint",
    "evaluate_scores",
    "fit",
    "load_run",
    "resolve_pos_weight",
    "resolve_precision",
    "score_split",
]
