"""Stage 2 of paper 003 judged: cross-modal retrieval on a held-out split, with patient-bootstrap CIs.

The validation-time retrieval the alignment module logs is a point value (it selects the checkpoint); on the
test split a reader needs to know whether the aligned ECG embedding finds its own X-ray more often than
chance.  :func:`retrieval_table` embeds every paired record of a split once (the ECG as the mean of its
windows' normalised embeddings, the X-ray once:
:meth:`~cardiofusion.training.ecg_align.AlignmentModule.record_embeddings`) and scores, per record and
direction, the probability that its partner is among the ``k`` most similar items of the whole split
(:func:`~cardiofusion.models.alignment.retrieval_hits`: cosine, ties at random in expectation).

:func:`retrieval_summary` gives each top-``k`` accuracy with a patient-bootstrap CI (queries resampled by
patient, the gallery fixed: the split), the chance level ``k / N``, the difference to chance with its CI
and two p-values for "better than chance": the bootstrap's (share of resamples at or below chance) and an
exact one-sided binomial test of the (rounded) number of hits against ``Binomial(N, k / N)``, the null of a
random ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .bootstrap import bootstrap_weights, percentile_summary

__all__ = ["DIRECTIONS", "retrieval_markdown", "retrieval_summary", "retrieval_table"]

#: The two retrieval directions: query -> gallery.
DIRECTIONS: dict[str, str] = {"ecg_to_image": "ECG -> X-ray", "image_to_ecg": "X-ray -> ECG"}


@torch.no_grad()
def retrieval_table(module: Any, datamodule: Any, *, split: str = "test", ks: Sequence[int] = (1, 5)) -> Any:
    """Per paired record of ``split``: ``record_id``, ``patient_id`` and, per direction and ``k``, the
    probability that the record's partner is in the top ``k`` of the whole split (``ecg_to_image_top1``, ...).

    ``module`` is an :class:`~cardiofusion.training.ecg_align.AlignmentModule` (or any module with its
    ``record_embeddings``); ``table.attrs["n"]`` is the gallery size."""
    import pandas as pd

    from ..models.alignment import retrieval_hits

    module.eval()
    z_ecg, z_img, ids, patients = [], [], [], []
    for batch in datamodule.eval_dataloader(split):
        embedded = module.record_embeddings(batch)
        if embedded is None:
            continue
        e, i, rows = embedded
        z_ecg.append(e.float().cpu())
        z_img.append(i.float().cpu())
        rows = rows.tolist()
        ids += [str(batch["record_id"][r]) for r in rows]
        patients += [str(batch["patient_id"][r]) for r in rows]
    if len(ids) < 2:
        raise ConfigError(f"retrieval needs at least two paired records in the {split} split, got {len(ids)}")
    ecg, img = torch.cat(z_ecg), torch.cat(z_img)
    table = pd.DataFrame({"record_id": ids, "patient_id": patients})
    for name, (query, gallery) in (("ecg_to_image", (ecg, img)), ("image_to_ecg", (img, ecg))):
        for k in ks:
            table[f"{name}_top{int(k)}"] = retrieval_hits(query, gallery, int(k)).numpy()
    table.attrs["n"] = len(ids)
    return table


def retrieval_summary(table: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Top-``k`` accuracies of a :func:`retrieval_table` with patient-bootstrap CIs, against chance.

    Keys ``{direction}_top{k}``, each ``{"value", "ci_low", "ci_high", "chance", "minus_chance": {"value",
    "ci_low", "ci_high"}, "hits", "p_bootstrap", "p_binomial"}``; plus ``records``, ``patients``, ``n_boot``.
    """
    from scipy.stats import binomtest

    if not len(table):
        raise ConfigError("no records to summarise: the retrieval table is empty")
    n = int(len(table))
    w = bootstrap_weights(table["patient_id"].to_numpy(), n_boot, seed)  # (B, n)
    out: dict[str, Any] = {"records": n, "patients": int(table["patient_id"].nunique()), "n_boot": int(n_boot)}
    for column in [c for c in table.columns if "_top" in c]:
        k = int(column.rsplit("_top", 1)[1])
        hits = table[column].to_numpy(dtype=float)
        value = float(hits.mean())
        boot = (w @ hits) / w.sum(1)
        chance = min(k, n) / n
        iv = percentile_summary(np.array([value]), boot[:, None], level)[0]
        diff = percentile_summary(np.array([value - chance]), boot[:, None] - chance, level)[0]
        n_hits = int(round(hits.sum()))
        out[column] = {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "chance": chance,
                       "minus_chance": {"value": diff.value, "ci_low": diff.ci_low, "ci_high": diff.ci_high},
                       "hits": n_hits,
                       "p_bootstrap": float((1 + np.sum(boot <= chance)) / (1 + boot.size)),
                       "p_binomial": float(binomtest(n_hits, n, chance, alternative="greater").pvalue)}
    return out


def retrieval_markdown(summary: Mapping[str, Any], digits: int = 4) -> str:
    """The retrieval table of a :func:`retrieval_summary`: one row per direction and ``k``."""
    lines = [f"| retrieval ({summary['records']} records, {summary['patients']} patients) | top-k accuracy "
             "(95% CI) | chance | minus chance (95% CI) | p (binomial, one-sided) |", "|---|---|---|---|---|"]
    for key, d in summary.items():
        if not isinstance(d, Mapping) or "chance" not in d:
            continue
        name, k = key.rsplit("_top", 1)
        m = d["minus_chance"]
        lines.append(f"| {DIRECTIONS.get(name, name)} top-{k} | {d['value']:.{digits}f} ({d['ci_low']:.{digits}f} to "
                     f"{d['ci_high']:.{digits}f}) | {d['chance']:.{digits}f} | {m['value']:+.{digits}f} "
                     f"({m['ci_low']:+.{digits}f} to {m['ci_high']:+.{digits}f}) | {d['p_binomial']:.3g} |")
    return "\n".join(lines)
