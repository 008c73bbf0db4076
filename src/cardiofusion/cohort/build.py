"""``build_cohort``: index tables in, ``manifest.parquet`` + flow + exclusions out.

Output folder::

    manifest.parquet     one row per (ECG, X-ray, echo) record (docs/data_layout.md)
    flow.json            the flow table (cardiofusion.cohort.flow)
    config.json          {"config": resolved CohortConfig, "inputs": {...}, "column_map": ..., "cardiofusion_version"}
    exclusions.parquet   every excluded row: table, exam_id, patient_id, row, step, reason, file, column, raw_value
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from .. import __version__
from .config import CohortConfig
from .flow import cohort_flow
from .linkage import MANIFEST_CORE_COLUMNS, link_exams
from .split import split_records
from .tables import ColumnMap, load_index, normalise_index
from .values import ValueRules

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


def build_cohort(
    ecg_index: IndexInput,
    cxr_index: IndexInput,
    echo_index: IndexInput,
    out_dir: str | os.PathLike | None,
    config: CohortConfig | Mapping[str, Any] | None = None,
    column_map: ColumnMap | Mapping[str, Any] | str | os.PathLike | None = None,
) -> CohortResult:
    """Build the cohort: load, link, label, split, count, and write the outputs.

    Args:
        ecg_index, cxr_index, echo_index: index tables (CSV/Parquet paths, or DataFrames).
        out_dir: output folder (created); ``None`` writes nothing.
        config: settings (a :class:`CohortConfig` or its dict); default: the paper's.
        column_map: export column names (:class:`~cardiofusion.cohort.tables.ColumnMap`, dict or file).

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

    linked = link_exams(ecg, cxr, echo, config, sources={"ecg": ecg_src, "cxr": cxr_src, "echo": echo_src})
    manifest = assemble_manifest(linked.records, config)
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
        "inputs": {"ecg_index": ecg_src, "cxr_index": cxr_src, "echo_index": echo_src},
        "column_map": cmap.to_dict(),
        "cardiofusion_version": __version__,
    }
    files["config"].write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    result.out_dir = out
    result.files = files
    return result


__all__ = ["OUTPUT_FILES", "CohortResult", "assemble_manifest", "build_cohort"]
