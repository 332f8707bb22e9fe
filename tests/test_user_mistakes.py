"""Nothing is lost by a user's mistake on the pipeline's files: a deleted record, hand edits of the
ingested data, a config that contradicts the frozen schema, a file replaced under the same name,
a damaged state file, a full disk; and a backlog of files costs what its files cost."""

import contextlib
import json
import logging
import os
from pathlib import Path

import pytest

import ingestion
from churnlib import ingested
from helpers import SAMPLE_HEADER, batch, csv_text, run_script


def finaldata(project) -> bytes:
    return (project.ingested / "finaldata.csv").read_bytes()


def accept(project):
    return run_script("ingestion.py", "--config", str(project.config_path), "--accept-changes")


# --- item 3: a missing record never wipes history ----------------------------------------------


def test_a_missing_record_stops_the_tick_and_cuts_nothing(deployed):
    before = finaldata(deployed)
    (deployed.source / "dataset1.csv").unlink()  # a file no longer in sourcedata/: its rows exist only in finaldata.csv
    (deployed.ingested / "ingestion_record.json").unlink()
    result = deployed.tick_subprocess()
    assert result.returncode == 1, result.stderr
    assert "ingestion_record.json: missing" in result.stderr
    assert "will not guess" in result.stderr and "--accept-changes" in result.stderr
    assert finaldata(deployed) == before  # all 790 rows still there
    assert deployed.last_run()["decision"] == "failed"


def test_a_record_restored_from_the_release_and_accepted_keeps_every_row(deployed):
    deployed.add_source("dataset3.csv", batch(103))
    assert deployed.tick() == 0  # ingested after the deploy: the release's copy of the record lacks it
    before = finaldata(deployed)
    release = deployed.pointer()["current"]
    (deployed.ingested / "ingestion_record.json").unlink()
    assert deployed.tick_subprocess().returncode == 1
    copy = deployed.deployment / "releases" / release / "ingestion_record.json"
    (deployed.ingested / "ingestion_record.json").write_bytes(copy.read_bytes())
    refused = deployed.tick_subprocess()
    assert refused.returncode == 1 and "changed outside the pipeline" in refused.stderr
    accepted = accept(deployed)
    assert accepted.returncode == 0, accepted.stderr
    assert "1,090 rows (the record had 790)" in accepted.stdout
    assert deployed.tick() == 0
    assert finaldata(deployed) == before
    record = deployed.record()
    assert record["rows"] == 1090
    # dataset3.csv is in the record again, with no row counted twice
    assert [(f["name"], f["rows_added"]) for f in record["files"]][-1] == ("dataset3.csv", 0)


# --- item 4: hand edits are detected, not "repaired" -------------------------------------------


def test_rows_appended_by_hand_are_refused_not_deleted(deployed):
    with open(deployed.ingested / "finaldata.csv", "a") as handle:
        handle.write("byhand,10,100,5,basic,1\n")
    edited = finaldata(deployed)
    deployed.add_source("dataset3.csv", batch(103))
    result = deployed.tick_subprocess()
    assert result.returncode == 1
    assert "changed outside the pipeline" in result.stderr and "24 bytes after the" in result.stderr
    assert "--accept-changes" in result.stderr
    assert finaldata(deployed) == edited


def test_an_edit_that_lengthens_a_row_is_refused_and_the_next_file_waits(deployed):
    data = finaldata(deployed)
    row = data.index(b",basic,", len(data) // 2)
    edited = data[:row] + b",premium," + data[row + len(b",basic,"):]
    (deployed.ingested / "finaldata.csv").write_bytes(edited)
    deployed.add_source("dataset3.csv", batch(103))
    result = deployed.tick_subprocess()
    assert result.returncode == 1
    assert "changed outside the pipeline" in result.stderr
    assert finaldata(deployed) == edited  # nothing cut, nothing glued onto it
    assert "dataset3.csv" not in [f["name"] for f in deployed.record()["files"]]


def test_a_same_length_edit_is_caught_even_on_a_tick_with_nothing_new(deployed):
    data = bytearray(finaldata(deployed))
    label = len(data) - 2  # the last row's label
    assert data[label:label + 1] in (b"0", b"1")
    data[label] = ord("1") if data[label] == ord("0") else ord("0")
    (deployed.ingested / "finaldata.csv").write_bytes(bytes(data))
    result = deployed.tick_subprocess()
    assert result.returncode == 1
    assert "changed outside the pipeline" in result.stderr
    assert "(the rows from dataset2.csv)" in result.stderr, result.stderr


def test_a_touched_file_is_checked_in_full_once_and_normal_ticks_read_no_history(deployed, monkeypatch):
    full_checks = []
    original = ingested._changed_segments
    monkeypatch.setattr(ingested, "_changed_segments", lambda *a: full_checks.append(1) or original(*a))
    assert deployed.tick() == 0 and full_checks == []  # a normal tick: stat and the last 64 KiB only
    os.utime(deployed.ingested / "finaldata.csv", ns=(1, 1))  # a restore from a backup, a touch
    assert deployed.tick() == 0 and full_checks == [1]
    assert deployed.last_run()["decision"] == "nothing_new"
    assert deployed.tick() == 0 and full_checks == [1]  # the signs were updated: no second full check


def test_accepting_rows_added_by_hand_makes_them_new_rows_for_the_next_tick(deployed):
    rows = batch(104, count=40).splitlines()[1:]
    with open(deployed.ingested / "finaldata.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    assert deployed.tick_subprocess().returncode == 1
    result = accept(deployed)
    assert result.returncode == 0, result.stderr
    assert "830 rows (the record had 790)" in result.stdout
    # the column statistics the API answers from follow the data as accepted, with no worker reading it
    from churnlib.ingested import load_record, load_statistics

    statistics = load_statistics(deployed.ingested, load_record(deployed.ingested))
    assert statistics is not None and statistics["rows"] == 830
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] in ("no_drift", "retrained_deployed", "retrained_refused"), run["reason"]
    assert run["data_drift"]["new_rows"] == 40
    assert deployed.tick() == 0 and deployed.last_run()["decision"] == "nothing_new"


def test_restoring_the_original_bytes_resolves_a_refusal(deployed):
    original = finaldata(deployed)
    (deployed.ingested / "finaldata.csv").write_bytes(original.replace(b",basic,", b",BASIC,", 1))
    assert deployed.tick_subprocess().returncode == 1
    (deployed.ingested / "finaldata.csv").write_bytes(original)  # a restore: new mtime, same bytes
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "nothing_new"


def test_an_append_killed_midway_is_cut_back_by_the_next_run(project, monkeypatch, caplog):
    """What a SIGKILL mid-append leaves (half the bytes, no commit) is the pipeline's own: it is cut."""
    from churnlib import fsutil

    ingestion.run_ingestion(project.config())
    committed = finaldata(project)
    real_write = os.write

    def killed_halfway(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise KeyboardInterrupt  # not an OSError: nothing is cut back, as after a kill

    project.add_source("new.csv", batch(105, count=50))
    monkeypatch.setattr(fsutil.os, "write", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        ingestion.run_ingestion(project.config())
    monkeypatch.setattr(fsutil.os, "write", real_write)
    assert len(finaldata(project)) > len(committed)
    with caplog.at_level(logging.WARNING, logger="ingestion"):
        result = ingestion.run_ingestion(project.config())
    assert [f["name"] for f in result.accepted] == ["new.csv"]
    data = finaldata(project)
    assert data.startswith(committed) and project.record()["bytes"] == len(data)
    assert project.record()["rows"] == 840
    assert not (project.ingested / "append_intent.bin").exists()
    cut = [r.getMessage() for r in caplog.records if "cutting" in r.getMessage()]
    assert len(cut) == 1 and "uncommitted bytes left by an ingest of new.csv" in cut[0], cut


# --- item 10: schema contradictions on every tick; a file replaced under its name --------------


@pytest.mark.parametrize("schema, message", [
    ({"target": "exited", "id_columns": []}, "id_columns no longer name ['corporation']"),
    ({"target": "plan", "id_columns": ["corporation"]}, "target is 'plan', the ingested data's is 'exited'"),
])
def test_a_config_that_contradicts_the_frozen_schema_is_refused_on_a_tick_with_nothing_new(deployed, schema, message):
    config = json.loads(deployed.config_path.read_text())
    config["schema"] = schema
    deployed.write_config(config)
    result = deployed.tick_subprocess()
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_a_file_replaced_under_the_same_name_is_recorded_as_a_replacement(deployed):
    first = deployed.record()["files"][0]
    deployed.add_source("dataset1.csv", batch(106))  # new content, the old name
    assert deployed.tick() == 0
    entry = deployed.record()["files"][-1]
    assert entry["name"] == "dataset1.csv"
    assert entry["replaces"] == {"sha256": first["sha256"], "ingested_at": first["ingested_at"]}
    readable = (deployed.logs / "ingestion_record.txt").read_text()
    assert f"dataset1.csv (new content; replaces the file ingested {first['ingested_at']})" in readable
    assert "new content under the name of a file ingested" in deployed.log("ingestion")


# --- item 11: a backlog arrives at once --------------------------------------------------------


def test_a_backlog_compares_each_new_file_once_not_with_every_earlier_one(empty_project, monkeypatch):
    import numpy as np

    calls = []
    real_isin = np.isin
    monkeypatch.setattr(np, "isin", lambda *a, **k: calls.append(1) or real_isin(*a, **k))
    shared = ("dup", 1, 2, 3, "basic", 1)  # in every file: added once
    for index in range(30):
        empty_project.add_source(f"f{index:02d}.csv", csv_text(SAMPLE_HEADER, [shared, (f"c{index}", index, 2, 3, "basic", 0)]))
    result = ingestion.run_ingestion(empty_project.config())
    assert len(result.accepted) == 30
    assert result.rows_added == 31  # the shared row once, one own row per file
    assert len(calls) <= 30  # was 435: each file against each file before it


# --- item 8: damaged state files and a full disk -----------------------------------------------


def test_a_damaged_decision_state_is_named_with_what_to_do(deployed):
    (deployed.ingested / "decision_state.json").write_text('{"evaluated_rows": 790, "evalu')
    deployed.add_source("dataset3.csv", batch(103))
    result = deployed.tick_subprocess()
    assert result.returncode == 1
    assert "decision_state.json: not valid JSON" in result.stderr
    assert "delete it: the next tick then checks every ingested row" in result.stderr
    (deployed.ingested / "decision_state.json").unlink()
    assert deployed.tick() == 0


@pytest.mark.parametrize("name, advice", [
    ("ingestion_record.json", "restore ingestion_record.json from a backup"),
    ("../production_deployment/current.json", "deployment.py --rollback --to"),
])
def test_a_damaged_state_file_is_named_with_what_to_do(deployed, name, advice):
    (deployed.ingested / name).write_text("{not json")
    result = deployed.tick_subprocess()
    assert result.returncode == 1
    assert f"{os.path.basename(name)}: not valid JSON" in result.stderr
    assert advice in result.stderr


def _copy(item, destination) -> None:
    """Copy a file, or a folder (the Parquet parts) with what it holds."""
    import shutil

    if item.is_dir():
        shutil.copytree(item, destination, dirs_exist_ok=True)
    else:
        shutil.copy2(item, destination)


@contextlib.contextmanager
def small_disk(folder, free_bytes: int, monkeypatch):
    """Leave ``free_bytes`` free for ``folder``: a real tmpfs mounted over it when this runs as root
    (CI does), else a simulation at the OS boundary (os.write fails with ENOSPC past that much)."""
    import errno
    import shutil
    import subprocess
    import tempfile

    kept = Path(tempfile.mkdtemp())
    mounted = False
    if os.geteuid() == 0:
        shutil.copytree(folder, kept / "copy")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    try:
        if mounted:
            for item in (kept / "copy").iterdir():
                _copy(item, folder / item.name)
            stats = os.statvfs(folder)
            filler = stats.f_bavail * stats.f_frsize - free_bytes
            (folder / "filler").write_bytes(b"\0" * filler)
            yield "a real tmpfs"
        else:
            from churnlib import fsutil

            budget = [free_bytes]
            real_write = os.write

            def write(fd, data):
                if len(data) > budget[0]:
                    real_write(fd, bytes(data[: budget[0]]))
                    budget[0] = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                budget[0] -= len(data)
                return real_write(fd, data)

            monkeypatch.setattr(fsutil.os, "write", write)
            yield "a simulated full disk"
    finally:
        if mounted:
            for item in folder.iterdir():
                if item.name != "filler":
                    _copy(item, kept / "copy" / item.name)
            subprocess.run(["umount", "-l", str(folder)], check=True)
            for item in (kept / "copy").iterdir():
                _copy(item, folder / item.name)
        shutil.rmtree(kept, ignore_errors=True)


@pytest.mark.parametrize("room", ["half the new rows", "the intent and half the new rows"])
def test_a_full_disk_names_the_step_and_the_file_and_leaves_no_bytes_behind(deployed, monkeypatch, room):
    new_file = batch(107, count=6000)
    payload = len(new_file) - len(new_file.splitlines()[0]) - 1
    hashes = 6000 * 8
    free = payload // 2 if room == "half the new rows" else payload + hashes + 4096 + payload // 2
    with small_disk(deployed.ingested, free, monkeypatch) as disk:
        before = {name: (deployed.ingested / name).read_bytes() for name in ("finaldata.csv", "rowhashes.bin")}
        deployed.add_source("big.csv", new_file)
        status = deployed.tick()
        after = {name: (deployed.ingested / name).read_bytes() for name in ("finaldata.csv", "rowhashes.bin")}
        left = sorted(p.name for p in deployed.ingested.iterdir())
    assert status == 1, disk
    reason = deployed.last_run()["reason"]
    assert reason.startswith("ingestion: cannot "), reason
    assert "No space left on device" in reason
    assert any(name in reason for name in ("finaldata.csv", "rowhashes.bin", "append_intent.bin")), reason
    assert after == before, f"bytes of the failed append left behind ({disk})"
    assert "append_intent.bin" not in left and not [n for n in left if ".tmp-" in n], left
    (deployed.source / "big.csv").unlink()
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "nothing_new"


# --- a file name cannot break or forge the logs ---------------------------------------------------


def test_no_log_call_can_fail_on_a_file_name_or_forge_a_line(tmp_path, capfd):
    from churnlib.logsetup import close_logging, setup_logging

    setup_logging(tmp_path, "fullprocess")
    hostile = "caf\udce9\n2026-01-01T00:00:00Z ERROR   fullprocess: forged\r\x1b[2J\u2028.csv"
    logging.getLogger("fullprocess").warning("rejected %s", hostile)
    try:
        raise ValueError(hostile)
    except ValueError:
        logging.getLogger("fullprocess").exception("failed on %s", hostile)
    close_logging()
    err = capfd.readouterr().err
    assert "Logging error" not in err
    text = (tmp_path / "fullprocess.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].endswith("WARNING fullprocess: rejected caf\\xe9")
    assert lines[1] == "    2026-01-01T00:00:00Z ERROR   fullprocess: forged\\r\\x1b[2J\\u2028.csv"
    assert all(line[:4].isdigit() or line.startswith("    ") for line in lines)  # every record starts a line
    assert sum(1 for line in lines if line[:4].isdigit()) == 2
    assert "\\x1b[2J" in err and "\x1b" not in err  # stderr (cron.log) too


# --- deployment.py --rollback returns to the release that served before ----------------------------


def test_rollback_after_a_rollback_to_the_oldest_returns_to_the_release_that_served_before(deployed):
    from helpers import SAMPLE_LATER

    config = str(deployed.config_path)
    first = deployed.pointer()["current"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    second = deployed.pointer()["current"]
    assert second != first
    jumped = run_script("deployment.py", "--config", config, "--rollback", "--to", first)
    assert jumped.returncode == 0, jumped.stderr
    back = run_script("deployment.py", "--config", config, "--rollback")
    assert back.returncode == 0, back.stderr
    assert f"{first} -> {second}" in back.stdout and deployed.pointer()["current"] == second
    # and once more: the release that served before the second one is the first
    again = run_script("deployment.py", "--config", config, "--rollback")
    assert again.returncode == 0, again.stderr
    assert deployed.pointer()["current"] == first
    last = run_script("deployment.py", "--config", config, "--rollback")
    assert last.returncode == 1 and f"no release kept served before {first}" in last.stderr


def test_a_gitkeep_in_a_fresh_clones_folders_is_ignored_without_a_word(empty_project):
    (empty_project.source / ".gitkeep").write_text("")
    (empty_project.source / ".notes.csv").write_text("a\n")
    (empty_project.root / "scoringdata").mkdir(exist_ok=True)
    (empty_project.root / "scoringdata" / ".gitkeep").write_text("")
    assert empty_project.tick() == 0
    logs = "".join(path.read_text() for path in empty_project.logs.glob("*.log"))
    assert ".gitkeep" not in logs
    assert "ignored .notes.csv: hidden file" in logs  # other hidden files are still said, once


def test_the_api_server_says_where_it_listens(deployed):
    import selectors
    import subprocess
    import sys

    from helpers import ROOT, free_port

    port = free_port()
    env = {**os.environ, "CHURN_CONFIG": str(deployed.config_path), "CHURN_API_BIND": f"127.0.0.1:{port}",
           "CHURN_API_WORKERS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # Bounded: a gunicorn that starts but never says where it listens must fail the test, not hang make test.
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=120)
        line = process.stdout.readline() if ready else ""
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert line.startswith(f"churn API listening on http://127.0.0.1:{port} (config {deployed.config_path}")
    assert "api_error.log" in line
