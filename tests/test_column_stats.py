"""Summary statistics kept up to date at ingestion: exact where they can be, never re-reading history."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import ingestion
from app import create_app
from churnlib import ingested
from helpers import SAMPLE_HEADER, base_config, batch, csv_text, make_project


def statistics(project):
    return ingested.ingested_statistics(project.ingested)


def test_the_udacity_course_figures_come_out_as_the_course_gives_them(tmp_path, udacity_course):
    project = make_project(tmp_path / "p", sources=())
    for name in ("dataset1.csv", "dataset2.csv"):
        shutil.copy(udacity_course / "practicedata" / name, project.source / name)
    ingestion.run_ingestion(project.config())
    stats = statistics(project)
    assert stats["rows"] == 26 and stats["source"] == "column_stats.json"
    columns = ("lastmonth_activity", "lastyear_activity", "number_of_employees")
    figures = {key: [round(stats["summary_statistics"][c][key], 3) for c in columns] for key in ("mean", "median", "std")}
    assert figures == {"mean": [165.654, 1502.923, 26.885], "median": [73, 955, 14], "std": [284.033, 2192.645, 31.354]}


def test_statistics_kept_file_by_file_equal_those_of_the_whole_data(tmp_path):
    header = SAMPLE_HEADER
    rng = np.random.default_rng(3)
    project = make_project(tmp_path / "p", sources=())
    for index in range(4):
        rows = []
        for row in range(120):
            missing = rng.random() < 0.1
            rows.append([f"c{index}-{row}", "" if missing else round(float(rng.normal(50, 20)), 2),
                         int(rng.integers(0, 3000)), int(rng.integers(1, 40)),
                         "" if rng.random() < 0.05 else rng.choice(["basic", "pro", "team"]), int(rng.random() < 0.3)])
        project.add_source(f"part{index}.csv", csv_text(header, rows))
        ingestion.run_ingestion(project.config())
    frame = pd.read_csv(project.ingested / "finaldata.csv", keep_default_na=False, na_values={"lastmonth_activity": [""]})
    stats = statistics(project)
    assert stats["rows"] == len(frame) == 480
    for column in ("lastmonth_activity", "lastyear_activity", "number_of_employees"):
        got = stats["summary_statistics"][column]
        assert got["mean"] == pytest.approx(frame[column].mean(), rel=1e-12)
        assert got["std"] == pytest.approx(frame[column].std(), rel=1e-12)
        assert got["median"] == frame[column].median() and got["median_exact"]
        assert got["count"] == frame[column].notna().sum()
        assert (got["min"], got["max"]) == (frame[column].min(), frame[column].max())
    assert stats["missing_data"]["lastmonth_activity"] == pytest.approx(frame["lastmonth_activity"].isna().mean())
    plans = frame["plan"].replace("", "(missing)")
    expected = {name: (len(group), group["exited"].mean()) for name, group in frame.assign(plan=plans).groupby("plan")}
    got = {c["value"]: (c["count"], c["churn_rate"]) for c in stats["categorical"]["plan"]["categories"]}
    assert got.keys() == expected.keys()
    for name, (count, rate) in expected.items():
        assert got[name][0] == count and got[name][1] == pytest.approx(rate)
    assert stats["target"]["counts"]["1"] == frame["exited"].sum()


@pytest.mark.parametrize("distribution", ["lognormal", "normal", "integers"])
def test_beyond_a_few_thousand_distinct_values_the_median_is_within_one_percent(tmp_path, distribution):
    rng = np.random.default_rng(11)
    draws = {"lognormal": lambda n: rng.lognormal(3, 2, n), "normal": lambda n: rng.normal(-5, 40, n),
             "integers": lambda n: rng.integers(1, 100_000, n).astype(float)}[distribution]
    header = ["lastmonth_activity", "lastyear_activity", "number_of_employees", "plan", "exited"]
    project = make_project(tmp_path / "p", sources=(), config=base_config(schema={"id_columns": []}))
    for part in range(3):
        values = draws(3000)
        rows = [[repr(float(v)), 1, 1, "basic", int(i % 2)] for i, v in enumerate(values)]
        project.add_source(f"part{part}.csv", csv_text(header, rows))
        ingestion.run_ingestion(project.config())
    frame = pd.read_csv(project.ingested / "finaldata.csv")
    got = statistics(project)["summary_statistics"]["lastmonth_activity"]
    assert not got["median_exact"]
    true_median = frame["lastmonth_activity"].median()
    assert abs(got["median"] - true_median) <= 0.01 * abs(true_median) + 1e-12
    assert got["mean"] == pytest.approx(frame["lastmonth_activity"].mean(), rel=1e-9)
    stored = json.loads((project.ingested / "column_stats.json").read_text())
    assert stored["numeric"]["lastmonth_activity"]["values"] is None  # bounded: a sketch, not 9,000 values


def test_statistics_out_of_step_with_the_record_are_rebuilt_by_the_next_ingest(tmp_path):
    project = make_project(tmp_path / "p")
    ingestion.run_ingestion(project.config())
    before = statistics(project)
    # A crash after the statistics were written and before the record committed their rows:
    stored = json.loads((project.ingested / "column_stats.json").read_text())
    stored["data_version"] += 1
    stored["rows"] += 300
    (project.ingested / "column_stats.json").write_text(json.dumps(stored))
    assert statistics(project)["source"] == "data"  # never served: computed from the committed data
    rebuilt = statistics(project)["summary_statistics"]
    for column, figures in before["summary_statistics"].items():
        assert rebuilt[column] == pytest.approx(figures, rel=1e-12)  # the same, up to the order of additions
    project.add_source("more.csv", batch(5))
    ingestion.run_ingestion(project.config())
    after = statistics(project)
    assert after["source"] == "column_stats.json" and after["rows"] == before["rows"] + 300
    frame = pd.read_csv(project.ingested / "finaldata.csv")
    assert after["summary_statistics"]["lastyear_activity"]["mean"] == pytest.approx(frame["lastyear_activity"].mean())


def test_the_api_serves_statistics_without_reading_the_ingested_data(deployed):
    expected = statistics(deployed)
    # finaldata.csv garbled: an API that read it would fail or answer differently.
    data = deployed.ingested / "finaldata.csv"
    data.write_bytes(b"\x00" * data.stat().st_size)
    client = create_app(deployed.config_path).test_client()
    body = client.get("/summarystats").json
    assert body["columns"] == json.loads(json.dumps(expected["summary_statistics"]))
    plan = {c["value"]: c for c in body["categorical"]["plan"]["categories"]}
    assert set(plan) >= {"basic", "standard"} and all(0 <= c["churn_rate"] <= 1 for c in plan.values())
    assert sum(c["count"] for c in plan.values()) == body["rows"] == 790
    assert body["target"]["counts"]["0"] + body["target"]["counts"]["1"] == 790
    diagnostics = client.get("/diagnostics").json
    assert diagnostics["missing_data"]["number_of_employees"] > 0
