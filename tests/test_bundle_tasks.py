"""Bundles of every task kind (issue 14): the task in the manifest, prediction from raw files equal to the
run's cached score table, the Python API / CLI / batch / ONNX / web results per class, label or target, and
explanations with a target.

One tiny cache (``build_tiny_cache``) and, per task kind, a cooperative run trained for one epoch with the
library's tiny encoders on that cache (the targets are columns added to a copy of its manifest), exported
with its ONNX graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_tiny_cache

FS, DURATION_S, IMAGE_SIZE = 250.0, 4.0, 32

TASKS = {
    "ordinal": {"name": "velocity_grade", "kind": "multiclass", "ordinal": True, "columns": ["peak_velocity_m_s"],
                "bins": [1.6, 3.0], "classes": ["normal", "raised", "high"]},
    "multilabel": {"name": "two_labels", "kind": "multilabel", "columns": ["dx_as", "dx_fast"],
                   "classes": ["AS", "fast jet"], "thresholds": {"fast_jet": 0.4}},
    "regression": {"name": "echo", "kind": "regression", "columns": ["peak_velocity_m_s", "mean_gradient_mmhg"],
                   "units": {"peak_velocity_m_s": "m/s", "mean_gradient_mmhg": "mmHg"}},
}


def _task_runs(base: Path) -> dict:
    """Tiny cache, the manifest with the test's target columns, and one exported run per task kind."""
    import dataclasses

    from cardiofusion.bundle import export_bundle
    from cardiofusion.recipes.demo import demo_train_config
    from cardiofusion.training import fit

    root = base / "task_bundles"
    done = root / "done.json"
    if done.is_file():
        return {k: Path(v) if isinstance(v, str) else v for k, v in json.loads(done.read_text()).items()}
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shared = base / "screening"  # test_bundle's tiny cache when that module ran first (same settings)
        if (shared / "done.json").is_file():
            cohort = {"manifest": shared / "cohort" / "manifest.parquet", "cache": shared / "cache"}
        else:
            cohort = build_tiny_cache(root, fs=FS, duration_s=DURATION_S, image_size=IMAGE_SIZE)
        table = pd.read_parquet(cohort["manifest"])
        dx_as = table["label"].astype(float).to_numpy().copy()
        dx_as[::5] = np.nan  # unknown labels
        table["dx_as"] = dx_as
        table["dx_fast"] = (table["peak_velocity_m_s"] > 2.0).astype(float)
        manifest = root / "manifest_targets.parquet"
        table.to_parquet(manifest)
        info: dict = {"manifest": str(manifest)}
        for kind, task in TASKS.items():
            config = demo_train_config(cohort["cache"], manifest, "cooperative", max_epochs=1, fs=FS,
                                       image_size=IMAGE_SIZE)
            config = dataclasses.replace(config, batch_size=16, eval_batch_size=32, task=dict(task), limit_train_batches=2,
                                         pos_weight=None)
            run = fit(config, root / kind, progress=False).run_dir
            export_bundle(run, root / f"bundle_{kind}")
            info[kind] = str(run)
    finally:
        torch.set_num_threads(threads)
    done.write_text(json.dumps(info))
    return _task_runs(base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    return _task_runs(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


def _val(runs: dict, kind: str) -> pd.DataFrame:
    val = pd.read_csv(runs[kind] / "val_scores.csv", dtype={"record_id": str, "patient_id": str})
    manifest = pd.read_parquet(runs["manifest"])
    return val.merge(manifest[["record_id", "ecg_path", "cxr_path"]], on="record_id")


def _bundle(runs: dict, kind: str) -> Path:
    return runs[kind].parent / f"bundle_{kind}"


def _cli(args, capsys) -> tuple[int, str, str]:
    from cardiofusion.cli import main

    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------------------------------
# Manifest and loading
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TASKS))
def test_manifest_stores_the_fitted_task(runs, kind):
    from cardiofusion.bundle import load
    from cardiofusion.tasks import Task
    from cardiofusion.training import load_run

    manifest = json.loads((_bundle(runs, kind) / "manifest.json").read_text())
    run_task = load_run(runs[kind]).config.task_spec()
    assert manifest["task_definition"] == run_task.to_dict()
    assert manifest["model"]["config"]["num_outputs"] == run_task.n_outputs
    assert "calibration" not in manifest and "threshold" not in manifest and "decision" in manifest
    screener = load(_bundle(runs, kind))
    assert screener.task == Task.from_dict(manifest["task_definition"])
    if kind == "regression":  # the train-split scaler travels with the bundle
        train = pd.read_parquet(runs["manifest"]).query("split == 'train'")
        sc = manifest["task_definition"]["scaler"]
        assert sc["mean"] == pytest.approx(train[TASKS[kind]["columns"]].mean().to_list(), rel=1e-6)
        assert sc["std"] == pytest.approx(train[TASKS[kind]["columns"]].std(ddof=0).to_list(), rel=1e-6)
        assert manifest["validation"]["units"] == {"peak_velocity_m_s": "m/s", "mean_gradient_mmhg": "mmHg"}
    else:
        assert 0 <= manifest["validation"]["macro_auroc"] <= 1


def test_task_that_does_not_fit_the_model_is_refused(runs, tmp_path):
    """A stored task is checked against the model's outputs (the content hash is recomputed, so only the
    task check can refuse it)."""
    import shutil

    from cardiofusion.bundle import BundleError, load
    from cardiofusion.bundle.format import write_manifest

    bundle = tmp_path / "b"
    shutil.copytree(_bundle(runs, "regression"), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for bad, message in ((dict(manifest["task_definition"], scaler=None), "scaler"),
                         (dict(TASKS["multilabel"]), "needs 2 logistic output"),
                         ({"kind": "nonsense"}, "task definition is invalid")):
        write_manifest(bundle, {**{k: v for k, v in manifest.items() if k not in ("files", "content_hash")},
                                "task_definition": bad})
        with pytest.raises(BundleError, match=message):
            load(bundle)


# --------------------------------------------------------------------------------------------------
# Prediction == the run's cached score table; result structure per kind
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TASKS))
def test_prediction_equals_the_runs_cached_scores(runs, kind):
    from cardiofusion.bundle import load
    from cardiofusion.tasks import Task

    screener = load(_bundle(runs, kind))
    task: Task = screener.task
    val = _val(runs, kind)
    for _, row in val.head(3).iterrows():
        r = screener.predict(ecg=row["ecg_path"], cxr=row["cxr_path"], patient_id="P1")
        assert r.task_kind == task.kind and r.modalities == ["ecg", "cxr"] and len(r.outputs) == len(task.classes)
        want = row[task.prediction_columns()].to_numpy(dtype=float)
        got = np.array([o["value"] if kind == "regression" else o["probability"] for o in r.outputs])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)
        np.testing.assert_allclose(r.scores["fused"], row[task.output_columns()].to_numpy(dtype=float), atol=1e-5)
        np.testing.assert_allclose(r.scores["ecg"], row[task.output_columns("ecg")].to_numpy(dtype=float), atol=1e-5)
        assert [o["name"] for o in r.outputs] == task.classes
        d = r.to_dict()
        assert d["patient_id"] == "P1" and d["task_kind"] == TASKS[kind]["kind"] and json.dumps(d, allow_nan=False)
        if kind == "ordinal":
            assert got.sum() == pytest.approx(1.0, abs=1e-5) and (got >= 0).all()
            k = int(np.argmax(want))
            assert r.predicted_index == d["predicted_index"] == k and r.decision == d["predicted_class"] == task.classes[k]
            assert r.probability == pytest.approx(want[k], abs=1e-5)
            assert [o["decision"] for o in r.outputs] == [("predicted" if j == k else None) for j in range(3)]
        elif kind == "multilabel":
            thresholds = [0.5, 0.4]
            assert [o["threshold"] for o in r.outputs] == thresholds
            assert [o["decision"] for o in r.outputs] == [("positive" if p >= t else "negative")
                                                          for p, t in zip(want, thresholds)]
            assert d["positive_labels"] == [o["name"] for o in r.outputs if o["decision"] == "positive"]
        else:
            assert [o["unit"] for o in r.outputs] == ["m/s", "mmHg"]
            # the standardised head output mapped back with the training mean / sd (an independent computation)
            sc = task.scaler
            std_out = row[task.output_columns()].to_numpy(dtype=float)  # identity link: score == standardised value
            np.testing.assert_allclose(got, std_out * np.array(sc.std) + np.array(sc.mean), atol=1e-4)


def test_softmax_multiclass_bundle_from_an_untrained_model(runs, tmp_path):
    """The plain softmax link, built and saved without training: an early-fusion head with 3 softmax outputs
    in a bundle made from the ordinal run's manifest.  With an X-ray only there is one window, so the class
    probabilities must be scipy's softmax of the reported outputs; ONNX Runtime (graph exported on load)
    agrees."""
    from scipy.special import softmax

    from cardiofusion.bundle import load
    from cardiofusion.models import ModelConfig, build_model

    manifest = json.loads((_bundle(runs, "ordinal") / "manifest.json").read_text())
    task = dict(manifest["task_definition"], ordinal=False)
    cfg = ModelConfig.from_dict({**manifest["model"]["config"], "fusion": "early", "num_outputs": 3,
                                 "link": "softmax"})
    torch.manual_seed(0)
    bundle = _write_bundle(tmp_path / "softmax", manifest, build_model(cfg), cfg, task)
    row = _val(runs, "ordinal").iloc[0]
    screener = load(bundle)
    assert screener.task.link == "softmax" and screener.task.n_outputs == 3
    r = screener.predict(cxr=row["cxr_path"])
    probs = np.array([o["probability"] for o in r.outputs])
    np.testing.assert_allclose(probs, softmax(np.array(r.scores["fused"])), atol=1e-6)
    assert r.predicted_index == int(np.argmax(probs)) and r.decision == task["classes"][r.predicted_index]
    b = load(bundle, runtime="onnx").predict(cxr=row["cxr_path"])
    np.testing.assert_allclose([o["probability"] for o in b.outputs], probs, atol=1e-4)
    np.testing.assert_allclose(b.scores["fused"], r.scores["fused"], atol=1e-4)


def _write_bundle(out: Path, manifest: dict, model: torch.nn.Module, cfg, task: dict) -> Path:
    from safetensors.torch import save_file

    from cardiofusion.bundle.format import WEIGHTS, write_manifest

    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    body = {k: v for k, v in manifest.items() if k not in ("files", "content_hash", "onnx")}
    body["model"] = dict(body["model"], config=cfg.to_dict())
    body["task_definition"] = task
    write_manifest(out, body)
    return out


# --------------------------------------------------------------------------------------------------
# CLI, batch, ONNX, web
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TASKS))
def test_cli_and_batch_per_kind(runs, kind, tmp_path, capsys):
    from cardiofusion.bundle import load

    bundle = _bundle(runs, kind)
    screener = load(bundle)
    task = screener.task
    val = _val(runs, kind).head(3)
    row = val.iloc[0]
    rc, out, _ = _cli(["predict", bundle, "--ecg", row["ecg_path"], "--cxr", row["cxr_path"], "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["task_kind"] == TASKS[kind]["kind"] and len(d["outputs"]) == len(task.classes)
    rc, text, _ = _cli(["predict", bundle, "--ecg", row["ecg_path"], "--cxr", row["cxr_path"]], capsys)
    assert rc == 0 and f"task         {task.name}" in text
    assert all(name in text for name in task.classes)
    if kind == "regression":
        assert "m/s" in text and "mmHg" in text
    table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(3)], "ecg": val["ecg_path"], "cxr": val["cxr_path"]})
    table.loc[3] = ["bad", "/no/such/file.csv", None]
    table.to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = _cli(["predict", bundle, "--batch", tmp_path / "t.csv", "--out", tmp_path / "o.csv",
                       "--no-progress"], capsys)
    assert rc == 1 and "row 4 (bad)" in err
    got = pd.read_csv(tmp_path / "o.csv")
    names = task.target_names
    prefix = "pred" if kind == "regression" else "prob"
    expected = {"ordinal": ["predicted_class", "predicted_index"],
                "multilabel": ["positive_labels"], "regression": []}[kind]
    assert list(got.columns) == ["patient_id", "status", *expected, *(f"{prefix}_{n}" for n in names),
                                 *([f"decision_{n}" for n in names] if kind == "multilabel" else []),
                                 "modalities", "warnings", "error"]
    assert list(got["status"]) == ["ok", "ok", "ok", "failed"]
    want = val[task.prediction_columns()].to_numpy(dtype=float)
    np.testing.assert_allclose(got.loc[:2, [f"{prefix}_{n}" for n in names]].to_numpy(dtype=float), want, atol=1e-5)
    if kind == "ordinal":
        assert list(got.loc[:2, "predicted_index"].astype(int)) == list(np.argmax(want, axis=1))
        assert list(got.loc[:2, "predicted_class"]) == [task.classes[i] for i in np.argmax(want, axis=1)]
    if kind == "multilabel":
        thr = np.array([0.5, 0.4])
        assert (got.loc[:2, [f"decision_{n}" for n in names]].to_numpy() ==
                np.where(want >= thr, "positive", "negative")).all()


@pytest.mark.parametrize("kind", list(TASKS))
def test_onnx_agrees_with_torch(runs, kind):
    """The graph outputs k values; ONNX Runtime == the PyTorch model at the window level and per patient."""
    from cardiofusion.bundle import load
    from cardiofusion.bundle.onnx import OnnxRunner

    bundle = _bundle(runs, kind)
    torch_s, onnx_s = load(bundle), load(bundle, runtime="onnx")
    k = torch_s.task.n_outputs
    runner = OnnxRunner(str(bundle / "model.onnx"))
    g = torch.Generator().manual_seed(1)
    pp = torch_s.preprocess
    n_w, n_r = 5, 2
    record_index = torch.arange(n_w) % n_r
    x = {"ecg": torch.randn(n_w, len(pp.leads), pp.window_samples, generator=g) * 0.3,
         "ecg_mask": torch.ones(n_w, len(pp.leads), dtype=torch.bool),
         "cxr": torch.randn(n_r, 1, pp.image_size, pp.image_size, generator=g),
         "has_ecg": torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool), "has_cxr": torch.ones(n_w, dtype=torch.bool),
         "record_index": record_index}
    ort = runner.run({key: v.numpy() for key, v in x.items()})
    batch = {"ecg": torch.where(x["has_ecg"][:, None, None], x["ecg"], 0.0),
             "ecg_mask": x["ecg_mask"] & x["has_ecg"][:, None], "cxr": x["cxr"][record_index],
             "has_ecg": x["has_ecg"], "has_cxr": x["has_cxr"]}
    with torch.no_grad():
        ref = torch_s.model(batch)
    assert ort["score"].shape == (n_w, k) and tuple(ref.score.shape) == (n_w, k)
    torch.testing.assert_close(torch.from_numpy(ort["score"]), ref.score, atol=1e-4, rtol=0, equal_nan=True)
    torch.testing.assert_close(torch.from_numpy(ort["prob"]), ref.prob, atol=1e-4, rtol=0, equal_nan=True)
    for m in ("ecg", "cxr"):
        torch.testing.assert_close(torch.from_numpy(ort[f"score_{m}"]), ref.branch_scores[m], atol=1e-4, rtol=0,
                                   equal_nan=True)
    row = _val(runs, kind).iloc[0]
    for kwargs in ({"ecg": row["ecg_path"], "cxr": row["cxr_path"]}, {"cxr": row["cxr_path"]}):
        a, b = torch_s.predict(**kwargs), onnx_s.predict(**kwargs)
        assert a.decision == b.decision and a.predicted_index == b.predicted_index
        for oa, ob in zip(a.outputs, b.outputs):
            for key in ("probability", "value"):
                if oa[key] is not None:
                    assert ob[key] == pytest.approx(oa[key], abs=1e-4)


@pytest.mark.parametrize("kind", ["ordinal", "regression"])
def test_web_service_answers_outputs_and_named_heat_maps(runs, kind):
    from cardiofusion.bundle import load
    from cardiofusion.serve.app import ScreeningService
    from cardiofusion.serve.page import PAGE_HTML
    from cardiofusion.serve.sniff import Upload

    service = ScreeningService(load(_bundle(runs, kind)), max_upload_bytes=20_000_000)
    info = service.info()
    assert info["task"]["kind"] == TASKS[kind]["kind"] and info["task"]["names"] == service.screener.task.classes
    row = _val(runs, kind).iloc[0]
    d = service.predict({"ecg": [Upload(Path(row["ecg_path"]).read_bytes(), "a.csv")],
                         "cxr": [Upload(Path(row["cxr_path"]).read_bytes(), "b.dcm")]}, {"explain": "1"})
    json.dumps(d, allow_nan=False)
    task = service.screener.task
    got = [o["value"] if kind == "regression" else o["probability"] for o in d["outputs"]]
    np.testing.assert_allclose(got, row[task.prediction_columns()].to_numpy(dtype=float), atol=1e-5)
    # default explanation target: the predicted class / the first regression target, named in the key
    target = task.classes[d["predicted_index"]] if kind == "ordinal" else task.classes[0]
    assert set(d["images"]) == {f"cxr:{target}", f"ecg:{target}"}
    assert all(v.startswith("data:image/png;base64,") for v in d["images"].values())
    assert "showOutputs" in PAGE_HTML and "outputs-body" in PAGE_HTML


# --------------------------------------------------------------------------------------------------
# Explanations with a target
# --------------------------------------------------------------------------------------------------
def test_explanation_targets_select_the_output(runs):
    """explain_sample explains the chosen output's score: its target score equals that column of the
    model's record-level output (branch score for cooperative), for names, indices and defaults."""
    from cardiofusion.explain import explain_sample, load_samples
    from cardiofusion.explain.attribution import resolve_output_target
    from cardiofusion.training import load_run

    loaded = load_run(runs["multilabel"])
    task = loaded.config.task_spec()
    sample = load_samples(loaded, [_val(runs, "multilabel").iloc[0]["record_id"]])[0]
    ref = _record_output(loaded.model, sample)
    for spec, j in (("fast jet", 1), ("dx_fast", 1), (0, 0), ("AS", 0), ("1", 1)):
        expl = explain_sample(loaded.model, sample, output=spec, task=task)
        assert expl.output_target.index == j and expl.output_target.name == task.classes[j]
        assert expl.cxr.target == f"branch:cxr[{task.classes[j]}]"
        assert expl.cxr.target_score == pytest.approx(float(ref["cxr"][j]), abs=1e-5)
        assert expl.ecg.target_score == pytest.approx(float(ref["ecg"][j]), abs=1e-5)
        assert expl.probability == pytest.approx(float(ref["prob"][j]), abs=1e-5)
        assert expl.summary()["output_target"]["name"] == task.classes[j]
    with pytest.raises(Exception, match="unknown explanation target 'nope'.*AS, fast jet"):
        explain_sample(loaded.model, sample, output="nope", task=task)
    # ordinal: class c >= 1 explains the cumulative logit of y >= c; class 0 minus the first one
    loaded_o = load_run(runs["ordinal"])
    task_o = loaded_o.config.task_spec()
    assert resolve_output_target("high", task_o).output == 1 and resolve_output_target("normal", task_o).sign == -1
    sample_o = load_samples(loaded_o, [_val(runs, "ordinal").iloc[0]["record_id"]])[0]
    ref_o = _record_output(loaded_o.model, sample_o)
    e0 = explain_sample(loaded_o.model, sample_o, output="normal", task=task_o)
    e2 = explain_sample(loaded_o.model, sample_o, output=2, task=task_o)
    assert e0.cxr.target_score == pytest.approx(-float(ref_o["cxr"][0]), abs=1e-5)
    assert e2.cxr.target_score == pytest.approx(float(ref_o["cxr"][1]), abs=1e-5)
    # default: the predicted class
    default = explain_sample(loaded_o.model, sample_o, task=task_o)
    assert default.output_target.index == int(np.argmax(ref_o["prob"]))


def _record_output(model, sample) -> dict:
    from cardiofusion.explain.attribution import RecordScorer

    out = RecordScorer(model, sample).fused()
    return {"prob": out.prob.mean(0).numpy(), "ecg": out.branch_scores["ecg"].mean(0).numpy(),
            "cxr": out.branch_scores["cxr"].mean(0).numpy()}


def test_explain_command_and_predict_explain_with_target(runs, tmp_path, capsys):
    rid = _val(runs, "multilabel").iloc[0]["record_id"]
    rc, out, _ = _cli(["explain", runs["multilabel"], "--record", rid, "--out", tmp_path / "e", "--target",
                       "fast jet"], capsys)
    assert rc == 0 and "target multilabel fast jet" in out
    meta = json.loads((tmp_path / "e" / "explanations.json").read_text())["records"]
    assert len(meta) == 1 and meta[0]["output_target"]["name"] == "fast jet"
    assert meta[0]["targets"] == {"cxr": "branch:cxr[fast jet]", "ecg": "branch:ecg[fast jet]"}
    assert sorted(p.name for p in (tmp_path / "e").glob("*.png")) == [f"{rid}_fast_jet_cxr.png"
                                                                      .replace("|", "_"), f"{rid}_fast_jet_ecg.png"
                                                                      .replace("|", "_")]
    row = _val(runs, "regression").iloc[0]
    rc, out, _ = _cli(["predict", _bundle(runs, "regression"), "--ecg", row["ecg_path"], "--cxr", row["cxr_path"],
                       "--explain", tmp_path / "p", "--target", "mean_gradient_mmhg", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and set(d["explanations"]) == {"cxr:mean_gradient_mmhg", "ecg:mean_gradient_mmhg"}
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in d["explanations"].values())


def test_figure_title_names_the_target(runs, tmp_path, monkeypatch):
    """The target is written in the figure title (captured from the plotting call)."""
    import cardiofusion.explain.api as api

    titles = []
    real = api.plot_cxr_explanation

    def spy(expl, path, title=None, **kw):
        titles.append(title)
        return real(expl, path, title=title, **kw)

    monkeypatch.setattr(api, "plot_cxr_explanation", spy)
    rid = _val(runs, "ordinal").iloc[0]["record_id"]
    api.explain_records(runs["ordinal"], [rid], tmp_path, output="raised")
    assert len(titles) == 1 and "target: class raised" in titles[0]


def test_export_command_of_a_multilabel_run(runs, tmp_path, capsys):
    rc, out, _ = _cli(["export", runs["multilabel"], "--out", tmp_path / "b", "--no-onnx"], capsys)
    assert rc == 0 and "task         two_labels (multilabel: AS, fast jet)" in out and "per-label threshold" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["decision"]["thresholds"] == {"AS": 0.5, "fast jet": 0.4}
    rc, _, err = _cli(["export", runs["multilabel"], "--out", tmp_path / "c", "--target-sensitivity", "0.9"], capsys)
    assert rc != 0 and "no single decision threshold" in err and not (tmp_path / "c").exists()


def test_export_checks_use_the_tasks_labels(runs):
    from cardiofusion.bundle.export import _split_loader
    from cardiofusion.training import load_run

    loaded = load_run(runs["multilabel"])
    labels = torch.cat([b["label"] for b in _split_loader(loaded, "val")])
    # the task's two label columns (dx_as with unknown entries, dx_fast never unknown), not the manifest's `label`
    assert labels.ndim == 2 and labels.shape[1] == 2 and torch.isfinite(labels[:, 1]).all()


#: loose enough for the tiny one-epoch models' few validation records
LOOSE = {"auroc": 1.0, "flip_fraction": 1.0, "mae": 10.0}


def _values(prediction) -> np.ndarray:
    return np.array([o["value"] if o["value"] is not None else o["probability"] for o in prediction.outputs])


@pytest.mark.parametrize("kind", list(TASKS))
def test_reduced_precisions_of_every_task_kind_agree_with_fp32_as_checked(runs, kind, tmp_path, one_thread):
    """bf16 and int8 bundles of multiclass, multilabel and regression runs: the export check's fp32 metric is the
    run's validation metric (scikit-learn on its score table), and prediction in each precision differs from
    fp32 by what the check measured."""
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    from cardiofusion.bundle import export_bundle, load, read_manifest

    bundle = export_bundle(runs[kind], tmp_path / "b", precisions=("bf16", "int8"), tolerances=LOOSE)
    section = read_manifest(bundle)["precision"]
    val = _val(runs, kind)
    assert section["offered"] == ["fp32", "bf16", "int8"] and section["checked_on"]["n_records"] == len(val)
    fp32 = load(bundle)
    task = fp32.task
    labels, preds = task.labels_from_table(val), task.predictions_from_table(val)
    if task.kind == "regression":
        want = np.mean([mean_absolute_error(labels[:, j], preds[:, j]) for j in range(labels.shape[1])])
        assert section["checks"]["int8"]["mae_fp32"] == pytest.approx(want, rel=1e-4)
    else:
        aucs = []
        for j in range(preds.shape[1]):  # one-vs-rest per class, or per label; known labels only
            y = (np.where(np.isfinite(labels), (labels == j).astype(float), np.nan) if task.kind == "multiclass"
                 else labels[:, j])
            known = np.isfinite(y)
            if len(np.unique(y[known])) == 2:
                aucs.append(roc_auc_score(y[known], preds[known, j]))
        assert section["checks"]["int8"]["auroc_fp32"] == pytest.approx(np.mean(aucs), abs=1e-6)
    patients = [fp32.prepare(r["ecg_path"], r["cxr_path"], patient_id=r["record_id"]) for _, r in val.iterrows()]
    ref = fp32.predict_prepared(patients)
    for precision, runtime in (("bf16", "torch"), ("int8", "onnx")):
        check = section["checks"][precision]
        screener = load(bundle, precision=precision)
        assert (screener.precision, screener.runtime) == (precision, runtime) and check["accepted"]
        got = screener.predict_prepared(patients)
        score_diff = max(np.abs(np.subtract(g.scores["fused"], r.scores["fused"])).max() for g, r in zip(got, ref))
        assert 0 < score_diff <= check["max_abs_score_diff"] + 1e-4  # really reduced, and as the check measured
        diffs = np.abs(np.stack([_values(g) for g in got]) - np.stack([_values(r) for r in ref]))
        if task.kind == "regression":
            for j, name in enumerate(task.target_names):
                assert diffs[:, j].max() <= check["max_abs_value_diff"][name] * (1 + 1e-3) + 1e-4
        else:
            assert diffs.max() <= check["max_abs_prob_diff"] + 1e-4
            assert sum(g.decision != r.decision for g, r in zip(got, ref)) == check["decision_flips"]


def test_dynamic_int8_of_an_ordinal_head(runs, tmp_path, one_thread):
    """The ordinal head's shared logit is a one-column MatMul plus K - 1 cut-points: ONNX Runtime's dynamic
    quantiser fused it into a node that refused to run.  It stays fp32, the rest is int8, the bundle works."""
    import onnx

    from cardiofusion.bundle import export_bundle, load, read_manifest
    from cardiofusion.bundle.precision import _single_output_matmuls

    graph = (_bundle(runs, "ordinal") / "model.onnx").read_bytes()
    kept = _single_output_matmuls(graph)
    model = onnx.load_from_string(graph)
    widths = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    assert kept and all(nodes[k].op_type == "MatMul" and widths[nodes[k].input[1]][-1] == 1 for k in kept)
    bundle = export_bundle(runs["ordinal"], tmp_path / "b", precisions=["int8"], int8="dynamic", tolerances=LOOSE)
    check = read_manifest(bundle)["precision"]["checks"]["int8"]
    assert check["quantisation"] == "dynamic" and check["accepted"] and check["n_records"] == len(_val(runs, "ordinal"))
    row = _val(runs, "ordinal").iloc[0]
    got = load(bundle, precision="int8").predict(row["ecg_path"], row["cxr_path"])
    assert got.decision in TASKS["ordinal"]["classes"] and abs(sum(o["probability"] for o in got.outputs) - 1) < 1e-4


@pytest.mark.parametrize("kind", list(TASKS))
def test_non_finite_outputs_are_an_error_everywhere(runs, kind, tmp_path, capsys):
    """NaN X-ray head weights: predict raises, the CLI prints one error line, the batch row with an X-ray
    fails while the ECG-only row is predicted, the web service answers 500."""
    import shutil

    from safetensors.torch import load_file, save_file

    from cardiofusion.bundle import load
    from cardiofusion.bundle.format import read_manifest, write_manifest
    from cardiofusion.bundle.screener import PredictionError
    from cardiofusion.serve.app import ScreeningService
    from cardiofusion.serve.sniff import Upload, UploadError

    bundle = tmp_path / "nan"
    shutil.copytree(_bundle(runs, kind), bundle)
    state = load_file(str(bundle / "model.safetensors"))
    keys = [k for k, v in state.items() if k.startswith("fusion.cxr_head") and v.is_floating_point()]
    assert keys
    for key in keys:
        state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(bundle / "model.safetensors"))
    manifest = read_manifest(bundle)
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    val = _val(runs, kind).head(2)
    row = val.iloc[1]
    with pytest.raises(PredictionError, match="non-finite score"):
        load(bundle).predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
    rc, out, err = _cli(["predict", bundle, "--ecg", row["ecg_path"], "--cxr", row["cxr_path"], "--json"], capsys)
    assert rc != 0 and out == "" and err.startswith("cardiofusion: error: the model gave a non-finite score")
    pd.DataFrame({"patient_id": ["ecg-only", "both"], "ecg": list(val["ecg_path"]),
                  "cxr": ["", row["cxr_path"]]}).to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = _cli(["predict", bundle, "--batch", tmp_path / "t.csv", "--out", tmp_path / "o.jsonl",
                       "--no-progress"], capsys)
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rc == 1 and [r["status"] for r in lines] == ["ok", "failed"] and "non-finite" in lines[1]["error"]
    service = ScreeningService(load(bundle), max_upload_bytes=20_000_000)
    with pytest.raises(UploadError) as e:
        service.predict({"ecg": [Upload(Path(row["ecg_path"]).read_bytes(), "a.csv")],
                         "cxr": [Upload(Path(row["cxr_path"]).read_bytes(), "b.dcm")]}, {"explain": "0"})
    assert e.value.status == 500


def test_browser_shows_the_outputs_table(runs, tmp_path):
    """The clinician's page with a multilabel bundle: one table row per label with its probability,
    threshold and decision (as the API answered), the labels' heat maps named by target."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from test_serve import _browser, _Server

    from cardiofusion.bundle import load
    from cardiofusion.serve import create_app

    screener = load(_bundle(runs, "multilabel"))
    row = _val(runs, "multilabel").iloc[0]
    want = screener.predict(ecg=row["ecg_path"], cxr=row["cxr_path"])
    server = _Server(create_app(screener, max_upload_mb=20))
    browser = None
    try:
        browser = _browser()
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 90)
        wait.until(lambda b: "Task: two_labels" in b.find_element(By.ID, "model-card").text)
        assert "two_labels" in browser.find_element(By.ID, "page-title").text
        browser.find_element(By.ID, "ecg").send_keys(str(row["ecg_path"]))
        browser.find_element(By.ID, "cxr").send_keys(str(row["cxr_path"]))
        browser.find_element(By.ID, "submit").click()
        wait.until(ec.visibility_of_element_located((By.ID, "task-result")))
        wait.until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('#target-figures img')].length > 0 && "
            "[...document.querySelectorAll('#target-figures img')].every(i => i.naturalWidth > 100)"))
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#outputs-body tr")]
        assert [r[0] for r in rows] == ["AS", "fast jet"]
        for r, o in zip(rows, want.outputs):
            assert float(r[1]) == pytest.approx(o["probability"], abs=1e-3)
            assert float(r[2]) == pytest.approx(o["threshold"]) and r[3] == o["decision"].upper()
        assert not browser.find_element(By.ID, "binary-prob").is_displayed()
        captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#target-figures figcaption")]
        targets = want.positive_labels or ["AS"]
        assert sorted(captions) == sorted(f"{m} \u2013 target {t}" for t in targets for m in (
            "X-ray: Grad-CAM overlay", "ECG: lead importance \u00d7 time"))
        browser.save_screenshot(str(tmp_path / "multilabel_page.png"))
    finally:
        if browser is not None:
            browser.quit()
        server.stop()
