"""The model search (``model.search`` in config.json): which algorithm, its settings and the decision
threshold, tried on the rows of a retrain, deterministically, within a time budget.

What a retrain gives it (``churnlib.decisions.challenge``, ``fullprocess.retrain``) are the rows of its
training window *before* the newest rows that judge champion against challenger: those stay unseen
by the search, so the paired judgement is not biased by it. The test data is never read here. The
rows are split in time order:

- ``fit`` (the oldest): every trial's model is fitted on them;
- ``tune`` (the next 15%): xgboost's early stopping (the number of trees) and the decision threshold
  that maximises the metric (``f1``, ``accuracy``) are chosen on them;
- ``validate`` (the newest ``validation_share``): each trial is scored there, and so is the
  configured model (the *defaults*) that the winner is measured against.

The optimiser is Optuna's TPE sampler, seeded with ``model.random_seed``, with a median pruner
that stops an xgboost trial whose loss on the tune rows is worse than the median of earlier
trials at the same number of trees. The built-in defaults of each algorithm are the first trials.

Deterministic: the budget (seconds) is turned into a number of trials *before* the search starts,
from the size of the rows (``plan_trials``: a fixed cost model, not a clock), so a loaded machine
runs the same trials and the same model comes out. The clock only stops a search that runs more
than ``OVERRUN_MARGIN`` past its budget: then ``SearchOutOfTime`` fails the tick and nothing is
deployed (the rows stay pending; the next tick tries again).

Trials run one after another here (the local engine), each xgboost fit with ``model.n_threads``
threads. Each trial is asked of the study, evaluated by ``evaluate_trial`` (a function of the
trial's settings and the rows only) and told back, so an engine that evaluates a batch of asked
trials elsewhere can take the place of ``LocalTrials`` without changing the rest.

Optuna is imported only when a search runs; it is not in requirements.txt (``make run`` stays
light): a search without it is a ConfigError that says what to install.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from churnlib.config import LOGISTIC_DEFAULTS, XGBOOST_DEFAULTS, ModelSettings, SearchSettings
from churnlib.errors import ChurnError, ConfigError

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements-search.txt"
# A search may run this much past its budget (10%) before it is stopped and nothing is deployed.
OVERRUN_MARGIN = 0.10
TUNE_SHARE = 0.15  # of the search rows, before the validation rows
MIN_SPLIT_ROWS = 20  # each of fit, tune and validate needs this many rows, with both classes
MAX_TREES = 1000  # xgboost trials stop early (EARLY_STOPPING_ROUNDS without a better tune loss)
EARLY_STOPPING_ROUNDS = 30
PRUNE_EVERY = 10  # trees between the reports the pruner judges
MAX_TRIALS = 500

# The cost model that turns seconds into trials: seconds of one trial, a fixed part (fitting, the
# threshold, the predictions) plus a part per million cells (rows x encoded columns); the rows are
# preprocessed once for all trials. Measured with bench/bench_search.py --calibrate on this
# project's 2-core machine while it was shared by eight developers (load average 15 to 23):
# logistic regression about 1 s, whatever the size up to 0.8 million cells; xgboost's slowest
# trials (learning rate 0.01, depth 8, up to 1,000 trees) 1.4 s plus 15.5 s per million cells. The
# plan takes SPEED_MARGIN times COST (half those figures: an average trial, on a machine less busy),
# so the budget buys the same trials everywhere, and a machine far busier than that is stopped by
# the clock (OVERRUN_MARGIN) rather than let the tick run on.
SPEED_MARGIN = 2.0
COST = {"logistic_regression": (0.25, 0.5), "xgboost": (0.7, 8.0)}  # (fixed seconds, seconds per million cells)


class SearchError(ChurnError):
    """A search that cannot run or finish; the message says why."""


class SearchOutOfTime(SearchError):
    """The search ran past its budget plus the margin: nothing half-searched is deployed."""


@dataclass(frozen=True)
class Plan:
    """How the budget became trials, decided before the search starts."""

    budget_s: float
    trials: int
    seconds_per_trial: float
    rows: int
    columns: int
    fixed: bool  # model.search.trials set the number

    def text(self) -> str:
        if self.fixed:
            return (f"{self.trials} trials (model.search.trials; the budget of {self.budget_s:g} s still stops "
                    f"the search past {self.budget_s * (1 + OVERRUN_MARGIN):.0f} s)")
        return (f"budget {self.budget_s:g} s -> {self.trials} trials: about {self.seconds_per_trial:.2f} s a trial "
                f"planned for {self.rows} rows x {self.columns} encoded columns (the cost model of churnlib/search.py, "
                f"at 1/{SPEED_MARGIN:g} of the pace measured); stopped, deploying nothing, past "
                f"{self.budget_s * (1 + OVERRUN_MARGIN):.0f} s")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "stop_after_s": round(self.budget_s * (1 + OVERRUN_MARGIN), 3)}


def encoded_columns(frame: Any, schema: Any) -> int:
    """Return how many columns the model sees: the numeric ones plus one per category (one-hot)."""
    return len(schema.numeric_columns) + sum(int(frame[c].nunique(dropna=False)) for c in schema.categorical_columns)


def trial_seconds(algorithm: str, rows: int, columns: int) -> float:
    """Return the planned seconds of one trial of ``algorithm`` (the cost model, SPEED_MARGIN included).

    Measured with one thread: more xgboost threads (``model.n_threads``) only make the trials finish
    sooner, never change how many are planned (nor, so, the model).
    """
    fixed, per_million = COST[algorithm]
    return SPEED_MARGIN * (fixed + per_million * rows * columns / 1e6)


def plan_trials(settings: SearchSettings, *, rows: int, columns: int, baseline_algorithm: str) -> Plan:
    """Return the number of trials the budget buys on these rows, before any is run (no clock read)."""
    per_trial = sum(trial_seconds(a, rows, columns) for a in settings.algorithms) / len(settings.algorithms)
    if settings.trials is not None:
        return Plan(settings.budget_s, settings.trials, per_trial, rows, columns, True)
    left = settings.budget_s - trial_seconds(baseline_algorithm, rows, columns)
    trials = max(0, min(MAX_TRIALS, math.floor(left / per_trial)))
    return Plan(settings.budget_s, trials, per_trial, rows, columns, False)


# --- the rows ----------------------------------------------------------------------------------------


@dataclass
class SearchRows:
    """The search's rows in time order: fit, then tune, then validate (positions in the given frame's index)."""

    fit: Any
    tune: Any
    validate: Any

    def ranges(self) -> dict[str, list[int]]:
        """Return each part's first and last row (the frame's index labels: ingested row numbers)."""
        return {name: [int(part.index[0]), int(part.index[-1])] for name, part in
                (("fit", self.fit), ("tune", self.tune), ("validate", self.validate))}


def split_rows(frame: Any, target: str, validation_share: float) -> SearchRows | str:
    """Return the rows split in time order (the newest validate), or why they cannot be."""
    total = len(frame)
    validate = max(MIN_SPLIT_ROWS, round(validation_share * total))
    tune = max(MIN_SPLIT_ROWS, round(TUNE_SHARE * total))
    fit = total - validate - tune
    if fit < MIN_SPLIT_ROWS:
        return f"{total} rows are too few to split into fit, tune and validation rows of {MIN_SPLIT_ROWS} or more"
    parts = SearchRows(frame.iloc[:fit], frame.iloc[fit:fit + tune], frame.iloc[fit + tune:])
    for name in ("fit", "tune", "validate"):
        if getattr(parts, name)[target].nunique() < 2:
            return f"the {name} rows ({len(getattr(parts, name))} of them) hold one class only"
    return parts


# --- one trial ---------------------------------------------------------------------------------------


def _metric(metric: str, labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> float:
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    if metric == "roc_auc":
        return float(roc_auc_score(labels, probabilities))
    if metric == "log_loss":
        return float(log_loss(labels, np.clip(probabilities, 1e-15, 1 - 1e-15), labels=[0, 1]))
    predicted = (probabilities > threshold).astype(np.int64)
    if metric == "accuracy":
        return float(accuracy_score(labels, predicted))
    return float(f1_score(labels, predicted, zero_division=0.0))


def threshold_scores(metric: str, labels: np.ndarray, probabilities: np.ndarray,
                     thresholds: np.ndarray) -> np.ndarray:
    """Return ``metric`` (``f1`` or ``accuracy``) at each threshold (churn predicted above it), at once."""
    positive = np.sort(probabilities[labels == 1])
    negative = np.sort(probabilities[labels != 1])
    tp = len(positive) - np.searchsorted(positive, thresholds, side="right")
    fp = len(negative) - np.searchsorted(negative, thresholds, side="right")
    fn = len(positive) - tp
    if metric == "accuracy":
        return (tp + len(negative) - fp) / max(1, len(labels))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def best_threshold(metric: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the threshold (a probability between 0.01 and 0.99) that maximises ``metric`` on these rows.

    Candidates are 0.5 and the midpoints between the probabilities' 201 quantiles; ties go to the
    threshold nearest 0.5.
    """
    quantiles = np.unique(np.quantile(probabilities, np.linspace(0, 1, 201)))
    candidates = np.unique(np.clip(np.concatenate([(quantiles[:-1] + quantiles[1:]) / 2, [0.5]]), 0.01, 0.99))
    scores = threshold_scores(metric, np.asarray(labels), np.asarray(probabilities), candidates)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


@dataclass
class TrialResult:
    """What one trial's settings scored: on the validation rows, at the threshold chosen on the tune rows."""

    value: float | None  # None: pruned
    threshold: float
    params: dict[str, Any]  # the classifier's parameters to train the deployed model with
    seconds: float


class Pruned(Exception):
    """The pruner stopped this trial (its loss was worse than earlier trials' at the same point)."""


def encoded_rows(settings: ModelSettings, rows: SearchRows, schema: Any,
                 cache: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the fit, tune and validation rows as the classifier sees them (the preprocessing fitted
    on the fit rows), computed once per preprocessing in ``cache``: trials differ only in the classifier."""
    from churnlib.pipeline import build_pipeline

    key = settings.algorithm == "logistic_regression" and settings.scale_numeric  # scaled or not
    if cache is not None and key in cache:
        return cache[key]
    features = list(schema.feature_columns)
    preprocess = build_pipeline(schema, settings)[:-1]
    encoded = (preprocess.fit_transform(rows.fit[features], rows.fit[schema.target].to_numpy()),
               preprocess.transform(rows.tune[features]), preprocess.transform(rows.validate[features]))
    if cache is not None:
        cache[key] = encoded
    return encoded


def evaluate_trial(settings: ModelSettings, rows: SearchRows, schema: Any, metric: str, *,
                   report: Callable[[int, float], bool] | None = None, cache: dict | None = None) -> TrialResult:
    """Fit ``settings`` (algorithm and params) on the fit rows and score them on the validation rows.

    xgboost grows up to MAX_TREES trees with early stopping on the tune rows, calling ``report(trees,
    tune log-loss)`` every PRUNE_EVERY trees: True stops it (Pruned). The threshold is chosen on the
    tune rows for ``f1`` and ``accuracy``; for ``roc_auc`` and ``log_loss`` it is the configured one.
    """
    from churnlib.pipeline import build_classifier

    started = time.perf_counter()
    fit_x, tune_x, validate_x = encoded_rows(settings, rows, schema, cache)
    fit_y, tune_y = rows.fit[schema.target].to_numpy(), rows.tune[schema.target].to_numpy()
    classifier = build_classifier(settings)
    params = dict(settings.params)
    if settings.algorithm == "xgboost":
        import xgboost

        stopped: dict[str, bool] = {"pruned": False}

        class Report(xgboost.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):
                trees = epoch + 1
                if report is None or trees % PRUNE_EVERY:
                    return False
                stopped["pruned"] = report(trees, float(evals_log["validation_0"]["logloss"][-1]))
                return stopped["pruned"]

        classifier.set_params(n_estimators=MAX_TREES, early_stopping_rounds=EARLY_STOPPING_ROUNDS, callbacks=[Report()])
        classifier.fit(fit_x, fit_y, eval_set=[(tune_x, tune_y)], verbose=False)
        if stopped["pruned"]:
            raise Pruned()
        params["n_estimators"] = int(classifier.best_iteration) + 1
    else:
        classifier.fit(fit_x, fit_y)
    tune_p = classifier.predict_proba(tune_x)[:, 1]
    threshold = best_threshold(metric, tune_y, tune_p) if metric in ("f1", "accuracy") else settings.threshold
    validate_p = classifier.predict_proba(validate_x)[:, 1]
    value = _metric(metric, rows.validate[schema.target].to_numpy(), validate_p, threshold)
    return TrialResult(value=value, threshold=threshold, params=params, seconds=time.perf_counter() - started)


# --- the search space --------------------------------------------------------------------------------


def default_trials(algorithms: tuple[str, ...]) -> list[dict[str, Any]]:
    """Return the built-in defaults of each algorithm, as the first trials' parameters."""
    first = []
    for algorithm in algorithms:
        if algorithm == "logistic_regression":
            first.append({"algorithm": algorithm, "lr_C": 1.0, "lr_class_weight": "none"})
        else:
            first.append({"algorithm": algorithm, "xgb_max_depth": XGBOOST_DEFAULTS["max_depth"],
                          "xgb_learning_rate": XGBOOST_DEFAULTS["learning_rate"], "xgb_min_child_weight": 1.0,
                          "xgb_subsample": 1.0, "xgb_colsample_bytree": 1.0, "xgb_scale_pos_weight": 1.0})
    return first


def suggest(trial: Any, algorithms: tuple[str, ...], positive_weight_max: float) -> tuple[str, dict[str, Any]]:
    """Return the algorithm and classifier parameters the sampler suggests for this trial."""
    algorithm = trial.suggest_categorical("algorithm", list(algorithms))
    if algorithm == "logistic_regression":
        weight = trial.suggest_categorical("lr_class_weight", ["none", "balanced"])
        return algorithm, {**LOGISTIC_DEFAULTS, "C": trial.suggest_float("lr_C", 1e-3, 1e2, log=True),
                           "class_weight": None if weight == "none" else "balanced"}
    return algorithm, {
        **XGBOOST_DEFAULTS,
        "max_depth": trial.suggest_int("xgb_max_depth", 2, 8),
        "learning_rate": trial.suggest_float("xgb_learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("xgb_min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("xgb_subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("xgb_colsample_bytree", 0.5, 1.0),
        "scale_pos_weight": trial.suggest_float("xgb_scale_pos_weight", 0.25, positive_weight_max, log=True),
    }


# --- the search --------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """A finished search: the plan, every trial, the defaults' score and the winner."""

    metric: str
    plan: Plan
    rows: dict[str, list[int]]
    trials: list[dict[str, Any]]
    defaults: dict[str, Any]  # the configured model's score on the validation rows
    winner: dict[str, Any]  # the trial (or the defaults) whose settings are deployed
    seconds: float
    skipped: str | None = None  # why no search ran (the configured model was trained)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def maximise(self) -> bool:
        return self.metric != "log_loss"

    def gain(self) -> float | None:
        """Return how much better the winner scored than the defaults on the validation rows (signed so + is better)."""
        if self.defaults.get("value") is None or self.winner.get("value") is None:
            return None
        difference = self.winner["value"] - self.defaults["value"]
        return difference if self.maximise else -difference

    def summary(self) -> str:
        """Return the search in one line, for the log and the run line."""
        if self.skipped:
            return f"no search ({self.skipped}): the configured {self.defaults.get('algorithm')} is trained"
        counts = {state: sum(t["state"] == state for t in self.trials) for state in ("complete", "pruned")}
        won = self.winner
        gain = self.gain()
        against = (f"{self.metric} {won['value']:.4f} against the configured defaults' {self.defaults['value']:.4f} "
                   f"({'+' if gain >= 0 else ''}{gain:.4f})" if gain is not None else "")
        who = "the configured defaults" if won.get("trial") is None else f"trial {won['trial']}"
        return (f"{len(self.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned) in "
                f"{self.seconds:.1f} s of {self.plan.budget_s:g} s on rows {self.rows['fit'][0]}-"
                f"{self.rows['validate'][1]}: {who} won, {won['algorithm']} {short_params(won['params'])} threshold "
                f"{won['threshold']:.3f}, {against}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "plan": self.plan.to_dict(), "rows": self.rows, "seconds": round(self.seconds, 3),
                "skipped": self.skipped, "settings": self.settings, "defaults": self.defaults,
                "winner": self.winner, "gain": self.gain(), "trials": self.trials, "summary": self.summary()}


    def run_line(self) -> dict[str, Any]:
        """Return the search for the run's JSON line: everything but the trials, which are counted."""
        line = {k: v for k, v in self.to_dict().items() if k != "trials"}
        line["trials"] = {state: sum(t["state"] == state for t in self.trials) for state in ("complete", "pruned")}
        return line


def search_metadata(result: SearchResult | None) -> dict[str, Any]:
    """Return what a release's metadata keeps of its search (nothing when model.search is off)."""
    return {} if result is None else {"search": result.to_dict()}


def settings_text(metadata: dict[str, Any]) -> str:
    """Return a release's classifier settings in one line, with what its search found (deployment.py --list)."""
    text = short_params(metadata.get("params") or {})
    search = metadata.get("search")
    if search:
        if search.get("skipped"):
            text += f"; no search ({search['skipped']})"
        else:
            gain = search.get("gain")
            text += (f", threshold {metadata.get('threshold', 0.5):.3f}; searched: {len(search.get('trials') or [])} trials, "
                     + ("the configured defaults won" if (search.get("winner") or {}).get("trial") is None
                        else f"trial {search['winner']['trial']} won")
                     + (f", {search['metric']} {gain:+.4f} over the defaults" if gain is not None else ""))
    return text


def short_params(params: dict[str, Any]) -> str:
    """Return classifier parameters in one short line (floats to 4 decimals; max_iter and tree_method,
    which never change, left out): ``{C=0.0017, class_weight=balanced}``."""
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()
             if k not in ("max_iter", "tree_method")}
    if not shown:
        return "{built-in defaults}"
    return "{" + ", ".join(f"{k}={v}" for k, v in shown.items()) + "}"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"model.search: needs Optuna, which is not installed; install it with "
                          f".venv/bin/pip install -r {REQUIREMENTS_FILE} (or set model.search to null)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class LocalTrials:
    """The local engine: trials one after another in this process, each with ``model.n_threads`` threads."""

    def __init__(self, deadline: float, clock: Callable[[], float]):
        self.deadline = deadline
        self.clock = clock

    def out_of_time(self) -> bool:
        return self.clock() > self.deadline

    def run(self, study: Any, ask: Callable[[Any], ModelSettings], evaluate: Callable[..., TrialResult],
            count: int, on_stop: Callable[[int], SearchOutOfTime]) -> None:
        optuna = _optuna()
        for done in range(count):
            if self.out_of_time():
                raise on_stop(done)
            trial = study.ask()
            settings = ask(trial)
            late = {"now": False}

            def report(step: int, loss: float) -> bool:
                trial.report(-loss if study.direction == optuna.study.StudyDirection.MAXIMIZE else loss, step)
                late["now"] = self.out_of_time()
                return late["now"] or trial.should_prune()

            try:
                result = evaluate(settings, report=report)
            except Pruned:
                if late["now"]:
                    raise on_stop(done) from None
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            trial.set_user_attr("threshold", result.threshold)
            trial.set_user_attr("params", result.params)
            trial.set_user_attr("seconds", round(result.seconds, 3))
            study.tell(trial, result.value)


def _clock() -> float:
    """The search's clock (seconds): only ever read to stop a search that overran its budget."""
    return time.monotonic()


def search(model: ModelSettings, frame: Any, schema: Any, *,
           clock: Callable[[], float] | None = None) -> tuple[ModelSettings, SearchResult]:
    """Search ``model.search``'s algorithms and settings on ``frame`` (time-ordered rows, none of them
    held out for the champion-challenger judgement); return the settings to train with and the search.

    Raises SearchOutOfTime when the search runs more than OVERRUN_MARGIN past its budget.
    """
    optuna = _optuna()
    clock = clock or _clock
    spec = model.search
    started = clock()
    deadline = started + spec.budget_s * (1 + OVERRUN_MARGIN)
    configured = {"algorithm": model.algorithm, "params": model.effective_params(), "threshold": model.threshold,
                  "trial": None}
    parts = split_rows(frame, schema.target, spec.validation_share)
    columns = encoded_columns(frame, schema)
    plan = plan_trials(spec, rows=len(frame), columns=columns, baseline_algorithm=model.algorithm)
    settings_shown = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    skipped = parts if isinstance(parts, str) else (
        f"the budget of {spec.budget_s:g} s buys no trial on {len(frame)} rows" if plan.trials < 1 else None)
    if skipped:
        result = SearchResult(spec.metric, plan, {}, [], {**configured, "value": None}, {**configured, "value": None},
                              clock() - started, skipped=skipped, settings=settings_shown)
        logger.warning("model search: %s", result.summary())
        return dataclasses.replace(model, search=None), result
    logger.info("model search: %s", plan.text())
    base = dataclasses.replace(model, search=None)
    encoded: dict = {}  # the rows preprocessed once for all trials (an engine would send them to its workers once)
    evaluate = lambda settings, report=None: evaluate_trial(settings, parts, schema, spec.metric,  # noqa: E731
                                                            report=report, cache=encoded)
    # The configured model as it would be trained and deployed (its own trees, its own threshold).
    configured["value"] = _configured_value(base, parts, schema, spec.metric)

    labels = frame[schema.target].to_numpy()
    positives = max(1, int(labels.sum()))
    positive_weight_max = max(4.0, 2.0 * (len(labels) - positives) / positives)
    direction = "maximize" if spec.metric != "log_loss" else "minimize"
    sampler = optuna.samplers.TPESampler(seed=model.random_seed, n_startup_trials=max(2, min(10, plan.trials // 4)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3 * PRUNE_EVERY)
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    for params in default_trials(spec.algorithms)[: plan.trials]:
        study.enqueue_trial(params)

    def ask(trial: Any) -> ModelSettings:
        algorithm, params = suggest(trial, spec.algorithms, positive_weight_max)
        return dataclasses.replace(base, algorithm=algorithm, params=params)

    def out_of_time(done: int) -> SearchOutOfTime:
        return SearchOutOfTime(
            f"model search: stopped after {clock() - started:.0f} s, past its budget of {spec.budget_s:g} s plus "
            f"{OVERRUN_MARGIN:.0%}, with {done} of {plan.trials} trials done; nothing half-searched is deployed (the "
            "rows stay pending, the next tick tries again). The machine ran slower than planned: raise "
            "model.search.budget_s, or set model.search.trials lower")

    LocalTrials(deadline, clock).run(study, ask, evaluate, plan.trials, out_of_time)
    trials = [_trial_record(t) for t in study.trials]
    complete = [t for t in trials if t["state"] == "complete"]
    winner = dict(configured)
    if complete:
        best = study.best_trial
        record = trials[best.number]
        better = record["value"] > configured["value"] if direction == "maximize" else record["value"] < configured["value"]
        if better:
            winner = {"algorithm": record["algorithm"], "params": record["params"], "threshold": record["threshold"],
                      "trial": best.number, "value": record["value"]}
    result = SearchResult(spec.metric, plan, parts.ranges(), trials, configured, winner, clock() - started,
                          settings=settings_shown)
    logger.info("model search: %s", result.summary())
    chosen = dataclasses.replace(base, algorithm=winner["algorithm"], params=winner["params"],
                                 threshold=winner["threshold"])
    return chosen, result


def _configured_value(settings: ModelSettings, parts: SearchRows, schema: Any, metric: str) -> float:
    """Return the configured model's score on the validation rows at its own threshold (model.threshold)."""
    from churnlib.pipeline import build_pipeline

    features = list(schema.feature_columns)
    pipeline = build_pipeline(schema, settings)
    pipeline.fit(parts.fit[features], parts.fit[schema.target].to_numpy())
    probabilities = pipeline.predict_proba(parts.validate[features])[:, 1]
    return _metric(metric, parts.validate[schema.target].to_numpy(), probabilities, settings.threshold)


def _trial_record(trial: Any) -> dict[str, Any]:
    state = trial.state.name.lower()
    params = trial.user_attrs.get("params")
    return {"number": trial.number, "state": state, "algorithm": trial.params.get("algorithm"),
            "suggested": {k.removeprefix("xgb_").removeprefix("lr_"): v for k, v in trial.params.items()
                          if k != "algorithm"},
            "params": params, "threshold": trial.user_attrs.get("threshold"),
            "value": trial.value if state == "complete" else None,
            "seconds": trial.user_attrs.get("seconds")}


def settings_for_retrain(model: ModelSettings, frame: Any, schema: Any) -> tuple[ModelSettings, SearchResult | None]:
    """Return the model settings a retrain trains with on ``frame`` (the rows before any held out):
    the configured ones when ``model.search`` is off, else the search's winner; and the search."""
    if model.search is None:
        return model, None
    return search(model, frame, schema)
