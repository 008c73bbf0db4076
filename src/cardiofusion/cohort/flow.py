"""The cohort flow table (the paper's Figure 1): how many rows, exams, records and patients survive
every step, and why the others were excluded.

The flow is a plain JSON-ready dict::

    {
      "tables": {                      # per index table, in order ecg, cxr, echo
        "echo": {"raw_rows": 120, "valid_rows": 117, "used": 80,
                 "exclusions": [{"reason": "missing patient_id", "count": 1}, ...]},
        ...
      },
      "linkage": {"echoes_eligible", "echoes_linked_to_cxr", "cxr_linked_to_echo", "echoes_with_ecg",
                  "candidate_links", "duplicate_triples_removed", "records"},
      "cohort": {"records", "patients", "as_records", "as_patients", "prevalence_records",
                 "prevalence_patients", "severity": {"none": n, "mild": n, ...}},
      "splits": {"train": {"records", "patients", "as_records", "as_patients"}, "val": ..., "test": ...},
      "folds": null | {"0": {...same keys...}, ...},
      "decoding": absent | {"records_in", "exclusions": [{"reason", "count"}], "records_usable",
                            "splits": {"train": {...}, ...}}   # added by :func:`add_decoding_step`
    }

:func:`check_flow` verifies that the numbers add up (``raw_rows = used + sum(exclusions)`` per
table, ``candidate_links - duplicates = records``, splits summing to the cohort, ...).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .labels import SEVERITY_LEVELS
from .config import SPLIT_NAMES
from .tables import TABLE_KINDS, TABLE_NAMES


class FlowError(AssertionError):
    """The flow's numbers do not add up (a bug, never a user error)."""


def _counts(df: pl.DataFrame) -> dict[str, int]:
    pos = df.filter(pl.col("label") == 1)
    return {
        "records": int(df.height),
        "patients": int(df["patient_id"].n_unique()),
        "as_records": int(pos.height),
        "as_patients": int(pos["patient_id"].n_unique()),
    }


def cohort_flow(link_flow: dict[str, Any], manifest: pl.DataFrame) -> dict[str, Any]:
    """Complete the linkage flow with cohort, split and fold counts from the final manifest."""
    flow = {"tables": link_flow["tables"], "linkage": dict(link_flow["linkage"])}
    total = _counts(manifest)
    sev = manifest.group_by("severity").agg(pl.len().alias("n"))
    sev_map = {s: int(n) for s, n in zip(sev["severity"], sev["n"])}
    total.update(
        prevalence_records=round(total["as_records"] / total["records"], 6) if total["records"] else None,
        prevalence_patients=round(total["as_patients"] / total["patients"], 6) if total["patients"] else None,
        severity={s: sev_map.get(s, 0) for s in SEVERITY_LEVELS},
    )
    flow["cohort"] = total
    flow["splits"] = {s: _counts(manifest.filter(pl.col("split") == s)) for s in SPLIT_NAMES}
    if "fold" in manifest.columns and manifest["fold"].null_count() < manifest.height:
        folds = sorted(int(f) for f in manifest["fold"].drop_nulls().unique())
        flow["folds"] = {str(f): _counts(manifest.filter(pl.col("fold") == f)) for f in folds}
        unassigned = manifest.filter(pl.col("fold").is_null())
        if unassigned.height:
            flow["folds"]["none"] = _counts(unassigned)
    else:
        flow["folds"] = None
    check_flow(flow)
    return flow


def check_flow(flow: dict[str, Any]) -> None:
    """Raise :class:`FlowError` unless every count adds up."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise FlowError(msg)

    for kind in TABLE_KINDS:
        t = flow["tables"][kind]
        excluded = sum(e["count"] for e in t["exclusions"])
        need(t["raw_rows"] == t["used"] + excluded, f"{kind}: raw {t['raw_rows']} != used {t['used']} + excluded {excluded}")
        need(0 <= t["used"] <= t["valid_rows"] <= t["raw_rows"], f"{kind}: used <= valid <= raw violated")
        need(all(e["count"] > 0 for e in t["exclusions"]), f"{kind}: zero-count exclusion listed")
    lk = flow["linkage"]
    need(lk["candidate_links"] - lk["duplicate_triples_removed"] == lk["records"], "links - duplicates != records")
    need(lk["echoes_with_ecg"] == flow["tables"]["echo"]["used"], "echoes with an ECG != echoes used")
    need(lk["echoes_with_ecg"] <= lk["echoes_linked_to_cxr"] <= lk["echoes_eligible"], "echo counts not monotone")
    c = flow["cohort"]
    need(c["records"] == lk["records"], "cohort records != linked records")
    need(c["as_records"] <= c["records"] and c["as_patients"] <= c["patients"], "more AS than records/patients")
    need(sum(c["severity"].values()) == c["records"], "severity counts do not add up to records")
    need(c["records"] - c["severity"]["none"] == c["as_records"], "AS records != records graded mild or worse")
    for key in ("records", "patients", "as_records", "as_patients"):
        need(sum(s[key] for s in flow["splits"].values()) == c[key], f"splits do not add up ({key})")
    if flow.get("folds"):
        for key in ("records", "patients", "as_records", "as_patients"):
            need(sum(f[key] for f in flow["folds"].values()) == c[key], f"folds do not add up ({key})")
    d = flow.get("decoding")
    if d:
        excluded = sum(e["count"] for e in d["exclusions"])
        need(d["records_in"] == c["records"], "decoding starts from a different record count")
        need(d["records_in"] == d["records_usable"] + excluded, "decoded records + unreadable != records")
        need(sum(s["records"] for s in d["splits"].values()) == d["records_usable"], "decoded splits do not add up")


def add_decoding_step(flow: dict[str, Any], usable: pl.DataFrame, excluded: pl.DataFrame) -> dict[str, Any]:
    """Extend ``flow`` with the records lost because a file could not be decoded.

    Args:
        flow: the cohort flow (modified in place and returned).
        usable: manifest rows whose ECG and X-ray both decoded (``PreprocessedCache.records``).
        excluded: the other manifest rows with a ``reason`` column (``PreprocessedCache.excluded``).
    """
    reasons = excluded.group_by("reason").agg(pl.len().alias("n")).sort(["n", "reason"], descending=[True, False])
    flow["decoding"] = {
        "records_in": int(usable.height + excluded.height),
        "exclusions": [{"reason": str(r), "count": int(n)} for r, n in zip(reasons["reason"], reasons["n"])],
        "records_usable": int(usable.height),
        "splits": {s: _counts(usable.filter(pl.col("split") == s)) for s in SPLIT_NAMES},
    }
    check_flow(flow)
    return flow


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def format_flow(flow: dict[str, Any]) -> str:
    """The flow as a plain-text table (what ``cardiofusion cohort build`` prints)."""
    lines: list[str] = ["Cohort flow", ""]
    width = 58
    for kind in ("echo", "cxr", "ecg"):
        t = flow["tables"][kind]
        lines.append(f"{TABLE_NAMES[kind]:<{width}}{_n(t['raw_rows']):>12} rows")
        left = t["raw_rows"]
        for e in t["exclusions"]:
            left -= e["count"]
            lines.append(f"  - {e['reason']:<{width - 4}}{_n(-e['count']):>12}   -> {_n(left)}")
        lines.append(f"  = {'used in records':<{width - 4}}{_n(t['used']):>12}")
        lines.append("")
    lk = flow["linkage"]
    lines.append("Linkage")
    for key, text in (
        ("echoes_eligible", "eligible echoes (valid, adult, label known)"),
        ("echoes_linked_to_cxr", "echoes linked to an X-ray"),
        ("cxr_linked_to_echo", "distinct X-rays linked to an echo"),
        ("echoes_with_ecg", "echoes whose X-ray has an ECG in the window"),
        ("candidate_links", "(ECG, X-ray, echo) links"),
        ("duplicate_triples_removed", "duplicate links removed"),
        ("records", "records"),
    ):
        lines.append(f"  {text:<{width - 2}}{_n(lk[key]):>12}")
    c = flow["cohort"]
    lines.append("")

    def pct(a: int, b: int) -> str:
        return f"{100.0 * a / b:.1f}%" if b else "-"

    lines.append(
        f"Cohort: {_n(c['records'])} records from {_n(c['patients'])} patients; AS {_n(c['as_records'])} records "
        f"({pct(c['as_records'], c['records'])}), {_n(c['as_patients'])} patients ({pct(c['as_patients'], c['patients'])})"
    )
    lines.append("Severity: " + ", ".join(f"{k} {_n(v)}" for k, v in c["severity"].items()))
    lines.append("")
    header = f"{'split':<8}{'records':>10}{'patients':>10}{'AS records':>12}{'AS patients':>13}{'AS %':>8}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = list(flow["splits"].items())
    for name, s in rows:
        lines.append(f"{name:<8}{_n(s['records']):>10}{_n(s['patients']):>10}{_n(s['as_records']):>12}"
                     f"{_n(s['as_patients']):>13}{pct(s['as_records'], s['records']):>8}")
    lines.append(f"{'total':<8}{_n(c['records']):>10}{_n(c['patients']):>10}{_n(c['as_records']):>12}"
                 f"{_n(c['as_patients']):>13}{pct(c['as_records'], c['records']):>8}")
    d = flow.get("decoding")
    if d:
        lines.append("")
        lines.append(f"{'Decoding (preprocessing cache)':<{width}}{_n(d['records_in']):>12} records")
        left = d["records_in"]
        for e in d["exclusions"]:
            left -= e["count"]
            lines.append(f"  - {e['reason']:<{width - 4}}{_n(-e['count']):>12}   -> {_n(left)}")
        lines.append(f"  = {'usable records':<{width - 4}}{_n(d['records_usable']):>12}   ("
                     + ", ".join(f"{k} {_n(v['records'])}" for k, v in d["splits"].items()) + ")")
    if flow.get("folds"):
        lines.append("")
        lines.append(f"{'fold':<8}{'records':>10}{'patients':>10}{'AS records':>12}{'AS patients':>13}")
        for name, s in flow["folds"].items():
            lines.append(f"{name:<8}{_n(s['records']):>10}{_n(s['patients']):>10}{_n(s['as_records']):>12}{_n(s['as_patients']):>13}")
    return "\n".join(lines)


__all__ = ["FlowError", "add_decoding_step", "check_flow", "cohort_flow", "format_flow"]
