"""Diagnostics and reporting on a deployed project."""

import json
import re

import numpy as np
import pandas as pd

import diagnostics
from churnlib import ingested
import reporting
from helpers import run_script


def _described(frame, schema):
    return ingested.describe_statistics(ingested.merge_statistics(ingested.empty_statistics(schema),
                                                                  ingested.batch_statistics(frame, schema)))


def test_summary_statistics_and_missing_data_of_a_frame():
    from churnlib.dataset import FrozenSchema

    schema = FrozenSchema(target="y", id_columns=(), feature_columns=("a", "b"), categorical_columns=("b",))
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, np.nan], "b": ["x", None, None, "y"], "y": [1, 0, 0, 1]})
    stats = _described(frame, schema)
    assert {k: stats["numeric"]["a"][k] for k in ("mean", "median", "std", "count")} == \
        {"mean": 2.0, "median": 2.0, "std": 1.0, "count": 3}
    assert stats["missing_data"] == {"a": 0.25, "b": 0.5, "y": 0.0}
    categories = {c["value"]: (c["count"], c["churn_rate"]) for c in stats["categorical"]["b"]["categories"]}
    assert categories == {"(missing)": (2, 0.0), "x": (1, 1.0), "y": (1, 1.0)}


def test_statistics_of_an_all_missing_column_are_none_not_nan():
    from churnlib.dataset import FrozenSchema

    schema = FrozenSchema(target="y", id_columns=(), feature_columns=("a",), categorical_columns=())
    stats = _described(pd.DataFrame({"a": [np.nan, np.nan], "y": [0, 1]}), schema)
    assert stats["numeric"]["a"]["mean"] is None and stats["numeric"]["a"]["std"] is None
    assert stats["numeric"]["a"]["median"] is None


def test_dependency_check_without_network_says_latest_unknown(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\npandas==3.1.1\nnumpy==2.4.6  # pinned\n-r other.txt\nnot-installed-pkg==1.0\n")
    rows = diagnostics.dependency_check(requirements, deadline_seconds=2.0, base_url="http://127.0.0.1:9")
    assert [r["package"] for r in rows] == ["pandas", "numpy", "not-installed-pkg"]
    assert rows[0]["installed"] == "3.1.1" and rows[0]["latest"] == "latest unknown"
    assert rows[2]["installed"] is None and rows[2]["outdated"] is None


def test_dependency_check_gives_up_on_an_index_that_never_answers(tmp_path):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections into the backlog and never replies
    try:
        requirements = tmp_path / "requirements.txt"
        requirements.write_text("pandas==3.1.1\n")
        rows = diagnostics.dependency_check(requirements, deadline_seconds=0.5,
                                            base_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
    assert rows[0]["latest"] == "latest unknown"


def test_dependency_check_reports_outdated_packages_from_the_index(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Index(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"info": {"version": "99.0"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        requirements = tmp_path / "requirements.txt"
        requirements.write_text("pandas==3.1.1\n")
        rows = diagnostics.dependency_check(requirements, base_url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert rows == [{"package": "pandas", "required": "3.1.1", "installed": "3.1.1", "latest": "99.0", "outdated": True}]


def test_diagnostics_script_writes_json_and_prints_it_readably(deployed):
    result = run_script("diagnostics.py", "--config", str(deployed.config_path))
    assert result.returncode == 0, result.stderr
    written = json.loads((deployed.logs / "diagnostics.json").read_text())
    assert written["predictions"]["rows"] == 300
    assert set(written["summary_statistics"]) == {"lastmonth_activity", "lastyear_activity", "number_of_employees"}
    assert written["missing_data"]["number_of_employees"] > 0
    assert written["timings"]["training_seconds"] > 0 and written["timings"]["ingestion_seconds"] > 0
    assert "Summary statistics of the ingested data (790 rows)" in result.stdout
    assert "latest unknown" in result.stdout


def test_reporting_script_writes_plots_and_a_self_contained_report(deployed):
    result = run_script("reporting.py", "--config", str(deployed.config_path))
    assert result.returncode == 0, result.stderr
    png = (deployed.models / "confusionmatrix.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    page = (deployed.models / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6  # 4 plots, the weights, the distributions
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page
    assert "Scores on the test data" in page


def test_report_escapes_text_from_the_data():
    metadata = {"release_id": "<r>", "algorithm": "logistic_regression", "trained_at": "t", "params": {},
                "random_seed": 1, "model_sha256": "0" * 64,
                "schema": {"numeric_columns": ["<b>x</b>"], "categorical_columns": []},
                "training_data": {"rows": 2, "sha256": "1" * 64}}
    scores = {"f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0, "roc_auc": 1.0, "rows": 2, "positives": 1,
              "confusion_matrix": {"matrix": [[1, 0], [0, 1]]}}
    page = reporting.build_report(metadata=metadata, scores=scores, labels=np.array([0, 1]),
                                  probabilities=np.array([0.2, 0.9]))["report.html"].decode()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_metric_intervals_cover_the_scores_and_shrink_with_more_rows():
    rng = np.random.default_rng(1)
    widths = []
    for rows in (60, 2000):
        labels = rng.integers(0, 2, rows)
        probabilities = np.clip(labels * 0.3 + rng.random(rows) * 0.7, 0, 1)
        from scoring import metrics_from_predictions

        scores = metrics_from_predictions(labels, probabilities)
        intervals = reporting.metric_intervals(scores)
        for key in ("f1", "roc_auc", "accuracy", "precision", "recall"):
            low, high = intervals[key]
            assert low <= scores[key] <= high, key
        widths.append(intervals["f1"][1] - intervals["f1"][0])
    assert widths[1] < widths[0] / 3


def test_the_release_report_holds_what_a_data_scientist_expects(deployed):
    from helpers import SAMPLE_LATER

    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    report = deployed.deployment / "releases" / deployed.pointer()["current"] / "report.html"
    page = report.read_text()
    assert report.stat().st_size < 1_000_000
    assert "<script" not in page and "src=\"http" not in page
    assert page.count("95% CI ") == 5 and "Too little test data" not in page  # 300 test rows, 134 churners
    for section in ('alt="calibration plot"', "Training data: class balance", "What the model leans on",
                    "Distributions: drifted and most important features", "the new rows (400 rows, orange)"):
        assert section in page, section
    assert page.count("data:image/png;base64,") == 6
    assert "<th>package</th>" not in page and "diagnostics.json" in page  # versions live in diagnostics
    assert "churn rate" in page  # categories of the ingested data


def test_a_five_row_test_file_gets_a_plain_warning_instead_of_a_bare_roc_auc(tmp_path, udacity_course):
    import shutil

    from helpers import make_project

    udacity = udacity_course
    project = make_project(tmp_path / "p", sources=())
    for name in ("dataset1.csv", "dataset2.csv"):
        shutil.copy(udacity / "practicedata" / name, project.source / name)
    shutil.copy(udacity / "testdata" / "testdata.csv", project.root / "testdata" / "testdata.csv")
    assert project.tick() == 0
    page = (project.deployment / "releases" / project.pointer()["current"] / "report.html").read_text()
    assert "Too little test data to say much." in page
    assert "The test data holds 5 rows" in page
    # 5 rows, 2 churners: no interval for F1 or ROC AUC, wide Wilson intervals for the proportions.
    assert re.search(r"ROC AUC</span><b>[0-9.]+</b><span>no interval: too few rows</span>", page)
    accuracy = re.search(r"accuracy</span><b>[0-9.]+</b><span>95% CI ([0-9.]+)-([0-9.]+)</span>", page)
    assert float(accuracy.group(2)) - float(accuracy.group(1)) > 0.5


def test_a_category_value_that_reads_as_mathtext_is_drawn_as_given_and_the_cold_start_deploys(project):
    # "$x^$" is a legal category value; matplotlib's mathtext parser raised on it in the weights and
    # distribution plots, so the cold start never deployed and every later retrain failed.
    project.add_source("odd.csv", "corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan,exited\n"
                                  "odd1,10,200,5,$x^$,1\nodd2,12,180,4,$\\frac{1}{0}$,0\n")
    assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "cold_start" and "report_error" not in run
    release = project.pointer()["current"]
    page = (project.deployment / "releases" / release / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6  # the weights and distributions plots included


def test_plots_draw_text_from_the_data_literally():
    weights = {"kind": "coefficient", "columns": [{"column": "plan_$x^$", "feature": "plan", "weight": 0.5},
                                                  {"column": "plan_$\\sqrt{$", "feature": "plan", "weight": -0.2}]}
    assert reporting.plot_weights(weights).startswith(b"\x89PNG")
    assert reporting.plot_confusion_matrix([[1, 2], [3, 4]], title="Release $a_$ on the test data").startswith(b"\x89PNG")


def test_a_report_that_cannot_be_built_never_stops_the_deploy_and_is_logged_and_alerted(project, monkeypatch):
    def broken_report(**_):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr(reporting, "build_report", broken_report)
    # A webhook on a closed port: the alert waits in the outbox, where the test can read it.
    project.write_config({**json.loads(project.config_path.read_text()),
                          "alerts": {"webhook": {"url": "http://127.0.0.1:9/hook"}}})
    assert project.tick() == 0
    run = project.last_run()
    assert run["decision"] == "cold_start" and run["deployed_release_after"] == project.pointer()["current"]
    assert run["report_error"] == "RuntimeError: the plotting library broke" and "report" not in run
    release_folder = project.deployment / "releases" / run["deployed_release_after"]
    assert (release_folder / "diagnostics.json").exists() and not (release_folder / "report.html").exists()
    log = project.log()
    assert (f"the report of release {run['deployed_release_after']} was not built: RuntimeError: the plotting "
            "library broke; the release is deployed without it") in log
    assert "Report: not built (RuntimeError: the plotting library broke)" in log
    state = json.loads((project.logs / "alert_state.json").read_text())
    assert "report_failed" in state["active"]
    outbox = json.loads((project.logs / "alerts_outbox.json").read_text())
    titles = [item["alert"]["title"] for item in outbox["items"]]
    assert f"the report of release {run['deployed_release_after']} was not built" in titles



def test_a_histogram_cut_at_the_percentiles_says_how_much_of_each_sample_it_left_out():
    rng = np.random.default_rng(3)
    reference = np.concatenate([rng.normal(50, 5, 970), np.full(30, 5_000.0)])  # 3% far out on the right
    new = rng.normal(50, 5, 500)
    low, high = np.percentile(np.concatenate([reference, new]), [1, 99])
    note = reporting.tails_note(reference, new, low, high)
    beyond_reference = np.mean((reference < low) | (reference > high))
    beyond_new = np.mean((new < low) | (new > high))
    assert note == (f"drawn: {low:,.4g} to {high:,.4g} (1st-99th percentile); beyond it: {beyond_reference:.1%} of grey, "
                    f"{beyond_new:.1%} of orange")
    assert beyond_reference > beyond_new  # the far tail is said, not piled into the last bar


def test_the_printed_tables_stay_aligned_whatever_the_length_of_a_name():
    result = {"release_id": "r1", "generated_at": "t", "ingested_rows": 2,
              "predictions": {"dataset": "testdata", "rows": 2, "values": [0, 1]},
              "summary_statistics": {"a_numeric_column_with_a_rather_long_name": {"mean": 1.0, "median": 2.0, "std": 0.5},
                                     "x": {"mean": 10.0, "median": 20.0, "std": 5.0}},
              "missing_data": {"a_numeric_column_with_a_rather_long_name": 0.0, "x": 0.25},
              "timings": {"ingestion_seconds": 1, "ingestion_at": "t", "training_seconds": 1, "trained_at": "t"},
              "dependencies": [{"package": "pandas", "required": "3.1.1", "installed": "3.1.1", "latest": "3.1.1",
                                "outdated": False},
                               {"package": "prometheus_client", "required": "0.26.0", "installed": "0.26.0",
                                "latest": "latest unknown", "outdated": False},
                               {"package": "numpy", "required": "2.4.6", "installed": "2.4.5", "latest": "2.5.0",
                                "outdated": True}],
              "drift": None}
    text = diagnostics.format_diagnostics(result)
    table = text.split("Dependencies (requirements.txt):\n")[1].splitlines()[:4]
    for header in ("required", "installed", "latest"):  # each column starts where its header does
        column = table[0].index(header)
        assert all(line[column - 1] == " " and line[column] != " " for line in table), table
    stats = text.split("rows):\n")[1].splitlines()[:3]
    assert len({line.index(".") + line[line.index("."):].index(" ") for line in stats[1:]}) == 1  # mean right-aligned
