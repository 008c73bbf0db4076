"""``cardiofusion predict`` (one patient, --json, --explain, --batch) and ONNX Runtime parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_bundle import screening_setup

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return screening_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


def _cli(args, capsys) -> tuple[int, str, str]:
    from cardiofusion.cli import main

    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------------
def test_predict_json_one_patient(setup, capsys):
    row = setup["val"].iloc[0]
    rc, out, _ = _cli(["predict", setup["bundle"], "--ecg", row["ecg_path"], "--cxr", row["cxr_path"], "--json",
                       "--patient-id", "P-001"], capsys)
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert {"probability", "decision", "modalities", "scores"} <= set(d)
    assert d["patient_id"] == "P-001" and d["modalities"] == ["ecg", "cxr"]
    assert d["decision"] in ("positive", "negative")
    assert (d["decision"] == "positive") == (d["probability"] >= d["threshold"])
    assert set(d["scores"]) == {"fused", "ecg", "cxr"}
    assert d["scores"]["fused"] == pytest.approx(row["score"], abs=1e-5)


def test_predict_text_and_single_modality(setup, capsys):
    row = setup["val"].iloc[1]
    rc, out, _ = _cli(["predict", setup["bundle"], "--cxr", row["cxr_path"]], capsys)
    assert rc == 0
    assert "probability" in out and "decision" in out and "modalities   cxr" in out
    assert "X-ray only" in out  # the single-modality warning reaches the clinician
    rc, out, _ = _cli(["predict", setup["bundle"], "--ecg", row["ecg_path"], "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["modalities"] == ["ecg"] and d["scores"]["cxr"] is None
    # cooperative with one modality scores 2 x the available branch
    assert d["scores"]["fused"] == pytest.approx(2 * row["score_ecg"], abs=1e-5)


def test_predict_errors_are_one_line(setup, tmp_path, capsys):
    rc, _, err = _cli(["predict", setup["bundle"]], capsys)
    assert rc == 2 and "give --ecg FILE and/or --cxr FILE" in err
    bad = tmp_path / "broken.csv"
    bad.write_text("I,II\n1,2\n")
    rc, _, err = _cli(["predict", setup["bundle"], "--ecg", bad], capsys)
    assert rc == 2 and err.startswith(f"cardiofusion: error: {bad}:") and len(err.strip().splitlines()) == 1


def test_predict_explain_writes_heat_maps(setup, tmp_path, capsys):
    row = setup["val"].iloc[2]
    out_dir = tmp_path / "maps"
    rc, out, _ = _cli(["predict", setup["bundle"], "--ecg", row["ecg_path"], "--cxr", row["cxr_path"],
                       "--explain", out_dir, "--json", "--patient-id", "P 7"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert set(d["explanations"]) == {"cxr", "ecg"}
    for kind in ("cxr", "ecg"):
        path = Path(d["explanations"][kind])
        assert path.parent == out_dir and path.name == f"P_7_{kind}.png"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    # another Grad-CAM depth reaches the explanation; a layer the encoder lacks is a one-line error
    default_png = (out_dir / "P_7_cxr.png").read_bytes()
    rc, out, _ = _cli(["predict", setup["bundle"], "--cxr", row["cxr_path"], "--explain", out_dir, "--json",
                       "--patient-id", "P 7", "--cxr-layer", "-2"], capsys)
    assert rc == 0 and (out_dir / "P_7_cxr.png").read_bytes() != default_png
    rc, _, err = _cli(["predict", setup["bundle"], "--cxr", row["cxr_path"], "--explain", out_dir,
                       "--cxr-layer", "blocks.99"], capsys)
    assert rc == 2 and "blocks.99" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------------
# Many patients
# --------------------------------------------------------------------------------------------------
def test_batch_predicts_good_rows_and_lists_failures(setup, tmp_path, capsys):
    from cardiofusion.bundle import load

    val = setup["val"].head(3)
    bad = tmp_path / "not_an_xray.png"
    bad.write_bytes(b"this is not an image")
    table = pd.DataFrame({
        "patient_id": ["A", "B", "C", "D"],
        "ecg": [val.iloc[0]["ecg_path"], val.iloc[1]["ecg_path"], "", str(tmp_path / "missing.csv")],
        "cxr": [val.iloc[0]["cxr_path"], str(bad), val.iloc[2]["cxr_path"], ""],
    })
    table_path = tmp_path / "patients.csv"
    table.to_csv(table_path, index=False)
    out = tmp_path / "predictions.csv"
    rc, _, err = _cli(["predict", setup["bundle"], "--batch", table_path, "--out", out, "--no-progress"], capsys)
    assert rc == 1  # some rows failed
    assert "predicted 2 of 4 patients" in err
    assert "row 2 (B):" in err and "row 4 (D):" in err and "no such file" in err
    result = pd.read_csv(out, dtype={"patient_id": str})
    assert list(result["patient_id"]) == ["A", "B", "C", "D"]
    assert list(result["status"]) == ["ok", "failed", "ok", "failed"]
    assert result.loc[1, "error"].startswith(str(bad)) and pd.isna(result.loc[1, "probability"])
    assert result.loc[2, "modalities"] == "cxr"
    single = load(setup["bundle"]).predict(ecg=val.iloc[0]["ecg_path"], cxr=val.iloc[0]["cxr_path"])
    assert result.loc[0, "probability"] == pytest.approx(single.probability, abs=1e-6)
    assert result.loc[0, "score"] == pytest.approx(val.iloc[0]["score"], abs=1e-5)


def test_batch_jsonl_output(setup, tmp_path):
    from cardiofusion.bundle import load, predict_batch

    val = setup["val"].head(2)
    table = pd.DataFrame({"id": ["x1", "x2"], "ecg_path": val["ecg_path"], "cxr_path": val["cxr_path"]})
    report = predict_batch(load(setup["bundle"]), table, tmp_path / "out.jsonl", progress=False,
                           explain=tmp_path / "maps")
    assert report.n_ok == 2 and report.failures.empty
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["patient_id"] for r in rows] == ["x1", "x2"]
    assert rows[1]["score"] == pytest.approx(val.iloc[1]["score"], abs=1e-5)
    assert Path(rows[0]["heat_map_cxr"]) == tmp_path / "maps" / "x1_cxr.png"
    assert Path(rows[1]["heat_map_ecg"]).read_bytes().startswith(PNG_MAGIC)


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------
def _inputs(n_windows: int, n_records: int, has_ecg, has_cxr, leads=12, width=500, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    record_index = torch.arange(n_windows) % n_records
    return {"ecg": torch.randn(n_windows, leads, width, generator=g) * 0.3,
            "ecg_mask": torch.rand(n_windows, leads, generator=g) > 0.1,
            "cxr": torch.randn(n_records, 1, size, size, generator=g),
            "has_ecg": torch.as_tensor(has_ecg, dtype=torch.bool)[record_index],
            "has_cxr": torch.as_tensor(has_cxr, dtype=torch.bool)[record_index],
            "record_index": record_index}


@pytest.mark.parametrize("case", ["both", "ecg_only", "cxr_only", "mixed"])
def test_onnx_runtime_matches_pytorch(setup, case):
    """ONNX Runtime on the bundle's graph == the PyTorch model's own forward (window level), to 1e-4."""
    from cardiofusion.bundle import load
    from cardiofusion.bundle.onnx import OnnxRunner

    screener = load(setup["bundle"])
    runner = OnnxRunner(str(setup["bundle"] / "model.onnx"))
    flags = {"both": ([1, 1, 1], [1, 1, 1]), "ecg_only": ([1, 1, 1], [0, 0, 0]),
             "cxr_only": ([0, 0, 0], [1, 1, 1]), "mixed": ([1, 0, 1], [1, 1, 0])}[case]
    x = _inputs(7, 3, *flags)
    ort = runner.run({k: v.numpy() for k, v in x.items()})
    batch = {"ecg": torch.where(x["has_ecg"][:, None, None], x["ecg"], 0.0),
             "ecg_mask": x["ecg_mask"] & x["has_ecg"][:, None], "cxr": x["cxr"][x["record_index"]],
             "has_ecg": x["has_ecg"], "has_cxr": x["has_cxr"]}
    with torch.no_grad():
        ref = screener.model(batch)
    torch.testing.assert_close(torch.from_numpy(ort["score"]), ref.score, atol=1e-4, rtol=0, equal_nan=True)
    torch.testing.assert_close(torch.from_numpy(ort["prob"]), ref.prob, atol=1e-4, rtol=0, equal_nan=True)
    for m in ("ecg", "cxr"):
        torch.testing.assert_close(torch.from_numpy(ort[f"score_{m}"]), ref.branch_scores[m], atol=1e-4, rtol=0,
                                   equal_nan=True)
    assert np.array_equal(ort["used"], ref.used.numpy())


def test_predict_runtime_onnx_matches_torch(setup, capsys):
    from cardiofusion.bundle import load

    torch_s, onnx_s = load(setup["bundle"]), load(setup["bundle"], runtime="onnx")
    for _, row in setup["val"].head(3).iterrows():
        for kwargs in ({"ecg": row["ecg_path"], "cxr": row["cxr_path"]}, {"ecg": row["ecg_path"]},
                       {"cxr": row["cxr_path"]}):
            a, b = torch_s.predict(**kwargs), onnx_s.predict(**kwargs)
            assert a.modalities == b.modalities and a.decision == b.decision
            assert b.probability == pytest.approx(a.probability, abs=1e-4)
            for k in ("fused", "ecg", "cxr"):
                assert (a.scores[k] is None) == (b.scores[k] is None)
                if a.scores[k] is not None:
                    assert b.scores[k] == pytest.approx(a.scores[k], abs=1e-4)
    row = setup["val"].iloc[0]
    rc, out, _ = _cli(["predict", setup["bundle"], "--runtime", "onnx", "--ecg", row["ecg_path"], "--cxr",
                       row["cxr_path"], "--json"], capsys)
    assert rc == 0 and json.loads(out)["scores"]["fused"] == pytest.approx(row["score"], abs=1e-4)


@pytest.mark.parametrize("fusion", ["ecg", "cxr", "early"])
def test_onnx_export_of_every_fusion_head(fusion):
    """Every registered head exports (tiny untrained models) and ORT agrees with the model's forward."""
    from cardiofusion.bundle.onnx import OnnxRunner, export_onnx
    from cardiofusion.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion=fusion, ecg_encoder="ecg_resnet_tiny_transformer",
                                    cxr_encoder="cxr_tiny")).eval()
    graph, _ = export_onnx(model, leads=12, window=500, image_size=32)
    runner = OnnxRunner(graph)
    x = _inputs(5, 2, [1, 0], [1, 1])
    ort = runner.run({k: v.numpy() for k, v in x.items()})
    batch = {"ecg": x["ecg"], "ecg_mask": x["ecg_mask"], "cxr": x["cxr"][x["record_index"]],
             "has_ecg": x["has_ecg"], "has_cxr": x["has_cxr"]}
    with torch.no_grad():
        ref = model(batch)
    torch.testing.assert_close(torch.from_numpy(ort["score"]), ref.score, atol=1e-4, rtol=0, equal_nan=True)
    assert np.array_equal(ort["used"], ref.used.numpy())


# --------------------------------------------------------------------------------------------------
# Batch output safety (issue 13): inputs never overwritten, rows written as they finish, no CSV
# injection, real workbooks, unknown extensions refused
# --------------------------------------------------------------------------------------------------
def test_batch_refuses_an_output_that_is_an_input(setup, tmp_path, capsys):
    import os
    import shutil

    row = setup["val"].iloc[0]
    ecg = tmp_path / "ecg_copy.csv"
    shutil.copyfile(row["ecg_path"], ecg)
    table_path = tmp_path / "patients.csv"
    pd.DataFrame({"patient_id": ["A"], "ecg": [str(ecg)], "cxr": [row["cxr_path"]]}).to_csv(table_path, index=False)
    os.link(table_path, tmp_path / "hardlink.csv")
    (tmp_path / "symlink.csv").symlink_to(table_path)
    inputs = {p: p.read_bytes() for p in (table_path, ecg)}
    for out in (table_path, tmp_path / "hardlink.csv", tmp_path / "symlink.csv", ecg,
                tmp_path / "." / "patients.csv", Path(setup["bundle"]) / "predictions.csv"):
        rc, _, err = _cli(["predict", setup["bundle"], "--batch", table_path, "--out", out, "--no-progress"], capsys)
        assert rc == 2, (out, err)
        assert err.startswith(f"cardiofusion: error: {out}:") and len(err.strip().splitlines()) == 1, err
        assert "input" in err or "bundle" in err
    assert {p: p.read_bytes() for p in inputs} == inputs
    assert not (Path(setup["bundle"]) / "predictions.csv").exists()


def test_batch_with_a_bad_row_in_the_middle_writes_every_row_as_it_finishes(setup, tmp_path):
    import os

    from cardiofusion.bundle import load, predict_batch

    val = setup["val"]
    fifo = tmp_path / "stuck.png"
    os.mkfifo(fifo)  # used to block the whole batch forever
    table = pd.DataFrame({"patient_id": ["P1", "P2", "BAD", "P4", "P5"],
                          "ecg": [val.iloc[i]["ecg_path"] for i in range(2)] + [""] +
                                 [val.iloc[i]["ecg_path"] for i in range(2, 4)],
                          "cxr": ["", "", str(fifo), "", ""]})
    out = tmp_path / "out.csv"
    seen: list[int] = []

    def on_row(i, row):
        # every row up to this one is already in the file when it finishes
        written = pd.read_csv(out, dtype={"patient_id": str})
        assert list(written["patient_id"]) == list(table["patient_id"][: i + 1])
        seen.append(i)

    screener = load(setup["bundle"])
    report = predict_batch(screener, table, out, chunk=1, progress=False, on_row=on_row)
    assert seen == [0, 1, 2, 3, 4] and report.n_ok == 4
    result = pd.read_csv(out, dtype={"patient_id": str})
    assert list(result["status"]) == ["ok", "ok", "failed", "ok", "ok"]
    assert result.loc[2, "error"] == f"{fifo}: file is not a regular file (a FIFO); give a file"
    assert result.loc[[0, 1, 3, 4], "probability"].notna().all()

    # an interrupted batch keeps the rows it finished
    original = screener.prepare
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    screener.prepare = interrupted
    with pytest.raises(KeyboardInterrupt):
        predict_batch(screener, table, tmp_path / "partial.jsonl", chunk=1, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "partial.jsonl").read_text().splitlines()]
    assert [r["patient_id"] for r in rows] == ["P1", "P2", "BAD"]


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-3", "@SUM(A1)", "=1\t2", "plain-id"]


def _formula_table(setup) -> pd.DataFrame:
    row = setup["val"].iloc[0]
    return pd.DataFrame({"patient_id": FORMULAS, "ecg": [row["ecg_path"]] * len(FORMULAS)})


def test_batch_csv_escapes_formulas_but_not_numbers(setup, tmp_path):
    import csv

    from cardiofusion.bundle import load, predict_batch

    out = tmp_path / "out.csv"
    predict_batch(load(setup["bundle"]), _formula_table(setup), out, progress=False)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["patient_id"] for r in rows] == ["'" + p for p in FORMULAS[:-1]] + ["plain-id"]
    for r in rows:
        assert r["status"] == "ok"
        for column in ("probability", "threshold", "score", "score_ecg"):
            float(r[column])  # a plain number (negative scores included), never prefixed


def test_escape_formula_follows_owasp():
    from cardiofusion.bundle.batch import escape_formula

    for cell in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert escape_formula(cell) == "'" + cell
    for value in ("abc", "1-2", "", -0.5, 3, None):
        assert escape_formula(value) == value


def test_batch_xlsx_is_a_real_workbook_and_unknown_extensions_are_refused(setup, tmp_path, capsys):
    openpyxl = pytest.importorskip("openpyxl")
    from cardiofusion.bundle import load, predict_batch

    out = tmp_path / "out.xlsx"
    report = predict_batch(load(setup["bundle"]), _formula_table(setup), out, progress=False)
    assert report.n_ok == len(FORMULAS)
    sheet = openpyxl.load_workbook(out).active
    header = [c.value for c in sheet[1]]
    cells = {name: [row[i] for row in sheet.iter_rows(min_row=2)] for i, name in enumerate(header)}
    assert [c.value for c in cells["patient_id"]] == ["'" + p for p in FORMULAS[:-1]] + ["plain-id"]
    assert all(c.data_type == "s" for c in cells["patient_id"])  # text, never a formula
    assert all(c.data_type == "n" and 0 <= c.value <= 1 for c in cells["probability"])
    assert all(c.data_type == "n" for c in cells["score"])
    table_path = tmp_path / "t.csv"
    _formula_table(setup).to_csv(table_path, index=False)
    for bad in ("out.txt", "out.xls", "out"):
        rc, _, err = _cli(["predict", "no-such-bundle", "--batch", table_path, "--out", tmp_path / bad], capsys)
        assert rc == 2 and "unknown output extension" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / bad).exists()


# --------------------------------------------------------------------------------------------------
# Inputs that would give a silent wrong answer (issue 13): non-finite scores, units, signal quality, colour
# --------------------------------------------------------------------------------------------------
def _nan_bundle(setup, tmp_path, prefix: str = "") -> Path:
    """A copy of the tiny bundle whose float weights under ``prefix`` are NaN (digests and hash redone)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from cardiofusion.bundle.format import read_manifest, write_manifest

    dst = tmp_path / f"nan_bundle{prefix.replace('.', '_')}"
    shutil.copytree(setup["bundle"], dst)
    state = load_file(str(dst / "model.safetensors"))
    for key in [k for k, v in state.items() if k.startswith(prefix) and v.is_floating_point()]:
        state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(dst / "model.safetensors"))
    manifest = read_manifest(dst)
    manifest.pop("files", None)
    write_manifest(dst, manifest)
    return dst


def test_nan_weights_are_an_error_everywhere(setup, tmp_path, capsys):
    from cardiofusion.bundle import load
    from cardiofusion.bundle.screener import PredictionError

    bundle = _nan_bundle(setup, tmp_path)
    row = setup["val"].iloc[0]
    with pytest.raises(PredictionError, match="non-finite score"):
        load(bundle).predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
    for extra in ([], ["--json"]):
        rc, out, err = _cli(["predict", bundle, "--ecg", row["ecg_path"], "--cxr", row["cxr_path"], *extra], capsys)
        assert rc != 0 and out == "" and "nan" not in out.lower()
        assert err.startswith("cardiofusion: error: the model gave a non-finite score") and len(err.splitlines()) == 1


def test_nan_score_fails_only_its_batch_row(setup, tmp_path, capsys):
    bundle = _nan_bundle(setup, tmp_path, prefix="fusion.cxr_head")  # NaN whenever an X-ray is scored
    val = setup["val"].head(2)
    table = pd.DataFrame({"patient_id": ["ecg-only", "both"], "ecg": list(val["ecg_path"]),
                          "cxr": ["", val.iloc[1]["cxr_path"]]})
    table.to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = _cli(["predict", bundle, "--batch", tmp_path / "t.csv", "--out", tmp_path / "o.csv",
                       "--no-progress"], capsys)
    result = pd.read_csv(tmp_path / "o.csv", dtype={"patient_id": str})
    assert rc == 1 and list(result["status"]) == ["ok", "failed"]
    assert np.isfinite(result.loc[0, "probability"]) and pd.isna(result.loc[1, "probability"])
    assert "non-finite score" in result.loc[1, "error"] and "row 2 (both): the model gave a non-finite" in err


def test_nan_score_is_an_error_response_of_the_service(setup, tmp_path):
    from cardiofusion.bundle import load
    from cardiofusion.serve.app import ScreeningService
    from cardiofusion.serve.sniff import Upload, UploadError

    service = ScreeningService(load(_nan_bundle(setup, tmp_path)), max_upload_bytes=10_000_000, explain=False)
    row = setup["val"].iloc[0]
    files = {"ecg": [Upload(Path(row["ecg_path"]).read_bytes(), "ecg.csv")],
             "cxr": [Upload(Path(row["cxr_path"]).read_bytes(), "cxr.dcm")]}
    with pytest.raises(UploadError) as e:
        service.predict(files, {"ecg_units": "counts", "ecg_resolution_uv": "1.25"})
    assert e.value.status == 500 and "no valid score" in e.value.message


def _val_ecg_mv(setup, i: int = 0):
    from cardiofusion.io.ecg import read_ecg

    row = setup["val"].iloc[i]
    return read_ecg(row["ecg_path"], fs=row["fs"], units=row["units"], resolution_uv=row["resolution_uv"])


def test_npy_in_mv_is_read_as_inspect_reads_it(setup, tmp_path, capsys):
    """A .npy in mV: predict no longer applies the bundle's counts-of-1.25-uV default (meant for the export's
    CSVs), so it scores like the CSV it came from, and ``inspect`` reports the same units."""
    from cardiofusion.bundle import load

    record = _val_ecg_mv(setup)
    path = tmp_path / "ecg_mv.npy"
    np.save(path, record.signal)  # (12, n) mV at 500 Hz
    screener = load(setup["bundle"])
    from_npy = screener.prepare(ecg=path).ecg
    from_csv = screener.prepare(ecg=setup["val"].iloc[0]["ecg_path"]).ecg
    np.testing.assert_allclose(from_npy.signal, from_csv.signal, atol=2e-3)
    assert screener.predict(ecg=path).scores["fused"] == pytest.approx(
        screener.predict(ecg=setup["val"].iloc[0]["ecg_path"]).scores["fused"], abs=1e-4)
    rc, out, _ = _cli(["inspect", path, "--json"], capsys)
    assert rc == 0 and json.loads(out)["units"] == "mV"


def test_units_mistake_is_refused_and_unusual_signal_flagged(setup, tmp_path, capsys):
    from cardiofusion.errors import ReadError
    from cardiofusion.transforms.quality import check_ecg_quality

    record = _val_ecg_mv(setup)
    wrong = tmp_path / "uv_as_mv.npy"
    np.save(wrong, record.signal * 1000)  # microvolts in a file read as millivolts
    rc, out, err = _cli(["predict", setup["bundle"], "--ecg", wrong], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"cardiofusion: error: {wrong}: amplitudes look like microvolts (or counts) read as millivolts")
    from cardiofusion.bundle import load

    with pytest.raises(ReadError, match="amplitudes look like"):
        load(setup["bundle"]).predict(ecg=wrong)

    large = tmp_path / "large.npy"  # median QRS 12 mV: possible only with a units slip -> scored, with a warning
    np.save(large, record.signal * (12.0 / check_ecg_quality(record).qrs_mv))
    rc, out, _ = _cli(["predict", setup["bundle"], "--ecg", large, "--json"], capsys)
    assert rc == 0 and any("ECG unusually large QRS amplitudes" in w for w in json.loads(out)["warnings"])
    rc, out, _ = _cli(["predict", setup["bundle"], "--ecg", large], capsys)
    assert rc == 0 and "warning      ECG unusually large QRS amplitudes" in out


def test_colour_xray_warns_or_is_refused(setup, tmp_path, capsys):
    from PIL import Image

    from cardiofusion.io.cxr import read_cxr

    grey = read_cxr(setup["val"].iloc[0]["cxr_path"]).pixels
    tinted = np.clip(np.stack([grey.astype(int) + 6, grey, grey.astype(int) - 6], axis=2), 0, 255).astype(np.uint8)
    Image.fromarray(tinted).save(tmp_path / "tinted.png")
    rc, out, _ = _cli(["predict", setup["bundle"], "--cxr", tmp_path / "tinted.png", "--json"], capsys)
    assert rc == 0 and any("stored in colour" in w for w in json.loads(out)["warnings"])
    photo = np.stack([grey, np.roll(grey, grey.shape[1] // 3, axis=1), 255 - grey], axis=2)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    rc, out, err = _cli(["predict", setup["bundle"], "--cxr", tmp_path / "photo.png"], capsys)
    assert rc == 2 and "colour image, not a radiograph" in err and len(err.strip().splitlines()) == 1


def test_explain_pointing_at_an_existing_file_is_a_one_line_error(setup, tmp_path, capsys):
    row = setup["val"].iloc[0]
    a_file = tmp_path / "maps.png"
    a_file.write_bytes(b"not a folder")
    for args in (["--ecg", row["ecg_path"]], ["--batch", tmp_path / "t.csv", "--out", tmp_path / "o.csv"]):
        rc, _, err = _cli(["predict", setup["bundle"], *args, "--explain", a_file], capsys)
        assert rc == 2 and err.startswith(f"cardiofusion: error: {a_file}: --explain") and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert a_file.read_bytes() == b"not a folder"
