"""Regression metrics per target, in the target's units, for every bootstrap resample at once.

Per target, on the records where both the measurement and the prediction are known (a missing target leaves
the record out of that target only): MAE, RMSE, R^2 (``1 - SS_res / SS_tot``, scikit-learn's ``r2_score``),
Pearson r, Spearman r (Pearson r of mid-ranks, scipy's ``spearmanr``), Bland-Altman bias (mean of
prediction - measurement) and 95% limits of agreement (bias -+ 1.96 SD of the differences, SD with ``n - 1``),
and the calibration slope and intercept of the measurement regressed on the prediction (ordinary least
squares ``truth = intercept + slope * prediction``; slope 1 and intercept 0 when calibrated, slope < 1 when
the predictions spread too widely).  One summary: ``mae``, the mean over targets of each target's MAE (the
task's primary metric, as training reports it; in the targets' units, mixed when they differ).

Every moment comes from one product ``(B, n) @ (n, 10)`` of the resample weights with per-record terms
(centred at the full-set means, so the sums do not cancel); the Spearman mid-ranks of a resample come from the
weighted counts of each tie group (a sparse product and a cumulative sum), so no resample is sorted again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .taskmetrics import MetricFamily, MetricInfo, div, nanmean_rows

#: Metrics per target, in table order.
TARGET_METRICS = ("mae", "rmse", "r2", "pearson_r", "spearman_r", "bias", "loa_low", "loa_high",
                  "calibration_slope", "calibration_intercept")
LABELS = {"mae": "MAE", "rmse": "RMSE", "r2": "R^2", "pearson_r": "Pearson r", "spearman_r": "Spearman r",
          "bias": "Bland-Altman bias (pred - truth)", "loa_low": "Lower limit of agreement",
          "loa_high": "Upper limit of agreement", "calibration_slope": "Calibration slope",
          "calibration_intercept": "Calibration intercept"}
#: Metrics in the target's units (the others are unitless).
IN_UNITS = ("mae", "rmse", "bias", "loa_low", "loa_high", "calibration_intercept")
DIRECTION = {"mae": False, "rmse": False, "r2": True, "pearson_r": True, "spearman_r": True}
LOA_Z = 1.96


class _Ranks:
    """Mid-ranks of one variable under any weighting, from its tie groups (ascending)."""

    def __init__(self, values: np.ndarray):
        from scipy import sparse

        n = values.size
        order = np.argsort(values, kind="mergesort")
        s = values[order]
        group_sorted = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 if n else np.zeros(0, np.int64)
        self.group = np.empty(n, dtype=np.int64)
        self.group[order] = group_sorted
        g = int(group_sorted[-1]) + 1 if n else 0
        self.by_group = sparse.csr_matrix((np.ones(n), (np.arange(n), self.group)), shape=(n, g))  # (n, G)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        counts = np.asarray((self.by_group.T @ w.T).T)  # (B, G) weighted records per tie group
        below = np.cumsum(counts, axis=1) - counts
        return (below + (counts + 1.0) / 2.0)[:, self.group]  # (B, n) mid-rank of each record


def _pearson(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weighted Pearson r per row; ``a``, ``b`` ``(n,)`` or ``(B, n)``."""
    total = w.sum(axis=1)
    ma, mb = div((w * a).sum(axis=1), total), div((w * b).sum(axis=1), total)
    ca = a - ma[:, None]
    cb = b - mb[:, None]
    return div((w * ca * cb).sum(axis=1), np.sqrt((w * ca * ca).sum(axis=1) * (w * cb * cb).sum(axis=1)))


def target_metrics(truth: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`TARGET_METRICS` of one target (all values known) for each row of ``w`` ``(B, n)``."""
    y = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if y.size == 0:
        nan = np.full(w.shape[0], np.nan)
        return {m: nan.copy() for m in TARGET_METRICS}
    cy, cp = y - y.mean(), p - p.mean()  # centred: the sums below do not cancel
    err = p - y
    ce = err - err.mean()
    terms = np.stack([np.ones_like(y), cy, cp, cy * cy, cp * cp, cy * cp, np.abs(err), err * err, ce, ce * ce],
                     axis=1)
    s = w @ terms  # (B, 10)
    n, sy, sp, syy, spp, syp, sabs, see, se, sse = (s[:, i] for i in range(10))
    my, mp = div(sy, n), div(sp, n)  # resample means, centred
    ss_y = syy - n * my * my  # sums of squares about the resample means
    ss_p = spp - n * mp * mp
    ss_yp = syp - n * my * mp
    me = div(se, n)
    bias = me + err.mean()  # mean(p - y)
    sd = np.sqrt(np.maximum(div(sse - n * me * me, n - 1), 0.0))
    slope = div(ss_yp, ss_p)
    return {
        "mae": div(sabs, n), "rmse": np.sqrt(div(see, n)), "r2": 1.0 - div(see, ss_y),
        "pearson_r": div(ss_yp, np.sqrt(ss_y * ss_p)), "spearman_r": _pearson(w, _Ranks(y)(w), _Ranks(p)(w)),
        "bias": bias, "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd,
        "calibration_slope": slope, "calibration_intercept": (my + y.mean()) - slope * (mp + p.mean()),
    }


class RegressionMetrics(MetricFamily):
    """Every regression metric per target for any number of resample weightings.

    Args:
        labels: measurements ``(n, R)`` in units, NaN missing.
        predictions: ``(n, R)`` in the same units (``pred_<target>``).
        names: target names (R).
        units: ``{name: unit}`` for display.
    """

    def __init__(self, labels: Any, predictions: Any, names: Sequence[str], units: Mapping[str, str] | None = None):
        self.y = np.asarray(labels, dtype=np.float64)
        self.n = self.y.shape[0]
        self.y = self.y.reshape(self.n, -1)
        self.p = np.asarray(predictions, dtype=np.float64).reshape(self.n, -1)
        self.names = [str(x) for x in names]
        self.units = dict(units or {})
        self.known = np.isfinite(self.y) & np.isfinite(self.p)
        units = {self.units.get(name, "") for name in self.names}
        self.infos = [MetricInfo("mae", "MAE, mean over targets", "macro", "", units.pop() if len(units) == 1 else
                                 "mixed units", False)]
        self.infos += [MetricInfo(f"{m}:{name}", f"{LABELS[m]} ({name})", "per target", name,
                                 self.units.get(name, "") if m in IN_UNITS else "", DIRECTION.get(m))
                      for name in self.names for m in TARGET_METRICS]

    def _matrix(self, w: np.ndarray) -> np.ndarray:
        cols, maes = [], []
        for j in range(len(self.names)):
            k = self.known[:, j]
            values = target_metrics(self.y[k, j], self.p[k, j], w[:, k])
            cols += [values[m] for m in TARGET_METRICS]
            maes.append(values["mae"])
        return np.stack([nanmean_rows(np.stack(maes, axis=1)), *cols], axis=1)


def reference_regression_metrics(labels: Any, predictions: Any, names: Sequence[str]) -> dict[str, float]:
    """The same metrics through scikit-learn / scipy / numpy, one call each (the reference for tests)."""
    from scipy import stats
    from sklearn import metrics as skm

    y_all = np.asarray(labels, dtype=np.float64)
    p_all = np.asarray(predictions, dtype=np.float64)
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        k = np.isfinite(y_all[:, j]) & np.isfinite(p_all[:, j])
        y, p = y_all[k, j], p_all[k, j]
        d = p - y
        fit = stats.linregress(p, y)
        sd = np.std(d, ddof=1)
        values = {"mae": skm.mean_absolute_error(y, p), "rmse": np.sqrt(skm.mean_squared_error(y, p)),
                  "r2": skm.r2_score(y, p), "pearson_r": stats.pearsonr(y, p)[0],
                  "spearman_r": stats.spearmanr(y, p)[0], "bias": d.mean(), "loa_low": d.mean() - LOA_Z * sd,
                  "loa_high": d.mean() + LOA_Z * sd, "calibration_slope": fit.slope,
                  "calibration_intercept": fit.intercept}
        out.update({f"{m}:{name}": float(v) for m, v in values.items()})
    maes = [out[f"mae:{name}"] for name in names if np.isfinite(out[f"mae:{name}"])]
    out["mae"] = float(np.mean(maes)) if maes else float("nan")
    return out


__all__ = ["IN_UNITS", "TARGET_METRICS", "RegressionMetrics", "reference_regression_metrics", "target_metrics"]
