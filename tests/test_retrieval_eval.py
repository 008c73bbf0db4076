"""Stage 2 judged on a held-out split (:mod:`cardiofusion.evaluation.retrieval`): per-record hits against the
retrieval accuracy, the patient-bootstrap summary against a direct computation, the binomial test against
a hand-computed tail."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.evaluation.bootstrap import bootstrap_weights
from cardiofusion.evaluation.retrieval import retrieval_markdown, retrieval_summary, retrieval_table
from cardiofusion.models.alignment import retrieval_accuracy, retrieval_hits


class _Embedder:
    """A stand-in aligned module: its record embeddings are the batch's ``ecg`` / ``cxr`` rows."""

    def eval(self):
        return self

    def record_embeddings(self, batch):
        return batch["ecg"], batch["cxr"], torch.arange(batch["ecg"].shape[0])


class _Data:
    def __init__(self, batches):
        self.batches = batches

    def eval_dataloader(self, split):
        assert split == "test"
        return iter(self.batches)


def _table(z_ecg, z_img, patients, batch=7):
    n = z_ecg.shape[0]
    batches = [{"ecg": z_ecg[i:i + batch], "cxr": z_img[i:i + batch],
                "record_id": [f"r{j}" for j in range(i, min(i + batch, n))],
                "patient_id": [patients[j] for j in range(i, min(i + batch, n))]} for i in range(0, n, batch)]
    return retrieval_table(_Embedder(), _Data(batches), ks=(1, 5))


def test_table_hits_match_the_retrieval_accuracy_over_the_whole_split():
    g = torch.Generator().manual_seed(0)
    z_ecg = torch.randn(30, 4, generator=g)
    z_img = z_ecg + 0.8 * torch.randn(30, 4, generator=g)
    table = _table(z_ecg, z_img, [f"p{i // 2}" for i in range(30)])  # batches of 7: the gallery is all 30
    acc = retrieval_accuracy(z_ecg, z_img, ks=(1, 5))
    for col in ("ecg_to_image_top1", "ecg_to_image_top5", "image_to_ecg_top1", "image_to_ecg_top5"):
        assert table[col].mean() == pytest.approx(acc[col])
    assert table["record_id"].tolist() == [f"r{i}" for i in range(30)] and table.attrs["n"] == 30
    assert torch.allclose(torch.tensor(table["ecg_to_image_top5"].to_numpy().copy()),
                          retrieval_hits(z_ecg, z_img, 5))
    with pytest.raises(ConfigError, match="at least two paired records"):
        _table(z_ecg[:1], z_img[:1], ["p0"])


def test_summary_against_a_direct_bootstrap_and_binomial_tail():
    rng = np.random.default_rng(1)
    n = 40
    patients = [f"p{i // 2}" for i in range(n)]
    table = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "patient_id": patients,
                          "ecg_to_image_top1": (rng.random(n) < 0.2).astype(float),
                          "ecg_to_image_top5": (rng.random(n) < 0.3).astype(float)})
    s = retrieval_summary(table, n_boot=200, seed=3)
    assert s["records"] == n and s["patients"] == 20
    w = bootstrap_weights(np.array(patients), 200, 3)
    for k in (1, 5):
        hits = table[f"ecg_to_image_top{k}"].to_numpy()
        d = s[f"ecg_to_image_top{k}"]
        boot = (w @ hits) / w.sum(1)
        assert d["value"] == pytest.approx(hits.mean())
        assert d["ci_low"] == pytest.approx(np.percentile(boot, 2.5), abs=1e-9)
        assert d["ci_high"] == pytest.approx(np.percentile(boot, 97.5), abs=1e-9)
        chance = k / n
        assert d["chance"] == pytest.approx(chance)
        assert d["minus_chance"]["value"] == pytest.approx(hits.mean() - chance)
        assert d["minus_chance"]["ci_low"] == pytest.approx(d["ci_low"] - chance)
        m = int(hits.sum())
        tail = sum(math.comb(n, j) * chance**j * (1 - chance) ** (n - j) for j in range(m, n + 1))
        assert d["hits"] == m and d["p_binomial"] == pytest.approx(tail, rel=1e-6)
    md = retrieval_markdown(s)
    assert "ECG -> X-ray top-1" in md and "ECG -> X-ray top-5" in md


def test_aligned_pairs_far_above_chance_and_identical_embeddings_at_chance():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 8, generator=g)
    perfect = retrieval_summary(_table(z, z * 2, [f"p{i}" for i in range(50)]), n_boot=100)
    assert perfect["ecg_to_image_top1"]["value"] == 1.0 and perfect["ecg_to_image_top1"]["p_binomial"] < 1e-60
    same = _table(torch.ones(20, 3), torch.ones(20, 3), [f"p{i}" for i in range(20)])
    flat = retrieval_summary(same, n_boot=100)
    assert flat["ecg_to_image_top1"]["value"] == pytest.approx(1 / 20)  # ties: chance, not 100 %
    assert flat["ecg_to_image_top5"]["value"] == pytest.approx(5 / 20)
    assert flat["ecg_to_image_top1"]["minus_chance"]["value"] == pytest.approx(0.0, abs=1e-12)
