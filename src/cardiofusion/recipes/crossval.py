"""Cross-validation recipe step: train one run per patient-grouped fold, then summarise the folds.

Fold ``i`` is the test set, fold ``(i + 1) mod k`` the validation set (early stopping, calibration and the
threshold), the other folds train (:mod:`cardiofusion.evaluation.folds`).  Each fold's run goes through the
shared run step (:func:`cardiofusion.recipes.steps.ensure_run`): a finished fold with the same settings is
reused, an interrupted one resumed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..evaluation.folds import CrossValResult, evaluate_folds, fold_manifest, fold_splits

def cross_validate(config: Any, out_dir: str | os.PathLike, *, n_folds: int | None = None,
                   folds: Sequence[int] | None = None, seed: int = 0, name: str | None = None, n_boot: int = 200,
                   threshold_rule: str = "youden", target: float | None = None, calibration: str = "platt",
                   progress: bool = True) -> CrossValResult:
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
    """
    import dataclasses

    from ..training import TrainConfig, fit
    from ..evaluation.evaluate import read_manifest, run_tables

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
        done = run_dir / "result.json"
        same = (done.is_file() and (run_dir / "config.yaml").is_file()
                and TrainConfig.from_file(run_dir / "config.yaml").to_dict() == fconfig.to_dict())
        if not same:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # a run from other settings: this folder is ours
            fit(fconfig, run_dir, progress=progress, command=f"cardiofusion crossval (fold {f} of {k})")
        fold_tables[f] = {name: run_tables(run_dir, "test")}
        manifests[f] = fm
        runs[f] = {name: str(run_dir.resolve())}
    result = evaluate_folds(fold_tables, out, n_boot=n_boot, seed=seed, threshold_rule=threshold_rule,
                            target=target, calibration=calibration, manifests=manifests, runs=runs)
    (out / "folds.json").write_text(json.dumps({"n_folds": k, "evaluated": todo,
                                                "fold_sizes": {str(i): int((fold_of == i).sum()) for i in range(k)}},
                                               indent=2))
    return result


__all__ = ["cross_validate"]
