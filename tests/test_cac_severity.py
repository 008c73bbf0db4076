"""The ``cac-severity`` recipe (paper 001): every default X-ray backbone inside the early-fusion model, the
patient-grouped stratified folds, and the recipe end to end on a tiny synthetic export (two tiny backbones,
the ablation, 3 folds) with its metrics checked against scikit-learn and a re-run that reuses every run.
"""

from __future__ import annotations

from conftest import register_stand_in_encoders

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from cardiofusion.errors import ConfigError
from cardiofusion.evaluation.folds import stratified_group_folds
from cardiofusion.models import build_model
from cardiofusion.recipes import get_recipe
from cardiofusion.tasks import load_task
from cardiofusion.tasks.losses import encode_targets
from cardiofusion.recipes.cac_severity import PAPER_BACKBONES, CacSeverityConfig, cac_train_config, grid

ECG, CXR, CXR2 = "cac_test_ecg", "cac_test_cxr", "cac_test_cxr2"
register_stand_in_encoders(ECG, CXR)
register_stand_in_encoders(ECG, CXR2)


@pytest.mark.parametrize("backbone", [pytest.param(b, marks=pytest.mark.slow) if b == "vgg19" else b
                                      for b in PAPER_BACKBONES])
def test_default_backbones_in_the_fusion_model(backbone, one_thread):
    config = CacSeverityConfig(backbones=[backbone], pretrained="none", image_size=32)
    train = cac_train_config(config, "c", "m", "full", backbone)
    assert train.model.fusion == "early" and train.model.cxr_encoder == backbone
    assert (train.model.num_outputs, train.model.link) == (3, "cumulative")  # CORAL: K - 1 cumulative logits
    torch.manual_seed(0)
    model = build_model(train.model)
    first = next(m for m in model.cxr_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.cxr_encoder.in_chans == 1 and first.in_channels == 1
    batch = {"ecg": torch.randn(2, 12, 200), "cxr": torch.randn(2, 1, 32, 32)}
    out = model(batch)
    assert out.prob.shape == (2, 4)  # the four CAC classes
    torch.testing.assert_close(out.prob.sum(1), torch.ones(2))
    assert bool((out.prob >= 0).all())
    target, mask = encode_targets(load_task("cac_severity"), torch.tensor([0.0, 3.0]))
    loss = model.loss(out, target, mask=mask)["loss"]
    loss.backward()
    grads = [p.grad for p in model.cxr_encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert model.ecg_encoder is not None and any(p.grad is not None for p in model.ecg_encoder.parameters())


def test_stratified_group_folds():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(60), rng.integers(1, 4, size=60))
    cls = rng.integers(0, 4, size=60)[patients].astype(float)
    cls[patients == 5] = np.nan  # unknown class: left out of every fold
    folds = stratified_group_folds(patients, cls, 5, seed=1)
    df = pd.DataFrame({"p": patients, "f": folds, "c": cls})
    assert (df.groupby("p")["f"].nunique() == 1).all()  # a patient is never split
    assert set(df.loc[df.p == 5, "f"]) == {-1} and set(df.loc[df.p != 5, "f"]) == set(range(5))
    per_class = pd.crosstab(df.loc[df.f >= 0, "f"], df.loc[df.f >= 0, "c"])
    share = per_class / per_class.sum(axis=0)
    assert float((share - 0.2).abs().max().max()) < 0.12  # stratified: each fold holds ~1/5 of every class
    np.testing.assert_array_equal(folds, stratified_group_folds(patients, cls, 5, seed=1))  # deterministic
    with pytest.raises(ConfigError, match="different classes"):
        stratified_group_folds([1, 1, 2, 3], [0, 1, 0, 1], 2)
    with pytest.raises(ConfigError, match="fewer than the 5 folds"):
        stratified_group_folds([1, 2, 3], [0, 1, 0], 5)


def test_config_round_trip_grid_and_bad_values(tmp_path):
    recipe = get_recipe("cac-severity")
    config = recipe.config_cls()
    assert config.backbones == list(PAPER_BACKBONES) and config.n_folds == 5
    assert recipe.config_cls.from_dict(config.to_dict()).to_dict() == config.to_dict()
    keys = [k for k, _, _ in grid(config)]
    assert len(keys) == 2 * 6 + 1 and keys[-1] == "ecg_only"  # full and no-ECG per backbone, one ECG-only model
    for bad, match in ((["variants=[full,nope]"], "variants"), (["average=micro"], "average"),
                       (["n_folds=2"], "n_folds"), (["pretrained=yes"], "pretrained"), (["n_bot=3"], "n_bot")):
        with pytest.raises(ConfigError, match=match):
            recipe.load_config(None, bad)


def test_backbone_weights(tmp_path):
    from cardiofusion.errors import ReadError
    from cardiofusion.recipes.cac_severity import backbone_weights

    assert backbone_weights(CacSeverityConfig(pretrained="none"), "resnet50") is False
    assert backbone_weights(CacSeverityConfig(pretrained="timm"), "resnet50") == "timm"
    assert backbone_weights(CacSeverityConfig(), "resnet50") is False  # auto: no local file -> random init
    lite0 = backbone_weights(CacSeverityConfig(), "tf_efficientnet_lite0")  # the file shipped in a package
    assert lite0 is False or Path(lite0).is_file()
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert backbone_weights(CacSeverityConfig(weights={"resnet50": str(f)}), "resnet50") == str(f.resolve())
    with pytest.raises(ReadError, match="no such file"):
        backbone_weights(CacSeverityConfig(weights={"resnet50": str(tmp_path / "nope.pth")}), "resnet50")
    ecg = cac_train_config(CacSeverityConfig(), "c", "m", "no_xray", None)
    assert ecg.model.fusion == "ecg" and ecg.model.cxr_pretrained is False and ecg.lr == CacSeverityConfig().ecg_lr


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    from cardiofusion.cohort import CohortConfig, build_cohort
    from cardiofusion.synth import SynthConfig, generate_export

    root = tmp_path_factory.mktemp("cac")
    generate_export(root / "export", SynthConfig(n_patients=40, cxr_size=64, ecg_duration_s=2.0, compute_oracle=False,
                                                 n_defective_ecg=0, n_defective_cxr=0), overwrite=True, progress=False)
    build_cohort(root / "export" / "ecg_index.csv", root / "export" / "cxr_index.csv", root / "export" / "echo_index.csv",
                 root / "cohort", CohortConfig())
    return root / "cohort"


def test_recipe_end_to_end_and_reuse(tiny_cohort, tmp_path, one_thread):
    recipe = get_recipe("cac-severity")
    config = recipe.load_config(None, [
        f"cohort={tiny_cohort}", f"backbones=[{CXR},{CXR2}]", f"ecg_encoder={ECG}", "n_folds=3", "max_epochs=1",
        "image_size=32", "duration_s=2", "window_s=1", "n_boot=40", "batch_size=32", "lr=0.01", "accelerator=cpu"])
    out = tmp_path / "out"
    lines: list[str] = []
    result = recipe.run(config, out, log=lines.append)
    assert {a for runs in result.actions.values() for a in runs.values()} == {"trained"}
    assert sorted(result.runs) == sorted([f"{CXR}/full", f"{CXR}/no_ecg", f"{CXR2}/full", f"{CXR2}/no_ecg",
                                          "ecg_only"])
    for name in ("table4.csv", "table5.csv", "table4.md", "table5.md", "figure4.png", "figure5.png", "report.html",
                 "per_fold_metrics.csv", "folds.csv", "cac_severity.json", "evaluation/report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Table 5" in html and "http" not in html.split("<body>")[1]

    # folds: every patient in one fold, the fold manifests' splits follow it
    folds = pd.read_csv(out / "folds.csv", dtype={"patient_id": str})
    assert (folds[folds.fold >= 0].groupby("patient_id")["fold"].nunique() == 1).all()
    fm = pd.read_parquet(out / "folds" / "fold_1" / "manifest.parquet")
    f = folds.set_index("record_id").loc[fm["record_id"].astype(str), "fold"].to_numpy()
    assert (fm["split"].to_numpy()[f == 1] == "test").all() and (fm["split"].to_numpy()[f == 2] == "val").all()

    # Table 4 against scikit-learn: per fold (mean, sd ddof 1) and pooled over the out-of-fold predictions
    t4 = pd.read_csv(out / "table4.csv").set_index("backbone")
    classes = ["0", "1-99", "100-399", ">=400"]
    per_fold, pooled_y, pooled_d = [], [], []
    for fold in range(3):
        s = pd.read_csv(out / "runs" / CXR2 / "full" / f"fold_{fold}" / "scores_test.csv")
        s = s[s["split"] == "test"]
        y = s["label"].to_numpy(int)
        d = s[[c for c in s.columns if c.startswith("prob_")]].to_numpy().argmax(1)
        assert set(s["record_id"].astype(str)) == set(folds.loc[folds.fold == fold, "record_id"].astype(str))
        per_fold.append([skm.accuracy_score(y, d), skm.f1_score(y, d, average="macro", labels=range(4),
                                                                  zero_division=np.nan)])
        pooled_y.append(y)
        pooled_d.append(d)
    per_fold = np.array(per_fold)
    row = t4.loc[CXR2]
    assert row["accuracy_mean"] == pytest.approx(per_fold[:, 0].mean())
    assert row["accuracy_sd"] == pytest.approx(per_fold[:, 0].std(ddof=1))
    assert row["macro_f1_mean"] == pytest.approx(np.nanmean(per_fold[:, 1]))
    y, d = np.concatenate(pooled_y), np.concatenate(pooled_d)
    assert row["accuracy_pooled"] == pytest.approx(skm.accuracy_score(y, d))
    assert row["quadratic_kappa_pooled"] == pytest.approx(skm.cohen_kappa_score(y, d, weights="quadratic"), abs=1e-9)
    assert row["weighted_recall_pooled"] == pytest.approx(skm.recall_score(y, d, average="weighted", labels=range(4),
                                                                           zero_division=0))
    cm = skm.confusion_matrix(y, d, labels=range(4))
    assert row["ge400_called_0"] == cm[3, 0] and row["ge400_records"] == cm[3].sum()
    assert row["accuracy_ci_low"] <= row["accuracy_pooled"] <= row["accuracy_ci_high"]
    for j, c in enumerate(classes):
        recall = cm[j, j] / cm[j].sum() if cm[j].sum() else np.nan
        np.testing.assert_allclose(row[f"recall:{c}_pooled"], recall)

    # Table 5: the ECG-only model is the same in every row; paired differences are recorded
    t5 = pd.read_csv(out / "table5.csv").set_index("backbone")
    assert t5.loc[CXR, "no_xray_mean"] == t5.loc[CXR2, "no_xray_mean"]
    assert t5.loc[CXR2, "full_mean"] == pytest.approx(row["accuracy_mean"])
    assert t5.loc[CXR2, "full_minus_no_xray_accuracy"] == pytest.approx(
        t5.loc[CXR2, "full_pooled"] - t5.loc[CXR2, "no_xray_pooled"])
    info = json.loads((out / "cac_severity.json").read_text())
    assert info["best"] in (CXR, CXR2)

    # a re-run reuses every finished run (nothing retrained); a worker's part of the grid (report=false)
    again = recipe.run(dataclasses.replace(config, report=False), out, log=lines.append)
    assert {a for runs in again.actions.values() for a in runs.values()} == {"reused"}
    part = recipe.run(dataclasses.replace(config, backbones=[CXR2], variants=["full"], folds=[1], report=False), out,
                      log=lines.append)
    assert part.actions == {f"{CXR2}/full": {1: "reused"}}
    prepare = recipe.run(dataclasses.replace(config, folds=[], report=False), out, log=lines.append)  # data only
    assert all(not runs for runs in prepare.actions.values())
