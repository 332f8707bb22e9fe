"""Validation of the risk lists' label-free estimate, and of the calibration check it relies on.

    python bench/validate_estimate.py                 # 100 files of 500 customers per case
    python bench/validate_estimate.py --files 200 --rows 2000

The estimate: a project is built from the shipped sample data and each model trained and deployed
as the cron job does (calibration checked on the test data). Then, for each case, ``--files``
labelled files are drawn from the sample generator (seeded), their labels hidden, and each file
estimated as a risk list estimates it; the realised F1 (labels revealed) is compared with the
estimate's 95 % interval. Cases: no drift; covariate drift (the later batch's customers: less
activity, more of them on the basic plan; what drives churn unchanged); concept drift (premium
customers now leave). Prints how many files landed inside the interval (with a 95 % binomial
interval on that share) and the mean error of the point estimate.

The calibration check: seeded trials of held-out rows whose probabilities are exactly calibrated
(false alarms) or overconfident (log-odds doubled: power), Cox's test against the classic
Hosmer-Lemeshow test (deciles of risk), in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_api import build_project  # noqa: E402  (this folder is on the path when run as a script)
from churnlib.dataset import FrozenSchema  # noqa: E402
from churnlib.modelstore import load_deployed  # noqa: E402
from churnlib.pipeline import batch_from_frame, checked_predictor, model_threshold, predicted_classes  # noqa: E402
from churnlib.stats import calibration_check  # noqa: E402
from samples.generate import HEADER, make_customers  # noqa: E402
from scoring import ConfusionInputs, estimate_performance, release_calibration  # noqa: E402


def deploy(root: Path, algorithm: str) -> Path:
    """Train and deploy ``algorithm`` on the shipped sample data, as the cron job does; return the deployment folder."""
    build_project(root, algorithm)
    return root / "production_deployment"


def labelled(seed: int, rows: int, drift: str) -> pd.DataFrame:
    frame = pd.DataFrame(make_customers(np.random.default_rng(seed), rows, drifted=drift == "covariate"), columns=HEADER)
    for column in ("lastmonth_activity", "lastyear_activity", "number_of_employees"):
        frame[column] = pd.to_numeric(frame[column].replace("", np.nan))
    frame["exited"] = frame["exited"].astype(int)
    if drift == "concept":
        frame.loc[frame["plan"] == "premium", "exited"] = 1
    return frame


def coverage(deployment: Path, drift: str, files: int, rows: int) -> tuple[int, float, float]:
    model = load_deployed(deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    predictor = checked_predictor(model, schema)
    threshold, calibration = model_threshold(model.metadata), release_calibration(model)
    inside, errors, widths = 0, [], []
    for index in range(files):
        frame = labelled(90_000 + index, rows, drift)
        probabilities = predictor.probabilities(batch_from_frame(frame, schema))
        inputs = ConfusionInputs(threshold=threshold)
        inputs.add(probabilities)
        estimate = estimate_performance(inputs, calibration=calibration)
        realised = f1_score(frame["exited"], predicted_classes(probabilities, threshold))
        low, high = estimate["f1_ci"]
        inside += low <= realised <= high
        errors.append(estimate["f1"] - realised)
        widths.append(high - low)
    return inside, float(np.mean(errors)), float(np.mean(widths))


def hosmer_lemeshow_p(log_odds: np.ndarray, labels: np.ndarray, groups: int = 10) -> float:
    probabilities = 1 / (1 + np.exp(-log_odds))
    statistic = 0.0
    for part in np.array_split(np.argsort(probabilities), groups):
        expected, observed, size = probabilities[part].sum(), labels[part].sum(), len(part)
        mean = expected / size
        statistic += (observed - expected) ** 2 / (size * mean * (1 - mean))
    return float(chi2.sf(statistic, groups))  # probabilities from a model fitted elsewhere: `groups` df


def calibration_rates(trials: int, rows: int, stretch: float, seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    ours = classic = 0
    for _ in range(trials):
        true = rng.normal(-0.3, 1.2, rows)
        labels = (rng.random(rows) < 1 / (1 + np.exp(-true))).astype(float)
        served = stretch * true
        ours += not calibration_check(served, labels)["passed"]
        classic += hosmer_lemeshow_p(served, labels) < 0.05
    return ours, classic


def share(count: int, total: int) -> str:
    interval = binomtest(count, total).proportion_ci(0.95)
    return f"{count:>4}/{total} ({count / total:5.1%}, 95% CI {interval.low:.0%}-{interval.high:.0%})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100, help="labelled files per case (default 100)")
    parser.add_argument("--rows", type=int, default=500, help="customers per file (default 500)")
    parser.add_argument("--trials", type=int, default=1000, help="calibration-check trials (default 1000)")
    args = parser.parse_args(argv)
    print(f"estimate: {args.files} files of {args.rows} customers per case; realised F1 inside the 95% interval?\n")
    print(f"{'model':<20} {'drift':<10} {'inside the interval':<40} {'mean error':>10} {'mean width':>10}")
    with tempfile.TemporaryDirectory(prefix="validate-estimate-") as tmp:
        for algorithm in ("logistic_regression", "xgboost"):
            deployment = deploy(Path(tmp) / algorithm, algorithm)
            calibration = load_deployed(deployment).metadata["calibration"]
            for drift in ("none", "covariate", "concept"):
                inside, error, width = coverage(deployment, drift, args.files, args.rows)
                print(f"{algorithm:<20} {drift:<10} {share(inside, args.files):<40} {error:>+10.4f} {width:>10.4f}")
            print(f"{'':<20} deploy-time calibration: {calibration['reason']}"
                  f"{'; recalibrated' if calibration.get('recalibrated') else ''}")
    print(f"\ncalibration check: {args.trials} seeded trials of 300 held-out rows, alpha 0.05")
    for label, stretch, seed in (("calibrated (false alarms)", 1.0, 1), ("log-odds x 1.5 (power)", 1.5, 2),
                                 ("log-odds x 2 (power)", 2.0, 3)):
        ours, classic = calibration_rates(args.trials, 300, stretch, seed)
        print(f"  {label:<28} Cox {share(ours, args.trials)}   Hosmer-Lemeshow {share(classic, args.trials)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
