"""The baseline for bench_api.py: the usual way to serve a scikit-learn pipeline with Flask.

JSON -> pandas DataFrame -> ``pipeline.predict_proba``, per request. Same model, same gunicorn
settings as the real API, so the difference measured is the request path alone.
"""

import os
from pathlib import Path

import pandas as pd
from flask import Flask, jsonify, request

from churnlib.config import load_config
from churnlib.modelstore import load_deployed


def create_naive_app() -> Flask:
    config = load_config(os.environ.get("CHURN_CONFIG"))
    model = load_deployed(Path(config.paths.deployment))
    features = model.metadata["schema"]["feature_columns"]
    app = Flask(__name__)

    @app.post("/prediction")
    def prediction():
        body = request.get_json()
        records = body["records"] if isinstance(body, dict) and "records" in body else [body]
        frame = pd.DataFrame(records)
        probabilities = model.pipeline.predict_proba(frame[features])[:, 1]
        return jsonify(release_id=model.release_id,
                       predictions=[{"churn": int(p > 0.5), "probability": float(p)} for p in probabilities])

    return app


app = create_naive_app()
