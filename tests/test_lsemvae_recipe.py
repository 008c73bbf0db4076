"""The ls-emvae recipe (paper 002) end to end on a tiny synthetic export: pretraining on the cohort's
unlabelled 12-lead ECGs with the paper's named preprocessing, 6-lead fine-tuning with 3-fold CV, a baseline
and an ablation, fold metrics checked against scikit-learn, and everything reused on a re-run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from cardiofusion.records import CANONICAL_LEADS

FS, DURATION = 100.0, 2.0  # 200 samples per lead: a multiple of 8 for the tiny VAE decoder


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from cardiofusion.cohort import CohortConfig, build_cohort
    from cardiofusion.synth import SynthConfig, generate_export

    root = tmp_path_factory.mktemp("lsemvae")
    export = root / "export"
    generate_export(export, SynthConfig(n_patients=24, cxr_size=64, ecg_duration_s=DURATION, as_prevalence=0.4,
                                        compute_oracle=False, n_defective_ecg=0, n_defective_cxr=0),
                    overwrite=True, progress=False)
    build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", root / "cohort",
                 CohortConfig())
    return root


def _config(root):
    from cardiofusion.recipes.lsemvae import LSEMVAERecipeConfig

    return LSEMVAERecipeConfig.from_dict({
        "cohort": str(root / "cohort"), "task": "aortic_stenosis",
        "cache": {"fs": FS, "duration_s": DURATION, "baseline": "lsvae_paper", "image_size": 16},
        "vae": {"arch": "tiny", "beta_anneal_epochs": 2},
        "pretrain": {"max_epochs": 2, "batch_size": 8, "lr": 1e-3},
        "finetune": {"max_epochs": 2, "batch_size": 8, "patience": 2, "lr": 1e-3},
        "head_hidden": 8, "models": ["ls-emvae", "resnet"],
        "resnet_encoder": "ecg_resnet_tiny_transformer", "n_folds": 3, "n_boot": 20,
    })


def test_recipe_end_to_end_then_reused(tiny_cohort, monkeypatch, one_thread):
    from cardiofusion.cache import open_cache
    from cardiofusion.evaluation.evaluate import run_tables
    from cardiofusion.recipes import get_recipe
    from cardiofusion.tasks import load_task
    from cardiofusion.training import TrainConfig

    out = tiny_cohort / "out"
    config = _config(tiny_cohort)
    lines: list[str] = []
    result = get_recipe("ls-emvae").run(config, out, log=lines.append)

    # the cache holds the paper's preprocessing, saved by name: present leads z-scored per record (the
    # export's records are as long as the cache's window, so the whole record is in the cache)
    cache = open_cache(next((out / "caches").iterdir()))
    assert cache.config.baseline == "lsvae_paper"
    signal, mask, n = cache.ecg_at(0)
    x = signal[mask, :n].astype(np.float64)
    np.testing.assert_allclose(x.mean(1), 0.0, atol=5e-3)
    np.testing.assert_allclose(x.std(1, ddof=1), 1.0, atol=5e-3)

    # one pretraining (ls-emvae; the resnet baseline needs none), each loss term logged per epoch
    (pre,) = result.pretraining.values()
    assert pre["epochs"] == 2 and pre["ecg_preprocessing"] == ["lsvae_paper"]
    metrics = pd.read_csv(out / "pretrain" / next(iter(result.pretraining)) / "metrics.csv")
    for term in ("train_recon", "train_kl", "train_align", "val_recon", "beta"):
        assert metrics[term].notna().any(), term

    # fine-tuning: six limb leads, pretrained encoders frozen, the paper's head
    run = out / "cv" / "fold_0" / "ls-emvae"
    tc = TrainConfig.from_file(run / "config.yaml")
    assert tc.model.leads == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert tc.model.ecg_encoder == "lsvae" and tc.model.ecg_kwargs["frozen"] is True
    assert tc.model.ecg_kwargs["pretrained"].endswith("vae.pt")
    assert TrainConfig.from_file(out / "cv" / "fold_0" / "resnet" / "config.yaml").model.ecg_encoder == \
        "ecg_resnet_tiny_transformer"

    # folds: patient-grouped; each fold's test records are disjoint from its train / val records
    for f in range(3):
        fm = pd.read_parquet(out / "cv" / f"fold_{f}" / "manifest.parquet")
        parts = {s: set(fm.loc[fm["split"] == s, "patient_id"]) for s in ("train", "val", "test")}
        assert parts["test"] and not (parts["test"] & (parts["train"] | parts["val"]))

    # fold metrics equal scikit-learn's on the fold's tables (threshold chosen on validation)
    task = load_task("aortic_stenosis")
    val, test = run_tables(run, "test")
    from cardiofusion.evaluation.calibration import choose_threshold

    thr = choose_threshold(val["label"], val["prob"], "youden").value
    y, p = test["label"].to_numpy(int), test["prob"].to_numpy()
    want = {"accuracy": accuracy_score(y, p >= thr), "f1": f1_score(y, p >= thr, zero_division=0),
            "mcc": matthews_corrcoef(y, p >= thr), "auroc": roc_auc_score(y, p)}
    summary = json.loads((out / "summary.json").read_text())
    for metric, value in want.items():
        assert summary["per_fold"]["0"]["ls-emvae"][metric] == pytest.approx(value)
        vals = [summary["per_fold"][str(f)]["ls-emvae"][metric] for f in range(3)]
        assert result.summary["ls-emvae"][metric]["mean"] == pytest.approx(np.nanmean(vals))
    assert task.kind == "binary"

    # pooled out-of-fold evaluation with bootstrap CIs and paired differences against LS-EMVAE
    comp = pd.read_csv(out / "comparison.csv")
    auroc = comp[(comp["metric"] == "auroc")].set_index("model")
    assert set(auroc.index) == {"ls-emvae", "resnet"}
    assert (auroc["ci_low"] <= auroc["value"] + 1e-9).all() and (auroc["value"] <= auroc["ci_high"] + 1e-9).all()
    assert auroc.loc["resnet", "ls_emvae_minus_model"] == pytest.approx(
        auroc.loc["ls-emvae", "value"] - auroc.loc["resnet", "value"])
    assert set(result.actions.values()) == {"trained"}

    # re-run: everything reused, nothing trained
    import cardiofusion.training as training

    def boom(*a, **k):
        raise AssertionError("should have been reused")

    monkeypatch.setattr(training, "fit", boom)
    monkeypatch.setattr("cardiofusion.training.vae_pretrain.pretrain_lsvae", boom)
    again = get_recipe("ls-emvae").run(_config(tiny_cohort), out, log=lines.append)
    assert set(again.actions.values()) == {"reused"}
    assert again.summary["ls-emvae"]["auroc"]["values"] == result.summary["ls-emvae"]["auroc"]["values"]


def test_pretraining_resumes_an_interrupted_folder_and_refuses_foreign_ones(tiny_cohort, one_thread):
    import shutil

    from cardiofusion.errors import ReadError
    from cardiofusion.recipes.steps import ensure_pretrain
    from cardiofusion.training.vae_pretrain import PretrainConfig

    done = next((tiny_cohort / "out" / "pretrain").iterdir())  # written by the end-to-end test
    config = PretrainConfig.from_file(done / "pretrain.yaml")
    assert ensure_pretrain(config, done).action == "reused"
    cut = tiny_cohort / "interrupted"
    shutil.copytree(done, cut)
    (cut / "result.json").unlink()  # killed after its last checkpoint
    again = ensure_pretrain(config, cut)
    assert again.action == "resumed" and again.info["epochs"] == 2 and again.info["resumed"] is True
    foreign = tiny_cohort / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ReadError, match="not an LS-EMVAE pretraining folder"):
        ensure_pretrain(config, foreign)
    assert (foreign / "notes.txt").is_file()


def test_cache_preprocessing_is_the_papers_per_lead_clean_and_zscore():
    import neurokit2 as nk

    from cardiofusion.records import CANONICAL_LEADS, ECGRecord
    from cardiofusion.transforms.decode import CacheConfig, standardize_ecg_record

    rng = np.random.default_rng(0)
    t = np.arange(1000) / 100.0
    signal = np.stack([np.sin(2 * np.pi * (1 + i / 10) * t) + 0.3 * t + 0.05 * rng.standard_normal(t.size)
                       for i in range(12)]).astype(np.float32)  # (12, 1000) mV with a drifting baseline
    record = ECGRecord(signal=signal, fs=100.0, leads=CANONICAL_LEADS, source="r1", format="numpy")
    out, mask, n = standardize_ecg_record(record, CacheConfig(fs=100.0, duration_s=10.0, baseline="lsvae_paper"))
    assert mask.all() and n == 1000
    for i in (0, 4, 11):  # neurokit directly: ecg_clean then a z-score with the sample sd
        clean = nk.ecg_clean(signal[i].astype(np.float64), sampling_rate=100, method="neurokit")
        want = (clean - clean.mean()) / clean.std(ddof=1)
        np.testing.assert_allclose(out[i].astype(np.float64), want, atol=3e-3)  # float16 storage


def test_pretraining_precision_auto():
    from cardiofusion.training.vae_pretrain import PretrainConfig, resolve_pretrain_precision

    assert resolve_pretrain_precision(PretrainConfig(accelerator="cpu")) == "32-true"
    assert resolve_pretrain_precision(PretrainConfig(precision="bf16-mixed")) == "bf16-mixed"
    with pytest.raises(Exception, match="sources"):
        PretrainConfig(sources=[{"cache": "x"}])


def test_fold_metrics_multiclass_and_task_manifest_match_sklearn():
    from cardiofusion.recipes.lsemvae import fold_metrics, task_manifest
    from cardiofusion.tasks import load_task

    task = load_task("as_severity")
    rng = np.random.default_rng(1)
    y = np.tile(np.arange(4), 10)  # (40,)
    p = rng.dirichlet(np.ones(4), size=40)
    p[np.arange(40), y] += 0.5
    p /= p.sum(1, keepdims=True)
    table = pd.DataFrame(task.table_from_outputs(y, np.log(p), p))
    got = fold_metrics(task, None, table)
    pred = p.argmax(1)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))

    # the fine-tuning manifest: restricted, unlabelled rows dropped, k patient-grouped folds
    n = 60
    manifest = pd.DataFrame({"record_id": [str(i) for i in range(n)], "patient_id": [str(i // 2) for i in range(n)],
                             "HYP": [1.0 if i % 5 == 0 else 0.0 for i in range(n)],
                             "NORM": [0.0 if i % 5 == 0 else (1.0 if i % 3 else 0.0) for i in range(n)],
                             "fold": [i % 8 for i in range(n)]})
    hyp = load_task({"name": "hyp", "kind": "binary", "columns": ["HYP"]})
    m = task_manifest(manifest, hyp, ["HYP", "NORM"], 3, 0)
    keep = (manifest["HYP"] == 1) | (manifest["NORM"] == 1)
    assert sorted(m["record_id"]) == sorted(manifest.loc[keep, "record_id"])
    assert set(m["fold"]) == {0, 1, 2} and (m.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (m["label"] == m["HYP"]).all()
    # at most one (the earliest) record per patient
    one = task_manifest(manifest, hyp, [], 3, 0, records_per_patient=1)
    assert len(one) == n // 2 and one["patient_id"].is_unique
    assert set(one["record_id"]) == {str(i) for i in range(0, n, 2)}


def test_mopoe_and_beta_vae_are_recipe_models(tmp_path):
    """The two baselines are built by name: their pretraining VAE settings and a fine-tuning model that
    loads the pretrained weights (the beta-VAE through the ``betavae`` encoder, by lead name)."""
    import torch

    from cardiofusion.models import build_model
    from cardiofusion.models.lsvae import LSEMVAE, LSVAEConfig, SingleVAEECGEncoder
    from cardiofusion.recipes.lsemvae import DEFAULT_MODELS, MODELS, _vae_settings, finetune_config
    from cardiofusion.tasks import load_task

    assert {"mopoe", "beta-vae"} <= set(DEFAULT_MODELS)
    config = _config(tmp_path)
    config.vae = {**config.vae, "free_bits": 0.1}  # the recipe's settings reach every variant
    task = load_task("aortic_stenosis")
    for name, fusion, encoder in (("mopoe", "mopoe", "lsvae"), ("beta-vae", "single", "betavae")):
        vae = _vae_settings(config, MODELS[name]["vae"], 200)
        cfg = LSVAEConfig.from_dict(vae)
        assert cfg.fusion == fusion and cfg.free_bits == 0.1 and cfg.leads == tuple(CANONICAL_LEADS)
        assert (cfg.beta_max > 1) == (name == "beta-vae") and (cfg.mixture == "sample") == (name == "mopoe")
        torch.manual_seed(0)
        weights = tmp_path / f"{name}.pt"
        torch.save(LSEMVAE(cfg).state_dict(), weights)
        tc = finetune_config(config, name, str(tmp_path), str(tmp_path / "m.parquet"), task, str(weights), vae)
        assert tc.model.ecg_encoder == encoder and tc.model.ecg_kwargs["frozen"] is True
        model = build_model(tc.model)
        enc = model.ecg_encoder
        assert isinstance(enc, SingleVAEECGEncoder) == (name == "beta-vae")
        assert enc.out_dim == 8  # the paper head's hidden layer (head_hidden 8 in the tiny config)
