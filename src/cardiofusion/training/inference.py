"""Load a trained run and score any split of its cohort (the entry point of evaluation, explanations and
export).

``load_run("runs/x")`` rebuilds the model of a run folder from its best-validation-loss checkpoint (or a
given ``.ckpt``) with the exact :class:`TrainConfig` it was trained with; ``score_split(run, "test")``
returns one row per record, the same table as ``val_scores.csv``, and keeps it in the run folder
(``scores_<split>.csv``) so evaluating several times never re-runs the model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..errors import ConfigError, ReadError
from ..io.torchfile import check_torch_file
from .config import TrainConfig
from .evaluate import SCORE_COLUMNS, evaluate_scores, task_labels

SPLITS = ("train", "val", "test")


@dataclass
class LoadedRun:
    """A trained model with everything needed to feed it.

    Attributes:
        model: the ``MultimodalModel`` in eval mode.
        config: the run's :class:`TrainConfig` (``config.preprocess`` is the preprocessing it expects).
        checkpoint: the checkpoint the weights came from.
        run_dir: the run folder (None when a bare checkpoint outside a run folder was given).
        pos_weight: the positive-class weight it was trained with.
    """

    model: torch.nn.Module
    config: TrainConfig
    checkpoint: Path
    run_dir: Path | None
    pos_weight: float | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name if self.run_dir is not None else self.checkpoint.stem

    @property
    def preprocess(self):
        return self.config.preprocess

    @property
    def task(self):
        """The run's :class:`~cardiofusion.tasks.Task` (fitted; the default binary AS task for runs without one)."""
        return self.config.task_spec()


def best_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The best-validation-loss checkpoint of a run folder (from ``result.json``, else the newest
    ``best-*.ckpt``, else ``last.ckpt``)."""
    run = Path(run_dir)
    result = run / "result.json"
    if result.is_file():
        try:
            saved = json.loads(result.read_text()).get("best_checkpoint")
        except (OSError, json.JSONDecodeError) as e:
            raise ReadError(result, f"unreadable run result ({e})") from None
        if saved:
            path = Path(saved)
            if not path.is_absolute() or not path.is_file():  # the run folder may have moved
                path = run / "checkpoints" / Path(saved).name
            if path.is_file():
                return path
    ckpts = sorted((run / "checkpoints").glob("best-*.ckpt"))
    if ckpts:
        return ckpts[-1]
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    raise ReadError(run, "not a finished run folder (no result.json and no checkpoints/*.ckpt)")


def load_run(run_or_checkpoint: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a trained model from a run folder (its best checkpoint) or a ``.ckpt`` file."""
    from .module import CardioFusionModule

    path = Path(run_or_checkpoint)
    if path.is_dir():
        run_dir, ckpt = path, best_checkpoint(path)
    elif path.is_file():
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    else:
        raise ReadError(path, "no such run folder or checkpoint")
    check_torch_file(ckpt)  # never unpickle a file torch.save did not write
    try:
        module = CardioFusionModule.load_from_checkpoint(ckpt, map_location=map_location, pretrained=False,
                                                         weights_only=False)
    except Exception as e:  # torch.load / unpickling of a damaged or foreign file raises anything
        raise ReadError(ckpt, f"not a loadable cardiofusion checkpoint ({type(e).__name__}: {e})") from None
    module.eval()
    return LoadedRun(model=module.model.eval(), config=module.config, checkpoint=ckpt, run_dir=run_dir,
                     pos_weight=module.pos_weight)


def run_datamodule(run: LoadedRun, *, cache_dir: str | os.PathLike | None = None, manifest: str | os.PathLike | pd.DataFrame | None = None,
                   batch_size: int | None = None, num_workers: int = 0):
    """The deterministic :class:`~cardiofusion.data.dataset.CohortDataModule` of a run: its cache, manifest,
    preprocessing, modalities and task labels (records of a manifest without the task's columns get unknown
    labels), or another cache / manifest scored the same way."""
    from ..data.dataset import CohortDataModule

    config = run.config
    manifest = manifest if manifest is not None else config.manifest
    size = batch_size or config.eval_batch_size or config.batch_size
    return CohortDataModule(cache_dir or config.cache_dir, manifest, config.preprocess, batch_size=size,
                            eval_batch_size=size, num_workers=num_workers, modalities=config.model.modalities,
                            seed=config.seed, labels=task_labels(None if config.task is None else config.task_spec(),
                                                                 manifest, allow_unlabelled=True))


def score_split(run: str | os.PathLike | LoadedRun, split: str, *, cache_dir: str | os.PathLike | None = None,
                manifest: str | os.PathLike | pd.DataFrame | None = None, batch_size: int | None = None,
                num_workers: int = 0, reuse: bool = True) -> pd.DataFrame:
    """Record-level scores of a trained run on one split of a cohort.

    Args:
        run: run folder, checkpoint or :class:`LoadedRun`.
        split: ``train``, ``val`` or ``test`` (deterministic evaluation windows for every split).
        cache_dir / manifest: data to score (default: the run's own cache and manifest).
        batch_size: records per batch (default: the run's eval batch size).
        num_workers: loader processes.
        reuse: return ``RUN/scores_<split>.csv`` when it exists and the run's own data is scored
            (written after the first scoring).

    Returns:
        The columns of :data:`~cardiofusion.training.evaluate.SCORE_COLUMNS` plus ``split`` (runs with another
        task: ``Task.score_columns()`` plus ``split``).  Records of a manifest without the task's columns
        get unknown (NaN) labels.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    own_data = cache_dir is None and manifest is None
    run_dir = run.run_dir if isinstance(run, LoadedRun) else (Path(run) if Path(run).is_dir() else None)
    saved = run_dir / f"scores_{split}.csv" if run_dir is not None else None
    if reuse and own_data and saved is not None and saved.is_file():
        if saved.stat().st_mtime >= best_checkpoint(run_dir).stat().st_mtime:  # scored by the current weights
            return pd.read_csv(saved, dtype={"record_id": str, "patient_id": str})
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    config = loaded.config
    datamodule = run_datamodule(loaded, cache_dir=cache_dir, manifest=manifest, batch_size=batch_size,
                                num_workers=num_workers)
    try:
        datamodule.setup()
    except ConfigError:
        if split in ("train", "val"):
            raise
    if split not in datamodule.datasets or len(datamodule.datasets[split]) == 0:
        raise ConfigError(f"no usable {split} records in {datamodule.manifest} with the cache {datamodule.cache_dir}")
    table = evaluate_scores(loaded.model, datamodule.eval_dataloader(split),
                            task=None if config.task is None else config.task_spec())
    table.insert(3, "split", split)
    if own_data and saved is not None:
        tmp = saved.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, saved)
    return table


__all__ = ["SPLITS", "LoadedRun", "SCORE_COLUMNS", "best_checkpoint", "load_run", "score_split"]
