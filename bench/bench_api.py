"""API benchmark: the real API against a do-nothing app (the ceiling) and a naive Flask + pandas app,
all under gunicorn with the same settings, in one run.

    python bench/bench_api.py                         # logistic regression, wrk, 10 s per run
    python bench/bench_api.py --rounds 5 --duration 4 # on a shared machine: interleaved rounds, medians
    python bench/bench_api.py --algorithm xgboost
    python bench/bench_api.py --compare-sync          # also the real app on sync workers (the set-up before gthread)

Builds a throw-away project from the shipped sample data, trains and deploys a model, then starts
each app under gunicorn (gunicorn.conf.py: 2 gthread workers) on a free 127.0.0.1 port and drives it with a bounded load:
wrk (Debian package ``wrk``) for ``--duration`` seconds at ``--connections`` connections, or, when
wrk is not installed, a bounded Python client (which is itself slower, so its figures are lower
bounds). The load generator shares the machine's cores with the server, as it would in a small
deployment. Each round runs every app once, starting one run later than the round before (no app
always runs first, or after the same one), and each run starts once the previous app's workers are
idle (a slow app still answers its queued requests when wrk stops). Prints requests per second, p50/p99 latency and the workers' CPU time per request
for single-record and 1,000-record requests, with and without the top-3 reasons (``?reasons=3``),
then, each a median over the rounds of the ratio within a round:

- the ceiling share: the real API's single-record rate as a share of the do-nothing app's
  (``bench/ceiling_app.py``: one route answering a constant JSON reply), i.e. what the project's own
  request path leaves of what gunicorn and Flask can do on this machine;
- the reasons cost: how much lower the single-record rate is with ``?reasons=3``; and, paired, with
  ``--paired-seconds`` (default 20) of plain and reasons requests chosen at random on every
  connection to the API alone, each request timed by its worker (``bench/paired_conf.py``: the
  handling thread's CPU time): the reasons' extra CPU, in their own request and in the next one
  the worker handles, with 95% intervals, and what it takes of the rate where the workers' CPU
  bounds it. On a small shared machine the rate of separate runs wanders by more than the cost;
  requests mixed at random share the same load and caches, so their difference does not;
- real / naive for 1,000-record requests (``bench/naive_app.py``: JSON -> DataFrame -> predict_proba),
  with and without reasons (the naive app has none, so both are compared with its plain requests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "r")
wrk.body = f:read("*a")
f:close()
"""
# Each request one of two paths at random: independent of the connection, so of the worker serving
# it, and of the request before it.
WRK_EITHER = """
local paths = {os.getenv("BENCH_PATH_A"), os.getenv("BENCH_PATH_B")}
request = function()
  return wrk.format(nil, paths[math.random(2)])
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_project(root: Path, algorithm: str, threads: int = 1) -> Path:
    """Build a project from the shipped sample data, train and deploy ``algorithm``; return its config file."""
    (root / "sourcedata").mkdir(parents=True)
    (root / "testdata").mkdir()
    for name in ("dataset1.csv", "dataset2.csv"):
        shutil.copy(ROOT / "sourcedata" / name, root / "sourcedata")
    shutil.copy(ROOT / "testdata" / "testdata.csv", root / "testdata")
    config = {"schema": {"target": "exited", "id_columns": ["corporation"]},
              "model": {"algorithm": algorithm, "n_threads": threads}, "api": {"url": "http://127.0.0.1:9"}}
    (root / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "CHURN_PYPI_URL": "http://127.0.0.1:9"}
    subprocess.run([sys.executable, str(ROOT / "fullprocess.py"), "--config", str(root / "config.json"), "--no-api"],
                   check=True, env=env, capture_output=True)
    return root / "config.json"


def start(app: str, config: Path, logs: Path, workers: int, extra: tuple[str, ...] = (),
          root: Path = ROOT, settings: Path | None = None, env_extra: dict[str, str] | None = None,
          ) -> tuple[subprocess.Popen, str]:
    """Start ``app`` of the checkout at ``root`` under its gunicorn.conf.py (or ``settings``); return
    the process and its URL."""
    port = free_port()
    env = {**os.environ, "CHURN_CONFIG": str(config), "PYTHONPATH": f"{root}:{ROOT / 'bench'}",
           # each app its own metrics folder: gunicorn.conf.py empties it at start
           "PROMETHEUS_MULTIPROC_DIR": str(logs.with_suffix(".metrics")), **(env_extra or {})}
    settings = settings or root / "gunicorn.conf.py"
    command = [sys.executable, "-m", "gunicorn", "--config", str(settings), "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--access-logfile", "/dev/null", "--error-logfile", str(logs), *extra, app]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    body = json.dumps({"records": [sample_records(1)[0]]}).encode()
    for _ in range(300):
        try:
            request = urllib.request.Request(url + "/prediction", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    else:
        process.terminate()
        raise RuntimeError(f"{app} did not start; see {logs}")
    for _ in range(2 * workers):  # warm every worker
        urllib.request.urlopen(urllib.request.Request(url + "/prediction", data=body,
                                                      headers={"Content-Type": "application/json"}), timeout=5).read()
    return process, url


def sample_records(count: int) -> list[dict]:
    import csv

    with open(ROOT / "testdata" / "testdata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = []
    for index in range(count):
        row = dict(rows[index % len(rows)])
        row.pop("exited")
        for column in ("lastmonth_activity", "lastyear_activity", "number_of_employees"):
            row[column] = float(row[column]) if row[column] else None
        records.append(row)
    return records


def run_wrk(url: str, body_file: Path, duration: int, connections: int, path: str | tuple[str, str] = "/prediction") -> dict:
    """Drive ``url + path`` with wrk; with two paths, each request takes one at random."""
    script = body_file.with_suffix(".either.lua" if isinstance(path, tuple) else ".lua")
    script.write_text(WRK_SCRIPT + (WRK_EITHER if isinstance(path, tuple) else ""))
    env = {**os.environ, "BENCH_BODY": str(body_file)}
    if isinstance(path, tuple):
        env.update(BENCH_PATH_A=path[0], BENCH_PATH_B=path[1])
        path = path[0]
    result = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", str(script),
                             url + path], capture_output=True, text=True, env=env, check=True)
    text = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)

    def latency(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": latency("50"), "p99": latency("99"),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_python_client(url: str, body_file: Path, duration: int, connections: int,
                      path: str | tuple[str, str] = "/prediction") -> dict:
    """A bounded closed-loop client: `connections` threads, each one request at a time, for `duration`
    s; with two paths, each request takes one at random."""
    import http.client
    import random

    paths = path if isinstance(path, tuple) else (path,)
    body = body_file.read_bytes()
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + duration

    def worker():
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        choose = random.Random().choice
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", choose(paths), body, {"Content-Type": "application/json"})
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    errors[0] += 1
                if reply.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=10)
            except OSError:
                errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=10)
            latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"rps": len(latencies) / duration, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)], "errors": errors[0], "socket_errors": ""}


def worker_cpu_seconds(master: int) -> float | None:
    """Return the CPU seconds (user + system) the gunicorn master's workers used so far (Linux), or None."""
    try:
        workers = [int(pid) for task in Path(f"/proc/{master}/task").iterdir()
                   for pid in (task / "children").read_text().split()]
        total = 0
        for pid in workers:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wait_until_idle(master: int, limit: float = 10.0) -> None:
    """Wait until the master's workers stop using CPU (at most ``limit`` s): when wrk stops, a slow
    app still answers the requests it had queued, and the next run must not share the cores with them."""
    stop = time.monotonic() + limit
    used = worker_cpu_seconds(master)
    while used is not None and time.monotonic() < stop:
        time.sleep(0.2)
        now = worker_cpu_seconds(master)
        if now is None or now - used < 0.02:  # under a tenth of a core
            return
        used = now


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Return a distribution-free interval for the median of what the rounds measure: the k-th
    smallest and k-th largest round, k the largest for which at least ``level`` of the binomial(n,
    1/2) mass lies between (the classic sign-test interval); None with too few rounds (under 6)."""
    ordered = sorted(values)
    n = len(ordered)
    below = 0.0  # P(Binomial(n, 1/2) < k)
    k = 0
    while k < n // 2:
        below_next = below + math.comb(n, k) / 2 ** n
        if 1 - 2 * below_next < level:
            break
        below, k = below_next, k + 1
    return None if k == 0 else (ordered[k - 1], ordered[n - k])


# The paired measure of the reasons cost: a plain or a reasons request at random on every connection,
# each timed by the worker (bench/paired_conf.py times requests whose query string holds "paired").
PAIRED = ("/prediction?paired", "/prediction?paired&reasons=3")
WARM_UP = ("/prediction?warm", "/prediction?warm&reasons=3")


def paired_run(name: str, root: Path, config: Path, work: Path, body: Path, seconds: int, connections: int,
               workers: int, drive) -> dict:
    """Serve the API of the checkout at ``root`` under bench/paired_conf.py (its gunicorn.conf.py plus
    timing hooks), drive it with PAIRED's two requests at random for ``seconds``, and return the
    handling thread's CPU seconds of each request by its kind and the kind before it in its worker
    (bench/paired_conf.py), the workers' whole CPU seconds over the run (None without /proc) and
    the replies that were not 200."""
    folder = work / f"{name}-paired-cpu"
    folder.mkdir()
    process, url = start("wsgi:app", config, work / f"{name}-paired.log", workers, root=root,
                         settings=ROOT / "bench" / "paired_conf.py",
                         env_extra={"BENCH_GUNICORN_CONF": str(root / "gunicorn.conf.py"), "BENCH_CPU_DIR": str(folder)})
    try:
        drive(url, body, 2, connections, WARM_UP)
        wait_until_idle(process.pid)
        cpu_before = worker_cpu_seconds(process.pid)
        figures = drive(url, body, seconds, connections, PAIRED)
        wait_until_idle(process.pid)
        cpu_after = worker_cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    kinds = {path.partition("?")[2]: kind for path, kind in zip(PAIRED, ("plain", "reasons"))}
    timings: dict[tuple[str, str | None], list[float]] = {}
    for file in folder.glob("*.json"):  # one a worker, written as it stops
        for key, values in json.loads(file.read_text()).items():
            query, _, previous = key.partition(" after ")
            timings.setdefault((kinds[query], kinds.get(previous)), []).extend(values)
    return {"name": name, "timings": timings, "seconds": seconds, "errors": figures["errors"],
            "worker_cpu": cpu_after - cpu_before if None not in (cpu_before, cpu_after) else None}


def difference_of_means(first: list[float], second: list[float]) -> tuple[float, float]:
    """Return mean(second) - mean(first) and its standard error (Welch's: with the thousands of
    requests of a run, the difference is normal whatever the requests' own spread, so the 95%
    interval is 1.96 standard errors either side)."""
    return (statistics.fmean(second) - statistics.fmean(first),
            math.sqrt(statistics.variance(first) / len(first) + statistics.variance(second) / len(second)))


def paired_summary(run: dict, z: float = 1.959964) -> list[str]:
    """The paired run's lines: each kind's handling-thread CPU and the reasons' extra, what a reasons
    request adds to the next request its worker handles, and the share of the rate the two take
    where the workers' CPU bounds it."""
    timings = run["timings"]

    def of(kind: str | None = None, before: str | None = None) -> list[float]:
        return [value for (current, previous), values in timings.items() for value in values
                if kind in (None, current) and before in (None, previous)]

    plain, reasons, after_plain, after_reasons = of("plain"), of("reasons"), of(before="plain"), of(before="reasons")
    if min(map(len, (plain, reasons, after_plain, after_reasons))) < 2:
        return [f"{run['name']}: reasons cost, paired: too few timings came back from the workers "
                f"(see {run['name']}-paired.log, the error log)"]
    # The kinds are drawn at random, so a request's own kind and the kind before it are independent:
    # each difference of means measures one effect, the other averaging out.
    own, own_error = difference_of_means(plain, reasons)
    next_, next_error = difference_of_means(after_plain, after_reasons)
    extra, error = own + next_, math.hypot(own_error, next_error)
    us = 1e6
    lines = [f"{run['name']}: reasons cost, paired request by request ({len(plain):,} plain and {len(reasons):,} "
             f"with reasons, each chosen at random, {run['seconds']} s):",
             f"  CPU of the thread handling a request (headers parsed to access line): {us * statistics.fmean(plain):.0f} us "
             f"plain, {us * statistics.fmean(reasons):.0f} us with reasons: {us * own:+.1f} us "
             f"(95% interval {us * (own - z * own_error):+.1f} to {us * (own + z * own_error):+.1f})",
             f"  and of the next request its worker handles (what it left in the caches): {us * next_:+.1f} us "
             f"(95% interval {us * (next_ - z * next_error):+.1f} to {us * (next_ + z * next_error):+.1f}); "
             f"together {us * extra:+.1f} us ({us * (extra - z * error):+.1f} to {us * (extra + z * error):+.1f})"]
    if run["errors"]:
        lines.append(f"  ({run['errors']:,} replies were not 200: they are not among the timings)")
    if run["worker_cpu"]:
        # Half the requests carried reasons: a plain one after a plain one cost the mean less half the extra.
        each = run["worker_cpu"] / (len(plain) + len(reasons))
        base = each - extra / 2
        low, high = extra - z * error, extra + z * error
        lines.append(f"  the workers' whole CPU per request over the run: {us * each:.0f} us, a plain request's "
                     f"{us * base:.0f} us: reasons take {extra / (base + extra):.1%} of the rate (95% interval "
                     f"{low / (base + low):.1%} to {high / (base + high):.1%}) where the workers' CPU bounds it "
                     "(an estimate: the load generator's share of the cores dilutes it)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", choices=("logistic_regression", "xgboost"), default="logistic_regression")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app (default 2)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved runs per figure, the median shown (default 1; use 5 on a shared machine)")
    parser.add_argument("--sizes", default="1,1000", help="records per request, comma-separated (default 1,1000; "
                        "1 alone gives the ceiling share and the reasons cost in a quarter of the time)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also serve the API of another checkout (e.g. `git worktree add /tmp/before d15f60a`) "
                             "as 'before', and the do-nothing app as 'ceiling0', both under that checkout's "
                             "gunicorn.conf.py, interleaved with this one")
    parser.add_argument("--paired-seconds", type=int, default=20,
                        help="seconds of the paired reasons measure, plain and reasons requests chosen at random "
                             "on every connection, each timed by the worker (default 20; 0 skips it)")
    parser.add_argument("--compare-sync", action="store_true",
                        help="also run the real app on sync workers (gunicorn.conf.py's set-up before gthread), "
                             "to show what the threads cost")
    args = parser.parse_args(argv)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    drive = run_wrk if use_wrk else run_python_client
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; model: {args.algorithm}; "
          f"gunicorn {args.workers} workers per app; load: {'wrk' if use_wrk else 'python client'}, "
          f"{args.connections} connections, {args.duration} s per run, median of {args.rounds} interleaved round(s)")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        config = build_project(work / "project", args.algorithm)
        bodies = {}
        for count in sorted({int(size) for size in args.sizes.split(",")}):
            path = work / f"body_{count}.json"
            records = sample_records(count)
            path.write_text(json.dumps(records[0] if count == 1 else {"records": records}))
            bodies[count] = path
        apps = [("ceiling", "ceiling_app:app", (), ROOT), ("real", "wsgi:app", (), ROOT)]
        if args.baseline:  # with its own gunicorn.conf.py, and a ceiling under it
            apps += [("before", "wsgi:app", (), args.baseline.resolve()),
                     ("ceiling0", "ceiling_app:app", (), args.baseline.resolve())]
        if args.compare_sync:
            apps.append(("sync", "wsgi:app", ("--worker-class", "sync", "--threads", "1"), ROOT))
        apps.append(("naive", "naive_app:app", (), ROOT))
        # Every app runs at once (an idle one costs nearly nothing); rounds interleave the runs, so
        # that load from elsewhere on a shared machine falls on every app alike; medians are shown.
        servers = {}
        runs: dict[tuple[str, int, bool], list[dict]] = {}
        try:
            for name, target, extra, root in apps:
                servers[name] = start(target, config, work / f"{name}.log", args.workers, extra, root)
            for round_number in range(args.rounds):
                for count, body in bodies.items():
                    jobs = [(name, reasons) for name in servers
                            # the do-nothing app answers every body alike: a ceiling for small requests only
                            if not (name.startswith("ceiling") and count != 1)
                            for reasons in ((False, True) if name in ("real", "before") else (False,))]
                    # Each round starts one run later, so that no app always runs first or after the same one.
                    shift = round_number % len(jobs)
                    for name, reasons in jobs[shift:] + jobs[:shift]:
                        path = "/prediction?reasons=3" if reasons else "/prediction"
                        cpu_before = worker_cpu_seconds(servers[name][0].pid)
                        figures = drive(servers[name][1], body, args.duration, args.connections, path)
                        cpu_after = worker_cpu_seconds(servers[name][0].pid)
                        wait_until_idle(servers[name][0].pid)
                        served = figures["rps"] * args.duration
                        measured = None not in (cpu_before, cpu_after) and served
                        figures["cpu_us"] = (cpu_after - cpu_before) / served * 1e6 if measured else float("nan")
                        runs.setdefault((name, count, reasons), []).append(figures)
        finally:
            for process, _url in servers.values():
                process.terminate()
                process.wait(timeout=30)
        # Then each checkout's API alone, plain and reasons requests at random, each timed by its worker.
        paired = [paired_run(name, root, config, work, bodies[1], args.paired_seconds, args.connections, args.workers, drive)
                  for name, target, extra, root in apps if target == "wsgi:app" and not extra
                  ] if 1 in bodies and args.paired_seconds > 0 else []
    print(f"\n{'app':<8} {'records':>7} {'reasons':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} "
          f"{'errors':>7}")
    for (name, count, reasons), figures in runs.items():
        middle = {key: statistics.median([f[key] for f in figures]) for key in ("rps", "p50", "p99", "cpu_us")}
        errors = sum(f["errors"] for f in figures)
        socket_errors = "; ".join(f["socket_errors"] for f in figures if f["socket_errors"].strip(", 0"))
        print(f"{name:<8} {count:>7} {'top 3' if reasons else '-':>7} {middle['rps']:>9.0f} {middle['p50']:>8.2f} "
              f"{middle['p99']:>8.2f} {middle['cpu_us']:>10.0f} {errors:>7} {socket_errors}")

    def spread(each: list[float], form: str) -> str:
        """The rounds' range and, with 6 rounds or more, a 95% interval for their median."""
        if len(each) < 2:
            return ""
        interval = median_interval(each)
        shown = f"95% interval {interval[0]:{form}} to {interval[1]:{form}}; " if interval else ""
        return f" ({shown}rounds {min(each):{form}} to {max(each):{form}})"

    def ratios(top: tuple[str, int, bool], bottom: tuple[str, int, bool], key: str = "rps") -> str:
        """The median over rounds of top/bottom within each round, its interval and their range."""
        each = [a[key] / b[key] if b[key] else float("nan") for a, b in zip(runs[top], runs[bottom])]
        return f"{statistics.median(each):.2f}x" + spread(each, ".2f")

    print()
    if 1 in bodies:  # the do-nothing app answers single records only
        print(f"ceiling share, 1-record requests (real / do-nothing app, req/s): {ratios(('real', 1, False), ('ceiling', 1, False))}")
        print(f"  in worker CPU per request (do-nothing / real): {ratios(('ceiling', 1, False), ('real', 1, False), 'cpu_us')}")
        each = [1 - a["rps"] / b["rps"] if b["rps"] else float("nan") for a, b in zip(runs[("real", 1, True)], runs[("real", 1, False)])]
        print(f"reasons cost, 1-record requests (1 - with reasons / without, req/s): {statistics.median(each):.0%}" + spread(each, ".0%"))
        print(f"  in worker CPU per request (with / without): {ratios(('real', 1, True), ('real', 1, False), 'cpu_us')}")
        for run in paired:
            print("\n".join(paired_summary(run)))
        if args.baseline:
            print(f"before: ceiling share (under its own gunicorn.conf.py) {ratios(('before', 1, False), ('ceiling0', 1, False))}")
            print(f"do-nothing app under this gunicorn.conf.py / under the baseline's: "
                  f"{ratios(('ceiling', 1, False), ('ceiling0', 1, False))}")
            each = [1 - a["rps"] / b["rps"] if b["rps"] else float("nan")
                    for a, b in zip(runs[("before", 1, True)], runs[("before", 1, False)])]
            print(f"before: reasons cost {statistics.median(each):.0%}" + spread(each, ".0%"))
    for count in bodies if args.baseline else ():
        for reasons in (False, True):
            print(f"real / before, {count}-record requests{' with reasons' if reasons else ''}: "
                  f"{ratios(('real', count, reasons), ('before', count, reasons))}")
    for count in bodies:
        for reasons in (False, True):
            print(f"real{' with reasons' if reasons else ''} / naive, {count}-record requests: "
                  f"{ratios(('real', count, reasons), ('naive', count, False))}")
    if args.compare_sync:
        for count in bodies:
            print(f"real (gthread) / sync workers, {count}-record requests: "
                  f"{ratios(('real', count, False), ('sync', count, False))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
