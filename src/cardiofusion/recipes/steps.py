"""Library steps every recipe composes: reuse what is finished and identical, resume what was interrupted,
redo the rest.

* :func:`ensure_run` -- one training run.  A finished run is reused only when its whole resolved
  :class:`~cardiofusion.training.TrainConfig` is unchanged *and* so are its inputs: the fingerprint of every
  warm-start source (``init_from``: the sha256 of the checkpoint it copies weights from), of a local X-ray
  weights file (``model.cxr_pretrained``), of the manifest file and of the cache (its settings and exams).
  The fingerprints are recorded in ``RUN/sources.json`` before training starts.  An interrupted run with
  the same settings and inputs is resumed (``fit(..., resume=True)``); anything else is retrained, after
  removing the old folder -- only when it is a cardiofusion run folder (:func:`is_run_folder`).
* :func:`train_plan` -- an ordered list of runs (:class:`RunPlan`), later ones warm-started from earlier ones.
* :func:`ensure_cache` -- the preprocessing cache: an identical finished cache is reused, a compatible
  partial one resumed, one of other settings or another cohort rebuilt.
* :func:`ensure_export` -- the synthetic hospital export: an identical one is reused.
* :class:`Stopwatch` -- wall time per stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ReadError

#: Written into every run folder by :func:`ensure_run`: the fingerprints of the run's inputs.
SOURCES_JSON = "sources.json"

#: What a run folder may hold (``fit``'s layout, scores written beside it, this module's sources.json);
#: a folder with anything else is not deleted.
RUN_FOLDER_ENTRIES = ("config.yaml", "checkpoints", "metrics.csv", "logs", "val_scores.csv", "result.json",
                      "reproduce.txt", SOURCES_JSON, "scores_*.csv", "*.tmp")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------
class Stopwatch:
    """Seconds per named stage: ``with clock("cache"): ...`` then ``clock.seconds``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0

    def total(self) -> float:
        return time.perf_counter() - self.start


# --------------------------------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_checkpoint(source: str | os.PathLike, what: str) -> Path:
    """The checkpoint a warm start copies from: a run folder's best checkpoint, or the ``.ckpt`` itself."""
    from ..training import best_checkpoint

    path = Path(source)
    if path.is_dir():
        return best_checkpoint(path)
    if path.is_file():
        return path
    raise ReadError(path, f"{what}: no such run folder or checkpoint")


def cache_fingerprint(cache_dir: str | os.PathLike) -> str | None:
    """sha256 of a cache's identity (its settings, exams and format, from ``cache.json``), or None when
    there is no readable cache.  Timestamps and counts are left out: rebuilding identically keeps it."""
    meta = Path(cache_dir) / "cache.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ident = {k: data.get(k) for k in ("format_version", "config", "source_hash", "leads", "n_samples")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def run_inputs(config: Any) -> dict[str, Any]:
    """The fingerprints of what a run depends on besides its config (see the module docstring)."""
    inputs: dict[str, Any] = {}
    for modality, source in sorted(config.init_from.items()):
        ckpt = source_checkpoint(source, f"init_from[{modality!r}]")
        inputs[f"init_from.{modality}"] = {"source": str(source), "checkpoint": ckpt.name, "sha256": file_sha256(ckpt)}
    weights = getattr(config.model, "cxr_pretrained", None)
    if isinstance(weights, str) and Path(weights).is_file():
        inputs["model.cxr_pretrained"] = {"source": weights, "sha256": file_sha256(weights)}
    ecg_weights = (getattr(config.model, "ecg_kwargs", None) or {}).get("pretrained")
    if isinstance(ecg_weights, str) and Path(ecg_weights).is_file():
        inputs["model.ecg_kwargs.pretrained"] = {"source": ecg_weights, "sha256": file_sha256(ecg_weights)}
    if config.manifest and Path(config.manifest).is_file():
        inputs["manifest"] = {"source": str(config.manifest), "sha256": file_sha256(config.manifest)}
    if config.cache_dir:
        inputs["cache"] = {"source": str(config.cache_dir), "sha256": cache_fingerprint(config.cache_dir)}
    return inputs


# --------------------------------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------------------------------
def is_run_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a (finished, partial or failed) cardiofusion run folder and holds nothing else."""
    p = Path(path)
    if not p.is_dir():
        return False
    names = [c.name for c in p.iterdir()]
    if not ({"config.yaml", SOURCES_JSON} & set(names)):
        return False
    return all(any(fnmatch.fnmatch(n, pat) for pat in RUN_FOLDER_ENTRIES) for n in names)


def remove_run_folder(path: str | os.PathLike) -> None:
    """Delete a run folder; refuses (:class:`ReadError`) a folder that is not one (:func:`is_run_folder`)."""
    p = Path(path)
    if not p.exists():
        return
    if p.is_dir() and not any(p.iterdir()):
        p.rmdir()
        return
    if not is_run_folder(p):
        raise ReadError(p, "is not a cardiofusion run folder (it holds other files); refusing to delete it to "
                           "retrain there: move it away or choose another output folder")
    shutil.rmtree(p)


def _recorded(run: Path, config_cls: Any) -> tuple[dict[str, Any], Any] | None:
    """A run folder's saved config (as a dict, read with ``config_cls``) and the input fingerprints it recorded in
    ``sources.json``; None when either is missing, unreadable or from an older layout (not the same run)."""
    try:
        saved = config_cls.from_file(run / "config.yaml").to_dict()
        recorded = json.loads((run / SOURCES_JSON).read_text(encoding="utf-8")).get("inputs")
    except Exception:  # noqa: BLE001 (missing, unreadable or older files: not the same run)
        return None
    return saved, recorded


def _same_settings(run: Path, config: Any, inputs: Mapping[str, Any]) -> bool:
    from ..training import TrainConfig

    found = _recorded(run, TrainConfig)
    return found is not None and _without_scaler(found[0]) == _without_scaler(_with_outputs(config).to_dict()) \
        and found[1] == json.loads(json.dumps(inputs))


def _with_outputs(config: Any) -> Any:
    """The config as ``fit`` saves it: a task's outputs set on the model (:meth:`TrainConfig.with_task_outputs`)."""
    return config.with_task_outputs() if hasattr(config, "with_task_outputs") else config


def _without_scaler(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the regression scaler ``fit`` saves (fitted on the training split, so it is a
    function of the settings and inputs already compared)."""
    if isinstance(data.get("task"), dict):
        return {**data, "task": {**data["task"], "scaler": None}}
    return data


@dataclass
class EnsuredRun:
    """A finished run and how :func:`ensure_run` got it.

    Attributes:
        run_dir: the run folder.
        action: ``reused`` (finished, unchanged), ``resumed`` (interrupted, same settings) or ``trained``.
        result: the run's :class:`~cardiofusion.training.FitResult` (read back from ``result.json`` when reused).
    """

    run_dir: Path
    action: str
    result: Any

    @property
    def val_auroc(self) -> float:
        return float(self.result.val_auroc)


def _fit_result(run: Path) -> Any:
    from ..training import FitResult, best_checkpoint

    info = json.loads((run / "result.json").read_text(encoding="utf-8"))
    val = info.get("val_auroc")
    loss = info.get("best_val_loss")
    return FitResult(run_dir=run, best_checkpoint=best_checkpoint(run), best_epoch=int(info.get("best_epoch") or 0),
                     best_val_loss=float("nan") if loss is None else float(loss),
                     val_auroc=float("nan") if val is None else float(val), val_scores=run / "val_scores.csv",
                     metrics_csv=run / "metrics.csv", epochs_trained=int(info.get("epochs_trained") or 0),
                     stopped_early=bool(info.get("stopped_early")), result_json=run / "result.json")


def ensure_run(config: Any, run_dir: str | os.PathLike, *, title: str | None = None, progress: bool = True,
               command: str | None = None, log: Log | None = None) -> EnsuredRun:
    """Reuse, resume or train the run of ``config`` in ``run_dir`` (see the module docstring).

    Args:
        config: the :class:`~cardiofusion.training.TrainConfig`.
        run_dir: the run folder; an existing folder of other settings is removed only if it is a run folder.
        title: the run's name in the progress lines (default: the folder name).
        progress: training progress bars.
        command: the command line recorded in ``reproduce.txt``.
        log: where progress lines go (default: nowhere).
    """
    from ..training import fit

    run = Path(run_dir)
    inputs = run_inputs(config)
    return _ensure_fitted(
        run, inputs, _same_settings(run, config, inputs), title=title, log=log, read_result=_fit_result,
        fit_run=lambda resume: fit(config, run, resume=resume, progress=progress, command=command),
        reused=lambda r: f"val AUROC {_fmt(r.val_auroc)}",
        trained=lambda r: f"best epoch {r.best_epoch}, val AUROC {_fmt(r.val_auroc)}")


def _ensure_fitted(run: Path, inputs: Mapping[str, Any], same: bool, *, title: str | None, log: Log | None,
                   read_result: Callable[[Path], Any], fit_run: Callable[[bool], Any],
                   reused: Callable[[Any], str], trained: Callable[[Any], str],
                   finished: Sequence[str] = ("result.json",), remove: Callable[[Path], None] = remove_run_folder,
                   noun: str = "run", verb: str = "training") -> EnsuredRun:
    """The reuse / resume / retrain flow shared by :func:`ensure_run`, :func:`ensure_pretrain_run` and
    :func:`ensure_pretrain`: ``same`` says whether the folder's saved config and input fingerprints equal the
    requested ones; a finished run (every file of ``finished``) of the same settings is reused, an interrupted one
    (``checkpoints/last.ckpt``) resumed, any other folder removed with ``remove`` (which refuses a folder that
    is not of this kind) and trained anew with ``fit_run(resume)``; ``reused`` / ``trained`` describe a result
    in the progress lines, ``noun`` / ``verb`` name the run there."""
    log = log or _quiet
    title = title or run.name
    if same and all((run / name).is_file() for name in finished):
        result = read_result(run)
        detail = reused(result)
        log(f"      {title}: reusing the finished {noun} in {run}" + (f" ({detail})" if detail else ""))
        return EnsuredRun(run, "reused", result)
    resume = same and (run / "checkpoints" / "last.ckpt").is_file()
    if not resume:
        remove(run)
        run.mkdir(parents=True, exist_ok=True)
        _write_sources(run, inputs)
    log(f"      {title}: {verb} into {run}" + (" (resuming)" if resume else ""))
    t0 = time.perf_counter()
    result = fit_run(resume)
    log(f"      {title}: {trained(result)} ({time.perf_counter() - t0:.0f} s)")
    return EnsuredRun(run, "resumed" if resume else "trained", result)


def _write_sources(run: Path, inputs: Mapping[str, Any]) -> None:
    tmp = run / (SOURCES_JSON + ".tmp")
    tmp.write_text(json.dumps({"inputs": inputs}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run / SOURCES_JSON)


def _fmt(v: Any) -> str:
    from ..evaluation.formatting import format_value

    return format_value(v)


@dataclass
class RunPlan:
    """One run of a :func:`train_plan`.

    Attributes:
        key: the run folder's name under the plan's folder (and the key of the returned mapping).
        title: its name in the progress lines.
        config: its ``TrainConfig``, or ``make(init_from) -> TrainConfig`` when it is warm-started.
        warm_from: ``{modality: key}`` of earlier runs of the plan whose encoders it starts from.
    """

    key: str
    title: str
    config: Any
    warm_from: Mapping[str, str] = field(default_factory=dict)


def train_plan(plan: Sequence[RunPlan], runs_dir: str | os.PathLike, *, progress: bool = True,
               command: str | None = None, log: Log | None = None,
               choose: Callable[[RunPlan, Any], Any] | None = None) -> dict[str, EnsuredRun]:
    """:func:`ensure_run` every run of ``plan`` in order into ``runs_dir/<key>``.

    ``choose(plan_item, config) -> config`` may replace a run's resolved config before it is ensured (the
    reference recipe tunes it there).
    """
    runs: dict[str, EnsuredRun] = {}
    for item in plan:
        missing = [k for k in item.warm_from.values() if k not in runs]
        if missing:
            raise ConfigError(f"run {item.key!r} warm-starts from {missing}, which come later in the plan")
        init = {m: str(runs[k].run_dir.resolve()) for m, k in item.warm_from.items()}
        config = item.config(init) if callable(item.config) else item.config
        if choose is not None:
            config = choose(item, config)
        runs[item.key] = ensure_run(config, Path(runs_dir) / item.key, title=item.title, progress=progress,
                                    command=command, log=log)
    return runs


# --------------------------------------------------------------------------------------------------
# LS-EMVAE pretraining (paper 002)
# --------------------------------------------------------------------------------------------------
#: What an LS-EMVAE pretraining folder may hold (:func:`cardiofusion.training.vae_pretrain.pretrain_lsvae`).
PRETRAIN_FOLDER_ENTRIES = ("pretrain.yaml", "checkpoints", "metrics.csv", "logs", "vae.pt", "result.json",
                           SOURCES_JSON, "*.tmp")


@dataclass
class EnsuredPretrain:
    """A finished pretraining and how :func:`ensure_pretrain` got it (``reused`` / ``resumed`` / ``trained``)."""

    run_dir: Path
    action: str
    weights: Path
    info: dict[str, Any]


def pretrain_inputs(config: Any) -> dict[str, Any]:
    """Fingerprints of a pretraining's inputs: every source's manifest file and cache identity."""
    out: dict[str, Any] = {}
    for i, src in enumerate(config.sources):
        m = Path(src["manifest"])
        out[f"source{i}"] = {"manifest": str(m), "manifest_sha256": file_sha256(m) if m.is_file() else None,
                             "cache": str(src["cache_dir"]), "cache_sha256": cache_fingerprint(src["cache_dir"])}
    return out


def ensure_pretrain(config: Any, run_dir: str | os.PathLike, *, title: str = "pretraining", progress: bool = False,
                    log: Log | None = None) -> EnsuredPretrain:
    """Reuse, resume or run the LS-EMVAE pretraining of ``config`` (a
    :class:`~cardiofusion.training.vae_pretrain.PretrainConfig`) in ``run_dir``, by the flow of :func:`ensure_run`
    (:func:`_ensure_fitted`): a finished folder of the same config and inputs is reused, an interrupted one
    resumed, anything else retrained after removing the folder (only when it holds nothing but pretraining
    files)."""
    from ..training.vae_pretrain import PRETRAIN_YAML, VAE_WEIGHTS, PretrainConfig, pretrain_lsvae

    run = Path(run_dir)
    inputs = json.loads(json.dumps(pretrain_inputs(config)))
    try:
        same = (PretrainConfig.from_file(run / PRETRAIN_YAML).to_dict() == config.to_dict()
                and json.loads((run / SOURCES_JSON).read_text(encoding="utf-8")).get("inputs") == inputs)
    except Exception:  # noqa: BLE001 (missing or unreadable: not the same pretraining)
        same = False

    def remove(folder: Path) -> None:
        if folder.exists() and any(folder.iterdir()):
            names = [c.name for c in folder.iterdir()]
            if not all(any(fnmatch.fnmatch(n, pat) for pat in PRETRAIN_FOLDER_ENTRIES) for n in names):
                raise ReadError(folder, "is not an LS-EMVAE pretraining folder (it holds other files); refusing to "
                                        "delete it: move it away or choose another output folder")
            shutil.rmtree(folder)

    def read(folder: Path) -> EnsuredPretrain:
        info = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        return EnsuredPretrain(folder, "reused", folder / VAE_WEIGHTS, info)

    def fit_run(resume: bool) -> EnsuredPretrain:
        result = pretrain_lsvae(config, run, resume=resume, progress=progress)
        return EnsuredPretrain(run, "", result.weights, result.info)

    def trained(r: EnsuredPretrain) -> str:
        final = r.info.get("final", {})
        return (f"{r.info.get('epochs')} epochs, train loss {_fmt(final.get('train_loss'))} (recon "
                f"{_fmt(final.get('train_recon'))}, kl {_fmt(final.get('train_kl'))}, align "
                f"{_fmt(final.get('train_align'))})")

    ensured = _ensure_fitted(run, inputs, same, title=title, log=log, read_result=read, fit_run=fit_run,
                             reused=lambda _: "", trained=trained, finished=("result.json", VAE_WEIGHTS),
                             remove=remove, noun="pretraining", verb="pretraining")
    return dataclasses.replace(ensured.result, action=ensured.action)


# --------------------------------------------------------------------------------------------------
# cohort, cache and synthetic export
# --------------------------------------------------------------------------------------------------
def resolve_cohort(cohort: str | os.PathLike) -> Path:
    """The manifest of a cohort folder (or the manifest file itself)."""
    if not str(cohort):
        raise ConfigError("set cohort (a cohort folder with manifest.parquet, or the manifest)")
    path = Path(cohort)
    manifest = path / "manifest.parquet" if path.is_dir() else path
    if not manifest.is_file():
        raise ReadError(manifest, "no cohort manifest (give a cohort folder with manifest.parquet or the file)")
    return manifest


def ensure_cache(manifest: str | os.PathLike, cache_dir: str | os.PathLike, cache_config: Any, *, workers: int = 1,
                 progress: bool = False, log: Log | None = None) -> Any:
    """Build (or reuse / resume) the preprocessing cache of ``manifest`` in ``cache_dir``.

    A finished cache of the same exams and settings is reused and a compatible partial one resumed (both by
    :func:`cardiofusion.cache.build_cache` itself); one of other settings or another cohort is rebuilt.
    Returns the build report.
    """
    from ..cache import build_cache

    log = log or _quiet
    try:
        return build_cache(manifest, cache_dir, cache_config, workers=workers, progress=progress)
    except ConfigError as e:  # the recipe's own cache folder, from another cohort or other settings
        log(f"      rebuilding {cache_dir}: it holds a cache of other settings or another cohort "
            f"({str(e).split(';')[0]})")
        return build_cache(manifest, cache_dir, cache_config, workers=workers, progress=progress, overwrite=True)


def export_matches(export_dir: str | os.PathLike, synth_config: Any) -> bool:
    """True when ``export_dir`` holds a finished synthetic export of ``synth_config``."""
    meta = Path(export_dir) / "export.json"
    try:
        saved = json.loads(meta.read_text()).get("config", {})
    except (OSError, ValueError):
        return False
    return saved == json.loads(json.dumps(synth_config.data_dict()))


def ensure_export(export_dir: str | os.PathLike, synth_config: Any, *, progress: bool = False,
                  log: Log | None = None, prefix: str = "synth") -> dict[str, Any]:
    """Write (or reuse an identical) synthetic hospital export; returns its oracle AUROCs.  Progress lines
    start with ``prefix``."""
    from ..synth import generate_export

    log = log or _quiet
    export = Path(export_dir)
    if export_matches(export, synth_config):
        log(f"{prefix}: reusing the identical export in {export}")
        summary = json.loads((export / "ground_truth" / "summary.json").read_text())
        return {k: summary.get("oracle", {}).get(k) for k in ("ecg", "cxr", "both")}
    log(f"{prefix}: writing a synthetic hospital export of {synth_config.n_patients} patients to {export}")
    result = generate_export(export, synth_config, overwrite=True, progress=progress)
    for line in result.summary_lines():
        log("      " + line)
    return dict(result.oracle)


__all__ = ["PRETRAIN_FOLDER_ENTRIES", "RUN_FOLDER_ENTRIES", "SOURCES_JSON", "EnsuredPretrain", "EnsuredRun",
           "RunPlan", "Stopwatch", "cache_fingerprint", "ensure_cache", "ensure_export", "ensure_pretrain",
           "ensure_run", "export_matches", "file_sha256", "is_run_folder", "pretrain_inputs", "remove_run_folder",
           "resolve_cohort", "run_inputs", "source_checkpoint", "train_plan"]


# --------------------------------------------------------------------------------------------------
# pretraining runs (paper 003: MAE, CLIP alignment)
# --------------------------------------------------------------------------------------------------
def pretrain_run_inputs(config: Any) -> dict[str, Any]:
    """The fingerprints of what a :class:`~cardiofusion.training.pretrain_fit.PretrainConfig` run depends on
    besides its config: the manifest, the cache, the checkpoint it starts from (``module.ecg_init``; the
    generator's ``module.align_checkpoint``) and a
    local teacher weights file (``module.cxr_pretrained``)."""
    inputs: dict[str, Any] = {}
    for key in ("ecg_init", "align_checkpoint"):
        init = config.module.get(key)
        if init:
            ckpt = source_checkpoint(init, f"module.{key}")
            inputs[f"module.{key}"] = {"source": str(init), "checkpoint": ckpt.name, "sha256": file_sha256(ckpt)}
    weights = config.module.get("cxr_pretrained")
    if isinstance(weights, str) and Path(weights).is_file():
        inputs["module.cxr_pretrained"] = {"source": weights, "sha256": file_sha256(weights)}
    if config.manifest and Path(config.manifest).is_file():
        inputs["manifest"] = {"source": str(config.manifest), "sha256": file_sha256(config.manifest)}
    if config.cache_dir:
        inputs["cache"] = {"source": str(config.cache_dir), "sha256": cache_fingerprint(config.cache_dir)}
    return inputs


def _same_pretrain_settings(run: Path, config: Any, inputs: Mapping[str, Any]) -> bool:
    from ..training.pretrain_fit import PretrainConfig

    found = _recorded(run, PretrainConfig)
    return found is not None and found[0] == config.to_dict() and found[1] == json.loads(json.dumps(inputs))


def ensure_pretrain_run(config: Any, run_dir: str | os.PathLike, *, title: str | None = None, progress: bool = True,
                        log: Log | None = None) -> EnsuredRun:
    """:func:`ensure_run` for a pretraining run (:func:`cardiofusion.training.pretrain_fit.fit_pretrain`):
    reused when its :class:`~cardiofusion.training.pretrain_fit.PretrainConfig` and input fingerprints
    (:func:`pretrain_run_inputs`) are unchanged and it finished, resumed when interrupted, else retrained (the
    old folder removed only when it is a run folder).  ``result`` is a
    :class:`~cardiofusion.training.pretrain_fit.PretrainResult`."""
    from ..training.pretrain_fit import fit_pretrain, read_pretrain_result

    run = Path(run_dir)
    inputs = pretrain_run_inputs(config)

    def describe(r: Any) -> str:
        return f"best epoch {r.best_epoch}, val loss {_fmt(r.best_val_loss)}"

    return _ensure_fitted(
        run, inputs, _same_pretrain_settings(run, config, inputs), title=title, log=log,
        read_result=read_pretrain_result,
        fit_run=lambda resume: fit_pretrain(config, run, resume=resume, progress=progress),
        reused=describe, trained=describe)


__all__ += ["ensure_pretrain_run", "pretrain_run_inputs"]
