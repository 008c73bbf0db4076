"""Score -> probability calibration and decision thresholds, chosen on validation and carried unchanged to
test data and to the saved model bundle.

Both are plain data (``to_dict`` / ``from_dict`` give JSON-safe dicts), so a bundle stores them without
pickling anything::

    cal = Calibrator.fit(val_scores, val_labels, "platt")      # or "isotonic", "none" (sigmoid)
    thr = choose_threshold(val_labels, cal(val_scores), "youden")   # or "sensitivity", target=0.90
    decision = thr.apply(cal(test_scores))

``Calibrator.fit`` uses scikit-learn (``LogisticRegression`` without penalty for Platt scaling,
``IsotonicRegression`` with clipping); applying a fitted calibrator needs only numpy and reproduces
scikit-learn's predictions (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

CALIBRATION_METHODS = ("none", "platt", "isotonic")
THRESHOLD_RULES = ("youden", "sensitivity", "specificity", "fixed")


def _finite_pairs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ConfigError(f"{s.size} scores but {y.size} labels")
    keep = np.isfinite(s) & np.isfinite(y)
    s, y = s[keep], y[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ConfigError("labels must be 0 or 1")
    return s, y


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


@dataclass(frozen=True)
class Calibrator:
    """Maps model scores (logits) to probabilities.

    Attributes:
        method: ``none`` (the logistic sigmoid of the score, i.e. the model's own probability),
            ``platt`` (sigmoid(a * score + b)) or ``isotonic`` (monotone piecewise-linear map).
        params: ``{"a", "b"}`` for Platt, ``{"x", "y"}`` (knots) for isotonic, empty for none.
        n_fit: records it was fitted on (0 for none).
    """

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    n_fit: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {self.method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
        need = {"none": set(), "platt": {"a", "b"}, "isotonic": {"x", "y"}}[self.method]
        if not need <= set(self.params):
            raise ConfigError(f"{self.method} calibrator needs parameters {sorted(need)}, got {sorted(self.params)}")
        if self.method == "isotonic" and len(self.params["x"]) != len(self.params["y"]):
            raise ConfigError("isotonic calibrator: knots x and y differ in length")

    @classmethod
    def fit(cls, scores: Any, labels: Any, method: str = "platt") -> Calibrator:
        """Fit on validation scores and 0/1 labels (non-finite pairs are ignored)."""
        if method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
        if method == "none":
            return cls("none")
        s, y = _finite_pairs(scores, labels)
        if len(np.unique(y)) < 2:
            raise ConfigError(f"cannot fit a {method} calibrator: the labels have one class only")
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000).fit(s[:, None], y)
            return cls("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}, n_fit=int(s.size))
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
        return cls("isotonic", {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]},
                   n_fit=int(s.size))

    def __call__(self, scores: Any) -> np.ndarray:
        """Probabilities of the positive class (NaN where the score is NaN)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "none":
            return _sigmoid(s)
        if self.method == "platt":
            return _sigmoid(self.params["a"] * s + self.params["b"])
        x, y = np.asarray(self.params["x"], dtype=np.float64), np.asarray(self.params["y"], dtype=np.float64)
        out = np.interp(s, x, y) if x.size > 1 else np.full_like(s, y[0] if y.size else math.nan)
        return np.where(np.isnan(s), np.nan, out)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": dict(self.params), "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        try:
            return cls(str(data["method"]), dict(data.get("params") or {}), int(data.get("n_fit", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed calibrator {data!r} ({e})") from None


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on calibrated probabilities: positive when ``probability >= value``.

    Attributes:
        value: the threshold.
        rule: how it was chosen (``youden``, ``sensitivity``, ``specificity`` or ``fixed``).
        target: the target sensitivity / specificity of those rules.
        chosen_on: the split it was chosen on (``val``).
        sensitivity / specificity: what it achieved there.
    """

    value: float
    rule: str = "fixed"
    target: float | None = None
    chosen_on: str | None = None
    sensitivity: float | None = None
    specificity: float | None = None

    def apply(self, probabilities: Any) -> np.ndarray:
        """0/1 decisions (bool array); NaN probabilities give False."""
        p = np.asarray(probabilities, dtype=np.float64)
        return np.nan_to_num(p, nan=-np.inf) >= self.value

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule, "target": self.target, "chosen_on": self.chosen_on,
                "sensitivity": self.sensitivity, "specificity": self.specificity}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        try:
            return cls(float(data["value"]), str(data.get("rule", "fixed")), data.get("target"), data.get("chosen_on"),
                       data.get("sensitivity"), data.get("specificity"))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed threshold {data!r} ({e})") from None

    def describe(self) -> str:
        how = {"youden": "maximum Youden index (sensitivity + specificity - 1)",
               "sensitivity": f"sensitivity >= {self.target}", "specificity": f"specificity >= {self.target}",
               "fixed": "fixed"}[self.rule]
        where = f" on the {self.chosen_on} split" if self.chosen_on else ""
        return f"probability >= {self.value:.4g} ({how}{where})"


def choose_threshold(labels: Any, probabilities: Any, rule: str = "youden", target: float | None = None,
                     *, chosen_on: str | None = "val") -> Threshold:
    """Choose a decision threshold on validation data.

    Rules: ``youden`` maximises sensitivity + specificity - 1 (ties: the higher threshold);
    ``sensitivity`` is the highest threshold whose sensitivity is at least ``target`` (screening);
    ``specificity`` the lowest threshold whose specificity is at least ``target``; ``fixed`` uses
    ``target`` itself as the threshold.
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"unknown threshold rule {rule!r}; choose from {', '.join(THRESHOLD_RULES)}")
    if rule in ("sensitivity", "specificity", "fixed") and target is None:
        raise ConfigError(f"threshold rule {rule!r} needs a target")
    if rule != "fixed" and target is not None and not 0.0 < float(target) <= 1.0:
        raise ConfigError(f"target {rule} must be in (0, 1], got {target}")
    p, y = _finite_pairs(probabilities, labels)
    pos, neg = y == 1, y == 0
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if rule == "fixed":
        value = float(target)
    else:
        if n_pos == 0 or n_neg == 0:
            raise ConfigError("cannot choose a threshold: the labels have one class only")
        cand = np.unique(p)[::-1]  # descending candidate thresholds (predict positive when p >= t)
        order = np.argsort(-p, kind="stable")
        ps, ys = p[order], y[order]
        # true / false positives at each candidate: count of p >= t
        idx = np.searchsorted(-ps, -cand, side="right")  # number of records with p >= t
        tp = np.concatenate([[0], np.cumsum(ys)])[idx]
        fp = idx - tp
        sens, spec = tp / n_pos, 1.0 - fp / n_neg
        if rule == "youden":
            value = float(cand[int(np.argmax(sens + spec - 1.0))])  # first max = highest threshold
        elif rule == "sensitivity":
            ok = np.flatnonzero(sens >= float(target) - 1e-12)
            value = float(cand[ok[0]])
        else:
            ok = np.flatnonzero(spec >= float(target) - 1e-12)
            value = float(cand[ok[-1]]) if ok.size else float(np.nextafter(cand[0], np.inf))
    decided = p >= value
    return Threshold(value=value, rule=rule, target=None if target is None else float(target), chosen_on=chosen_on,
                     sensitivity=float(decided[pos].mean()) if n_pos else None,
                     specificity=float((~decided[neg]).mean()) if n_neg else None)


__all__ = ["CALIBRATION_METHODS", "THRESHOLD_RULES", "Calibrator", "Threshold", "choose_threshold"]
