"""Cohort building: tables, linkage (a hand-made scenario with every answer known), flow, split, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cardiofusion import cli
from cardiofusion.cohort import (
    MANIFEST_CORE_COLUMNS,
    CohortConfig,
    ColumnMap,
    FlowError,
    build_cohort,
    check_flow,
    format_flow,
    load_index,
    normalise_index,
    split_records,
)
from cardiofusion.errors import ConfigError, ReadError

# ----------------------------------------------------------------------------- the scenario
# P1: echo H1 (AS, moderate) 2020-01-10 and H9 (normal) 2020-01-20; X-rays X1 (01-01) and X2 (01-15):
#     both echoes take X2 (closest); ECGs E4 (-7 d), E1 (0 d), E2 (+7 d 09:30) link, E3 (+8 d) does not;
#     X9 has no path; E12 has an unparseable date.
# P2: echo H2 with the only X-ray X3 91 days later -> no X-ray; E5 unlinked.
# P3: minor (17) -> excluded; X4, E6 unlinked.
# P4: echo H4 without any measurement -> undeterminable; X5, E7 unlinked.
# P5: echo H5 (Vmax exactly 2.5, age from birth date: 70), X6 and X7 both 5 days away -> the earlier X6;
#     E8 listed twice (exact copy), E9 twice with different content (dropped), E10 only near X7.
# P6: echo H6 (age from the X-ray: 60), X8 has no ECG within 7 days (E11 is 15 days away).
# P7: echo H7 with no age anywhere -> unknown age.  H8 has no patient id.
ECG_CSV = """patient_id,exam_id,exam_datetime,path,pacemaker,atrial_fibrillation,fs,units,device
P1,E1,2020-01-15,ecg/E1.csv,0,1,500,uV,GE
P1,E2,2020-01-22T09:30:00,ecg/E2.csv,0,0,500,uV,GE
P1,E3,2020-01-23,ecg/E3.csv,0,0,500,uV,GE
P1,E4,2020-01-08,/data/ecg/E4.csv,1,0,250,mV,PH
P2,E5,2020-08-31,ecg/E5.csv,,,500,uV,GE
P3,E6,2020-03-02,ecg/E6.csv,0,0,500,uV,GE
P4,E7,2021-01-02,ecg/E7.csv,0,0,500,uV,GE
P5,E8,2021-05-05,ecg/E8.csv,0,0,500,uV,GE
P5,E8,2021-05-05,ecg/E8.csv,0,0,500,uV,GE
P5,E9,2021-05-06,ecg/E9a.csv,0,0,500,uV,GE
P5,E9,2021-05-07,ecg/E9b.csv,0,0,500,uV,GE
P5,E10,2021-05-16,ecg/E10.csv,0,0,500,uV,GE
P6,E11,2022-01-20,ecg/E11.csv,0,0,500,uV,GE
P1,E12,not a date,ecg/E12.csv,0,0,500,uV,GE
"""
CXR_CSV = """patient_id,exam_id,exam_datetime,path,age,view_position
P1,X1,2020-01-01,cxr/X1.png,,PA
P1,X2,2020-01-15,cxr/X2.png,,PA
P2,X3,2020-08-31,cxr/X3.png,,AP
P3,X4,2020-03-02,cxr/X4.png,,PA
P4,X5,2021-01-01,cxr/X5.png,,PA
P5,X6,2021-05-05,cxr/X6.png,,PA
P5,X7,2021-05-15,cxr/X7.png,,PA
P6,X8,2022-01-05,cxr/X8.png,60,PA
P1,X9,2020-01-10,,,PA
"""
ECHO_CSV = """patient_id,exam_id,exam_datetime,peak_velocity_m_s,mean_gradient_mmhg,ava_cm2,age,sex,birth_date,lvef_pct
P1,H1,2020-01-10,3.2,,,70,female,,60
P2,H2,2020-06-01,,10,1.6,40,M,,55
P3,H3,2020-03-01,2.0,,,17,F,,65
P4,H4,2021-01-01,,,,55,M,,50
P5,H5,2021-05-10,2.5,,,,M,1950-05-11,58
P6,H6,2022-01-01,,45,,,F,,40
P7,H7,2022-02-01,1.2,,,,F,,62
,H8,2022-03-01,3.0,,,80,F,,60
P1,H9,2020-01-20,1.0,5,2.0,70,F,,61
"""

EXPECTED_RECORDS = [
    # ecg, cxr, echo, label, severity, days_echo_to_cxr, days_cxr_to_ecg
    ("E4", "X2", "H1", 1, "moderate", 5.0, -7.0),
    ("E1", "X2", "H1", 1, "moderate", 5.0, 0.0),
    ("E2", "X2", "H1", 1, "moderate", 5.0, 7.0),
    ("E4", "X2", "H9", 0, "none", -5.0, -7.0),
    ("E1", "X2", "H9", 0, "none", -5.0, 0.0),
    ("E2", "X2", "H9", 0, "none", -5.0, 7.0),
    ("E8", "X6", "H5", 1, "mild", -5.0, 0.0),
]
EXPECTED_EXCLUSIONS = {
    "echo": [("missing patient_id", 1), ("unknown age", 1), ("age < 18", 1),
             ("undeterminable label (all measurements missing)", 1), ("no X-ray within ±90 days", 1),
             ("no ECG within ±7 days of the linked X-ray", 1)],
    "cxr": [("missing path", 1), ("no eligible echo within ±90 days", 3), ("no ECG within ±7 days", 1),
            ("another X-ray was closer to the echo", 2)],
    "ecg": [("unparseable exam_datetime", 1), ("exact duplicate row", 1),
            ("conflicting duplicate exam_id (all copies dropped)", 2), ("no linked X-ray within ±7 days", 6)],
}


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    (d / "ecg_index.csv").write_text(ECG_CSV)
    (d / "cxr_index.csv").write_text(CXR_CSV)
    (d / "echo_index.csv").write_text(ECHO_CSV)
    return d


def _build(export: Path, out: Path | None = None, **cfg) -> "object":
    return build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", out, CohortConfig(**cfg))


def _triples(manifest: pl.DataFrame) -> list[tuple]:
    return list(manifest.select("ecg_exam_id", "cxr_exam_id", "echo_exam_id", "label", "severity",
                                "days_echo_to_cxr", "days_cxr_to_ecg").iter_rows())


def _exclusion_counts(flow: dict, table: str) -> list[tuple[str, int]]:
    return [(e["reason"], e["count"]) for e in flow["tables"][table]["exclusions"]]


# ----------------------------------------------------------------------------- linkage scenario
def test_scenario_exact_manifest_and_flow(export: Path, tmp_path: Path):
    res = _build(export, tmp_path / "out")
    m = res.manifest
    assert _triples(m) == EXPECTED_RECORDS
    assert m["record_id"].to_list()[0] == "E4|X2|H1" and m["record_id"].n_unique() == m.height
    assert m["patient_id"].to_list() == ["P1"] * 6 + ["P5"]
    # pass-through and derived columns
    assert m["age"].to_list() == [70.0] * 6 + [70.0]  # H5: born 1950-05-11, echo 2021-05-10 -> 70
    assert m["age_source"].to_list()[-1] == "birth_date"
    assert m["sex"].to_list() == ["F"] * 6 + ["M"]
    assert m["pacemaker"].to_list()[:3] == [1, 0, 0] and m["atrial_fibrillation"].to_list()[:3] == [0, 1, 0]
    assert m["fs"].to_list()[:2] == [250.0, 500.0] and m["units"].to_list()[:2] == ["mV", "uV"]
    assert m["device"].to_list()[0] == "PH" and m["view_position"].to_list()[0] == "PA"
    assert m["lvef_pct"].to_list() == [60.0] * 3 + [61.0] * 3 + [58.0]
    assert m["ecg_path"].to_list()[0] == "/data/ecg/E4.csv"  # absolute stays
    assert m["ecg_path"].to_list()[1] == str((export / "ecg" / "E1.csv").resolve())
    assert m["cxr_path"].to_list()[0] == str((export / "cxr" / "X2.png").resolve())

    flow = res.flow
    for table, expected in EXPECTED_EXCLUSIONS.items():
        assert _exclusion_counts(flow, table) == expected, table
    assert {k: (v["raw_rows"], v["valid_rows"], v["used"]) for k, v in flow["tables"].items()} == {
        "ecg": (14, 10, 4), "cxr": (9, 8, 2), "echo": (9, 8, 3)}
    assert flow["linkage"] == {
        "echoes_eligible": 5, "echoes_linked_to_cxr": 4, "cxr_linked_to_echo": 3, "echoes_with_ecg": 3,
        "candidate_links": 7, "duplicate_triples_removed": 0, "records": 7,
    }
    c = flow["cohort"]
    assert (c["records"], c["patients"], c["as_records"], c["as_patients"]) == (7, 2, 4, 2)
    assert c["severity"] == {"none": 3, "mild": 1, "moderate": 3, "severe": 0}
    check_flow(flow)

    ex = res.exclusions
    assert ex.height == sum(n for v in EXPECTED_EXCLUSIONS.values() for _, n in v)
    got = {(t, e): r for t, e, r in ex.select("table", "exam_id", "reason").iter_rows()}
    assert got[("cxr", "X3")] == "no eligible echo within ±90 days"  # 91 days
    assert got[("ecg", "E3")] == "no linked X-ray within ±7 days"  # 8 days
    assert got[("echo", "H3")] == "age < 18"
    assert got[("echo", "H4")].startswith("undeterminable")
    assert got[("echo", "H6")] == "no ECG within ±7 days of the linked X-ray"  # age known from the X-ray
    assert got[("cxr", "X7")] == "another X-ray was closer to the echo"  # the tie went to X6

    # files
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "exclusions.parquet", "flow.json", "manifest.parquet"]
    assert pl.read_parquet(out / "manifest.parquet").equals(m)
    assert json.loads((out / "flow.json").read_text()) == flow
    saved = json.loads((out / "config.json").read_text())
    assert CohortConfig.from_dict(saved) == res.config
    assert pl.read_parquet(out / "exclusions.parquet").columns[:3] == ["table", "exam_id", "patient_id"]


def test_manifest_schema_follows_data_layout(export: Path):
    m = _build(export).manifest
    core = list(MANIFEST_CORE_COLUMNS)
    assert m.columns[: len(core)] == core
    # ECG reader options present in the ECG index (fs, units; no resolution_uv) follow, then pass-through
    assert m.columns[len(core): len(core) + 2] == ["fs", "units"] and "resolution_uv" not in m.columns
    assert set(m.columns[len(core) + 2:]) == {"device", "view_position", "lvef_pct", "age_source"}
    s = m.schema
    for col in ("record_id", "patient_id", "split", "severity", "ecg_exam_id", "ecg_path", "cxr_exam_id", "cxr_path",
                "echo_exam_id", "sex"):
        assert s[col] == pl.String, col
    for col in ("ecg_datetime", "cxr_datetime", "echo_datetime"):
        assert s[col] == pl.Datetime("us"), col
    for col in ("days_echo_to_cxr", "days_cxr_to_ecg", "peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2", "age"):
        assert s[col] == pl.Float64, col
    assert s["label"].is_integer() and s["fold"].is_integer()
    assert m["fold"].null_count() == m.height
    assert set(m["split"]) <= {"train", "val", "test"}


def test_duplicate_policy_first_keeps_first_row(export: Path):
    res = _build(export, duplicate_exam_ids="first")
    assert ("E9", "X6", "H5", 1, "mild", -5.0, 1.0) in _triples(res.manifest)
    assert ("duplicate exam_id (first row kept)", 1) in _exclusion_counts(res.flow, "ecg")
    check_flow(res.flow)


def test_windows_are_configurable(export: Path):
    res = _build(export, cxr_within_days=91, ecg_within_days=8)
    t = _triples(res.manifest)
    assert ("E5", "X3", "H2", 0, "none", 91.0, 0.0) in t  # now within 91 days
    assert ("E3", "X2", "H1", 1, "moderate", 5.0, 8.0) in t  # 8 days now allowed
    check_flow(res.flow)


def test_window_basis_datetime(export: Path):
    # E2 is 7 days 9.5 hours after X2: in on calendar dates, out on exact times
    res = _build(export, window_basis="datetime")
    assert "E2" not in res.manifest["ecg_exam_id"].to_list()
    check_flow(res.flow)


def test_cxr_requires_ecg(export: Path):
    res = _build(export, cxr_requires_ecg=True)
    assert _exclusion_counts(res.flow, "echo")[-1] == ("no X-ray with an ECG within ±7 days within ±90 days", 2)
    assert _triples(res.manifest) == EXPECTED_RECORDS


def test_min_age_and_strict_labels(export: Path):
    res = _build(export, min_age=16, require_all_measurements=True)
    reasons = dict(_exclusion_counts(res.flow, "echo"))
    assert "age < 16" not in reasons  # H3 (17) now an adult
    # strict labels: H1, H5, H6 positive anyway; H2 (no Vmax), H3 (Vmax 2.0 only) and H4 (nothing)
    # are undeterminable; H7 was already out for its unknown age
    assert reasons["undeterminable label (measurements missing)"] == 3
    check_flow(res.flow)


def test_check_flow_detects_inconsistency(export: Path):
    flow = _build(export).flow
    flow["tables"]["ecg"]["exclusions"][0]["count"] += 1
    with pytest.raises(FlowError):
        check_flow(flow)


def test_format_flow_mentions_every_reason(export: Path):
    res = _build(export)
    text = format_flow(res.flow)
    for items in EXPECTED_EXCLUSIONS.values():
        for reason, _ in items:
            assert reason in text
    assert "train" in text and "records" in text


def test_random_tables_flow_adds_up():
    rng = np.random.default_rng(1)
    n_pat, n = 60, 600

    def table(kind: str, rows: int) -> pl.DataFrame:
        pid = rng.integers(0, n_pat, rows).astype(str)
        day = rng.integers(0, 400, rows)
        dt = (np.datetime64("2020-01-01") + day.astype("timedelta64[D]")).astype(str)
        d = {"patient_id": pid, "exam_id": [f"{kind}{i % (rows - 5)}" for i in range(rows)], "exam_datetime": dt}
        if kind != "echo":
            d["path"] = [f"/x/{kind}{i}" for i in range(rows)]
        else:
            d["peak_velocity_m_s"] = np.where(rng.random(rows) < 0.3, np.nan, rng.uniform(1, 4.5, rows))
            d["mean_gradient_mmhg"] = np.where(rng.random(rows) < 0.5, np.nan, rng.uniform(2, 50, rows))
            d["ava_cm2"] = np.where(rng.random(rows) < 0.5, np.nan, rng.uniform(0.6, 3, rows))
            d["age"] = rng.uniform(10, 90, rows)
        return pl.DataFrame(d)

    frames = {k: normalise_index(table(k, r), k) for k, r in (("ecg", n), ("cxr", n // 2), ("echo", n // 4))}
    for dup in ("drop", "first"):
        res = build_cohort(frames["ecg"], frames["cxr"], frames["echo"], None, CohortConfig(duplicate_exam_ids=dup, n_folds=3))
        check_flow(res.flow)
        f = res.flow
        for k in ("ecg", "cxr", "echo"):
            t = f["tables"][k]
            assert t["raw_rows"] == t["used"] + sum(e["count"] for e in t["exclusions"])
        assert res.exclusions.height == sum(sum(e["count"] for e in f["tables"][k]["exclusions"]) for k in f["tables"])
        # every record respects the windows
        m = res.manifest
        assert (m["days_echo_to_cxr"].abs() <= 90).all() and (m["days_cxr_to_ecg"].abs() <= 7).all()
        assert m.select(pl.struct("ecg_exam_id", "cxr_exam_id", "echo_exam_id").is_unique().all()).item()
        # one X-ray per echo
        assert m.group_by("echo_exam_id").agg(pl.col("cxr_exam_id").n_unique())["cxr_exam_id"].max() == 1


# ----------------------------------------------------------------------------- tables
def test_column_map_yaml_and_datetime_format(tmp_path: Path):
    (tmp_path / "ecg.csv").write_text("PID,ID,WHEN,FILE,Sex\n007,a,04/03/2019 10:15,f/a.csv,male\n")
    (tmp_path / "map.yaml").write_text(
        "ecg: {patient_id: PID, exam_id: ID, exam_datetime: WHEN, path: FILE, sex: Sex}\n"
        "datetime_format: '%d/%m/%Y %H:%M'\n"
    )
    df = load_index(tmp_path / "ecg.csv", "ecg", tmp_path / "map.yaml")
    row = df.row(0, named=True)
    assert row["patient_id"] == "007"  # ids stay strings with their leading zeros
    assert str(row["exam_datetime"]) == "2019-03-04 10:15:00"
    assert row["sex"] == "M"
    assert row["path"] == str((tmp_path / "f" / "a.csv").resolve())
    # the same map as a dict, JSON round trip
    cmap = ColumnMap.load(tmp_path / "map.yaml")
    assert ColumnMap.from_dict(json.loads(json.dumps(cmap.to_dict()))) == cmap
    with pytest.raises(ConfigError):
        ColumnMap.from_dict({"ekg": {"patient_id": "PID"}})


def test_relative_paths_resolve_against_table_folder(tmp_path: Path, monkeypatch):
    sub = tmp_path / "exports" / "site1"
    sub.mkdir(parents=True)
    (sub / "cxr_index.csv").write_text(
        "patient_id,exam_id,exam_datetime,path\n1,x1,2020-01-01,img/x1.png\n1,x2,2020-01-01,./img/x2.png\n"
        "1,x3,2020-01-01,/abs/x3.png\n1,x4,2020-01-01,s3://bucket/x4.png\n")
    monkeypatch.chdir(tmp_path)  # the working folder must not matter
    paths = load_index(Path("exports/site1/cxr_index.csv"), "cxr")["path"].to_list()
    base = sub.resolve()
    assert paths == [str(base / "img/x1.png"), str(base / "img/x2.png"), "/abs/x3.png", "s3://bucket/x4.png"]


def test_missing_columns_raise_read_error(tmp_path: Path):
    p = tmp_path / "echo_index.csv"
    p.write_text("patient_id,exam_id,exam_datetime,peak_velocity_m_s\n1,h,2020-01-01,3\n")
    with pytest.raises(ReadError) as err:
        load_index(p, "echo")
    msg = str(err.value)
    assert msg.startswith(str(p)) and "echo index" in msg
    assert "mean_gradient_mmhg" in msg and "ava_cm2" in msg
    p2 = tmp_path / "echo2.csv"
    p2.write_text("exam_id,exam_datetime,peak_velocity_m_s,mean_gradient_mmhg,ava_cm2\nh,2020-01-01,3,,\n")
    with pytest.raises(ReadError, match="patient_id \\(mapped to 'PID', not in the table\\)"):
        load_index(p2, "echo", {"echo": {"patient_id": "PID"}})
    with pytest.raises(ReadError, match="not found"):
        load_index(tmp_path / "nope.csv", "ecg")


def test_parquet_index_and_normalisation(tmp_path: Path):
    df = pl.DataFrame({
        "patient_id": [1, 2], "exam_id": [10.0, 11.0], "exam_datetime": ["2020-01-01", "2020-01-02T08:00:00"],
        "path": ["a.dat", "b.dat"], "sex": ["female", "X"], "pacemaker": ["yes", "0"], "age": ["70", "n/a"],
    })
    df.write_parquet(tmp_path / "ecg.parquet")
    out = load_index(tmp_path / "ecg.parquet", "ecg")
    assert out["patient_id"].to_list() == ["1", "2"] and out["exam_id"].to_list() == ["10", "11"]
    assert out["sex"].to_list() == ["F", None] and out["pacemaker"].to_list() == [1, 0]
    assert out["age"].to_list() == [70.0, None]
    assert out.schema["exam_datetime"] == pl.Datetime("us")


# ----------------------------------------------------------------------------- split
def _records(n_pat: int = 400, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_rec = rng.integers(1, 8, n_pat)
    pid = np.repeat([f"p{i:04d}" for i in range(n_pat)], n_rec)
    # ~10% positive patients; positives have mixed record labels
    pos = np.repeat(rng.random(n_pat) < 0.1, n_rec)
    label = np.where(pos, (rng.random(pid.size) < 0.6).astype(int), 0)
    return pl.DataFrame({"patient_id": pid, "label": label})


def test_split_by_patient_no_leak_proportions_stratified():
    recs = _records()
    out = split_records(recs, (0.7, 0.15, 0.15), seed=3)
    per_patient = out.group_by("patient_id").agg(pl.col("split").n_unique().alias("k"), pl.col("split").first())
    assert per_patient["k"].max() == 1  # no patient in two splits (mixed-label patients included)
    counts = per_patient["split"].value_counts()
    frac = {s: n / per_patient.height for s, n in counts.iter_rows()}
    assert abs(frac["train"] - 0.70) < 0.01 and abs(frac["val"] - 0.15) < 0.01 and abs(frac["test"] - 0.15) < 0.01
    pos = out.group_by("patient_id").agg((pl.col("label") == 1).any().alias("pos"), pl.col("split").first())
    n_pos = pos.filter(pl.col("pos")).height
    for s, f in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        got = pos.filter(pl.col("pos") & (pl.col("split") == s)).height
        assert abs(got - f * n_pos) <= 1, (s, got)
    assert out.height == recs.height and out["patient_id"].to_list() == recs["patient_id"].to_list()


def test_split_deterministic_by_seed_and_row_order():
    recs = _records()
    a = split_records(recs, seed=7)
    b = split_records(recs.sample(fraction=1.0, shuffle=True, seed=1), seed=7)
    key = ["patient_id", "split"]
    assert a.select(key).unique().sort(key).equals(b.select(key).unique().sort(key))
    c = split_records(recs, seed=8)
    assert not a["split"].equals(c["split"])
    with pytest.raises(ConfigError):
        split_records(recs, (0.5, 0.5, 0.5))


def test_folds_grouped_stratified_and_split_unchanged():
    recs = _records()
    plain = split_records(recs, seed=2)
    out = split_records(recs, seed=2, n_folds=5)
    assert out["split"].equals(plain["split"])  # asking for folds never moves a patient
    assert plain["fold"].null_count() == plain.height
    g = out.group_by("patient_id").agg(pl.col("fold").n_unique().alias("k"), pl.col("fold").first(),
                                       (pl.col("label") == 1).any().alias("pos"))
    assert g["k"].max() == 1 and g["fold"].null_count() == 0
    sizes = g["fold"].value_counts()["count"]
    assert sizes.max() - sizes.min() <= 1
    pos_sizes = g.filter(pl.col("pos"))["fold"].value_counts()["count"]
    assert pos_sizes.max() - pos_sizes.min() <= 1
    tv = split_records(recs, seed=2, n_folds=3, fold_scope="train_val")
    assert tv.filter(pl.col("split") == "test")["fold"].null_count() == tv.filter(pl.col("split") == "test").height
    assert tv.filter(pl.col("split") != "test")["fold"].null_count() == 0


def test_config_validation():
    with pytest.raises(ConfigError):
        CohortConfig(split_fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ConfigError):
        CohortConfig(cxr_within_days=-1)
    with pytest.raises(ConfigError):
        CohortConfig(n_folds=1)
    with pytest.raises(ConfigError):
        CohortConfig.from_dict({"cxr_window": 3})
    cfg = CohortConfig(seed=4, n_folds=5)
    assert CohortConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------------- command line
@pytest.fixture()
def cli_main():
    """The real command-line entry point."""
    return cli.main


def test_cli_build_end_to_end(export: Path, tmp_path: Path, cli_main, capsys):
    out = tmp_path / "cli_out"
    rc = cli_main(["cohort", "build", "--ecg-index", str(export / "ecg_index.csv"), "--cxr-index",
                   str(export / "cxr_index.csv"), "--echo-index", str(export / "echo_index.csv"),
                   "--out", str(out), "--seed", "1", "--folds", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Cohort flow" in text and "no X-ray within ±90 days" in text and str(out / "manifest.parquet") in text
    m = pl.read_parquet(out / "manifest.parquet")
    assert _triples(m) == EXPECTED_RECORDS
    assert m["fold"].null_count() == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["seed"] == 1 and cfg["config"]["n_folds"] == 2


def test_cli_export_folder_flags_and_json(export: Path, tmp_path: Path, cli_main, capsys):
    rc = cli_main(["cohort", "build", "--export", str(export), "--out", str(tmp_path / "o"), "--json",
                   "--cxr-within-days", "91", "--ecg-within-days", "8", "--min-age", "16", "--as-peak-velocity", "3.5"])
    assert rc == 0
    flow = json.loads(capsys.readouterr().out)
    check_flow(flow)
    m = pl.read_parquet(tmp_path / "o" / "manifest.parquet")
    assert {"H2", "H1"} <= set(m["echo_exam_id"])
    assert m.filter(pl.col("echo_exam_id") == "H1")["label"].unique().to_list() == [0]  # 3.2 < 3.5 m/s
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())["config"]
    assert cfg["criteria"]["peak_velocity_m_s"] == 3.5 and cfg["min_age"] == 16


def test_cli_errors_are_one_line(export: Path, tmp_path: Path, cli_main, capsys):
    (tmp_path / "bad.csv").write_text("patient_id,exam_id\n1,2\n")
    rc = cli_main(["cohort", "build", "--export", str(export), "--ecg-index", str(tmp_path / "bad.csv"),
                   "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("cardiofusion: error: ") and "exam_datetime" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["cohort", "build", "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["cohort", "build", "--export", str(export), "--out", str(tmp_path / "o"), "--split", "0.5", "0.5", "0.5"]) == 2
