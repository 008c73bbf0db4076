"""Bayesian tuning of the training recipe with Optuna (the paper's search, ``cardiofusion tune``).

The reference paper tunes three hyper-parameters with Bayesian optimisation and validation AUROC as
the objective: the cooperative agreement weight ``rho`` in [0, 1], the batch size in {64, 128} and the
learning rate, log-uniform in [1e-6, 1e-3] (its ECG-only model: batch 32, lr in [1e-7, 1e-3]).  The
selection rule is two-level: the best *configuration* is the one with the highest validation AUROC,
and its *weights* are those of its lowest-validation-loss epoch.  So each trial's objective value is
the validation AUROC measured at that trial's lowest-validation-loss epoch (``FitResult.val_auroc``),
not the best AUROC of any epoch.  For a base config with another task (``TrainConfig.task``) the objective is
that task's primary metric (``Task.primary_metric``: macro AUROC, quadratic-weighted kappa for ordinal tasks,
MAE for regression, :func:`objective_metric`), with its direction (the study minimises MAE), under the same
two-level rule (``FitResult.val_metric``).

How a study runs (:func:`tune`):

* Optuna's TPE sampler, seeded (:attr:`TuneConfig.seed`), proposes ``rho``, ``batch_size``, ``lr``;
  ``rho`` is searched only for the ``cooperative`` fusion (the other heads do not use it).
* Each trial trains one run with :func:`cardiofusion.training.fit` in ``OUT/trials/trial_NNNN``;
  the trial's user attributes hold ``run_dir``, ``best_checkpoint``, ``best_epoch`` and
  ``best_val_loss``.
* Pruning: :class:`PruningCallback` reports each epoch's ``val_auroc`` to the trial and stops the run
  (``optuna.TrialPruned``) when the pruner says so (median pruner by default).
* Storage: ``sqlite:///OUT/study.db`` by default; any SQLAlchemy URL (``postgresql://...``,
  ``mysql+pymysql://...``) lets several workers -- processes or machines -- share one study: start
  the same ``cardiofusion tune ... --storage URL --study-name NAME`` on each (give each worker its own
  ``--seed`` so that their first random trials differ).
* Resuming: re-running the same command (same storage and study name) loads the study and runs only
  what is missing: :attr:`TuneConfig.n_trials` counts the trials already COMPLETE or PRUNED.  A trial
  left RUNNING by a killed worker is marked FAIL and re-queued with the same parameters (it trains
  again from scratch in a new trial folder).  Two mechanisms find such trials: every worker beats a
  heartbeat into the storage (``heartbeat_interval``), and any worker fails the trials whose heartbeat
  is older than ``grace_period``; with the default per-folder SQLite file (one worker by assumption)
  all RUNNING trials are failed at once on start (:attr:`TuneConfig.fail_running`).
* Several GPUs: run one worker per GPU (``CUDA_VISIBLE_DEVICES=i cardiofusion tune ... --storage URL``),
  all sharing the study.  Trials train in the worker's own process; a multi-process strategy
  (``ddp``) inside a trial is not supported by the pruning callback (use ``pruner="none"`` there).
* At the end: the best trial is printed, and ``OUT/trials.csv`` (Optuna's trials table plus run
  folders), ``OUT/best.json`` and ``OUT/tune.yaml`` (the resolved tuning settings) are written.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import parse_scalar, reject_unknown_fields
from ..errors import ConfigError

#: pruner names accepted by :attr:`TuneConfig.pruner`.
PRUNERS = ("median", "none", "hyperband")
#: the hyper-parameter names of a trial (Optuna parameter names).
PARAMS = ("rho", "batch_size", "lr")


@dataclass
class TuneConfig:
    """Settings of one tuning study (saved as ``OUT/tune.yaml``).

    Attributes:
        base: the training recipe every trial starts from: a ``TrainConfig`` or the path of its YAML
            (e.g. ``RUN/config.yaml`` of a ``cardiofusion train`` run). Each trial replaces
            ``batch_size``, ``lr`` and (cooperative fusion only) ``model.rho``; everything else,
            epochs and early stopping included, is used as is.
        n_trials: trials the study should reach, counting those already COMPLETE or PRUNED in the
            storage (re-running a finished study runs nothing).
        timeout: stop starting new trials after this many seconds (this worker); None: no limit.
        rho_range: (low, high) of the cooperative agreement weight rho, uniform (paper: 0 to 1).
            Equal bounds fix rho; None never tunes it (the base config's rho is kept).
        batch_sizes: batch sizes to choose from (paper: 64, 128; its ECG-only model: 32 alone).
        lr_range: (low, high) of the learning rate, log-uniform (paper: 1e-6 to 1e-3; its
            ECG-only model: 1e-7 to 1e-3). Equal bounds fix it.
        storage: Optuna storage URL; None: ``sqlite:///OUT/study.db`` in the tuning folder. Any
            SQLAlchemy database URL (``postgresql://user:pw@host/db``) lets several workers share
            the study.
        study_name: name of the study inside the storage (several studies can share one database).
        pruner: ``median`` (stop a trial whose val AUROC is below the median of earlier trials at
            the same epoch), ``hyperband`` (epochs as the resource, up to the base config's max_epochs),
            or ``none``. Steps reported to the pruner are epochs counted from 1.
        prune_warmup_epochs: epochs every trial completes before it can be pruned (median pruner).
        prune_startup_trials: trials that finish before the median pruner prunes anything.
        n_startup_trials: random (not yet model-based) trials of the TPE sampler.
        seed: seed of the TPE sampler (give each parallel worker its own). A resumed study seeds it
            with ``seed`` + the number of trials already in the study, so that it does not replay the
            draws of its first session.
        heartbeat_interval: seconds between a running trial's heartbeats in the storage.
        grace_period: a RUNNING trial without a heartbeat for this many seconds is failed and
            re-queued by any worker of the study; None: 2 x heartbeat_interval + 60.
        fail_running: on start, fail (and re-queue) every trial still RUNNING in the study, without
            waiting for its heartbeat to expire. Only safe when no other worker is running the
            study. None: only with the default per-folder SQLite storage.
        max_retry: times a trial interrupted by a killed worker is re-queued.
    """

    base: Any = None
    n_trials: int = 20
    timeout: float | None = None
    rho_range: tuple[float, float] | None = (0.0, 1.0)
    batch_sizes: tuple[int, ...] = (64, 128)
    lr_range: tuple[float, float] = (1e-6, 1e-3)
    storage: str | None = None
    study_name: str = "cardiofusion"
    pruner: str = "median"
    prune_warmup_epochs: int = 5
    prune_startup_trials: int = 5
    n_startup_trials: int = 10
    seed: int = 0
    heartbeat_interval: int = 60
    grace_period: int | None = None
    fail_running: bool | None = None
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.rho_range is not None:
            self.rho_range = tuple(float(v) for v in self.rho_range)  # type: ignore[assignment]
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        self.lr_range = tuple(float(v) for v in self.lr_range)  # type: ignore[assignment]

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot define a search."""
        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.rho_range is not None:
            lo, hi = _pair(self.rho_range, "rho_range")
            if not (0 <= lo <= hi):
                raise ConfigError(f"rho_range must satisfy 0 <= low <= high, got {self.rho_range}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ConfigError(f"batch_sizes has duplicates: {self.batch_sizes}")
        lo, hi = _pair(self.lr_range, "lr_range")
        if not (0 < lo <= hi):
            raise ConfigError(f"lr_range must satisfy 0 < low <= high (log scale), got {self.lr_range}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if not self.study_name:
            raise ConfigError("study_name must not be empty")
        if self.heartbeat_interval < 1:
            raise ConfigError(f"heartbeat_interval must be >= 1 second, got {self.heartbeat_interval}")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ConfigError("grace_period must be longer than heartbeat_interval")
        if self.max_retry < 0:
            raise ConfigError(f"max_retry must be >= 0, got {self.max_retry}")

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON-ready) settings; ``base`` becomes its path or its own ``to_dict()``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("rho_range", "batch_sizes", "lr_range"):
            if out[k] is not None:
                out[k] = list(out[k])
        base = self.base
        if isinstance(base, (str, os.PathLike)):
            out["base"] = str(base)
        elif base is not None:
            out["base"] = _config_to_dict(base)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuneConfig:
        """Inverse of :meth:`to_dict` (``base`` stays a path, or a mapping turned into a TrainConfig)."""
        reject_unknown_fields(cls, data, "tuning")
        kw = dict(data)
        if isinstance(kw.get("base"), Mapping):
            from . import TrainConfig

            kw["base"] = TrainConfig.from_dict(kw["base"])
        return cls(**kw)


def field_help(cls: type = TuneConfig) -> dict[str, str]:
    """The ``Attributes:`` section of a config class's docstring, by field (the CLI's help text)."""
    doc = (cls.__doc__ or "").expandtabs()
    lines = doc.splitlines()
    out: dict[str, str] = {}
    inside, current = False, None
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        m = re.match(r"^\s{8}(\w+)(?: / \w+)*: (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.startswith(" " * 12) and line.strip():
            out[current] += " " + line.strip()
        elif not line.strip():
            continue
        else:
            break
    return out


# --------------------------------------------------------------------------------------------------
# search space


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two numbers (low, high), got {values!r}") from None
    return lo, hi


def tunes_rho(config: TuneConfig, base: Any) -> bool:
    """Whether trials search ``rho``: a range is set and the base model's fusion head takes ``rho``
    (the cooperative one; :func:`cardiofusion.models.fusion_uses_rho` asks the registry)."""
    fusion = getattr(getattr(base, "model", None), "fusion", None)
    if config.rho_range is None or not isinstance(fusion, str):
        return False
    from ..models import fusion_uses_rho

    return fusion_uses_rho(fusion)


def suggest_params(trial: Any, config: TuneConfig, *, tune_rho: bool = True) -> dict[str, Any]:
    """Draw one trial's hyper-parameters from the search space of ``config``.

    A fixed value (equal bounds, a single batch size) is still recorded as a parameter, so every trial
    of a study has the same parameter set.
    """
    params: dict[str, Any] = {}
    if tune_rho and config.rho_range is not None:
        lo, hi = config.rho_range
        params["rho"] = trial.suggest_float("rho", lo, hi)
    params["batch_size"] = int(trial.suggest_categorical("batch_size", list(config.batch_sizes)))
    lo, hi = config.lr_range
    params["lr"] = trial.suggest_float("lr", lo, hi, log=True)
    return params


def apply_params(base: Any, params: Mapping[str, Any]) -> Any:
    """A copy of the TrainConfig ``base`` with a trial's ``batch_size``, ``lr`` and ``model.rho``."""
    changes: dict[str, Any] = {}
    if "batch_size" in params:
        changes["batch_size"] = int(params["batch_size"])
    if "lr" in params:
        changes["lr"] = float(params["lr"])
    if "rho" in params:
        changes["model"] = dataclasses.replace(base.model, rho=float(params["rho"]))
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------------------------------
# per-epoch tracking and pruning


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return v


def objective_metric(base: Any) -> tuple[str, bool]:
    """``(metric, higher is better)`` a study on ``base`` optimises: ``("auroc", True)`` for the binary task
    (and configs without a task), else the task's primary metric (``Task.primary_metric``)."""
    task = getattr(base, "task", None)
    if task is None or not hasattr(base, "task_spec"):
        return "auroc", True
    spec = base.task_spec()
    return ("auroc", True) if spec.is_binary else spec.primary_metric


def _metric_label(metric: str) -> str:
    return {"auroc": "AUROC", "macro_auroc": "macro AUROC", "quadratic_kappa": "quadratic kappa",
            "mae": "MAE"}.get(metric, metric)


def auroc_at_lowest_val_loss(history: Iterable[Mapping[str, Any]],
                             monitor: str = "val_auroc") -> tuple[float | None, int | None]:
    """The paper's selection rule on per-epoch metrics: ``(val_auroc, epoch)`` of the lowest ``val_loss``
    (``monitor``: the metric read instead of ``val_auroc``, e.g. ``val_mae``).

    ``history``: one mapping per epoch with ``epoch``, ``val_loss``, ``val_auroc`` (rows of
    ``metrics.csv``, or :attr:`PruningCallback.history`).

    Epochs without a finite ``val_loss`` are ignored; ties keep the earliest epoch (as a checkpoint
    monitor that saves only on strict improvement does).  ``(None, None)`` when no epoch qualifies.
    """
    best: Mapping[str, Any] | None = None
    for row in history:
        loss = _scalar(row.get("val_loss"))
        if loss is None or not math.isfinite(loss):
            continue
        if best is None or loss < float(best["val_loss"]):
            best = {**row, "val_loss": loss}
    if best is None:
        return None, None
    auroc = _scalar(best.get(monitor))
    epoch = best.get("epoch")
    return auroc, (None if epoch is None else int(epoch))


def _lightning_callback_base() -> type:
    from .._compat import ensure_torchvision

    ensure_torchvision()
    from lightning.pytorch.callbacks import Callback

    return Callback


class _PruningMixin:
    """Reports each epoch's validation AUROC to an Optuna trial and prunes (see :class:`PruningCallback`)."""

    def __init__(self, trial: Any, monitor: str = "val_auroc", loss_key: str = "val_loss"):
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.loss_key = loss_key
        #: one dict per validated epoch: ``epoch``, ``val_loss``, ``val_auroc``.
        self.history: list[dict[str, Any]] = []
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        import optuna

        if getattr(trainer, "sanity_checking", False):
            return
        if getattr(trainer, "is_global_zero", True) is False:
            return  # one report per epoch: rank 0 speaks for the run
        metrics = getattr(trainer, "callback_metrics", {}) or {}
        epoch = int(getattr(trainer, "current_epoch", len(self.history))) + 1  # counted from 1, as metrics.csv
        auroc = _scalar(metrics.get(self.monitor))
        loss = _scalar(metrics.get(self.loss_key))
        self.history.append({"epoch": epoch, self.loss_key: loss, self.monitor: auroc})
        if auroc is None or not math.isfinite(auroc):
            return  # nothing comparable to report (e.g. a validation set with one class)
        self.trial.report(auroc, epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            label = "AUROC" if self.monitor == "val_auroc" else _metric_label(self.monitor[len("val_"):])
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val {label} {auroc:.4f})")


_PRUNING_CLASS: type | None = None


def _pruning_class() -> type:
    global _PRUNING_CLASS
    if _PRUNING_CLASS is None:
        _PRUNING_CLASS = type("PruningCallback", (_PruningMixin, _lightning_callback_base()),
                              {"__doc__": _PRUNING_DOC, "__module__": __name__})
    return _PRUNING_CLASS


_PRUNING_DOC = """Lightning callback: ``trial.report(val_auroc, epoch)`` after every validation, then
raise ``optuna.TrialPruned`` when ``trial.should_prune()``.

Runs in ``on_validation_end`` (after the module has logged its epoch metrics, as Lightning's own
EarlyStopping does), skips the sanity check, and keeps ``history`` (epoch, val_loss, val_auroc) for
the objective.  Epochs are counted from 1, as in ``metrics.csv`` and ``FitResult.best_epoch``.  Epochs whose AUROC
is undefined are recorded but not reported.

Args:
    trial: the Optuna trial (anything with ``report`` and ``should_prune``).
    monitor: the logged metric to report (``val_auroc``).
    loss_key: the logged validation loss (recorded for the selection rule).
"""


def PruningCallback(trial: Any, monitor: str = "val_auroc", loss_key: str = "val_loss") -> Any:
    # Built on first use: Lightning (through torchvision) may only be imported after
    # cardiofusion._compat.ensure_torchvision(), and importing this module must stay cheap.
    return _pruning_class()(trial, monitor=monitor, loss_key=loss_key)


PruningCallback.__doc__ = _PRUNING_DOC


# --------------------------------------------------------------------------------------------------
# the study


@dataclass
class TuneResult:
    """What a tuning study produced (also in ``OUT/best.json``).

    Attributes:
        out_dir: the tuning folder.
        study_name / storage: where the study lives (re-use them to resume or add workers).
        best_number: number of the best trial (highest validation AUROC at its lowest-val-loss epoch).
        best_value: its validation AUROC (or the task's primary metric, :attr:`metric`).
        best_params: its hyper-parameters (``rho`` for cooperative fusion, ``batch_size``, ``lr``).
        best_run_dir: its run folder (config, checkpoints, metrics).
        best_checkpoint: its lowest-validation-loss checkpoint (the weights to evaluate).
        n_complete / n_pruned / n_failed: trials of the study in each state.
        trials_csv / best_json: the written tables.
        study: the Optuna study itself (for plots in a notebook).
        metric: the objective metric (``auroc``, or the task's primary metric).
    """

    out_dir: Path
    study_name: str
    storage: str
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_run_dir: str | None
    best_checkpoint: str | None
    n_complete: int
    n_pruned: int
    n_failed: int
    trials_csv: Path
    best_json: Path
    study: Any = field(default=None, repr=False)
    metric: str = "auroc"


def default_storage(out_dir: str | os.PathLike) -> str:
    """``sqlite:///OUT/study.db`` (absolute path) for the tuning folder ``out_dir``."""
    return "sqlite:///" + str((Path(out_dir) / "study.db").resolve())


def trial_dir(out_dir: str | os.PathLike, number: int) -> Path:
    """``OUT/trials/trial_NNNN`` of trial ``number``."""
    return Path(out_dir) / "trials" / f"trial_{number:04d}"


def load_base_config(base: Any) -> Any:
    """The TrainConfig of :attr:`TuneConfig.base` (read from YAML/JSON when it is a path)."""
    if base is None:
        raise ConfigError("a base training config is needed (TuneConfig.base / --config)")
    if not isinstance(base, (str, os.PathLike)):
        return base
    from . import TrainConfig

    return TrainConfig.from_file(base)


def override_config(base: Any, assignments: Iterable[str]) -> Any:
    """A copy of the config ``base`` with ``KEY=VALUE`` overrides (YAML values, dotted keys nest).

    ``["max_epochs=30", "model.fusion=ecg"]`` sets ``base.max_epochs`` and ``base.model.fusion``.
    Goes through the config's ``to_dict``/``from_dict``, so the result is validated like a file.
    """

    assignments = list(assignments)
    data = _config_to_dict(base)
    for item in assignments:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        value = parse_scalar(raw)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a nested setting")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown setting {parts[-1]!r} "
                              f"(known: {', '.join(sorted(node))})")
        node[parts[-1]] = value
    try:
        return type(base).from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid override(s) {list(assignments)}: {e}") from None


def _config_to_dict(cfg: Any) -> Any:
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if dataclasses.is_dataclass(cfg):
        return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return cfg


def _retry_callback(max_retry: int) -> Any:
    """Optuna's callback that re-queues a failed stale trial with the same parameters."""
    import optuna

    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return retry_cls(max_retry=max_retry)


def _make_storage(config: TuneConfig, url: str) -> Any:
    import optuna

    grace = config.grace_period or 2 * config.heartbeat_interval + 60
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=_retry_callback(config.max_retry),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )


def _make_pruner(config: TuneConfig, max_epochs: int | None) -> Any:
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto")
    # steps are epochs counted from 1: epochs 1..prune_warmup_epochs are never pruned
    return optuna.pruners.MedianPruner(n_startup_trials=config.prune_startup_trials,
                                       n_warmup_steps=config.prune_warmup_epochs + 1)


def fail_running_trials(study: Any, max_retry: int = 3) -> list[int]:
    """Mark every RUNNING trial of ``study`` FAIL and re-queue its parameters; returns their numbers.

    For a study that no live worker is running (the default single-worker SQLite case): trials left
    RUNNING by a killed process would otherwise stay RUNNING for good (or until their heartbeat
    expires).  The re-queued copy (state WAITING) is the next trial any worker runs.
    """
    import optuna
    from optuna.trial import TrialState

    retry = _retry_callback(max_retry)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
                retry(study, study._storage.get_trial(t._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished meanwhile
    return failed


def _finished_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _check_folder(out: Path, study_name: str, storage: str) -> None:
    """One tuning folder holds the trial folders of one study: refuse to mix two."""
    meta = out / "study.json"
    if meta.exists():
        try:
            saved = json.loads(meta.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved and (saved.get("study_name"), saved.get("storage")) != (study_name, storage):
            raise ConfigError(
                f"{out} already holds the trials of study {saved.get('study_name')!r} in "
                f"{saved.get('storage')}; use another folder for study {study_name!r} in {storage}")
    else:
        meta.write_text(json.dumps({"study_name": study_name, "storage": storage}, indent=2))


def _redact(url: str) -> str:
    """A storage URL without its password (for printing and best.json)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def make_objective(config: TuneConfig, base: Any, out_dir: str | os.PathLike, *,
                   fit: Callable[..., Any] | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Callable[[Any], float]:
    """The Optuna objective: train one trial's run and return its selection-rule validation AUROC.

    Args:
        config: the study's settings (search space).
        base: the base TrainConfig.
        out_dir: the tuning folder (trials go to ``out_dir/trials/trial_NNNN``).
        fit: the training function (default :func:`cardiofusion.training.fit`).
        progress: let ``fit`` show its progress bars (passed on when ``fit`` takes ``progress``).
        log: where one line per trial goes.
    """
    out = Path(out_dir)
    tune_rho = tunes_rho(config, base)
    metric, _ = objective_metric(base)
    monitor, label = f"val_{metric}", _metric_label(metric)

    def objective(trial: Any) -> float:
        import optuna

        fit_fn = fit
        if fit_fn is None:
            from . import fit as fit_fn
        params = suggest_params(trial, config, tune_rho=tune_rho)
        run_dir = trial_dir(out, trial.number)
        if run_dir.exists() and any(run_dir.iterdir()):
            # a folder from an earlier study in this place (e.g. after deleting study.db): keep it aside
            stale = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(stale)
        run_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("run_dir", str(run_dir))
        if metric != "auroc":
            trial.set_user_attr("metric", metric)
        train_config = apply_params(base, params)
        pruning = PruningCallback(trial, monitor=monitor)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        log(f"trial {trial.number}: {shown} -> {run_dir}")
        t0 = time.perf_counter()
        try:
            extra: dict[str, Any] = {"progress": progress} if _accepts(fit_fn, "progress") else {}
            if _accepts(fit_fn, "command"):  # written to the run's reproduce.txt
                extra["command"] = (f"trial {trial.number} of tuning study {trial.study.study_name!r} "
                                    f"(cardiofusion tune --out {out}): {shown}")
            result = fit_fn(train_config, run_dir, callbacks=[pruning], **extra)
        except optuna.TrialPruned:
            log(f"trial {trial.number}: pruned after epoch {pruning.pruned_epoch}")
            raise
        finally:
            trial.set_user_attr("history", [{k: v for k, v in row.items()} for row in pruning.history])
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        value = _scalar(getattr(result, "val_auroc" if metric == "auroc" else "val_metric", None))
        best_epoch = getattr(result, "best_epoch", None)
        if value is None or not math.isfinite(value):
            # fall back on the per-epoch metrics the callback saw (same rule: lowest val_loss)
            value, best_epoch_seen = auroc_at_lowest_val_loss(pruning.history, monitor)
            best_epoch = best_epoch if best_epoch is not None else best_epoch_seen
        for key in ("best_checkpoint", "metrics_csv", "val_scores"):
            v = getattr(result, key, None)
            if v is not None:
                trial.set_user_attr(key, str(v))
        best_val_loss = _scalar(getattr(result, "best_val_loss", None))
        if best_val_loss is not None:
            trial.set_user_attr("best_val_loss", best_val_loss)
        if best_epoch is not None:
            trial.set_user_attr("best_epoch", int(best_epoch))
        if value is None or not math.isfinite(value):
            log(f"trial {trial.number}: no validation {label} (one class in the validation set?) -> FAIL")
            return float("nan")  # Optuna marks the trial FAIL
        log(f"trial {trial.number}: val {label} {value:.4f} at its lowest-val-loss epoch {best_epoch}")
        return float(value)

    return objective


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tune(config: TuneConfig, out_dir: str | os.PathLike, *, fit: Callable[..., Any] | None = None,
         progress: bool = True, log: Callable[[str], None] = print) -> TuneResult:
    """Run (or resume, or join) a tuning study and write its results into ``out_dir``.

    Args:
        config: study settings; ``config.base`` is the training recipe each trial modifies.
        out_dir: tuning folder: ``study.db`` (default storage), ``trials/trial_NNNN`` run folders,
            ``tune.yaml``, ``trials.csv``, ``best.json``.
        fit: the training function (default :func:`cardiofusion.training.fit`; tests pass a fake).
        progress: training progress bars of each trial.
        log: where progress lines go.

    Returns:
        The best trial and where everything is (:class:`TuneResult`).
    """
    import optuna

    config.validate()
    base = load_base_config(config.base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = config.storage or default_storage(out)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    _check_folder(out, config.study_name, _redact(url))
    _write_yaml(out / "tune.yaml", {**config.to_dict(), "storage": _redact(url)})

    storage = _make_storage(config, url)
    max_epochs = getattr(base, "max_epochs", None)
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name,
        direction="maximize" if objective_metric(base)[1] else "minimize",
        load_if_exists=True,
        pruner=_make_pruner(config, max_epochs),
    )
    fail_running = config.fail_running if config.fail_running is not None else config.storage is None
    if fail_running:
        stale = fail_running_trials(study, max_retry=config.max_retry)
        if stale:
            log(f"marked {len(stale)} interrupted trial(s) FAIL and re-queued them: "
                + ", ".join(str(n) for n in stale))
    # A resumed study must not replay the random draws of its first session: the sampler's seed
    # moves on by the number of trials the study already holds (a fresh study uses ``seed`` itself).
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.get_trials(deepcopy=False)),
                                               n_startup_trials=config.n_startup_trials, constant_liar=True)

    done = _finished_count(study)
    remaining = config.n_trials - done
    log(f"study {config.study_name!r} in {_redact(url)}: {done} trial(s) finished, "
        f"{max(remaining, 0)} to run (n_trials={config.n_trials})")
    if remaining > 0:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        study.optimize(
            make_objective(config, base, out, fit=fit, progress=progress, log=log),
            n_trials=remaining,
            timeout=config.timeout,
            callbacks=[optuna.study.MaxTrialsCallback(config.n_trials, states=states)],
            gc_after_trial=True,
            show_progress_bar=False,
        )
    result = write_results(study, out, storage_url=_redact(url))
    for line in summary_lines(result):
        log(line)
    return result


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))


def best_trial(study: Any) -> Any | None:
    """The COMPLETE trial with the best value (highest; lowest for a minimising study; ties: the earliest), or None."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    sign = -1.0 if getattr(study, "direction", None) == StudyDirection.MINIMIZE else 1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number))


def write_results(study: Any, out_dir: str | os.PathLike, *, storage_url: str = "") -> TuneResult:
    """Write ``trials.csv`` and ``best.json`` for ``study`` into ``out_dir``; return the summary."""
    from optuna.trial import TrialState

    out = Path(out_dir)
    trials = study.get_trials(deepcopy=False)
    df = study.trials_dataframe(attrs=("number", "value", "datetime_start", "datetime_complete",
                                       "duration", "params", "user_attrs", "state"))
    if len(df):
        by_number = {t.number: t for t in trials}
        for key in ("run_dir", "best_checkpoint", "best_epoch"):
            df[key] = [by_number[n].user_attrs.get(key) for n in df["number"]]
        df = df.drop(columns=[c for c in df.columns if c in ("user_attrs_history",)])
        df = df.drop(columns=[c for c in ("user_attrs_run_dir", "user_attrs_best_checkpoint",
                                          "user_attrs_best_epoch") if c in df.columns])
        first = ["number", "state", "value", *sorted(c for c in df.columns if c.startswith("params_")),
                 "run_dir", "best_checkpoint", "best_epoch"]
        df = df[[c for c in first if c in df.columns] + [c for c in df.columns if c not in first]]
        if "duration" in df.columns:
            df["duration"] = df["duration"].dt.total_seconds()
    trials_csv = out / "trials.csv"
    df.to_csv(trials_csv, index=False, quoting=csv.QUOTE_MINIMAL)

    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = best_trial(study)
    info: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": storage_url,
        "selection": _selection(study, trials),
        "n_complete": counts[TrialState.COMPLETE],
        "n_pruned": counts[TrialState.PRUNED],
        "n_failed": counts[TrialState.FAIL],
        "best": None,
    }
    if best is not None:
        info["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
            "best_checkpoint": best.user_attrs.get("best_checkpoint"),
            "best_epoch": best.user_attrs.get("best_epoch"),
            "best_val_loss": best.user_attrs.get("best_val_loss"),
        }
    best_json = out / "best.json"
    best_json.write_text(json.dumps(info, indent=2, default=str))
    b = info["best"] or {}
    return TuneResult(
        out_dir=out, study_name=study.study_name, storage=storage_url,
        best_number=b.get("number"), best_value=b.get("value"), best_params=dict(b.get("params") or {}),
        best_run_dir=b.get("run_dir"), best_checkpoint=b.get("best_checkpoint"),
        n_complete=info["n_complete"], n_pruned=info["n_pruned"], n_failed=info["n_failed"],
        trials_csv=trials_csv, best_json=best_json, study=study,
        metric=next((t.user_attrs.get("metric") for t in trials if t.user_attrs.get("metric")), "auroc"),
    )


def _selection(study: Any, trials: list[Any]) -> str:
    from optuna.study import StudyDirection

    metric = next((t.user_attrs.get("metric") for t in trials if t.user_attrs.get("metric")), "auroc")
    best = "lowest" if getattr(study, "direction", None) == StudyDirection.MINIMIZE else "highest"
    return f"{best} validation {_metric_label(metric)}, measured at each trial's lowest-validation-loss epoch"


def summary_lines(result: TuneResult) -> list[str]:
    """Human-readable lines about a finished study (what ``cardiofusion tune`` prints)."""
    lines = [(f"study {result.study_name!r}: {result.n_complete} complete, {result.n_pruned} pruned, "
              f"{result.n_failed} failed")]
    if result.best_number is None:
        lines.append("no trial completed: no best configuration yet")
    else:
        lines += [
            (f"best trial {result.best_number}: validation {_metric_label(result.metric)} {result.best_value:.4f} "
             "(at its lowest-validation-loss epoch)"),
            "  params      " + ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items()),
            f"  run dir     {result.best_run_dir}",
            f"  checkpoint  {result.best_checkpoint}",
        ]
    lines += [f"trials table: {result.trials_csv}", f"best trial:   {result.best_json}"]
    return lines
