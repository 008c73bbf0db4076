"""Calibration and thresholds: equal scikit-learn's fits, survive a JSON round trip, thresholds chosen by the
rule they claim (checked against brute force over every cut-off)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from cardiofusion.evaluation.calibration import Calibrator, Threshold, choose_threshold
from cardiofusion.errors import ConfigError


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(float)
    s = rng.normal(1.5 * y - 1.0, 1.0) * 2.0  # logits, miscalibrated by the factor 2
    return s, y


def test_platt_equals_sklearn_and_round_trips(data):
    s, y = data
    cal = Calibrator.fit(s, y, "platt")
    ref = LogisticRegression(C=np.inf, max_iter=1000).fit(s[:, None], y).predict_proba(s[:, None])[:, 1]
    np.testing.assert_allclose(cal(s), ref, atol=1e-9)
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again(s), cal(s))
    assert cal.n_fit == 400 and 0 < cal.params["a"] < 1  # undoes the factor 2 (shrinks the logits)


def test_isotonic_equals_sklearn(data):
    s, y = data
    cal = Calibrator.fit(s, y, "isotonic")
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    grid = np.linspace(s.min() - 3, s.max() + 3, 1001)
    np.testing.assert_allclose(cal(grid), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(cal(np.sort(s))) >= 0)
    assert np.isnan(cal(np.array([np.nan]))[0])


def test_none_is_the_sigmoid_and_bad_input_refused(data):
    s, y = data
    np.testing.assert_allclose(Calibrator.fit(s, y, "none")(s), 1 / (1 + np.exp(-s)), atol=1e-12)
    with pytest.raises(ConfigError, match="unknown calibration"):
        Calibrator.fit(s, y, "beta")
    with pytest.raises(ConfigError, match="one class"):
        Calibrator.fit(s, np.zeros_like(y), "platt")
    with pytest.raises(ConfigError, match="needs parameters"):
        Calibrator.from_dict({"method": "platt", "params": {"a": 1.0}})


def _brute(y, p):
    rows = []
    for t in np.unique(p):
        d = p >= t
        rows.append((t, d[y == 1].mean(), 1 - d[y == 0].mean()))
    return np.array(rows)


def test_youden_and_target_rules_match_brute_force(data):
    s, y = data
    p = 1 / (1 + np.exp(-s))
    table = _brute(y, p)
    youden = choose_threshold(y, p, "youden")
    j = table[:, 1] + table[:, 2] - 1
    assert np.isclose(youden.sensitivity + youden.specificity - 1, j.max())
    fpr, tpr, _ = roc_curve(y, p)
    assert np.isclose(j.max(), np.max(tpr - fpr))
    s90 = choose_threshold(y, p, "sensitivity", 0.9)
    ok = table[table[:, 1] >= 0.9]
    assert s90.value == ok[:, 0].max() and s90.sensitivity >= 0.9
    sp = choose_threshold(y, p, "specificity", 0.95)
    assert sp.specificity >= 0.95 and sp.value == table[table[:, 2] >= 0.95][:, 0].min()
    assert list(s90.apply(p)) == list(p >= s90.value)
    assert Threshold.from_dict(json.loads(json.dumps(s90.to_dict()))) == s90
    assert "sensitivity >= 0.9" in s90.describe() and "val" in s90.describe()
    with pytest.raises(ConfigError, match="needs a target"):
        choose_threshold(y, p, "sensitivity")
    assert choose_threshold(y, p, "fixed", 0.5).value == 0.5
