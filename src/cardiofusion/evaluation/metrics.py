"""Vectorised classification metrics: every metric for every bootstrap resample in a few array operations.

A resample is a vector of non-negative integer *weights* over the evaluated records (how many times each
record was drawn), so ``B`` resamples are a ``(B, n)`` matrix and the point estimate is the all-ones row.
Every metric is written for weighted records; with integer weights it equals scikit-learn's metric on the
records repeated that many times (tested), which is exactly what a resample is.

* Rank metrics (AUROC, AUPRC) group the scores into tie groups once; each resample's weighted positives
  and records per group come from two sparse-dense products, then cumulative sums over the groups.
* Threshold metrics (accuracy, precision/PPV, recall/sensitivity, specificity, NPV, F1) and the Brier score
  need the weighted confusion counts: one ``(B, n) @ (n, 5)`` matrix product.

Undefined values (a resample without positives or negatives, no predicted positives, ...) are NaN, never
an exception and never scikit-learn's ``zero_division`` substitute of 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Metric names, in the order of every table (the paper's Table 2 order, then NPV and Brier).
METRICS: tuple[str, ...] = ("auroc", "auprc", "accuracy", "precision", "recall", "specificity", "npv", "f1",
                            "brier")

#: Display names.
METRIC_LABELS: dict[str, str] = {
    "auroc": "AUROC", "auprc": "AUPRC", "accuracy": "Accuracy", "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)", "specificity": "Specificity", "npv": "NPV", "f1": "F1-score",
    "brier": "Brier score",
}

#: Metrics that depend on the decision threshold.
THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "specificity", "npv", "f1")


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.true_divide(a, b)
    return np.where(b > 0, out, np.nan)


class RankedScores:
    """Scores grouped once into tie groups (descending) so any number of weightings can be ranked cheaply.

    The records of each tie group are summed by two sparse ``(G, n)`` indicator matrices (positives, all),
    so ``B`` weightings cost two sparse-dense products and cumulative sums over the ``G`` groups.

    Args:
        labels: 0/1 labels ``(n,)``.
        scores: higher = more likely positive ``(n,)``; any monotone scale (logits, probabilities, mV).
        columns: the weight column of each entry ``(n,)`` (default: entry ``i`` is weighted by column ``i``).
            Pooled ("micro") metrics of several labels per record give every label of record ``r`` column
            ``r``, so the resample weights stay ``(B, records)``.
        n_columns: columns of the weights (default ``n``).
    """

    def __init__(self, labels: Any, scores: Any, columns: Any = None, n_columns: int | None = None):
        from scipy import sparse

        y = np.asarray(labels, dtype=np.float64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
        if y.shape != s.shape:
            raise ValueError(f"{y.size} labels but {s.size} scores")
        n = y.size
        order = np.argsort(-s, kind="mergesort")  # (n,) descending scores
        s_sorted = s[order]
        group_sorted = np.cumsum(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) - 1 if n else np.zeros(0, int)
        self.n_groups = int(group_sorted[-1]) + 1 if n else 0
        group = np.empty(n, dtype=np.int64)
        group[order] = group_sorted  # tie group of each record, 0 = highest score
        cols = np.arange(n) if columns is None else np.asarray(columns, dtype=np.int64).ravel()
        width = n if n_columns is None else int(n_columns)
        self.all_by_group = sparse.csr_matrix((np.ones(n), (group, cols)), shape=(self.n_groups, width))  # (G, n)
        self.pos_by_group = sparse.csr_matrix((y, (group, cols)), shape=(self.n_groups, width))  # (G, n)

    def auroc_auprc(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AUROC and average precision for each row of ``weights`` ``(B, n)`` -> two ``(B,)`` arrays.

        AUROC is the Mann-Whitney probability P(score_pos > score_neg) + 0.5 P(tie) (= the trapezoidal
        area, scikit-learn's ``roc_auc_score``); AUPRC is average precision, sum over thresholds of
        (R_k - R_{k-1}) P_k with one threshold per distinct score (scikit-learn's ``average_precision_score``).
        """
        wt = np.asarray(weights, dtype=np.float64).T  # (n, B)
        if self.n_groups == 0:
            nan = np.full(wt.shape[1], np.nan)
            return nan, nan.copy()
        d_tp = np.asarray(self.pos_by_group @ wt)  # (G, B) weighted positives in each tie group
        d_all = np.asarray(self.all_by_group @ wt)  # (G, B) weighted records in each tie group
        d_fp = d_all - d_tp
        tp = np.cumsum(d_tp, axis=0)  # (G, B) positives scoring >= the group's score
        c_all = np.cumsum(d_all, axis=0)
        fp = c_all - tp
        pos, neg = tp[-1], fp[-1]  # (B,)
        # each positive beats the negatives below its group and ties half of its own group's negatives
        beaten = (neg[None, :] - fp) + 0.5 * d_fp
        auroc = _div(np.einsum("gb,gb->b", d_tp, beaten), pos * neg)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(c_all > 0, tp / c_all, 0.0)  # d_tp is 0 wherever c_all is 0
        auprc = _div(np.einsum("gb,gb->b", d_tp, precision), pos)
        return auroc, auprc


def confusion_design(labels: Any, decisions: Any, probabilities: Any) -> np.ndarray:
    """Per-record indicator columns ``(n, 5)``: TP, FP, FN, TN, squared error of the probability."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    d = np.asarray(decisions, dtype=bool).ravel().astype(np.float64)
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    return np.stack([y * d, (1 - y) * d, y * (1 - d), (1 - y) * (1 - d), (p - y) ** 2], axis=1)


def threshold_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, specificity, NPV, F1 and Brier from weighted counts ``(B, 5)``."""
    tp, fp, fn, tn, sq = (counts[:, i] for i in range(5))
    total = tp + fp + fn + tn
    return {
        "accuracy": _div(tp + tn, total),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "brier": _div(sq, total),
    }


def metric_matrix(labels: Any, scores: Any, probabilities: Any, decisions: Any,
                  weights: np.ndarray | None = None, *, ranked: RankedScores | None = None) -> np.ndarray:
    """All :data:`METRICS` for each weighting of the records.

    Args:
        labels: 0/1 labels ``(n,)``.
        scores: ranking scores ``(n,)`` (AUROC, AUPRC).
        probabilities: calibrated probabilities ``(n,)`` (Brier score).
        decisions: 0/1 decisions at the chosen threshold ``(n,)`` (threshold metrics).
        weights: ``(B, n)`` resample weights; None: the point estimate (one row of ones).
        ranked: a :class:`RankedScores` of ``(labels, scores)`` to reuse.

    Returns:
        ``(B, len(METRICS))`` float64 (``(1, M)`` for the point estimate), NaN where undefined.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    w = np.ones((1, y.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != y.size:
        raise ValueError(f"weights must be (B, {y.size}), got {w.shape}")
    ranked = ranked or RankedScores(y, scores)
    auroc, auprc = ranked.auroc_auprc(w)
    counts = w @ confusion_design(y, decisions, probabilities)  # (B, 5)
    values = {"auroc": auroc, "auprc": auprc, **threshold_metrics(counts)}
    return np.stack([values[m] for m in METRICS], axis=1)


def point_metrics(labels: Any, scores: Any, probabilities: Any, decisions: Any) -> dict[str, float]:
    """The metrics of one set of records as ``{metric: value}``."""
    row = metric_matrix(labels, scores, probabilities, decisions)[0]
    return {m: float(v) for m, v in zip(METRICS, row)}


def sklearn_metrics(labels: Any, scores: Any, probabilities: Any, decisions: Any) -> dict[str, float]:
    """The same metrics through scikit-learn, one call each (the reference for tests and the benchmark).

    Undefined values follow this module's convention (NaN), which scikit-learn reaches with
    ``zero_division=np.nan``; AUROC / AUPRC with one class only are NaN as well.
    """
    from sklearn import metrics as skm

    y = np.asarray(labels, dtype=np.float64).ravel()
    d = np.asarray(decisions, dtype=bool).ravel().astype(np.int64)
    two_classes = 0 < y.sum() < y.size
    nan = float("nan")
    out = {
        "auroc": float(skm.roc_auc_score(y, scores)) if two_classes else nan,
        "auprc": float(skm.average_precision_score(y, scores)) if y.sum() > 0 else nan,
        "accuracy": float(skm.accuracy_score(y, d)) if y.size else nan,
        "precision": float(skm.precision_score(y, d, zero_division=np.nan)),
        "recall": float(skm.recall_score(y, d, zero_division=np.nan)),
        "specificity": float(skm.recall_score(y, d, pos_label=0, zero_division=np.nan)),
        "npv": float(skm.precision_score(y, d, pos_label=0, zero_division=np.nan)),
        "f1": float(skm.f1_score(y, d, zero_division=np.nan)),
        "brier": float(skm.brier_score_loss(y, probabilities)) if y.size else nan,
    }
    return out


def roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the empirical ROC curve (for plotting)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def pr_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision of the empirical precision-recall curve (for plotting)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    return recall, precision


__all__ = ["METRICS", "METRIC_LABELS", "THRESHOLD_METRICS", "RankedScores", "confusion_design", "metric_matrix",
           "point_metrics", "pr_points", "roc_points", "sklearn_metrics", "threshold_metrics"]
