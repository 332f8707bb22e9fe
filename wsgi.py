"""The gunicorn entry point: ``gunicorn --config gunicorn.conf.py wsgi:app``.

The config file is ``$CHURN_CONFIG`` if set, else config.json in this folder.
"""

from app import create_app

app = create_app()
