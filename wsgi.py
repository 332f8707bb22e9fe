"""The gunicorn entry point: ``gunicorn --config gunicorn.conf.py wsgi:app``.

Under gunicorn the config is the one the master loaded (gunicorn.conf.py): a worker never reads
config.json itself, so one broken mid-edit cannot stop a worker from starting. Elsewhere it is
``$CHURN_CONFIG`` if set, else config.json in this folder.
"""

from app import create_app
from churnlib.config import server_config

app = create_app(server_config())
