"""Bayesian tuning (``cardiofusion.training.tuning``, ``cardiofusion tune``).

Most tests run real Optuna studies (SQLite in tmp_path) with a fake ``fit`` that "trains" by feeding
per-epoch metrics through the callbacks it is given, exactly as Lightning would; one test runs the
real thing end to end on a tiny synthetic cache through the command line.
"""

from __future__ import annotations

from conftest import build_tiny_cache

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from cardiofusion._compat import ensure_torchvision

ensure_torchvision()

import optuna
import torch
from optuna.trial import TrialState

from cardiofusion.errors import ConfigError
from cardiofusion.training.tuning import (
    PruningCallback,
    TuneConfig,
    apply_params,
    auroc_at_lowest_val_loss,
    best_trial,
    field_help,
    make_objective,
    override_config,
    tune,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- stand-ins for TrainConfig / fit -----------------------------------------------------------------
@dataclass
class FakeModel:
    fusion: str = "cooperative"
    rho: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FakeTrainConfig:
    model: FakeModel = field(default_factory=FakeModel)
    batch_size: int = 64
    lr: float = 1e-4
    max_epochs: int = 4

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "batch_size": self.batch_size, "lr": self.lr,
                "max_epochs": self.max_epochs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FakeTrainConfig:
        return cls(model=FakeModel(**d["model"]), batch_size=d["batch_size"], lr=d["lr"], max_epochs=d["max_epochs"])


def _trainer(epoch: int, loss: float | None, auroc: float | None, sanity: bool = False) -> SimpleNamespace:
    metrics = {}
    if loss is not None:
        metrics["val_loss"] = torch.tensor(loss)
    if auroc is not None:
        metrics["val_auroc"] = torch.tensor(auroc)
    return SimpleNamespace(sanity_checking=sanity, current_epoch=epoch, callback_metrics=metrics, is_global_zero=True)


class FakeFit:
    """``fit`` stand-in: epochs of (val_loss, val_auroc) from ``curve(config)``, reported through callbacks."""

    def __init__(self, curve, report_fit_auroc: bool = False):
        self.curve = curve
        self.report_fit_auroc = report_fit_auroc
        self.configs: list[Any] = []

    def __call__(self, config, run_dir, *, callbacks=(), resume=False):
        self.configs.append(config)
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        epochs = self.curve(config)
        for cb in callbacks:  # Lightning's sanity check: must be ignored
            cb.on_validation_end(_trainer(0, 9.9, 0.0, sanity=True), None)
        for epoch, (loss, auroc) in enumerate(epochs):
            for cb in callbacks:
                cb.on_validation_end(_trainer(epoch, loss, auroc), None)
        best = min(range(len(epochs)), key=lambda e: epochs[e][0])
        ckpt = run_dir / "checkpoints" / f"best-epoch={best + 1}.ckpt"
        ckpt.write_text("fake")
        return SimpleNamespace(  # epochs counted from 1, as FitResult does
            run_dir=run_dir, best_checkpoint=ckpt, best_epoch=best + 1, best_val_loss=epochs[best][0],
            val_auroc=epochs[best][1] if self.report_fit_auroc else None,
            val_scores=run_dir / "val_scores.csv", metrics_csv=run_dir / "metrics.csv")


def lr_curve(config) -> list[tuple[float, float]]:
    """A smooth landscape: AUROC peaks at lr = 1e-4; the last epoch has the best AUROC but not the best loss."""
    q = 0.9 - 0.1 * abs(math.log10(config.lr) + 4)
    return [(1.0, q - 0.2), (0.5, q), (0.6, q + 0.05)]


def _config(**kw) -> TuneConfig:
    kw.setdefault("base", FakeTrainConfig())
    kw.setdefault("pruner", "none")
    kw.setdefault("n_startup_trials", 3)
    return TuneConfig(**kw)


# -- tests ---------------------------------------------------------------------------------------------
def test_search_space_respected(tmp_path):
    fit = FakeFit(lr_curve)
    cfg = _config(n_trials=6, rho_range=(0.2, 0.4), batch_sizes=(64, 128), lr_range=(1e-6, 1e-3))
    result = tune(cfg, tmp_path / "t", fit=fit, log=lambda s: None)
    trials = result.study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    for t, train_cfg in zip(trials, fit.configs):
        assert set(t.params) == {"rho", "batch_size", "lr"}
        assert 0.2 <= t.params["rho"] <= 0.4
        assert t.params["batch_size"] in (64, 128)
        assert 1e-6 <= t.params["lr"] <= 1e-3
        # the trial's training config carries exactly the sampled values
        assert (train_cfg.model.rho, train_cfg.batch_size, train_cfg.lr) == (
            t.params["rho"], t.params["batch_size"], t.params["lr"])
    assert {t.params["batch_size"] for t in trials} == {64, 128}


def test_ecg_only_recipe_and_no_rho_for_other_fusions(tmp_path):
    """The paper's ECG-only recipe (batch 32, lr in [1e-7, 1e-3]); rho is not searched without cooperative fusion."""
    fit = FakeFit(lr_curve)
    base = FakeTrainConfig(model=FakeModel(fusion="ecg", rho=0.7))
    cfg = _config(base=base, n_trials=5, batch_sizes=(32,), lr_range=(1e-7, 1e-3))
    result = tune(cfg, tmp_path / "t", fit=fit, log=lambda s: None)
    for t in result.study.trials:
        assert set(t.params) == {"batch_size", "lr"}
        assert t.params["batch_size"] == 32 and 1e-7 <= t.params["lr"] <= 1e-3
    assert all(c.model.rho == 0.7 and c.batch_size == 32 for c in fit.configs)


def test_selection_rule_lowest_val_loss_epoch():
    history = [{"epoch": 0, "val_loss": 1.0, "val_auroc": 0.6},
               {"epoch": 1, "val_loss": 0.4, "val_auroc": 0.7},
               {"epoch": 2, "val_loss": 0.4, "val_auroc": 0.8},  # tie: the earlier epoch is kept
               {"epoch": 3, "val_loss": float("nan"), "val_auroc": 0.99},
               {"epoch": 4, "val_loss": 0.9, "val_auroc": 0.95}]
    assert auroc_at_lowest_val_loss(history) == (0.7, 1)
    assert auroc_at_lowest_val_loss(history[2:]) == (0.8, 2)
    assert auroc_at_lowest_val_loss([]) == (None, None)


@pytest.mark.parametrize("fit_reports_auroc", [False, True])
def test_objective_uses_auroc_at_lowest_val_loss_epoch(tmp_path, fit_reports_auroc):
    fit = FakeFit(lambda c: [(1.0, 0.60), (0.3, 0.71), (0.5, 0.95), (0.4, 0.97)], report_fit_auroc=fit_reports_auroc)
    cfg = _config(n_trials=1)
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(cfg, FakeTrainConfig(), tmp_path, fit=fit, log=lambda s: None), n_trials=1)
    t = study.trials[0]
    assert t.value == pytest.approx(0.71)  # not the best AUROC of any epoch (0.97)
    assert t.user_attrs["best_epoch"] == 2
    assert t.user_attrs["run_dir"] == str(tmp_path / "trials" / "trial_0000")
    assert t.user_attrs["best_checkpoint"].endswith("best-epoch=2.ckpt")
    assert [h["epoch"] for h in t.user_attrs["history"]] == [1, 2, 3, 4]  # the sanity check is not recorded


def test_pruning_callback_reports_and_prunes():
    class FakeTrial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return len(self.reports) >= 2

    trial = FakeTrial()
    cb = PruningCallback(trial)
    from lightning.pytorch.callbacks import Callback

    assert isinstance(cb, Callback)
    cb.on_validation_end(_trainer(0, 1.0, 0.5, sanity=True), None)  # sanity check: ignored
    cb.on_validation_end(_trainer(0, 1.0, None), None)  # no AUROC (one class): recorded, not reported
    assert trial.reports == [] and len(cb.history) == 1
    cb.on_validation_end(_trainer(1, 0.8, 0.55), None)
    with pytest.raises(optuna.TrialPruned):
        cb.on_validation_end(_trainer(2, 0.7, 0.52), None)
    assert trial.reports == [(2, pytest.approx(0.55)), (3, pytest.approx(0.52))]  # epochs counted from 1
    assert cb.pruned_epoch == 3


def test_median_pruner_prunes_bad_trials(tmp_path):
    # good trials first (enqueued), then a hopeless one: the median pruner stops it after epoch 0
    def curve(c):
        return [(1.0, 0.9), (0.8, 0.9), (0.7, 0.9)] if c.lr > 1e-5 else [(1.0, 0.1), (0.9, 0.1), (0.8, 0.1)]

    out = tmp_path / "t"
    cfg = _config(n_trials=3, pruner="median", prune_startup_trials=2, prune_warmup_epochs=0)
    study = optuna.create_study(storage="sqlite:///" + str(tmp_path / "s.db"), study_name="s", direction="maximize")
    for lr in (1e-4, 2e-4, 1e-6):
        study.enqueue_trial({"rho": 0.5, "batch_size": 64, "lr": lr})
    result = tune(dataclasses.replace(cfg, storage="sqlite:///" + str(tmp_path / "s.db"), study_name="s"), out,
                  fit=FakeFit(curve), log=lambda s: None)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert (result.n_complete, result.n_pruned) == (2, 1)
    pruned = result.study.trials[2]
    assert pruned.intermediate_values == {1: pytest.approx(0.1)}  # stopped after its first epoch
    assert pruned.user_attrs["run_dir"].endswith("trial_0002")


def test_interrupted_study_resumes(tmp_path):
    out = tmp_path / "t"
    fit = FakeFit(lr_curve)
    r1 = tune(_config(n_trials=2), out, fit=fit, log=lambda s: None)
    assert r1.n_complete == 2 and (out / "study.db").exists()

    # a worker killed mid-trial leaves it RUNNING in the storage
    study = optuna.load_study(study_name="cardiofusion", storage="sqlite:///" + str((out / "study.db").resolve()))
    killed = study.ask()
    killed.suggest_float("rho", 0, 1)
    killed.suggest_categorical("batch_size", [64, 128])
    killed.suggest_float("lr", 1e-6, 1e-3, log=True)
    assert killed.number == 2

    lines: list[str] = []
    r2 = tune(_config(n_trials=3), out, fit=fit, log=lines.append)  # same command, 3 in total -> 1 more
    trials = r2.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]
    assert trials[3].params == trials[2].params  # the interrupted trial was re-queued and run again
    assert trials[3].system_attrs.get("failed_trial") == 2
    assert len(fit.configs) == 3
    assert any("re-queued" in s for s in lines)
    assert (out / "trials" / "trial_0003").is_dir()

    # a finished study runs nothing more
    r3 = tune(_config(n_trials=3), out, fit=fit, log=lambda s: None)
    assert len(fit.configs) == 3 and r3.n_complete == 3

    # asking for more continues with new draws (the resumed sampler does not replay the first session's)
    r4 = tune(_config(n_trials=5), out, fit=fit, log=lambda s: None)
    assert r4.n_complete == 5 and len(fit.configs) == 5
    first = [t.params["lr"] for t in r4.study.trials[:2]]
    assert all(t.params["lr"] not in first for t in r4.study.trials[4:])


def test_explicit_storage_does_not_fail_live_trials(tmp_path):
    """With an explicit (possibly shared) storage, RUNNING trials of other workers are left alone."""
    url = "sqlite:///" + str(tmp_path / "shared.db")
    study = optuna.create_study(storage=url, study_name="shared", direction="maximize")
    study.ask()  # another worker's live trial
    r = tune(_config(n_trials=1, storage=url, study_name="shared"), tmp_path / "w1", fit=FakeFit(lr_curve),
             log=lambda s: None)
    assert [t.state for t in r.study.trials] == [TrialState.RUNNING, TrialState.COMPLETE]


def test_best_trial_selection_and_outputs(tmp_path):
    out = tmp_path / "t"
    cfg = _config(n_trials=4, rho_range=None)
    study = optuna.create_study(storage="sqlite:///" + str(tmp_path / "s.db"), study_name="s", direction="maximize")
    for lr in (1e-6, 1e-4, 1e-3, 1e-4):  # the 2nd and 4th tie: the earlier one wins
        study.enqueue_trial({"batch_size": 64, "lr": lr})
    result = tune(dataclasses.replace(cfg, storage="sqlite:///" + str(tmp_path / "s.db"), study_name="s"), out,
                  fit=FakeFit(lr_curve), log=lambda s: None)
    assert result.best_number == 1 and best_trial(result.study).number == 1
    assert result.best_value == pytest.approx(0.9)  # AUROC at the lowest-val-loss epoch of lr_curve
    assert result.best_params == {"batch_size": 64, "lr": pytest.approx(1e-4)}
    assert result.best_run_dir == str(out / "trials" / "trial_0001")
    assert result.best_checkpoint.endswith("best-epoch=2.ckpt") and Path(result.best_checkpoint).exists()

    best = json.loads((out / "best.json").read_text())
    assert best["best"]["number"] == 1 and best["best"]["run_dir"] == result.best_run_dir
    assert best["n_complete"] == 4

    df = pd.read_csv(out / "trials.csv")
    assert list(df["number"]) == [0, 1, 2, 3]
    assert {"value", "state", "params_batch_size", "params_lr", "run_dir", "best_checkpoint", "best_epoch"} <= set(df.columns)
    assert list(df["run_dir"]) == [str(out / "trials" / f"trial_{i:04d}") for i in range(4)]
    assert list(df["state"]) == ["COMPLETE"] * 4
    assert df["value"].tolist() == pytest.approx([0.7, 0.9, 0.8, 0.9])
    assert (out / "tune.yaml").exists()


def test_config_validation_and_overrides(tmp_path):
    with pytest.raises(ConfigError):
        _config(lr_range=(0.0, 1e-3)).validate()
    with pytest.raises(ConfigError):
        _config(rho_range=(0.8, 0.2)).validate()
    with pytest.raises(ConfigError):
        _config(pruner="sometimes").validate()
    with pytest.raises(ConfigError):
        _config(batch_sizes=()).validate()
    # one tuning folder belongs to one study
    tune(_config(n_trials=1), tmp_path / "t", fit=FakeFit(lr_curve), log=lambda s: None)
    with pytest.raises(ConfigError, match="already holds"):
        tune(_config(n_trials=1, study_name="other"), tmp_path / "t", fit=FakeFit(lr_curve), log=lambda s: None)

    base = FakeTrainConfig()
    new = override_config(base, ["max_epochs=7", "model.fusion=early", "lr=3e-5"])
    assert (new.max_epochs, new.model.fusion, new.lr) == (7, "early", 3e-5)
    with pytest.raises(ConfigError, match="unknown setting"):
        override_config(base, ["epochs=3"])
    assert apply_params(base, {"rho": 0.25, "batch_size": 128, "lr": 1e-5}).model.rho == 0.25
    assert base.model.rho == 0.5  # the base config is never modified
    assert "validation AUROC" not in field_help()["n_trials"] and "COMPLETE or PRUNED" in field_help()["n_trials"]


def test_cli_help_documents_everything(capsys):
    from cardiofusion.cli import main

    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--out", "--set", "--n-trials", "--timeout", "--rho-range", "--batch-sizes",
                 "--lr-range", "--storage", "--study-name", "--pruner", "--seed", "--fail-running",
                 "postgresql://", "1e-7", "lowest-validation-loss"):
        assert flag in text, flag


# -- the real thing, end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> dict[str, Path]:
    """A ~30-patient synthetic export -> cohort -> cache (as the demo builds it), 64-px X-rays, 4 s ECGs."""
    return build_tiny_cache(tmp_path_factory.mktemp("tune_data"), fs=250.0, duration_s=4.0, image_size=64)


@pytest.mark.slow
def test_tune_end_to_end_cli(tiny_cache, tmp_path, capsys):
    # one batch size and two batches per epoch: the first training steps of a process pay a one-time
    # kernel set-up per tensor shape on CPU, which dominates this test
    from cardiofusion.cli import main
    from cardiofusion.models import ModelConfig
    from cardiofusion.transforms.preprocess import PreprocessConfig
    from cardiofusion.training import TrainConfig

    base = TrainConfig(
        cache_dir=str(tiny_cache["cache"]), manifest=str(tiny_cache["manifest"]),
        model=ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="cxr_tiny"),
        preprocess=PreprocessConfig(fs=250.0, image_size=64), batch_size=16, max_epochs=3, num_workers=0,
        accelerator="cpu")
    base.save(tmp_path / "base.yaml")
    out = tmp_path / "tune"
    rc = main(["tune", "--config", str(tmp_path / "base.yaml"), "--out", str(out), "--n-trials", "2",
               "--batch-sizes", "8", "--lr-range", "1e-5", "1e-3", "--set", "max_epochs=1",
               "--set", "limit_train_batches=2", "--no-progress", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    best = json.loads((out / "best.json").read_text())
    assert best["n_complete"] == 2
    b = best["best"]
    assert f"best trial {b['number']}: validation AUROC {b['value']:.4f}" in text
    assert 0.0 <= b["value"] <= 1.0 and 0 <= b["params"]["rho"] <= 1 and b["params"]["batch_size"] == 8
    run_dir = Path(b["run_dir"])
    assert run_dir == out / "trials" / f"trial_{b['number']:04d}"
    assert Path(b["best_checkpoint"]).is_file() and Path(b["best_checkpoint"]).parent.parent == run_dir
    # the value is the AUROC the run reports for its lowest-val-loss checkpoint
    run_result = json.loads((run_dir / "result.json").read_text())
    assert b["value"] == pytest.approx(run_result["val_auroc"])
    trial_cfg = TrainConfig.from_file(run_dir / "config.yaml")
    assert (trial_cfg.max_epochs, trial_cfg.batch_size, trial_cfg.model.rho) == (
        1, b["params"]["batch_size"], pytest.approx(b["params"]["rho"]))
    assert trial_cfg.lr == pytest.approx(b["params"]["lr"])
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 2 and set(df["state"]) == {"COMPLETE"} and all(Path(p).is_dir() for p in df["run_dir"])


# -- tasks beyond binary: the objective is the task's primary metric, with its direction ----------------
@dataclass
class FakeTaskTrainConfig(FakeTrainConfig):
    task: dict[str, Any] | None = None

    def task_spec(self):
        from cardiofusion.tasks import load_task

        return load_task(self.task)


class FakeTaskFit:
    """``fit`` stand-in for a task: epochs of (val_loss, metric) reported as ``val_<metric>``."""

    def __init__(self, metric: str, curve):
        self.metric, self.curve, self.configs = metric, curve, []

    def __call__(self, config, run_dir, *, callbacks=(), resume=False):
        self.configs.append(config)
        epochs = self.curve(config)
        for epoch, (loss, value) in enumerate(epochs):
            trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch, is_global_zero=True,
                                      callback_metrics={"val_loss": torch.tensor(loss),
                                                        f"val_{self.metric}": torch.tensor(value)})
            for cb in callbacks:
                cb.on_validation_end(trainer, None)
        best = min(range(len(epochs)), key=lambda e: epochs[e][0])
        return SimpleNamespace(run_dir=Path(run_dir), best_checkpoint=None, best_epoch=best + 1,
                               best_val_loss=epochs[best][0], val_auroc=math.nan, val_metric=epochs[best][1],
                               metric=self.metric)


@pytest.mark.parametrize(("task", "metric", "maximise"), [("echo_measurements", "mae", False),
                                                          ("as_severity", "quadratic_kappa", True),
                                                          ("cardiac_multilabel", "macro_auroc", True)])
def test_tuning_objective_follows_the_task(tmp_path, task, metric, maximise):
    def curve(config):  # the metric is best at lr = 1e-4: MAE lowest, kappa / AUROC highest
        d = abs(math.log10(config.lr) + 4)
        return [(1.0, 5.0), (0.5, 1.0 + d if not maximise else 0.9 - 0.1 * d), (0.7, 0.0 if not maximise else 1.0)]

    fit = FakeTaskFit(metric, curve)
    base = FakeTaskTrainConfig(task=task)
    lines: list[str] = []
    result = tune(_config(base=base, n_trials=4), tmp_path / "t", fit=fit, log=lines.append)
    study = result.study
    assert study.direction == (optuna.study.StudyDirection.MAXIMIZE if maximise else
                               optuna.study.StudyDirection.MINIMIZE)
    values = [t.value for t in study.trials]
    # the value at the lowest-val-loss epoch (epoch 2), never the better last epoch
    want = [curve(c)[1][1] for c in fit.configs]
    assert values == pytest.approx(want)
    assert result.best_value == (max(values) if maximise else min(values))
    assert result.metric == metric
    best = json.loads(result.best_json.read_text())
    assert ("highest" if maximise else "lowest") in best["selection"]
    assert any(metric.replace("_", " ").split()[-1].lower() in line.lower() for line in lines)
