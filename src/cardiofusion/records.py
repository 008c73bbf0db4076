"""The two record types every reader returns.

An ECG is never a bare array: :class:`ECGRecord` carries the signal in millivolts, channels first
``(leads, samples)``, its sampling rate, lead names in the canonical order and where it came from.
An X-ray is an 8-bit image that remembers its photometric interpretation and every step applied to
get there (:class:`CXRImage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Canonical 12-lead order used everywhere in the library.
CANONICAL_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
#: The six limb leads (e.g. a handheld device), in canonical order.
LIMB_LEADS: tuple[str, ...] = CANONICAL_LEADS[:6]


@dataclass
class ECGRecord:
    """One ECG recording.

    Attributes:
        signal: ``(leads, samples)`` float32 array in millivolts, rows ordered as ``leads``.
        fs: sampling rate in Hz.
        leads: lead names, a subsequence of :data:`CANONICAL_LEADS` in canonical order.
        source: path of the file read.
        format: reader that produced it (``csv``, ``wfdb``, ``cinc_mat``, ``dicom``, ``hdf5``, ``numpy``).
        units: always ``"mV"`` once read (readers convert).
        missing_leads: canonical leads absent from the file (explicitly reported, never silently zero).
        dropped_leads: non-standard channels present in the file and not kept.
        original_fs: sampling rate of the file before any resampling.
        meta: reader-specific extras (never patient identifiers).
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: str
    format: str
    units: str = "mV"
    missing_leads: tuple[str, ...] = ()
    dropped_leads: tuple[str, ...] = ()
    original_fs: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal, dtype=np.float32)
        self.leads = tuple(self.leads)
        if self.signal.ndim != 2 or self.signal.shape[0] != len(self.leads):
            raise ValueError(
                f"signal shape {self.signal.shape} does not match {len(self.leads)} leads"
            )
        if self.original_fs is None:
            self.original_fs = float(self.fs)

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.fs)

    def summary(self) -> dict[str, Any]:
        """What ``cardiofusion inspect`` prints for an ECG (exactly these keys)."""
        return {
            "kind": "ecg",
            "fs": float(self.fs),
            "leads": list(self.leads),
            "n_samples": self.n_samples,
            "duration_s": round(self.duration_s, 6),
            "units": self.units,
        }


@dataclass
class CXRImage:
    """One chest X-ray as an 8-bit greyscale image.

    Attributes:
        pixels: ``(H, W)`` uint8 array, 0 = black (photometric inversion already applied).
        source: path of the file read.
        format: ``dicom``, ``png`` or ``jpeg``.
        photometric: the file's photometric interpretation (``MONOCHROME1``, ``MONOCHROME2``, ``RGB``...).
        bits_stored: bits per stored sample in the file (8 for PNG/JPEG).
        steps: photometric steps applied, in order (e.g. ``("modality_lut", "voi_lut",
            "invert_monochrome1", "to_uint8")``).
        transfer_syntax: DICOM transfer syntax UID name, if any.
        meta: reader-specific extras (never patient identifiers).
    """

    pixels: np.ndarray
    source: str
    format: str
    photometric: str
    bits_stored: int
    steps: tuple[str, ...] = ()
    transfer_syntax: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels)
        if self.pixels.ndim != 2 or self.pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be a 2-D uint8 array, got {self.pixels.dtype} {self.pixels.shape}")
        self.steps = tuple(self.steps)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def summary(self) -> dict[str, Any]:
        """What ``cardiofusion inspect`` prints for an X-ray (exactly these keys)."""
        return {
            "kind": "cxr",
            "height": self.height,
            "width": self.width,
            "photometric": self.photometric,
            "bits_stored": int(self.bits_stored),
        }
