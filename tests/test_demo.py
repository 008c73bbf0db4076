"""``cardiofusion demo`` end to end through the real entry point, on a small synthetic export."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from cardiofusion.cache import open_cache
from cardiofusion.cli import main


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--patients", "80", "--seed", "3", "--workers", "1", "--no-progress",
            "--max-epochs", "1", "--bootstrap", "100"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for needle in ("Cohort flow", "Decoding (preprocessing cache)", "usable records", "Where everything is",
                   "unreadable", str(out / "cohort" / "manifest.parquet"), "Validation AUROC", "ECG only",
                   "X-ray only", "cooperative (ECG + X-ray)"):
        assert needle in text, needle

    summary = json.loads((out / "demo.json").read_text())
    flow = json.loads((out / "cohort" / "flow.json").read_text())
    manifest = pl.read_parquet(out / "cohort" / "manifest.parquet")
    cache = open_cache(out / "cache")
    usable = cache.records(manifest.to_pandas())
    # the numbers add up from linked records to usable ones, and the default export plants broken files
    d = flow["decoding"]
    assert d["records_in"] == manifest.height == flow["cohort"]["records"]
    assert d["records_usable"] == len(usable) == summary["records_usable"]
    assert d["records_in"] - sum(e["count"] for e in d["exclusions"]) == d["records_usable"]
    # every file the cache could not decode is one the generator broke on purpose
    import pandas as pd

    defects = pd.read_csv(out / "export" / "ground_truth" / "defects.csv")
    planted = {str((out / "export" / p).resolve()) for p in defects["path"]}
    assert len(cache.failures) >= 1
    assert {str(Path(p).resolve()) for p in cache.failures["path"]} <= planted
    # no patient in two splits
    assert manifest.group_by("patient_id").agg(pl.col("split").n_unique())["split"].max() == 1

    # three trained runs whose reported AUROC is the one the run folder holds
    assert set(summary["val_auroc"]) == {"ecg", "cxr", "cooperative"}
    for fusion, value in summary["val_auroc"].items():
        run = out / "runs" / fusion
        assert json.loads((run / "result.json").read_text())["val_auroc"] == value
        assert (run / "config.yaml").exists() and (run / "metrics.csv").exists()

    # the cooperative model was warm-started from the two single-modality runs
    coop = yaml.safe_load((out / "runs" / "cooperative" / "config.yaml").read_text())
    assert set(coop["init_from"]) == {"ecg", "cxr"}

    # explanations of test patients and the evaluation report that embeds them
    report = Path(summary["paths"]["report"])
    assert report.is_file() and "Open the evaluation report: " + str(report) in text
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 5 and "http://" not in html and "https://" not in html
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"ECG only", "X-ray only", "cooperative (ECG + X-ray)"} <= set(metrics)
    for name in ("ECG only", "X-ray only", "cooperative (ECG + X-ray)"):
        assert {"value", "ci_low", "ci_high"} <= set(metrics[name]["auroc"])
    shown = json.loads((out / "explanations" / "explanations.json").read_text())["records"]
    assert shown and all(Path(p).is_file() for e in shown for p in e["images"].values())
    assert any(e["record_id"] in html for e in shown)

    # a second run reuses the export, the finished cache and the finished runs
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reusing the identical export" in text and text.count("reusing the finished run") == 3
    assert pl.read_parquet(out / "cohort" / "manifest.parquet").equals(manifest)
    assert json.loads((out / "demo.json").read_text())["val_auroc"] == summary["val_auroc"]
