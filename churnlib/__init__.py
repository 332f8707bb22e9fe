"""Building blocks shared by the pipeline's step scripts and the API, one of each:

- ``config``: the one config loader; every key declared once, with its default and its check;
- ``errors``: ``ChurnError``, the base of the product's own errors, and how one is shown;
- ``cli``: what every script's ``main()`` shares (options, config, logging, lock, errors);
- ``fsutil``: atomic and fsynced writes, the run lock; ``clock``; ``logsetup``;
- ``columns``: column names normalised one way, text cut to fit a line;
- ``sourcefiles``: the CSV files dropped into a folder (``sourcedata/``, ``scoringdata/``), found
  without reading a file twice;
- ``dataset``: reading and validating a CSV file against the schema (labelled, or customers to
  score, in chunks);
- ``ingested``: the ingested data and its record, their statistics;
- ``risklists``: the customer files waiting to be scored and the record of the lists made;
- ``pipeline``: the model (built, predicting, the fast path checked against scikit-learn, each
  prediction's reasons, calibration);
- ``modelstore``: saving and loading a model (SHA-256 checked), the release pointer;
- ``serving``: the release an API worker serves, swapped in when the pointer moves;
- ``drift``: the statistics behind the drift decision;
- ``stats``: the statistics behind the score decision (estimates with intervals, the score a batch
  is expected to reach, paired champion/challenger comparisons);
- ``runlog``: the decisions a tick can reach and its line in ``logs/runs.jsonl``;
- ``alerts``: alert conditions from a tick's run line, the outbox, e-mail and webhook delivery;
- ``history``: the history page ``logs/dashboard.html`` (inline SVG, standard library only);
- ``metrics``: the API's Prometheus metrics (``prometheus_client``).

The modules a cron tick needs before it knows there is work, or after it (config, errors,
columns, clock, cli, fsutil, logsetup, sourcefiles, ingested, risklists, modelstore, runlog,
alerts, history) import no pandas, scikit-learn or xgboost, so that a tick that finds nothing new
stays fast; the others import them, or import them only inside the functions that need them.
"""
