"""``build_cohort``: index tables in, ``manifest.parquet`` + flow + exclusions out.

Output folder::

    manifest.parquet     one row per (ECG, X-ray, echo) record (docs/data_layout.md)
    flow.json            the flow table (cardiofusion.cohort.flow)
    config.json          {"config": resolved CohortConfig, "inputs": {...}, "column_map": ..., "cardiofusion_version"}
    exclusions.parquet   every excluded row: table, exam_id, patient_id, row, step, reason, file, column, raw_value

Targets (``docs/data_layout.md``, "Targets"): the linkage derives ``as_severity`` and ``dx_*`` from the linked
exams; :func:`add_targets` then copies the config's ``targets`` and, when a per-patient ground-truth table is
given or found (the synthetic export's ``ground_truth/patients.csv`` beside the echo index), its
``cac_agatston``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from .. import __version__
from ..errors import ConfigError, ReadError
from .config import CohortConfig, TargetColumn
from .flow import cohort_flow
from .linkage import MANIFEST_CORE_COLUMNS, link_exams
from .split import split_records
from .tables import TABLE_NAMES, ColumnMap, _read_raw, load_index, normalise_index
from .values import MAJORITY, ValueRules, number_exprs

#: the synthetic export's per-patient ground truth, looked for beside the echo index
GROUND_TRUTH_FILE = Path("ground_truth") / "patients.csv"
#: ground-truth columns copied into the manifest whenever the ground truth has them
DEFAULT_GROUND_TRUTH_TARGETS: tuple[str, ...] = ("cac_agatston",)

IndexInput = str | os.PathLike | pl.DataFrame
OUTPUT_FILES: dict[str, str] = {
    "manifest": "manifest.parquet",
    "flow": "flow.json",
    "config": "config.json",
    "exclusions": "exclusions.parquet",
}


@dataclass
class CohortResult:
    """What :func:`build_cohort` returns.

    Attributes:
        manifest: the manifest (Polars DataFrame, exactly what ``manifest.parquet`` holds).
        flow: the flow dict (what ``flow.json`` holds).
        exclusions: every excluded row with its reason.
        config: the resolved settings.
        out_dir: where the files went (``None`` when nothing was written).
        files: output name -> path.
    """

    manifest: pl.DataFrame
    flow: dict[str, Any]
    exclusions: pl.DataFrame
    config: CohortConfig
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


def _load(src: IndexInput, kind: str, cmap: ColumnMap, rules: ValueRules) -> tuple[pl.DataFrame, str]:
    if isinstance(src, pl.DataFrame) or type(src).__name__ == "DataFrame":
        # in-memory frames: relative paths are relative to the current folder
        return normalise_index(src, kind, column_map=cmap, rules=rules), f"<{kind} DataFrame>"
    return load_index(src, kind, cmap, rules=rules), str(Path(src).resolve())


def assemble_manifest(records: pl.DataFrame, config: CohortConfig) -> pl.DataFrame:
    """Add ``split`` / ``fold`` to linked records and order the columns as the data layout says."""
    out = split_records(
        records, config.split_fractions, seed=config.seed, stratify=config.stratify,
        n_folds=config.n_folds, fold_scope=config.fold_scope,
    )
    rest = [c for c in out.columns if c not in MANIFEST_CORE_COLUMNS]
    return out.select(list(MANIFEST_CORE_COLUMNS) + rest)


def load_ground_truth(src: IndexInput, rules: ValueRules, columns: list[tuple[str, bool]]) -> pl.DataFrame:
    """The per-patient ground truth: ``patient_id`` and the requested ``(column, numeric)`` columns.

    Numeric columns follow the strict value rules; an invalid cell becomes null (the ground truth excludes
    no record), a column whose non-empty values are mostly invalid is a :class:`ReadError`.
    """
    where = "<ground truth DataFrame>" if isinstance(src, pl.DataFrame) else str(src)
    df = src if isinstance(src, pl.DataFrame) else _read_raw(Path(src))
    for need in ["patient_id", *[c for c, _ in columns]]:
        if need not in df.columns:
            raise ReadError(where, f"ground truth has no column '{need}' (found: {', '.join(df.columns)})")
    exprs = [pl.col("patient_id").cast(pl.String).str.strip_chars()]
    for c, numeric in columns:
        if not numeric:
            exprs.append(pl.col(c).cast(pl.String))
            continue
        exprs.extend(number_exprs(c, df.schema[c], rules))
    out = df.select(exprs)
    for c, numeric in columns:
        if not numeric:
            continue
        bad = out[f"_bad_{c}"]
        n_bad = bad.len() - bad.null_count()
        n = n_bad + out[c].len() - out[c].null_count()
        if n_bad and n_bad > MAJORITY * n:
            first = int(bad.is_not_null().arg_true()[0])
            raise ReadError(where, f"column '{c}': {n_bad} of {n} non-empty values are invalid (first: "
                                   f"{out[f'_raw_{c}'][first]!r} in row {first}: {bad[first]})")
    out = out.select(["patient_id", *[c for c, _ in columns]])
    if out["patient_id"].n_unique() != out.height:
        raise ReadError(where, "ground truth has more than one row per patient_id")
    return out


def add_targets(records: pl.DataFrame, config: CohortConfig, tables: Mapping[str, pl.DataFrame],
                sources: Mapping[str, str], ground_truth: pl.DataFrame | None = None,
                ground_truth_source: str = "<ground truth>") -> pl.DataFrame:
    """Copy the config's ``targets`` (and the default ground-truth columns) into the linked records.

    ``tables`` are the normalised index tables (``ecg`` / ``cxr`` / ``echo``), ``ground_truth`` the per-patient
    table of :func:`load_ground_truth` (or ``None``).

    Raises:
        ConfigError: a target named like a core manifest column, a column missing from its table, or a
            ``ground_truth`` target without a ground-truth table.
    """
    targets = dict(config.targets)
    if ground_truth is not None:
        for c in DEFAULT_GROUND_TRUTH_TARGETS:
            if c in ground_truth.columns and c not in targets:
                targets[c] = TargetColumn(table="ground_truth", column=c)
    out = records
    for name, t in targets.items():
        if name in MANIFEST_CORE_COLUMNS:
            raise ConfigError(f"targets.{name}: '{name}' is a core manifest column; choose another name")
        if t.table == "ground_truth":
            if ground_truth is None:
                raise ConfigError(f"targets.{name}: no ground-truth table (give ground_truth=... or put "
                                  f"{GROUND_TRUTH_FILE} beside the echo index)")
            if t.column not in ground_truth.columns:
                raise ConfigError(f"{ground_truth_source}: targets.{name}: no column '{t.column}' in the ground truth")
            add = ground_truth.select("patient_id", pl.col(t.column).alias(name))
            key = "patient_id"
        else:
            table = tables[t.table]
            if t.column not in table.columns:
                raise ConfigError(f"{sources.get(t.table, t.table)}: targets.{name}: no column '{t.column}' in the "
                                  f"{TABLE_NAMES[t.table]}")
            key = f"{t.table}_exam_id"
            add = table.select(pl.col("exam_id").alias(key), pl.col(t.column).alias(name)).unique(key, keep="first")
        if t.numeric and add[name].dtype != pl.Float64:
            add = add.with_columns(pl.col(name).cast(pl.Float64, strict=False))
        out = out.drop(name, strict=False).join(add, on=key, how="left", maintain_order="left")
    return out


def _find_ground_truth(echo_index: IndexInput) -> Path | None:
    if isinstance(echo_index, (str, os.PathLike)):
        p = Path(echo_index).resolve().parent / GROUND_TRUTH_FILE
        if p.is_file():
            return p
    return None


def build_cohort(
    ecg_index: IndexInput,
    cxr_index: IndexInput,
    echo_index: IndexInput,
    out_dir: str | os.PathLike | None,
    config: CohortConfig | Mapping[str, Any] | None = None,
    column_map: ColumnMap | Mapping[str, Any] | str | os.PathLike | None = None,
    ground_truth: IndexInput | None = None,
) -> CohortResult:
    """Build the cohort: load, link, label, split, count, and write the outputs.

    Args:
        ecg_index, cxr_index, echo_index: index tables (CSV/Parquet paths, or DataFrames).
        out_dir: output folder (created); ``None`` writes nothing.
        config: settings (a :class:`CohortConfig` or its dict); default: the paper's.
        column_map: export column names (:class:`~cardiofusion.cohort.tables.ColumnMap`, dict or file).
        ground_truth: per-patient ground truth (CSV/Parquet or DataFrame with ``patient_id``); default: the
            synthetic export's ``ground_truth/patients.csv`` beside the echo index, when there is one.

    Raises:
        ReadError: an index table cannot be read, lacks required columns, or most non-empty values of
            one of its date or number columns are invalid.
        ConfigError: invalid settings.
    """
    if config is None:
        config = CohortConfig()
    elif not isinstance(config, CohortConfig):
        config = CohortConfig.from_dict(config)
    cmap = ColumnMap.load(column_map)
    rules = config.value_rules
    ecg, ecg_src = _load(ecg_index, "ecg", cmap, rules)
    cxr, cxr_src = _load(cxr_index, "cxr", cmap, rules)
    echo, echo_src = _load(echo_index, "echo", cmap, rules)

    sources = {"ecg": ecg_src, "cxr": cxr_src, "echo": echo_src}
    linked = link_exams(ecg, cxr, echo, config, sources=sources)
    gt_src = ground_truth if ground_truth is not None else _find_ground_truth(echo_index)
    gt_frame, gt_name = None, None
    if gt_src is not None:
        if isinstance(gt_src, pl.DataFrame):
            gt_name, raw_cols = "<ground truth DataFrame>", gt_src.columns
        else:
            gt_name, raw_cols = str(Path(gt_src).resolve()), _read_raw(Path(gt_src)).columns
        wanted = {t.column: t.numeric for t in config.targets.values() if t.table == "ground_truth"}
        for c in DEFAULT_GROUND_TRUTH_TARGETS:
            if c in raw_cols:
                wanted.setdefault(c, True)
        missing = [c for c in wanted if c not in raw_cols]
        if missing:
            raise ConfigError(f"{gt_name}: targets name column(s) {', '.join(missing)} not in the ground truth")
        gt_frame = load_ground_truth(gt_src, rules, list(wanted.items()))
    records = add_targets(linked.records, config, {"ecg": ecg, "cxr": cxr, "echo": echo}, sources,
                          gt_frame, gt_name or "<ground truth>")
    manifest = assemble_manifest(records, config)
    flow = cohort_flow(linked.flow, manifest)
    result = CohortResult(manifest=manifest, flow=flow, exclusions=linked.exclusions, config=config)
    if out_dir is None:
        return result

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / v for k, v in OUTPUT_FILES.items()}
    manifest.write_parquet(files["manifest"])
    linked.exclusions.write_parquet(files["exclusions"])
    files["flow"].write_text(json.dumps(flow, indent=2) + "\n", encoding="utf-8")
    provenance = {
        "config": config.to_dict(),
        "inputs": {"ecg_index": ecg_src, "cxr_index": cxr_src, "echo_index": echo_src, "ground_truth": gt_name},
        "column_map": cmap.to_dict(),
        "cardiofusion_version": __version__,
    }
    files["config"].write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    result.out_dir = out
    result.files = files
    return result


__all__ = ["DEFAULT_GROUND_TRUTH_TARGETS", "GROUND_TRUTH_FILE", "OUTPUT_FILES", "CohortResult", "add_targets",
           "assemble_manifest", "build_cohort", "load_ground_truth"]
