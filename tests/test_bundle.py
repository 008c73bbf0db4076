"""Model bundles: export from a run, safe loading, refusal of damaged bundles, exact preprocessing.

The tiny cooperative run, its bundle and the raw export are built once per test session
(:func:`screening_setup`, shared with ``test_predict.py`` and ``test_serve.py``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_tiny_cache, train_tiny_runs

FS, DURATION_S, IMAGE_SIZE = 250.0, 4.0, 32


def screening_setup(base: Path) -> dict:
    """A tiny cache + cooperative run + exported bundle (with ONNX), made once per session under ``base``.

    Returns paths (``root``, ``run``, ``bundle``, ``manifest``) and ``val``: the run's validation scores
    joined with the manifest's raw file paths and reader options.
    """
    from cardiofusion.bundle import export_bundle

    root = base / "screening"
    done = root / "done.json"
    if not done.is_file():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # 2 shared cores: one thread is faster and steadier
        try:
            cohort = build_tiny_cache(root, fs=FS, duration_s=DURATION_S, image_size=IMAGE_SIZE)
            run = train_tiny_runs(root, cohort, fusions=("cooperative",), fs=FS, image_size=IMAGE_SIZE)["cooperative"]
            export_bundle(run, root / "bundle")
        finally:
            torch.set_num_threads(threads)
        done.write_text(json.dumps({"run": str(run), "manifest": str(cohort["manifest"])}))
    info = json.loads(done.read_text())
    manifest = pd.read_parquet(info["manifest"])
    val = pd.read_csv(Path(info["run"]) / "val_scores.csv", dtype={"record_id": str, "patient_id": str})
    val = val.merge(manifest[["record_id", "ecg_path", "cxr_path", "fs", "units", "resolution_uv"]], on="record_id")
    return {"root": root, "run": Path(info["run"]), "bundle": root / "bundle", "manifest": Path(info["manifest"]),
            "val": val}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return screening_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def screener(setup):
    from cardiofusion.bundle import load

    return load(setup["bundle"])


def _copy(setup, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(setup["bundle"], dst)
    return dst


# --------------------------------------------------------------------------------------------------
# Export and manifest
# --------------------------------------------------------------------------------------------------
def test_manifest_carries_everything_prediction_needs(setup):
    from cardiofusion.cache import open_cache
    from cardiofusion.training import load_run

    manifest = json.loads((setup["bundle"] / "manifest.json").read_text())
    run = load_run(setup["run"])
    assert manifest["format"] == "cardiofusion-bundle" and manifest["format_version"] == 1
    assert manifest["model"]["config"]["fusion"] == "cooperative"
    assert manifest["model"]["modalities"] == ["ecg", "cxr"]
    assert manifest["preprocess"] == run.config.preprocess.to_dict()
    assert manifest["decode"] == open_cache(run.config.cache_dir).config.to_dict()
    assert manifest["ecg"]["fs"] == FS and len(manifest["ecg"]["leads"]) == 12
    assert manifest["ecg"]["window_s"] == 2.0 and "mean" in manifest["ecg"]["averaging"]
    assert manifest["cxr"]["image_size"] == IMAGE_SIZE and manifest["cxr"]["image_mean"] == pytest.approx(0.449)
    # the synthetic export's CSVs are counts at 1.25 uV, 500 Hz: carried as the headerless-file defaults
    assert manifest["ecg_reader_defaults"] == {"fs": 500.0, "units": "counts", "resolution_uv": 1.25}
    assert "peak aortic jet velocity >= 2.5 m/s" in manifest["label"]["definition"]
    assert manifest["calibration"]["calibrator"]["method"] == "platt"
    assert manifest["threshold"]["rule"] == "youden" and manifest["threshold"]["chosen_on"] == "val"
    assert manifest["validation"]["n_records"] == len(setup["val"])
    assert 0 <= manifest["validation"]["auroc"] <= 1
    assert {"cardiofusion", "torch", "safetensors"} <= set(manifest["versions"])
    assert set(manifest["files"]) == {"model.safetensors", "model.onnx"}
    assert manifest["content_hash"].startswith("sha256:") and len(manifest["content_hash"]) == 7 + 64


def test_round_trip_weights_identical(setup, screener):
    from cardiofusion.training import load_run

    run = load_run(setup["run"])
    ours, theirs = screener.model.state_dict(), run.model.state_dict()
    assert set(ours) == set(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_prediction_equals_the_runs_cached_score(setup, screener):
    """Raw file -> bundle prediction == the score the run gave the cached record during validation."""
    val = setup["val"]
    for _, row in val.head(4).iterrows():
        result = screener.predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
        assert result.scores["fused"] == pytest.approx(row["score"], abs=1e-5)
        assert result.scores["ecg"] == pytest.approx(row["score_ecg"], abs=1e-5)
        assert result.scores["cxr"] == pytest.approx(row["score_cxr"], abs=1e-5)
        assert result.modalities == ["ecg", "cxr"]
        assert result.probability == pytest.approx(float(screener.calibrator([row["score"]])[0]), abs=1e-5)


def test_in_memory_records_score_like_files(setup, screener):
    from cardiofusion.io.cxr import read_cxr
    from cardiofusion.io.ecg import read_ecg

    row = setup["val"].iloc[0]
    from_files = screener.predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
    record = read_ecg(row["ecg_path"], fs=row["fs"], units=row["units"], resolution_uv=row["resolution_uv"])
    from_objects = screener.predict(ecg=record, cxr=read_cxr(row["cxr_path"]))
    assert from_objects.scores == from_files.scores


def test_lazy_top_level_load(setup):
    import cardiofusion
    import cardiofusion.bundle

    assert cardiofusion.load is cardiofusion.bundle.load
    result = cardiofusion.load(setup["bundle"]).predict(cxr=setup["val"].iloc[0]["cxr_path"])
    assert result.modalities == ["cxr"] and result.scores["ecg"] is None


def test_prediction_imports_no_trainer(setup):
    """``cardiofusion.load(...).predict(...)`` in a fresh interpreter imports neither Lightning nor Optuna."""
    import subprocess
    import sys

    row = setup["val"].iloc[0]
    code = (
        "import sys, json\n"
        "import cardiofusion\n"
        "bundle, ecg, cxr = sys.argv[1:4]\n"
        "result = cardiofusion.load(bundle).predict(ecg=ecg, cxr=cxr)\n"
        "assert result.modalities == ['ecg', 'cxr'], result.modalities\n"
        "heavy = ('lightning', 'pytorch_lightning', 'optuna')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    args = [sys.executable, "-c", code, str(setup["bundle"]), str(row["ecg_path"]), str(row["cxr_path"])]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_training_package_loads_lightning_on_first_use():
    """``cardiofusion.training`` names load lazily; ``fit`` stays the function after its submodule loads."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "from cardiofusion.training import TrainConfig, load_run, score_split\n"
        "assert 'lightning' not in sys.modules\n"
        "from cardiofusion.training.fit import warm_start\n"
        "assert 'lightning' in sys.modules\n"
        "from cardiofusion.training import fit, CardioFusionModule\n"
        "import cardiofusion.training as t\n"
        "assert callable(fit) and not isinstance(fit, types.ModuleType) and t.fit is fit, fit\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_loading_never_unpickles(setup, monkeypatch):
    from cardiofusion.bundle import load

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle must not be unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert load(setup["bundle"]).predict(cxr=setup["val"].iloc[0]["cxr_path"]).probability >= 0


# --------------------------------------------------------------------------------------------------
# Damaged or incompatible bundles are refused with a clear message
# --------------------------------------------------------------------------------------------------
def test_tampered_weights_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load

    bundle = _copy(setup, tmp_path)
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="content hash mismatch.*refusing to load") as e:
        load(bundle)
    assert str(e.value).startswith(str(weights))


def test_tampered_manifest_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load

    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"]["value"] = 0.01  # someone lowers the threshold by hand
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="content hash mismatch: the manifest was modified"):
        load(bundle)


def test_truncated_weights_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load

    bundle = _copy(setup, tmp_path)
    weights = bundle / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match=r"truncated: \d+ bytes, expected \d+"):
        load(bundle)


def test_corrupt_manifest_and_missing_files_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load

    bundle = _copy(setup, tmp_path)
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing from the bundle"):
        load(bundle)
    (bundle / "manifest.json").write_text('{"format": "cardiofusion-bundle", "format_')
    with pytest.raises(BundleError, match="corrupt manifest, not valid JSON"):
        load(bundle)
    with pytest.raises(BundleError, match="no such model bundle"):
        load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no manifest.json"):
        load(setup["run"])  # a run folder is not a bundle


def test_incompatible_format_version_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load
    from cardiofusion.bundle.format import content_hash

    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    manifest["content_hash"] = content_hash(manifest)  # a genuine newer bundle, not a tampered one
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99 is newer than this cardiofusion reads.*upgrade"):
        load(bundle)


def test_unknown_architecture_refused(setup, tmp_path):
    from cardiofusion.bundle import BundleError, load
    from cardiofusion.bundle.format import content_hash

    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["config"]["ecg_encoder"] = "ecg_from_the_future"
    manifest["content_hash"] = content_hash(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="incompatible bundle: cannot build the model"):
        load(bundle)


# --------------------------------------------------------------------------------------------------
# Calibration sources
# --------------------------------------------------------------------------------------------------
def test_export_takes_calibration_from_an_evaluation_folder(setup, tmp_path):
    from cardiofusion.bundle import export_bundle, load
    from cardiofusion.evaluation.calibration import Calibrator, Threshold

    evaldir = tmp_path / "eval"
    (evaldir / "models" / "coop").mkdir(parents=True)
    calibrator = Calibrator("platt", {"a": 3.0, "b": -1.5}, n_fit=13)
    threshold = Threshold(0.3, "sensitivity", 0.9, "val", 0.92, 0.40)
    (evaldir / "models" / "coop" / "calibration.json").write_text(json.dumps(
        {"calibrator": calibrator.to_dict(), "threshold": threshold.to_dict(), "run": str(setup["run"])}))
    out = export_bundle(setup["run"], tmp_path / "b", evaluation=evaldir, name="coop", onnx=False)
    screener = load(out)
    assert screener.manifest["calibration"]["source"] == "evaluation"
    assert screener.calibrator.to_dict() == calibrator.to_dict()
    assert screener.threshold == threshold
    assert "sensitivity >= 0.9" in screener.manifest["threshold"]["description"]
    row = setup["val"].iloc[0]
    result = screener.predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
    assert result.probability == pytest.approx(1 / (1 + np.exp(-(3.0 * row["score"] - 1.5))), abs=1e-5)
    assert result.decision == ("positive" if result.probability >= 0.3 else "negative")


def test_export_command_target_sensitivity(setup, tmp_path, capsys):
    from cardiofusion.bundle import read_manifest
    from cardiofusion.cli import main

    out = tmp_path / "b"
    assert main(["export", str(setup["run"]), "--out", str(out), "--target-sensitivity", "0.9",
                 "--calibration", "isotonic", "--no-onnx"]) == 0
    printed = capsys.readouterr().out
    assert "content hash sha256:" in printed and "sensitivity >= 0.9" in printed
    manifest = read_manifest(out)
    assert manifest["threshold"]["rule"] == "sensitivity" and manifest["threshold"]["sensitivity"] >= 0.9
    assert manifest["calibration"]["calibrator"]["method"] == "isotonic"
    assert set(manifest["files"]) == {"model.safetensors"}
    # an existing folder is not overwritten silently
    assert main(["export", str(setup["run"]), "--out", str(out), "--no-onnx"]) == 2
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# export --overwrite replaces only a bundle (issue 13: it deleted the run and unrelated folders)
# --------------------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_overwrite_never_replaces_the_run_or_other_folders(setup, tmp_path, capsys):
    from cardiofusion.cli import main

    run = tmp_path / "work" / "run"
    shutil.copytree(setup["run"], run)
    before = _tree(run)
    assert any(name.endswith(".ckpt") for name in before)
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"precious")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    inside = run / "old_bundle"
    shutil.copytree(setup["bundle"], inside)
    for out, reason in ((run, "source"), (run.parent, "contains"), (inside, "inside the export's source"),
                        (unrelated, "not a cardiofusion bundle"), (a_file, "is a file, not a bundle folder")):
        rc = main(["export", str(run), "--out", str(out), "--overwrite", "--no-onnx"])
        err = capsys.readouterr().err
        assert rc == 2, (out, err)
        assert err.startswith(f"cardiofusion: error: {out}") and len(err.strip().splitlines()) == 1, err
        assert reason in err and "Traceback" not in err
    assert _tree(run) == {**before, **{f"old_bundle/{k}": v for k, v in _tree(inside).items()}}
    assert (unrelated / "holiday.jpg").read_bytes() == b"precious" and a_file.read_text() == "keep me"


def test_export_overwrite_swaps_a_bundle_only_once_the_new_one_is_complete(setup, tmp_path, monkeypatch):
    import cardiofusion.bundle.export as export
    from cardiofusion.bundle import export_bundle, read_manifest
    from cardiofusion.errors import ReadError

    out = tmp_path / "bundles" / "b"
    out.parent.mkdir()
    shutil.copytree(setup["bundle"], out)
    old = _tree(out)

    def broken(directory, manifest):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "write_manifest", broken)
    with pytest.raises(ReadError, match="cannot write the bundle"):
        export_bundle(setup["run"], out, overwrite=True, onnx=False)
    assert _tree(out) == old  # the old bundle is untouched when the new one fails
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]  # no temporary folder left behind
    monkeypatch.undo()
    export_bundle(setup["run"], out, overwrite=True, onnx=False, name="replacement")
    assert read_manifest(out)["name"] == "replacement" and "model.onnx" not in read_manifest(out)["files"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]


def test_manifest_nested_too_deeply_is_a_one_line_error(tmp_path):
    from cardiofusion.bundle import BundleError, read_manifest

    (tmp_path / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="nested too deeply") as info:
        read_manifest(tmp_path)
    assert "\n" not in str(info.value)
