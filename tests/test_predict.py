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
