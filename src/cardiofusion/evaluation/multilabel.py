"""Multi-label metrics for every bootstrap resample at once.

Per label, the binary metrics of :mod:`.metrics` on that label's known records (an unknown label, NaN, leaves
the record out of that label's metrics only): AUROC and AUPRC of ``prob_<label>``, Brier score, expected
calibration error (ECE: 10 equal-width probability bins, the record-weighted mean of |mean probability -
observed fraction|, scikit-learn's ``calibration_curve(strategy="uniform")`` bins) and the threshold metrics at
the task's threshold for that label (:meth:`cardiofusion.tasks.Task.decide`, default 0.5): sensitivity
(recall), specificity, PPV (precision), NPV, F1, accuracy.

Summaries: ``macro_<metric>`` is the unweighted mean over the labels where the metric is defined;
``micro_<metric>`` pools every known (record, label) pair (scikit-learn's ``average="micro"``).  The pooled
metrics keep the resample weights per record: every label of a record carries its record's weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import RankedScores, confusion_design, threshold_metrics
from .taskmetrics import MetricFamily, MetricInfo, div, nanmean_rows

#: Metrics per label, in table order (``recall`` is sensitivity, ``precision`` PPV).
LABEL_METRICS = ("auroc", "auprc", "brier", "ece", "recall", "specificity", "precision", "npv", "f1", "accuracy")
LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier score", "ece": "ECE (10 bins)",
          "recall": "Sensitivity", "specificity": "Specificity", "precision": "PPV", "npv": "NPV", "f1": "F1",
          "accuracy": "Accuracy"}
LOWER_IS_BETTER = ("brier", "ece")
N_BINS = 10


def ece_design(labels: Any, probabilities: Any, n_bins: int = N_BINS) -> np.ndarray:
    """Per-record ``(n, n_bins)``: ``p - y`` in the column of the record's probability bin (0 elsewhere)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)  # scikit-learn's calibration_curve binning
    out = np.zeros((y.size, n_bins))
    out[np.arange(y.size), bins] = p - y
    return out


def _ece(weights: np.ndarray, design: np.ndarray, entries: np.ndarray | None = None) -> np.ndarray:
    """ECE per weighting; ``entries``: (record, label) pairs per record (pooled), default one."""
    total = weights.sum(axis=1) if entries is None else weights @ entries
    return div(np.abs(weights @ design).sum(axis=1), total)


class MultilabelMetrics(MetricFamily):
    """Every multi-label metric for any number of resample weightings.

    Args:
        labels: ``(n, L)`` 0/1, NaN unknown.
        probabilities: ``(n, L)`` label probabilities (``prob_<label>``).
        names: label names (L).
        decisions: ``(n, L)`` 0/1 decisions at the task's thresholds.
    """

    def __init__(self, labels: Any, probabilities: Any, names: Sequence[str], decisions: Any):
        self.y = np.asarray(labels, dtype=np.float64)
        self.n = self.y.shape[0]
        self.y = self.y.reshape(self.n, -1)
        self.p = np.asarray(probabilities, dtype=np.float64).reshape(self.n, -1)
        self.d = np.asarray(decisions, dtype=np.float64).reshape(self.n, -1)
        self.names = [str(x) for x in names]
        self.known = np.isfinite(self.y)
        self.parts = []
        for j in range(len(self.names)):
            k = self.known[:, j]
            y, p, d = self.y[k, j], self.p[k, j], self.d[k, j] >= 0.5
            self.parts.append((k, RankedScores(y, p), confusion_design(y, d, p), ece_design(y, p)))
        rec, lab = np.nonzero(self.known)  # pooled entries: record and label of each known pair
        y, p, d = self.y[rec, lab], self.p[rec, lab], self.d[rec, lab] >= 0.5
        self.pooled_ranked = RankedScores(y, p, columns=rec, n_columns=self.n)
        self.pooled_counts = np.zeros((self.n, 5))
        np.add.at(self.pooled_counts, rec, confusion_design(y, d, p))
        self.pooled_ece = np.zeros((self.n, N_BINS))
        np.add.at(self.pooled_ece, rec, ece_design(y, p))
        self.infos = []
        for avg in ("macro", "micro"):
            self.infos += [MetricInfo(f"{avg}_{m}", f"{LABELS[m]}, {avg}", avg, higher_is_better=m not in
                                      LOWER_IS_BETTER) for m in LABEL_METRICS]
        self.infos += [MetricInfo(f"{m}:{name}", f"{LABELS[m]} ({name})", "per label", name,
                                  higher_is_better=m not in LOWER_IS_BETTER)
                       for m in LABEL_METRICS for name in self.names]

    def per_label(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``{metric: (B, L)}``."""
        cols: dict[str, list[np.ndarray]] = {m: [] for m in LABEL_METRICS}
        for k, ranked, design, ece in self.parts:
            wk = w[:, k]
            auroc, auprc = ranked.auroc_auprc(wk)
            values = {"auroc": auroc, "auprc": auprc, "ece": _ece(wk, ece), **threshold_metrics(wk @ design)}
            for m in LABEL_METRICS:
                cols[m].append(values[m])
        return {m: np.stack(v, axis=1) for m, v in cols.items()}

    def _matrix(self, w: np.ndarray) -> np.ndarray:
        per = self.per_label(w)
        auroc, auprc = self.pooled_ranked.auroc_auprc(w)
        pairs = self.known.sum(axis=1).astype(np.float64)  # known (record, label) pairs per record
        micro = {"auroc": auroc, "auprc": auprc, "ece": _ece(w, self.pooled_ece, pairs),
                 **threshold_metrics(w @ self.pooled_counts)}
        cols = [nanmean_rows(per[m]) for m in LABEL_METRICS] + [micro[m] for m in LABEL_METRICS]
        cols += [per[m][:, j] for m in LABEL_METRICS for j in range(len(self.names))]
        return np.stack(cols, axis=1)


def sklearn_multilabel_metrics(labels: Any, probabilities: Any, names: Sequence[str], decisions: Any
                               ) -> dict[str, float]:
    """The same metrics through scikit-learn, one call each: per label on its known records, micro on the
    known pairs pooled (the reference for tests and the benchmark)."""
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    y_all = np.asarray(labels, dtype=np.float64)
    p_all = np.asarray(probabilities, dtype=np.float64)
    d_all = np.asarray(decisions, dtype=np.float64)
    nan = float("nan")

    def binary(y: np.ndarray, p: np.ndarray, d: np.ndarray) -> dict[str, float]:
        d = d.astype(np.int64)
        two = 0 < y.sum() < y.size
        if y.size:
            true, pred = calibration_curve(y, p, n_bins=N_BINS, strategy="uniform")
            counts = np.bincount(np.searchsorted(np.linspace(0, 1, N_BINS + 1)[1:-1], p), minlength=N_BINS)
            ece = float(np.sum(counts[counts > 0] * np.abs(true - pred)) / y.size)
        return {
            "auroc": skm.roc_auc_score(y, p) if two else nan,
            "auprc": skm.average_precision_score(y, p) if y.sum() > 0 else nan,
            "brier": skm.brier_score_loss(y, p) if y.size else nan, "ece": ece if y.size else nan,
            "recall": skm.recall_score(y, d, zero_division=np.nan),
            "specificity": skm.recall_score(y, d, pos_label=0, zero_division=np.nan),
            "precision": skm.precision_score(y, d, zero_division=np.nan),
            "npv": skm.precision_score(y, d, pos_label=0, zero_division=np.nan),
            "f1": skm.f1_score(y, d, zero_division=np.nan), "accuracy": skm.accuracy_score(y, d) if y.size else nan,
        }

    out: dict[str, float] = {}
    per: dict[str, list[float]] = {m: [] for m in LABEL_METRICS}
    for j, name in enumerate(names):
        k = np.isfinite(y_all[:, j])
        for m, v in binary(y_all[k, j], p_all[k, j], d_all[k, j]).items():
            out[f"{m}:{name}"] = float(v)
            per[m].append(float(v))
    for m in LABEL_METRICS:
        vals = np.asarray(per[m])
        out[f"macro_{m}"] = float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else nan
    known = np.isfinite(y_all)
    pooled = binary(y_all[known], p_all[known], d_all[known])
    if known.all():  # scikit-learn's own micro averages (no unknown label) give the same numbers
        pooled["auroc"] = skm.roc_auc_score(y_all, p_all, average="micro")
        pooled["auprc"] = skm.average_precision_score(y_all, p_all, average="micro")
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y_all, d_all, average="micro", zero_division=np.nan)
        pooled.update({"precision": pr, "recall": rc, "f1": f1})
    out.update({f"micro_{m}": float(v) for m, v in pooled.items()})
    return out


__all__ = ["LABEL_METRICS", "MultilabelMetrics", "ece_design", "sklearn_multilabel_metrics"]
