"""Hostile and broken files dropped into sourcedata/.

Each kind is either ingested correctly or rejected with a reason that names the problem (column,
row, line, byte), in ``ingesteddata/ingestion_record.json`` and ``logs/ingestion_record.txt``; the
good files of the same tick still go in; a rejected file is not tried again until it changes; and
nothing crashes or hangs. ``HOSTILE_KINDS`` counts the kinds covered (docs/reliability.md quotes it):
``CONTENT_KINDS`` below, one parametrized case each, plus one test per folder-level kind (symlinks,
FIFOs, folders, files that grow, vanish or cannot be read, unprintable names), each registered with
``@kind``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ingestion
from helpers import ROOT, SAMPLE_HEADER, Project, make_project

HEADER = ",".join(SAMPLE_HEADER)
GOOD_FIRST = ("a_good.csv", [["a", "10", "100", "5", "basic", "1"], ["b", "20", "200", "6", "premium", "0"]])
GOOD_LAST = ("z_good.csv", [["z", "30", "300", "7", "basic", "0"], ["y", "40", "400", "8", "premium", "1"]])
GOOD_ROWS = GOOD_FIRST[1] + GOOD_LAST[1]
HOSTILE = "m_hostile.csv"  # taken between the good files: a reject must not stop the files after it
MB = 1024 * 1024


def text(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Kind:
    """One kind of hostile content: ``reason`` for a reject, else the canonical rows it must add."""

    id: str
    data: bytes
    reason: str | None = None
    rows: list[list[str]] = field(default_factory=list)
    rows_read: int | None = None  # when it differs from len(rows) (duplicates dropped)
    notes: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # an image renamed .csv: its first NUL is at offset 8, on line 3
LATIN1 = text(HEADER, "l1,1,2,3,basic,1", "caf\xe9,1,2,3,basic,0").decode().encode("latin-1")
NUL_MIDDLE = text(HEADER, "n1,1,2,3,basic,1", "n2,1,2\x00,3,basic,0")
WIDE_EXTRA = [f"extra_{i}" for i in range(2_000)]

CONTENT_KINDS = [
    Kind("empty file", b"", reason="empty file"),
    Kind("whitespace only", b"  \n\t\n \r\n", reason="empty file"),
    Kind("header only", text(HEADER), reason="header only, no data rows"),
    Kind("no header", text("q1,461,3706,75,premium,0", "q2,138,1707,13,premium,1"),
         reason="target column 'exited' missing; the first line looks like data (it holds the number '461'), "
                "the file seems to have no header"),
    Kind("semicolon delimiter", text(HEADER.replace(",", ";"), "s1;1;2;3;basic;1"),
         reason="target column 'exited' missing; the header is one column, the file seems to use ';' as "
                "delimiter (only ',' is read)"),
    Kind("semicolon delimiter with decimal commas", text(HEADER.replace(",", ";"), "s1;1,5;2;3;basic;1"),
         reason="not a well-formed CSV file: Expected 1 fields in line 2, saw 2; the header has no ',', "
                "the file seems to use ';' as delimiter (only ',' is read)"),
    Kind("missing target", text(HEADER.removesuffix(",exited"), "t1,1,2,3,basic"),
         reason="target column 'exited' missing; header has 'corporation', 'lastmonth_activity', "
                "'lastyear_activity', 'number_of_employees', 'plan'"),
    Kind("missing feature column", text(HEADER.replace(",plan", ""), "f1,1,2,3,1"),
         reason="feature column(s) missing: plan"),
    Kind("target with three values", text(HEADER, "v1,1,2,3,basic,1", "v2,1,2,3,basic,0", "v3,1,2,3,basic,2"),
         reason="target 'exited': values that read as neither class (1/0, yes/no, true/false): '2' (row 3: '2')"),
    Kind("one class only", text(HEADER, "one1,1,2,3,basic,0", "one2,4,5,6,basic,0"),
         rows=[["one1", "1", "2", "3", "basic", "0"], ["one2", "4", "5", "6", "basic", "0"]],
         notes=["only class 0 present"]),
    Kind("mixed-case target values", text(HEADER, "c1,1,2,3,basic,Yes", "c2,1,2,3,basic,NO",
                                          "c3,1,2,3,basic,True", "c4,1,2,3,basic,fAlSe"),
         rows=[["c1", "1", "2", "3", "basic", "1"], ["c2", "1", "2", "3", "basic", "0"],
               ["c3", "1", "2", "3", "basic", "1"], ["c4", "1", "2", "3", "basic", "0"]]),
    Kind("text in a numeric column", text(HEADER, "x1,1,2,3,basic,1", "x2,abc,2,3,basic,0"),
         reason="column 'lastmonth_activity': 1 value(s) are not numbers (row 2: 'abc')"),
    Kind("NaN values", text(HEADER, "n1,NaN,2,3,basic,1", "n2,1,nan,3,basic,0"),
         rows=[["n1", "", "2", "3", "basic", "1"], ["n2", "1", "", "3", "basic", "0"]]),
    Kind("infinite values", text(HEADER, "i1,1,inf,3,basic,1", "i2,1,-Infinity,3,basic,0"),
         reason="column 'lastyear_activity': 2 value(s) are infinite (row 1: 'inf', row 2: '-Infinity')"),
    Kind("number too large for a float", text(HEADER, "h1,1e400,2,3,basic,1"),
         reason="column 'lastmonth_activity': 1 value(s) are infinite (row 1: '1e400')"),
    Kind("blank and whitespace-only lines", text("", "  ", HEADER, "", "k1,1,2,3,basic,1", "   ", "\t",
                                                 " , , ,,, ", "k2,1,2,3,basic,0", ""),
         rows=[["k1", "1", "2", "3", "basic", "1"], ["k2", "1", "2", "3", "basic", "0"]]),
    Kind("UTF-8 byte-order mark", b"\xef\xbb\xbf" + text(HEADER, "u1,1,2,3,basic,1", "u2,1,2,3,basic,0"),
         rows=[["u1", "1", "2", "3", "basic", "1"], ["u2", "1", "2", "3", "basic", "0"]]),
    Kind("Latin-1 bytes", LATIN1,
         reason=f"not UTF-8 text (byte 0xe9 on line 3, offset {LATIN1.index(0xE9)}); save the file as UTF-8"),
    Kind("UTF-16 text", ("\ufeff" + HEADER + "\nw1,1,2,3,basic,1\n").encode("utf-16-le"),
         reason="UTF-16 text (it starts with a UTF-16 byte-order mark); save the file as UTF-8"),
    Kind("binary garbage", PNG_START + bytes(range(256)) * 16,
         reason="binary data (a NUL byte on line 3, offset 8), not a CSV text file"),
    Kind("NUL byte in the middle", NUL_MIDDLE,
         reason=f"binary data (a NUL byte on line 3, offset {NUL_MIDDLE.index(0)}), not a CSV text file"),
    Kind("a line of several MB in a column", text(HEADER, "g1,1,2,3,basic,1", "g2,1,2,3," + "p" * (5 * MB) + ",0"),
         reason=f"column 'plan' row 2: a value of {5 * MB:,} characters (at most 10,000 are read)"),
    Kind("a header name of several MB", text(HEADER + "," + "!" * (5 * MB), "g1,1,2,3,basic,1,x"),
         reason=f"header column 7: a name of {5 * MB:,} characters (at most 1,000 are read)"),
    Kind("a line of several MB of fields", text(HEADER, "g1,1,2,3,basic,1" + ",9" * (3 * MB // 2)),
         reason=f"not a well-formed CSV file: Expected 6 fields in line 2, saw {6 + 3 * MB // 2}"),
    Kind("duplicate column names", text("corporation,Plan,lastmonth_activity,lastyear_activity,"
                                        "number_of_employees,plan,exited", "d1,pro,1,2,3,basic,1"),
         reason="duplicate column name 'plan' (header has 'Plan' and 'plan')"),
    Kind("header with only commas", text(",,,,,", "e1,1,2,3,basic,1"),
         reason="the header (first line) has no column names: ',,,,,'"),
    Kind("extra columns", text(HEADER + ",notes,score", "e1,1,2,3,basic,1,hello,5", "e2,4,5,6,premium,0,,"),
         rows=[["e1", "1", "2", "3", "basic", "1"], ["e2", "4", "5", "6", "premium", "0"]],
         ignored_columns=["notes", "score"]),
    Kind("2,000 extra columns", text(HEADER + "," + ",".join(WIDE_EXTRA), "w1,1,2,3,basic,1," + ",".join(["7"] * 2_000)),
         rows=[["w1", "1", "2", "3", "basic", "1"]], notes=["only class 1 present"], ignored_columns=WIDE_EXTRA),
    Kind("20,000 columns", text(HEADER + "," + ",".join(f"c{i}" for i in range(20_000)),
                                "w1,1,2,3,basic,1," + ",".join(["7"] * 20_000)),
         reason="the header has 20,006 columns (at most 10,000 are read)"),
    Kind("columns in another order", text("Exited,plan,number_of_employees,lastyear_activity,lastmonth_activity,"
                                          "corporation", "1,basic,3,2,1,o1", "0,premium,6,5,4,o2"),
         rows=[["o1", "1", "2", "3", "basic", "1"], ["o2", "4", "5", "6", "premium", "0"]]),
    Kind("quoted fields with newlines", text(HEADER, '"q\nco",1,2,3,"basic\nplus",1', 'q2,1,2,3,"say ""hi"", ok",0'),
         rows=[["q\nco", "1", "2", "3", "basic\nplus", "1"], ["q2", "1", "2", "3", 'say "hi", ok', "0"]]),
    Kind("a quote never closed", text(HEADER, "q1,1,2,3,basic,1", 'q2,1,2,3,"basic,0', "q3,1,2,3,basic,1"),
         reason="not a well-formed CSV file: a quoted field starting on line 3 is never closed (unmatched '\"')"),
    Kind("CRLF line endings", text(HEADER, "r1,1,2,3,basic,1", "r2,1,2,3,premium,0").replace(b"\n", b"\r\n"),
         rows=[["r1", "1", "2", "3", "basic", "1"], ["r2", "1", "2", "3", "premium", "0"]]),
    Kind("CR-only line endings", text(HEADER, "mac1,1,2,3,basic,1", "mac2,1,2,3,premium,0").replace(b"\n", b"\r"),
         rows=[["mac1", "1", "2", "3", "basic", "1"], ["mac2", "1", "2", "3", "premium", "0"]]),
    Kind("rows with missing trailing fields", text(HEADER, "m1,1,2,3,basic,1", "m2,1,2"),
         reason="row 2 has 3 fields, the header has 6"),
    Kind("a short row whose label is in place", text(HEADER, "m1,1,2,3,basic,1", "shortrow,10,200", "m3,1,2,3,basic,0"),
         reason="row 2 has 3 fields, the header has 6"),
    Kind("a file cut off mid-write", text(HEADER, "m1,1,2,3,basic,1", "m2,4,5,6,premium,0").rstrip(b"\n")[:-12],
         reason="row 2 has 3 fields, the header has 6"),
    Kind("a short row after a quoted line break and blank lines", text(HEADER, '"q\nx",1,2,3,basic,1', "", " , ,",
                                                                       "s2,1,2,3,basic"),
         reason="row 2 has 5 fields, the header has 6"),
    Kind("rows with more fields than the header", text(HEADER, "m1,1,2,3,basic,1", "m2,1,2,3,basic,0,9"),
         reason="not a well-formed CSV file: Expected 6 fields in line 3, saw 7"),
    Kind("two files concatenated (header repeated)", text(HEADER, "j1,1,2,3,basic,1", HEADER, "j2,1,2,3,basic,0"),
         reason="column 'lastmonth_activity': 1 value(s) are not numbers (row 2: 'lastmonth_activity')"),
    Kind("only rows ingested before", text(HEADER, "a,10,100,5,basic,1", "a,10.0, 100 ,5,basic,yes"),
         rows=[], rows_read=2, notes=["only class 1 present"]),
]

FILESYSTEM_KINDS: list[str] = []


def kind(*descriptions: str):
    """Register a test as covering folder-level hostile kinds (one each, counted in HOSTILE_KINDS)."""
    def register(test):
        FILESYSTEM_KINDS.extend(descriptions)
        return test
    return register


# --- helpers: what a user looks at ---


def ingest(project: Project):
    from churnlib.logsetup import close_logging, setup_logging

    config = project.config()
    setup_logging(config.paths.logs, "ingestion")
    try:
        return ingestion.run_ingestion(config)
    finally:
        close_logging()


def add_good_files(project: Project) -> None:
    """Write the good files, dated so that a file written later is taken between them (oldest first)."""
    for (name, rows), modified in ((GOOD_FIRST, 946_684_800), (GOOD_LAST, 4_102_444_800)):  # 2000, 2100
        path = project.add_source(name, text(HEADER, *(",".join(row) for row in rows)))
        os.utime(path, (modified, modified))


def final_rows(project: Project) -> list[list[str]]:
    """Return finaldata.csv's data rows as text cells, checking its header."""
    with open(project.ingested / "finaldata.csv", newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == SAMPLE_HEADER
    return rows


def readable_record(project: Project) -> str:
    return (project.logs / "ingestion_record.txt").read_text(encoding="utf-8")


def assert_ingested(project: Project, expected_rows: list[list[str]]) -> None:
    """The good files and ``expected_rows`` are in finaldata.csv, and the record counts exactly them."""
    record = project.record()
    rows = final_rows(project)
    assert sorted(rows) == sorted(GOOD_ROWS + expected_rows)
    assert record["rows"] == len(rows) == len(GOOD_ROWS) + len(expected_rows)
    names = [entry["name"] for entry in record["files"]]
    assert GOOD_FIRST[0] in names and GOOD_LAST[0] in names
    for name in (GOOD_FIRST[0], GOOD_LAST[0]):
        entry = next(e for e in record["files"] if e["name"] == name)
        assert (entry["rows_read"], entry["rows_added"]) == (2, 2)
        assert f" {name} " in readable_record(project)


def assert_rejected(project: Project, name: str, reason: str) -> None:
    """``name`` is rejected once, with exactly ``reason``, in the record, its readable form and the log."""
    record = project.record()
    entries = [entry for entry in record["rejected"] if entry["name"] == name]
    assert [entry["reason"] for entry in entries] == [reason]
    assert name not in [entry["name"] for entry in record["files"]]
    assert f" {name:<32} {reason}\n" in readable_record(project)
    assert project.log("ingestion").count(f"rejected {name}: {reason}\n") == 1


@contextmanager
def must_finish_within(seconds: int):
    """Fail, instead of hanging the test run, when the block takes longer (a FIFO opened for reading blocks)."""
    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: blocked (on a FIFO?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def hostile_project(empty_project) -> Project:
    """An empty project with the two good files of every tick in sourcedata/."""
    add_good_files(empty_project)
    return empty_project


# --- content kinds: one case each ---


@pytest.mark.parametrize("case", CONTENT_KINDS, ids=[case.id for case in CONTENT_KINDS])
def test_hostile_content_is_ingested_or_rejected_with_its_reason_and_good_files_go_in(hostile_project, case):
    project = hostile_project
    project.add_source(HOSTILE, case.data)
    result = ingest(project)

    assert result.deferred == []
    assert_ingested(project, case.rows)
    if case.reason is not None:
        assert [(r["name"], r["reason"]) for r in result.rejected] == [(HOSTILE, case.reason)]
        assert [f["name"] for f in result.accepted] == [GOOD_FIRST[0], GOOD_LAST[0]]
        assert_rejected(project, HOSTILE, case.reason)
    else:
        assert result.rejected == []
        assert [f["name"] for f in result.accepted] == [GOOD_FIRST[0], HOSTILE, GOOD_LAST[0]]
        entry = next(e for e in project.record()["files"] if e["name"] == HOSTILE)
        rows_read = len(case.rows) if case.rows_read is None else case.rows_read
        assert (entry["rows_read"], entry["rows_added"]) == (rows_read, len(case.rows))
        assert entry["notes"] == case.notes
        assert entry["ignored_columns"] == case.ignored_columns
        log = project.log("ingestion")
        assert f"ingested {HOSTILE}: {rows_read} rows read, {len(case.rows)} added" in log
        assert max(map(len, log.splitlines())) < 1_000  # no line carries a wide file's 2,000 column names
        if len(case.ignored_columns) > ingestion.SHOWN_IGNORED_COLUMNS:
            assert "extra columns ignored: extra_0, extra_1, " in log
            assert f" and {len(case.ignored_columns) - ingestion.SHOWN_IGNORED_COLUMNS:,} more" in log

    # A second tick: nothing new, nothing retried, nothing counted twice.
    again = ingest(project)
    assert (again.accepted, again.rejected, again.deferred) == ([], [], [])
    assert_ingested(project, case.rows)
    if case.reason is not None:
        assert_rejected(project, HOSTILE, case.reason)


def test_a_rejected_file_is_tried_again_once_its_content_changes(hostile_project):
    project = hostile_project
    bad = project.add_source(HOSTILE, text(HEADER, "x1,1,2,3,basic,1", "x2,abc,2,3,basic,0"))
    ingest(project)
    bad.touch()  # new times, same content: still the rejected content
    assert ingest(project).rejected == []
    bad.write_bytes(text(HEADER, "x1,1,2,3,basic,1", "x2,4,2,3,basic,0"))
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == [HOSTILE]
    assert_ingested(project, [["x1", "1", "2", "3", "basic", "1"], ["x2", "4", "2", "3", "basic", "0"]])
    assert len(project.record()["rejected"]) == 1  # the earlier rejection stays as history


# --- folder-level kinds ---


@kind("a 0-byte file that is filled later")
def test_a_zero_byte_file_is_rejected_as_empty_then_ingested_once_filled(hostile_project):
    project = hostile_project
    path = project.add_source(HOSTILE, b"")
    ingest(project)
    assert_rejected(project, HOSTILE, "empty file")
    assert ingest(project).rejected == []  # unchanged: not tried again
    path.write_bytes(text(HEADER, "f1,1,2,3,basic,1"))
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == [HOSTILE]
    assert_ingested(project, [["f1", "1", "2", "3", "basic", "1"]])


def scan_then(action):
    """Return a scan_source that runs ``action`` after the scan, before ingest_files reads what it found."""
    real_scan = ingestion.scan_source

    def scan_source(*args, **kwargs):
        scan = real_scan(*args, **kwargs)
        action()
        return scan

    return scan_source


@kind("a file still being written")
def test_a_file_growing_between_the_scan_and_the_read_is_deferred_then_ingested(hostile_project, monkeypatch):
    project = hostile_project
    path = project.add_source(HOSTILE, text(HEADER, "w1,1,2,3,basic,1"))

    def writer_goes_on():
        with open(path, "a") as handle:
            handle.write("w2,4,5,6,premium,0\n")

    monkeypatch.setattr(ingestion, "scan_source", scan_then(writer_goes_on))
    result = ingest(project)
    assert result.deferred == [HOSTILE] and result.rejected == []
    assert_ingested(project, [])
    assert project.record()["rejected"] == []
    assert f"{HOSTILE}: changed while being read (still being written?), will try again next tick" in project.log("ingestion")

    monkeypatch.undo()  # the writer is done
    result = ingest(project)
    assert [(f["name"], f["rows_read"], f["rows_added"]) for f in result.accepted] == [(HOSTILE, 2, 2)]
    assert_ingested(project, [["w1", "1", "2", "3", "basic", "1"], ["w2", "4", "5", "6", "premium", "0"]])
    assert project.record()["rejected"] == []


@kind("a file deleted between the scan and the read")
def test_a_file_vanishing_mid_run_is_skipped_and_the_rest_goes_in(hostile_project, monkeypatch):
    project = hostile_project
    path = project.add_source(HOSTILE, text(HEADER, "v1,1,2,3,basic,1"))
    monkeypatch.setattr(ingestion, "scan_source", scan_then(path.unlink))
    result = ingest(project)
    assert (result.rejected, result.deferred) == ([], [])
    assert [f["name"] for f in result.accepted] == [GOOD_FIRST[0], GOOD_LAST[0]]
    assert_ingested(project, [])
    assert f"{HOSTILE}: vanished before it could be read, skipped" in project.log("ingestion")
    monkeypatch.undo()
    assert ingest(project).accepted == []
    assert HOSTILE not in project.record()["seen"]


@kind("a FIFO put in place of a file between the scan and the read")
def test_a_fifo_swapped_in_after_the_scan_does_not_hang_the_tick(hostile_project, monkeypatch):
    project = hostile_project
    path = project.add_source(HOSTILE, text(HEADER, "v1,1,2,3,basic,1"))

    def swap_for_fifo():
        path.unlink()
        os.mkfifo(path)

    monkeypatch.setattr(ingestion, "scan_source", scan_then(swap_for_fifo))
    with must_finish_within(20):
        result = ingest(project)
    assert result.deferred == [HOSTILE] and result.rejected == []
    assert_ingested(project, [])
    monkeypatch.undo()
    with must_finish_within(20):
        ingest(project)
    assert project.record()["ignored"] == {HOSTILE: "not a regular file"}


@kind("a FIFO named x.csv")
def test_a_fifo_is_ignored_without_hanging(hostile_project):
    project = hostile_project
    os.mkfifo(project.source / HOSTILE)
    with must_finish_within(20):
        result = ingest(project)
        ingest(project)
    assert result.rejected == []
    assert_ingested(project, [])
    assert project.record()["ignored"] == {HOSTILE: "not a regular file"}
    assert f"{HOSTILE:<32} not a regular file" in readable_record(project)
    assert project.log("ingestion").count(f"ignored {HOSTILE}: not a regular file") == 1


@kind("a folder named x.csv")
def test_a_folder_named_like_a_csv_file_is_ignored(hostile_project):
    project = hostile_project
    (project.source / HOSTILE).mkdir()
    (project.source / HOSTILE / "inner.csv").write_bytes(text(HEADER, "d1,1,2,3,basic,1"))
    result = ingest(project)
    ingest(project)
    assert result.rejected == []
    assert_ingested(project, [])  # not descended into
    assert project.record()["ignored"] == {HOSTILE: "a folder, not a file"}
    assert f"{HOSTILE:<32} a folder, not a file" in readable_record(project)
    assert project.log("ingestion").count(f"ignored {HOSTILE}: a folder, not a file") == 1


@kind("a symlink to a file outside the folder")
def test_a_symlink_leading_out_of_the_folder_is_rejected_unread(hostile_project, tmp_path):
    project = hostile_project
    outside = tmp_path / "secret" / "outside.csv"
    outside.parent.mkdir()
    outside.write_bytes(text(HEADER, "s1,1,2,3,basic,1"))
    os.symlink(outside, project.source / HOSTILE)
    result = ingest(project)
    reason = f"a symlink to {outside.resolve()}, outside sourcedata/; not read"
    assert [(r["name"], r["reason"]) for r in result.rejected] == [(HOSTILE, reason)]
    assert_ingested(project, [])
    assert_rejected(project, HOSTILE, reason)
    outside.write_bytes(text(HEADER, "s2,1,2,3,basic,1"))  # its target changes, the link does not
    assert ingest(project).rejected == []
    assert_rejected(project, HOSTILE, reason)


@kind("a symlink loop")
def test_a_symlink_loop_is_rejected_not_a_crash(hostile_project):
    project = hostile_project
    os.symlink(HOSTILE, project.source / HOSTILE)
    result = ingest(project)
    reason = f"cannot read the file: {os.strerror(errno.ELOOP)}; not read"
    assert [(r["name"], r["reason"]) for r in result.rejected] == [(HOSTILE, reason)]
    assert_ingested(project, [])
    assert_rejected(project, HOSTILE, reason)
    assert ingest(project).rejected == []
    assert_rejected(project, HOSTILE, reason)


@kind("a symlink to a missing file")
def test_a_dangling_symlink_is_noted_and_read_once_its_target_appears(hostile_project):
    project = hostile_project
    os.symlink("later.data", project.source / HOSTILE)
    result = ingest(project)
    assert result.rejected == []
    assert_ingested(project, [])
    assert project.record()["ignored"] == {HOSTILE: "a symlink to later.data, which does not exist"}
    (project.source / "later.data").write_bytes(text(HEADER, "l1,1,2,3,basic,1"))
    result = ingest(project)
    assert [f["name"] for f in result.accepted] == [HOSTILE]
    assert_ingested(project, [["l1", "1", "2", "3", "basic", "1"]])
    assert project.record()["ignored"] == {"later.data": "not a .csv file"}


@kind("a file name that is not UTF-8", "a file name with a newline")
@pytest.mark.parametrize("raw_name, shown", [(b"caf\xe9.csv", "caf\\xe9.csv"), (b"two\nlines.csv", "two\\nlines.csv")],
                         ids=["latin-1 name", "newline in name"])
def test_a_file_name_that_is_not_printable_utf8_is_rejected_not_a_crash(hostile_project, raw_name, shown):
    project = hostile_project
    with open(os.path.join(os.fsencode(project.source), raw_name), "wb") as handle:
        handle.write(text(HEADER, "n1,1,2,3,basic,1"))
    name = os.fsdecode(raw_name)
    result = ingest(project)
    reason = f"the file name is not printable UTF-8 text ({shown}); rename the file; not read"
    assert [(r["name"], r["reason"]) for r in result.rejected] == [(name, reason)]
    assert_ingested(project, [])
    assert f" {shown:<32} {reason}\n" in readable_record(project)
    assert project.log("ingestion").count(f"rejected {shown}: {reason}\n") == 1
    assert ingest(project).rejected == []
    assert len(project.record()["rejected"]) == 1


def test_a_non_csv_file_with_an_undecodable_name_is_ignored_not_a_crash(hostile_project):
    project = hostile_project
    with open(os.path.join(os.fsencode(project.source), b"notes\xff.txt"), "wb") as handle:
        handle.write(b"hello")
    ingest(project)
    assert_ingested(project, [])
    assert project.record()["ignored"] == {os.fsdecode(b"notes\xff.txt"): "not a .csv file"}
    shown = "notes\\xff.txt"
    assert f"{shown:<32} not a .csv file" in readable_record(project)


# --- a file the pipeline's user may not read ---


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@pytest.fixture
def unprivileged_project(tmp_path):
    """A project the user running the unprivileged ingestion can use.

    As root, that user is ``nobody``: the project lives in a folder nobody can enter (pytest's
    tmp_path is under a root-only folder) and belongs to nobody.
    """
    if os.geteuid() != 0:
        project = make_project(tmp_path / "project", sources=())
        add_good_files(project)
        yield project
        return
    nobody = _nobody()
    assert nobody is not None, "running as root: the user 'nobody' is needed to drop privileges"
    base = Path(tempfile.mkdtemp(prefix="churn-hostile-"))
    try:
        os.chmod(base, 0o755)
        project = make_project(base / "project", sources=())
        add_good_files(project)
        for folder, _dirs, files in os.walk(project.root):
            for path in [folder, *(os.path.join(folder, name) for name in files)]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        yield project
    finally:
        shutil.rmtree(base, ignore_errors=True)


UNPRIVILEGED_INGESTION = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import ingestion
    from churnlib.config import load_config
    from churnlib.dataset import canonical_lines, parse_labelled_csv
    from churnlib.logsetup import setup_logging

    if os.geteuid() == 0:
        # This interpreter and its standard library live under /root, where nobody may not look:
        # load what ingestion loads lazily (codecs, pandas' parsers) before dropping privileges.
        config = load_config({config!r})
        parsed = parse_labelled_csv("\\ufeffx,exited\\n1,1\\n".encode(), name="warm-up", settings=config.schema, schema=None)
        ingestion.row_hashes(canonical_lines(parsed.frame, parsed.schema))
        import pyarrow.parquet  # noqa: F401 (the columnar history's writer)
        os.setgroups([])
        os.setgid({gid})
        os.setuid({uid})
    assert os.geteuid() != 0
    config = load_config({config!r})
    setup_logging(config.paths.logs, "ingestion")
    result = ingestion.run_ingestion(config)
    print(json.dumps({{"accepted": [f["name"] for f in result.accepted],
                      "rejected": [[r["name"], r["reason"]] for r in result.rejected]}}))
""")


def ingest_unprivileged(project: Project) -> dict:
    """Run one ingestion in a child process as a user without root's power to read anything."""
    nobody = _nobody()
    script = UNPRIVILEGED_INGESTION.format(root=str(ROOT), config=str(project.config_path),
                                           uid=nobody.pw_uid if nobody else 65534,
                                           gid=nobody.pw_gid if nobody else 65534)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=project.root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@kind("a file without read permission")
def test_a_file_without_read_permission_is_rejected_then_ingested_once_readable(unprivileged_project):
    project = unprivileged_project
    path = project.add_source(HOSTILE, text(HEADER, "p1,1,2,3,basic,1"))
    if os.geteuid() == 0:
        os.chown(path, project.source.stat().st_uid, project.source.stat().st_gid)
    path.chmod(0)
    owner = pwd.getpwuid(path.stat().st_uid).pw_name
    reader = owner  # the pipeline's user owns the file: only the mode stands in the way
    reason = (f"cannot read the file: permission denied (----------, owner {owner}); "
              f"make it readable by {reader}, the user running the pipeline")

    result = ingest_unprivileged(project)
    assert result == {"accepted": [GOOD_FIRST[0], GOOD_LAST[0]], "rejected": [[HOSTILE, reason]]}
    assert_ingested(project, [])
    assert_rejected(project, HOSTILE, reason)

    assert ingest_unprivileged(project) == {"accepted": [], "rejected": []}  # unchanged: not tried again
    assert_rejected(project, HOSTILE, reason)

    path.chmod(0o644)
    assert ingest_unprivileged(project) == {"accepted": [HOSTILE], "rejected": []}
    assert_ingested(project, [["p1", "1", "2", "3", "basic", "1"]])


# --- all at once, through a real pipeline tick ---


def test_one_fullprocess_tick_with_every_hostile_file_exits_0_and_ingests_the_good_ones(project, tmp_path):
    """The shipped sample files and every hostile kind in one cron tick: exit 0, a first model, every reason."""
    add_good_files(project)
    names = {}
    for number, case in enumerate(CONTENT_KINDS):
        names[case.id] = project.add_source(f"hostile_{number:02d}.csv", case.data).name
    outside = tmp_path / "outside.csv"
    outside.write_bytes(text(HEADER, "s1,1,2,3,basic,1"))
    os.symlink(outside, project.source / "hostile_link.csv")
    os.symlink("hostile_loop.csv", project.source / "hostile_loop.csv")
    os.mkfifo(project.source / "hostile_fifo.csv")
    (project.source / "hostile_folder.csv").mkdir()
    with open(os.path.join(os.fsencode(project.source), b"hostile_\xff.csv"), "wb") as handle:
        handle.write(text(HEADER, "n1,1,2,3,basic,1"))

    with must_finish_within(120):
        assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "cold_start"
    record = project.record()
    files = {entry["name"]: entry for entry in record["files"]}
    assert [files[name]["rows_added"] for name in ("a_good.csv", "dataset1.csv", "dataset2.csv", "z_good.csv")] == [
        2, 400, 390, 2]
    added = sum(len(case.rows) for case in CONTENT_KINDS)
    assert record["rows"] == 794 + added == sum(entry["rows_added"] for entry in record["files"])
    rejected = {entry["name"]: entry["reason"] for entry in record["rejected"]}
    for case in CONTENT_KINDS:
        if case.reason is None:
            assert files[names[case.id]]["rows_added"] == len(case.rows), case.id
        else:
            assert rejected[names[case.id]] == case.reason, case.id
    assert rejected["hostile_link.csv"] == f"a symlink to {outside.resolve()}, outside sourcedata/; not read"
    assert rejected["hostile_loop.csv"].startswith("cannot read the file: ")
    assert rejected[os.fsdecode(b"hostile_\xff.csv")].startswith("the file name is not printable UTF-8 text")
    assert record["ignored"] == {"hostile_fifo.csv": "not a regular file", "hostile_folder.csv": "a folder, not a file"}
    assert len(final_rows(project)) == record["rows"]

    with must_finish_within(60):
        assert project.tick() == 0
    assert project.last_run()["decision"] == "nothing_new"
    assert project.record()["rejected"] == record["rejected"]


HOSTILE_KINDS = len(CONTENT_KINDS) + len(FILESYSTEM_KINDS)


def test_the_count_of_hostile_kinds_is_the_one_the_readme_quotes():
    assert HOSTILE_KINDS == 53, "a kind was added or removed: update this number and docs/reliability.md's"


@pytest.mark.parametrize("seed", range(20))
def test_short_rows_are_found_wherever_the_blocks_of_text_are_cut(seed):
    """The field counter sees a file a block at a time: quoted line breaks, CRLF pairs and rows may be
    cut anywhere, and the row it names is the one the csv module names for the whole text."""
    import random

    from churnlib.dataset import DatasetError, RecordWidths

    rng = random.Random(seed)
    cells = ["a", "", " ", '"q,1"', '"two\nlines"', '"say ""hi"""', '"\r\n"', "7"]
    rows = []
    for _ in range(200):
        if rng.random() < 0.05:
            rows.append(rng.choice(["", "  ", " , , , "]))
        else:
            rows.append(",".join(rng.choice(cells) for _ in range(4)))
    short_at = rng.randrange(50, 200)
    rows[short_at] = "s,hort"
    text = "h1,h2,h3,h4\r\n" + "\r\n".join(rows) + rng.choice(["", "\r\n"])
    expected = 1 + sum(1 for record in csv.reader(io.StringIO(text.split("s,hort")[0], newline=""))
                       if any(cell.strip() for cell in record)) - 1  # data rows before it, plus itself
    widths = RecordWidths("f.csv")
    with pytest.raises(DatasetError, match=rf"f.csv: row {expected} has 2 fields, the header has 4"):
        position = 0
        while position < len(text):
            size = rng.randrange(1, 40)
            widths.feed(text[position:position + size])
            position += size
            if rng.random() < 0.5:
                widths.check()
        widths.feed("")
        widths.check()


def test_a_short_row_far_after_a_quote_inside_a_cell_is_still_found(monkeypatch):
    """A quote inside an unquoted cell (O"Brien, 5") is a plain character to pandas and the csv module:
    it must not leave the rest of a large file, fed a block at a time, uncounted."""
    from churnlib.dataset import DatasetError, RecordWidths

    monkeypatch.setattr(RecordWidths, "MAX_QUOTED_LINES", 50)  # a large file's worth, in a small one
    rows = [f"c{i},1,2,3" for i in range(400)]
    rows[5] = 'O"Brien,1,2,3'
    rows[300] = "cut,1"
    text = "id,a,b,c\n" + "\n".join(rows) + "\n"
    widths = RecordWidths("f.csv")
    with pytest.raises(DatasetError, match=r"f.csv: row 301 has 2 fields, the header has 4"):
        for start in range(0, len(text), 500):
            widths.feed(text[start:start + 500])
            widths.check()
        widths.feed("")
        widths.check()


@pytest.mark.parametrize("stray", ['O"Brien', '5"', 'a "b" c'])
def test_a_quote_inside_a_cell_then_a_quoted_line_break_is_a_well_formed_file(stray):
    """pandas reads this file whole; the field counter must not refuse it (it took the stray quote for an opening one)."""
    import pandas as pd

    from churnlib.dataset import RecordWidths

    text = f'id,a,b,c\n{stray},1,2,3\nx,1,2,3\n"two\nlines",1,2,3\ny,"say ""hi""",2,3\n'
    assert len(pd.read_csv(io.StringIO(text), header=None, dtype=object)) == 5
    widths = RecordWidths("f.csv")
    widths.feed(text)
    widths.feed("")
    widths.check()
    assert widths.rows == 4


def test_a_batch_of_many_distinct_new_categories_is_named_in_a_bounded_drift_entry():
    import pandas as pd

    from churnlib.drift import _chi_square

    reference = pd.Series(["basic", "premium"] * 50)
    new = pd.Series(["enterprise"] * 30 + [f"plan-{i}-" + "x" * 200 for i in range(50_000)], dtype=object)
    result = _chi_square(reference, new)
    assert len(result["unseen_categories"]) == 20 and "enterprise" in result["unseen_categories"]
    assert all(len(value) <= 100 for value in result["unseen_categories"])
    assert result["unseen_count"] == 50_001
    assert len(json.dumps(result)) < 5_000
