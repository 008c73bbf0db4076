"""Training for every task kind (``cardiofusion.tasks``): tiny runs end to end, the losses' target encoding,
per-task metrics against scikit-learn, tuning's direction, and one-line errors for bad task inputs.

Runs use the tiny cache of ``conftest.build_tiny_cache`` and the stand-in encoders, with target columns added
to its manifest here.
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
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from cardiofusion.errors import ConfigError
from cardiofusion.models import ModelConfig
from cardiofusion.tasks import Task, load_task
from cardiofusion.tasks.losses import encode_targets, task_pos_weight
from cardiofusion.training import TrainConfig, fit, load_run, score_split
from cardiofusion.training.evaluate import task_metrics
from cardiofusion.transforms.preprocess import PreprocessConfig

FS, DURATION_S, SIZE = 250.0, 2.0, 32
NAN = float("nan")

register_stand_in_encoders()

TASKS = {
    "multiclass": {"name": "grade", "kind": "multiclass", "columns": ["grade"], "classes": ["a", "b", "c"]},
    "ordinal": {"name": "sev", "kind": "multiclass", "ordinal": True, "columns": ["sev"],
                "classes": ["none", "mild", "moderate", "severe"]},
    "multilabel": {"name": "dx", "kind": "multilabel", "columns": ["dx1", "dx2"]},
    "regression": {"name": "echo", "kind": "regression", "columns": ["vel", "mass"], "units": {"vel": "m/s"}},
    "binary": {"name": "as_task", "kind": "binary", "columns": ["label"]},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    """The tiny cohort plus target columns, every class / label value present in every split."""
    root = tmp_path_factory.mktemp("task_cache")
    out = build_tiny_cache(root, fs=FS, duration_s=DURATION_S, image_size=SIZE, n_patients=24, delete_export=True)
    df = pd.read_parquet(out["manifest"])
    rank = df.groupby("split").cumcount().to_numpy()
    rng = np.random.default_rng(0)
    df["grade"] = np.array(["a", "b", "c"])[rank % 3]
    df["sev"] = np.array(["none", "mild", "moderate", "severe"])[rank % 4]
    df["dx1"] = (rank % 2).astype(float)
    df["dx2"] = ((rank // 2) % 2).astype(float)
    df.loc[rank % 5 == 4, "dx2"] = np.nan  # unknown labels
    df["vel"] = 2.0 + rng.normal(size=len(df))
    df["mass"] = 150 + 30 * rng.normal(size=len(df))
    df.loc[rank % 4 == 3, "mass"] = np.nan
    out["manifest"] = root / "tasks_manifest.parquet"
    df.to_parquet(out["manifest"])
    return out


def _config(cohort, task, fusion="cooperative", **kw) -> TrainConfig:
    return TrainConfig(cache_dir=str(cohort["cache"]), manifest=str(cohort["manifest"]),
                       model=ModelConfig(fusion=fusion, ecg_encoder="test_ecg_stats", cxr_encoder="test_cxr_conv"),
                       preprocess=PreprocessConfig(fs=FS, window_s=1.0, eval_stride_s=1.0, image_size=SIZE),
                       task=task, **{"batch_size": 16, "lr": 1e-2, "num_workers": 0, "max_epochs": 2, **kw})


@pytest.mark.parametrize(("kind", "fusion"), [("multiclass", "cooperative"), ("ordinal", "late"),
                                              ("multilabel", "early"), ("regression", "cooperative"),
                                              ("binary", "late")])
def test_tiny_training_every_kind(cohort, tmp_path, kind, fusion, one_thread):
    task = Task.from_dict(TASKS[kind])
    result = fit(_config(cohort, TASKS[kind], fusion, pos_weight="balanced" if kind != "regression" else None),
                 tmp_path / kind, progress=False)
    saved = TrainConfig.from_file(result.run_dir / "config.yaml")
    assert (saved.model.num_outputs, saved.model.link) == (task.n_outputs, task.link)
    fitted = saved.task_spec()
    info = json.loads((result.run_dir / "result.json").read_text())
    assert info["task"] == fitted.to_dict() and info["metric"] == task.primary_metric[0]
    assert result.metric == task.primary_metric[0] and result.higher_is_better == task.primary_metric[1]
    metrics = pd.read_csv(result.metrics_csv)
    assert len(metrics) == 2 and f"val_{result.metric}" in metrics.columns
    assert np.isfinite(metrics["val_loss"]).all()
    if kind == "regression":
        labels = pd.read_parquet(cohort["manifest"]).query("split == 'train'")[["vel", "mass"]]
        np.testing.assert_allclose(fitted.scaler.mean, np.nanmean(labels.to_numpy(), 0), rtol=1e-5)
    loaded = load_run(result.run_dir)
    assert loaded.task.to_dict() == fitted.to_dict()
    table = score_split(result.run_dir, "test")
    assert [c for c in table.columns if c != "split"] == fitted.score_columns() and len(table) > 0
    pred = fitted.predictions_from_table(table)
    assert np.isfinite(pred).all()
    if kind != "regression":
        assert ((pred >= 0) & (pred <= 1)).all()
    if kind in ("multiclass", "ordinal"):
        np.testing.assert_allclose(pred.sum(1), 1.0, atol=1e-5)
    # the validation table re-scores to the reported metric
    val = pd.read_csv(result.val_scores)
    probs = fitted.predictions_from_table(val)
    if kind == "regression":
        probs = fitted.standardize(probs)
    scores = val["score"].to_numpy() if kind == "binary" else None
    again = task_metrics(fitted, fitted.labels_from_table(val), probs, scores)[result.metric]
    assert again == pytest.approx(result.val_metric, nan_ok=True)
    assert math.isfinite(result.val_metric)


def test_encode_targets_per_kind():
    y = torch.tensor([0.0, 2.0, NAN, 1.0])
    t, m = encode_targets(load_task(TASKS["multiclass"]), y)
    assert torch.equal(t[0], torch.tensor([1.0, 0, 0])) and torch.equal(t[1], torch.tensor([0.0, 0, 1]))
    assert not m[2].any() and m[[0, 1, 3]].all()
    t, m = encode_targets(load_task(TASKS["ordinal"]), torch.tensor([0.0, 3.0, 1.0]))
    assert torch.equal(t, torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0]])) and m.all()
    task = Task.from_dict(TASKS["regression"]).fit(np.array([[1.0, 10], [3.0, NAN], [2.0, 30]]))
    t, m = encode_targets(task, torch.tensor([[2.0, 20.0], [NAN, 40.0]]))
    torch.testing.assert_close(t[0], torch.tensor([0.0, 0.0]))
    assert t[1, 1] == pytest.approx(2.0) and not m[1, 0] and m[1, 1]
    t, m = encode_targets(load_task(TASKS["multilabel"]), torch.tensor([[1.0, NAN]]))
    assert m.tolist() == [[True, False]]


def test_pos_weight_per_kind():
    ml = load_task(TASKS["multilabel"])
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, NAN], [1, 1]], dtype=float)
    assert task_pos_weight(ml, labels, "balanced") == pytest.approx([3 / 2, 2 / 2])
    assert task_pos_weight(ml, labels, 2.0) == 2.0
    mc = load_task(TASKS["multiclass"])
    y = np.array([0, 0, 0, 1, 2, 2, NAN])
    want = len(y[np.isfinite(y)]) / (3 * np.array([3, 1, 2]))
    assert task_pos_weight(mc, y, "balanced") == pytest.approx(want.tolist())
    with pytest.raises(ConfigError, match="balanced"):
        task_pos_weight(mc, y, 2.0)
    od = load_task(TASKS["ordinal"])
    # ordinal: class weights n / (K n_k) like multiclass (was one 50/50 weight per cumulative output, issue 15)
    assert task_pos_weight(od, np.array([0, 1, 2, 3, 3.0]), "balanced") == pytest.approx([5 / 4, 5 / 4, 5 / 4, 5 / 8])
    assert task_pos_weight(od, np.array([0, 1, 2, 3, 3.0]), 2.0) == 2.0
    with pytest.raises(ConfigError, match="regression"):
        task_pos_weight(load_task(TASKS["regression"]), np.zeros((3, 2)), "balanced")


def test_task_metrics_against_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 60).astype(float)
    p = rng.dirichlet(np.ones(4), 60)
    p[np.arange(60), y.astype(int)] += 0.3
    p /= p.sum(1, keepdims=True)
    od = load_task(TASKS["ordinal"])
    got = task_metrics(od, y, p)
    assert got["macro_auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["quadratic_kappa"] == pytest.approx(cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
    ml = load_task(TASKS["multilabel"])
    lab = (rng.random((60, 2)) < 0.4).astype(float)
    lab[:5, 1] = np.nan
    pr = np.clip(lab + rng.normal(0, 0.5, lab.shape), 0, 1)
    pr[np.isnan(pr)] = 0.5
    want = np.mean([roc_auc_score(lab[:, 0], pr[:, 0]), roc_auc_score(lab[5:, 1], pr[5:, 1])])
    assert task_metrics(ml, lab, pr)["macro_auroc"] == pytest.approx(want)
    rg = Task.from_dict(TASKS["regression"]).fit(np.array([[1.0, 100], [3.0, 200]]))
    truth = np.array([[2.0, 150.0], [1.0, NAN]])
    pred_std = rg.standardize(np.array([[2.5, 120.0], [1.0, 0.0]]))
    got = task_metrics(rg, truth, pred_std)
    assert got["mae_vel"] == pytest.approx(0.25) and got["mae_mass"] == pytest.approx(30.0)
    assert got["mae"] == pytest.approx(15.125)


@pytest.mark.parametrize(("change", "match"), [
    ({"columns": ["nope"]}, "nope"),
    ({"classes": ["a", "b", "c", "d"]}, "'d'"),
    ({"classes": ["a", "b"]}, "outside the declared classes"),
])
def test_bad_task_inputs_are_one_line_errors(cohort, tmp_path, change, match):
    task = {**TASKS["multiclass"], **change}
    with pytest.raises(ConfigError, match=match) as err:
        fit(_config(cohort, task), tmp_path / "bad", progress=False)
    assert "\n" not in str(err.value) and str(cohort["manifest"]) in str(err.value)


def test_regression_target_all_missing(cohort, tmp_path):
    df = pd.read_parquet(cohort["manifest"])
    df.loc[df["split"] == "train", "mass"] = np.nan
    manifest = tmp_path / "m.parquet"
    df.to_parquet(manifest)
    cfg = _config(cohort, TASKS["regression"]).replace(manifest=str(manifest))
    with pytest.raises(ConfigError, match="'mass'.*missing in every training record"):
        fit(cfg, tmp_path / "run", progress=False)


def test_config_task_round_trip_and_old_configs(tmp_path):
    cfg = TrainConfig(cache_dir="c", manifest="m", task="as_severity")
    assert cfg.task == load_task("as_severity").to_dict()
    assert cfg.with_task_outputs().model.num_outputs == 3 and cfg.with_task_outputs().model.link == "cumulative"
    again = TrainConfig.from_file(cfg.save(tmp_path / "c.yaml"))
    assert again == cfg
    old = TrainConfig(cache_dir="c", manifest="m").to_dict()
    del old["task"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    loaded = TrainConfig.from_file(tmp_path / "old.yaml")
    assert loaded.task is None and loaded.task_spec().is_binary and loaded.with_task_outputs() is loaded
    with pytest.raises(ConfigError, match="unknown task"):
        TrainConfig(task="no_such_task")


def test_cli_train_with_a_task_file_and_resume(cohort, tmp_path, capsys, one_thread):
    from cardiofusion.cli import main
    from cardiofusion.commands.train import BUILTIN_TASK_NAMES
    from cardiofusion.tasks import builtin_tasks

    assert sorted(BUILTIN_TASK_NAMES) == builtin_tasks()
    base = _config(cohort, None).to_dict()
    config_yaml = tmp_path / "base.yaml"
    config_yaml.write_text(yaml.safe_dump({"model": base["model"], "preprocess": base["preprocess"],
                                           "num_workers": 0}))
    task_file = tmp_path / "echo.yaml"
    task_file.write_text(yaml.safe_dump(TASKS["regression"]))
    run = tmp_path / "run"
    rc = main(["train", "--cache", str(cohort["cache"]), "--manifest", str(cohort["manifest"]), "--out", str(run),
               "--config", str(config_yaml), "--task", str(task_file), "--max-epochs", "1", "--lr", "0.01",
               "--batch-size", "16", "--accelerator", "cpu", "--no-progress", "--fs", str(FS)])
    assert rc == 0 and "val mae" in capsys.readouterr().out
    saved = TrainConfig.from_file(run / "config.yaml")
    assert saved.task["columns"] == ["vel", "mass"] and saved.task["scaler"] is not None
    assert (saved.model.num_outputs, saved.model.link) == (2, "identity")
    scaler = saved.task["scaler"]
    assert main(["train", "--resume", str(run), "--max-epochs", "2", "--no-progress"]) == 0
    again = TrainConfig.from_file(run / "config.yaml")
    assert again.task["scaler"] == scaler and again.max_epochs == 2  # a resumed run keeps its scaler
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2]


def test_warm_start_with_k_outputs(cohort, tmp_path, one_thread):
    """init_from copies the encoder and, for the same task, the single-modality run's output head: late fusion
    as is (the ordinal CumulativeLinear too), cooperative (logistic outputs) linearised as f = z / 8 + 1/4."""
    from cardiofusion.training.fit import warm_start
    from cardiofusion.training.module import CardioFusionModule

    for kind, fusion in (("ordinal", "late"), ("multilabel", "cooperative")):
        src = fit(_config(cohort, TASKS[kind], "ecg", max_epochs=1), tmp_path / f"ecg_{kind}", progress=False)
        source = load_run(src.run_dir).model
        cfg = _config(cohort, TASKS[kind], fusion).with_task_outputs()
        model = CardioFusionModule(cfg.to_dict()).model
        copied = warm_start(model, {"ecg": str(src.run_dir)})
        assert copied["ecg"] == len(source.ecg_encoder.state_dict())
        for k, v in source.ecg_encoder.state_dict().items():
            torch.testing.assert_close(model.ecg_encoder.state_dict()[k], v)
        src_head, dst_head = source.fusion.head.state_dict(), model.fusion.ecg_head.state_dict()
        for k, v in src_head.items():
            want = v if fusion == "late" else (v / 8 if k == "weight" else v / 8 + 0.25)
            torch.testing.assert_close(dst_head[k], want)


@pytest.mark.parametrize("fusion", ["early", "late", "ecg"])
@pytest.mark.parametrize("weights", [None, "balanced"])
def test_ordinal_class_weights_keep_every_class(fusion, weights):
    """Regression (issue 15): with uninformative inputs the loss-minimising CORAL head must give the (weighted)
    class frequencies. ``balanced`` used to weight each cumulative output [y > j] to 50/50, which drives every
    P(y > j) to 0.5 and the middle classes' probability to 0, so a model predicted only the two extreme classes."""
    from cardiofusion.models.model import create_fusion
    from cardiofusion.tasks.losses import task_loss

    task = load_task(TASKS["ordinal"])
    counts = np.array([40, 30, 20, 10])
    y = np.repeat(np.arange(4), counts).astype(float)
    torch.manual_seed(0)
    head = create_fusion(fusion, ecg_dim=1, cxr_dim=1, num_outputs=3, link="cumulative").eval()
    pw = task_pos_weight(task, y, weights)
    features = {"ecg": torch.ones(len(y), 1), "cxr": torch.ones(len(y), 1)}
    opt = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=500, line_search_fn="strong_wolfe")
    label = torch.tensor(y, dtype=torch.float32)

    def closure():
        opt.zero_grad()
        loss = task_loss(task, head, head(features), label, pos_weight=pw)["loss"]
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    prob = head(features).prob[0].detach().numpy()
    # independent reference: the class frequencies, each class weighted by scikit-learn's balanced weight
    w = np.ones(4) if weights is None else counts.sum() / (4 * counts)
    want = counts * w / (counts * w).sum()
    np.testing.assert_allclose(prob, want, atol=0.02)
