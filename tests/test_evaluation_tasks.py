"""Evaluation of multiclass, multi-label and regression tasks: every metric against scikit-learn / scipy on the
same records (point estimates and bootstrap resamples = records repeated), hand-computed values, unknown labels,
the evaluation folder (metrics, comparisons, figures, report), run folders / the command line with a task, and
the binary path left as it was."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cardiofusion.errors import ConfigError
from cardiofusion.evaluation import bootstrap_weights, evaluate_runs, evaluate_tables, resample_indices
from cardiofusion.evaluation.metrics import RankedScores
from cardiofusion.evaluation.multiclass import MulticlassMetrics, sklearn_multiclass_metrics
from cardiofusion.evaluation.multilabel import MultilabelMetrics, sklearn_multilabel_metrics
from cardiofusion.evaluation.regression import RegressionMetrics, reference_regression_metrics
from cardiofusion.tasks import Task, load_task

CLASSES = ["none", "mild", "moderate", "severe"]


def _agree(family, reference, *args, weights=None, rtol=1e-9, atol=1e-12):
    """The family's point estimate and each resample equal the reference on the (repeated) records."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [None] if weights is None else list(range(weights.shape[0]))
        values = family.matrix(weights)
        for r, row in enumerate(rows):
            idx = np.arange(len(args[0])) if row is None else resample_indices(weights[row])
            ref = reference(*[a[idx] if isinstance(a, np.ndarray) else a for a in args])
            assert set(ref) == set(family.keys)
            for j, key in enumerate(family.keys):
                assert values[r, j] == pytest.approx(ref[key], rel=rtol, abs=atol, nan_ok=True), (row, key)


def _multiclass(n, seed, k=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = np.round(rng.normal(size=(n, k)) + 1.3 * np.eye(k)[y], 1)  # rounding: ties
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True), rng.integers(0, n // 2, n)


# ---------------------------------------------------------------------------------------------------
# metric families against the references
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_equals_sklearn(seed):
    y, p, pid = _multiclass(90, seed)
    fam = MulticlassMetrics(y, p, CLASSES)
    _agree(fam, sklearn_multiclass_metrics, y, p, CLASSES)
    _agree(fam, sklearn_multiclass_metrics, y, p, CLASSES, weights=bootstrap_weights(pid, 25, seed))
    y2 = np.where(y == 2, 1, y)  # a class without records: its metrics n/a, left out of the averages
    fam2 = MulticlassMetrics(y2, p, CLASSES)
    _agree(fam2, sklearn_multiclass_metrics, y2, p, CLASSES)
    assert np.isnan(fam2.point()["recall:moderate"]) and np.isnan(fam2.point()["auroc:moderate"])


def test_multiclass_by_hand():
    # 4 records, classes 0..2: truth 0 0 1 2, predicted 0 1 1 0
    y = np.array([0, 0, 1, 2])
    p = np.eye(3)[[0, 1, 1, 0]] * 0.8 + 0.2 / 3
    m = MulticlassMetrics(y, p, ["a", "b", "c"]).point()
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["recall:a"] == 0.5 and m["precision:b"] == 0.5 and m["f1:c"] == 0.0
    # kappa: observed sum of (i-j)^2 = 1 (0->1) + 4 (2->0) = 5; expected = sum_ij r_i c_j (i-j)^2 / n
    rows, cols = np.array([2, 1, 1]), np.array([2, 2, 0])
    expected = sum(rows[i] * cols[j] * (i - j) ** 2 for i in range(3) for j in range(3)) / 4
    assert m["quadratic_kappa"] == pytest.approx(1 - 5 / expected)
    np.testing.assert_array_equal(MulticlassMetrics(y, p, ["a", "b", "c"]).confusion()[0],
                                  [[1, 1, 0], [0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("unknown", [0.0, 0.2])
def test_multilabel_equals_sklearn(unknown):
    rng = np.random.default_rng(3)
    n, names = 100, ["AS", "LVH", "HF"]
    y = (rng.random((n, 3)) < [0.3, 0.5, 0.2]).astype(float)
    p = 1 / (1 + np.exp(-np.round(rng.normal(size=(n, 3)) + 1.5 * y - 1, 1)))
    y[rng.random((n, 3)) < unknown] = np.nan
    d = (p >= [0.5, 0.4, 0.3]).astype(float)
    fam = MultilabelMetrics(y, p, names, d)
    _agree(fam, sklearn_multilabel_metrics, y, p, names, d)
    _agree(fam, sklearn_multilabel_metrics, y, p, names, d, weights=bootstrap_weights(rng.integers(0, 40, n), 10, 0))


def test_unknown_label_excluded_from_that_label_only():
    rng = np.random.default_rng(4)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    p = rng.random((60, 2))
    y[:10, 0] = np.nan  # label 0 unknown for 10 records
    base = MultilabelMetrics(y, p, ["a", "b"], p >= 0.5).point()
    p2 = p.copy()
    p2[:10, 0] = rng.random(10)  # what the model says about an unknown label does not count
    moved = MultilabelMetrics(y, p2, ["a", "b"], p2 >= 0.5).point()
    for m in ("auroc", "auprc", "brier", "ece", "recall", "specificity"):
        assert moved[f"{m}:a"] == base[f"{m}:a"] and moved[f"{m}:b"] == base[f"{m}:b"]
    ref = MultilabelMetrics(y[10:, :1], p[10:, :1], ["a"], p[10:, :1] >= 0.5).point()
    assert base["auroc:a"] == ref["auroc:a"] and base["brier:a"] == ref["brier:a"]
    y0 = y.copy()
    y0[:10, 0] = 0  # unknown is not negative
    assert MultilabelMetrics(y0, p, ["a", "b"], p >= 0.5).point()["brier:a"] != base["brier:a"]


def test_pooled_ranking_equals_repeated_entries():
    rng = np.random.default_rng(5)
    y, s = (rng.random(30) < 0.4).astype(float), np.round(rng.random(30), 1)
    rec = rng.integers(0, 10, 30)  # 30 entries on 10 records
    w = rng.integers(0, 3, (4, 10)).astype(float)
    pooled = RankedScores(y, s, columns=rec, n_columns=10).auroc_auprc(w)
    plain = RankedScores(y, s).auroc_auprc(w[:, rec])
    np.testing.assert_allclose(pooled, plain, rtol=1e-12)


def test_regression_equals_sklearn_scipy():
    rng = np.random.default_rng(6)
    n = 80
    y = np.c_[rng.normal(3, 1, n), rng.normal(55, 10, n)]
    p = np.round(0.8 * y + rng.normal(0, [0.5, 6], (n, 2)) + [0.5, 8], 1)
    y[rng.random(n) < 0.2, 1] = np.nan  # missing targets: left out of that target only
    names = ["peak_velocity_m_s", "lvef_pct"]
    fam = RegressionMetrics(y, p, names, {"lvef_pct": "%"})
    _agree(fam, reference_regression_metrics, y, p, names)
    _agree(fam, reference_regression_metrics, y, p, names, weights=bootstrap_weights(rng.integers(0, 30, n), 20, 1))
    assert fam.point()["mae:peak_velocity_m_s"] == pytest.approx(np.mean(np.abs(p[:, 0] - y[:, 0])))
    assert {i.key: i.unit for i in fam.infos}["mae:lvef_pct"] == "%"


def test_regression_by_hand():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    p = 2 * y + 1  # perfectly correlated, biased, too wide
    m = RegressionMetrics(y, p, ["x"]).point()
    assert m["mae:x"] == pytest.approx(3.5) and m["pearson_r:x"] == pytest.approx(1.0)
    assert m["spearman_r:x"] == pytest.approx(1.0) and m["bias:x"] == pytest.approx(3.5)
    sd = np.std(y[:, 0] + 1, ddof=1)
    assert m["loa_high:x"] == pytest.approx(3.5 + 1.96 * sd) and m["loa_low:x"] == pytest.approx(3.5 - 1.96 * sd)
    assert m["calibration_slope:x"] == pytest.approx(0.5) and m["calibration_intercept:x"] == pytest.approx(-0.5)


# ---------------------------------------------------------------------------------------------------
# the evaluation folder
# ---------------------------------------------------------------------------------------------------
def _tables(task: Task, n: int = 120, seed: int = 0) -> dict[str, tuple[None, pd.DataFrame]]:
    """Score tables in the task's column contract: two models, the second better."""
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, n // 2, n)
    width = len(task.columns)
    if task.kind == "multiclass":
        y = rng.integers(0, task.n_classes, n).astype(float)
    elif task.kind == "multilabel":
        y = (rng.random((n, width)) < 0.35).astype(float)
        y[rng.random((n, width)) < 0.1] = np.nan
    else:
        y = rng.normal(50, 10, (n, width))
        y[rng.random((n, width)) < 0.1] = np.nan
    out = {}
    for name, gain in (("ECG", 0.8), ("Multimodal", 2.5)):
        if task.kind == "multiclass":
            logits = rng.normal(size=(n, task.n_classes)) + gain * np.eye(task.n_classes)[y.astype(int)]
            pr = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            labels = y
        elif task.kind == "multilabel":
            pr = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + gain * np.nan_to_num(y) - 1)))
            labels = y
        else:
            pr = np.nan_to_num(y, nan=50.0) + rng.normal(0, 12 / gain, y.shape)
            labels = y
        cols = task.table_from_outputs(labels, np.zeros((n, task.n_outputs)), pr if task.kind != "regression"
                                       else np.zeros_like(pr))
        df = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{q}" for q in pid], **cols})
        if task.kind == "regression":
            df[task.prediction_columns()] = pr
        out[name] = (None, df)
    return out


def _regression_task() -> Task:
    return Task(name="echo", kind="regression", columns=["peak_velocity_m_s", "lvef_pct"],
                units={"peak_velocity_m_s": "m/s", "lvef_pct": "%"}, scaler={"mean": [0, 0], "std": [1, 1]})


TASKS = {"multiclass": lambda: load_task("as_severity"), "multilabel": lambda: load_task("cardiac_multilabel"),
         "regression": _regression_task}
FIGURES = {"multiclass": ("confusion_matrix", "roc"), "multilabel": ("roc", "calibration"),
           "regression": ("scatter", "bland_altman")}


@pytest.fixture(scope="module", params=list(TASKS))
def evaluated(request, tmp_path_factory):
    task = TASKS[request.param]()
    tables = _tables(task)
    val = _tables(task, 50, seed=1)
    tables = {name: (val[name][1], test) for name, (_, test) in tables.items()}
    test = tables["ECG"][1]
    rng = np.random.default_rng(2)
    manifest = pd.DataFrame({"record_id": test["record_id"], "age": rng.integers(35, 95, len(test)).astype(float),
                             "sex": rng.choice(["F", "M"], len(test))})
    result = evaluate_tables(tables, tmp_path_factory.mktemp(request.param) / "evaluation", task=task, n_boot=100,
                             seed=0, manifest=manifest, subgroups="age,sex")
    return task, tables, result, manifest


def test_evaluation_folder(evaluated):
    task, tables, result, _ = evaluated
    out = result.out_dir
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) == {"ECG", "Multimodal", "comparisons", "settings"}
    assert data["settings"]["task"]["kind"] == task.kind and data["settings"]["n_boot"] == 100
    csv = pd.read_csv(out / "metrics.csv")
    assert {"average", "target", "unit"} <= set(csv.columns) and csv["average"].notna().all()
    for name, (_, table) in tables.items():
        from cardiofusion.evaluation.task_evaluate import metric_family, prepare_task_table

        expected = metric_family(task, prepare_task_table(table, task, name)[0]).point()
        assert set(data[name]) == set(expected)
        for key, value in expected.items():
            entry = data[name][key]
            if np.isfinite(value):
                assert entry["value"] == pytest.approx(value, rel=1e-12)
                assert entry["ci_low"] <= entry["median"] <= entry["ci_high"]
    primary = data["settings"]["primary_metric"]
    comp = data["comparisons"]["Multimodal vs ECG"]["metrics"][primary]
    assert comp["difference"] == pytest.approx(data["Multimodal"][primary]["value"] - data["ECG"][primary]["value"])
    assert comp["p_value"] < 0.05  # the better model is better
    better = comp["difference"] > 0 if task.primary_metric[1] else comp["difference"] < 0
    assert better and comp["ci_low"] * comp["ci_high"] > 0
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons["metric"]) == set(expected) and comparisons["p_value"].between(0, 1).all()
    assert len(pd.read_csv(out / "predictions.csv")) == result.settings["records"]["records"]
    assert result.models["ECG"].val_counts["records"] == 50 - (0 if task.kind == "multiclass" else
                                                               int(np.isnan(tables["ECG"][0][task.label_columns()])
                                                                   .all(axis=1).sum()))


def test_task_subgroups(evaluated):
    from cardiofusion.evaluation.task_evaluate import metric_family, prepare_task_table

    task, tables, result, manifest = evaluated
    sub = pd.read_csv(result.out_dir / "subgroups.csv")
    assert set(sub["column"]) == {"age", "sex"} and set(sub.loc[sub["column"] == "sex", "level"]) == {"F", "M"}
    primary = result.settings["primary_metric"]
    rows = sub[(sub["model"] == "ECG") & (sub["metric"] == primary)]
    for _, part in rows.groupby("column"):
        assert part["n"].sum() == result.settings["records"]["records"]  # the levels partition the records
    table = prepare_task_table(tables["ECG"][1], task, "ECG")[0]
    women = set(manifest.loc[manifest["sex"] == "F", "record_id"])
    expected = metric_family(task, table[table["record_id"].isin(women)].reset_index(drop=True)).point()[primary]
    row = rows[(rows["column"] == "sex") & (rows["level"] == "F")].iloc[0]
    assert row["value"] == pytest.approx(expected, rel=1e-12)
    assert row["ci_low"] <= row["median"] <= row["ci_high"]
    assert "5. Subgroups" in result.report.read_text()


def test_evaluation_figures_and_report(evaluated):
    task, _, result, _ = evaluated
    for key in FIGURES[task.kind]:
        with Image.open(result.paths[key]) as img:
            arr = np.asarray(img.convert("L"), dtype=float)
        assert img.size[0] > 400 and arr.std() > 10 and (arr < 128).mean() > 0.005, key
    text = result.report.read_text()
    assert "http://" not in text and "https://" not in text
    srcs = [part.split('"', 1)[0] for part in text.split('src="')[1:]]
    assert len(srcs) == len(FIGURES[task.kind]) and all(s.startswith("data:image/png;base64,") for s in srcs)
    for word in ("ECG", "Multimodal", "p-value vs Multimodal", *task.classes):
        assert word in text
    if task.kind == "multiclass":
        assert "Quadratic-weighted kappa" in text and "F1, macro" in text and "F1, weighted" in text
        cm = pd.read_csv(result.paths["confusion_csv"])
        assert cm.groupby("model")["count"].sum().eq(result.settings["records"]["records"]).all()
    if task.kind == "multilabel":
        assert "AUROC, micro" in text and "AUROC, macro" in text
    if task.kind == "regression":
        assert "Bland-Altman bias" in text and "(m/s)" in text and "(%)" in text


def test_task_table_errors(tmp_path):
    task = load_task("as_severity")
    _, table = _tables(task, 40)["ECG"]
    with pytest.raises(ConfigError, match="prob_severe"):
        evaluate_tables({"m": (None, table.drop(columns=["prob_severe"]))}, tmp_path, task=task, n_boot=10)
    with pytest.raises(ConfigError, match="not a class index"):
        evaluate_tables({"m": (None, table.assign(label=7))}, tmp_path, task=task, n_boot=10)
    ml = load_task("cardiac_multilabel")
    _, t2 = _tables(ml, 40)["ECG"]
    with pytest.raises(ConfigError, match="label_HF"):
        evaluate_tables({"m": (None, t2.assign(label_HF=2.0))}, tmp_path, task=ml, n_boot=10)


def test_binary_task_keeps_the_binary_path(tmp_path):
    rng = np.random.default_rng(0)

    def table(n, split):
        y = (rng.random(n) < 0.3).astype(float)
        return pd.DataFrame({"record_id": [f"{split}{i}" for i in range(n)], "patient_id": [f"P{i}" for i in range(n)],
                             "label": y, "score": y + rng.normal(size=n)})

    tables = {"A": (table(60, "v"), table(60, "t"))}
    plain = evaluate_tables(tables, tmp_path / "plain", n_boot=50, subgroups=[])
    named = evaluate_tables(tables, tmp_path / "named", n_boot=50, subgroups=[], task="aortic_stenosis")
    assert (tmp_path / "plain" / "metrics.csv").read_text() == (tmp_path / "named" / "metrics.csv").read_text()
    assert plain.metrics_json() == named.metrics_json() and "task" not in plain.settings


def _evaluate_command(argv: list[str]) -> int:
    """``cardiofusion evaluate ARGV`` through its own parser (the full CLI imports every command: slow)."""
    import argparse

    from cardiofusion.commands import evaluate as command

    parser = argparse.ArgumentParser(prog="cardiofusion")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


def test_runs_and_command_line_with_a_task(tmp_path, capsys):
    task = load_task("as_severity")
    tables = _tables(task, 80)
    runs = {}
    for name, (_, t) in tables.items():
        run = tmp_path / name
        run.mkdir()
        t.to_csv(run / "scores_test.csv", index=False)
        runs[name] = run
    out = tmp_path / "cli"
    rc = _evaluate_command([str(runs["ECG"]), str(runs["Multimodal"]), "--task", "as_severity", "--out", str(out),
                            "--bootstrap", "50", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "Quadratic-weighted kappa" in printed and (out / "report.html").is_file()
    assert json.loads((out / "metrics.json").read_text())["settings"]["task"]["name"] == "as_severity"
    result = evaluate_runs(runs, tmp_path / "api", task=task, n_boot=30)
    assert result.settings["task"]["name"] == "as_severity" and "ECG" in result.models
    # the task saved in a run's config.yaml (TrainConfig.task) is the runs' task; a different --task is an error
    from cardiofusion.evaluation.evaluate import run_task

    configured = {}
    for name in ("a", "b"):
        run = tmp_path / "configured" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"task": task.to_dict()}))
        configured[name] = run
    assert run_task(configured).name == "as_severity" and run_task(configured, "as_severity").ordinal
    assert run_task({"x": runs["ECG"]}).is_binary  # no config: the binary AS task
    task_file = tmp_path / "severity.yaml"
    task_file.write_text(yaml.safe_dump(task.to_dict()))
    assert run_task({"x": runs["ECG"]}, str(task_file)).classes == CLASSES  # --task FILE
    with pytest.raises(ConfigError, match="differs from the runs' own task"):
        run_task(configured, "cardiac_multilabel")
    (configured["b"] / "config.yaml").write_text(yaml.safe_dump({"task": load_task("cardiac_multilabel").to_dict()}))
    with pytest.raises(ConfigError, match="evaluate runs of one task together"):
        run_task(configured)


# ---------------------------------------------------------------------------------------------------
# trained runs end to end (the task from RUN/config.yaml)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_trained_runs_of_every_kind_evaluate(tmp_path, one_thread):
    from conftest import build_tiny_cache, register_stand_in_encoders

    from cardiofusion.models import ModelConfig
    from cardiofusion.training import TrainConfig, fit
    from cardiofusion.transforms.preprocess import PreprocessConfig

    register_stand_in_encoders()
    cohort = build_tiny_cache(tmp_path, fs=250.0, duration_s=2.0, image_size=32, n_patients=24, delete_export=True)
    df = pd.read_parquet(cohort["manifest"])
    rank = df.groupby("split").cumcount().to_numpy()
    rng = np.random.default_rng(0)
    df["sev"] = np.array(CLASSES)[rank % 4]
    df["dx1"], df["dx2"] = (rank % 2).astype(float), ((rank // 2) % 2).astype(float)
    df.loc[rank % 5 == 4, "dx2"] = np.nan
    df["vel"] = 2.0 + rng.normal(size=len(df))
    manifest = tmp_path / "manifest.parquet"
    df.to_parquet(manifest)
    tasks = {"ordinal": {"name": "sev", "kind": "multiclass", "ordinal": True, "columns": ["sev"], "classes": CLASSES},
             "multilabel": {"name": "dx", "kind": "multilabel", "columns": ["dx1", "dx2"]},
             "regression": {"name": "echo", "kind": "regression", "columns": ["vel"], "units": {"vel": "m/s"}}}
    for kind, task in tasks.items():
        config = TrainConfig(cache_dir=str(cohort["cache"]), manifest=str(manifest), task=task, batch_size=16,
                             lr=1e-2, max_epochs=1, num_workers=0,
                             model=ModelConfig(fusion="late", ecg_encoder="test_ecg_stats",
                                               cxr_encoder="test_cxr_conv"),
                             preprocess=PreprocessConfig(fs=250.0, window_s=1.0, eval_stride_s=1.0, image_size=32))
        run = fit(config, tmp_path / kind / "late", progress=False).run_dir
        runs = {"late": run, "again": run}  # the same run twice: every paired difference is exactly 0
        result = evaluate_runs(runs, tmp_path / kind / "evaluation", n_boot=50, subgroups=[])
        data = json.loads((result.out_dir / "metrics.json").read_text())
        assert data["settings"]["task"]["name"] == task["name"]
        test = pd.read_csv(Path(run) / "scores_test.csv")
        assert data["settings"]["records"]["records"] == len(test)
        primary = data["settings"]["primary_metric"]
        assert primary == {"ordinal": "quadratic_kappa", "multilabel": "macro_auroc", "regression": "mae"}[kind]
        diff = data["comparisons"]["again vs late"]["metrics"][primary]
        assert diff["difference"] == 0 and diff["p_value"] == 1
        assert data["late"][primary] == data["again"][primary]
        assert result.report.is_file()
