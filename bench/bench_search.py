"""Model search benchmark: does ``model.search`` beat the configured defaults on the newest rows, and
how does it compare with scikit-learn's HalvingRandomSearchCV given the same budget? One run.

    python bench/bench_search.py                         # budgets 10 and 60 s, the three data sets
    python bench/bench_search.py --budgets 300 --no-halving   # the search alone at 300 s
    python bench/bench_search.py --datasets generated --budgets 10
    python bench/bench_search.py --calibrate             # the cost model's figures (churnlib/search.py COST)

Data, each in its order (files in order, rows in file order: the newest last):
- iranian: the Iranian churn files 0, 1 and 2 of ../shared/datasets/iranian-churn (3,150 rows,
  whole-row duplicates dropped as ingestion drops them; 13 numeric features, about 16% churn);
- telco: the IBM Telco file of ../shared/datasets/telco-churn (7,043 rows, 16 categorical
  features), read from there, never copied;
- generated: 6,000 rows of ``bench/churnsim.py``'s world, whose churn rule is not linear in its
  features as they come (log of tenure), with its rule half changed in the newest third.

Each is read with the product's own reader (``churnlib.dataset.parse_labelled_csv``). The newest
25% of rows are held out, as the champion-challenger comparison holds out the newest rows; every
method sees only the older 75%. Methods:
- ``defaults``: the configured model as shipped (logistic regression, scaled, threshold 0.5), and
  xgboost's built-in defaults (``model.algorithm: xgboost``) for reference;
- ``search B s``: ``churnlib.search.search`` with ``budget_s`` B (metric f1, both algorithms),
  then the winner fitted on all the older rows, as a retrain does;
- ``halving B s``: ``HalvingRandomSearchCV`` over the same pipeline and the same parameter ranges
  (3-fold time-series CV, f1, factor 3), given as many candidates as the search's trials for B,
  its decision threshold chosen as the search chooses it (on the newest 15% of the older rows,
  with a model fitted on the rest), then fitted on all the older rows.
Figures on the held-out rows: F1 (at each model's threshold), ROC AUC and log-loss, each with a
95% bootstrap interval (1,000 resamples of the held-out rows, seeded), and the F1 difference
against the configured defaults with its paired bootstrap interval; and the seconds each took.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from churnlib.config import ModelSettings, SchemaSettings, section_settings  # noqa: E402
from churnlib.dataset import parse_labelled_csv  # noqa: E402

SHARED = next((p for p in (ROOT.parent / "shared" / "datasets", ROOT.parent.parent / "shared" / "datasets")
               if p.is_dir()), ROOT.parent / "shared" / "datasets")
HOLD_OUT_SHARE = 0.25
RESAMPLES = 1000
SEED = 42


def read(paths: list[Path], target: str, id_columns: list[str]) -> tuple[pd.DataFrame, object]:
    """Return the files' rows, in order, typed by the product's reader, whole-row duplicates dropped."""
    settings = section_settings(SchemaSettings, target=target, id_columns=id_columns)
    frames, schema = [], None
    for path in paths:
        parsed = parse_labelled_csv(path.read_bytes(), name=path.name, settings=settings, schema=schema)
        schema = parsed.schema
        frames.append(parsed.frame)
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    return frame, schema


def generated() -> tuple[pd.DataFrame, object]:
    from churnsim import TARGET, World, to_csv

    rng = np.random.default_rng(SEED)
    frame = pd.concat([World().frame(4000, rng), World(change=0.5).frame(2000, rng)], ignore_index=True)
    path = Path("/tmp") / f"bench_search_generated_{SEED}.csv"
    path.write_text(to_csv(frame))
    return read([path], TARGET, ["customer_id"])


def datasets(names: list[str]) -> dict[str, tuple[pd.DataFrame, object]]:
    found = {}
    for name in names:
        if name == "iranian":
            folder = SHARED / "iranian-churn"
            found[name] = read([folder / f"customer_churn_{i}.csv" for i in range(3)], "Churn", [])
        elif name == "telco":
            found[name] = read([SHARED / "telco-churn" / "Telco-Customer-Churn.csv"], "Churn", ["customerID"])
        elif name == "generated":
            found[name] = generated()
        else:
            raise SystemExit(f"unknown data set {name!r}")
    return found


# --- figures ---------------------------------------------------------------------------------------


def scores(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """Return F1 (churn predicted above ``threshold``), ROC AUC (ties counted half) and log-loss, in numpy:
    the bootstrap calls this thousands of times."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    positive = labels == 1
    predicted = probabilities > threshold
    tp = np.count_nonzero(predicted & positive)
    fp = np.count_nonzero(predicted & ~positive)
    fn = np.count_nonzero(~predicted & positive)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    ranks = rankdata(probabilities)
    npos, nneg = np.count_nonzero(positive), np.count_nonzero(~positive)
    auc = (ranks[positive].sum() - npos * (npos + 1) / 2) / (npos * nneg)
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    loss = -np.mean(np.where(positive, np.log(clipped), np.log(1 - clipped)))
    return {"f1": float(f1), "auc": float(auc), "log_loss": float(loss)}


def bootstrap(labels: np.ndarray, probabilities: np.ndarray, threshold: float, reference: tuple | None,
              rng_seed: int = SEED) -> dict[str, tuple[float, float]]:
    """Return 95% bootstrap intervals of F1, AUC, log-loss, and of the F1 difference with ``reference``
    (its probabilities and threshold) on the same resampled rows."""
    rng = np.random.default_rng(rng_seed)
    rows = len(labels)
    draws = {"f1": [], "auc": [], "log_loss": [], "f1_gain": []}
    for _ in range(RESAMPLES):
        pick = rng.integers(0, rows, rows)
        if labels[pick].min() == labels[pick].max():
            continue
        figures = scores(labels[pick], probabilities[pick], threshold)
        for key, value in figures.items():
            draws[key].append(value)
        if reference is not None:
            base = scores(labels[pick], reference[0][pick], reference[1])["f1"]
            draws["f1_gain"].append(figures["f1"] - base)
    return {key: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) for key, v in draws.items() if v}


# --- the methods -----------------------------------------------------------------------------------


def fit_and_predict(settings: ModelSettings, train: pd.DataFrame, held: pd.DataFrame, schema) -> np.ndarray:
    from churnlib.pipeline import churn_probabilities
    from training import train_model

    return churn_probabilities(train_model(train, schema, settings), held, schema)


def run_search(budget: float, train, held, schema) -> tuple[np.ndarray | None, float, dict]:
    """Return the held-out probabilities of the search's winner fitted on all of ``train``, its threshold
    and figures; None for the probabilities when the search ran out of time (a retrain deploys nothing)."""
    from churnlib import search

    model = section_settings(ModelSettings, search={"budget_s": budget})
    plan = search.plan_trials(model.search, rows=len(train), columns=search.encoded_columns(train, schema),
                              baseline_algorithm=model.algorithm)
    started = time.perf_counter()
    try:
        chosen, result = search.search(model, train, schema)
    except search.SearchOutOfTime as exc:
        return None, 0.5, {"seconds": time.perf_counter() - started, "search_seconds": time.perf_counter() - started,
                           "trials": f"{plan.trials} planned", "planned": plan.trials, "winner": f"out of time: {exc}"}
    probabilities = fit_and_predict(chosen, train, held, schema)
    seconds = time.perf_counter() - started
    return probabilities, chosen.threshold, {"seconds": seconds, "search_seconds": result.seconds,
                                             "trials": len(result.trials), "planned": plan.trials,
                                             "winner": f"{chosen.algorithm} {search.short_params(chosen.params)}"}


def run_halving(candidates: int, train, held, schema) -> tuple[np.ndarray, float, dict]:
    from scipy.stats import loguniform, randint, uniform
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401 (the import enables it)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import HalvingRandomSearchCV, TimeSeriesSplit
    from xgboost import XGBClassifier

    from churnlib import search
    from churnlib.pipeline import build_pipeline

    features = list(schema.feature_columns)
    labels = train[schema.target].to_numpy()
    positives = max(1, int(labels.sum()))
    weight_max = max(4.0, 2.0 * (len(labels) - positives) / positives)
    base = section_settings(ModelSettings)
    space = [
        {"classifier": [LogisticRegression(max_iter=1000, random_state=base.random_seed)],
         "classifier__C": loguniform(1e-3, 1e2), "classifier__class_weight": [None, "balanced"]},
        {"classifier": [XGBClassifier(tree_method="hist", n_jobs=1, random_state=base.random_seed,
                                      eval_metric="logloss")],
         "classifier__max_depth": randint(2, 9), "classifier__learning_rate": loguniform(0.01, 0.3),
         "classifier__n_estimators": randint(20, 1000), "classifier__min_child_weight": loguniform(0.5, 20),
         "classifier__subsample": uniform(0.5, 0.5), "classifier__colsample_bytree": uniform(0.5, 0.5),
         "classifier__scale_pos_weight": loguniform(0.25, weight_max)},
    ]
    started = time.perf_counter()
    halving = HalvingRandomSearchCV(build_pipeline(schema, base), space, n_candidates=max(3, candidates), factor=3,
                                    cv=TimeSeriesSplit(n_splits=3), scoring="f1", random_state=SEED,
                                    min_resources="exhaust", refit=False)
    halving.fit(train[features], labels)
    best = halving.best_params_
    # The threshold as the search chooses it: on the newest 15% of the older rows, fitted on the rest.
    cut = len(train) - round(search.TUNE_SHARE * len(train))
    pipeline = build_pipeline(schema, base).set_params(**best)
    pipeline.fit(train.iloc[:cut][features], labels[:cut])
    threshold = search.best_threshold("f1", labels[cut:], pipeline.predict_proba(train.iloc[cut:][features])[:, 1])
    pipeline = build_pipeline(schema, base).set_params(**best)
    pipeline.fit(train[features], labels)
    probabilities = pipeline.predict_proba(held[features])[:, 1]
    chosen = type(best["classifier"]).__name__
    return probabilities, threshold, {"seconds": time.perf_counter() - started, "trials": int(sum(halving.n_candidates_)),
                                      "winner": chosen}


def calibrate() -> None:
    """Print what one trial costs (the cost model of churnlib/search.py): fixed seconds and seconds per million cells."""
    from churnlib import search
    from churnsim import World

    rng = np.random.default_rng(SEED)
    frames = {rows: World().frame(rows, rng) for rows in (2000, 40000)}
    path = Path("/tmp/bench_search_calibrate.csv")
    for algorithm, params in (("logistic_regression", {"C": 1.0}),
                              ("xgboost", {"max_depth": 8, "learning_rate": 0.01, "min_child_weight": 0.5})):
        seconds = {}
        for rows, frame in frames.items():
            path.write_text(frame.to_csv(index=False))
            typed, schema = read([path], "churned", ["customer_id"])
            parts = search.split_rows(typed, schema.target, 0.25)
            settings = section_settings(ModelSettings, algorithm=algorithm, params=params)
            cache: dict = {}
            search.evaluate_trial(settings, parts, schema, "f1", cache=cache)  # warm up; the rows preprocessed
            started = time.perf_counter()
            search.evaluate_trial(settings, parts, schema, "f1", cache=cache)
            seconds[rows * search.encoded_columns(typed, schema) / 1e6] = time.perf_counter() - started
        (small, t_small), (large, t_large) = sorted(seconds.items())
        per_million = (t_large - t_small) / (large - small)
        print(f"{algorithm}: {t_small:.3f} s at {small:.3f} M cells, {t_large:.3f} s at {large:.3f} M cells: "
              f"fixed {t_small - per_million * small:.3f} s, {per_million:.3f} s per million cells "
              f"(COST in churnlib/search.py: {search.COST[algorithm]}, times SPEED_MARGIN {search.SPEED_MARGIN})")


def interval(value: float, bounds: tuple[float, float] | None, spec: str = ".3f") -> str:
    return f"{value:{spec}} [{bounds[0]:{spec}}, {bounds[1]:{spec}}]" if bounds else f"{value:{spec}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="10,60", help="search budgets in seconds, comma-separated (default 10,60)")
    parser.add_argument("--datasets", default="iranian,telco,generated")
    parser.add_argument("--calibrate", action="store_true", help="print the cost of one trial and stop")
    parser.add_argument("--no-halving", action="store_true",
                        help="leave HalvingRandomSearchCV out (it takes 3 to 8 times the search's time)")
    args = parser.parse_args(argv)
    if args.calibrate:
        calibrate()
        return 0
    import logging
    import os

    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    budgets = [float(b) for b in args.budgets.split(",") if b]
    print(f"# bench_search: budgets {budgets} s, load average {os.getloadavg()[0]:.1f} at the start")
    header = (f"| data | method | F1 [95% CI] | ROC AUC [95% CI] | log-loss [95% CI] | F1 - defaults [95% CI] "
              f"| seconds | trials | winner |")
    table = [header, "|" + "---|" * 9]
    out_of_time: list[str] = []
    for name, (frame, schema) in datasets(args.datasets.split(",")).items():
        cut = len(frame) - round(HOLD_OUT_SHARE * len(frame))
        train, held = frame.iloc[:cut], frame.iloc[cut:]
        labels = held[schema.target].to_numpy()
        print(f"## {name}: {len(train)} rows to train on, {len(held)} held out ({int(labels.sum())} churners)")
        defaults = section_settings(ModelSettings)
        started = time.perf_counter()
        reference = (fit_and_predict(defaults, train, held, schema), defaults.threshold)
        runs = [("defaults (logistic regression)", reference[0], reference[1],
                 {"seconds": time.perf_counter() - started, "trials": "", "winner": ""})]
        xgb = section_settings(ModelSettings, algorithm="xgboost")
        started = time.perf_counter()
        runs.append(("xgboost defaults", fit_and_predict(xgb, train, held, schema), 0.5,
                     {"seconds": time.perf_counter() - started, "trials": "", "winner": ""}))
        for budget in budgets:
            probabilities, threshold, info = run_search(budget, train, held, schema)
            if probabilities is None:
                out_of_time.append(f"{name}, search {budget:g} s: {info['winner']}")
                print(f"  {out_of_time[-1]}", flush=True)
            else:
                runs.append((f"search {budget:g} s", probabilities, threshold, info))
            print(f"  search {budget:g} s: {info['trials']} trials in {info['search_seconds']:.1f} s "
                  f"(budget overrun {max(0.0, info['search_seconds'] / budget - 1):.0%})", flush=True)
            if not args.no_halving:
                probabilities, threshold, info = run_halving(info["planned"], train, held, schema)
                runs.append((f"halving {budget:g} s", probabilities, threshold, info))
        for method, probabilities, threshold, info in runs:
            figures = scores(labels, probabilities, threshold)
            bounds = bootstrap(labels, probabilities, threshold, None if method.startswith("defaults") else reference)
            gain = figures["f1"] - scores(labels, reference[0], reference[1])["f1"]
            row = (f"| {name} | {method} | {interval(figures['f1'], bounds['f1'])} | {interval(figures['auc'], bounds['auc'])} "
                   f"| {interval(figures['log_loss'], bounds['log_loss'])} | "
                   f"{'' if method.startswith('defaults') else interval(gain, bounds.get('f1_gain'), '+.3f')} "
                   f"| {info['seconds']:.1f} | {info['trials']} | {info['winner']} |")
            table.append(row)
            print(row, flush=True)
    print("\n" + "\n".join(table))
    for line in out_of_time:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
