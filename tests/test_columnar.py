"""The columnar history: ingesteddata/finaldata.parquet/, one Parquet part per accepted batch,
committed and rolled back with finaldata.csv, checked for changes made by hand, read by retraining."""

from __future__ import annotations

import json

import pandas as pd

from churnlib.dataset import read_canonical_csv
from churnlib.ingested import PARTS_FOLDER, frozen_schema, load_record, read_ingested_data, read_parts
from helpers import SAMPLE_HEADER, batch, run_script


def csv_rows(project):
    record = load_record(project.ingested)
    with open(project.ingested / "finaldata.csv", "rb") as handle:
        return read_canonical_csv(handle, frozen_schema(record)), record


def test_each_accepted_batch_is_one_part_holding_exactly_the_rows_the_csv_holds(project):
    awkward = (",".join(SAMPLE_HEADER) + "\n"
               '"a,b",1,2,3,basic,0\n'              # a comma inside an id
               '"say ""hi""",,5,6,,1\n'             # a quote, a missing number and a missing category
               "c,1.5,-0.25,1e-7,basic,1\n"
               "d,7,8,9, premium ,0\n")
    project.add_source("dataset3.csv", awkward)
    assert project.tick() == 0
    expected, record = csv_rows(project)
    parts = record["parts"]
    assert [(p["first_row"], p["rows"]) for p in parts] == [(0, 400), (400, 390), (790, 4)]
    assert sorted(path.name for path in (project.ingested / PARTS_FOLDER).iterdir()) == sorted(p["file"] for p in parts)
    columnar = read_parts(project.ingested, record, frozen_schema(record))
    pd.testing.assert_frame_equal(columnar, expected)
    frame, _schema, fingerprint = read_ingested_data(project.ingested)
    assert fingerprint["read_from"] == PARTS_FOLDER
    pd.testing.assert_frame_equal(frame, expected)
    metadata = json.loads(next(project.deployment.glob("releases/*/trainedmodel.json")).read_text())
    assert metadata["training_data"]["read_from"] == PARTS_FOLDER  # the model was trained from the parts


def test_a_part_no_commit_lists_is_removed_and_its_rows_never_read(deployed):
    record = load_record(deployed.ingested)
    folder = deployed.ingested / PARTS_FOLDER
    # What a crash between writing a part and the record's commit leaves behind.
    stray = folder / "part-000099-790.parquet"
    stray.write_bytes((folder / record["parts"][0]["file"]).read_bytes())
    deployed.add_source("dataset3.csv", batch(5, 40))
    assert deployed.tick() == 0
    assert not stray.exists()
    assert "part-000099-790.parquet: removing a part no commit lists" in deployed.log("ingestion")
    frame, _schema, _fingerprint = read_ingested_data(deployed.ingested)
    assert len(frame) == load_record(deployed.ingested)["rows"] == 830


def test_a_part_changed_by_hand_stops_the_tick_until_the_change_is_accepted(deployed):
    record = load_record(deployed.ingested)
    part = deployed.ingested / PARTS_FOLDER / record["parts"][1]["file"]
    frame = pd.read_parquet(part)
    frame.loc[0, "lastmonth_activity"] = 99999.0
    frame.to_parquet(part, index=False)
    deployed.add_source("dataset3.csv", batch(5, 40))
    assert deployed.tick() == 1
    run = deployed.last_run()
    assert run["decision"] == "failed"
    assert f"{part}: changed outside the pipeline" in run["reason"] and "--accept-changes" in run["reason"]
    accepted = run_script("ingestion.py", "--config", str(deployed.config_path), "--accept-changes")
    assert accepted.returncode == 0, accepted.stderr
    record = load_record(deployed.ingested)
    assert [(p["first_row"], p["rows"]) for p in record["parts"]] == [(0, 790)]  # rebuilt from finaldata.csv
    assert deployed.tick() == 0
    expected, record = csv_rows(deployed)
    pd.testing.assert_frame_equal(read_parts(deployed.ingested, record, frozen_schema(record)), expected)
    assert sorted(p.name for p in (deployed.ingested / PARTS_FOLDER).iterdir()) == [p["file"] for p in record["parts"]]


def test_data_ingested_before_the_parts_existed_gets_one_part_at_the_next_ingest(deployed):
    import shutil

    path = deployed.ingested / "ingestion_record.json"
    record = json.loads(path.read_text())
    del record["parts"]  # a record written before the columnar history existed
    path.write_text(json.dumps(record))
    shutil.rmtree(deployed.ingested / PARTS_FOLDER)
    assert read_ingested_data(deployed.ingested)[2]["read_from"] == "finaldata.csv"
    deployed.add_source("dataset3.csv", batch(5, 40))
    assert deployed.tick() == 0
    expected, record = csv_rows(deployed)
    assert [(p["first_row"], p["rows"]) for p in record["parts"]] == [(0, 790), (790, 40)]
    pd.testing.assert_frame_equal(read_parts(deployed.ingested, record, frozen_schema(record)), expected)
    assert "the 790 rows ingested before the Parquet parts existed" in deployed.log("ingestion")
