"""fullprocess.py, one test per decision path, plus the fast path, the lock, failures and the run log."""

import json
import subprocess
import sys


import ingestion
from helpers import ROOT, SAMPLE_CONFIG, SAMPLE_LATER, SAMPLE_SOURCE, SAMPLE_TEST, base_config, batch, run_script


def test_cold_start_trains_scores_and_deploys_a_first_model_with_report_and_diagnostics(project):
    assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "cold_start"
    release = run["deployed_release_after"]
    assert project.pointer()["current"] == release
    folder = project.deployment / "releases" / release
    assert {"report.html", "confusionmatrix.png", "roc_curve.png", "pr_curve.png", "diagnostics.json"} <= {
        p.name for p in folder.iterdir()}
    assert json.loads((project.logs / "diagnostics.json").read_text())["release_id"] == release
    assert float((project.models / "latestscore.txt").read_text()) == run["candidate"]["scores"]["f1"]
    assert "cold start" in project.log()
    assert (project.ingested / "decision_state.json").exists()


def test_nothing_new_is_one_log_line_and_exit_0(deployed):
    lines_before = deployed.log().count("\n")
    assert deployed.tick() == 0
    assert deployed.last_run()["decision"] == "nothing_new"
    new_lines = deployed.log().splitlines()[lines_before:]
    assert len(new_lines) == 1 and "nothing new in sourcedata/" in new_lines[0]


def test_nothing_new_does_not_import_pandas_sklearn_or_xgboost_or_the_page(deployed):
    code = (
        "import sys, fullprocess\n"
        f"status = fullprocess.main(['--config', {str(deployed.config_path)!r}, '--no-api'])\n"
        # nor the page and alert modules: an idle tick with no alert channel writes neither
        "print(sorted(m for m in ('pandas', 'sklearn', 'xgboost', 'scipy', 'numpy', 'matplotlib', 'churnlib.history',\n"
        "                         'churnlib.alerts', 'dask', 'distributed', 'pyarrow', 'churnlib.engine')\n"
        "             if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert deployed.last_run()["decision"] == "nothing_new"


def test_new_data_without_drift_keeps_the_release(deployed):
    before = deployed.pointer()["current"]
    deployed.add_source("dataset3.csv", batch(101))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "no_drift", run["reason"]
    assert run["score_drift"]["checked"] and not run["score_drift"]["drift"]
    assert run["data_drift"]["tested"] and run["data_drift"]["drifted_features"] == []
    assert deployed.pointer()["current"] == before
    assert json.loads((deployed.logs / "latest_drift.json").read_text())["new_rows"] == 300


def test_a_score_drop_retrains_and_a_model_of_the_changed_world_wins_on_the_newest_rows(deployed):
    deployed.add_source("flipped.csv", batch(102, flip_labels=True))
    assert deployed.tick() == 0
    # One batch alone that contradicts the test data is held (tests/test_one_batch.py); the next confirms it.
    assert deployed.last_run()["held"]["status"] == "held"
    deployed.add_source("flipped2.csv", batch(103, flip_labels=True))
    assert deployed.tick() == 0
    run = deployed.last_run()
    score = run["score_drift"]
    assert score["drift"] is True and score["p_value"] < 0.025
    assert score["drop"] > 0.05 and score["new_score_ci"][1] < score["baseline_ci"][0]
    assert run["data_drift"]["drift"] is False
    assert run["retrain_reason"] == ["score_drop"]
    # Flipped labels are a changed world: a challenger trained on the new rows beats the champion on
    # the newest, held-out rows, so it is deployed, although it does worse on the old test data.
    challenge = run["challenge"]
    assert challenge["held_out_rows"] == 180 and challenge["difference"] > 0.2 and challenge["p_value"] < 0.05
    assert run["decision"] == "retrained_deployed", run["reason"]
    assert run["policy"]["evaluate_on"] == "held_out" and run["policy"]["allowed"] is True
    assert run["candidate"]["scores"]["f1"] < run["deployed_on_test"]["scores"]["f1"]
    assert "score drop" in run["reason"]
    assert "f1 0.3" in deployed.log() and "(95% CI" in deployed.log() and "significant drop" in deployed.log()


def test_judged_on_the_test_data_as_in_the_classic_set_up_a_flipped_world_is_refused(deployed):
    deployed.write_config(base_config(deployment={"evaluate_on": "testdata"}))
    deployed.add_source("flipped.csv", batch(102, flip_labels=True))
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["score_drift"]["drift"] is True
    assert run["decision"] == "retrained_refused", run["reason"]  # flipped labels make a worse model on the test data
    assert run["policy"]["allowed"] is False and run["policy"]["evaluate_on"] == "testdata"
    assert "challenge" not in run and run["candidate"]["window"] == "all"


def test_feature_drift_retrains_and_deploys(deployed):
    before = deployed.pointer()["current"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed", run["reason"]
    assert set(run["data_drift"]["drifted_features"]) >= {"lastmonth_activity", "plan"}
    plan = next(r for r in run["data_drift"]["features"] if r["feature"] == "plan")
    assert plan["test"] == "chi2"
    assert deployed.pointer()["current"] == run["deployed_release_after"] != before
    assert deployed.pointer()["previous"] == [before]
    report = (deployed.deployment / "releases" / run["deployed_release_after"] / "report.html").read_text()
    assert "retrained_deployed" in report and "lastmonth_activity" in report
    assert "feature drift" in deployed.log()


def test_a_retrained_model_refused_by_the_policy_leaves_the_release(deployed):
    deployed.write_config(base_config(deployment={"policy": "better", "tolerance": 0.5}))
    before = deployed.pointer()["current"]
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "retrained_refused"
    assert run["policy"]["allowed"] is False and "policy better" in run["policy"]["reason"]
    assert deployed.pointer()["current"] == before
    assert "stays" in deployed.log()
    # The rows were judged: the next tick has nothing to do.
    assert deployed.tick() == 0 and deployed.last_run()["decision"] == "nothing_new"


def test_a_rejected_file_is_logged_and_the_tick_succeeds(deployed):
    deployed.add_source("broken.csv", "corporation;exited\nx;1\n")
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "no_new_rows"
    assert run["ingest"]["rejected"][0]["name"] == "broken.csv"
    assert "seems to use ';' as delimiter" in run["ingest"]["rejected"][0]["reason"]
    assert deployed.tick() == 0 and deployed.last_run()["decision"] == "nothing_new"


def test_rows_ingested_by_an_interrupted_tick_are_judged_by_the_next(deployed):
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    ingestion.run_ingestion(deployed.config())  # ingested, then the tick "died" before deciding
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["new_files"] == []
    assert run["decision"] == "retrained_deployed"
    assert run["data_drift"]["new_rows"] == 400


def test_a_held_lock_makes_the_tick_exit_0_at_once(deployed):
    from churnlib.fsutil import RunLock, lock_path

    lock = RunLock(lock_path(deployed.config()))
    assert lock.acquire()
    try:
        result = deployed.tick_subprocess("-v")
    finally:
        lock.release()
    assert result.returncode == 0
    assert "holds the lock" in result.stderr
    assert deployed.last_run()["decision"] == "lock_held"


def test_a_real_failure_exits_1_with_the_reason_on_stderr(project):
    (project.root / "testdata" / "testdata.csv").write_text("corporation,exited\nx,1\n")
    result = project.tick_subprocess()
    assert result.returncode == 1
    assert "testdata.csv: feature column(s) missing" in result.stderr
    run = project.last_run()
    assert run["decision"] == "failed" and "feature column(s) missing" in run["reason"]


def test_no_data_yet_is_not_a_failure(empty_project):
    assert empty_project.tick() == 0
    assert empty_project.last_run()["decision"] == "nothing_new"
    assert "nothing new in sourcedata/ and no data yet" in empty_project.log()
    empty_project.add_source("broken.csv", "just one line\n")
    assert empty_project.tick() == 0
    assert empty_project.last_run()["decision"] == "no_data"


def test_a_deployed_model_without_decision_state_judges_all_rows(deployed):
    """Steps run by hand, a tick killed after its deploy, ingesteddata/ moved away: no decision state."""
    (deployed.ingested / "decision_state.json").unlink()
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "no_drift", run["reason"]
    assert run["data_drift"]["new_rows"] == 790


def test_small_batches_wait_until_the_checks_have_enough_rows(deployed):
    deployed.write_config(base_config(deployment={"policy": "always"}))
    later = (SAMPLE_LATER / "dataset3.csv").read_text().splitlines()
    header, rows = later[0], later[1:]
    for part in range(3):  # 3 x 15 rows of drifted data: too few for a check alone
        deployed.add_source(f"small{part}.csv", "\n".join([header, *rows[part * 15:(part + 1) * 15]]) + "\n")
        assert deployed.tick() == 0
        run = deployed.last_run()
        if part < 1:
            assert run["decision"] == "waiting_for_rows", run["reason"]
            assert "need at least 30" in run["reason"]
            assert deployed.tick() == 0  # nothing new: the pending rows do not make the tick slow
            assert deployed.last_run()["decision"] == "nothing_new"
            assert "15 new row(s) wait for 30 to be checked" in deployed.log().splitlines()[-1]
    # 30 rows were enough at the second file; the third starts a new wait
    decisions = [r["decision"] for r in deployed.runs()]
    assert decisions[-1] == "waiting_for_rows" and deployed.last_run()["pending_rows"] == 15, decisions
    assert "retrained_deployed" in decisions, decisions
    drifted = next(r for r in deployed.runs() if r["decision"] == "retrained_deployed")
    assert drifted["data_drift"]["new_rows"] == 30 and drifted["pending_rows"] == 30
    assert "feature_drift" in drifted["retrain_reason"]
    # judged fairly: on the 30 new rows alone, which the deployed model never saw
    assert drifted["challenge"]["held_out_rows"] == 30


def test_a_low_holdout_minimum_still_holds_out_as_many_rows_as_a_check_needs(deployed):
    # holdout_min_rows 10 is allowed, but a check needs 30 rows: 30 new rows are held out and judge
    # the challenger, rather than the test data for want of 10.
    deployed.write_config(base_config(deployment={"policy": "always", "holdout_min_rows": 10}))
    later = (SAMPLE_LATER / "dataset3.csv").read_text().splitlines()
    deployed.add_source("small.csv", "\n".join([later[0], *later[1:31]]) + "\n")
    assert deployed.tick() == 0
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed", run["reason"]
    assert run["challenge"]["held_out_rows"] == 30 and run["policy"]["evaluate_on"] == "held_out"
    assert "judged on the test data instead" not in deployed.log()


def test_an_api_that_is_not_http_does_not_fail_the_tick(deployed):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def garbage():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            connection.close()

    threading.Thread(target=garbage, daemon=True).start()
    try:
        deployed.write_config(base_config(api={"url": f"http://127.0.0.1:{server.getsockname()[1]}"}))
        deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
        import fullprocess

        assert fullprocess.main(["--config", str(deployed.config_path)]) == 0
    finally:
        server.close()
    run = deployed.last_run()
    assert run["decision"] == "retrained_deployed"
    assert run["api"]["running"] is False and "no replies saved" in run["api"]["summary"]


def test_the_run_line_holds_every_figure_behind_the_decision(deployed):
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    deployed.tick()
    run = deployed.last_run()
    for key in ("started_at", "finished_at", "seconds", "decision", "reason", "new_files", "ingest",
                "score_drift", "data_drift", "candidate", "deployed_on_test", "policy", "timings",
                "deployed_release_before", "deployed_release_after"):
        assert key in run, key
    feature = run["data_drift"]["features"][0]
    assert {"feature", "test", "statistic", "effect", "p_value", "p_adjusted", "drifted"} <= set(feature)
    assert run["score_drift"]["baseline"] is not None and run["score_drift"]["new_score"] is not None


def test_the_shipped_sample_data_runs_the_whole_walk_through(tmp_path):
    """make run on a fresh clone, then the README's walk-through: drop the later batch, see a retrain."""
    import shutil

    root = tmp_path / "clone"
    root.mkdir()
    shutil.copy(SAMPLE_CONFIG, root / "config.json")  # what a fresh clone holds (samples/generate.py)
    shutil.copytree(SAMPLE_SOURCE, root / "sourcedata")
    shutil.copytree(SAMPLE_TEST, root / "testdata")
    config = json.loads((root / "config.json").read_text())
    config.setdefault("api", {})["url"] = "http://127.0.0.1:9"
    (root / "config.json").write_text(json.dumps(config))
    first = run_script("fullprocess.py", "--config", str(root / "config.json"))
    assert first.returncode == 0, first.stderr
    second = run_script("fullprocess.py", "--config", str(root / "config.json"))
    assert second.returncode == 0
    shutil.copy(SAMPLE_LATER / "dataset3.csv", root / "sourcedata")
    third = run_script("fullprocess.py", "--config", str(root / "config.json"))
    assert third.returncode == 0, third.stderr
    runs = [json.loads(line) for line in (root / "logs" / "runs.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in runs] == ["cold_start", "nothing_new", "retrained_deployed"]
    listing = run_script("deployment.py", "--config", str(root / "config.json"), "--list")
    assert listing.stdout.count("logistic_regression") == 2


def test_rows_too_few_to_check_still_wait_after_a_refused_retrain_for_changed_settings(tmp_path):
    from helpers import make_project

    project = make_project(tmp_path / "project", config=base_config(deployment={"policy": "better", "tolerance": 0.9}))
    assert project.tick() == 0
    project.add_source("small1.csv", batch(601, count=20))
    assert project.tick() == 0 and project.last_run()["decision"] == "waiting_for_rows"
    config = json.loads(project.config_path.read_text())
    config["model"]["params"] = {"C": 0.5}
    project.write_config(config)
    assert project.tick() == 0
    assert project.last_run()["decision"] == "retrained_refused", project.last_run()["reason"]
    # The 20 rows were not checked against the release that stays: with 20 more, the 40 are.
    project.add_source("small2.csv", batch(602, count=20))
    assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "no_drift" and run["score_drift"]["rows"] == 40, run["reason"]
