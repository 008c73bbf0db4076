"""Write a model bundle from a training run: ``cardiofusion export RUN --out BUNDLE``.

The manifest carries everything prediction needs, so that prediction never re-implements or guesses
a setting (``docs/screening.md``):

* ``model``: the ``ModelConfig`` (encoders, fusion, leads), its modalities, the score's meaning;
* ``decode``: the preprocessing cache's ``CacheConfig`` (ECG rate, stored duration, baseline removal,
  X-ray square size and resize mode) -- how each raw file was decoded for training;
* ``ecg_reader_defaults``: ``fs``/``units``/``resolution_uv`` for headerless ECG files, those of the
  training export when they were uniform;
* ``preprocess``: the run's ``PreprocessConfig`` (leads, window, evaluation stride, image size and
  normalisation); ``ecg`` / ``cxr`` restate them for people, with the window averaging rule;
* ``task_definition``: the run's fitted task (:class:`cardiofusion.tasks.Task`, the regression scaler
  included; a bundle without it is the binary aortic stenosis task) and ``task``, its description;
* ``label``: the aortic stenosis definition of the cohort (other tasks: the task's columns and description);
* ``calibration`` and ``threshold`` (binary tasks): from an evaluation folder
  (``EVALDIR/models/NAME/calibration.json``) or fitted here on the run's validation scores, with how the
  threshold was chosen; other kinds carry ``decision`` (how results are decided: the most probable class,
  the task's per-label thresholds, values in units) and no calibration;
* ``validation``: the run's validation metrics and the threshold's sensitivity / specificity (other kinds:
  the task's metrics on ``RUN/val_scores.csv``, scikit-learn);
* ``inference``: the bundle's stored choice of ``runtime`` and ``precision`` (used when prediction names none);
* ``precision``: the precisions offered and, for each reduced one, its check against fp32 on the validation
  split (largest score difference, AUROC difference, decision flips; :mod:`cardiofusion.bundle.precision`);
* ``versions``, ``created``, ``source`` (run, checkpoint), per-file digests and ``content_hash``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.calibration import CALIBRATION_METHODS, Calibrator, Threshold, choose_threshold
from ..errors import ConfigError, ReadError
from ..io.torchfile import check_torch_file
from .format import (FORMAT_NAME, FORMAT_VERSION, GENERATED_LABEL, GENERATOR_WEIGHTS, MANIFEST, ONNX_GRAPH, WEIGHTS,
                     is_bundle_folder, write_manifest)
from .precision import PrecisionTolerances
from .results import TASK_KEY, task_description


def _versions() -> dict[str, str]:
    import platform

    import safetensors
    import torch

    from .. import __version__

    out = {"cardiofusion": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "safetensors": safetensors.__version__}
    for name in ("timm", "onnx", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def _reader_defaults(config: Any, manifest_table: pd.DataFrame | None, cache_config: Any) -> dict[str, Any]:
    """Headerless-file reader options of the training export: the cache's, else the manifest's when uniform."""
    out: dict[str, Any] = {"fs": cache_config.ecg_fs, "units": cache_config.ecg_units,
                           "resolution_uv": cache_config.ecg_resolution_uv}
    if manifest_table is None:
        return out
    for key, value in list(out.items()):
        if value is None and key in manifest_table.columns:
            values = manifest_table[key].dropna().unique()
            if len(values) == 1:
                v = values[0]
                out[key] = v.item() if hasattr(v, "item") else v
    return out


def _label_definition(manifest_path: str) -> dict[str, Any]:
    """The aortic stenosis rule of the cohort (``cohort/config.json`` beside the manifest, else the default)."""
    from ..cohort.labels import ASCriteria

    criteria: dict[str, Any] | None = None
    source = None
    cfg = Path(manifest_path).parent / "config.json" if manifest_path else None
    if cfg is not None and cfg.is_file():
        try:
            criteria = json.loads(cfg.read_text())["config"]["criteria"]
            source = "cohort config.json"
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            criteria = None
    if criteria is None:
        criteria = ASCriteria().to_dict()
        source = "library default"
    parts = []
    for key, text in (("peak_velocity_m_s", "peak aortic jet velocity >= {} m/s"),
                      ("mean_gradient_mmhg", "mean gradient >= {} mmHg"), ("ava_cm2", "aortic valve area <= {} cm2")):
        if criteria.get(key) is not None:
            parts.append(text.format(criteria[key]))
    definition = ("aortic stenosis on echocardiography: any of " + ", ".join(parts)) if parts else "aortic stenosis"
    return {"name": "aortic_stenosis", "definition": definition, "criteria": criteria, "source": source}


def _calibration_from_evaluation(evaluation: str | os.PathLike, name: str | None) -> tuple[Calibrator, Threshold, dict]:
    root = Path(evaluation)
    models = root / "models"
    if name is None:
        found = sorted(p.parent.name for p in models.glob("*/calibration.json"))
        if len(found) != 1:
            raise ConfigError(f"{root}: give --name, one of: {', '.join(found) or '(no models/*/calibration.json)'}")
        name = found[0]
    path = models / name / "calibration.json"
    if not path.is_file():
        raise ReadError(path, "no calibration.json for this model in the evaluation folder")
    try:
        data = json.loads(path.read_text())
        calibrator, threshold = Calibrator.from_dict(data["calibrator"]), Threshold.from_dict(data["threshold"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ReadError(path, f"not a calibration.json with calibrator and threshold "
                              f"({type(e).__name__}: {e})") from None
    return calibrator, threshold, {"source": "evaluation", "evaluation": str(root.resolve()), "name": name,
                                   "run": data.get("run")}


def _fit_calibration(val: pd.DataFrame, method: str, rule: str, target: float | None) -> tuple[Calibrator, Threshold]:
    labels, scores = val["label"].to_numpy(dtype=float), val["score"].to_numpy(dtype=float)
    calibrator = Calibrator.fit(scores, labels, method)
    threshold = choose_threshold(labels, calibrator(scores), rule, target, chosen_on="val")
    return calibrator, threshold


def _validation(run_dir: Path | None, val: pd.DataFrame | None, calibrator: Calibrator, threshold: Threshold) -> dict:
    out: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "result.json").is_file():
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError, RecursionError):
            result = {}
        for key in ("val_auroc", "best_val_loss", "best_epoch", "epochs_trained", "records", "positives"):
            if key in result:
                out[key] = result[key]
    if val is not None and len(val):
        from ..training.evaluate import auroc

        y = val["label"].to_numpy(dtype=float)
        p = calibrator(val["score"].to_numpy(dtype=float))
        keep = np.isfinite(y) & np.isfinite(p)
        decided = threshold.apply(p[keep])
        yk = y[keep]
        out["n_records"] = int(keep.sum())
        out["n_positive"] = int((yk == 1).sum())
        out["auroc"] = _num(auroc(yk, p[keep]))
        out["brier"] = _num(float(np.mean((p[keep] - yk) ** 2))) if keep.any() else None
        out["sensitivity_at_threshold"] = _num(float(decided[yk == 1].mean())) if (yk == 1).any() else None
        out["specificity_at_threshold"] = _num(float((~decided[yk == 0]).mean())) if (yk == 0).any() else None
    return out


def _task_validation(task: Any, run_dir: Path | None, val: pd.DataFrame | None) -> dict[str, Any]:
    """Validation metrics of a non-binary run from its validation score table (scikit-learn)."""
    from sklearn.metrics import accuracy_score, mean_absolute_error, roc_auc_score

    out: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "result.json").is_file():
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError, RecursionError):
            result = {}
        for key in ("best_val_loss", "best_epoch", "epochs_trained", "records"):
            if key in result:
                out[key] = result[key]
    if val is None or not len(val) or not set(task.prediction_columns()) <= set(val.columns):
        return out
    labels = np.asarray(task.labels_from_table(val), dtype=np.float64)
    preds = np.asarray(task.predictions_from_table(val), dtype=np.float64)
    out["n_records"] = int(len(val))
    if task.kind == "multiclass":
        keep = np.isfinite(labels) & np.isfinite(preds).all(axis=1)
        y, p = labels[keep].astype(int), preds[keep]
        out["accuracy"] = _num(float(accuracy_score(y, p.argmax(axis=1)))) if keep.any() else None
        per_class = {}
        for j, name in enumerate(task.classes):
            yj = (y == j).astype(int)
            per_class[name] = _num(float(roc_auc_score(yj, p[:, j]))) if 0 < yj.sum() < len(yj) else None
        out["auroc_per_class"] = per_class
        known = [v for v in per_class.values() if v is not None]
        out["macro_auroc"] = _num(float(np.mean(known))) if known else None
    elif task.kind == "multilabel":
        per_label = {}
        for j, name in enumerate(task.classes):
            keep = np.isfinite(labels[:, j]) & np.isfinite(preds[:, j])
            yj = labels[keep, j]
            per_label[name] = (_num(float(roc_auc_score(yj, preds[keep, j]))) if len(np.unique(yj)) == 2 else None)
        out["auroc_per_label"] = per_label
        known = [v for v in per_label.values() if v is not None]
        out["macro_auroc"] = _num(float(np.mean(known))) if known else None
    else:
        mae = {}
        for j, name in enumerate(task.classes):
            keep = np.isfinite(labels[:, j]) & np.isfinite(preds[:, j])
            mae[name] = _num(float(mean_absolute_error(labels[keep, j], preds[keep, j]))) if keep.any() else None
        out["mae_per_target"] = mae
        out["units"] = {name: task.unit(col) or None for name, col in zip(task.classes, task.columns)}
    return out


def _decision_rule(task: Any) -> dict[str, Any]:
    """How a non-binary bundle decides (``manifest["decision"]``)."""
    if task.kind == "multiclass":
        return {"rule": "most probable class", "classes": list(task.classes), "ordinal": task.ordinal}
    if task.kind == "multilabel":
        return {"rule": "per-label threshold on the label probability (task thresholds, default 0.5)",
                "thresholds": {n: float(task.thresholds.get(o, 0.5)) for n, o in zip(task.classes, task.output_names)}}
    return {"rule": "values in units (standardised outputs mapped back with the training split's mean and sd)",
            "units": {n: task.unit(c) or None for n, c in zip(task.classes, task.columns)}}


def _check_out(out: Path, sources: list[Any], overwrite: bool) -> None:
    """Refuse an ``--out`` whose writing could destroy anything but an older bundle.

    ``out`` may be new, or (with ``overwrite``) an existing cardiofusion bundle folder; never a regular file,
    a symlink, another folder, nor one of ``sources`` (the run, its checkpoint, cache, evaluation folder),
    a folder containing one of them or a folder inside one of them.
    """
    try:
        exists = out.exists() or out.is_symlink()
        resolved = out.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loop, bad name
        raise ConfigError(f"{out}: unusable --out ({e})") from None
    for source in sources:
        if source is None:
            continue
        try:
            src = Path(source).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if resolved == src or resolved in src.parents:
            raise ConfigError(f"{out}: --out is (or contains) the export's source {src}; choose a new bundle folder")
        if exists and src in resolved.parents:
            raise ConfigError(f"{out}: --out lies inside the export's source {src}; refusing to replace it, "
                              f"choose a new bundle folder")
    if not exists:
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.is_symlink():
        raise ConfigError(f"{out}: is a symbolic link; --overwrite only replaces a bundle folder itself")
    if not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a bundle folder; --overwrite only replaces a cardiofusion "
                          f"bundle folder (remove the file yourself or choose another --out)")
    if not is_bundle_folder(out):
        raise ConfigError(f"{out}: not a cardiofusion bundle (no {MANIFEST} of format {FORMAT_NAME!r}); "
                          f"--overwrite only replaces a bundle folder, choose another --out")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the complete new bundle ``tmp`` to ``out``; an old bundle there is removed only afterwards."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)  # same folder: atomic rename
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the old bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def export_bundle(run: str | os.PathLike, out: str | os.PathLike, *, evaluation: str | os.PathLike | None = None,
                  name: str | None = None, calibration: str = "platt", threshold: str = "youden",
                  target_sensitivity: float | None = None, checkpoint: str | os.PathLike | None = None,
                  onnx: bool | str = "auto", onnx_exporter: str = "auto", overwrite: bool = False,
                  precisions: str | Sequence[str] = "auto", precision: str = "fp32", runtime: str = "torch",
                  tolerances: PrecisionTolerances | dict[str, Any] | None = None, int8: str = "static",
                  generator: str | os.PathLike | None = None, guidance: float = 3.0, sample_steps: int = 50) -> Path:
    """Write a model bundle (``out``, a new folder) from a training run.

    Args:
        run: the run folder (its best-validation-loss checkpoint unless ``checkpoint`` is given).
        out: the bundle folder to create.
        evaluation, name: take calibrator and threshold from ``EVALDIR/models/NAME/calibration.json``.
        calibration: otherwise fit this calibrator (``platt``, ``isotonic``, ``none``) on ``RUN/val_scores.csv``.
        threshold: and choose the threshold by this rule (``youden``; ``sensitivity`` needs ``target_sensitivity``).
        target_sensitivity: shorthand for ``threshold="sensitivity"`` with this target (e.g. 0.9).
        checkpoint: a specific ``.ckpt`` of the run.
        onnx: also store ``model.onnx`` (True), never (False), or when onnx is installed (``auto``).
        onnx_exporter: ``auto``, ``torchscript`` or ``dynamo`` (see :func:`cardiofusion.bundle.onnx.export_onnx`).
        overwrite: replace an existing bundle folder -- only a folder that holds a cardiofusion bundle
            manifest, never a file, another folder or the run itself (or a folder containing or inside it).
            The new bundle is written beside it first; the old one is removed only once the new one is in place.
        precisions: reduced precisions to check against fp32 on the validation split and offer when they pass
            (``bf16``, ``fp16``, ``int8``; ``auto``: bf16 where this CPU has it and int8 where ONNX is stored;
            ``()``: none).  See :mod:`cardiofusion.bundle.precision`.
        precision, runtime: the bundle's stored choice, used when prediction names none (``fp32`` / ``torch``);
            a precision refused by the check is an error here, with its numbers.
        tolerances: when a precision is refused (:class:`~cardiofusion.bundle.precision.PrecisionTolerances`).
        int8: ``static`` (default: activation ranges calibrated on 64 records of the training split; dynamic
            when that fails) or ``dynamic`` ONNX Runtime quantisation.
        generator: an ECG -> X-ray generator run (paper 003 stage 4, ``OUT/runs/generate`` of the
            ``cardiacnets`` recipe, or its ``.ckpt``) to carry in ``generator.safetensors``: prediction can
            then return an image generated from the ECG, labelled GENERATED (never a real X-ray).  Its ECG
            preprocessing must be the model's.
        guidance, sample_steps: the stored classifier-free guidance scale and DDIM steps of that generator.

    Returns:
        The bundle folder.
    """
    from safetensors.torch import save_file

    from ..cache import load_manifest, open_cache
    from ..models.registry import FUSIONS
    from ..training import load_run
    from ..training.inference import LoadedRun

    out = Path(out)
    _check_out(out, [run, checkpoint, evaluation], overwrite)
    if calibration not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration {calibration!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    if target_sensitivity is not None:
        threshold = "sensitivity"
    loaded: LoadedRun = load_run(checkpoint if checkpoint is not None else run)
    run_dir = Path(run) if Path(run).is_dir() else loaded.run_dir
    config = loaded.config
    if not config.cache_dir:
        raise ConfigError(f"{run}: the run records no preprocessing cache; cannot tell how files were decoded")
    cache_config = open_cache(config.cache_dir).config
    _check_out(out, [run_dir, loaded.checkpoint, config.cache_dir, config.manifest, evaluation], overwrite)
    try:
        table, _ = load_manifest(config.manifest) if config.manifest else (None, None)
    except ReadError:
        table = None

    from ..tasks import load_task

    task = load_task(getattr(config, "task", None))
    val = None
    if run_dir is not None and (run_dir / "val_scores.csv").is_file():
        val = pd.read_csv(run_dir / "val_scores.csv", dtype={"record_id": str, "patient_id": str})
    if not task.is_binary:
        if target_sensitivity is not None or threshold != "youden":
            raise ConfigError(f"{run}: a {task.kind} task ({task.name}) has no single decision threshold; leave "
                              f"out --threshold / --target-sensitivity (multilabel thresholds are the task's)")
        if evaluation is not None:
            raise ConfigError(f"{run}: --evaluation supplies a binary calibration and threshold; a {task.kind} "
                              f"task ({task.name}) has none, leave it out")
        calibrator = thr = cal_source = None
    elif evaluation is not None:
        calibrator, thr, cal_source = _calibration_from_evaluation(evaluation, name)
    else:
        if val is None:
            raise ReadError(run, "no val_scores.csv to fit the calibrator and threshold on; give --evaluation")
        calibrator, thr = _fit_calibration(val, calibration, threshold, target_sensitivity)
        cal_source = {"source": "fitted at export", "on": "RUN/val_scores.csv", "method": calibration,
                      "rule": threshold, "target": target_sensitivity}

    pp, model_cfg = config.preprocess, config.model
    modalities = list(model_cfg.modalities)
    trained_with = model_cfg.cxr_pretrained
    model_dict = model_cfg.to_dict()
    model_dict["cxr_pretrained"] = False  # the bundle's weights replace any initial weights
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name or (run_dir.name if run_dir is not None else loaded.checkpoint.stem),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": ("screening for aortic stenosis from a 12-lead ECG and/or a chest X-ray" if task.is_binary
                 and task.name == "aortic_stenosis" else task_description(task, modalities)),
        TASK_KEY: task.to_dict(),
        "model": {"config": model_dict, "modalities": modalities, "fusion": model_cfg.fusion,
                  "score": getattr(FUSIONS.get(model_cfg.fusion), "score_meaning", "model score"),
                  "initial_cxr_weights": trained_with if isinstance(trained_with, bool) else str(trained_with)},
        "decode": cache_config.to_dict(),
        "ecg_reader_defaults": _reader_defaults(config, table, cache_config),
        "preprocess": pp.to_dict(),
        "ecg": {"fs": pp.fs, "leads": list(pp.leads), "units": "mV", "duration_s": cache_config.duration_s,
                "baseline": cache_config.baseline, "window_s": pp.window_s, "eval_stride_s": pp.eval_stride_s,
                "averaging": "mean of the scores of every evaluation window (stride eval_stride_s, plus one "
                             "window aligned to the end), over the first duration_s seconds"},
        "cxr": {"stored_size": cache_config.image_size, "resize_mode": cache_config.image_mode,
                "image_size": pp.image_size, "normalisation": "(x / 255 - image_mean) / image_std",
                "image_mean": pp.image_mean, "image_std": pp.image_std, "channels": 1},
        "label": (_label_definition(config.manifest) if task.is_binary and task.name == "aortic_stenosis"
                  else {"name": task.name, "definition": task.description or task_description(task, modalities),
                        "columns": list(task.columns), "source": "task definition"}),
        **({"calibration": {"calibrator": calibrator.to_dict(), **cal_source},
            "threshold": {**thr.to_dict(), "description": thr.describe()},
            "validation": _validation(run_dir, val, calibrator, thr)} if task.is_binary else
           {"decision": _decision_rule(task), "validation": _task_validation(task, run_dir, val)}),
        "source": {"run": str(run_dir.resolve()) if run_dir is not None else None,
                   "checkpoint": str(Path(loaded.checkpoint).resolve())},
        "versions": _versions(),
    }

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    except OSError as e:
        raise ReadError(out, f"cannot create the bundle folder ({e.strerror or e})") from None
    try:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in loaded.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "cardiofusion_bundle": str(FORMAT_VERSION)})
        want_onnx = onnx is True or (onnx == "auto" and _onnx_available())
        if want_onnx:
            from .onnx import export_onnx

            graph, used = export_onnx(loaded.model.eval(), leads=len(pp.leads), window=pp.window_samples,
                                      image_size=pp.image_size, exporter=onnx_exporter)
            (tmp / ONNX_GRAPH).write_bytes(graph)
            manifest["onnx"] = {"file": ONNX_GRAPH, "exporter": used, "inputs": list(_onnx_names()[0]),
                                "outputs": list(_onnx_names()[1]), "dynamic_axes": ["windows", "records"]}
        else:
            graph = None
        if generator is not None:
            if "ecg" not in modalities:
                raise ConfigError(f"{run}: an ECG -> X-ray generator needs a model that reads the ECG")
            gen_state, manifest["generator"] = _generator_section(generator, pp, guidance, sample_steps)
            save_file(gen_state, str(tmp / GENERATOR_WEIGHTS), metadata={"format": "pt"})
        section, extra = _precision_section(loaded, precisions, precision, runtime, tolerances, int8, graph,
                                            calibrator, thr, task=task)
        for fname, data in extra.items():
            (tmp / fname).write_bytes(data)
        manifest["inference"] = {"runtime": section.pop("runtime"), "precision": section.pop("default")}
        manifest["precision"] = section
        write_manifest(tmp, manifest)
        _check_out(out, [run_dir, loaded.checkpoint, config.cache_dir, config.manifest, evaluation], overwrite)
        _swap_into_place(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReadError(out, f"cannot write the bundle ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _generator_section(generator: str | os.PathLike, pp: Any, guidance: float,
                       steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generator's weights and manifest section; its ECG preprocessing must be the model's."""
    from ..training.ecg_generate import GenerationModule
    from ..training.inference import best_checkpoint
    from ..training.pretrain_fit import PretrainConfig

    path = Path(generator)
    run = path if path.is_dir() else (path.parent.parent if path.parent.name == "checkpoints" else None)
    ckpt = best_checkpoint(path) if path.is_dir() else path
    if not ckpt.is_file() or run is None or not (run / "config.yaml").is_file():
        raise ReadError(path, "not a generator run folder (config.yaml and checkpoints/) or one of its checkpoints")
    run_config = PretrainConfig.from_file(run / "config.yaml")
    if run_config.kind != "generate":
        raise ConfigError(f"{path}: a {run_config.kind} pretraining run, not an ECG -> image generator")
    gp = run_config.preprocess
    if (gp.fs, tuple(gp.leads), gp.window_samples) != (pp.fs, tuple(pp.leads), pp.window_samples):
        raise ConfigError(f"{path}: the generator reads ECG windows of {gp.window_samples} samples at {gp.fs:g} Hz "
                          f"({len(gp.leads)} leads), the model {pp.window_samples} at {pp.fs:g} Hz "
                          f"({len(pp.leads)} leads)")
    if float(guidance) < 0 or int(steps) < 1:
        raise ConfigError(f"generator guidance must be >= 0 and sample steps >= 1, got {guidance}, {steps}")
    check_torch_file(ckpt, what="generator checkpoint")
    module = GenerationModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    section = {"file": GENERATOR_WEIGHTS, "spec": module.generator_spec(), "guidance": float(guidance),
               "steps": int(steps), "scheduler": "ddim", "condition": "the first ECG window's aligned embedding",
               "label": GENERATED_LABEL, "source": {"run": str(run.resolve()), "checkpoint": str(ckpt.resolve())}}
    return state, section


def _split_loader(loaded: Any, split: str, batch_size: int = 16) -> Any:
    """Deterministic loader of one split of the run's own cohort (all windows per record, the task's labels)."""
    from ..training.inference import run_datamodule

    dm = run_datamodule(loaded, batch_size=batch_size)
    dm.setup()
    if split not in dm.datasets or len(dm.datasets[split]) == 0:
        raise ConfigError(f"no usable {split} records in the run's cohort")
    return dm.eval_dataloader(split)


def _precision_section(loaded: Any, precisions: str | Sequence[str], default: str, runtime: str,
                       tolerances: PrecisionTolerances | dict[str, Any] | None, int8: str, graph: bytes | None,
                       calibrator: Calibrator, thr: Threshold, *, task: Any = None
                       ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest's ``precision`` section (check of each precision against fp32 on validation) and the
    files the offered precisions need.  Binary bundles are judged by AUROC and decision flips at the bundle's
    threshold; other task kinds by the task's own metric and decisions
    (:func:`~cardiofusion.bundle.precision.compare_task_outputs`)."""
    from itertools import islice

    from .precision import AUTO_PRECISIONS, INT8_MODES, PRECISIONS, check_precisions, describe_check

    tol = tolerances if isinstance(tolerances, PrecisionTolerances) else PrecisionTolerances.from_dict(tolerances)
    auto = isinstance(precisions, str) and precisions == "auto"
    wanted = list(AUTO_PRECISIONS) if auto else ([precisions] if isinstance(precisions, str) else list(precisions))
    for p in [*wanted, default]:
        if p not in PRECISIONS:
            raise ConfigError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"unknown runtime {runtime!r}; choose torch or onnx")
    if int8 not in INT8_MODES:
        raise ConfigError(f"unknown int8 mode {int8!r}; choose from {', '.join(INT8_MODES)}")
    if default != "fp32" and default not in wanted:
        wanted.append(default)
    wanted = [p for p in dict.fromkeys(wanted) if p != "fp32"]
    pp = loaded.config.preprocess
    checks: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    n_records = None
    if wanted:
        try:
            val_loader = _split_loader(loaded, "val")
            calib = (list(islice(iter(_split_loader(loaded, "train", batch_size=8)), 8)) if int8 == "static"
                     and "int8" in wanted else None)
        except (ConfigError, ReadError, OSError) as e:
            checks = {p: {"accepted": False, "reasons": [f"not checked: the validation split cannot be read ({e})"]}
                      for p in wanted}
        else:
            checks, files = check_precisions(loaded.model, wanted, val_loader=val_loader, graph=graph,
                                             leads=len(pp.leads), window=pp.window_samples, image_size=pp.image_size,
                                             calibrate=calibrator, threshold=thr, tolerances=tol, int8_mode=int8,
                                             calibration_loader=calib, task=task)
            n_records = next((c["n_records"] for c in checks.values() if "n_records" in c), None)
        if not auto:
            unchecked = [p for p in wanted if "max_abs_score_diff" not in checks.get(p, {})]
            if unchecked:
                raise ConfigError("cannot offer " + "; ".join(describe_check(p, checks[p]) for p in unchecked))
    if default != "fp32" and not checks.get(default, {}).get("accepted"):
        raise ConfigError(f"the bundle's default precision {default} is refused: {describe_check(default, checks[default])}")
    if default == "int8":
        runtime = "onnx"
    offered = [p for p in wanted if checks.get(p, {}).get("accepted")]
    section = {"offered": ["fp32", *offered], "tolerances": tol.to_dict(),
               "checked_on": {"split": "val", "n_records": n_records, "reference": "fp32 (PyTorch)"},
               "checks": checks, "default": default, "runtime": runtime}
    return section, files


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from .onnx import INPUT_NAMES, OUTPUT_NAMES

    return INPUT_NAMES, OUTPUT_NAMES


__all__ = ["export_bundle"]
