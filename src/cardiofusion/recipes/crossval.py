"""Cross-validation recipe step: train one run per patient-grouped fold, then summarise the folds.

Fold ``i`` is the test set, fold ``(i + 1) mod k`` the validation set (early stopping, calibration and the
threshold), the other folds train (:mod:`cardiofusion.evaluation.folds`).  Each fold's run goes through the
shared run step (:func:`cardiofusion.recipes.steps.ensure_run`): a finished fold with the same settings is
reused, an interrupted one resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..evaluation.folds import CrossValResult, evaluate_folds, fold_manifest, fold_splits
from .registry import RecipeConfig, register_recipe
from .steps import ensure_run

def cross_validate(config: Any, out_dir: str | os.PathLike, *, n_folds: int | None = None,
                   folds: Sequence[int] | None = None, seed: int = 0, name: str | None = None, n_boot: int = 200,
                   threshold_rule: str = "youden", target: float | None = None, calibration: str = "platt",
                   progress: bool = True, log: Callable[[str], None] | None = None) -> CrossValResult:
    """Train and evaluate one run per fold (patient-grouped) and summarise the folds.

    Args:
        config: the :class:`~cardiofusion.training.TrainConfig` to train (its manifest and cache are used;
            the manifest's split is replaced fold by fold).
        out_dir: ``OUT/fold_<i>/{manifest.parquet, run/, evaluation/}`` and ``OUT/crossval.*``.
        n_folds: number of folds when the manifest has none (default 5).
        folds: which test folds to run (default: all).
        seed: fold assignment (when the manifest has none) and bootstrap seed.
        name: model name in the tables (default: the fusion).
        n_boot: bootstrap resamples of each fold's evaluation.
        threshold_rule / target / calibration: as in :func:`~cardiofusion.evaluation.evaluate_tables`.
        progress: training progress bars.
        log: where the per-fold progress lines (reused / resumed / trained) go (default: nowhere).
    """
    from ..evaluation.evaluate import read_manifest, run_tables
    from ..training import TrainConfig

    if not isinstance(config, TrainConfig):
        raise ConfigError("cross_validate needs a TrainConfig")
    manifest = read_manifest(config.manifest)
    fold_of, k = fold_splits(manifest, n_folds, seed=seed)
    todo = list(range(k)) if folds is None else [int(f) for f in folds]
    bad = [f for f in todo if not 0 <= f < k]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist (0..{k - 1})")
    name = name or str(config.model.fusion)
    out = Path(out_dir)
    fold_tables, manifests, runs = {}, {}, {}
    for f in todo:
        fdir = out / f"fold_{f}"
        fdir.mkdir(parents=True, exist_ok=True)
        fm = fold_manifest(manifest, fold_of, f, k)
        mpath = fdir / "manifest.parquet"
        fm.to_parquet(mpath, index=False)
        run_dir = fdir / "run"
        fconfig = dataclasses.replace(config, manifest=str(mpath.resolve()))
        ensure_run(fconfig, run_dir, title=f"fold {f}", progress=progress, log=log,
                   command=f"cardiofusion crossval (fold {f} of {k})")
        fold_tables[f] = {name: run_tables(run_dir, "test")}
        manifests[f] = fm
        runs[f] = {name: str(run_dir.resolve())}
    result = evaluate_folds(fold_tables, out, n_boot=n_boot, seed=seed, threshold_rule=threshold_rule,
                            target=target, calibration=calibration, manifests=manifests, runs=runs)
    (out / "folds.json").write_text(json.dumps({"n_folds": k, "evaluated": todo,
                                                "fold_sizes": {str(i): int((fold_of == i).sum()) for i in range(k)}},
                                               indent=2))
    return result


def write_fold_manifests(manifest: Any, fold_of: Any, n_folds: int, out_dir: str | os.PathLike) -> dict[int, Path]:
    """``OUT/fold_<i>/manifest.parquet`` for every fold (test = fold i, validation = fold (i+1) mod k, training =
    the rest, :func:`~cardiofusion.evaluation.folds.fold_manifest`), shared by every model trained on that fold.

    A file that already holds the same records and splits is left untouched, so the runs fingerprinted on it
    (:func:`~cardiofusion.recipes.steps.ensure_run`) are reused; returns ``{fold: path}``.
    """
    import pandas as pd

    fold_series = pd.Series(fold_of).reset_index(drop=True).astype(int)
    out: dict[int, Path] = {}
    for f in range(int(n_folds)):
        path = Path(out_dir) / f"fold_{f}" / "manifest.parquet"
        fm = fold_manifest(manifest, fold_series, f, int(n_folds))
        same = False
        if path.is_file():
            try:
                same = pd.read_parquet(path).equals(fm)
            except Exception:  # noqa: BLE001 (an unreadable old file is rewritten)
                same = False
        if not same:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            fm.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        out[f] = path
    return out


def ensure_fold_runs(config: Any, fold_manifests: Mapping[int, Path], runs_dir: str | os.PathLike, *,
                     folds: Sequence[int] | None = None, title: str = "", progress: bool = True,
                     command: str | None = None, log: Callable[[str], None] | None = None) -> dict[int, Any]:
    """:func:`~cardiofusion.recipes.steps.ensure_run` of ``config`` on each fold's manifest into
    ``runs_dir/fold_<i>`` (reused when finished and unchanged, resumed when interrupted); returns
    ``{fold: EnsuredRun}``."""
    todo = sorted(fold_manifests) if folds is None else [int(f) for f in folds]
    out = {}
    for f in todo:
        fconfig = dataclasses.replace(config, manifest=str(Path(fold_manifests[f]).resolve()))
        out[f] = ensure_run(fconfig, Path(runs_dir) / f"fold_{f}", title=f"{title} fold {f}".strip(),
                            progress=progress, log=log, command=command)
    return out


@dataclass
class CrossValConfig(RecipeConfig):
    """Settings of the ``crossval`` recipe.

    Attributes:
        train: the training config: the path of a YAML file (e.g. a run's ``config.yaml``) or its settings
            inline; its ``cache_dir`` and ``manifest`` are used.
        train_overrides: ``{dotted.key: value}`` applied to ``train`` (e.g. ``{"max_epochs": 5}``).
        n_folds: folds when the manifest has no ``fold`` column (None: 5).
        folds: the test folds to run (None: all).
        seed: fold assignment and bootstrap seed.
        name: model name in the tables (None: the fusion).
        n_boot: bootstrap resamples of each fold's evaluation.
        threshold_rule / target / calibration: as in :func:`~cardiofusion.evaluation.evaluate_tables`.
        progress: training progress bars.
    """

    train: Any = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    n_folds: int | None = None
    folds: list[int] | None = None
    seed: int = 0
    name: str | None = None
    n_boot: int = 200
    threshold_rule: str = "youden"
    target: float | None = None
    calibration: str = "platt"
    progress: bool = True

    def train_config(self) -> Any:
        """The resolved :class:`~cardiofusion.training.TrainConfig` (file or inline settings, overrides applied)."""
        from ..training import TrainConfig
        from .registry import apply_overrides

        if self.train is None or self.train == "":
            raise ConfigError("crossval: set train (a training config file, or its settings inline)")
        base = (TrainConfig.from_dict(dict(self.train)) if isinstance(self.train, dict)
                else self.train if isinstance(self.train, TrainConfig) else TrainConfig.from_file(self.train))
        return apply_overrides(base, self.train_overrides)


@register_recipe("crossval", CrossValConfig, "patient-grouped k-fold cross-validation of one training config "
                 "(one run per fold, reused / resumed when unchanged; mean +- sd per metric)")
def run_crossval_recipe(config: CrossValConfig, out_dir: str | os.PathLike, *,
                        log: Callable[[str], None] = print, command: str | None = None) -> CrossValResult:
    """:func:`cross_validate` with the settings of ``config``."""
    train = config.train_config()
    if not train.cache_dir or not train.manifest:
        raise ConfigError("crossval: the training config needs cache_dir and manifest")
    result = cross_validate(train, out_dir, n_folds=config.n_folds, folds=config.folds, seed=config.seed,
                            name=config.name, n_boot=config.n_boot, threshold_rule=config.threshold_rule,
                            target=config.target, calibration=config.calibration, progress=config.progress, log=log)
    for line in result.summary_lines():
        log(line)
    return result


__all__ = ["CrossValConfig", "cross_validate", "ensure_fold_runs", "run_crossval_recipe", "write_fold_manifests"]
