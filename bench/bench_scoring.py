"""Risk-list benchmark: a large file of customers into a ranked list with top-3 reasons, against the
obvious way, both in the same run.

    python bench/bench_scoring.py                                  # 1,000,000 rows, both models
    python bench/bench_scoring.py --rows 200000 --algorithm logistic_regression
    python bench/bench_scoring.py --threads 2                      # xgboost on two threads

Builds a throw-away project from the shipped sample data, trains and deploys each model, writes a
customer file of ``--rows`` rows (the sample generator's customers, seeded), then times, each in a
fresh child process whose peak memory (ru_maxrss) it reports:

- real: ``scoring.write_risk_list``, what the cron job and ``scoring.py --customers`` run: the file
  read and validated in chunks, probabilities, top-3 reasons (exact contributions for logistic
  regression, xgboost's ``pred_contribs``), the ranked list sorted on disk and written atomically.
  For xgboost, the share of the time spent inside ``pred_contribs`` is measured too.
- baseline: the obvious way: ``pandas.read_csv`` of the whole file, ``predict_proba``, the list
  sorted and written with ``DataFrame.to_csv``, and reasons computed row by row (one
  ``transform`` and one contribution computation per row: coefficient times value for logistic
  regression, ``pred_contribs`` on a one-row DMatrix for xgboost) on ``--sample`` rows, their time
  extrapolated to every row and added. Its peak memory does not include reasons for every row
  (it never computes them), so it is a lower bound.

Prints wall time, rows per second and peak memory of each, and the ratio, for each model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_api import build_project  # noqa: E402  (this folder is on the path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
PLANS = ("basic", "standard", "premium")


def write_customers(path: Path, rows: int, seed: int = 11) -> None:
    """Write ``rows`` customers like samples/generate.py's (vectorised: a million in seconds)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    block = 200_000
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("corporation,lastmonth_activity,lastyear_activity,number_of_employees,plan\n")
        for start in range(0, rows, block):
            count = min(block, rows - start)
            plans = rng.choice(3, size=count, p=(0.35, 0.4, 0.25))
            employees = np.round(rng.lognormal(3.5, 1.0, count)).astype(int) + 1
            yearly = rng.lognormal(6.5 + 0.3 * plans, 0.8, count)
            monthly = yearly / 12 * rng.lognormal(0.0, 0.5, count)
            blank = rng.random(count) < 0.02
            letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
            codes = ["".join(code) for code in letters[rng.integers(0, 26, (count, 6))].tolist()]
            staff = np.where(blank, "", employees.astype(str))
            handle.writelines(f"{c},{m},{y},{e},{PLANS[p]}\n" for c, m, y, e, p in
                              zip(codes, monthly.astype(int).tolist(), yearly.astype(int).tolist(), staff.tolist(),
                                  plans.tolist()))


# --- the two contestants, each run in a child process ------------------------------------------------


def run_real(config_path: Path, customers: Path, output: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from churnlib.config import load_config
    from churnlib.modelstore import load_deployed
    from scoring import Outreach, ScoringModel, write_risk_list

    config = load_config(config_path)
    scorer = ScoringModel.of(load_deployed(config.paths.deployment))
    contribs_seconds = [0.0]
    if scorer.model.metadata["algorithm"] == "xgboost":
        import xgboost

        predict = xgboost.Booster.predict

        def timed(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return predict(self, *args, **kwargs)
            finally:
                if kwargs.get("pred_contribs"):
                    contribs_seconds[0] += time.perf_counter() - started

        xgboost.Booster.predict = timed
    started = time.perf_counter()
    summary = write_risk_list(customers, output, scorer, target="exited", reasons=3, outreach=Outreach(None),
                              scored_at="2026-01-01T00:00:00Z")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": summary["rows"], "pred_contribs_seconds": contribs_seconds[0],
            "estimated_f1": summary["estimate"]["f1"]}


def run_baseline(config_path: Path, customers: Path, output: Path, sample: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import pandas as pd

    from churnlib.config import load_config
    from churnlib.modelstore import load_deployed

    config = load_config(config_path)
    model = load_deployed(config.paths.deployment)
    features = model.metadata["schema"]["feature_columns"]
    pipeline = model.pipeline
    started = time.perf_counter()
    frame = pd.read_csv(customers)
    probabilities = pipeline.predict_proba(frame[features])[:, 1]
    frame["churn_probability"] = probabilities
    frame = frame.sort_values("churn_probability", ascending=False, kind="stable")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    bulk = time.perf_counter() - started

    # Reasons the obvious way: one row at a time, on a sample, extrapolated.
    preprocess, classifier = pipeline[:-1], pipeline.steps[-1][1]
    inner = getattr(classifier, "classifier", classifier)  # a recalibrated release wraps its classifier
    slope = getattr(classifier, "slope", 1.0)
    names = list(preprocess.get_feature_names_out())
    owner = [next(f for f in features if name == f or name.startswith(f + "_")) for name in names]
    rows = frame.head(sample)
    reasons = []
    started = time.perf_counter()
    for index in range(len(rows)):
        one = rows.iloc[[index]][features]
        encoded = preprocess.transform(one)
        if hasattr(inner, "coef_"):
            contributions = slope * inner.coef_[0] * encoded[0]
        else:
            import xgboost

            contributions = slope * inner.get_booster().predict(xgboost.DMatrix(encoded), pred_contribs=True)[0][:-1]
        by_feature: dict[str, float] = {}
        for feature, value in zip(owner, contributions):
            by_feature[feature] = by_feature.get(feature, 0.0) + float(value)
        top = sorted(by_feature.items(), key=lambda item: -abs(item[1]))[:3]
        reasons.append([f"{f} = {one.iloc[0][f]} ({'raises' if v > 0 else 'lowers'} risk, {v:+.2f})" for f, v in top])
    per_row = (time.perf_counter() - started) / max(len(rows), 1)
    started = time.perf_counter()
    for slot in range(3):
        frame[f"reason_{slot + 1}"] = [r[slot] for r in reasons] + [""] * (len(frame) - len(reasons))
    frame.to_csv(output, index=False)
    bulk += time.perf_counter() - started
    return {"seconds": bulk + per_row * len(frame), "rows": int(len(frame)), "measured_seconds": bulk,
            "reasons_per_row_ms": per_row * 1000, "sample": len(rows)}


def child(args: argparse.Namespace) -> int:
    if args.child == "real":
        result = run_real(Path(args.config), Path(args.customers), Path(args.output))
    else:
        result = run_baseline(Path(args.config), Path(args.customers), Path(args.output), args.sample)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


def measure(kind: str, config: Path, customers: Path, output: Path, sample: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--config", str(config), "--customers", str(customers),
               "--output", str(output), "--sample", str(sample)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CHURN_PYPI_URL": "http://127.0.0.1:9"})
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="customers in the file (default 1,000,000)")
    parser.add_argument("--algorithm", choices=("both", "logistic_regression", "xgboost"), default="both")
    parser.add_argument("--sample", type=int, default=2000, help="rows the baseline explains one by one (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="xgboost threads (model.n_threads; default 1)")
    parser.add_argument("--child", choices=("real", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--customers", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    algorithms = ("logistic_regression", "xgboost") if args.algorithm == "both" else (args.algorithm,)
    print(f"machine: {os.cpu_count()} cores; {args.rows:,} customers; top-3 reasons; xgboost threads {args.threads}; "
          f"baseline reasons on {args.sample:,} rows, extrapolated")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        work = Path(tmp)
        customers = work / "customers.csv"
        started = time.perf_counter()
        write_customers(customers, args.rows)
        print(f"customer file: {customers.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - started:.1f} s")
        for algorithm in algorithms:
            config = build_project(work / algorithm, algorithm, args.threads)
            for kind in ("real", "baseline"):
                results[(algorithm, kind)] = measure(kind, config, customers, work / f"{algorithm}-{kind}.csv", args.sample)
                os.remove(work / f"{algorithm}-{kind}.csv")
    print(f"\n{'model':<20} {'way':<9} {'seconds':>9} {'rows/s':>10} {'peak MB':>8}")
    for (algorithm, kind), figures in results.items():
        note = " (extrapolated)" if kind == "baseline" else ""
        print(f"{algorithm:<20} {kind:<9} {figures['seconds']:>9.1f} {figures['rows'] / figures['seconds']:>10,.0f} "
              f"{figures['peak_mb']:>8.0f}{note}")
    for algorithm in algorithms:
        real, baseline = results[(algorithm, "real")], results[(algorithm, "baseline")]
        print(f"{algorithm}: real / baseline speed {baseline['seconds'] / real['seconds']:.1f}x; baseline reasons "
              f"{baseline['reasons_per_row_ms']:.2f} ms a row (measured on {baseline['sample']:,} rows), the rest "
              f"{baseline['measured_seconds']:.1f} s")
        if real["pred_contribs_seconds"]:
            print(f"{algorithm}: {real['pred_contribs_seconds']:.1f} s of {real['seconds']:.1f} s "
                  f"({real['pred_contribs_seconds'] / real['seconds']:.0%}) inside xgboost's pred_contribs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
