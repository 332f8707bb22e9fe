"""A file larger than one chunk is ingested a chunk at a time with the outcome of reading it whole."""

import json

import pandas as pd
import pytest

import ingestion
from churnlib import dataset
from churnlib import ingested as ingested_data
from churnlib.dataset import DatasetError, parse_labelled_csv
from helpers import SAMPLE_HEADER, csv_text, make_project

CHUNK_ROWS = 40  # the test files are 5 to 6 chunks long


def ingest(project):
    from churnlib.logsetup import setup_logging

    config = project.config()
    setup_logging(config.paths.logs, "ingestion")
    return ingestion.run_ingestion(config)


def customers(count, *, start=0, plan=lambda i: ("basic", "premium")[i % 2]):
    return [[f"c{i}", i % 50, (i * 7) % 900, 1 + i % 30, plan(i), i % 3 == 0] for i in range(start, start + count)]


def history_and_new_file():
    """A first file, then a 230-row file with duplicates inside one chunk, across chunks and of the first file."""
    history = customers(60)
    rows = customers(230, start=40)  # its first 20 rows are rows of the history
    rows[11] = list(rows[10])  # a duplicate within a chunk
    rows[130] = list(rows[50])  # a duplicate three chunks later
    rows[199] = list(rows[41])  # in the last chunk, of a row in the first
    return csv_text(SAMPLE_HEADER, history), csv_text(SAMPLE_HEADER, rows)


def state(project):
    """Return what ingestion leaves that must not depend on the chunk size (times and part names aside)."""
    record = project.record()
    for entry in record["files"]:
        entry.pop("ingested_at"), entry.pop("seconds")
    for key in ("updated_at", "last_ingest", "parts", "data_signature", "seen"):
        record.pop(key, None)
    parts = ingested_data.read_parts(project.ingested, project.record(), ingested_data.frozen_schema(project.record()))
    return {
        "finaldata.csv": (project.ingested / "finaldata.csv").read_bytes(),
        "rowhashes.bin": (project.ingested / "rowhashes.bin").read_bytes(),
        "record": record,
        "parquet": parts,
        "statistics": json.loads((project.ingested / ingested_data.STATS_FILE).read_text()),
        "log": [line.split(" ", 2)[-1] for line in project.log("ingestion").splitlines()],
    }


def assert_same_state(chunked, whole):
    for name in ("finaldata.csv", "rowhashes.bin", "record", "log"):
        assert chunked[name] == whole[name], name
    pd.testing.assert_frame_equal(chunked["parquet"], whole["parquet"])
    # Merged chunk by chunk, the means and sums of squares may differ in their last bits; nothing else.
    rounded = {"mean", "m2"}
    for column, entry in whole["statistics"]["numeric"].items():
        other = chunked["statistics"]["numeric"][column]
        assert {k: v for k, v in other.items() if k not in rounded} == {k: v for k, v in entry.items() if k not in rounded}
        assert [other[k] for k in sorted(rounded)] == pytest.approx([entry[k] for k in sorted(rounded)], rel=1e-12)
    assert ({k: v for k, v in chunked["statistics"].items() if k != "numeric"}
            == {k: v for k, v in whole["statistics"].items() if k != "numeric"})


def ingested_twice(tmp_path, monkeypatch, files):
    """Return the state after ingesting ``files`` (name -> text, one tick each) whole, and in chunks of CHUNK_ROWS."""
    states = []
    for label, chunk_rows in (("whole", dataset.LABELLED_CHUNK_ROWS), ("chunked", CHUNK_ROWS)):
        monkeypatch.setattr(dataset, "LABELLED_CHUNK_ROWS", chunk_rows)
        project = make_project(tmp_path / label, sources=())
        results = []
        for name, text in files.items():
            project.add_source(name, text)
            results.append(ingest(project))
        states.append((project, results))
    return states


def test_a_file_read_in_chunks_is_ingested_exactly_as_a_file_read_whole(tmp_path, monkeypatch):
    history, new = history_and_new_file()
    (whole, whole_results), (chunked, chunked_results) = ingested_twice(
        tmp_path, monkeypatch, {"a_history.csv": history, "b_new.csv": new})
    entry = chunked.record()["files"][1]
    # 3 duplicates within the file (two across chunks), 19 more rows of the history: 230 - 22 added.
    assert (entry["rows_read"], entry["duplicates_in_file"], entry["duplicates_of_earlier_rows"],
            entry["rows_added"]) == (230, 3, 19, 208)
    parts = chunked.record()["parts"]
    assert len(parts) == 2 + 6  # one part a chunk: the history file is two chunks long (the header counts), the new one six
    assert [p["first_row"] for p in parts] == [sum(p["rows"] for p in parts[:i]) for i in range(len(parts))]
    assert_same_state(state(chunked), state(whole))


def test_a_first_file_with_text_past_its_first_chunk_in_a_column_of_numbers_makes_it_categorical(tmp_path, monkeypatch):
    rows = customers(200)
    rows[170][3] = "many"  # number_of_employees: numbers for 170 rows, then a word
    (whole, _), (chunked, results) = ingested_twice(tmp_path, monkeypatch, {"a.csv": csv_text(SAMPLE_HEADER, rows)})
    assert results[0].accepted
    assert "number_of_employees" in chunked.record()["schema"]["categorical_columns"]
    assert_same_state(state(chunked), state(whole))


@pytest.mark.parametrize("bad_row, value, column", [
    (199, "lots", 2),  # text in a numeric column, in the last chunk
    (185, "maybe", 5),  # a label that is neither class
    (3, "x" * 10_001, 4),  # a cell too long in the first chunk, and text in the last one
])
def test_a_bad_row_in_a_late_chunk_refuses_the_whole_file_with_the_whole_files_reason(tmp_path, monkeypatch,
                                                                                       bad_row, value, column):
    monkeypatch.setattr(dataset, "LABELLED_CHUNK_ROWS", CHUNK_ROWS)
    project = make_project(tmp_path / "project", sources=())
    history, _new = history_and_new_file()
    project.add_source("a_history.csv", history)
    ingest(project)
    before = {name: (project.ingested / name).read_bytes() for name in ("finaldata.csv", "rowhashes.bin")}
    record_before = project.record()
    rows = customers(200, start=100)
    rows[bad_row][column] = value
    rows[190][1] = "n/a?"  # and a second bad value in another column, further on
    text = csv_text(SAMPLE_HEADER, rows)
    with pytest.raises(DatasetError) as whole:
        parse_labelled_csv(text.encode(), name="bad.csv", settings=project.config().schema,
                           schema=ingested_data.frozen_schema(record_before))
    project.add_source("bad.csv", text)
    result = ingest(project)
    assert [entry["reason"] for entry in result.rejected] == [str(whole.value).removeprefix("bad.csv: ")]
    assert {name: (project.ingested / name).read_bytes() for name in before} == before
    record = project.record()
    assert (record["rows"], record["bytes"], record["parts"]) == (record_before["rows"], record_before["bytes"],
                                                                record_before["parts"])
    left = sorted(path.name for path in (project.ingested / ingested_data.PARTS_FOLDER).iterdir())
    assert left == [part["file"] for part in record["parts"]]
    assert not (project.ingested / ingested_data.INTENT_FILE).exists()


def test_a_crash_mid_file_leaves_the_committed_data_and_the_next_tick_ingests_the_file(tmp_path, monkeypatch):
    history, new = history_and_new_file()
    (_whole, _), (clean, _) = ingested_twice(tmp_path, monkeypatch, {"a_history.csv": history, "b_new.csv": new})
    project = make_project(tmp_path / "crashed", sources=())
    project.add_source("a_history.csv", history)
    ingest(project)
    committed = project.record()
    real_write_part = ingested_data.write_part
    calls = []

    def crash_at_the_fourth_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("killed")  # the process dies here: nothing is undone
        return real_write_part(*args, **kwargs)

    monkeypatch.setattr(ingested_data, "write_part", crash_at_the_fourth_chunk)
    project.add_source("b_new.csv", new)
    with pytest.raises(RuntimeError):
        ingest(project)
    assert project.record()["rows"] == committed["rows"]
    assert (project.ingested / "finaldata.csv").stat().st_size > committed["bytes"]  # three chunks, uncommitted
    assert ingested_data.read_ingested_data(project.ingested)[0].shape[0] == committed["rows"]
    monkeypatch.setattr(ingested_data, "write_part", real_write_part)
    result = ingest(project)
    assert [entry["name"] for entry in result.accepted] == ["b_new.csv"]
    assert "cutting" in project.log("ingestion") and "uncommitted bytes" in project.log("ingestion")
    crashed_state, clean_state = state(project), state(clean)
    crashed_state["log"] = clean_state["log"] = None  # the crashed project's log tells of the crash
    assert_same_state(crashed_state, clean_state)


def test_a_large_file_keeps_its_hashes_in_a_sorted_array_not_a_set(tmp_path):
    import numpy as np

    (tmp_path / "rowhashes.bin").write_bytes(np.arange(10, dtype=np.uint64).tobytes())
    index = ingestion._HashIndex(tmp_path / "rowhashes.bin", 10)
    index.add(np.array([100, 101], dtype=np.uint64))  # a small file: into the set
    index.add(np.arange(1_000, 1_000 + index.ADDED_IN_SET, dtype=np.uint64))  # past the set's limit: merged
    assert not index._added and len(index._sorted) == 10 + 2 + index.ADDED_IN_SET
    assert index.contains(np.array([5, 100, 101, 1_000 + index.ADDED_IN_SET - 1, 99], dtype=np.uint64)).tolist() == [
        True, True, True, True, False]


@pytest.mark.parametrize("kind", ["labelled file", "customer file"])
def test_the_text_of_a_large_file_goes_to_pandas_in_the_sizes_it_asks_for(kind):
    """pandas keeps what a read returns past the size it asked for and copies it again on every read:
    handed a block at a time, half of a large file's text piled up there (24 MiB of a 48 MB file)."""
    import io

    data = ("a,b\n" + "1,2\n" * 600_000).encode()  # 2.4 MB: more than two read blocks
    handle = io.BytesIO(data)
    if kind == "labelled file":
        text = dataset._LabelledText(handle, "f.csv", dataset.RecordWidths("f.csv"))
    else:
        text = dataset._CheckedText(handle, "f.csv")
    pieces = []
    while piece := text.read(65_536):
        assert len(piece) <= 65_536
        pieces.append(piece)
    assert "".join(pieces) == data.decode()
