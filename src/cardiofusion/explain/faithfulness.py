"""Faithfulness of the heat maps: deletion and insertion curves, AOPC, baselines, bootstrap CIs.

For each record and each map (the explanation, an area-matched random map, a uniform map):

* **deletion**: the top ``p`` % of input elements by the map (pixels of the X-ray; lead x time samples
  of the ECG) are replaced by a Gaussian-blurred copy of the input, for ``p`` in ``percentages``
  (18, 30, 40, 50 by default).  Blurring happens in the model's input space (the normalised X-ray; the
  ECG in mV, along time), so "deleted" content keeps realistic grey levels and low frequencies.
* **insertion**: start from a heavily blurred input and put the top ``p`` % original elements back.
* **score**: the explained score (the positive-class logit: a branch score or the fused score, see
  :mod:`cardiofusion.explain.attribution`), record-level (mean over ECG windows).
* **AOPC** (area over the perturbation curve, Samek et al. 2017): deletion ``mean_p (s_0 - s_p)``;
  insertion ``mean_p (s_p - s_start)``; larger = more faithful.
* **baselines**: *random* ranks elements in a seeded random order (the same number of elements,
  scattered); *uniform* gives every element the same importance, so removing ``p`` % of the importance
  moves every element ``p`` % of the way to its blurred value (insertion: back from the blurred start).
* **mean score** over the perturbed inputs (the area under the perturbation curve, per p level), also
  reported: the reference paper's AOPC values (about 1.8 for every map, deletion and insertion alike) look
  like this quantity rather than score differences.
* **CIs**: 1,000 seeded bootstrap resamples of the records (vectorised), percentile 95% intervals, for
  every mean curve point, every AOPC and the paired differences explanation - baseline.

Ties in a map (e.g. the zeros of a ReLU'd Grad-CAM) are broken in a seeded random order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from ..configfile import jsonable
from ..errors import ConfigError
from ..evaluation.bootstrap import bootstrap_mean_ci, bootstrap_means
from .attribution import Explanation, RecordScorer, explain_sample
from .samples import RecordSample

__all__ = [
    "MAPS",
    "FaithfulnessConfig",
    "aopc",
    "bootstrap_mean_ci",
    "evaluate_faithfulness",
    "maps_for_ground_truth",
    "perturbation_scores",
    "plot_curves",
    "record_curves",
    "summarise",
    "write_faithfulness",
]

#: Map names of the report: the explanation and its two baselines.
MAPS = ("explanation", "random", "uniform")


@dataclass
class FaithfulnessConfig:
    """Settings of the faithfulness evaluation.

    Attributes:
        percentages: top-p% levels (of the image pixels / the present ECG samples).
        cxr_blur: deletion blur sigma as a fraction of the image side (1/28: 8 px at 224).
        cxr_insertion_blur: insertion start blur sigma, fraction of the side (1/8: 28 px at 224).
        ecg_blur_s: deletion blur sigma of the ECG along time, seconds.
        ecg_insertion_blur_s: insertion start blur sigma, seconds (a nearly flat recording).
        n_boot: bootstrap resamples.
        seed: seed of random maps, tie-breaking and the bootstrap.
        method: explanation method (``gradcam`` or ``ig``).
        target: explained score (``auto`` or ``score``).
        cxr_layer: X-ray Grad-CAM layer(s): None (the encoder's last feature map), a timm stage index
            (``-2``: stride 16), a module name, or a list of them (maps averaged); see
            :func:`cardiofusion.explain.cxr_gradcam`.
    """

    percentages: tuple[float, ...] = (18, 30, 40, 50)
    cxr_blur: float = 1 / 28
    cxr_insertion_blur: float = 1 / 8
    ecg_blur_s: float = 0.04
    ecg_insertion_blur_s: float = 0.4
    n_boot: int = 1000
    seed: int = 0
    method: str = "gradcam"
    target: str = "auto"
    cxr_layer: Any = None

    def __post_init__(self) -> None:
        self.percentages = tuple(float(p) for p in self.percentages)
        if isinstance(self.cxr_layer, list):
            self.cxr_layer = tuple(self.cxr_layer)
        if not self.percentages or any(not 0 < p <= 100 for p in self.percentages):
            raise ConfigError(f"percentages must be in (0, 100], got {self.percentages}")
        if self.n_boot < 1:
            raise ConfigError(f"n_boot must be >= 1, got {self.n_boot}")


# --------------------------------------------------------------------------------------------------
# Perturbation of one input
# --------------------------------------------------------------------------------------------------
def _ranking(importance: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the valid elements, most important first (ties in random order)."""
    idx = np.flatnonzero(valid)
    tie = rng.random(idx.size)
    return idx[np.lexsort((tie, -importance.reshape(-1)[idx]))]


def perturbation_scores(score_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, importance: np.ndarray,
                        deleted: np.ndarray, start: np.ndarray, percentages: Sequence[float],
                        rng: np.random.Generator, valid: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Deletion and insertion scores of one input for the explanation and the two baselines.

    Args:
        score_fn: ``(K, *x.shape)`` inputs -> ``(K,)`` scores.
        x: the input; ``importance`` the map, same shape.
        deleted: what deleted elements become (the blurred input).
        start: the insertion start (the heavily blurred input).
        percentages: top-p% levels.
        rng: random maps and tie-breaking.
        valid: bool mask of the elements that may be perturbed (default: all); ``p`` % counts these.

    Returns:
        ``{"deletion": {map: (1 + P,)}, "insertion": {map: (1 + P,)}}`` scores, the first entry being
        the unperturbed input (deletion) or the blurred start (insertion).
    """
    shape = x.shape
    flat, dele, st = x.reshape(-1), deleted.reshape(-1), start.reshape(-1)
    valid = np.ones(flat.size, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    n = int(valid.sum())
    orders = {"explanation": _ranking(importance, valid, rng),
              "random": _ranking(rng.random(flat.size), valid, rng)}
    batch = [flat, st]
    for mode in ("deletion", "insertion"):
        base, other = (flat, dele) if mode == "deletion" else (st, flat)
        for name in MAPS:
            for p in percentages:
                if name == "uniform":
                    v = base.copy()
                    v[valid] = base[valid] + (p / 100.0) * (other[valid] - base[valid])
                else:
                    k = round(n * p / 100.0)
                    v = base.copy()
                    top = orders[name][:k]
                    v[top] = other[top]
                batch.append(v)
    scores = np.asarray(score_fn(np.stack(batch).reshape(len(batch), *shape)), dtype=np.float64)
    s0, s_start = scores[0], scores[1]
    out: dict[str, dict[str, np.ndarray]] = {"deletion": {}, "insertion": {}}
    i, n_p = 2, len(percentages)
    for mode in ("deletion", "insertion"):
        for name in MAPS:
            first = s0 if mode == "deletion" else s_start
            out[mode][name] = np.concatenate([[first], scores[i:i + n_p]])
            i += n_p
    return out


def aopc(curve: np.ndarray, mode: str) -> np.ndarray:
    """AOPC of curves ``(..., 1 + P)``: deletion ``mean(s_0 - s_p)``, insertion ``mean(s_p - s_0)``."""
    curve = np.asarray(curve, dtype=np.float64)
    diff = curve[..., :1] - curve[..., 1:] if mode == "deletion" else curve[..., 1:] - curve[..., :1]
    return diff.mean(axis=-1)


def _ci_dict(values: np.ndarray, n_boot: int, seed: int, groups: Sequence[Any] | None = None) -> dict[str, Any]:
    m, lo, hi = bootstrap_mean_ci(values, n_boot, seed, groups=groups)
    return {"mean": float(m), "ci95": [float(lo), float(hi)], "n": len(values)}


def summarise(curves: dict[str, dict[str, np.ndarray]], percentages: Sequence[float], n_boot: int = 1000,
              seed: int = 0, groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """Report section of one modality from per-record curves ``{mode: {map: (n, 1 + P)}}``.

    Every statistic uses the same bootstrap resamples (same seed), so differences are paired; with
    ``groups`` (patient ids) the resamples draw whole patients.
    """
    out: dict[str, Any] = {"percentages": [0.0, *map(float, percentages)],
                           "resampling": "patients" if groups is not None else "records"}
    if groups is not None:
        out["n_patients"] = int(len(np.unique(np.asarray(groups))))
    for mode in ("deletion", "insertion"):
        sec: dict[str, Any] = {"curves": {}, "aopc": {}, "difference": {}}
        for name in MAPS:
            c = np.asarray(curves[mode][name])
            m, lo, hi = bootstrap_mean_ci(c, n_boot, seed, groups=groups)
            dm, dlo, dhi = bootstrap_mean_ci(c - c[:, :1], n_boot, seed, groups=groups)  # paired change from the start
            sec["curves"][name] = {"mean": m.tolist(), "ci95_low": lo.tolist(), "ci95_high": hi.tolist(),
                                   "change_mean": dm.tolist(), "change_ci95_low": dlo.tolist(),
                                   "change_ci95_high": dhi.tolist()}
            sec["aopc"][name] = _ci_dict(aopc(c, mode), n_boot, seed, groups)
            sec.setdefault("mean_score", {})[name] = _ci_dict(c[:, 1:].mean(axis=1), n_boot, seed, groups)
        for base in ("random", "uniform"):
            d = aopc(curves[mode]["explanation"], mode) - aopc(curves[mode][base], mode)
            entry = _ci_dict(d, n_boot, seed, groups)
            if len(d):
                boot = bootstrap_means(d, n_boot, seed, groups)
                entry["p_one_sided"] = float(((boot <= 0).sum() + 1) / (n_boot + 1))
            else:
                entry["p_one_sided"] = None
            entry["win_rate"] = float(np.mean(d > 0)) if len(d) else None
            sec["difference"][f"explanation-{base}"] = entry
        out[mode] = sec
    return out


# --------------------------------------------------------------------------------------------------
# Modalities
# --------------------------------------------------------------------------------------------------
def _cxr_curves(scorer: RecordScorer, heatmap: np.ndarray, config: FaithfulnessConfig, target: str,
                rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    x = scorer.image[0, 0].detach().cpu().numpy().astype(np.float32)  # (H, W) normalised
    side = max(x.shape)
    deleted = ndimage.gaussian_filter(x, config.cxr_blur * side, mode="reflect")
    start = ndimage.gaussian_filter(x, config.cxr_insertion_blur * side, mode="reflect")

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(batch, dtype=torch.float32, device=scorer.device).unsqueeze(1)  # (K, 1, H, W)
            return scorer.cxr_scores(t, target).cpu().numpy()

    return perturbation_scores(score, x, heatmap, deleted, start, config.percentages, rng)


def _ecg_curves(scorer: RecordScorer, heatmap: np.ndarray, config: FaithfulnessConfig, target: str,
                rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    sample = scorer.sample
    x = np.asarray(sample.ecg_signal, dtype=np.float32)  # (L, T) mV
    deleted = ndimage.gaussian_filter1d(x, config.ecg_blur_s * sample.fs, axis=-1, mode="nearest")
    start = ndimage.gaussian_filter1d(x, config.ecg_insertion_blur_s * sample.fs, axis=-1, mode="nearest")
    valid = np.repeat(np.asarray(sample.ecg_mask, dtype=bool)[:, None], x.shape[1], axis=1)

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(batch, dtype=torch.float32, device=scorer.device)  # (K, L, T)
            return torch.cat([scorer.ecg_signal_scores(c, target) for c in t.split(16)]).cpu().numpy()

    return perturbation_scores(score, x, heatmap, deleted, start, config.percentages, rng, valid=valid)


def record_curves(model: torch.nn.Module, sample: RecordSample, config: FaithfulnessConfig,
                  explanation: Explanation | None = None,
                  modalities: Sequence[str] = ("cxr", "ecg")) -> tuple[Explanation, dict[str, Any]]:
    """Explanation and deletion / insertion curves of one record, per modality it has."""
    expl = explanation or explain_sample(model, sample, method=config.method, target=config.target,
                                             cxr_layer=config.cxr_layer)
    scorer = RecordScorer(model, sample)
    rng = np.random.default_rng([config.seed, _stable_hash(sample.record_id)])
    curves: dict[str, Any] = {}
    if "cxr" in modalities and expl.cxr is not None:
        curves["cxr"] = _cxr_curves(scorer, expl.cxr.heatmap, config, config.target, rng)
    if "ecg" in modalities and expl.ecg is not None:
        curves["ecg"] = _ecg_curves(scorer, expl.ecg.heatmap, config, config.target, rng)
    return expl, curves


def maps_for_ground_truth(sample: RecordSample, expl: Explanation) -> dict[str, Any]:
    """What the ground-truth checks need of one explained record (small: no ECG arrays)."""
    return {
        "record_id": sample.record_id, "patient_id": sample.patient_id, "label": sample.label,
        "cxr_exam_id": sample.cxr_exam_id,
        "ecg_exam_id": sample.ecg_exam_id,
        "cxr_heatmap": None if expl.cxr is None else expl.cxr.heatmap,
        "cxr_target": None if expl.cxr is None else expl.cxr.target,
        "lead_importance": None if expl.ecg is None else np.asarray(expl.ecg.lead_importance),
        "lead_mask": None if expl.ecg is None else np.asarray(expl.ecg.lead_mask),
        "leads": tuple(sample.leads), "ecg_target": None if expl.ecg is None else expl.ecg.target,
    }


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))


def evaluate_faithfulness(run: Any, split: str = "test", *, n_records: int | None = None,
                          record_ids: Sequence[str] | None = None,
                          config: FaithfulnessConfig | None = None,
                          cache_dir: str | os.PathLike | None = None,
                          manifest: str | os.PathLike | pd.DataFrame | None = None,
                          ground_truth: str | os.PathLike | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Faithfulness report of a run's explanations on one split.

    Args:
        run: run folder, checkpoint or ``LoadedRun``.
        split: cohort split whose records (ECG and X-ray both decoded) are used.
        n_records: evaluate a seeded random subset of this many records (default: all).
        record_ids: evaluate these records of the split only (before ``n_records``).
        config: perturbation settings.
        ground_truth: a synthetic export's ``ground_truth/`` folder: also run the pointing game and
            the lead ranking (:mod:`cardiofusion.explain.groundtruth`) on the same maps.
        progress: called with ``(done, total)`` after each record.

    Returns:
        The report (also what :func:`write_faithfulness` writes): run, split, settings, per-modality
        deletion / insertion curves, AOPC, differences to the baselines, and ``ground_truth``.
    """
    from ..cache import open_cache
    from ..data.dataset import split_records
    from .api import load_run_any
    from .samples import load_samples

    config = config or FaithfulnessConfig()
    loaded = load_run_any(run)
    cache = open_cache(cache_dir or loaded.config.cache_dir)
    records = split_records(cache, manifest if manifest is not None else loaded.config.manifest, split)
    if len(records) == 0:
        raise ConfigError(f"no usable {split} records to evaluate")
    ids = records["record_id"].astype(str).tolist()
    if record_ids is not None:
        wanted = [str(r) for r in record_ids]
        missing = sorted(set(wanted) - set(ids))
        if missing:
            raise ConfigError(f"record id(s) not among the usable {split} records: {', '.join(missing)}")
        ids = [r for r in ids if r in set(wanted)]
    if n_records is not None and n_records < len(ids):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(ids), size=int(n_records), replace=False))
        ids = [ids[i] for i in pick]
    samples = load_samples(loaded, ids, cache_dir=cache_dir, manifest=manifest)
    per: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {}
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for i, sample in enumerate(samples):
        expl, c_all = record_curves(loaded.model, sample, config)
        row: dict[str, Any] = {"record_id": sample.record_id, "label": sample.label, "score": expl.score}
        for m, c in c_all.items():
            for mode in c:
                for name in c[mode]:
                    per.setdefault(m, {}).setdefault(mode, {}).setdefault(name, []).append(c[mode][name])
                    row[f"{m}_{mode}_aopc_{name}"] = float(aopc(c[mode][name], mode))
        rows.append(row)
        kept.append(maps_for_ground_truth(sample, expl))
        if progress is not None:
            progress(i + 1, len(samples))
    labels = np.array([k["label"] for k in kept])
    report: dict[str, Any] = {
        "run": str(loaded.run_dir or loaded.checkpoint), "fusion": loaded.config.model.fusion, "split": split,
        "n_records": len(samples), "n_as": int(np.nansum(labels == 1)), "config": asdict(config),
        "score": "the explained score (positive-class logit): branch score where the head has one, else fused",
    }
    patients = np.array([str(k["patient_id"]) for k in kept])
    report["n_patients"] = int(len(np.unique(patients)))
    for m, modes in per.items():
        arrays = {mode: {name: np.stack(v) for name, v in d.items()} for mode, d in modes.items()}
        as_rows = np.flatnonzero(np.array([k.get(f"{m}_target") is not None for k in kept]))
        report[m] = summarise(arrays, config.percentages, config.n_boot, config.seed, groups=patients[as_rows])
        report[m]["target"] = next((k[f"{m}_target"] for k in kept if k.get(f"{m}_target")), None)
        as_mask = labels[as_rows] == 1
        if as_mask.any():
            sub = {mode: {name: a[as_mask] for name, a in d.items()} for mode, d in arrays.items()}
            report[m]["as_records"] = summarise(sub, config.percentages, config.n_boot, config.seed,
                                                groups=patients[as_rows][as_mask])
    report["records"] = rows
    if ground_truth is not None:
        from .groundtruth import evaluate_on_ground_truth

        report["ground_truth"] = evaluate_on_ground_truth(kept, ground_truth, loaded.config.preprocess,
                                                          n_boot=config.n_boot, seed=config.seed)
    return report


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def plot_curves(report: dict[str, Any], path: str | os.PathLike, dpi: int = 110) -> Path:
    """Mean deletion / insertion curves per modality: the score change from the start (unperturbed input
    for deletion, blurred input for insertion), with 95% bootstrap bands of that paired change."""
    from matplotlib.figure import Figure

    mods = [m for m in ("cxr", "ecg") if m in report]
    if not mods:
        raise ConfigError("the report has no modality to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 3.6 * len(mods)))
    axes = fig.subplots(len(mods), 2, squeeze=False)
    colours = {"explanation": "tab:red", "random": "tab:gray", "uniform": "tab:blue"}
    title = {"cxr": "X-ray", "ecg": "ECG"}
    for r, m in enumerate(mods):
        sec = report[m]
        x = np.asarray(sec["percentages"])
        for c, mode in enumerate(("deletion", "insertion")):
            ax = axes[r, c]
            for name in MAPS:
                cur = sec[mode]["curves"][name]
                mean, lo, hi = (np.asarray(cur[k]) for k in ("change_mean", "change_ci95_low", "change_ci95_high"))
                ax.plot(x, mean, marker="o", color=colours[name],
                        label=f"{name} (AOPC {sec[mode]['aopc'][name]['mean']:+.3f})")
                ax.fill_between(x, lo, hi, color=colours[name], alpha=0.15)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(f"{title[m]} {mode} ({sec.get('target', '')}, n = {sec[mode]['aopc']['explanation']['n']})",
                         fontsize=9)
            ax.set_xlabel("top p% " + ("removed" if mode == "deletion" else "inserted"), fontsize=8)
            ax.set_ylabel("mean score change", fontsize=8)
            ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"Faithfulness: {report.get('fusion', '')} on {report.get('split', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def write_faithfulness(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``faithfulness.json``, ``faithfulness_records.csv`` and ``faithfulness_curves.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = report.get("records", [])
    pd.DataFrame(records).to_csv(out / "faithfulness_records.csv", index=False)
    body = {k: v for k, v in report.items() if k != "records"}
    (out / "faithfulness.json").write_text(json.dumps(jsonable(body), indent=2))
    paths = {"json": out / "faithfulness.json", "records": out / "faithfulness_records.csv"}
    if any(m in report for m in ("cxr", "ecg")):
        paths["plot"] = plot_curves(report, out / "faithfulness_curves.png")
    return paths


