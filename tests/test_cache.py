"""Preprocessing cache: contents equal direct decoding, failures, resume, parallel build, manifest views, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardiofusion import cache as cache_mod
from cardiofusion.cache import CacheConfig, build_cache, open_cache
from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.records import CANONICAL_LEADS

ecg_io = pytest.importorskip("cardiofusion.io.ecg")
cxr_io = pytest.importorskip("cardiofusion.io.cxr")

FS = 500.0
RES_UV = 1.25
#: Small settings: 4 s at 250 Hz, 32-px images (the build logic does not depend on size).
CFG = CacheConfig(fs=250.0, duration_s=4.0, image_size=32)


# --------------------------------------------------------------------------------------------- files
def _write_ecg_csv(path: Path, seconds: float, fs: float, leads=CANONICAL_LEADS, seed=0) -> None:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    mv = {name: 0.8 * np.sin(2 * np.pi * (1.0 + 0.1 * i) * t) + 0.3 + 0.05 * rng.standard_normal(n)
          for i, name in enumerate(leads)}
    counts = {name: np.round(v * 1000 / RES_UV).astype(np.int32) for name, v in mv.items()}
    pd.DataFrame(counts).to_csv(path, index=False)


def _write_dicom(path: Path, rows: int, cols: int, seed=0) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    arr = (rng.integers(0, 4096, size=(rows, cols))).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_png(path: Path, rows: int, cols: int, seed=0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(rows, cols), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    """Six ECG files (one corrupt) and four X-rays (one corrupt), linked by a seven-record manifest."""
    d = tmp_path_factory.mktemp("export")
    ecgs = {
        "E1": ("e1.csv", dict(seconds=4.0, fs=FS)),  # exactly T after resampling
        "E2": ("e2.csv", dict(seconds=6.0, fs=FS)),  # longer: first T kept
        "E3": ("e3.csv", dict(seconds=2.0, fs=FS)),  # shorter: zero-padded
        "E4": ("e4.csv", dict(seconds=4.0, fs=FS, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))),
        "E5": ("e5.csv", dict(seconds=4.0, fs=FS)),
    }
    for i, (name, kw) in enumerate(ecgs.values()):
        _write_ecg_csv(d / name, seed=i, **kw)
    (d / "e_bad.csv").write_text("this is,not\nan,ECG\n")
    _write_dicom(d / "x1.dcm", 40, 30, seed=1)
    _write_dicom(d / "x2.dcm", 30, 50, seed=2)
    _write_png(d / "x3.png", 36, 36, seed=3)
    (d / "x_bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    links = [  # record, ecg exam, ecg file, cxr exam, cxr file
        ("R1", "E1", "e1.csv", "X1", "x1.dcm"),
        ("R2", "E2", "e2.csv", "X1", "x1.dcm"),  # shares X1
        ("R3", "E3", "e3.csv", "X2", "x2.dcm"),
        ("R4", "E4", "e4.csv", "X3", "x3.png"),
        ("R5", "EBAD", "e_bad.csv", "X2", "x2.dcm"),  # bad ECG
        ("R6", "E5", "e5.csv", "XBAD", "x_bad.dcm"),  # bad X-ray
        ("R7", "EBAD", "e_bad.csv", "XBAD", "x_bad.dcm"),  # both bad
    ]
    manifest = pd.DataFrame({
        "record_id": [r[0] for r in links],
        "patient_id": [f"P{i}" for i in range(len(links))],
        "split": "train",
        "label": [0, 1, 0, 1, 0, 1, 0],
        "ecg_exam_id": [r[1] for r in links],
        "ecg_path": [str(d / r[2]) for r in links],
        "cxr_exam_id": [r[3] for r in links],
        "cxr_path": [str(d / r[4]) for r in links],
        "fs": FS,
        "units": "counts",
        "resolution_uv": RES_UV,
    })
    path = d / "manifest.parquet"
    manifest.to_parquet(path, index=False)
    return {"dir": d, "manifest": path, "table": manifest}


@pytest.fixture(scope="module")
def built(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    report = build_cache(export["manifest"], out, CFG, workers=1, progress=False)
    return out, report


# ------------------------------------------------------------------------------------------ contents
def _expected_ecg(path: Path, cfg: CacheConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Independent reference: read + standardize, per-lead median removed, first T samples, zero pad."""
    rec = ecg_io.read_ecg(path, fs=FS, units="counts", resolution_uv=RES_UV)
    rec, mask = ecg_io.standardize(rec, fs=cfg.fs, leads=CANONICAL_LEADS)
    x = rec.signal.astype(np.float64)
    x = x - np.median(x, axis=1, keepdims=True)
    T = cfg.n_samples
    n = min(x.shape[1], T)
    out = np.zeros((12, T))
    out[:, :n] = x[:, :n]
    out[~np.asarray(mask)] = 0
    return out, np.asarray(mask, dtype=bool), n


def test_layout_and_counts(built, export):
    out, report = built
    for name in ("cache.json", "ecg.f16", "cxr.u8", "ecg_index.parquet", "cxr_index.parquet", "failures.csv"):
        assert (out / name).is_file(), name
    assert report.counts["ecg"] == {"total": 6, "ok": 5, "failed": 1, "pending": 0}
    assert report.counts["cxr"] == {"total": 4, "ok": 3, "failed": 1, "pending": 0}
    assert report.decoded == {"ecg": 6, "cxr": 4} and report.complete
    meta = json.loads((out / "cache.json").read_text())
    assert meta["config"] == CFG.to_dict() and meta["complete"] is True
    assert meta["ecg_shape"] == [6, 12, CFG.n_samples] and meta["cxr_shape"] == [4, 32, 32]
    assert len(meta["source_hash"]) == 64 and meta["created"] and meta["updated"]
    assert (out / "ecg.f16").stat().st_size == 6 * 12 * CFG.n_samples * 2
    assert (out / "cxr.u8").stat().st_size == 4 * 32 * 32
    idx = pd.read_parquet(out / "ecg_index.parquet")
    assert list(idx.columns[:5]) == ["exam_id", "path", "row", "status", "reason"]
    assert {"n_samples", "original_fs", "lead_I", "lead_V6"} <= set(idx.columns)


def test_ecg_equals_direct_decoding(built, export):
    out, _ = built
    c = open_cache(out)
    d = export["dir"]
    T = CFG.n_samples
    for exam, name in (("E1", "e1.csv"), ("E2", "e2.csv"), ("E3", "e3.csv"), ("E4", "e4.csv")):
        signal, mask, n = c.ecg(exam)
        assert signal.dtype == np.float32 and signal.shape == (12, T) and mask.shape == (12,)
        ref, ref_mask, ref_n = _expected_ecg(d / name, CFG)
        np.testing.assert_array_equal(mask, ref_mask)
        assert n == ref_n
        np.testing.assert_allclose(signal, ref, rtol=1e-3, atol=1e-3)  # float16 precision
        assert not signal[:, n:].any()
    assert c.ecg("E2")[2] == T and c.ecg("E3")[2] == T // 2
    assert c.ecg("E1")[1].all()
    sig, mask, _ = c.ecg("E4")  # 8 leads in the file: limb leads derived by standardize
    assert mask[CANONICAL_LEADS.index("V1")] and mask[CANONICAL_LEADS.index("II")]
    # medians ~0 on the stored (non-padded) part: the baseline is removed
    assert np.abs(np.median(c.ecg("E1")[0], axis=1)).max() < 0.01
    assert c.fs == CFG.fs and c.leads == CANONICAL_LEADS and c.image_size == 32 and c.n_samples == T


def test_cxr_equals_direct_decoding(built, export):
    out, _ = built
    c = open_cache(out)
    for exam, name in (("X1", "x1.dcm"), ("X2", "x2.dcm"), ("X3", "x3.png")):
        ref = cxr_io.resize_square(cxr_io.read_cxr(export["dir"] / name).pixels, 32, mode="crop")
        img = c.cxr(exam)
        assert img.dtype == np.uint8 and img.shape == (32, 32)
        np.testing.assert_array_equal(img, ref)
    with pytest.raises(KeyError):
        c.cxr("XBAD")
    with pytest.raises(KeyError):
        c.ecg("nope")


def test_failures_listed_with_path_and_reason(built, export):
    out, report = built
    fails = pd.read_csv(out / "failures.csv")
    assert list(fails.columns) == ["modality", "exam_id", "path", "reason"]
    assert sorted(zip(fails.modality, fails.exam_id)) == [("cxr", "XBAD"), ("ecg", "EBAD")]
    row = fails.set_index("exam_id").loc["EBAD"]
    assert row.path == str(export["dir"] / "e_bad.csv") and isinstance(row.reason, str) and row.reason
    assert report.failures.shape[0] == 2
    idx = pd.read_parquet(out / "cxr_index.parquet").set_index("exam_id")
    assert idx.loc["XBAD", "status"] == "failed" and idx.loc["XBAD", "reason"]


def test_unexpected_exception_recorded_with_type(export, tmp_path, monkeypatch):
    real = ecg_io.read_ecg

    def flaky(path, **kw):
        if str(path).endswith("e3.csv"):
            raise ZeroDivisionError("boom")
        return real(path, **kw)

    monkeypatch.setattr(ecg_io, "read_ecg", flaky)
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    fails = report.failures.set_index("exam_id")
    assert fails.loc["E3", "reason"] == "ZeroDivisionError: boom"
    assert report.counts["ecg"]["ok"] == 4


# ------------------------------------------------------------------------------------ resume, workers
def _arrays(out: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    c = open_cache(out)
    return (np.array(c.ecg_array), np.array(c.cxr_array),
            c.ecg_index.drop(columns="path"), c.cxr_index.drop(columns="path"))


def _assert_same_cache(a: Path, b: Path) -> None:
    ea, ca, ia, ja = _arrays(a)
    eb, cb, ib, jb = _arrays(b)
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_array_equal(ca, cb)
    pd.testing.assert_frame_equal(ia, ib)
    pd.testing.assert_frame_equal(ja, jb)


def test_resume_after_interruption(export, built, tmp_path, monkeypatch):
    real = ecg_io.read_ecg
    calls: list[str] = []
    k = 3

    def counting(path, **kw):
        calls.append(Path(path).name)
        if interrupt and len(calls) > k:
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(ecg_io, "read_ecg", counting)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        build_cache(export["manifest"], tmp_path, CFG, workers=1, chunk_size=1, progress=False, save_every_s=0)
    assert len(calls) == k + 1
    meta = json.loads((tmp_path / "cache.json").read_text())
    assert meta["complete"] is False and meta["counts"]["ecg"]["pending"] == 6 - k
    partial = open_cache(tmp_path)
    assert not partial.complete
    assert (partial.excluded(export["manifest"])["reason"].str.contains("not decoded yet")).any()

    first_done = list(calls[:k])
    calls.clear()
    interrupt = False
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    assert report.resumed and report.complete
    assert report.decoded == {"ecg": 6 - k, "cxr": 4}
    assert len(calls) == 6 - k and not set(calls) & set(first_done)  # only the remaining files
    _assert_same_cache(tmp_path, built[0])

    calls.clear()  # a third run has nothing left to do
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    assert calls == [] and report.decoded == {"ecg": 0, "cxr": 0}


def test_pending_rows_redone(export, built, tmp_path):
    build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    idx = pd.read_parquet(tmp_path / "cxr_index.parquet")
    idx.loc[idx.exam_id.isin(["X2", "X3"]), "status"] = "pending"
    idx.to_parquet(tmp_path / "cxr_index.parquet", index=False)
    mm = np.memmap(tmp_path / "cxr.u8", dtype=np.uint8, mode="r+", shape=(4, 32, 32))
    mm[:] = 0  # damage the pending rows (and the others, which must not be redone)
    mm.flush()
    del mm
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    assert report.decoded == {"ecg": 0, "cxr": 2}
    c = open_cache(tmp_path)
    ref = open_cache(built[0])
    for exam in ("X2", "X3"):
        np.testing.assert_array_equal(c.cxr(exam), ref.cxr(exam))
    assert not c.cxr("X1").any()  # finished exams are skipped, not re-decoded


def test_damaged_array_refused(export, tmp_path):
    build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    (tmp_path / "ecg.f16").unlink()
    with pytest.raises(ConfigError, match="damaged"):
        build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False, overwrite=True)
    assert report.complete and report.decoded == {"ecg": 6, "cxr": 4}


def test_retry_failed(export, tmp_path):
    build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    report = build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False, retry_failed=True)
    assert report.decoded == {"ecg": 1, "cxr": 1} and report.counts["ecg"]["failed"] == 1


def test_mismatch_refused_unless_overwrite(export, tmp_path):
    build_cache(export["manifest"], tmp_path, CFG, workers=1, progress=False)
    other = CacheConfig(fs=250.0, duration_s=4.0, image_size=16)
    with pytest.raises(ConfigError, match="image_size"):
        build_cache(export["manifest"], tmp_path, other, workers=1, progress=False)
    smaller = export["table"].iloc[:3]
    with pytest.raises(ConfigError, match="another manifest"):
        build_cache(smaller, tmp_path, CFG, workers=1, progress=False)
    report = build_cache(export["manifest"], tmp_path, other, workers=1, progress=False, overwrite=True)
    assert not report.resumed and open_cache(tmp_path).cxr("X1").shape == (16, 16)
    # re-labelling / re-splitting the cohort does not invalidate the cache
    relabelled = export["table"].assign(split="test", label=1)
    report = build_cache(relabelled, tmp_path, other, workers=1, progress=False)
    assert report.resumed and report.decoded == {"ecg": 0, "cxr": 0}


def test_workers_2_equals_workers_1(export, built, tmp_path):
    report = build_cache(export["manifest"], tmp_path, CFG, workers=2, chunk_size=2, progress=False)
    assert report.counts == built[1].counts
    _assert_same_cache(tmp_path, built[0])


def test_worker_crash_fails_only_that_file(export, built, tmp_path, monkeypatch):
    import os

    real = cxr_io.read_cxr

    def crashing(path, **kw):
        if str(path).endswith("x2.dcm"):
            os._exit(3)  # a segfault in a decoder: the worker process dies
        return real(path, **kw)

    monkeypatch.setattr(cxr_io, "read_cxr", crashing)  # inherited by the forked workers
    report = build_cache(export["manifest"], tmp_path, CFG, workers=2, chunk_size=4, progress=False)
    fails = report.failures.set_index("exam_id")
    assert fails.loc["X2", "reason"] == cache_mod.WORKER_DIED_REASON
    assert report.counts["cxr"] == {"total": 4, "ok": 2, "failed": 2, "pending": 0}
    assert report.counts["ecg"] == built[1].counts["ecg"]
    c, ref = open_cache(tmp_path), open_cache(built[0])
    np.testing.assert_array_equal(c.cxr("X1"), ref.cxr("X1"))
    np.testing.assert_array_equal(c.ecg("E3")[0], ref.ecg("E3")[0])


def test_highpass_and_none_baselines(export, tmp_path):
    from scipy.signal import butter, sosfiltfilt

    rec = ecg_io.read_ecg(export["dir"] / "e1.csv", fs=FS, units="counts", resolution_uv=RES_UV)
    x = ecg_io.standardize(rec, fs=CFG.fs, leads=CANONICAL_LEADS)[0].signal.astype(np.float64)
    refs = {"none": x, "highpass": sosfiltfilt(butter(2, 0.5, btype="highpass", fs=CFG.fs, output="sos"), x, axis=1)}
    for baseline, ref in refs.items():
        cfg = CacheConfig(fs=250.0, duration_s=4.0, image_size=32, baseline=baseline)
        out = tmp_path / baseline
        build_cache(export["table"].iloc[:1], out, cfg, workers=1, progress=False)
        sig = open_cache(out).ecg("E1")[0]
        np.testing.assert_allclose(sig, ref[:, : cfg.n_samples], rtol=1e-3, atol=1e-3)
    assert (np.median(refs["none"], axis=1) > 0.2).all()  # the 0.3 mV offset is kept by "none"
    assert (np.abs(refs["highpass"].mean(axis=1)) < 0.1).all()


def test_config_validation():
    with pytest.raises(ConfigError):
        CacheConfig(baseline="wavelet")
    with pytest.raises(ConfigError):
        CacheConfig(image_mode="zoom")
    with pytest.raises(ConfigError):
        CacheConfig(fs=0)
    assert CacheConfig().n_samples == 7500
    assert CacheConfig.from_dict(CacheConfig().to_dict()) == CacheConfig()


def test_manifest_conflicting_paths(export, tmp_path):
    bad = export["table"].copy()
    bad.loc[1, "ecg_exam_id"] = "E1"  # E1 now points at two files
    with pytest.raises(ReadError, match="E1"):
        build_cache(bad, tmp_path, CFG, workers=1, progress=False)


# ------------------------------------------------------------------------------------- manifest views
def test_records_and_excluded(built, export):
    c = open_cache(built[0])
    recs = c.records(export["manifest"])
    assert list(recs.record_id) == ["R1", "R2", "R3", "R4"]
    np.testing.assert_array_equal(recs.ecg_row, c.ecg_rows(recs.ecg_exam_id))
    np.testing.assert_array_equal(recs.cxr_row, c.cxr_rows(recs.cxr_exam_id))
    assert recs.cxr_row.iloc[0] == recs.cxr_row.iloc[1]  # shared X-ray, one row
    for _, r in recs.iterrows():
        np.testing.assert_array_equal(c.ecg_at(r.ecg_row)[0], c.ecg(r.ecg_exam_id)[0])
        np.testing.assert_array_equal(c.cxr_at(r.cxr_row), c.cxr(r.cxr_exam_id))
    exc = c.excluded(export["table"]).set_index("record_id")
    assert sorted(exc.index) == ["R5", "R6", "R7"]
    assert exc.loc["R5", "reason"] == "unreadable ECG file"
    assert exc.loc["R6", "reason"] == "unreadable X-ray file"
    assert exc.loc["R7", "reason"] == "unreadable ECG and X-ray files"
    assert exc.loc["R5", "detail"].startswith("ECG: ")
    rows = c.ecg_rows(["E1", "EBAD", "missing"])
    assert rows[0] >= 0 and rows[1] == -1 and rows[2] == -1
    import polars as pl

    pd.testing.assert_frame_equal(c.records(pl.from_pandas(export["table"])), recs)  # Polars manifests too
    extra = export["table"].iloc[:1].assign(record_id="R9", ecg_exam_id="E_NEW")
    assert c.excluded(extra)["reason"].iloc[0] == "not in cache (ECG)"


def test_pickle_and_fork_safe(built):
    import pickle

    c = open_cache(built[0])
    a = c.ecg("E1")[0]
    c2 = pickle.loads(pickle.dumps(c))
    assert c2._ecg_mm is None
    np.testing.assert_array_equal(c2.ecg("E1")[0], a)
    assert not c.ecg_array.flags.writeable


def test_open_cache_errors(tmp_path):
    with pytest.raises(ReadError, match="not a cardiofusion cache"):
        open_cache(tmp_path)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_build_and_info(export, tmp_path, capsys):
    from cardiofusion.cli import main

    out = tmp_path / "c"
    rc = main(["cache", "build", "--manifest", str(export["manifest"]), "--out", str(out), "--workers", "1",
               "--fs", "250", "--duration-s", "4", "--image-size", "32", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "ECG" in text and "5 ok" in text and "1 failed" in text
    assert "e_bad.csv" in text and "x_bad.dcm" in text  # failures listed
    assert open_cache(out).config == CFG
    rc = main(["cache", "info", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "250" in text and "complete" in text
    # different settings on the same folder: refused with a clear error, exit 2
    rc = main(["cache", "build", "--manifest", str(export["manifest"]), "--out", str(out), "--workers", "1",
               "--image-size", "16", "--no-progress"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_cli_nothing_decoded(export, tmp_path, capsys):
    from cardiofusion.cli import main

    bad = export["table"].iloc[[6]]
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    rc = main(["cache", "build", "--manifest", str(path), "--out", str(tmp_path / "c"), "--workers", "1",
               "--no-progress"])
    assert rc == 1
    assert "nothing" in (capsys.readouterr().err.lower())


def test_cli_headerless_defaults(export, tmp_path):
    from cardiofusion.cli import main

    table = export["table"].drop(columns=["fs", "units", "resolution_uv"]).iloc[:1]
    path = tmp_path / "m.parquet"
    table.to_parquet(path, index=False)
    rc = main(["cache", "build", "--manifest", str(path), "--out", str(tmp_path / "c"), "--workers", "1",
               "--fs", "250", "--duration-s", "4", "--image-size", "32", "--ecg-fs", "500",
               "--ecg-units", "counts", "--ecg-resolution-uv", "1.25", "--no-progress"])
    assert rc == 0
    ref, _, _ = _expected_ecg(export["dir"] / "e1.csv", CFG)
    np.testing.assert_allclose(open_cache(tmp_path / "c").ecg("E1")[0], ref, rtol=1e-3, atol=1e-3)
