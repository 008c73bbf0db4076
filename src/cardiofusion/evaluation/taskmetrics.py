"""What the metric families of the non-binary task kinds share (:mod:`.multiclass`, :mod:`.multilabel`,
:mod:`.regression`).

A family is built once from the evaluated records (labels and predictions) and then gives every metric for
any number of resample weightings: ``family.matrix(weights)`` -> ``(B, M)`` with the columns
``family.keys``; ``weights=None`` is the point estimate (one row of ones).  Resample weights are the
patient-bootstrap weights of :func:`cardiofusion.evaluation.bootstrap.bootstrap_weights`: with integer
weights every metric equals the reference (scikit-learn / scipy) metric on the records repeated that many
times (tested).

Metric keys: a summary is ``<average>_<metric>`` (``macro_auroc``, ``weighted_f1``, ``micro_auprc``) or a
plain name where no averaging applies (``accuracy``, ``quadratic_kappa``); a per-class / per-label /
per-target metric is ``<metric>:<name>`` (``auroc:moderate``, ``mae:lvef_pct``).  :class:`MetricInfo` says
which averaging, target and unit each key has, so every table names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How a summary metric averages over classes / labels (shown in every table).
AVERAGES = {
    "macro": "macro (unweighted mean over classes)",
    "weighted": "weighted (mean over classes weighted by support)",
    "micro": "micro (pooled over all labels)",
    "per class": "one class vs the rest",
    "per label": "one label",
    "per target": "one target",
    "overall": "all records",
}


@dataclass(frozen=True)
class MetricInfo:
    """One metric column of a family.

    Attributes:
        key: the metric's key in metrics.json / metrics.csv.
        label: display name (``Macro F1``, ``AUROC (moderate vs rest)``).
        average: one of :data:`AVERAGES`.
        target: the class / label / target name ("" for summaries).
        unit: display unit (regression metrics in the target's units; "" otherwise).
        higher_is_better: direction (None where neither: a bias, limits of agreement, a slope).
    """

    key: str
    label: str
    average: str = "overall"
    target: str = ""
    unit: str = ""
    higher_is_better: bool | None = True


def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.true_divide(a, b)
    return np.where(b != 0, out, np.nan)


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite entries; NaN where none is finite (no warning)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return div(np.where(ok, v, 0.0).sum(axis=-1), ok.sum(axis=-1).astype(np.float64))


def as_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """``(B, n)`` float weights; None -> one row of ones (the point estimate)."""
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must be (B, {n}), got {w.shape}")
    return w


class MetricFamily:
    """Base of the metric families: ``infos`` (one :class:`MetricInfo` per column) and :meth:`matrix`."""

    infos: list[MetricInfo]
    y: np.ndarray

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.infos]

    #: resamples computed together (bounds the memory of the rank metrics: groups x chunk floats per array)
    chunk = 125

    def matrix(self, weights: np.ndarray | None = None) -> np.ndarray:
        """``(B, M)`` metrics for each row of ``weights`` ``(B, n)``; None: the point estimate ``(1, M)``."""
        n = self.n_records
        w = as_weights(weights, n)
        return np.concatenate([self._matrix(w[i:i + self.chunk]) for i in range(0, max(w.shape[0], 1), self.chunk)])

    @property
    def n_records(self) -> int:
        return int(self.y.shape[0])

    def _matrix(self, w: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def point(self) -> dict[str, float]:
        """``{key: value}`` on all records."""
        return {k: float(v) for k, v in zip(self.keys, self.matrix(None)[0])}


__all__ = ["AVERAGES", "MetricFamily", "MetricInfo", "as_weights", "div", "nanmean_rows"]
