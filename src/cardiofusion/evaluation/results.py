"""What :func:`cardiofusion.evaluation.evaluate.evaluate_tables` returns: one model's evaluation, a paired
comparison, and the whole result (read by :mod:`.report` without importing the evaluation itself)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .bootstrap import Difference, Interval
from .calibration import Calibrator, Threshold
from .formatting import format_ci, format_interval, format_p
from .metrics import METRIC_LABELS, METRICS


def model_pairs(names: Sequence[str], reference: str) -> list[tuple[str, str]]:
    """Reference first against every other model (the paper's p-values), then the remaining pairs."""
    others = [n for n in names if n != reference]
    return [(reference, o) for o in others] + list(itertools.combinations(others, 2))


@dataclass
class ModelEvaluation:
    """One model's evaluation.

    Attributes:
        name: display name.
        calibrator / threshold: fitted / chosen on the model's validation table.
        metrics: ``{metric: Interval}`` on the evaluated split (value = full-set estimate).
        brier_uncalibrated: Brier score of the model's own probability (``prob``, else sigmoid(score)).
        counts: ``{"records", "patients", "positives"}`` of the evaluated records.
        val_counts: the same for the validation table.
        confusion: ``{"tn", "fp", "fn", "tp"}`` on the evaluated split.
        delong: ``{"auroc", "se", "ci_low", "ci_high"}`` (DeLong variance, Wald interval).
        run: the run folder, when the model is a run.
    """

    name: str
    calibrator: Calibrator
    threshold: Threshold
    metrics: dict[str, Interval]
    brier_uncalibrated: Interval
    counts: dict[str, int]
    val_counts: dict[str, int]
    confusion: dict[str, int]
    delong: dict[str, float]
    run: str | None = None

    def metrics_dict(self) -> dict[str, dict[str, Any]]:
        return {m: self.metrics[m].to_dict() for m in METRICS}


@dataclass
class Comparison:
    """Paired comparison ``model_a - model_b`` on the same records and the same resamples."""

    model_a: str
    model_b: str
    differences: dict[str, Difference]
    delong: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.model_a} vs {self.model_b}"

    def to_dict(self) -> dict[str, Any]:
        return {"model_a": self.model_a, "model_b": self.model_b, "difference_of": "model_a - model_b",
                "metrics": {m: d.to_dict() for m, d in self.differences.items()}, "delong_auroc": self.delong}


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_tables` computed and where it wrote it."""

    out_dir: Path
    models: dict[str, ModelEvaluation]
    comparisons: dict[str, Comparison]
    subgroups: pd.DataFrame
    settings: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.paths["report"]

    def metrics_json(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        out: dict[str, Any] = {name: m.metrics_dict() for name, m in self.models.items()}
        out["comparisons"] = {key: c.to_dict() for key, c in self.comparisons.items()}
        out["settings"] = self.settings
        return out

    def summary_lines(self) -> list[str]:
        """A short plain-text table (what the command line prints)."""
        if (self.settings.get("task") or {}).get("kind", "binary") != "binary":
            return self._task_summary_lines()
        head = f"{'model':<28}" + "".join(f"{METRIC_LABELS[m].split(' ')[0]:>26}" for m in ("auroc", "auprc", "recall",
                                                                                           "specificity"))
        lines = [head, "-" * len(head)]
        for name, m in self.models.items():
            cells = []
            for k in ("auroc", "auprc", "recall", "specificity"):
                iv = m.metrics[k]
                cells.append(f"{format_ci(iv.value, iv.ci_low, iv.ci_high):>26}")
            lines.append(f"{name[:27]:<28}" + "".join(cells))
        for c in self.comparisons.values():
            d = c.differences["auroc"]
            lines.append(f"{c.key}: AUROC difference {format_ci(d.difference, d.ci_low, d.ci_high)}, "
                         f"bootstrap p {format_p(d.p_value)}, DeLong p {format_p(c.delong.get('p_value'))}")
        return lines

    def _task_summary_lines(self) -> list[str]:
        keys = list(self.settings["key_metrics"])[:4]
        first = next(iter(self.models.values()))
        head = f"{'model':<28}" + "".join(f"{first.infos[k].label[:25]:>28}" for k in keys)
        lines = [head, "-" * len(head)]
        for name, m in self.models.items():
            lines.append(f"{name[:27]:<28}" + "".join(f"{format_interval(m.metrics[k]):>28}" for k in keys))
        key = self.settings["primary_metric"]
        for c in self.comparisons.values():
            d = c.differences[key]
            diff = format_ci(d.difference, d.ci_low, d.ci_high, signed=True)
            lines.append(f"{c.key}: {first.infos[key].label} difference {diff}, bootstrap p {format_p(d.p_value)}")
        return lines


__all__ = ["Comparison", "EvaluationResult", "ModelEvaluation", "model_pairs"]
