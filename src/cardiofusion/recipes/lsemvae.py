"""Recipe ``ls-emvae`` (paper 002): pretrain an LS-EMVAE on unlabelled 12-lead ECGs, fine-tune on a lead
subset with k-fold cross-validation, against baselines and ablations.

Steps (every one reused when finished and unchanged, resumed when interrupted):

1. caches: each cohort of ``pretrain_cohorts`` (default: the fine-tuning ``cohort``) is cached with the
   paper's named preprocessing (``cache.baseline: lsvae_paper``: gaps interpolated, ``neurokit2.ecg_clean``,
   z-score per lead; :mod:`cardiofusion.transforms.vae_preprocess`), the name saved in ``cache.json``;
2. pretraining (:func:`cardiofusion.recipes.steps.ensure_pretrain`): one VAE per distinct variant the
   ``models`` need, every loss term logged (``OUT/pretrain/<variant>/metrics.csv``);
3. cross-validation: the fine-tuning manifest (optionally restricted, e.g. HYP vs NORM) gets ``n_folds``
   patient-grouped folds stratified by the task's label; fold ``i`` is test, fold ``i + 1`` validation
   (early stopping on the validation loss: no test-set selection), the rest train; every model is a
   :func:`~cardiofusion.recipes.steps.ensure_run` run ``OUT/cv/fold_<i>/<model>``;
4. evaluation: per fold accuracy, AUROC, F1, MCC (binary: decisions at the Youden threshold chosen on the
   fold's validation records; multiclass: the most probable class, macro AUROC / F1) -> mean +- sd
   (``OUT/crossval.csv``); the out-of-fold test predictions of all folds pooled through
   :func:`cardiofusion.evaluation.evaluate_tables` with ``reference="ls-emvae"``: the library's patient
   bootstrap CIs and paired bootstrap differences against LS-EMVAE (``OUT/evaluation/``,
   ``OUT/comparison.csv``).

Models (``models``; :data:`MODELS`): ``ls-emvae`` (HiME VAE, encoders frozen by default, the paper's head),
``no-align`` (alignment weight 0), ``no-moe`` (one group of all leads: a product of all leads = MVAE),
``no-poe`` (one group per lead, moment-matched mixture), ``mmvae`` (one group per lead, sampled mixture:
MMVAE), ``mopoe`` (MoPoE: a sampled mixture over every subset of the leads of their product with the prior),
``beta-vae`` (one encoder over all 12 leads as channels, one decoder, KL weight annealed to
:data:`BETA_VAE_BETA`; fine-tuned through the registered ``betavae`` encoder, which keeps the first
convolution's columns of the fine-tuning leads), ``no-pretrain`` (the same encoders and head trained from
scratch), ``ls-emvae-12`` (fine-tuned on all 12 leads), ``reference-compat`` (the original code's behaviour)
and ``resnet`` (the library's supervised 1-D ResNet + transformer ECG encoder ``resnet_encoder`` from
scratch on the same leads).  Every VAE variant takes the recipe's ``vae`` settings (e.g. ``free_bits``)
under its own overrides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..records import CANONICAL_LEADS, LIMB_LEADS
from .registry import RecipeConfig, register_recipe
from .steps import Stopwatch, ensure_cache, ensure_pretrain, ensure_run, resolve_cohort

#: The reference model of the comparisons.
REFERENCE = "ls-emvae"

#: The single-encoder beta-VAE baseline's final KL weight (> 1; 4 is a common choice since Higgins et al. 2017).
BETA_VAE_BETA = 4.0

#: Model name -> VAE overrides of its pretraining (None: no pretraining) and fine-tuning settings.
MODELS: dict[str, dict[str, Any]] = {
    "ls-emvae": {"vae": {}},
    "no-align": {"vae": {"align_weight": 0.0}},
    "no-moe": {"vae": {"groups": [list(CANONICAL_LEADS)]}},
    "no-poe": {"vae": {"groups": [[lead] for lead in CANONICAL_LEADS], "mixture": "moment"}},
    "mmvae": {"vae": {"groups": [[lead] for lead in CANONICAL_LEADS], "mixture": "sample"}},
    "mopoe": {"vae": {"fusion": "mopoe", "mixture": "sample"}},
    "beta-vae": {"vae": {"fusion": "single", "beta_max": BETA_VAE_BETA}},
    "reference-compat": {"vae": {"reference_compat": True}},
    "no-pretrain": {"vae": None, "frozen": False},
    "ls-emvae-12": {"vae": {}, "leads": list(CANONICAL_LEADS)},
    "resnet": {"vae": None, "encoder": "resnet"},
}
DEFAULT_MODELS = ["ls-emvae", "no-align", "no-moe", "no-poe", "mmvae", "mopoe", "beta-vae", "no-pretrain", "ls-emvae-12",
                  "resnet"]


@dataclass
class LSEMVAERecipeConfig(RecipeConfig):
    """Settings of the ``ls-emvae`` recipe.

    Attributes:
        cohort: the fine-tuning cohort (folder with ``manifest.parquet``, e.g. ``cardiofusion cohort from-adapter
            ptbxl/ --task ptbxl_lvh`` or a synthetic export's cohort) holding the task's target columns.
        pretrain_cohorts: cohorts whose ECGs pretrain the VAE, labels unused (default: ``[cohort]``).
        task: a built-in task name, a task YAML/JSON file or its mapping (binary or multiclass).
        restrict_to: keep only fine-tuning records with a 1 in any of these columns (``[HYP, NORM]`` with task
            column ``HYP``: HYP vs NORM); empty: all records.
        records_per_patient: fine-tune on at most this many labelled records per patient, the earliest ECGs
            first (0: all); pretraining still sees every ECG.
        shared_dir: folder for the caches and pretrainings (default: the output folder), so runs of several
            tasks with the same cohorts and VAE settings build and pretrain once.
        cache: :class:`~cardiofusion.transforms.decode.CacheConfig` settings of every cache (``fs``,
            ``duration_s``, ``baseline: lsvae_paper`` = the paper's named preprocessing).
        vae: :class:`~cardiofusion.models.lsvae.LSVAEConfig` settings of the LS-EMVAE (``arch``: ``small`` on
            CPU, ``paper`` for the published size; ``n_samples`` is set from the cache).
        pretrain: :class:`~cardiofusion.training.vae_pretrain.PretrainConfig` settings (epochs, batch, lr,
            precision...); ``sources`` and ``vae`` are filled in.
        leads: fine-tuning leads (default the six limb leads; encoders are taken by lead name).
        frozen: pretrained encoders frozen during fine-tuning (the paper) or fine-tuned.
        head_hidden / dropout: the paper's head (posterior means -> Linear 128 -> ReLU -> Dropout 0.5 -> outputs).
        finetune: :class:`~cardiofusion.training.TrainConfig` settings of every fine-tuning run (the paper:
            Adam lr 1e-4, batch 32, 50 epochs; here with early stopping on the validation loss).
        resnet_encoder / resnet_finetune: the supervised baseline's registered ECG encoder and its
            ``TrainConfig`` settings on top of ``finetune`` (default: lr 1e-3).
        models: which models to run (:data:`MODELS`); ``ls-emvae`` is always run (the reference).
        n_folds: cross-validation folds (patient-grouped, stratified by the task's label).
        seed: fold assignment, training and bootstrap seed.
        n_boot: bootstrap resamples of the pooled evaluation.
        workers: cache build processes.
        progress: progress bars.
    """

    cohort: str = ""
    pretrain_cohorts: list[str] = field(default_factory=list)
    task: Any = "ptbxl_lvh"
    restrict_to: list[str] = field(default_factory=list)
    records_per_patient: int = 0
    shared_dir: str = ""
    cache: dict[str, Any] = field(default_factory=lambda: {"fs": 100.0, "duration_s": 10.0,
                                                           "baseline": "lsvae_paper", "image_size": 32})
    vae: dict[str, Any] = field(default_factory=lambda: {"arch": "small", "beta_anneal_epochs": 10})
    pretrain: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 20, "batch_size": 32, "lr": 5e-4})
    leads: list[str] = field(default_factory=lambda: list(LIMB_LEADS))
    frozen: bool = True
    head_hidden: int = 128
    dropout: float = 0.5
    finetune: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-4, "batch_size": 32, "max_epochs": 50,
                                                              "patience": 10})
    resnet_encoder: str = "ecg_resnet_small_transformer"
    resnet_finetune: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    n_folds: int = 5
    seed: int = 0
    n_boot: int = 200
    workers: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"unknown ls-emvae model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
        self.models = [REFERENCE] + [m for m in dict.fromkeys(self.models) if m != REFERENCE]
        if int(self.records_per_patient) < 0:
            raise ConfigError(f"records_per_patient must be >= 0, got {self.records_per_patient}")
        if int(self.n_folds) < 3:
            raise ConfigError(f"n_folds must be at least 3, got {self.n_folds}")


# --------------------------------------------------------------------------------------------------
# configs of the steps
# --------------------------------------------------------------------------------------------------
def _cache_config(config: LSEMVAERecipeConfig) -> Any:
    from ..transforms.decode import CacheConfig

    return CacheConfig.from_dict(dict(config.cache))


def _vae_settings(config: LSEMVAERecipeConfig, overrides: Mapping[str, Any], n_samples: int) -> dict[str, Any]:
    from ..models.lsvae import LSVAEConfig

    return LSVAEConfig.from_dict({**config.vae, **overrides, "leads": list(CANONICAL_LEADS),
                                  "n_samples": n_samples}).to_dict()


def _variant_key(vae: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(vae, sort_keys=True).encode()).hexdigest()[:10]


def task_manifest(manifest: pd.DataFrame, task: Any, restrict_to: list[str], n_folds: int, seed: int,
                  records_per_patient: int = 0) -> pd.DataFrame:
    """The fine-tuning manifest: restricted to ``restrict_to`` records, unlabelled records dropped, at most
    ``records_per_patient`` records per patient (the earliest ECGs; 0: all), a ``label`` column for
    stratification when there is none (binary: the task label; multiclass: the class index), and ``n_folds``
    patient-grouped folds (the manifest's own ``fold`` column when it has that many)."""
    from ..evaluation.folds import fold_splits

    m = manifest.reset_index(drop=True).copy()
    if restrict_to:
        missing = [c for c in restrict_to if c not in m.columns]
        if missing:
            raise ConfigError(f"restrict_to: the manifest has no column(s) {', '.join(missing)}")
        keep = (m[restrict_to].apply(pd.to_numeric, errors="coerce") == 1).any(axis=1)
        m = m[keep].reset_index(drop=True)
    y = task.encode_labels(m)
    y = y if y.ndim == 1 else y[:, 0]
    m = m[np.isfinite(y)].reset_index(drop=True)
    y = y[np.isfinite(y)]
    if records_per_patient > 0:
        order = m.sort_values([c for c in ("patient_id", "ecg_datetime", "record_id") if c in m.columns], kind="stable")
        keep = np.sort(order.groupby("patient_id", sort=False).head(int(records_per_patient)).index.to_numpy())
        m, y = m.loc[keep].reset_index(drop=True), y[keep]
    if "label" not in m.columns:
        m["label"] = y
    if "fold" in m.columns:
        have = m["fold"].dropna().nunique()
        if have != n_folds:
            m = m.drop(columns="fold")
    folds, _ = fold_splits(m, n_folds, seed=seed)
    m["fold"] = folds.to_numpy()
    return m


def finetune_config(config: LSEMVAERecipeConfig, name: str, cache_dir: str, manifest: str, task: Any,
                    weights: str | None, vae: Mapping[str, Any] | None) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of one model (before its fold's manifest is set)."""
    from ..models import ModelConfig
    from ..models.lsvae import LSVAEConfig
    from ..training import TrainConfig
    from ..transforms.preprocess import PreprocessConfig

    spec = MODELS[name]
    cache = _cache_config(config)
    leads = tuple(spec.get("leads", config.leads))
    leads = tuple(lead for lead in CANONICAL_LEADS if lead in leads)  # canonical order; encoders go by name
    prep = PreprocessConfig(fs=cache.fs, leads=leads, window_s=cache.duration_s, eval_stride_s=cache.duration_s,
                            noise_mv=0.0)
    settings = {"num_workers": 0, "seed": config.seed, "precision": "auto", **config.finetune}
    if spec.get("encoder") == "resnet":
        model = ModelConfig(fusion="ecg", ecg_encoder=config.resnet_encoder, leads=leads)
        settings.update(config.resnet_finetune)
    else:
        v = LSVAEConfig.from_dict(dict(vae or _vae_settings(config, {}, cache.n_samples)))
        a = v.architecture()
        kw = {"arch": v.arch, "channels": list(a["channels"]), "latent_dim": int(a["latent_dim"]),
              "pool_length": int(a["pool_length"]), "kernel_size": v.kernel_size, "n_samples": v.n_samples,
              "head_hidden": int(config.head_hidden), "dropout": float(config.dropout),
              "frozen": bool(spec.get("frozen", config.frozen)) and weights is not None}
        if weights is not None:
            kw["pretrained"] = str(weights)
        encoder = "betavae" if v.fusion == "single" else "lsvae"  # the single-encoder VAE's face takes its leads' columns
        model = ModelConfig(fusion="ecg", ecg_encoder=encoder, ecg_kwargs=kw, leads=leads)
    return TrainConfig.from_dict({**settings, "cache_dir": cache_dir, "manifest": manifest,
                                  "model": model.to_dict(), "preprocess": prep, "task": task.to_dict()})


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def fold_metrics(task: Any, val: pd.DataFrame | None, test: pd.DataFrame) -> dict[str, float]:
    """Accuracy, AUROC, F1, MCC of one fold's test table (scikit-learn).

    Binary: decisions at the Youden threshold chosen on the validation table (the library's rule);
    multiclass: the most probable class, one-vs-rest macro AUROC and macro F1.
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    from ..evaluation.calibration import choose_threshold

    y = task.labels_from_table(test)
    p = task.predictions_from_table(test)
    ok = np.isfinite(y) & (np.isfinite(p) if p.ndim == 1 else np.isfinite(p).all(axis=1))
    y, p = y[ok].astype(int), p[ok]
    if task.kind == "binary":
        if val is not None:
            vy, vp = task.labels_from_table(val), task.predictions_from_table(val)
            thr = float(choose_threshold(vy, vp, "youden").value)
        else:
            thr = 0.5
        pred = (p >= thr).astype(int)
        auroc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")
        f1 = f1_score(y, pred, zero_division=0)
    elif task.kind == "multiclass":
        pred = np.argmax(p, axis=1)
        labels = list(range(task.n_classes))
        present = np.unique(y)
        try:
            auroc = (roc_auc_score(y, p[:, present] / p[:, present].sum(1, keepdims=True), multi_class="ovr",
                                   average="macro", labels=list(present)) if len(present) > 2
                     else roc_auc_score(y == present[-1], p[:, present[-1]]) if len(present) == 2 else float("nan"))
        except ValueError:
            auroc = float("nan")
        f1 = f1_score(y, pred, average="macro", labels=labels, zero_division=0)
    else:
        raise ConfigError(f"the ls-emvae recipe fine-tunes binary and multiclass tasks, not {task.kind}")
    return {"accuracy": float(accuracy_score(y, pred)), "auroc": float(auroc), "f1": float(f1),
            "mcc": float(matthews_corrcoef(y, pred)), "n": int(len(y))}


CV_METRICS = ("accuracy", "auroc", "f1", "mcc")


# --------------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------------
@dataclass
class LSEMVAEResult:
    """What :func:`run_lsemvae` produced: ``summary`` ``{model: {metric: {mean, sd, values}}}``, the pooled
    evaluation, ``comparison`` rows (paired differences vs LS-EMVAE), pretraining info, written paths."""

    out_dir: Path
    summary: dict[str, dict[str, dict[str, Any]]]
    evaluation: Any
    comparison: pd.DataFrame
    pretraining: dict[str, dict[str, Any]]
    actions: dict[str, str]
    paths: dict[str, Path]

    def summary_lines(self) -> list[str]:
        lines = [f"{'model':<18}" + "".join(f"{m:>18}" for m in CV_METRICS)]
        for name, metrics in self.summary.items():
            lines.append(f"{name:<18}" + "".join(f"{metrics[m]['mean']:>10.3f} +- {metrics[m]['sd']:.3f}"
                                                  for m in CV_METRICS))
        return lines


@register_recipe("ls-emvae", LSEMVAERecipeConfig, "paper 002: LS-EMVAE pretrained on unlabelled 12-lead ECGs, "
                 "fine-tuned on a lead subset with k-fold CV, vs baselines and ablations")
def run_lsemvae(config: LSEMVAERecipeConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                command: str | None = None) -> LSEMVAEResult:
    """Run the recipe (module docstring) into ``out_dir``."""
    from ..evaluation import evaluate_tables
    from ..evaluation.evaluate import read_manifest, run_tables
    from ..evaluation.folds import fold_manifest
    from ..tasks import load_task
    from ..training.vae_pretrain import PretrainConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(config.shared_dir) if config.shared_dir else out
    clock = Stopwatch()
    task = load_task(config.task)
    if task.kind not in ("binary", "multiclass"):
        raise ConfigError(f"the ls-emvae recipe fine-tunes binary and multiclass tasks, not {task.kind} ({task.name})")
    cache_cfg = _cache_config(config)
    ft_manifest = resolve_cohort(config.cohort)
    cohorts = [resolve_cohort(c) for c in (config.pretrain_cohorts or [config.cohort])]
    if ft_manifest.resolve() not in [c.resolve() for c in cohorts]:
        cohorts.append(ft_manifest)

    log(f"[1/4] caches ({cache_cfg.fs:g} Hz, {cache_cfg.duration_s:g} s, ECG preprocessing {cache_cfg.baseline})")
    caches: dict[Path, Path] = {}
    with clock("caches"):
        for i, manifest in enumerate(cohorts):
            cdir = shared / "caches" / f"{i}-{manifest.parent.name}"
            ensure_cache(manifest, cdir, cache_cfg, workers=config.workers, log=log)
            caches[manifest.resolve()] = cdir
            log(f"      {manifest} -> {cdir}")
    pre_sources = [{"cache_dir": str(caches[c.resolve()].resolve()), "manifest": str(c.resolve())}
                   for c in cohorts[: len(config.pretrain_cohorts or [config.cohort])]]

    log("[2/4] pretraining")
    variants: dict[str, dict[str, Any]] = {}
    for name in config.models:
        if MODELS[name]["vae"] is not None:
            vae = _vae_settings(config, MODELS[name]["vae"], cache_cfg.n_samples)
            variants.setdefault(_variant_key(vae), vae)
    pretrained: dict[str, Any] = {}
    with clock("pretraining"):
        for key, vae in variants.items():
            pcfg = PretrainConfig.from_dict({**config.pretrain, "seed": config.seed, "sources": pre_sources,
                                             "vae": vae, "window_s": cache_cfg.duration_s})
            pretrained[key] = ensure_pretrain(pcfg, shared / "pretrain" / key, title=f"VAE {key}",
                                              progress=config.progress, log=log)

    log(f"[3/4] {config.n_folds}-fold cross-validation of {', '.join(config.models)}")
    cohort = task_manifest(read_manifest(ft_manifest), task, config.restrict_to, config.n_folds, config.seed,
                           config.records_per_patient)
    folds = cohort["fold"].astype(int)
    ft_cache = str(caches[ft_manifest.resolve()].resolve())
    actions: dict[str, str] = {f"pretrain/{k}": v.action for k, v in pretrained.items()}
    tables: dict[int, dict[str, tuple[pd.DataFrame | None, pd.DataFrame]]] = {}
    with clock("fine-tuning"):
        for f in range(config.n_folds):
            fdir = out / "cv" / f"fold_{f}"
            fdir.mkdir(parents=True, exist_ok=True)
            mpath = fdir / "manifest.parquet"
            fm = fold_manifest(cohort, folds, f, config.n_folds)
            _write_if_changed(fm, mpath)
            tables[f] = {}
            for name in config.models:
                vae = (_vae_settings(config, MODELS[name]["vae"], cache_cfg.n_samples)
                       if MODELS[name]["vae"] is not None else None)
                weights = str(pretrained[_variant_key(vae)].weights.resolve()) if vae is not None else None
                tc = finetune_config(config, name, ft_cache, str(mpath.resolve()), task, weights, vae)
                ran = ensure_run(tc, fdir / name, title=f"fold {f} {name}", progress=config.progress, log=log,
                                 command=command)
                actions[f"cv/fold_{f}/{name}"] = ran.action
                tables[f][name] = run_tables(fdir / name, "test")

    log("[4/4] evaluation")
    with clock("evaluation"):
        per_fold = {f: {name: fold_metrics(task, val, test) for name, (val, test) in t.items()}
                    for f, t in tables.items()}
        summary: dict[str, dict[str, dict[str, Any]]] = {}
        rows = []
        for name in config.models:
            summary[name] = {}
            for metric in CV_METRICS:
                vals = np.asarray([per_fold[f][name][metric] for f in per_fold], dtype=float)
                ok = vals[np.isfinite(vals)]
                summary[name][metric] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                                         "sd": float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
                                         "values": vals.tolist()}
                rows.append({"model": name, "metric": metric, "mean": summary[name][metric]["mean"],
                             "sd": summary[name][metric]["sd"],
                             **{f"fold_{f}": v for f, v in zip(per_fold, vals.tolist())}})
        pd.DataFrame(rows).to_csv(out / "crossval.csv", index=False)
        pooled = {name: (_concat([tables[f][name][0] for f in tables]), _concat([tables[f][name][1] for f in tables]))
                  for name in config.models}
        evaluation = evaluate_tables(pooled, out / "evaluation", manifest=cohort, split="test (out-of-fold, pooled)",
                                     n_boot=config.n_boot, seed=config.seed, reference=REFERENCE, task=task,
                                     subgroups=[], title="LS-EMVAE: cross-validated out-of-fold predictions")
        comparison = comparison_table(evaluation)
        comparison.to_csv(out / "comparison.csv", index=False)
    pre_info = {k: {"vae": variants[k], "run_dir": str(v.run_dir), "action": v.action,
                    **{x: v.info.get(x) for x in ("epochs", "final", "seconds", "records_per_s", "parameters",
                                                  "ecg_preprocessing", "train_records", "val_records", "precision")}}
                for k, v in pretrained.items()}
    paths = {"crossval_csv": out / "crossval.csv", "comparison_csv": out / "comparison.csv",
             "summary_json": out / "summary.json", "report": evaluation.report}
    (out / "summary.json").write_text(json.dumps(
        {"task": task.to_dict(), "models": config.models, "cv": summary,
         "per_fold": {str(f): v for f, v in per_fold.items()}, "pretraining": pre_info,
         "design": f"{config.n_folds} patient-grouped folds stratified by the label; fold i test, fold i+1 "
                   "validation (early stopping, binary threshold: Youden on validation), the rest training; "
                   "pretraining on the unlabelled ECGs of the pretraining cohorts (test records included, labels "
                   "never read); CIs: patient bootstrap of the pooled out-of-fold predictions",
         "fine_tune_records": int(len(cohort)), "actions": actions, "seconds": clock.seconds},
        indent=2, default=str) + "\n", encoding="utf-8")
    result = LSEMVAEResult(out, summary, evaluation, comparison, pre_info, actions, paths)
    for line in result.summary_lines():
        log(line)
    return result


def comparison_table(evaluation: Any) -> pd.DataFrame:
    """One row per (model, metric): the pooled estimate with its CI and the paired difference vs LS-EMVAE."""
    rows = []
    for name, m in evaluation.models.items():
        comp = evaluation.comparisons.get(f"{REFERENCE} vs {name}")
        for metric, iv in m.metrics.items():
            d = comp.differences.get(metric) if comp is not None else None
            rows.append({"model": name, "metric": metric, "value": iv.value, "ci_low": iv.ci_low,
                         "ci_high": iv.ci_high,
                         "ls_emvae_minus_model": None if d is None else d.difference,
                         "diff_ci_low": None if d is None else d.ci_low, "diff_ci_high": None if d is None else d.ci_high,
                         "p_value": None if d is None else d.p_value})
    return pd.DataFrame(rows)


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    frames = [f for f in frames if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _write_if_changed(frame: pd.DataFrame, path: Path) -> None:
    """Write a fold manifest unless an identical one is there (its bytes are a run input)."""
    if path.is_file():
        try:
            if pd.read_parquet(path).equals(frame):
                return
        except Exception:  # noqa: BLE001 (unreadable: rewrite)
            pass
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


__all__ = ["CV_METRICS", "DEFAULT_MODELS", "MODELS", "REFERENCE", "LSEMVAERecipeConfig", "LSEMVAEResult",
           "comparison_table", "finetune_config", "fold_metrics", "run_lsemvae", "task_manifest"]
