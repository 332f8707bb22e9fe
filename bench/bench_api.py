"""API benchmark: the real API against a naive Flask + pandas app, both under gunicorn, in one run.

    python bench/bench_api.py                         # logistic regression, wrk, 10 s per run
    python bench/bench_api.py --algorithm xgboost
    python bench/bench_api.py --duration 5 --connections 16
    python bench/bench_api.py --compare-sync          # also the real app on sync workers (the set-up before gthread)

Builds a throw-away project from the shipped sample data, trains and deploys a model, then starts
each app under gunicorn (gunicorn.conf.py: 2 gthread workers) on a free 127.0.0.1 port and drives it with a bounded load:
wrk (Debian package ``wrk``) for ``--duration`` seconds at ``--connections`` connections, or, when
wrk is not installed, a bounded Python client (which is itself slower, so its figures are lower
bounds). The load generator shares the machine's cores with the server, as it would in a small
deployment. Prints requests per second and p50/p99 latency for single-record and 1,000-record
requests, with and without the top-3 reasons (``?reasons=3``; the naive app has no reasons, so
requests with reasons are compared with its plain requests), and the ratio real/naive.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
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


def start(app: str, config: Path, logs: Path, workers: int, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CHURN_CONFIG": str(config), "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}
    command = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--access-logfile", "/dev/null", "--error-logfile", str(logs), *extra, app]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def run_wrk(url: str, body_file: Path, duration: int, connections: int, path: str = "/prediction") -> dict:
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    result = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", str(script),
                             url + path], capture_output=True, text=True, env={**os.environ, "BENCH_BODY": str(body_file)},
                            check=True)
    text = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)

    def latency(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": latency("50"), "p99": latency("99"),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_python_client(url: str, body_file: Path, duration: int, connections: int, path: str = "/prediction") -> dict:
    """A bounded closed-loop client: `connections` threads, each one request at a time, for `duration` s."""
    import http.client

    body = body_file.read_bytes()
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + duration

    def worker():
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", choices=("logistic_regression", "xgboost"), default="logistic_regression")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app (default 2)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved runs per figure, the median shown (default 1; use 5 on a shared machine)")
    parser.add_argument("--compare-sync", action="store_true",
                        help="also run the real app on sync workers (gunicorn.conf.py's set-up before gthread), "
                             "to show what the threads cost")
    args = parser.parse_args(argv)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    drive = run_wrk if use_wrk else run_python_client
    print(f"machine: {os.cpu_count()} cores; model: {args.algorithm}; gunicorn {args.workers} workers per app; "
          f"load: {'wrk' if use_wrk else 'python client'}, {args.connections} connections, {args.duration} s per run, "
          f"median of {args.rounds} interleaved round(s)")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        config = build_project(work / "project", args.algorithm)
        bodies = {}
        for count in (1, 1000):
            path = work / f"body_{count}.json"
            records = sample_records(count)
            path.write_text(json.dumps(records[0] if count == 1 else {"records": records}))
            bodies[count] = path
        results = {}
        apps = [("real", "wsgi:app", ())]
        if args.compare_sync:
            apps.append(("sync", "wsgi:app", ("--worker-class", "sync", "--threads", "1")))
        apps.append(("naive", "naive_app:app", ()))
        # Every app runs at once (an idle one costs nearly nothing); rounds interleave the runs, so
        # that load from elsewhere on a shared machine falls on every app alike; the median is shown.
        servers = {}
        try:
            for name, target, extra in apps:
                servers[name] = start(target, config, work / f"{name}.log", args.workers, extra)
            runs: dict[tuple[str, int, bool], list[dict]] = {}
            for _round in range(args.rounds):
                for count, body in bodies.items():
                    for name in servers:
                        for reasons in ((False, True) if name == "real" else (False,)):
                            path = "/prediction?reasons=3" if reasons else "/prediction"
                            runs.setdefault((name, count, reasons), []).append(
                                drive(servers[name][1], body, args.duration, args.connections, path))
            for key, figures in runs.items():
                figures.sort(key=lambda f: f["rps"])
                results[key] = figures[len(figures) // 2]
        finally:
            for process, _url in servers.values():
                process.terminate()
                process.wait(timeout=30)
        print(f"\n{'app':<7} {'records':>7} {'reasons':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for (name, count, reasons), figures in results.items():
            print(f"{name:<7} {count:>7} {'top 3' if reasons else '-':>7} {figures['rps']:>9.0f} {figures['p50']:>8.2f} "
                  f"{figures['p99']:>8.2f} {figures['errors']:>7} {figures['socket_errors']}")
        for count in bodies:
            for reasons in (False, True):
                ratio = results[("real", count, reasons)]["rps"] / results[("naive", count, False)]["rps"]
                print(f"real{' with reasons' if reasons else ''} / naive, {count}-record requests: {ratio:.1f}x")
        if args.compare_sync:
            for count in bodies:
                ratio = results[("real", count, False)]["rps"] / results[("sync", count, False)]["rps"]
                print(f"real (gthread) / sync workers, {count}-record requests: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
