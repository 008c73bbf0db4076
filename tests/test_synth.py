"""The synthetic hospital export: layout, formats, label consistency, planted signs, determinism."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from cardiofusion.records import CANONICAL_LEADS
from cardiofusion.synth import (
    CXR_INDEX_COLUMNS,
    ECG_INDEX_COLUMNS,
    ECHO_INDEX_COLUMNS,
    SynthConfig,
    auroc,
    generate_export,
    link_records,
)
from cardiofusion.synth.ecg import sokolow_lyon_mv

N_PATIENTS = 30


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "export"
    cfg = SynthConfig(n_patients=N_PATIENTS, seed=7, as_prevalence=0.3, minor_fraction=0.25,
                      n_defective_cxr=1, n_defective_ecg=1, monochrome1_fraction=0.3)
    generate_export(out, cfg)
    return out


@pytest.fixture(scope="module")
def strong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half AS, strong signs, no defects: group differences must show in a small sample."""
    out = tmp_path_factory.mktemp("synth") / "strong"
    cfg = SynthConfig(n_patients=36, seed=3, as_prevalence=0.5, ecg_lvh_effect=0.8, ecg_voltage_spread=0.08,
                      cxr_ctr_effect=0.08, n_defective_cxr=0, n_defective_ecg=0, cxr_size=128)
    generate_export(out, cfg)
    return out


def _tables(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (pd.read_csv(d / "ecg_index.csv"), pd.read_csv(d / "cxr_index.csv"), pd.read_csv(d / "echo_index.csv"))


def test_layout_and_index_columns(export: Path) -> None:
    ecg, cxr, echo = _tables(export)
    assert tuple(ecg.columns) == ECG_INDEX_COLUMNS
    assert tuple(cxr.columns) == CXR_INDEX_COLUMNS
    assert tuple(echo.columns) == ECHO_INDEX_COLUMNS
    assert {"patient_id", "exam_id", "exam_datetime", "path"} <= set(ecg.columns)
    for t in (ecg, cxr):
        assert t["exam_id"].is_unique
        assert all((export / p).is_file() for p in t["path"])
        assert not any(Path(p).is_absolute() for p in t["path"])
    assert (ecg["fs"] == 500).all() and (ecg["units"] == "counts").all() and (ecg["resolution_uv"] == 1.25).all()
    assert set(ecg["sex"]) <= {"F", "M"} and set(ecg["pacemaker"]) <= {0, 1}
    pd.to_datetime(echo["exam_datetime"], format="%Y-%m-%dT%H:%M:%S")
    assert (export / "export.json").is_file()
    meta = json.loads((export / "export.json").read_text())
    assert meta["seed"] == 7 and meta["counts"]["ecg"] == len(ecg)
    summary = json.loads((export / "ground_truth" / "summary.json").read_text())
    assert summary["counts"]["records"] > 0
    for name in ("patients.csv", "ecg_exams.csv", "cxr_exams.csv", "records.csv", "defects.csv"):
        assert (export / "ground_truth" / name).is_file()


def test_ecg_csv_format(export: Path) -> None:
    ecg, _, _ = _tables(export)
    defects = set(pd.read_csv(export / "ground_truth" / "defects.csv")["exam_id"])
    good = ecg[~ecg["exam_id"].isin(defects)]
    for p in good["path"].iloc[:3]:
        df = pd.read_csv(export / p)
        assert tuple(df.columns) == CANONICAL_LEADS
        assert df.shape == (7500, 12)
        assert all(np.issubdtype(t, np.integer) for t in df.dtypes)
        x = df.to_numpy().T * 1.25e-3  # (12, n) mV
        assert 0.05 < np.abs(x).max() < 10
        # limb leads derived as an electrocardiograph does: III = II - I (up to rounding)
        assert np.abs(x[2] - (x[1] - x[0])).max() < 0.01


def test_dicom_format(export: Path) -> None:
    _, cxr, _ = _tables(export)
    truth = pd.read_csv(export / "ground_truth" / "cxr_exams.csv").set_index("exam_id")
    seen = set()
    for _, row in cxr.iterrows():
        if truth.loc[row["exam_id"], "defect"] == "truncated":
            continue
        ds = pydicom.dcmread(export / row["path"])
        assert ds.Modality in ("DX", "CR")
        assert (ds.Rows, ds.Columns) == (256, 256) and ds.BitsAllocated == 16 and ds.BitsStored == 12
        assert ds.PhotometricInterpretation == truth.loc[row["exam_id"], "photometric"]
        assert ds.PatientID == row["patient_id"] and ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert "WindowCenter" in ds and "WindowWidth" in ds
        arr = ds.pixel_array
        assert arr.shape == (256, 256) and arr.max() <= 4095
        seen.add(ds.PhotometricInterpretation)
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def test_monochrome1_stored_inverted(export: Path) -> None:
    """Lungs are dark on screen: low stored values in MONOCHROME2, high in MONOCHROME1."""
    truth = pd.read_csv(export / "ground_truth" / "cxr_exams.csv")
    truth = truth[truth["defect"].fillna("") == ""]
    for phot in ("MONOCHROME1", "MONOCHROME2"):
        exam = truth[truth["photometric"] == phot]["exam_id"].iloc[0]
        a = pydicom.dcmread(export / "cxr" / f"{exam}.dcm").pixel_array.astype(float)
        lung = a[90:130, 50:80].mean()  # patient's right lung field
        spine_below = a[230:250, 120:136].mean()  # abdomen/spine: dense
        assert (lung < spine_below) == (phot == "MONOCHROME2")


def test_labels_follow_rule_and_demographics(export: Path) -> None:
    _, _, echo = _tables(export)
    pat = pd.read_csv(export / "ground_truth" / "patients.csv")
    v, g, a = echo["peak_velocity_m_s"], echo["mean_gradient_mmhg"], echo["ava_cm2"]
    rule = ((v >= 2.5) | (g >= 20) | (a <= 1.5)).astype(int)
    lab = echo["patient_id"].map(pat.set_index("patient_id")["as_label"])
    assert (rule == lab).all()  # every AS echo meets the rule, no non-AS echo does
    assert echo[["peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2"]].notna().sum(axis=1).min() >= 2
    assert (pat["minor"] == (pat["age_first_exam"] < 18)).all()
    assert pat["minor"].any()


def test_linkage_windows(export: Path) -> None:
    ecg, cxr, echo = _tables(export)
    rec = link_records(ecg, cxr, echo)
    assert len(rec) > N_PATIENTS  # several records per patient
    ages = echo.set_index("exam_id")["age"]
    assert (rec["echo_exam_id"].map(ages) >= 18).all()
    t = {**dict(zip(ecg.exam_id, ecg.exam_datetime)), **dict(zip(cxr.exam_id, cxr.exam_datetime)),
         **dict(zip(echo.exam_id, echo.exam_datetime))}
    d_ec = (pd.to_datetime(rec.cxr_exam_id.map(t)) - pd.to_datetime(rec.echo_exam_id.map(t))).dt.total_seconds() / 86400
    d_ce = (pd.to_datetime(rec.ecg_exam_id.map(t)) - pd.to_datetime(rec.cxr_exam_id.map(t))).dt.total_seconds() / 86400
    assert d_ec.abs().max() <= 90 and d_ce.abs().max() <= 7
    # the export holds near misses that the windows must exclude
    assert len(cxr) > rec["cxr_exam_id"].nunique() and len(ecg) > rec["ecg_exam_id"].nunique()
    stored = pd.read_csv(export / "ground_truth" / "records.csv")
    pd.testing.assert_frame_equal(stored, rec.reset_index(drop=True), check_dtype=False)


def test_planted_signs_show_in_signal_and_truth(strong: Path) -> None:
    ecg, _, _ = _tables(strong)
    gt = pd.read_csv(strong / "ground_truth" / "ecg_exams.csv").set_index("exam_id")
    sl = {0: [], 1: []}
    for _, row in ecg.iterrows():
        if gt.loc[row["exam_id"], "paced"]:
            continue
        x = pd.read_csv(strong / row["path"]).to_numpy().T * 1.25e-3  # (12, n) mV
        sl[int(gt.loc[row["exam_id"], "as_label"])].append(sokolow_lyon_mv(x))
    assert len(sl[1]) >= 10 and len(sl[0]) >= 10
    assert np.mean(sl[1]) > np.mean(sl[0]) * 1.1  # Sokolow-Lyon voltage from the signal alone
    cx = pd.read_csv(strong / "ground_truth" / "cxr_exams.csv")
    assert cx.loc[cx.as_label == 1, "ctr"].mean() > cx.loc[cx.as_label == 0, "ctr"].mean() + 0.03
    hb = (cx["heart_x1"] - cx["heart_x0"]) / 128  # heart bbox width grows with CTR
    assert np.corrcoef(hb, cx["ctr"])[0, 1] > 0.5
    summary = json.loads((strong / "ground_truth" / "summary.json").read_text())
    o = summary["oracle"]
    assert 0.6 < o["ecg"] <= 1 and 0.6 < o["cxr"] <= 1 and o["both"] >= max(o["ecg"], o["cxr"]) - 0.05


def test_defects_listed(export: Path) -> None:
    d = pd.read_csv(export / "ground_truth" / "defects.csv")
    assert sorted(d["modality"]) == ["cxr", "ecg"]
    bad_dcm = export / d.loc[d.modality == "cxr", "path"].iloc[0]
    from cardiofusion.errors import ReadError
    from cardiofusion.io.cxr import read_cxr
    from cardiofusion.io.ecg import read_ecg

    with pytest.raises(ReadError, match="truncated|cannot decode"):
        read_cxr(bad_dcm)
    bad_ecg_path = export / d.loc[d.modality == "ecg", "path"].iloc[0]
    bad_ecg = pd.read_csv(bad_ecg_path)
    assert bad_ecg.shape[1] == 12 and (bad_ecg.fillna(0).to_numpy() == 0).all()
    with pytest.raises(ReadError, match="flat"):
        read_ecg(bad_ecg_path, units="counts", resolution_uv=1.25)


def test_determinism_and_workers(tmp_path: Path) -> None:
    cfg = dict(n_patients=8, seed=11, cxr_size=64, n_defective_cxr=1, n_defective_ecg=1, compute_oracle=False)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_export(a, SynthConfig(**cfg))
    generate_export(b, SynthConfig(**cfg, workers=2))
    generate_export(c, SynthConfig(**{**cfg, "seed": 12}))
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(a / "echo_index.csv", c / "echo_index.csv", shallow=False)


def test_auroc_matches_definition() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    pairs = [(i, j) for i in range(6) for j in range(6) if y[i] == 1 and y[j] == 0]
    ref = np.mean([1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j in pairs])
    assert auroc(y, s) == pytest.approx(ref)


def test_readers_open_the_files(export: Path) -> None:
    io_ecg = pytest.importorskip("cardiofusion.io.ecg")
    io_cxr = pytest.importorskip("cardiofusion.io.cxr")
    ecg, cxr, _ = _tables(export)
    defects = set(pd.read_csv(export / "ground_truth" / "defects.csv")["exam_id"])
    row = ecg[~ecg["exam_id"].isin(defects)].iloc[0]
    rec = io_ecg.read_ecg(export / row["path"], fs=500, units="counts", resolution_uv=1.25)
    assert rec.signal.shape == (12, 7500) and tuple(rec.leads) == CANONICAL_LEADS
    raw = pd.read_csv(export / row["path"]).to_numpy().T * 1.25e-3
    np.testing.assert_allclose(rec.signal, raw, atol=1e-4)
    truth = pd.read_csv(export / "ground_truth" / "cxr_exams.csv").set_index("exam_id")
    for phot in ("MONOCHROME1", "MONOCHROME2"):
        exam = truth[(truth.photometric == phot) & (truth.defect.fillna("") == "")].index[0]
        img = io_cxr.read_cxr(export / "cxr" / f"{exam}.dcm")
        assert img.pixels.shape == (256, 256) and img.photometric == phot
        # after the reader, lungs are dark and the abdomen bright, whatever the photometric
        assert img.pixels[90:130, 50:80].mean() < img.pixels[230:250, 120:136].mean()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cardiofusion.cli import main

    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--patients", "6", "--seed", "2", "--cxr-size", "64",
               "--defects", "0", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "patients: 6" in text and (out / "ecg_index.csv").is_file()
    assert main(["synth", "--out", str(out), "--patients", "6"]) == 2  # refuses to overwrite
