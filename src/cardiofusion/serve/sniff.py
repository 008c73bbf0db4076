"""What an uploaded file is, from its bytes (never from its name), and how to lay it out for the readers.

:func:`sniff` recognises DICOM (image or ECG waveform), PNG, JPEG, HDF5, NumPy ``.npy`` / ``.npz``,
MATLAB v5 ``.mat`` (PhysioNet/CinC signals), WFDB headers, delimited text (CSV/TSV) and ZIP archives of
a WFDB record.  :func:`layout_ecg` / :func:`layout_cxr` turn the uploads of one form field into the
files the library's readers expect (names chosen here, never taken from the client), or raise
:class:`UploadError` with the HTTP status and a message for the page.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

#: Kinds an ECG upload may be, and the file name each is written under for the readers.
ECG_KINDS = {"csv": "ecg.csv", "hdf5": "ecg.h5", "npy": "ecg.npy", "npz": "ecg.npz", "dicom-ecg": "ecg.dcm"}
#: Kinds an X-ray upload may be.
CXR_KINDS = {"dicom-image": "cxr.dcm", "png": "cxr.png", "jpeg": "cxr.jpg"}

KIND_NAMES = {"dicom-image": "a DICOM image", "dicom-ecg": "a DICOM ECG waveform", "png": "a PNG image",
              "jpeg": "a JPEG image", "hdf5": "an HDF5 file", "npy": "a NumPy array", "npz": "a NumPy archive",
              "mat": "a MATLAB signal file", "wfdb-header": "a WFDB header", "csv": "a delimited text table",
              "zip": "a ZIP archive", "binary": "an unrecognised binary file", "empty": "an empty file",
              "text": "an unrecognised text file"}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class UploadError(Exception):
    """An upload the service refuses: ``status`` (413, 415, 422) and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """One uploaded file, in memory. ``filename`` is the client's name: used only to pair WFDB
    header and signal files, never logged nor echoed."""

    data: bytes
    filename: str = ""


def _dicom_kind(data: bytes) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["WaveformSequence", "Modality"])
    except Exception:  # noqa: BLE001 - any parse failure means "not a usable DICOM"
        return "binary"
    return "dicom-ecg" if "WaveformSequence" in ds else "dicom-image"


def _text(data: bytes) -> str | None:
    head = data[:65536]
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        if len(data) > 65536:  # a multi-byte character cut by the sample
            try:
                return head[:-4].decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                return None
        return None


def _is_wfdb_header(lines: list[str]) -> bool:
    if not lines:
        return False
    first = lines[0].split()
    if len(first) < 2 or not _SAFE_NAME.match(first[0].split("/")[0]) or not first[1].isdigit():
        return False
    n_sig = int(first[1])
    if n_sig < 1 or len(lines) < 1 + n_sig:
        return False
    # signal lines: "<file> <format>[x...] ..." -- the format is a number, possibly with suffixes
    return all(len(line.split()) >= 2 and re.match(r"^\d+", line.split()[1]) for line in lines[1:1 + n_sig])


def _is_table(lines: list[str]) -> bool:
    rows = [line for line in lines[:50] if line.strip()]
    if len(rows) < 2:
        return False
    numeric_rows = 0
    for line in rows[1:]:
        tokens = [t for t in re.split(r"[,;\t ]+", line.strip()) if t]
        if tokens and sum(bool(_NUMBER.match(t)) for t in tokens) >= max(1, len(tokens) - 1):
            numeric_rows += 1
    return numeric_rows >= max(1, (len(rows) - 1) * 0.8)


def sniff(data: bytes) -> str:
    """The kind of an uploaded file from its content (see :data:`KIND_NAMES`)."""
    if not data:
        return "empty"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _dicom_kind(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if data.startswith(b"MATLAB 5.0 MAT-file"):
        return "mat"
    if data.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "binary"
        return "npz" if names and all(n.endswith(".npy") for n in names) else "zip"
    text = _text(data)
    if text is None:
        return "binary"
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if _is_wfdb_header(lines):
        return "wfdb-header"
    if _is_table(lines):
        return "csv"
    return "text"


def _header_files(data: bytes) -> tuple[str, list[str]]:
    """Record name and signal file names a WFDB header refers to (validated as plain file names)."""
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    first = lines[0].split()
    record = first[0]
    if "/" in record:
        raise UploadError(422, "multi-segment WFDB records are not supported; upload a single-segment record")
    n_sig = int(first[1])
    files = []
    for line in lines[1:1 + n_sig]:
        name = line.split()[0]
        if not _SAFE_NAME.match(name) or ".." in name:
            raise UploadError(422, "the WFDB header refers to a signal file with an unsafe name")
        if name not in files:
            files.append(name)
    if not _SAFE_NAME.match(record):
        raise UploadError(422, "the WFDB header has an unusable record name")
    return record, files


def _wfdb_layout(header: bytes, others: list[Upload], limit: int) -> dict[str, bytes]:
    record, wanted = _header_files(header)
    by_name = {_basename(u.filename): u for u in others}
    files = {f"{record}.hea": header}
    for name in wanted:
        match = by_name.get(name)
        if match is None and len(wanted) == 1 and len(others) == 1:
            match = others[0]  # one header, one signal file: pair them whatever the client called it
        if match is None:
            # the signal file's name comes from the header (file content): not echoed
            raise UploadError(422, "the WFDB header needs its signal file; select the header and the "
                                   "signal file together, or upload a ZIP of both")
        files[name] = match.data
    if sum(len(v) for v in files.values()) > limit:
        raise UploadError(413, "the ECG record is larger than the upload limit")
    return files


def _basename(name: str) -> str:
    return re.split(r"[\\/]", name or "")[-1]


def _unzip(data: bytes, limit: int) -> list[Upload]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir() and not _basename(m.filename).startswith(".")]
        if sum(m.file_size for m in members) > limit:
            raise UploadError(413, "the ZIP archive unpacks to more than the upload limit")
        if len(members) > 16:
            raise UploadError(422, "the ZIP archive holds too many files; put one ECG record in it")
        return [Upload(archive.read(m), _basename(m.filename)) for m in members]
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as e:
        raise UploadError(422, f"the ZIP archive cannot be read ({type(e).__name__})") from None


def layout_ecg(uploads: list[Upload], limit: int) -> dict[str, bytes]:
    """The files to write for the ECG readers (``{name: bytes}``; the first ``.hea``/``ecg.*`` is read)."""
    uploads = [u for u in uploads if u.data or u.filename]
    if len(uploads) == 1 and sniff(uploads[0].data) == "zip":
        uploads = _unzip(uploads[0].data, limit)
    kinds = [sniff(u.data) for u in uploads]
    headers = [u for u, k in zip(uploads, kinds) if k == "wfdb-header"]
    if len(headers) > 1:
        raise UploadError(422, "several WFDB headers uploaded; upload one ECG record at a time")
    if headers:
        return _wfdb_layout(headers[0].data, [u for u, k in zip(uploads, kinds) if k != "wfdb-header"], limit)
    if len(uploads) != 1:
        raise UploadError(422, "upload one ECG file (or a WFDB header with its signal file)")
    kind = kinds[0]
    if kind in ECG_KINDS:
        return {ECG_KINDS[kind]: uploads[0].data}
    if kind in CXR_KINDS:
        raise UploadError(415, f"the ECG upload is {KIND_NAMES[kind]}, not an ECG; put X-rays in the X-ray field")
    if kind in ("mat", "binary"):
        raise UploadError(415, f"the ECG upload is {KIND_NAMES[kind]}; a signal file (.dat/.mat) needs its WFDB "
                               f"header (.hea) uploaded with it")
    raise UploadError(415, f"the ECG upload is {KIND_NAMES.get(kind, kind)}; accepted: CSV, WFDB (.hea + .dat, or "
                           f"a ZIP of both), DICOM ECG, HDF5, NumPy")


def layout_cxr(upload: Upload) -> dict[str, bytes]:
    """The file to write for the X-ray reader."""
    kind = sniff(upload.data)
    if kind in CXR_KINDS:
        return {CXR_KINDS[kind]: upload.data}
    if kind in ECG_KINDS or kind == "wfdb-header":
        raise UploadError(415, f"the X-ray upload is {KIND_NAMES[kind]}, not an image; put ECGs in the ECG field")
    raise UploadError(415, f"the X-ray upload is {KIND_NAMES.get(kind, kind)}; accepted: DICOM, PNG, JPEG")


__all__ = ["CXR_KINDS", "ECG_KINDS", "Upload", "UploadError", "layout_cxr", "layout_ecg", "sniff"]
