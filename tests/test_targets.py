"""Targets beyond AS: planted in the synthetic export, derived by the cohort build, single-modality cohorts."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from cardiofusion.cohort import CohortConfig, build_cohort
from cardiofusion.cohort.labels import CAC_BINS
from cardiofusion.errors import ConfigError
from cardiofusion.synth import SynthConfig, generate_export
from cardiofusion.synth.cxr import render_cxr
from cardiofusion.synth.ecg import beat_template
from cardiofusion.synth.patients import coronary_rng, plan_cohort


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("targets") / "export"
    generate_export(out, SynthConfig(n_patients=40, seed=4, cxr_size=64, ecg_duration_s=4, as_prevalence=0.3,
                                     n_defective_cxr=0, n_defective_ecg=0))
    return out


def test_planted_targets_follow_the_stated_rules(export: Path) -> None:
    """record_targets.csv against an independent computation from the index tables and the patients."""
    echo = pd.read_csv(export / "echo_index.csv").set_index("exam_id")
    ecg = pd.read_csv(export / "ecg_index.csv").set_index("exam_id")
    pat = pd.read_csv(export / "ground_truth" / "patients.csv").set_index("patient_id")
    t = pd.read_csv(export / "ground_truth" / "record_targets.csv")
    assert len(t) > 40
    for _, r in t.iterrows():
        e = echo.loc[r["echo_exam_id"]]
        limit = {"F": 162.0, "M": 224.0}[e["sex"]]
        assert np.isnan(r["dx_lvh"]) if np.isnan(e["lv_mass_g"]) else r["dx_lvh"] == float(e["lv_mass_g"] > limit)
        assert np.isnan(r["dx_hf"]) if np.isnan(e["lvef_pct"]) else r["dx_hf"] == float(e["lvef_pct"] < 40)
        assert r["dx_af"] == ecg.loc[r["ecg_exam_id"], "atrial_fibrillation"]
        cac = pat.loc[r["patient_id"], "cac_agatston"]
        assert r["cac_agatston"] == cac and r["cac_bin"] == int(cac >= 1) + int(cac >= 100) + int(cac >= 400)
    summary = json.loads((export / "ground_truth" / "summary.json").read_text())
    o = summary["oracle"]["targets"]
    assert set(o["multilabel"]) == {"dx_as", "dx_lvh", "dx_hf", "dx_af"}
    assert o["multilabel"]["dx_af"] > 0.9  # AF is planted plainly (irregular RR, no P waves)
    assert -1 <= o["cac"]["both"]["quadratic_kappa"] <= 1 and 0 <= o["cac"]["both"]["accuracy"] <= 1
    assert abs(sum(summary["targets"]["cac_bins_patients"].values()) - 1) < 1e-3


def test_cac_confounded_by_age_and_sex() -> None:
    plans = plan_cohort(SynthConfig(n_patients=1500, seed=1))
    p = pd.DataFrame([x.patient for x in plans])
    p = p[~p["minor"]]
    pos = p["cac_agatston"] > 0
    assert 0.35 < pos.mean() < 0.65  # about half zero in a screening-age population
    old = p["age_first_exam"] >= 65
    assert pos[old].mean() > pos[~old].mean() + 0.2
    assert pos[p["sex"] == "M"].mean() > pos[p["sex"] == "F"].mean() + 0.1
    bins = np.searchsorted(CAC_BINS, p["cac_agatston"], side="right")
    assert (p["cac_bin"] == bins).all() and set(bins) == {0, 1, 2, 3}
    # ischaemic ECG correlates rise with the score; X-ray specks only with calcium
    assert p.loc[bins == 3, "ischaemia"].mean() > p.loc[bins == 0, "ischaemia"].mean() + 0.2
    assert (p.loc[bins == 0, "n_coronary_calc"] == 0).all()
    # LV mass agrees with the planted hypertrophy (AS and hypertension raise the ECG voltage and the mass)
    hyp = p["hypertensive_lvh"] == 1
    assert p.loc[hyp, "lv_mass_patient_g"].median() > 1.3 * p.loc[~hyp & (p["as_label"] == 0), "lv_mass_patient_g"].median()
    assert p.loc[p["heart_failure_cardiomegaly"] == 1, "lvef_patient_pct"].median() < 40 < p["lvef_patient_pct"].median()


def _ecg_spec(**kw: float | str) -> dict:
    spec = {"amp_scale": 1.3, "lvh_gain_visible": 1.0, "strain_visible_mv": 0.0, "qrs_width": 1.0, "transition": 0.0,
            "t_scale": 1.0, "hr_bpm": 60.0, "af": False, "qrs_axis_deg": 45.0, "paced": False, "pr_s": 0.16,
            "v1_t": 0.02}
    spec.update(kw)
    return spec


def test_ischaemic_st_depression_in_its_territory() -> None:
    fs = 500.0
    base, r_off = beat_template(_ecg_spec(), fs)
    same, _ = beat_template(_ecg_spec(isch_territory="", isch_st_mv_visible=0.0), fs)
    np.testing.assert_array_equal(base, same)  # no ischaemia: bit-identical template
    st = 0.08
    isch, _ = beat_template(_ecg_spec(isch_territory="lateral", isch_st_mv_visible=st), fs)
    i = r_off + int(round(0.12 * fs))  # centre of the ST wave, 120 ms after R
    d = (isch - base)[:, i]  # rows: I, II, V1..V6
    # V5 / V6 carry the full depression (weight 1) times the amplitude scale; V1 / V2 none
    np.testing.assert_allclose(d[6:8], -st * 1.3, rtol=1e-9)
    np.testing.assert_allclose(d[2:4], 0.0, atol=1e-12)
    # limb leads: the frontal vector -0.6 st at 10 degrees projected on I (0) and II (60 degrees)
    np.testing.assert_allclose(d[:2], -0.6 * st * 1.3 * np.cos(np.deg2rad([10, -50])), rtol=1e-9)


def test_coronary_specks_only_change_their_boxes() -> None:
    spec = {"ctr": 0.5, "n_valve_calc": 0, "n_knob_calc": 0, "pacemaker": 0, "habitus": 0.0, "female": False,
            "view_position": "PA"}
    a, ga = render_cxr(spec, np.random.default_rng(3), 128)
    b, gb = render_cxr({**spec, "n_coronary_calc": 0}, np.random.default_rng(3), 128, coronary_rng=coronary_rng(0, 1, 1))
    np.testing.assert_array_equal(a, b)  # no calcium: the image is unchanged
    c, gc = render_cxr({**spec, "n_coronary_calc": 8}, np.random.default_rng(3), 128, coronary_rng=coronary_rng(0, 1, 1))
    assert gc["n_coronary_calc_visible"] == len(gc["coronary_bboxes"]) >= 3
    diff = np.abs(c.astype(float) - a.astype(float))
    inside = np.zeros_like(diff, dtype=bool)
    for x0, y0, x1, y1 in gc["coronary_bboxes"]:
        inside[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True  # blur spreads a speck by ~2 px
    assert diff[inside].sum() > 0.95 * diff.sum() > 0
    hx0, hy0, hx1, hy1 = gc["heart_bbox"]
    for x0, y0, x1, y1 in gc["coronary_bboxes"]:  # near the heart border
        assert hx0 - 6 <= (x0 + x1) / 2 <= hx1 + 6 and hy0 - 6 <= (y0 + y1) / 2 <= hy1 + 6


def test_cohort_manifest_targets_match_ground_truth(export: Path, tmp_path: Path) -> None:
    cfg = CohortConfig(targets={"ef": {"table": "echo", "column": "lvef_pct"},
                                "htn": {"table": "ground_truth", "column": "hypertensive_lvh"}})
    m = build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", tmp_path / "c",
                     cfg).manifest.to_pandas()
    t = pd.read_csv(export / "ground_truth" / "record_targets.csv")
    j = m.merge(t, on=["ecg_exam_id", "cxr_exam_id", "echo_exam_id"], suffixes=("", "_truth"))
    # every record of the generator's linkage is in the manifest (the cohort's calendar-date windows may add one)
    assert len(j) == len(t) and len(m) - len(t) <= 2
    for c in ("dx_as", "dx_lvh", "dx_hf", "dx_af", "cac_agatston", "lv_mass_g", "lvef_pct"):
        np.testing.assert_array_equal(j[c].astype(float).to_numpy(), j[f"{c}_truth"].astype(float).to_numpy(), err_msg=c)
    assert (j["as_severity"].eq("none") == j["label"].eq(0)).all()
    np.testing.assert_array_equal(j["ef"].to_numpy(float), j["lvef_pct"].to_numpy(float))
    pat = pd.read_csv(export / "ground_truth" / "patients.csv").set_index("patient_id")
    assert (j["htn"] == j["patient_id"].map(pat["hypertensive_lvh"])).all()
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert CohortConfig.from_dict(saved) == cfg and saved["inputs"]["ground_truth"].endswith("patients.csv")


def _tiny_tables(tmp_path: Path, extra: str) -> tuple[Path, Path, Path]:
    (tmp_path / "ecg.csv").write_text("patient_id,exam_id,exam_datetime,path\nP1,E1,2020-01-01,e1.csv\n"
                                      "P2,E2,2020-01-01,e2.csv\nP3,E3,2020-01-01,e3.csv\n")
    (tmp_path / "cxr.csv").write_text("patient_id,exam_id,exam_datetime,path\nP1,X1,2020-01-02,x1.dcm\n"
                                      "P2,X2,2020-01-02,x2.dcm\nP3,X3,2020-01-02,x3.dcm\n")
    (tmp_path / "echo.csv").write_text(
        "patient_id,exam_id,exam_datetime,peak_velocity_m_s,mean_gradient_mmhg,ava_cm2,age,sex,lv_mass_g,score\n"
        f"P1,U1,2020-01-03,3.1,25,1.1,70,F,170,{extra}\nP2,U2,2020-01-03,1.2,5,3.0,60,M,170,2.5\n"
        "P3,U3,2020-01-03,1.2,5,3.0,60,M,0.2 kg,1.5\n")
    return tmp_path / "ecg.csv", tmp_path / "cxr.csv", tmp_path / "echo.csv"


def test_config_targets_follow_value_rules(tmp_path: Path) -> None:
    e, x, u = _tiny_tables(tmp_path, "abc")
    cfg = CohortConfig(targets={"my_score": {"table": "echo", "column": "score", "range": [0, 10]}})
    res = build_cohort(e, x, u, None, cfg)
    m = res.manifest.sort("patient_id")
    assert m["patient_id"].to_list() == ["P2", "P3"]  # P1's unparseable score excludes it, with the reason
    ex = res.exclusions.filter(pl.col("table") == "echo")
    assert ex["reason"].to_list() == ["unparseable score"] and ex["raw_value"].to_list() == ["abc"]
    assert m["my_score"].to_list() == [2.5, 1.5]
    assert m["lv_mass_g"].to_list() == [170.0, 200.0]  # "0.2 kg" read in grams
    assert m["dx_lvh"].to_list() == [0, 0] and m["dx_as"].to_list() == [0, 0]
    assert m["dx_hf"].null_count() == 2 and m["dx_af"].null_count() == 2  # no LVEF, no AF column: unknown
    # male limit 224 g: a woman with 170 g has LVH
    e, x, u = _tiny_tables(tmp_path, "1.0")
    m = build_cohort(e, x, u, None, cfg).manifest.sort("patient_id")
    assert m["dx_lvh"].to_list() == [1, 0, 0] and m["as_severity"].to_list() == ["moderate", "none", "none"]


def test_config_target_errors(tmp_path: Path) -> None:
    e, x, u = _tiny_tables(tmp_path, "1.0")
    with pytest.raises(ConfigError, match=r"echo\.csv: targets\.t: no column 'nope' in the echo index"):
        build_cohort(e, x, u, None, CohortConfig(targets={"t": {"table": "echo", "column": "nope"}}))
    with pytest.raises(ConfigError, match="no ground-truth table"):
        build_cohort(e, x, u, None, CohortConfig(targets={"t": {"table": "ground_truth", "column": "x"}}))
    with pytest.raises(ConfigError, match="core manifest column"):
        build_cohort(e, x, u, None, CohortConfig(targets={"label": {"table": "echo", "column": "score"}}))
    with pytest.raises(ConfigError, match="unknown field"):
        CohortConfig(targets={"t": {"table": "echo", "column": "score", "colour": 1}})
    with pytest.raises(ConfigError, match="table must be one of"):
        CohortConfig(targets={"t": {"table": "lab", "column": "score"}})


# ---------------------------------------------------------------- single-modality cohorts from public data
def _ptbxl_reference(root: Path, min_likelihood: float) -> pd.DataFrame:
    """Superclasses and LVH straight from ptbxl_database.csv + scp_statements.csv (independent of the adapter)."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    st = pd.read_csv(root / "scp_statements.csv", index_col=0)
    cls = st.loc[st["diagnostic"] == 1, "diagnostic_class"].to_dict()
    rows = []
    for r in db.itertuples():
        codes = ast.literal_eval(r.scp_codes)
        strong = {cls[c] for c, v in codes.items() if v >= min_likelihood and c in cls}
        row = {"exam_id": str(r.ecg_id), "patient_id": str(int(r.patient_id)), "strat_fold": r.strat_fold,
               "lvh": float(codes.get("LVH", -1) >= min_likelihood)}
        for k in ("NORM", "MI", "STTC", "CD", "HYP"):
            row[k] = (float(k in strong) if strong else np.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("exam_id")


def test_from_adapter_ptbxl(shared_data: Path, tmp_path: Path) -> None:
    from cardiofusion.cli import main

    root = shared_data / "ptbxl"
    ad = tmp_path / "ptbxl"
    assert main(["adapt", "ptbxl", str(root), "--out", str(ad), "--sampling-rate", "100", "--min-likelihood", "0",
                 "--fold-map", "train=1-8"]) == 0
    assert main(["cohort", "from-adapter", str(ad), "--task", "ptbxl_superclass", "--val-folds", "7",
                 "--test-folds", "8", "--out", str(tmp_path / "sc")]) == 0
    m = pd.read_parquet(tmp_path / "sc" / "manifest.parquet").set_index("record_id")
    ref = _ptbxl_reference(root, 0.0)
    assert sorted(m.index) == sorted(ref.index)  # every record of folds 1-8
    for k in ("NORM", "MI", "STTC", "CD", "HYP"):
        np.testing.assert_array_equal(m[k].to_numpy(float), ref.loc[m.index, k].to_numpy(float), err_msg=k)
    fold = ref.loc[m.index, "strat_fold"]
    assert (m["split"] == np.where(fold == 8, "test", np.where(fold == 7, "val", "train"))).all()
    assert m.groupby("patient_id")["split"].nunique().max() == 1
    assert (m["modality"] == "ecg").all() and m["cxr_exam_id"].isna().all() and m["ecg_path"].str.endswith(".hea").all()
    info = json.loads((tmp_path / "sc" / "config.json").read_text())
    assert info["modalities"] == ["ecg"] and "likelihood >= 0" in info["superclass_rule"]

    assert main(["cohort", "from-adapter", str(ad), "--task", "ptbxl_lvh", "--val-folds", "6", "--test-folds", "7", "8",
                 "--out", str(tmp_path / "lvh")]) == 0
    lvh = pd.read_parquet(tmp_path / "lvh" / "manifest.parquet").set_index("record_id")
    np.testing.assert_array_equal(lvh["lvh"].to_numpy(float), ref.loc[lvh.index, "lvh"].to_numpy(float))
    with pytest.raises(ConfigError, match="both --val-folds and --test-folds"):
        from cardiofusion.adapters.single_modality import single_modality_cohort

        single_modality_cohort(ad, ["lvh"], val_folds=[7], test_folds=[7])
    with pytest.raises(ConfigError, match="cardiomegaly"):
        single_modality_cohort(ad, ["cardiomegaly"])


def test_from_adapter_nih_and_one_modality_cache(shared_data: Path, tmp_path: Path) -> None:
    from cardiofusion.adapters import adapt_nih
    from cardiofusion.adapters.single_modality import single_modality_cohort
    from cardiofusion.cache import CacheConfig, build_cache, open_cache

    adapt_nih(shared_data / "nih-cardiomegaly-128").write(tmp_path / "nih")
    res = single_modality_cohort(tmp_path / "nih", ["cardiomegaly"], tmp_path / "c", seed=1)
    m = res.manifest
    assert len(m) == 4438 and (m["modality"] == "cxr").all() and m["ecg_exam_id"].isna().all()
    truth = m["cxr_path"].str.contains("/cardiomegaly/").astype(float)  # the folder is the label
    np.testing.assert_array_equal(m["cardiomegaly"].to_numpy(float), truth.to_numpy())
    assert res.info["split_unit"] == "image" and m.groupby("patient_id")["split"].nunique().max() == 1
    n = m["split"].value_counts()
    assert abs(n["train"] / len(m) - 0.7) < 0.01 and abs(n["test"] / len(m) - 0.15) < 0.01
    # one-modality cache on a few images
    small = m.groupby("split").head(3)
    rep = build_cache(small, tmp_path / "cache", CacheConfig(image_size=64), workers=1, progress=False)
    assert rep.counts["cxr"]["ok"] == 9 and rep.counts["ecg"]["total"] == 0
    cache = open_cache(tmp_path / "cache")
    rec = cache.records(small)
    assert len(rec) == 9 and (rec["ecg_row"] == -1).all() and (rec["cxr_row"] >= 0).all()
    assert len(cache.excluded(small)) == 0 and cache.meta["modalities"] == ["cxr"]
    assert cache.cxr_at(int(rec["cxr_row"].iloc[0])).shape == (64, 64)
