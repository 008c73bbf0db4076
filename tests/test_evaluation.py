"""Evaluation: vectorised metrics against scikit-learn, DeLong against published examples, bootstrap
coverage, patient-level resampling, thresholds carried from validation, figures, report, CLI end to end and
cross-validation."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_tiny_cache, register_stand_in_encoders
from PIL import Image
from scipy.stats import norm

from cardiofusion.evaluation.calibration import Calibrator, choose_threshold
from cardiofusion.evaluation import (
    METRICS,
    RankedScores,
    bootstrap_mean_ci,
    bootstrap_means,
    bootstrap_p_value,
    bootstrap_weights,
    delong_ci,
    delong_covariance,
    delong_test,
    evaluate_tables,
    fold_splits,
    metric_matrix,
    paired_differences,
    parse_subgroups,
    point_metrics,
    resample_indices,
    sklearn_metrics,
    subgroup_levels,
    summarize_folds,
)
from cardiofusion.evaluation.folds import fold_manifest

FS, DURATION_S, SIZE = 250.0, 4.0, 32


def _sim(n: int, seed: int, prevalence: float = 0.2, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 1)
    p = 1 / (1 + np.exp(-(s - 1)))
    d = p >= 0.4
    return y, s, p, d


def _close(a: dict, b: dict) -> None:
    for k in METRICS:
        if math.isnan(b[k]):
            assert math.isnan(a[k]), (k, a[k])
        else:
            assert a[k] == pytest.approx(b[k], abs=1e-12), k


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [True, False])
def test_point_metrics_equal_sklearn(seed, ties):
    y, s, p, d = _sim(300, seed, ties=ties)
    _close(point_metrics(y, s, p, d), sklearn_metrics(y, s, p, d))


def test_sklearn_reference_is_sklearn():
    """The reference itself: each entry is the named scikit-learn function (specificity/NPV as the
    negative class's recall/precision)."""
    from sklearn import metrics as skm

    y, s, p, d = _sim(200, 7)
    ref = point_metrics(y, s, p, d)
    assert ref["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert ref["auprc"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert ref["f1"] == pytest.approx(skm.f1_score(y, d), abs=1e-12)
    assert ref["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    tn, fp, fn, _tp = skm.confusion_matrix(y, d).ravel()
    assert ref["specificity"] == pytest.approx(tn / (tn + fp))
    assert ref["npv"] == pytest.approx(tn / (tn + fn))


def test_resampled_metrics_equal_sklearn_on_repeated_records():
    """A weight row equals scikit-learn on the records repeated that many times (ties included)."""
    y, s, p, d = _sim(250, 3)
    patients = np.repeat(np.arange(100), [3, 2, 3, 2, 3] * 20)[:250]
    w = bootstrap_weights(patients.astype(str), 30, seed=1)
    got = metric_matrix(y, s, p, d, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(30):
            idx = resample_indices(w[b])
            ref = sklearn_metrics(y[idx], s[idx], p[idx], d[idx])
            _close(dict(zip(METRICS, got[b])), ref)


def test_edge_cases_give_nan_not_errors():
    y = np.array([0, 0, 1, 1, 0.0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.8])
    p, d = s, s >= 0.5
    # a resample without positives, one without negatives, an empty one, and one with every record once
    w = np.array([[1, 2, 0, 0, 1], [0, 0, 3, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1.0]])
    m = dict(zip(METRICS, metric_matrix(y, s, p, d, w).T))
    assert np.isnan(m["auroc"][:3]).all() and np.isfinite(m["auroc"][3])
    assert np.isnan(m["auprc"][0]) and m["auprc"][1] == 1.0  # all positives: precision 1 everywhere
    assert np.isnan(m["recall"][0]) and np.isnan(m["specificity"][1]) and np.isnan(m["accuracy"][2])
    assert np.isnan(m["brier"][2])
    # no predicted positive: precision undefined (NaN), recall 0
    none = point_metrics(y, s, p, np.zeros(5, bool))
    assert math.isnan(none["precision"]) and none["recall"] == 0.0 and none["npv"] == pytest.approx(0.6)
    one_class = point_metrics(np.zeros(4), np.arange(4.0), np.full(4, 0.1), np.zeros(4, bool))
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["auprc"]) and math.isnan(one_class["recall"])
    _close(one_class, sklearn_metrics(np.zeros(4), np.arange(4.0), np.full(4, 0.1), np.zeros(4, bool)))


def test_ranked_scores_reused_across_weightings():
    y, s, p, d = _sim(120, 11)
    ranked = RankedScores(y, s)
    w = bootstrap_weights(np.arange(120).astype(str), 5, seed=2)
    np.testing.assert_array_equal(metric_matrix(y, s, p, d, w, ranked=ranked), metric_matrix(y, s, p, d, w))


# ---------------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------------
def test_patient_bootstrap_keeps_patients_together():
    patients = np.array(["c", "a", "a", "b", "c", "c", "d", "a"])
    w = bootstrap_weights(patients, 500, seed=3)
    assert w.shape == (500, 8)
    for pid in np.unique(patients):
        cols = w[:, patients == pid]
        assert (cols == cols[:, :1]).all()  # every record of a patient drawn the same number of times
    first = {pid: np.flatnonzero(patients == pid)[0] for pid in np.unique(patients)}
    patient_draws = np.stack([w[:, i] for i in first.values()], axis=1)
    assert (patient_draws.sum(axis=1) == 4).all()  # 4 patients drawn per resample
    assert patient_draws.mean() == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(w, bootstrap_weights(patients, 500, seed=3))  # seeded
    # independent of row order: the same patients get the same draws
    perm = np.random.default_rng(0).permutation(8)
    np.testing.assert_array_equal(bootstrap_weights(patients[perm], 500, seed=3), w[:, perm])
    idx = resample_indices(w[0])
    assert len(idx) == int(w[0].sum())


def test_cluster_bootstrap_mean_uses_the_patient_resamples():
    """bootstrap_means is the mean over the records of each bootstrap_weights resample (a reference loop
    over resample_indices), so it keeps patients together exactly as the metric bootstrap does."""
    rng = np.random.default_rng(4)
    patients = np.array(["c", "a", "a", "b", "c", "c", "d", "a", "e"])
    v = rng.normal(size=(9, 3))
    boot = bootstrap_means(v, 200, seed=5, groups=patients)
    w = bootstrap_weights(patients, 200, seed=5)
    ref = np.stack([v[resample_indices(row)].mean(axis=0) for row in w])
    np.testing.assert_allclose(boot, ref, rtol=1e-12)
    m, lo, hi = bootstrap_mean_ci(v, 200, seed=5, groups=patients)
    np.testing.assert_allclose(m, v.mean(axis=0))
    np.testing.assert_allclose(lo, np.quantile(ref, 0.025, axis=0))
    np.testing.assert_allclose(hi, np.quantile(ref, 0.975, axis=0))
    # no groups: every record its own patient
    np.testing.assert_array_equal(bootstrap_means(v[:, 0], 50, seed=1), bootstrap_means(v[:, 0], 50, seed=1,
                                                                                        groups=np.arange(9)))
    assert all(np.isnan(x) for x in bootstrap_mean_ci(np.zeros(0)))


def test_bootstrap_p_value_definition():
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(-np.ones(999)) == pytest.approx(2 / 1000)
    d = np.r_[np.full(900, 0.1), np.full(99, -0.1)]
    assert bootstrap_p_value(d) == pytest.approx(2 * 100 / 1000)
    assert bootstrap_p_value(np.zeros(10)) == 1.0
    assert math.isnan(bootstrap_p_value(np.array([np.nan])))
    y, s, p, d = _sim(200, 5)
    w = bootstrap_weights(np.arange(200).astype(str), 200, seed=0)
    pt, bt = metric_matrix(y, s, p, d)[0], metric_matrix(y, s, p, d, w)
    same = paired_differences(pt, pt, bt, bt)
    assert all(v.difference == 0 and v.p_value == 1.0 for k, v in same.items())


def test_bootstrap_ci_covers_true_auroc_at_nominal_rate():
    """Binormal data (AS ~ N(d, 1), no AS ~ N(0, 1)): true AUROC = Phi(d / sqrt 2); 200 data sets x 200
    resamples; the 95% percentile interval must cover it about 95% of the time."""
    rng = np.random.default_rng(2024)
    shift, n_pos, n_neg = 1.0, 60, 180
    true_auc = norm.cdf(shift / math.sqrt(2))
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    ids = np.arange(y.size).astype(str)
    covered = 0
    for k in range(200):
        s = np.r_[rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)]
        w = bootstrap_weights(ids, 200, seed=k)
        auc, _ = RankedScores(y, s).auroc_auprc(w)
        lo, hi = np.quantile(auc, [0.025, 0.975])
        covered += lo <= true_auc <= hi
    assert 0.90 <= covered / 200 <= 0.985, covered


def test_patient_bootstrap_needed_for_clustered_records():
    """Three correlated records per patient: resampling patients keeps the nominal coverage, resampling
    records (ignoring the clustering) gives intervals that are too narrow."""
    from sklearn.metrics import roc_auc_score

    def simulate(rng, n_patients):
        positive = rng.random(n_patients) < 0.3
        pid = np.repeat(np.arange(n_patients), 3)
        y = positive[pid].astype(float)
        s = y + rng.normal(0, 0.8, n_patients)[pid] + rng.normal(0, 0.6, pid.size)  # patient effect + noise
        return pid.astype(str), y, s

    big = np.random.default_rng(1)
    _, y_big, s_big = simulate(big, 50_000)
    true_auc = roc_auc_score(y_big, s_big)  # population AUROC (pairs of records)
    rng = np.random.default_rng(7)
    covered = {"patients": 0, "records": 0}
    for k in range(150):
        pid, y, s = simulate(rng, 80)
        ranked = RankedScores(y, s)
        for unit, ids in (("patients", pid), ("records", np.arange(pid.size).astype(str))):
            auc, _ = ranked.auroc_auprc(bootstrap_weights(ids, 200, seed=k))
            lo, hi = np.nanquantile(auc, [0.025, 0.975])
            covered[unit] += lo <= true_auc <= hi
    assert covered["patients"] / 150 >= 0.88, covered
    assert covered["records"] < covered["patients"] - 15, covered


# ---------------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------------
def _delong_bruteforce(y, scores):
    """DeLong et al. (1988) structural components by their O(m n) definition."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (k, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return psi.mean(axis=(1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_delong_hanley_mcneil_1982_rating_data():
    """Hanley & McNeil (1982) Table 1: CT ratings 1-5 of 58 normal and 51 abnormal patients. Published:
    area 0.893 (Hanley & McNeil); DeLong SE 0.0307 and 95% CI 0.83295-0.95339 (Stata ``roctab``
    manual's example on this data set, DeLong variance; output values transcribed from the manual)."""
    normal = np.repeat(np.arange(1, 6), [33, 6, 6, 11, 2])
    abnormal = np.repeat(np.arange(1, 6), [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58), np.ones(51)]
    s = np.r_[normal, abnormal].astype(float)
    auc, se, lo, hi = delong_ci(y, s)
    assert auc == pytest.approx(0.8932, abs=5e-5)
    assert se == pytest.approx(0.0307, abs=5e-5)
    assert (lo, hi) == (pytest.approx(0.83295, abs=5e-6), pytest.approx(0.95339, abs=5e-6))


# DeLong, DeLong & Clarke-Pearson (1988): albumin, total protein, K-G score (10 - score) and outcome of the
# 43 patients with complete data, as printed in the SAS/STAT PROC LOGISTIC example "Comparing ROC curves".
_DELONG_1988 = """3.0 5.8 10 0 3.2 6.3 5 1 3.9 6.8 3 1 2.8 4.8 6 0 3.2 5.8 3 1 0.9 4.0 5 0 2.5 5.7 8 0 1.6 5.6 5 1
3.8 5.7 5 1 3.7 6.7 6 1 3.2 5.4 4 1 3.8 6.6 6 1 4.1 6.6 5 1 3.6 5.7 5 1 4.3 7.0 4 1 3.6 6.7 4 0 2.3 4.4 6 1
4.2 7.6 4 0 4.0 6.6 6 0 3.5 5.8 6 1 3.8 6.8 7 1 3.0 4.7 8 0 4.5 7.4 5 1 3.7 7.4 5 1 3.1 6.6 6 1 4.1 8.2 6 1
4.3 7.0 5 1 4.3 6.5 4 1 3.2 5.1 5 1 2.6 4.7 6 1 3.3 6.8 6 0 1.7 4.0 7 0 3.7 6.1 5 1 3.3 6.3 7 1 4.2 7.7 6 1
3.5 6.2 5 1 2.9 5.7 9 0 2.1 4.8 7 1 2.8 6.2 8 0 4.0 7.0 7 1 3.3 5.7 6 1 3.7 6.9 5 1 3.6 6.6 5 1"""


def test_delong_1988_ovarian_cancer_example():
    """The example of DeLong et al. (1988): Mann-Whitney areas and DeLong standard errors as in SAS's
    output for this example (alb 0.7366 / 0.0927, tp 0.6478 / 0.1000, K-G 0.7258 / 0.1028; transcribed,
    4 decimals); the fast path equals the O(m n) definition of the paper to 1e-12, the test statistic too."""
    v = np.array(_DELONG_1988.split(), dtype=float).reshape(-1, 4)
    alb, tp, kg, y = v[:, 0], v[:, 1], 10 - v[:, 2], v[:, 3]
    assert y.size == 43 and y.sum() == 31
    scores = np.vstack([alb, tp, kg])
    aucs, cov = delong_covariance(y, scores)
    np.testing.assert_allclose(aucs, [0.7366, 0.6478, 0.7258], atol=5e-5)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [0.0927, 0.1000, 0.1028], atol=5e-5)
    ref_aucs, ref_cov = _delong_bruteforce(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    t = delong_test(y, alb, tp)
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    assert t.z == pytest.approx((ref_aucs[0] - ref_aucs[1]) / math.sqrt(var), abs=1e-10)
    assert t.p_value == pytest.approx(2 * norm.sf(abs(t.z)), abs=1e-12)
    assert t.ci_low < t.difference < t.ci_high


def test_delong_agrees_with_bootstrap():
    rng = np.random.default_rng(5)
    n = 600
    y = (rng.random(n) < 0.25).astype(float)
    common = rng.normal(size=n)
    a = 1.2 * y + common + rng.normal(size=n)
    b = 0.8 * y + common + rng.normal(size=n)
    t = delong_test(y, a, b)
    w = bootstrap_weights(np.arange(n).astype(str), 2000, seed=0)
    auc_a, _ = RankedScores(y, a).auroc_auprc(w)
    auc_b, _ = RankedScores(y, b).auroc_auprc(w)
    boot_se = np.std(auc_a - auc_b, ddof=1)
    assert t.se == pytest.approx(boot_se, rel=0.15)
    assert t.difference == pytest.approx(np.median(auc_a - auc_b), abs=0.01)
    assert (t.p_value < 0.05) == (bootstrap_p_value(auc_a - auc_b) < 0.05)


# ---------------------------------------------------------------------------------------------------
# subgroups, folds
# ---------------------------------------------------------------------------------------------------
def test_subgroup_levels_and_parsing():
    age = pd.Series([30, 50, 64, 65, 74.5, 75, 90, np.nan])
    assert subgroup_levels(age, "age").tolist() == ["<50", "50-64", "50-64", "65-74", "65-74", ">=75", ">=75",
                                                    "unknown"]
    assert subgroup_levels(pd.Series([0, 1, 1, np.nan]), "pacemaker").tolist() == ["no", "yes", "yes", "unknown"]
    assert subgroup_levels(pd.Series(["F", "M", None]), "sex").tolist() == ["F", "M", "unknown"]
    assert subgroup_levels(age, "age", {"age": (60,)}).tolist()[:3] == ["<60", "<60", ">=60"]
    assert parse_subgroups("age:40/60, sex") == (["age", "sex"], {"age": (40.0, 60.0)})
    assert parse_subgroups(None)[0] == ["age", "sex", "pacemaker", "atrial_fibrillation"]


def test_fold_splits_group_patients_and_summary():
    m = pd.DataFrame({"patient_id": np.repeat([f"p{i}" for i in range(30)], 2), "label": np.repeat([0, 1] * 15, 2),
                      "fold": np.nan})
    folds, k = fold_splits(m, 3, seed=1)
    assert k == 3 and (folds >= 0).all()
    assert (m.assign(f=folds).groupby("patient_id")["f"].nunique() == 1).all()
    fm = fold_manifest(m, folds, 0, 3)
    assert set(fm.loc[folds == 0, "split"]) == {"test"} and set(fm.loc[folds == 1, "split"]) == {"val"}
    assert set(fm.loc[folds == 2, "split"]) == {"train"}
    s = summarize_folds({0: {"m": {"auroc": 0.7}}, 1: {"m": {"auroc": 0.8}}, 2: {"m": {"auroc": 0.9}}})
    assert s["m"]["auroc"]["mean"] == pytest.approx(0.8) and s["m"]["auroc"]["sd"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------
# evaluate_tables: thresholds, outputs, figures, report
# ---------------------------------------------------------------------------------------------------
def _tables(seed: int = 0, n_val: int = 400, n_test: int = 500):
    """Val and test score tables of three correlated models; patients have 1-3 records."""
    rng = np.random.default_rng(seed)

    def one(n, split, offset):
        pid = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n]
        pos_patient = rng.random(n) < 0.15
        y = pos_patient[pid].astype(float)
        common = rng.normal(size=n)
        out = {}
        for name, gain in (("ECG", 1.0), ("X-ray", 0.8), ("Multimodal", 1.6)):
            score = gain * y + common + rng.normal(size=n) - 1.5 + offset
            out[name] = pd.DataFrame({"record_id": [f"{split}{i}" for i in range(n)],
                                      "patient_id": [f"{split}P{p}" for p in pid], "label": y, "score": score,
                                      "prob": 1 / (1 + np.exp(-score))})
        return out

    val, test = one(n_val, "v", 0.0), one(n_test, "t", 0.7)  # test scores shifted: thresholds must not adapt
    manifest = pd.concat([test["ECG"][["record_id", "patient_id", "label"]],
                          val["ECG"][["record_id", "patient_id", "label"]]], ignore_index=True)
    manifest["split"] = ["test"] * n_test + ["val"] * n_val
    manifest["age"] = rng.integers(35, 95, len(manifest)).astype(float)
    manifest["sex"] = rng.choice(["F", "M"], len(manifest))
    manifest["pacemaker"] = (rng.random(len(manifest)) < 0.1).astype("int8")
    manifest["atrial_fibrillation"] = (rng.random(len(manifest)) < 0.2).astype("int8")
    return {k: (val[k], test[k]) for k in val}, manifest


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tables, manifest = _tables()
    out = tmp_path_factory.mktemp("eval")
    png = out / "explain_cxr.png"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (64, 1))).save(png)
    explanations = [{"record_id": "t3", "label": 1, "probability": 0.71, "images": {"cxr": str(png)}}]
    result = evaluate_tables(tables, out / "evaluation", manifest=manifest, n_boot=200, seed=0,
                             explanations=explanations, runs={"Multimodal": "runs/cooperative"})
    return result, tables, manifest


def test_threshold_chosen_on_validation_applied_unchanged(evaluated):
    result, tables, _ = evaluated
    pred = pd.read_csv(result.paths["predictions_csv"])
    for name, (val, test) in tables.items():
        cal = Calibrator.fit(val["score"], val["label"], "platt")
        thr = choose_threshold(val["label"], cal(val["score"]), "youden")
        got = result.models[name].threshold
        assert got.value == thr.value and got.chosen_on == "val"
        probs = cal(test["score"].to_numpy())
        np.testing.assert_allclose(pred[f"{name}:probability"], probs, atol=1e-12)
        np.testing.assert_array_equal(pred[f"{name}:positive"], (probs >= thr.value).astype(int))
        y = test["label"].to_numpy()
        expected = point_metrics(y, test["score"], probs, probs >= thr.value)
        for k in METRICS:
            assert result.models[name].metrics[k].value == pytest.approx(expected[k], abs=1e-12)
        # the test split would have chosen another threshold: nothing adapted to it
        assert choose_threshold(y, probs, "youden").value != thr.value
        saved = json.loads((result.out_dir / "models" / name / "calibration.json").read_text())
        assert saved["threshold"]["value"] == thr.value and saved["calibrator"] == cal.to_dict()
        assert saved["run"] == ("runs/cooperative" if name == "Multimodal" else None)


def test_metrics_json_and_csv(evaluated):
    result, tables, _ = evaluated
    data = json.loads((result.out_dir / "metrics.json").read_text())
    for name in tables:
        for k in METRICS:
            entry = data[name][k]
            assert {"value", "ci_low", "ci_high", "median"} <= set(entry)
            assert entry["ci_low"] <= entry["median"] <= entry["ci_high"]
    comps = data["comparisons"]
    assert set(comps) == {"Multimodal vs ECG", "Multimodal vs X-ray", "ECG vs X-ray"}
    c = comps["Multimodal vs ECG"]
    for k in METRICS:
        assert {"difference", "ci_low", "ci_high", "p_value"} <= set(c["metrics"][k])
    assert c["metrics"]["auroc"]["difference"] == pytest.approx(
        data["Multimodal"]["auroc"]["value"] - data["ECG"]["auroc"]["value"])
    assert 0 <= c["delong_auroc"]["p_value"] <= 1 and c["delong_auroc"]["z"] > 0
    assert data["settings"]["n_boot"] == 200
    csv = pd.read_csv(result.out_dir / "metrics.csv")
    assert set(csv["metric"]) >= set(METRICS) and set(csv["model"]) == set(tables)
    sub = pd.read_csv(result.out_dir / "subgroups.csv")
    assert set(sub["column"]) == {"age", "sex", "pacemaker", "atrial_fibrillation"}
    assert set(sub.loc[sub["column"] == "sex", "level"]) == {"F", "M"}
    # each subgroup's levels partition the evaluated records
    for _, part in sub[(sub["model"] == "ECG") & (sub["metric"] == "auroc")].groupby("column"):
        assert part["n"].sum() == result.settings["records"]["records"]


def test_figures_render(evaluated):
    result, _, _ = evaluated
    for key in ("roc", "pr", "calibration", "confusion", "forest"):
        path = result.paths[key]
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"), dtype=float)
        assert img.size[0] > 400 and img.size[1] > 300, key
        assert arr.std() > 10, f"{key} looks blank"
        assert (arr < 128).mean() > 0.005, f"{key} has almost nothing drawn"


def test_report_is_self_contained(evaluated):
    result, tables, _ = evaluated
    text = result.report.read_text()
    assert "http://" not in text and "https://" not in text and 'src="file' not in text
    srcs = [part.split('"', 1)[0] for part in text.split('src="')[1:]]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == 6  # roc, pr, calibration, confusion, forest + one explanation image
    for name in tables:
        assert name in text
    for header in ("AUROC", "AUPRC", "Accuracy", "Precision (PPV)", "Recall (sensitivity)", "Specificity", "F1-score"):
        assert header in text
    assert "p-value vs Multimodal" in text and "Explanations" in text and "record t3" in text
    assert "DeLong" in text and "maximum Youden index" in text


def test_input_errors(tmp_path):
    from cardiofusion.errors import ConfigError

    tables, _ = _tables(n_val=60, n_test=60)
    bad = {"ECG": (tables["ECG"][0].drop(columns=["score"]), tables["ECG"][1])}
    with pytest.raises(ConfigError, match="score"):
        evaluate_tables(bad, tmp_path / "e")
    with pytest.raises(ConfigError, match="reserved"):
        evaluate_tables({"comparisons": tables["ECG"]}, tmp_path / "e")
    swapped = tables["X-ray"][1].assign(label=1 - tables["X-ray"][1]["label"])
    with pytest.raises(ConfigError, match="labels differ"):
        evaluate_tables({"ECG": tables["ECG"], "X-ray": (tables["X-ray"][0], swapped)}, tmp_path / "e",
                        subgroups=[], n_boot=10)


# ---------------------------------------------------------------------------------------------------
# runs, command line, cross-validation
# ---------------------------------------------------------------------------------------------------
def _register_encoders():
    register_stand_in_encoders("eval_test_ecg", "eval_test_cxr")


def _train_config(cohort, fusion):
    from cardiofusion.models import ModelConfig
    from cardiofusion.transforms.preprocess import PreprocessConfig
    from cardiofusion.training import TrainConfig

    _register_encoders()
    return TrainConfig(cache_dir=str(cohort["cache"]), manifest=str(cohort["manifest"]),
                       model=ModelConfig(fusion=fusion, ecg_encoder="eval_test_ecg", cxr_encoder="eval_test_cxr"),
                       preprocess=PreprocessConfig(fs=FS, window_s=1.0, eval_stride_s=1.0, image_size=SIZE),
                       batch_size=16, lr=1e-2, max_epochs=1, num_workers=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cardiofusion.training import fit

    root = tmp_path_factory.mktemp("eval_runs")
    cohort = build_tiny_cache(root, fs=FS, duration_s=DURATION_S, image_size=SIZE, n_patients=30)
    runs = {f: fit(_train_config(cohort, f), root / f, progress=False).run_dir for f in ("ecg", "cxr", "cooperative")}
    return cohort, runs


@pytest.mark.slow
def test_cli_evaluate_end_to_end(tiny, tmp_path, capsys):
    from cardiofusion.cli import main

    _cohort, runs = tiny
    out = tmp_path / "evaluation"
    rc = main(["evaluate", str(runs["ecg"]), str(runs["cxr"]), str(runs["cooperative"]), "--name", "ECG",
               "--name", "X-ray", "--name", "Multimodal", "--out", str(out), "--bootstrap", "200",
               "--target-sensitivity", "0.9", "--calibration", "isotonic", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "report.html" in printed
    for name in ("metrics.json", "metrics.csv", "comparisons.csv", "subgroups.csv", "predictions.csv", "report.html",
                 "figures/roc.png", "figures/pr.png", "figures/calibration.png", "figures/confusion.png",
                 "figures/forest.png", "models/ECG/calibration.json", "models/Multimodal/calibration.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) == {"ECG", "X-ray", "Multimodal", "comparisons", "settings"}
    saved = json.loads((out / "models" / "Multimodal" / "calibration.json").read_text())
    assert saved["threshold"]["rule"] == "sensitivity" and saved["threshold"]["target"] == 0.9
    assert saved["calibrator"]["method"] == "isotonic"
    assert Path(saved["run"]) == Path(runs["cooperative"]).resolve()
    assert saved["threshold"]["sensitivity"] >= 0.9  # on validation, where it was chosen
    test_scores = pd.read_csv(Path(runs["ecg"]) / "scores_test.csv")
    assert data["settings"]["records"]["records"] == len(test_scores)
    html = (out / "report.html").read_text()
    assert "Echocardiography reports" in html and "Linkage" in html  # the cohort flow table (flow.json)
    assert "http://" not in html and "https://" not in html
    # a bad run folder: one-line error, exit status 2
    assert main(["evaluate", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no such run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_crossval_one_fold(tiny, tmp_path):
    from cardiofusion.cli import main

    _cohort, runs = tiny
    out = tmp_path / "cv"
    rc = main(["crossval", "--config", str(Path(runs["ecg"]) / "config.yaml"), "--out", str(out), "--folds", "3",
               "--only", "0", "--bootstrap", "50", "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "crossval.json").read_text())
    assert set(summary["summary"]["ecg"]) == set(METRICS)
    fm = pd.read_parquet(out / "fold_0" / "manifest.parquet")
    split_of = fm.groupby("patient_id")["split"].nunique()
    assert (split_of == 1).all()  # patients never cross train / val / test
    assert set(fm["split"]) == {"train", "val", "test"}
    assert (out / "fold_0" / "evaluation" / "report.html").is_file() and (out / "crossval.png").is_file()
