"""The cache's read side: :func:`open_cache` -> :class:`PreprocessedCache` (lazy read-only memory maps)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ..records import CANONICAL_LEADS
from ..transforms.decode import CacheConfig

if TYPE_CHECKING:
    import polars as pl
from .manifest import load_manifest
from .layout import (  # noqa: F401
    CACHE_FORMAT_VERSION, CACHE_JSON, ECG_ARRAY, CXR_ARRAY, ECG_INDEX, CXR_INDEX, FAILURES_CSV, CACHE_FILES,
    STATUS_OK, STATUS_FAILED, STATUS_PENDING, LEAD_MASK_COLUMNS, CacheReport,
)

class PreprocessedCache:
    """Read-only view of a cache folder, for training.

    Arrays are memory-mapped read-only on first use (and dropped when pickled), so one instance can
    be shared with forked or spawned DataLoader workers. Only exams with status ``ok`` are served.

    Attributes:
        directory: the cache folder.
        config: the :class:`CacheConfig` it was built with.
        meta: the whole ``cache.json``.
        ecg_index, cxr_index: the index tables (one row per exam, ``row`` = array row).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / CACHE_JSON
        if not meta_path.is_file():
            raise ReadError(self.directory, "not a cardiofusion cache (no cache.json); run `cardiofusion cache build`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            self.config = CacheConfig.from_dict(self.meta["config"])
            self.ecg_index = pd.read_parquet(self.directory / ECG_INDEX)
            self.cxr_index = pd.read_parquet(self.directory / CXR_INDEX)
        except (OSError, ValueError, KeyError, ConfigError) as e:
            raise ReadError(self.directory, f"damaged cache ({type(e).__name__}: {e}); rebuild it") from None
        self._ecg_shape = tuple(self.meta["ecg_shape"])
        self._cxr_shape = tuple(self.meta["cxr_shape"])
        self.ecg_index["exam_id"] = self.ecg_index["exam_id"].astype(str)
        self.cxr_index["exam_id"] = self.cxr_index["exam_id"].astype(str)
        self._ecg_ok = (self.ecg_index["status"] == STATUS_OK).to_numpy()
        self._cxr_ok = (self.cxr_index["status"] == STATUS_OK).to_numpy()
        self._ecg_lookup = pd.Index(self.ecg_index["exam_id"])
        self._cxr_lookup = pd.Index(self.cxr_index["exam_id"])
        self._ecg_rows = {e: i for i, e in enumerate(self.ecg_index["exam_id"]) if self._ecg_ok[i]}
        self._cxr_rows = {e: i for i, e in enumerate(self.cxr_index["exam_id"]) if self._cxr_ok[i]}
        self._lead_mask = self.ecg_index[list(LEAD_MASK_COLUMNS)].to_numpy(dtype=bool)  # (N_ecg, 12)
        self._n_samples = self.ecg_index["n_samples"].to_numpy(dtype=np.int64)
        self._ecg_mm: np.ndarray | None = None
        self._cxr_mm: np.ndarray | None = None

    # -- settings -----------------------------------------------------------------------------------
    @property
    def fs(self) -> float:
        return self.config.fs

    @property
    def leads(self) -> tuple[str, ...]:
        return tuple(self.meta.get("leads", CANONICAL_LEADS))

    @property
    def n_samples(self) -> int:
        """Stored samples ``T`` per ECG lead."""
        return int(self._ecg_shape[2])

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def complete(self) -> bool:
        """False while some exams are still pending (an interrupted build)."""
        return not ((self.ecg_index["status"] == STATUS_PENDING).any() or (self.cxr_index["status"] == STATUS_PENDING).any())

    @property
    def failures(self) -> pd.DataFrame:
        return pd.read_csv(self.directory / FAILURES_CSV, dtype={"exam_id": str})

    # -- arrays -------------------------------------------------------------------------------------
    @property
    def ecg_array(self) -> np.ndarray:
        """The whole ``(N_ecg, 12, T)`` float16 memmap (read-only)."""
        if self._ecg_mm is None:
            self._ecg_mm = self._open(ECG_ARRAY, np.float16, self._ecg_shape)
        return self._ecg_mm

    @property
    def cxr_array(self) -> np.ndarray:
        """The whole ``(N_cxr, S, S)`` uint8 memmap (read-only)."""
        if self._cxr_mm is None:
            self._cxr_mm = self._open(CXR_ARRAY, np.uint8, self._cxr_shape)
        return self._cxr_mm

    def _open(self, name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        if shape[0] == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(self.directory / name, dtype=dtype, mode="r", shape=shape)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ecg_mm"] = state["_cxr_mm"] = None  # reopened lazily in the other process
        return state

    # -- lookups ------------------------------------------------------------------------------------
    def ecg_rows(self, exam_ids: Iterable[Any]) -> np.ndarray:
        """Array rows of ECG exams (vectorised); ``-1`` where absent or not decoded."""
        return self._rows(self._ecg_lookup, self._ecg_ok, exam_ids)

    def cxr_rows(self, exam_ids: Iterable[Any]) -> np.ndarray:
        """Array rows of X-ray exams (vectorised); ``-1`` where absent or not decoded."""
        return self._rows(self._cxr_lookup, self._cxr_ok, exam_ids)

    @staticmethod
    def _rows(lookup: pd.Index, ok: np.ndarray, exam_ids: Iterable[Any]) -> np.ndarray:
        ids = pd.Index(pd.Series(list(exam_ids), dtype=object).astype(str))
        pos = lookup.get_indexer(ids)
        found = pos >= 0
        pos[found & ~ok[np.where(found, pos, 0)]] = -1
        return pos.astype(np.int64)

    def ecg(self, exam_id: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """``(signal (12, T) float32 mV, lead_mask (12,) bool, n_samples)`` of a decoded ECG exam."""
        row = self._ecg_rows.get(str(exam_id))
        if row is None:
            raise KeyError(f"ECG exam {exam_id!r} is not in the cache (or failed to decode)")
        return self.ecg_at(row)

    def ecg_at(self, row: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Like :meth:`ecg`, by array row (see :meth:`ecg_rows`, :meth:`records`)."""
        signal = np.asarray(self.ecg_array[row], dtype=np.float32)  # (12, T)
        return signal, self._lead_mask[row].copy(), int(self._n_samples[row])

    def cxr(self, exam_id: Any) -> np.ndarray:
        """``(S, S)`` uint8 image of a decoded X-ray exam."""
        row = self._cxr_rows.get(str(exam_id))
        if row is None:
            raise KeyError(f"X-ray exam {exam_id!r} is not in the cache (or failed to decode)")
        return self.cxr_at(row)

    def cxr_at(self, row: int) -> np.ndarray:
        return np.array(self.cxr_array[row])

    # -- manifest views -----------------------------------------------------------------------------
    def _status(self, index: pd.DataFrame, lookup: pd.Index, exam_ids: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = exam_ids.astype(object).where(exam_ids.notna(), None)
        pos = lookup.get_indexer(pd.Index([str(x) if x is not None else "\0none" for x in ids]))
        found = pos >= 0
        if len(index) == 0:  # a modality the manifest has no exams of
            return pos, np.full(len(pos), "missing", dtype=object), np.full(len(pos), "", dtype=object)
        status = np.where(found, index["status"].to_numpy(dtype=object)[np.where(found, pos, 0)], "missing")
        reason = np.where(found, index["reason"].to_numpy(dtype=object)[np.where(found, pos, 0)], "")
        return pos, status, reason

    def _annotate(self, manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
        table, _ = load_manifest(manifest)
        for col in ("ecg_exam_id", "cxr_exam_id"):
            if col not in table.columns:
                raise ReadError(str(manifest) if not isinstance(manifest, pd.DataFrame) else "manifest",
                                f"manifest lacks column {col}")
        df = table.copy()
        e_pos, e_status, e_reason = self._status(self.ecg_index, self._ecg_lookup, df["ecg_exam_id"])
        c_pos, c_status, c_reason = self._status(self.cxr_index, self._cxr_lookup, df["cxr_exam_id"])
        df["ecg_row"] = np.where(e_status == STATUS_OK, e_pos, -1).astype(np.int64)
        df["cxr_row"] = np.where(c_status == STATUS_OK, c_pos, -1).astype(np.int64)
        return df, (e_status, e_reason, c_status, c_reason)

    @staticmethod
    def _usable(df: pd.DataFrame) -> np.ndarray:
        """Rows whose exams all decoded; an empty exam id is a modality the record does not have
        (single-modality manifests of ``cohort from-adapter``), whose row stays ``-1``."""
        ok = np.ones(len(df), dtype=bool)
        has_any = np.zeros(len(df), dtype=bool)
        for m in ("ecg", "cxr"):
            present = df[f"{m}_exam_id"].notna().to_numpy()
            has_any |= present
            ok &= ~present | (df[f"{m}_row"] >= 0).to_numpy()
        return ok & has_any

    def records(self, manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
        """Manifest rows whose exams all decoded, with ``ecg_row`` and ``cxr_row`` added.

        A paired record needs both; a single-modality record (the other exam id empty) needs its one exam and
        has ``-1`` as the other row.
        """
        df, _ = self._annotate(manifest)
        return df[self._usable(df)].reset_index(drop=True)

    def excluded(self, manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
        """Manifest rows :meth:`records` drops, with why.

        Adds ``reason`` (``unreadable ECG file``, ``unreadable X-ray file``, ``unreadable ECG and X-ray
        files``, or ``not in cache`` / ``not decoded yet`` for a cache built from another manifest or an
        interrupted build) and ``detail`` (the reader's message per modality).
        """
        df, (e_status, e_reason, c_status, c_reason) = self._annotate(manifest)
        drop = ~self._usable(df)
        e_absent = df["ecg_exam_id"].isna().to_numpy()
        c_absent = df["cxr_exam_id"].isna().to_numpy()
        reasons, details = [], []
        for i in np.flatnonzero(drop):
            problems, detail = [], []
            for label, status, reason, absent in (("ECG", e_status[i], e_reason[i], e_absent[i]),
                                                  ("X-ray", c_status[i], c_reason[i], c_absent[i])):
                if absent and not (e_absent[i] and c_absent[i]):
                    continue
                if status == STATUS_FAILED:
                    problems.append(("unreadable", label))
                    detail.append(f"{label}: {reason}")
                elif status == STATUS_PENDING:
                    problems.append(("not decoded yet", label))
                    detail.append(f"{label}: pending (cache build incomplete)")
                elif status == "missing":
                    problems.append(("not in cache", label))
                    detail.append(f"{label}: exam not in the cache")
            kinds = {k for k, _ in problems}
            labels = [lab for _, lab in problems]
            if kinds == {"unreadable"}:
                reasons.append(f"unreadable {' and '.join(labels)} file" + ("s" if len(labels) > 1 else ""))
            else:
                reasons.append("; ".join(f"{k} ({lab})" for k, lab in problems))
            details.append("; ".join(detail))
        out = df[drop].copy()
        out["reason"] = reasons
        out["detail"] = details
        return out.reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """What ``cardiofusion cache info`` prints."""
        counts = {}
        for name, index in (("ecg", self.ecg_index), ("cxr", self.cxr_index)):
            s = index["status"]
            counts[name] = {"total": int(len(s)), "ok": int((s == STATUS_OK).sum()),
                            "failed": int((s == STATUS_FAILED).sum()), "pending": int((s == STATUS_PENDING).sum())}
        return {
            "directory": str(self.directory),
            "library_version": self.meta.get("library_version"),
            "config": self.config.to_dict(),
            "ecg_shape": list(self._ecg_shape),
            "cxr_shape": list(self._cxr_shape),
            "counts": counts,
            "complete": self.complete,
            "source_hash": self.meta.get("source_hash"),
            "manifest": self.meta.get("manifest"),
            "created": self.meta.get("created"),
            "updated": self.meta.get("updated"),
        }

    def __repr__(self) -> str:
        return (f"PreprocessedCache({str(self.directory)!r}, ecg={self._ecg_shape}, cxr={self._cxr_shape}, "
                f"fs={self.fs:g})")


def open_cache(directory: str | os.PathLike) -> PreprocessedCache:
    """Open a cache folder written by :func:`build_cache` for reading."""
    return PreprocessedCache(directory)


__all__ = ["PreprocessedCache", "open_cache"]
