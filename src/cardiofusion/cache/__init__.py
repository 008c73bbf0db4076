"""Preprocessing cache: decode every ECG and X-ray of a cohort once, read them back fast.

Training reads each exam hundreds of times; parsing CSV/DICOM every time dominates an epoch.
:func:`build_cache` decodes every unique ECG exam and every unique X-ray exam of a cohort manifest
(many records share an X-ray) into two preallocated memory-mapped arrays plus index tables
(layout fixed in ``docs/data_layout.md``)::

    cache.json          settings, library version, source hash, counts, timestamps
    ecg.f16             (N_ecg, 12, T) float16, millivolts at the cache's fs, canonical lead order
    ecg_index.parquet   exam_id, path, row, status, reason, n_samples, original_fs, lead_<name> (12 bools)
    cxr.u8              (N_cxr, S, S) uint8
    cxr_index.parquet   exam_id, path, row, status, reason, height, width
    failures.csv        modality, exam_id, path, reason

The build is parallel (process pool over chunks of exams), never stops on one bad file (the reason is
recorded per file), writes its metadata atomically and can be resumed after an interruption: a second
run on the same folder with the same manifest and settings only decodes what is still ``pending``.

:func:`open_cache` returns a :class:`PreprocessedCache`, the read side used by training: no parsing,
only array lookups into read-only memory maps opened lazily (safe in forked DataLoader workers).

Modules: :mod:`.layout` (file names, statuses, report, atomic writes), :mod:`.manifest` (manifest -> exam
tables), :mod:`.build` (the build), :mod:`.read` (the read side).  Decoding one exam lives in
:mod:`cardiofusion.transforms.decode`, shared with prediction.
"""

from __future__ import annotations

from ..transforms.decode import (
    BASELINE_MODES,
    ECG_UNITS,
    IMAGE_MODES,
    CacheConfig,
    clean_option,
    decode_cxr,
    decode_ecg,
    standardize_ecg_record,
)
from .build import WORKER_DIED_REASON, build_cache
from .layout import CACHE_FILES, CACHE_FORMAT_VERSION, LEAD_MASK_COLUMNS, CacheReport
from .manifest import load_manifest
from .read import PreprocessedCache, open_cache

__all__ = [
    "BASELINE_MODES",
    "CACHE_FILES",
    "CACHE_FORMAT_VERSION",
    "ECG_UNITS",
    "IMAGE_MODES",
    "LEAD_MASK_COLUMNS",
    "WORKER_DIED_REASON",
    "CacheConfig",
    "CacheReport",
    "PreprocessedCache",
    "build_cache",
    "clean_option",
    "decode_cxr",
    "decode_ecg",
    "load_manifest",
    "open_cache",
    "standardize_ecg_record",
]
