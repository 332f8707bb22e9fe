"""Risk lists: customer files dropped into scoringdata/ become ranked lists with reasons in predictions/."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import scoring
from churnlib.dataset import FrozenSchema
from churnlib.modelstore import load_deployed
from churnlib.pipeline import batch_from_frame, checked_predictor, pipeline_log_odds, reasons_gap
from helpers import ROOT, SAMPLE_LATER, SAMPLE_SOURCE, SAMPLE_TEST, base_config, csv_text, make_project, run_script

CUSTOMERS = ROOT / "samples" / "customers" / "customers.csv"
CUSTOMER_HEADER = ["corporation", "lastmonth_activity", "lastyear_activity", "number_of_employees", "plan"]


def drop_customers(project, name="customers.csv", content=None):
    folder = project.root / "scoringdata"
    folder.mkdir(exist_ok=True)
    path = folder / name
    if content is None:
        shutil.copy(CUSTOMERS, path)
    else:
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read_list(project, name="customers"):
    with open(project.root / "predictions" / f"{name}.risk.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_customer_file_dropped_in_becomes_a_ranked_list_on_the_next_tick(deployed):
    drop_customers(deployed)
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "nothing_new"
    [scored] = run["scoring"]["files"]
    release = deployed.pointer()["current"]
    assert scored["name"] == "customers.csv" and scored["rows"] == 500 and scored["release_id"] == release
    assert scored["list"] == "predictions/customers.risk.csv"
    assert set(scored["estimate"]) >= {"f1", "f1_ci", "precision", "recall"}
    rows = read_list(deployed)
    assert list(rows[0]) == ["rank", "corporation", "input_row", "churn_probability", "contact", "reason_1",
                             "reason_2", "reason_3", "release_id", "scored_at"]
    assert [int(r["rank"]) for r in rows] == list(range(1, 501))
    probabilities = [float(r["churn_probability"]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {r["release_id"] for r in rows} == {release}
    # Every customer once, with the id and row of the input file.
    source = pd.read_csv(CUSTOMERS, dtype=str, keep_default_na=False)
    assert sorted(int(r["input_row"]) for r in rows) == list(range(1, 501))
    assert all(source["corporation"][int(r["input_row"]) - 1] == r["corporation"] for r in rows)
    # Without an outreach section, the customers to call are those predicted to churn.
    assert all((r["contact"] == "yes") == (float(r["churn_probability"]) > 0.5) for r in rows)
    assert scored["to_contact"] == sum(r["contact"] == "yes" for r in rows)
    summary = json.loads((deployed.root / "predictions" / "customers.risk.json").read_text())
    assert summary["unseen_categories"] == {"plan": {"enterprise": 3}}
    assert "scored customers.csv: 500 rows" in deployed.log("scoring")
    assert "plan 'enterprise' (3)" in deployed.log("scoring")


def test_the_list_holds_the_probabilities_the_model_gives_and_reasons_in_words(deployed):
    drop_customers(deployed)
    assert deployed.tick() == 0
    rows = read_list(deployed)
    model = load_deployed(deployed.deployment)
    frame = pd.read_csv(CUSTOMERS)
    expected = model.pipeline.predict_proba(frame[list(model.metadata["schema"]["feature_columns"])])[:, 1]
    for row in rows[:50] + rows[-50:]:
        assert float(row["churn_probability"]) == pytest.approx(expected[int(row["input_row"]) - 1], abs=5e-7)
    first = rows[0]
    for column in ("reason_1", "reason_2", "reason_3"):
        feature, rest = first[column].split(" = ", 1)
        assert feature in CUSTOMER_HEADER[1:]
        assert rest.endswith(")") and (" (raises risk, +" in rest or " (lowers risk, -" in rest)
    sizes = [abs(float(first[c].rsplit(", ", 1)[1].rstrip(")"))) for c in ("reason_1", "reason_2", "reason_3")]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_reasons_plus_the_base_value_equal_the_log_odds_on_whole_files(tmp_path, algorithm):
    project = make_project(tmp_path / algorithm, config=base_config(model={"algorithm": algorithm}))
    assert project.tick() == 0
    model = load_deployed(project.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    predictor = checked_predictor(model, schema)
    for path in (CUSTOMERS, SAMPLE_TEST / "testdata.csv", SAMPLE_LATER / "dataset3.csv"):
        frame = pd.read_csv(path, dtype={"plan": object})
        contributions = predictor.explain(batch_from_frame(frame, schema))
        log_odds = pipeline_log_odds(model.pipeline, frame, schema)
        probabilities = model.pipeline.predict_proba(frame[list(schema.feature_columns)])[:, 1]
        assert contributions.values.shape == (len(frame), 4)
        if algorithm == "logistic_regression":
            # float64 throughout: exact to rounding.
            assert np.max(np.abs(contributions.log_odds - log_odds)) <= 1e-9
        else:
            # xgboost computes its log-odds and its tree SHAP values in float32: exact to that
            # rounding, relative to the size of the terms (measured: under half the allowance).
            assert np.max(reasons_gap(contributions, log_odds)) <= 1.0
            assert np.max(np.abs(contributions.log_odds - log_odds)) <= 1e-5
        assert np.max(np.abs(1 / (1 + np.exp(-contributions.log_odds)) - probabilities)) <= 2e-6


def test_ids_keep_the_files_own_spelling_and_the_input_is_never_modified(deployed):
    text = CUSTOMERS.read_text().replace("corporation,", " CorpoRation ,", 1).replace("plan\n", "PLAN,Exited\n", 1)
    lines = text.splitlines()
    text = "\n".join([lines[0], *[line + ",1" for line in lines[1:]]]) + "\n"  # a target column: ignored
    path = drop_customers(deployed, "Customers 2026.CSV", text)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert deployed.tick() == 0
    rows = read_list(deployed, "Customers 2026")
    assert list(rows[0])[:2] == ["rank", "CorpoRation"]  # as spelled, blanks around it aside
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    summary = json.loads((deployed.root / "predictions" / "Customers 2026.risk.json").read_text())
    assert summary["ignored_columns"] == ["exited"]


def test_an_unchanged_file_is_scored_once_and_the_idle_tick_imports_nothing_heavy(deployed):
    drop_customers(deployed)
    assert deployed.tick() == 0 and deployed.last_run()["scoring"]["files"]
    listed = (deployed.root / "predictions" / "customers.risk.csv").stat().st_mtime_ns
    code = (
        "import sys, fullprocess\n"
        f"status = fullprocess.main(['--config', {str(deployed.config_path)!r}, '--no-api'])\n"
        "print(sorted(m for m in ('pandas', 'sklearn', 'xgboost', 'scipy', 'numpy') if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    run = deployed.last_run()
    assert run["decision"] == "nothing_new" and "scoring" not in run
    assert (deployed.root / "predictions" / "customers.risk.csv").stat().st_mtime_ns == listed


def test_a_changed_file_is_scored_again(deployed):
    path = drop_customers(deployed)
    assert deployed.tick() == 0
    path.write_text(csv_text(CUSTOMER_HEADER, [["zz", 1, 10, 3, "basic"], ["yy", 900, 9000, 50, "premium"]]))
    assert deployed.tick() == 0
    assert deployed.last_run()["scoring"]["files"][0]["rows"] == 2
    assert [r["corporation"] for r in read_list(deployed)] == ["zz", "yy"]


BAD_FILES = [
    ("empty.csv", b"", "empty file"),
    ("header.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\n", "header only"),
    ("nofeature.csv", b"corporation,lastmonth_activity,plan\na,1,basic\n", "feature column(s) missing: lastyear_activity"),
    ("words.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\na,1,2,3,basic\n"
                  b"b,lots,2,3,basic\n", "column 'lastmonth_activity': 1 value(s) are not numbers (row 2: 'lots')"),
    ("utf16.csv", "corporation,plan\n".encode("utf-16"), "UTF-16 text"),
    ("binary.csv", b"corporation\x00,plan\n", "binary data (a NUL byte on line 1"),
    ("latin1.csv", "corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\ncafé,1,2,3,basic\n"
                   .encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 2"),
    ("twice.csv", b"plan,lastmonth_activity,lastyear_activity,number_of_employees,PLAN\nbasic,1,2,3,basic\n",
     "duplicate column name 'plan'"),
    ("ragged.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\na,1,2,3,basic,x\n",
     "not a well-formed CSV file"),
    ("semicolon.csv", b"corporation;lastmonth_activity;plan\na;1;basic\n", "feature column(s) missing"),
    ("infinite.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\na,inf,2,3,basic\n",
     "value(s) are infinite"),
    ("hugecell.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\n"
                     + b"a" * 20_000 + b",1,2,3,basic\n", "a value of 20,000 characters"),
]


@pytest.mark.parametrize("name, content, reason", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_customer_file_is_rejected_with_its_reason_and_the_others_are_scored(deployed, name, content, reason):
    drop_customers(deployed)
    drop_customers(deployed, name, content)
    assert deployed.tick() == 0
    run = deployed.last_run()
    [rejected] = run["scoring"]["rejected"]
    assert rejected["name"] == name and reason in rejected["reason"], rejected
    assert [f["name"] for f in run["scoring"]["files"]] == ["customers.csv"]
    assert f"rejected {name}: " in deployed.log("scoring")
    assert not (deployed.root / "predictions" / (name[:-4] + ".risk.csv")).exists()
    # Not read again until it changes.
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()


def test_a_rejected_file_is_scored_once_fixed(deployed):
    path = drop_customers(deployed, "late.csv", "corporation,plan\nx,basic\n")
    assert deployed.tick() == 0 and deployed.last_run()["scoring"]["rejected"]
    path.write_text(csv_text(CUSTOMER_HEADER, [["x", 5, 50, 2, "basic"]]))
    assert deployed.tick() == 0
    assert deployed.last_run()["scoring"]["files"][0]["name"] == "late.csv"


def test_lists_are_scored_again_after_a_redeploy(deployed):
    drop_customers(deployed)
    assert deployed.tick() == 0
    first = deployed.pointer()["current"]
    assert {r["release_id"] for r in read_list(deployed)} == {first}
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed"
    second = deployed.pointer()["current"]
    assert second != first
    assert run["scoring"]["files"][0]["release_id"] == second
    assert {r["release_id"] for r in read_list(deployed)} == {second}


def test_a_list_larger_than_memory_is_sorted_on_disk_exactly_as_in_memory(deployed, tmp_path, monkeypatch):
    model = load_deployed(deployed.deployment)
    scorer = scoring.ScoringModel.of(model)
    common = dict(target="exited", reasons=3, outreach=scoring.Outreach(None), scored_at="now")
    lists = tmp_path / "lists"
    in_memory = lists / "memory.csv"
    on_disk = lists / "disk.csv"
    scoring.write_risk_list(CUSTOMERS, in_memory, scorer, **common)
    monkeypatch.setattr(scoring, "MERGE_BLOCK", 7)
    monkeypatch.setattr(scoring, "MAX_RUNS", 4)  # more runs than this are merged into one first
    summary = scoring.write_risk_list(CUSTOMERS, on_disk, scorer, chunk_rows=23, run_rows=40, **common)
    assert on_disk.read_bytes() == in_memory.read_bytes()
    assert summary["rows"] == 500
    assert {p.name for p in lists.iterdir()} == {"memory.csv", "disk.csv"}  # no run files left


def test_line_breaks_inside_quoted_cells_survive_the_sort_on_disk(deployed, tmp_path, monkeypatch):
    import csv

    rows = [[f"c{i}\nline two" if i % 3 == 0 else (f"c{i}\r\nx" if i % 3 == 1 else f"c{i}"), i, 10 * i, 3,
             "basic\nplus" if i % 5 == 0 else "basic"] for i in range(60)]
    source = tmp_path / "breaks.csv"
    with open(source, "w", newline="") as handle:
        csv.writer(handle).writerows([CUSTOMER_HEADER, *rows])
    scorer = scoring.ScoringModel.of(load_deployed(deployed.deployment))
    common = dict(target="exited", reasons=3, outreach=scoring.Outreach(None), scored_at="now")
    in_memory, on_disk = tmp_path / "memory.csv", tmp_path / "disk.csv"
    scoring.write_risk_list(source, in_memory, scorer, **common)
    monkeypatch.setattr(scoring, "MERGE_BLOCK", 5)
    monkeypatch.setattr(scoring, "MAX_RUNS", 3)
    scoring.write_risk_list(source, on_disk, scorer, chunk_rows=7, run_rows=8, **common)
    assert on_disk.read_bytes() == in_memory.read_bytes()
    with open(on_disk, newline="", encoding="utf-8") as handle:
        parsed = list(csv.DictReader(handle))
    assert len(parsed) == 60 and [int(r["rank"]) for r in parsed] == list(range(1, 61))
    assert {r["corporation"] for r in parsed} == {row[0] for row in rows}


def test_a_bad_row_far_into_a_file_rejects_it_and_leaves_no_list_or_temporary_file(deployed, tmp_path):
    rows = [[f"c{i}", i, 10 * i, 3, "basic"] for i in range(300)]
    rows[250][2] = "n/a?"
    source = tmp_path / "late_error.csv"
    source.write_text(csv_text(CUSTOMER_HEADER, rows))
    scorer = scoring.ScoringModel.of(load_deployed(deployed.deployment))
    output = tmp_path / "out" / "list.csv"
    with pytest.raises(scoring.ScoringError, match=r"column 'lastyear_activity': 1 value\(s\) are not numbers "
                                                   r"\(row 251: 'n/a\?'\)"):
        scoring.write_risk_list(source, output, scorer, target="exited", reasons=3, outreach=scoring.Outreach(None),
                                scored_at="now", chunk_rows=40, run_rows=100)
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_outreach_marks_the_customers_whose_call_is_worth_its_cost(deployed):
    deployed.write_config(base_config(outreach={"customer_value": 1000, "contact_cost": 100, "success_rate": 0.3}))
    drop_customers(deployed)
    assert deployed.tick() == 0
    rows = read_list(deployed)
    assert "expected_value" in rows[0]
    for row in rows:
        value = float(row["churn_probability"]) * 0.3 * 1000 - 100
        assert float(row["expected_value"]) == pytest.approx(value, abs=0.01)
        assert (row["contact"] == "yes") == (value > 0)
    [scored] = deployed.last_run()["scoring"]["files"]
    assert scored["to_contact"] == sum(r["contact"] == "yes" for r in rows) > 0
    assert scored["expected_value"] == pytest.approx(sum(float(r["expected_value"]) for r in rows
                                                         if r["contact"] == "yes"), abs=0.5)


def test_the_on_demand_command_scores_one_file_where_the_user_says(deployed, tmp_path):
    output = tmp_path / "call today.csv"
    result = run_script("scoring.py", "--config", str(deployed.config_path), "--customers", str(CUSTOMERS),
                        "--output", str(output), "--reasons", "2")
    assert result.returncode == 0, result.stderr
    assert "scored customers.csv: 500 rows" in result.stdout
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 500 and "reason_2" in rows[0] and "reason_3" not in rows[0]
    assert json.loads((tmp_path / "call today.csv.summary.json").read_text())["rows"] == 500
    assert not (deployed.root / "predictions").exists() or not list((deployed.root / "predictions").iterdir())


def test_the_on_demand_command_says_what_it_needs(deployed, tmp_path):
    helped = run_script("scoring.py", "--help")
    assert "--customers FILE" in helped.stdout and "--output PATH" in helped.stdout
    alone = run_script("scoring.py", "--config", str(deployed.config_path), "--customers", str(CUSTOMERS))
    assert alone.returncode == 2 and "--customers needs --output PATH" in alone.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("corporation,plan\nx,basic\n")
    refused = run_script("scoring.py", "--config", str(deployed.config_path), "--customers", str(bad),
                         "--output", str(tmp_path / "out.csv"))
    assert refused.returncode == 1 and "feature column(s) missing" in refused.stderr
    same = run_script("scoring.py", "--config", str(deployed.config_path), "--customers", str(bad),
                      "--output", str(bad))
    assert same.returncode == 1 and "the input is never modified" in same.stderr
    assert bad.read_text() == "corporation,plan\nx,basic\n"


def test_customer_files_wait_until_a_model_is_deployed(empty_project):
    drop_customers(empty_project)
    assert empty_project.tick() == 0
    assert "scoring" not in empty_project.last_run()
    for name in ("dataset1.csv", "dataset2.csv"):
        shutil.copy(SAMPLE_SOURCE / name, empty_project.source / name)
    assert empty_project.tick() == 0
    run = empty_project.last_run()
    assert run["decision"] == "cold_start" and run["scoring"]["files"][0]["name"] == "customers.csv"


def test_a_symlink_out_of_the_scoring_folder_is_refused_unread(deployed, tmp_path):
    outside = tmp_path / "secret.csv"
    shutil.copy(CUSTOMERS, outside)
    (deployed.root / "scoringdata").mkdir(exist_ok=True)
    os.symlink(outside, deployed.root / "scoringdata" / "link.csv")
    assert deployed.tick() == 0
    [rejected] = deployed.last_run()["scoring"]["rejected"]
    assert rejected["name"] == "link.csv" and "outside scoringdata/" in rejected["reason"]
    assert not (deployed.root / "predictions" / "link.risk.csv").exists()


def test_the_folders_are_created_when_missing(deployed):
    assert deployed.tick() == 0
    assert (deployed.root / "scoringdata").is_dir() and (deployed.root / "predictions").is_dir()


def test_a_release_without_reasons_still_gets_its_list_and_says_why(deployed):
    from helpers import release_with_an_extra_step

    release_with_an_extra_step(deployed)
    drop_customers(deployed)
    assert deployed.tick() == 0
    rows = read_list(deployed)
    assert len(rows) == 500 and {r["reason_1"] for r in rows} == {""}
    assert "without reasons: reasons are not available for this release" in deployed.log("scoring")
