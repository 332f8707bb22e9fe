"""The history page, logs/dashboard.html: self-contained, from runs.jsonl and the releases, cheap."""

import json
import re

from churnlib.history import MAX_TICKS, read_recent_runs, write_dashboard
from helpers import SAMPLE_LATER


def page(project) -> str:
    return (project.logs / "dashboard.html").read_text()


def test_a_tick_that_did_work_writes_a_self_contained_page_with_every_plot(deployed):
    deployed.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert deployed.tick() == 0
    deployed.add_source("broken.csv", "a;b\n1;2\n")
    assert deployed.tick() == 0
    text = page(deployed)
    assert "<script" not in text.lower() and not re.search(r"(src|href)=[\"']?(https?:|//)", text)
    for label in ("score on each checked batch", "feature drift heat map", "decisions and releases", "rows ingested per file"):
        assert f'aria-label="{label}"' in text
    run = deployed.last_run()
    release = deployed.pointer()["current"]
    assert release in text and deployed.pointer()["previous"][0] in text
    assert "lastmonth_activity" in text and "plan" in text  # heat map rows
    assert "broken.csv rejected" in text  # the rejected file on the rows plot
    assert run["reason"][:60] in text
    assert "Alerts are off" in text  # no channel configured: the page does not claim all is quiet
    check = deployed.runs()[-2]["score_drift"]  # the dataset3 tick's score check (issue 8's keys)
    assert check["checked"] and "new_score_ci" in check and "alarm_below" in check
    assert "alarm threshold (alarm_below)" in text
    assert 'stroke="#1d2430" stroke-width="1.5"/>' in text  # the new score's interval bar
    assert 'fill="#2f6fd6" fill-opacity="0.15"' in text  # the expected score's band


def test_intervals_alarm_threshold_and_scoring_estimates_are_drawn_when_the_run_line_has_them(deployed):
    line = {"started_at": "2026-11-30T10:00:00Z", "decision": "no_drift", "reason": "fine",
            "score_drift": {"checked": True, "drift": False, "metric": "f1", "new_score": 0.61,
                            "new_score_ci": [0.52, 0.70], "baseline": 0.64, "baseline_ci": [0.60, 0.68],
                            "alarm_below": 0.49, "rows": 200},
            "scoring": {"files": [{"name": "customers.csv", "rows": 900,  # the risk lists' estimate
                                   "estimate": {"f1": 0.42, "f1_ci": [0.38, 0.47], "precision": 0.4,
                                                "precision_ci": [0.3, 0.5]}},
                                  {"name": "more.csv", "rows": 500,
                                   "estimate": {"f1": 0.61, "f1_ci": [0.55, 0.66], "precision": 0.5,
                                                "precision_ci": [0.4, 0.6]}},
                                  {"name": "unknown.csv", "rows": 10, "estimate": None}]}}
    with open(deployed.logs / "runs.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    write_dashboard(deployed.config())
    text = page(deployed)
    assert "alarm threshold (alarm_below)" in text
    assert 'aria-label="estimated performance of scored files"' in text
    assert "customers.csv: estimated f1 0.420" in text and "more.csv: estimated f1 0.610" in text
    assert "unknown.csv" not in text
    assert text.count('stroke="#1d2430" stroke-width="1.5"/>') >= 1  # the new score's interval bar


def test_an_idle_tick_leaves_the_page_alone(deployed):
    assert deployed.tick() == 0  # nothing new, but the page does not exist yet: written once
    before = (deployed.logs / "dashboard.html").stat().st_mtime_ns
    assert deployed.tick() == 0
    assert (deployed.logs / "dashboard.html").stat().st_mtime_ns == before


def test_only_the_tail_of_a_long_run_log_is_read_and_idle_lines_are_not_parsed(tmp_path):
    path = tmp_path / "runs.jsonl"
    work = '{"started_at":"2026-01-01T00:00:%02dZ","decision":"no_drift","reason":"r%d"}\n'
    idle = '{"started_at":"2026-01-01T00:00:00Z","decision":"nothing_new","reason":"x"}\n'
    with open(path, "w") as handle:
        handle.write("{not json at all, and never read\n")
        for index in range(MAX_TICKS + 300):
            handle.write(work % (index % 60, index))
            handle.write(idle * 3)
        handle.write('{"started_at":"2026-01-02T00:00:00Z","decision":"no_dr')  # a torn last line
    ticks, last, skipped, complete = read_recent_runs(path)
    assert len(ticks) == MAX_TICKS and not complete
    assert ticks[-1]["reason"] == f"r{MAX_TICKS + 299}" and ticks[0]["reason"] == "r300"
    assert last["decision"] == "nothing_new"  # the torn line is passed over
    assert skipped == 3 * MAX_TICKS  # the idle lines after the 500th work tick from the end, and no others


def test_the_page_of_an_empty_project_says_there_is_nothing_yet(empty_project):
    empty_project.logs.mkdir()
    write_dashboard(empty_project.config())
    assert "No tick has done any work yet" in page(empty_project)
