"""Ingestion: validation, rejection with reasons, de-duplication, incremental reads, crash recovery."""

import json

import pandas as pd
import pytest

import ingestion
from churnlib import sourcefiles
from churnlib.dataset import DatasetError, parse_labelled_csv
from helpers import SAMPLE_HEADER, csv_text


def ingest(project):
    from churnlib.logsetup import setup_logging

    config = project.config()
    setup_logging(config.paths.logs, "ingestion")
    return ingestion.run_ingestion(config)


def rows(*values):
    return [list(v) for v in values]


GOOD = csv_text(SAMPLE_HEADER, rows(("a", 10, 100, 5, "basic", 1), ("b", 20, 200, 6, "premium", 0)))


def finaldata(project):
    return pd.read_csv(project.ingested / "finaldata.csv", keep_default_na=False)


def test_first_ingest_writes_data_record_and_readable_trail(project):
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == ["dataset1.csv", "dataset2.csv"]
    record = project.record()
    assert record["rows"] == 790 == len(finaldata(project))
    entry = record["files"][0]
    assert set(entry) >= {"name", "size", "sha256", "rows_read", "rows_added", "ingested_at"}
    assert entry["size"] == (project.source / "dataset1.csv").stat().st_size
    readable = (project.logs / "ingestion_record.txt").read_text()
    assert "dataset1.csv" in readable and "dataset2.csv" in readable
    assert (project.ingested / "ingestedfiles.txt").read_text() == "dataset1.csv\ndataset2.csv\n"


def test_whole_row_duplicates_are_dropped_within_and_across_files_but_not_by_id(empty_project):
    project = empty_project
    project.add_source("a.csv", csv_text(SAMPLE_HEADER, rows(
        ("acme", 10, 100, 5, "basic", 1),
        ("acme", 10, 100, 5, "basic", 1),      # exact duplicate within the file
        ("acme", 11, 100, 5, "basic", 1),      # same id, other values: a different row
    )))
    project.add_source("b.csv", csv_text(SAMPLE_HEADER, rows(
        ("acme", 10.0, "100", " 5 ", "basic", "yes"),  # the same row written differently
        ("bolt", 1, 2, 3, "premium", 0),
    )))
    result = ingest(project)
    assert [(f["rows_read"], f["rows_added"]) for f in result.accepted] == [(3, 2), (2, 1)]
    data = finaldata(project)
    assert data["corporation"].tolist() == ["acme", "acme", "bolt"]
    assert data["lastmonth_activity"].tolist() == [10, 11, 1]


def test_only_csv_files_are_read_and_others_are_logged_once(project):
    project.add_source("notes.txt", "hello")
    (project.source / "archive").mkdir()
    ingest(project)
    ingest(project)
    log = project.log("ingestion")
    assert log.count("ignored notes.txt: not a .csv file") == 1
    assert log.count("ignored archive: not a .csv file") == 1
    assert project.record()["ignored"]["notes.txt"] == "not a .csv file"


def test_a_bad_file_is_rejected_with_its_reason_and_good_files_still_go_in(empty_project):
    project = empty_project
    project.add_source("a_good.csv", GOOD)
    project.add_source("b_bad.csv", csv_text(["corporation", "lastmonth_activity"], rows(("x", 1))))
    project.add_source("c_good.csv", GOOD.replace("a,10", "c,12"))
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == ["a_good.csv", "c_good.csv"]
    assert [(r["name"], r["reason"]) for r in result.rejected] == [
        ("b_bad.csv", "target column 'exited' missing; header has 'corporation', 'lastmonth_activity'")
    ]
    assert "b_bad.csv" in (project.logs / "ingestion_record.txt").read_text()
    assert "rejected b_bad.csv: target column 'exited' missing" in project.log("ingestion")


def test_a_rejected_file_is_not_retried_until_its_content_changes(empty_project):
    project = empty_project
    bad = project.add_source("bad.csv", GOOD.replace(",1\n", ",maybe\n"))
    ingest(project)
    ingest(project)
    bad.touch()
    ingest(project)
    assert len(project.record()["rejected"]) == 1
    bad.write_text(GOOD)
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == ["bad.csv"]


def test_a_rejected_file_is_retried_after_the_schema_settings_change(empty_project):
    project = empty_project
    project.add_source("churn.csv", csv_text(["customer", "usage", "churned"], rows(("a", 1, 1), ("b", 2, 0))))
    assert ingest(project).rejected
    config = json.loads(project.config_path.read_text())
    config["schema"] = {"target": "churned", "id_columns": ["customer"]}
    project.write_config(config)
    assert [f["name"] for f in ingest(project).accepted] == ["churn.csv"]


def test_the_same_content_under_another_name_is_not_ingested_twice(project):
    ingest(project)
    project.add_source("copy.csv", (project.source / "dataset1.csv").read_bytes())
    result = ingest(project)
    assert result.accepted == [] and result.rejected == []
    assert "copy.csv: same content as the already ingested dataset1.csv" in project.log("ingestion")


def test_files_arriving_together_are_taken_oldest_first_then_by_name(empty_project):
    """feb.csv sorts before jan.csv by name, but jan.csv is older: its rows must come first (count as older)."""
    import os

    project = empty_project
    jan = project.add_source("jan.csv", GOOD)
    feb = project.add_source("feb.csv", GOOD.replace("a,10", "f,12").replace("b,20", "g,22"))
    b_tie = project.add_source("b_tie.csv", GOOD.replace("a,10", "y,13"))
    a_tie = project.add_source("a_tie.csv", GOOD.replace("a,10", "x,14"))
    day = 86_400 * 10**9
    os.utime(jan, ns=(day, day))
    os.utime(feb, ns=(2 * day, 2 * day))
    for same_time in (b_tie, a_tie):
        os.utime(same_time, ns=(3 * day, 3 * day))
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == ["jan.csv", "feb.csv", "a_tie.csv", "b_tie.csv"]
    assert finaldata(project)["corporation"].tolist() == ["a", "b", "f", "g", "x", "y"]  # b repeats: dropped


def test_ingestion_reads_only_new_files(project, monkeypatch):
    ingest(project)
    read = []
    original = sourcefiles.file_sha256
    monkeypatch.setattr(sourcefiles, "file_sha256", lambda path: read.append(path.name) or original(path))
    project.add_source("new.csv", GOOD)
    ingest(project)
    assert read == ["new.csv"]


def test_headers_are_normalised_one_way(empty_project):
    project = empty_project
    project.add_source("messy.csv", csv_text(
        ["\ufeffCorporation", "LastMonth Activity", "lastyear-activity", "Number  of Employees", "PLAN", " Exited "],
        rows(("a", 1, 2, 3, "basic", "Yes")),
    ).encode("utf-8"))
    result = ingest(project)
    assert result.accepted, result.rejected
    assert list(finaldata(project).columns) == SAMPLE_HEADER


def test_interrupted_append_is_cut_back_to_the_committed_length(project):
    from churnlib.ingested import append_rows

    ingest(project)
    committed = (project.ingested / "finaldata.csv").read_bytes()
    # What a run killed after appending and before committing leaves: the appends, not the record.
    append_rows(project.ingested, project.record(), b"torn,1,2,3,basic,1\n", b"\x01" * 8, source="killed.csv")
    assert len((project.ingested / "finaldata.csv").read_bytes()) > len(committed)
    project.add_source("new.csv", GOOD)
    ingest(project)
    data = (project.ingested / "finaldata.csv").read_bytes()
    assert data.startswith(committed) and b"torn" not in data
    assert len(finaldata(project)) == project.record()["rows"] == 792
    assert (project.ingested / "rowhashes.bin").stat().st_size == 792 * 8


def test_data_shorter_than_the_record_is_a_clear_error(project):
    ingest(project)
    (project.ingested / "finaldata.csv").write_text("corporation\n")
    project.add_source("new.csv", GOOD)
    with pytest.raises(ingestion.IngestedDataError, match="shorter than the .* the ingestion record commits"):
        ingest(project)


def test_a_schema_change_in_config_after_ingest_is_refused(project):
    from churnlib.config import ConfigError

    ingest(project)
    config = json.loads(project.config_path.read_text())
    config["schema"]["categorical_columns"] = ["plan", "number_of_employees"]
    project.write_config(config)
    project.add_source("new.csv", GOOD)
    with pytest.raises(ConfigError, match="categorical_columns differ"):
        ingest(project)


class Settings:
    target = "exited"
    positive_labels = ("1", "yes", "true")
    negative_labels = ("0", "no", "false")
    id_columns = ("corporation",)
    feature_columns = None
    categorical_columns = None


def parse(text):
    return parse_labelled_csv(text.encode("utf-8") if isinstance(text, str) else text, name="f.csv",
                              settings=Settings, schema=None)


@pytest.mark.parametrize("labels, expected", [
    (["1", "0"], [1, 0]), (["Yes", "no"], [1, 0]), (["TRUE", "false"], [1, 0]), (["1.0", "0.0"], [1, 0]),
])
def test_target_values_read_as_two_classes_in_any_case(labels, expected):
    text = csv_text(["x", "exited"], [[1, labels[0]], [2, labels[1]]])
    assert parse(text).frame["exited"].tolist() == expected


@pytest.mark.parametrize("text, reason", [
    ("", "empty file"),
    ("x,exited\n", "header only, no data rows"),
    ("x,exited\n1,2\n", "values that read as neither class"),
    ("x,exited\n1,\n", "row(s) have no label"),
    ("x,exited\ninf,1\n", "column 'x': 1 value(s) are infinite"),
    ("x;exited\n1;1\n", "seems to use ';' as delimiter"),
    ("1,0\n2,1\n", "seems to have no header"),
    ("x,X,exited\n1,2,1\n", "duplicate column name 'x'"),
    ("x,,exited\n1,2,1\n", "header column 2 ('') has no name"),
    ("x,exited\n1,1,5\n", "not a well-formed CSV file"),
])
def test_bad_content_is_rejected_with_a_reason_naming_column_and_row(text, reason):
    with pytest.raises(DatasetError) as error:
        parse(text)
    assert reason in str(error.value)


def test_blank_numeric_cells_are_missing_values_not_errors():
    parsed = parse("x,y,exited\n1,,1\n,NA,0\n3,4,1\n")
    assert parsed.frame["x"].isna().tolist() == [False, True, False]
    assert parsed.frame["y"].isna().tolist() == [True, True, False]


def test_non_numeric_columns_are_inferred_categorical():
    parsed = parse("corporation,size,plan,exited\nacme,1,basic,1\nbolt,2,pro,0\n")
    assert parsed.schema.categorical_columns == ("plan",)
    assert parsed.schema.numeric_columns == ("size",)
    assert parsed.schema.id_columns == ("corporation",)


def test_text_in_a_numeric_column_is_rejected_naming_column_and_rows():
    schema = parse("x,exited\n1,1\n").schema
    text = "x,exited\n1,1\nabc,0\n2,1\n,0\nn/a?,1\n"
    with pytest.raises(DatasetError) as error:
        parse_labelled_csv(text.encode(), name="f.csv", settings=Settings, schema=schema)
    assert str(error.value) == "f.csv: column 'x': 2 value(s) are not numbers (row 2: 'abc', row 5: 'n/a?')"
