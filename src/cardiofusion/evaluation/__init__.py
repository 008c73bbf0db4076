"""Evaluation (spec section 5): metrics with patient-level bootstrap CIs, paired comparisons (bootstrap and
DeLong), calibration, subgroups, cross-validation, figures and a self-contained HTML report.

The statistics (:mod:`.metrics`, :mod:`.bootstrap`, :mod:`.delong`) need only numpy/scipy and work on
arrays; :func:`evaluate_tables` works on score tables (any model; ``task=`` for multiclass, multi-label and
regression tables, :mod:`.task_evaluate` with the metric families of :mod:`.multiclass`, :mod:`.multilabel`,
:mod:`.regression`); :func:`evaluate_runs` on run folders (the task from their ``config.yaml``);
:func:`cardiofusion.recipes.crossval.cross_validate` trains one run per patient-grouped fold (see ``docs/evaluation.md``).
"""

from __future__ import annotations

from .bootstrap import (
    Difference,
    Interval,
    bootstrap_mean_ci,
    bootstrap_means,
    bootstrap_p_value,
    bootstrap_weights,
    paired_differences,
    percentile_summary,
    resample_indices,
)
from .folds import (
    CrossValResult,
    evaluate_folds,
    fold_splits,
    summarize_folds,
)
from .delong import DeLongResult, delong_ci, delong_covariance, delong_test
from .evaluate import (
    Comparison,
    EvaluationResult,
    ModelEvaluation,
    evaluate_runs,
    evaluate_tables,
    run_tables,
    run_task,
)
from .formatting import format_ci, format_interval, format_p, format_value
from .metrics import (
    METRIC_LABELS,
    METRICS,
    RankedScores,
    metric_matrix,
    point_metrics,
    sklearn_metrics,
)
from .multiclass import MulticlassMetrics
from .multilabel import MultilabelMetrics
from .regression import RegressionMetrics
from .task_evaluate import key_metrics, metric_family
from .taskmetrics import MetricFamily, MetricInfo
from .subgroups import DEFAULT_BINS, DEFAULT_SUBGROUPS, parse_subgroups, subgroup_levels

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_SUBGROUPS",
    "METRICS",
    "METRIC_LABELS",
    "Comparison",
    "CrossValResult",
    "DeLongResult",
    "Difference",
    "EvaluationResult",
    "Interval",
    "MetricFamily",
    "MetricInfo",
    "ModelEvaluation",
    "MulticlassMetrics",
    "MultilabelMetrics",
    "RegressionMetrics",
    "RankedScores",
    "bootstrap_mean_ci",
    "bootstrap_means",
    "bootstrap_p_value",
    "bootstrap_weights",
    "delong_ci",
    "delong_covariance",
    "delong_test",
    "evaluate_folds",
    "evaluate_runs",
    "evaluate_tables",
    "fold_splits",
    "format_ci",
    "format_interval",
    "format_p",
    "format_value",
    "key_metrics",
    "metric_family",
    "metric_matrix",
    "paired_differences",
    "parse_subgroups",
    "percentile_summary",
    "point_metrics",
    "resample_indices",
    "run_tables",
    "run_task",
    "sklearn_metrics",
    "subgroup_levels",
    "summarize_folds",
]
