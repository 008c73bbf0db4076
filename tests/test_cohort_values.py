"""Strict numbers in the cohort build: decimal comma, units, plausibility ranges, bad dates (issue 13).

Every probe is an AS echo whose *only* abnormal measurement is the peak velocity (gradient 10 mmHg,
AVA 2.0 cm2 are normal): a velocity that is read wrongly must exclude the echo with a reason, never
turn it into a "no AS" record.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cardiofusion import cli
from cardiofusion.cohort import CohortConfig, build_cohort, check_flow, format_flow, load_index, normalise_index
from cardiofusion.cohort.labels import as_label
from cardiofusion.errors import ConfigError, ReadError

N_GOOD = 12  # well-formed echoes around the probes (a column that is mostly invalid is an error instead)


def _write_export(d: Path, probes: list[dict[str, str]], *, dates: list[str] | None = None) -> Path:
    """One echo, X-ray and ECG per patient on the same day; ``probes`` override echo cells."""
    d.mkdir(parents=True, exist_ok=True)
    good = [{"peak_velocity_m_s": "1.2", "age": "70"} for _ in range(N_GOOD)]
    rows = probes + good
    n = len(rows)
    dates = dates or [f"2020-01-{1 + i % 28:02d}" for i in range(n)]
    ecg = ["patient_id,exam_id,exam_datetime,path"] + [f"P{i},E{i},{dates[i]},ecg/E{i}.csv" for i in range(n)]
    cxr = ["patient_id,exam_id,exam_datetime,path"] + [f"P{i},X{i},{dates[i]},cxr/X{i}.png" for i in range(n)]
    cols = ["peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2", "age", "lvef_pct"]
    echo = ["patient_id,exam_id,exam_datetime," + ",".join(cols)]
    for i, r in enumerate(rows):
        cells = {"mean_gradient_mmhg": "10", "ava_cm2": "2.0", "age": "70", "lvef_pct": "60", **r}
        echo.append(f"P{i},H{i},{dates[i]}," + ",".join(f'"{cells.get(c, "")}"' for c in cols))
    (d / "ecg_index.csv").write_text("\n".join(ecg) + "\n", encoding="utf-8")
    (d / "cxr_index.csv").write_text("\n".join(cxr) + "\n", encoding="utf-8")
    (d / "echo_index.csv").write_text("\n".join(echo) + "\n", encoding="utf-8")
    return d


def _build(d: Path, out: Path | None = None, **cfg):
    return build_cohort(d / "ecg_index.csv", d / "cxr_index.csv", d / "echo_index.csv", out, CohortConfig(**cfg))


def _echo(res, exam_id: str) -> dict:
    """The echo's fate: its manifest row (label, value) or its exclusion."""
    m = res.manifest.filter(pl.col("echo_exam_id") == exam_id)
    if m.height:
        return {"label": m["label"][0], "severity": m["severity"][0], "v": m["peak_velocity_m_s"][0], "age": m["age"][0]}
    ex = res.exclusions.filter((pl.col("table") == "echo") & (pl.col("exam_id") == exam_id))
    assert ex.height == 1, exam_id
    return ex.row(0, named=True)


V_RANGE = "implausible peak_velocity_m_s (outside 0.5-7 m/s)"


@pytest.mark.parametrize(
    "cell, cfg, expected",
    [
        ("2.5 m/s", {}, {"label": 1, "v": 2.5}),                # unit suffix understood
        ("2.59m/s", {}, {"label": 1, "v": 2.59}),               # without the space
        ("250 cm/s", {}, {"label": 1, "v": 2.5}),               # converted to m/s
        ("3.1 M/S", {}, {"label": 1, "v": 3.1}),                # case-insensitive
        ("3,14", {}, {"reason": "unparseable peak_velocity_m_s"}),
        ("3,14", {"decimal_comma": ("peak_velocity_m_s",)}, {"label": 1, "v": 3.14}),
        ("0", {}, {"reason": V_RANGE}),
        ("-2.6", {}, {"reason": V_RANGE}),
        ("265", {}, {"reason": V_RANGE}),                       # cm/s without a unit
        ("31", {}, {"reason": V_RANGE}),
        ("25 mph", {}, {"reason": "unknown unit in peak_velocity_m_s (accepted: m/s, cm/s)"}),
        ("2.5.1", {}, {"reason": "unparseable peak_velocity_m_s"}),
        ("inf", {}, {"reason": "unparseable peak_velocity_m_s"}),
        ("1e999", {}, {"reason": "implausible peak_velocity_m_s (not finite)"}),
    ],
)
def test_probe_velocity_never_flips_an_as_echo(tmp_path: Path, cell, cfg, expected):
    d = _write_export(tmp_path, [{"peak_velocity_m_s": cell}])
    if cfg.get("decimal_comma"):  # the whole column is then written with commas
        (d / "echo_index.csv").write_text((d / "echo_index.csv").read_text().replace('"1.2"', '"1,2"'))
    res = _build(d, **cfg)
    got = _echo(res, "H0")
    if "reason" in expected:
        assert got["reason"] == expected["reason"]
        assert (got["column"], got["raw_value"]) == ("peak_velocity_m_s", cell)
        assert got["file"] == str((tmp_path / "echo_index.csv").resolve()) and got["row"] == 0
        assert res.manifest.filter(pl.col("echo_exam_id") == "H0").height == 0
    else:
        assert got["label"] == expected["label"] and got["v"] == pytest.approx(expected["v"], abs=1e-12)
    check_flow(res.flow)


def test_as_echoes_with_only_a_velocity_are_never_relabelled_no_as(tmp_path: Path):
    """The probe: 7 AS echoes whose only positive measurement is a badly written velocity."""
    cells = ["2.5 m/s", "3,14", "2.59m/s", "0", "-3", "265", "31"]
    res = _build(_write_export(tmp_path, [{"peak_velocity_m_s": c} for c in cells]))
    fates = [_echo(res, f"H{i}") for i in range(len(cells))]
    assert all(f.get("label") != 0 for f in fates)
    assert [f["label"] for f in fates if "label" in f] == [1, 1]  # 2.5 m/s, 2.59m/s
    # the good echoes are all there, labelled 0
    assert res.manifest.filter(pl.col("echo_exam_id").is_in([f"H{i}" for i in range(7, 7 + N_GOOD)]))["label"].to_list() == [0] * N_GOOD


def test_age_200_and_other_columns(tmp_path: Path):
    probes = [
        {"age": "200"},
        {"age": "85 years", "peak_velocity_m_s": "4.2"},
        {"mean_gradient_mmhg": "40 mmHg", "peak_velocity_m_s": ""},
        {"ava_cm2": "0.8 cm²", "peak_velocity_m_s": ""},
        {"ava_cm2": "0.8cm2", "peak_velocity_m_s": ""},
        {"ava_cm2": "0", "peak_velocity_m_s": ""},
        {"lvef_pct": "0.55"},                               # a fraction, not a percentage
        {"mean_gradient_mmhg": "0"},                         # 0 mmHg is a value (no gradient)
        {"mean_gradient_mmhg": "-5"},
        {"peak_velocity_m_s": "NA"},                         # an explicit missing marker is missing, not invalid
    ]
    res = _build(_write_export(tmp_path, probes))
    f = [_echo(res, f"H{i}") for i in range(len(probes))]
    assert f[0]["reason"] == "implausible age (outside 0-120 years)" and f[0]["raw_value"] == "200"
    assert (f[1]["label"], f[1]["severity"], f[1]["age"]) == (1, "severe", 85.0)
    assert (f[2]["label"], f[2]["severity"]) == (1, "severe")
    assert (f[3]["label"], f[3]["severity"]) == (1, "severe") and (f[4]["label"], f[4]["severity"]) == (1, "severe")
    assert f[5]["reason"] == "implausible ava_cm2 (outside 0.2-6 cm2)"
    assert f[6]["reason"] == "implausible lvef_pct (outside 5-90 %)" and f[6]["raw_value"] == "0.55"
    assert f[7]["label"] == 0
    assert f[8]["reason"] == "implausible mean_gradient_mmhg (outside 0-150 mmHg)"
    assert f[9]["label"] == 0  # gradient 10 and AVA 2.0 are normal
    check_flow(res.flow)


def test_flow_counts_and_exclusions_file(tmp_path: Path):
    probes = [{"peak_velocity_m_s": c} for c in ("3,14", "x", "0", "265", "31", "-1")] + [{"age": "200"}]
    out = tmp_path / "out"
    res = _build(_write_export(tmp_path / "export", probes), out)
    echo = res.flow["tables"]["echo"]
    counts = {e["reason"]: e["count"] for e in echo["exclusions"]}
    assert counts["unparseable peak_velocity_m_s"] == 2
    assert counts[V_RANGE] == 4
    assert counts["implausible age (outside 0-120 years)"] == 1
    assert echo["raw_rows"] == len(probes) + N_GOOD and echo["valid_rows"] == N_GOOD
    check_flow(res.flow)
    text = format_flow(res.flow)
    assert "unparseable peak_velocity_m_s" in text and V_RANGE in text and "implausible age" in text

    ex = pl.read_parquet(out / "exclusions.parquet").filter(pl.col("table") == "echo").sort("row")
    assert ex.columns[:3] == ["table", "exam_id", "patient_id"]
    assert set(ex.columns) >= {"row", "file", "column", "raw_value", "reason"}
    assert ex.select("row", "column", "raw_value", "reason").rows() == [
        (0, "peak_velocity_m_s", "3,14", "unparseable peak_velocity_m_s"),
        (1, "peak_velocity_m_s", "x", "unparseable peak_velocity_m_s"),
        (2, "peak_velocity_m_s", "0", V_RANGE),
        (3, "peak_velocity_m_s", "265", V_RANGE),
        (4, "peak_velocity_m_s", "31", V_RANGE),
        (5, "peak_velocity_m_s", "-1", V_RANGE),
        (6, "age", "200", "implausible age (outside 0-120 years)"),
    ]
    assert set(ex["file"]) == {str((tmp_path / "export" / "echo_index.csv").resolve())}
    # other exclusions carry no column / raw value
    other = pl.read_parquet(out / "exclusions.parquet").filter(pl.col("table") != "echo")
    assert other["column"].null_count() == other.height


def test_plausible_ranges_configurable_and_saved(tmp_path: Path):
    from cardiofusion.cohort.values import DEFAULT_RANGES

    d = _write_export(tmp_path / "export", [{"peak_velocity_m_s": "265"}, {"age": "200"}])
    res = _build(d, tmp_path / "out", plausible_ranges={"peak_velocity_m_s": [0.5, 300], "age": None})
    assert _echo(res, "H0")["label"] == 1 and _echo(res, "H1")["age"] == 200.0
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert saved["plausible_ranges"]["peak_velocity_m_s"] == [0.5, 300.0] and saved["plausible_ranges"]["age"] is None
    assert saved["plausible_ranges"]["ava_cm2"] == list(DEFAULT_RANGES["ava_cm2"])
    assert CohortConfig.from_dict(saved) == res.config
    for bad in ({"peak_velocity": [0, 1]}, {"age": [5, 1]}, {"age": [0, float("inf")]}, {"age": "0-120"}):
        with pytest.raises(ConfigError):
            CohortConfig(plausible_ranges=bad)
    with pytest.raises(ConfigError, match="not a numeric column"):
        CohortConfig(decimal_comma=("patient_id",))


def test_decimal_comma_column_refuses_dots_and_other_columns_keep_dots(tmp_path: Path):
    probes = [{"ava_cm2": "0,8", "peak_velocity_m_s": ""}, {"ava_cm2": "0.8", "peak_velocity_m_s": ""},
              {"ava_cm2": "0,8", "peak_velocity_m_s": "1.5"}]
    d = _write_export(tmp_path, probes)
    # the filler rows write "2.0": in a decimal-comma column most values are then invalid -> a read error
    with pytest.raises(ReadError, match="ava_cm2"):
        _build(d, decimal_comma=("ava_cm2",))
    text = (d / "echo_index.csv").read_text().replace('"2.0"', '"2,0"')
    (d / "echo_index.csv").write_text(text)
    res = _build(d, decimal_comma=("ava_cm2",))
    assert (_echo(res, "H0")["label"], _echo(res, "H0")["severity"]) == (1, "severe")
    assert _echo(res, "H1")["reason"] == "unparseable ava_cm2"
    assert _echo(res, "H2")["label"] == 1  # velocity 1.5 (dot, other column) fine, AVA 0.8 -> AS


def test_mostly_invalid_number_column_is_an_error(tmp_path: Path):
    d = _write_export(tmp_path, [])
    text = (d / "echo_index.csv").read_text().replace('"1.2"', '"1,2"')
    (d / "echo_index.csv").write_text(text)
    with pytest.raises(ReadError) as err:
        _build(d)
    msg = str(err.value)
    assert msg.startswith(str(d / "echo_index.csv")) and "'peak_velocity_m_s'" in msg
    assert f"{N_GOOD} of {N_GOOD}" in msg and "decimal_comma" in msg
    assert _build(d, decimal_comma=["peak_velocity_m_s"]).manifest.height == N_GOOD
    # every velocity in cm/s without a unit: implausible throughout -> an error naming the unit
    (d / "echo_index.csv").write_text(text.replace('"1,2"', '"120"'))
    with pytest.raises(ReadError, match="must hold m/s"):
        _build(d)


def test_numeric_parquet_and_frames_are_range_checked(tmp_path: Path):
    d = _write_export(tmp_path, [])
    echo = pl.read_csv(d / "echo_index.csv", infer_schema=False).with_columns(
        pl.col("peak_velocity_m_s").cast(pl.Float64), pl.col("age").cast(pl.Int64))
    echo = echo.with_columns(
        pl.Series("peak_velocity_m_s", [265.0, 0.0, float("nan")] + [1.2] * (N_GOOD - 3)),
        pl.Series("age", [70, 70, 70, 200] + [70] * (N_GOOD - 4)))
    echo.write_parquet(tmp_path / "echo.parquet")
    res = build_cohort(d / "ecg_index.csv", d / "cxr_index.csv", tmp_path / "echo.parquet", None, CohortConfig())
    assert _echo(res, "H0")["reason"] == V_RANGE and _echo(res, "H0")["raw_value"] == "265.0"
    assert _echo(res, "H1")["reason"] == V_RANGE
    assert _echo(res, "H2")["label"] == 0  # NaN in a float column is missing
    assert _echo(res, "H3")["reason"].startswith("implausible age")
    # a table normalised first keeps its invalid cells when built again
    norm = normalise_index(echo, "echo")
    again = build_cohort(d / "ecg_index.csv", d / "cxr_index.csv", norm, None, CohortConfig())
    assert _echo(again, "H0")["reason"] == V_RANGE and _echo(again, "H0")["raw_value"] == "265.0"


def test_ecg_reader_options_are_strict(tmp_path: Path):
    d = _write_export(tmp_path, [])
    lines = (d / "ecg_index.csv").read_text().splitlines()
    fs = ["500 Hz", "0.5 kHz", "five hundred"] + ["500"] * (len(lines) - 4)
    (d / "ecg_index.csv").write_text("\n".join([lines[0] + ",fs"] + [f"{ln},{f}" for ln, f in zip(lines[1:], fs)]) + "\n")
    ecg = load_index(d / "ecg_index.csv", "ecg")
    assert ecg["fs"].to_list()[:3] == [500.0, 500.0, None]
    res = _build(d)
    ex = res.exclusions.filter(pl.col("table") == "ecg").row(0, named=True)
    assert (ex["exam_id"], ex["reason"], ex["raw_value"]) == ("E2", "unparseable fs", "five hundred")


def test_day_first_dates_are_an_error_naming_file_and_column(tmp_path: Path):
    n = 3 + N_GOOD
    dates = [f"{1 + i % 28:02d}/01/2020" for i in range(n)]
    d = _write_export(tmp_path, [], dates=dates[:N_GOOD])
    with pytest.raises(ReadError) as err:
        _build(d)
    msg = str(err.value)
    assert msg.startswith(str(d / "ecg_index.csv")) and "'exam_datetime'" in msg and "datetime_format" in msg
    assert f"{N_GOOD} of {N_GOOD} non-empty values are invalid" in msg and "'01/01/2020'" in msg
    # the same files with the layout given: a full cohort
    res = build_cohort(d / "ecg_index.csv", d / "cxr_index.csv", d / "echo_index.csv", None, CohortConfig(),
                       column_map={"datetime_format": "%d/%m/%Y"})
    assert res.manifest.height == N_GOOD


def test_a_few_bad_dates_are_exclusions(tmp_path: Path):
    dates = [f"2020-01-{1 + i:02d}" for i in range(N_GOOD + 1)]
    dates[0] = "13/01/2020"
    res = _build(_write_export(tmp_path, [{"peak_velocity_m_s": "3.0"}], dates=dates))
    ex = res.exclusions.filter((pl.col("table") == "echo") & (pl.col("exam_id") == "H0")).row(0, named=True)
    assert (ex["reason"], ex["column"], ex["raw_value"]) == ("unparseable exam_datetime", "exam_datetime", "13/01/2020")
    check_flow(res.flow)


def test_cli_one_line_error_and_exit_status(tmp_path: Path, capsys):
    d = _write_export(tmp_path / "export", [], dates=[f"{1 + i:02d}/02/2020" for i in range(N_GOOD)])
    rc = cli.main(["cohort", "build", "--export", str(d), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cardiofusion: error: ")
    assert str(d / "ecg_index.csv") in err and "exam_datetime" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "manifest.parquet").exists()


def test_cli_decimal_comma_flag(tmp_path: Path, capsys):
    d = _write_export(tmp_path / "export", [{"peak_velocity_m_s": "3,14"}])
    text = (d / "echo_index.csv").read_text().replace('"1.2"', '"1,2"')
    (d / "echo_index.csv").write_text(text)
    out = tmp_path / "o"
    assert cli.main(["cohort", "build", "--export", str(d), "--out", str(out), "--decimal-comma", "peak_velocity_m_s",
                     "--json"]) == 0
    flow = json.loads(capsys.readouterr().out)
    assert flow["tables"]["echo"]["exclusions"] == []
    m = pl.read_parquet(out / "manifest.parquet").filter(pl.col("echo_exam_id") == "H0")
    assert (m["label"][0], m["peak_velocity_m_s"][0]) == (1, 3.14)
    assert json.loads((out / "config.json").read_text())["config"]["decimal_comma"] == ["peak_velocity_m_s"]
    assert cli.main(["cohort", "build", "--export", str(d), "--out", str(out), "--decimal-comma", "nope"]) == 2
    assert "decimal_comma" in capsys.readouterr().err


def test_label_api_zero_gradient_is_a_value_other_zeros_are_not():
    assert as_label(mean_gradient_mmhg=0.0) == 0.0
    nan = float("nan")
    got = as_label(peak_velocity_m_s=[0.0, -1.0], ava_cm2=[nan, 0.0])
    assert all(x != x for x in got)  # undeterminable, never "no AS"


def test_unparseable_birth_date_is_an_exclusion_not_an_unknown_age(tmp_path: Path):
    d = _write_export(tmp_path, [{"age": ""}, {"age": ""}])
    text = (d / "echo_index.csv").read_text().splitlines()
    births = ["1950-02-30", "1950-02-01"] + ["1950-01-01"] * N_GOOD  # 30 February does not exist
    (d / "echo_index.csv").write_text("\n".join([text[0] + ",birth_date"] + [f"{ln},{b}" for ln, b in zip(text[1:], births)]) + "\n")
    res = _build(d)
    ex = _echo(res, "H0")
    assert (ex["reason"], ex["column"], ex["raw_value"]) == ("unparseable birth_date", "birth_date", "1950-02-30")
    assert _echo(res, "H1")["age"] == 69.0
