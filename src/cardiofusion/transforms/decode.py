"""Decoding one exam exactly as the cache stores it -- shared by the cache build and by prediction.

:class:`CacheConfig` says how a raw file becomes a model input (rate, length, baseline removal, image size);
:func:`decode_ecg` / :func:`decode_cxr` read one file through :mod:`cardiofusion.io` and apply it;
:func:`standardize_ecg_record` does the same for an in-memory record.  Nothing here writes a cache, so
prediction imports this module without the cache build (process pools, index tables).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..configfile import reject_unknown_fields
from ..errors import ConfigError, ReadError
from ..io.cxr import RESIZE_MODES
from ..records import CANONICAL_LEADS
from .quality import QualityConfig, check_ecg_quality

BASELINE_MODES = ("median", "highpass", "none", "lsvae_paper")
IMAGE_MODES = RESIZE_MODES  # the X-ray resize modes, one definition
ECG_UNITS = ("mV", "uV", "counts")


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
            (2nd order, ``sosfiltfilt``); ``none`` keeps the signal as read.  ``lsvae_paper``: paper 002's
            named preprocessing of each present lead (gaps interpolated, ``neurokit2.ecg_clean``, z-score
            per lead and record: :mod:`cardiofusion.transforms.vae_preprocess`); the cache then holds
            z-scores, not mV, and a record with a constant lead is refused as the paper drops it.
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
               resolution_uv: float | None = None, quality: QualityConfig | None = None,
               warnings: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Decode one ECG file exactly as the cache stores it.

    Returns ``(signal, lead_mask, n_samples, original_fs)``: ``signal`` is ``(12, T)`` float16 in mV at
    ``config.fs`` (baseline removed, cut to / zero-padded to ``T``), ``lead_mask`` the ``(12,)`` bool
    mask from :func:`cardiofusion.io.ecg.standardize`, ``n_samples`` the valid length (``<= T``).
    Per-exam ``fs``/``units``/``resolution_uv`` override the config's headerless-file defaults.
    The signal-quality check (:func:`cardiofusion.transforms.quality.check_ecg_quality`, thresholds
    ``quality``, default :class:`~cardiofusion.transforms.quality.QualityConfig`) runs on the record as
    read: a refused record raises, a flagged one appends its reasons to ``warnings`` when given.
    Raises :class:`ReadError` for an unreadable or unusable file.
    """
    from ..io import ecg as ecg_io

    options = {
        "fs": fs if fs is not None else config.ecg_fs,
        "units": units if units is not None else config.ecg_units,
        "resolution_uv": resolution_uv if resolution_uv is not None else config.ecg_resolution_uv,
    }
    record = ecg_io.read_ecg(path, **{k: v for k, v in options.items() if v is not None})
    original_fs = float(record.original_fs if record.original_fs is not None else record.fs)
    out, mask, n = standardize_ecg_record(record, config, path=path, quality=quality, warnings=warnings)
    return out, mask, n, original_fs


def standardize_ecg_record(record: Any, config: CacheConfig, *, path: str | None = None,
                           quality: QualityConfig | None = None, warnings: list[str] | None = None
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """The cache's ECG preprocessing after reading: an :class:`~cardiofusion.records.ECGRecord` ->
    ``(signal (12, T) float16 mV at config.fs, lead_mask (12,), n_samples)`` (what :func:`decode_ecg`
    stores; prediction on in-memory records uses it too, so both paths stay identical).

    First the signal-quality check (:mod:`cardiofusion.transforms.quality`) on the record at its own
    rate: a refusal raises :class:`ReadError` with the reason; a flag's reasons are appended to
    ``warnings`` (when a list is given).
    """
    from ..io import ecg as ecg_io

    path = path or getattr(record, "source", None) or "ECG record"
    signal_in = np.asarray(record.signal)
    if signal_in.ndim == 2 and signal_in.shape[1] > 0 and np.isfinite(signal_in).all():
        verdict = check_ecg_quality(record, quality)
        verdict.raise_if_refused(path)
        if warnings is not None:
            warnings.extend(verdict.warnings)
    record, mask = ecg_io.standardize(record, fs=config.fs, leads=CANONICAL_LEADS)
    signal = np.asarray(record.signal, dtype=np.float32)  # (12, n)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if signal.shape[0] != len(CANONICAL_LEADS) or mask.shape[0] != len(CANONICAL_LEADS):
        raise ReadError(path, f"standardize returned {signal.shape[0]} leads, expected {len(CANONICAL_LEADS)}")
    if not np.isfinite(signal).all():
        raise ReadError(path, "signal contains NaN or infinite values")
    if config.baseline == "lsvae_paper":  # paper 002: interpolate, ecg_clean, z-score each present lead
        from .vae_preprocess import lsvae_preprocess_ecg

        present = [lead for lead, m in zip(CANONICAL_LEADS, mask) if m]
        if present:
            signal[mask] = lsvae_preprocess_ecg(signal[mask], config.fs, leads=present, source=str(path))
    else:
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


def decode_cxr(path: str, config: CacheConfig, *, warnings: list[str] | None = None) -> np.ndarray:
    """Decode one X-ray exactly as the cache stores it: ``(S, S)`` uint8. Raises :class:`ReadError`.

    The reader's warnings (e.g. a colour image converted to grey) are appended to ``warnings`` when given.
    """
    from ..io import cxr as cxr_io

    image = cxr_io.read_cxr(path)
    if warnings is not None:
        warnings.extend(str(w) for w in image.meta.get("warnings", ()))
    pixels = np.asarray(cxr_io.resize_square(image.pixels, config.image_size, mode=config.image_mode))
    S = config.image_size
    if pixels.shape != (S, S) or pixels.dtype != np.uint8:
        raise ReadError(path, f"resize_square returned {pixels.dtype} {pixels.shape}, expected uint8 ({S}, {S})")
    return pixels


__all__ = ["BASELINE_MODES", "ECG_UNITS", "IMAGE_MODES", "CacheConfig", "clean_option", "decode_cxr",
           "decode_ecg", "standardize_ecg_record"]
