"""History page benchmark: what writing logs/dashboard.html costs a tick, against reading the whole run log.

    python bench/bench_dashboard.py

Builds a project with real releases and real run lines (a cold start, a tick without drift, a
drifted file that retrains), then writes run logs of several lengths from those lines, ten
minutes apart, with a share of ticks that did work (the rest idle, as most cron ticks are), and
times ``churnlib.history.write_dashboard`` on each (the median of ``--repeat`` runs, this
process, imports paid). Baseline in the same run: the same page built after reading and parsing
every line of the run log. For scale, the wall time of a no-new-data tick (a fresh interpreter,
as cron runs it).

    python bench/bench_dashboard.py --pages /tmp/pages

writes, instead of timing, the pages to look at: the history page after 1, 10 and 200 ticks that
did work (``dashboard-<n>.html``; the real lines first, then copies of them at uneven intervals,
some a few seconds apart as a tick run by hand after a cron tick is, idle ticks after the last) and
the report of the release served (``report.html``). Open them in a browser, or take screenshots
with ``chromium --headless --screenshot``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from churnlib import history  # noqa: E402
from churnlib.fsutil import atomic_write_text  # noqa: E402
from churnlib.runlog import RUNS_FILE  # noqa: E402
from helpers import SAMPLE_LATER, batch, make_project  # noqa: E402

SCENARIOS = [(1_000, 1.0), (1_000, 0.1), (52_560, 0.05)]  # (ticks, share that did work); 52,560 = a year at 10 min


def build_project(folder: Path):
    project = make_project(folder / "project")
    assert project.tick() == 0
    project.add_source("fresh.csv", batch(101))
    assert project.tick() == 0
    project.add_source("dataset3.csv", (SAMPLE_LATER / "dataset3.csv").read_text())
    assert project.tick() == 0
    project.add_source("more.csv", batch(7, 25))
    assert project.tick() == 0
    project.add_source("broken.csv", "a;b\n1;2\n")
    (project.root / "scoringdata").mkdir(exist_ok=True)
    shutil.copy(ROOT / "samples" / "customers" / "customers.csv", project.root / "scoringdata" / "customers.csv")
    assert project.tick() == 0
    assert project.tick() == 0
    return project


PAGE_TICKS = (1, 10, 200)


def page_log(path: Path, real_lines: list[dict], ticks: int) -> None:
    """Write a run log of ``ticks`` ticks that did work: the real lines (seconds apart, as a test
    runs them), then copies of them 10 to 40 minutes apart with every seventh a few seconds after
    the one before; three idle ticks after the last."""
    work = [line for line in real_lines if line["decision"] not in history.IDLE_DECISIONS]
    idle = next(line for line in real_lines if line["decision"] == "nothing_new")
    lines = [dict(line) for line in work[:ticks]]
    when = history.stamp_seconds(lines[-1]["started_at"])
    for index in range(len(lines), ticks):
        when += 7 if index % 7 == 0 else 600 * (1 + index % 4)
        lines.append({**work[index % len(work)], "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))})
    for _ in range(3):
        when += 600
        lines.append({**idle, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))})
    path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def write_pages(project, out: Path) -> None:
    config = project.config()
    real_lines = project.runs()
    out.mkdir(parents=True, exist_ok=True)
    for ticks in PAGE_TICKS:
        page_log(config.paths.logs / RUNS_FILE, real_lines, ticks)
        shutil.copy(history.write_dashboard(config), out / f"dashboard-{ticks}.html")
    release = project.pointer()["current"]
    shutil.copy(config.paths.deployment / "releases" / release / "report.html", out / "report.html")
    print(f"wrote {', '.join(f'dashboard-{n}.html' for n in PAGE_TICKS)} and report.html to {out}")


def synthetic_log(path: Path, real_lines: list[dict], ticks: int, work_share: float) -> None:
    work = [line for line in real_lines if line["decision"] not in history.IDLE_DECISIONS]
    idle = next(line for line in real_lines if line["decision"] == "nothing_new")
    start = time.mktime(time.strptime("2026-01-01T00:00:00", "%Y-%m-%dT%H:%M:%S"))
    every = max(1, round(1 / work_share))
    with open(path, "w") as handle:
        for index in range(ticks):
            line = dict(work[index // every % len(work)] if index % every == 0 else idle)
            line["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 600 * index))
            handle.write(json.dumps(line, separators=(",", ":")) + "\n")


def write_whole_log_page(config) -> None:
    """The baseline: every line of runs.jsonl read and parsed, then the same page."""
    lines = [json.loads(raw) for raw in (config.paths.logs / RUNS_FILE).read_text().splitlines() if raw.strip()]
    work = [line for line in lines if line.get("decision") not in history.IDLE_DECISIONS][-history.MAX_TICKS:]
    releases, current = history.read_releases(config.paths.deployment)
    page = history.render_dashboard(history.History(work, lines[-1], len(lines) - len(work), True, releases, current, {}),
                                    project=config.root.name)
    atomic_write_text(config.paths.logs / history.DASHBOARD_FILE, page, durable=False)


def median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def idle_tick_seconds(project, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "fullprocess.py"), "--config", str(project.config_path), "--no-api"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pages", type=Path, metavar="FOLDER", help="write the pages to look at into FOLDER; no timing")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        project = build_project(folder)
        from churnlib.logsetup import close_logging

        close_logging()
        if args.pages:
            write_pages(project, args.pages)
            return 0
        config = project.config()
        real_lines = project.runs()
        log = config.paths.logs / RUNS_FILE
        print(f"no-new-data tick (python fullprocess.py, wall, median of {args.repeat}): "
              f"{idle_tick_seconds(project, args.repeat):.3f} s\n")
        print(f"{'ticks':>7} {'did work':>9} {'log MB':>7} {'page KB':>8} {'tail read':>10} {'whole log':>10} {'whole/tail':>11}")
        for ticks, share in SCENARIOS:
            synthetic_log(log, real_lines, ticks, share)
            tail = median_seconds(lambda: history.write_dashboard(config), args.repeat)
            size = (config.paths.logs / history.DASHBOARD_FILE).stat().st_size
            whole = median_seconds(lambda: write_whole_log_page(config), args.repeat)
            print(f"{ticks:>7,} {share:>8.0%} {log.stat().st_size / 1e6:>7.1f} {size / 1e3:>8.0f} "
                  f"{tail * 1000:>8.1f}ms {whole * 1000:>8.1f}ms {whole / tail:>10.1f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
