"""LS-EMVAE posterior collapse: pretrain VAE variants on one cache, report the KL and a linear-probe AUROC.

For each variant (``name:key=value,key=value`` overrides of the small :class:`~cardiofusion.models.lsvae.LSVAEConfig`,
e.g. ``free-bits:free_bits=0.25``, plus ``lr`` of the pretraining; the variant ``paper`` has none) the VAE is pretrained on the cache's
unlabelled ECGs (:func:`~cardiofusion.training.vae_pretrain.pretrain_lsvae`), then the frozen posterior means
of the fine-tuning leads (default the six limb leads) are probed for a binary label column with a
standardised logistic regression (scikit-learn), patient-grouped stratified 5-fold CV; the pooled
out-of-fold AUROC is printed with its DeLong 95% CI (:func:`cardiofusion.evaluation.delong.delong_ci`; records,
not patients: a few ECGs per patient make it somewhat narrow),
next to the same probe on randomly initialised encoders (what "collapsed" means: no better than that).

    python benchmarks/lsvae_collapse.py CACHE MANIFEST OUT [--label label] [--epochs 8] [--anneal 4]
        [--variant paper] [--variant free-bits:free_bits=0.25] ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    return name, overrides


def probe_auroc(features: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of a standardised logistic regression (patient-grouped stratified 5-fold CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    oof = np.full(len(y), np.nan)
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(features, y, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        clf.fit(features[train], y[train])
        oof[test] = clf.predict_proba(features[test])[:, 1]
    return oof


def main(argv: list[str] | None = None) -> None:
    from cardiofusion.cache import open_cache
    from cardiofusion.evaluation.delong import delong_ci
    from cardiofusion.models.lsvae import LSEMVAE, LSVAEConfig, LSVAEECGEncoder, SingleVAEECGEncoder
    from cardiofusion.records import LIMB_LEADS
    from cardiofusion.training.vae_pretrain import PretrainConfig, pretrain_lsvae

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("manifest")
    ap.add_argument("out")
    ap.add_argument("--label", default="label")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--anneal", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--variant", action="append", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = open_cache(args.cache)
    records = cache.records(args.manifest)
    records = records[(records["ecg_row"] >= 0) & records[args.label].notna()].reset_index(drop=True)
    y = records[args.label].astype(float).to_numpy().astype(int)
    groups = records["patient_id"].astype(str).to_numpy()
    x = torch.from_numpy(np.stack([cache.ecg_at(int(r))[0] for r in records["ecg_row"]]))  # (N, 12, T)
    idx = [cache.leads.index(lead) for lead in LIMB_LEADS]

    def features(vae: LSEMVAE) -> np.ndarray:
        face = (SingleVAEECGEncoder if vae.config.fusion == "single" else LSVAEECGEncoder).from_vae(vae, LIMB_LEADS)
        face.eval()
        with torch.no_grad():
            return torch.cat([face(x[i : i + 256, idx]) for i in range(0, len(x), 256)]).numpy()

    def auroc_with_ci(feat: np.ndarray) -> dict:
        auc, _, low, high = delong_ci(y, probe_auroc(feat, y, groups))
        return {"auroc": float(auc), "ci": [float(low), float(high)]}

    rows = {}
    for text in args.variant or ["paper"]:
        name, overrides = _parse_variant(text)
        lr = float(overrides.pop("lr", args.lr))  # a pretraining setting, not the VAE's
        vae_cfg = LSVAEConfig(arch="small", n_samples=cache.n_samples, beta_anneal_epochs=args.anneal, **overrides)
        if name == "paper":
            torch.manual_seed(0)
            rows["random-init"] = {"probe": auroc_with_ci(features(LSEMVAE(vae_cfg)))}
            print("random-init", rows["random-init"], flush=True)
        pcfg = PretrainConfig(sources=[{"cache_dir": args.cache, "manifest": args.manifest}], vae=vae_cfg.to_dict(),
                              window_s=cache.n_samples / cache.fs, batch_size=args.batch, max_epochs=args.epochs,
                              lr=lr, precision="32-true")
        res = pretrain_lsvae(pcfg, out / name)
        vae = LSEMVAE(vae_cfg)
        vae.load_state_dict(torch.load(res.weights, weights_only=True))
        vae.eval()
        with torch.no_grad():
            o = vae(x[:256], sample=False)
            kl_dims = o.posterior.kl_dims.mean(0)
        rows[name] = {"overrides": overrides, "lr": lr, "final": res.info["final"], "seconds": res.info["seconds"],
                      "active_dims": int((kl_dims > 0.01).sum()), "probe": auroc_with_ci(features(vae))}
        print(name, json.dumps(rows[name]), flush=True)
    (out / "collapse.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"{'variant':<16}{'val recon':>10}{'val KL':>9}{'active':>7}  probe AUROC [95% CI]")
    for name, r in rows.items():
        f = r.get("final", {})
        p = r["probe"]
        print(f"{name:<16}{f.get('val_recon', float('nan')):>10.3f}{f.get('val_kl', float('nan')):>9.3f}"
              f"{r.get('active_dims', -1):>7}  {p['auroc']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]")


if __name__ == "__main__":
    main()
