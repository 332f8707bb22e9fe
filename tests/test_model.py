"""The model module: the fast path is checked against predict_proba whenever a release is loaded."""

import json
import logging

import numpy as np
import pytest

from app import create_app
from churnlib import pipeline as model_module
from churnlib.config import section_settings
from churnlib.dataset import FrozenSchema
from churnlib.ingested import read_ingested_data
from churnlib.modelstore import load_deployed
from churnlib.pipeline import (
    FastPredictor,
    PipelinePredictor,
    batch_from_frame,
    build_pipeline,
    checked_predictor,
)
from helpers import release_with_an_extra_step
from scoring import read_test_data


def test_a_release_built_here_is_served_by_the_fast_path(deployed, caplog):
    model = load_deployed(deployed.deployment)
    with caplog.at_level(logging.WARNING):
        predictor = checked_predictor(model)
    assert isinstance(predictor, FastPredictor) and predictor.fast
    assert caplog.records == []


def test_a_fast_path_that_disagrees_by_more_than_1e9_is_replaced_by_predict_proba(deployed, monkeypatch, caplog):
    model = load_deployed(deployed.deployment)
    exact = FastPredictor.probabilities
    monkeypatch.setattr(FastPredictor, "probabilities", lambda self, batch: exact(self, batch) + 2e-9)
    with caplog.at_level(logging.WARNING):
        predictor = checked_predictor(model)
    assert isinstance(predictor, PipelinePredictor) and not predictor.fast
    assert f"release {model.release_id}" in caplog.text
    assert "differs from predict_proba by up to 2e-09" in caplog.text


def test_reasons_that_cannot_be_checked_are_not_given_but_the_release_is_still_served(deployed, monkeypatch, caplog):
    model = load_deployed(deployed.deployment)

    def broken(*args, **kwargs):
        raise RuntimeError("pred_contribs failed")

    monkeypatch.setattr(model_module, "reasons_excess", broken)
    with caplog.at_level(logging.WARNING):
        predictor = checked_predictor(model)
    assert isinstance(predictor, FastPredictor) and predictor.fast
    assert "its reasons could not be checked (pred_contribs failed)" in caplog.text
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    test = read_test_data(deployed.root / "testdata", settings=deployed.config().schema, schema=schema)
    batch = batch_from_frame(test, schema)
    assert np.allclose(predictor.probabilities(batch), model.pipeline.predict_proba(test[list(schema.feature_columns)])[:, 1])
    with pytest.raises(model_module.ReasonsUnavailable, match="could not be checked"):
        predictor.explain(batch)


def test_an_extra_pipeline_step_is_served_through_predict_proba_by_the_api(deployed, caplog):
    expected, test = release_with_an_extra_step(deployed)
    release = deployed.pointer()["current"]
    client = create_app(deployed.config_path).test_client()
    records = json.loads(test.drop(columns=["exited"]).to_json(orient="records"))
    with caplog.at_level(logging.WARNING):
        reply = client.post("/prediction", json={"records": records})
    assert reply.status_code == 200, reply.json
    served = np.array([p["probability"] for p in reply.json["predictions"]])
    assert np.max(np.abs(served - expected)) <= 1e-9
    assert f"release {release}: the fast path does not replay this pipeline" in caplog.text


def test_the_numeric_check_alone_catches_an_extra_step(deployed, monkeypatch, caplog):
    """Without the shape check, the replayed arithmetic is off by far more than 1e-9, and the
    comparison on the reference sample is what refuses the fast path."""
    release_with_an_extra_step(deployed)
    model = load_deployed(deployed.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    monkeypatch.setattr(model_module, "_expect", lambda condition, what: None)
    fast = FastPredictor(model.pipeline, schema)  # builds, blind to the extra step
    reference = read_ingested_data(deployed.ingested)[0].head(200)
    wrong = np.max(np.abs(fast.probabilities(batch_from_frame(reference, schema))
                          - model.pipeline.predict_proba(reference[list(schema.feature_columns)])[:, 1]))
    assert wrong > 0.05
    with caplog.at_level(logging.WARNING):
        predictor = checked_predictor(model, schema)
    assert isinstance(predictor, PipelinePredictor)
    assert f"release {model.release_id}: the fast path differs from predict_proba by up to" in caplog.text


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_the_pipeline_predictor_equals_the_fast_path_on_missing_and_unseen_values(deployed, algorithm):
    from churnlib.pipeline import records_to_batch

    config = deployed.config()
    model = load_deployed(deployed.deployment)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    frame, _, _ = read_ingested_data(deployed.ingested)
    settings = section_settings(type(config.model), algorithm=algorithm, random_seed=1)
    pipeline = build_pipeline(schema, settings).fit(frame[list(schema.feature_columns)], frame[schema.target])
    records = [{"lastmonth_activity": None, "lastyear_activity": 3, "number_of_employees": 4, "plan": "platinum"},
               {"lastmonth_activity": 5, "lastyear_activity": None, "number_of_employees": None, "plan": None}]
    batch = records_to_batch(records, schema)
    fast = FastPredictor(pipeline, schema).probabilities(batch)
    slow = PipelinePredictor(pipeline, schema).probabilities(batch)
    assert np.max(np.abs(fast - slow)) <= 1e-9
