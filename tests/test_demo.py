"""``cardiofusion demo`` end to end through the real entry point, on a small synthetic export."""

from __future__ import annotations

import json

import polars as pl

from cardiofusion.cache import open_cache
from cardiofusion.cli import main


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--patients", "40", "--seed", "3", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for needle in ("Cohort flow", "Decoding (preprocessing cache)", "usable records", "Where everything is",
                   "unreadable", str(out / "cohort" / "manifest.parquet")):
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
    assert len(cache.failures) == 2 and set(cache.failures["modality"]) == {"ecg", "cxr"}
    # no patient in two splits
    assert manifest.group_by("patient_id").agg(pl.col("split").n_unique())["split"].max() == 1

    # a second run reuses the export and the finished cache and gives the same manifest
    assert main(args) == 0
    assert "reusing the identical export" in capsys.readouterr().out
    assert pl.read_parquet(out / "cohort" / "manifest.parquet").equals(manifest)
