"""Multiclass (and ordinal) metrics for every bootstrap resample at once.

The predicted class is the most probable one (:meth:`cardiofusion.tasks.Task.decide`).  Everything but the
AUROCs comes from the weighted confusion matrix of each resample, one sparse product ``(B, n) @ (n, K*K)``:
accuracy, balanced accuracy (mean recall over the classes present), precision / recall / F1 per class and
their macro and weighted (by support) averages, quadratic-weighted Cohen's kappa (weights ``(i - j)^2`` over
the declared class order; reported for nominal tasks too) and the confusion matrix itself.  One-vs-rest AUROC
per class ranks ``prob_<class>`` (:class:`~cardiofusion.evaluation.metrics.RankedScores`); macro AUROC is their
unweighted mean (scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``).

Undefined values (a class without records or without predictions in a resample) are NaN and left out of the
averages, as scikit-learn does with ``zero_division=np.nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import RankedScores
from .taskmetrics import MetricFamily, MetricInfo, as_weights, div, nanmean_rows

#: Summary metrics, in table order.
SUMMARY = ("accuracy", "balanced_accuracy", "macro_auroc", "quadratic_kappa", "macro_precision",
           "weighted_precision", "macro_recall", "weighted_recall", "macro_f1", "weighted_f1")
#: Per-class metrics (``<metric>:<class>``).
PER_CLASS = ("auroc", "precision", "recall", "f1")

LABELS = {
    "accuracy": ("Accuracy", "overall"), "balanced_accuracy": ("Balanced accuracy", "macro"),
    "macro_auroc": ("AUROC, macro one-vs-rest", "macro"),
    "quadratic_kappa": ("Quadratic-weighted kappa", "overall"),
    "macro_precision": ("Precision, macro", "macro"), "weighted_precision": ("Precision, weighted", "weighted"),
    "macro_recall": ("Recall, macro", "macro"), "weighted_recall": ("Recall, weighted", "weighted"),
    "macro_f1": ("F1, macro", "macro"), "weighted_f1": ("F1, weighted", "weighted"),
}
PER_CLASS_LABELS = {"auroc": "AUROC", "precision": "Precision", "recall": "Recall", "f1": "F1"}


def confusion_counts(labels: Any, predicted: Any, n_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted confusion matrices ``(B, K, K)``: rows true class, columns predicted class."""
    from scipy import sparse

    y = np.asarray(labels, dtype=np.int64).ravel()
    d = np.asarray(predicted, dtype=np.int64).ravel()
    w = as_weights(weights, y.size)
    k = int(n_classes)
    design = sparse.csr_matrix((np.ones(y.size), (np.arange(y.size), y * k + d)), shape=(y.size, k * k))
    return np.asarray((design.T @ w.T).T).reshape(w.shape[0], k, k)


def kappa_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Quadratic-weighted Cohen's kappa of confusion matrices ``(B, K, K)`` -> ``(B,)``."""
    k = cm.shape[-1]
    idx = np.arange(k)
    wq = (idx[:, None] - idx[None, :]) ** 2.0
    total = cm.sum(axis=(1, 2))
    expected = div(cm.sum(axis=2)[:, :, None] * cm.sum(axis=1)[:, None, :], total[:, None, None])
    return 1.0 - div((wq * cm).sum(axis=(1, 2)), (wq * expected).sum(axis=(1, 2)))


class MulticlassMetrics(MetricFamily):
    """Every multiclass metric for any number of resample weightings.

    Args:
        labels: class indices ``(n,)`` (0..K-1, all known).
        probabilities: class probabilities ``(n, K)`` (``prob_<class>`` columns).
        classes: class names in order (K).
    """

    def __init__(self, labels: Any, probabilities: Any, classes: Sequence[str]):
        self.y = np.asarray(labels, dtype=np.float64).ravel().astype(np.int64)
        self.p = np.asarray(probabilities, dtype=np.float64).reshape(self.y.size, -1)
        self.classes = [str(c) for c in classes]
        self.k = len(self.classes)
        if self.p.shape[1] != self.k:
            raise ValueError(f"{self.p.shape[1]} probability columns for {self.k} classes")
        self.pred = np.argmax(self.p, axis=1) if self.y.size else np.zeros(0, np.int64)
        self.ranked = [RankedScores(self.y == j, self.p[:, j]) for j in range(self.k)]
        self.infos = [MetricInfo(m, LABELS[m][0], LABELS[m][1]) for m in SUMMARY]
        self.infos += [MetricInfo(f"{m}:{c}", f"{PER_CLASS_LABELS[m]} ({c} vs rest)", "per class", c)
                       for m in PER_CLASS for c in self.classes]

    def confusion(self, weights: np.ndarray | None = None) -> np.ndarray:
        return confusion_counts(self.y, self.pred, self.k, weights)

    def _matrix(self, w: np.ndarray) -> np.ndarray:
        cm = self.confusion(w)  # (B, K, K)
        tp = np.diagonal(cm, axis1=1, axis2=2)  # (B, K)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        total = support.sum(axis=1)
        recall, precision = div(tp, support), div(tp, predicted)
        f1 = div(2 * tp, support + predicted)
        auroc = np.stack([r.auroc_auprc(w)[0] for r in self.ranked], axis=1)  # (B, K)

        def weighted(values: np.ndarray) -> np.ndarray:
            ok = np.isfinite(values)
            return div(np.where(ok, values * support, 0.0).sum(axis=1), np.where(ok, support, 0.0).sum(axis=1))

        out = {
            "accuracy": div(tp.sum(axis=1), total), "balanced_accuracy": nanmean_rows(recall),
            "macro_auroc": nanmean_rows(auroc), "quadratic_kappa": kappa_from_confusion(cm),
            "macro_precision": nanmean_rows(precision), "weighted_precision": weighted(precision),
            "macro_recall": nanmean_rows(recall), "weighted_recall": weighted(recall),
            "macro_f1": nanmean_rows(f1), "weighted_f1": weighted(f1),
        }
        per_class = {"auroc": auroc, "precision": precision, "recall": recall, "f1": f1}
        cols = [out[m] for m in SUMMARY] + [per_class[m][:, j] for m in PER_CLASS for j in range(self.k)]
        return np.stack(cols, axis=1)


def sklearn_multiclass_metrics(labels: Any, probabilities: Any, classes: Sequence[str]) -> dict[str, float]:
    """The same metrics through scikit-learn, one call each (the reference for tests and the benchmark)."""
    from sklearn import metrics as skm

    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probabilities, dtype=np.float64)
    d = np.argmax(p, axis=1)
    k = len(classes)
    idx = list(range(k))
    out = {"accuracy": skm.accuracy_score(y, d), "balanced_accuracy": skm.balanced_accuracy_score(y, d),
           "quadratic_kappa": skm.cohen_kappa_score(y, d, labels=idx, weights="quadratic")}
    if np.isin(idx, y).all():
        out["macro_auroc"] = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=idx)
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y, d, labels=idx, average=avg, zero_division=np.nan)
        out.update({f"{avg}_precision": pr, f"{avg}_recall": rc, f"{avg}_f1": f1})
    pr, rc, f1, _ = skm.precision_recall_fscore_support(y, d, labels=idx, average=None, zero_division=np.nan)
    for j, c in enumerate(classes):
        out[f"precision:{c}"], out[f"recall:{c}"], out[f"f1:{c}"] = pr[j], rc[j], f1[j]
        two = 0 < (y == j).sum() < y.size
        out[f"auroc:{c}"] = skm.roc_auc_score(y == j, p[:, j]) if two else float("nan")
    if "macro_auroc" not in out:  # scikit-learn refuses a class without records: the mean over the others
        out["macro_auroc"] = np.nanmean([out[f"auroc:{c}"] for c in classes])
    return {key: float(v) for key, v in out.items()}


__all__ = ["PER_CLASS", "SUMMARY", "MulticlassMetrics", "confusion_counts", "kappa_from_confusion",
           "sklearn_multiclass_metrics"]
