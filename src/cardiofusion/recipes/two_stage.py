"""The two-stage reference method: each branch trained on every labelled record of its modality, then fused.

``cardiofusion recipe run two-stage --set cohort=COHORT --out OUT`` (or ``run_two_stage(config, OUT)``):

1. **stage 1** -- per modality, the branch cohort (:func:`cardiofusion.adapters.stage_data.branch_cohort`: the
   pseudo-paired cohort's pool, the cohort's own records, or a single-modality cohort of
   ``cardiofusion cohort from-adapter``), with its own validation split; files of the paired cohort's test
   split never enter it (its validation files never its training rows).  Each branch is cached and trained
   with early stopping (``branch_max_epochs``) in ``OUT/stage1/<m>/run``;
2. the **disjointness proof** (:func:`~cardiofusion.adapters.stage_data.check_disjoint`) over every manifest
   a model trains on; a shared file stops the recipe;
3. **stage 2** -- on the paired cohort: early, late and cooperative (every ``rhos``) models warm-started from
   the two branches, each in every ``modes`` (``frozen``: encoders frozen, only the fusion head trains;
   ``warmup``: head alone for half the epochs, then everything; ``finetune``: everything); per model the
   mode (and rho) of the highest validation AUROC is kept; the joint cooperative rho comes from the grid
   ``rhos`` or (``rho_search: optuna``) from an Optuna study per mode
   (:func:`cardiofusion.training.tuning.tune`).  The **alternating** cooperative fit
   (:func:`cardiofusion.training.alternating.fit_alternating`, Ding et al.'s one-view-at-a-time algorithm on
   the branches' frozen features, rho and ridge penalty chosen on validation) is fitted beside it, and the
   cooperative model that validates better is the recipe's ``Cooperative``;
4. **evaluate** on the test split (calibration and threshold on validation, patient bootstrap, and the
   ECG-donor bootstrap of a pseudo-paired cohort) against the single modality with the better validation
   AUROC, plus the Sokolow-Lyon and Cornell voltages; **ceilings**: the pool-label ceiling of
   ``pairing.json`` and the ideal combiner of the two trained branches
   (:func:`~cardiofusion.adapters.stage_data.ideal_combiner_auroc`, from each branch's AUROC on its own test
   pool).

``OUT/two_stage.json`` records what data each stage saw, every run, every choice and the numbers;
``OUT/table.md`` is the table.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..configfile import jsonable
from ..errors import ConfigError, ReadError
from ..evaluation.formatting import format_ci, format_interval, format_p, format_value
from .fusion_benchmark import (BASELINES, BenchmarkConfig, ceilings, criteria_tables, resolve_cxr_weights,
                               train_config)
from .registry import RecipeConfig, register_recipe
from .steps import Stopwatch, ensure_cache, ensure_run, resolve_cohort

#: Stage-2 training modes: how many of the epochs keep the warm-started encoders frozen.
MODES = ("frozen", "warmup", "finetune")
NAMES = {"ecg": "ECG only", "cxr": "X-ray only", "early": "Early fusion", "late": "Late fusion",
         "cooperative": "Cooperative (joint)", "alternating": "Cooperative (alternating)"}


@dataclass
class TwoStageConfig(RecipeConfig, BenchmarkConfig):
    """Settings of the ``two-stage`` recipe: :class:`~cardiofusion.recipes.fusion_benchmark.BenchmarkConfig`
    (data resolution, encoders, learning rates, epochs, rho grid, evaluation) plus:

    Attributes:
        cohort: the paired / pseudo-paired cohort (folder or manifest) of stage 2.
        ecg_data / cxr_data: each branch's stage-1 data: ``pool`` (the pseudo-paired cohort's pool), ``cohort``
            (the paired cohort's own records) or a single-modality cohort folder; ``auto``: ``pool`` when the
            cohort has one, else ``cohort``.
        ecg_label / cxr_label: the 0/1 label column of a single-modality cohort (``cohort``: ``label``).
        branch_max_epochs: stage-1 epochs (early stopping with ``patience``); None: ``max_epochs``.
        ecg_branch_epochs / cxr_branch_epochs: per branch over ``branch_max_epochs``.
        fusions: stage-2 models (of ``early``, ``late``, ``cooperative``).
        rho_search: how the joint cooperative model's rho is chosen per mode: ``grid`` (one run per ``rhos``) or
            ``optuna`` (a study of ``rho_trials`` runs, rho drawn from ``rho_range`` by Optuna's TPE sampler,
            :func:`cardiofusion.training.tuning.tune`; learning rate and batch size fixed); either way the
            best validation AUROC is kept.
        rho_trials / rho_range: the Optuna study's size and rho interval.
        modes: stage-2 training modes tried per model (of ``frozen``, ``warmup``, ``finetune``).
        alternating: fit the alternating cooperative model too.
        alternating_rhos / alternating_alphas: its grid (rho, ridge penalty), chosen on validation AUROC.
        criteria: evaluate the Sokolow-Lyon and Cornell voltages too (needs real 12-lead voltages in mV).
        oracle: a synthetic export's ``ground_truth`` folder: its planted-sign oracle
            (:func:`cardiofusion.synth.oracle.oracle_scores`, logistic regressions on the planted ECG signs, X-ray
            signs and both, fitted on the cohort's training split) is evaluated beside the models, so that every
            model's test AUROC has a paired difference against it; ``auto``: ``ground_truth`` beside the folder
            of the cohort's ECG files when there is one; None: no oracle.
        progress: progress bars (one per stage's run).
    """

    cohort: str = ""
    ecg_data: str = "auto"
    cxr_data: str = "auto"
    ecg_label: str = "label"
    cxr_label: str = "label"
    branch_max_epochs: int | None = None
    ecg_branch_epochs: int | None = None
    cxr_branch_epochs: int | None = None
    fusions: tuple[str, ...] = ("early", "late", "cooperative")
    rho_search: str = "grid"
    rho_trials: int = 8
    rho_range: tuple[float, float] = (0.0, 1.0)
    modes: tuple[str, ...] = ("frozen", "finetune")
    alternating: bool = True
    alternating_rhos: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    alternating_alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    criteria: bool = True
    oracle: str | None = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        BenchmarkConfig.__post_init__(self)
        self.fusions = tuple(str(f) for f in self.fusions)
        self.modes = tuple(str(m) for m in self.modes)
        bad = [f for f in self.fusions if f not in ("early", "late", "cooperative")]
        if bad or not self.fusions:
            raise ConfigError(f"two-stage: fusions must be some of early, late, cooperative, got {list(self.fusions)}")
        if self.rho_search not in ("grid", "optuna"):
            raise ConfigError(f"two-stage: rho_search must be grid or optuna, got {self.rho_search!r}")
        self.rho_range = tuple(float(r) for r in self.rho_range)  # type: ignore[assignment]
        if len(self.rho_range) != 2 or not 0 <= self.rho_range[0] <= self.rho_range[1]:
            raise ConfigError(f"two-stage: rho_range must be [low, high] with 0 <= low <= high, got {self.rho_range}")
        if int(self.rho_trials) < 1:
            raise ConfigError(f"two-stage: rho_trials must be >= 1, got {self.rho_trials}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"two-stage: modes must be some of {', '.join(MODES)}, got {list(self.modes)}")
        self.alternating_rhos = tuple(float(r) for r in self.alternating_rhos)
        self.alternating_alphas = tuple(float(a) for a in self.alternating_alphas)
        if any(r < 0 for r in self.alternating_rhos) or any(a <= 0 for a in self.alternating_alphas):
            raise ConfigError("two-stage: alternating_rhos must be >= 0 and alternating_alphas > 0")
        if self.branch_max_epochs is not None and int(self.branch_max_epochs) < 1:
            raise ConfigError(f"two-stage: branch_max_epochs must be >= 1, got {self.branch_max_epochs}")

    def benchmark_config(self) -> BenchmarkConfig:
        return BenchmarkConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BenchmarkConfig)})


# ---------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------
def _source(config: TwoStageConfig, modality: str, cohort_dir: Path) -> tuple[str, str]:
    src = getattr(config, f"{modality}_data")
    if src == "auto":
        src = "pool" if (cohort_dir / f"{modality}_pool.csv").is_file() else "cohort"
    return src, ("label" if src in ("pool", "cohort") else getattr(config, f"{modality}_label"))


def stage1(config: TwoStageConfig, manifest: Path, out: Path, *, log: Callable[[str], None],
           command: str | None = None, modalities: tuple[str, ...] = ("ecg", "cxr")) -> dict[str, Any]:
    """Branch cohorts, caches and runs of ``modalities``; returns
    ``{m: {"cohort": BranchCohort, "cache": Path, "run": EnsuredRun}}``."""
    from ..adapters.stage_data import branch_cohort
    from ..cache import CacheConfig

    bench = config.benchmark_config()
    weights = resolve_cxr_weights(bench)
    cache_config = CacheConfig(fs=config.fs, duration_s=config.duration_s, image_size=config.image_size)
    out_by_m: dict[str, Any] = {}
    for m in modalities:
        src, label = _source(config, m, manifest.parent)
        folder = out / "stage1" / m
        bc = branch_cohort(manifest, m, folder / "cohort", source=src, label_column=label)
        r = bc.info["records"]
        log(f"[stage 1] {NAMES[m]} branch on {bc.info['source']}: train {r['train']['records']} "
            f"({r['train']['positives']}+), val {r['val']['records']} ({r['val']['positives']}+), "
            f"held-out test {r['test']['records']}")
        ensure_cache(bc.manifest_path, folder / "cache", cache_config, workers=config.cache_workers,
                     progress=config.progress, log=log)
        cfg = train_config(bench, folder / "cache", bc.manifest_path, m, cxr_pretrained=weights)
        epochs = int(getattr(config, f"{m}_branch_epochs") or config.branch_max_epochs or config.max_epochs)
        cfg = cfg.replace(max_epochs=epochs, t_max=epochs)
        run = ensure_run(cfg, folder / "run", title=f"stage 1 {NAMES[m]}", progress=config.progress,
                         command=command, log=log)
        out_by_m[m] = {"cohort": bc, "cache": folder / "cache", "run": run}
    return out_by_m


def _mode_config(cfg: Any, mode: str) -> Any:
    epochs = int(cfg.max_epochs)
    frozen = {"frozen": epochs, "warmup": max(1, epochs // 2), "finetune": 0}[mode]
    return cfg.replace(freeze_encoders_epochs=frozen)


def stage2(config: TwoStageConfig, manifest: Path, cache: Path, branches: dict[str, Any], out: Path, *,
           log: Callable[[str], None], command: str | None = None) -> dict[str, Any]:
    """Every stage-2 run; returns ``{fusion: {"runs": {key: (val AUROC, run dir, settings)}, "chosen": key}}``."""
    bench = config.benchmark_config()
    init = {m: str(branches[m]["run"].run_dir.resolve()) for m in ("ecg", "cxr")}
    result: dict[str, Any] = {}
    for fusion in config.fusions:
        rhos = config.rhos if fusion == "cooperative" else (0.5,)
        runs: dict[str, Any] = {}
        if fusion == "cooperative" and config.rho_search == "optuna":
            rhos = ()
            for mode in config.modes:
                base = _mode_config(train_config(bench, cache, manifest, fusion, rho=config.rho_range[0],
                                                 init_from=init), mode)
                runs[f"cooperative_optuna_{mode}"] = _rho_study(config, base, mode,
                                                                out / "stage2" / f"cooperative_optuna_{mode}", log)
        for rho in rhos:
            for mode in config.modes:
                key = (f"cooperative_rho{rho:g}_{mode}" if fusion == "cooperative" else f"{fusion}_{mode}")
                cfg = _mode_config(train_config(bench, cache, manifest, fusion, rho=rho, init_from=init), mode)
                run = ensure_run(cfg, out / "stage2" / key, title=f"stage 2 {key}", progress=config.progress,
                                 command=command, log=log)
                runs[key] = {"val_auroc": run.val_auroc, "run": str(run.run_dir), "mode": mode,
                             "rho": rho if fusion == "cooperative" else None,
                             "best_epoch": run.result.best_epoch}
        finite = {k: v for k, v in runs.items() if np.isfinite(v["val_auroc"])}
        if not finite:
            raise ConfigError(f"two-stage: no {fusion} run has a validation AUROC")
        chosen = max(finite, key=lambda k: finite[k]["val_auroc"])  # first maximum in grid order
        log(f"[stage 2] {NAMES[fusion]}: " + ", ".join(f"{k} {format_value(v['val_auroc'])}" for k, v in runs.items())
            + f" -> {chosen}")
        result[fusion] = {"runs": runs, "chosen": chosen}
    return result


def _rho_study(config: TwoStageConfig, base: Any, mode: str, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The joint cooperative model's rho tuned by an Optuna study (resumed when re-run); its best trial's run."""
    from ..training.tuning import TuneConfig, tune

    study = TuneConfig(base=base, n_trials=int(config.rho_trials), rho_range=config.rho_range,
                       batch_sizes=(int(base.batch_size),), lr_range=(float(base.lr), float(base.lr)), pruner="none",
                       n_startup_trials=min(int(config.rho_trials), 4), seed=config.seed)
    result = tune(study, out, progress=config.progress, log=lambda line: log(f"      [optuna {mode}] {line}"))
    if result.best_run_dir is None:
        raise ConfigError(f"two-stage: no trial of the cooperative rho study in {out} has a validation AUROC")
    trials = [{"rho": t.params.get("rho"), "val_auroc": t.value, "run": t.user_attrs.get("run_dir")}
              for t in result.study.get_trials(deepcopy=False) if t.value is not None]
    return {"val_auroc": float(result.best_value), "run": result.best_run_dir, "mode": mode,
            "rho": float(result.best_params["rho"]), "best_epoch": _best_epoch(result),
            "optuna": {"study": str(out), "trials": trials}}


def _best_epoch(result: Any) -> int | None:
    trial = next((t for t in result.study.get_trials(deepcopy=False) if t.number == result.best_number), None)
    return None if trial is None else trial.user_attrs.get("best_epoch")


def _score_tables(run_dir: Path, manifest: Path, cache: Path, out: Path) -> Path:
    """A stage-1 branch's score tables on the paired cohort, as a folder of score tables."""
    from ..training import score_split

    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("val", "val_scores.csv"), ("test", "scores_test.csv")):
        table = score_split(run_dir, split, cache_dir=cache, manifest=manifest, reuse=False)
        table.drop(columns=["split"]).to_csv(out / name, index=False)
    return out


def alternating_step(config: TwoStageConfig, manifest: Path, cache: Path, branches: dict[str, Any], out: Path, *,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """Ding et al.'s alternating fit on the branches' frozen features; score tables in ``out``."""
    from ..training.alternating import fit_alternating, record_features
    from ..training.evaluate import auroc

    views: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        tables = {}
        for m in ("ecg", "cxr"):
            tables[m] = record_features(branches[m]["run"].run_dir, split, modality=m, cache_dir=cache,
                                        manifest=manifest)
        t_e, x_e = tables["ecg"]
        t_c, x_c = tables["cxr"]
        order = pd.Series(np.arange(len(t_c)), index=t_c["record_id"].to_numpy())
        rows = order.reindex(t_e["record_id"].to_numpy())
        keep = rows.notna().to_numpy()
        views[split] = {"table": t_e[keep].reset_index(drop=True), "X": x_e[keep],
                        "Z": x_c[rows[keep].to_numpy(dtype=int)]}
    tr, va = views["train"], views["val"]
    grid = []
    for rho in config.alternating_rhos:
        for alpha in config.alternating_alphas:
            f = fit_alternating(tr["X"], tr["Z"], tr["table"]["label"].to_numpy(), rho=rho, alpha=alpha)
            grid.append({"rho": rho, "alpha": alpha, "n_iter": f.n_iter, "converged": f.converged,
                         "val_auroc": auroc(va["table"]["label"].to_numpy(), f.predict(va["X"], va["Z"]))})
    best = max((g for g in grid if np.isfinite(g["val_auroc"])), key=lambda g: g["val_auroc"])
    fit = fit_alternating(tr["X"], tr["Z"], tr["table"]["label"].to_numpy(), rho=best["rho"], alpha=best["alpha"])
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("val", "val_scores.csv"), ("test", "scores_test.csv")):
        v = views[split]
        fx, fz = fit.branch_scores(v["X"], v["Z"])
        score = fx + fz
        v["table"].assign(score=score, prob=np.clip(score, 0, 1), score_ecg=fx, score_cxr=fz).to_csv(
            out / name, index=False)
    log(f"[stage 2] {NAMES['alternating']}: rho {best['rho']:g}, ridge {best['alpha']:g}, "
        f"val AUROC {format_value(best['val_auroc'])} ({len(grid)} settings)")
    return {"grid": grid, "chosen": best, "folder": str(out)}


def branch_test_aurocs(branches: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Each trained branch's AUROC for its own label on its own held-out test pool (patient bootstrap CI)."""
    from ..evaluation import bootstrap_weights
    from ..training import score_split
    from ..training.evaluate import auroc

    out = {}
    for m, b in branches.items():
        t = score_split(b["run"].run_dir, "test")
        y, s = t["label"].to_numpy(float), t["score"].to_numpy(float)
        w = bootstrap_weights(t["patient_id"].astype(str).to_numpy(), n_boot, seed)
        from sklearn.metrics import roc_auc_score

        boot = [roc_auc_score(y[r > 0], s[r > 0], sample_weight=r[r > 0]) for r in w if len(set(y[r > 0])) == 2]
        lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot else (np.nan, np.nan))
        out[m] = {"auroc": auroc(y, s), "ci_low": float(lo), "ci_high": float(hi), "records": len(t),
                  "positives": int(np.nansum(y)), "unique_files": int(t["record_id"].nunique())}
    return out


def _evaluate(config: TwoStageConfig, tables: dict[str, Any], manifest: Path, reference: str, out: Path,
              pseudo: bool) -> tuple[Any, Any]:
    from ..evaluation import evaluate_tables

    common = {"threshold_rule": config.threshold_rule, "calibration": config.calibration, "n_boot": config.n_boot,
              "seed": config.seed, "reference": reference}
    evaluation = evaluate_tables(tables, out / "evaluation", manifest=manifest, subgroups=[],
                                 title="two-stage reference method", progress=config.progress, **common)
    donor = None
    frame = pd.read_parquet(manifest)
    if pseudo and "ecg_source_patient_id" in frame.columns:
        donor_of = dict(zip(frame["record_id"].astype(str), frame["ecg_source_patient_id"].astype(str)))
        donor_tables = {n: (v, t.assign(patient_id=t["record_id"].astype(str).map(donor_of)))
                        for n, (v, t) in tables.items()}
        donor = evaluate_tables(donor_tables, out / "evaluation_ecg_donor", manifest=manifest, subgroups=[],
                                title="two-stage reference method, bootstrap over ECG donors", **common)
    return evaluation, donor


ORACLE_NAMES = {"ecg": "Oracle (planted ECG signs)", "cxr": "Oracle (planted X-ray signs)",
                "both": "Oracle (planted signs, both)"}


def oracle_tables(config: TwoStageConfig, frame: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The synthetic export's planted-sign oracle as score tables ``{name: (val, test)}`` (``oracle`` setting)."""
    from ..synth.oracle import oracle_scores

    folder = config.oracle
    if folder in (None, "", "none"):
        return {}
    if folder == "auto":
        paths = frame["ecg_path"].dropna().astype(str)
        folder = str(Path(paths.iloc[0]).parent.parent / "ground_truth") if len(paths) else ""
        if not (Path(folder) / "ecg_exams.csv").is_file():
            return {}
    gt = Path(folder)
    truth = {}
    for m in ("ecg", "cxr"):
        path = gt / f"{m}_exams.csv"
        if not path.is_file():
            raise ReadError(path, "no ground-truth table (oracle: give a synthetic export's ground_truth folder)")
        truth[m] = pd.read_csv(path, dtype={"exam_id": str, "patient_id": str})
    cols = ["record_id", "patient_id", "split", "label", "ecg_exam_id", "cxr_exam_id"]
    try:
        scores = oracle_scores(frame[cols].astype({"ecg_exam_id": str, "cxr_exam_id": str}), truth["ecg"],
                               truth["cxr"])
    except (KeyError, ValueError) as e:
        raise ConfigError(f"oracle: the ground truth in {gt} does not fit this cohort ({e})") from None
    scores = scores.astype({"record_id": str, "patient_id": str})
    return {name: tuple(scores.loc[scores["split"] == s, ["record_id", "patient_id", "label", m]]
                        .rename(columns={m: "score"}).reset_index(drop=True) for s in ("val", "test"))
            for m, name in ORACLE_NAMES.items()}


def difference(evaluation: Any, a: str, b: str) -> dict[str, float]:
    """Model ``a``'s test AUROC minus model ``b``'s, with the paired bootstrap CI of the evaluation."""
    if f"{a} vs {b}" in evaluation.comparisons:
        d = evaluation.comparisons[f"{a} vs {b}"].differences["auroc"]
        return {"difference": d.difference, "ci_low": d.ci_low, "ci_high": d.ci_high, "bootstrap_p": d.p_value}
    d = evaluation.comparisons[f"{b} vs {a}"].differences["auroc"]
    return {"difference": -d.difference, "ci_low": -d.ci_high, "ci_high": -d.ci_low, "bootstrap_p": d.p_value}


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"record_id": str, "patient_id": str})


# ---------------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------------
@register_recipe("two-stage", TwoStageConfig,
                 "the reference method in two stages: each branch trained on every labelled record of its modality, "
                 "then early / late / cooperative fusion (joint and alternating) on the paired cohort")
def run_two_stage(config: TwoStageConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                  command: str | None = None) -> dict[str, Any]:
    """Run the two-stage recipe (module docstring); returns ``OUT/two_stage.json``'s content."""
    from ..adapters.stage_data import check_disjoint
    from ..cache import CacheConfig
    from ..evaluation.evaluate import run_tables

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = resolve_cohort(config.cohort)
    frame = pd.read_parquet(manifest)
    pseudo = "pseudo_paired" in frame.columns and bool(frame["pseudo_paired"].fillna(False).any())
    clock = Stopwatch()
    with clock("stage1"):
        branches = stage1(config, manifest, out, log=log, command=command)
    proof = check_disjoint(manifest, {**{f"stage 1 {m}": b["cohort"].manifest_path for m, b in branches.items()},
                                      "stage 2 (paired cohort)": manifest})
    log("[check] no file of the paired test split is in any stage's training or validation rows")
    with clock("stage2"):
        cache = out / "cache"
        ensure_cache(manifest, cache, CacheConfig(fs=config.fs, duration_s=config.duration_s,
                                                  image_size=config.image_size),
                     workers=config.cache_workers, progress=config.progress, log=log)
        fused = stage2(config, manifest, cache, branches, out, log=log, command=command)
        alt = (alternating_step(config, manifest, cache, branches, out / "stage2" / "cooperative_alternating", log=log)
               if config.alternating else None)
    with clock("evaluate"):
        tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
        val_auroc: dict[str, float] = {}
        if config.criteria:
            crit, _ = criteria_tables(frame)
            for key, name in BASELINES.items():
                tables[name] = (crit[key]["val"], crit[key]["test"])
        from ..training.evaluate import auroc

        for m in ("ecg", "cxr"):
            folder = _score_tables(branches[m]["run"].run_dir, manifest, cache, out / "stage2" / f"{m}_only")
            v, t = _read_table(folder / "val_scores.csv"), _read_table(folder / "scores_test.csv")
            tables[NAMES[m]] = (v, t)
            val_auroc[NAMES[m]] = auroc(v["label"].to_numpy(), v["score"].to_numpy())
        for fusion, res in fused.items():
            tables[NAMES[fusion]] = run_tables(Path(res["runs"][res["chosen"]]["run"]), "test")
            val_auroc[NAMES[fusion]] = res["runs"][res["chosen"]]["val_auroc"]
        if alt is not None:
            folder = Path(alt["folder"])
            tables[NAMES["alternating"]] = (_read_table(folder / "val_scores.csv"),
                                            _read_table(folder / "scores_test.csv"))
            val_auroc[NAMES["alternating"]] = alt["chosen"]["val_auroc"]
        for name, (v, t) in oracle_tables(config, frame).items():
            tables[name] = (v, t)
            val_auroc[name] = auroc(v["label"].to_numpy(), v["score"].to_numpy())
        best_single = max((NAMES["ecg"], NAMES["cxr"]), key=lambda n: val_auroc[n])
        evaluation, donor = _evaluate(config, tables, manifest, best_single, out, pseudo)
        branch_auc = branch_test_aurocs(branches, config.n_boot, config.seed)
        ceiling = ceilings(manifest, branch_auc, {m: tables[NAMES[m]][1] for m in ("ecg", "cxr")}) if pseudo else None
    coop_kept, coop_vs = None, None
    if "cooperative" in fused or alt is not None:
        cands = {n: val_auroc[n] for n in (NAMES["cooperative"], NAMES["alternating"]) if n in val_auroc}
        coop_kept = max(cands, key=lambda n: cands[n])
        coop_vs = {n: difference(evaluation, coop_kept, n) for n in tables if n != coop_kept}
    test = frame[frame["split"] == "test"]
    data = {
        "paired_cohort": {"manifest": str(manifest.resolve()), "pseudo_paired": pseudo,
                          "records": {s: int((frame["split"] == s).sum()) for s in ("train", "val", "test")},
                          "unique_test_files": {m: int(test[f"{m}_path"].nunique()) for m in ("ecg", "cxr")}},
        "stage1": {m: {**b["cohort"].info, "manifest": str(b["cohort"].manifest_path), "cache": str(b["cache"]),
                       "run": str(b["run"].run_dir), "val_auroc": b["run"].val_auroc,
                       "best_epoch": b["run"].result.best_epoch} for m, b in branches.items()},
        "stage2": ("the paired cohort's train split (fitting) and val split (early stopping, mode / rho choice); "
                   "warm-started from the stage-1 runs"),
        "test_disjoint": proof,
    }
    rows = _rows(tables, evaluation, donor, best_single, val_auroc)
    info = {"recipe": "two-stage", "config": jsonable(config.to_dict()), "data": data, "stage2": fused,
            "alternating": alt, "cooperative_kept": coop_kept, "cooperative_kept_minus": coop_vs,
            "joint_vs_late_on_validation": ({"cooperative_joint": val_auroc.get(NAMES["cooperative"]),
                                              "late": val_auroc.get(NAMES["late"]),
                                              "alternating": val_auroc.get(NAMES["alternating"])}),
            "best_single_modality": best_single, "branch_test_pool_auroc": branch_auc, "ceilings": ceiling,
            "models": rows, "evaluation": str(out / "evaluation"),
            "seconds": {k: round(v, 1) for k, v in clock.seconds.items()}, "command": command,
            "cardiofusion_version": __version__}
    (out / "two_stage.json").write_text(json.dumps(jsonable(info), indent=2) + "\n", encoding="utf-8")
    (out / "table.md").write_text(_table_md(info, pseudo), encoding="utf-8")
    for row in rows:
        log(f"  {row['model']:<28} AUROC {row['auroc_text']}   vs {best_single}: {row['diff_text']}")
    log(f"table: {out / 'table.md'}")
    return info


def _rows(tables: dict[str, Any], evaluation: Any, donor: Any, reference: str,
          val_auroc: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for name in tables:
        m = evaluation.models[name]
        iv = m.metrics["auroc"]
        row: dict[str, Any] = {"model": name, "auroc": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                               "auroc_text": format_interval(iv), "val_auroc": val_auroc.get(name),
                               "records": m.counts["records"]}
        if donor is not None:
            d_iv = donor.models[name].metrics["auroc"]
            row["donor_ci"] = [d_iv.ci_low, d_iv.ci_high]
        row["diff_text"] = "reference"
        if name != reference:
            d = evaluation.comparisons[f"{reference} vs {name}"].differences["auroc"]
            row["difference_vs_best_single"] = {"difference": -d.difference, "ci_low": -d.ci_high,
                                                "ci_high": -d.ci_low, "bootstrap_p": d.p_value}
            row["diff_text"] = format_ci(-d.difference, -d.ci_high, -d.ci_low, signed=True)
            if donor is not None:
                dd = donor.comparisons[f"{reference} vs {name}"].differences["auroc"]
                row["difference_vs_best_single_donor"] = {"difference": -dd.difference, "ci_low": -dd.ci_high,
                                                          "ci_high": -dd.ci_low, "bootstrap_p": dd.p_value}
                row["diff_text"] += f" (donor CI {format_ci(-dd.difference, -dd.ci_high, -dd.ci_low, signed=True)})"
        rows.append(row)
    return rows


def _table_md(info: dict[str, Any], pseudo: bool) -> str:
    ref = info["best_single_modality"]
    lines = ["### Two-stage reference method" + (" -- PSEUDO-PAIRED (not real paired patients)" if pseudo else ""), "",
             f"Paired test split: {info['data']['paired_cohort']['records']['test']} records; unique test files "
             + ", ".join(f"{m} {n}" for m, n in info["data"]['paired_cohort']['unique_test_files'].items()) + ".", "",
             f"| Model | val AUROC | test AUROC (95% CI) | {'ECG-donor CI | ' if pseudo else ''}minus {ref} (95% CI) |",
             "|---|---|---|" + ("---|" if pseudo else "") + "---|"]
    for r in info["models"]:
        donor = (f"{r['donor_ci'][0]:.3f}-{r['donor_ci'][1]:.3f} | " if pseudo and "donor_ci" in r else "")
        lines.append(f"| {r['model']} | {format_value(r['val_auroc'])} | {r['auroc_text']} | {donor}{r['diff_text']} |")
    c = info.get("ceilings")
    if c:
        t = c["trained_branches"]
        p = c["pool_labels"] or {}
        lines += ["", f"Ceilings: pool labels ECG {format_value(p.get('ecg_label_only'))}, X-ray "
                      f"{format_value(p.get('cxr_label_only'))}, both {format_value(p.get('both_labels'))}; ideal "
                      f"combiner of the trained branches ECG {format_value(t['ecg_only'])}, X-ray "
                      f"{format_value(t['cxr_only'])}, both {format_value(t['both'])} (from each branch's AUROC on its "
                      "whole held-out test pool)."]
        pt = c.get("trained_branches_on_paired_test")
        if pt:
            lines += [f"Ideal combiner from the branches' AUROCs for their own pool labels on the paired test split's "
                      f"files (ECG {format_value(pt['branch_auroc_on_test_images']['ecg'])}, X-ray "
                      f"{format_value(pt['branch_auroc_on_test_images']['cxr'])}) and its realised rates: ECG "
                      f"{format_value(pt['ecg_only'])}, X-ray {format_value(pt['cxr_only'])}, "
                      f"both {format_value(pt['both'])}."]
    b = info["branch_test_pool_auroc"]
    lines += ["", "Branches on their own held-out test pools: " + "; ".join(
        f"{m} AUROC {format_value(v['auroc'])} ({format_value(v['ci_low'])}-{format_value(v['ci_high'])}, "
        f"{v['records']} records, {v['positives']}+)" for m, v in b.items()) + ".",
        f"Cooperative kept (better validation AUROC): {info['cooperative_kept']}.", ""]
    if info.get("cooperative_kept_minus"):
        lines += [f"{info['cooperative_kept']} minus each other model, test AUROC (paired patient bootstrap, 95% CI):",
                  "", "| Model | difference (95% CI) | p |", "|---|---|---|"]
        for name, d in info["cooperative_kept_minus"].items():
            lines.append(f"| {name} | {format_ci(d['difference'], d['ci_low'], d['ci_high'], signed=True)} | "
                         f"{format_p(d['bootstrap_p'])} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["MODES", "NAMES", "ORACLE_NAMES", "TwoStageConfig", "alternating_step", "branch_test_aurocs", "ceilings",
           "difference", "oracle_tables", "run_two_stage", "stage1", "stage2"]
