"""Retrain benchmark: a drift retrain's training step against one fit, with and without the reuse of
the window choice's fit (issue 19: xgboost fitted the whole history twice per retrain).

    python bench/bench_retrain.py                                  # 100k, 1M and 3M rows, both models
    python bench/bench_retrain.py --rows 100000 --algorithms xgboost
    python bench/bench_retrain.py --keep /tmp/retrain             # keep (and reuse) the generated projects

For each history size (``bench/churnsim.py``'s starting world, seeded) and each model, real ticks of
``fullprocess.py``, each in a fresh process so that its peak memory (max RSS) is its own:

1. a cold start on the history: its training step is one fit plus the checks (calibration on the
   test data), and the fit alone is the release's ``seconds``;
2. a batch of 10,000 customers from a moved population (feature drift) in two copies of that
   project: a drift retrain with this checkout's code (``reuse``), and one with the reuse turned off
   (``refit``, ``churnlib.decisions.REUSE_MAX_SHARE = 0``: the code as it was before, every window's
   challenger fitted again with the selection slice).

Printed for each: the training step (``timings.training`` of the run line), its ratio to one fit,
the peak memory of the tick, and what was decided (window, held-out score), so that a faster retrain
is seen to decide the same. Targets: at 1M and 3M rows, the reuse retrain's training step at most
1.2x the cold start's (one fit plus the checks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

BATCH_ROWS = 10_000
TEST_ROWS = 2_000
# A tick in a fresh process, timed from inside: each fit (``training.train_model``) and the
# retrain, wall and CPU seconds (CPU: all of the process's threads; the machine may be shared, and a
# fit's CPU time hardly moves with the load while its wall time does). ``REUSE_MAX_SHARE`` is set
# first: 0 turns the reuse off (the code before it: every challenger fitted again up to the held-out rows).
TIMED_TICK = """
import json, sys, time
out, share = sys.argv.pop(1), float(sys.argv.pop(1))
import churnlib.decisions, fullprocess, training
if share >= 0:
    churnlib.decisions.REUSE_MAX_SHARE = share
timings = {"fits": []}
def timed(function, record):
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            record(args, time.perf_counter() - wall, time.process_time() - cpu)
    return wrapper
training.train_model = timed(training.train_model, lambda a, w, c: timings["fits"].append([len(a[0]), w, c]))
fullprocess.retrain = timed(fullprocess.retrain, lambda a, w, c: timings.update(retrain=[w, c]))
try:
    sys.exit(fullprocess.main(sys.argv[1:]))
finally:
    open(out, "w").write(json.dumps(timings))
"""
REFIT, REUSE = 0.0, -1.0


def write_project(folder: Path, rows: int, algorithm: str, seed: int) -> Path:
    """Write a project whose history is ``rows`` generated customers; return its config path."""
    import numpy as np

    from churnsim import TARGET, World, to_csv

    (folder / "sourcedata").mkdir(parents=True)
    (folder / "testdata").mkdir()
    rng = np.random.default_rng(seed)
    (folder / "sourcedata" / "history.csv").write_text(to_csv(World().frame(rows, rng)))
    (folder / "testdata" / "testdata.csv").write_text(to_csv(World().frame(TEST_ROWS, rng)))
    config = {"schema": {"target": TARGET, "id_columns": ["customer_id"]},
              "model": {"algorithm": algorithm, "random_seed": 7},
              "api": {"url": "http://127.0.0.1:9"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder / "config.json"


def add_batch(folder: Path, seed: int) -> None:
    import numpy as np

    from churnsim import World, to_csv

    (folder / "sourcedata" / "moved.csv").write_text(to_csv(World(shift=1.0).frame(BATCH_ROWS,
                                                                                  np.random.default_rng(seed))))


def tick(config: Path, share: float = REUSE) -> dict:
    """Run one tick in a fresh process; return its run line with the process's peak memory and timings."""
    timings = config.parent / "bench-timings.json"
    process = subprocess.Popen([sys.executable, "-c", TIMED_TICK, str(timings), str(share), "--config", str(config),
                                "--no-api"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"tick failed ({config}):\n{stderr[-3000:]}")
    run = json.loads((config.parent / "logs" / "runs.jsonl").read_text().splitlines()[-1])
    run["peak_mb"] = usage.ru_maxrss / 1024
    run["bench"] = json.loads(timings.read_text())
    return run


def measure(work: Path, rows: int, algorithm: str, seed: int) -> dict:
    base = work / f"{algorithm}-{rows}"
    if not (base / "cold.json").exists():
        shutil.rmtree(base, ignore_errors=True)
        config = write_project(base, rows, algorithm, seed)
        cold = tick(config)
        if cold["decision"] != "cold_start":
            raise SystemExit(f"expected a cold start, got {cold['decision']}: {cold['reason']}")
        (base / "cold.json").write_text(json.dumps(cold))
    cold = json.loads((base / "cold.json").read_text())
    (fit_rows, fit_wall, fit_cpu), = cold["bench"]["fits"]
    result = {"rows": rows, "algorithm": algorithm, "one_fit": [fit_wall, fit_cpu], "cold": cold["bench"]["retrain"],
              "cold_mb": cold["peak_mb"]}
    for name, share in (("refit", REFIT), ("reuse", REUSE)):
        copy = work / f"{algorithm}-{rows}-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(base, copy, symlinks=True)
        add_batch(copy, seed + 1)
        run = tick(copy / "config.json", share)
        challenge = run.get("challenge") or {}
        fits = run["bench"]["fits"]
        result[name] = {"retrain": run["bench"]["retrain"], "peak_mb": run["peak_mb"],
                        "fits": len(fits), "large_fits": sum(1 for f in fits if f[0] > rows // 2),
                        "decision": run["decision"], "window": challenge.get("window"),
                        "held_out_score": challenge.get("challenger"),
                        "not_trained_on": challenge.get("selection_rows_not_trained_on", 0)}
        shutil.rmtree(copy)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000],
                        help="history sizes (default: 100000 1000000 3000000)")
    parser.add_argument("--algorithms", nargs="+", default=["logistic_regression", "xgboost"],
                        choices=["logistic_regression", "xgboost"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="folder for the generated projects, kept and reused "
                        "(default: a temporary folder, deleted)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}; a drift batch of {BATCH_ROWS:,} rows on top of the history")
    print("CPU seconds (all threads of the tick's process); wall seconds in brackets. 'retrain' is fullprocess.retrain:")
    print("reading the history, every fit, the predictions and comparisons, the calibration (not the report).")
    try:
        for rows in args.rows:
            for algorithm in args.algorithms:
                r = measure(work, rows, algorithm, args.seed)
                fit_wall, fit_cpu = r["one_fit"]
                print(f"\n{algorithm}, {rows:,} rows of history; one fit {fit_cpu:.1f} s ({fit_wall:.1f} s); "
                      f"cold start's retrain {r['cold'][1]:.1f} s ({r['cold'][0]:.1f} s), {r['cold_mb']:.0f} MB peak",
                      flush=True)
                for name in ("refit", "reuse"):
                    d = r[name]
                    wall, cpu = d["retrain"]
                    print(f"  drift retrain, {name}: {cpu:6.1f} s ({wall:6.1f} s) = {cpu / fit_cpu:.2f}x one fit, "
                          f"{cpu / r['cold'][1]:.2f}x the cold start's; {d['fits']} fits, {d['large_fits']} of the "
                          f"whole history; {d['peak_mb']:.0f} MB peak; {d['decision']}, window {d['window']}, held-out "
                          f"score {d['held_out_score']:.4f}, {d['not_trained_on']:,} rows not trained on", flush=True)
                print(f"  reuse / refit: {r['reuse']['retrain'][1] / r['refit']['retrain'][1]:.2f}x CPU", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
