"""Patient-level bootstrap: resample weights, percentile intervals, paired differences and p-values.

Design: a resample draws as many *patients* as the evaluated set holds, with replacement, and takes all
records of every drawn patient (records of one patient are correlated, so they stay together; with one
record per patient this is the ordinary record bootstrap).  A resample is stored as integer weights over
the records (how often each record was drawn); ``B`` resamples are a ``(B, n)`` matrix shared by every
model, so paired comparisons see exactly the same resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .metrics import METRICS


def patient_codes(patient_ids: Any) -> tuple[np.ndarray, int]:
    """Integer code ``(n,)`` of each record's patient and the number of patients."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(patient_ids)).astype(str), sort=True)
    return codes.astype(np.int64), len(uniques)


def bootstrap_weights(patient_ids: Any, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Resample weights ``(n_boot, n_records)``: patients drawn with replacement, all their records taken.

    Weight ``[b, i]`` is how many times record ``i``'s patient was drawn in resample ``b``.  Deterministic
    for a given seed and set of patient ids (the draw is over patients sorted by id, not row order).
    """
    codes, n_pat = patient_codes(patient_ids)
    if n_pat == 0:
        return np.zeros((int(n_boot), 0))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_pat, size=(int(n_boot), n_pat))  # (B, P) drawn patient codes
    flat = (draws + np.arange(int(n_boot))[:, None] * n_pat).ravel()
    counts = np.bincount(flat, minlength=int(n_boot) * n_pat).reshape(int(n_boot), n_pat)  # (B, P)
    return counts.astype(np.float64)[:, codes]  # (B, n)


def resample_indices(weights_row: np.ndarray) -> np.ndarray:
    """The record indices of one resample (each record repeated by its weight): for reference loops."""
    return np.repeat(np.arange(weights_row.size), np.asarray(weights_row, dtype=np.int64))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap distribution summarised.

    Attributes:
        value: the estimate on the full evaluated set (what tables report).
        median: median of the bootstrap distribution (the paper's "median AUROC").
        ci_low / ci_high: percentile interval of the bootstrap distribution.
        n_valid: resamples where the quantity was defined (e.g. both classes present).
    """

    value: float
    median: float
    ci_low: float
    ci_high: float
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": _num(self.value), "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high),
                "median": _num(self.median), "n_valid": int(self.n_valid)}


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def percentile_summary(point: np.ndarray, boot: np.ndarray, level: float = 0.95) -> list[Interval]:
    """Summaries of ``point`` ``(M,)`` with bootstrap values ``boot`` ``(B, M)`` (NaN resamples ignored)."""
    point = np.asarray(point, dtype=np.float64).ravel()
    boot = np.asarray(boot, dtype=np.float64).reshape(-1, point.size)
    alpha = (1.0 - level) / 2.0
    out = []
    for j in range(point.size):
        col = boot[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            lo, med, hi = np.quantile(col, [alpha, 0.5, 1.0 - alpha])
        else:
            lo = med = hi = np.nan
        out.append(Interval(float(point[j]), float(med), float(lo), float(hi), int(col.size)))
    return out


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from the bootstrap distribution of a difference.

    ``p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))`` over the ``B`` resamples where the
    difference is defined: twice the smaller tail beyond zero, i.e. the smallest ``alpha`` at which the
    equal-tailed ``1 - alpha`` percentile interval of the difference excludes zero.  The ``+1`` counts
    the observed data as one resample, so a bootstrap of ``B`` resamples never claims ``p < 2 / (B + 1)``
    (report it as ``p < 0.002`` for ``B = 1000``).  NaN when no resample defines the difference.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (d.size + 1)))


@dataclass(frozen=True)
class Difference:
    """Paired bootstrap comparison of one metric: ``model_a - model_b``."""

    difference: float
    median: float
    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        return {"difference": _num(self.difference), "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high),
                "median": _num(self.median), "p_value": _num(self.p_value), "n_valid": int(self.n_valid)}


def paired_differences(point_a: np.ndarray, point_b: np.ndarray, boot_a: np.ndarray, boot_b: np.ndarray,
                       level: float = 0.95, metrics: tuple[str, ...] = METRICS) -> dict[str, Difference]:
    """Per-metric differences ``a - b`` with percentile CI and p-value; both models scored on the same
    resamples (rows of ``boot_a`` and ``boot_b`` are the same patients)."""
    diff_point = np.asarray(point_a, dtype=np.float64) - np.asarray(point_b, dtype=np.float64)
    diff_boot = np.asarray(boot_a, dtype=np.float64) - np.asarray(boot_b, dtype=np.float64)  # (B, M)
    summary = percentile_summary(diff_point, diff_boot, level)
    return {m: Difference(s.value, s.median, s.ci_low, s.ci_high, bootstrap_p_value(diff_boot[:, j]), s.n_valid)
            for j, (m, s) in enumerate(zip(metrics, summary))}


def bootstrap_means(values: Any, n_boot: int = 1000, seed: int = 0, groups: Any = None) -> np.ndarray:
    """``(n_boot, ...)`` means over records (axis 0) on the resamples of :func:`bootstrap_weights`.

    ``groups`` (patient ids, one per record) makes it the cluster bootstrap of the module docstring: whole
    patients are drawn and a resample's mean is over all records of the drawn patients.  Without ``groups``
    every record is its own patient (the record bootstrap; the same as ``groups=range(n)``).  The same
    ``seed`` and ``groups`` give the same resamples, so means of different quantities are paired.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if groups is None:
        groups = np.arange(n)
    elif len(groups) != n:
        raise ConfigError(f"groups has {len(groups)} entries for {n} records")
    if n == 0:
        return np.full((int(n_boot), *v.shape[1:]), np.nan)
    w = bootstrap_weights(groups, n_boot, seed)  # (B, n)
    return (w @ v.reshape(n, -1) / w.sum(axis=1, keepdims=True)).reshape(-1, *v.shape[1:])


def bootstrap_mean_ci(values: Any, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      groups: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over records (axis 0) with the percentile CI of :func:`bootstrap_means`.

    Returns ``(mean, low, high)``, each of shape ``values.shape[1:]`` (NaN for no records).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] == 0:
        nan = np.full(v.shape[1:], np.nan)
        return nan, nan, nan
    boot = bootstrap_means(v, n_boot, seed, groups)
    a = (1 - level) / 2
    return v.mean(axis=0), np.quantile(boot, a, axis=0), np.quantile(boot, 1 - a, axis=0)


__all__ = ["Difference", "Interval", "bootstrap_mean_ci", "bootstrap_means", "bootstrap_p_value", "bootstrap_weights",
           "paired_differences", "patient_codes", "percentile_summary", "resample_indices"]
