"""What the web service says when a file cannot be used: fixed messages, never the file's own values.

The readers' :class:`~cardiofusion.errors.ReadError` reasons are written for the command line, where the
user owns the file, and often quote it: a DICOM ``Modality`` or ``PhotometricInterpretation``, a CSV cell
or column name, a DICOM ECG channel label, an HDF5 dataset or ``.npz`` entry name, a WFDB signal file
name, or a decoder's own exception text (which can quote any element value).  Any of these can carry a
patient identifier, so none of them may reach a response.

:func:`public_reason` maps every known reason (by its fixed leading words) to a fixed sentence written
here; no part of the reader's text is copied into it, not even numbers.  A reason it does not know gets a
generic sentence.  The only values that can appear in a service message are the ones this package writes
itself: the upload's kind as recognised from its bytes (``"a PNG image"``), the size limit, the request's
own size, and a form field's value typed by the user (``ecg_fs``).
"""

from __future__ import annotations

import re

from ..io.ecg import MIN_DURATION_S

#: (pattern on the reader's reason, fixed public message); the first match wins, so specific
#: patterns come before general ones.  Patterns only test the reader's fixed words.
_READER_REASONS: tuple[tuple[str, str], ...] = (
    # -- X-ray: DICOM --------------------------------------------------------------------------------
    (r"modality .* is not a radiograph", "the DICOM modality is not a radiograph (accepted: CR, DX, RG, OT)"),
    (r"DICOM waveform \(e\.g\. an ECG\), not an image",
     "a DICOM waveform (e.g. an ECG), not an image; put ECGs in the ECG field"),
    (r"DICOM file has no PixelData", "the DICOM file has no pixel data (not an image)"),
    (r"DICOM image without PhotometricInterpretation", "the DICOM image has no Photometric Interpretation"),
    (r"unsupported photometric interpretation",
     "unsupported DICOM Photometric Interpretation (accepted: MONOCHROME1, MONOCHROME2 and colour images)"),
    (r"unsupported colour pixel layout", "unsupported colour pixel layout in the DICOM image"),
    (r"DICOM image without BitsStored", "the DICOM image has no Bits Stored / Bits Allocated"),
    (r"cannot decode pixel data",
     "the DICOM pixel data cannot be decoded (unsupported transfer syntax, or truncated or corrupt)"),
    (r"truncated DICOM file", "truncated DICOM file"),
    (r"not a readable DICOM file", "not a readable DICOM file (truncated or corrupt)"),
    (r"not a DICOM file", "not a readable DICOM file (no DICOM preamble and no image attributes)"),
    (r"RescaleSlope is 0", "the DICOM Rescale Slope is 0 (every pixel would be equal)"),
    (r"VOI LUT is constant", "the DICOM VOI LUT is constant"),
    (r"unsupported VOI LUT Function", "unsupported DICOM VOI LUT Function"),
    (r"invalid window width", "invalid DICOM window width"),
    (r"window output range is empty", "the DICOM window's output range is empty"),
    # -- X-ray: any image ----------------------------------------------------------------------------
    (r"image too large to decode", "the image is too large to decode"),
    (r"could not decode image", "the image could not be decoded (corrupt or unsupported encoding)"),
    (r"not a recognised image", "not a recognised image (expected DICOM, PNG or JPEG)"),
    (r"truncated or corrupt image", "truncated or corrupt image"),
    (r"unsupported image format", "unsupported image format (expected DICOM, PNG or JPEG)"),
    (r"image has zero size", "the image has zero size"),
    (r"unexpected pixel array shape", "unexpected pixel array shape"),
    (r".* contain non-finite values", "the image contains non-finite pixel values"),
    (r"constant image", "the image is blank (every pixel has the same value)"),
    # -- ECG: WFDB / CinC ----------------------------------------------------------------------------
    (r"unreadable WFDB header", "unreadable WFDB header"),
    (r"WFDB header .* declares no signals", "the WFDB header declares no signals"),
    (r"WFDB header .* not found", "the WFDB header was not found; upload it with the signal file"),
    (r"signal file .* named in the header is missing",
     "the signal file named in the WFDB header is missing; select the header and the signal file together"),
    (r"truncated signal file", "truncated WFDB signal file (shorter than its header says)"),
    (r"unknown units .* for lead", "unknown signal units for a lead in the WFDB header"),
    (r"corrupt WFDB record", "corrupt WFDB record"),
    (r"WFDB record holds no signal", "the WFDB record holds no signal"),
    (r"corrupt \.mat file", "corrupt .mat signal file"),
    (r"\.mat file .* has no 'val' matrix", "the .mat signal file has no 'val' matrix"),
    (r"\.mat 'val' has shape", "the .mat signal does not match the number of signals in its header"),
    (r"truncated \.mat", "truncated .mat signal file (shorter than its header says)"),
    # -- ECG: DICOM waveform -------------------------------------------------------------------------
    (r"DICOM file has no waveform", "the DICOM file has no waveform (not an ECG)"),
    (r"DICOM waveform has no channel definitions", "the DICOM waveform has no channel definitions"),
    (r"corrupt DICOM waveform data", "corrupt DICOM waveform data"),
    (r"DICOM waveform data shape", "the DICOM waveform data do not match its channel definitions"),
    (r"unknown units.* for DICOM channel", "unknown signal units for a lead of the DICOM waveform"),
    (r"DICOM waveform has no sampling frequency", "the DICOM waveform has no sampling frequency"),
    # -- ECG: CSV, HDF5, NumPy -----------------------------------------------------------------------
    (r"empty CSV file", "empty CSV file"),
    (r"CSV file has a header but no data rows", "the CSV file has a header but no data rows"),
    (r"unparsable CSV: non-numeric value", "unparsable CSV: a data row holds a non-numeric value"),
    (r"unparsable CSV", "unparsable CSV"),
    (r"not a readable HDF5 file", "not a readable HDF5 file"),
    (r"cannot find the ECG dataset", "cannot find the ECG dataset in the HDF5 file"),
    (r"corrupt HDF5 dataset", "corrupt HDF5 dataset"),
    (r"not a readable NumPy file", "not a readable NumPy file"),
    (r"cannot find the ECG array in \.npz", "cannot find the ECG array in the NumPy archive"),
    (r"corrupt \.npz entry", "corrupt NumPy archive entry"),
    (r"array dtype .* is not real numeric", "the array is not real numeric"),
    (r"expected a 2-D signal array", "expected a 2-D signal array (leads x samples)"),
    (r"cannot tell leads from samples|array shape .* has no axis of",
     "cannot tell which axis of the array holds the leads (expected 12 leads)"),
    (r"\d+ unlabelled channels",
     "the channels are not labelled and there are not 12 of them; label the columns with lead names"),
    # -- ECG: any format -----------------------------------------------------------------------------
    (r"file too large to read", "the ECG file is too large to read"),
    (r"empty file", "empty file"),
    (r"invalid resolution_uv", "invalid ECG resolution (microvolts per count, > 0)"),
    (r"unknown units", "unknown signal units (expected mV, uV, V or counts)"),
    (r"invalid sampling rate", "invalid sampling rate (give ECG sampling rate, Hz, > 0)"),
    (r"no standard ECG lead among channels",
     "no standard ECG lead (I, II, III, aVR, aVL, aVF, V1-V6) among the file's channels"),
    (r"decoded signal has shape", "the decoded signal does not match its channels"),
    (r"signal contains .*non-finite|signal contains NaN", "the signal contains non-finite values (NaN/inf)"),
    (r"signal too short", f"the signal is too short (minimum {MIN_DURATION_S:g} s)"),
    (r"flat signal", "flat signal: every lead is constant"),
    (r"signal has no samples", "the signal has no samples"),
    (r"amplitudes exceed the float16 range",
     "amplitudes are far too large; check the units / resolution (ECG units, ECG resolution)"),
    # -- signal-quality check (transforms/quality.py) and colour X-rays (io/cxr.py) ---------------------
    (r"amplitudes look like", "the QRS amplitudes are implausible for an ECG in millivolts (far too large or "
                              "too small); check the units / resolution (ECG units, ECG resolution)"),
    (r"heart rate \S+ bpm at the stated",
     "the heart rate at the stated sampling rate is implausible; check the ECG sampling rate"),
    (r"most leads are flat or clipped", "most leads are flat or clipped (electrodes off or a saturated recording)"),
    (r"fewer than \d+ heart beats detected", "too few heart beats detected to check the ECG"),
    (r"colour image, not a radiograph", "a colour image, not a radiograph (a photograph or coloured picture?)"),
)
_COMPILED = tuple((re.compile(pattern), message) for pattern, message in _READER_REASONS)

#: Whole messages of non-reader errors (``ConfigError``) that :meth:`Screener.prepare` raises from its
#: own fixed text and the bundle's configuration: passed through as they are.  Anything else is withheld.
_VERBATIM = (re.compile(r"give an ECG, an X-ray or both"),
             re.compile(r"this model \([\w.+-]+\) needs (an ECG|an X-ray)( and (an ECG|an X-ray))?"))

#: What the service says for a reason it does not know (the reader's text is withheld).
WITHHELD = "cannot be read (details withheld because they may quote the file; `cardiofusion inspect` shows them)"


def public_reason(reason: str) -> str | None:
    """The fixed public message for a reader's reason, or ``None`` if the reason is not a known one."""
    for pattern, message in _COMPILED:
        if pattern.match(reason):
            return message
    return None


def public_read_error(reason: str, what: str) -> str:
    """``"The X-ray file: <fixed message>"`` for a reader's reason (a generic sentence if unknown)."""
    message = public_reason(reason)
    return f"{what}: {message}" if message is not None else f"{what} {WITHHELD}"


def public_error(message: str) -> str:
    """A non-reader library error as the service may show it: verbatim if it is one of the known fixed
    messages, else a generic sentence."""
    if any(p.fullmatch(message) for p in _VERBATIM):
        return message
    return f"the upload {WITHHELD}"


__all__ = ["WITHHELD", "public_error", "public_read_error", "public_reason"]
