"""The ceiling for bench_api.py: a do-nothing Flask app, one route answering a constant JSON reply.

Served under the same gunicorn settings as the API (gunicorn.conf.py), it shows what gunicorn and
Flask alone cost a request on this machine: no API can answer faster under them, so the API's
rate as a share of this one's is what the project's own request path leaves of the framework's.
"""

from flask import Flask

REPLY = b'{"release_id":"ceiling","count":1,"predictions":[{"churn":0,"probability":0.5}]}'


def create_ceiling_app() -> Flask:
    app = Flask(__name__, static_folder=None)

    @app.post("/prediction")
    def prediction():
        return app.response_class(REPLY, mimetype="application/json")

    return app


app = create_ceiling_app()
