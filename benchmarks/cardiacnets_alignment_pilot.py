"""Why stage 2 of the CardiacNets recipe stayed at chance: how much per-record structure do the synthetic ECG
and X-ray share, and which X-ray features carry it?  (The pilot of docs/recipes/cardiacnets.md.)

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cardiacnets_alignment_pilot.py CACHE MANIFEST \
        [--teacher WEIGHTS_OR_auto] [--image-size 64]

On the validation split it prints ECG -> X-ray retrieval top-1 / top-5 (chance = 1 / n, 5 / n) of

* an *oracle*: both sides reduced to the planted factors the synthetic export shares per patient (AS
  severity, pacemaker, sex), identical embeddings for identical factors (ties broken at random): the
  ceiling of any encoder on this export;
* CCA (scikit-learn) and a linear CLIP (the library's ``clip_loss``, tau 0.1) between simple ECG features
  (per-lead standard deviation, peak-to-peak, max, min, averaged over the evaluation windows) and either the
  frozen teacher's features or 8 x 8 average-pooled pixels;

and the AS AUROC of a logistic regression on each feature set (how much of the planted sign each carries).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch


def features(cache: str, manifest: str, teacher: torch.nn.Module, image_size: int) -> dict[str, dict[str, np.ndarray]]:
    from cardiofusion.data.dataset import CohortDataModule
    from cardiofusion.transforms.preprocess import PreprocessConfig
    from cardiofusion.cache import open_cache

    fs = open_cache(cache).config.fs
    pre = PreprocessConfig.from_dict({"fs": fs, "window_s": 2.0, "eval_stride_s": 8.0, "image_size": image_size})
    dm = CohortDataModule(cache, manifest, pre, batch_size=32, modalities=("ecg", "cxr"),
                          labels=lambda r: r["label"].to_numpy(dtype=np.float32))
    out = {}
    for split in ("train", "val"):
        parts: dict[str, list] = {"ecg": [], "teacher": [], "pixels": [], "record_id": [], "label": []}
        for b in dm.eval_dataloader(split):
            idx, n = b["record_index"], int(b["n_records"])
            x = b["ecg"]
            f = torch.cat([x.std(-1), x.amax(-1) - x.amin(-1), x.amax(-1), x.amin(-1)], 1)
            cnt = torch.bincount(idx, minlength=n).clamp_min(1)[:, None]
            parts["ecg"].append((torch.zeros(n, f.shape[1]).index_add_(0, idx, f) / cnt).numpy())
            first = torch.full((n,), idx.numel(), dtype=torch.long).scatter_reduce(0, idx, torch.arange(idx.numel()),
                                                                                   "amin")
            img = b["cxr"][first]
            with torch.no_grad():
                parts["teacher"].append(teacher(img).numpy())
            parts["pixels"].append(torch.nn.functional.adaptive_avg_pool2d(img, 8).flatten(1).numpy())
            parts["record_id"] += [b["record_id"][int(i)] for i in first]
            parts["label"].append(b["label"][first].numpy())
        out[split] = {k: (np.concatenate(v) if k != "record_id" else np.array(v)) for k, v in parts.items()}
    return out


def linear_clip(e_tr, i_tr, e_va, i_va, *, tau=0.1, lr=1e-3, dim=64, epochs=30, seed=0):
    from cardiofusion.models.alignment import clip_loss, retrieval_accuracy

    torch.manual_seed(seed)
    pe, pi = torch.nn.Linear(e_tr.shape[1], dim), torch.nn.Linear(i_tr.shape[1], dim)
    opt = torch.optim.AdamW([*pe.parameters(), *pi.parameters()], lr=lr, weight_decay=0.05)
    et, it = torch.tensor(e_tr, dtype=torch.float32), torch.tensor(i_tr, dtype=torch.float32)
    for _ in range(epochs):
        perm = torch.randperm(len(et))
        for i in range(0, len(et) - 31, 32):
            j = perm[i:i + 32]
            loss = clip_loss(pe(et[j]), pi(it[j]), 1 / tau)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        a, b = pe(torch.tensor(e_va, dtype=torch.float32)), pi(torch.tensor(i_va, dtype=torch.float32))
        val = np.mean([float(clip_loss(a[i:i + 32], b[i:i + 32], 1 / tau)["loss"]) for i in range(0, len(a) - 31, 32)])
    return retrieval_accuracy(a, b), val


def main(argv: list[str] | None = None) -> int:
    from sklearn.cross_decomposition import CCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from cardiofusion.models import create_cxr_encoder
    from cardiofusion.models.alignment import retrieval_accuracy
    from cardiofusion.recipes.cardiacnets import teacher_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("manifest")
    parser.add_argument("--teacher", default="auto", help="teacher weights (auto: ImageNet EfficientNet-Lite0)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--clip-epochs", type=int, nargs="+", default=[30], help="epochs of the linear CLIP (each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    teacher = create_cxr_encoder("tf_efficientnet_lite0", pretrained=teacher_weights(args.teacher)).eval()
    feats = features(args.cache, args.manifest, teacher, args.image_size)
    print(f"features: {time.perf_counter() - t0:.0f} s")

    def show(name, r, extra=""):
        print(f"{name:<44} top-1 {r['ecg_to_image_top1']:.4f}  top-5 {r['ecg_to_image_top5']:.4f}  (chance "
              f"{r['chance_top1']:.4f} / {r['chance_top5']:.4f}){extra}")

    manifest = pd.read_parquet(args.manifest).drop_duplicates("record_id").set_index("record_id")
    val = manifest.loc[feats["val"]["record_id"]]
    factors = [pd.factorize(val["as_severity"].astype(str))[0], val["pacemaker"].fillna(0).to_numpy(),
               pd.factorize(val["sex"].astype(str))[0]]
    for k in (1, 2, 3):
        key = pd.factorize(pd.Series(list(zip(*factors[:k]))))[0]
        z = torch.nn.functional.one_hot(torch.tensor(key)).double()
        show(f"oracle: {', '.join(['AS severity', 'pacemaker', 'sex'][:k])}", retrieval_accuracy(z, z))
    tr, va = feats["train"], feats["val"]
    for image_key in ("teacher", "pixels"):
        se, si = StandardScaler().fit(tr["ecg"]), StandardScaler().fit(tr[image_key])
        e_tr, i_tr, e_va, i_va = se.transform(tr["ecg"]), si.transform(tr[image_key]), se.transform(va["ecg"]), \
            si.transform(va[image_key])
        for name, x_tr, x_va in (("ECG features", e_tr, e_va), (f"{image_key} features", i_tr, i_va)):
            lr = LogisticRegression(max_iter=2000, C=0.1).fit(x_tr, tr["label"])
            print(f"AS AUROC (val) from {name}: {roc_auc_score(va['label'], lr.decision_function(x_va)):.3f}")
        a, b = CCA(n_components=4, max_iter=2000).fit(e_tr, i_tr).transform(e_va, i_va)
        show(f"CCA(4): ECG features ~ {image_key}", retrieval_accuracy(torch.tensor(a), torch.tensor(b)))
        for epochs in args.clip_epochs:
            r, loss = linear_clip(e_tr, i_tr, e_va, i_va, epochs=epochs)
            show(f"linear CLIP ({epochs} ep): ECG feat. ~ {image_key}", r,
                 f"  val CLIP {loss:.3f} vs log 32 = {np.log(32):.3f}")
    print(f"total: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
