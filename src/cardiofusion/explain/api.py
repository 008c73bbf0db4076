"""Run-level entry points: explain records of a trained run and write their figures."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .attribution import Explanation, RecordScorer, default_output_targets, explain_sample, resolve_output_target
from .plot import plot_cxr_explanation, plot_ecg_explanation
from .samples import RecordSample, load_samples, sample_from_batch

__all__ = ["choose_examples", "explain_record", "explain_records", "explanation_targets", "load_run_any", "run_task"]


def load_run_any(run: Any) -> Any:
    """A ``LoadedRun`` from a run folder, checkpoint path or an already loaded run."""
    if hasattr(run, "model") and hasattr(run, "config"):
        return run
    from ..training import load_run

    return load_run(run)


def run_task(loaded: Any) -> Any:
    """The fitted task of a loaded run (``TrainConfig.task``; None / absent: the binary AS task)."""
    from ..tasks import load_task

    return load_task(getattr(loaded.config, "task", None))


def explanation_targets(model: Any, sample: RecordSample, task: Any, output: Any = None) -> list[Any]:
    """The output targets to explain for a record: ``[output]`` when one is given, else the defaults
    (:func:`cardiofusion.explain.default_output_targets`: the predicted class, every positive label or the
    first label, the first regression target); ``[None]`` for binary models."""
    if task is not None and getattr(task, "is_binary", False):
        return [None]
    n_outputs = int(getattr(getattr(model, "config", None), "num_outputs", 1) or 1)
    if output is not None:
        return [resolve_output_target(output, task, n_outputs)]
    if n_outputs <= 1:
        return [None]
    model.eval()
    out = RecordScorer(model, sample).fused()
    return default_output_targets(task, out.prob.detach().float().mean(dim=0).cpu().numpy(), n_outputs) or [None]


def explain_record(run: Any, sample_or_record: RecordSample | Mapping[str, Any] | str, *,
                   method: str = "gradcam", target: Any = "auto", rollout: bool = False, ig_steps: int = 32,
                   cxr_layer: Any = None, cache_dir: str | os.PathLike | None = None,
                   manifest: str | os.PathLike | pd.DataFrame | None = None, output: Any = None) -> Explanation:
    """Explain one record of a trained run.

    Args:
        run: run folder, checkpoint or ``LoadedRun``.
        sample_or_record: a record id (read from the run's cache, or ``cache_dir`` / ``manifest``), a
            :class:`RecordSample`, or one record's sample dict (``docs/model_contract.md`` keys; an
            evaluation sample of ``CohortDataset``).
        method: ``gradcam`` (X-ray Grad-CAM, ECG 1D Grad-CAM per lead) or ``ig`` (integrated gradients).
        target: ``auto`` (each modality's branch score where the head has one, else the fused score) or
            ``score`` (the fused score); for runs of other tasks also a class / label / target name or index
            (the output target, with ``auto`` scores).
        output: the output target of a non-binary run (class name or index, label name, output index);
            default the predicted class / first positive label / first target.
        rollout: lead importance by attention rollout across layers instead of the last layer's attention.
        ig_steps: integration steps of integrated gradients.
        cxr_layer: X-ray Grad-CAM layer(s) (default: the encoder's last feature map; ``-2``: the timm
            stage before it, twice the grid; see :func:`cardiofusion.explain.cxr_gradcam`).
    """
    loaded = load_run_any(run)
    if isinstance(sample_or_record, RecordSample):
        sample = sample_or_record
    elif isinstance(sample_or_record, Mapping):
        sample = sample_from_batch(sample_or_record, loaded.config.preprocess)
    else:
        sample = load_samples(loaded, [str(sample_or_record)], cache_dir=cache_dir, manifest=manifest)[0]
    return explain_sample(loaded.model, sample, method=method, target=target, rollout=rollout, ig_steps=ig_steps,
                          cxr_layer=cxr_layer, output=output, task=run_task(loaded))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "record"


def _label_text(label: float, task: Any = None) -> str:
    if task is None or task.is_binary:
        if np.isnan(label):
            return "unknown"
        if task is None or task.name == "aortic_stenosis":
            return "AS" if label >= 0.5 else "no AS"
        return task.classes[int(label >= 0.5)]
    if np.isnan(label):
        return "unknown"
    if task.kind == "multiclass" and 0 <= int(label) < len(task.classes):
        return task.classes[int(label)]
    if task.kind == "multilabel":
        return "positive" if label >= 0.5 else "negative"
    return f"{label:g}"


def explain_records(run: Any, record_ids: Iterable[str], out_dir: str | os.PathLike, *,
                    cache_dir: str | os.PathLike | None = None,
                    manifest: str | os.PathLike | pd.DataFrame | None = None, method: str = "gradcam",
                    layout: str = "3x4", target: Any = "auto", rollout: bool = False,
                    ig_steps: int = 32, cxr_layer: Any = None, output: Any = None) -> list[dict[str, Any]]:
    """Explain records and write their figures (``<record>_cxr.png``, ``<record>_ecg.png``) and
    ``explanations.json`` into ``out_dir``.

    Runs of non-binary tasks: each record is explained for ``output`` (a class / label / target name or
    index; ``target`` may name it too), by default for the predicted class, every positive label (else the
    first label) or the first target; figures are ``<record>_<target>_cxr.png`` and the target is in the
    figure title and in ``output_target``.

    Returns:
        One dict per record and output target: ``record_id``, ``patient_id``, ``label`` (1 / 0 / None;
        class index or value for other tasks), ``probability``, ``score``, ``branch_scores``, ``images``
        (``{"cxr": path, "ecg": path}``, only the modalities explained), ``lead_importance`` (when the ECG was
        explained), ``targets``, ``output_target`` (non-binary runs).
    """
    loaded = load_run_any(run)
    ids = [str(r) for r in record_ids]
    if not ids:
        raise ConfigError("no record ids to explain")
    samples = load_samples(loaded, ids, cache_dir=cache_dir, manifest=manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = run_task(loaded)
    if target not in ("auto", "score"):
        if output is not None:
            raise ConfigError(f"unknown explanation target {target!r}; choose auto or score")
        output, target = target, "auto"
    results = []
    for sample in samples:
        for chosen in explanation_targets(loaded.model, sample, task, output):
            results.append(_explain_one(loaded, sample, task, chosen, out, method=method, layout=layout,
                                        target=target, rollout=rollout, ig_steps=ig_steps, cxr_layer=cxr_layer))
    (out / "explanations.json").write_text(json.dumps({"run": str(loaded.run_dir or loaded.checkpoint),
                                                       "records": results}, indent=2))
    return results


def target_title(expl: Explanation, task: Any) -> str:
    """The figure-title part naming the explained output and its probability / score."""
    if expl.output_target is None:
        name = task.classes[1] if task is not None and task.is_binary and task.name != "aortic_stenosis" else "AS"
        return f"P({name}) = {expl.probability:.3f}"
    t = expl.output_target
    if expl.probability is not None:
        return f"target: {t.describe()}  |  P = {expl.probability:.3f}"
    return f"target: {t.describe()}  |  score {expl.score:+.3f}"


def _explain_one(loaded: Any, sample: RecordSample, task: Any, chosen: Any, out: Path, *, method: str,
                 layout: str, target: str, rollout: bool, ig_steps: int, cxr_layer: Any) -> dict[str, Any]:
    expl = explain_sample(loaded.model, sample, method=method, target=target, rollout=rollout,
                          ig_steps=ig_steps, cxr_layer=cxr_layer, output=chosen, task=task)
    stem = _safe(sample.record_id) + (f"_{_safe(chosen.name)}" if chosen is not None else "")
    label = sample.label
    if chosen is not None and sample.labels is not None and task is not None and task.kind != "multiclass":
        label = float(sample.labels[chosen.index])  # the explained label's / target's own value
    head = (f"{sample.record_id}  |  label: {_label_text(label, task)}  |  "
            f"{target_title(expl, task)}  |  {loaded.config.model.fusion}")
    images: dict[str, str] = {}
    if expl.cxr is not None:
        images["cxr"] = str(plot_cxr_explanation(expl.cxr, out / f"{stem}_cxr.png", title=head))
    if expl.ecg is not None:
        images["ecg"] = str(plot_ecg_explanation(expl.ecg, out / f"{stem}_ecg.png", layout=layout, title=head))
    summary = expl.summary()
    if label is not sample.label:
        summary["label"] = None if np.isnan(label) else (float(label) if task.kind == "regression" else int(label))
    result = {
        "record_id": sample.record_id, "patient_id": sample.patient_id, "label": summary["label"],
        "probability": expl.probability, "score": expl.score, "branch_scores": expl.branch_scores,
        "images": images, "method": method,
        "cxr_layer": expl.cxr.layer if expl.cxr is not None else None,
        "targets": {m: getattr(expl, m).target for m in ("cxr", "ecg") if getattr(expl, m) is not None},
        "lead_importance": summary.get("ecg", {}).get("lead_importance"),
    }
    if expl.output_target is not None:
        result["output_target"] = expl.output_target.to_dict()
    return result


def choose_examples(run: Any, split: str = "test", *, n_as: int = 2, n_non_as: int = 2,
                    cache_dir: str | os.PathLike | None = None,
                    manifest: str | os.PathLike | pd.DataFrame | None = None) -> list[str]:
    """Record ids to show: the ``n_as`` AS records the model scores highest and the ``n_non_as``
    non-AS records it scores lowest in ``split`` (typical correct cases; deterministic)."""
    from ..training import score_split

    loaded = load_run_any(run)
    task = run_task(loaded)
    if not task.is_binary:
        raise ConfigError(f"choose_examples picks AS and non-AS records of binary runs; this run's task "
                          f"{task.name!r} is {task.kind}: give record ids to explain_records")
    table = score_split(loaded, split, cache_dir=cache_dir, manifest=manifest)
    table = table[np.isfinite(table["score"])]
    pos = table[table["label"] == 1].sort_values(["score", "record_id"], ascending=[False, True])
    neg = table[table["label"] == 0].sort_values(["score", "record_id"], ascending=[True, True])
    return pos["record_id"].astype(str).head(n_as).tolist() + neg["record_id"].astype(str).head(n_non_as).tolist()
