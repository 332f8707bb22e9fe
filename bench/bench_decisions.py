"""Decision benchmark: how often the cron loop retrains on noise, how surely it sees real change,
and whether a changed world ends up with a model that fits it; against the classic rule, in one run.

    python bench/bench_decisions.py               # everything (about 20 minutes on 2 cores)
    python bench/bench_decisions.py --quick       # fewer trials and sizes, for a look (about 3 minutes)
    python bench/bench_decisions.py --sections rates,iranian,persistent,timing

Data: ``bench/churnsim.py`` (a generator with numeric and categorical features, missing values and
a churn rule that can be changed) and the Iranian churn files in ../shared/datasets/iranian-churn.

Rules compared, both with the product's own code:
- ``new``: the default config: the score check against the score the calibrated probabilities
  expect on the same rows (score_drift.alpha 0.025, max_drop 0.05) or the feature tests (KS and
  chi-square, Holm, drift.alpha 0.025, effect floors 0.1);
- ``classic``: the rule this project had (score_drift.method deploy_time): F1 on the new rows
  against F1 on the test data at deploy time, two exact numbers, a drop over 0.05 is drift; or the
  feature tests at drift.alpha 0.05.

A retrain is due when either check alarms. Sections:
- rates: false retrain rate on batches from the training world, at n = 30 ... 1,000,000 rows;
  detection rates for concept drift (the rule changed: the deployed model's true F1 is 0.1 lower)
  and covariate drift (the customers changed: true F1 0.08 lower). Each trial batch is judged by
  one of 20 deployments (each trained on its own 4,000 rows, scored on its own 1,000 test rows),
  so the rates include how the deploy-time figures themselves vary. Two 95% intervals: Wilson over
  the trials, and one over the deployments (Wilson on the effective number of trials that the
  deployments' spread of rates gives, the design effect; batches judged by one deployment share its
  calibration, so when a few deployments account for the alarms, the second is the honest one).
- iranian: the same on the Iranian files: no drift (batches from the 350 rows of file 0 a model did
  not see: batches of one deployment overlap, so read the interval over deployments) and the
  drifted files.
- persistent: three 2,000-row batches of a changed world through real cron ticks (fullprocess.py,
  in a throw-away project): the deployed model's true F1 on the new world against a model trained
  on the new world alone, and how many ticks retrained; the default config against a classic one
  (training window all history, challengers judged on testdata/).
- timing: the checks on a 10,000-row batch whose features drift (default against scipy's automatic
  KS method, which picks its exact distribution at that size).
- smalln: false alarms at small n (30, 100 rows), each check on its own, over many seeded batches with
  nothing changed: the score check (alarm, and p < alpha of any size), the feature tests, and each
  categorical feature's chi-square p-value below 0.05 with the asymptotic distribution and with the
  method in use (permutations when a cell expects fewer than 5); the classic rule on the same batches.
- onebatch: real ticks over seeds, this checkout against ``--onebatch-rev`` (default 6c3b2a0, the code
  before the hold rules), interleaved: a 1,000-row batch with every label swapped, two ordinary
  batches, then a real drop; a persistent concept change (three 2,000-row batches); a persistent
  harder world (30% of labels swapped at random, four 1,000-row batches).
- tick: the wall time of one tick that ingests and checks 1,000,000 new rows, and of a tick with
  nothing new, against the same ticks with the code at ``--baseline-rev`` (default 5c88a0c, the
  code before this benchmark's rules), the versions taking turns; medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

BASELINE_REV = "5c88a0c"  # the code before issue 7: the classic decision rules
ONEBATCH_REV = "6c3b2a0"  # the code before the hold rules of issue 15 (one bad batch)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from churnsim import CATEGORICAL, NUMERIC, TARGET, World, to_csv  # noqa: E402

from churnlib.config import DriftSettings, ModelSettings, ScoreDriftSettings, section_settings  # noqa: E402
from churnlib.dataset import FrozenSchema, parse_labelled_csv  # noqa: E402
from churnlib.drift import drift_table  # noqa: E402
from churnlib.pipeline import FastPredictor, batch_from_frame, churn_probabilities, model_threshold  # noqa: E402
from churnlib.stats import Calibration, confusion_counts, metric_from_rates, wilson_interval  # noqa: E402
from training import expectation, reference_sample, train_model  # noqa: E402

SCHEMA = FrozenSchema(TARGET, ("customer_id",), NUMERIC + CATEGORICAL, CATEGORICAL)
MODEL = section_settings(ModelSettings)
NEW_SCORE = section_settings(ScoreDriftSettings)  # the defaults
NEW_DRIFT = section_settings(DriftSettings)
CLASSIC_SCORE = replace(NEW_SCORE, method="deploy_time")
CLASSIC_DRIFT = replace(NEW_DRIFT, alpha=0.05)
IRANIAN = ROOT.parent / "shared" / "datasets" / "iranian-churn"
CONCEPT = World(change=0.5)   # the deployed model's true F1 about 0.11 lower (printed by the run)
COVARIATE = World(shift=1.0)  # about 0.08 lower


def f1_of(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float:
    return float(metric_from_rates(np.asarray(confusion_counts(labels, probabilities > threshold), dtype=float), "f1"))


@dataclass
class Deployment:
    """A deployed model with everything the checks read: calibration, expectation, reference, test F1."""

    model: object
    fast: FastPredictor
    schema: FrozenSchema
    calibration: Calibration
    threshold: float
    expected: dict
    reference: pd.DataFrame
    test_scores: dict

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        return self.fast.probabilities(batch_from_frame(frame, self.schema))


def deploy(train: pd.DataFrame, test: pd.DataFrame, schema: FrozenSchema, settings: ModelSettings) -> Deployment:
    """Train and describe a model the way a cold start does (fullprocess.retrain with no champion)."""
    model = train_model(train, schema, settings)
    test_labels = test[schema.target].to_numpy()
    model, check, expected, threshold = expectation(model, train, schema, settings, metric="f1",
                                                    test=(test_labels, churn_probabilities(model, test, schema)))
    test_probabilities = churn_probabilities(model, test, schema)
    return Deployment(model=model, fast=FastPredictor(model, schema), schema=schema,
                      calibration=Calibration.from_check(check), threshold=threshold, expected=expected,
                      reference=reference_sample(train, 5000, settings.random_seed),
                      test_scores={"f1": f1_of(test_labels, test_probabilities, threshold)})


def decisions(deployment: Deployment, batch: pd.DataFrame) -> dict[str, tuple[bool, bool]]:
    """Return, for each rule, (score check alarmed, feature tests alarmed) on one batch."""
    from churnlib.decisions import check_score

    labels = batch[deployment.schema.target].to_numpy()
    probabilities = deployment.probabilities(batch)
    out = {}
    for rule, score_settings, drift_settings in (("new", NEW_SCORE, NEW_DRIFT), ("classic", CLASSIC_SCORE, CLASSIC_DRIFT)):
        score = check_score(deployment.calibration, deployment.expected, labels, probabilities, score_settings,
                            threshold=deployment.threshold, deploy_time=deployment.test_scores)
        drift = drift_table(deployment.reference, batch, deployment.schema, drift_settings)
        out[rule] = (bool(score["drift"]), bool(drift["drift"]))
    return out


HEADER = (f"{'n':>12} {'trials':>6}  {'new: retrains (95% CI: trials; deployments), by check':<62} "
          f"{'classic: the same'}")


def new_counts(deployments: int) -> dict:
    """Alarm counts per rule: [retrains, by the score check, by the feature tests], and retrains and
    trials per deployment (trials judged by one deployment share its calibration and reference)."""
    return {"new": [0, 0, 0], "classic": [0, 0, 0], "trials": np.zeros(deployments, int),
            "by_deployment": {"new": np.zeros(deployments, int), "classic": np.zeros(deployments, int)}}


def count(counts: dict, deployment: int, outcome: dict[str, tuple[bool, bool]]) -> None:
    counts["trials"][deployment] += 1
    for rule, (score, features) in outcome.items():
        counts[rule][0] += score or features
        counts[rule][1] += score
        counts[rule][2] += features
        counts["by_deployment"][rule][deployment] += score or features


def deployment_interval(retrains: np.ndarray, trials: np.ndarray) -> tuple[float, float]:
    """95% Wilson interval of the retrain rate on the effective number of trials: batches judged by
    one deployment share its calibration and reference, so they are not independent. The design
    effect comes from how the deployments' rates spread (the ratio estimator's cluster variance);
    with no alarm (or all alarms) it cannot be measured, and the number of deployments is used (cautious);
    alarms spread exactly evenly over the deployments have no design effect."""
    used = trials > 0
    retrains, trials = retrains[used], trials[used]
    total, k = int(trials.sum()), len(trials)
    rate = retrains.sum() / total
    variance = k / (k - 1) * float(np.sum((retrains - rate * trials) ** 2)) / total ** 2 if k > 1 else 0.0
    if rate in (0.0, 1.0):
        effective = float(k)  # the spread cannot be measured: as few trials as there are deployments
    elif variance == 0:
        effective = float(total)  # alarms spread exactly evenly: no design effect
    else:
        effective = min(float(total), max(float(k), rate * (1 - rate) / variance))
    return wilson_interval(rate * effective, effective)


def rate_line(label: str, counts: dict, trials: int) -> str:
    """The rate of each rule with its Wilson interval over trials and its interval over deployments."""
    cells = []
    for rule in ("new", "classic"):
        retrains = counts[rule][0]
        low, high = wilson_interval(retrains, trials)
        d_low, d_high = deployment_interval(counts["by_deployment"][rule], counts["trials"])
        cells.append(f"{retrains / trials:6.1%} ({low:5.1%}-{high:5.1%}; {d_low:5.1%}-{d_high:5.1%})"
                     f"  score {counts[rule][1]:4d} feat {counts[rule][2]:4d}")
    return f"{label:>12} {trials:6d}  " + "   ".join(cells)


def run_trials(deployments: list[Deployment], world: World, n: int, trials: int, seed: int) -> dict:
    counts = new_counts(len(deployments))
    for trial in range(trials):
        index = trial % len(deployments)
        batch = world.frame(n, np.random.default_rng(seed * 1_000_003 + trial))
        count(counts, index, decisions(deployments[index], batch))
    return counts


def true_f1(deployment: Deployment, world: World, rows: int = 200_000) -> float:
    frame = world.frame(rows, np.random.default_rng(987_654))
    return f1_of(frame[TARGET].to_numpy(), deployment.probabilities(frame), deployment.threshold)


def section_rates(quick: bool) -> None:
    print("== rates: generated data (bench/churnsim.py), logistic regression, 4,000 training rows, 1,000 test rows")
    deployments = []
    for index in range(5 if quick else 20):
        rng = np.random.default_rng(100 + index)
        deployments.append(deploy(World().frame(4000, rng), World().frame(1000, rng), SCHEMA, MODEL))
    base = [true_f1(d, World(), 100_000) for d in deployments[:5]]
    print(f"true F1 of the deployed models (first 5 of {len(deployments)}): "
          + ", ".join(f"{f:.3f}" for f in base))
    for name, world in (("concept drift", CONCEPT), ("covariate drift", COVARIATE)):
        drops = [b - true_f1(d, world, 100_000) for b, d in zip(base, deployments[:5])]
        print(f"{name}: true F1 lower by " + ", ".join(f"{d:.3f}" for d in drops))
    header = HEADER
    sizes = [30, 100, 300, 1000, 3000] if quick else [30, 100, 300, 1000, 3000, 10_000, 100_000, 1_000_000]
    print("\nfalse retrains, batches from the training world")
    print(header)
    for n in sizes:
        trials = (40 if quick else 200) if n <= 3000 else (20 if n <= 10_000 else (10 if n <= 100_000 else 10))
        if not quick and n == 10_000:
            trials = 100
        if not quick and n == 100_000:
            trials = 40
        if not quick and n == 1_000_000:
            trials = 20
        started = time.perf_counter()
        counts = run_trials(deployments, World(), n, trials, seed=n)
        print(rate_line(f"{n:,}", counts, trials) + f"   [{time.perf_counter() - started:.0f} s]", flush=True)
    for name, world, sizes_drift in (("concept drift (true F1 about 0.11 lower)", CONCEPT, [300, 1000, 2000, 3000, 10_000]),
                                     ("covariate drift (true F1 about 0.08 lower)", COVARIATE, [300, 1000, 2000, 3000, 10_000])):
        print(f"\ndetected: {name}")
        print(header)
        for n in sizes_drift:
            trials = 40 if quick else (200 if n <= 3000 else 100)
            counts = run_trials(deployments, world, n, trials, seed=7 * n + len(name))
            print(rate_line(f"{n:,}", counts, trials), flush=True)


def iranian_frames() -> tuple[FrozenSchema, dict[str, pd.DataFrame]]:
    from churnlib.config import load_config

    settings = load_config(ROOT / "examples" / "iranian" / "config.json").schema
    frames, schema = {}, None
    for name in ("customer_churn_0.csv", "customer_churn_2.csv", "customer_churn_synthetic_6.csv"):
        parsed = parse_labelled_csv((IRANIAN / name).read_bytes(), name=name, settings=settings, schema=schema)
        schema = parsed.schema
        frames[name] = parsed.frame
    return schema, frames


def section_iranian(quick: bool) -> None:
    print("\n== iranian: UCI Iranian churn (../shared/datasets/iranian-churn), logistic regression")
    schema, frames = iranian_frames()
    settings = replace(MODEL, params={"max_iter": 2000})
    file0 = frames["customer_churn_0.csv"]
    splits = []
    for index in range(5 if quick else 20):
        order = np.random.default_rng(200 + index).permutation(len(file0))
        train, pool = file0.iloc[order[:700]], file0.iloc[order[700:]]
        splits.append((deploy(train.iloc[:525], train.iloc[525:], schema, settings), pool))
    header = HEADER
    print("false retrains: batches drawn from the 350 rows of file 0 a deployment did not see")
    print(header)
    for n in (30, 100, 300):
        trials = 40 if quick else 200
        counts = new_counts(len(splits))
        for trial in range(trials):
            deployment, pool = splits[trial % len(splits)]
            rows = np.random.default_rng(n * 1000 + trial).choice(len(pool), size=n, replace=False)
            count(counts, trial % len(splits), decisions(deployment, pool.iloc[rows]))
        print(rate_line(f"{n:,}", counts, trials), flush=True)
    for name in ("customer_churn_2.csv", "customer_churn_synthetic_6.csv"):
        print(f"retrains on batches from {name} (file 2: 'majority drifted'; synthetic 6: KS flags 0-3 features)")
        print(header)
        pool = frames[name]
        for n in (100, 300, 1000):
            trials = 40 if quick else 100
            counts = new_counts(len(splits))
            for trial in range(trials):
                deployment, _ = splits[trial % len(splits)]
                rows = np.random.default_rng(n * 7 + trial).choice(len(pool), size=n, replace=False)
                count(counts, trial % len(splits), decisions(deployment, pool.iloc[rows]))
            print(rate_line(f"{n:,}", counts, trials), flush=True)


def tick(config: Path, code: Path = ROOT) -> dict:
    env = {**os.environ, "CHURN_PYPI_URL": "http://127.0.0.1:9"}
    subprocess.run([sys.executable, str(code / "fullprocess.py"), "--config", str(config), "--no-api"], env=env,
                   check=True, capture_output=True)
    return json.loads((config.parent / "logs" / "runs.jsonl").read_text().splitlines()[-1])


def mean_interval(values: list[float]) -> str:
    """Return a mean with its 95% t interval."""
    from scipy.stats import t

    mean = float(np.mean(values))
    half = float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return f"{mean:+.3f} ({mean - half:+.3f} to {mean + half:+.3f})"


def section_persistent(quick: bool) -> None:
    from churnlib.modelstore import load_deployed

    print("\n== persistent: three 2,000-row batches of a changed world, real ticks (fullprocess.py)")
    print("gap = true F1 on the new world of a model trained on the new world's rows alone minus the deployed "
          "model's; retrained = ticks that trained a challenger")
    setups = {"new": {}, "classic": {"model": {"training_window": "all"}, "deployment": {"evaluate_on": "testdata"},
                                    "score_drift": {"method": "deploy_time"}, "drift": {"alpha": 0.05}}}
    seeds = 3 if quick else 8
    for world_name, world in (("concept drift (the rule changed)", World(change=1.0)),
                              ("covariate drift (the customers changed)", World(shift=1.0))):
        print(f"\n{world_name}")
        print(f"{'rule':>8}  {'gap after batch 1, 2, 3: mean (95% CI)':<66} retrained at batch 1, 2, 3 (95% CI)")
        evaluation = world.frame(50_000, np.random.default_rng(55))
        for rule, overrides in setups.items():
            gaps, retrained = [[], [], []], [0, 0, 0]
            for seed in range(seeds):
                rng = np.random.default_rng(300 + seed)
                root = Path(tempfile.mkdtemp(prefix="bench-decisions-")) / "project"
                (root / "sourcedata").mkdir(parents=True)
                (root / "testdata").mkdir()
                (root / "sourcedata" / "batch0.csv").write_text(to_csv(World().frame(4000, rng)))
                (root / "testdata" / "testdata.csv").write_text(to_csv(World().frame(1000, rng)))
                config = {"schema": {"target": TARGET, "id_columns": ["customer_id"]},
                          "model": {"random_seed": seed}, "api": {"url": "http://127.0.0.1:9"}}
                for section, values in overrides.items():
                    config[section] = {**config.get(section, {}), **values}
                (root / "config.json").write_text(json.dumps(config))
                tick(root / "config.json")
                new_world_rows = []
                for index in range(3):
                    batch = world.frame(2000, rng)
                    new_world_rows.append(batch)
                    (root / "sourcedata" / f"batch{index + 1}.csv").write_text(to_csv(batch))
                    run = tick(root / "config.json")
                    retrained[index] += run["decision"].startswith("retrained")
                    deployed = load_deployed(root / "production_deployment")
                    alone = train_model(pd.concat(new_world_rows, ignore_index=True), SCHEMA, replace(MODEL, random_seed=seed))
                    labels = evaluation[TARGET].to_numpy()
                    gaps[index].append(f1_of(labels, churn_probabilities(alone, evaluation, SCHEMA))
                                       - f1_of(labels, churn_probabilities(deployed.pipeline, evaluation, SCHEMA),
                                               model_threshold(deployed.metadata)))
                shutil.rmtree(root.parent, ignore_errors=True)
            cells = "  ".join(mean_interval(g) for g in gaps)
            counts = "  ".join(f"{r}/{seeds} ({wilson_interval(r, seeds)[0]:.0%}-{wilson_interval(r, seeds)[1]:.0%})"
                               for r in retrained)
            print(f"{rule:>8}  {cells:<66} {counts}", flush=True)
            print(f"{'':>8}  worst gap after batch 2 and 3: {max(gaps[1]):+.3f}, {max(gaps[2]):+.3f}", flush=True)


def section_smalln(quick: bool) -> None:
    from scipy.stats import chi2_contingency

    from churnlib.columns import MISSING_CATEGORY
    from churnlib.decisions import check_score
    from churnlib.drift import _chi_square

    trials = 300 if quick else 1000
    print(f"\n== smalln: false alarms at small n, {trials} batches from the training world per size, judged by 20 "
          "deployments in turn (generated data)")
    deployments = []
    for index in range(5 if quick else 20):
        rng = np.random.default_rng(100 + index)
        deployments.append(deploy(World().frame(4000, rng), World().frame(1000, rng), SCHEMA, MODEL))

    def share(count: int) -> str:
        low, high = wilson_interval(count, trials)
        return f"{count / trials:6.2%} ({low:5.2%}-{high:5.2%})"

    for n in (30, 100):
        alarms = {"score": 0, "score p<alpha": 0, "features": 0, "classic score": 0, "classic features": 0}
        chi = {feature: [0, 0] for feature in CATEGORICAL}  # p < 0.05: asymptotic, as used
        started = time.perf_counter()
        for trial in range(trials):
            deployment = deployments[trial % len(deployments)]
            batch = World().frame(n, np.random.default_rng(n * 1_000_003 + trial))
            labels = batch[TARGET].to_numpy()
            probabilities = deployment.probabilities(batch)
            score = check_score(deployment.calibration, deployment.expected, labels, probabilities, NEW_SCORE,
                                threshold=deployment.threshold)
            alarms["score"] += score["drift"]
            alarms["score p<alpha"] += bool(score["drop"] > 0 and score["p_value"] < NEW_SCORE.alpha)
            alarms["features"] += drift_table(deployment.reference, batch, SCHEMA, NEW_DRIFT)["drift"]
            classic = check_score(deployment.calibration, deployment.expected, labels, probabilities, CLASSIC_SCORE,
                                  threshold=deployment.threshold, deploy_time=deployment.test_scores)
            alarms["classic score"] += classic["drift"]
            alarms["classic features"] += drift_table(deployment.reference, batch, SCHEMA, CLASSIC_DRIFT)["drift"]
            for feature in CATEGORICAL:
                used = _chi_square(deployment.reference[feature], batch[feature])
                ref_counts = deployment.reference[feature].fillna(MISSING_CATEGORY).astype(str).value_counts()
                new_counts = batch[feature].fillna(MISSING_CATEGORY).astype(str).value_counts()
                names = sorted(set(ref_counts.index) | set(new_counts.index))
                table = np.array([[ref_counts.get(c, 0) for c in names], [new_counts.get(c, 0) for c in names]])
                chi[feature][0] += chi2_contingency(table, correction=False).pvalue < 0.05
                chi[feature][1] += used["p_value"] < 0.05
        print(f"n={n}: [{time.perf_counter() - started:.0f} s]")
        print(f"  score check alarms (nominal at most {NEW_SCORE.alpha:.1%}):       {share(alarms['score'])}; "
              f"significant drop of any size {share(alarms['score p<alpha'])}")
        print(f"  feature tests alarm (drift.alpha {NEW_DRIFT.alpha}, Holm):          {share(alarms['features'])}")
        print(f"  classic rule on the same batches: score {share(alarms['classic score'])}, "
              f"features {share(alarms['classic features'])}")
        for feature, (asymptotic, used) in chi.items():
            print(f"  chi-square p < 0.05 (nominal 5%), {feature:>8}: asymptotic {share(asymptotic)}, as used {share(used)}")


def swapped(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame[TARGET] = 1 - frame[TARGET]
    return frame


def noisier(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    frame = frame.copy()
    flip = rng.random(len(frame)) < share
    frame.loc[flip, TARGET] = 1 - frame.loc[flip, TARGET]
    return frame


def onebatch_project(seed: int, scratch: Path, label: str) -> tuple[Path, np.random.Generator]:
    rng = np.random.default_rng(900 + seed)
    root = scratch / f"{label}-{seed}" / "project"
    (root / "sourcedata").mkdir(parents=True)
    (root / "testdata").mkdir()
    (root / "sourcedata" / "batch0.csv").write_text(to_csv(World().frame(4000, rng)))
    (root / "testdata" / "testdata.csv").write_text(to_csv(World().frame(1000, rng)))
    (root / "config.json").write_text(json.dumps({"schema": {"target": TARGET, "id_columns": ["customer_id"]},
                                                  "model": {"random_seed": seed}, "api": {"url": "http://127.0.0.1:9"}}))
    return root, rng


def run_batches(code: Path, root: Path, frames: list[pd.DataFrame]) -> list[dict]:
    tick(root / "config.json", code)
    runs = []
    for index, frame in enumerate(frames):
        (root / "sourcedata" / f"batch{index + 1}.csv").write_text(to_csv(frame))
        runs.append(tick(root / "config.json", code))
    return runs


def lowered(root: Path) -> bool:
    """Whether the deployed release's expectation was lowered by a new normal (or a deploy learnt it from the batch)."""
    folder = root / "production_deployment" / "normal"
    return any(json.loads(path.read_text()).get("calibration") for path in folder.glob("*.json")) if folder.exists() else False


def section_onebatch(quick: bool, baseline_rev: str | None) -> None:
    seeds = 3 if quick else 8
    print(f"\n== onebatch: real ticks (fullprocess.py), {seeds} seeds; this checkout against {baseline_rev or 'nothing'}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-onebatch-"))
    trees = [("this checkout", ROOT)]
    if baseline_rev:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(scratch / "baseline"), baseline_rev],
                       check=True, capture_output=True)
        trees.append((f"before ({baseline_rev})", scratch / "baseline"))

    def rate(count: int, total: int) -> str:
        low, high = wilson_interval(count, total)
        return f"{count}/{total} ({low:.0%}-{high:.0%})"

    try:
        counts = {label: {} for label, _ in trees}
        evaluation = World(change=1.0).frame(50_000, np.random.default_rng(55))
        for seed in range(seeds):
            for label, code in trees:  # the versions take turns
                c = counts[label]
                root, rng = onebatch_project(seed, scratch, f"swap-{label[:4]}")
                before = json.loads((root / "production_deployment" / "current.json").read_text())["current"] \
                    if (root / "production_deployment" / "current.json").exists() else None
                frames = [swapped(World().frame(1000, rng)), World().frame(300, rng), World().frame(300, rng),
                          World(change=1.0).frame(1000, rng)]
                runs = run_batches(code, root, frames)
                before = runs[0]["deployed_release_before"]
                c["swap deployed"] = c.get("swap deployed", 0) + bool(runs[0].get("deployed_release_after"))
                c["swap lowered"] = c.get("swap lowered", 0) + bool((runs[0].get("new_normal") or {}).get("calibration"))
                c["ordinary alarms"] = c.get("ordinary alarms", 0) + sum(bool(r["score_drift"].get("drift")) for r in runs[1:3])
                c["ordinary retrains"] = c.get("ordinary retrains", 0) + sum(r["decision"].startswith("retrained") for r in runs[1:3])
                c["drop alarmed"] = c.get("drop alarmed", 0) + bool(runs[3]["score_drift"].get("drift"))
                c["same release"] = c.get("same release", 0) + (runs[2].get("deployed_release_before") == before)
                shutil.rmtree(root.parent, ignore_errors=True)

                root, rng = onebatch_project(seed, scratch, f"concept-{label[:4]}")
                runs = run_batches(code, root, [World(change=1.0).frame(2000, rng) for _ in range(3)])
                from churnlib.modelstore import load_deployed

                deployed = load_deployed(root / "production_deployment")
                labels = evaluation[TARGET].to_numpy()
                c.setdefault("concept gap", []).append(
                    f1_of(labels, churn_probabilities(train_model(World(change=1.0).frame(4000, np.random.default_rng(seed)),
                                                                  SCHEMA, replace(MODEL, random_seed=seed)), evaluation, SCHEMA))
                    - f1_of(labels, churn_probabilities(deployed.pipeline, evaluation, SCHEMA), model_threshold(deployed.metadata)))
                c["concept deployed at 1"] = c.get("concept deployed at 1", 0) + bool(runs[0].get("deployed_release_after"))
                c["concept served by 2"] = c.get("concept served by 2", 0) + bool(
                    runs[0].get("deployed_release_after") or runs[1].get("deployed_release_after"))
                c["concept retrain at 3"] = c.get("concept retrain at 3", 0) + runs[2]["decision"].startswith("retrained")
                shutil.rmtree(root.parent, ignore_errors=True)

                root, rng = onebatch_project(seed, scratch, f"harder-{label[:4]}")
                runs = run_batches(code, root, [noisier(World().frame(1000, rng), 0.3, rng) for _ in range(4)])
                c["harder alarm at 1"] = c.get("harder alarm at 1", 0) + bool(runs[0]["score_drift"].get("drift"))
                c["harder adopted at 1"] = c.get("harder adopted at 1", 0) + bool(
                    runs[0].get("deployed_release_after") or (runs[0].get("new_normal") or {}).get("calibration"))
                c["harder alarm at 3"] = c.get("harder alarm at 3", 0) + bool(runs[2]["score_drift"].get("drift"))
                c["harder alarm at 4"] = c.get("harder alarm at 4", 0) + bool(runs[3]["score_drift"].get("drift"))
                shutil.rmtree(root.parent, ignore_errors=True)
            print(f"  seed {seed} done", flush=True)
        rows = [("swapped 1,000-row batch: deployed", "swap deployed", seeds),
                ("swapped batch: expectation lowered (new normal)", "swap lowered", seeds),
                ("two ordinary batches after it: score alarms", "ordinary alarms", 2 * seeds),
                ("two ordinary batches after it: retrains", "ordinary retrains", 2 * seeds),
                ("the release before the swap still serves after them", "same release", seeds),
                ("then a real drop (changed rule, 1,000 rows): alarm", "drop alarmed", seeds),
                ("concept change: deployed at batch 1", "concept deployed at 1", seeds),
                ("concept change: served by a new model by batch 2", "concept served by 2", seeds),
                ("concept change: retrained at batch 3", "concept retrain at 3", seeds),
                ("harder world (30% labels swapped): alarm at batch 1", "harder alarm at 1", seeds),
                ("harder world: adopted at batch 1 (deploy or new normal)", "harder adopted at 1", seeds),
                ("harder world: alarm at batch 3", "harder alarm at 3", seeds),
                ("harder world: alarm at batch 4", "harder alarm at 4", seeds)]
        print(f"{'':58}" + "".join(f"{label:>24}" for label, _ in trees))
        for text, key, total in rows:
            print(f"{text:58}" + "".join(f"{rate(counts[label].get(key, 0), total):>24}" for label, _ in trees))
        print(f"{'concept change: gap after batch 3, mean (95% CI)':58}"
              + "".join(f" {mean_interval(counts[label]['concept gap']):>27}" for label, _ in trees))
    finally:
        if baseline_rev:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "baseline")],
                           capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def section_timing(quick: bool) -> None:
    from scipy import stats

    import churnlib.drift as drift_module
    from churnlib.decisions import check_score

    print("\n== timing: the checks on a 10,000-row batch whose features drift (median of 5)")
    rng = np.random.default_rng(9)
    deployment = deploy(World().frame(4000, rng), World().frame(1000, rng), SCHEMA, MODEL)
    batch = COVARIATE.frame(10_000, rng)

    def checks():
        labels = batch[TARGET].to_numpy()
        probabilities = deployment.probabilities(batch)
        check_score(deployment.calibration, deployment.expected, labels, probabilities, NEW_SCORE,
                    threshold=deployment.threshold)
        return drift_table(deployment.reference, batch, SCHEMA, NEW_DRIFT)

    def median_seconds(function) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    ours = median_seconds(checks)
    original = stats.ks_2samp
    drift_module.stats.ks_2samp = lambda a, b, method=None: original(a, b)  # scipy's automatic method choice
    try:
        automatic = median_seconds(checks)
    finally:
        drift_module.stats.ks_2samp = original
    print(f"score check + feature tests: {ours:.3f} s; with scipy's automatic KS method: {automatic:.3f} s")


def timed_tick(code: Path, config: Path) -> tuple[float, dict]:
    # As cron runs it: Python's bytecode cache written and used (an environment may turn it off).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["CHURN_PYPI_URL"] = "http://127.0.0.1:9"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(code / "fullprocess.py"), "--config", str(config), "--no-api"], env=env,
                   check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads((config.parent / "logs" / "runs.jsonl").read_text().splitlines()[-1])


def section_tick(quick: bool, baseline_rev: str | None, rounds: int) -> None:
    rows = 100_000 if quick else 1_000_000
    idle_runs = 5 if quick else 15
    print(f"\n== tick: wall time of one cron tick that ingests and checks {rows:,} new rows (no drift), median of "
          f"{rounds} interleaved round(s); and of a tick with nothing new, median of {idle_runs} interleaved runs")
    trees = [("this checkout", ROOT)]
    scratch = Path(tempfile.mkdtemp(prefix="bench-tick-"))
    if baseline_rev:
        baseline = scratch / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), baseline_rev],
                       check=True, capture_output=True)
        trees.append((f"baseline {baseline_rev}", baseline))
    else:
        print("(no --baseline-rev: absolute figures only, which on a shared machine mean little)")
    rng = np.random.default_rng(11)
    start, test, big = World().frame(4000, rng), World().frame(1000, rng), to_csv(World().frame(rows, rng))
    busy: dict[str, list[float]] = {label: [] for label, _ in trees}
    idle: dict[str, list[float]] = {label: [] for label, _ in trees}
    last_run: dict[str, dict] = {}

    def fresh_project(label: str, round_index: int) -> Path:
        root = scratch / f"{label.replace(' ', '_')}-{round_index}" / "project"
        (root / "sourcedata").mkdir(parents=True)
        (root / "testdata").mkdir()
        (root / "sourcedata" / "start.csv").write_text(to_csv(start))
        (root / "testdata" / "testdata.csv").write_text(to_csv(test))
        (root / "config.json").write_text(json.dumps({"schema": {"target": TARGET, "id_columns": ["customer_id"]},
                                                      "api": {"url": "http://127.0.0.1:9"}}))
        return root

    try:
        projects = {}
        for round_index in range(rounds):  # the versions take turns, so that a noisy minute hits both
            for label, code in trees:
                root = fresh_project(label, round_index)
                timed_tick(code, root / "config.json")  # the cold start
                (root / "sourcedata" / "big.csv").write_text(big)
                seconds, last_run[label] = timed_tick(code, root / "config.json")
                busy[label].append(seconds)
                projects[label] = root
                if round_index + 1 < rounds:
                    shutil.rmtree(root.parent)
        for _ in range(idle_runs):
            for label, code in trees:
                seconds, run = timed_tick(code, projects[label] / "config.json")
                assert run["decision"] == "nothing_new", run["decision"]
                idle[label].append(seconds)
        for label, _code in trees:
            run = last_run[label]
            print(f"{label:>28}: {statistics.median(busy[label]):6.1f} s  (decision {run['decision']}; ingestion "
                  f"{run['timings'].get('ingestion')} s, checks {run['timings'].get('checks')} s in the last round); "
                  f"nothing new: {statistics.median(idle[label]):.3f} s", flush=True)
        if baseline_rev:
            this, base = trees[0][0], trees[1][0]
            print(f"{'ratio to the baseline':>28}: {statistics.median(busy[this]) / statistics.median(busy[base]):.2f}x "
                  f"(ingest and check), {statistics.median(idle[this]) / statistics.median(idle[base]):.2f}x (nothing new)")
    finally:
        if baseline_rev:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "baseline")],
                           capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and sizes")
    parser.add_argument("--sections", default="rates,iranian,persistent,timing,tick,smalln,onebatch",
                        help="comma-separated: rates, iranian, persistent, timing, tick, smalln, onebatch")
    parser.add_argument("--baseline-rev", metavar="REV", default=BASELINE_REV,
                        help="tick section: also time the ticks with the code at this git revision, in a temporary "
                             f"worktree, interleaved (default {BASELINE_REV}, the code before the decision rules; "
                             "'' for none)")
    parser.add_argument("--rounds", type=int, default=3, help="tick section: interleaved rounds of the big tick (3)")
    parser.add_argument("--onebatch-rev", metavar="REV", default=ONEBATCH_REV,
                        help=f"onebatch section: also run the scenarios with the code at this revision (default "
                        f"{ONEBATCH_REV}, before the hold rules; '' for none)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} cores; {'quick' if args.quick else 'full'} run")
    sections = {"rates": section_rates, "iranian": section_iranian, "persistent": section_persistent,
                "timing": section_timing, "tick": lambda quick: section_tick(quick, args.baseline_rev or None, args.rounds),
                "smalln": section_smalln,
                "onebatch": lambda quick: section_onebatch(quick, args.onebatch_rev or None)}
    for name in args.sections.split(","):
        sections[name.strip()](args.quick)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
