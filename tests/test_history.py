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


# --- what the pictures say (issue 15 item 5), on run lines made for each case -----------------------


def deploy_line(started_at, release, decision="retrained_deployed", *, score=0.7, before=0.65, rejected=()):
    return {"started_at": started_at, "decision": decision, "reason": f"{decision} because 0.7472899222005991",
            "deployed_release_after": release, "deployed_release_before": None if decision == "cold_start" else "r0",
            "candidate": {"release_id": release, "scores": {"f1": score}}, "policy": {"metric": "f1"},
            **({} if decision == "cold_start" else {"deployed_on_test": {"release_id": "r0", "scores": {"f1": before}}}),
            "score_drift": {"checked": True, "drift": False, "metric": "f1", "new_score": 0.7472899222005991,
                            "new_score_ci": [0.6912345678, 0.8012345678], "baseline": 0.7234567891,
                            "baseline_ci": [0.6834567891, 0.7634567891], "alarm_below": 0.6123456789, "rows": 300},
            "data_drift": {"tested": True, "features": [{"feature": "plan", "test": "chi2", "effect": 0.123456789,
                                                         "p_adjusted": 0.000123456789, "drifted": False}]},
            "ingest": {"accepted": [{"name": "a.csv", "rows_added": 400}],
                       "rejected": [{"name": name, "reason": "no target column"} for name in rejected]}}


def render(lines, last=None):
    from churnlib.history import History, render_dashboard

    work = [line for line in lines if line["decision"] not in ("nothing_new", "lock_held")]
    return render_dashboard(History(work, last or lines[-1], 0, True, [], None, {}), project="p",
                            generated_at="2026-12-03T03:00:00Z")


def svg(page_text, label):
    return re.search(rf'<svg[^>]*aria-label="{label}".*?</svg>', page_text, re.S).group(0)


def test_time_axis_ticks_fall_at_round_times():
    from churnlib.clock import stamp_seconds
    from churnlib.history import TimeAxis

    for first, last, step in (("2026-12-03T02:27:19Z", "2026-12-03T02:33:10Z", 60),
                              ("2026-12-03T02:27:19Z", "2026-12-03T02:27:41Z", 5),
                              ("2026-12-03T02:27:19Z", "2026-12-03T09:01:07Z", 3600),
                              ("2026-12-01T02:27:19Z", "2026-12-09T11:01:07Z", 86400)):
        axis = TimeAxis([stamp_seconds(first), stamp_seconds(last)])
        labels = axis.labels()
        assert 3 <= len(labels) <= 8
        for x, _ in labels:  # each label sits at a whole multiple of the step
            seconds = axis.low + (x - axis.x(axis.low)) / (axis.x(axis.high) - axis.x(axis.low)) * (axis.high - axis.low)
            assert abs(seconds / step - round(seconds / step)) < 1e-6, (first, last, labels)


def test_heat_map_columns_each_have_their_own_label():
    lines = [deploy_line(stamp, f"r{i}") for i, stamp in enumerate(
        ["2026-12-03T02:27:19Z", "2026-12-03T02:27:48Z", "2026-12-03T02:27:48Z", "2026-12-03T02:29:00Z"])]
    heat_map = svg(render(lines), "feature drift heat map")
    labels = re.findall(r'fill="#5a6475">([^<]+)</text>', heat_map)
    assert labels == ["12-03 02:27:19", "12-03 02:27:48 #1", "12-03 02:27:48 #2", "12-03 02:29"]


def test_release_labels_of_releases_close_in_time_do_not_overlap_and_the_legend_has_every_colour_drawn():
    from churnlib.history import DECISION_COLOURS, ReleaseLabels

    lines = [deploy_line("2026-12-03T02:00:00Z", "20261203T020000Z-aaaaaaaa", "cold_start", score=0.65),
             deploy_line("2026-12-03T02:00:20Z", "20261203T020020Z-bbbbbbbb", score=0.66),
             deploy_line("2026-12-03T02:00:40Z", "20261203T020040Z-cccccccc", score=0.655),
             deploy_line("2026-12-03T05:00:00Z", "20261203T050000Z-dddddddd", score=0.7)]
    timeline = svg(render(lines), "decisions and releases")
    labels = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" font-size="10" fill="#1d2430">(\d{8}T\d{6}Z-\w+)</text>', timeline)
    boxes = [(float(x), float(y) - 9, float(x) + ReleaseLabels.CHAR_WIDTH * len(text), float(y) + 2)
             for x, y, text in labels]
    assert len(boxes) >= 3
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), labels
    left_out = 4 - len(labels)
    assert (f"{left_out} release label(s) left out" in timeline) == (left_out > 0)
    # The cold start's point is blue: the legend says what blue means.
    assert f'<circle r="5" fill="{DECISION_COLOURS["cold_start"]}"' in timeline
    assert "model trained, deployed (cold_start)" in timeline


def test_hover_texts_show_rounded_numbers():
    text = render([deploy_line("2026-12-03T02:00:00Z", "r1")])
    titles = " ".join(re.findall(r"<title>(.*?)</title>", text, re.S))
    assert "0.747" in titles and "0.723" in titles
    # Every figure to at most 4 significant digits, but the one the tick's reason text itself holds.
    unrounded = [n for n in re.findall(r"\d+\.\d+", titles)
                 if len(n.replace(".", "").lstrip("0")) > 4 and n != "0.7472899222005991"]
    assert unrounded == []
    assert "corrected p = 0.00012" in titles


def test_a_rejected_file_is_marked_at_zero_rows():
    rows = svg(render([deploy_line("2026-12-03T02:00:00Z", "r1", rejected=("bad.csv",))]), "rows ingested per file")
    zero = re.search(r'<line x1="[\d.]+" y1="([\d.]+)" x2="[\d.]+" y2="[\d.]+" stroke="#eef1f5"/><text [^>]*>0</text>', rows)
    mark = re.search(r'<g transform="translate\([\d.]+,([\d.]+)\)"><path [^>]*/><rect [^>]*/><title>bad.csv rejected', rows)
    assert zero and mark and mark.group(1) == zero.group(1)


def test_the_last_tick_card_says_it_is_the_last_tick_that_did_work():
    idle = {"started_at": "2026-12-03T04:00:00Z", "decision": "nothing_new", "reason": "nothing new"}
    text = render([deploy_line("2026-12-03T02:00:00Z", "r1"), idle])
    assert "<span>last tick that did work</span><b>2026-12-03 02:00:00</b>" in text
    assert "<span>its decision</span><b>retrained_deployed</b>" in text
    assert "<span>newest tick when written</span><b>2026-12-03 04:00:00 (nothing_new)</b>" in text
    assert "Ticks that find nothing new do not rewrite this page" in text


def test_the_one_escape_and_number_format_of_the_pages():
    import html

    from churnlib.display import html_text, number

    for value in ('<img src=x onerror="alert(1)">', "a & b's", None, 0.5, "$x^$"):
        assert html_text(value) == html.escape("" if value is None else str(value), quote=True)
    assert number(0.7472899222005991) == "0.747" and number(None) == "n/a" and number(12, ",.0f") == "12"
    assert number(True) == "True" and number("0.5") == "0.5"  # not a number: shown as it is


def test_value_axis_labels_say_the_round_values_exactly_and_the_legend_only_what_is_drawn():
    from churnlib.history import _value_axis

    parts, _ = _value_axis(0.6029, 0.7129, 0, 100)
    assert re.findall(r'fill="#5a6475">([^<]+)<', "".join(parts)) == ["0.600", "0.625", "0.650", "0.675", "0.700", "0.725"]
    rows = svg(render([deploy_line("2026-12-03T02:00:00Z", "r1")]), "rows ingested per file")
    assert "rows added" in rows and "file rejected" not in rows and "duplicates dropped" not in rows
