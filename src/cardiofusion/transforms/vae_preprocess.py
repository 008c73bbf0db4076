"""Named whole-record ECG preprocessings (a name a run saves, and the function it names).

``lsvae_paper`` is paper 002's preprocessing (LS-EMVAE), applied to each lead of a record on its own:

1. gaps (NaN samples) filled by linear interpolation (``neurokit2.signal_interpolate``; a gap at either
   end takes the nearest valid value);
2. cleaned with ``neurokit2.ecg_clean`` (method ``"neurokit"``: 0.5 Hz 5th-order Butterworth high-pass,
   then the powerline filter) at the record's own sampling rate;
3. z-scored per lead and record (``neurokit2.standardize``: mean 0, sample standard deviation 1).

A record with a lead that is entirely missing, still NaN after cleaning, or constant is refused with a
:class:`~cardiofusion.errors.ReadError` naming the record and the lead -- the original code drops such
records, and a caller building a cache records ``(path, reason)`` and carries on.  Leads are handled by
name: the output rows are in the order of ``leads`` given (the record's own order by default).

Use :func:`ecg_preprocessing` to get the function for a saved name; :data:`ECG_PREPROCESSINGS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, ReadError
from ..records import CANONICAL_LEADS, ECGRecord

__all__ = ["ECG_PREPROCESSINGS", "LSVAE_PREPROCESSING", "ecg_preprocessing", "lsvae_preprocess_ecg"]

#: The name runs save for paper 002's preprocessing.
LSVAE_PREPROCESSING = "lsvae_paper"


def _nk():
    import neurokit2 as nk  # slow import (seconds): only when used

    return nk


def lsvae_preprocess_ecg(
    record: ECGRecord | np.ndarray,
    fs: float | None = None,
    *,
    leads: Sequence[str] | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Paper 002's per-lead preprocessing: ``(L, T)`` signal -> ``(L, T)`` float32 z-scores.

    Args:
        record: an :class:`~cardiofusion.records.ECGRecord` (its ``fs``, ``leads`` and ``source`` are used)
            or a ``(L, T)`` array in mV (then ``fs`` is required, ``leads`` defaults to the canonical 12).
        fs: sampling rate in Hz (arrays only; must agree with a record's own rate if given).
        leads: for a record, the lead names wanted, in output order, each read by name from the record
            (default: all of its leads); for an array, the names of its rows (default: the canonical 12).
        source: the record's path or id for error messages (arrays only).

    Raises:
        ReadError: a wanted lead is missing from the record, entirely NaN, still NaN after cleaning, or
            constant; the message names the record and the lead.
        ConfigError: bad arguments (no rate, unknown lead names, wrong array shape).
    """
    if isinstance(record, ECGRecord):
        if fs is not None and float(fs) != float(record.fs):
            raise ConfigError(f"fs={fs} given for a record at {record.fs} Hz")
        signal, fs, have, source = np.asarray(record.signal), float(record.fs), tuple(record.leads), record.source
    else:
        if fs is None:
            raise ConfigError("lsvae_preprocess_ecg: the sampling rate fs is required for an array")
        signal, fs = np.asarray(record), float(fs)
        have = tuple(leads) if leads is not None else tuple(CANONICAL_LEADS)  # an array's rows are `leads`
    if signal.ndim != 2 or signal.shape[0] != len(have):
        raise ConfigError(f"ECG signal must be (leads, samples) with {len(have)} rows; got {signal.shape}")
    want = tuple(leads) if leads is not None else have
    unknown = [lead for lead in want if lead not in CANONICAL_LEADS]
    if unknown:
        raise ConfigError(f"unknown ECG lead(s) {', '.join(unknown)}; known: {', '.join(CANONICAL_LEADS)}")
    missing = [lead for lead in want if lead not in have]
    if missing:
        raise ReadError(source, f"lead(s) {', '.join(missing)} not in the record (has {', '.join(have)})")
    nk = _nk()
    out = np.empty((len(want), signal.shape[1]), dtype=np.float32)
    for i, lead in enumerate(want):
        x = signal[have.index(lead)].astype(np.float64)
        if not np.isfinite(x).any():
            raise ReadError(source, f"lead {lead} has no valid samples")
        x = np.where(np.isfinite(x), x, np.nan)
        if np.isnan(x).any():
            x = np.asarray(nk.signal_interpolate(x, method="linear"), dtype=np.float64)
        if np.all(x == x[0]):
            raise ReadError(source, f"lead {lead} is constant (no signal)")
        x = np.asarray(nk.ecg_clean(x, sampling_rate=fs, method="neurokit"), dtype=np.float64)
        if np.isnan(x).any():
            raise ReadError(source, f"lead {lead} is NaN after cleaning")
        if np.all(x == x[0]):
            raise ReadError(source, f"lead {lead} is constant (no signal)")
        out[i] = np.asarray(nk.standardize(x), dtype=np.float64)
    return out


#: Named ECG preprocessings: name -> ``fn(record | array, fs=None, *, leads=None, source=None) -> (L, T)``.
ECG_PREPROCESSINGS: dict[str, Callable[..., np.ndarray]] = {LSVAE_PREPROCESSING: lsvae_preprocess_ecg}


def ecg_preprocessing(name: str) -> Callable[..., Any]:
    """The preprocessing function saved under ``name``; :class:`ConfigError` listing the known names if none."""
    try:
        return ECG_PREPROCESSINGS[name]
    except KeyError:
        raise ConfigError(f"unknown ECG preprocessing {name!r}; known: {', '.join(sorted(ECG_PREPROCESSINGS))}") from None
