"""The fusion benchmark end to end on a tiny PSEUDO-PAIRED cohort of real PTB-XL ECGs and NIH X-rays.

Skipped without ``../shared/data``.  Tiny encoders (registered here), 1 epoch, 50 resamples: the point is
that every stage runs, every output exists and is labelled, the rho is the validation-best one, the
numbers agree with scikit-learn, and a re-run reuses everything.
"""

from __future__ import annotations

from conftest import register_stand_in_encoders

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cardiofusion.cli import main

SHARED_FOLD_MAP = "train=1-4+6-7,val=5,test=8"
ROWS = ("Sokolow-Lyon voltage", "Cornell voltage", "ECG only", "X-ray only", "Early fusion", "Late fusion",
        "Cooperative (rho=")


@pytest.fixture(scope="module")
def tiny_cohort(shared_data, tmp_path_factory):
    """PTB-XL (HYP vs normal) x 40 + 40 NIH images -> a 32/16/16 pseudo-paired cohort."""
    from cardiofusion.adapters import (
        PairingConfig,
        adapt_nih,
        adapt_ptbxl,
        pseudo_paired_cohort,
    )
    from cardiofusion.adapters.ptbxl import PTBXLConfig

    root = tmp_path_factory.mktemp("bench")
    nih = root / "nih"
    for folder in ("cardiomegaly", "no_cardiomegaly"):
        (nih / folder).mkdir(parents=True)
        for src in sorted((shared_data / "nih-cardiomegaly-128" / folder).glob("*.png"))[:40]:
            (nih / folder / src.name).symlink_to(src)
    ecg = adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=100, fold_map=SHARED_FOLD_MAP))
    cxr = adapt_nih(nih)
    config = PairingConfig(n_train=32, n_val=16, n_test=16, sens_ecg=0.9, spec_ecg=0.9, replace=True,
                           exact_prevalence=True, seed=3)
    pseudo_paired_cohort(ecg, cxr, root / "cohort", config, ecg_positive="hyp")
    return root


def _argv(cohort, out):
    return ["benchmark", "fusion", "--cohort", str(cohort), "--out", str(out), "--fs", "100", "--duration-s", "4",
            "--window-s", "2", "--image-size", "32", "--max-epochs", "1", "--rhos", "0,1", "--bootstrap", "50",
            "--ecg-encoder", "benchmark_test_ecg", "--cxr-encoder", "benchmark_test_cxr", "--cxr-weights", "none",
            "--batch-size", "8", "--ecg-lr", "1e-2", "--cxr-lr", "1e-2", "--fusion-lr", "1e-2"]


def test_fusion_benchmark_end_to_end(tiny_cohort, capsys):
    from cardiofusion.recipes import (
        PSEUDO_LABEL,
        BenchmarkConfig,
        run_fusion_benchmark,
    )

    register_stand_in_encoders("benchmark_test_ecg", "benchmark_test_cxr")
    cohort, out = tiny_cohort / "cohort", tiny_cohort / "out"
    assert main(_argv(cohort, out)) == 0
    printed = capsys.readouterr().out
    for step in ("[1/5] cache", "[2/5] train", "[3/5] rho on validation", "[4/5] baselines", "[5/5] evaluate"):
        assert step in printed
    assert PSEUDO_LABEL in printed

    # every output exists and says what the cohort is
    for name in ("benchmark.json", "table.md", "roc.png", "PSEUDO_PAIRED.txt", "baselines/criteria_scores.csv",
                 "evaluation/report.html", "evaluation/metrics.json", "evaluation/predictions.csv",
                 "evaluation/figures/roc.png", "evaluation/PSEUDO_PAIRED.txt", "evaluation_ecg_donor/metrics.json"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert table.startswith(f"### Fusion benchmark -- {PSEUDO_LABEL}")
    assert PSEUDO_LABEL in (out / "evaluation" / "report.html").read_text()
    assert "NOT REAL PAIRED DATA" in (out / "PSEUDO_PAIRED.txt").read_text()
    model_rows = [line for line in table.splitlines() if line.startswith("| ") and "AUROC (95% CI)" not in line]
    assert len(model_rows) == 7
    for row_name, line in zip(ROWS, model_rows):
        assert line.startswith(f"| {row_name}"), (row_name, line)
    info = json.loads((out / "benchmark.json").read_text())
    assert info["label"] == PSEUDO_LABEL and info["pseudo_paired"] is True
    assert [m["model"].split(" (rho=")[0] for m in info["models"]] == [r.split(" (rho=")[0] for r in ROWS]

    # rho: the grid value whose run has the best validation AUROC (read back from the run folders)
    val = {rho: json.loads((out / "runs" / f"cooperative_rho{rho:g}" / "result.json").read_text())["val_auroc"]
           for rho in (0.0, 1.0)}
    best = max(val, key=lambda r: (val[r], -r))  # first maximum in grid order
    assert info["rho_selection"]["chosen_rho"] == best
    assert info["models"][-1]["run"].endswith(f"cooperative_rho{best:g}")
    assert info["models"][-1]["model"] == f"Cooperative (rho={best:g})"
    for m in info["models"][2:]:  # fusion runs were warm-started from the single-modality runs
        if m["key"] in ("early", "late", "cooperative"):
            cfg = (out / "runs" / m["run"].split("/")[-1] / "config.yaml").read_text()
            assert "init_from:" in cfg and str(out / "runs" / "ecg") in cfg

    # the numbers: AUROC / AUPRC equal scikit-learn's on the evaluated test records, 7 models on 16 records
    pred = pd.read_csv(out / "evaluation" / "predictions.csv")
    manifest = pd.read_parquet(cohort / "manifest.parquet")
    assert sorted(pred["record_id"]) == sorted(manifest.loc[manifest["split"] == "test", "record_id"])
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    for m in info["models"]:
        y, s = pred["label"].to_numpy(), pred[f"{m['model']}:score"].to_numpy()
        assert m["auroc"]["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert m["auprc"]["value"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert metrics[m["model"]]["auroc"]["value"] == pytest.approx(m["auroc"]["value"])
        lo, hi = m["auroc"]["ci_low"], m["auroc"]["ci_high"]
        assert lo <= hi and metrics["settings"]["n_boot"] == 50
    # the Sokolow-Lyon score is the voltage of each test record's ECG
    crit = pd.read_csv(out / "baselines" / "criteria_scores.csv", dtype={"record_id": str})
    sl = crit.set_index("record_id")["sokolow_lyon_mv"]
    assert np.allclose(pred["Sokolow-Lyon voltage:score"], sl.loc[pred["record_id"].astype(str)].to_numpy())
    assert set(crit["status"]) == {"ok"}

    # beside every model its two ceilings: the pool labels' (pairing.json) and the ideal combiner of the trained
    # ECG-only and X-ray-only models, from their AUROCs for their own pool labels on the test split's files
    from cardiofusion.adapters.stage_data import ideal_combiner_auroc

    pairing = json.loads((cohort / "pairing.json").read_text())
    labels = manifest.set_index("record_id").loc[pred["record_id"]]
    branch = {m: roc_auc_score(labels[f"{m}_label"], pred[f"{name}:score"])
              for m, name in (("ecg", "ECG only"), ("cxr", "X-ray only"))}
    rates = {k: float(pairing["realised"]["test"][k]) for k in ("sens_ecg", "spec_ecg", "sens_cxr", "spec_cxr")}
    ideal = {"ecg": ideal_combiner_auroc(branch["ecg"], None, **rates),
             "cxr": ideal_combiner_auroc(None, branch["cxr"], **rates),
             "both": ideal_combiner_auroc(branch["ecg"], branch["cxr"], **rates)}
    pool = pairing["oracle_auroc_from_pool_labels"]
    pool = {"ecg": pool["ecg_label_only"], "cxr": pool["cxr_label_only"], "both": pool["both_labels"]}
    assert info["ceilings"]["trained_branches_on_paired_test"]["branch_auroc_on_test_images"] == pytest.approx(branch)
    assert "Ceiling: pool labels | Ceiling: ideal combiner of the trained branches |" in table
    for m, line in zip(info["models"], model_rows):
        sees = {"ECG only": "ecg", "X-ray only": "cxr"}.get(m["model"], "both" if "fusion" in m["model"]
                                                            or m["model"].startswith("Cooperative") else "ecg")
        assert m["ceilings"]["pool_labels"] == pytest.approx(pool[sees])
        assert m["ceilings"]["trained_branches"] == pytest.approx(ideal[sees])
        assert line.endswith(f"| {pool[sees]:.3f} | {ideal[sees]:.3f} |"), line
    assert ideal["both"] >= max(ideal["ecg"], ideal["cxr"]) - 3e-3 and ideal["both"] <= pool["both"] + 3e-3

    # a re-run with the same settings trains nothing and gives the same table
    lines: list[str] = []
    config = BenchmarkConfig(fs=100, duration_s=4, window_s=2, image_size=32, max_epochs=1, rhos=(0, 1), n_boot=50,
                             ecg_encoder="benchmark_test_ecg", cxr_encoder="benchmark_test_cxr", cxr_weights=None,
                             batch_size=8, ecg_lr=1e-2, cxr_lr=1e-2, fusion_lr=1e-2)
    again = run_fusion_benchmark(cohort, out, config, log=lines.append)
    assert not any("training into" in line for line in lines)
    assert sum("reusing the finished run" in line for line in lines) == 6
    assert again.chosen_rho == best and (out / "table.md").read_text() == table
    assert math.isclose(again.evaluation.models[again.table["model"].iloc[-1]].metrics["auroc"].value,
                        info["models"][-1]["auroc"]["value"])


def test_benchmark_bad_arguments(tiny_cohort, tmp_path, capsys):
    from cardiofusion.recipes import BenchmarkConfig
    from cardiofusion.errors import ConfigError

    assert main(["benchmark", "fusion", "--cohort", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "manifest" in capsys.readouterr().err
    assert main(_argv(tiny_cohort / "cohort", tmp_path / "o") + ["--rhos", "0,a"]) == 2
    assert "--rhos" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="duplicates"):
        BenchmarkConfig(rhos=(0.5, 0.5))
    with pytest.raises(ConfigError, match="window_s"):
        BenchmarkConfig(window_s=12, duration_s=10)
