"""Training (PyTorch Lightning): the paper's recipe, run folders, resumption.

``fit(TrainConfig(...), "runs/x")`` trains a ``cardiofusion.models`` model on a preprocessing cache and
writes a self-describing, resumable run folder (see :mod:`cardiofusion.training.fit`).  Multi-GPU and
multi-node training go through Lightning's own ``accelerator`` / ``devices`` / ``strategy`` settings.

The public names are loaded on first use (PEP 562): ``from cardiofusion.training import fit`` imports
Lightning, ``from cardiofusion.training import load_run`` does not.  Importing this package first makes
torchvision importable on CPU-only machines (:func:`cardiofusion._compat.ensure_torchvision`), since
Lightning imports it through torchmetrics.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .._compat import ensure_torchvision

ensure_torchvision()  # before any submodule (cardiofusion.training.fit imports Lightning -> torchvision)

#: Public name -> submodule.  Loaded on first use (PEP 562), so that prediction, which needs only
#: :mod:`.evaluate` / :mod:`.inference`, does not import Lightning (:mod:`.fit`, :mod:`.module`).
_EXPORTS: dict[str, str] = {
    "PRECISIONS": "config",
    "RESUME_OVERRIDABLE": "config",
    "TrainConfig": "config",
    "aggregate_windows": "evaluate",
    "auroc": "evaluate",
    "evaluate_scores": "evaluate",
    "LoadedRun": "inference",
    "best_checkpoint": "inference",
    "load_run": "inference",
    "score_split": "inference",
    "EpochMetricsCSV": "fit",
    "FitResult": "fit",
    "fit": "fit",
    "resolve_pos_weight": "fit",
    "resolve_precision": "fit",
    "CardioFusionModule": "module",
}

if TYPE_CHECKING:  # pragma: no cover
    from .config import PRECISIONS, RESUME_OVERRIDABLE, TrainConfig
    from .evaluate import aggregate_windows, auroc, evaluate_scores
    from .fit import EpochMetricsCSV, FitResult, fit, resolve_pos_weight, resolve_precision
    from .inference import LoadedRun, best_checkpoint, load_run, score_split
    from .module import CardioFusionModule


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps ``cardiofusion.training.fit`` the function: the import system binds a newly loaded submodule
    to its name in the package (``from cardiofusion.training.fit import warm_start`` would otherwise make
    ``from cardiofusion.training import fit`` return the module)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
