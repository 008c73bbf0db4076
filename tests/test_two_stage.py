"""The two-stage reference recipe (issue 18): stage-1 data disjoint from the paired test split, Ding et al.'s
alternating cooperative fit against its closed form, the ideal-combiner ceiling against the pool-label ceiling,
the recipe end to end on a tiny synthetic export, and quiet training output."""

from __future__ import annotations

from conftest import build_tiny_cache, register_stand_in_encoders

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from cardiofusion.errors import ConfigError

FS, IMAGE = 50.0, 32


# ------------------------------------------------------------------------------------------------
# library parts
# ------------------------------------------------------------------------------------------------
def _standardise(A):
    s = A.std(0)
    return (A - A.mean(0)) / np.where(s > 1e-12, s, 1)


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0, 3.0])
def test_alternating_fit_is_the_augmented_ridge_solution(rho):
    from cardiofusion.training.alternating import fit_alternating

    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(60, 5)), rng.normal(size=(60, 3)) * [1, 5, 0.2]
    y = (X[:, 0] + Z[:, 1] / 5 + rng.normal(size=60) > 0).astype(float)
    alpha = 2.0
    fit = fit_alternating(X, Z, y, rho=rho, alpha=alpha, max_iter=5000, tol=1e-12)
    assert fit.converged
    # closed form: ridge (no intercept) on [[X, Z], [-sqrt(rho) X, sqrt(rho) Z]] with targets [y - mean; 0]
    Xs, Zs = _standardise(X), _standardise(Z)
    A = np.block([[Xs, Zs], [-np.sqrt(rho) * Xs, np.sqrt(rho) * Zs]])
    t = np.r_[y - y.mean(), np.zeros(60)]
    ref = Ridge(alpha=alpha, fit_intercept=False, solver="svd").fit(A, t)
    assert np.allclose(np.r_[fit.coef_x, fit.coef_z], ref.coef_, atol=1e-6)
    assert np.allclose(fit.predict(X, Z), np.c_[Xs, Zs] @ ref.coef_ + y.mean(), atol=1e-6)
    if rho == 1.0:  # late fusion: each view fitted alone to y / 2
        alone = Ridge(alpha=alpha / 2, fit_intercept=False, solver="svd").fit(Xs, (y - y.mean()) / 2)
        assert np.allclose(fit.coef_x, alone.coef_, atol=1e-8)
    with pytest.raises(ConfigError, match="rho must be >= 0"):
        fit_alternating(X, Z, y, rho=-1)


def test_ideal_combiner_matches_the_pool_label_ceilings():
    from cardiofusion.adapters.pseudo_paired import PairingConfig, oracle_auroc
    from cardiofusion.adapters.stage_data import binormal_d, ideal_combiner_auroc

    cfg = PairingConfig(sens_ecg=0.8, spec_ecg=0.8, sens_cxr=0.7, spec_cxr=0.9)
    oracle = oracle_auroc(cfg)
    kw = {"sens_ecg": 0.8, "spec_ecg": 0.8, "sens_cxr": 0.7, "spec_cxr": 0.9, "n": 200_000}
    perfect = 1 - 1e-12
    assert ideal_combiner_auroc(perfect, perfect, **kw) == pytest.approx(oracle["both_labels"], abs=3e-3)
    assert ideal_combiner_auroc(perfect, None, **kw) == pytest.approx(oracle["ecg_label_only"], abs=3e-3)
    assert ideal_combiner_auroc(None, perfect, **kw) == pytest.approx(oracle["cxr_label_only"], abs=3e-3)
    assert ideal_combiner_auroc(0.5, 0.5, **kw) == pytest.approx(0.5, abs=3e-3)
    # a perfect pooled label (se = sp = 1): the combiner is the branch itself, AUROC = the branch's
    one = {"sens_ecg": 1.0, "spec_ecg": 1.0, "sens_cxr": 0.5, "spec_cxr": 0.5, "n": 200_000}
    assert ideal_combiner_auroc(0.8, 0.9, **one) == pytest.approx(0.8, abs=3e-3)
    assert binormal_d(0.5) == pytest.approx(0.0) and binormal_d(0.76) == pytest.approx(0.9989, abs=1e-3)
    below = ideal_combiner_auroc(0.8, 0.84, **kw)
    assert below < oracle["both_labels"] and below > ideal_combiner_auroc(0.8, None, **kw)


# ------------------------------------------------------------------------------------------------
# the recipe on a tiny synthetic export
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    register_stand_in_encoders("two_stage_test_ecg", "two_stage_test_cxr")
    return build_tiny_cache(tmp_path_factory.mktemp("two_stage"), fs=FS, duration_s=4, image_size=IMAGE,
                            n_patients=30)


def test_branch_cohort_drops_paired_test_files_and_check_disjoint_catches_a_leak(tiny, tmp_path):
    from cardiofusion.adapters.stage_data import branch_cohort, check_disjoint

    paired = pd.read_parquet(tiny["manifest"])
    # a "single-modality cohort" whose train split holds every X-ray, the paired test ones included
    leaky = paired[paired["cxr_path"].notna()].assign(split="train")
    leaky.loc[leaky.index[:4], "split"] = "val"
    leaky.loc[leaky["label"].eq(1).idxmax(), "split"] = "val"
    leaky.to_parquet(tmp_path / "leaky.parquet")
    with pytest.raises(ConfigError, match="test split"):
        check_disjoint(tiny["manifest"], {"leaky": tmp_path / "leaky.parquet"})
    try:
        bc = branch_cohort(tiny["manifest"], "cxr", tmp_path / "cxr", source=str(tmp_path / "leaky.parquet"))
    except ConfigError as e:  # the tiny cohort may leave one class out of the cleaned val split
        assert "both classes" in str(e)
        return
    test_files = set(paired.loc[paired["split"] == "test", "cxr_path"].dropna())
    fit_rows = bc.manifest[bc.manifest["split"].isin(["train", "val"])]
    assert not (set(fit_rows["cxr_path"]) & test_files)
    assert bc.info["dropped_as_in_paired_val_or_test"]["train"] >= len(test_files & set(leaky["cxr_path"])) - 5
    check_disjoint(tiny["manifest"], {"cleaned": bc.manifest_path})  # no error


def test_two_stage_recipe_end_to_end(tiny, tmp_path):
    from cardiofusion.recipes import get_recipe

    recipe = get_recipe("two-stage")
    config = recipe.config_cls.from_dict({
        "cohort": str(tiny["manifest"]), "fs": FS, "duration_s": 4, "window_s": 2, "image_size": IMAGE,
        "ecg_encoder": "two_stage_test_ecg", "cxr_encoder": "two_stage_test_cxr", "cxr_weights": None,
        "max_epochs": 1, "branch_max_epochs": 2, "rhos": [0.0, 1.0], "modes": ["frozen", "finetune"],
        "fusions": ["late", "cooperative"],
        "batch_size": 8, "ecg_lr": 1e-2, "cxr_lr": 1e-2, "fusion_lr": 1e-2, "n_boot": 30, "criteria": False,
        "alternating_rhos": [0.0, 1.0], "alternating_alphas": [10.0]})
    lines: list[str] = []
    info = recipe.run(config, tmp_path / "out", log=lines.append)
    out = tmp_path / "out"
    saved = json.loads((out / "two_stage.json").read_text())
    assert saved["models"] == json.loads(json.dumps(info["models"]))

    # stage 1 saw the paired cohort's own records of one modality (source "cohort"), never its test split
    paired = pd.read_parquet(tiny["manifest"])
    test_ids = set(paired.loc[paired["split"] == "test", "record_id"].astype(str))
    for m in ("ecg", "cxr"):
        s1 = pd.read_parquet(out / "stage1" / m / "cohort" / "manifest.parquet")
        assert set(s1["modality"]) == {m} and s1[f"{'cxr' if m == 'ecg' else 'ecg'}_path"].isna().all()
        assert not (set(s1.loc[s1["split"].isin(["train", "val"]), "record_id"]) & test_ids)
        assert info["data"]["stage1"][m]["records"]["train"]["records"] == int((s1["split"] == "train").sum())
        cfg = (out / "stage1" / m / "run" / "config.yaml").read_text()
        assert f"fusion: {m}" in cfg and "max_epochs: 2" in cfg
        assert info["data"]["test_disjoint"][f"stage 1 {m}"][m]["overlap"] == 0

    # stage 2: every (fusion, mode, rho) run warm-started from the stage-1 runs; the chosen one validates best
    assert set(info["stage2"]) == {"late", "cooperative"}
    assert len(info["stage2"]["cooperative"]["runs"]) == 4
    for res in info["stage2"].values():
        best = max(v["val_auroc"] for v in res["runs"].values())
        assert res["runs"][res["chosen"]]["val_auroc"] == best
        for key, run in res["runs"].items():
            cfg = (out / "stage2" / key / "config.yaml").read_text()
            assert str((out / "stage1" / "ecg" / "run").resolve()) in cfg
            assert ("freeze_encoders_epochs: 1" in cfg) == (run["mode"] == "frozen")
    # the alternating fit: chosen on validation; the kept cooperative is the better-validating one
    alt = info["alternating"]
    assert alt["chosen"]["val_auroc"] == max(g["val_auroc"] for g in alt["grid"])
    coop = {n: r["val_auroc"] for n, r in ((r["model"], r) for r in info["models"]) if n.startswith("Cooperative")}
    assert info["cooperative_kept"] == max(coop, key=coop.get)

    # the evaluation: AUROCs equal scikit-learn's on the test predictions; differences vs the best single modality
    pred = pd.read_csv(out / "evaluation" / "predictions.csv", dtype={"record_id": str})
    assert set(pred["record_id"]) <= test_ids
    names = [r["model"] for r in info["models"]]
    assert names == ["ECG only", "X-ray only", "Late fusion", "Cooperative (joint)",
                     "Cooperative (alternating)", "Oracle (planted ECG signs)", "Oracle (planted X-ray signs)",
                     "Oracle (planted signs, both)"]
    ref = info["best_single_modality"]
    for r in info["models"]:
        y, s = pred["label"].to_numpy(), pred[f"{r['model']}:score"].to_numpy()
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        if r["model"] != ref:
            d = r["difference_vs_best_single"]
            ref_auc = roc_auc_score(y, pred[f"{ref}:score"].to_numpy())
            assert d["difference"] == pytest.approx(r["auroc"] - ref_auc, abs=1e-12)
            assert d["ci_low"] <= d["ci_high"]
    assert (out / "table.md").read_text().startswith("### Two-stage reference method")
    # the planted-sign oracle: a logistic regression on the export's ground truth fitted on the train split
    # (scikit-learn's, same L2 penalty), and the kept cooperative model's paired differences against every model
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from cardiofusion.synth.oracle import CXR_FEATURES, ECG_FEATURES, oracle_features

    gt = tiny["root"] / "export" / "ground_truth"
    keys = ["record_id", "split", "label", "ecg_exam_id", "cxr_exam_id"]
    feats = oracle_features(paired[keys].astype({"ecg_exam_id": str, "cxr_exam_id": str}),
                            pd.read_csv(gt / "ecg_exams.csv", dtype={"exam_id": str}),
                            pd.read_csv(gt / "cxr_exams.csv", dtype={"exam_id": str}))
    train, test = feats[feats["split"] == "train"], feats[feats["split"] == "test"]
    cols = list(ECG_FEATURES + CXR_FEATURES)
    scaler = StandardScaler().fit(train[cols])
    lr = LogisticRegression(C=100.0, max_iter=10000, tol=1e-10).fit(scaler.transform(train[cols]), train["label"])
    test = test.assign(ref=lr.decision_function(scaler.transform(test[cols]))).set_index("record_id")
    row = next(r for r in info["models"] if r["model"] == "Oracle (planted signs, both)")
    assert np.corrcoef(test.loc[pred["record_id"], "ref"], pred[f"{row['model']}:score"])[0, 1] > 0.999
    assert row["auroc"] == pytest.approx(roc_auc_score(test.loc[pred["record_id"], "label"],
                                                       test.loc[pred["record_id"], "ref"]), abs=1e-9)
    kept = info["cooperative_kept"]
    auc = {r["model"]: r["auroc"] for r in info["models"]}
    assert set(info["cooperative_kept_minus"]) == set(auc) - {kept}
    for name, d in info["cooperative_kept_minus"].items():
        assert d["difference"] == pytest.approx(auc[kept] - auc[name], abs=1e-12) and d["ci_low"] <= d["ci_high"]

    # a re-run trains nothing
    again: list[str] = []
    recipe.run(config, out, log=again.append)
    assert not any("training into" in line for line in again)


def test_two_stage_cooperative_rho_tuned_with_optuna(tiny, tmp_path):
    """rho_search: optuna -- one study per mode (tuning.tune), the best trial's run is the joint cooperative model."""
    import optuna

    from cardiofusion.recipes import get_recipe

    recipe = get_recipe("two-stage")
    config = recipe.config_cls.from_dict({
        "cohort": str(tiny["manifest"]), "fs": FS, "duration_s": 4, "window_s": 2, "image_size": IMAGE,
        "ecg_encoder": "two_stage_test_ecg", "cxr_encoder": "two_stage_test_cxr", "cxr_weights": None,
        "max_epochs": 1, "branch_max_epochs": 1, "modes": ["finetune"], "fusions": ["cooperative"],
        "rho_search": "optuna", "rho_trials": 3, "rho_range": [0.0, 2.0], "alternating": False,
        "batch_size": 8, "ecg_lr": 1e-2, "cxr_lr": 1e-2, "fusion_lr": 1e-2, "n_boot": 20, "criteria": False})
    out = tmp_path / "out"
    info = recipe.run(config, out, log=lambda line: None)
    res = info["stage2"]["cooperative"]
    assert list(res["runs"]) == ["cooperative_optuna_finetune"] and res["chosen"] == "cooperative_optuna_finetune"
    chosen = res["runs"]["cooperative_optuna_finetune"]
    study = optuna.load_study(study_name="cardiofusion",
                              storage="sqlite:///" + str(out / "stage2" / "cooperative_optuna_finetune" / "study.db"))
    done = [t for t in study.trials if t.value is not None]
    assert len(done) == 3 and all(0.0 <= t.params["rho"] <= 2.0 for t in done)
    best = max(done, key=lambda t: t.value)
    assert chosen["val_auroc"] == pytest.approx(best.value) and chosen["rho"] == pytest.approx(best.params["rho"])
    cfg = (Path(chosen["run"]) / "config.yaml").read_text()
    assert f"rho: {best.params['rho']}" in cfg and str((out / "stage1" / "ecg" / "run").resolve()) in cfg
    row = next(r for r in info["models"] if r["model"] == "Cooperative (joint)")
    assert row["val_auroc"] == pytest.approx(best.value)
    with pytest.raises(ConfigError, match="rho_search"):
        recipe.config_cls.from_dict({"rho_search": "random"})
    with pytest.raises(ConfigError, match="rho_range"):
        recipe.config_cls.from_dict({"rho_range": [1.0, 0.5]})


# ------------------------------------------------------------------------------------------------
# quiet output
# ------------------------------------------------------------------------------------------------
def test_training_command_output_is_short_and_verbose_restores_it(tiny, tmp_path, capfd, monkeypatch):
    import logging

    from cardiofusion.cli import main

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # what Lightning logs, whatever stream its own handler holds
    logging.getLogger("lightning.pytorch").addHandler(handler)
    monkeypatch.delenv("CARDIOFUSION_VERBOSE", raising=False)
    argv = ["train", "--cache", str(tiny["cache"]), "--manifest", str(tiny["manifest"]), "--fusion", "cooperative",
            "--ecg-encoder", "two_stage_test_ecg", "--cxr-encoder", "two_stage_test_cxr", "--cxr-weights", "none",
            "--max-epochs", "1", "--batch-size", "8", "--fs", str(FS), "--image-size", str(IMAGE),
            "--accelerator", "cpu"]
    try:
        assert main([*argv, "--out", str(tmp_path / "quiet")]) == 0
        text = "".join(capfd.readouterr())
        for noise in ("Tip:", "GPU available", "LeafSpec", "| Name", "deprecated", "Trainer("):
            assert noise not in text, noise
        assert len(text.splitlines()) < 36, text
        assert not [r for r in records if r.levelno < logging.ERROR]
        monkeypatch.setenv("CARDIOFUSION_VERBOSE", "0")
        assert main(["--verbose", *argv, "--out", str(tmp_path / "loud")]) == 0
        capfd.readouterr()
        said = " ".join(r.getMessage() for r in records)
        assert "GPU available" in said and "Name" in said  # the banner and the model summary
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)


def test_two_stage_config_round_trip_and_errors(tmp_path):
    import yaml

    from cardiofusion.recipes import get_recipe
    from cardiofusion.recipes.registry import save_recipe_config

    recipe = get_recipe("two-stage")
    config = recipe.config_cls()
    data = config.to_dict()
    assert recipe.config_cls.from_dict(data).to_dict() == data
    path = save_recipe_config("two-stage", config, tmp_path)
    assert recipe.config_cls.from_file(path).to_dict() == data
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**data, "modez": ["frozen"]}))
    with pytest.raises(ConfigError, match="modez"):
        recipe.load_config(tmp_path / "bad.yaml")
    for bad, match in (({"modes": ["thaw"]}, "modes must be"), ({"fusions": ["ecg"]}, "fusions must be"),
                       ({"alternating_alphas": [0]}, "alternating_alphas"), ({"rhos": []}, "rhos")):
        with pytest.raises(ConfigError, match=match):
            recipe.config_cls.from_dict({**data, **bad})
