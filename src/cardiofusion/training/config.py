"""The training configuration, saved as ``RUN/config.yaml`` with every run (a run folder alone says how
to reproduce it)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import SettingsFile, require_positive_ints, write_yaml
from ..errors import ConfigError
from ..transforms.preprocess import PreprocessConfig

#: Accepted ``precision`` values ("auto": 16-mixed on CUDA, 32-true elsewhere).
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "64-true")

#: Settings that may differ when a run is resumed (they change how long / where it runs, not what it learns).
RESUME_OVERRIDABLE = ("max_epochs", "num_workers", "accelerator", "devices", "strategy", "tensorboard",
                      "limit_train_batches", "limit_val_batches")


def _model_config_cls():
    from ..models import (
        ModelConfig,  # imported lazily: the models package is heavy (timm)
    )

    return ModelConfig


def _default_model_config():
    return _model_config_cls()()


@dataclass
class TrainConfig(SettingsFile):
    """Everything a training run depends on; defaults are the reference paper's recipe.

    Attributes:
        cache_dir: preprocessing cache folder (``cardiofusion cache build``).
        manifest: cohort manifest (``manifest.parquet``) with ``split`` and ``label``.
        model: architecture (``cardiofusion.models.ModelConfig``).
        preprocess: windows, augmentation, normalisation (``cardiofusion.transforms.preprocess.PreprocessConfig``).
        batch_size: training batch size (paper: 64 or 128; ECG-only 32).
        eval_batch_size: records per validation batch (each brings all its windows); None: batch_size.
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: Adam weight decay (paper: none).
        max_epochs: upper bound on epochs.
        patience: early stopping: epochs without a lower validation loss before stopping.
        t_max: CosineAnnealingLR period in epochs (stepped once per epoch).
        precision: Lightning precision; ``auto`` = ``16-mixed`` on CUDA, ``32-true`` otherwise
            (``bf16-mixed`` is allowed on CPU).
        pos_weight: positive-class weight of the loss: None, a number, or ``balanced``
            (negatives / positives among the training records).
        seed: seed of weights, shuffling and augmentation (``lightning.seed_everything``).
        num_workers: DataLoader worker processes.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``, ...).
        devices: Lightning devices (``auto``, a count, or a list of ids).
        strategy: Lightning strategy (``auto``, ``ddp``, ...); multi-GPU and multi-node need nothing else.
        num_nodes: Lightning nodes.
        limit_train_batches: Lightning's limit per training epoch (fraction or count), for quick runs.
        limit_val_batches: Lightning's limit per validation epoch (fraction or count).
        tensorboard: also write TensorBoard logs (``RUN/logs/tensorboard``).
        log_every_n_steps: how often step-level training metrics go to the loggers.
        init_from: warm start: ``{"ecg": RUN_OR_CKPT, "cxr": RUN_OR_CKPT}`` copies that modality's encoder
            weights from a trained run (e.g. the single-modality models) before training; the fusion
            head starts fresh.  Ignored when resuming (the checkpoint has the weights).
        freeze_encoders_epochs: the first epochs train only the fusion head, the encoders frozen (weights
            and BatchNorm statistics), then everything fine-tunes (linear probing then fine-tuning: with
            ``init_from`` a fresh head does not disturb the pretrained encoders).
        task: what the model learns, a :class:`cardiofusion.tasks.Task` as a mapping (``Task.to_dict``);
            None (the default, and configs written before tasks existed) = the binary AS task on the
            manifest's ``label`` column, exactly as before.  :func:`~cardiofusion.training.fit` saves the
            task fitted on the training split (regression scaler) in ``RUN/config.yaml`` and sets
            ``model.num_outputs`` / ``model.link`` from it.
    """

    cache_dir: str = ""
    manifest: str = ""
    model: Any = field(default_factory=_default_model_config)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_epochs: int = 100
    patience: int = 20
    t_max: int = 10
    precision: str = "auto"
    pos_weight: None | float | str = None
    seed: int = 0
    num_workers: int = 4
    accelerator: str = "auto"
    devices: int | str | list = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    tensorboard: bool = False
    log_every_n_steps: int = 10
    init_from: dict[str, str] = field(default_factory=dict)
    freeze_encoders_epochs: int = 0
    task: dict[str, Any] | None = None

    SETTINGS_NAME = "training"

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = _model_config_cls().from_dict(self.model)
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig.from_dict(self.preprocess)
        self.cache_dir = str(self.cache_dir)
        self.manifest = str(self.manifest)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas}")
        require_positive_ints(self, ("batch_size", "max_epochs", "patience", "t_max", "num_nodes", "log_every_n_steps"))
        if self.eval_batch_size is not None and int(self.eval_batch_size) < 1:
            raise ConfigError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
        if int(self.num_workers) < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        self.num_workers = int(self.num_workers)
        if not float(self.lr) > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        self.lr, self.weight_decay = float(self.lr), float(self.weight_decay)
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self.pos_weight = parse_pos_weight(self.pos_weight)
        self.devices = parse_devices(self.devices)
        if not isinstance(self.init_from, dict) or set(self.init_from) - {"ecg", "cxr"}:
            raise ConfigError(f"init_from maps 'ecg' and/or 'cxr' to a run folder or checkpoint, got {self.init_from!r}")
        self.init_from = {str(k): str(v) for k, v in self.init_from.items() if v}
        if int(self.freeze_encoders_epochs) != self.freeze_encoders_epochs or int(self.freeze_encoders_epochs) < 0:
            raise ConfigError(f"freeze_encoders_epochs must be an integer >= 0, got {self.freeze_encoders_epochs}")
        self.freeze_encoders_epochs = int(self.freeze_encoders_epochs)
        if self.task is not None:
            from ..tasks import Task, load_task

            task = self.task if isinstance(self.task, Task) else load_task(self.task)
            self.task = task.to_dict()

    def task_spec(self):
        """The :class:`~cardiofusion.tasks.Task` this config trains (the default binary task when ``task`` is None)."""
        from ..tasks import Task, binary_task

        return binary_task() if self.task is None else Task.from_dict(self.task)

    def with_task_outputs(self) -> TrainConfig:
        """A copy whose ``model.num_outputs`` / ``model.link`` are the task's (unchanged without a task)."""
        if self.task is None:
            return self
        task = self.task_spec()
        return dataclasses.replace(self, model=dataclasses.replace(self.model, num_outputs=task.n_outputs,
                                                                    link=task.link))

    # -- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("model", "preprocess"):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as YAML (atomically)."""
        return write_yaml(path, _plain(self.to_dict()))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the model needs (single-modality fusions load only theirs)."""
        return tuple(self.model.modalities)


def _plain(value: Any) -> Any:
    """Nested dicts / lists of YAML-safe scalars."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def parse_pos_weight(value: Any) -> None | float | str:
    """None, a positive number or ``balanced``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, str) and value.strip().lower() == "balanced":
        return "balanced"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"pos_weight must be a number, 'balanced' or none; got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"pos_weight must be positive, got {value}")
    return number


def parse_devices(value: Any) -> int | str | list:
    """Lightning ``devices``: ``auto``, a count, ``"0,1"`` or a list of ids."""
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        return text
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


__all__ = ["PRECISIONS", "RESUME_OVERRIDABLE", "TrainConfig", "parse_devices", "parse_pos_weight"]
