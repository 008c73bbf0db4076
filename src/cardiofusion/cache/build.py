"""The parallel, fault-tolerant, resumable cache build (:func:`build_cache`)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, ReadError
from ..records import CANONICAL_LEADS
from ..transforms.decode import CacheConfig, decode_cxr, decode_ecg
from .layout import (  # noqa: F401
    CACHE_FORMAT_VERSION, CACHE_JSON, ECG_ARRAY, CXR_ARRAY, ECG_INDEX, CXR_INDEX, FAILURES_CSV, CACHE_FILES,
    STATUS_OK, STATUS_FAILED, STATUS_PENDING, LEAD_MASK_COLUMNS, CacheReport,
)
from .layout import _atomic_write, _file_sha256, _now, _write_json
from .manifest import _exam_table, _source_hash, load_manifest

if TYPE_CHECKING:
    import polars as pl

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
            flags: list[str] = []  # quality warnings (ECG signal, colour X-ray): kept as ok, reason in the index
            if modality == "ecg":
                signal, mask, n, original_fs = decode_ecg(
                    item["path"], config, fs=item.get("fs"), units=item.get("units"),
                    resolution_uv=item.get("resolution_uv"), warnings=flags)
                res.update(status=STATUS_OK, reason="; ".join(flags), data=signal, mask=mask, n_samples=n,
                           original_fs=original_fs)
            else:
                pixels = decode_cxr(item["path"], config, warnings=flags)
                res.update(status=STATUS_OK, reason="; ".join(flags), data=pixels)
        except Exception as e:  # noqa: BLE001 - one bad file must never stop the build
            res.update(status=STATUS_FAILED, reason=_failure_reason(e) or type(e).__name__)
        results.append(res)
    return results


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
        # the modalities the manifest has exams of (one for a cohort from-adapter manifest)
        "modalities": [m for m, t in (("ecg", ecg_exams), ("cxr", cxr_exams)) if len(t)],
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
    from .. import __version__

    return __version__
