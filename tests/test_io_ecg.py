"""ECG readers: real files from every supported source, round trips, resampling and bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from cardiofusion.errors import ReadError
from cardiofusion.io import ecg as ecg_module
from cardiofusion.io.ecg import canonical_lead_name, read_ecg, resample, standardize
from cardiofusion.records import CANONICAL_LEADS, LIMB_LEADS, ECGRecord

PTBXL_500 = ("ptbxl", "records500", "00000", "00001_hr")
PTBXL_100 = ("ptbxl", "records100", "00000", "00001_lr")


def _synthetic(n_samples: int = 5000, fs: float = 500.0, n_leads: int = 12, seed: int = 0) -> np.ndarray:
    """A plausible (leads, samples) signal in mV: a few sines plus noise, different per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / fs
    rows = [
        0.8 * np.sin(2 * np.pi * (1.1 + 0.05 * k) * t + k)
        + 0.2 * np.sin(2 * np.pi * 7 * t)
        + 0.02 * rng.normal(size=t.size)
        for k in range(n_leads)
    ]
    return np.array(rows)  # (leads, samples)


def _write_csv(path: Path, header: list[str] | None, columns: np.ndarray, delimiter: str = ",",
               fmt: str = "%.6f") -> None:
    """columns: (n_columns, rows)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        if header is not None:
            w.writerow(header)
        for row in columns.T:
            w.writerow([fmt % v for v in row])


def _header_line(hea: Path) -> tuple[int, float, int]:
    """(n_sig, fs, sig_len) from a WFDB header's record line, parsed independently of wfdb."""
    fields = hea.read_text().splitlines()[0].split()
    return int(fields[1]), float(fields[2].split("/")[0]), int(fields[3])


# ----------------------------------------------------------------------------------- lead names

@pytest.mark.parametrize(
    "name,expected",
    [
        ("I", "I"), ("Lead I", "I"), ("I (Einthoven)", "I"), ("Lead I (Einthoven)", "I"), ("DI", "I"),
        ("ii", "II"), ("Lead III", "III"), ("D3", "III"), ("AVR", "aVR"), ("aVR", "aVR"), ("avr", "aVR"),
        (" aVL ", "aVL"), ("AVF", "aVF"), ("V1 ", "V1"), ("v6", "V6"), ("C3", "V3"), ("I_uV", "I"),
        ("V2 (mV)", "V2"), ("aVF [uV]", "aVF"), ("ECG II", "II"), ("lead_V5", "V5"),
        ("V4R", None), ("V7", None), ("-aVR", None), ("RESP", None), ("Pleth", None), ("", None), (None, None),
        ("time", None), ("IV", None),
    ],
)
def test_canonical_lead_name(name, expected):
    assert canonical_lead_name(name) == expected


# ------------------------------------------------------------------------------------ WFDB / PTB-XL

def test_ptbxl_500_and_100_hz(shared_data):
    rec500 = read_ecg(shared_data.joinpath(*PTBXL_500).with_suffix(".hea"))
    rec100 = read_ecg(shared_data.joinpath(*PTBXL_100).with_suffix(".dat"))  # .dat works too
    for rec, fs, n in ((rec500, 500.0, 5000), (rec100, 100.0, 1000)):
        assert rec.format == "wfdb" and rec.fs == fs and rec.original_fs == fs
        assert rec.signal.shape == (12, n) and rec.signal.dtype == np.float32
        assert rec.leads == CANONICAL_LEADS  # header spells AVR/AVL/AVF
        assert rec.missing_leads == () and rec.dropped_leads == ()
        assert rec.units == "mV" and rec.duration_s == pytest.approx(10.0)
        assert 0.3 < np.abs(rec.signal).max() < 5.0  # mV, not uV or counts
        assert np.all(np.isfinite(rec.signal))
    # first samples straight from the header's "initial value" column (adc gain 1000/mV): -115, -50, 65
    np.testing.assert_allclose(rec500.signal[:3, 0], [-0.115, -0.050, 0.065], atol=1e-6)

    up = resample(rec100.signal, 100, 500)  # (12, 5000)
    assert up.shape == rec500.signal.shape
    corr_up = [np.corrcoef(up[i], rec500.signal[i])[0, 1] for i in range(12)]
    down = resample(rec500.signal, 500, 100)
    corr_down = [np.corrcoef(down[i], rec100.signal[i])[0, 1] for i in range(12)]
    assert min(corr_up) > 0.93 and np.mean(corr_up) > 0.96
    assert min(corr_down) > 0.95 and np.mean(corr_down) > 0.97


def test_wfdb_matches_wfdb_rdrecord(shared_data):
    import wfdb

    stem = shared_data.joinpath(*PTBXL_500)
    ref = wfdb.rdrecord(str(stem))
    rec = read_ecg(stem.with_suffix(".hea"))
    np.testing.assert_allclose(rec.signal, ref.p_signal.T, atol=1e-6)


def test_wfdb_mimic_layout_uv_units_and_extra_channel(tmp_path):
    """MIMIC-IV-ECG-like record: aVF before aVL, uV units, an extra non-ECG channel."""
    import wfdb

    sig = _synthetic(2500, 500.0, 13)  # (13, samples) mV
    names = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6", "RESP"]
    wfdb.wrsamp("40689238", fs=500, units=["uV"] * 13, sig_name=names, p_signal=(sig * 1000).T,
                fmt=["16"] * 13, adc_gain=[5.0] * 13, baseline=[0] * 13, write_dir=str(tmp_path))
    rec = read_ecg(tmp_path / "40689238.hea")
    assert rec.format == "wfdb" and rec.leads == CANONICAL_LEADS and rec.dropped_leads == ("RESP",)
    expected = sig[[names.index(lead) for lead in CANONICAL_LEADS]]
    np.testing.assert_allclose(rec.signal, expected, atol=0.2e-3)  # 0.2 uV steps, in mV


# ------------------------------------------------------------------------------------- CinC .mat

def test_cinc_mat_every_record_matches_its_header(shared_data):
    heas = sorted((shared_data / "cinc2021").glob("*/*.hea"))
    assert len(heas) >= 60
    sources = set()
    for hea in heas:
        n_sig, fs, sig_len = _header_line(hea)
        rec = read_ecg(hea)
        assert rec.format == "cinc_mat" and rec.fs == fs
        assert rec.signal.shape == (n_sig, sig_len) == (12, sig_len)
        assert rec.leads == CANONICAL_LEADS
        assert 0.05 < np.abs(rec.signal).max() < 30.0
        sources.add((hea.parent.name, fs))
    # CPSC, Chapman/Ningbo and Georgia at 500 Hz; the PTB (S*) records at 1000 Hz
    assert {("CPSC_CPSC-Extra", 500.0), ("ChapmanShaoxing_Ningbo", 500.0), ("G12EC", 500.0),
            ("PTB_PTBXL", 1000.0), ("PTB_PTBXL", 500.0)} <= sources


@pytest.mark.parametrize("rel,fs,n", [
    ("CPSC_CPSC-Extra/A0001", 500.0, 7500),  # CPSC lengths vary
    ("ChapmanShaoxing_Ningbo/JS00001", 500.0, 5000),
    ("G12EC/E00001", 500.0, 5000),
    ("PTB_PTBXL/S0001", 1000.0, 38400),
])
def test_cinc_mat_against_wfdb(shared_data, rel, fs, n):
    import wfdb

    stem = shared_data / "cinc2021" / rel
    rec = read_ecg(stem.with_suffix(".mat"))  # the .mat path works as well as the .hea
    assert rec.fs == fs and rec.n_samples == n
    assert rec.meta["dx_codes"] and all(code.isdigit() for code in rec.meta["dx_codes"])
    assert "Age" not in str(rec.meta) and "Sex" not in str(rec.meta)
    ref = wfdb.rdrecord(str(stem))  # wfdb reads the 16+24 layout directly: an independent decoder
    np.testing.assert_allclose(rec.signal, ref.p_signal.T, atol=1e-6)


def test_cinc_ptbxl_copy_equals_ptbxl_wfdb(shared_data):
    """CinC's HR00001 is PTB-XL's 00001_hr: two formats, one signal."""
    a = read_ecg(shared_data / "cinc2021" / "PTB_PTBXL" / "HR00001.hea")
    b = read_ecg(shared_data.joinpath(*PTBXL_500).with_suffix(".hea"))
    assert (a.format, b.format) == ("cinc_mat", "wfdb")
    np.testing.assert_array_equal(a.signal, b.signal)


# ------------------------------------------------------------------------------------------ SPH HDF5

def test_sph_hdf5_matches_metadata(shared_data):
    import pandas as pd

    sph = shared_data / "cinc2021" / "SPH"
    meta = pd.read_csv(sph / "metadata.csv").set_index("ECG_ID")
    files = sorted(sph.glob("*.h5"))
    assert len(files) == 10
    checked = 0
    for path in files:
        rec = read_ecg(path)
        assert rec.format == "hdf5" and rec.leads == CANONICAL_LEADS and rec.meta["dataset"] == "ecg"
        assert rec.fs == 500.0 and rec.meta["fs_from"] == "default"  # no attribute in SPH files
        assert 0.3 < np.abs(rec.signal).max() < 10.0  # SPH stores mV
        if path.name in meta.index:
            row = meta.loc[path.name]
            assert rec.signal.shape == (12, int(row["N"]))
            assert rec.fs == float(row["fs"])
            checked += 1
    assert checked >= 9  # SPH00005 has no metadata row


def test_hdf5_attributes_and_orientation(tmp_path):
    import h5py

    sig = _synthetic(1000, 250.0, 8)  # (8, samples) mV
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("signal", data=(sig * 1000).T)  # (samples, 8) uV
        d.attrs["fs"] = 250.0
        d.attrs["units"] = "uV"
        d.attrs["leads"] = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rec = read_ecg(path, fs=999)  # the file's attribute wins
    assert rec.fs == 250.0 and rec.leads == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    assert rec.missing_leads == ("III", "aVR", "aVL", "aVF")
    np.testing.assert_allclose(rec.signal, sig, atol=1e-5)


# ------------------------------------------------------------------------------------------- DICOM

def test_dicom_waveform_ecg():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    rec = read_ecg(path)
    assert rec.format == "dicom" and rec.fs == 1000.0 and rec.signal.shape == (12, 10000)
    assert rec.leads == CANONICAL_LEADS and rec.missing_leads == ()
    assert rec.meta["waveform_group"] == 0 and rec.meta["originality"] == "ORIGINAL"  # not the median beat
    ds = pydicom.dcmread(path)
    ref = ds.waveform_array(0).T / 1000.0  # uV -> mV
    np.testing.assert_allclose(rec.signal, ref, atol=1e-6)
    assert 0.3 < np.abs(rec.signal).max() < 5.0
    assert "PatientName" not in str(rec.meta) and str(ds.PatientName) not in str(rec.meta)


def test_dicom_picks_twelve_lead_group_when_not_first(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    groups = list(ds.WaveformSequence)
    ds.WaveformSequence = [groups[1], groups[0]]  # median beat first
    path = tmp_path / "swapped.dcm"
    ds.save_as(path)
    rec = read_ecg(path)
    assert rec.meta["waveform_group"] == 1 and rec.signal.shape == (12, 10000)


# --------------------------------------------------------------------------------------------- CSV

def test_csv_round_trip_uv_mv_counts(tmp_path):
    sig = _synthetic()  # (12, 5000) mV
    header = list(CANONICAL_LEADS)
    _write_csv(tmp_path / "uv.csv", header, sig * 1000.0, fmt="%.3f")
    _write_csv(tmp_path / "mv.csv", header, sig, fmt="%.6f")
    counts = np.round(sig * 1000.0 / 1.25)
    _write_csv(tmp_path / "counts.csv", header, counts, fmt="%d")

    rec_uv = read_ecg(tmp_path / "uv.csv")  # uV is the CSV default
    rec_mv = read_ecg(tmp_path / "mv.csv", units="mV")
    rec_ct = read_ecg(tmp_path / "counts.csv", units="counts")  # 1.25 uV per count by default
    for rec in (rec_uv, rec_mv, rec_ct):
        assert rec.format == "csv" and rec.fs == 500.0 and rec.leads == CANONICAL_LEADS
        assert rec.signal.shape == (12, 5000)
    np.testing.assert_allclose(rec_uv.signal, sig, atol=1e-6)
    np.testing.assert_allclose(rec_mv.signal, sig, atol=1e-6)
    np.testing.assert_allclose(rec_ct.signal, sig, atol=1.25e-3 / 2 + 1e-6)  # within half a count
    assert rec_ct.meta["resolution_uv"] == 1.25

    rec_ct2 = read_ecg(tmp_path / "counts.csv", units="counts", resolution_uv=2.5, fs=250)
    np.testing.assert_allclose(rec_ct2.signal, 2 * rec_ct.signal, rtol=1e-6)
    assert rec_ct2.fs == 250.0 and rec_ct2.duration_s == pytest.approx(20.0)


def test_csv_other_order_missing_lead_extra_channel_time_column(tmp_path):
    sig = _synthetic(1000, 250.0)  # (12, 1000) mV
    order = ["V6", "AVR", "Lead I", "ii", "III", "avl", "aVF", "V1 ", "V2", "V4", "V5"]  # no V3
    cols = [CANONICAL_LEADS.index(canonical_lead_name(n)) for n in order]
    time_ms = np.arange(1000) * 4.0
    resp = np.sin(np.arange(1000) / 50.0)
    data = np.vstack([time_ms, sig[cols] * 1000.0, resp])  # uV
    path = tmp_path / "export.csv"
    _write_csv(path, ["time_ms", *order, "RESP"], data, delimiter=";", fmt="%.3f")
    rec = read_ecg(path, fs=250)
    assert rec.meta["delimiter"] == ";" and rec.meta["time_column"] == "time_ms"
    assert rec.leads == tuple(lead for lead in CANONICAL_LEADS if lead != "V3")
    assert rec.missing_leads == ("V3",) and rec.dropped_leads == ("RESP",)
    keep = [CANONICAL_LEADS.index(lead) for lead in rec.leads]
    np.testing.assert_allclose(rec.signal, sig[keep], atol=1e-6)


def test_csv_tab_headerless_decimal_comma_and_header_units(tmp_path):
    sig = _synthetic(1000)
    # headerless, tab-separated, leading sample index column
    data = np.vstack([np.arange(1000), sig])
    _write_csv(tmp_path / "a.tsv", None, data, delimiter="\t", fmt="%.6f")
    rec = read_ecg(tmp_path / "a.tsv", units="mV")
    assert rec.meta["delimiter"] == "\t" and rec.meta["time_column"] == "column 0"
    np.testing.assert_allclose(rec.signal, sig, atol=1e-6)
    # European export: ';' with decimal commas, values in mV
    path = tmp_path / "b.csv"
    lines = [";".join(CANONICAL_LEADS)] + [";".join(f"{v:.6f}".replace(".", ",") for v in row) for row in sig.T]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_ecg(path, units="mV").signal, sig, atol=1e-6)
    # unit suffix in the header ("I_mV") is used when units is not given
    _write_csv(tmp_path / "c.csv", [f"{lead}_mV" for lead in CANONICAL_LEADS], sig)
    rec = read_ecg(tmp_path / "c.csv")
    assert rec.meta["units_from"] == "header" and rec.leads == CANONICAL_LEADS
    np.testing.assert_allclose(rec.signal, sig, atol=1e-6)


# ------------------------------------------------------------------------------------------- NumPy

def test_numpy_orientations_and_npz(tmp_path):
    sig = _synthetic(2000)
    np.save(tmp_path / "a.npy", sig)  # (leads, samples)
    np.save(tmp_path / "b.npy", sig.T.astype(np.float32))  # (samples, leads)
    a, b = read_ecg(tmp_path / "a.npy"), read_ecg(tmp_path / "b.npy")
    for rec in (a, b):
        assert rec.format == "numpy" and rec.fs == 500.0 and rec.signal.shape == (12, 2000)
        np.testing.assert_allclose(rec.signal, sig, atol=1e-6)
    # a 12 x 12 array cannot be oriented
    np.save(tmp_path / "sq.npy", np.eye(12))
    with pytest.raises(ReadError, match="cannot tell leads from samples"):
        read_ecg(tmp_path / "sq.npy")

    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.savez(tmp_path / "c.npz", signal=(sig[[0, 1, 6, 7, 8, 9, 10, 11]] * 1000).T, fs=250.0, units="uV",
             leads=np.array(eight))
    c = read_ecg(tmp_path / "c.npz")
    assert c.fs == 250.0 and c.leads == tuple(eight) and c.missing_leads == ("III", "aVR", "aVL", "aVF")
    np.testing.assert_allclose(c.signal, sig[[0, 1, 6, 7, 8, 9, 10, 11]], atol=1e-5)
    np.save(tmp_path / "d.npy", sig[:8])
    with pytest.raises(ReadError, match="lead_names"):
        read_ecg(tmp_path / "d.npy")
    assert read_ecg(tmp_path / "d.npy", lead_names=eight, fs=1000).fs == 1000.0


# -------------------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("fs_from,fs_to", [(250, 500), (1000, 500), (500, 250), (100, 500), (257, 500), (500, 1000)])
def test_resample_sine(fs_from, fs_to):
    duration = 4.0
    t_from = np.arange(int(duration * fs_from)) / fs_from
    t_to = np.arange(int(np.ceil(duration * fs_to))) / fs_to
    x = np.stack([np.sin(2 * np.pi * 5 * t_from), 0.5 * np.cos(2 * np.pi * 11 * t_from)]).astype(np.float32)
    y = resample(x, fs_from, fs_to)
    assert y.shape == (2, t_to.size) and y.dtype == np.float32
    ref = np.stack([np.sin(2 * np.pi * 5 * t_to), 0.5 * np.cos(2 * np.pi * 11 * t_to)])
    inner = slice(int(0.2 * fs_to), -int(0.2 * fs_to))  # away from the edges
    np.testing.assert_allclose(y[:, inner], ref[:, inner], atol=0.01)


def test_standardize_resamples_csv_at_250_hz(tmp_path):
    sig = _synthetic(2500, 250.0)
    _write_csv(tmp_path / "a.csv", list(CANONICAL_LEADS), sig, fmt="%.6f")
    rec = read_ecg(tmp_path / "a.csv", fs=250, units="mV")
    out, mask = standardize(rec)
    assert out.fs == 500.0 and out.original_fs == 250.0 and out.signal.shape == (12, 5000)
    assert mask.all() and out.meta["derived_leads"] == [] and out.missing_leads == ()


# ------------------------------------------------------------------------------------- standardize

@pytest.mark.parametrize("kept", [("I", "II"), ("I", "aVF"), ("III", "aVR"), ("II", "aVL")])
def test_standardize_derives_limb_leads(shared_data, kept):
    full = read_ecg(shared_data.joinpath(*PTBXL_500).with_suffix(".hea"))
    keep = [lead for lead in CANONICAL_LEADS if lead in kept or lead.startswith("V")]
    partial = ECGRecord(full.signal[[CANONICAL_LEADS.index(lead) for lead in keep]], full.fs, tuple(keep),
                        full.source, full.format)
    out, mask = standardize(partial)
    assert out.leads == CANONICAL_LEADS and mask.all() and out.missing_leads == ()
    assert sorted(out.meta["derived_leads"]) == sorted(set(LIMB_LEADS) - set(kept))
    # PTB-XL stores each lead rounded to 1 uV, so the relations hold to a few uV
    np.testing.assert_allclose(out.signal, full.signal, atol=3e-3)
    assert np.abs(out.signal[:6] - full.signal[:6]).max() > 0  # really derived, not copied


def test_standardize_limb_only_and_no_derivation():
    sig = _synthetic(1000, 500.0, 2)
    lead_i, lead_ii = sig
    rec = ECGRecord(np.stack([lead_i, lead_ii]), 500.0, ("I", "II"), "mem", "numpy")
    out, mask = standardize(rec, leads=CANONICAL_LEADS)
    assert mask.tolist() == [True] * 6 + [False] * 6
    assert out.missing_leads == CANONICAL_LEADS[6:] and out.meta["zero_filled_leads"] == list(CANONICAL_LEADS[6:])
    assert not out.signal[6:].any()
    np.testing.assert_allclose(out.signal[2], lead_ii - lead_i, atol=1e-6)  # III
    np.testing.assert_allclose(out.signal[3], -(lead_i + lead_ii) / 2, atol=1e-6)  # aVR
    np.testing.assert_allclose(out.signal[4], lead_i - lead_ii / 2, atol=1e-6)  # aVL
    np.testing.assert_allclose(out.signal[5], lead_ii - lead_i / 2, atol=1e-6)  # aVF

    out, mask = standardize(rec, derive_missing=False, leads=LIMB_LEADS, fs=250)
    assert out.leads == LIMB_LEADS and out.signal.shape == (6, 500) and mask.tolist() == [True, True] + [False] * 4
    single = ECGRecord(sig[:1], 500.0, ("II",), "mem", "numpy")
    _, mask = standardize(single, leads=LIMB_LEADS)
    assert mask.tolist() == [False, True, False, False, False, False]  # one limb lead is not enough


# ------------------------------------------------------------------------------------- bad input

def _copy_ptbxl(shared_data: Path, tmp_path: Path) -> Path:
    stem = shared_data.joinpath(*PTBXL_500)
    for ext in (".hea", ".dat"):
        shutil.copyfile(stem.with_suffix(ext), tmp_path / (stem.name + ext))
    return tmp_path / (stem.name + ".hea")


def _copy_cinc(shared_data: Path, tmp_path: Path) -> Path:
    stem = shared_data / "cinc2021" / "CPSC_CPSC-Extra" / "A0001"
    for ext in (".hea", ".mat"):
        shutil.copyfile(stem.with_suffix(ext), tmp_path / ("A0001" + ext))
    return tmp_path / "A0001.hea"


def _assert_read_error(path, match: str, **options) -> ReadError:
    with pytest.raises(ReadError) as info:
        read_ecg(path, **options)
    err = info.value
    assert str(path) in str(err) and "\n" not in str(err)
    assert match.lower() in err.reason.lower(), err.reason
    return err


def test_bad_wfdb_and_mat(shared_data, tmp_path):
    hea = _copy_ptbxl(shared_data, tmp_path)
    dat = hea.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:50000])
    _assert_read_error(hea, "truncated")
    dat.unlink()
    _assert_read_error(hea, "missing")

    mat_hea = _copy_cinc(shared_data, tmp_path)
    mat = mat_hea.with_suffix(".mat")
    good = mat.read_bytes()
    mat.write_bytes(good[:1000])
    _assert_read_error(mat_hea, "corrupt .mat")
    mat.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _assert_read_error(mat, "corrupt .mat")
    mat.write_bytes(good)
    mat_hea.write_text(mat_hea.read_text().replace("1000/mV", "1000/mmHg", 1))
    _assert_read_error(mat_hea, "unknown units")
    mat_hea.write_text("garbage\n")
    _assert_read_error(mat, "header")
    (tmp_path / "lonely.mat").write_bytes(good)
    _assert_read_error(tmp_path / "lonely.mat", "lonely.hea not found")


def test_bad_dicom(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    del ds.WaveformSequence
    ds.save_as(tmp_path / "nowave.dcm")
    _assert_read_error(tmp_path / "nowave.dcm", "no waveform")
    (tmp_path / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10")
    _assert_read_error(tmp_path / "broken.dcm", "DICOM")


def test_bad_signals(tmp_path):
    sig = _synthetic(1000)
    header = list(CANONICAL_LEADS)
    nan = sig.copy()
    nan[3, 10:13] = np.nan
    _write_csv(tmp_path / "nan.csv", header, nan)
    _assert_read_error(tmp_path / "nan.csv", "3 non-finite")
    inf = sig.copy()
    inf[0, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    _assert_read_error(tmp_path / "inf.npy", "1 non-finite")
    _write_csv(tmp_path / "flat.csv", header, np.full_like(sig, 7.0))
    _assert_read_error(tmp_path / "flat.csv", "flat signal")
    _write_csv(tmp_path / "short.csv", header, sig[:, :400])
    _assert_read_error(tmp_path / "short.csv", "too short")  # 0.8 s at 500 Hz


def test_min_duration_is_configurable(tmp_path, monkeypatch):
    np.save(tmp_path / "short.npy", _synthetic(400))
    monkeypatch.setattr(ecg_module, "MIN_DURATION_S", 0.5)
    assert read_ecg(tmp_path / "short.npy").duration_s == pytest.approx(0.8)
    monkeypatch.setattr(ecg_module, "MIN_DURATION_S", 2.0)
    _assert_read_error(tmp_path / "short.npy", "minimum 2 s")


def test_bad_files_and_options(tmp_path):
    _assert_read_error(tmp_path / "nope.csv", "no such file")
    _assert_read_error(tmp_path, "directory")
    (tmp_path / "empty.csv").write_bytes(b"")
    _assert_read_error(tmp_path / "empty.csv", "empty")
    (tmp_path / "text.csv").write_text("I,II\n1,2\n3,hello\n" + "1,2\n" * 600)
    _assert_read_error(tmp_path / "text.csv", "non-numeric value 'hello'")
    (tmp_path / "ragged.csv").write_text("I,II\n1,2\n3,4,5,6\n" + "1,2\n" * 600)
    _assert_read_error(tmp_path / "ragged.csv", "unparsable CSV")
    _write_csv(tmp_path / "noleads.csv", ["foo", "bar"], _synthetic(1000, n_leads=2))
    _assert_read_error(tmp_path / "noleads.csv", "no standard ECG lead")
    _write_csv(tmp_path / "ok.csv", list(CANONICAL_LEADS), _synthetic(1000))
    _assert_read_error(tmp_path / "ok.csv", "unknown units 'furlongs'", units="furlongs")
    _assert_read_error(tmp_path / "ok.csv", "invalid sampling rate", fs=-5)
    _assert_read_error(tmp_path / "ok.csv", "lead_names has 3 names", lead_names=["I", "II", "III"])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all" * 100)
    _assert_read_error(tmp_path / "junk.h5", "not a readable HDF5")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage" * 10)
    _assert_read_error(tmp_path / "junk.npy", "not a readable NumPy")
    (tmp_path / "x.xyz").write_text("1,2,3")
    _assert_read_error(tmp_path / "x.xyz", "unknown ECG file extension")


def test_dispatcher_reaches_read_ecg(tmp_path):
    from cardiofusion.io import read

    np.save(tmp_path / "a.npy", _synthetic(1000))
    rec = read(tmp_path / "a.npy", fs=250, units="mV")
    assert isinstance(rec, ECGRecord) and rec.fs == 250.0 and rec.format == "numpy"


# --------------------------------------------------------------------------------------------------
# Devices, FIFOs and the input size cap (issue 13: /dev/zero hung, /dev/urandom filled memory)
# --------------------------------------------------------------------------------------------------
def _read_guarded(reader, path, timeout_s: float = 60.0):
    """Run ``reader(path)`` in a thread; a FIFO reader blocked in ``open`` is released (and the test fails)
    after ``timeout_s`` -- a guard only, never a timing assertion."""
    import os
    import threading

    outcome: dict = {}

    def target():
        try:
            outcome["value"] = reader(path)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # give the blocked reader an end of file
        os.close(fd)
        thread.join(timeout_s)
        pytest.fail(f"reading {path} blocked for {timeout_s:g} s")
    return outcome


def test_devices_and_fifos_are_refused(tmp_path):
    import os

    for device in ("/dev/zero", "/dev/urandom"):
        _assert_read_error(device, "not a regular file (a device)")
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    _assert_read_error(link, "not a regular file")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    outcome = _read_guarded(read_ecg, fifo)
    err = outcome.get("error")
    assert isinstance(err, ReadError) and "not a regular file (a FIFO)" in err.reason


def test_input_size_cap_is_configurable(tmp_path, monkeypatch):
    from cardiofusion.errors import ConfigError
    from cardiofusion.io._files import DEFAULT_MAX_INPUT_BYTES, MAX_INPUT_BYTES_ENV, max_input_bytes

    _write_csv(tmp_path / "ok.csv", list(CANONICAL_LEADS), _synthetic(1000))
    size = (tmp_path / "ok.csv").stat().st_size
    assert max_input_bytes() == DEFAULT_MAX_INPUT_BYTES == 512 * 1024 * 1024
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(size - 1))
    err = _assert_read_error(tmp_path / "ok.csv", "over the limit")
    assert MAX_INPUT_BYTES_ENV in err.reason
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, f"{size}")
    assert read_ecg(tmp_path / "ok.csv").signal.shape == (12, 1000)
    # an .npz that is small on disk but decompresses past the cap is refused before decompressing
    np.savez_compressed(tmp_path / "bomb.npz", signal=np.zeros((12, 100_000)))
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "1M")
    assert (tmp_path / "bomb.npz").stat().st_size < 1024 * 1024
    _assert_read_error(tmp_path / "bomb.npz", "decompresses to")
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_INPUT_BYTES_ENV):
        read_ecg(tmp_path / "ok.csv")
