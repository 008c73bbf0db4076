"""Datasets and loaders over the preprocessing cache (never the raw files): see :mod:`.dataset`."""

from __future__ import annotations

from .dataset import (
    MODALITIES,
    CohortDataModule,
    CohortDataset,
    EpochSampler,
    check_cache,
    collate,
    split_records,
)

__all__ = [
    "MODALITIES",
    "CohortDataModule",
    "CohortDataset",
    "EpochSampler",
    "check_cache",
    "collate",
    "split_records",
]
