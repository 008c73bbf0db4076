"""``fit``: one training run into a self-describing, resumable run folder.

Run folder layout::

    config.yaml          the resolved TrainConfig (reload: TrainConfig.from_file)
    checkpoints/         best-step*.ckpt (lowest val_loss) and last.ckpt (end of the latest epoch)
    metrics.csv          one row per epoch: epoch, train_loss, val_loss, val_auroc, lr, train_s, epoch_s
                         (other tasks: val_<metric> columns instead of val_auroc, evaluate.metric_names)
    logs/lightning/      Lightning's CSVLogger (step-level values); logs/tensorboard/ when asked
    val_scores.csv       the best checkpoint's validation scores, one row per record
    result.json          best epoch, best val loss, val AUROC (other tasks: their metrics and the fitted
                         task), timings, library versions
    reproduce.txt        the commands that reproduce or continue the run

Epochs are counted from 1 in ``metrics.csv``, ``result.json`` and printed messages.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger

from .. import __version__
from ..data.dataset import CohortDataModule
from ..configfile import jsonable
from ..errors import ConfigError, ReadError
from ..io.torchfile import read_torch_file
from .config import RESUME_OVERRIDABLE, TrainConfig
from .evaluate import auroc, evaluate_scores, metric_names, task_labels, task_metrics
from .module import CardioFusionModule
from .quiet import is_verbose, quiet_lightning

CONFIG_FILE = "config.yaml"
METRICS_CSV = "metrics.csv"
VAL_SCORES_CSV = "val_scores.csv"
RESULT_JSON = "result.json"
REPRODUCE_TXT = "reproduce.txt"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auroc", "lr", "train_s", "epoch_s")


@dataclass
class FitResult:
    """Where a finished run is and how it did (the best-validation-loss checkpoint).

    Attributes:
        run_dir: the run folder.
        best_checkpoint: checkpoint with the lowest validation loss.
        best_epoch: its epoch (counted from 1).
        best_val_loss: its validation loss.
        val_auroc: validation AUROC of that checkpoint (record scores averaged over windows).
        val_scores: ``val_scores.csv`` path.
        metrics_csv: ``metrics.csv`` path (one row per epoch).
        epochs_trained: epochs completed, in total over resumptions.
        stopped_early: True when early stopping ended the run.
        result_json: ``result.json`` path.
        metric: the task's primary validation metric (``auroc`` for binary; ``macro_auroc``,
            ``quadratic_kappa`` (ordinal), ``mae``: ``Task.primary_metric``).
        val_metric: its value at the best checkpoint (binary: ``val_auroc``).
        higher_is_better: the metric's direction (False for ``mae``).
        val_metrics: every validation metric of the best checkpoint (:func:`~.evaluate.task_metrics`).
    """

    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    val_auroc: float
    val_scores: Path
    metrics_csv: Path
    epochs_trained: int = 0
    stopped_early: bool = False
    result_json: Path | None = None
    metric: str = "auroc"
    val_metric: float = math.nan
    higher_is_better: bool = True
    val_metrics: dict[str, float] | None = None


class EpochMetricsCSV(Callback):
    """Writes ``metrics.csv``: one row per finished epoch (rank 0 only).

    Rows are written when validation ends, before the checkpoints of that epoch; a resumed run first
    drops the rows of epochs it will redo, so the file always matches the checkpoints.
    """

    def __init__(self, path: str | os.PathLike, metrics: Sequence[str] = ("auroc",)):
        self.path = Path(path)
        self.metrics = tuple(f"val_{m}" for m in metrics)
        self.columns = ("epoch", "train_loss", "val_loss", *self.metrics, "lr", "train_s", "epoch_s")
        self._t_epoch = self._t_train = 0.0
        self._loss_sum, self._loss_n = 0.0, 0
        self._train_s = math.nan
        self.samples = 0  # training samples seen by this process during this invocation
        self.train_seconds = 0.0  # their time (training batches only)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        rows = _read_metrics(self.path)
        done = trainer.current_epoch  # epochs already completed (restored from a checkpoint)
        _write_metrics(self.path, [r for r in rows if int(r["epoch"]) <= done], self.columns)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t_epoch = time.perf_counter()
        self._train_s = math.nan
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = int(batch["label"].shape[0])
        self.samples += n
        if hasattr(pl_module, "epoch_train_loss"):
            return  # the module keeps its own epoch loss
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            # the epoch's mean step loss, kept on the device (no host sync per step); non-finite steps left out
            loss = loss.detach().reshape(())
            finite = torch.isfinite(loss)
            self._loss_sum = self._loss_sum + torch.where(finite, loss, torch.zeros_like(loss)) * n
            self._loss_n = self._loss_n + finite.to(loss.dtype) * n

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_s = time.perf_counter() - self._t_epoch
            self.train_seconds += self._train_s

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": (pl_module.epoch_train_loss() if hasattr(pl_module, "epoch_train_loss")
                           else float(self._loss_sum / self._loss_n) if float(self._loss_n) else math.nan),
            "val_loss": _metric(metrics, "val_loss"),
            **{name: _metric(metrics, name) for name in self.metrics},
            "lr": lr,
            "train_s": self._train_s,
            "epoch_s": time.perf_counter() - self._t_epoch,
        }
        rows = [r for r in _read_metrics(self.path) if int(r["epoch"]) < row["epoch"]]
        _write_metrics(self.path, rows + [{k: _fmt(v) for k, v in row.items()}], self.columns)


def _metric(metrics: dict[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if value is not None else math.nan


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_metrics(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
def resolve_precision(config: TrainConfig) -> str:
    """``auto`` -> ``16-mixed`` when training on CUDA, ``32-true`` otherwise."""
    if config.precision != "auto":
        return config.precision
    on_cuda = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    return "16-mixed" if on_cuda else "32-true"


def resolve_pos_weight(config: TrainConfig, train_labels: np.ndarray) -> float | None:
    """The loss's positive-class weight; ``balanced`` = negatives / positives of the training records."""
    if config.pos_weight is None:
        return None
    if config.pos_weight == "balanced":
        labels = train_labels[np.isfinite(train_labels)]
        n_pos, n_neg = int((labels > 0.5).sum()), int((labels <= 0.5).sum())
        if n_pos == 0 or n_neg == 0:
            raise ConfigError("pos_weight 'balanced' needs both classes among the training records")
        return n_neg / n_pos
    return float(config.pos_weight)


def library_versions() -> dict[str, str]:
    versions = {"cardiofusion": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "lightning": L.__version__, "numpy": np.__version__}
    for name in ("timm", "pandas", "sklearn", "torchvision"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except Exception:  # noqa: BLE001, S112 (optional libraries)
                continue
        versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def _check_resume_config(saved: TrainConfig, given: TrainConfig) -> None:
    a, b = saved.to_dict(), given.to_dict()
    for d in (a, b):  # the saved task carries the scaler fitted on the training split
        if d.get("task") is not None:
            d["task"] = {**d["task"], "scaler": None}
    changed = sorted(k for k in a if a[k] != b.get(k) and k not in RESUME_OVERRIDABLE)
    if changed:
        raise ConfigError(f"a resumed run keeps its saved settings; these differ: {', '.join(changed)} "
                          f"(only {', '.join(RESUME_OVERRIDABLE)} may change)")


def _checkpoint_epoch(path: Path) -> int:
    """Epoch index (from 0) stored in a Lightning checkpoint."""
    ckpt = read_torch_file(path, weights_only=False)
    return int(ckpt.get("epoch", 0)) if isinstance(ckpt, dict) else 0


def prepare_run(config: TrainConfig | None, run_dir: str | os.PathLike, *, resume: bool,
                command: str | None = None) -> TrainConfig:
    """Validate the run folder and config; writes ``config.yaml`` (returns the config to train with)."""
    run = Path(run_dir)
    config_path, last = run / CONFIG_FILE, run / CHECKPOINT_DIR / LAST_CHECKPOINT
    if resume:
        if not config_path.is_file():
            raise ReadError(run, f"not a run folder (no {CONFIG_FILE}); nothing to resume")
        if not last.is_file():
            raise ReadError(run, f"no {CHECKPOINT_DIR}/{LAST_CHECKPOINT} yet (killed during the first epoch?); "
                                 "start the run again without --resume")
        saved = TrainConfig.from_file(config_path)
        if config is None:
            config = saved
        else:
            config = config.with_task_outputs()
            _check_resume_config(saved, config)
            config = config.replace(task=saved.task)  # with the scaler fitted when the run started
    else:
        if config is None:
            raise ConfigError("a config is needed to start a run")
        if last.exists() or (run / RESULT_JSON).exists():
            raise ConfigError(f"{run} already holds a run; continue it with --resume or choose another folder")
        config = config.with_task_outputs()
    if not config.cache_dir or not config.manifest:
        raise ConfigError("cache_dir and manifest must be set")
    if tuple(config.model.leads) != tuple(config.preprocess.leads):
        raise ConfigError(f"model leads {tuple(config.model.leads)} differ from preprocessing leads "
                          f"{tuple(config.preprocess.leads)}")
    run.mkdir(parents=True, exist_ok=True)
    config.save(config_path)
    _write_reproduce(run, command, resume=resume)
    return config


def fit(config: TrainConfig | None, run_dir: str | os.PathLike, *, callbacks: Sequence[Callback] = (),
        resume: bool = False, progress: bool = True, command: str | None = None) -> FitResult:
    """Train a model into ``run_dir`` and evaluate its best-validation-loss checkpoint.

    Args:
        config: what to train; with ``resume`` it may be None (the saved ``config.yaml`` is used) or
            differ from the saved one only in :data:`~cardiofusion.training.config.RESUME_OVERRIDABLE`.
        run_dir: the run folder (created).
        callbacks: extra Lightning callbacks (e.g. an Optuna pruning callback).
        resume: continue from ``run_dir/checkpoints/last.ckpt``.
        progress: progress bar and model summary.
        command: the command line that started the run (written to ``reproduce.txt``).
    """
    t_start = time.perf_counter()
    run = Path(run_dir)
    config = prepare_run(config, run, resume=resume, command=command)
    ckpt_dir, last = run / CHECKPOINT_DIR, run / CHECKPOINT_DIR / LAST_CHECKPOINT

    L.seed_everything(config.seed, workers=True, verbose=False)
    task = None if config.task is None else config.task_spec()
    datamodule = CohortDataModule(config.cache_dir, config.manifest, config.preprocess, batch_size=config.batch_size,
                                  eval_batch_size=config.eval_batch_size,
                                  num_workers=min(config.num_workers, os.cpu_count() or 1),
                                  modalities=config.model.modalities, seed=config.seed,
                                  labels=task_labels(task, config.manifest))
    datamodule.setup()
    train_labels = datamodule.train_labels()
    if task is None:
        pos_weight = resolve_pos_weight(config, train_labels)
    else:
        from ..tasks.losses import task_pos_weight

        task.check_train_labels(train_labels, where=f"{config.manifest} (training split)")
        if not resume:  # a resumed run keeps the scaler it started with
            task = task.fit(train_labels)
            config = config.replace(task=task.to_dict())
            config.save(run / CONFIG_FILE)
        pos_weight = task_pos_weight(task, train_labels, config.pos_weight)
    module = CardioFusionModule(config.to_dict(), pos_weight=pos_weight)
    if config.init_from and not resume:
        warm_start(module.model, config.init_from)
    if resume:
        datamodule.start_epoch = _checkpoint_epoch(last) + 1

    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step:07d}", monitor="val_loss", mode="min",
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False)
    early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=config.patience)
    epoch_csv = EpochMetricsCSV(run / METRICS_CSV, metric_names(task))
    all_callbacks: list[Callback] = [epoch_csv, checkpoint, early_stopping, *callbacks]
    if progress:
        all_callbacks.append(TQDMProgressBar(refresh_rate=10))
    loggers: list[Any] = [CSVLogger(run / "logs", name="lightning")]
    if config.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run / "logs", name="tensorboard"))
    precision = resolve_precision(config)
    with quiet_lightning():
        return _fit_and_evaluate(config, run, module, datamodule, task, resume, all_callbacks, loggers, precision,
                                 checkpoint, early_stopping, epoch_csv, last, ckpt_dir, t_start, pos_weight, progress,
                                 command)


def _fit_and_evaluate(config: TrainConfig, run: Path, module: Any, datamodule: Any, task: Any, resume: bool,
                      all_callbacks: list[Callback], loggers: list[Any], precision: Any, checkpoint: Any,
                      early_stopping: Any, epoch_csv: Any, last: Path, ckpt_dir: Path, t_start: float,
                      pos_weight: Any, progress: bool, command: str | None) -> FitResult:
    """The Lightning part of :func:`fit` (run inside :func:`~cardiofusion.training.quiet.quiet_lightning`)."""
    trainer = L.Trainer(
        default_root_dir=run, max_epochs=config.max_epochs, accelerator=config.accelerator, devices=config.devices,
        strategy=config.strategy, num_nodes=config.num_nodes, precision=precision, callbacks=all_callbacks,
        logger=loggers, enable_progress_bar=progress, enable_model_summary=progress and is_verbose(),
        limit_train_batches=config.limit_train_batches, limit_val_batches=config.limit_val_batches,
        log_every_n_steps=config.log_every_n_steps,
    )
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    fit_s = time.perf_counter() - t_fit

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    if not best.is_file():
        raise ConfigError(f"training produced no checkpoint in {ckpt_dir}")
    result = FitResult(run_dir=run, best_checkpoint=best, best_epoch=_checkpoint_epoch(best) + 1,
                       best_val_loss=float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else math.nan,
                       val_auroc=math.nan, val_scores=run / VAL_SCORES_CSV, metrics_csv=run / METRICS_CSV,
                       epochs_trained=int(trainer.current_epoch), stopped_early=bool(early_stopping.stopped_epoch > 0),
                       result_json=run / RESULT_JSON)
    if not trainer.is_global_zero:
        return result

    # -- evaluate the best checkpoint (one process, full precision) ---------------------------------
    t_eval = time.perf_counter()
    device = trainer.strategy.root_device  # the module itself is back on the CPU after fit
    best_module = CardioFusionModule.load_from_checkpoint(best, map_location=device, pretrained=False,
                                                          weights_only=False)
    scores = evaluate_scores(best_module.model, datamodule.eval_dataloader("val"), task=task)
    scores.to_csv(result.val_scores, index=False)
    if task is None or task.is_binary:
        result.val_auroc = auroc(scores["label"].to_numpy(), scores["score"].to_numpy())
        result.val_metric, result.val_metrics = result.val_auroc, {"auroc": result.val_auroc}
    else:
        probs = scores[task.prediction_columns()].to_numpy(dtype=np.float64)
        if task.kind == "regression":
            probs = task.standardize(probs)
        result.val_metrics = task_metrics(task, task.labels_from_table(scores), probs)
        result.metric, result.higher_is_better = task.primary_metric
        result.val_metric = result.val_metrics[result.metric]
        result.val_auroc = result.val_metrics.get("macro_auroc", math.nan)
    eval_s = time.perf_counter() - t_eval

    info = {
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "val_auroc": result.val_auroc,
        "epochs_trained": result.epochs_trained,
        "stopped_early": result.stopped_early,
        "best_checkpoint": str(best),
        "last_checkpoint": str(last),
        "resumed": bool(resume),
        "precision": precision,
        "pos_weight": pos_weight,
        "modalities": list(config.model.modalities),
        "records": {split: len(ds) for split, ds in datamodule.datasets.items()},
        **_label_counts(task, datamodule),
        "seconds": {"this_invocation": round(time.perf_counter() - t_start, 2), "fit": round(fit_s, 2),
                    "evaluate_best": round(eval_s, 2), "training_batches": round(epoch_csv.train_seconds, 2)},
        "train_samples_per_s": (round(epoch_csv.samples / epoch_csv.train_seconds, 1)
                                if epoch_csv.train_seconds > 0 else None),
        "device": _device_name(device),
        "versions": library_versions(),
        "command": command,
    }
    if task is not None:
        info.update(task=task.to_dict(), metric=result.metric, val_metric=result.val_metric,
                    higher_is_better=result.higher_is_better, val_metrics=result.val_metrics)
    _write_json(run / RESULT_JSON, info)
    return result


def _label_counts(task: Any, datamodule: CohortDataModule) -> dict[str, Any]:
    """``positives`` per split (binary, as before); per class / label, or known values, for other tasks."""
    if task is None or task.is_binary:
        return {"positives": {split: int(np.nansum(ds.label)) for split, ds in datamodule.datasets.items()}}
    counts: dict[str, Any] = {}
    for split, ds in datamodule.datasets.items():
        lab = np.asarray(ds.label, dtype=np.float64)
        if task.kind == "multiclass":
            counts[split] = {c: int((lab == i).sum()) for i, c in enumerate(task.classes)}
        elif task.kind == "multilabel":
            counts[split] = {c: int(np.nansum(lab.reshape(len(lab), -1)[:, j])) for j, c in enumerate(task.classes)}
        else:
            counts[split] = {c: int(np.isfinite(lab.reshape(len(lab), -1)[:, j]).sum())
                             for j, c in enumerate(task.classes)}
    key = {"multiclass": "class_counts", "multilabel": "positives", "regression": "known_values"}[task.kind]
    return {key: counts}


def warm_start(model: torch.nn.Module, init_from: dict[str, str]) -> dict[str, int]:
    """Copy encoder weights into ``model`` from trained runs: ``{"ecg": run, "cxr": run}``.

    The source run's encoder must have the same architecture (names and shapes); returns the number of
    encoder tensors copied per modality.  When the source is a single-modality run and the target head has
    a score head for that modality, that head starts from the source's too: ``late`` copies it (both are
    logits); ``cooperative`` takes it linearised onto its squared-loss scale, ``f = z / 8 + 1/4`` for the
    source logit ``z``, so that ``f_ecg + f_cxr = 1/2 + (z_ecg + z_cxr) / 8``, the first-order expansion of
    the mean of the two single-modality probabilities: training starts from late fusion instead of from
    a random head that would first disturb the pretrained encoders.
    """
    from ..models.fusion import CooperativeFusion, LateFusion
    from .inference import load_run

    copied = {}
    for modality, source in init_from.items():
        target = getattr(model, f"{modality}_encoder", None)
        if target is None:
            raise ConfigError(f"init_from[{modality!r}]: this model has no {modality} encoder")
        pretrained = pretraining_encoder_state(source) if modality == "ecg" else None
        if pretrained is not None:  # an ECG pretraining run (paper 003: MAE or CLIP alignment): its encoder only
            dst = target.state_dict()
            if pretrained.keys() != dst.keys() or any(pretrained[k].shape != dst[k].shape for k in dst):
                raise ConfigError(f"init_from['ecg']: the pretrained ECG encoder of {source} does not match this "
                                  f"model's ({type(target).__name__}, {model_ecg_name(model)})")
            target.load_state_dict(pretrained)
            copied[modality] = len(pretrained)
            continue
        loaded = load_run(source)
        encoder = getattr(loaded.model, f"{modality}_encoder", None)
        if encoder is None:
            raise ConfigError(f"init_from[{modality!r}]: {source} has no {modality} encoder")
        src, dst = encoder.state_dict(), target.state_dict()
        if src.keys() != dst.keys() or any(src[k].shape != dst[k].shape for k in dst):
            raise ConfigError(f"init_from[{modality!r}]: the {modality} encoder of {source} "
                              f"({type(encoder).__name__}) does not match this model's")
        target.load_state_dict(src)
        copied[modality] = len(src)
        source_head = getattr(loaded.model.fusion, "head", None) if loaded.config.model.fusion == modality else None
        target_head = getattr(model.fusion, f"{modality}_head", None)
        same_outputs = (getattr(loaded.model.fusion, "link", "logistic") == getattr(model.fusion, "link", "logistic")
                        and source_head is not None and target_head is not None
                        and type(source_head) is type(target_head)
                        and all(a.shape == b.shape for a, b in zip(source_head.state_dict().values(),
                                                                   target_head.state_dict().values())))
        if not same_outputs:
            continue
        if isinstance(model.fusion, LateFusion):  # same parametrisation (also the ordinal CumulativeLinear)
            target_head.load_state_dict(source_head.state_dict())
        elif (isinstance(model.fusion, CooperativeFusion) and model.fusion.link == "logistic"
              and isinstance(target_head, torch.nn.Linear)):
            with torch.no_grad():
                target_head.weight.copy_(source_head.weight / 8.0)
                target_head.bias.copy_(source_head.bias / 8.0 + 0.25)
    return copied


def pretraining_encoder_state(source: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The ECG encoder weights of a pretraining run folder or checkpoint (:mod:`.pretrain_fit`: the MAE's
    ``mae.encoder.*`` or the aligner's ``aligner.ecg_encoder.*``); None when ``source`` is not one (a
    :func:`fit` run: :func:`warm_start` reads it with ``load_run``)."""
    from .inference import best_checkpoint

    path = Path(source)
    if path.is_dir():
        try:
            saved = json.loads((path / RESULT_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if saved.get("kind") not in ("mae", "align"):
            return None
        path = best_checkpoint(path)
    if not path.is_file():
        return None
    try:
        ckpt = read_torch_file(path, weights_only=False)
    except ReadError:  # not a torch file: load_run names the problem
        return None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return None
    for prefix in ("mae.encoder.", "aligner.ecg_encoder."):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return None


def model_ecg_name(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "ecg_encoder", "?"))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2))
    os.replace(tmp, path)


def _write_reproduce(run: Path, command: str | None, *, resume: bool) -> None:
    path = run / REPRODUCE_TXT
    if resume and path.exists():
        if command:
            with open(path, "a") as f:
                f.write(f"# Resumed with:\n{command}\n")
        return
    q = shlex.quote(str(run))
    lines = [
        f"# cardiofusion {__version__}: how to reproduce this run",
        "# Train again with exactly the saved settings (into a new folder):",
        f"cardiofusion train --config {shlex.quote(str(run / CONFIG_FILE))} --out NEW_RUN_FOLDER",
        "# Continue this run after an interruption (or with a higher --max-epochs):",
        f"cardiofusion train --resume {q}",
    ]
    if command:
        lines += ["# The command that started it:", command]
    path.write_text("\n".join(lines) + "\n")


__all__ = ["EpochMetricsCSV", "FitResult", "fit", "warm_start", "library_versions", "resolve_pos_weight", "resolve_precision"]
