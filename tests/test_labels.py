"""AS labels and severity grades on hand-made measurements, including missing values and boundaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from cardiofusion.errors import ConfigError
from cardiofusion.cohort.labels import ASCriteria, SeverityGrades, as_label, as_severity

nan = float("nan")


@pytest.mark.parametrize(
    "vmax, mg, ava, expected",
    [
        (2.5, nan, nan, 1.0),      # exactly the velocity threshold
        (2.49, nan, nan, 0.0),
        (nan, 20.0, nan, 1.0),     # exactly the gradient threshold
        (nan, 19.9, nan, 0.0),
        (nan, nan, 1.5, 1.0),      # exactly the area threshold
        (nan, nan, 1.51, 0.0),
        (1.0, 5.0, 2.0, 0.0),      # all present, all normal
        (1.0, nan, 1.2, 1.0),      # one criterion suffices
        (nan, nan, nan, nan),      # undeterminable, never 0
        (0.0, nan, nan, nan),      # 0 is not a measurement
        (-1.0, nan, 0.0, nan),
        (math.inf, nan, nan, nan),
    ],
)
def test_label_rule_and_boundaries(vmax, mg, ava, expected):
    got = as_label(peak_velocity_m_s=vmax, mean_gradient_mmhg=mg, ava_cm2=ava)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_label_require_all_measurements():
    kw = dict(peak_velocity_m_s=[1.0, 1.0, 3.0, nan], mean_gradient_mmhg=[5.0, nan, nan, nan], ava_cm2=[2.0, 2.0, nan, nan])
    lenient = as_label(**kw)
    strict = as_label(**kw, require_all_measurements=True)
    np.testing.assert_array_equal(lenient, [0.0, 0.0, 1.0, nan])
    # a missing measurement can no longer be assumed normal, but a met criterion still makes a case
    np.testing.assert_array_equal(strict, [0.0, nan, 1.0, nan])


def test_label_on_frames_keeps_nulls():
    pdf = pd.DataFrame({"peak_velocity_m_s": [2.6, None, 1.0], "mean_gradient_mmhg": [None, None, 10], "ava_cm2": [None, None, None]},
                       index=[10, 11, 12])
    lab = as_label(pdf)
    assert str(lab.dtype) == "Int8"
    assert list(lab.index) == [10, 11, 12]
    assert lab.iloc[0] == 1 and pd.isna(lab.iloc[1]) and lab.iloc[2] == 0
    plab = as_label(pl.from_pandas(pdf.reset_index(drop=True)))
    assert plab.to_list() == [1, None, 0]
    # missing columns count as missing measurements
    assert as_label(pl.DataFrame({"ava_cm2": [1.0, None]})).to_list() == [1, None]


def test_custom_criteria_and_disabled_criterion():
    crit = ASCriteria(peak_velocity_m_s=3.0, mean_gradient_mmhg=None, ava_cm2=1.0)
    got = as_label(peak_velocity_m_s=[2.9, 3.0, nan], mean_gradient_mmhg=[50.0, nan, 50.0], criteria=crit)
    # the gradient no longer counts: 50 mmHg alone is not a case, nor (being disabled) a measurement
    np.testing.assert_array_equal(got, [0.0, 1.0, nan])
    with pytest.raises(ConfigError):
        ASCriteria(peak_velocity_m_s=None, mean_gradient_mmhg=None, ava_cm2=None)
    with pytest.raises(ConfigError):
        ASCriteria(peak_velocity_m_s=-2)


@pytest.mark.parametrize(
    "vmax, mg, ava, expected",
    [
        (2.2, nan, nan, "none"),       # ACC/AHA mild band, but below the AS rule -> label 0, none
        (2.5, nan, nan, "mild"),       # meets the rule, no moderate threshold
        (2.99, 19.0, 1.6, "mild"),
        (3.0, nan, nan, "moderate"),
        (nan, 20.0, nan, "moderate"),  # the gradient rule threshold is also the moderate cut-off
        (nan, nan, 1.5, "moderate"),
        (nan, nan, 1.0, "moderate"),   # AVA 1.0-1.5 moderate
        (nan, nan, 0.99, "severe"),
        (3.9, 39.9, nan, "moderate"),
        (4.0, nan, nan, "severe"),
        (2.6, 40.0, 1.8, "severe"),    # worst available measurement wins
        (nan, nan, nan, None),
    ],
)
def test_severity_grades(vmax, mg, ava, expected):
    assert as_severity(peak_velocity_m_s=vmax, mean_gradient_mmhg=mg, ava_cm2=ava) == expected


def test_severity_consistent_with_label():
    rng = np.random.default_rng(0)
    n = 2000
    vmax = np.where(rng.random(n) < 0.3, nan, rng.uniform(0.5, 5.0, n))
    mg = np.where(rng.random(n) < 0.3, nan, rng.uniform(0, 60, n))
    ava = np.where(rng.random(n) < 0.3, nan, rng.uniform(0.5, 3.0, n))
    for crit in (ASCriteria(), ASCriteria(peak_velocity_m_s=3.5, mean_gradient_mmhg=None, ava_cm2=0.8)):
        lab = as_label(peak_velocity_m_s=vmax, mean_gradient_mmhg=mg, ava_cm2=ava, criteria=crit)
        sev = as_severity(peak_velocity_m_s=vmax, mean_gradient_mmhg=mg, ava_cm2=ava, criteria=crit)
        for lb, sv in zip(lab, sev):
            if math.isnan(lb):
                assert sv is None
            elif lb == 1:
                assert sv in ("mild", "moderate", "severe")
            else:
                assert sv == "none"


def test_severity_grades_configurable_and_validated():
    g = SeverityGrades(moderate_peak_velocity_m_s=3.5, severe_peak_velocity_m_s=4.5)
    assert as_severity(peak_velocity_m_s=[3.2, 4.2, 4.5], grades=g).tolist() == ["mild", "moderate", "severe"]
    with pytest.raises(ConfigError):
        SeverityGrades(moderate_ava_cm2=0.9, severe_ava_cm2=1.0)
    assert SeverityGrades.from_dict(g.to_dict()) == g


def test_pandas_severity_index():
    s = as_severity(pd.DataFrame({"peak_velocity_m_s": [4.1, None]}, index=["a", "b"]))
    assert s.to_dict() == {"a": "severe", "b": None}
