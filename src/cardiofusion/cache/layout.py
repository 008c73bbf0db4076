"""The cache's on-disk layout (``docs/data_layout.md``): file names, statuses, the build report and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..records import CANONICAL_LEADS

#: Version of the on-disk layout written by this module.
CACHE_FORMAT_VERSION = 1

CACHE_JSON = "cache.json"
ECG_ARRAY = "ecg.f16"
CXR_ARRAY = "cxr.u8"
ECG_INDEX = "ecg_index.parquet"
CXR_INDEX = "cxr_index.parquet"
FAILURES_CSV = "failures.csv"
CACHE_FILES = (CACHE_JSON, ECG_ARRAY, CXR_ARRAY, ECG_INDEX, CXR_INDEX, FAILURES_CSV)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_PENDING = "pending"

#: Column holding the lead mask of each canonical lead in ``ecg_index.parquet``.
LEAD_MASK_COLUMNS: tuple[str, ...] = tuple(f"lead_{name}" for name in CANONICAL_LEADS)


@dataclass
class CacheReport:
    """What :func:`build_cache` did.

    Attributes:
        out_dir: the cache folder.
        counts: per modality (``ecg``, ``cxr``) the number of exams ``total``, ``ok``, ``failed``,
            ``pending`` after this run.
        decoded: per modality, how many exams this run decoded (successfully or not); exams already
            finished by an earlier run are skipped and not counted.
        seconds: wall-clock time of this run.
        failures: one row per failed exam (``modality``, ``exam_id``, ``path``, ``reason``).
        resumed: True when an earlier, compatible build in ``out_dir`` was continued.
    """

    out_dir: Path
    counts: dict[str, dict[str, int]]
    decoded: dict[str, int]
    seconds: float
    failures: pd.DataFrame
    resumed: bool = False

    @property
    def n_ok(self) -> int:
        return sum(c["ok"] for c in self.counts.values())

    @property
    def n_failed(self) -> int:
        return sum(c["failed"] for c in self.counts.values())

    @property
    def complete(self) -> bool:
        return all(c["pending"] == 0 for c in self.counts.values())


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
    _atomic_write(path, w)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
