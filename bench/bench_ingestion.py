"""Ingestion benchmark: incremental ingestion against the classic re-read-everything baseline.

    python bench/bench_ingestion.py            # histories of 0, 100,000 and 1,000,000 rows
    python bench/bench_ingestion.py --quick    # 0, 10,000 and 100,000 rows
    python bench/bench_ingestion.py --backlog-only   # just 3.
    python bench/bench_ingestion.py --large 1000000 3000000 10000000 --baseline /work/main   # just 4.
    python bench/bench_ingestion.py --small-files 20 --baseline /work/main   # 20 small files, CPU time, fresh processes

Prints, in one run on this machine:

1. the wall time of a no-new-data tick (``python fullprocess.py`` as cron runs it, a fresh
   interpreter each time), next to the time it takes just to import pandas and scikit-learn, which
   a tick that imports them at the top (the classic script) pays before doing anything;
2. the time to ingest one new 10,000-row file on top of each history size, for
   ``ingestion.run_ingestion`` (reads the new file only) and for the classic approach (read every
   file in sourcedata/ with pandas, concatenate, drop duplicates, rewrite finaldata.csv), with the
   ratios to the empty-history time;
3. a backlog: one tick's ingestion of 10 and of 100 new 10,000-row files at once (after an outage),
   and the ratio of the two, which should be about 10 (each file costs what one file costs).

4. (``--large``) one large new file of 1, 3 or 10 million rows ingested into an empty history, each
   in a fresh process: its wall time, CPU time and peak memory (max RSS), for this checkout and,
   with ``--baseline CHECKOUT``, another checkout's ingestion in the same run (e.g. the code before
   ingestion read files in chunks). The files are generated once into ``--folder``.

Both ingestions run in this process with their imports already paid, so the figures compare the
work, not interpreter start-up. Each figure is the median of ``--repeat`` runs on a fresh copy of
the history.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ingestion  # noqa: E402
from churnlib.config import load_config  # noqa: E402

FILE_ROWS = 10_000
HEADER = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan,exited\n"
PLANS = np.array(["basic", "standard", "premium"])


def write_batch(path: Path, seed: int, rows: int = FILE_ROWS) -> None:
    """Write ``rows`` distinct customer rows (the seed keeps batches apart)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows) + seed * rows  # makes every row of every batch unique
    frame = pd.DataFrame({
        "corporation": np.char.add("c", ids.astype(str)),
        "lastmonth_activity": rng.integers(0, 5000, rows),
        "lastyear_activity": rng.integers(0, 60000, rows),
        "number_of_employees": rng.integers(1, 2000, rows),
        "plan": PLANS[rng.integers(0, 3, rows)],
        "exited": rng.integers(0, 2, rows),
    })
    frame.to_csv(path, index=False)


def make_project(root: Path) -> Path:
    (root / "sourcedata").mkdir(parents=True)
    (root / "testdata").mkdir()
    config = {"schema": {"target": "exited", "id_columns": ["corporation"]}, "api": {"url": "http://127.0.0.1:9"}}
    (root / "config.json").write_text(json.dumps(config))
    return root / "config.json"


def build_history(root: Path, history_rows: int) -> None:
    """A project whose sourcedata/ holds history_rows rows in 10,000-row files, all ingested."""
    config_path = make_project(root)
    for index in range(history_rows // FILE_ROWS):
        write_batch(root / "sourcedata" / f"history_{index:04d}.csv", seed=index + 1)
    ingestion.run_ingestion(load_config(config_path))


def incremental(root: Path) -> float:
    config = load_config(root / "config.json")
    started = time.perf_counter()
    result = ingestion.run_ingestion(config)
    elapsed = time.perf_counter() - started
    assert result.rows_added == FILE_ROWS, result
    return elapsed


def classic(root: Path) -> float:
    """The classic ingestion: re-read every source file, concatenate, de-duplicate, rewrite."""
    started = time.perf_counter()
    source = root / "sourcedata"
    names = sorted(p.name for p in source.glob("*.csv"))
    frames = [pd.read_csv(source / name) for name in names]
    final = pd.concat(frames, ignore_index=True).drop_duplicates()
    (root / "classic").mkdir(exist_ok=True)
    final.to_csv(root / "classic" / "finaldata.csv", index=False)
    (root / "classic" / "ingestedfiles.txt").write_text("\n".join(names) + "\n")
    return time.perf_counter() - started


def measure(template: Path, work: Path, step, repeat: int) -> float:
    times = []
    for attempt in range(repeat):
        copy = work / f"run{attempt}"
        shutil.copytree(template, copy)
        # A copy has new inodes, so one scan re-hashes the history files; a cron tick between two
        # drops does that scan in real life, so it is not part of the timed ingest.
        ingestion.run_ingestion(load_config(copy / "config.json"))
        write_batch(copy / "sourcedata" / "new.csv", seed=999_999)
        os.sync()  # or the timed run's fsync would also flush the copy's pages, which a real tick never does
        times.append(step(copy))
        shutil.rmtree(copy)
    return statistics.median(times)


def no_new_data_tick(work: Path, repeat: int) -> tuple[float, float]:
    """Median wall time of `python fullprocess.py` with nothing new, and of importing pandas + sklearn."""
    root = work / "deployed"
    config_path = make_project(root)
    shutil.copy(ROOT / "sourcedata" / "dataset1.csv", root / "sourcedata")
    shutil.copy(ROOT / "testdata" / "testdata.csv", root / "testdata")
    env = {**os.environ, "CHURN_PYPI_URL": "http://127.0.0.1:9"}
    command = [sys.executable, str(ROOT / "fullprocess.py"), "--config", str(config_path), "--no-api"]
    subprocess.run(command, check=True, env=env, capture_output=True)  # cold start
    ticks, imports = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        ticks.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pandas, sklearn.linear_model"], check=True)
        imports.append(time.perf_counter() - started)
    last = json.loads((root / "logs" / "runs.jsonl").read_text().splitlines()[-1])
    assert last["decision"] == "nothing_new", last
    return statistics.median(ticks), statistics.median(imports)


def backlog(work: Path, files: int) -> float:
    """Time one ingestion of ``files`` new 10,000-row files at once, on an empty history."""
    root = work / f"backlog_{files}"
    config_path = make_project(root)
    for index in range(files):
        write_batch(root / "sourcedata" / f"backlog_{index:04d}.csv", seed=10_000 + index)
    os.sync()
    config = load_config(config_path)
    started = time.perf_counter()
    result = ingestion.run_ingestion(config)
    elapsed = time.perf_counter() - started
    assert len(result.accepted) == files and result.rows_added == files * FILE_ROWS, result
    shutil.rmtree(root)
    return elapsed


def write_large(path: Path, rows: int) -> Path:
    """Write (once) a CSV file of ``rows`` distinct customer rows, a million at a time."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with open(partial, "w") as handle:
        handle.write(HEADER)
        for seed, start in enumerate(range(0, rows, 1_000_000), start=1):
            piece = path.parent / "piece.csv"
            write_batch(piece, seed=seed, rows=min(1_000_000, rows - start))
            handle.write(piece.read_text().split("\n", 1)[1])
            piece.unlink()
    partial.rename(path)
    return path


INGEST_ONE = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import ingestion
from churnlib.config import load_config
config = load_config(sys.argv[2])
started = time.perf_counter()
result = ingestion.run_ingestion(config)
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "max_rss_mb": usage.ru_maxrss / 1024, "rows_added": result.rows_added,
                  "rejected": [entry["reason"] for entry in result.rejected]}))
"""


def large_file(work: Path, checkout: Path, sources: list[Path]) -> dict:
    """Ingest ``sources`` into a fresh empty project with ``checkout``'s code, in a fresh process; return its figures."""
    root = work / "large"
    config_path = make_project(root)
    for source in sources:
        os.link(source, root / "sourcedata" / source.name)  # the same bytes, no copy
    os.sync()
    try:
        done = subprocess.run([sys.executable, "-c", INGEST_ONE, str(checkout), str(config_path)], check=True,
                              capture_output=True, text=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["finaldata_sha256"] = subprocess.run(["sha256sum", str(root / "ingesteddata" / "finaldata.csv")],
                                                     capture_output=True, text=True).stdout.split()[0]
        return figures
    finally:
        shutil.rmtree(root)


def large_files(sizes: list[int], baseline: Path | None, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    checkouts = [("this checkout", ROOT)] + ([(f"baseline {baseline}", baseline)] if baseline else [])
    print(f"\none large new file into an empty history, each in a fresh process (load: {os.getloadavg()[0]:.1f}):")
    print(f"  {'rows':>10}  {'code':<28} {'wall':>8} {'cpu':>8} {'peak RSS':>10}  finaldata.csv")
    with tempfile.TemporaryDirectory(prefix="bench-ingestion-large-", dir=folder) as tmp:
        for rows in sizes:
            source = write_large(folder / f"large-{rows}.csv", rows)
            for label, checkout in checkouts:
                figures = large_file(Path(tmp), checkout, [source])
                assert figures["rows_added"] == rows, figures
                print(f"  {rows:>10,}  {label:<28} {figures['seconds']:>7.1f}s {figures['cpu_seconds']:>7.1f}s "
                      f"{figures['max_rss_mb']:>8,.0f} MB  sha256 {figures['finaldata_sha256'][:12]} "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)


def small_files(count: int, baseline: Path | None, rounds: int) -> None:
    """One tick's ingestion of ``count`` new 10,000-row files, this checkout and the baseline in turn, fresh processes."""
    checkouts = [("this checkout", ROOT)] + ([(f"baseline {baseline}", baseline)] if baseline else [])
    print(f"\n{count} new {FILE_ROWS:,}-row files in one tick, empty history, fresh process each "
          f"(imports included; {rounds} rounds, alternating):")
    with tempfile.TemporaryDirectory(prefix="bench-ingestion-small-") as tmp:
        files = []
        for index in range(count):
            files.append(Path(tmp) / f"small_{index:04d}.csv")
            write_batch(files[-1], seed=20_000 + index)
        for round_ in range(rounds):
            for label, checkout in checkouts:
                figures = large_file(Path(tmp), checkout, files)
                assert figures["rows_added"] == count * FILE_ROWS, figures
                print(f"  round {round_ + 1}  {label:<28} wall {figures['seconds']:>6.2f} s  cpu "
                      f"{figures['cpu_seconds']:>6.2f} s ({figures['cpu_seconds'] / count:.3f} s a file)  "
                      f"peak {figures['max_rss_mb']:>5,.0f} MB  (load {os.getloadavg()[0]:.1f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller histories (0, 10k, 100k rows)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    parser.add_argument("--backlog-only", action="store_true", help="only the backlog figures (10 and 100 files in one tick)")
    parser.add_argument("--large", type=int, nargs="+", metavar="ROWS",
                        help="only 4.: one new file of each number of rows, ingested in a fresh process")
    parser.add_argument("--baseline", type=Path, help="with --large: another checkout's ingestion, measured beside")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "churn-bench-ingestion",
                        help="with --large: where the generated files are kept between runs")
    parser.add_argument("--small-files", type=int, metavar="N",
                        help="only: N new 10,000-row files in one tick, in a fresh process (with --baseline beside)")
    parser.add_argument("--rounds", type=int, default=3, help="with --small-files: alternating rounds (default 3)")
    args = parser.parse_args(argv)
    if args.small_files:
        small_files(args.small_files, args.baseline, args.rounds)
        return 0
    if args.large:
        large_files(args.large, args.baseline, args.folder)
        return 0
    sizes = [0, 10_000, 100_000] if args.quick else [0, 100_000, 1_000_000]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, pandas {pd.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-ingestion-") as tmp:
        work = Path(tmp)
        ten = statistics.median(backlog(work, 10) for _ in range(args.repeat))
        hundred = statistics.median(backlog(work, 100) for _ in range(args.repeat))
        print(f"\nbacklog: one tick ingesting N new {FILE_ROWS:,}-row files at once (median of {args.repeat}):")
        print(f"   10 files: {ten:.2f} s\n  100 files: {hundred:.2f} s\n  ratio 100/10: {hundred / ten:.1f}x "
              "(target: about 10x; the cost of each file must not grow with the files before it)")
        if args.backlog_only:
            return 0
        tick, imports = no_new_data_tick(work, max(args.repeat, 5))
        print(f"\nno-new-data tick (python fullprocess.py, wall, median of {max(args.repeat, 5)}): {tick:.3f} s")
        print(f"  for comparison, importing pandas + scikit-learn alone: {imports:.3f} s")

        print(f"\ningest one new {FILE_ROWS:,}-row file (median of {args.repeat}):")
        print(f"  {'history rows':>12}  {'incremental':>11}  {'ratio':>6}  {'classic':>9}  {'ratio':>6}  {'classic/incr.':>13}")
        base_incremental = base_classic = None
        for size in sizes:
            template = work / f"history_{size}"
            build_history(template, size)
            inc = measure(template, work, incremental, args.repeat)
            cla = measure(template, work, classic, args.repeat)
            base_incremental = base_incremental or inc
            base_classic = base_classic or cla
            print(f"  {size:>12,}  {inc:>10.3f}s  {inc / base_incremental:>5.2f}x  {cla:>8.3f}s  "
                  f"{cla / base_classic:>5.2f}x  {cla / inc:>12.1f}x")
            shutil.rmtree(template)
    print("\nratio = time / time on an empty history; targets: no-new-data tick < 0.3 s, "
          "incremental at 1,000,000 rows <= 1.5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
