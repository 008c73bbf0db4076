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
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from .configfile import reject_unknown_fields
from .errors import ConfigError, ReadError
from .records import CANONICAL_LEADS
from .io.cxr import RESIZE_MODES

if TYPE_CHECKING:
    import polars as pl

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

BASELINE_MODES = ("median", "highpass", "none")
IMAGE_MODES = RESIZE_MODES  # the X-ray resize modes, one definition
ECG_UNITS = ("mV", "uV", "counts")

#: Column holding the lead mask of each canonical lead in ``ecg_index.parquet``.
LEAD_MASK_COLUMNS: tuple[str, ...] = tuple(f"lead_{name}" for name in CANONICAL_LEADS)


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheConfig:
    """How exams are decoded into the cache (saved in ``cache.json``; a rebuild must match it).

    Attributes:
        fs: sampling rate of the cached ECGs in Hz (every record is resampled to it).
        duration_s: stored length in seconds; ``T = round(fs * duration_s)`` samples per ECG.
            Longer records keep their first ``T`` samples; shorter ones are zero-padded at the end
            and their true length is stored as ``n_samples``.
        baseline: baseline removal, the paper's "baseline set to 0": ``median`` subtracts each
            lead's median; ``highpass`` applies a zero-phase 0.5 Hz Butterworth high-pass
            (2nd order, ``sosfiltfilt``); ``none`` keeps the signal as read.
        image_size: side ``S`` of the square cached X-rays in pixels.
        image_mode: how a non-square X-ray becomes square (``resize_square`` mode, e.g. ``crop``
            keeps the centre square).
        dtype: storage type of the ECG array (``float16``, the ``ecg.f16`` layout).
        ecg_fs: sampling rate (Hz) for headerless ECG files (CSV, NumPy) when the manifest has no
            ``fs`` value for the exam.
        ecg_units: units (``mV``, ``uV`` or ``counts``) of headerless ECG files, when the manifest
            has no ``units`` value.
        ecg_resolution_uv: microvolts per count for ``counts`` files, when the manifest has no
            ``resolution_uv`` value (the paper's export: 1.25).
    """

    fs: float = 500.0
    duration_s: float = 15.0
    baseline: str = "median"
    image_size: int = 256
    image_mode: str = "crop"
    dtype: str = "float16"
    ecg_fs: float | None = None
    ecg_units: str | None = None
    ecg_resolution_uv: float | None = None

    def __post_init__(self) -> None:
        if not (self.fs > 0):
            raise ConfigError(f"cache fs must be positive, got {self.fs}")
        if not (self.duration_s > 0):
            raise ConfigError(f"cache duration_s must be positive, got {self.duration_s}")
        if self.baseline not in BASELINE_MODES:
            raise ConfigError(f"baseline must be one of {', '.join(BASELINE_MODES)}; got {self.baseline!r}")
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {self.image_size}")
        if self.image_mode not in IMAGE_MODES:
            raise ConfigError(f"image_mode must be one of {', '.join(IMAGE_MODES)}; got {self.image_mode!r}")
        if self.dtype != "float16":
            raise ConfigError(f"the ECG cache is stored as float16 (ecg.f16); got dtype {self.dtype!r}")
        if self.ecg_units is not None and self.ecg_units not in ECG_UNITS:
            raise ConfigError(f"ecg_units must be one of {', '.join(ECG_UNITS)}; got {self.ecg_units!r}")
        if self.ecg_fs is not None and not (self.ecg_fs > 0):
            raise ConfigError(f"ecg_fs must be positive, got {self.ecg_fs}")
        if self.ecg_resolution_uv is not None and not (self.ecg_resolution_uv > 0):
            raise ConfigError(f"ecg_resolution_uv must be positive, got {self.ecg_resolution_uv}")
        object.__setattr__(self, "fs", float(self.fs))
        object.__setattr__(self, "duration_s", float(self.duration_s))
        object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def n_samples(self) -> int:
        """Samples ``T`` stored per ECG lead."""
        return int(round(self.fs * self.duration_s))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CacheConfig":
        reject_unknown_fields(cls, values, "cache")
        return cls(**values)


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


# --------------------------------------------------------------------------------------------------
# Manifest -> exam tables
# --------------------------------------------------------------------------------------------------
_READER_OPTION_COLUMNS = ("fs", "units", "resolution_uv")


def load_manifest(manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> tuple[pd.DataFrame, Path | None]:
    """Read a manifest (Parquet or CSV path, or a pandas/Polars DataFrame) as pandas, with its path (or None)."""
    if isinstance(manifest, pd.DataFrame):
        return manifest, None
    if hasattr(manifest, "to_pandas") and not isinstance(manifest, (str, os.PathLike)):  # Polars
        return manifest.to_pandas(), None
    path = Path(manifest)
    if not path.is_file():
        raise ReadError(path, "no such manifest file")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype={"ecg_exam_id": str, "cxr_exam_id": str, "record_id": str, "patient_id": str})
        else:
            df = pd.read_parquet(path)
    except Exception as e:  # pyarrow / pandas raise many types
        raise ReadError(path, f"not a readable manifest ({type(e).__name__}: {e})") from None
    return df, path


def clean_option(value: Any) -> Any:
    """A manifest cell as a reader option: NaN, empty strings and missing values become ``None``."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _exam_table(manifest: pd.DataFrame, modality: str, base: Path | None, source: str) -> pd.DataFrame:
    """Unique exams of one modality, sorted by exam id (row order of the cache arrays)."""
    id_col, path_col = f"{modality}_exam_id", f"{modality}_path"
    missing = [c for c in (id_col, path_col) if c not in manifest.columns]
    if missing:
        raise ReadError(source, f"manifest lacks column(s) {', '.join(missing)}")
    cols = [id_col, path_col]
    if modality == "ecg":
        cols += [c for c in _READER_OPTION_COLUMNS if c in manifest.columns]
    df = manifest[cols].copy()
    df = df[df[id_col].notna()]
    df[id_col] = df[id_col].astype(str)

    def _resolve(p: Any) -> str | None:
        if p is None or (isinstance(p, float) and np.isnan(p)):
            return None
        p = Path(str(p))
        if not p.is_absolute() and base is not None:
            p = base / p
        return str(p)

    df[path_col] = [_resolve(p) for p in df[path_col]]
    df = df.drop_duplicates()
    dup = df[id_col].duplicated(keep=False)
    if dup.any():
        exam = df.loc[dup, id_col].iloc[0]
        raise ReadError(source, f"{id_col} {exam!r} appears with different paths or reader options")
    out = pd.DataFrame({"exam_id": df[id_col].to_numpy(dtype=object), "path": df[path_col].to_numpy(dtype=object)})
    if modality == "ecg":
        for c in _READER_OPTION_COLUMNS:
            out[c] = [clean_option(v) for v in df[c]] if c in df.columns else None
    return out.sort_values("exam_id", kind="stable").reset_index(drop=True)


def _source_hash(ecg_exams: pd.DataFrame, cxr_exams: pd.DataFrame) -> str:
    """Hash of what the cache content depends on: exam ids, resolved paths and reader options.

    Re-splitting or re-labelling the cohort does not change it; adding, removing or moving an exam does.
    """
    h = hashlib.sha256()
    for name, table in (("ecg", ecg_exams), ("cxr", cxr_exams)):
        h.update(name.encode())
        h.update(json.dumps(table.astype(object).where(table.notna(), None).values.tolist(), default=str).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Decoding one exam (runs in worker processes)
# --------------------------------------------------------------------------------------------------
def _remove_baseline(signal: np.ndarray, fs: float, mode: str) -> np.ndarray:
    """Baseline removal on a ``(leads, samples)`` signal."""
    if mode == "none" or signal.shape[1] == 0:
        return signal
    if mode == "median":
        return signal - np.median(signal, axis=1, keepdims=True)
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, 0.5, btype="highpass", fs=fs, output="sos")
    n = signal.shape[1]
    padlen = min(3 * (2 * len(sos) + 1), n - 1)
    return sosfiltfilt(sos, signal.astype(np.float64), axis=1, padlen=max(padlen, 0)).astype(np.float32)


def decode_ecg(path: str, config: CacheConfig, *, fs: float | None = None, units: str | None = None,
               resolution_uv: float | None = None) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Decode one ECG file exactly as the cache stores it.

    Returns ``(signal, lead_mask, n_samples, original_fs)``: ``signal`` is ``(12, T)`` float16 in mV at
    ``config.fs`` (baseline removed, cut to / zero-padded to ``T``), ``lead_mask`` the ``(12,)`` bool
    mask from :func:`cardiofusion.io.ecg.standardize`, ``n_samples`` the valid length (``<= T``).
    Per-exam ``fs``/``units``/``resolution_uv`` override the config's headerless-file defaults.
    Raises :class:`ReadError` for an unreadable or unusable file.
    """
    from .io import ecg as ecg_io

    options = {
        "fs": fs if fs is not None else config.ecg_fs,
        "units": units if units is not None else config.ecg_units,
        "resolution_uv": resolution_uv if resolution_uv is not None else config.ecg_resolution_uv,
    }
    record = ecg_io.read_ecg(path, **{k: v for k, v in options.items() if v is not None})
    original_fs = float(record.original_fs if record.original_fs is not None else record.fs)
    out, mask, n = standardize_ecg_record(record, config, path=path)
    return out, mask, n, original_fs


def standardize_ecg_record(record: Any, config: CacheConfig, *, path: str | None = None
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """The cache's ECG preprocessing after reading: an :class:`~cardiofusion.records.ECGRecord` ->
    ``(signal (12, T) float16 mV at config.fs, lead_mask (12,), n_samples)`` (what :func:`decode_ecg`
    stores; prediction on in-memory records uses it too, so both paths stay identical).
    """
    from .io import ecg as ecg_io

    path = path or getattr(record, "source", None) or "ECG record"
    record, mask = ecg_io.standardize(record, fs=config.fs, leads=CANONICAL_LEADS)
    signal = np.asarray(record.signal, dtype=np.float32)  # (12, n)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if signal.shape[0] != len(CANONICAL_LEADS) or mask.shape[0] != len(CANONICAL_LEADS):
        raise ReadError(path, f"standardize returned {signal.shape[0]} leads, expected {len(CANONICAL_LEADS)}")
    if not np.isfinite(signal).all():
        raise ReadError(path, "signal contains NaN or infinite values")
    signal = _remove_baseline(signal, config.fs, config.baseline)
    T = config.n_samples
    n = min(signal.shape[1], T)
    if n == 0:
        raise ReadError(path, "signal has no samples")
    out = np.zeros((len(CANONICAL_LEADS), T), dtype=np.float16)  # (12, T)
    with np.errstate(over="ignore"):
        out[:, :n] = signal[:, :n]
    if not np.isfinite(out[:, :n]).all():
        raise ReadError(path, f"amplitudes exceed the float16 range (max |x| = {np.abs(signal).max():.3g} mV); "
                              "check the file's units / resolution")
    out[~mask] = 0
    return out, mask, n


def decode_cxr(path: str, config: CacheConfig) -> np.ndarray:
    """Decode one X-ray exactly as the cache stores it: ``(S, S)`` uint8. Raises :class:`ReadError`."""
    from .io import cxr as cxr_io

    image = cxr_io.read_cxr(path)
    pixels = np.asarray(cxr_io.resize_square(image.pixels, config.image_size, mode=config.image_mode))
    S = config.image_size
    if pixels.shape != (S, S) or pixels.dtype != np.uint8:
        raise ReadError(path, f"resize_square returned {pixels.dtype} {pixels.shape}, expected uint8 ({S}, {S})")
    return pixels


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ReadError):
        return exc.reason
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _decode_chunk(modality: str, items: list[dict[str, Any]], config_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode a chunk of exams; every per-file error becomes a ``failed`` result, never an exception."""
    config = CacheConfig.from_dict(config_dict)
    results = []
    for item in items:
        res: dict[str, Any] = {"row": item["row"]}
        try:
            if item["path"] is None:
                raise ReadError(None, "no path in the manifest")
            if modality == "ecg":
                signal, mask, n, original_fs = decode_ecg(
                    item["path"], config, fs=item.get("fs"), units=item.get("units"),
                    resolution_uv=item.get("resolution_uv"))
                res.update(status=STATUS_OK, reason="", data=signal, mask=mask, n_samples=n, original_fs=original_fs)
            else:
                res.update(status=STATUS_OK, reason="", data=decode_cxr(item["path"], config))
        except Exception as e:  # noqa: BLE001 - one bad file must never stop the build
            res.update(status=STATUS_FAILED, reason=_failure_reason(e) or type(e).__name__)
        results.append(res)
    return results


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------
class _Modality:
    """Index table + memmap of one modality during a build (main process only)."""

    def __init__(self, name: str, out_dir: Path, index: pd.DataFrame, shape: tuple[int, ...], dtype: str,
                 fresh: bool):
        self.name = name
        self.shape = shape
        self.path = out_dir / (ECG_ARRAY if name == "ecg" else CXR_ARRAY)
        self.index_path = out_dir / (ECG_INDEX if name == "ecg" else CXR_INDEX)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        if fresh:
            with open(self.path, "wb") as f:  # sparse preallocation
                f.truncate(nbytes)
        elif not self.path.is_file() or self.path.stat().st_size != nbytes:
            found = f"size {self.path.stat().st_size}" if self.path.is_file() else "missing"
            raise ConfigError(f"{self.path}: {found}, expected {nbytes} bytes; the cache is damaged, "
                              "rebuild it with --overwrite")
        self.array = np.memmap(self.path, dtype=self.dtype, mode="r+", shape=shape) if shape[0] else None
        # per-exam state as plain arrays (fast updates); the index table is assembled on save
        self.exam_id = index["exam_id"].astype(str).to_numpy(dtype=object)
        self.exam_path = index["path"].to_numpy(dtype=object)
        self.status = index["status"].to_numpy(dtype=object).copy()
        self.reason = index["reason"].fillna("").to_numpy(dtype=object).copy()
        if name == "ecg":
            self.n_samples = index["n_samples"].to_numpy(dtype=np.int64).copy()
            self.original_fs = index["original_fs"].to_numpy(dtype=np.float64).copy()
            self.mask = index[list(LEAD_MASK_COLUMNS)].to_numpy(dtype=bool).copy()  # (N, 12)
        self.dirty = False

    def apply(self, results: list[dict[str, Any]]) -> None:
        for res in results:
            row = res["row"]
            self.status[row] = res["status"]
            self.reason[row] = res["reason"]
            if res["status"] == STATUS_OK:
                self.array[row] = res["data"]
                if self.name == "ecg":
                    self.n_samples[row] = res["n_samples"]
                    self.original_fs[row] = res["original_fs"]
                    self.mask[row] = res["mask"]
        self.dirty = True

    def table(self) -> pd.DataFrame:
        idx = pd.DataFrame({
            "exam_id": self.exam_id, "path": self.exam_path,
            "row": np.arange(len(self.exam_id), dtype=np.int64),
            "status": self.status, "reason": self.reason,
        })
        if self.name == "ecg":
            idx["n_samples"] = self.n_samples
            idx["original_fs"] = self.original_fs
            for j, c in enumerate(LEAD_MASK_COLUMNS):
                idx[c] = self.mask[:, j]
        return idx

    def save(self) -> None:
        """Flush the array, then atomically replace the index (so ``ok`` never precedes the data)."""
        if self.array is not None:
            self.array.flush()
        index = self.table()
        _atomic_write(self.index_path, lambda tmp: index.to_parquet(tmp, index=False))
        self.dirty = False

    def counts(self) -> dict[str, int]:
        s = self.status
        return {"total": int(len(s)), "ok": int((s == STATUS_OK).sum()),
                "failed": int((s == STATUS_FAILED).sum()), "pending": int((s == STATUS_PENDING).sum())}

    def failures(self) -> pd.DataFrame:
        f = self.status == STATUS_FAILED
        return pd.DataFrame({"modality": self.name, "exam_id": self.exam_id[f],
                             "path": self.exam_path[f], "reason": self.reason[f]},
                            columns=["modality", "exam_id", "path", "reason"])


def _new_index(exams: pd.DataFrame, modality: str) -> pd.DataFrame:
    idx = pd.DataFrame({
        "exam_id": exams["exam_id"].astype(str).to_numpy(dtype=object),
        "path": exams["path"].to_numpy(dtype=object),
        "row": np.arange(len(exams), dtype=np.int64),
        "status": np.array([STATUS_PENDING] * len(exams), dtype=object),
        "reason": np.array([""] * len(exams), dtype=object),
    })
    if modality == "ecg":
        idx["n_samples"] = np.zeros(len(exams), dtype=np.int64)
        idx["original_fs"] = np.full(len(exams), np.nan)
        for c in LEAD_MASK_COLUMNS:
            idx[c] = np.zeros(len(exams), dtype=bool)
    return idx


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def build_cache(
    manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame,
    out_dir: str | os.PathLike,
    config: CacheConfig | None = None,
    *,
    workers: int = 1,
    chunk_size: int = 16,
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    save_every_s: float = 2.0,
) -> CacheReport:
    """Decode every unique ECG and X-ray exam of ``manifest`` into the cache folder ``out_dir``.

    Args:
        manifest: cohort manifest (``manifest.parquet`` / CSV path or DataFrame) with
            ``ecg_exam_id``, ``ecg_path``, ``cxr_exam_id``, ``cxr_path`` and optionally the ECG reader
            options ``fs``, ``units``, ``resolution_uv`` (per exam; empty cells use ``config``'s defaults).
        out_dir: cache folder (created if needed).
        config: decoding settings; default :class:`CacheConfig()`.
        workers: processes decoding in parallel; ``1`` decodes in this process. With a pool, a file
            that kills its worker (a crash in a C decoder, out of memory) is recorded as failed and
            the build goes on; in-process, such a crash ends the build (re-run it to resume).
        chunk_size: exams per task sent to a worker.
        overwrite: discard an existing cache in ``out_dir`` built from another manifest or settings
            (otherwise that is refused with :class:`ConfigError`).
        retry_failed: also decode again the exams an earlier run recorded as failed.
        progress: show a tqdm progress bar.
        save_every_s: the index tables are saved (atomically) after a chunk at most this often, and
            always at the end or on interruption; exams decoded but not yet saved are redone by a
            resumed build.

    A run on a folder holding a compatible build (same manifest exams and settings) resumes it: only
    ``pending`` exams (and ``failed`` ones with ``retry_failed``) are decoded. Per-file problems are
    recorded (``failures.csv``) and never stop the build.
    """
    t0 = time.perf_counter()
    config = config or CacheConfig()
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    table, manifest_path = load_manifest(manifest)
    source = str(manifest_path.resolve()) if manifest_path is not None else "manifest"
    base = manifest_path.parent if manifest_path is not None else None
    ecg_exams = _exam_table(table, "ecg", base, source)
    cxr_exams = _exam_table(table, "cxr", base, source)
    source_hash = _source_hash(ecg_exams, cxr_exams)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / CACHE_JSON
    T, S = config.n_samples, config.image_size
    ecg_shape = (len(ecg_exams), len(CANONICAL_LEADS), T)
    cxr_shape = (len(cxr_exams), S, S)

    resumed = False
    created = _now()
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            old = None
            if not overwrite:
                raise ConfigError(f"{meta_path}: unreadable ({e}); rebuild with --overwrite") from None
        if old is not None and not overwrite:
            diffs = _config_differences(old.get("config", {}), config.to_dict())
            if diffs:
                raise ConfigError(f"{out} holds a cache built with other settings ({'; '.join(diffs)}); "
                                  "use --overwrite to rebuild it or choose another output folder")
            if old.get("source_hash") != source_hash:
                raise ConfigError(f"{out} holds a cache built from another manifest (different exams, paths "
                                  "or reader options); use --overwrite to rebuild it or choose another output folder")
            resumed = all((out / name).exists() for name in (ECG_INDEX, CXR_INDEX))
            created = old.get("created", created)
    if not resumed:
        for name in CACHE_FILES:
            (out / name).unlink(missing_ok=True)

    meta: dict[str, Any] = {
        "format_version": CACHE_FORMAT_VERSION,
        "library_version": _library_version(),
        "config": config.to_dict(),
        "leads": list(CANONICAL_LEADS),
        "n_samples": T,
        "ecg_shape": list(ecg_shape),
        "cxr_shape": list(cxr_shape),
        "ecg_dtype": "float16",
        "cxr_dtype": "uint8",
        "source_hash": source_hash,
        "manifest": source,
        "manifest_sha256": _file_sha256(manifest_path) if manifest_path is not None else None,
        "created": created,
        "updated": _now(),
    }
    if resumed:
        ecg_index = pd.read_parquet(out / ECG_INDEX)
        cxr_index = pd.read_parquet(out / CXR_INDEX)
        if len(ecg_index) != len(ecg_exams) or len(cxr_index) != len(cxr_exams):
            raise ConfigError(f"{out}: index tables do not match cache.json; rebuild with --overwrite")
    else:
        ecg_index, cxr_index = _new_index(ecg_exams, "ecg"), _new_index(cxr_exams, "cxr")
    # cache.json first (a folder with arrays but no cache.json is never trusted), then arrays + indexes.
    _write_json(meta_path, {**meta, "counts": None, "complete": False})
    mods = {
        "ecg": _Modality("ecg", out, ecg_index, ecg_shape, "float16", fresh=not resumed),
        "cxr": _Modality("cxr", out, cxr_index, cxr_shape, "uint8", fresh=not resumed),
    }
    if not resumed:
        for m in mods.values():
            m.save()

    todo_status = (STATUS_PENDING, STATUS_FAILED) if retry_failed else (STATUS_PENDING,)
    tasks: list[tuple[str, list[dict[str, Any]]]] = []
    decoded = {"ecg": 0, "cxr": 0}
    for name, exams in (("ecg", ecg_exams), ("cxr", cxr_exams)):
        rows = np.flatnonzero(np.isin(mods[name].status, todo_status))
        records = exams.iloc[rows].to_dict("records")
        items = [{**rec, "row": int(r)} for rec, r in zip(records, rows)]
        for i in range(0, len(items), chunk_size):
            tasks.append((name, items[i:i + chunk_size]))
    n_todo = sum(len(items) for _, items in tasks)

    def _save_all() -> None:
        for m in mods.values():
            if m.dirty:
                m.save()
        fails = pd.concat([mods["ecg"].failures(), mods["cxr"].failures()], ignore_index=True)
        _atomic_write(out / FAILURES_CSV, lambda tmp: fails.to_csv(tmp, index=False))
        counts = {k: m.counts() for k, m in mods.items()}
        _write_json(meta_path, {**meta, "updated": _now(), "counts": counts,
                                "complete": all(c["pending"] == 0 for c in counts.values())})

    bar = _progress_bar(n_todo, progress)
    last_save = time.monotonic()
    config_dict = config.to_dict()

    def _collect(name: str, results: list[dict[str, Any]]) -> None:
        nonlocal last_save
        mods[name].apply(results)
        decoded[name] += len(results)
        bar.update(len(results))
        if time.monotonic() - last_save >= save_every_s:
            _save_all()
            last_save = time.monotonic()

    try:
        if workers == 1 or len(tasks) <= 1:
            for name, items in tasks:
                _collect(name, _decode_chunk(name, items, config_dict))
        else:
            _decode_parallel(tasks, workers, config_dict, _collect)
    finally:
        bar.close()
        _save_all()

    counts = {k: m.counts() for k, m in mods.items()}
    failures = pd.concat([mods["ecg"].failures(), mods["cxr"].failures()], ignore_index=True)
    return CacheReport(out_dir=out, counts=counts, decoded=decoded, seconds=time.perf_counter() - t0,
                       failures=failures, resumed=resumed)


#: Reason recorded for a file whose decoding killed the worker process (a crash in a C decoder, out of memory).
WORKER_DIED_REASON = "the worker process died while decoding this file (crash in a decoder or out of memory)"


def _decode_parallel(tasks: list[tuple[str, list[dict[str, Any]]]], workers: int, config_dict: dict[str, Any],
                     collect) -> None:
    """Run the chunks on a process pool, at most ``2 * workers`` in flight.

    If a worker dies (which breaks the whole pool), the chunks in flight are decoded again one exam at a
    time in a one-worker pool, so that only the file that kills its process is recorded as failed.
    """
    queue = deque(tasks)
    while queue:
        suspects: list[tuple[str, list[dict[str, Any]]]] = []
        broken = False
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            running: dict[cf.Future, tuple[str, list[dict[str, Any]]]] = {}
            try:
                while queue or running:
                    while queue and not (broken or suspects) and len(running) < 2 * workers:
                        task = queue.popleft()
                        try:
                            running[pool.submit(_decode_chunk, task[0], task[1], config_dict)] = task
                        except BrokenProcessPool:  # broke before a future told us: retry it in a new pool
                            queue.appendleft(task)
                            broken = True
                    if not running:
                        break
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        task = running.pop(fut)
                        try:
                            results = fut.result()
                        except BrokenProcessPool:
                            suspects.append(task)
                            continue
                        collect(task[0], results)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if suspects:
            _decode_isolated([(name, item) for name, items in suspects for item in items], config_dict, collect)


def _decode_isolated(items: list[tuple[str, dict[str, Any]]], config_dict: dict[str, Any], collect) -> None:
    """Decode exams one by one in a one-worker pool; an exam that kills it is recorded as failed."""
    todo = deque(items)
    while todo:
        with cf.ProcessPoolExecutor(max_workers=1) as pool:
            while todo:
                name, item = todo.popleft()
                try:
                    results = pool.submit(_decode_chunk, name, [item], config_dict).result()
                except BrokenProcessPool:
                    collect(name, [{"row": item["row"], "status": STATUS_FAILED, "reason": WORKER_DIED_REASON}])
                    break  # this pool is dead: start a new one for the rest
                collect(name, results)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cache", unit="exam", disable=not enabled or total == 0, leave=False)


def _library_version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------------------------------
# Read side
# --------------------------------------------------------------------------------------------------
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

    def records(self, manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
        """Manifest rows whose ECG and X-ray both decoded, with ``ecg_row`` and ``cxr_row`` added."""
        df, _ = self._annotate(manifest)
        keep = (df["ecg_row"] >= 0) & (df["cxr_row"] >= 0)
        return df[keep].reset_index(drop=True)

    def excluded(self, manifest: str | os.PathLike | pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
        """Manifest rows :meth:`records` drops, with why.

        Adds ``reason`` (``unreadable ECG file``, ``unreadable X-ray file``, ``unreadable ECG and X-ray
        files``, or ``not in cache`` / ``not decoded yet`` for a cache built from another manifest or an
        interrupted build) and ``detail`` (the reader's message per modality).
        """
        df, (e_status, e_reason, c_status, c_reason) = self._annotate(manifest)
        drop = (df["ecg_row"] < 0).to_numpy() | (df["cxr_row"] < 0).to_numpy()
        reasons, details = [], []
        for i in np.flatnonzero(drop):
            problems, detail = [], []
            for label, status, reason in (("ECG", e_status[i], e_reason[i]), ("X-ray", c_status[i], c_reason[i])):
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


__all__ = [
    "CacheConfig",
    "CacheReport",
    "PreprocessedCache",
    "build_cache",
    "open_cache",
    "decode_ecg",
    "decode_cxr",
    "load_manifest",
    "LEAD_MASK_COLUMNS",
]
