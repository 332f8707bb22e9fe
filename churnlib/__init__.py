"""Building blocks shared by the pipeline's step scripts and the API.

Kept small. The modules a cron tick needs before it knows there is work (config, columns, clock,
cli, fsutil, logsetup, modelstore) import no pandas, scikit-learn or xgboost, so that a tick that
finds nothing new stays fast; dataset and drift, needed only once there is work, import pandas
and scipy.
"""
