"""The compute engine: where a tick's heavy work runs (config.json's ``compute`` section).

- ``local`` (the default): everything in the tick's own process, as always. Nothing here is used.
- ``dask``: the heavy steps run on a Dask ``distributed`` cluster: the one at
  ``compute.scheduler``, or, without an address, a ``distributed.LocalCluster`` that the tick
  starts when the first heavy step needs it and closes at the end of the tick (``compute.workers``
  workers of ``compute.threads_per_worker`` threads and ``compute.memory_per_worker_gb`` each).

A tick that has work opens the engine first (``using``, then ``Engine.reach_scheduler``), before
it changes anything: a scheduler that cannot be reached fails the tick there, with an error that
names the address, and nothing is ingested, trained or deployed. The engine stays open for the
tick's risk lists, which then fail at once with the same error rather than asking again (a local
cluster that failed to start is not started again in that tick either). There is no silent fall-back to the local engine:
a team that pointed the pipeline at a cluster wants to know that it is not being used.

The engine in use is found by the steps through ``active_engine()`` (set for the tick by
``using``), so the decision code calls the same ``train_model`` whichever engine runs it. Work
under ``compute.cluster_min_rows`` rows stays local even on the dask engine: shipping a small frame
to the workers and back costs more than the fit.

Dask is imported only here, and only when the engine is dask: the idle tick and the local engine
never import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from churnlib.config import ComputeSettings
from churnlib.errors import ChurnError

logger = logging.getLogger(__name__)


class EngineError(ChurnError):
    """The configured cluster cannot be used (unreachable, failed to start, lost its workers)."""


@dataclass
class Engine:
    """The dask engine of one tick: the settings, and the client once connected."""

    settings: ComputeSettings
    _client: Any = None
    _cluster: Any = None
    _failure: EngineError | None = None  # the connection that failed: not tried again this tick
    used_for: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """Say which cluster this is, for log lines."""
        if self.settings.scheduler:
            return f"the Dask cluster at {self.settings.scheduler}"
        s = self.settings
        return (f"a local Dask cluster of {s.workers} worker(s) x {s.threads_per_worker} thread(s), "
                f"{s.memory_per_worker_gb:g} GB each")

    def handles(self, rows: int) -> bool:
        """Return whether work on ``rows`` rows goes to the cluster (else it stays in this process)."""
        return rows >= self.settings.cluster_min_rows

    @property
    def client(self) -> Any:
        """Return the ``distributed.Client``, connecting (or starting the local cluster) on first use.

        A connection that failed raises the same EngineError at once on every later use: the tick's
        other steps (a second large list) do not each wait ``connect_timeout_seconds`` again.
        """
        if self._failure is not None:  # a new error each time: one raised again would carry every step's frames
            raise EngineError(str(self._failure))
        if self._client is None:
            try:
                self._connect()
            except EngineError as exc:
                self._failure = exc
                raise
        return self._client

    def reach_scheduler(self) -> None:
        """Connect now when a scheduler is configured (an unreachable one fails the tick before it
        changes anything); a local cluster starts when the first heavy step needs it."""
        if self.settings.scheduler:
            self.client  # noqa: B018

    def _connect(self) -> None:
        started = time.perf_counter()
        settings = self.settings
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:  # the config check looks for the packages; a broken install lands here
            raise EngineError(f"compute.engine is dask, but Dask cannot be imported: {exc}") from None
        # The scheduler of a local cluster runs in this process: its routine lines (workers joining,
        # shuffles starting) would flood fullprocess.log and, as warnings, cron's mail. Its errors stay.
        # Set after the import: importing distributed sets its loggers to INFO.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
        # Text stays object columns holding str or NaN, as the local pipeline's frames hold it: Dask
        # would turn it into pyarrow strings with pd.NA, which scikit-learn's imputers do not see as missing.
        dask.config.set({"dataframe.convert-string": False})
        if settings.scheduler:
            try:
                self._client = Client(settings.scheduler, timeout=settings.connect_timeout_seconds,
                                      set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise EngineError(
                    f"compute.scheduler: cannot reach the Dask scheduler at {settings.scheduler} within "
                    f"{settings.connect_timeout_seconds:g} s ({type(exc).__name__}: {_first_line(exc)}); "
                    "start it (`dask scheduler`) or fix the address; nothing was done this tick") from None
        else:
            try:
                # Bound to loopback and without dashboards: a cron tick serves nothing to the network.
                self._cluster = LocalCluster(
                    n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                    memory_limit=int(settings.memory_per_worker_gb * 1024**3), processes=True,
                    host="127.0.0.1", dashboard_address=None, worker_dashboard_address=None,
                    # The scheduler's HTTP routes on a free port: the default, 8787, may be another cluster's.
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR)
                self._client = Client(self._cluster, set_as_default=False)
            except Exception as exc:
                self.close()
                raise EngineError(f"compute: the local Dask cluster did not start: {type(exc).__name__}: "
                                  f"{_first_line(exc)}") from None
        workers = len(self._client.scheduler_info(n_workers=-1).get("workers", {}))
        logger.info("compute engine: %s, %d worker(s) connected in %.1f s", self.where, workers,
                    time.perf_counter() - started)

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this tick started it."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        for part in (client, cluster):
            if part is not None:
                with contextlib.suppress(Exception):  # closing is best effort: the tick's result stands
                    part.close()


def _telling_line(exc: BaseException) -> str:
    """Return the line of a (multi-line, C++) error that says what failed, else its first line."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    return next((line for line in lines if "failed" in line.lower()), lines[0] if lines else type(exc).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_active: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("churn_engine", default=None)


def active_engine() -> Engine | None:
    """Return the dask engine of the tick in progress, or None (the local engine)."""
    return _active.get()


def open_engine(settings: ComputeSettings, *, connect_now: bool = True) -> Engine | None:
    """Return the engine for a tick with work: None for local; for dask, an Engine whose scheduler
    (when one is configured, and ``connect_now``) answered. A local cluster starts when the first
    heavy step needs it."""
    if settings.engine != "dask":
        return None
    engine = Engine(settings)
    if connect_now:
        engine.reach_scheduler()
    return engine


@contextlib.contextmanager
def using(settings: ComputeSettings, *, connect_now: bool = True) -> Iterator[Engine | None]:
    """Open the engine for the duration of a tick's work and close it at the end, whatever happens.

    Inside an engine already open (the tick's), that engine is used and left open: one cluster a tick.
    ``connect_now`` False connects only when a step first needs the cluster (the risk lists: a
    small file never does).
    """
    if _active.get() is not None:
        yield _active.get()
        return
    engine = open_engine(settings, connect_now=connect_now)
    token = _active.set(engine)
    try:
        yield engine
    finally:
        _active.reset(token)
        if engine is not None:
            engine.close()


# --- training on the cluster -------------------------------------------------------------------


def _partitions(engine: Engine, frame: Any) -> Any:
    """Return ``frame`` as a Dask DataFrame held in the workers' memory, one partition or more a worker.

    Persisted once, and every projection (features, target) taken from this one collection: X and
    y then share their partitions, which ``xgboost.dask`` requires.
    """
    import dask.dataframe as dd

    workers = max(1, len(engine.client.scheduler_info(n_workers=-1).get("workers", {})))
    # Every worker gets a share; past a million rows a partition, more partitions than workers.
    partitions = max(1, min(len(frame), max(workers, -(-len(frame) // 1_000_000))))
    frame = frame.reset_index(drop=True)
    bounds = [len(frame) * i // partitions for i in range(partitions + 1)]
    # Scattered to the workers, not embedded in the task graph: a graph of hundreds of MB is slow
    # to send (and Dask warns about it).
    pieces = engine.client.scatter([frame.iloc[start:end] for start, end in zip(bounds, bounds[1:])])
    collection = dd.from_delayed(pieces, meta=frame.iloc[:0], verify_meta=False)
    return engine.client.persist(collection)


def _exact_median(counts: Any) -> float:
    """Return the median of a column from its value counts (NaN for a column with no values)."""
    import numpy as np

    if len(counts) == 0:
        return float("nan")
    counts = counts.sort_index()
    values, weights = counts.index.to_numpy(dtype=float), counts.to_numpy()
    total = int(weights.sum())
    cumulative = np.cumsum(weights)
    lower = values[np.searchsorted(cumulative, (total - 1) // 2, side="right")]
    upper = values[np.searchsorted(cumulative, total // 2, side="right")]
    return float((lower + upper) / 2)


def fitted_preprocessing(engine: Engine, collection: Any, schema: Any, model_settings: Any) -> Any:
    """Return the pipeline's preprocessing step, fitted to what the local pipeline would learn from
    the whole collection: each numeric column's exact median, each categorical column's categories.

    The figures are computed on the workers (value counts and distinct values, merged); the driver
    then fits the ordinary ``ColumnTransformer`` on a frame of a few rows made to hold exactly those
    medians and categories, so the release is the same scikit-learn object the local engine makes,
    served by the API's fast path, and every partition is encoded the same way.
    """
    import dask
    import numpy as np
    import pandas as pd

    from churnlib.columns import MISSING_CATEGORY
    from churnlib.pipeline import PREPROCESS, build_pipeline

    numeric, categorical = list(schema.numeric_columns), list(schema.categorical_columns)
    counts = [collection[column].dropna().value_counts() for column in numeric]
    distinct = [collection[column].fillna(MISSING_CATEGORY).astype(object).drop_duplicates() for column in categorical]
    computed = dask.compute(*counts, *distinct, scheduler=engine.client.get)
    medians = {column: _exact_median(found) for column, found in zip(numeric, computed[: len(numeric)])}
    categories = {column: sorted(found.tolist()) for column, found in zip(categorical, computed[len(numeric):])}
    rows = max([1] + [len(values) for values in categories.values()])
    frame = pd.DataFrame({column: np.full(rows, medians[column]) for column in numeric})
    for column in categorical:
        values = categories[column] or [MISSING_CATEGORY]
        frame[column] = pd.Series([values[i % len(values)] for i in range(rows)], dtype=object)
    frame = frame[[c for c in schema.feature_columns]]
    preprocess = build_pipeline(schema, model_settings).named_steps[PREPROCESS]
    return preprocess.fit(frame)


def _record_fit(engine: Engine, **facts: Any) -> None:
    engine.used_for.append(facts)


def train_xgboost(engine: Engine, frame: Any, schema: Any, model_settings: Any) -> Any:
    """Return the local pipeline's equal for xgboost, the trees grown by ``xgboost.dask`` on every
    row of ``frame`` on the workers: a plain scikit-learn Pipeline (fitted preprocessing, then an
    ``XGBClassifier`` loaded from the booster the cluster trained)."""
    import os
    import tempfile

    import pandas as pd
    from sklearn.pipeline import Pipeline
    from xgboost import dask as dask_xgboost

    from churnlib.pipeline import CLASSIFIER, PREPROCESS, build_classifier

    started = time.perf_counter()
    features = list(schema.feature_columns)
    if isinstance(frame, ClusterRows):  # the history's rows, read by the workers from the Parquet parts
        collection = engine.client.persist(frame.lazy(features + [schema.target]))
    else:
        collection = _partitions(engine, frame[features + [schema.target]])
    preprocess = fitted_preprocessing(engine, collection, schema, model_settings)
    names = [str(name) for name in preprocess.get_feature_names_out()]

    def encode(part: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(preprocess.transform(part[features]), columns=names, index=part.index, dtype=float)

    meta = pd.DataFrame({name: pd.Series(dtype=float) for name in names})
    encoded = collection.map_partitions(encode, meta=meta)
    labels = collection[schema.target]
    local = build_classifier(model_settings)
    params = {**local.get_params(), "n_jobs": engine.settings.threads_per_worker}
    distributed_model = dask_xgboost.DaskXGBClassifier(**params)
    distributed_model.client = engine.client
    logger.info("xgboost: growing the trees on %s, %d partition(s)", engine.where, collection.npartitions)
    try:
        with engine.client.as_current():  # xgboost.dask looks for the current client in places
            distributed_model.fit(encoded, labels)
    except Exception as exc:
        raise EngineError(f"xgboost training on {engine.where} failed (a worker lost, or out of memory?): "
                          f"{type(exc).__name__}: {_telling_line(exc)}; nothing was deployed") from None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "booster.ubj")
        distributed_model.save_model(path)
        local.load_model(path)
    # The workers saw named columns; the pipeline hands the classifier a bare matrix, as a local fit does.
    local.get_booster().feature_names = None
    local.get_booster().feature_types = None
    seconds = time.perf_counter() - started
    _record_fit(engine, algorithm="xgboost", rows=int(len(frame)), sample_rows=None,
                partitions=int(collection.npartitions), seconds=round(seconds, 3))
    logger.info("xgboost trained on %s: %d rows in %d partition(s), %.2f s", engine.where, len(frame),
                collection.npartitions, seconds)
    return Pipeline([(PREPROCESS, preprocess), (CLASSIFIER, local)])


def uniform_sample(engine: Engine, frame: Any, rows: int, seed: int) -> Any:
    """Return at most ``rows`` rows of ``frame``, each kept with the same chance, drawn on the
    workers (each partition with its own seeded generator) and returned in their original order."""
    import numpy as np

    collection = frame.lazy() if isinstance(frame, ClusterRows) else _partitions(engine, frame)
    share = rows / len(frame)

    def keep(part, partition_info=None):
        index = (partition_info or {}).get("number", 0)
        generator = np.random.default_rng([seed, index])
        return part[generator.random(len(part)) < share]

    sample = to_driver(collection.map_partitions(keep, meta=collection._meta), engine)
    return sample.iloc[:rows].reset_index(drop=True)


def train_on_cluster(engine: Engine, frame: Any, schema: Any, model_settings: Any,
                     fit_locally: Any) -> Any:
    """Return the model fitted on ``frame`` with the cluster's help: xgboost through
    ``xgboost.dask`` on every row; logistic regression by ``fit_locally`` on all rows when they are
    at most ``compute.max_sample_rows``, else on a uniform sample of that many drawn on the cluster."""
    if model_settings.algorithm == "xgboost":
        return train_xgboost(engine, frame, schema, model_settings)
    limit = engine.settings.max_sample_rows
    if len(frame) <= limit:
        logger.info("logistic regression on all %d rows (at most compute.max_sample_rows, %d): fitted in the "
                    "tick's own process, the same model as the local engine's", len(frame), limit)
        _record_fit(engine, algorithm=model_settings.algorithm, rows=int(len(frame)), sample_rows=int(len(frame)),
                    partitions=None, seconds=None)
        return fit_locally(frame.to_pandas() if isinstance(frame, ClusterRows) else frame)
    started = time.perf_counter()
    sample = uniform_sample(engine, frame, limit, model_settings.random_seed)
    logger.info("logistic regression on a uniform sample of %d of the %d rows (compute.max_sample_rows %d), "
                "drawn on %s in %.2f s", len(sample), len(frame), limit, engine.where, time.perf_counter() - started)
    model = fit_locally(sample)
    _record_fit(engine, algorithm=model_settings.algorithm, rows=int(len(frame)), sample_rows=int(len(sample)),
                partitions=None, seconds=round(time.perf_counter() - started, 3))
    return model


def fit_record(rows: int) -> dict[str, Any] | None:
    """Return, for the release metadata, how the tick's engine fitted the last model on ``rows`` rows
    (None on the local engine)."""
    engine = active_engine()
    if engine is None:
        return None
    for facts in reversed(engine.used_for):
        if facts["rows"] == rows:
            return {"engine": "dask", "where": engine.where, **facts}
    return {"engine": "dask", "where": engine.where, "fitted_in": "the tick's own process",
            "why": f"fewer than compute.cluster_min_rows ({engine.settings.cluster_min_rows}) rows"}


# --- work item by item on the cluster (risk lists) -----------------------------------------------


def _call(function: Any, item: Any) -> Any:
    return function(item)


def _cluster_failure(exc: BaseException) -> bool:
    """Return whether an error came from the cluster itself (a worker lost, a connection closed, work
    cancelled) rather than from the work, whose own errors are raised as they would be locally."""
    import asyncio
    import concurrent.futures

    if isinstance(exc, ChurnError):
        return False
    return (type(exc).__module__.split(".")[0] in ("distributed", "tornado")
            or isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError, TimeoutError, OSError)))


def map_in_order(engine: Engine, function: Any, items: Iterator[Any], *, what: str) -> Iterator[Any]:
    """Yield ``function(item)`` for each item, in the items' order, computed on the workers.

    The function (with what it holds: a model) is sent to every worker once; each item is sent to a
    worker as it is read; at most two items a worker are on the cluster at a time, so this process
    holds only those and the results not yet taken, whatever the number of items. An error of the
    work itself is raised as it is; the cluster failing (a worker lost with the item it held, the
    scheduler gone) raises EngineError naming ``what``, and nothing more is sent.
    """
    from collections import deque

    client = engine.client
    pending: deque = deque()
    try:
        workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        remote_function = client.scatter(function, broadcast=True, hash=False)
        for item in items:
            # Scattered, not put in the task: a chunk is megabytes, and a task that large is slow to send.
            pending.append(client.submit(_call, remote_function, client.scatter(item, hash=False), pure=False))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except Exception as exc:
        if not _cluster_failure(exc):
            raise
        raise EngineError(f"{what} on {engine.where} failed (a worker lost, or out of memory?): "
                          f"{type(exc).__name__}: {_telling_line(exc)}") from None
    finally:
        if pending:
            with contextlib.suppress(Exception):  # the error above is what the tick reports
                client.cancel(list(pending))

# --- the history on the workers ----------------------------------------------------------------

# Rows a partition of the history holds at most: Parquet parts are read a row group (pyarrow's
# default, about a million rows) at a time, and split so that every worker gets a share.
ROWS_PER_PARTITION = 1_000_000


def read_piece(segments: list[tuple[str, int, int, int]], columns: list[str], schema_dict: dict) -> Any:
    """Return one partition of the history: rows [start, stop) of each (Parquet part, row group)
    segment, in order, typed as the local engine types them (run on a worker: the rows never pass
    through the tick's process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churnlib.dataset import FrozenSchema
    from churnlib.ingested import typed_like_csv

    schema = FrozenSchema.from_dict(schema_dict)
    if not segments:
        return empty_rows(columns, schema)
    tables = [pq.ParquetFile(path).read_row_group(group, columns=columns).slice(start, stop - start)
              for path, group, start, stop in segments]
    frame = typed_like_csv(pa.concat_tables(tables).to_pandas(types_mapper=None), schema)
    frame.index = range(len(frame))
    return frame


def empty_rows(columns: list[str], schema: Any) -> Any:
    """Return a frame of no rows with ``columns`` typed as the history's (a Dask collection's meta)."""
    import pandas as pd

    from churnlib.ingested import typed_like_csv

    return typed_like_csv(pd.DataFrame({column: pd.Series(dtype=object) for column in columns}), schema)


def to_driver(collection: Any, engine: "Engine") -> Any:
    """Return a Dask collection's rows as one pandas frame in the tick's own process: the one way rows
    come back from the workers, for the few a decision needs (held-out rows, a sample)."""
    frame = collection.compute(scheduler=engine.client.get)
    return frame.reset_index(drop=True)


class ClusterRows:
    """Rows [first, last) of the history, left in the Parquet parts: what ``train_model`` gets on the
    dask engine. The workers read them when a fit needs them (``lazy``), and a fit persists them in
    the workers' memory for its own duration only."""

    def __init__(self, history: "ClusterHistory", first: int, last: int):
        self.history, self.first, self.last = history, first, last
        self._counts: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.last - self.first

    def lazy(self, columns: list[str] | None = None) -> Any:
        """Return the rows (or some columns) as a lazy Dask DataFrame the workers read."""
        return self.history.lazy(self.first, self.last, columns)

    def class_counts(self) -> dict[str, int]:
        """Return the rows of each class (the target column read and counted on the workers, once)."""
        if self._counts is None:
            target = self.history.schema.target
            found = self.lazy([target])[target].value_counts().compute(scheduler=self.history.engine.client.get)
            self._counts = {str(k): int(v) for k, v in found.sort_index().items()}
        return self._counts

    def to_pandas(self) -> Any:
        """Return the rows in the tick's own process: only for fits kept there (at most
        ``compute.cluster_min_rows`` or ``compute.max_sample_rows`` rows)."""
        return to_driver(self.lazy(), self.history.engine)

    def sample(self, size: int, seed: int) -> Any:
        """Return the rows ``training.reference_sample`` would draw from these rows as one frame:
        the same seeded choice of row numbers, the rows fetched from the workers."""
        return self.history.sample(self.first, self.last, size, seed)


class ClusterHistory:
    """The ingested history on the dask engine: its length and parts come from the ingestion record,
    its rows stay in the Parquet parts until the workers read the ranges a retrain needs.

    Answers what ``churnlib.ingested.FrameHistory`` answers; only small ranges (held-out rows, the
    window choice's selection slice, judged rows, samples) become pandas frames in the tick's process.
    """

    def __init__(self, engine: Engine, ingested_folder: Any, record: dict[str, Any], schema: Any):
        from churnlib.ingested import part_paths

        self.engine, self.schema = engine, schema
        self.parts = [(str(path.resolve()), part["first_row"], part["rows"])
                      for path, part in zip(part_paths(ingested_folder, record), record["parts"])]
        self.total = int(record["rows"])
        self._row_groups: dict[str, list[int]] = {}
        self._ranges: dict[tuple[int, int], ClusterRows] = {}

    def __len__(self) -> int:
        return self.total

    def _groups(self, path: str) -> list[int]:
        """Return the rows of each row group of a part (its footer, read once)."""
        if path not in self._row_groups:
            import pyarrow.parquet as pq

            metadata = pq.ParquetFile(path).metadata
            self._row_groups[path] = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        return self._row_groups[path]

    def pieces(self, first: int, last: int) -> list[list[tuple[str, int, int, int]]]:
        """Return the partitions of rows [first, last): of equal size, at most ``ROWS_PER_PARTITION``
        rows, as many as a multiple of the workers (every worker gets the same share), each a list of
        (part, row group, first and last row in it) segments in row order."""
        workers = max(1, len(self.engine.client.scheduler_info(n_workers=-1).get("workers", {})))
        rows = last - first
        count = max(1, min(rows, workers * -(-rows // (workers * ROWS_PER_PARTITION))))
        bounds = [first + rows * i // count for i in range(count + 1)]
        groups = []  # (first row in the history, rows, part, row group)
        for path, part_first, part_rows in self.parts:
            if part_first < last and part_first + part_rows > first:
                for group, group_rows in enumerate(self._groups(path)):
                    groups.append((part_first, group_rows, path, group))
                    part_first += group_rows
        pieces = []
        for low, high in zip(bounds, bounds[1:]):
            pieces.append([(path, group, max(low, start) - start, min(high, start + size) - start)
                           for start, size, path, group in groups if start < high and start + size > low])
        return pieces

    def lazy(self, first: int, last: int, columns: list[str] | None = None, pieces: list | None = None) -> Any:
        """Return rows [first, last) as a lazy Dask DataFrame whose partitions the workers read
        (``pieces``: the partitions, when the caller cut them already)."""
        import dask.dataframe as dd

        columns = list(columns or self.schema.columns)
        pieces = self.pieces(first, last) if pieces is None else pieces
        meta = empty_rows(columns, self.schema)
        return dd.from_map(read_piece, pieces, columns=columns, schema_dict=self.schema.to_dict(),
                           meta=meta, enforce_metadata=False)

    def rows(self, first: int, last: int) -> ClusterRows:
        """Return rows [first, last) as training takes them: held on the workers (read once per range)."""
        if (first, last) not in self._ranges:
            self._ranges[(first, last)] = ClusterRows(self, first, last)
        return self._ranges[(first, last)]

    def pandas(self, first: int, last: int) -> Any:
        """Return rows [first, last) in the tick's own process (read by the workers): a few rows only."""
        if last <= first:
            return empty_rows(list(self.schema.columns), self.schema)
        return to_driver(self.lazy(first, last), self.engine)

    def both_classes(self, first: int, last: int, target: str) -> bool:
        return len(self.rows(first, last).class_counts()) == 2

    def class_counts(self, first: int, last: int, target: str) -> dict[str, int]:
        return self.rows(first, last).class_counts()

    def sample(self, first: int, last: int, size: int, seed: int) -> Any:
        """Return the ``size`` rows of [first, last) that ``training.reference_sample`` draws with
        ``seed`` (all of them when there are no more), in row order, fetched from the workers."""
        import numpy as np

        if last - first <= size:
            return self.pandas(first, last)
        chosen = first + np.sort(np.random.default_rng(seed).choice(last - first, size=size, replace=False))
        wanted, start, pieces = [], first, self.pieces(first, last)
        for piece in pieces:
            end = start + sum(stop - low for _path, _group, low, stop in piece)  # the piece's rows: [start, end)
            wanted.append(chosen[np.searchsorted(chosen, start):np.searchsorted(chosen, end)] - start)
            start = end
        collection = self.lazy(first, last, pieces=pieces)  # the same partitions, whatever the workers do meanwhile

        def take(part, partition_info=None):
            return part.iloc[wanted[(partition_info or {}).get("number", 0)]]

        return to_driver(collection.map_partitions(take, meta=collection._meta), self.engine)

    def reference(self, first: int, last: int, size: int, seed: int) -> Any:
        """Return the drift reference sample of rows [first, last) (``save_trained`` keeps it as it is)."""
        return self.sample(first, last, size, seed)

    def for_search(self, first: int, last: int, seed: int) -> Any:
        """Return the rows ``model.search`` searches on: a uniform sample of at most
        ``compute.max_sample_rows`` rows of [first, last), drawn with ``seed``."""
        limit = self.engine.settings.max_sample_rows
        if last - first > limit:
            logger.info("model.search on a uniform sample of %d of the window's %d rows (compute.max_sample_rows), "
                        "read by the workers", limit, last - first)
        return self.sample(first, last, limit, seed)
