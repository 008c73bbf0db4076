"""Reduced precision (bf16 autocast, int8 ONNX Runtime) with its export-time check, and archive batch
prediction (worker processes, resumable output written exactly once per patient after a kill)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_bundle import screening_setup

LOOSE = {"auroc": 0.2, "flip_fraction": 0.5}  # a 13-record validation split: one flip is 7.7 %


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return screening_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def reduced(setup, tmp_path_factory) -> Path:
    """A bundle offering bf16 and int8 (tolerances loose enough for the tiny model's 13 validation records)."""
    from cardiofusion.bundle import export_bundle

    return export_bundle(setup["run"], tmp_path_factory.mktemp("reduced") / "bundle", precisions=("bf16", "int8"),
                         tolerances=LOOSE)


# --------------------------------------------------------------------------------------------------
# The comparison against fp32
# --------------------------------------------------------------------------------------------------
def test_compare_scores_against_independent_references():
    from sklearn.metrics import roc_auc_score

    from cardiofusion.bundle.precision import PrecisionTolerances, compare_scores
    from cardiofusion.evaluation.calibration import Threshold

    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    ref = y * 1.0 + rng.normal(size=200)
    cand = ref + rng.normal(scale=0.05, size=200)
    y[:3] = np.nan  # unknown labels are left out of the AUROC, not of the flips
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    thr = Threshold(value=0.5)
    check = compare_scores(ref, cand, y, sigmoid, thr, PrecisionTolerances(auroc=1.0, flip_fraction=1.0))
    known = np.isfinite(y)
    a_ref, a_cand = roc_auc_score(y[known], ref[known]), roc_auc_score(y[known], cand[known])
    flips = int(((sigmoid(ref) >= 0.5) != (sigmoid(cand) >= 0.5)).sum())
    assert check["auroc_fp32"] == pytest.approx(a_ref) and check["auroc"] == pytest.approx(a_cand)
    assert check["auroc_diff"] == pytest.approx(abs(a_cand - a_ref))
    assert check["decision_flips"] == flips > 0 and check["flip_fraction"] == pytest.approx(flips / 200)
    assert check["max_abs_score_diff"] == pytest.approx(np.abs(cand - ref).max())
    assert check["max_abs_prob_diff"] == pytest.approx(np.abs(sigmoid(cand) - sigmoid(ref)).max())
    assert check["accepted"] and check["reasons"] == []
    tight = compare_scores(ref, cand, y, sigmoid, thr, PrecisionTolerances(auroc=abs(a_cand - a_ref) / 2,
                                                                            flip_fraction=0.0, score=0.01))
    assert not tight["accepted"] and len(tight["reasons"]) == 3
    assert f"{flips} of 200 decisions flip" in tight["reasons"][1]
    nan = compare_scores(ref, np.where(np.arange(200) == 5, np.nan, cand), y, sigmoid, thr, PrecisionTolerances())
    assert not nan["accepted"] and "non-finite" in nan["reasons"][0]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_compare_task_outputs_against_independent_references():
    """Multiclass, multilabel and regression checks against scikit-learn and hand-computed decisions."""
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    from cardiofusion.bundle.precision import PrecisionTolerances, compare_task_outputs
    from cardiofusion.tasks import Task

    rng = np.random.default_rng(1)
    n = 300
    loose = PrecisionTolerances(auroc=1.0, flip_fraction=1.0, mae=10.0)
    # multiclass: decisions are the most probable class
    task = Task.from_dict({"name": "grade", "kind": "multiclass", "columns": ["v"], "bins": [1.0, 2.0],
                           "classes": ["low", "mid", "high"]})
    y = rng.integers(0, 3, n).astype(float)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y.astype(int)]
    y[:4] = np.nan  # unknown labels: out of the AUROC, not of the flips
    noisy = logits + rng.normal(scale=0.1, size=logits.shape)
    ref, cand = {"score": logits, "prob": _softmax(logits)}, {"score": noisy, "prob": _softmax(noisy)}
    check = compare_task_outputs(task, ref, cand, y, loose)
    known = np.isfinite(y)

    def macro(p):
        return np.mean([roc_auc_score(y[known] == c, p[known, c]) for c in range(3)])

    flips = int((ref["prob"].argmax(1) != cand["prob"].argmax(1)).sum())
    assert check["auroc_fp32"] == pytest.approx(macro(ref["prob"])) and check["auroc"] == pytest.approx(macro(cand["prob"]))
    assert check["auroc_diff"] == pytest.approx(abs(macro(cand["prob"]) - macro(ref["prob"])))
    assert check["decision_flips"] == flips > 0 and check["flip_fraction"] == pytest.approx(flips / n)
    assert check["max_abs_score_diff"] == pytest.approx(np.abs(noisy - logits).max())
    assert check["max_abs_prob_diff"] == pytest.approx(np.abs(cand["prob"] - ref["prob"]).max())
    assert check["accepted"] and check["n_records"] == n
    tight = compare_task_outputs(task, ref, cand, y, PrecisionTolerances(auroc=0.0, flip_fraction=0.0, score=0.01))
    assert not tight["accepted"] and len(tight["reasons"]) == 3 and f"{flips} of {n} records" in tight["reasons"][1]
    # multilabel: a record flips when any label's decision at its own threshold changes
    task = Task.from_dict({"name": "two", "kind": "multilabel", "columns": ["a", "b"], "classes": ["A", "B"],
                           "thresholds": {"B": 0.4}})
    lab = (rng.random((n, 2)) < 0.4).astype(float)
    z = rng.normal(size=(n, 2)) + 1.2 * lab
    lab[::7, 0] = np.nan
    z2 = z + rng.normal(scale=0.1, size=z.shape)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    check = compare_task_outputs(task, {"score": z, "prob": sig(z)}, {"score": z2, "prob": sig(z2)}, lab, loose)
    thr = np.array([0.5, 0.4])
    flips = int(((sig(z) >= thr) != (sig(z2) >= thr)).any(axis=1).sum())
    ref_auc = np.mean([roc_auc_score(lab[np.isfinite(lab[:, j]), j], sig(z)[np.isfinite(lab[:, j]), j]) for j in (0, 1)])
    assert check["decision_flips"] == flips > 0 and check["auroc_fp32"] == pytest.approx(ref_auc)
    # regression: the relative change of the MAE in units; value differences in units per target
    task = Task.from_dict({"name": "echo", "kind": "regression", "columns": ["v", "g"],
                           "units": {"v": "m/s", "g": "mmHg"}})
    truth = np.column_stack([rng.normal(2.0, 0.5, n), rng.normal(20.0, 8.0, n)])
    task = task.fit(truth)
    pred_std = task.standardize(truth) + rng.normal(scale=0.5, size=truth.shape)
    pred2 = pred_std + rng.normal(scale=0.05, size=truth.shape)
    check = compare_task_outputs(task, {"score": pred_std, "prob": pred_std}, {"score": pred2, "prob": pred2},
                                 truth, loose)
    units_ref, units_cand = task.unstandardize(pred_std), task.unstandardize(pred2)
    mae = lambda u: np.mean([mean_absolute_error(truth[:, j], u[:, j]) for j in (0, 1)])  # noqa: E731
    assert check["mae_fp32"] == pytest.approx(mae(units_ref)) and check["mae"] == pytest.approx(mae(units_cand))
    assert check["mae_change"] == pytest.approx(abs(mae(units_cand) - mae(units_ref)) / mae(units_ref))
    assert check["max_abs_value_diff"]["g"] == pytest.approx(np.abs(units_cand[:, 1] - units_ref[:, 1]).max())
    assert check["units"] == {"v": "m/s", "g": "mmHg"} and "decision_flips" not in check and check["accepted"]
    refused = compare_task_outputs(task, {"score": pred_std, "prob": pred_std}, {"score": pred2, "prob": pred2},
                                   truth, PrecisionTolerances(mae=check["mae_change"] / 2))
    assert not refused["accepted"] and "relative change" in refused["reasons"][0]
    nan = pred2.copy()
    nan[3, 1] = np.nan
    bad = compare_task_outputs(task, {"score": pred_std, "prob": pred_std}, {"score": nan, "prob": nan}, truth, loose)
    assert not bad["accepted"] and "1 record(s) get a non-finite output" in bad["reasons"][0]


def test_a_precision_that_cannot_score_is_refused_not_fatal():
    """A reduced-precision scorer that raises (an int8 graph ONNX Runtime cannot run) is dropped with its
    reason; the others are scored; the fp32 reference raising stays an error."""
    from cardiofusion.bundle.precision import score_loader
    from cardiofusion.models.fusion import FusionOutput

    def batch(i):
        return {"n_records": 2, "record_index": torch.tensor([0, 1, 1]), "label": torch.tensor([0.0, 1.0, 1.0]),
                "x": torch.tensor([1.0, 2.0, 4.0]) + i}

    def good(b):
        return FusionOutput(score=b["x"], prob=torch.sigmoid(b["x"]), branch_scores={"ecg": None, "cxr": None},
                            used=torch.ones(3, 2, dtype=torch.bool))

    def bad(b):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bias tensor's element count\nmust equal B's")

    failures: dict[str, str] = {}
    scores, labels = score_loader({"fp32": good, "int8": bad, "bf16": good}, [batch(0), batch(1)], failures=failures)
    assert set(scores) == {"fp32", "bf16"} and np.allclose(scores["fp32"]["score"], [1.0, 3.0, 2.0, 4.0])
    assert np.array_equal(labels, [0.0, 1.0, 0.0, 1.0])
    assert failures == {"int8": "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : bias tensor's element count must equal B's"}
    with pytest.raises(RuntimeError):
        score_loader({"fp32": bad, "int8": good}, [batch(0)], failures={})
    with pytest.raises(RuntimeError):
        score_loader({"fp32": good, "int8": bad}, [batch(0)])


def test_tolerances_reject_unknown_keys_and_bad_values():
    from cardiofusion.bundle.precision import PrecisionTolerances
    from cardiofusion.errors import ConfigError

    assert PrecisionTolerances.from_dict(PrecisionTolerances(score=0.1).to_dict()) == PrecisionTolerances(score=0.1)
    with pytest.raises(ConfigError, match="unknown precision tolerance"):
        PrecisionTolerances.from_dict({"auc": 0.1})
    with pytest.raises(ConfigError, match=">= 0"):
        PrecisionTolerances.from_dict({"auroc": -1})


# --------------------------------------------------------------------------------------------------
# Precision paths agree with fp32 within the stored tolerances
# --------------------------------------------------------------------------------------------------
def test_precision_paths_agree_with_fp32_within_stored_tolerances(setup, reduced):
    from cardiofusion.bundle import load, read_manifest

    manifest = read_manifest(reduced)
    section = manifest["precision"]
    assert section["offered"] == ["fp32", "bf16", "int8"] and "model.int8.onnx" in manifest["files"]
    assert manifest["inference"] == {"runtime": "torch", "precision": "fp32"}
    assert section["checked_on"]["n_records"] == len(setup["val"])
    assert section["checks"]["int8"]["quantisation"] == "static"  # calibrated on training-split records
    assert section["checks"]["int8"]["calibration"].endswith("training-split records")
    fp32 = load(reduced)
    val = setup["val"]
    patients = [fp32.prepare(r["ecg_path"], r["cxr_path"], patient_id=r["record_id"]) for _, r in val.iterrows()]
    ref = fp32.predict_prepared(patients)
    # the fp32 bundle reproduces the run's validation scores, so the check's reference is the run's
    assert np.allclose([p.scores["fused"] for p in ref], val["score"], atol=1e-5)
    for precision, runtime in (("bf16", "torch"), ("int8", "onnx")):
        s = load(reduced, precision=precision)
        assert (s.precision, s.runtime) == (precision, runtime) and s.describe()["precision"] == precision
        got = s.predict_prepared(patients)
        check = section["checks"][precision]
        diff = np.abs(np.array([g.scores["fused"] for g in got]) - [r.scores["fused"] for r in ref])
        assert 0 < diff.max() <= check["max_abs_score_diff"] + 1e-4  # really reduced, and as the check measured
        assert check["max_abs_score_diff"] < 0.1 and check["accepted"]
        flips = sum(g.decision != r.decision for g, r in zip(got, ref))
        assert flips == check["decision_flips"] and flips / len(got) <= LOOSE["flip_fraction"]
        assert check["auroc_diff"] <= LOOSE["auroc"]
        # window- and branch-level outputs are float32 numbers, never bf16 tensors
        assert all(isinstance(g.scores["ecg"], float) for g in got)


def test_refused_precision_is_not_offered_and_load_shows_the_numbers(setup, tmp_path, capsys):
    from cardiofusion.bundle import export_bundle, load, read_manifest
    from cardiofusion.cli import main
    from cardiofusion.errors import ConfigError

    strict = {"auroc": 0.2, "flip_fraction": 0.5, "score": 1e-9}  # any bf16 rounding is too much
    out = export_bundle(setup["run"], tmp_path / "b", precisions=["bf16"], tolerances=strict, onnx=False)
    section = read_manifest(out)["precision"]
    check = section["checks"]["bf16"]
    assert section["offered"] == ["fp32"] and not check["accepted"]
    assert check["max_abs_score_diff"] > 1e-9 and "largest score difference" in check["reasons"][0]
    with pytest.raises(ConfigError, match="refused at export") as e:
        load(out, precision="bf16")
    assert f"{check['max_abs_score_diff']:.3g}" in str(e.value) and "decisions flip" in str(e.value)
    with pytest.raises(ConfigError, match="not checked against fp32"):
        load(out, precision="int8")
    assert load(out).precision == "fp32"
    # a refused default precision fails the export, with the numbers, and writes nothing
    with pytest.raises(ConfigError, match="default precision bf16 is refused: bf16: max"):
        export_bundle(setup["run"], tmp_path / "c", precisions=["bf16"], precision="bf16", tolerances=strict,
                      onnx=False)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*"))
    rc = main(["export", str(setup["run"]), "--out", str(tmp_path / "d"), "--no-onnx", "--precisions", "bf16",
               "--max-score-change", "1e-9"])
    printed = capsys.readouterr().out
    assert rc == 0 and "offered: fp32" in printed and "bf16: max |score diff|" in printed and "REFUSED" in printed
    rc = main(["predict", str(tmp_path / "d"), "--precision", "bf16", "--ecg", str(setup["val"].iloc[0]["ecg_path"])])
    err = capsys.readouterr().err
    assert rc == 2 and "refused at export" in err and len(err.strip().splitlines()) == 1


def test_runtime_and_hardware_checks(reduced, monkeypatch):
    from cardiofusion.bundle import load, precision
    from cardiofusion.errors import ConfigError

    with pytest.raises(ConfigError, match="int8 runs on ONNX Runtime only"):
        load(reduced, precision="int8", runtime="torch")
    with pytest.raises(ConfigError, match="PyTorch"):
        load(reduced, precision="bf16", runtime="onnx")
    with pytest.raises(ConfigError, match="GPU only"):
        precision.check_available("fp16", "cpu")
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bf16"):
        load(reduced, precision="bf16")


# --------------------------------------------------------------------------------------------------
# Archive batch prediction
# --------------------------------------------------------------------------------------------------
KILL_SCRIPT = """
import os, signal, sys
from cardiofusion.bundle import load
from cardiofusion.bundle.pipeline import predict_archive

def on_row(i, row):
    if i == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)  # as a killed job dies: no cleanup, no flush, no finally

predict_archive(load(sys.argv[1]), sys.argv[2], sys.argv[3], workers=1, batch_patients=2, progress=False,
                on_row=on_row)
"""


def _archive_table(setup, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    val = setup["val"].head(7)
    table = pd.DataFrame({"patient_id": [f"=P{i}" if i == 1 else f"P{i}" for i in range(7)],
                          "ecg": list(val["ecg_path"]), "cxr": list(val["cxr_path"])})
    table.loc[4, "cxr"] = str(tmp_path / "missing.png")  # a failed row is written once too
    path = tmp_path / "patients.csv"
    table.to_csv(path, index=False)
    return path, val


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resumed_batch_writes_each_patient_exactly_once_after_a_kill(setup, tmp_path, suffix):
    from cardiofusion.bundle import load
    from cardiofusion.bundle.pipeline import predict_archive

    table, val = _archive_table(setup, tmp_path)
    out = tmp_path / f"out{suffix}"
    if suffix == ".csv":  # a real kill of a run with a reading worker process
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        log = tmp_path / "killed.log"
        with open(log, "wb") as f:  # a file, not a pipe: waiting ends with the killed process, not its children
            proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(setup["bundle"]), str(table), str(out),
                                   "2"], env=env, stdout=f, stderr=subprocess.STDOUT, timeout=120)
        assert proc.returncode == -9, log.read_text()[-2000:]
        killed = pd.read_csv(out, dtype=str)
        assert list(killed["patient_id"]) == ["P0", "'=P1", "P2", "P3"]  # two model batches of two patients
        with open(out, "ab") as f:
            f.write(b'P4,failed,,,,,,,,,"half a ro')  # a row cut short by the kill
    else:  # JSON Lines: an interrupted run (exception after 3 rows), then a torn last line
        def stop(i, row):
            if i == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            predict_archive(load(setup["bundle"]), table, out, workers=0, batch_patients=1, progress=False,
                            on_row=stop)
        assert len(out.read_text().splitlines()) == 3
        with open(out, "a") as f:
            f.write('{"patient_id": "P3", "status": "o')
    seen = []
    report = predict_archive(load(setup["bundle"]), table, out, workers=0, batch_patients=3, resume=True,
                             progress=False, on_row=lambda i, row: seen.append(i))
    assert seen == list(range(4 if suffix == ".csv" else 3, 7))  # only the missing rows were predicted
    result = (pd.read_csv(out, dtype={"patient_id": str}) if suffix == ".csv"
              else pd.read_json(out, lines=True, dtype={"patient_id": str}))
    first = "'=P1" if suffix == ".csv" else "=P1"  # CSV cells that a spreadsheet would run get a leading '
    expected_ids = [first if i == 1 else f"P{i}" for i in range(7)]
    assert list(result["patient_id"]) == expected_ids  # each patient exactly once, in table order
    assert list(result["status"]) == ["ok"] * 4 + ["failed"] + ["ok"] * 2
    ok = result["status"] == "ok"
    assert np.allclose(result.loc[ok, "score"].astype(float), val["score"].to_numpy()[ok.to_numpy()], atol=1e-5)
    assert report.n_rows == 7 and report.n_ok == 6 and list(report.failures["row"]) == [5]
    # resuming a complete output predicts nothing; another table's output is refused
    again = predict_archive(load(setup["bundle"]), table, out, workers=0, resume=True, progress=False,
                            on_row=lambda i, row: seen.append(-1))
    assert again.n_ok == 6 and -1 not in seen
    other = tmp_path / "other.csv"
    pd.read_csv(table).iloc[::-1].to_csv(other, index=False)
    from cardiofusion.errors import ConfigError

    with pytest.raises(ConfigError, match="not from this table"):
        predict_archive(load(setup["bundle"]), other, out, workers=0, resume=True, progress=False)


def test_cli_batch_with_workers_and_precision(setup, reduced, tmp_path, capsys):
    from cardiofusion.cli import main

    table, val = _archive_table(setup, tmp_path)
    out = tmp_path / "int8.jsonl"
    rc = main(["predict", str(reduced), "--batch", str(table), "--out", str(out), "--precision", "int8",
               "--workers", "2", "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "predicted 6 of 7 patients" in err and "row 5 (P4)" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["patient_id"] for r in rows] == ["P0", "=P1", "P2", "P3", "P4", "P5", "P6"]
    from cardiofusion.bundle import read_manifest

    tol = read_manifest(reduced)["precision"]["checks"]["int8"]["max_abs_score_diff"]
    got = np.array([r["score"] for r in rows if r["status"] == "ok"])
    want = val["score"].to_numpy()[[0, 1, 2, 3, 5, 6]]
    assert np.abs(got - want).max() <= tol + 1e-4
