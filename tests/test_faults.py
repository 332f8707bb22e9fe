"""Crash safety and concurrency of the cron pipeline, with real processes.

- Kill anywhere: fullprocess.py is SIGKILLed at seeded random instants across a realistic scenario
  and restarted each time; the end state must equal that of an uninterrupted run.
- Concurrent ticks: eight ticks started at once; exactly one works.
- A lock left by a killed tick does not block the next one.
- A tampered or broken deployed model is refused by the pipeline and the API, and rollback works.

The number of kills is ``--kills`` (default 50): ``make test PYTEST_ARGS="--kills 500"``.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from churnlib.dataset import FrozenSchema
from churnlib.modelstore import load_deployed
from helpers import OFFLINE_PYPI, ROOT, SAMPLE_LATER, Project, base_config, batch, make_project, run_script

pytestmark = pytest.mark.slow

TEMPORARY = re.compile(r"\.tmp-\d+-[0-9a-f]+$")


# Each step adds files to sourcedata/ and is followed by ticks until one completes.
SCENARIO = [
    {},  # cold start on the two shipped files
    {"dataset3.csv": (SAMPLE_LATER / "dataset3.csv").read_text(), "broken.csv": "corporation;exited\nx;1\n"},
    {"dataset4.csv": batch(404), "dataset5.csv": batch(405, count=120)},
]


def tick_command(project):
    return [sys.executable, str(ROOT / "fullprocess.py"), "--config", str(project.config_path), "--no-api"]


def environment():
    return {**os.environ, "CHURN_PYPI_URL": OFFLINE_PYPI}


def run_tick(project) -> float:
    started = time.monotonic()
    result = subprocess.run(tick_command(project), env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


def killed_tick(project, delay: float) -> bool:
    """Start a tick, SIGKILL it after ``delay`` seconds; return whether it was still running."""
    process = subprocess.Popen(tick_command(project), env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def add_files(project, files):
    for name, content in files.items():
        project.add_source(name, content)


def state_of(project):
    """What must not depend on crashes: the data, the record's account of it, the deployed predictions."""
    record = project.record()
    data = (project.ingested / "finaldata.csv").read_bytes()
    model = load_deployed(project.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    from scoring import read_test_data

    test = read_test_data(project.root / "testdata", settings=project.config().schema, schema=schema)
    return {
        "data": data,
        "files": [(f["name"], f["sha256"], f["rows_read"], f["rows_added"], f["first_row"]) for f in record["files"]],
        "rejected": sorted({r["name"] for r in record["rejected"]}),
        "rows": record["rows"],
        "predictions": model.pipeline.predict_proba(test[list(schema.feature_columns)])[:, 1],
        "model_sha256": model.metadata["model_sha256"],
    }


def check_consistent(project):
    """Invariants that hold after any completed run, however many runs were killed before it."""
    record = project.record()
    data = (project.ingested / "finaldata.csv").read_bytes()
    assert len(data) == record["bytes"]
    lines = data.decode().splitlines()
    assert len(lines) - 1 == record["rows"] == sum(f["rows_added"] for f in record["files"])
    assert len(set(lines[1:])) == len(lines) - 1, "a row is in the ingested data twice"
    assert (project.ingested / "rowhashes.bin").stat().st_size == record["rows"] * 8
    parts = record.get("parts") or []  # the columnar history: committed and rolled back with the CSV
    assert sum(part["rows"] for part in parts) == record["rows"]
    assert sorted(p.name for p in (project.ingested / "finaldata.parquet").iterdir()) == sorted(p["file"] for p in parts)
    assert len({f["sha256"] for f in record["files"]}) == len(record["files"]), "a file was ingested twice"
    model = load_deployed(project.deployment)  # loads only when the hash matches
    assert model is not None
    leftovers = [p for p in project.root.rglob("*") if TEMPORARY.search(p.name)]
    assert leftovers == [], leftovers


def test_kill_anywhere_loses_nothing_and_counts_nothing_twice(tmp_path, request):
    kills_wanted = request.config.getoption("--kills")
    rng = random.Random(20261122)

    # The uninterrupted run: a snapshot of the project before each step, and the state after it.
    reference = make_project(tmp_path / "reference")
    before, after, durations = [], [], []
    for step, files in enumerate(SCENARIO):
        before.append(shutil.copytree(reference.root, tmp_path / f"before{step}", symlinks=True))
        add_files(reference, files)
        durations.append(run_tick(reference))
        after.append(state_of(reference))
    decisions = [run["decision"] for run in reference.runs()]
    assert decisions[0] == "cold_start" and decisions[1] == "retrained_deployed", decisions

    # Each step is replayed from its snapshot, its ticks killed at random instants until one finishes
    # before its kill instant (the step's work is then done), and again until the step has its share
    # of kills. After every replay the state must equal the uninterrupted run's.
    per_step = -(-kills_wanted // len(SCENARIO))
    kills_by_step = [0] * len(SCENARIO)
    replays = 0
    for step, files in enumerate(SCENARIO):
        while kills_by_step[step] < per_step:
            replays += 1
            project = Project(shutil.copytree(before[step], tmp_path / f"replay{replays}", symlinks=True))
            add_files(project, files)
            while kills_by_step[step] < per_step and killed_tick(project, rng.uniform(0.0, durations[step])):
                kills_by_step[step] += 1
            run_tick(project)
            check_consistent(project)
            run_tick(project)  # the step is complete: nothing is left to do
            assert project.last_run()["decision"] == "nothing_new"
            actual, expected = state_of(project), after[step]
            assert actual["data"] == expected["data"]
            assert actual["files"] == expected["files"]
            assert actual["rejected"] == expected["rejected"]
            assert actual["rows"] == expected["rows"]
            assert np.array_equal(actual["predictions"], expected["predictions"])
            assert actual["model_sha256"] == expected["model_sha256"]
            shutil.rmtree(project.root)
    kills = sum(kills_by_step)
    print(f"\nkill test: {kills} ticks killed mid-run (per step: {kills_by_step}) in {replays} replays; "
          "every final state equal to an uninterrupted run")


def test_eight_ticks_at_once_one_works_the_others_exit_0(project):
    processes = [subprocess.Popen(tick_command(project) + ["-v"], env=environment(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [status for status, _ in results] == [0] * 8
    decisions = sorted(run["decision"] for run in project.runs())
    assert decisions == ["cold_start"] + ["lock_held"] * 7
    assert sum("holds the lock" in err for _, err in results) == 7
    record = project.record()
    assert [f["name"] for f in record["files"]] == ["dataset1.csv", "dataset2.csv"]
    assert record["rows"] == 790
    check_consistent(project)


def test_a_lock_left_by_a_killed_tick_does_not_block_the_next(project):
    process = subprocess.Popen(tick_command(project), env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    lock = project.ingested / ".run.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip() == str(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lock.read_text().strip() == str(process.pid)  # the dead holder's PID is still in the file
    run_tick(project)
    assert project.last_run()["decision"] == "cold_start"
    check_consistent(project)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_metadata"])
def test_a_tampered_deployed_model_is_refused_and_rollback_still_works(tmp_path, damage):
    from app import create_app

    project = make_project(tmp_path / "project", config=base_config(deployment={"policy": "always"}))
    run_tick(project)
    first = project.pointer()["current"]
    project.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    run_tick(project)
    second = project.pointer()["current"]
    assert second != first
    serving = create_app(project.config_path).test_client()
    assert serving.get("/health").json["release_id"] == second

    folder = project.deployment / "releases" / second
    model = folder / "trainedmodel.pkl"
    if damage == "flip_byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 3] ^= 0x40
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:100])
    else:
        (folder / "trainedmodel.json").unlink()

    # The pipeline refuses to use it and says why.
    project.add_source("dataset4.csv", batch(404))
    result = subprocess.run(tick_command(project), env=environment(), capture_output=True, text=True)
    assert result.returncode == 1
    expected = "metadata file missing" if damage == "drop_metadata" else "does not match"
    assert expected in result.stderr and second in result.stderr
    assert project.pointer()["current"] == second

    # A worker that loaded it before keeps serving it from memory; a new worker serves the last good release.
    assert serving.post("/prediction", json={"lastmonth_activity": 1, "lastyear_activity": 2,
                                             "number_of_employees": 3, "plan": "basic"}).json["release_id"] == second
    fresh = create_app(project.config_path).test_client()
    health = fresh.get("/health").json
    assert health["release_id"] == first
    assert f"release {second} not loaded" in health["warning"]

    # Rollback still works, and the next tick goes on from the good release.
    rolled = run_script("deployment.py", "--config", str(project.config_path), "--rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert project.pointer()["current"] == first
    run_tick(project)
    run = project.last_run()
    # The rows the failed tick ingested are judged now, against the good release.
    assert run["decision"] == "no_drift", run["reason"]
    assert run["data_drift"]["release_id"] == first and run["data_drift"]["new_rows"] == 300
