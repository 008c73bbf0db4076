"""Linking echo, X-ray and ECG exams into (ECG, X-ray, echo) records, with a reason for every loss.

All work is columnar (Polars joins, as-of joins and expressions); nothing loops over rows in Python.

Steps, per table, in order (the first failing check gives a row's exclusion reason):

1. **Row validity** (all tables): missing ``patient_id``, missing ``exam_id``, missing or
   unparseable ``exam_datetime``, missing ``path`` (ECG and X-ray), then an invalid value (an
   unparseable or implausible number, an unparseable ``birth_date``: :mod:`cardiofusion.cohort.values`;
   the reason names the first such column, ``exclusions.parquet`` its raw value).  Exact copies of a row are
   reduced to one (``exact duplicate row``); rows sharing an ``exam_id`` with different content are
   all dropped (``CohortConfig.duplicate_exam_ids="drop"``) or all but the first are
   (``"first"``).
2. **Echo eligibility**: age at the echo unknown, age < ``min_age``, label undeterminable (all
   measurements missing).
3. **Echo -> X-ray**: the patient's X-ray closest to the echo within +-``cxr_within_days``; ties go to
   the earlier X-ray, then the smaller ``exam_id`` (two as-of joins, backward and forward).  Echoes
   without one are excluded.
4. **X-ray -> ECG**: every ECG of the patient within +-``ecg_within_days`` of the linked X-ray; one
   record per (ECG, X-ray, echo).  Echoes whose X-ray has no such ECG are excluded.  Exact duplicate
   triples are removed and counted (none can survive step 1, the check is a safety net).
5. X-rays and ECGs that end up in no record are excluded with the reason why (no eligible echo in
   the window / another X-ray was closer / no ECG in the window; no linked X-ray in the window).

For each table ``raw rows == rows used in records + sum(excluded rows)``; :func:`link_exams` asserts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from .labels import MEASUREMENTS, dx_hf_expr, dx_lvh_expr, label_expr, severity_expr
from .config import CohortConfig
from .tables import TABLE_KINDS

#: Manifest columns every build writes, in order (``docs/data_layout.md``); split/fold are added by
#: :mod:`cardiofusion.cohort.split`.
MANIFEST_CORE_COLUMNS: tuple[str, ...] = (
    "record_id", "patient_id", "split", "fold", "label", "severity",
    "ecg_exam_id", "ecg_path", "ecg_datetime",
    "cxr_exam_id", "cxr_path", "cxr_datetime",
    "echo_exam_id", "echo_datetime",
    "days_echo_to_cxr", "days_cxr_to_ecg",
    "peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2",
    "age", "sex", "pacemaker", "atrial_fibrillation",
    "as_severity", "dx_as", "dx_lvh", "dx_hf", "dx_af",
)
#: Target columns derived from the linked exams (``docs/data_layout.md``, "Targets"): ``as_severity`` (the
#: severity grade), ``dx_as`` (= label), ``dx_lvh`` (echo LV mass above the sex-specific limit),
#: ``dx_hf`` (echo LVEF < 40%), ``dx_af`` (the ECG's atrial_fibrillation flag); null = unknown.
DERIVED_TARGET_COLUMNS: tuple[str, ...] = ("as_severity", "dx_as", "dx_lvh", "dx_hf", "dx_af")
#: ECG reader options copied when the ECG index has them.
ECG_READER_COLUMNS: tuple[str, ...] = ("fs", "units", "resolution_uv")
#: Columns consumed by the linkage itself (not passed through under their own name).
_CONSUMED = {
    "ecg": {"patient_id", "exam_id", "exam_datetime", "path", "age", "sex", "pacemaker", "atrial_fibrillation", *ECG_READER_COLUMNS},
    "cxr": {"patient_id", "exam_id", "exam_datetime", "path", "age", "sex"},
    "echo": {"patient_id", "exam_id", "exam_datetime", "age", "sex", "birth_date", "path", *MEASUREMENTS},
}
_EXCLUSION_SCHEMA = {
    "table": pl.String, "exam_id": pl.String, "patient_id": pl.String, "row": pl.Int64,
    "step": pl.Int32, "reason": pl.String, "file": pl.String, "column": pl.String, "raw_value": pl.String,
}
_INVALID_COLUMNS = ("_invalid_column", "_invalid_raw", "_invalid_reason")
_DAY_US = 86_400_000_000


def _days(n: float) -> str:
    return f"{n:g}"


def reasons(config: CohortConfig) -> dict[str, str]:
    """The exclusion reasons, by key, worded with the configured windows."""
    c, e, a = _days(config.cxr_within_days), _days(config.ecg_within_days), f"{config.min_age:g}"
    return {
        "missing_patient_id": "missing patient_id",
        "missing_exam_id": "missing exam_id",
        "missing_datetime": "missing exam_datetime",
        "bad_datetime": "unparseable exam_datetime",
        "missing_path": "missing path",
        "exact_duplicate": "exact duplicate row",
        "dup_drop": "conflicting duplicate exam_id (all copies dropped)",
        "dup_first": "duplicate exam_id (first row kept)",
        "unknown_age": "unknown age",
        "minor": f"age < {a}",
        "undeterminable": (
            "undeterminable label (measurements missing)" if config.require_all_measurements
            else "undeterminable label (all measurements missing)"
        ),
        "no_cxr": (
            f"no X-ray with an ECG within ±{e} days within ±{c} days" if config.cxr_requires_ecg
            else f"no X-ray within ±{c} days"
        ),
        "no_ecg_for_cxr": f"no ECG within ±{e} days of the linked X-ray",
        "cxr_no_echo": f"no eligible echo within ±{c} days",
        "cxr_no_ecg": f"no ECG within ±{e} days",
        "cxr_not_closest": "another X-ray was closer to the echo",
        "ecg_no_cxr": f"no linked X-ray within ±{e} days",
    }


@dataclass
class LinkResult:
    """Output of :func:`link_exams`.

    Attributes:
        records: one row per (ECG, X-ray, echo) link, manifest columns except ``split``/``fold``.
        exclusions: every excluded row: ``table``, ``exam_id``, ``patient_id``, ``row`` (0-based row
            in its table), ``step``, ``reason``, ``file`` (the table's source), and for an unparseable
            or implausible value the ``column`` (ours) and its ``raw_value`` as written.
        flow: counts per table and per linkage step (see :mod:`cardiofusion.cohort.flow`).
    """

    records: pl.DataFrame
    exclusions: pl.DataFrame
    flow: dict[str, Any]


class _Ledger:
    """Collects excluded rows per table and step."""

    def __init__(self, sources: dict[str, str] | None = None) -> None:
        self.parts: list[pl.DataFrame] = []
        self.step = 0
        self.sources = dict(sources or {})

    def add(self, table: str, rows: pl.DataFrame, reason: str | pl.Expr, *, detail: bool = False) -> None:
        """Record ``rows`` as excluded; ``detail``: copy the offending cell (column, raw value)."""
        self.step += 1
        if rows.height == 0:
            return
        reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
        has_detail = detail and "_invalid_column" in rows.columns
        self.parts.append(
            rows.select(
                pl.lit(table).alias("table"),
                pl.col("exam_id"),
                pl.col("patient_id"),
                pl.col("_row").alias("row"),
                pl.lit(self.step, pl.Int32).alias("step"),
                reason_expr.cast(pl.String).alias("reason"),
                pl.lit(self.sources.get(table), pl.String).alias("file"),
                (pl.col("_invalid_column") if has_detail else pl.lit(None, pl.String)).alias("column"),
                (pl.col("_invalid_raw") if has_detail else pl.lit(None, pl.String)).alias("raw_value"),
            )
        )

    def frame(self) -> pl.DataFrame:
        if not self.parts:
            return pl.DataFrame(schema=_EXCLUSION_SCHEMA)
        return pl.concat(self.parts, how="vertical").cast(_EXCLUSION_SCHEMA)


def _basis(config: CohortConfig) -> pl.Expr:
    t = pl.col("exam_datetime")
    return (t.dt.truncate("1d") if config.window_basis == "date" else t).alias("_t")


def _clean(df: pl.DataFrame, kind: str, config: CohortConfig, ledger: _Ledger, why: dict[str, str]) -> pl.DataFrame:
    """Step 1: drop invalid rows and duplicates, recording why."""
    unparseable = pl.col("_exam_datetime_unparseable") if "_exam_datetime_unparseable" in df.columns else pl.lit(False)
    invalid = pl.col("_invalid_reason") if "_invalid_reason" in df.columns else pl.lit(None, pl.String)
    chain = (
        pl.when(pl.col("patient_id").is_null()).then(pl.lit(why["missing_patient_id"]))
        .when(pl.col("exam_id").is_null()).then(pl.lit(why["missing_exam_id"]))
        .when(unparseable).then(pl.lit(why["bad_datetime"]))
        .when(pl.col("exam_datetime").is_null()).then(pl.lit(why["missing_datetime"]))
    )
    if kind in ("ecg", "cxr"):
        chain = chain.when(pl.col("path").is_null()).then(pl.lit(why["missing_path"]))
    chain = chain.when(invalid.is_not_null()).then(pl.lit("_invalid"))
    df = df.with_columns(chain.otherwise(None).alias("_reason"))
    bad = df.filter(pl.col("_reason").is_not_null())
    for key in ("missing_patient_id", "missing_exam_id", "bad_datetime", "missing_datetime", "missing_path"):
        ledger.add(kind, bad.filter(pl.col("_reason") == why[key]), why[key], detail=key == "bad_datetime")
    # unparseable / implausible values: one step, the reason names the column (cohort.values)
    ledger.add(kind, bad.filter(pl.col("_reason") == "_invalid"), invalid, detail=True)
    df = df.filter(pl.col("_reason").is_null()).drop("_reason")
    df = df.drop([c for c in ("_exam_datetime_unparseable", *_INVALID_COLUMNS) if c in df.columns])

    # exact copies share their exam_id: compare whole rows only where the id repeats (cheap)
    content = [c for c in df.columns if c != "_row"]
    shared = df.filter(pl.col("exam_id").is_duplicated())
    if shared.height:
        copies = shared.filter(~pl.struct(content).is_first_distinct())
        ledger.add(kind, copies, why["exact_duplicate"])
        df = df.filter(~pl.col("_row").is_in(copies["_row"].implode()))
    else:
        ledger.add(kind, shared, why["exact_duplicate"])

    if config.duplicate_exam_ids == "drop":
        dup = pl.col("exam_id").is_duplicated()
        ledger.add(kind, df.filter(dup), why["dup_drop"])
    else:
        dup = ~pl.col("exam_id").is_first_distinct()
        ledger.add(kind, df.filter(dup), why["dup_first"])
    return df.filter(~dup).with_columns(_basis(config))


def _age_at_echo(echo: pl.DataFrame, others: list[pl.DataFrame], config: CohortConfig) -> pl.DataFrame:
    """Add ``_age`` (years at the echo) and ``age_source`` to the echo table."""
    exprs = []
    if "age" in echo.columns:
        exprs.append((pl.col("age"), "echo"))
    if "birth_date" in echo.columns:
        t, b = pl.col("exam_datetime"), pl.col("birth_date")
        before_birthday = (t.dt.month() < b.dt.month()) | ((t.dt.month() == b.dt.month()) & (t.dt.day() < b.dt.day()))
        years = (t.dt.year() - b.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Float64)
        exprs.append((pl.when(b <= t).then(years).otherwise(None), "birth_date"))
    if config.age_from_other_tables:
        parts = [o.select("patient_id", pl.col("exam_datetime").alias("_other_t"), pl.col("age").alias("_other_age"))
                 for o in others if "age" in o.columns]
        if parts:
            known = [(e.is_finite() & (e >= 0)).fill_null(False) for e, _ in exprs]
            need = echo.filter(~pl.any_horizontal(known) if known else pl.lit(True))["patient_id"].unique().implode()
            ref = (
                pl.concat(parts)
                .filter(pl.col("_other_age").is_not_null() & pl.col("patient_id").is_in(need))
                .sort("patient_id", "_other_t")
            )
            echo = echo.sort("patient_id", "exam_datetime").join_asof(
                ref, left_on="exam_datetime", right_on="_other_t", by="patient_id", strategy="nearest",
                check_sortedness=False, coalesce=True,
            )
            shift = (pl.col("exam_datetime") - pl.col("_other_t")).dt.total_microseconds() / (_DAY_US * 365.2425)
            exprs.append((pl.col("_other_age") + shift, "other_exam"))
    if not exprs:
        return echo.with_columns(pl.lit(None, pl.Float64).alias("_age"), pl.lit(None, pl.String).alias("age_source"))
    age = pl.coalesce([pl.when(e.is_finite() & (e >= 0)).then(e) for e, _ in exprs]).cast(pl.Float64)
    src = pl.lit(None, pl.String)
    for e, name in reversed(exprs):
        src = pl.when(e.is_finite() & (e >= 0)).then(pl.lit(name)).otherwise(src)
    out = echo.with_columns(age.alias("_age"), src.alias("age_source"))
    return out.drop([c for c in ("_other_t", "_other_age") if c in out.columns])


def _nearest_within(left: pl.DataFrame, right: pl.DataFrame, days: float, prefix: str) -> pl.DataFrame:
    """For each ``left`` row, the ``right`` row of the same patient nearest in ``_t`` within +-days.

    ``right`` must hold at most one row per (patient_id, _t): the tie-break among exams at the same
    ``_t`` is done by the caller.  Equal distances before and after go to the earlier one.
    Adds ``{prefix}_exam_id`` and ``{prefix}_t`` (null when none is in the window).
    """
    r = right.select("patient_id", pl.col("_t").alias("_rt"), pl.col("exam_id").alias("_rid")).sort("patient_id", "_rt")
    left = left.sort("patient_id", "_t")
    back = left.join_asof(r, left_on="_t", right_on="_rt", by="patient_id", strategy="backward",
                          check_sortedness=False, coalesce=False)
    fwd = left.select("_t", "patient_id").join_asof(r, left_on="_t", right_on="_rt", by="patient_id", strategy="forward",
                                                    check_sortedness=False, coalesce=False)
    limit = int(round(days * _DAY_US))
    db = (pl.col("_t") - pl.col("_rt")).dt.total_microseconds()
    df_ = (pl.col("_f_rt") - pl.col("_t")).dt.total_microseconds()
    out = back.with_columns(fwd["_rt"].alias("_f_rt"), fwd["_rid"].alias("_f_rid"))
    use_back = pl.col("_rt").is_not_null() & (db <= limit) & (pl.col("_f_rt").is_null() | (db <= df_))
    use_fwd = ~use_back & pl.col("_f_rt").is_not_null() & (df_ <= limit)
    out = out.with_columns(
        pl.when(use_back).then(pl.col("_rid")).when(use_fwd).then(pl.col("_f_rid")).otherwise(None).alias(f"{prefix}_exam_id"),
        pl.when(use_back).then(pl.col("_rt")).when(use_fwd).then(pl.col("_f_rt")).otherwise(None).alias(f"{prefix}_t"),
    )
    return out.drop("_rt", "_rid", "_f_rt", "_f_rid")


def _one_per_instant(df: pl.DataFrame) -> pl.DataFrame:
    """Keep, per (patient, _t), the earliest exam, then the smallest exam_id (the tie-break)."""
    return df.sort("patient_id", "_t", "exam_datetime", "exam_id").unique(["patient_id", "_t"], keep="first", maintain_order=True)


def _within(a: str, b: str, days: float) -> pl.Expr:
    return (pl.col(a) - pl.col(b)).dt.total_microseconds().abs() <= int(round(days * _DAY_US))


def _has_neighbour(df: pl.DataFrame, other: pl.DataFrame, days: float) -> pl.Series:
    """Boolean per ``df`` row (in ``df``'s order): does ``other`` have a row of the patient within +-days?"""
    if other.height == 0 or df.height == 0:
        return pl.Series("_has", [False] * df.height, dtype=pl.Boolean)
    o = other.select("patient_id", pl.col("_t").alias("_ot")).unique().sort("patient_id", "_ot")
    j = (
        df.select("patient_id", "_t", pl.int_range(pl.len()).alias("_i"))
        .sort("patient_id", "_t")
        .join_asof(o, left_on="_t", right_on="_ot", by="patient_id", strategy="nearest", check_sortedness=False, coalesce=False)
        .with_columns((pl.col("_ot").is_not_null() & _within("_t", "_ot", days)).alias("_has"))
        .sort("_i")
    )
    return j["_has"]


def _passthrough_names(tables: dict[str, pl.DataFrame]) -> dict[str, dict[str, str]]:
    """Manifest name of every extra column: its own name unless taken, else ``<table>_<name>``."""
    taken = set(MANIFEST_CORE_COLUMNS) | set(ECG_READER_COLUMNS) | {"age_source"}
    out: dict[str, dict[str, str]] = {}
    for kind in TABLE_KINDS:
        out[kind] = {}
        for c in tables[kind].columns:
            if c.startswith("_") or c in _CONSUMED[kind]:
                continue
            name = c if c not in taken else f"{kind}_{c}"
            k = 2
            while name in taken:
                name = f"{kind}_{c}_{k}"
                k += 1
            taken.add(name)
            out[kind][c] = name
    if "path" in tables["echo"].columns:
        out["echo"]["path"] = "echo_path"
    return out


def link_exams(
    ecg: pl.DataFrame,
    cxr: pl.DataFrame,
    echo: pl.DataFrame,
    config: CohortConfig | None = None,
    *,
    sources: dict[str, str] | None = None,
) -> LinkResult:
    """Link normalised index tables (see :func:`cardiofusion.cohort.tables.load_index`) into records.

    ``sources`` (table kind -> file name) fills the ``file`` column of the exclusions.

    Returns records sorted by patient, echo time, X-ray, ECG time and ECG id; ``record_id`` is
    ``"<ecg_exam_id>|<cxr_exam_id>|<echo_exam_id>"`` (a counter is appended in the unlikely case
    that ids containing ``|`` make two of them equal).
    """
    config = config or CohortConfig()
    why = reasons(config)
    ledger = _Ledger(sources)
    raw = {"ecg": ecg.height, "cxr": cxr.height, "echo": echo.height}
    tables_in = {"ecg": ecg, "cxr": cxr, "echo": echo}
    for kind, df in tables_in.items():
        if "_row" not in df.columns:
            tables_in[kind] = df.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    passthrough = _passthrough_names(tables_in)

    # -- 1. row validity -----------------------------------------------------------------------
    ecg_v = _clean(tables_in["ecg"], "ecg", config, ledger, why)
    cxr_v = _clean(tables_in["cxr"], "cxr", config, ledger, why)
    echo_v = _clean(tables_in["echo"], "echo", config, ledger, why)
    valid = {"ecg": ecg_v.height, "cxr": cxr_v.height, "echo": echo_v.height}

    # -- 2. echo eligibility: age, label --------------------------------------------------------
    echo_v = _age_at_echo(echo_v, [cxr_v, ecg_v], config)
    ledger.add("echo", echo_v.filter(pl.col("_age").is_null()), why["unknown_age"])
    echo_v = echo_v.filter(pl.col("_age").is_not_null())
    ledger.add("echo", echo_v.filter(pl.col("_age") < config.min_age), why["minor"])
    echo_v = echo_v.filter(pl.col("_age") >= config.min_age)
    echo_v = echo_v.with_columns(
        label_expr(config.criteria, require_all_measurements=config.require_all_measurements).alias("_label"),
        severity_expr(config.criteria, config.grades, require_all_measurements=config.require_all_measurements).alias("_severity"),
    )
    ledger.add("echo", echo_v.filter(pl.col("_label").is_null()), why["undeterminable"])
    echo_e = echo_v.filter(pl.col("_label").is_not_null())
    n_echo_eligible = echo_e.height

    # -- 3. echo -> closest X-ray -----------------------------------------------------------------
    cxr_has_ecg = _has_neighbour(cxr_v, ecg_v, config.ecg_within_days)
    cxr_v = cxr_v.with_columns(cxr_has_ecg.alias("_has_ecg"))
    candidates = cxr_v.filter(pl.col("_has_ecg")) if config.cxr_requires_ecg else cxr_v
    echo_l = _nearest_within(echo_e, _one_per_instant(candidates), config.cxr_within_days, "_cxr")
    ledger.add("echo", echo_l.filter(pl.col("_cxr_exam_id").is_null()), why["no_cxr"])
    echo_l = echo_l.filter(pl.col("_cxr_exam_id").is_not_null())
    n_echo_linked = echo_l.height

    # -- 4. X-ray -> every ECG in the window --------------------------------------------------------
    linked_cxr = echo_l.select(
        pl.col("_cxr_exam_id").alias("cxr_exam_id"), "patient_id", pl.col("_cxr_t").alias("_ct")
    ).unique("cxr_exam_id")
    ecg_k = ecg_v.select("patient_id", pl.col("exam_id").alias("ecg_exam_id"), pl.col("_t").alias("_et"))
    cxr_ecg = (
        linked_cxr.lazy()
        .join(ecg_k.lazy(), on="patient_id", how="inner")
        .filter(_within("_et", "_ct", config.ecg_within_days))
        .select("cxr_exam_id", "ecg_exam_id", "_ct", "_et")
        .collect()
    )
    with_ecg = echo_l["_cxr_exam_id"].is_in(cxr_ecg["cxr_exam_id"].unique().implode())
    ledger.add("echo", echo_l.filter(~with_ecg), why["no_ecg_for_cxr"])
    echo_r = echo_l.filter(with_ecg)
    links = echo_r.select(
        pl.col("exam_id").alias("echo_exam_id"), pl.col("_cxr_exam_id").alias("cxr_exam_id"), pl.col("_t").alias("_ht")
    ).join(cxr_ecg, on="cxr_exam_id", how="inner")
    n_candidates = links.height
    links = links.unique(["ecg_exam_id", "cxr_exam_id", "echo_exam_id"], keep="first")
    n_dup_triples = n_candidates - links.height

    # -- 5. X-rays and ECGs in no record ------------------------------------------------------------
    used_cxr = links["cxr_exam_id"].unique().implode()
    used_ecg = links["ecg_exam_id"].unique().implode()
    cxr_unused = cxr_v.filter(~pl.col("exam_id").is_in(used_cxr))
    near_echo = _has_neighbour(cxr_unused, echo_e, config.cxr_within_days)
    cxr_unused = cxr_unused.with_columns(near_echo.alias("_near_echo"))
    ledger.add("cxr", cxr_unused.filter(~pl.col("_near_echo")), why["cxr_no_echo"])
    ledger.add("cxr", cxr_unused.filter(pl.col("_near_echo") & ~pl.col("_has_ecg")), why["cxr_no_ecg"])
    ledger.add("cxr", cxr_unused.filter(pl.col("_near_echo") & pl.col("_has_ecg")), why["cxr_not_closest"])
    ledger.add("ecg", ecg_v.filter(~pl.col("exam_id").is_in(used_ecg)), why["ecg_no_cxr"])

    # -- records -----------------------------------------------------------------------------------
    records = _assemble(links, ecg_v, cxr_v, echo_r, passthrough)
    exclusions = ledger.frame()

    used = {"ecg": records["ecg_exam_id"].n_unique(), "cxr": records["cxr_exam_id"].n_unique(),
            "echo": records["echo_exam_id"].n_unique()}
    flow: dict[str, Any] = {"tables": {}, "linkage": {}}
    for kind in TABLE_KINDS:
        ex = exclusions.filter(pl.col("table") == kind)
        counts = ex.group_by("step", "reason").agg(pl.len().alias("count")).sort("step", "reason")
        items = [{"reason": r, "count": int(n)} for r, n in zip(counts["reason"], counts["count"])]
        excluded = sum(i["count"] for i in items)
        assert raw[kind] == used[kind] + excluded, (
            f"{kind}: raw {raw[kind]} != used {used[kind]} + excluded {excluded}"
        )
        flow["tables"][kind] = {"raw_rows": raw[kind], "valid_rows": valid[kind], "exclusions": items, "used": used[kind]}
    flow["linkage"] = {
        "echoes_eligible": n_echo_eligible,
        "echoes_linked_to_cxr": n_echo_linked,
        "cxr_linked_to_echo": linked_cxr.height,
        "echoes_with_ecg": echo_r.height,
        "candidate_links": n_candidates,
        "duplicate_triples_removed": n_dup_triples,
        "records": records.height,
    }
    assert n_candidates - n_dup_triples == records.height
    return LinkResult(records=records, exclusions=exclusions, flow=flow)


def _assemble(
    links: pl.DataFrame,
    ecg: pl.DataFrame,
    cxr: pl.DataFrame,
    echo: pl.DataFrame,
    passthrough: dict[str, dict[str, str]],
) -> pl.DataFrame:
    """Join the link triples with the three tables and lay out the manifest columns."""
    def opt(df: pl.DataFrame, name: str, alias: str, dtype: pl.DataType) -> pl.Expr:
        return (pl.col(name) if name in df.columns else pl.lit(None, dtype)).cast(dtype).alias(alias)

    e = ecg.select(
        pl.col("exam_id").alias("ecg_exam_id"),
        pl.col("patient_id"),
        pl.col("path").alias("ecg_path"),
        pl.col("exam_datetime").alias("ecg_datetime"),
        opt(ecg, "sex", "_ecg_sex", pl.String),
        opt(ecg, "pacemaker", "pacemaker", pl.Int8),
        opt(ecg, "atrial_fibrillation", "atrial_fibrillation", pl.Int8),
        *[pl.col(c) for c in ECG_READER_COLUMNS if c in ecg.columns],
        *[pl.col(c).alias(n) for c, n in passthrough["ecg"].items()],
    )
    x = cxr.select(
        pl.col("exam_id").alias("cxr_exam_id"),
        pl.col("path").alias("cxr_path"),
        pl.col("exam_datetime").alias("cxr_datetime"),
        opt(cxr, "sex", "_cxr_sex", pl.String),
        *[pl.col(c).alias(n) for c, n in passthrough["cxr"].items()],
    )
    h = echo.select(
        pl.col("exam_id").alias("echo_exam_id"),
        pl.col("exam_datetime").alias("echo_datetime"),
        pl.col("_label").cast(pl.Int64).alias("label"),
        pl.col("_severity").alias("severity"),
        *[pl.col(m).cast(pl.Float64) for m in MEASUREMENTS],
        pl.col("_age").alias("age"),
        opt(echo, "sex", "_echo_sex", pl.String),
        pl.col("age_source"),
        *[pl.col(c).alias(n) for c, n in passthrough["echo"].items()],
    )
    df = (
        links.lazy()
        .join(h.lazy(), on="echo_exam_id", how="left")
        .join(x.lazy(), on="cxr_exam_id", how="left")
        .join(e.lazy(), on="ecg_exam_id", how="left")
        .with_columns(
            ((pl.col("_ct") - pl.col("_ht")).dt.total_microseconds() / _DAY_US).alias("days_echo_to_cxr"),
            ((pl.col("_et") - pl.col("_ct")).dt.total_microseconds() / _DAY_US).alias("days_cxr_to_ecg"),
            pl.coalesce("_echo_sex", "_ecg_sex", "_cxr_sex").alias("sex"),
            pl.concat_str("ecg_exam_id", "cxr_exam_id", "echo_exam_id", separator="|").alias("record_id"),
        )
        .sort("patient_id", "echo_datetime", "echo_exam_id", "ecg_datetime", "ecg_exam_id")
        .collect()
    )
    lv_mass, lvef = passthrough["echo"].get("lv_mass_g"), passthrough["echo"].get("lvef_pct")
    df = df.with_columns(
        pl.col("severity").alias("as_severity"),
        pl.col("label").cast(pl.Int8).alias("dx_as"),
        (dx_lvh_expr(lv_mass) if lv_mass else pl.lit(None, pl.Int8)).alias("dx_lvh"),
        (dx_hf_expr(lvef) if lvef else pl.lit(None, pl.Int8)).alias("dx_hf"),
        pl.col("atrial_fibrillation").cast(pl.Int8).alias("dx_af"),
    )
    if df["record_id"].n_unique() != df.height:
        n = pl.int_range(pl.len()).over("record_id")
        suffixed = pl.col("record_id") + "#" + n.cast(pl.String)
        df = df.with_columns(pl.when(n > 0).then(suffixed).otherwise(pl.col("record_id")).alias("record_id"))
    core = [c for c in MANIFEST_CORE_COLUMNS if c not in ("split", "fold")]
    reader = [c for c in ECG_READER_COLUMNS if c in df.columns]
    extras = [n for kind in TABLE_KINDS for n in passthrough[kind].values()] + ["age_source"]
    return df.select(core + reader + extras)


__all__ = ["DERIVED_TARGET_COLUMNS", "ECG_READER_COLUMNS", "MANIFEST_CORE_COLUMNS", "LinkResult", "link_exams", "reasons"]
