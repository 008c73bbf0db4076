"""Archive-scale batch prediction: ``cardiofusion predict BUNDLE --batch TABLE --out FILE --workers N --resume``.

The same table, output rows and failure handling as :func:`cardiofusion.bundle.batch.predict_batch`, built
for tens of thousands of patients:

* **Reading and preprocessing in worker processes** (``workers``; forked on Linux as PyTorch's data loaders
  are, spawned elsewhere; one intra-op thread each), overlapping
  with the model: while the main process scores one batch the workers read the next patients' files.
* **Several patients per forward pass**: the windows of ``batch_patients`` patients go through the model
  in one call (the bundle's runtime and precision, :mod:`cardiofusion.bundle.precision`).
* **Bounded memory**: at most ``workers * prefetch`` patients are read ahead (at least two model batches);
  nothing of a written row is kept but the failures' messages.
* **Resumable output** (CSV or JSON Lines): rows are appended in table order and flushed as soon as they and
  every row before them are done.  With ``resume`` an existing output is continued: a row cut short by a
  kill is removed, the rows already there are checked against the table (same patient ids, same order) and
  skipped, and prediction carries on from the first missing row -- so every patient is written exactly once.
* A progress bar in patients/s.

A workbook (``.xlsx``) is written once at the end, so it cannot be resumed; use ``predict_batch`` for it.
"""

from __future__ import annotations

import collections
import copy
import csv
import io
import json
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import CardiofusionError, ConfigError, ReadError
from ..tasks import binary_task
from .batch import (
    BatchReport,
    _cell,
    _float_or_none,
    _resolve,
    check_output,
    escape_formula,
    output_format,
    read_table,
)
from .results import batch_columns, batch_row, numeric_columns
from .screener import PreparedPatient, Screener

#: One table row to read: (row number, patient id, ecg, cxr, ecg_fs, ecg_units, ecg_resolution_uv) as strings.
RowSpec = tuple[int, str, str | None, str | None, Any, Any, Any]


def row_specs(df: pd.DataFrame, base: Path | None) -> list[RowSpec]:
    """What each table row asks to read (paths resolved against the table's folder)."""
    specs = []
    for i, row in df.iterrows():
        pid = _cell(row, "patient_id")
        specs.append((int(i), str(pid) if pid is not None else str(int(i) + 1), _resolve(_cell(row, "ecg"), base),
                      _resolve(_cell(row, "cxr"), base), _cell(row, "ecg_fs"), _cell(row, "ecg_units"),
                      _cell(row, "ecg_resolution_uv")))
    return specs


def prepare_row(screener: Screener, spec: RowSpec) -> PreparedPatient | str:
    """Read and preprocess one row: the prepared patient, or the one-line reason it cannot be read."""
    _, pid, ecg, cxr, fs, units, res = spec
    try:
        return screener.prepare(ecg, cxr, patient_id=pid, ecg_fs=_float_or_none(fs, "ecg_fs"), ecg_units=units,
                                ecg_resolution_uv=_float_or_none(res, "ecg_resolution_uv"))
    except CardiofusionError as e:
        return str(e)


# -- worker processes ------------------------------------------------------------------------------------
_WORKER_SCREENER: Screener | None = None


def _die_with_parent(parent: int) -> None:
    """Linux: end this worker when the batch process dies (a killed batch leaves no reader behind)."""
    if sys.platform != "linux":
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(reader: Screener, parent: int) -> None:
    global _WORKER_SCREENER
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(1)
    _WORKER_SCREENER = reader


def _work(spec: RowSpec) -> PreparedPatient | str:
    assert _WORKER_SCREENER is not None
    return prepare_row(_WORKER_SCREENER, spec)


def reader_only(screener: Screener) -> Screener:
    """A copy of ``screener`` without its model (what a reading worker needs: the bundle's settings)."""
    reader = copy.copy(screener)
    reader.model = None  # type: ignore[assignment]
    reader._forward = None
    reader._onnx = None
    return reader


def default_workers(n_rows: int) -> int:
    """Reading processes when none are asked for: none for small tables (starting a process costs seconds),
    else one per spare core (at most 4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if n_rows < 64 or cores < 2 else min(4, cores - 1)


# -- resumable output ------------------------------------------------------------------------------------
def _complete_csv(data: bytes) -> tuple[int, list[list[str]]]:
    """Byte length of the complete CSV records at the start of ``data`` and those records."""
    end = data.rfind(b"\n") + 1
    while end > 0:
        try:
            rows = list(csv.reader(io.StringIO(data[:end].decode("utf-8"), newline=""), strict=True))
            return end, rows
        except (csv.Error, UnicodeDecodeError):
            end = data.rfind(b"\n", 0, end - 1) + 1
    return 0, []


def _complete_jsonl(data: bytes) -> tuple[int, list[dict[str, Any]]]:
    rows, end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
        end += len(line)
    return end, rows


def resume_point(out: Path, fmt: str, columns: list[str], patient_ids: list[str]) -> tuple[int, list[dict[str, Any]]]:
    """How many leading rows ``out`` already holds (after cutting off a row left incomplete by a kill), and
    those rows (as dicts).  Refuses an output that is not this table's (other columns or patient ids)."""
    try:
        data = out.read_bytes()
    except FileNotFoundError:
        return 0, []
    except OSError as e:
        raise ReadError(out, f"cannot read the output to resume it ({e.strerror or e})") from None
    if fmt == "csv":
        end, records = _complete_csv(data)
        if records and records[0] != columns:
            raise ConfigError(f"{out}: cannot resume: its columns ({', '.join(records[0])}) are not this batch's "
                              f"({', '.join(columns)}); choose another --out")
        rows = [dict(zip(columns, r)) for r in records[1:]]
        if not records:
            end = 0
    elif fmt == "jsonl":
        end, rows = _complete_jsonl(data)
    else:
        raise ConfigError(f"{out}: only .csv and .jsonl outputs can be resumed (a workbook is written at the end)")
    if len(rows) > len(patient_ids):
        raise ConfigError(f"{out}: cannot resume: it holds {len(rows)} rows, the table only {len(patient_ids)}")
    for k, row in enumerate(rows):
        got = str(row.get("patient_id", ""))
        want = str(escape_formula(patient_ids[k])) if fmt == "csv" else patient_ids[k]
        if got != want:
            raise ConfigError(f"{out}: cannot resume: row {k + 1} is patient {got!r}, the table's row {k + 1} is "
                              f"{patient_ids[k]!r}; this output is not from this table")
    if end < len(data):
        try:
            with open(out, "r+b") as f:
                f.truncate(end)
        except OSError as e:
            raise ReadError(out, f"cannot cut the incomplete last row ({e.strerror or e})") from None
    return len(rows), rows


class _Appender:
    """Appends rows to a CSV / JSON Lines output, flushed (and fsynced) row group by row group."""

    def __init__(self, out: Path, fmt: str, columns: list[str], append: bool, numeric: list[str]):
        self.out, self.fmt, self.columns, self.numeric = out, fmt, columns, set(numeric)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fresh = not append or not out.exists() or out.stat().st_size == 0
            self.file = open(out, "w" if fresh else "a", encoding="utf-8", newline="")
            self.csv = csv.writer(self.file) if fmt == "csv" else None
            if fresh and self.csv is not None:
                self.csv.writerow(columns)
                self.file.flush()
        except OSError as e:
            raise ReadError(out, f"cannot write the output ({e.strerror or e})") from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            for r in rows:
                if self.csv is not None:
                    self.csv.writerow([("" if r.get(c) is None else r.get(c, "")) if c in self.numeric
                                       else escape_formula("" if r.get(c) is None else r.get(c, ""))
                                       for c in self.columns])
                else:
                    self.file.write(json.dumps(r, allow_nan=False, default=str) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:
            raise ReadError(self.out, f"cannot write the output ({e.strerror or e})") from None

    def close(self) -> None:
        self.file.close()


# -- the pipeline ----------------------------------------------------------------------------------------
def predict_archive(screener: Screener, table: str | os.PathLike | pd.DataFrame, out: str | os.PathLike, *,
                    workers: int | None = None, batch_patients: int = 16, prefetch: int = 4, resume: bool = False,
                    progress: bool = True, on_row: Callable[[int, dict[str, Any]], None] | None = None,
                    start_method: str | None = None) -> BatchReport:
    """Predict every row of a patient table (see the module docstring); one output row per input row.

    Args:
        screener: a loaded bundle (:func:`cardiofusion.load`, any runtime / precision).
        table: CSV / Parquet path or DataFrame (as :func:`~cardiofusion.bundle.batch.predict_batch` reads it).
        out: ``.csv`` or ``.jsonl`` (``.json``); never one of the inputs.
        workers: reading processes (0: read in this process; None: :func:`default_workers`).
        batch_patients: patients whose windows go through the model in one call.
        prefetch: patients read ahead per worker (bounds memory).
        resume: continue an existing ``out`` instead of replacing it.
        progress: show a progress bar (patients/s).
        on_row: called with ``(row_number, output_row)`` once a row is in the file.
        start_method: how worker processes start (``fork``, ``spawn``, ``forkserver``; default fork on Linux).

    Returns:
        A :class:`~cardiofusion.bundle.batch.BatchReport` over the whole table (rows of an earlier,
        resumed run included).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    fmt = output_format(out)
    if fmt not in ("csv", "jsonl"):
        raise ConfigError(f"{out}: archive prediction writes .csv or .jsonl (rows appended as they finish); "
                          f"a workbook is written at the end only")
    if batch_patients < 1 or prefetch < 1:
        raise ConfigError("batch_patients and prefetch must be >= 1")
    df, base = read_table(table)
    specs = row_specs(df, base)
    check_output(out, [None if isinstance(table, pd.DataFrame) else table, *[f for s in specs for f in s[2:4]]],
                 bundle=getattr(screener, "path", None))
    task = getattr(screener, "task", None) or binary_task()
    columns = batch_columns(task)
    start, previous = (resume_point(out, fmt, columns, [s[1] for s in specs]) if resume else (0, []))
    n_ok = sum(1 for r in previous if r.get("status") == "ok")
    failures: list[dict[str, Any]] = [{"row": k + 1, "patient_id": r.get("patient_id"), "error": r.get("error")}
                                      for k, r in enumerate(previous) if r.get("status") == "failed"]
    del previous
    workers = default_workers(len(specs) - start) if workers is None else int(workers)
    if workers < 0:
        raise ConfigError("workers must be >= 0")
    writer = _Appender(out, fmt, columns, append=resume, numeric=numeric_columns(task))
    pool = None
    if workers > 0 and start < len(specs):
        method = start_method or ("fork" if sys.platform == "linux" else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_init_worker, initargs=(reader_only(screener), os.getpid()))
    ahead = max(workers * prefetch, 2 * batch_patients)
    bar = tqdm(total=len(specs), initial=start, desc="predict", unit="patient", disable=not progress,
               dynamic_ncols=True)

    def emit(items: list[tuple[RowSpec, PreparedPatient | str]]) -> None:
        nonlocal n_ok
        prepared = [p for _, p in items if not isinstance(p, str)]
        try:
            results = iter(screener.predict_prepared_each(prepared))
        except CardiofusionError as e:  # a whole batch failing is unexpected: report it per row
            results = iter([e] * len(prepared))
        rows = []
        for spec, p in items:
            r = p if isinstance(p, str) else next(results)
            if isinstance(r, str | CardiofusionError):
                row = {"patient_id": spec[1], "status": "failed", "error": str(r)}
                failures.append({"row": spec[0] + 1, "patient_id": spec[1], "error": str(r)})
            else:
                row = batch_row(task, r.to_dict())
                n_ok += 1
            rows.append(row)
        writer.write(rows)
        for (spec, _), row in zip(items, rows):
            if on_row is not None:
                on_row(spec[0], row)
        bar.update(len(items))

    try:
        queue: collections.deque[tuple[RowSpec, Future | PreparedPatient | str]] = collections.deque()
        todo = iter(specs[start:])
        pending: list[tuple[RowSpec, PreparedPatient | str]] = []
        n_prepared = 0
        while True:
            while pool is not None and len(queue) < ahead:
                spec = next(todo, None)
                if spec is None:
                    break
                queue.append((spec, pool.submit(_work, spec)))
            if pool is None:
                spec = next(todo, None)
                if spec is not None:
                    queue.append((spec, prepare_row(screener, spec)))
            if not queue:
                break
            spec, item = queue.popleft()
            result = item.result() if isinstance(item, Future) else item
            pending.append((spec, result))
            n_prepared += not isinstance(result, str)
            if n_prepared >= batch_patients:
                emit(pending)
                pending, n_prepared = [], 0
        if pending:
            emit(pending)
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    failed = pd.DataFrame(failures, columns=["row", "patient_id", "error"])
    return BatchReport(out=out, n_rows=len(specs), n_ok=n_ok, failures=failed)


__all__ = ["default_workers", "predict_archive", "prepare_row", "reader_only", "resume_point", "row_specs"]
