"""Risk lists: customer files dropped into scoringdata/ become ranked lists with reasons in predictions/."""

import csv
import errno
import io
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
    ("short.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\na,1,2,3,basic\n"
                  b"shortrow,10,200\nc,1,2,3,basic\n", "row 2 has 3 fields, the header has 5"),
    ("cut.csv", b"corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\na,1,2,3,basic\nb,1,2",
     "row 2 has 3 fields, the header has 5"),
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


@pytest.mark.parametrize("merge_rows, per_run", [(60, 6), (5, 1)])  # 10 runs share them; fewer rows than runs: 1 each
def test_merging_many_runs_holds_no_more_rows_than_one_run(deployed, tmp_path, monkeypatch, merge_rows, per_run):
    """The runs share MERGE_ROWS rows while merging, so more runs (a larger file) mean smaller blocks,
    not more memory; the list is still the in-memory one."""
    scorer = scoring.ScoringModel.of(load_deployed(deployed.deployment))
    common = dict(target="exited", reasons=3, outreach=scoring.Outreach(None), scored_at="now")
    in_memory, on_disk = tmp_path / "memory.csv", tmp_path / "disk.csv"
    scoring.write_risk_list(CUSTOMERS, in_memory, scorer, **common)
    asked = []
    block = scoring.Run.block

    def counted(run, start, size):
        asked.append(size)
        return block(run, start, size)

    monkeypatch.setattr(scoring.Run, "block", counted)
    monkeypatch.setattr(scoring, "MERGE_ROWS", merge_rows)
    scoring.write_risk_list(CUSTOMERS, on_disk, scorer, chunk_rows=25, run_rows=50, **common)  # 10 runs
    assert on_disk.read_bytes() == in_memory.read_bytes()
    assert set(asked) == {per_run}


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


def test_a_short_row_far_into_a_file_rejects_it_in_whichever_chunk_it_falls(deployed, tmp_path):
    rows = [[f"c{i}", i, 10 * i, 3, "basic" if i % 7 else '"basic,\nplus"'] for i in range(300)]
    lines = [",".join(map(str, row)) for row in rows]
    lines[250] = "c250,250,2500"
    source = tmp_path / "short_late.csv"
    source.write_text("\r\n".join([",".join(CUSTOMER_HEADER), *lines[:100], "", " , ,", *lines[100:]]))
    scorer = scoring.ScoringModel.of(load_deployed(deployed.deployment))
    for chunk_rows in (40, 1000):
        with pytest.raises(scoring.ScoringError, match=r"short_late.csv: row 251 has 3 fields, the header has 5"):
            scoring.write_risk_list(source, tmp_path / "list.csv", scorer, target="exited", reasons=3,
                                    outreach=scoring.Outreach(None), scored_at="now", chunk_rows=chunk_rows)
    assert not (tmp_path / "list.csv").exists()


FORMULA_IDS = ['=HYPERLINK("http://127.0.0.1/x?"&A1,"click me")', "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(1,1)",
               "\t=2+2", "=1,2", "-", "+44 20 7946 0000"]
PLAIN_NUMBER_IDS = ["-5", "+3.5", "-1e3", "42"]


def assert_no_cell_is_a_formula(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for row in rows:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r") or cell in PLAIN_NUMBER_IDS, (cell, row)
    return rows


def test_ids_and_the_id_header_a_spreadsheet_would_evaluate_are_neutralised_and_recoverable(deployed, tmp_path):
    ids = FORMULA_IDS + PLAIN_NUMBER_IDS
    content = io.StringIO()
    csv.writer(content).writerows([["=Corporation", *CUSTOMER_HEADER[1:]],
                                   *[[i, 10 * n, 100, 3, "basic"] for n, i in enumerate(ids)]])
    content = content.getvalue()
    drop_customers(deployed, "formulas.csv", content)
    assert deployed.tick() == 0
    lists = {"tick": deployed.root / "predictions" / "formulas.risk.csv", "on demand": tmp_path / "on_demand.csv"}
    result = run_script("scoring.py", "--config", str(deployed.config_path), "--customers",
                        str(deployed.root / "scoringdata" / "formulas.csv"), "--output", str(lists["on demand"]))
    assert result.returncode == 0, result.stderr
    for path in lists.values():
        header, *rows = assert_no_cell_is_a_formula(path)
        assert header[1] == "'=Corporation"
        shown_ids = [row[1] for row in rows]
        # Recoverable: a cell that starts with ' and then a formula character lost only that quote.
        recovered = [cell[1:] if cell[:1] == "'" and cell[1:2] in "=+-@\t\r" else cell for cell in shown_ids]
        expected = [i.strip() for i in ids]  # the cells of a file are read stripped
        assert sorted(recovered) == sorted(expected)
        assert set(PLAIN_NUMBER_IDS) <= set(shown_ids)


def test_reasons_show_numbers_as_the_file_gave_them_and_contributions_in_a_bounded_width(deployed, tmp_path):
    source = tmp_path / "numbers.csv"
    source.write_text(csv_text(CUSTOMER_HEADER, [["a", "117.30", "1e300", 3, "basic"], ["b", "0050", 10, "", "basic"],
                                                 ["c", "1" + "0" * 30, "-2.50E+01", 3, "basic"]]))
    scorer = scoring.ScoringModel.of(load_deployed(deployed.deployment))
    output = tmp_path / "list.csv"
    scoring.write_risk_list(source, output, scorer, target="exited", reasons=4, outreach=scoring.Outreach(None),
                            scored_at="now")
    with open(output, newline="") as handle:
        rows = {row["corporation"]: row for row in csv.DictReader(handle)}
    reasons = {key: " | ".join(row[f"reason_{n}"] for n in range(1, 5)) for key, row in rows.items()}
    assert "lastmonth_activity = 117.30 (" in reasons["a"] and "lastyear_activity = 1e300 (" in reasons["a"]
    assert "lastmonth_activity = 0050 (" in reasons["b"] and "number_of_employees = (missing) (" in reasons["b"]
    # A number's own text past 24 characters is shown as the number.
    assert "lastmonth_activity = 1e+30 (" in reasons["c"] and "lastyear_activity = -2.50E+01 (" in reasons["c"]
    for row in rows.values():
        for n in range(1, 5):
            amount = row[f"reason_{n}"].rsplit(", ", 1)[1].rstrip(")")
            assert len(amount) <= 10 and float(amount) == float(amount), row


def test_many_distinct_unseen_categories_keep_the_summary_and_the_run_line_small(deployed, monkeypatch):
    monkeypatch.setattr(scoring, "UNSEEN_TRACKED", 300, raising=False)  # pruned after each chunk below: counts become lower bounds
    rows = [[f"c{i}", 5, 50, 2, f"plan-{i}-" + "x" * 150] for i in range(20_000)]
    rows += [[f"e{i}", 5, 50, 2, "enterprise"] for i in range(40)] + [[f"b{i}", 5, 50, 2, "Basic"] for i in range(7)]
    drop_customers(deployed, "many.csv", csv_text(CUSTOMER_HEADER, rows))
    assert deployed.tick() == 0
    run_line = (deployed.root / "logs" / "runs.jsonl").read_text().splitlines()[-1]
    assert len(run_line) < 10_000
    [scored] = json.loads(run_line)["scoring"]["files"]
    summary = json.loads((deployed.root / "predictions" / "many.risk.json").read_text())
    for kept in (scored, summary):
        plans = kept["unseen_categories"]["plan"]
        assert len(plans) == 20 and list(plans)[:2] == ["enterprise", "Basic"] and plans["enterprise"] == 40
        assert all(len(value) <= 100 for value in plans)
        rest = kept["unseen_categories_rest"]["plan"]
        assert rest["rows"] == 20_047 - sum(plans.values()) and rest["values_counted"] == "about"
        assert 20_002 - 20 - 300 <= rest["values"] <= 20_002
        assert kept["unseen_near_matches"] == {"plan": {"Basic": "basic"}}
    assert os.path.getsize(deployed.root / "predictions" / "many.risk.json") < 20_000
    log = deployed.log("scoring")
    assert "plan 'enterprise' (40), 'Basic' (7; did you mean 'basic'?)" in log
    assert f"and about {20_002 - 5:,} other value(s) in {20_047 - 40 - 7 - 3:,} row(s)" in log


def test_two_files_whose_names_differ_in_case_never_share_one_list(deployed):
    drop_customers(deployed, "team.CSV", csv_text(CUSTOMER_HEADER, [["upper", 5, 50, 2, "basic"]]))
    drop_customers(deployed, "team.csv", csv_text(CUSTOMER_HEADER, [["lower1", 5, 50, 2, "basic"],
                                                                    ["lower2", 6, 60, 2, "basic"]]))
    assert deployed.tick() == 0
    scoring_run = deployed.last_run()["scoring"]
    assert [f["name"] for f in scoring_run["files"]] == ["team.CSV"]  # the first by name
    [rejected] = scoring_run["rejected"]
    assert rejected["name"] == "team.csv" and "its list would be team.risk.csv, which is team.CSV's" in rejected["reason"]
    assert [r["corporation"] for r in read_list(deployed, "team")] == ["upper"]
    assert "rejected team.csv: its list would be team.risk.csv" in deployed.log("scoring")
    # Said once, not on every tick.
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()
    (deployed.root / "scoringdata" / "team.CSV").unlink()
    assert deployed.tick() == 0
    assert [f["name"] for f in deployed.last_run()["scoring"]["files"]] == ["team.csv"]
    assert [r["corporation"] for r in read_list(deployed, "team")] == ["lower1", "lower2"]


def test_a_list_whose_customer_file_is_gone_is_moved_aside_with_a_log_line_not_left_stale(deployed):
    drop_customers(deployed)
    drop_customers(deployed, "gone.csv", csv_text(CUSTOMER_HEADER, [["g", 5, 50, 2, "basic"]]))
    predictions = deployed.root / "predictions"
    predictions.mkdir(exist_ok=True)
    (predictions / "from_an_old_release.risk.csv").write_text("rank,corporation\n1,old\n")
    (predictions / "notes.txt").write_text("the team's own file")
    assert deployed.tick() == 0
    (deployed.root / "scoringdata" / "gone.csv").unlink()
    assert deployed.tick() == 0
    assert {p.name for p in predictions.iterdir()} == {"customers.risk.csv", "customers.risk.json", "notes.txt",
                                                        "scoring_record.json", "stale"}
    assert {p.name for p in (predictions / "stale").iterdir()} == {"from_an_old_release.risk.csv", "gone.risk.csv",
                                                                   "gone.risk.json"}
    assert (predictions / "stale" / "gone.risk.csv").read_text().count("\n") == 2
    log = deployed.log("scoring")
    assert "moved predictions/gone.risk.csv to predictions/stale/: its customer file is no longer" in log
    assert "moved predictions/from_an_old_release.risk.csv to predictions/stale/" in log
    stale = [entry["name"] for entry in deployed.last_run()["scoring"]["stale"]]
    assert stale == ["gone.risk.csv", "gone.risk.json"]
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()


def test_a_customer_file_that_cannot_be_read_for_a_while_keeps_its_list(deployed, monkeypatch):
    import churnlib.sourcefiles

    path = drop_customers(deployed)
    assert deployed.tick() == 0
    os.utime(path, ns=(1, 1))  # changed, as far as the scan can tell: it is read again
    real_hash = churnlib.sourcefiles.file_sha256

    def io_error(file_path):
        if file_path.name == "customers.csv":
            raise OSError(errno.EIO, "Input/output error")
        return real_hash(file_path)

    monkeypatch.setattr(churnlib.sourcefiles, "file_sha256", io_error)
    assert deployed.tick() == 0
    assert (deployed.root / "predictions" / "customers.risk.csv").exists()
    assert not (deployed.root / "predictions" / "stale").exists()


def test_the_scoring_record_keeps_one_rejection_per_file_still_there(deployed):
    folder = deployed.root / "scoringdata"
    for i in range(30):
        drop_customers(deployed, f"bad{i}.csv", "corporation,plan\nx,basic\n")
    assert deployed.tick() == 0
    for version in range(3):  # changed three times, still bad
        drop_customers(deployed, "bad0.csv", f"corporation,plan\nx{version},basic\n")
        assert deployed.tick() == 0
    record = json.loads((deployed.root / "predictions" / "scoring_record.json").read_text())
    assert sorted(r["name"] for r in record["rejected"]) == sorted(f"bad{i}.csv" for i in range(30))
    for i in range(30):
        (folder / f"bad{i}.csv").unlink()
    assert deployed.tick() == 0
    record = json.loads((deployed.root / "predictions" / "scoring_record.json").read_text())
    assert record["rejected"] == []


def test_a_full_disk_while_sorting_on_disk_names_the_step_and_file_and_the_other_files_go_on(deployed, monkeypatch):
    drop_customers(deployed, "a_first.csv")
    drop_customers(deployed, "b_big.csv")
    drop_customers(deployed, "c_last.csv")
    monkeypatch.setattr(scoring, "RUN_ROWS", 200)  # these 500-row files are sorted on disk
    real_write = scoring.Run.write

    def disk_full_for_b(folder, part):
        if "b_big" in folder.name:
            raise OSError(errno.ENOSPC, "No space left on device")  # what a write to a full disk raises
        return real_write(folder, part)

    monkeypatch.setattr(scoring.Run, "write", staticmethod(disk_full_for_b))
    assert deployed.tick() == 1
    run = deployed.last_run()
    assert run["decision"] == "failed"
    assert "scoring: b_big.csv: sorting the list on disk (more than 200 rows) in " in run["reason"]
    assert "No space left on device" in run["reason"]
    assert [f["name"] for f in run["scoring"]["files"]] == ["a_first.csv", "c_last.csv"]
    assert [f["name"] for f in run["scoring"]["failed"]] == ["b_big.csv"]
    predictions = deployed.root / "predictions"
    assert {p.name for p in predictions.iterdir()} == {"a_first.risk.csv", "a_first.risk.json", "c_last.risk.csv",
                                                        "c_last.risk.json", "scoring_record.json"}
    assert "scoring b_big.csv failed: sorting the list on disk" in deployed.log("scoring")
    monkeypatch.setattr(scoring.Run, "write", staticmethod(real_write))  # space again: the next tick makes it
    assert deployed.tick() == 0
    assert [f["name"] for f in deployed.last_run()["scoring"]["files"]] == ["b_big.csv"]


def test_lists_follow_a_change_of_the_settings_that_shape_them_on_the_next_tick(deployed):
    drop_customers(deployed)
    assert deployed.tick() == 0
    assert "expected_value" not in read_list(deployed)[0]
    deployed.write_config(base_config(outreach={"customer_value": 1000, "contact_cost": 100, "success_rate": 0.3}))
    assert deployed.tick() == 0
    [scored] = deployed.last_run()["scoring"]["files"]
    assert scored["name"] == "customers.csv" and scored["expected_value"] is not None
    rows = read_list(deployed)
    assert "expected_value" in rows[0]
    assert all((r["contact"] == "yes") == (float(r["expected_value"]) > 0) for r in rows)
    assert "the list settings (risk_lists, outreach) changed since customers.csv were scored" in deployed.log("scoring")
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()
    deployed.write_config(base_config(outreach={"customer_value": 1000, "contact_cost": 100, "success_rate": 0.3},
                                      risk_lists={"reasons": 1}))
    assert deployed.tick() == 0
    assert "reason_1" in read_list(deployed)[0] and "reason_2" not in read_list(deployed)[0]


def test_lists_can_be_made_again_on_demand(deployed):
    helped = run_script("scoring.py", "--help")
    assert "--rescore-lists" in helped.stdout
    assert "scoring.py --rescore-lists" in " ".join(run_script("fullprocess.py", "--help").stdout.split())
    drop_customers(deployed)
    drop_customers(deployed, "bad.csv", "corporation,plan\nx,basic\n")
    assert deployed.tick() == 0
    first = (deployed.root / "predictions" / "customers.risk.csv").read_text()
    result = run_script("scoring.py", "--config", str(deployed.config_path), "--rescore-lists")
    assert result.returncode == 0, result.stderr
    assert "1 list(s) made again with release" in result.stdout
    assert "not scored: bad.csv: feature column(s) missing" in result.stderr
    again = (deployed.root / "predictions" / "customers.risk.csv").read_text()
    assert [line.rsplit(",", 1)[0] for line in again.splitlines()] == \
        [line.rsplit(",", 1)[0] for line in first.splitlines()]  # all but scored_at
    assert deployed.log("scoring").count("scored customers.csv: 500 rows") == 2
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()


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


def test_a_customer_file_whose_list_name_would_be_too_long_is_rejected_and_the_others_are_scored(deployed):
    long_name = "a" * 240 + ".csv"  # a legal name (255 bytes at most), but its list's temporary name is not
    drop_customers(deployed, long_name, csv_text(CUSTOMER_HEADER, [["x", 5, 50, 2, "basic"]]))
    drop_customers(deployed, "fine.csv", csv_text(CUSTOMER_HEADER, [["y", 5, 50, 2, "basic"]]))
    assert deployed.tick() == 0
    scoring_run = deployed.last_run()["scoring"]
    assert [f["name"] for f in scoring_run["files"]] == ["fine.csv"]
    [rejected] = scoring_run["rejected"]
    assert rejected["name"] == long_name and "name is too long" in rejected["reason"]
    assert [r["corporation"] for r in read_list(deployed, "fine")] == ["y"]
    assert deployed.tick() == 0 and "scoring" not in deployed.last_run()  # said once
