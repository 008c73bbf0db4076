"""The reference paper's pipeline as a recipe: ECG-only, X-ray-only and cooperative models on one cohort,
optionally tuned with Optuna, evaluated together on the test split.

``run_reference(ReferenceConfig(cohort="cohort/"), "out/")`` composes the library steps:

1. **cache** the cohort (:func:`~cardiofusion.recipes.steps.ensure_cache`) into ``OUT/cache`` unless
   ``cache_dir`` names an existing one;
2. for each model of ``models`` in order (single-modality ones first): resolve its
   :class:`~cardiofusion.training.TrainConfig` (the paper's defaults, then ``train``, then
   ``per_model[model]``; fusion models warm-started from the single-modality runs with ``warm_start``),
   optionally **tune** it (``tune_trials`` Optuna trials through :func:`cardiofusion.training.tuning.tune`
   in ``OUT/tuning/<model>-<fingerprint>``; the best trial's batch size, learning rate and rho are kept),
   then **train** it (:func:`~cardiofusion.recipes.steps.ensure_run`: reused when unchanged, resumed when
   interrupted) into ``OUT/runs/<model>``;
3. **evaluate** the runs (:func:`cardiofusion.evaluation.evaluate_runs`: calibration and threshold on
   validation, patient bootstrap CIs and paired comparisons against the last model on test) into
   ``OUT/evaluation``; ``OUT/reference.json`` says where everything is.

The demo (:mod:`cardiofusion.recipes.demo`) is the same composition on the synthetic export, with small
models and explanations added.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import CacheConfig
from ..configfile import jsonable
from ..errors import ConfigError, ReadError
from .registry import RecipeConfig, register_recipe
from .steps import RunPlan, Stopwatch, ensure_cache, resolve_cohort, run_inputs, train_plan

#: Display names of the reference models (the evaluation's model names).
REFERENCE_NAMES: dict[str, str] = {"ecg": "ECG only", "cxr": "X-ray only", "cooperative": "Cooperative"}


def _paper_per_model() -> dict[str, dict[str, Any]]:
    return {"ecg": {"batch_size": 32}}


def _paper_tune_per_model() -> dict[str, dict[str, Any]]:
    return {"ecg": {"batch_sizes": [32], "lr_range": [1e-7, 1e-3]}}


@dataclass
class ReferenceConfig(RecipeConfig):
    """Settings of the ``reference`` recipe (saved in ``OUT/recipe.yaml`` by ``cardiofusion recipe run``).

    Attributes:
        cohort: cohort folder holding ``manifest.parquet`` (``cardiofusion cohort build``) or the manifest file.
        cache_dir: an existing preprocessing cache of the cohort; empty: ``OUT/cache`` built with ``cache``.
        cache: the cache's settings (:class:`~cardiofusion.cache.CacheConfig`) when it is built here.
        cache_workers: processes decoding the cache.
        models: registered fusion heads to train, in order; a fusion model is warm-started from the
            single-modality runs trained before it (``warm_start``).
        names: display names in the evaluation (default :data:`REFERENCE_NAMES`, else the fusion name).
        train: training settings of every model over the paper's defaults (``TrainConfig`` keys, nested
            mappings or dotted keys: ``{"max_epochs": 30, "model.cxr_encoder": "cxr_tiny"}``).
        per_model: ``{model: settings}`` over ``train`` (paper: the ECG-only model trains with batch 32).
        warm_start: fusion models start from the encoders of the single-modality runs.
        tune_trials: Optuna trials per model (0: no tuning, the settings are trained as they are).
        tune: tuning settings of every model (``TuneConfig`` keys but ``base`` and ``n_trials``).
        tune_per_model: ``{model: tuning settings}`` over ``tune`` (paper: ECG-only batch 32, lr 1e-7 to 1e-3).
        n_boot: bootstrap resamples of the evaluation.
        seed: bootstrap seed.
        threshold_rule / target / calibration: the evaluation's threshold rule on validation, its target
            and the calibrator (:func:`~cardiofusion.evaluation.evaluate_tables`).
        subgroups: cohort columns of the subgroup analysis (None: the evaluation's default).
        progress: progress bars.
    """

    cohort: str = ""
    cache_dir: str = ""
    cache: CacheConfig = field(default_factory=CacheConfig)
    cache_workers: int = 1
    models: list[str] = field(default_factory=lambda: ["ecg", "cxr", "cooperative"])
    names: dict[str, str] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=_paper_per_model)
    warm_start: bool = True
    tune_trials: int = 0
    tune: dict[str, Any] = field(default_factory=dict)
    tune_per_model: dict[str, dict[str, Any]] = field(default_factory=_paper_tune_per_model)
    n_boot: int = 1000
    seed: int = 0
    threshold_rule: str = "youden"
    target: float | None = None
    calibration: str = "platt"
    subgroups: list[str] | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.models = [str(m) for m in (self.models or [])]
        if not self.models:
            raise ConfigError("reference: models must name at least one fusion head")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"reference: models has duplicates: {self.models}")
        for name in ("train", "per_model", "tune", "tune_per_model", "names"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"reference: {name} must be a mapping of settings")
        if int(self.tune_trials) < 0:
            raise ConfigError(f"reference: tune_trials must be >= 0, got {self.tune_trials}")
        if isinstance(self.subgroups, str):
            self.subgroups = [s.strip() for s in self.subgroups.split(",") if s.strip()]


def _nest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _nest(value) if isinstance(value, Mapping) else value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _cache_fs(cache_dir: Path, default: float) -> float:
    try:
        return float(json.loads((cache_dir / "cache.json").read_text())["config"]["fs"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def reference_train_config(config: ReferenceConfig, fusion: str, cache_dir: str | os.PathLike,
                           manifest: str | os.PathLike, init_from: Mapping[str, str] | None = None) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of one reference model (see :class:`ReferenceConfig`)."""
    from ..training import TrainConfig

    data = TrainConfig().to_dict()
    data["preprocess"]["fs"] = _cache_fs(Path(cache_dir), config.cache.fs)  # the models read the cache's rate
    data = _merge(_merge(data, _nest(config.train)), _nest(config.per_model.get(fusion, {})))
    data.update(cache_dir=str(Path(cache_dir).resolve()), manifest=str(Path(manifest).resolve()),
                init_from=dict(init_from or {}))
    data["model"] = {**data["model"], "fusion": fusion}
    if (init_from or {}).get("cxr"):
        data["model"]["cxr_pretrained"] = False  # the X-ray encoder's weights come from that run
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"reference: invalid training settings of {fusion!r}: {e}") from None


def reference_plan(config: ReferenceConfig, cache_dir: str | os.PathLike, manifest: str | os.PathLike) -> list[RunPlan]:
    """The reference runs in order; fusion models warm-started from the single-modality runs before them."""
    from ..models import list_fusions
    from ..models.registry import FUSIONS

    known = list_fusions()
    unknown = [m for m in config.models if m not in known]
    if unknown:
        raise ConfigError(f"reference: unknown model(s) {unknown}; registered fusion heads: {', '.join(known)}")
    names = {**REFERENCE_NAMES, **config.names}
    plan, single = [], {}
    for fusion in config.models:
        modalities = tuple(FUSIONS.get(fusion).modalities)
        warm = {m: single[m] for m in modalities if m in single} if config.warm_start and len(modalities) > 1 else {}
        plan.append(RunPlan(fusion, names.get(fusion, fusion),
                            lambda init, f=fusion: reference_train_config(config, f, cache_dir, manifest, init), warm))
        if len(modalities) == 1:
            single[modalities[0]] = fusion
    return plan


def tuning_step(config: ReferenceConfig, out: Path, *, log: Callable[[str], None]) -> Callable[[RunPlan, Any], Any]:
    """The ``choose`` hook of :func:`~cardiofusion.recipes.steps.train_plan` that tunes each run's config.

    A study lives in ``OUT/tuning/<model>-<fingerprint>``, the fingerprint covering the base config and its
    warm-start sources, so a changed base starts a fresh study while re-running resumes the same one.
    """

    def choose(item: RunPlan, base: Any) -> Any:
        if config.tune_trials <= 0:
            return base
        from ..training.tuning import TuneConfig, apply_params, tune

        settings = {**_nest(config.tune), **_nest(config.tune_per_model.get(item.key, {}))}
        for key in ("base", "n_trials"):
            if key in settings:
                raise ConfigError(f"reference: tune.{key} is set by the recipe (use tune_trials)")
        tune_config = TuneConfig.from_dict({**settings, "n_trials": int(config.tune_trials), "base": base})
        ident = json.dumps(jsonable({"base": base.to_dict(), "inputs": run_inputs(base)}), sort_keys=True)
        folder = out / "tuning" / f"{item.key}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"
        log(f"      {item.title}: tuning ({config.tune_trials} trials) in {folder}")
        result = tune(tune_config, folder, progress=config.progress, log=log)
        if not result.best_params:
            raise ConfigError(f"{folder}: no tuning trial finished; nothing to train {item.title} with")
        log(f"      {item.title}: best trial {result.best_number} (val AUROC {result.best_value}), "
            f"parameters {result.best_params}")
        return apply_params(base, result.best_params)

    return choose


@register_recipe("reference", ReferenceConfig, "the reference paper's pipeline on a cohort: ECG-only, X-ray-only "
                 "and cooperative models (optional Optuna tuning), evaluated together on the test split")
def run_reference(config: ReferenceConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                  command: str | None = None) -> dict[str, Any]:
    """Cache, (tune,) train and evaluate the reference models; returns ``OUT/reference.json``'s content."""
    from ..evaluation import evaluate_runs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = resolve_cohort(config.cohort)
    clock = Stopwatch()
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    with clock("cache"):
        if config.cache_dir:
            if not (cache_dir / "cache.json").is_file():
                raise ReadError(cache_dir, "not a preprocessing cache (no cache.json)")
            log(f"[1/3] cache: using {cache_dir}")
        else:
            log(f"[1/3] cache: decoding every ECG and X-ray once into {cache_dir}")
            ensure_cache(manifest, cache_dir, config.cache, workers=config.cache_workers, progress=config.progress,
                         log=log)
    with clock("train"):
        plan = reference_plan(config, cache_dir, manifest)
        log(f"[2/3] train: {', '.join(p.title for p in plan)}"
            + (f", each tuned with {config.tune_trials} Optuna trials" if config.tune_trials else ""))
        runs = train_plan(plan, out / "runs", progress=config.progress, command=command, log=log,
                          choose=tuning_step(config, out, log=log))
    with clock("evaluate"):
        log(f"[3/3] evaluate: test split, threshold ({config.threshold_rule}) and {config.calibration} calibration "
            f"on validation, {config.n_boot} patient bootstrap resamples")
        titles = {p.key: p.title for p in plan}
        evaluation = evaluate_runs({titles[k]: r.run_dir for k, r in runs.items()}, out / "evaluation",
                                   manifest=manifest, progress=config.progress, n_boot=config.n_boot,
                                   seed=config.seed, threshold_rule=config.threshold_rule, target=config.target,
                                   calibration=config.calibration, subgroups=config.subgroups,
                                   reference=titles[plan[-1].key])
    for line in evaluation.summary_lines():
        log("  " + line)
    info = {"cohort": str(manifest.resolve()), "cache": str(cache_dir),
            "runs": {k: {"title": titles[k], "run": str(r.run_dir), "action": r.action, "val_auroc": r.val_auroc}
                     for k, r in runs.items()},
            "evaluation": str(out / "evaluation"), "report": str(evaluation.report),
            "seconds": {k: round(v, 2) for k, v in clock.seconds.items()}, "command": command}
    (out / "reference.json").write_text(json.dumps(jsonable(info), indent=2) + "\n", encoding="utf-8")
    log(f"report: {evaluation.report}")
    return info


__all__ = ["REFERENCE_NAMES", "ReferenceConfig", "reference_plan", "reference_train_config", "run_reference",
           "tuning_step"]
