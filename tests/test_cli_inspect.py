"""``cardiofusion inspect`` end to end through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cardiofusion.cli import main

ECG_KEYS = {"kind", "fs", "leads", "n_samples", "duration_s", "units"}
CXR_KEYS = {"kind", "height", "width", "photometric", "bits_stored"}


def test_inspect_ptbxl_json(shared_data, capsys):
    hea = shared_data / "ptbxl" / "records500" / "00000" / "00001_hr.hea"
    assert main(["inspect", str(hea), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == ECG_KEYS
    assert info["kind"] == "ecg" and info["fs"] == 500 and info["n_samples"] == 5000
    assert info["leads"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert info["duration_s"] == pytest.approx(10.0) and info["units"] == "mV"


@pytest.mark.parametrize("name,photometric", [("RG1_UNCR.dcm", "MONOCHROME1"), ("siim_chest_cr_jpeg_baseline.dcm", "MONOCHROME2")])
def test_inspect_dicom_json(shared_data, capsys, name, photometric):
    assert main(["inspect", str(shared_data / "dicom" / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == CXR_KEYS
    assert info["kind"] == "cxr" and info["photometric"] == photometric
    assert info["height"] > 100 and info["width"] > 100 and info["bits_stored"] >= 8


def test_inspect_dicom_waveform_is_an_ecg(capsys):
    from pydicom.data import get_testdata_file

    assert main(["inspect", get_testdata_file("waveform_ecg.dcm"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "ecg" and len(info["leads"]) == 12


def test_inspect_csv_counts_human_readable(tmp_path, capsys):
    path = tmp_path / "ecg.csv"
    rng = np.random.default_rng(0)
    counts = np.round(rng.normal(0, 400, size=(2500, 12))).astype(int)
    header = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"
    np.savetxt(path, counts, fmt="%d", delimiter=",", header=header, comments="")
    assert main(["inspect", str(path), "--fs", "250", "--units", "counts", "--resolution-uv", "1.25"]) == 0
    out = capsys.readouterr().out
    assert "fs" in out and "250" in out and "10.0" in out and "mV" in out


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("notes.xyz", b"hello", "unknown file extension"),
        ("notes.txt", b"hello world", ""),
        ("broken.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00\x10", ""),
        ("flat.csv", b"I,II\n" + b"0,0\n" * 5000, ""),
    ],
)
def test_inspect_bad_file_one_line_no_traceback(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "cardiofusion.cli", "inspect", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and reason in err


def test_inspect_missing_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err
