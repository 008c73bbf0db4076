"""One record's model inputs for explanation: read from the preprocessing cache or taken from a sample dict.

A :class:`RecordSample` holds what the trained model sees for one record -- the whole ECG recording
(``(L, T)`` mV at the model's rate, cut into the run's deterministic evaluation windows) and the
normalised X-ray ``(1, H, W)`` -- and may lack either modality (a patient with one modality only).
Records come from the run's own cohort manifest and cache unless others are given; unlike training,
a record whose ECG or X-ray is missing or failed to decode is kept with that modality absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, ReadError
from ..transforms.preprocess import PreprocessConfig, cxr_eval_transform, window_starts

__all__ = ["RecordSample", "load_samples", "sample_from_batch", "windows_from_signal"]


@dataclass
class RecordSample:
    """One record as the model sees it.

    Attributes:
        record_id, patient_id: identifiers.
        label: 1 (AS), 0, or NaN when unknown.
        ecg_signal: ``(L, T)`` float32 mV at ``fs``, the valid part of the recording (None: no ECG).
        ecg_mask: ``(L,)`` bool, leads really present.
        window_starts: ``(n_w,)`` first sample of each evaluation window within ``ecg_signal``.
        window_samples: evaluation window length ``W`` in samples.
        fs: ECG sampling rate in Hz.
        leads: lead names of the rows of ``ecg_signal``.
        cxr: ``(1, H, W)`` float32 X-ray normalised as the model expects (None: no X-ray).
        image_mean, image_std: the normalisation, to show the image in grey levels again.
        ecg_exam_id, cxr_exam_id: exam identifiers (None when unknown).
        labels: the run task's encoded labels of the record when the task is not binary (multiclass: the
            class index, which is also ``label``; multilabel / regression: one value per label / target, NaN
            unknown); None for binary runs.
    """

    record_id: str
    patient_id: str
    label: float
    ecg_signal: np.ndarray | None
    ecg_mask: np.ndarray | None
    window_starts: np.ndarray | None
    window_samples: int
    fs: float
    leads: tuple[str, ...]
    cxr: torch.Tensor | None
    image_mean: float
    image_std: float
    ecg_exam_id: str | None = None
    cxr_exam_id: str | None = None
    labels: np.ndarray | None = None

    @property
    def has_ecg(self) -> bool:
        return self.ecg_signal is not None

    @property
    def has_cxr(self) -> bool:
        return self.cxr is not None

    def ecg_windows(self) -> torch.Tensor:
        """The evaluation windows ``(n_w, L, W)`` float32."""
        if self.ecg_signal is None:
            raise ConfigError(f"record {self.record_id} has no ECG")
        signal = torch.as_tensor(self.ecg_signal, dtype=torch.float32).unsqueeze(0)  # (1, L, T)
        return windows_from_signal(signal, self.window_starts, self.window_samples)[0]  # (n_w, L, W)

    def cxr_grey(self) -> np.ndarray:
        """The model's input X-ray as grey levels 0-255, ``(H, W)`` float32 (what the heat map covers)."""
        if self.cxr is None:
            raise ConfigError(f"record {self.record_id} has no X-ray")
        x = self.cxr[0].detach().cpu().numpy()
        return np.clip((x * self.image_std + self.image_mean) * 255.0, 0, 255).astype(np.float32)


def windows_from_signal(signal: torch.Tensor, starts: np.ndarray | Sequence[int], window: int) -> torch.Tensor:
    """Cut ``(K, L, T)`` signals into windows ``(K, n_w, L, W)`` (zero-padded past ``T``), differentiably."""
    k, n_leads, t = signal.shape
    starts = [int(s) for s in starts]
    need = max(s + window for s in starts)
    if need > t:
        signal = torch.cat([signal, signal.new_zeros(k, n_leads, need - t)], dim=-1)  # (K, L, T')
    return torch.stack([signal[..., s:s + window] for s in starts], dim=1)  # (K, n_w, L, W)


def _str_or_none(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return None
    return str(v)


def load_samples(run: Any, record_ids: Iterable[str], *, cache_dir: str | os.PathLike | None = None,
                 manifest: str | os.PathLike | pd.DataFrame | None = None) -> list[RecordSample]:
    """Samples of the given records, read from a cache (default: the run's own cache and manifest).

    Only the modalities the run's model uses are loaded.  A record whose ECG or X-ray is absent from the
    manifest, from the cache, or failed to decode comes back without that modality.

    Raises:
        ConfigError: a record id is not in the manifest.
        ReadError: a record has none of the modalities the model uses.
    """
    from ..cache import load_manifest, open_cache
    from ..data.dataset import check_cache

    config = run.config
    pp: PreprocessConfig = config.preprocess
    modalities = tuple(config.model.modalities)
    cache = open_cache(cache_dir or config.cache_dir)
    table, _ = load_manifest(manifest if manifest is not None else config.manifest)
    table = table.copy()
    table["record_id"] = table["record_id"].astype(str)
    by_id = table.drop_duplicates("record_id").set_index("record_id")
    ids = [str(r) for r in record_ids]
    unknown = [r for r in ids if r not in by_id.index]
    if unknown:
        examples = ", ".join(by_id.index[:3])
        raise ConfigError(f"record id(s) not in the manifest: {', '.join(unknown)} (ids look like: {examples})")
    rows = by_id.loc[ids]
    lead_rows = check_cache(cache, pp, modalities)
    ecg_rows = (cache.ecg_rows(rows["ecg_exam_id"].tolist()) if "ecg" in modalities and "ecg_exam_id" in rows
                else np.full(len(rows), -1))
    cxr_rows = (cache.cxr_rows(rows["cxr_exam_id"].tolist()) if "cxr" in modalities and "cxr_exam_id" in rows
                else np.full(len(rows), -1))
    from ..tasks import load_task

    task = load_task(getattr(config, "task", None))
    encoded = None if task.is_binary else np.asarray(task.encode_labels(rows.reset_index(), where="manifest"),
                                                     dtype=np.float64).reshape(len(rows), -1)
    samples = []
    for i, rid in enumerate(ids):
        row = rows.iloc[i]
        signal = mask = starts = None
        if ecg_rows[i] >= 0:
            full, full_mask, n_valid = cache.ecg_at(int(ecg_rows[i]))  # (12, T), (12,)
            n_valid = int(min(n_valid, full.shape[1]))
            signal = np.ascontiguousarray(full[lead_rows, :n_valid], dtype=np.float32)  # (L, T)
            mask = full_mask[lead_rows].astype(bool)
            starts = window_starts(n_valid, pp.window_samples, pp.stride_samples)
        cxr = None
        if cxr_rows[i] >= 0:
            cxr = cxr_eval_transform(cache.cxr_at(int(cxr_rows[i])), pp)  # (1, H, W)
        if signal is None and cxr is None:
            raise ReadError(cache.directory, f"record {rid} has none of the modalities the model uses "
                                             f"({', '.join(modalities)}) in the cache")
        label = pd.to_numeric(pd.Series([row.get("label")]), errors="coerce").iloc[0]
        if encoded is not None:
            label = encoded[i, 0] if task.kind == "multiclass" else np.nan
        samples.append(RecordSample(
            record_id=rid, patient_id=str(row.get("patient_id", "")), label=float(label),
            ecg_signal=signal, ecg_mask=mask, window_starts=starts, window_samples=pp.window_samples,
            fs=pp.fs, leads=tuple(pp.leads), cxr=cxr, image_mean=pp.image_mean, image_std=pp.image_std,
            ecg_exam_id=_str_or_none(row.get("ecg_exam_id")), cxr_exam_id=_str_or_none(row.get("cxr_exam_id")),
            labels=None if encoded is None else encoded[i]))
    return samples


def sample_from_batch(batch: Mapping[str, Any], preprocess: PreprocessConfig) -> RecordSample:
    """A :class:`RecordSample` from one record's sample dict (``docs/model_contract.md`` keys).

    ``batch["ecg"]`` is ``(n_w, L, W)`` (an evaluation sample of :class:`cardiofusion.data.dataset.CohortDataset`)
    or ``(L, T)``; windows are taken as consecutive unless ``window_start`` gives their first samples.
    ``has_ecg`` / ``has_cxr`` False (or a missing key) mark an absent modality.
    """
    def flag(name: str, key: str) -> bool:
        if key not in batch or batch[key] is None:
            return False
        v = batch.get(name)
        return True if v is None else bool(torch.as_tensor(v).reshape(-1)[0])

    signal = mask = starts = None
    window = preprocess.window_samples
    if flag("has_ecg", "ecg"):
        ecg = torch.as_tensor(batch["ecg"], dtype=torch.float32)
        if ecg.dim() == 2:
            ecg = ecg.unsqueeze(0)
        n_w, n_leads, window = ecg.shape
        starts = np.asarray(batch.get("window_start", np.arange(n_w) * window), dtype=np.int64)
        total = int(starts.max()) + window
        acc = torch.zeros(n_leads, total)
        cnt = torch.zeros(total)
        for w, s in enumerate(starts):
            acc[:, s:s + window] += ecg[w]
            cnt[s:s + window] += 1
        signal = (acc / cnt.clamp(min=1)).numpy()  # (L, T)
        m = batch.get("ecg_mask")
        mask = (np.ones(n_leads, dtype=bool) if m is None
                else torch.as_tensor(m).reshape(-1, n_leads)[0].numpy().astype(bool))
    cxr = None
    if flag("has_cxr", "cxr"):
        cxr = torch.as_tensor(batch["cxr"], dtype=torch.float32)
        cxr = cxr.reshape(-1, *cxr.shape[-3:])[0] if cxr.dim() >= 3 else cxr.unsqueeze(0)  # (1, H, W)
    if signal is None and cxr is None:
        raise ConfigError("the sample holds neither an ECG nor an X-ray")

    def first(key: str, default: Any) -> Any:
        v = batch.get(key, default)
        return v[0] if isinstance(v, (list, tuple)) else v

    label = first("label", float("nan"))
    label = float(torch.as_tensor(label).reshape(-1)[0]) if label is not None else float("nan")
    return RecordSample(
        record_id=str(first("record_id", "sample")), patient_id=str(first("patient_id", "")), label=label,
        ecg_signal=signal, ecg_mask=mask, window_starts=starts, window_samples=int(window), fs=preprocess.fs,
        leads=tuple(preprocess.leads), cxr=cxr, image_mean=preprocess.image_mean, image_std=preprocess.image_std)
