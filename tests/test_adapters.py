"""Public-data adapters (PTB-XL, CinC, NIH, MIMIC) and the pseudo-paired benchmark cohort.

Real files from ``../shared/data`` (skipped when absent); MIMIC on a tiny fake tree with the real
layout; the pseudo-paired cohort end to end through ``build_cache`` and one tiny ``fit``.
"""

from __future__ import annotations

from conftest import register_stand_in_encoders

import ast
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardiofusion.adapters import (
    CinCConfig,
    MimicConfig,
    NIHConfig,
    PairingConfig,
    PTBXLConfig,
    adapt_cinc,
    adapt_mimic,
    adapt_nih,
    adapt_ptbxl,
    build_pseudo_paired,
    is_pseudo_paired,
    load_adapted,
    make_pool,
    parse_fold_map,
    pseudo_paired_cohort,
)
from cardiofusion.adapters.cinc import parse_header
from cardiofusion.adapters.mimic import cxr_datetime, link_ecg_cxr
from cardiofusion.adapters.pseudo_paired import oracle_auroc, realised_rates
from cardiofusion.cli import main
from cardiofusion.cohort import CohortConfig, build_cohort, normalise_index
from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.io.cxr import read_cxr
from cardiofusion.io.ecg import read_ecg

SHARED_FOLD_MAP = "train=1-4+6-7,val=5,test=8"  # every split of the shared 353-record copy gets LVH cases


@pytest.fixture(scope="module")
def ptbxl(shared_data):
    return adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=100, fold_map=SHARED_FOLD_MAP))


@pytest.fixture(scope="module")
def nih(shared_data):
    return adapt_nih(shared_data / "nih-cardiomegaly-128")


# --------------------------------------------------------------------------------------------------
# PTB-XL
# --------------------------------------------------------------------------------------------------
def _direct_counts(db: pd.DataFrame, statements: pd.DataFrame, thr: float) -> dict[str, int]:
    """Label counts straight from the CSVs with pandas (independent of the adapter)."""
    codes = db["scp_codes"].map(ast.literal_eval)
    hyp = set(statements.index[(statements["diagnostic"] == 1) & (statements["diagnostic_class"] == "HYP")])
    return {
        "lvh": int(codes.map(lambda c: c.get("LVH", -1) >= thr).sum()),
        "norm": int(codes.map(lambda c: c.get("NORM", -1) >= thr).sum()),
        "hyp": int(codes.map(lambda c: any(v >= thr for k, v in c.items() if k in hyp)).sum()),
        "hyp_mentioned": int(codes.map(lambda c: any(k in hyp for k in c)).sum()),
    }


@pytest.mark.parametrize("thr", [50.0, 0.0])
def test_ptbxl_label_counts_match_the_csv(shared_data, thr):
    root = shared_data / "ptbxl"
    db = pd.read_csv(root / "ptbxl_database.csv")
    statements = pd.read_csv(root / "scp_statements.csv", index_col=0)
    res = adapt_ptbxl(root, PTBXLConfig(sampling_rate=100, min_likelihood=thr, fold_map="train=1-8"))
    assert len(res.ecg_index) == len(db) == 353 and len(res.exclusions) == 0
    expected = _direct_counts(db, statements, thr)
    assert {c: int(res.labels[c].sum()) for c in expected} == expected
    if thr == 50.0:
        assert expected == {"lvh": 18, "norm": 225, "hyp": 23, "hyp_mentioned": 25}
    # the index table is a valid library index (cohort loader accepts it)
    norm = normalise_index(res.ecg_index, "ecg")
    assert norm["exam_datetime"].null_count() == 0 and set(norm["sex"].unique()) == {"F", "M"}
    assert res.ecg_index["patient_id"].str.fullmatch(r"\d+").all()
    assert (res.ecg_index["units"] == "mV").all() and (res.ecg_index["fs"] == 100.0).all()


def test_ptbxl_every_record_resolves_and_reads_at_both_rates(shared_data, ptbxl):
    for path, fs in zip(ptbxl.ecg_index["path"], ptbxl.ecg_index["fs"]):
        rec = read_ecg(path)
        assert rec.fs == fs == 100.0 and rec.signal.shape == (12, 1000)
    hr = adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=500, fold_map=SHARED_FOLD_MAP))
    assert len(hr.ecg_index) == 353 and (hr.ecg_index["fs"] == 500.0).all()
    assert hr.ecg_index["path"].str.contains("/records500/").all()
    assert ptbxl.ecg_index["path"].str.contains("/records100/").all()
    assert all(Path(p).is_file() and Path(p).with_suffix(".dat").is_file() for p in hr.ecg_index["path"])
    for path in hr.ecg_index["path"].iloc[::50]:  # 500 Hz: every path exists; a sample is read
        rec = read_ecg(path)
        assert rec.fs == 500.0 and rec.signal.shape == (12, 5000)
    # same labels, same records, whatever the rate
    pd.testing.assert_frame_equal(hr.labels, ptbxl.labels)


def test_ptbxl_fold_map(shared_data, ptbxl):
    lab = ptbxl.labels
    folds = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv")["strat_fold"].value_counts()
    assert (lab.groupby("split").size().to_dict()
            == {"train": int(folds[[1, 2, 3, 4, 6, 7]].sum()), "val": int(folds[5]), "test": int(folds[8])})
    assert lab.groupby("patient_id")["split"].nunique().max() == 1  # strat_fold is patient-disjoint
    # the recommended map (train 1-8, val 9, test 10): the shared copy has folds 1-8 only -> all train
    default = adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=100))
    assert set(default.labels["split"]) == {"train"}
    assert parse_fold_map(None, {1: "train"}) == {1: "train"}
    assert parse_fold_map("train=1-8,val=9,test=10", {}) == {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}
    assert parse_fold_map({"train": [1, 2], "test": 3}, {}) == {1: "train", 2: "train", 3: "test"}
    # folds outside the map are excluded, each with its reason
    part = adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=100, fold_map="train=1-2,val=3,test=4"))
    assert len(part.ecg_index) == int(folds[[1, 2, 3, 4]].sum())
    assert len(part.ecg_index) + len(part.exclusions) == 353
    assert part.exclusions["reason"].str.fullmatch(r"strat_fold [5-8] is not in the fold map").all()
    for bad, msg in (("train=1-8,val=8", "fold 8 assigned to both"), ("dev=1", "unknown split"),
                     ("train=5-2", "empty range"), ("train", "SPLIT=FOLDS")):
        with pytest.raises(ConfigError, match=msg):
            PTBXLConfig(fold_map=bad)
    with pytest.raises(ConfigError, match="100 or 500"):
        PTBXLConfig(sampling_rate=250)


def test_ptbxl_malformed_inputs(shared_data, tmp_path):
    src = shared_data / "ptbxl"
    root = tmp_path / "ptbxl"
    root.mkdir()
    shutil.copy(src / "scp_statements.csv", root)
    (root / "records100").symlink_to(src / "records100")
    db = pd.read_csv(src / "ptbxl_database.csv").head(4)
    db.loc[1, "filename_lr"] = "records100/00000/99999_lr"  # file missing
    db.loc[2, "age"] = 300  # PTB-XL's code for > 89 years
    db.loc[3, "patient_id"] = np.nan
    db.to_csv(root / "ptbxl_database.csv", index=False)
    res = adapt_ptbxl(root, PTBXLConfig(sampling_rate=100, fold_map="train=1-10"))
    assert len(res.ecg_index) == 2 and len(res.exclusions) == 2
    reasons = dict(zip(res.exclusions["exam_id"], res.exclusions["reason"]))
    assert reasons == {str(db.loc[1, "ecg_id"]): "WFDB .hea file not found", str(db.loc[3, "ecg_id"]): "missing patient_id"}
    assert pd.isna(res.ecg_index.set_index("exam_id").loc[str(db.loc[2, "ecg_id"]), "age"])
    db.loc[0, "scp_codes"] = "{'NORM': 100.0"  # truncated dict literal
    db.to_csv(root / "ptbxl_database.csv", index=False)
    with pytest.raises(ReadError, match=r"ptbxl_database\.csv: ecg_id 1: scp_codes .* not a dict literal"):
        adapt_ptbxl(root, PTBXLConfig(sampling_rate=100))
    db.drop(columns=["strat_fold"]).to_csv(root / "ptbxl_database.csv", index=False)
    with pytest.raises(ReadError, match=r"ptbxl_database\.csv: .*lacks column\(s\) strat_fold"):
        adapt_ptbxl(root)
    with pytest.raises(ReadError, match="scp_statements.csv: no such file"):
        (root / "scp_statements.csv").unlink()
        db.to_csv(root / "ptbxl_database.csv", index=False)
        adapt_ptbxl(root)


# --------------------------------------------------------------------------------------------------
# CinC 2020-2021
# --------------------------------------------------------------------------------------------------
def test_cinc_all_records(shared_data):
    root = shared_data / "cinc2021"
    res = adapt_cinc(root)
    files = sorted(root.rglob("*.hea")) + sorted(root.rglob("*.h5"))
    assert len(files) == 77
    # every file is accounted for: indexed or excluded with a reason
    assert len(res.ecg_index) + len(res.exclusions) == 77
    assert len(res.ecg_index) == 76
    assert res.exclusions.to_dict("records") == [{
        "table": "ecg", "exam_id": "SPH00005", "patient_id": None, "path": str(root / "SPH" / "SPH00005.h5"),
        "reason": "no row in metadata.csv (no SNOMED codes, rate or patient id)"}]
    for row in res.ecg_index.itertuples():
        rec = read_ecg(row.path)
        assert rec.fs == row.fs and rec.signal.shape[0] == 12
    lab = res.labels.set_index("exam_id")
    # LVH straight from the #Dx lines and metadata.csv
    direct = {p.stem for p in root.rglob("*.hea") if re.search(r"#Dx:.*\b164873001\b", p.read_text())}
    meta = pd.read_csv(root / "SPH" / "metadata.csv", dtype=str)
    direct |= {Path(e).stem for e, c in zip(meta["ECG_ID"], meta["SNOMEDCTCode"]) if "164873001" in c.split(",")}
    assert set(lab.index[lab["lvh"] == 1]) == direct and len(direct) == 2
    assert lab["database"].value_counts().to_dict() == {
        "Chapman-Shaoxing/Ningbo": 20, "CPSC 2018": 10, "CPSC-Extra": 10, "Georgia (G12EC)": 10, "PTB": 10,
        "SPH": 9, "PTB-XL": 7}
    sph = res.ecg_index[res.ecg_index["exam_id"].str.startswith("SPH")]
    assert sph["patient_id"].str.fullmatch(r"S\d{5}").all() and (sph["fs"] == 500.0).all()
    assert lab.loc["SPH00001", "dx_codes"] == "426177001,427393009"
    assert (lab["normal"] == lab["dx_codes"].eq("426783006")).all()
    assert set(res.ecg_index["fs"]) <= {500.0, 1000.0, 257.0}


def test_cinc_malformed(shared_data, tmp_path):
    root = tmp_path / "cinc"
    shutil.copytree(shared_data / "cinc2021" / "G12EC", root / "G12EC")
    hea = root / "G12EC" / "E00001.hea"
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(ln for ln in lines if not ln.startswith("#Dx")) + "\n")
    (root / "G12EC" / "E00002.mat").unlink()
    (root / "G12EC" / "E00003.hea").write_text("E00003 twelve 500\n")
    res = adapt_cinc(root)
    reasons = dict(zip(res.exclusions["exam_id"], res.exclusions["reason"]))
    assert reasons["E00001"] == "no SNOMED codes (#Dx: line missing or empty)"
    assert reasons["E00002"] == ".mat signal file not found beside the header"
    assert reasons["E00003"].startswith("malformed header: record line")
    assert len(res.ecg_index) == 7 and len(res.ecg_index) + len(res.exclusions) == 10
    with pytest.raises(ReadError, match=r"E00003\.hea: record line"):
        adapt_cinc(root, CinCConfig(strict=True))
    h = parse_header(shared_data / "cinc2021" / "CPSC_CPSC-Extra" / "A0002.hea")
    assert (h.fs, h.n_samples, h.age, h.sex, h.dx) == (500.0, 5000, 49.0, "F", ("426783006",))
    sph = tmp_path / "sph"
    sph.mkdir()
    shutil.copy(shared_data / "cinc2021" / "SPH" / "SPH00001.h5", sph)
    (sph / "metadata.csv").write_text("ECG_ID,Age\nSPH00001.h5,55\n")
    with pytest.raises(ReadError, match=r"metadata\.csv: the SPH metadata table lacks column\(s\) Patient_ID"):
        adapt_cinc(sph)


# --------------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# --------------------------------------------------------------------------------------------------
def test_nih_labelled_folders(shared_data, nih):
    root = shared_data / "nih-cardiomegaly-128"
    idx, lab = nih.cxr_index, nih.labels
    assert nih.ecg_index is None and len(idx) == 4438 and len(nih.exclusions) == 0
    assert lab["cardiomegaly"].value_counts().to_dict() == {1: 2219, 0: 2219}
    assert (lab["cardiomegaly"] == (lab["source_folder"] == "cardiomegaly").astype(int)).all()
    assert idx["exam_id"].is_unique and idx["patient_id"].str.startswith("file:").all()
    assert "one patient per file" in nih.info["patient_ids"]
    png = b"\x89PNG\r\n\x1a\n"
    for p in idx["path"]:  # every file is there and is a PNG ...
        with open(p, "rb") as f:
            assert f.read(8) == png
    for p in idx["path"].iloc[::20]:  # ... and the library's reader decodes a sample
        assert read_cxr(p).pixels.shape == (128, 128)
    assert {Path(p).parent for p in idx["path"]} == {root / "cardiomegaly", root / "no_cardiomegaly"}


def test_nih_original_csv_layout(shared_data, tmp_path):
    root = tmp_path / "nih"
    (root / "images_001" / "images").mkdir(parents=True)
    for name in ("00000001_000.png", "00027426_000.png"):
        (root / "images_001" / "images" / name).symlink_to(shared_data / "nih-fullres" / name)
    # the real Data_Entry_2017.csv header; rows for the two real images + one image not present
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,\n"
        "00027426_000.png,No Finding,0,27426,045Y,F,PA,2048,2500,0.168,0.168,\n"
        "00000002_000.png,Cardiomegaly|Effusion,0,2,81,M,AP,2500,2048,0.171,0.171,\n")
    res = adapt_nih(root)
    assert res.info["layout"] == "csv"
    idx = res.cxr_index.set_index("exam_id")
    lab = res.labels.set_index("exam_id")
    assert list(idx.index) == ["00000001_000", "00027426_000"]
    assert idx["patient_id"].to_list() == ["1", "27426"] and idx["view_position"].to_list() == ["PA", "PA"]
    assert idx["age"].to_list() == [58.0, 45.0] and idx["sex"].to_list() == ["M", "F"]
    assert lab["cardiomegaly"].to_list() == [1, 0] and lab["no_finding"].to_list() == [0, 1]
    assert idx["exam_datetime"].isna().all()  # NIH has no dates
    assert res.exclusions["reason"].to_list() == [f"image 00000002_000.png not found under {root}"]
    for p in idx["path"]:
        assert min(read_cxr(p).pixels.shape) >= 256
    # the full-resolution folder alone: no CSV, no labelled folders -> both images listed as excluded
    bare = adapt_nih(shared_data / "nih-fullres")
    assert len(bare.cxr_index) == 0 and set(bare.exclusions["reason"]) == {"image outside a labelled folder"}
    with open(root / "Data_Entry_2017.csv", "a") as f:
        f.write("00000003_000.png,Cardiomegally,0,3,50,F,PA,1,1,1,1,\n")
    with pytest.raises(ReadError, match=r"Data_Entry_2017\.csv: Image Index 00000003_000\.png: unknown finding"):
        adapt_nih(root)
    with pytest.raises(ConfigError):
        NIHConfig(folder_labels={"x": 2})


# --------------------------------------------------------------------------------------------------
# MIMIC-IV-ECG + MIMIC-CXR-JPG on a fake tree with the real layout
# --------------------------------------------------------------------------------------------------
MIMIC_ECG_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]  # the real order
CHEXPERT_COLUMNS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                    "Pneumothorax", "Support Devices"]


@pytest.fixture(scope="module")
def mimic_tree(tmp_path_factory) -> Path:
    """MIMIC-IV-ECG v1.0 + MIMIC-CXR-JPG v2.0.0 layouts, 3 subjects, a few records each."""
    import wfdb
    from PIL import Image

    top = tmp_path_factory.mktemp("mimic")
    ecg = top / "mimic-iv-ecg" / "1.0"
    cxr = top / "mimic-cxr-jpg" / "2.0.0"
    records = [  # subject, study, ecg_time, machine report, files written?
        ("10000032", "40689238", "2180-07-23 08:44:00", ["Sinus rhythm", "Left ventricular hypertrophy"], True),
        ("10000032", "44458630", "2180-07-23 09:54:00", ["Sinus rhythm", "Normal ECG"], True),
        ("10000117", "45090959", "2183-09-18 12:01:00", ["Atrial fibrillation", "Abnormal ECG"], True),
        ("10000560", "41234567", "2189-01-01 10:00:00", ["Sinus rhythm"], False),
    ]
    t = np.arange(5000) / 500.0
    rows, mm = [], []
    for k, (subject, study, when, report, write) in enumerate(records):
        rel = f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
        rows.append({"subject_id": subject, "study_id": study, "file_name": study, "ecg_time": when, "path": rel})
        mm.append({"subject_id": subject, "study_id": study, "cart_id": 6848296, "ecg_time": when,
                   **{f"report_{i}": (report[i] if i < len(report) else None) for i in range(18)},
                   "bandwidth": "0.005-150 Hz", "filtering": "60 Hz  notch Baseline filter", "rr_interval": 659,
                   "p_onset": 40, "p_end": 128, "qrs_onset": 170, "qrs_end": 258, "t_end": 518, "p_axis": 81,
                   "qrs_axis": 77, "t_axis": 79})
        if write:
            folder = ecg / Path(rel).parent
            folder.mkdir(parents=True)
            sig = np.stack([0.5 * np.sin(2 * np.pi * (1 + 0.1 * i + 0.2 * k) * t) for i in range(12)], axis=1)
            wfdb.wrsamp(study, fs=500, units=["mV"] * 12, sig_name=MIMIC_ECG_LEADS, p_signal=sig, fmt=["16"] * 12,
                        adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    ecg.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(ecg / "record_list.csv", index=False)
    pd.DataFrame(mm).to_csv(ecg / "machine_measurements.csv", index=False)

    images = [  # dicom_id, subject, study, view, StudyDate, StudyTime, Cardiomegaly, No Finding, split
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", 21800723, 93014.531, 1.0, None, "train"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", 21800723, 93014.531, 1.0, None, "train"),
        ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000117", "53189527", "AP", 21831020, 154213.0, -1.0, None, "validate"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000999", "55000001", "PA", 21500101, 80000.0, None, 1.0, "test"),
    ]
    meta, chex, split = [], {}, []
    for did, subject, study, view, date, time, cardio, nofind, sp in images:
        meta.append({"dicom_id": did, "subject_id": subject, "study_id": study,
                     "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view, "Rows": 64,
                     "Columns": 64, "StudyDate": date, "StudyTime": time,
                     "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                     "ViewCodeSequence_CodeMeaning": "postero-anterior", "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
        chex[study] = {"subject_id": subject, "study_id": study, **{c: None for c in CHEXPERT_COLUMNS},
                       "Cardiomegaly": cardio, "No Finding": nofind}
        split.append({"dicom_id": did, "study_id": study, "subject_id": subject, "split": sp})
        folder = cxr / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(folder / f"{did}.jpg")
    pd.DataFrame(meta).to_csv(cxr / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(list(chex.values())).to_csv(cxr / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(cxr / "mimic-cxr-2.0.0-split.csv", index=False)
    return top


def test_mimic_fake_tree(mimic_tree):
    res = adapt_mimic(mimic_tree)
    ecg, cxr = res.ecg_index.set_index("exam_id"), res.cxr_index.set_index("exam_id")
    assert list(ecg.index) == ["40689238", "44458630", "45090959"]
    for p in ecg["path"]:
        rec = read_ecg(p)
        assert rec.fs == 500.0 and rec.leads[:6] == ("I", "II", "III", "aVR", "aVL", "aVF")  # aVF/aVL reordered
    assert ecg["path"].iloc[0].endswith("files/p1000/p10000032/s40689238/40689238.hea")
    lab = res.labels.set_index("exam_id")
    assert lab.loc[list(ecg.index), "lvh"].to_list() == [1, 0, 0]
    assert lab.loc[list(ecg.index), "normal_ecg"].to_list() == [0, 1, 0]
    assert ecg["atrial_fibrillation"].to_list() == [0, 0, 1]
    assert ecg.loc["40689238", "exam_datetime"] == "2180-07-23T08:44:00"
    # X-rays: lateral view excluded, StudyTime without its leading zero parsed, CheXpert policies
    assert len(cxr) == 3 and set(cxr["view_position"]) == {"PA", "AP"}
    assert cxr.loc["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "exam_datetime"] == "2180-07-23T09:30:14"
    cx = lab.loc[list(cxr.index)]
    assert cx["cardiomegaly"].to_list()[0] == 1 and pd.isna(cx["cardiomegaly"].iloc[1])  # -1 -> excluded label
    assert cx["cardiomegaly"].iloc[2] == 0  # not mentioned + No Finding -> negative
    assert cx["split"].to_list() == ["train", "val", "test"]
    for p in cxr["path"]:
        assert read_cxr(p).pixels.shape == (64, 64)
    reasons = sorted(res.exclusions["reason"])
    assert reasons == ["WFDB .hea file not found", "view LATERAL not in PA/AP"]
    # pairs: same subject_id, within 7 days: subject 10000032's X-ray with both ECGs of that morning
    pairs = res.extra["pairs"]
    assert pairs[["patient_id", "ecg_exam_id"]].values.tolist() == [["10000032", "40689238"], ["10000032", "44458630"]]
    assert pairs["days_cxr_to_ecg"].round(4).to_list() == [round(-46.2333 / 1440, 4), round(23.7667 / 1440, 4)]
    assert len(link_ecg_cxr(res.ecg_index, res.cxr_index, within_days=40)) == 3  # 10000117: 32 days apart
    # the index tables go straight into the library's cohort builder (with an echo index, e.g. MIMIC-IV-ECHO)
    echo = pd.DataFrame({"patient_id": ["10000032"], "exam_id": ["echo1"], "exam_datetime": ["2180-07-25"],
                         "peak_velocity_m_s": [3.1], "mean_gradient_mmhg": [25.0], "ava_cm2": [1.1], "age": [70]})
    cohort = build_cohort(res.ecg_index, res.cxr_index, echo, None, CohortConfig()).manifest
    assert sorted(cohort["ecg_exam_id"]) == ["40689238", "44458630"] and set(cohort["label"]) == {1}
    assert set(cohort["cxr_exam_id"]) == {"02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"}
    other = adapt_mimic(mimic_tree, config=MimicConfig(uncertain="positive", views=("PA", "AP", "LATERAL")))
    assert len(other.cxr_index) == 4
    assert other.labels.set_index("exam_id").loc["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "cardiomegaly"] == 1
    assert cxr_datetime(21800723, 93014.531) == "2180-07-23T09:30:14" and cxr_datetime("bad", 1) is None


def test_mimic_malformed_and_cli(mimic_tree, tmp_path, capsys):
    cxr_root = mimic_tree / "mimic-cxr-jpg" / "2.0.0"
    broken = tmp_path / "cxr"
    shutil.copytree(cxr_root, broken)
    meta = pd.read_csv(broken / "mimic-cxr-2.0.0-metadata.csv").drop(columns=["StudyDate"])
    meta.to_csv(broken / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(ReadError, match=r"mimic-cxr-2\.0\.0-metadata\.csv: .*lacks column\(s\) StudyDate"):
        adapt_mimic(cxr_root=broken)
    with pytest.raises(ReadError, match="no MIMIC-IV-ECG"):
        adapt_mimic(tmp_path / "cxr" / "files")
    out = tmp_path / "adapted"
    assert main(["adapt", "mimic", str(mimic_tree), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 same-subject ECG-X-ray pairs" in printed
    assert sorted(p.name for p in out.iterdir()) == ["adapter.json", "cxr_index.csv", "ecg_index.csv",
                                                      "exclusions.csv", "labels.csv", "pairs.csv"]
    info = json.loads((out / "adapter.json").read_text())
    assert info["counts"]["pairs"] == 2 and info["counts"]["ecg"] == 3
    assert main(["adapt", "mimic", "--out", str(out)]) == 2  # nothing to read: one-line error, status 2


# --------------------------------------------------------------------------------------------------
# Pseudo-paired cohorts
# --------------------------------------------------------------------------------------------------
def test_pseudo_pairs_never_share_a_file_across_splits(ptbxl, nih):
    res = pseudo_paired_cohort(ptbxl, nih, None, PairingConfig(n_train=60, n_val=20, n_test=20, replace=True, seed=3))
    m = res.manifest
    for col in ("ecg_source_exam_id", "cxr_source_exam_id", "ecg_source_patient_id"):
        sets = [set(m.loc[m["split"] == s, col]) for s in ("train", "val", "test")]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2]), col
    for pool in (res.ecg_pool, res.cxr_pool):  # the pools themselves are disjoint by split
        assert pool.table.groupby("exam_id")["split"].nunique().max() == 1
    assert res.ecg_pool.table.groupby("patient_id")["split"].nunique().max() == 1
    # the ECG pool follows PTB-XL's strat_fold map; NIH is split by file, and says so
    fold_split = ptbxl.labels.set_index("exam_id")["split"]
    assert (res.ecg_pool.table["split"] == res.ecg_pool.table["exam_id"].map(fold_split)).all()
    assert res.cxr_pool.split_unit.startswith("by file")
    # pool labels: LVH vs strictly normal ECG; records that are neither are listed, not lost
    assert res.ecg_pool.counts()["train"]["positive"] == 11 and len(res.ecg_pool.table) == 243
    assert len(res.ecg_pool.table) + len(res.ecg_pool.exclusions) == 353
    # modality labels agree with the source labels
    assert (m["ecg_label"] == m["ecg_source_exam_id"].map(ptbxl.labels.set_index("exam_id")["lvh"])).all()
    assert (m["cxr_label"] == m["cxr_source_exam_id"].map(nih.labels.set_index("exam_id")["cardiomegaly"])).all()
    assert m["patient_id"].str.fullmatch(r"PSEUDO-(train|val|test)-\d{5}").all() and m["record_id"].is_unique
    assert m["pseudo_paired"].all()
    # split by patient here instead of strat_fold: still disjoint
    byp = pseudo_paired_cohort(ptbxl, nih, None, PairingConfig(n_train=30, n_val=10, n_test=10, replace=True),
                               use_dataset_split=False)
    assert byp.ecg_pool.split_unit.startswith("by patient_id")
    assert byp.ecg_pool.table.groupby("patient_id")["split"].nunique().max() == 1


def test_pseudo_pair_rates_match_the_configuration(ptbxl, nih):
    cfg = PairingConfig(n_train=20000, n_val=0, n_test=0, prevalence=0.3, sens_ecg=0.7, spec_ecg=0.9,
                        sens_cxr=0.6, spec_cxr=0.8, replace=True, seed=11)
    m = build_pseudo_paired(make_pool(ptbxl, "ecg", "lvh", "norm"), make_pool(nih, "cxr", "cardiomegaly"), cfg)
    r = realised_rates(m)["train"]
    assert r["n"] == 20000 and abs(r["prevalence"] - 0.3) < 0.015
    for key in ("sens_ecg", "spec_ecg", "sens_cxr", "spec_cxr"):
        assert abs(r[key] - getattr(cfg, key)) < 0.02, key
    # the two witnesses are independent given D
    for d in (0, 1):
        part = m[m["label"] == d]
        assert abs(np.corrcoef(part["ecg_label"], part["cxr_label"])[0, 1]) < 0.04
    o = oracle_auroc(PairingConfig(sens_ecg=0.8, spec_ecg=0.8, sens_cxr=0.8, spec_cxr=0.8))
    assert o["ecg_label_only"] == pytest.approx(0.8) and o["both_labels"] == pytest.approx(0.896)


def test_pseudo_pairs_seeded_and_without_replacement(ptbxl, nih):
    cfg = PairingConfig(n_train=16, n_val=4, n_test=4, prevalence=0.25, seed=5)
    ep, cp = make_pool(ptbxl, "ecg", "lvh", "norm"), make_pool(nih, "cxr", "cardiomegaly")
    a, b = build_pseudo_paired(ep, cp, cfg), build_pseudo_paired(ep, cp, cfg)
    pd.testing.assert_frame_equal(a, b)
    c = build_pseudo_paired(ep, cp, dataclasses.replace(cfg, seed=6))
    assert not a[["ecg_exam_id", "cxr_exam_id"]].equals(c[["ecg_exam_id", "cxr_exam_id"]])
    assert a["ecg_exam_id"].is_unique and a["cxr_exam_id"].is_unique  # each real file at most once
    with pytest.raises(ConfigError, match=r"split 'train' needs \d+ positive ECG records but the pool has 11"):
        build_pseudo_paired(ep, cp, PairingConfig(n_train=200, n_val=0, n_test=0))
    exact = build_pseudo_paired(ep, cp, dataclasses.replace(cfg, exact_prevalence=True, replace=True, n_train=40))
    assert exact.groupby("split")["label"].sum().to_dict() == {"test": 1, "train": 10, "val": 1}
    with pytest.raises(ConfigError, match="sens_ecg"):
        PairingConfig(sens_ecg=1.2)
    with pytest.raises(ConfigError, match="no column 'lvh'"):
        make_pool(nih, "cxr", "lvh")


def test_pseudo_paired_cli_cache_and_fit_end_to_end(shared_data, tmp_path, capsys):
    from cardiofusion.cache import CacheConfig, build_cache, open_cache
    from cardiofusion.models import ModelConfig
    from cardiofusion.transforms.preprocess import PreprocessConfig
    from cardiofusion.training import TrainConfig, fit

    ecg_dir, cxr_dir, cohort = tmp_path / "ptbxl", tmp_path / "nih", tmp_path / "pseudo"
    assert main(["adapt", "ptbxl", str(shared_data / "ptbxl"), "--out", str(ecg_dir), "--sampling-rate", "100",
                 "--fold-map", SHARED_FOLD_MAP]) == 0
    assert main(["adapt", "nih", str(shared_data / "nih-cardiomegaly-128"), "--out", str(cxr_dir)]) == 0
    assert main(["pairing", "build", "--ecg", str(ecg_dir), "--cxr", str(cxr_dir), "--out", str(cohort),
                 "--n-train", "24", "--n-val", "8", "--n-test", "8", "--exact-prevalence", "--replace",
                 "--sens-ecg", "0.9", "--spec-ecg", "0.9", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "PSEUDO-PAIRED cohort (NOT real paired data)" in printed
    assert load_adapted(ecg_dir).labels["lvh"].sum() == 18
    # labelled as pseudo-paired in every output
    manifest = cohort / "manifest.parquet"
    assert is_pseudo_paired(manifest) and is_pseudo_paired(pd.read_parquet(manifest))
    assert "NOT REAL PAIRED DATA" in (cohort / "PSEUDO_PAIRED.txt").read_text()
    info = json.loads((cohort / "pairing.json").read_text())
    assert info["pseudo_paired"] is True and info["config"]["sens_ecg"] == 0.9
    for name in ("ecg_pool.csv", "cxr_pool.csv"):
        assert pd.read_csv(cohort / name)["pseudo_paired_pool"].all()
    m = pd.read_parquet(manifest)
    assert m.groupby("split").size().to_dict() == {"test": 8, "train": 24, "val": 8}
    assert m.groupby("split")["label"].sum().to_dict() == {"test": 4, "train": 12, "val": 4}
    # the library's cache and training take it unchanged
    cache_dir = tmp_path / "cache"
    report = build_cache(manifest, cache_dir, CacheConfig(fs=100.0, duration_s=10.0, image_size=32), workers=1,
                         progress=False)
    assert report.counts["ecg"]["failed"] == 0 and report.counts["cxr"]["failed"] == 0
    assert len(open_cache(cache_dir).records(manifest)) == 40
    register_stand_in_encoders("adapters_test_ecg", "adapters_test_cxr")
    config = TrainConfig(cache_dir=str(cache_dir), manifest=str(manifest),
                         model=ModelConfig(fusion="cooperative", ecg_encoder="adapters_test_ecg",
                                           cxr_encoder="adapters_test_cxr", rho=0.5),
                         preprocess=PreprocessConfig(fs=100.0, window_s=2.0, eval_stride_s=2.0, image_size=32),
                         batch_size=8, lr=1e-2, max_epochs=1, num_workers=0, accelerator="cpu",
                         log_every_n_steps=1)
    result = fit(config, tmp_path / "run", progress=False)
    scores = pd.read_csv(result.val_scores)
    assert len(scores) == 8 and np.isfinite(scores.select_dtypes("number").to_numpy()).all()
    assert np.isfinite(result.best_val_loss)
