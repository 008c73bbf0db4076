"""``fit_pretrain``: one self-supervised / cross-modal pretraining run (paper 003 stages 1 and 2) into a
resumable run folder laid out like :func:`cardiofusion.training.fit`'s::

    config.yaml          the resolved PretrainConfig (reload: PretrainConfig.from_file)
    checkpoints/         best-step*.ckpt (best ``monitor``: lowest val_loss by default) and last.ckpt (end of the latest epoch)
    metrics.csv          one row per epoch: epoch, train_loss, val_loss, (retrieval top-k), lr, train_s, epoch_s
    logs/lightning/      Lightning's CSVLogger
    result.json          best epoch and val loss, the best checkpoint's validation (and test) metrics, timings

``kind`` ``mae`` trains :class:`~cardiofusion.training.ecg_pretrain.MAEPretrainModule` on the ECGs of any
cohort (labels unused); ``align`` trains :class:`~cardiofusion.training.ecg_align.AlignmentModule` on the
paired records of a cohort, and its result holds the best checkpoint's retrieval top-1 / top-5 on the
validation and test splits with their chance levels.  Selection (early stopping, best checkpoint) uses
the validation split only.  Wrapped by :func:`cardiofusion.recipes.steps.ensure_pretrain_run` for reuse.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from ..configfile import SettingsFile, require_positive_ints
from ..data.dataset import CohortDataModule
from ..errors import ConfigError
from ..transforms.preprocess import PreprocessConfig
from .config import PRECISIONS, _plain, parse_devices
from .fit import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_CSV,
    RESULT_JSON,
    EpochMetricsCSV,
    _checkpoint_epoch,
    _device_name,
    _write_json,
    library_versions,
)

__all__ = ["PRETRAIN_KINDS", "RETRIEVAL_METRICS", "PretrainConfig", "PretrainResult", "fit_pretrain",
           "pretrain_module"]

#: ``kind`` -> the modalities its batches load.
PRETRAIN_KINDS: dict[str, tuple[str, ...]] = {"mae": ("ecg",), "align": ("ecg", "cxr"), "generate": ("ecg", "cxr")}

#: Retrieval metrics logged by the alignment module (``val_<name>``).
RETRIEVAL_METRICS = ("ecg_to_image_top1", "ecg_to_image_top5", "image_to_ecg_top1", "image_to_ecg_top5",
                     "chance_top1", "chance_top5")


@dataclass
class PretrainConfig(SettingsFile):
    """Everything a pretraining run depends on (saved as ``RUN/config.yaml``).

    Attributes:
        kind: ``mae`` (stage 1, :class:`~cardiofusion.training.ecg_pretrain.MAEPretrainConfig` in ``module``),
            ``align`` (stage 2, :class:`~cardiofusion.training.ecg_align.AlignConfig` in ``module``) or
            ``generate`` (stage 4, :class:`~cardiofusion.training.ecg_generate.GenerateConfig` in ``module``).
        module: the module's config as a mapping (validated by its class).
        cache_dir, manifest: the preprocessing cache and the cohort manifest (with ``split``).
        preprocess: windows, augmentation, normalisation (the model leads are ``preprocess.leads``).
        batch_size, eval_batch_size: records per training / validation batch.
        max_epochs, patience: epochs, and early stopping on ``monitor``.
        monitor: what selects the best checkpoint and stops early: ``val_loss`` (lowest; every kind) or, for
            ``align``, a validation retrieval metric (highest): ``val_ecg_to_image_top1`` / ``_top5``,
            ``val_image_to_ecg_top1`` / ``_top5`` (over the whole validation set, unlike the in-batch loss).
        seed: weights, shuffling, augmentation and masks.
        num_workers, accelerator, devices, precision: as :class:`~cardiofusion.training.TrainConfig`.
        limit_train_batches, limit_val_batches: Lightning's per-epoch limits (quick runs).
        log_every_n_steps: step-level logging period.
        measurements: ``align`` only: cohort columns (cardiac measurements) fed to the loss's measurement-aware
            negative weighting when ``module.use_measurements`` is set, standardised with the training split's
            mean and standard deviation (NaN = unknown).
    """

    kind: str = "mae"
    module: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ""
    manifest: str = ""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    batch_size: int = 64
    eval_batch_size: int | None = None
    max_epochs: int = 20
    patience: int = 5
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str | list = "auto"
    precision: str = "auto"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = 10
    measurements: list[str] = field(default_factory=list)
    monitor: str = "val_loss"

    SETTINGS_NAME = "pretraining"

    def __post_init__(self) -> None:
        if self.kind not in PRETRAIN_KINDS:
            raise ConfigError(f"pretraining kind must be one of {', '.join(PRETRAIN_KINDS)}, got {self.kind!r}")
        if isinstance(self.preprocess, Mapping):
            self.preprocess = PreprocessConfig.from_dict(dict(self.preprocess))
        if not isinstance(self.module, Mapping):
            raise ConfigError("pretraining module settings must be a mapping")
        self.module = self.module_config().to_dict()  # validated, defaults filled in
        self.cache_dir, self.manifest = str(self.cache_dir), str(self.manifest)
        require_positive_ints(self, ("batch_size", "max_epochs", "patience", "log_every_n_steps"))
        if self.eval_batch_size is not None and int(self.eval_batch_size) < 1:
            raise ConfigError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
        if int(self.num_workers) < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        self.num_workers = int(self.num_workers)
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self.devices = parse_devices(self.devices)
        self.measurements = [str(c) for c in (self.measurements or [])]
        self.monitor = str(self.monitor)
        allowed = ["val_loss"] + ([f"val_{m}" for m in RETRIEVAL_METRICS if not m.startswith("chance")]
                                  if self.kind == "align" else [])
        if self.monitor not in allowed:
            raise ConfigError(f"monitor of a {self.kind} pretraining must be one of {', '.join(allowed)}; got "
                              f"{self.monitor!r}")
        uses = bool(self.module.get("use_measurements"))
        if uses and (self.kind != "align" or not self.measurements):
            raise ConfigError("module.use_measurements needs kind 'align' and the measurement columns in "
                              "measurements")
        if self.measurements and not uses:
            raise ConfigError("measurements are given but module.use_measurements is off")

    @property
    def modalities(self) -> tuple[str, ...]:
        return PRETRAIN_KINDS[self.kind]

    @property
    def monitor_mode(self) -> str:
        """``min`` for the validation loss, ``max`` for a retrieval accuracy."""
        return "min" if self.monitor == "val_loss" else "max"

    def module_config(self) -> Any:
        """The module's typed config (``MAEPretrainConfig`` or ``AlignConfig``)."""
        if self.kind == "mae":
            from .ecg_pretrain import MAEPretrainConfig

            return MAEPretrainConfig.from_dict(dict(self.module))
        if self.kind == "generate":
            from .ecg_generate import GenerateConfig

            return GenerateConfig.from_dict(dict(self.module))
        from .ecg_align import AlignConfig

        return AlignConfig.from_dict(dict(self.module))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["preprocess"] = self.preprocess.to_dict()
        return _plain(out)


@dataclass
class PretrainResult:
    """Where a pretraining run left its best checkpoint and what it measured (``result.json``)."""

    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    epochs_trained: int
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def val_auroc(self) -> float:  # the progress lines of the recipe steps print it; a pretraining run has none
        return math.nan


def pretrain_module(config: PretrainConfig, *, load_weights: bool = True) -> L.LightningModule:
    """The LightningModule of ``config`` (its ``module`` settings; the leads are the preprocessing's)."""
    module = config.module_config()
    if tuple(module.leads) != tuple(config.preprocess.leads):
        raise ConfigError(f"the {config.kind} module's leads {tuple(module.leads)} differ from the preprocessing "
                          f"leads {tuple(config.preprocess.leads)}")
    if config.kind == "mae":
        from .ecg_pretrain import MAEPretrainModule

        return MAEPretrainModule(module)
    if config.kind == "generate":
        from .ecg_generate import GenerationModule

        return GenerationModule(module)
    from .ecg_align import AlignmentModule

    cls = _alignment_with_measurements() if config.measurements else AlignmentModule
    return cls(module, load_weights=load_weights)


def _no_labels(records: Any) -> np.ndarray:
    return np.zeros(len(records), dtype=np.float32)


def measurement_labels(columns: list[str], where: str = "manifest"):
    """The ``labels`` callable of the data module that carries ``columns`` standardised on the training split
    (``(N, M)``, NaN unknown): the alignment module reads them as ``measurements``."""

    def labels(records: Any) -> np.ndarray:
        missing = [c for c in columns if c not in records.columns]
        if missing:
            raise ConfigError(f"{where}: no measurement column(s) {', '.join(missing)}")
        values = records[columns].apply(lambda c: c.astype("float64")).to_numpy(dtype=np.float64)
        train = values[(records["split"].astype(str) == "train").to_numpy()]
        mean = np.nanmean(train, axis=0) if len(train) else np.zeros(len(columns))
        std = np.nanstd(train, axis=0) if len(train) else np.ones(len(columns))
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return ((values - mean) / std).astype(np.float32)

    return labels


def _alignment_with_measurements():
    from .ecg_align import AlignmentModule

    class MeasuredAlignmentModule(AlignmentModule):
        """The alignment module reading the batch's ``label`` (the standardised measurements) as
        ``measurements`` (the loaders carry one label array)."""

        def _paired(self, batch: Mapping[str, Any]) -> dict[str, Any] | None:
            if "measurements" not in batch and "label" in batch:
                batch = {**batch, "measurements": batch["label"]}
            return super()._paired(batch)

    return MeasuredAlignmentModule


def _resolve_precision(config: PretrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_cuda = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    return "16-mixed" if on_cuda else "32-true"


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def fit_pretrain(config: PretrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True) -> PretrainResult:
    """Train (or with ``resume`` continue) the pretraining run of ``config`` in ``run_dir``.

    The best checkpoint is the best ``config.monitor`` (lowest validation loss by default); it is then
    evaluated on the validation split (and, for ``align``, the test split: retrieval top-k there is reported,
    never used for selection).
    """
    t_start = time.perf_counter()
    run = Path(run_dir)
    ckpt_dir, last = run / CHECKPOINT_DIR, run / CHECKPOINT_DIR / LAST_CHECKPOINT
    if resume:
        saved = PretrainConfig.from_file(run / CONFIG_FILE)
        if saved.to_dict() != config.to_dict():
            raise ConfigError(f"{run}: a resumed pretraining run keeps its saved settings")
        if not last.is_file():
            raise ConfigError(f"{run}: nothing to resume (no {CHECKPOINT_DIR}/{LAST_CHECKPOINT})")
    elif last.exists() or (run / RESULT_JSON).exists():
        raise ConfigError(f"{run} already holds a run; resume it or choose another folder")
    if not config.cache_dir or not config.manifest:
        raise ConfigError("pretraining: cache_dir and manifest must be set")
    run.mkdir(parents=True, exist_ok=True)
    config.save(run / CONFIG_FILE)

    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = CohortDataModule(config.cache_dir, config.manifest, config.preprocess, batch_size=config.batch_size,
                                  eval_batch_size=config.eval_batch_size,
                                  num_workers=min(config.num_workers, os.cpu_count() or 1),
                                  modalities=config.modalities, seed=config.seed,
                                  labels=(measurement_labels(config.measurements, config.manifest)
                                          if config.measurements else _no_labels))
    datamodule.setup()
    if resume:
        datamodule.start_epoch = _checkpoint_epoch(last) + 1
    module = pretrain_module(config, load_weights=not resume)
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step:07d}", monitor=config.monitor,
                                 mode=config.monitor_mode, save_top_k=1, save_last=True, auto_insert_metric_name=False)
    extra = RETRIEVAL_METRICS if config.kind == "align" else ()
    epoch_csv = EpochMetricsCSV(run / METRICS_CSV, extra)
    early = EarlyStopping(monitor=config.monitor, mode=config.monitor_mode, patience=config.patience)
    callbacks: list[Any] = [epoch_csv, checkpoint, early]
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    precision = _resolve_precision(config)
    trainer = L.Trainer(default_root_dir=run, max_epochs=config.max_epochs, accelerator=config.accelerator,
                        devices=config.devices, precision=precision, callbacks=callbacks,
                        logger=[CSVLogger(run / "logs", name="lightning")], enable_progress_bar=progress,
                        enable_model_summary=progress, limit_train_batches=config.limit_train_batches,
                        limit_val_batches=config.limit_val_batches, log_every_n_steps=config.log_every_n_steps)
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    fit_s = time.perf_counter() - t_fit
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    if not best.is_file():
        raise ConfigError(f"pretraining produced no checkpoint in {ckpt_dir}")

    # -- the best checkpoint on validation (and test: reported, not selected on) ------------------------
    t_eval = time.perf_counter()
    extra_kw = {"load_weights": False} if config.kind in ("align", "generate") else {}  # every weight is in the checkpoint
    best_module = type(module).load_from_checkpoint(best, map_location="cpu", weights_only=False, **extra_kw)
    evaluator = L.Trainer(accelerator=config.accelerator, devices=1, precision="32-true", logger=False,
                          enable_progress_bar=False, enable_model_summary=False)
    metrics: dict[str, Any] = {}
    splits = ("val", "test") if config.kind == "align" else ("val",)
    for split in splits:
        if len(datamodule.datasets[split]) == 0:
            continue
        out = evaluator.validate(best_module, dataloaders=datamodule.eval_dataloader(split), verbose=False)
        metrics[split] = {k.removeprefix("val_"): v for k, v in _metrics(out[0] if out else {}).items()}
    eval_s = time.perf_counter() - t_eval
    samples = epoch_csv.samples
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else math.nan
    best_loss = best_score if config.monitor == "val_loss" else float(metrics.get("val", {}).get("loss", math.nan))
    result = PretrainResult(run_dir=run, best_checkpoint=best, best_epoch=_checkpoint_epoch(best) + 1,
                            best_val_loss=best_loss,
                            epochs_trained=int(trainer.current_epoch), metrics=metrics)
    result.info = {
        "kind": config.kind, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "monitor": config.monitor, "best_score": best_score,
        "epochs_trained": result.epochs_trained, "stopped_early": bool(early.stopped_epoch > 0),
        "best_checkpoint": str(best), "last_checkpoint": str(last), "resumed": bool(resume),
        "metrics": metrics, "precision": precision,
        "records": {split: len(ds) for split, ds in datamodule.datasets.items()},
        "parameters": {"trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
                       "total": sum(p.numel() for p in module.parameters())},
        "seconds": {"this_invocation": round(time.perf_counter() - t_start, 2), "fit": round(fit_s, 2),
                    "evaluate_best": round(eval_s, 2), "training_batches": round(epoch_csv.train_seconds, 2)},
        "train_samples_per_s": (round(samples / epoch_csv.train_seconds, 1) if epoch_csv.train_seconds > 0 else None),
        "device": _device_name(trainer.strategy.root_device), "versions": library_versions(),
    }
    _write_json(run / RESULT_JSON, result.info)
    return result


def read_pretrain_result(run_dir: str | os.PathLike) -> PretrainResult:
    """The :class:`PretrainResult` of a finished run folder (from ``result.json``)."""
    import json

    from .inference import best_checkpoint

    run = Path(run_dir)
    info = json.loads((run / RESULT_JSON).read_text(encoding="utf-8"))
    loss = info.get("best_val_loss")
    return PretrainResult(run_dir=run, best_checkpoint=best_checkpoint(run), best_epoch=int(info.get("best_epoch") or 0),
                          best_val_loss=math.nan if loss is None else float(loss),
                          epochs_trained=int(info.get("epochs_trained") or 0), metrics=dict(info.get("metrics") or {}),
                          info=info)


__all__ += ["measurement_labels", "read_pretrain_result"]
