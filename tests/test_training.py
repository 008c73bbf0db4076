"""Training: config, the Lightning module, ``fit`` run folders, resumption and ``cardiofusion train``.

Runs use two tiny registered stand-in encoders (milliseconds per batch) through the real
``cardiofusion.models`` fusion heads; one run uses the library's own tiny encoders.
"""

from __future__ import annotations

from conftest import build_tiny_cache, register_stand_in_encoders

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cardiofusion.cli import main
from cardiofusion.errors import ConfigError
from cardiofusion.models import ModelConfig
from cardiofusion.transforms.preprocess import PreprocessConfig
from cardiofusion.training import (
    TrainConfig,
    fit,
    resolve_pos_weight,
    resolve_precision,
)

FS, DURATION_S, SIZE = 250.0, 4.0, 32


register_stand_in_encoders()


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_cache(tmp_path_factory.mktemp("train_cache"), fs=FS, duration_s=DURATION_S, image_size=SIZE,
                            delete_export=True)


def _config(cohort, fusion="cooperative", **kw) -> TrainConfig:
    model = kw.pop("model", None) or ModelConfig(fusion=fusion, ecg_encoder="test_ecg_stats", cxr_encoder="test_cxr_conv")
    return TrainConfig(cache_dir=str(cohort["cache"]), manifest=str(cohort["manifest"]), model=model,
                       preprocess=PreprocessConfig(fs=FS, window_s=1.0, eval_stride_s=1.0, image_size=SIZE),
                       **{"batch_size": 16, "lr": 1e-2, "num_workers": 0, **kw})


@pytest.fixture
def config_yaml(cohort, tmp_path) -> Path:
    path = tmp_path / "base.yaml"
    cfg = _config(cohort).to_dict()
    path.write_text(yaml.safe_dump({"model": cfg["model"], "preprocess": cfg["preprocess"], "num_workers": 0}))
    return path


# --------------------------------------------------------------------------------------------------
def test_train_config_defaults_round_trip(tmp_path):
    cfg = TrainConfig(cache_dir="c", manifest="m.parquet")
    assert (cfg.lr, cfg.betas, cfg.batch_size, cfg.t_max, cfg.max_epochs, cfg.patience) == \
        (1e-4, (0.9, 0.999), 64, 10, 100, 20)
    assert cfg.model.fusion == "cooperative" and cfg.preprocess.window_s == 2.0
    path = cfg.save(tmp_path / "config.yaml")
    again = TrainConfig.from_file(path)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    partial = tmp_path / "partial.yaml"
    partial.write_text("lr: 0.001\nmodel: {fusion: ecg}\npos_weight: balanced\ndevices: '2'\n")
    p = TrainConfig.from_file(partial)
    assert p.lr == 1e-3 and p.model.fusion == "ecg" and p.modalities == ("ecg",) and p.pos_weight == "balanced"
    assert p.devices == 2 and p.batch_size == 64
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError, match="pos_weight"):
        TrainConfig(pos_weight="heavy")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="8")


def test_precision_and_pos_weight_resolution():
    assert resolve_precision(TrainConfig(accelerator="cpu")) == "32-true"
    assert resolve_precision(TrainConfig(accelerator="gpu")) == "16-mixed"
    assert resolve_precision(TrainConfig(accelerator="cpu", precision="bf16-mixed")) == "bf16-mixed"
    labels = np.array([0, 0, 0, 1, np.nan], dtype=np.float32)
    assert resolve_pos_weight(TrainConfig(pos_weight="balanced"), labels) == 3.0
    assert resolve_pos_weight(TrainConfig(pos_weight=2), labels) == 2.0
    assert resolve_pos_weight(TrainConfig(), labels) is None
    with pytest.raises(ConfigError):
        resolve_pos_weight(TrainConfig(pos_weight="balanced"), np.zeros(4, dtype=np.float32))


def test_cli_train_end_to_end(cohort, config_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--cache", str(cohort["cache"]), "--manifest", str(cohort["manifest"]), "--out", str(run),
               "--config", str(config_yaml), "--max-epochs", "2", "--lr", "0.01", "--batch-size", "16",
               "--pos-weight", "balanced", "--seed", "1", "--accelerator", "cpu", "--tensorboard", "--no-progress",
               "--fs", str(FS)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "val AUROC" in out and str(run) in out

    for name in ("config.yaml", "metrics.csv", "val_scores.csv", "result.json", "reproduce.txt",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert any((run / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    cfg = TrainConfig.from_file(run / "config.yaml")
    assert cfg.max_epochs == 2 and cfg.lr == 0.01 and cfg.seed == 1 and cfg.model.ecg_encoder == "test_ecg_stats"
    assert cfg.preprocess.fs == FS

    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics[["train_loss", "val_loss", "val_auroc"]].notna().all().all()

    scores = pd.read_csv(run / "val_scores.csv", dtype={"record_id": str, "patient_id": str})
    assert list(scores.columns) == ["record_id", "patient_id", "label", "score", "prob", "score_ecg", "score_cxr"]
    assert scores["record_id"].is_unique and scores[["score", "prob", "score_ecg", "score_cxr"]].notna().all().all()
    np.testing.assert_allclose(scores["score"], scores["score_ecg"] + scores["score_cxr"], atol=1e-4)  # cooperative

    result = json.loads((run / "result.json").read_text())
    assert result["records"]["val"] == len(scores) and result["epochs_trained"] == 2
    assert result["pos_weight"] == pytest.approx(
        (result["records"]["train"] - result["positives"]["train"]) / result["positives"]["train"])
    assert {"torch", "lightning", "cardiofusion"} <= set(result["versions"]) and result["seconds"]["fit"] > 0
    best = metrics.loc[metrics["val_loss"].idxmin()]
    assert result["best_epoch"] == int(best["epoch"])
    assert result["best_val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    # the logged val_auroc of the best epoch is the AUROC of the saved validation scores
    assert result["val_auroc"] == pytest.approx(best["val_auroc"], abs=1e-4)
    assert "cardiofusion train" in (run / "reproduce.txt").read_text()

    with pytest.raises(ConfigError, match="already holds a run"):
        fit(cfg, run, progress=False)


def test_resume_continues_epochs(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    first = fit(_config(cohort, max_epochs=1), run, progress=False)
    assert first.epochs_trained == 1
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1]
    with pytest.raises(ConfigError, match="saved settings"):
        fit(_config(cohort, max_epochs=3, lr=0.5), run, resume=True, progress=False)
    assert main(["train", "--resume", str(run), "--max-epochs", "3", "--no-progress"]) == 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3]
    result = json.loads((run / "result.json").read_text())
    assert result["epochs_trained"] == 3 and result["resumed"]
    assert TrainConfig.from_file(run / "config.yaml").max_epochs == 3
    assert "--resume" in (run / "reproduce.txt").read_text()
    capsys.readouterr()

    # an uninterrupted 3-epoch run gives the same per-epoch validation losses (seeded, resumable)
    straight = fit(_config(cohort, max_epochs=3), tmp_path / "straight", progress=False)
    again = pd.read_csv(straight.metrics_csv)
    np.testing.assert_allclose(again["val_loss"], metrics["val_loss"], rtol=1e-4)


@pytest.mark.parametrize("fusion", ["ecg", "cxr"])
def test_single_modality_runs(cohort, tmp_path, fusion):
    result = fit(_config(cohort, fusion, max_epochs=1), tmp_path / fusion, progress=False)
    scores = pd.read_csv(result.val_scores)
    other = "cxr" if fusion == "ecg" else "ecg"
    assert scores["score"].notna().all() and scores[f"score_{other}"].isna().all()
    info = json.loads(result.result_json.read_text())
    assert info["modalities"] == [fusion] and math.isfinite(info["best_val_loss"])


def test_library_tiny_encoders_late_fusion(cohort, tmp_path):
    model = ModelConfig(fusion="late", ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="cxr_tiny")
    result = fit(_config(cohort, model=model, max_epochs=1, limit_train_batches=2, eval_batch_size=32),
                 tmp_path / "late", progress=False)
    assert result.best_epoch == 1 and math.isfinite(result.best_val_loss)
    scores = pd.read_csv(result.val_scores)
    assert scores[["score", "score_ecg", "score_cxr"]].notna().all().all()


def test_mismatched_leads_rejected(cohort, tmp_path):
    cfg = _config(cohort)
    cfg.preprocess = PreprocessConfig(fs=FS, leads=("I", "II"), window_s=1.0, image_size=SIZE)
    with pytest.raises(ConfigError, match="leads"):
        fit(cfg, tmp_path / "x", progress=False)
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2


def test_load_run_and_score_split(cohort, tmp_path):
    from cardiofusion.errors import ReadError
    from cardiofusion.training import load_run, score_split

    result = fit(_config(cohort, "cooperative", max_epochs=1), tmp_path / "run", progress=False)
    loaded = load_run(result.run_dir)
    assert loaded.checkpoint == result.best_checkpoint and not loaded.model.training
    assert loaded.config == _config(cohort, "cooperative", max_epochs=1)
    val = score_split(loaded, "val")
    saved = pd.read_csv(result.val_scores)
    assert list(val["record_id"]) == list(saved["record_id"].astype(str)) and set(val["split"]) == {"val"}
    np.testing.assert_allclose(val["score"], saved["score"], rtol=1e-5, atol=1e-6)
    test = score_split(result.run_dir, "test")
    assert (tmp_path / "run" / "scores_test.csv").is_file() and len(test) > 0 and test["score"].notna().all()
    manifest = pd.read_parquet(cohort["manifest"])
    assert set(test["record_id"]) <= set(manifest.loc[manifest["split"] == "test", "record_id"])
    again = score_split(result.run_dir, "test")  # read back, not recomputed
    np.testing.assert_allclose(again["score"], test["score"], rtol=1e-6)
    with pytest.raises(ReadError, match="no such run"):
        load_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown split"):
        score_split(loaded, "holdout")


def test_warm_start_copies_encoders(cohort, tmp_path):
    from cardiofusion.models import build_model
    from cardiofusion.training import load_run
    from cardiofusion.training.fit import warm_start

    ecg_run = fit(_config(cohort, "ecg", max_epochs=1), tmp_path / "ecg", progress=False).run_dir
    coop = build_model(_config(cohort).model)
    assert warm_start(coop, {"ecg": str(ecg_run)}) == {"ecg": len(coop.ecg_encoder.state_dict())}
    source = load_run(ecg_run).model.ecg_encoder.state_dict()
    for name, value in coop.ecg_encoder.state_dict().items():
        torch.testing.assert_close(value, source[name], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="no cxr encoder"):
        warm_start(coop, {"cxr": str(ecg_run)})
    other = ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="test_cxr_conv")
    with pytest.raises(ConfigError, match="does not match"):
        warm_start(build_model(other), {"ecg": str(ecg_run)})
    with pytest.raises(ConfigError, match="init_from"):
        _config(cohort, init_from={"eeg": "x"})
    # through fit: the saved config records it and training starts from the copied weights
    result = fit(_config(cohort, max_epochs=1, init_from={"ecg": str(ecg_run)}), tmp_path / "coop", progress=False)
    assert TrainConfig.from_file(result.run_dir / "config.yaml").init_from == {"ecg": str(ecg_run)}


def test_cli_warm_start_and_fs_flags(tmp_path):
    from cardiofusion.cli import build_parser
    from cardiofusion.commands.train import config_from_args

    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--fs", "250", "--init-ecg",
                                      str(tmp_path / "ecg_run"), "--init-cxr", str(tmp_path / "cxr_run")])
    cfg = config_from_args(args)
    assert cfg.preprocess.fs == 250.0
    assert cfg.init_from == {"ecg": str((tmp_path / "ecg_run").resolve()), "cxr": str((tmp_path / "cxr_run").resolve())}


def test_frozen_encoder_epochs_train_only_the_head(cohort, tmp_path):
    from cardiofusion.training import load_run

    ecg_run = fit(_config(cohort, "ecg", max_epochs=1), tmp_path / "ecg", progress=False).run_dir
    before = load_run(ecg_run).model.ecg_encoder.state_dict()
    result = fit(_config(cohort, "ecg", max_epochs=1, init_from={"ecg": str(ecg_run)}, freeze_encoders_epochs=1),
                 tmp_path / "frozen", progress=False)
    after = load_run(result.run_dir).model
    for name, value in after.ecg_encoder.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)  # weights and BN statistics untouched
    import lightning as L

    from cardiofusion.models import build_model

    L.seed_everything(0, verbose=False)  # fit seeds the same way before building the model
    initial = build_model(_config(cohort, "ecg").model).fusion.head.weight
    assert not torch.equal(after.fusion.head.weight, initial)  # ... while the head learned
    with pytest.raises(ConfigError, match="freeze_encoders_epochs"):
        _config(cohort, freeze_encoders_epochs=-1)


def test_warm_start_cooperative_starts_from_late_fusion(cohort, tmp_path):
    """With both single-modality runs, the warm-started cooperative score is 1/2 + (z_ecg + z_cxr) / 8 of
    their logits z (the linearised mean of their probabilities); late fusion copies the logits."""
    from cardiofusion.data.dataset import CohortDataModule, collate
    from cardiofusion.models import build_model
    from cardiofusion.training import load_run
    from cardiofusion.training.fit import warm_start

    runs = {m: fit(_config(cohort, m, max_epochs=1), tmp_path / m, progress=False).run_dir for m in ("ecg", "cxr")}
    cfg = _config(cohort)
    dm = CohortDataModule(cfg.cache_dir, cfg.manifest, cfg.preprocess, batch_size=8)
    dm.setup()
    batch = collate([dm.datasets["val"][i] for i in range(4)])
    model_batch = {k: batch[k] for k in ("ecg", "ecg_mask", "cxr", "has_ecg", "has_cxr")}
    with torch.no_grad():
        z = {m: load_run(r).model.eval()(model_batch).score for m, r in runs.items()}
        coop = build_model(cfg.model).eval()
        warm_start(coop, {m: str(r) for m, r in runs.items()})
        torch.testing.assert_close(coop(model_batch).score, 0.5 + (z["ecg"] + z["cxr"]) / 8, rtol=1e-5, atol=1e-6)
        late = build_model(_config(cohort, "late").model).eval()
        warm_start(late, {m: str(r) for m, r in runs.items()})
        torch.testing.assert_close(late(model_batch).score, (z["ecg"] + z["cxr"]) / 2, rtol=1e-5, atol=1e-6)
