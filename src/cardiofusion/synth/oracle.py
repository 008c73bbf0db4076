"""How much AS signal the generator planted: AUROC of an oracle that sees the planted sign values.

The oracle links exams exactly as the paper does (adults; for each echo the closest X-ray within
+-90 days; for each linked X-ray every ECG within +-7 days), then fits a logistic regression on the
planted per-exam sign variables (ECG: visible LVH gain, visible strain, paced, AF; X-ray: CTR, visible
valve and knob calcifications, AP view, pacemaker) with patient-grouped 5-fold cross-validation.  The
resulting AUROCs are a ceiling for what a model can learn from the pixels and samples of this export.

The other targets (:func:`record_targets`, :func:`oracle_targets`) get the same treatment with the new planted
signs added (ECG: visible ST depression, T flattening, Q wave; X-ray: visible coronary specks): per-label AUROC
of the multi-label set (AS, LVH, HF, AF) and, for the four CAC-DRS bins, accuracy and quadratic-weighted
kappa of a multinomial logistic regression (scikit-learn), all patient-grouped 5-fold cross-validated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..cohort.labels import CAC_BINS, HF_LVEF_PCT, LVH_MASS_G, as_label

ECG_FEATURES = ("log_lvh_gain_visible", "strain_visible_mv", "paced", "atrial_fibrillation")
CXR_FEATURES = ("ctr", "n_valve_calc_visible", "n_knob_calc_visible", "view_ap", "pacemaker")


def link_records(ecg: pd.DataFrame, cxr: pd.DataFrame, echo: pd.DataFrame, *, min_age: float = 18,
                 cxr_within_days: float = 90, ecg_within_days: float = 7) -> pd.DataFrame:
    """(ECG, X-ray, echo) links of the paper's rule, from index tables with the default columns."""
    e = echo[["patient_id", "exam_id", "exam_datetime", "age"]].copy()
    e = e[pd.to_numeric(e["age"], errors="coerce") >= min_age]
    e["echo_dt"] = pd.to_datetime(e["exam_datetime"])
    c = cxr[["patient_id", "exam_id", "exam_datetime"]].rename(columns={"exam_id": "cxr_exam_id"})
    c["cxr_dt"] = pd.to_datetime(c["exam_datetime"])
    m = e.rename(columns={"exam_id": "echo_exam_id"}).drop(columns="exam_datetime").merge(
        c.drop(columns="exam_datetime"), on="patient_id")
    m["gap"] = (m["cxr_dt"] - m["echo_dt"]).dt.total_seconds().abs() / 86400
    m = m[m["gap"] <= cxr_within_days].sort_values(["echo_exam_id", "gap", "cxr_exam_id"])
    m = m.drop_duplicates("echo_exam_id", keep="first")
    g = ecg[["patient_id", "exam_id", "exam_datetime"]].rename(columns={"exam_id": "ecg_exam_id"})
    g["ecg_dt"] = pd.to_datetime(g["exam_datetime"])
    r = m.merge(g.drop(columns="exam_datetime"), on="patient_id")
    r = r[(r["ecg_dt"] - r["cxr_dt"]).dt.total_seconds().abs() / 86400 <= ecg_within_days]
    r = r.merge(echo[["exam_id", "peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2"]]
                .rename(columns={"exam_id": "echo_exam_id"}), on="echo_exam_id")
    r["label"] = as_label(r)  # the cohort's rule; an undeterminable echo is excluded, as the cohort builder does
    r = r[r["label"].notna()].astype({"label": int})
    cols = ["patient_id", "ecg_exam_id", "cxr_exam_id", "echo_exam_id", "label"]
    return r[cols].sort_values(["patient_id", "echo_exam_id", "ecg_exam_id"]).reset_index(drop=True)


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton steps; returns weights incl. intercept."""
    Xb = np.hstack([np.ones((len(X), 1)), X])  # (n, d+1)
    w = np.zeros(Xb.shape[1])
    pen = l2 * np.eye(Xb.shape[1])
    pen[0, 0] = 0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Xb @ w, -30, 30)))
        grad = Xb.T @ (p - y) + pen @ w
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb + pen
        step = np.linalg.solve(H + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _cv_scores(X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    uniq = np.unique(groups)
    fold_of = dict(zip(uniq, np.random.default_rng(seed).permutation(len(uniq)) % n_folds))
    folds = np.array([fold_of[g] for g in groups])
    out = np.zeros(len(y))
    for f in range(n_folds):
        te = folds == f
        tr = ~te
        if te.sum() == 0 or y[tr].min() == y[tr].max():
            out[te] = 0.0
            continue
        out[te] = _fit_score(X[tr], y[tr], X[te])
    return out


def _fit_score(X_train: np.ndarray, y_train: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Logistic regression on standardised ``X_train``; the linear scores of ``X``."""
    mu, sd = X_train.mean(0), X_train.std(0) + 1e-9
    w = _fit_logistic((X_train - mu) / sd, y_train.astype(float))
    return np.hstack([np.ones((len(X), 1)), (X - mu) / sd]) @ w


def oracle_features(records: pd.DataFrame, ecg_truth: pd.DataFrame, cxr_truth: pd.DataFrame) -> pd.DataFrame:
    """Records joined with the planted ECG and X-ray sign variables (ground-truth tables)."""
    eg = ecg_truth.rename(columns={"exam_id": "ecg_exam_id"})
    eg = eg.assign(log_lvh_gain_visible=np.log(eg["lvh_gain_visible"]),
                   atrial_fibrillation=eg["atrial_fibrillation"].astype(int), paced=eg["paced"].astype(int))
    cg = cxr_truth.rename(columns={"exam_id": "cxr_exam_id"})
    cg = cg.assign(view_ap=(cg["view_position"] == "AP").astype(int), pacemaker=cg["pacemaker"].astype(int))
    r = records.merge(eg[["ecg_exam_id", *ECG_FEATURES]], on="ecg_exam_id")
    return r.merge(cg[["cxr_exam_id", *CXR_FEATURES]], on="cxr_exam_id")


def oracle_auroc(records: pd.DataFrame, ecg_truth: pd.DataFrame, cxr_truth: pd.DataFrame, *,
                 n_folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Cross-validated AUROC of the planted-sign oracle for ECG only, X-ray only and both.

    Returns ``{"ecg", "cxr", "both"}`` AUROCs (NaN when a class is missing) plus ``n_records``,
    ``n_positive`` and the feature names.
    """
    df = oracle_features(records, ecg_truth, cxr_truth)
    y = df["label"].to_numpy().astype(int)
    groups = df["patient_id"].to_numpy()
    res: dict[str, Any] = {"n_records": int(len(df)), "n_positive": int(y.sum())}
    for name, feats in (("ecg", ECG_FEATURES), ("cxr", CXR_FEATURES), ("both", ECG_FEATURES + CXR_FEATURES)):
        if len(df) == 0 or y.min() == y.max() or len(np.unique(groups)) < n_folds:
            res[name] = float("nan")
            continue
        X = df[list(feats)].to_numpy(dtype=float)
        res[name] = round(auroc(y, _cv_scores(X, y, groups, n_folds, seed)), 4)
    res["features"] = {"ecg": list(ECG_FEATURES), "cxr": list(CXR_FEATURES)}
    return res


def oracle_scores(records: pd.DataFrame, ecg_truth: pd.DataFrame, cxr_truth: pd.DataFrame, *,
                  fit_split: str = "train") -> pd.DataFrame:
    """The planted-sign oracle as three models to evaluate beside trained ones: logistic regressions on the ECG
    signs, the X-ray signs and both (the features of :func:`oracle_auroc`), fitted on the records of ``fit_split``.

    Args:
        records: cohort records with ``record_id, patient_id, split, label, ecg_exam_id, cxr_exam_id``.
        ecg_truth / cxr_truth: the export's ``ground_truth/ecg_exams.csv`` / ``cxr_exams.csv``.
        fit_split: the split the oracle is fitted on (the models' training split).

    Returns:
        ``record_id, patient_id, split, label, ecg, cxr, both`` (linear scores) for every record whose exams are in
        the ground truth.
    """
    df = oracle_features(records, ecg_truth, cxr_truth).reset_index(drop=True)
    fit = (df["split"] == fit_split).to_numpy()
    y = df["label"].to_numpy().astype(int)
    if not fit.any() or y[fit].min() == y[fit].max():
        raise ValueError(f"the oracle needs cases and controls in the {fit_split!r} split")
    out = df[["record_id", "patient_id", "split", "label"]].copy()
    for name, feats in (("ecg", ECG_FEATURES), ("cxr", CXR_FEATURES), ("both", ECG_FEATURES + CXR_FEATURES)):
        X = df[list(feats)].to_numpy(dtype=float)
        out[name] = _fit_score(X[fit], y[fit], X)
    return out


#: per-record target columns of ``ground_truth/record_targets.csv`` (besides the record keys)
TARGET_COLUMNS = ("cac_agatston", "cac_bin", "lv_mass_g", "lvef_pct", "sex", "dx_as", "dx_lvh", "dx_hf", "dx_af")
TARGET_ECG_FEATURES = ECG_FEATURES + ("isch_st_mv_visible", "isch_t_flat_visible", "isch_q_mv_visible")
TARGET_CXR_FEATURES = CXR_FEATURES + ("n_coronary_calc_visible",)
MULTILABEL_TARGETS = ("dx_as", "dx_lvh", "dx_hf", "dx_af")


def record_targets(records: pd.DataFrame, ecg: pd.DataFrame, echo: pd.DataFrame,
                   patients: pd.DataFrame) -> pd.DataFrame:
    """Linked records with the true value of every target: the linked echo's LVEF and LV mass, the patient's
    coronary calcium, and the diagnoses by the cohort's rules (``cardiofusion.cohort.labels``: LVH = LV mass
    above 224 g (male) / 162 g (female), HF = LVEF < 40%, AF from the ECG; NaN when the measurement is missing).
    """
    e = echo[["exam_id", "lvef_pct", "lv_mass_g", "sex"]].rename(columns={"exam_id": "echo_exam_id"})
    g = ecg[["exam_id", "atrial_fibrillation"]].rename(columns={"exam_id": "ecg_exam_id"})
    pt = patients[["patient_id", "cac_agatston"]]
    r = records.merge(e, on="echo_exam_id", how="left").merge(g, on="ecg_exam_id", how="left")
    r = r.merge(pt, on="patient_id", how="left")
    r["cac_bin"] = np.searchsorted(CAC_BINS, r["cac_agatston"].to_numpy(float), side="right")
    limit = r["sex"].map(LVH_MASS_G)
    mass, lvef = r["lv_mass_g"].astype(float), r["lvef_pct"].astype(float)
    r["dx_as"] = r["label"].astype(float)
    r["dx_lvh"] = np.where(mass.isna() | limit.isna(), np.nan, (mass > limit).astype(float))
    r["dx_hf"] = np.where(lvef.isna(), np.nan, (lvef < HF_LVEF_PCT).astype(float))
    r["dx_af"] = r["atrial_fibrillation"].astype(float)
    return r[["patient_id", "ecg_exam_id", "cxr_exam_id", "echo_exam_id", *TARGET_COLUMNS]]


def oracle_targets(targets: pd.DataFrame, ecg_truth: pd.DataFrame, cxr_truth: pd.DataFrame, *,
                   n_folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Oracle metrics of the other targets from the planted ECG + X-ray evidence (see the module docstring).

    Returns ``{"multilabel": {label: AUROC}, "cac": {"ecg"|"cxr"|"both": {"accuracy", "quadratic_kappa"}},
    "n_records", "prevalence": {label: fraction of records}, "cac_bins": fraction of records per bin}``;
    NaN where a class is missing or there are fewer than ``n_folds`` patients.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, cohen_kappa_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    eg = ecg_truth.rename(columns={"exam_id": "ecg_exam_id"})
    eg = eg.assign(log_lvh_gain_visible=np.log(eg["lvh_gain_visible"]),
                   atrial_fibrillation=eg["atrial_fibrillation"].astype(int), paced=eg["paced"].astype(int))
    cg = cxr_truth.rename(columns={"exam_id": "cxr_exam_id"})
    cg = cg.assign(view_ap=(cg["view_position"] == "AP").astype(int), pacemaker=cg["pacemaker"].astype(int))
    df = targets.merge(eg[["ecg_exam_id", *TARGET_ECG_FEATURES]], on="ecg_exam_id")
    df = df.merge(cg[["cxr_exam_id", *TARGET_CXR_FEATURES]], on="cxr_exam_id")
    groups = df["patient_id"].to_numpy()
    enough = len(np.unique(groups)) >= n_folds
    both = TARGET_ECG_FEATURES + TARGET_CXR_FEATURES
    res: dict[str, Any] = {"n_records": int(len(df)), "multilabel": {}, "cac": {},
                           "prevalence": {k: round(float(df[k].mean()), 4) for k in MULTILABEL_TARGETS},
                           "cac_bins": [round(float((df["cac_bin"] == k).mean()), 4) for k in range(4)]}
    for name in MULTILABEL_TARGETS:
        known = df[name].notna().to_numpy()
        y = df.loc[known, name].to_numpy().astype(int)
        if not enough or len(y) == 0 or y.min() == y.max():
            res["multilabel"][name] = float("nan")
            continue
        X = df.loc[known, list(both)].to_numpy(dtype=float)
        res["multilabel"][name] = round(auroc(y, _cv_scores(X, y, groups[known], n_folds, seed)), 4)
    y = df["cac_bin"].to_numpy().astype(int)
    for name, feats in (("ecg", TARGET_ECG_FEATURES), ("cxr", TARGET_CXR_FEATURES), ("both", both)):
        if not enough or len(np.unique(y)) < 2:
            res["cac"][name] = {"accuracy": float("nan"), "quadratic_kappa": float("nan")}
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
        pred = cross_val_predict(model, df[list(feats)].to_numpy(dtype=float), y, groups=groups,
                                 cv=GroupKFold(n_splits=n_folds))
        res["cac"][name] = {"accuracy": round(float(accuracy_score(y, pred)), 4),
                            "quadratic_kappa": round(float(cohen_kappa_score(y, pred, weights="quadratic")), 4)}
    res["features"] = {"ecg": list(TARGET_ECG_FEATURES), "cxr": list(TARGET_CXR_FEATURES)}
    return res
