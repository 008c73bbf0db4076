"""One function per ECG file format, each returning a :class:`RawECG` in millivolts.

The readers only decode: they convert to mV and name the channels as the file does. Mapping names to
canonical leads, reordering, dropping extra channels and validating the signal happen once, in
:mod:`cardiofusion.io.ecg`. Every problem is raised as :class:`~cardiofusion.errors.ReadError`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ReadError
from ..records import CANONICAL_LEADS
from ._ecg_leads import canonical_lead_name, dicom_lead_name
from ._files import check_decoded_bytes, check_input_file

#: Sampling rate (Hz) assumed for files that carry none (CSV, HDF5 without attribute, NumPy).
DEFAULT_FS = 500.0
#: Microvolts per integer count for ``units="counts"`` (the paper's hospital export: 1.25 uV).
DEFAULT_RESOLUTION_UV = 1.25

# Unit spelling (lower case) -> millivolts per unit.  "counts" is handled separately.
_MV_PER_UNIT: dict[str, float] = {
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
    "nv": 1e-6, "nanovolt": 1e-6,
}
_COUNT_UNITS = ("counts", "count", "adu")

# Bytes per sample of the WFDB storage formats, for the truncation check.
_WFDB_BYTES_PER_SAMPLE: dict[str, float] = {
    "8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3, "311": 4 / 3,
}


@dataclass
class RawECG:
    """What a format reader decoded, before lead mapping and validation."""

    signal: np.ndarray  # (channels, samples) float64, mV
    names: list[str]  # channel labels as written in the file
    fs: float
    format: str
    meta: dict[str, Any] = field(default_factory=dict)


def mv_per_unit(path: Path, units: str | None, resolution_uv: float | None) -> float:
    """Millivolts per stored unit for ``units`` (``mV``, ``uV``, ``V`` or ``counts``)."""
    key = str(units).strip().lower() if units is not None else ""
    if key in _MV_PER_UNIT:
        return _MV_PER_UNIT[key]
    if key in _COUNT_UNITS:
        res = DEFAULT_RESOLUTION_UV if resolution_uv is None else float(resolution_uv)
        if not np.isfinite(res) or res <= 0:
            raise ReadError(path, f"invalid resolution_uv={resolution_uv!r} (microvolts per count, > 0)")
        return res * 1e-3
    raise ReadError(path, f"unknown units {units!r} (expected mV, uV, V or counts)")


def _check_fs(path: Path, fs: float | None, default: float = DEFAULT_FS) -> float:
    value = default if fs is None else fs
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ReadError(path, f"invalid sampling rate fs={fs!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ReadError(path, f"invalid sampling rate fs={fs!r} (must be > 0 Hz)")
    return value


def _default_names(path: Path, n_channels: int, lead_names: Sequence[str] | None) -> list[str]:
    """Channel names for a file without labels: ``lead_names``, or the canonical 12 for 12 channels."""
    if lead_names is not None:
        if len(lead_names) != n_channels:
            raise ReadError(path, f"lead_names has {len(lead_names)} names but the file has {n_channels} channels")
        return [str(n) for n in lead_names]
    if n_channels == len(CANONICAL_LEADS):
        return list(CANONICAL_LEADS)
    raise ReadError(path, f"{n_channels} unlabelled channels: pass lead_names "
                          "(only 12 channels are taken in canonical order)")


def _orient(path: Path, array: np.ndarray, n_leads: int | None) -> np.ndarray:
    """Return a 2-D array as ``(channels, samples)``, deciding the axis by the lead count."""
    if array.ndim != 2:
        raise ReadError(path, f"expected a 2-D signal array, got shape {array.shape}")
    rows, cols = array.shape
    n = n_leads if n_leads is not None else len(CANONICAL_LEADS)
    if rows == n and cols != n:
        return array
    if cols == n and rows != n:
        return array.T
    if rows == n and cols == n:
        raise ReadError(path, f"cannot tell leads from samples in a {array.shape} array")
    if n_leads is None and min(rows, cols) <= 16 and rows != cols:
        # not 12 channels and no names: the short axis is the lead axis (named later or refused)
        return array if rows < cols else array.T
    raise ReadError(path, f"array shape {array.shape} has no axis of {n} leads")


# --------------------------------------------------------------------------------------------- CSV

_TIME_NAMES = re.compile(r"^(t|time.*|timestamps?|index|idx|samples?|sample_?(no|nr|num|number|index)|"
                         r"ms|s|sec|secs|seconds)$", re.I)
_TIME_UNIT = re.compile(r"[\s_\-]*[(\[]?\s*(ms|s|sec)\s*[)\]]?\s*$", re.I)
_HEADER_UNIT = re.compile(r"[\s_\-]*[(\[]?\s*(uv|µv|μv|mv)\s*[)\]]?\s*$", re.I)


def _sniff_delimiter(sample: str) -> str:
    """The delimiter (tab, ';' or ',') found the same non-zero number of times on every line.

    Tried in that order because ';' exports often use decimal commas.
    """
    lines = [ln for ln in sample.splitlines() if ln.strip()][:50]
    if len(lines) > 2:
        lines = lines[:-1]  # the sample may cut the last line short
    for delim in ("\t", ";", ","):
        counts = {ln.count(delim) for ln in lines}
        if len(counts) == 1 and counts.pop() > 0:
            return delim
    totals = {d: sum(ln.count(d) for ln in lines) for d in ("\t", ";", ",")}
    best = max(totals, key=totals.get)
    return best if totals[best] else ","


def _is_number(token: str) -> bool:
    try:
        float(token.strip().replace(",", "."))
        return True
    except ValueError:
        return False


def _is_regular_index(values: np.ndarray) -> bool:
    """Strictly increasing at a constant step: a sample index or a time stamp column."""
    if values.size < 3 or not np.all(np.isfinite(values)):
        return False
    steps = np.diff(values)
    return bool(np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-3))


def _looks_like_time(name: str, values: np.ndarray, position: int) -> bool:
    clean = name.strip()
    if clean.lower() not in ("ms", "s", "sec"):
        clean = _TIME_UNIT.sub("", clean).strip()
    if _TIME_NAMES.match(clean):
        return True
    unnamed = clean == "" or clean.lower().startswith("unnamed")  # pandas' name for a blank header cell
    return position == 0 and (unnamed or _is_regular_index(values))


def read_csv(path: Path, *, fs: float | None, units: str | None, resolution_uv: float | None,
             lead_names: Sequence[str] | None) -> RawECG:
    """Hospital CSV export: one column per lead, optional header and time/index column."""
    import pandas as pd

    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.strip():
        raise ReadError(path, "empty CSV file")
    sample = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    delimiter = _sniff_delimiter(sample)
    first = next(ln for ln in sample.splitlines() if ln.strip())
    has_header = not all(_is_number(tok) for tok in first.split(delimiter) if tok.strip())
    body = sample.splitlines()[1:6] if has_header else sample.splitlines()[:5]
    decimal = "," if delimiter == ";" and any(re.search(r"\d,\d", ln) for ln in body) else "."
    try:
        df = pd.read_csv(path, sep=delimiter, header=0 if has_header else None, decimal=decimal,
                         skipinitialspace=True, encoding="utf-8-sig", engine="c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ReadError(path, f"unparsable CSV ({type(e).__name__}: {str(e).strip()})") from None
    if df.shape[0] == 0:
        raise ReadError(path, "CSV file has a header but no data rows")
    columns = [str(c).strip() for c in df.columns] if has_header else [f"column {i}" for i in range(df.shape[1])]
    for i, col in enumerate(df.columns):
        if not pd.api.types.is_numeric_dtype(df[col]):  # object (pandas < 3) or the str dtype (pandas >= 3)
            bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise ReadError(path, f"unparsable CSV: non-numeric value {df[col].iloc[row]!r} in column "
                                      f"{columns[i]!r} (data row {row + 1})")
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64).T  # (columns, rows)

    keep = list(range(len(columns)))
    time_column = None
    if has_header:
        for i in list(keep):
            if canonical_lead_name(columns[i]) is None and _looks_like_time(columns[i], values[i], i):
                keep.remove(i)
                time_column = columns[i]
                break
        names = [columns[i] for i in keep]
        if lead_names is not None:
            names = _default_names(path, len(keep), lead_names)
    else:
        n = values.shape[0]
        expected = len(lead_names) if lead_names is not None else len(CANONICAL_LEADS)
        if n == expected + 1 and _is_regular_index(values[0]):
            keep = keep[1:]
            time_column = "column 0"
        names = _default_names(path, len(keep), lead_names)

    unit_source = "option"
    if units is None:
        suffixes = {"mV" if m.group(1).lower() == "mv" else "uV"
                    for m in (_HEADER_UNIT.search(n) for n in names) if m}
        units, unit_source = ("uV", "default")
        if len(suffixes) == 1 and all(_HEADER_UNIT.search(n) for n in names if canonical_lead_name(n)):
            units, unit_source = suffixes.pop(), "header"
    factor = mv_per_unit(path, units, resolution_uv)
    meta = {"delimiter": delimiter, "decimal": decimal, "has_header": has_header, "time_column": time_column,
            "file_units": units, "units_from": unit_source}
    if str(units).lower() in _COUNT_UNITS:
        meta["resolution_uv"] = DEFAULT_RESOLUTION_UV if resolution_uv is None else float(resolution_uv)
    return RawECG(values[keep] * factor, names, _check_fs(path, fs), "csv", meta)


# -------------------------------------------------------------------------------------------- WFDB

def _wfdb_header(path: Path):
    import wfdb

    record = path.with_suffix("")
    hea = record.with_name(record.name + ".hea")
    if not hea.exists():
        raise ReadError(path, f"WFDB header {hea.name} not found beside the signal file")
    if hea != path:
        check_input_file(hea, what=f"WFDB header {hea.name}")
    try:
        header = wfdb.rdheader(str(record))
    except Exception as e:  # wfdb raises bare ValueError/IndexError on a malformed header
        raise ReadError(path, f"unreadable WFDB header {hea.name} ({type(e).__name__}: {e})") from None
    if not getattr(header, "n_sig", 0):
        raise ReadError(path, f"WFDB header {hea.name} declares no signals")
    for name in dict.fromkeys(getattr(header, "file_name", None) or []):  # never open a device or FIFO
        sig_file = record.parent / str(name)
        if sig_file.exists() and sig_file != path:
            check_input_file(sig_file, what=f"signal file {name}")
    return record, header


def header_signal_files(path: Path) -> list[str]:
    """Signal file names a WFDB header refers to (used to tell CinC ``.mat`` from ``.dat``)."""
    _, header = _wfdb_header(path)
    return list(getattr(header, "file_name", None) or [])


def _check_wfdb_sizes(path: Path, record: Path, header) -> None:
    """Refuse signal files shorter than the header says (wfdb itself fails with a reshape error)."""
    if not header.sig_len or getattr(header, "seg_name", None):
        return
    per_file: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        per_file.setdefault(name, []).append(i)
    for name, chans in per_file.items():
        sig_file = record.parent / name
        if not sig_file.is_file():
            raise ReadError(path, f"signal file {name} named in the header is missing")
        fmt = str(header.fmt[chans[0]])
        if fmt not in _WFDB_BYTES_PER_SAMPLE:
            continue
        offset = (header.byte_offset[chans[0]] or 0) if header.byte_offset else 0
        expected = int(np.ceil(offset + header.sig_len * len(chans) * _WFDB_BYTES_PER_SAMPLE[fmt]))
        actual = sig_file.stat().st_size
        if actual < expected:
            raise ReadError(path, f"truncated signal file {name}: {actual} bytes, header implies {expected} "
                                  f"({header.sig_len} samples x {len(chans)} channels, format {fmt})")


def _unit_factors(path: Path, names: Sequence[str], units: Sequence[str | None]) -> np.ndarray:
    """mV per physical unit for each channel; unknown units only matter for lead channels."""
    factors = np.ones(len(names))
    for i, (name, unit) in enumerate(zip(names, units)):
        key = (unit or "mV").strip().lower()
        if key in _MV_PER_UNIT:
            factors[i] = _MV_PER_UNIT[key]
        elif canonical_lead_name(name) is not None:
            raise ReadError(path, f"unknown units {unit!r} for lead {name}")
    return factors


def read_wfdb(path: Path) -> RawECG:
    """WFDB record (``.hea`` + ``.dat``; PTB-XL, MIMIC-IV-ECG) via ``wfdb.rdrecord``; units from the header."""
    import wfdb

    record, header = _wfdb_header(path)
    _check_wfdb_sizes(path, record, header)
    try:
        rec = wfdb.rdrecord(str(record), physical=True, return_res=64)
    except Exception as e:
        raise ReadError(path, f"corrupt WFDB record ({type(e).__name__}: {e})") from None
    if rec.p_signal is None or rec.p_signal.ndim != 2:
        raise ReadError(path, "WFDB record holds no signal")
    names = [str(n) for n in rec.sig_name]
    factors = _unit_factors(path, names, rec.units)
    signal = rec.p_signal.T * factors[:, None]  # (channels, samples) mV
    meta = {"record_name": rec.record_name, "file_units": list(rec.units), "wfdb_fmt": list(rec.fmt or [])}
    return RawECG(signal, names, float(rec.fs), "wfdb", meta)


def read_cinc_mat(path: Path) -> RawECG:
    """PhysioNet/CinC ``.mat`` + ``.hea``: ``val`` from ``scipy.io.loadmat``, gain/baseline/units from the header.

    wfdb can read these directly (format ``16+24``), but :func:`scipy.io.loadmat` also validates the
    MAT structure, so garbage or truncated files are refused instead of decoded as noise.
    """
    import scipy.io

    record, header = _wfdb_header(path)
    mat = record.parent / header.file_name[0]
    if not mat.is_file():
        raise ReadError(path, f"signal file {mat.name} named in the header is missing")
    try:
        val = scipy.io.loadmat(str(mat), variable_names=["val"]).get("val")
    except Exception as e:
        raise ReadError(path, f"corrupt .mat file {mat.name} ({type(e).__name__}: {e})") from None
    if val is None:
        raise ReadError(path, f".mat file {mat.name} has no 'val' matrix")
    val = np.asarray(val)
    if val.ndim != 2 or val.shape[0] != header.n_sig:
        raise ReadError(path, f".mat 'val' has shape {val.shape}, header declares {header.n_sig} signals")
    if header.sig_len and val.shape[1] != header.sig_len:
        raise ReadError(path, f"truncated .mat: {val.shape[1]} samples, header declares {header.sig_len}")
    gain = np.array([g if g else 200.0 for g in header.adc_gain], dtype=np.float64)  # WFDB default 200/mV
    baseline = np.array(header.baseline if header.baseline else [0] * header.n_sig, dtype=np.float64)
    signal = (val.astype(np.float64) - baseline[:, None]) / gain[:, None]
    if str(header.fmt[0]) == "16":
        signal[val == -32768] = np.nan  # WFDB "invalid sample" marker for 16-bit data
    names = [str(n) for n in header.sig_name]
    signal *= _unit_factors(path, names, header.units)[:, None]
    dx = [c.split(":", 1)[1].strip() for c in (header.comments or []) if c.lower().startswith("dx:")]
    meta = {"record_name": header.record_name, "file_units": list(header.units),
            "dx_codes": dx[0].split(",") if dx and dx[0] else []}
    return RawECG(signal, names, float(header.fs), "cinc_mat", meta)


# ------------------------------------------------------------------------------------------- DICOM

def _dicom_units(item) -> str | None:
    seq = item.get("ChannelSensitivityUnitsSequence")
    if not seq:
        return None
    code = seq[0]
    value = str(code.get("CodeValue", "") or "").strip()
    meaning = str(code.get("CodeMeaning", "") or "").strip()
    for unit in (value, meaning):
        if unit.lower() in _MV_PER_UNIT:
            return unit
    return value or meaning or None


def read_dicom(path: Path) -> RawECG:
    """DICOM waveform (12-lead ECG storage): the 12-lead group's channels via ``ds.waveform_array``."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on odd-but-readable encodings
            ds = pydicom.dcmread(path)
    except Exception as e:
        raise ReadError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    groups = ds.get("WaveformSequence")
    if not groups:
        raise ReadError(path, "DICOM file has no waveform (no WaveformSequence)")

    def describe(item) -> tuple[list[str], list[str | None]]:
        labels, leads = [], []
        for ch in item.get("ChannelDefinitionSequence", []):
            src = (ch.get("ChannelSourceSequence") or [None])[0]
            meaning = str(src.get("CodeMeaning", "")) if src is not None else ""
            code = str(src.get("CodeValue", "")) if src is not None else ""
            scheme = str(src.get("CodingSchemeDesignator", "")) if src is not None else ""
            label = str(ch.get("ChannelLabel", "") or "") or meaning or code
            lead = dicom_lead_name(code, scheme, meaning) or canonical_lead_name(ch.get("ChannelLabel"))
            labels.append(label)
            leads.append(lead)
        return labels, leads

    def score(i: int) -> tuple:
        item = groups[i]
        _, leads = describe(item)
        n_leads = len({lead for lead in leads if lead})
        original = str(item.get("WaveformOriginality", "")).upper() == "ORIGINAL"
        fs = float(item.get("SamplingFrequency", 0) or 0)
        n = int(item.get("NumberOfWaveformSamples", 0) or 0)
        return (n_leads, original, n / fs if fs else 0.0)

    best = max(range(len(groups)), key=score)
    item = groups[best]
    labels, leads = describe(item)
    if not labels:
        raise ReadError(path, "DICOM waveform has no channel definitions")
    try:
        data = ds.waveform_array(best)  # (samples, channels), scaled by ChannelSensitivity
    except Exception as e:
        raise ReadError(path, f"corrupt DICOM waveform data ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != len(labels):
        raise ReadError(path, f"DICOM waveform data shape {data.shape} does not match {len(labels)} channels")
    factors = np.ones(len(labels))
    for i, ch in enumerate(item.ChannelDefinitionSequence):
        unit = _dicom_units(ch)
        key = (unit or "").lower()
        if key in _MV_PER_UNIT:
            factors[i] = _MV_PER_UNIT[key]
        elif leads[i] is not None:
            what = f"unknown units {unit!r}" if unit else "unknown units (no ChannelSensitivityUnitsSequence)"
            raise ReadError(path, f"{what} for DICOM channel {labels[i]!r}")
    fs = float(item.get("SamplingFrequency", 0) or 0)
    if fs <= 0:
        raise ReadError(path, "DICOM waveform has no sampling frequency")
    # name channels by their canonical lead when recognised, else by their label (dropped later)
    names = [lead or label for lead, label in zip(leads, labels)]
    meta = {
        "sop_class": getattr(ds.get("SOPClassUID"), "name", str(ds.get("SOPClassUID", ""))),
        "waveform_group": best,
        "n_waveform_groups": len(groups),
        "group_label": str(item.get("MultiplexGroupLabel", "")),
        "originality": str(item.get("WaveformOriginality", "")),
        "channel_labels": labels,
    }
    return RawECG(data.T.astype(np.float64) * factors[:, None], names, fs, "dicom", meta)


# -------------------------------------------------------------------------------------------- HDF5

_H5_DATASETS = ("ecg", "signal", "signals", "data", "val", "waveform", "x")
_FS_ATTRS = ("fs", "sampling_rate", "sampling_frequency", "frequency", "sample_rate")
_LEAD_ATTRS = ("leads", "lead_names", "sig_name", "channels", "channel_names")


def _attr(objs, names):
    for obj in objs:
        for name in names:
            if name in obj.attrs:
                return obj.attrs[name]
    return None


def read_hdf5(path: Path, *, fs: float | None, units: str | None, resolution_uv: float | None,
              lead_names: Sequence[str] | None) -> RawECG:
    """SPH-style HDF5: dataset ``ecg`` of shape ``(12, samples)`` in mV at 500 Hz, no attributes.

    Dataset: ``ecg`` (else ``signal``/``data``/``val``..., else the only 2-D dataset). Orientation by
    the lead axis. Sampling rate from an ``fs``-like attribute, else ``fs``, else 500 Hz; units from a
    ``units`` attribute, else ``units``, else mV; lead names from a ``leads`` attribute, else
    ``lead_names``, else canonical order for 12 channels.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ReadError(path, f"not a readable HDF5 file ({type(e).__name__}: {e})") from None
    with f:
        name = next((n for n in _H5_DATASETS if n in f and isinstance(f[n], h5py.Dataset)), None)
        if name is None:
            found: list[str] = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 2 else None)
            if len(found) != 1:
                raise ReadError(path, f"cannot find the ECG dataset (2-D datasets: {found or 'none'})")
            name = found[0]
        dset = f[name]
        check_decoded_bytes(path, int(dset.size) * int(dset.dtype.itemsize), f"HDF5 dataset {name!r}")
        try:
            array = np.asarray(dset[()], dtype=np.float64)
        except Exception as e:
            raise ReadError(path, f"corrupt HDF5 dataset {name!r} ({type(e).__name__}: {e})") from None
        attr_fs = _attr((dset, f), _FS_ATTRS)
        attr_units = _attr((dset, f), ("units", "unit"))
        attr_leads = _attr((dset, f), _LEAD_ATTRS)
    if attr_leads is not None:
        attr_leads = [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(attr_leads)]
    names_given = lead_names if lead_names is not None else attr_leads
    array = _orient(path, array, len(names_given) if names_given is not None else None)
    names = _default_names(path, array.shape[0], names_given)
    if attr_units is not None:
        units = attr_units.decode() if isinstance(attr_units, bytes) else str(attr_units)
    units = units or "mV"
    rate = _check_fs(path, float(np.asarray(attr_fs).ravel()[0]) if attr_fs is not None else fs)
    meta = {"dataset": name, "file_units": units, "fs_from": "attribute" if attr_fs is not None else
            ("option" if fs is not None else "default")}
    return RawECG(array * mv_per_unit(path, units, resolution_uv), names, rate, "hdf5", meta)


# ------------------------------------------------------------------------------------------- NumPy

_NPZ_KEYS = ("signal", "ecg", "data", "x", "val", "arr_0")


def read_numpy(path: Path, *, fs: float | None, units: str | None, resolution_uv: float | None,
               lead_names: Sequence[str] | None) -> RawECG:
    """NumPy ``.npy``/``.npz``: ``(leads, samples)`` or ``(samples, leads)``, told apart by the lead axis.

    A bare array carries neither rate nor units: ``fs`` defaults to 500 Hz and ``units`` to mV. An
    ``.npz`` may hold ``signal`` (or ``ecg``/``data``/the only array) plus optional ``fs``, ``units``
    and ``leads`` entries, which the options override.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ReadError(path, f"not a readable NumPy file ({type(e).__name__}: {e})") from None
    extras: dict[str, Any] = {}
    key = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            files = list(loaded.files)
            for info in loaded.zip.infolist():  # a zip bomb is refused before anything is decompressed
                check_decoded_bytes(path, info.file_size, f".npz entry {info.filename!r}")
            key = next((k for k in _NPZ_KEYS if k in files), None)
            if key is None:
                arrays = [k for k in files if loaded[k].ndim == 2]
                if len(arrays) != 1:
                    raise ReadError(path, f"cannot find the ECG array in .npz (entries: {files})")
                key = arrays[0]
            try:
                array = np.asarray(loaded[key])
                for k in ("fs", "units", "leads"):
                    if k in files:
                        extras[k] = loaded[k]
            except Exception as e:
                raise ReadError(path, f"corrupt .npz entry ({type(e).__name__}: {e})") from None
    else:
        array = np.asarray(loaded)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ReadError(path, f"array dtype {array.dtype} is not real numeric")
    if fs is None and "fs" in extras:
        fs = float(np.asarray(extras["fs"]).ravel()[0])
    if units is None and "units" in extras:
        units = str(np.asarray(extras["units"]).ravel()[0])
    if lead_names is None and "leads" in extras:
        lead_names = [str(x) for x in np.asarray(extras["leads"]).ravel()]
    array = _orient(path, array.astype(np.float64), len(lead_names) if lead_names is not None else None)
    names = _default_names(path, array.shape[0], lead_names)
    units = units or "mV"
    meta = {"array": key, "file_units": units}
    return RawECG(array * mv_per_unit(path, units, resolution_uv), names, _check_fs(path, fs), "numpy", meta)


__all__ = ["RawECG", "DEFAULT_FS", "DEFAULT_RESOLUTION_UV", "mv_per_unit", "read_csv", "read_wfdb",
           "read_cinc_mat", "read_dicom", "read_hdf5", "read_numpy", "header_signal_files"]
