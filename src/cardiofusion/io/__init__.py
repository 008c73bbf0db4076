"""Readers for every supported ECG and chest X-ray file format.

``read(path)`` works out what a file is (by extension and, for DICOM, by content) and returns an
:class:`~cardiofusion.records.ECGRecord` or a :class:`~cardiofusion.records.CXRImage`.  All problems
raise :class:`~cardiofusion.errors.ReadError` naming the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ReadError
from ..records import CXRImage, ECGRecord

ECG_EXTENSIONS = (".csv", ".tsv", ".txt", ".hea", ".dat", ".mat", ".h5", ".hdf5", ".npy", ".npz")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DICOM_EXTENSIONS = (".dcm", ".dicom", "")


def detect_kind(path: str | os.PathLike) -> str:
    """Return ``"ecg"`` or ``"cxr"`` for a file, or raise :class:`ReadError`.

    DICOM files are told apart by content: a waveform (``WaveformSequence``) is an ECG, pixel data an image.
    """
    p = Path(path)
    from ._files import check_input_file

    check_input_file(p)  # never open a device or FIFO (it would hang)
    ext = p.suffix.lower()
    if ext in ECG_EXTENSIONS:
        return "ecg"
    if ext in IMAGE_EXTENSIONS:
        return "cxr"
    if ext in DICOM_EXTENSIONS or _looks_like_dicom(p):
        import pydicom

        try:
            ds = pydicom.dcmread(p, stop_before_pixels=False, specific_tags=["Modality", "WaveformSequence", "PixelData", "SOPClassUID"])
        except Exception as e:  # pydicom raises many types
            raise ReadError(p, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
        if "WaveformSequence" in ds:
            return "ecg"
        return "cxr"
    raise ReadError(p, f"unknown file extension {ext!r} (ECG: {', '.join(ECG_EXTENSIONS)}; "
                       f"X-ray: .dcm, {', '.join(IMAGE_EXTENSIONS)})")


def _looks_like_dicom(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def read(path: str | os.PathLike, **options: Any) -> ECGRecord | CXRImage:
    """Read any supported file; ``options`` go to the ECG reader (e.g. ``fs``, ``units``)."""
    kind = detect_kind(path)
    if kind == "ecg":
        from .ecg import read_ecg

        return read_ecg(path, **options)
    from .cxr import read_cxr

    return read_cxr(path)


__all__ = ["read", "detect_kind", "ECG_EXTENSIONS", "IMAGE_EXTENSIONS"]
