"""ECG readers: any supported file -> :class:`~cardiofusion.records.ECGRecord` in mV, canonical lead order.

Formats (by extension, DICOM also by content):

=============  ==========  ============================================================================
extension      ``format``  notes
=============  ==========  ============================================================================
.csv .tsv .txt ``csv``     one column per lead; header optional; time/index column dropped; delimiter
                           ``,`` ``;`` or tab; ``fs`` (default 500 Hz), ``units`` (default uV, or the
                           header's unit suffix), ``counts`` at ``resolution_uv`` (default 1.25 uV)
.hea .dat      ``wfdb``    ``wfdb.rdrecord`` (PTB-XL, MIMIC-IV-ECG); rate and units from the header
.mat (+.hea)   ``cinc_mat`` PhysioNet/CinC: ``val`` via ``scipy.io.loadmat``, gain/baseline from header
.dcm .dicom    ``dicom``   12-lead waveform group (not a rhythm strip / median beat); units from
                           ChannelSensitivityUnitsSequence
.h5 .hdf5      ``hdf5``    SPH layout (``ecg`` dataset, 12 x samples, mV, 500 Hz)
.npy .npz      ``numpy``   leads axis found by its size; ``fs`` default 500 Hz, ``units`` default mV
=============  ==========  ============================================================================

Options ``fs``/``units``/``resolution_uv`` apply to formats that do not state them (CSV, NumPy, HDF5
without attributes); self-describing formats (WFDB, CinC, DICOM) ignore them. ``lead_names`` labels
the channels of files without names and overrides the names of the others.

Every problem raises :class:`~cardiofusion.errors.ReadError` naming the file; no other exception
escapes :func:`read_ecg`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ReadError
from ..records import CANONICAL_LEADS, ECGRecord
from . import _ecg_formats as formats
from ._ecg_formats import DEFAULT_FS, DEFAULT_RESOLUTION_UV, RawECG
from ._ecg_leads import canonical_lead_name, canonical_order, derive_limb_leads
from ._files import check_input_file

#: Shortest accepted recording, in seconds (module-level so that a deployment can change it).
MIN_DURATION_S = 1.0

_CSV_EXT = (".csv", ".tsv", ".txt")
_DICOM_EXT = (".dcm", ".dicom", "")


def read_ecg(
    path: str | os.PathLike,
    *,
    fs: float | None = None,
    units: str | None = None,
    resolution_uv: float | None = None,
    lead_names: Sequence[str] | None = None,
) -> ECGRecord:
    """Read one ECG file into a validated :class:`ECGRecord` (float32 mV, canonical lead order).

    Args:
        path: the file; for WFDB/CinC records the ``.hea``, ``.dat`` or ``.mat``.
        fs: sampling rate in Hz for files that carry none (CSV, NumPy, HDF5); default 500 Hz.
        units: ``"mV"``, ``"uV"`` or ``"counts"`` for files that carry none (CSV default uV,
            NumPy/HDF5 default mV).
        resolution_uv: microvolts per count when ``units="counts"`` (default 1.25 uV).
        lead_names: channel labels for files without them (12 unlabelled channels are taken in
            canonical order).

    Returns:
        Only the standard leads present, reordered canonically; ``missing_leads`` lists the absent
        ones, ``dropped_leads`` the non-standard channels discarded. Rate is the file's own.

    Raises:
        ReadError: missing/corrupt/truncated file, not a regular file (device, FIFO), larger than
            ``CARDIOFUSION_MAX_INPUT_BYTES`` (default 512 MiB; :mod:`cardiofusion.io._files`), no
            waveform, non-finite values, flat or too short (< :data:`MIN_DURATION_S`) signal, unknown
            units, no standard lead.
    """
    p = Path(path)
    check_input_file(p)  # a regular, non-empty file under the input cap (never a device or FIFO)
    try:
        raw = _read_raw(p, fs=fs, units=units, resolution_uv=resolution_uv, lead_names=lead_names)
        return _to_record(p, raw)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(p, "file too large to read into memory") from None
    except Exception as e:  # never let a library's own exception escape
        raise ReadError(p, f"cannot read ECG ({type(e).__name__}: {e})") from None


def _read_raw(p: Path, *, fs, units, resolution_uv, lead_names) -> RawECG:
    ext = p.suffix.lower()
    headerless = dict(fs=fs, units=units, resolution_uv=resolution_uv, lead_names=lead_names)
    if ext in _CSV_EXT:
        return formats.read_csv(p, **headerless)
    if ext in (".h5", ".hdf5"):
        return formats.read_hdf5(p, **headerless)
    if ext in (".npy", ".npz"):
        return formats.read_numpy(p, **headerless)
    if ext in (".hea", ".dat", ".mat"):
        if ext == ".mat" or any(f.lower().endswith(".mat") for f in formats.header_signal_files(p)):
            raw = formats.read_cinc_mat(p)
        else:
            raw = formats.read_wfdb(p)
        return _rename(p, raw, lead_names)
    if ext in _DICOM_EXT or _has_dicom_magic(p):
        return _rename(p, formats.read_dicom(p), lead_names)
    raise ReadError(p, f"unknown ECG file extension {ext!r}")


def _rename(p: Path, raw: RawECG, lead_names: Sequence[str] | None) -> RawECG:
    if lead_names is not None:
        if len(lead_names) != len(raw.names):
            raise ReadError(p, f"lead_names has {len(lead_names)} names but the file has {len(raw.names)} channels")
        raw.names = [str(n) for n in lead_names]
    return raw


def _has_dicom_magic(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _to_record(p: Path, raw: RawECG) -> ECGRecord:
    """Map channels to canonical leads, drop the rest, validate, and build the record."""
    signal = np.asarray(raw.signal, dtype=np.float64)  # (channels, samples) mV
    if signal.ndim != 2 or signal.shape[0] != len(raw.names):
        raise ReadError(p, f"decoded signal has shape {signal.shape} for {len(raw.names)} channels")
    rows: dict[str, int] = {}
    dropped: list[str] = []
    for i, name in enumerate(raw.names):
        lead = canonical_lead_name(name)
        if lead is None or lead in rows:  # non-standard or duplicate channel
            dropped.append(str(name))
        else:
            rows[lead] = i
    if not rows:
        raise ReadError(p, f"no standard ECG lead among channels {list(map(str, raw.names))}")
    leads = canonical_order(rows)
    data = signal[[rows[lead] for lead in leads]]  # (leads, samples)

    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ReadError(p, f"signal contains {bad} non-finite values (NaN/inf) out of {data.size}")
    if raw.fs <= 0 or not np.isfinite(raw.fs):
        raise ReadError(p, f"invalid sampling rate {raw.fs!r} Hz")
    duration = data.shape[1] / raw.fs
    if duration < MIN_DURATION_S:
        raise ReadError(p, f"signal too short: {data.shape[1]} samples at {raw.fs:g} Hz = {duration:.3g} s "
                           f"(minimum {MIN_DURATION_S:g} s)")
    ranges = np.ptp(data, axis=1)
    if np.all(ranges == 0):
        raise ReadError(p, f"flat signal: all {len(leads)} leads are constant")
    meta = dict(raw.meta)
    flat = [lead for lead, r in zip(leads, ranges) if r == 0]
    if flat:
        meta["flat_leads"] = flat
    return ECGRecord(
        signal=data.astype(np.float32),
        fs=float(raw.fs),
        leads=leads,
        source=str(p),
        format=raw.format,
        units="mV",
        missing_leads=tuple(lead for lead in CANONICAL_LEADS if lead not in rows),
        dropped_leads=tuple(dropped),
        original_fs=float(raw.fs),
        meta=meta,
    )


def _ratio(fs_from: float, fs_to: float) -> tuple[int, int]:
    """Smallest integers ``up/down = fs_to/fs_from`` (exact for decimal rates like 257 or 62.5 Hz)."""
    ratio = Fraction(str(float(fs_to))) / Fraction(str(float(fs_from)))
    ratio = ratio.limit_denominator(10_000)
    return ratio.numerator, ratio.denominator


def resample(signal: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """Resample along the last axis from ``fs_from`` to ``fs_to`` Hz (polyphase, exact rational ratio).

    Uses :func:`scipy.signal.resample_poly` (anti-aliasing FIR, edges padded by line extension).
    Output length is ``ceil(n * fs_to / fs_from)``; dtype float32 stays float32.
    """
    from scipy.signal import resample_poly

    if fs_from <= 0 or fs_to <= 0:
        raise ConfigError(f"sampling rates must be > 0 Hz, got {fs_from} -> {fs_to}")
    x = np.asarray(signal)
    if float(fs_from) == float(fs_to):
        return x.copy()
    up, down = _ratio(fs_from, fs_to)
    out = resample_poly(x.astype(np.float64), up, down, axis=-1, padtype="line")
    return out.astype(np.float32 if x.dtype == np.float32 else np.float64)


def standardize(
    record: ECGRecord,
    *,
    fs: float = DEFAULT_FS,
    leads: Sequence[str] = CANONICAL_LEADS,
    derive_missing: bool = True,
) -> tuple[ECGRecord, np.ndarray]:
    """Bring a record to a fixed rate and lead set for a model.

    Args:
        record: as returned by :func:`read_ecg`.
        fs: target sampling rate in Hz (default 500).
        leads: lead rows wanted, in that order (default the canonical 12).
        derive_missing: derive absent limb leads from two present ones (Einthoven/Goldberger).

    Returns:
        ``(record, mask)``: a record with exactly ``leads`` rows at ``fs`` Hz in mV, and a boolean
        ``(len(leads),)`` mask, True where the lead was recorded or derived. Leads still missing are
        zero rows with mask False, listed in ``missing_leads`` (and ``meta["derived_leads"]``,
        ``meta["zero_filled_leads"]``).
    """
    wanted = []
    for name in leads:
        lead = canonical_lead_name(name)
        if lead is None:
            raise ConfigError(f"unknown lead {name!r} (standard leads: {', '.join(CANONICAL_LEADS)})")
        wanted.append(lead)
    signal = resample(np.asarray(record.signal, dtype=np.float32), record.fs, fs)  # (leads, samples)
    present = {lead: signal[i] for i, lead in enumerate(record.leads)}
    derived = derive_limb_leads(present) if derive_missing else {}
    out = np.zeros((len(wanted), signal.shape[1]), dtype=np.float32)  # (len(leads), samples)
    mask = np.zeros(len(wanted), dtype=bool)
    for i, lead in enumerate(wanted):
        source = present.get(lead, derived.get(lead))
        if source is not None:
            out[i] = source
            mask[i] = True
    used_derived = [lead for lead in wanted if lead not in present and lead in derived]
    zero = [lead for lead, ok in zip(wanted, mask) if not ok]
    meta = dict(record.meta)
    meta.update(derived_leads=used_derived, zero_filled_leads=zero, resampled_from=float(record.fs))
    rec = ECGRecord(
        signal=out,
        fs=float(fs),
        leads=tuple(wanted),
        source=record.source,
        format=record.format,
        units="mV",
        missing_leads=tuple(zero),
        dropped_leads=record.dropped_leads,
        original_fs=record.original_fs,
        meta=meta,
    )
    return rec, mask


__all__ = [
    "read_ecg", "standardize", "resample", "canonical_lead_name",
    "MIN_DURATION_S", "DEFAULT_FS", "DEFAULT_RESOLUTION_UV",
]
