"""PSEUDO-PAIRED benchmark cohorts: real ECGs and real X-rays of *different* people, joined at random.

No public cohort has ECGs, chest X-rays and echo labels of the same patients.  This module builds an
honest stand-in that shows what fusion methods do on real signals, and says what it is everywhere
(``pseudo_paired`` column, parquet metadata, ``pairing.json``, ``PSEUDO_PAIRED.txt``).

Design (per split, seeded):

1. Two pools of real records with a modality-level label: ECGs (e.g. PTB-XL ``lvh`` = 1 vs ``norm`` = 1
   without any hypertrophy statement) and X-rays (e.g. NIH ``cardiomegaly`` 1 vs 0).  Records that
   are neither positive nor negative are listed in ``pool_exclusions.csv`` with the reason.
2. Each pool is split into train/val/test **before** any pairing: by the data set's own split when the
   adapter gives one (PTB-XL ``strat_fold``), else by ``patient_id`` (stratified, seeded; for the
   NIH 128 px folders, whose files carry no patient id, that is a split by *file*, which
   ``pairing.json`` says).  No ECG and no X-ray can appear in two splits.
3. For each synthetic patient a latent disease state ``D ~ Bernoulli(prevalence)``.  Given ``D = 1``
   the ECG comes from the positive pool with probability ``sens_ecg`` (else the negative pool);
   given ``D = 0`` from the negative pool with probability ``spec_ecg`` (else the positive pool).
   Independently the same for the X-ray with ``sens_cxr`` / ``spec_cxr``.  So each modality is an
   imperfect, conditionally independent witness of ``D``; ``label`` = ``D``.
4. A real file is used at most once (per split, hence overall) unless ``replace=True``; a pool too
   small for the draw raises :class:`ConfigError` saying how many were needed and available.

The best any model can do is bounded by the configured sensitivities/specificities (the Bayes-optimal
AUROC of the two labels combined is reported in ``pairing.json``) plus whatever the real signals
reveal about their own modality label.  Age and sex in the manifest are the ECG donor's.

Output folder::

    manifest.parquet       the library's manifest (record_id, patient_id "PSEUDO-...", split, label = D, ...)
    PSEUDO_PAIRED.txt      what this is and is not, in words
    pairing.json           {"pseudo_paired": true, config, pools, split units, realised rates}
    ecg_pool.csv, cxr_pool.csv, pool_exclusions.csv
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..cohort.linkage import ECG_READER_COLUMNS
from ..cohort.split import assign_splits, patient_table
from ..errors import ConfigError, ReadError
from ._common import OUTPUT_FILES, SPLITS, AdapterResult

MARKER = "PSEUDO-PAIRED: ECG and X-ray of different real people joined at random; NOT real paired data"
PSEUDO_FILES: dict[str, str] = {
    "manifest": "manifest.parquet", "readme": "PSEUDO_PAIRED.txt", "info": "pairing.json",
    "ecg_pool": "ecg_pool.csv", "cxr_pool": "cxr_pool.csv", "pool_exclusions": "pool_exclusions.csv",
}
#: Columns added to the library's manifest columns.
PSEUDO_COLUMNS: tuple[str, ...] = (
    "pseudo_paired", "cohort_kind", "ecg_label", "cxr_label",
    "ecg_source_dataset", "ecg_source_exam_id", "ecg_source_patient_id", "ecg_pool",
    "cxr_source_dataset", "cxr_source_exam_id", "cxr_source_patient_id", "cxr_pool",
)


@dataclass(frozen=True)
class PairingConfig:
    """How synthetic patients are drawn.

    Attributes:
        n_train, n_val, n_test: synthetic patients per split.
        prevalence: P(D = 1).
        sens_ecg, spec_ecg: P(positive ECG | D = 1), P(negative ECG | D = 0).
        sens_cxr, spec_cxr: the same for the X-ray.
        replace: draw real files with replacement (within a split); default each file at most once.
        seed: seed of the pool splits and of every draw.
        pool_split_fractions: train/val/test fractions for pools without a split of their own.
        exact_prevalence: instead of Bernoulli draws, exactly ``round(prevalence * n)`` diseased
            patients per split (in random order): steadier small validation/test sets.
    """

    n_train: int = 400
    n_val: int = 100
    n_test: int = 200
    prevalence: float = 0.5
    sens_ecg: float = 0.8
    spec_ecg: float = 0.8
    sens_cxr: float = 0.8
    spec_cxr: float = 0.8
    replace: bool = False
    seed: int = 0
    pool_split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    exact_prevalence: bool = False

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
        for name in ("prevalence", "sens_ecg", "spec_ecg", "sens_cxr", "spec_cxr"):
            v = getattr(self, name)
            if not (0.0 <= float(v) <= 1.0):
                raise ConfigError(f"{name} must be a probability in [0, 1], got {v!r}")
        f = tuple(float(x) for x in self.pool_split_fractions)
        if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1) > 1e-6:
            raise ConfigError(f"pool_split_fractions must be three non-negative numbers summing to 1, got {f}")
        object.__setattr__(self, "pool_split_fractions", f)

    def n_patients(self) -> dict[str, int]:
        return {"train": int(self.n_train), "val": int(self.n_val), "test": int(self.n_test)}


@dataclass
class Pool:
    """Records of one modality with a 0/1 pool label and a split.

    Attributes:
        modality: ``ecg`` or ``cxr``.
        dataset: source data set (adapter name).
        table: ``exam_id``, ``patient_id``, ``path``, ``pool_label``, ``split`` (+ ``age``, ``sex``,
            reader options ...), sorted by ``exam_id``.
        definition: how ``pool_label`` was derived, in words.
        split_unit: what the split is grouped by, in words.
        exclusions: records left out of the pool and why.
    """

    modality: str
    dataset: str
    table: pd.DataFrame
    definition: str
    split_unit: str
    exclusions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for s in SPLITS:
            part = self.table[self.table["split"] == s]
            out[s] = {"positive": int((part["pool_label"] == 1).sum()), "negative": int((part["pool_label"] == 0).sum())}
        return out


def load_adapted(directory: str | os.PathLike) -> AdapterResult:
    """Read back what :meth:`AdapterResult.write` wrote (``cardiofusion adapt ... --out DIR``)."""
    d = Path(directory)
    info_path = d / OUTPUT_FILES["info"]
    if not info_path.is_file():
        raise ReadError(d, f"not an adapter output folder (no {OUTPUT_FILES['info']}; run `cardiofusion adapt` first)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ReadError(info_path, f"not valid JSON ({e})") from None
    ids = {"exam_id": str, "patient_id": str}

    def table(key: str) -> pd.DataFrame | None:
        p = d / OUTPUT_FILES[key]
        if not p.is_file():
            return None
        try:
            return pd.read_csv(p, dtype=ids, keep_default_na=True)
        except Exception as e:  # pandas raises many types
            raise ReadError(p, f"not a readable CSV ({type(e).__name__}: {e})") from None

    labels = table("labels")
    if labels is None:
        raise ReadError(d / OUTPUT_FILES["labels"], "no such file (adapter output incomplete)")
    excl = table("exclusions")
    return AdapterResult(str(info.get("dataset", "unknown")), table("ecg_index"), table("cxr_index"), labels,
                         excl if excl is not None else pd.DataFrame(), info)


def _as_result(src: AdapterResult | str | os.PathLike) -> AdapterResult:
    return src if isinstance(src, AdapterResult) else load_adapted(src)


def make_pool(
    source: AdapterResult | str | os.PathLike,
    modality: str,
    positive: str,
    negative: str | None = None,
    *,
    negative_requires_zero: Sequence[str] | None = None,
    use_dataset_split: bool = True,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> Pool:
    """A labelled, split pool of one modality from an adapter's output.

    Args:
        source: an :class:`AdapterResult` or an adapter output folder.
        modality: ``ecg`` or ``cxr``.
        positive: label column whose 1s are the positive pool (``lvh``, ``hyp``, ``cardiomegaly`` ...).
        negative: label column whose 1s are candidate negatives (``norm``, ``no_finding``); ``None``:
            every record with ``positive == 0``.
        negative_requires_zero: further columns that must be 0 for a negative (default: PTB-XL's
            ``hyp_mentioned`` when present, so that a "normal" ECG has no hypertrophy statement at all).
        use_dataset_split: keep the data set's own ``split`` (PTB-XL's ``strat_fold`` map) when every
            pooled record has one; otherwise split by ``patient_id``.
        fractions: train/val/test fractions of patients when splitting here.
        seed: seed of that split.

    Raises:
        ConfigError: unknown modality or label column, or an empty pool.
    """
    res = _as_result(source)
    if modality not in ("ecg", "cxr"):
        raise ConfigError(f"modality must be ecg or cxr, got {modality!r}")
    index = res.ecg_index if modality == "ecg" else res.cxr_index
    if index is None or len(index) == 0:
        raise ConfigError(f"the {res.dataset} adapter output has no {modality} index")
    labels = res.labels
    if "modality" in labels.columns:
        labels = labels[labels["modality"] == modality]
    for col in [positive, negative] + list(negative_requires_zero or []):
        if col is not None and col not in labels.columns:
            raise ConfigError(f"{res.dataset} {modality} labels have no column {col!r} "
                              f"(have: {', '.join(c for c in labels.columns if c not in ('modality', 'exam_id', 'patient_id'))})")
    if negative_requires_zero is None:
        negative_requires_zero = [c for c in ("hyp_mentioned",) if c in labels.columns and c != positive]
    idx = index.copy()
    idx["exam_id"] = idx["exam_id"].astype(str)
    lab = labels.drop(columns=[c for c in ("patient_id", "modality") if c in labels.columns]).copy()
    lab["exam_id"] = lab["exam_id"].astype(str)
    df = idx.merge(lab, on="exam_id", how="left", validate="one_to_one")
    pos = pd.to_numeric(df[positive], errors="coerce")
    neg = (pos == 0) if negative is None else (pd.to_numeric(df[negative], errors="coerce") == 1) & (pos != 1)
    for c in negative_requires_zero:
        neg &= pd.to_numeric(df[c], errors="coerce") == 0
    neg_words = f"{positive} = 0" if negative is None else f"{negative} = 1 and {positive} != 1"
    if negative_requires_zero:
        neg_words += "".join(f" and {c} = 0" for c in negative_requires_zero)
    definition = f"positive: {positive} = 1; negative: {neg_words}"
    df["pool_label"] = np.where(pos == 1, 1, np.where(neg, 0, -1))
    excl = df[df["pool_label"] < 0]
    exclusions = pd.DataFrame({"modality": modality, "dataset": res.dataset, "exam_id": excl["exam_id"],
                               "patient_id": excl["patient_id"],
                               "reason": f"neither positive nor negative ({definition})"})
    df = df[df["pool_label"] >= 0].copy()
    if len(df) == 0:
        raise ConfigError(f"the {res.dataset} {modality} pool is empty ({definition})")
    df["pool_label"] = df["pool_label"].astype(int)
    df["patient_id"] = df["patient_id"].astype(str)

    own = "split" in df.columns and df["split"].isin(SPLITS).all() and use_dataset_split
    if own:
        unit = f"the data set's own split: {res.info.get('split', 'given by the adapter')}"
    else:
        table = patient_table(_pl(df[["patient_id", "pool_label"]].rename(columns={"pool_label": "label"})))
        splits = assign_splits(table, fractions, seed=seed).to_pandas()
        df = df.drop(columns=[c for c in ("split",) if c in df.columns]).merge(splits, on="patient_id", how="left")
        n_ids, n_rec = df["patient_id"].nunique(), len(df)
        note = res.info.get("patient_ids", "")
        by_file = n_ids == n_rec and ("file" in str(note) or df["patient_id"].str.startswith("file:").any())
        unit = (f"by file ({n_rec} files without patient ids: two images of one person may be in two splits)"
                if by_file else f"by patient_id ({n_ids} patients, {n_rec} records; {note or 'ids from the data set'})")
    keep = ["exam_id", "patient_id", "path", "pool_label", "split"] + [
        c for c in ("exam_datetime", "age", "sex", "pacemaker", "atrial_fibrillation", *ECG_READER_COLUMNS, "view_position")
        if c in df.columns]
    table = df[keep].sort_values("exam_id", kind="stable").reset_index(drop=True)
    return Pool(modality, res.dataset, table, definition, unit, exclusions.reset_index(drop=True))


def _pl(df: pd.DataFrame):
    import polars as pl

    return pl.from_pandas(df)


def _draw(pool: pd.DataFrame, want_pos: np.ndarray, rng: np.random.Generator, replace: bool, split: str,
          modality: str) -> np.ndarray:
    """Row positions in ``pool`` (one split) for each requested label; raises when a pool is too small."""
    out = np.empty(want_pos.size, dtype=np.int64)
    for value in (1, 0):
        need = np.flatnonzero(want_pos == value)
        avail = np.flatnonzero(pool["pool_label"].to_numpy() == value)
        if need.size == 0:
            continue
        kind = "positive" if value else "negative"
        if avail.size == 0 or (not replace and need.size > avail.size):
            raise ConfigError(f"split {split!r} needs {need.size} {kind} {modality} records but the pool has "
                              f"{avail.size}; lower the number of patients, change sens/spec/prevalence, or "
                              "sample with replacement")
        chosen = rng.choice(avail, size=need.size, replace=replace)
        out[need] = chosen
    return out


def build_pseudo_paired(ecg_pool: Pool, cxr_pool: Pool, config: PairingConfig | None = None) -> pd.DataFrame:
    """Draw the synthetic patients; returns the manifest (pandas, library layout + :data:`PSEUDO_COLUMNS`)."""
    config = config or PairingConfig()
    if ecg_pool.modality != "ecg" or cxr_pool.modality != "cxr":
        raise ConfigError("build_pseudo_paired needs an ECG pool and an X-ray pool")
    frames = []
    for k, (split, n) in enumerate(config.n_patients().items()):
        if n == 0:
            continue
        rng = np.random.default_rng([config.seed, 7, k])
        if config.exact_prevalence:
            d = rng.permutation(np.arange(n) < int(round(config.prevalence * n))).astype(int)
        else:
            d = (rng.random(n) < config.prevalence).astype(int)
        u_ecg, u_cxr = rng.random(n), rng.random(n)
        ecg_pos = np.where(d == 1, u_ecg < config.sens_ecg, u_ecg >= config.spec_ecg).astype(int)
        cxr_pos = np.where(d == 1, u_cxr < config.sens_cxr, u_cxr >= config.spec_cxr).astype(int)
        ep = ecg_pool.table[ecg_pool.table["split"] == split].reset_index(drop=True)
        cp = cxr_pool.table[cxr_pool.table["split"] == split].reset_index(drop=True)
        e = ep.iloc[_draw(ep, ecg_pos, rng, config.replace, split, "ECG")].reset_index(drop=True)
        c = cp.iloc[_draw(cp, cxr_pos, rng, config.replace, split, "X-ray")].reset_index(drop=True)
        ids = [f"PSEUDO-{split}-{i:05d}" for i in range(1, n + 1)]
        part = pd.DataFrame({
            "record_id": [f"{p}-r1" for p in ids], "patient_id": ids, "split": split,
            "fold": pd.array([None] * n, dtype="Int64"), "label": d, "severity": None,
            "ecg_exam_id": (f"{ecg_pool.dataset}:" + e["exam_id"].astype(str)).to_numpy(),
            "ecg_path": e["path"].astype(str).to_numpy(), "ecg_datetime": None,
            "cxr_exam_id": (f"{cxr_pool.dataset}:" + c["exam_id"].astype(str)).to_numpy(),
            "cxr_path": c["path"].astype(str).to_numpy(), "cxr_datetime": None,
            "echo_exam_id": None, "echo_datetime": None, "days_echo_to_cxr": np.nan, "days_cxr_to_ecg": np.nan,
            "peak_velocity_m_s": np.nan, "mean_gradient_mmhg": np.nan, "ava_cm2": np.nan,
            "age": pd.to_numeric(e["age"], errors="coerce").to_numpy() if "age" in e else np.nan,
            "sex": e["sex"].to_numpy() if "sex" in e else None,
            "pacemaker": pd.to_numeric(e["pacemaker"], errors="coerce").to_numpy() if "pacemaker" in e else np.nan,
            "atrial_fibrillation": (pd.to_numeric(e["atrial_fibrillation"], errors="coerce").to_numpy()
                                    if "atrial_fibrillation" in e else np.nan),
        })
        for col in ECG_READER_COLUMNS:
            part[col] = e[col].to_numpy() if col in e else None
        part["pseudo_paired"] = True
        part["cohort_kind"] = MARKER
        part["ecg_label"] = e["pool_label"].to_numpy()
        part["cxr_label"] = c["pool_label"].to_numpy()
        part["ecg_source_dataset"] = ecg_pool.dataset
        part["ecg_source_exam_id"] = e["exam_id"].astype(str).to_numpy()
        part["ecg_source_patient_id"] = e["patient_id"].astype(str).to_numpy()
        part["ecg_pool"] = ecg_pool.definition
        part["cxr_source_dataset"] = cxr_pool.dataset
        part["cxr_source_exam_id"] = c["exam_id"].astype(str).to_numpy()
        part["cxr_source_patient_id"] = c["patient_id"].astype(str).to_numpy()
        part["cxr_pool"] = cxr_pool.definition
        frames.append(part)
    if not frames:
        raise ConfigError("no synthetic patients requested (n_train = n_val = n_test = 0)")
    manifest = pd.concat(frames, ignore_index=True)
    manifest["sex"] = manifest["sex"].where(manifest["sex"].isin(["F", "M"]), None)
    for c in ("pacemaker", "atrial_fibrillation"):
        manifest[c] = manifest[c].astype("Int8")
    manifest["units"] = manifest["units"].astype(object)
    return manifest


def realised_rates(manifest: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per split (and ``all``): n, prevalence of D, and P(modality label | D) as realised."""
    out = {}
    for name, part in [("all", manifest)] + [(s, manifest[manifest["split"] == s]) for s in SPLITS]:
        if len(part) == 0:
            continue
        d = part["label"].to_numpy() == 1
        row: dict[str, Any] = {"n": len(part), "prevalence": float(d.mean())}
        for m in ("ecg", "cxr"):
            lab = part[f"{m}_label"].to_numpy() == 1
            row[f"sens_{m}"] = float(lab[d].mean()) if d.any() else None
            row[f"spec_{m}"] = float((~lab[~d]).mean()) if (~d).any() else None
        out[name] = row
    return out


def oracle_auroc(config: PairingConfig) -> dict[str, float]:
    """AUROC of the Bayes-optimal score of D given the two modality labels only (exact; prevalence-free)."""

    def auc(cells: list[tuple[float, float]]) -> float:
        # cells: (P(cell | D=1), P(cell | D=0)); rank cells by likelihood ratio
        cells = sorted(cells, key=lambda c: c[0] / c[1] if c[1] > 0 else np.inf, reverse=True)
        a, cum0 = 0.0, 0.0
        for p1, p0 in reversed(cells):  # ascending LR: a positive beats negatives in lower cells
            a += p1 * (cum0 + 0.5 * p0)
            cum0 += p0
        return float(a)

    se, sp, sc, tc = config.sens_ecg, config.spec_ecg, config.sens_cxr, config.spec_cxr
    ecg = auc([(se, 1 - sp), (1 - se, sp)])
    cxr = auc([(sc, 1 - tc), (1 - sc, tc)])
    both = auc([(se * sc, (1 - sp) * (1 - tc)), (se * (1 - sc), (1 - sp) * tc),
                ((1 - se) * sc, sp * (1 - tc)), ((1 - se) * (1 - sc), sp * tc)])
    return {"ecg_label_only": ecg, "cxr_label_only": cxr, "both_labels": both}


def _readme(config: PairingConfig, ecg_pool: Pool, cxr_pool: Pool, rates: dict[str, Any], oracle: dict[str, float]) -> str:
    lines = [
        "PSEUDO-PAIRED BENCHMARK COHORT -- NOT REAL PAIRED DATA",
        "=" * 56,
        "",
        "Every 'patient' in manifest.parquet is synthetic: an ECG of one real person and a chest X-ray",
        "of another real person (from other data sets), joined at random.  'label' is a latent disease",
        "state D drawn by this program, not a diagnosis of anyone.  Results on this cohort show how fusion",
        "methods combine two imperfect, independent witnesses of D on real signals; they say nothing about",
        "how ECG and X-ray of the same patient relate, nor about aortic stenosis.",
        "",
        (f"D ~ Bernoulli({config.prevalence:g})." if not config.exact_prevalence else
         f"D: exactly {config.prevalence:g} of each split diseased, random order."),
        f"ECG from the positive pool with P = {config.sens_ecg:g} if D = 1, from the negative pool with",
        f"P = {config.spec_ecg:g} if D = 0; X-ray likewise with {config.sens_cxr:g} / {config.spec_cxr:g}.",
        (f"Best AUROC achievable from the two pool labels alone: ECG {oracle['ecg_label_only']:.3f}, "
         f"X-ray {oracle['cxr_label_only']:.3f}, both {oracle['both_labels']:.3f}."),
        "",
        f"ECG pool:   {ecg_pool.dataset}; {ecg_pool.definition}.  Split: {ecg_pool.split_unit}.",
        f"X-ray pool: {cxr_pool.dataset}; {cxr_pool.definition}.  Split: {cxr_pool.split_unit}.",
        "Pools were split into train/val/test before pairing: no ECG or X-ray file is in two splits.",
        f"Sampling {'with' if config.replace else 'without'} replacement within a split; seed {config.seed}.",
        "Age and sex in the manifest are those of the ECG's donor.",
        "",
        "Realised (per split): " + "; ".join(
            f"{s} n={r['n']} prev={r['prevalence']:.2f}" for s, r in rates.items() if s != "all"),
        f"Written by cardiofusion {__version__}.",
        "",
    ]
    return "\n".join(lines)


def write_pseudo_paired(out_dir: str | os.PathLike, manifest: pd.DataFrame, ecg_pool: Pool, cxr_pool: Pool,
                        config: PairingConfig) -> dict[str, Path]:
    """Write the cohort folder (see the module docstring); returns name -> path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / v for k, v in PSEUDO_FILES.items()}
    rates = realised_rates(manifest)
    oracle = oracle_auroc(config)
    info = {
        "pseudo_paired": True, "warning": MARKER, "config": asdict(config),
        "pools": {p.modality: {"dataset": p.dataset, "definition": p.definition, "split_unit": p.split_unit,
                               "counts": p.counts(), "excluded": len(p.exclusions)}
                  for p in (ecg_pool, cxr_pool)},
        "realised": rates, "oracle_auroc_from_pool_labels": oracle, "cardiofusion_version": __version__,
    }
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"cardiofusion.pseudo_paired"] = b"true"
    meta[b"cardiofusion.warning"] = MARKER.encode()
    pq.write_table(table.replace_schema_metadata(meta), files["manifest"])
    files["readme"].write_text(_readme(config, ecg_pool, cxr_pool, rates, oracle), encoding="utf-8")
    files["info"].write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    for p, key in ((ecg_pool, "ecg_pool"), (cxr_pool, "cxr_pool")):
        t = p.table.copy()
        t.insert(0, "pseudo_paired_pool", True)
        t.to_csv(files[key], index=False)
    pd.concat([ecg_pool.exclusions, cxr_pool.exclusions], ignore_index=True).to_csv(files["pool_exclusions"], index=False)
    return files


@dataclass
class PseudoPairedResult:
    """What :func:`pseudo_paired_cohort` returns."""

    manifest: pd.DataFrame
    ecg_pool: Pool
    cxr_pool: Pool
    config: PairingConfig
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def realised(self) -> dict[str, dict[str, Any]]:
        return realised_rates(self.manifest)


def pseudo_paired_cohort(
    ecg: AdapterResult | str | os.PathLike,
    cxr: AdapterResult | str | os.PathLike,
    out_dir: str | os.PathLike | None,
    config: PairingConfig | None = None,
    *,
    ecg_positive: str = "lvh",
    ecg_negative: str | None = "norm",
    cxr_positive: str = "cardiomegaly",
    cxr_negative: str | None = None,
    use_dataset_split: bool = True,
) -> PseudoPairedResult:
    """Pools from two adapter outputs -> split -> synthetic patients -> (optionally) the cohort folder.

    Example (PTB-XL LVH vs normal ECGs, NIH cardiomegaly images)::

        ecg = adapt_ptbxl("../shared/data/ptbxl", PTBXLConfig(fold_map="train=1-6,val=7,test=8"))
        cxr = adapt_nih("../shared/data/nih-cardiomegaly-128")
        res = pseudo_paired_cohort(ecg, cxr, "pseudo/", PairingConfig(n_train=40, replace=True))

    ``use_dataset_split=False`` ignores a data set's own split (PTB-XL ``strat_fold``) and splits each
    pool by ``patient_id`` here (stratified by pool label, ``config.pool_split_fractions``, seeded).
    """
    config = config or PairingConfig()
    kw = {"use_dataset_split": use_dataset_split, "fractions": config.pool_split_fractions, "seed": config.seed}
    ep = make_pool(ecg, "ecg", ecg_positive, ecg_negative, **kw)
    cp = make_pool(cxr, "cxr", cxr_positive, cxr_negative, **kw)
    manifest = build_pseudo_paired(ep, cp, config)
    files = write_pseudo_paired(out_dir, manifest, ep, cp, config) if out_dir is not None else {}
    return PseudoPairedResult(manifest, ep, cp, config, files)


def is_pseudo_paired(manifest: str | os.PathLike | pd.DataFrame) -> bool:
    """True when a manifest (frame or parquet path) is a pseudo-paired cohort."""
    if isinstance(manifest, pd.DataFrame):
        return "pseudo_paired" in manifest.columns and bool(manifest["pseudo_paired"].fillna(False).any())
    import pyarrow.parquet as pq

    meta = pq.read_schema(manifest).metadata or {}
    return meta.get(b"cardiofusion.pseudo_paired") == b"true"

__all__ = ["MARKER", "PSEUDO_COLUMNS", "PSEUDO_FILES", "PairingConfig", "Pool", "PseudoPairedResult",
           "build_pseudo_paired", "is_pseudo_paired", "load_adapted", "make_pool", "oracle_auroc",
           "pseudo_paired_cohort", "realised_rates", "write_pseudo_paired"]
