"""Building blocks shared by the pipeline's step scripts and the API.

Kept small and cheap to import: nothing here imports pandas, scikit-learn or xgboost at module
level, so that a cron tick that finds nothing new stays fast.
"""
