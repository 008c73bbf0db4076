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
from .attribution import Explanation, explain_sample
from .plot import plot_cxr_explanation, plot_ecg_explanation
from .samples import RecordSample, load_samples, sample_from_batch

__all__ = ["choose_examples", "explain_record", "explain_records", "load_run_any"]


def load_run_any(run: Any) -> Any:
    """A ``LoadedRun`` from a run folder, checkpoint path or an already loaded run."""
    if hasattr(run, "model") and hasattr(run, "config"):
        return run
    from ..training import load_run

    return load_run(run)


def explain_record(run: Any, sample_or_record: RecordSample | Mapping[str, Any] | str, *,
                   method: str = "gradcam", target: str = "auto", rollout: bool = False, ig_steps: int = 32,
                   cxr_layer: Any = None, cache_dir: str | os.PathLike | None = None,
                   manifest: str | os.PathLike | pd.DataFrame | None = None) -> Explanation:
    """Explain one record of a trained run.

    Args:
        run: run folder, checkpoint or ``LoadedRun``.
        sample_or_record: a record id (read from the run's cache, or ``cache_dir`` / ``manifest``), a
            :class:`RecordSample`, or one record's sample dict (``docs/model_contract.md`` keys; an
            evaluation sample of ``CohortDataset``).
        method: ``gradcam`` (X-ray Grad-CAM, ECG 1D Grad-CAM per lead) or ``ig`` (integrated gradients).
        target: ``auto`` (each modality's branch score where the head has one, else the fused score) or
            ``score`` (the fused score).
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
                          cxr_layer=cxr_layer)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "record"


def _label_text(label: float) -> str:
    return "unknown" if np.isnan(label) else ("AS" if label >= 0.5 else "no AS")


def explain_records(run: Any, record_ids: Iterable[str], out_dir: str | os.PathLike, *,
                    cache_dir: str | os.PathLike | None = None,
                    manifest: str | os.PathLike | pd.DataFrame | None = None, method: str = "gradcam",
                    layout: str = "3x4", target: str = "auto", rollout: bool = False,
                    ig_steps: int = 32, cxr_layer: Any = None) -> list[dict[str, Any]]:
    """Explain records and write their figures (``<record>_cxr.png``, ``<record>_ecg.png``) and
    ``explanations.json`` into ``out_dir``.

    Returns:
        One dict per record: ``record_id``, ``patient_id``, ``label`` (1 / 0 / None), ``probability``,
        ``score``, ``branch_scores``, ``images`` (``{"cxr": path, "ecg": path}``, only the modalities
        explained), ``lead_importance`` (when the ECG was explained), ``targets``.
    """
    loaded = load_run_any(run)
    ids = [str(r) for r in record_ids]
    if not ids:
        raise ConfigError("no record ids to explain")
    samples = load_samples(loaded, ids, cache_dir=cache_dir, manifest=manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for sample in samples:
        expl = explain_sample(loaded.model, sample, method=method, target=target, rollout=rollout,
                              ig_steps=ig_steps, cxr_layer=cxr_layer)
        stem = _safe(sample.record_id)
        head = (f"{sample.record_id}  |  label: {_label_text(sample.label)}  |  "
                f"P(AS) = {expl.probability:.3f}  |  {loaded.config.model.fusion}")
        images: dict[str, str] = {}
        if expl.cxr is not None:
            images["cxr"] = str(plot_cxr_explanation(expl.cxr, out / f"{stem}_cxr.png", title=head))
        if expl.ecg is not None:
            images["ecg"] = str(plot_ecg_explanation(expl.ecg, out / f"{stem}_ecg.png", layout=layout, title=head))
        summary = expl.summary()
        results.append({
            "record_id": sample.record_id, "patient_id": sample.patient_id, "label": summary["label"],
            "probability": expl.probability, "score": expl.score, "branch_scores": expl.branch_scores,
            "images": images, "method": method,
            "cxr_layer": expl.cxr.layer if expl.cxr is not None else None,
            "targets": {m: getattr(expl, m).target for m in ("cxr", "ecg") if getattr(expl, m) is not None},
            "lead_importance": summary.get("ecg", {}).get("lead_importance"),
        })
    (out / "explanations.json").write_text(json.dumps({"run": str(loaded.run_dir or loaded.checkpoint),
                                                       "records": results}, indent=2))
    return results


def choose_examples(run: Any, split: str = "test", *, n_as: int = 2, n_non_as: int = 2,
                    cache_dir: str | os.PathLike | None = None,
                    manifest: str | os.PathLike | pd.DataFrame | None = None) -> list[str]:
    """Record ids to show: the ``n_as`` AS records the model scores highest and the ``n_non_as``
    non-AS records it scores lowest in ``split`` (typical correct cases; deterministic)."""
    from ..training import score_split

    loaded = load_run_any(run)
    table = score_split(loaded, split, cache_dir=cache_dir, manifest=manifest)
    table = table[np.isfinite(table["score"])]
    pos = table[table["label"] == 1].sort_values(["score", "record_id"], ascending=[False, True])
    neg = table[table["label"] == 0].sort_values(["score", "record_id"], ascending=[True, True])
    return pos["record_id"].astype(str).head(n_as).tolist() + neg["record_id"].astype(str).head(n_non_as).tolist()
