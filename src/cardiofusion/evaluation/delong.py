"""DeLong's test for correlated AUROCs (DeLong, DeLong & Clarke-Pearson 1988), fast midrank version
(Sun & Xu 2014, IEEE Signal Processing Letters 21:1389).

For ``k`` scorers of the same ``m`` positives and ``n`` negatives, the AUROC of scorer ``r`` is the mean of
its placement values; DeLong's covariance of the AUROCs is ``S10 / m + S01 / n`` where ``S10`` and ``S01``
are the sample covariances of the positives' placements (fraction of negatives scored lower, ties 1/2)
and of the negatives' placements (fraction of positives scored higher).  Sun & Xu obtain all placements
from three midrank computations, ``O((m + n) log(m + n))`` instead of ``O(m n)``.  The test of
``AUROC_a = AUROC_b`` is ``z = (A_a - A_b) / sqrt(var_a + var_b - 2 cov_ab)``, two-sided normal p-value;
the same variance gives Wald confidence intervals (pROC's ``ci.auc(method="delong")`` and
``roc.test(method="delong")``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata


def _placements(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs ``(k,)``, positives' placements ``(k, m)`` and negatives' placements ``(k, n)``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))  # (k, N)
    if s.shape[1] != y.size:
        raise ValueError(f"{y.size} labels but scores of shape {s.shape}")
    pos, neg = s[:, y == 1], s[:, y == 0]  # (k, m), (k, n)
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs positives and negatives")
    tx = rankdata(pos, axis=1)  # midranks within positives
    ty = rankdata(neg, axis=1)  # midranks within negatives
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks within all
    v_pos = (tz[:, :m] - tx) / n  # (k, m): fraction of negatives below each positive (ties 1/2)
    v_neg = 1.0 - (tz[:, m:] - ty) / m  # (k, n): fraction of positives above each negative
    aucs = v_pos.mean(axis=1)
    return aucs, v_pos, v_neg


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs ``(k,)`` of the rows of ``scores`` ``(k, N)`` and their DeLong covariance ``(k, k)``."""
    aucs, v_pos, v_neg = _placements(labels, scores)
    m, n = v_pos.shape[1], v_neg.shape[1]
    s10 = np.atleast_2d(np.cov(v_pos)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v_neg)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DeLongResult:
    """DeLong comparison of two correlated AUROCs (``a - b``) with a Wald CI of the difference."""

    auroc_a: float
    auroc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if not math.isfinite(v) else float(v)) for k, v in asdict(self).items()}


def delong_test(labels: Any, scores_a: Any, scores_b: Any, level: float = 0.95) -> DeLongResult:
    """Two-sided DeLong test of equal AUROCs of two scorers on the same records."""
    aucs, cov = delong_covariance(labels, np.vstack([np.asarray(scores_a, float), np.asarray(scores_b, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = diff / se
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    p = float(2 * norm.sf(abs(z)))
    q = float(norm.ppf(0.5 + level / 2))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, float(z), p, diff - q * se, diff + q * se)


def delong_ci(labels: Any, scores: Any, level: float = 0.95) -> tuple[float, float, float, float]:
    """AUROC, its DeLong standard error and Wald ``level`` interval clipped to [0, 1]."""
    aucs, cov = delong_covariance(labels, np.asarray(scores, float)[None, :])
    auc, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
    q = float(norm.ppf(0.5 + level / 2))
    return auc, se, max(0.0, auc - q * se), min(1.0, auc + q * se)


__all__ = ["DeLongResult", "delong_ci", "delong_covariance", "delong_test"]
