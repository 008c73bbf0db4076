"""Datasets and loaders over the preprocessing cache (never the raw files).

:class:`CohortDataset` serves the records of one split of a cohort manifest whose ECG and X-ray both
decoded (:meth:`PreprocessedCache.records`), as dict samples with the batch keys fixed in
``docs/model_contract.md``.  A training sample holds one random ECG window; an evaluation sample holds
every evaluation window of its record (:func:`cardiofusion.transforms.preprocess.ecg_eval_windows`).

**Batch layout.**  :func:`collate` always returns a *window-level* batch that follows the contract:
every row is one ECG window with its record's X-ray, mask, flags, label and identifiers, plus

* ``record_index`` long ``(B_windows,)``: position of the row's record in the batch (0 .. n_records-1),
* ``n_records`` int: records in the batch.

During training each record has one window, so ``record_index`` is ``arange(B)``.  During evaluation a
record of 15 s with 2 s windows contributes 8 rows (its X-ray repeated), and the per-record score is the
mean of its rows' scores (``cardiofusion.training.evaluate.aggregate_windows``).  This keeps every model
oblivious of windows; the price is that the X-ray branch runs once per window at evaluation.
Evaluation batch sizes count records, not windows.

Single-modality models load only their modality (``modalities=("ecg",)`` or ``("cxr",)``): the other
key is then absent from the batch and its ``has_*`` flag is False.  An X-ray-only evaluation has one row
per record.

**Labels.**  By default a record's label is the manifest's ``label`` column (``(N,)`` 0/1, NaN unknown).
Other targets (``cardiofusion.tasks``: class indices, several labels, measurements) reach the datasets as an
already encoded array ``(N,)`` or ``(N, L)`` (float, NaN unknown), or as a callable producing it from the
records table: this layer does not know tasks, the training layer passes ``labels=task.encode_labels``.
Batches then carry ``label`` ``(B,)`` or ``(B, L)``.

Randomness: the training order is a function of ``(seed, epoch)`` and a training sample of
``(seed, epoch, index)``: :class:`EpochSampler` yields ``(index, epoch)`` pairs, so augmentation does not
depend on the number of loader workers nor on when a worker was started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._compat import ensure_torchvision

ensure_torchvision()  # lightning imports torchmetrics -> torchvision

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..cache import PreprocessedCache, open_cache
from ..errors import ConfigError
from ..transforms.preprocess import (
    PreprocessConfig,
    cxr_eval_transform,
    cxr_train_transform,
    ecg_eval_windows,
    ecg_train_window,
)

MODALITIES = ("ecg", "cxr")
SPLITS = ("train", "val", "test")

#: Encoded labels for a records table: an array aligned with its rows, or a callable producing one from it.
Labels = np.ndarray | Callable[[pd.DataFrame], np.ndarray]


def record_labels(records: pd.DataFrame, labels: Labels | None = None) -> np.ndarray:
    """Float32 labels ``(N,)`` or ``(N, L)`` of ``records``: the ``label`` column (NaN where missing or not a
    number) by default, else ``labels`` (an array aligned with the rows, or a callable of the table)."""
    if labels is None:
        if "label" not in records:
            return np.full(len(records), np.nan, dtype=np.float32)
        return pd.to_numeric(records["label"], errors="coerce").to_numpy(dtype=np.float32)
    values = labels(records) if callable(labels) else labels
    values = np.asarray(values, dtype=np.float32)
    if values.ndim not in (1, 2) or len(values) != len(records):
        raise ConfigError(f"labels must be (N,) or (N, L) for the {len(records)} records, got shape {values.shape}")
    return values


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """Validate a modality selection, returned in canonical order."""
    chosen = tuple(m for m in MODALITIES if m in set(modalities))
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not chosen:
        raise ConfigError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
    return chosen


def check_cache(cache: PreprocessedCache, preprocess: PreprocessConfig,
                modalities: Sequence[str] = MODALITIES) -> np.ndarray:
    """Check that a cache can feed a model with these settings; returns the cache rows of its leads.

    The ECG rate and leads only matter when the model reads ECGs (an X-ray-only model takes any cache).
    """
    if "ecg" not in modalities:
        return np.arange(len(cache.leads), dtype=np.int64)
    if abs(cache.fs - preprocess.fs) > 1e-6:
        raise ConfigError(f"the cache {cache.directory} holds ECGs at {cache.fs:g} Hz but the model expects "
                          f"{preprocess.fs:g} Hz; rebuild the cache with --fs {preprocess.fs:g} or set fs")
    cache_leads = list(cache.leads)
    missing = [lead for lead in preprocess.leads if lead not in cache_leads]
    if missing:
        raise ConfigError(f"the cache {cache.directory} lacks lead(s) {', '.join(missing)}")
    return np.asarray([cache_leads.index(lead) for lead in preprocess.leads], dtype=np.int64)


class CohortDataset(Dataset):
    """Records of one split served from the cache.

    Args:
        cache: an open cache (or its folder).
        records: rows of :meth:`PreprocessedCache.records` (with ``ecg_row`` / ``cxr_row``).
        preprocess: windows, augmentation and normalisation.
        train: random augmented windows (True) or every evaluation window, deterministic (False).
        modalities: which modalities to load.
        seed: seed of the training augmentation.
        labels: encoded labels (array aligned with ``records`` or a callable of it, see :func:`record_labels`);
            default the ``label`` column.
    """

    def __init__(self, cache: PreprocessedCache | str | os.PathLike, records: pd.DataFrame,
                 preprocess: PreprocessConfig, *, train: bool, modalities: Sequence[str] = MODALITIES,
                 seed: int = 0, labels: Labels | None = None):
        self.cache = cache if isinstance(cache, PreprocessedCache) else open_cache(cache)
        self.preprocess = preprocess
        self.train = bool(train)
        self.modalities = check_modalities(modalities)
        self.seed = int(seed)
        self.epoch = 0
        self.lead_rows = check_cache(self.cache, preprocess, self.modalities)
        records = records.reset_index(drop=True)
        self.record_id = records["record_id"].astype(str).tolist()
        self.patient_id = records["patient_id"].astype(str).tolist()
        self.label = record_labels(records, labels)  # (N,) or (N, L)
        self.ecg_row = records["ecg_row"].to_numpy(dtype=np.int64)
        self.cxr_row = records["cxr_row"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.record_id)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch."""
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``item``: an index, or ``(index, epoch)`` as :class:`EpochSampler` yields."""
        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), self.epoch)
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        sample: dict[str, Any] = {
            "label": torch.from_numpy(np.array(self.label[index], dtype=np.float32)),
            "record_id": self.record_id[index],
            "patient_id": self.patient_id[index],
            "has_ecg": torch.tensor("ecg" in self.modalities),
            "has_cxr": torch.tensor("cxr" in self.modalities),
        }
        if "ecg" in self.modalities:
            signal, mask, n_valid = self.cache.ecg_at(int(self.ecg_row[index]))  # (12, T), (12,)
            signal, mask = signal[self.lead_rows], mask[self.lead_rows]  # (L, T), (L,)
            if self.train:
                ecg = ecg_train_window(signal, n_valid, self.preprocess, rng, lead_mask=mask)[None]  # (1, L, W)
            else:
                ecg = ecg_eval_windows(signal, n_valid, self.preprocess)  # (n_w, L, W)
            sample["ecg"] = torch.from_numpy(ecg)
            sample["ecg_mask"] = torch.from_numpy(mask.astype(bool))
        if "cxr" in self.modalities:
            image = self.cache.cxr_at(int(self.cxr_row[index]))  # (S, S) uint8
            sample["cxr"] = (cxr_train_transform(image, self.preprocess, rng) if self.train
                             else cxr_eval_transform(image, self.preprocess))  # (1, H, W)
        return sample


class EpochSampler(Sampler):
    """Shuffled ``(index, epoch)`` pairs; the order is a function of ``(seed, epoch)``.

    The epoch counts up by itself at every pass and Lightning sets it (``set_epoch``) at every epoch;
    ``start_epoch`` is where a resumed run continues.
    """

    def __init__(self, n: int, seed: int = 0, *, shuffle: bool = True, start_epoch: int = 0):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), bool(shuffle), int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        return iter([(int(i), epoch) for i in order])


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Window-level batch (see the module docstring) from :class:`CohortDataset` samples."""
    n_windows = [s["ecg"].shape[0] if "ecg" in s else 1 for s in samples]
    record_index = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(n_windows))  # (B_w,)
    batch: dict[str, Any] = {
        "record_index": record_index,
        "n_records": len(samples),
        "record_id": [s["record_id"] for s, n in zip(samples, n_windows) for _ in range(n)],
        "patient_id": [s["patient_id"] for s, n in zip(samples, n_windows) for _ in range(n)],
    }
    for key in ("label", "has_ecg", "has_cxr"):
        batch[key] = torch.stack([s[key] for s in samples])[record_index]  # (B_w,); label (B_w,) or (B_w, L)
    if "ecg" in samples[0]:
        batch["ecg"] = torch.cat([s["ecg"] for s in samples])  # (B_w, L, W)
        batch["ecg_mask"] = torch.stack([s["ecg_mask"] for s in samples])[record_index]  # (B_w, L)
    if "cxr" in samples[0]:
        cxr = torch.stack([s["cxr"] for s in samples])  # (B, 1, H, W)
        batch["cxr"] = cxr if len(record_index) == len(samples) else cxr[record_index]  # (B_w, 1, H, W)
    return batch


def split_records(cache: PreprocessedCache, manifest: str | os.PathLike | pd.DataFrame, split: str) -> pd.DataFrame:
    """Records of one split whose ECG and X-ray are both in the cache."""
    records = cache.records(manifest)
    if "split" not in records.columns:
        raise ConfigError("the manifest has no 'split' column; build it with `cardiofusion cohort build`")
    return records[records["split"].astype(str) == split].reset_index(drop=True)


class CohortDataModule(L.LightningDataModule):
    """Train / val / test loaders over a cache and a cohort manifest.

    Args:
        cache_dir: the cache folder (``cardiofusion cache build``).
        manifest: the cohort manifest (with ``split``).
        preprocess: windows, augmentation, normalisation.
        batch_size: training batch size (records = windows).
        eval_batch_size: records per evaluation batch (each brings all its windows); default batch_size.
        num_workers: loader processes (0: in the main process).
        modalities: which modalities to load (single-modality models skip the other one).
        seed: augmentation seed.
        labels: encoded labels of the usable records: a callable of the records table (all splits, the
            manifest's columns plus ``ecg_row`` / ``cxr_row``) returning ``(N,)`` or ``(N, L)``; default the
            ``label`` column.
    """

    def __init__(self, cache_dir: str | os.PathLike, manifest: str | os.PathLike | pd.DataFrame,
                 preprocess: PreprocessConfig, *, batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, modalities: Sequence[str] = MODALITIES, seed: int = 0,
                 labels: Callable[[pd.DataFrame], np.ndarray] | None = None):
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self.preprocess = preprocess
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.modalities = check_modalities(modalities)
        self.seed = int(seed)
        self.start_epoch = 0
        self.labels = labels
        self.cache: PreprocessedCache | None = None
        self.datasets: dict[str, CohortDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.cache = open_cache(self.cache_dir)
        records = self.cache.records(self.manifest)
        if "split" not in records.columns:
            raise ConfigError("the manifest has no 'split' column; build it with `cardiofusion cohort build`")
        labels = record_labels(records, self.labels)
        for split in SPLITS:
            keep = (records["split"].astype(str) == split).to_numpy()
            part = records[keep].reset_index(drop=True)
            self.datasets[split] = CohortDataset(self.cache, part, self.preprocess, train=split == "train",
                                                 modalities=self.modalities, seed=self.seed, labels=labels[keep])
        for split in ("train", "val"):
            if len(self.datasets[split]) == 0:
                raise ConfigError(f"no usable {split} records in {self.manifest} with the cache {self.cache_dir}")

    def train_labels(self) -> np.ndarray:
        """Labels of the training records (for class weighting)."""
        self.setup()
        return self.datasets["train"].label

    def train_dataloader(self) -> DataLoader:
        self.setup()
        dataset = self.datasets["train"]
        sampler = EpochSampler(len(dataset), self.seed, start_epoch=self.start_epoch)
        drop_last = len(dataset) > self.batch_size  # never a last batch of one (BatchNorm)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers, collate_fn=collate, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Deterministic loader of any split (all windows per record)."""
        self.setup()
        dataset = self.datasets[split]
        if dataset.train:
            dataset = CohortDataset(self.cache, _records_of(dataset), self.preprocess, train=False,
                                    modalities=self.modalities, seed=self.seed, labels=dataset.label)
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate, pin_memory=torch.cuda.is_available())


def _records_of(dataset: CohortDataset) -> pd.DataFrame:
    return pd.DataFrame({"record_id": dataset.record_id, "patient_id": dataset.patient_id,
                         "ecg_row": dataset.ecg_row, "cxr_row": dataset.cxr_row})


__all__ = [
    "MODALITIES",
    "CohortDataModule",
    "CohortDataset",
    "EpochSampler",
    "check_cache",
    "collate",
    "record_labels",
    "split_records",
]
